"""Helpers for the pool's integration tests (tests/integration/test_pool_*.py).

Every pool a test makes is named uniquely and connects with ``application_name`` set to
that name, so the test can count, inspect and terminate exactly its own server sessions
through the rig (``pg.count_connections(application_name=pool.name)``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from connguard import ConnectionPool
from support import pool_name, query, scalar, stat, wait_until

__all__ = [
    "DRIVERS", "backend_pid", "driver", "make_pool", "pid_alive", "query", "scalar", "stat",
    "tx_status", "wait_until",
]  # fmt: skip

DRIVERS = ["psycopg", "psycopg2"]


@pytest.fixture
def make_pool(pg: Any, request: pytest.FixtureRequest) -> Iterator[Callable[..., ConnectionPool]]:
    """``make_pool(driver=..., conninfo=..., **options)``: a pool on the rig's server whose
    sessions carry ``application_name=pool.name``; closed after the test."""
    pools: list[ConnectionPool] = []

    def make(conninfo: str | None = None, **options: Any) -> ConnectionPool:
        name = options.pop("name", None) or pool_name(request)
        if conninfo is None:
            conninfo = pg.conninfo(application_name=name, connect_timeout=5)
        options.setdefault("timeout", 10.0)
        pool = ConnectionPool(conninfo, name=name, **options)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def backend_pid(conn: Any) -> int:
    """The server process id of a psycopg 3 or psycopg2 connection."""
    if hasattr(conn, "info"):
        return int(conn.info.backend_pid)
    return int(conn.get_backend_pid())


def tx_status(conn: Any) -> int:
    if hasattr(conn, "info"):
        return int(conn.info.transaction_status)
    return int(conn.get_transaction_status())


def pid_alive(pg: Any, pid: int) -> bool:
    return bool(pg.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])[0][0])
