"""psycopg2."""

from __future__ import annotations

import contextlib
import os
import socket
import threading
from typing import Any

import psycopg2
import psycopg2.extensions

from connguard.drivers.base import LIBPQ_ACCESS_RULES, Driver, TxStatus, libpq_connect_params


class Psycopg2Driver(Driver):
    name = "psycopg2"
    disconnect_errors = (psycopg2.OperationalError, psycopg2.InterfaceError, OSError)

    def connect(self, conninfo: str, kwargs: dict[str, Any], timeout: float | None) -> Any:
        return psycopg2.connect(conninfo, **self.connect_params(conninfo, kwargs, timeout))

    def connect_params(
        self, conninfo: str, kwargs: dict[str, Any], timeout: float | None
    ) -> dict[str, Any]:
        # libpq enforces connect_timeout (per host): whole seconds, at least 2.
        try:
            given = psycopg2.extensions.parse_dsn(conninfo) if conninfo else {}
        except psycopg2.Error:
            given = {}  # a bad conninfo: connect() says so
        return libpq_connect_params(given, kwargs, timeout, psycopg2.extensions.libpq_version())

    def access_rule(self, key: str) -> str | None:
        return LIBPQ_ACCESS_RULES.get(key)  # pg_hba.conf

    def is_closed(self, conn: Any) -> bool:
        return bool(conn.closed)

    def transaction_status(self, conn: Any) -> int:
        if conn.closed:
            return TxStatus.UNKNOWN
        return conn.get_transaction_status()

    def ping(self, conn: Any, timeout: float) -> None:
        self._exchange(conn, "SELECT 1", timeout, "ping")

    def query_row(self, conn: Any, sql: str, timeout: float) -> tuple[Any, ...]:
        row = self._exchange(conn, sql, timeout, "query")
        if row is None:
            raise psycopg2.OperationalError(f"no row from {sql!r}")
        return tuple(row)

    @staticmethod
    def _exchange(conn: Any, sql: str, timeout: float, what: str) -> Any:
        """Run *sql* and return its first row. psycopg2 has no libpq-level API: a query,
        rolled back when it opened a transaction. libpq waits for the answer without a limit,
        so a watchdog shuts the socket down after *timeout*: on a stalled network the query
        then fails instead of hanging."""
        was_idle = conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
        watchdog = _Watchdog(conn.fileno(), timeout)
        try:
            with conn.cursor() as cur:
                cur.execute(sql)
                row = cur.fetchone()
        except psycopg2.Error as exc:
            if watchdog.stop():
                raise psycopg2.OperationalError(f"{what} timed out after {timeout:.2f} s") from exc
            raise
        if watchdog.stop():
            raise psycopg2.OperationalError(f"{what} timed out after {timeout:.2f} s")
        if was_idle and not conn.autocommit:
            conn.rollback()
        return row


class _Watchdog:
    """Shut a socket down (both ways) unless stopped within *timeout* seconds."""

    def __init__(self, fd: int, timeout: float) -> None:
        self._fd = fd
        self._lock = threading.Lock()
        self._done = False
        self.fired = False
        self._timer = threading.Timer(timeout, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self._done = self.fired = True
            with contextlib.suppress(OSError):
                sock = socket.socket(fileno=os.dup(self._fd))
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                finally:
                    sock.close()

    def stop(self) -> bool:
        """Stop the watchdog; True when it had fired (the socket is shut down)."""
        with self._lock:
            self._done = True
        self._timer.cancel()
        return self.fired
