"""What a pool needs from a DB-API driver, and the driver-independent parts of it."""

from __future__ import annotations

import contextlib
import enum
import math
import os
import re
import select
from collections.abc import Mapping
from typing import Any, NamedTuple


class TxStatus(enum.IntEnum):
    """libpq's PQtransactionStatus, which both psycopg generations report."""

    IDLE = 0
    ACTIVE = 1
    INTRANS = 2
    INERROR = 3
    UNKNOWN = 4


# The members every checkin (MySQL) or statement outside a request asks about, as module
# globals: an enum member is a lookup on its class (about 130 ns on Python 3.11), a global
# about 10 ns.
TX_IDLE, TX_INTRANS, TX_UNKNOWN = TxStatus.IDLE, TxStatus.INTRANS, TxStatus.UNKNOWN


_POLL_DEAD = select.POLLIN | select.POLLPRI | select.POLLHUP | select.POLLERR | select.POLLNVAL
_devnull_fd: int | None = None
_CAPACITY_MESSAGES = (
    "too many clients already",
    "remaining connection slots are reserved",
    "too many connections for role",
    "too many connections for database",
)
# Connect failures that say nothing is serving yet (no listener, no socket file, a server
# starting or stopping): the kernel or the postmaster answers at once, without a session.
_ABSENT_MESSAGES = (
    "connection refused",
    "no such file or directory",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "the database system is not yet accepting connections",
    "the database system is not accepting connections",
)

# Connect failures that say a server answered and refused this client: its credentials, its
# role or its database. A configuration error, not an outage. psycopg and psycopg2 report no
# SQLSTATE on a failed connect, so the server's message is matched too (first match wins);
# the value is the connection parameter to fix.
_ACCESS_DENIED_CODES = {"28P01": "password", "28000": "user", "3D000": "dbname"}
_ACCESS_DENIED_MESSAGES = (
    ("password authentication failed", "password"),
    ("no password supplied", "password"),
    ('role "', "user"),  # role "x" does not exist / is not permitted to log in
    ("authentication failed for user", "user"),  # peer, ident, ldap, cert, ...
    ("pg_hba.conf", "pg_hba.conf"),  # no pg_hba.conf entry / pg_hba.conf rejects connection
    ('database "', "dbname"),  # database "x" does not exist
    ("permission denied for database", "dbname"),
)
#: keys of :meth:`Driver.access_denied` that name no connection parameter but a rule kept on
#: a PostgreSQL server, and what an error tells the user to check (:meth:`Driver.access_rule`)
LIBPQ_ACCESS_RULES: Mapping[str, str] = {
    "pg_hba.conf": "the server's pg_hba.conf (no line admits this user, database and host)",
}


#: libpq keywords every TCP connection gets unless the user set them (conninfo, ``kwargs`` or
#: Django's ``OPTIONS``): a keepalive probe after 30 s of silence keeps an idle pooled
#: connection's NAT / load-balancer entry alive (their idle timeouts are 4 min and up: AWS NLB
#: 350 s, Azure 4 min, GCP 10 min) and, with ``tcp_user_timeout``, a dead path is found by the
#: kernel within ``keepalives_idle + keepalives_interval`` (40 s) when idle or waiting for a
#: result, and data the server never acknowledges fails the socket after 30 s — not the
#: kernel's ~15 min of retransmissions. libpq ignores them on unix sockets. See docs/network.md.
TCP_DEFAULTS: Mapping[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 30,  # seconds of silence before the first probe
    "keepalives_interval": 10,  # seconds between probes
    "keepalives_count": 3,  # unanswered probes before the kernel gives up
    "tcp_user_timeout": 30000,  # milliseconds data may stay unacknowledged
}
#: libpq and psycopg both read connect_timeout as whole seconds, and take anything under 2 as 2
LIBPQ_MIN_CONNECT_TIMEOUT = 2


def connect_timeout_seconds(bound: float) -> int:
    """*bound* as libpq's ``connect_timeout``: whole seconds, rounded down so that the attempt
    ends by the caller's deadline, but never under 2 s, libpq's (and psycopg's) minimum: a
    bound under 2 s is kept to within 2 s, not better."""
    return max(LIBPQ_MIN_CONNECT_TIMEOUT, math.floor(bound))


