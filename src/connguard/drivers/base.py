"""What a pool needs from a DB-API driver, and the driver-independent parts of it."""

from __future__ import annotations

import contextlib
import enum
import os
import select
from typing import Any


class TxStatus(enum.IntEnum):
    """libpq's PQtransactionStatus, which both psycopg generations report."""

    IDLE = 0
    ACTIVE = 1
    INTRANS = 2
    INERROR = 3
    UNKNOWN = 4


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


class Driver:
    """Base driver: subclasses implement connect, status, rollback and ping for one library."""

    name = "base"
    #: exception classes that mean "the connection is unusable" (subclasses extend it)
    disconnect_errors: tuple[type[BaseException], ...] = (OSError,)

    def connect(self, conninfo: str, kwargs: dict[str, Any], timeout: float | None) -> Any:
        raise NotImplementedError

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
