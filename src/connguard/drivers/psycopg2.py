"""psycopg2."""

from __future__ import annotations

import math
from typing import Any

import psycopg2
import psycopg2.extensions

from connguard.drivers.base import Driver, TxStatus


class Psycopg2Driver(Driver):
    name = "psycopg2"
    disconnect_errors = (psycopg2.OperationalError, psycopg2.InterfaceError, OSError)

    def connect(self, conninfo: str, kwargs: dict[str, Any], timeout: float | None) -> Any:
        kw = dict(kwargs)
        if (
            timeout is not None
            and "connect_timeout" not in kw
            and "connect_timeout" not in conninfo
        ):
            kw["connect_timeout"] = max(2, math.ceil(timeout))
        return psycopg2.connect(conninfo, **kw)

    def is_closed(self, conn: Any) -> bool:
        return bool(conn.closed)

    def transaction_status(self, conn: Any) -> int:
        if conn.closed:
            return TxStatus.UNKNOWN
        return conn.get_transaction_status()

    def ping(self, conn: Any, timeout: float) -> None:
        # psycopg2 has no libpq-level API: a SELECT 1, rolled back when it opened a transaction.
        was_idle = conn.get_transaction_status() == psycopg2.extensions.TRANSACTION_STATUS_IDLE
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
        if was_idle and not conn.autocommit:
            conn.rollback()