def bounded_connect_timeout(own: Any, bound: int) -> Any:
    """The ``connect_timeout`` to use when the user set *own* (None: not set) and the pool
    allows *bound* whole seconds: the smaller; *bound* for none or 0 (libpq: wait forever).
    A value that is not a number is kept, for libpq to reject with its own message."""
    try:
        mine = 0 if own is None or str(own).strip() == "" else int(float(own))
    except ValueError:
        return own
    return bound if mine <= 0 or mine > bound else own


def libpq_connect_params(
    given: Mapping[str, Any],
    kwargs: Mapping[str, Any],
    timeout: float | None,
    libpq_version: int,
) -> dict[str, Any]:
    """*kwargs* plus what connguard adds to a libpq connection: ``connect_timeout`` bounded
    by *timeout* (the smaller of the user's and the bound), and each of :data:`TCP_DEFAULTS`
    that the user did not set. *given* holds the keywords already in the conninfo string; a
    ``connect_timeout`` from ``$PGCONNECT_TIMEOUT`` counts as the user's too."""
    out = dict(kwargs)
    if timeout is not None:
        own = out.get(
            "connect_timeout",
            given.get("connect_timeout", os.environ.get("PGCONNECT_TIMEOUT")),
        )
        bounded = bounded_connect_timeout(own, connect_timeout_seconds(timeout))
        if bounded is not own or "connect_timeout" in out:  # else the user's stands as it is
            out["connect_timeout"] = bounded
    for key, value in TCP_DEFAULTS.items():
        if key == "tcp_user_timeout" and libpq_version < 120000:
            continue  # libpq 11 and older do not know it
        if key not in out and key not in given:
            out[key] = value
    return out


def with_pool_params(params: Mapping[str, Any], pool_params: Mapping[str, Any]) -> dict[str, Any]:
    """*params* (the user's own connect() keywords, e.g. Django's) completed with what the pool
    adds (:meth:`Driver.connect_params` of no keywords: the ``connect_timeout`` bound and
    :data:`TCP_DEFAULTS`): the user's values win, except a ``connect_timeout`` (theirs or
    ``$PGCONNECT_TIMEOUT``) longer than the bound."""
    out = dict(params)
    extra = dict(pool_params)
    bound = extra.pop("connect_timeout", None)
    for key, value in extra.items():
        out.setdefault(key, value)
    if bound is not None:
        own = out.get("connect_timeout", os.environ.get("PGCONNECT_TIMEOUT"))
        bounded = bounded_connect_timeout(own, bound)
        if bounded is not own or "connect_timeout" in out:
            out["connect_timeout"] = bounded
    return out


#: how the drivers' ping() says the server did not answer within its timeout
PING_TIMEOUT_MESSAGE = "ping timed out"


def is_ping_timeout(exc: BaseException) -> bool:
    """*exc* is a ping that got no answer in time (as opposed to one the server refused or a
    socket already closed): the network path may be dead. MySQL's errors carry it as their
    message after the error number: ``(2013, 'ping timed out after 5.00 s')``."""
    if str(exc).startswith(PING_TIMEOUT_MESSAGE):
        return True
    args: tuple[Any, ...] = getattr(exc, "args", ())
    return len(args) == 2 and str(args[1]).startswith(PING_TIMEOUT_MESSAGE)


# SQLSTATEs that say the server changed role or is going away (besides the whole 08 class):
# a read-only transaction (a demoted primary, a standby), an administrator's shutdown or
# terminate, a crash shutdown, a server that cannot take sessions now (starting, stopping).
_ROLE_CHANGE_STATES = frozenset({"25006", "57P01", "57P02", "57P03"})
# pg_is_in_recovery(), and whether a new transaction would be read-only (a standby, or a
# primary running with default_transaction_read_only): libpq's own target_session_attrs tests
ROLE_QUERY = (
    "SELECT pg_catalog.pg_is_in_recovery(), pg_catalog.current_setting('transaction_read_only')"
)


class Role(enum.Enum):
    """What a server is to a session right now (see :meth:`Driver.role`)."""

    PRIMARY = "primary"  # writable
    READ_ONLY = "read-only"  # a primary that refuses writes (default_transaction_read_only)
    STANDBY = "standby"  # in recovery


