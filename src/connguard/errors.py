"""Exception hierarchy.

Every error a pool raises names the pool and carries a snapshot of its state, so a log line
alone tells what happened: ``pool 'default': no connection after 5.00 s (size=10/10,
in_use=10, idle=0, waiting=7); ...``.

When Django is importable the base class also derives from ``django.db.utils.OperationalError``
so that ``except OperationalError`` clauses in existing Django code keep working.
"""

from __future__ import annotations

from typing import Any

_bases: tuple[type[BaseException], ...]
try:  # pragma: no cover - depends on the environment
    from django.db.utils import OperationalError as _DjangoOperationalError

    _bases = (_DjangoOperationalError,)
except Exception:  # Django missing or broken: stay framework-agnostic
    _bases = (Exception,)


class PoolError(*_bases):  # type: ignore[misc]
    """Base class of every connguard error."""

    def __init__(self, message: str, *, snapshot: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.snapshot = snapshot or {}


class ConfigError(PoolError, ValueError):
    """A pool setting is missing or invalid; the message names the setting and the fix."""


class PoolTimeout(PoolError):
    """No connection could be had within the timeout."""


class TooManyRequests(PoolError):
    """``max_waiting`` callers are already queued: load is shed instead of queued."""


class PoolUnavailable(PoolError):
    """The database is known to be unreachable: fail fast instead of waiting."""


class AccessDenied(PoolError):
    """The server is reachable but refused this client: wrong password, unknown role or
    database, no pg_hba.conf entry. A configuration error, not an outage; the message names
    the setting to fix."""


class PoolClosed(PoolError):
    """The pool was closed."""


class ForeignConnection(PoolError):
    """A connection was returned to a pool that never handed it out."""


class WrongRole(Exception):
    """A new connection reached a server of the wrong role (a connect failure, not raised to
    callers: the breaker counts it)."""


# -- messages ------------------------------------------------------------------------------
# The pool calls these with a snapshot of its state (``ConnectionPool._snapshot()``: name,
# size, min_size, max_size, in_use, idle, waiting, breaker, last_error); they build the text
# and the error, and read nothing else.


def state_text(snapshot: dict[str, Any]) -> str:
    """``size=3/10, in_use=2, idle=1, waiting=0``: the numbers every message carries."""
    s = snapshot
    return (
        f"size={s['size']}/{s['max_size']}, in_use={s['in_use']}, "
        f"idle={s['idle']}, waiting={s['waiting']}"
    )


def last_error_text(snapshot: dict[str, Any]) -> str:
    """The last connect failure, only while the breaker is open: once a connect succeeded,
    the old error is history."""
    error = snapshot["last_error"]
    return (
        f"; the last connect attempt failed with: {error}"
        if error and snapshot["breaker"] == "open"
        else ""
    )


def timeout_error(snapshot: dict[str, Any], waited: float) -> PoolTimeout:
    """getconn() found no connection within its timeout."""
    return PoolTimeout(
        f"pool {snapshot['name']!r}: no connection after {waited:.2f} s ({state_text(snapshot)})"
        + last_error_text(snapshot)
        + ". Raise max_size or timeout, or hold connections for less time.",
        snapshot=snapshot,
    )


def not_ready_error(snapshot: dict[str, Any], timeout: float) -> PoolTimeout:
    """wait(): min_size connections were not open in time."""
    return PoolTimeout(
        f"pool {snapshot['name']!r}: min_size={snapshot['min_size']} connections not open "
        f"after {timeout:.2f} s ({state_text(snapshot)})" + last_error_text(snapshot),
        snapshot=snapshot,
    )


def too_many_requests(snapshot: dict[str, Any], max_waiting: int) -> TooManyRequests:
    """max_waiting callers are queued already: shed this one."""
    return TooManyRequests(
        f"pool {snapshot['name']!r}: {snapshot['waiting']} requests already waiting "
        f"(max_waiting={max_waiting}); shedding load. State: {state_text(snapshot)}",
        snapshot=snapshot,
    )


def unavailable_error(snapshot: dict[str, Any], down: float, error: str | None) -> PoolUnavailable:
    """The breaker is open: fail fast, saying for how long and why."""
    return PoolUnavailable(
        f"pool {snapshot['name']!r}: database unreachable for {down:.2f} s, failing fast "
        f"({state_text(snapshot)}); the last connect attempt failed with: {error}",
        snapshot=snapshot,
    )


def denied_text(name: str, error: str | None, check: str, down: float, backoff: float) -> str:
    """The server answered and refused this client: say so, and what to fix (*check*: the
    setting to look at, see :func:`setting_to_check`)."""
    return (
        f"pool {name!r}: the database server is reachable but refused the connection "
        f"({error}). This is a configuration error, not an outage: check "
        f"{check}. Refused for {down:.2f} s; "
        f"retried with backoff up to {backoff:g} s, checkouts fail at "
        "once meanwhile"
    )


def access_denied_error(
    snapshot: dict[str, Any], error: str | None, check: str, down: float, backoff: float
) -> AccessDenied:
    return AccessDenied(
        denied_text(snapshot["name"], error, check, down, backoff), snapshot=snapshot
    )


def setting_to_check(key: str, rule: str | None, named: str | None) -> str:
    """What an access-denied message tells the user to check for the refused *key*: the
    server's *rule* when the driver says *key* is one (e.g. PostgreSQL's pg_hba.conf), else
    the setting a framework *named* for it, else the connection parameter itself."""
    if rule is not None:
        return rule
    if named is not None:
        return named
    also = " (and 'user')" if key == "password" else ""
    return f"the {key!r}{also} connection parameter (conninfo or kwargs)"


def closed_text(name: str, opened: bool) -> str:
    if not opened:
        return f"pool {name!r} is not open yet: call open() first"
    return f"pool {name!r} is closed"


def reopen_error(name: str) -> PoolClosed:
    return PoolClosed(f"pool {name!r} was closed and cannot be reopened")


def forked_while_connecting(name: str) -> PoolError:
    return PoolError(f"pool {name!r}: the process forked while connecting; retry")


def wrong_role(name: str, role: str) -> WrongRole:
    return WrongRole(f"pool {name!r}: the server is a {role} (require_primary=True)")


def foreign_connection(name: str, conn: Any) -> ForeignConnection:
    return ForeignConnection(
        f"pool {name!r}: putconn() got a connection this pool did not lend "
        f"({conn!r}); return each connection to the pool it came from"
    )


def one_line(exc: BaseException | None) -> str:
    """``TypeName: message`` on one line (an error's text as messages quote it)."""
    if exc is None:
        return "unknown error"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"
