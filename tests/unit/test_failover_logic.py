"""Failover logic on the fake driver: invalidation by generation, the role check before
lending, waiting for a primary (failover_timeout), and the error classification.

The real-server proof (pg_basebackup standby, pg_ctl promote) is in
tests/integration/test_pool_failover.py and tests/django/test_django_failover.py.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from fakedb import FakeDriver, FakeServer, OperationalError

from connguard import ConnectionPool
from connguard.drivers import Role, get_driver
from connguard.errors import PoolUnavailable


class RoleDriver(FakeDriver):
    """The fake driver, with a server role that a test flips (for every connection, or for
    the connections of the "old server" only)."""

    def __init__(self, server: FakeServer) -> None:
        super().__init__(server)
        self.role_now = Role.PRIMARY
        self.demoted: dict[int, Role] = {}
        self.role_checks = 0

    def role(self, conn: Any, timeout: float) -> Role:
        self.role_checks += 1
        self.server.ping(conn, timeout)
        return self.demoted.get(id(conn), self.role_now)


class SqlError(Exception):
    def __init__(self, sqlstate: str | None) -> None:
        super().__init__(f"error {sqlstate}")
        self.sqlstate = sqlstate


@pytest.fixture
def role_driver(server: FakeServer) -> RoleDriver:
    return RoleDriver(server)


@pytest.fixture
def make(role_driver: RoleDriver) -> Any:
    pools: list[ConnectionPool] = []

    def _make(**options: Any) -> ConnectionPool:
        options.setdefault("timeout", 2.0)
        pool = ConnectionPool("fake://", driver=role_driver, **options)
        pools.append(pool)
        return pool

    yield _make
    for pool in pools:
        pool.close()


def fill(pool: ConnectionPool, n: int) -> list[Any]:
    conns = [pool.getconn() for _ in range(n)]
    for conn in conns:
        pool.putconn(conn)
    return conns


def test_invalidate_checks_idle_connections_instead_of_closing_them(
    make: Any, server: FakeServer
) -> None:
    pool = make(max_size=3)
    conns = fill(pool, 3)
    pool.invalidate()
    assert all(server.is_open(c) for c in conns)  # nothing walked, nothing closed
    pings = server.pings
    again = [pool.getconn() for _ in range(3)]
    assert set(map(id, again)) == set(map(id, conns))
    assert server.pings == pings + 3  # each checked once
    for conn in again:
        pool.putconn(conn)
    pool.putconn(pool.getconn())
    assert server.pings == pings + 3  # and not again
    assert pool.get_stats()["invalidations"] == 1


def test_invalidated_dead_connections_are_replaced(make: Any, server: FakeServer) -> None:
    pool = make(max_size=2)
    conns = fill(pool, 2)
    server.kill_all()
    pool.invalidate()
    conn = pool.getconn()
    assert conn not in conns
    pool.putconn(conn)
    assert pool.get_stats()["connections_lost"] >= 1


def test_a_lent_connection_is_checked_after_it_comes_back(make: Any, server: FakeServer) -> None:
    pool = make(max_size=1)
    conn = pool.getconn()
    pool.invalidate()
    pool.putconn(conn)  # kept: a newer generation checks it, it does not retire it
    assert server.is_open(conn)
    pings = server.pings
    assert pool.getconn() is conn
    assert server.pings == pings + 1


def test_drain_still_retires_everything(make: Any, server: FakeServer) -> None:
    pool = make(max_size=2)
    conns = fill(pool, 2)
    pool.invalidate()
    pool.drain()
    assert not any(server.is_open(c) for c in conns)


def test_require_primary_replaces_connections_on_a_demoted_server(
    make: Any, server: FakeServer, role_driver: RoleDriver
) -> None:
    pool = make(max_size=2, require_primary=True)
    assert role_driver.role_checks == 0
    conns = fill(pool, 2)
    assert role_driver.role_checks == 2  # new connections: no target_session_attrs to do it
    # the old server is demoted; new connections reach the new primary
    role_driver.demoted = {id(c): Role.READ_ONLY for c in conns}
    assert pool.report_error(SqlError("25006"))
    conn = pool.getconn()
    assert conn not in conns
    pool.putconn(conn)
    assert pool.get_stats()["connections_wrong_role"] >= 1


def test_target_session_attrs_primary_accepts_a_read_only_primary(
    make: Any, role_driver: RoleDriver
) -> None:
    """libpq's target_session_attrs=primary means "not in recovery": a read-only primary is
    one. Retiring its connections would only reconnect to it again."""
    pool = make(max_size=1, kwargs={"target_session_attrs": "primary"})
    (conn,) = fill(pool, 1)
    assert role_driver.role_checks == 0  # libpq checks new connections itself
    role_driver.role_now = Role.READ_ONLY
    pool.invalidate()
    assert pool.getconn() is conn
    role_driver.role_now = Role.STANDBY
    pool.putconn(conn)
    pool.invalidate()
    assert pool.getconn() is not conn


@pytest.mark.parametrize(
    ("sqlstate", "expected"),
    [("25006", True), ("57P01", True), ("57P02", True), ("57P03", True), ("08006", True),
     ("08001", True), ("23505", False), ("40001", False), ("57014", False)],
)  # fmt: skip
def test_report_error_classifies(make: Any, sqlstate: str, expected: bool) -> None:
    pool = make(max_size=1)
    assert pool.report_error(SqlError(sqlstate)) is expected
    assert pool.get_stats()["invalidations"] == int(expected)


def test_a_lost_connection_without_sqlstate_is_a_role_change(make: Any) -> None:
    pool = make(max_size=1)
    assert pool.report_error(OperationalError("server closed the connection unexpectedly"))
    assert not pool.report_error(ValueError("not a database error"))


def test_psycopg_error_classes() -> None:
    """psycopg 3's error classes carry their SQLSTATE: no server needed."""
    psycopg = pytest.importorskip("psycopg")
    driver = get_driver("psycopg")
    assert driver.is_role_change(psycopg.errors.ReadOnlySqlTransaction("x"))
    assert driver.is_role_change(psycopg.errors.AdminShutdown("x"))
    assert driver.is_role_change(psycopg.errors.CannotConnectNow("x"))
    assert driver.is_role_change(psycopg.OperationalError("connection lost"))
    assert not driver.is_role_change(psycopg.errors.UniqueViolation("x"))
    assert not driver.is_role_change(psycopg.errors.QueryCanceled("x"))


