"""Helpers for the pool's integration tests (tests/integration/test_pool_*.py).

Every pool a test makes is named uniquely and connects with ``application_name`` set to
that name, so the test can count, inspect and terminate exactly its own server sessions
through the rig (``pg.count_connections(application_name=pool.name)``).
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from connguard import ConnectionPool

DRIVERS = ["psycopg", "psycopg2"]
_numbers = itertools.count(1)


def pool_name(request: pytest.FixtureRequest) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    return f"cg-{base[:40]}-{next(_numbers)}"


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


def query(conn: Any, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
        return list(cur.fetchall()) if cur.description else []
    finally:
        cur.close()


def scalar(conn: Any, sql: str, params: Any = None) -> Any:
    return query(conn, sql, params)[0][0]


def tx_status(conn: Any) -> int:
    if hasattr(conn, "info"):
        return int(conn.info.transaction_status)
    return int(conn.get_transaction_status())


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, step: float = 0.01) -> None:
    """Poll *predicate* until true; fail after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(step)


def stat(pool: ConnectionPool, name: str) -> int:
    return int(pool.get_stats()[name])


def pid_alive(pg: Any, pid: int) -> bool:
    return bool(pg.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid])[0][0])
