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