def _devnull() -> int:
    global _devnull_fd
    if _devnull_fd is None:
        _devnull_fd = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    return _devnull_fd


class RolePolicy(NamedTuple):
    """Which servers a pool's connections may be on (see :meth:`Driver.role_policy`)."""

    needs_primary: bool  # lend connections to a writable primary only
    check_new_role: bool  # ask a new connection's role (the driver's connect did not)
    roles_ok: tuple[Role, ...]  # the roles that count as a primary


def target_session_attrs(conninfo: str, kwargs: Mapping[str, Any]) -> str | None:
    """libpq's target_session_attrs from *kwargs* or *conninfo* (keywords or URL)."""
    value = kwargs.get("target_session_attrs")
    if value is None and "target_session_attrs" in conninfo:
        found = re.search(r"target_session_attrs\s*=\s*'?([a-z-]+)", conninfo)
        value = found.group(1) if found else None
    return None if value is None else str(value)


class Driver:
    """Base driver: subclasses implement connect, status, rollback and ping for one library."""

    name = "base"
    #: exception classes that mean "the connection is unusable" (subclasses extend it)
    disconnect_errors: tuple[type[BaseException], ...] = (OSError,)

    def connect(self, conninfo: str, kwargs: dict[str, Any], timeout: float | None) -> Any:
        raise NotImplementedError

    def connect_params(
        self, conninfo: str, kwargs: dict[str, Any], timeout: float | None
    ) -> dict[str, Any]:
        """The keywords to connect with: *kwargs* plus the connect bound (*timeout* seconds,
        the smaller of the pool's ``connect_timeout`` and the caller's remaining wait) and the
        TCP keepalive defaults, in the driver's terms. The pool passes them to a ``connect``
        callable too. This base adds nothing."""
        return dict(kwargs)

    def after_connect(self, conn: Any, conninfo: str, kwargs: Mapping[str, Any]) -> None:
        """What :meth:`connect` does to a new connection after the library opened it, done by
        the pool to one a ``connect=`` callable opened (with the pool's *conninfo* and
        *kwargs*): e.g. TCP keepalive set on the socket, for a library that has no option
        for it. This base does nothing (libpq takes them as connect keywords)."""

    def finish_connect(self, conn: Any, conninfo: str, kwargs: Mapping[str, Any]) -> Any:
        """*conn* after :meth:`after_connect`; closed, and the error raised, when that fails."""
        try:
            self.after_connect(conn, conninfo, kwargs)
        except BaseException:
            self.close(conn)
            raise
        return conn

    def fileno(self, conn: Any) -> int:
        """The socket's file descriptor, or -1 when there is none."""
        try:
            return int(conn.fileno())
        except Exception:
            return -1

    def is_closed(self, conn: Any) -> bool:
        raise NotImplementedError

    def transaction_status(self, conn: Any) -> int:
        """A :class:`TxStatus` value (a plain int: this runs at every checkin)."""
        raise NotImplementedError

    def rollback(self, conn: Any) -> None:
        conn.rollback()

    def commit(self, conn: Any) -> None:
        conn.commit()

    def ping(self, conn: Any, timeout: float) -> None:
        """One round trip that leaves the transaction status as it was; raise if it fails."""
        raise NotImplementedError

    def close(self, conn: Any) -> None:
        """Close the connection; never raise (it may be dead, or closed already)."""
        with contextlib.suppress(Exception):
            conn.close()

    def is_capacity_error(self, exc: BaseException) -> bool:
        """The server is up but has no connection slot left (SQLSTATE 53300)."""
        code = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
        if code == "53300":
            return True
        text = str(exc)
        return any(marker in text for marker in _CAPACITY_MESSAGES)

    def is_server_absent(self, exc: BaseException) -> bool:
        """A connect failed because no server is accepting sessions at the address yet
        (refused, no socket file, starting up or shutting down), as opposed to one that
        answered and refused this client (authentication, unknown database, ...)."""
        text = str(exc).lower()
        return any(marker in text for marker in _ABSENT_MESSAGES)

    def access_denied(self, exc: BaseException) -> str | None:
        """When a connect failed because the server refused this client (authentication,
        unknown role or database, no pg_hba.conf entry): the connection parameter to fix
        (``password``, ``user``, ``dbname`` or ``pg_hba.conf``); else None."""
        if self.is_capacity_error(exc):  # "too many connections for role": the server is full
            return None
        text = str(exc)
        if "FATAL" in text or "fe_sendauth" in text:
            lowered = text.lower()
            for marker, key in _ACCESS_DENIED_MESSAGES:
                if marker in lowered:
                    return key
        code = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
        return _ACCESS_DENIED_CODES.get(code) if isinstance(code, str) else None

    def access_rule(self, key: str) -> str | None:
        """When :meth:`access_denied` returned *key* and *key* names a rule kept on the server
        rather than a connection parameter: what an error tells the user to check there.
        None when *key* is a connection parameter (this base: always)."""
        return None

    def is_disconnect(self, exc: BaseException) -> bool:
        return isinstance(exc, self.disconnect_errors)

    def is_role_change(self, exc: BaseException) -> bool:
        """*exc* says the server changed role or is going away: SQLSTATE 25006 (read-only
        transaction), 57P01/57P02/57P03 (shutdown, crash, cannot connect now), any 08xxx
        (connection exception), or a connection lost without a SQLSTATE. Other connections
        to the same server are then suspect (see ``ConnectionPool.invalidate``)."""
        code = getattr(exc, "sqlstate", None) or getattr(exc, "pgcode", None)
        if code:
            return code in _ROLE_CHANGE_STATES or code.startswith("08")
        return self.is_disconnect(exc)

    def role(self, conn: Any, timeout: float) -> Role:
        """One round trip (bounded by *timeout*) telling whether the server behind an idle
        *conn* is a writable primary, a read-only primary or a standby; raise if it fails.
        Leaves the transaction status as it was."""
        in_recovery, read_only = self.query_row(conn, ROLE_QUERY, timeout)
        if str(in_recovery).lower() in ("t", "true"):
            return Role.STANDBY
        return Role.READ_ONLY if str(read_only).lower() == "on" else Role.PRIMARY

    def role_policy(
        self, conninfo: str, kwargs: Mapping[str, Any], require_primary: bool | None
    ) -> RolePolicy:
        """What the pool must check of the server's role. *require_primary* (the pool
        option) wins when set; else libpq's ``target_session_attrs`` read-write or primary
        asks for a primary, and libpq then checks a new connection itself."""
        attrs = target_session_attrs(conninfo, kwargs)
        libpq_checks = attrs in ("read-write", "primary")
        needs = require_primary if require_primary is not None else libpq_checks
        # target_session_attrs=primary means "not in recovery", as libpq checks it: a primary
        # that is read-only still counts (only read-write also refuses that one)
        ok = (Role.PRIMARY, Role.READ_ONLY) if attrs == "primary" else (Role.PRIMARY,)
        return RolePolicy(needs, needs and not libpq_checks, ok)

    def query_row(self, conn: Any, sql: str, timeout: float) -> tuple[Any, ...]:
        """The first row of *sql* on an idle *conn*, bounded by *timeout*, leaving no
        transaction open."""
        raise NotImplementedError

    def make_poller(self, fd: int) -> select.poll | None:
        """A poller registered once per connection: checking it costs one syscall."""
        if fd < 0:
            return None
        poller = select.poll()
        poller.register(fd, _POLL_DEAD)
        return poller

    def abandon(self, conn: Any, fd: int) -> None:
        """Drop a connection inherited across fork() without sending anything to the server.

        The descriptor is pointed at /dev/null first, so whatever the driver writes while it
        closes (libpq's Terminate, an SSL close_notify) goes nowhere: the parent's session on
        the shared socket is untouched.
        """
        self.abandon_fd(fd)
        self.close(conn)

    @staticmethod
    def abandon_fd(fd: int) -> None:
        """Point *fd* at /dev/null: whoever still holds the connection can no longer reach
        the server through it (writes vanish, reads see end-of-file)."""
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.dup2(_devnull(), fd, inheritable=False)


def poll_wait(fd: int, events: int, timeout: float) -> bool:
    """Wait up to *timeout* seconds for *events* on *fd*; True when they happened."""
    poller = select.poll()
    poller.register(fd, events)
    return bool(poller.poll(max(0.0, timeout) * 1000.0))