def test_a_pool_that_requires_a_primary_waits_for_one(make: Any, server: FakeServer) -> None:
    """After it lost its primary, a checkout waits (within failover_timeout and its own
    timeout) while one connect at a time looks for the new one, instead of failing fast."""
    pool = make(max_size=2, require_primary=True, failover_timeout=5.0, timeout=5.0)
    fill(pool, 1)
    server.kill_all()
    server.down = True
    threading.Timer(0.5, lambda: setattr(server, "down", False)).start()
    started = time.monotonic()
    conn = pool.getconn()
    waited = time.monotonic() - started
    pool.putconn(conn)
    assert waited >= 0.4
    stats = pool.get_stats()
    assert stats["requests_failed_fast"] == 0 and stats["breaker_opened"] == 1


def test_without_require_primary_the_breaker_still_fails_fast(
    make: Any, server: FakeServer
) -> None:
    pool = make(max_size=2, timeout=5.0)
    fill(pool, 1)
    server.kill_all()
    server.down = True
    with pytest.raises(PoolUnavailable):
        pool.getconn()
    started = time.monotonic()
    with pytest.raises(PoolUnavailable):
        pool.getconn()
    assert time.monotonic() - started < 1.0


def test_failover_timeout_bounds_the_wait(make: Any, server: FakeServer) -> None:
    pool = make(max_size=2, require_primary=True, failover_timeout=0.3, timeout=10.0)
    fill(pool, 1)
    server.kill_all()
    server.down = True
    started = time.monotonic()
    with pytest.raises(PoolUnavailable):
        pool.getconn()
    assert time.monotonic() - started < 5.0
    with pytest.raises(PoolUnavailable):  # after the window: fail fast again
        pool.getconn()


def test_a_process_that_never_connected_waits_too(make: Any, server: FakeServer) -> None:
    """A worker that had served no request yet when the primary went away (or one started
    during the failover) waits for the new primary like the others."""
    pool = make(max_size=2, require_primary=True, failover_timeout=5.0, timeout=5.0)
    server.down = True
    threading.Timer(0.3, lambda: setattr(server, "down", False)).start()
    pool.putconn(pool.getconn())
    assert pool.get_stats()["requests_failed_fast"] == 0
