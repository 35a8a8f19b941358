"""psycopg 3."""

from __future__ import annotations

import select
import time
from typing import Any

import psycopg
import psycopg.conninfo
from psycopg import pq

from connguard.drivers.base import LIBPQ_ACCESS_RULES, Driver, libpq_connect_params, poll_wait


class PsycopgDriver(Driver):
    name = "psycopg"
    disconnect_errors = (psycopg.OperationalError, psycopg.InterfaceError, OSError)

    def __init__(self, connection_class: type[psycopg.Connection[Any]] | None = None) -> None:
        self.connection_class = connection_class or psycopg.Connection

    def connect(self, conninfo: str, kwargs: dict[str, Any], timeout: float | None) -> Any:
        return self.connection_class.connect(
            conninfo, **self.connect_params(conninfo, kwargs, timeout)
        )

    def connect_params(
        self, conninfo: str, kwargs: dict[str, Any], timeout: float | None
    ) -> dict[str, Any]:
        # psycopg 3 enforces connect_timeout itself (its own wait, per host), as libpq does:
        # whole seconds, at least 2.
        try:
            given = psycopg.conninfo.conninfo_to_dict(conninfo) if conninfo else {}
        except psycopg.Error:
            given = {}  # a bad conninfo: connect() says so
        return libpq_connect_params(given, kwargs, timeout, pq.version())

    def access_rule(self, key: str) -> str | None:
        return LIBPQ_ACCESS_RULES.get(key)  # pg_hba.conf

    def is_closed(self, conn: Any) -> bool:
        return bool(conn.closed or conn.broken)

    def transaction_status(self, conn: Any) -> int:
        return conn.pgconn.transaction_status

    def ping(self, conn: Any, timeout: float) -> None:
        # An empty query, straight through libpq: see _exchange().
        self._exchange(conn, b"", timeout, "ping")

    def query_row(self, conn: Any, sql: str, timeout: float) -> tuple[Any, ...]:
        row = self._exchange(conn, sql.encode(), timeout, "query")
        if row is None:
            raise psycopg.OperationalError("connection is closed")
        return row

    @staticmethod
    def _exchange(conn: Any, sql: bytes, timeout: float, what: str) -> tuple[Any, ...] | None:
        """Send *sql* and read every result, talking to libpq directly (no BEGIN even when
        autocommit is off), bounded by *timeout* even when the network swallows packets.
        Returns the first row (as text), None when there is none."""
        pgconn = conn.pgconn
        if pgconn.status != pq.ConnStatus.OK:
            raise psycopg.OperationalError("connection is closed")
        deadline = time.monotonic() + timeout
        pgconn.send_query(sql)
        while pgconn.flush():
            if not poll_wait(pgconn.socket, select.POLLOUT, deadline - time.monotonic()):
                raise psycopg.OperationalError(f"{what} timed out after {timeout:.2f} s")
        row: tuple[Any, ...] | None = None
        failed = None
        while True:
            while pgconn.is_busy():
                if not poll_wait(pgconn.socket, select.POLLIN, deadline - time.monotonic()):
                    raise psycopg.OperationalError(f"{what} timed out after {timeout:.2f} s")
                pgconn.consume_input()
            res = pgconn.get_result()
            if res is None:
                break
            if res.status == pq.ExecStatus.FATAL_ERROR:
                failed = res.error_message.decode(errors="replace").strip()
            elif res.status == pq.ExecStatus.TUPLES_OK and row is None and res.ntuples:
                row = tuple(
                    (v.decode() if (v := res.get_value(0, i)) is not None else None)
                    for i in range(res.nfields)
                )
        if failed is not None or pgconn.status != pq.ConnStatus.OK:
            raise psycopg.OperationalError(failed or "connection is closed")
        return row
