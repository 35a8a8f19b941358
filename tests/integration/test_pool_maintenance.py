"""Background work and whole-pool operations against the real server: max_lifetime with
jitter, max_idle, keepalive, resize, check, drain, close."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from pool_support import backend_pid, driver, make_pool, scalar, stat, wait_until

from connguard import PoolClosed

__all__ = ["driver", "make_pool"]  # fixtures


def test_max_lifetime_with_jitter_spreads_the_replacements(make_pool, pg: Any) -> None:
    pool = make_pool(max_size=6, max_lifetime=1.0, lifetime_jitter=0.5)
    conns = [pool.getconn() for _ in range(6)]
    original = {backend_pid(c) for c in conns}
    for conn in conns:
        pool.putconn(conn)
    started = time.monotonic()
    gone_at: dict[int, float] = {}
    deadline = started + 5
    while len(gone_at) < 6 and time.monotonic() < deadline:
        conns = [pool.getconn() for _ in range(6)]
        now = time.monotonic() - started
        pids = {backend_pid(c) for c in conns}
        for pid in original - pids:
            gone_at.setdefault(pid, now)
        for conn in conns:
            pool.putconn(conn)
        time.sleep(0.02)
    assert len(gone_at) == 6, "not every connection was replaced"
    times = sorted(gone_at.values())
    assert times[0] >= 0.45 and times[-1] <= 1.6, times  # within [0.5, 1.0] s of life
    assert times[-1] - times[0] >= 0.1, times  # not all at once
    assert stat(pool, "connections_expired") >= 6
    wait_until(lambda: pg.count_connections(application_name=pool.name) <= 6)


def test_max_idle_closes_idle_extras_above_min_size(make_pool, pg: Any, driver: str) -> None:
    pool = make_pool(driver=driver, min_size=1, max_size=4, max_idle=0.2)
    pool.wait(20)
    conns = [pool.getconn() for _ in range(4)]
    for conn in conns:
        pool.putconn(conn)
    assert pg.count_connections(application_name=pool.name) == 4
    wait_until(lambda: pg.count_connections(application_name=pool.name) == 1, timeout=10)
    assert stat(pool, "connections_idle_closed") == 3
    assert stat(pool, "pool_size") == 1


def test_keepalive_pings_idle_connections(make_pool, pg: Any, driver: str) -> None:
    pool = make_pool(driver=driver, min_size=2, keepalive_interval=0.2)
    pool.wait(20)

    def last_activity() -> list[Any]:  # each session's last state change, seen by the server
        return [
            r[0]
            for r in pg.execute(
                "SELECT state_change FROM pg_stat_activity WHERE application_name = %s "
                "ORDER BY pid",
                [pool.name],
            )
        ]

    first = last_activity()
    assert len(first) == 2
    wait_until(lambda: all(b > a for a, b in zip(first, last_activity(), strict=True)))
    assert stat(pool, "checkouts") == 0
    assert pg.connections(application_name=pool.name) == {"idle": 2}


def test_keepalive_finds_a_dead_idle_connection_without_a_checkout(
    make_pool, pg: Any, driver: str
) -> None:
    pool = make_pool(driver=driver, min_size=2, keepalive_interval=0.2)
    pool.wait(20)
    assert pg.terminate(application_name=pool.name) == 2
    wait_until(lambda: stat(pool, "connections_lost") == 2, timeout=10)
    wait_until(lambda: pg.count_connections(application_name=pool.name) == 2, timeout=10)
    assert stat(pool, "checkouts") == 0


def test_check_replaces_dead_ones_and_refills(make_pool, pg: Any, driver: str) -> None:
    pool = make_pool(driver=driver, min_size=3)
    pool.wait(20)
    pg.terminate(application_name=pool.name)
    pool.check()
    assert stat(pool, "connections_lost") == 3
    assert pg.count_connections(application_name=pool.name) == 3
    with pool.connection() as conn:
        assert scalar(conn, "SELECT 1") == 1


def test_resize(make_pool, pg: Any) -> None:
    pool = make_pool(max_size=2)
    pool.putconn(pool.getconn())
    pool.resize(4, 6)
    wait_until(lambda: pg.count_connections(application_name=pool.name) == 4, timeout=10)
    conns = [pool.getconn() for _ in range(6)]
    assert pg.count_connections(application_name=pool.name) == 6
    pool.resize(1, 2)
    for conn in conns:
        pool.putconn(conn)
    # The pool closed four connections; their backends exit on the server a moment later.
    wait_until(lambda: pg.count_connections(application_name=pool.name) == 2, timeout=10)
    assert pool.get_stats()["pool_size"] == 2
    assert stat(pool, "pool_max") == 2


def test_drain_replaces_every_connection(make_pool, pg: Any) -> None:
    pool = make_pool(max_size=2)
    lent = pool.getconn()
    idle = pool.getconn()
    old = {backend_pid(lent), backend_pid(idle)}
    pool.putconn(idle)
    pool.drain()
    # Closed connections' backends exit on the server a moment after the client closes.
    wait_until(lambda: pg.count_connections(application_name=pool.name) == 1)  # the lent one
    pool.putconn(lent)
    wait_until(lambda: pg.count_connections(application_name=pool.name) == 0)
    with pool.connection() as conn:
        assert backend_pid(conn) not in old


def test_close(make_pool, pg: Any, driver: str) -> None:
    pool = make_pool(driver=driver, min_size=2, max_size=3)
    pool.wait(20)
    lent = [pool.getconn() for _ in range(3)]
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            pool.getconn(timeout=20)
        except BaseException as exc:
            errors.append(exc)

    waiters = [threading.Thread(target=wait) for _ in range(2)]
    for t in waiters:
        t.start()
    wait_until(lambda: stat(pool, "requests_waiting") == 2)
    pool.putconn(lent.pop())  # handed to the first waiter
    wait_until(lambda: stat(pool, "requests_waiting") == 1)
    pool.close()
    for t in waiters:
        t.join(10)
    assert [type(e) for e in errors] == [PoolClosed]
    assert pg.count_connections(application_name=pool.name) >= 2  # still lent
    for conn in lent:
        assert scalar(conn, "SELECT 1") == 1  # a lent connection keeps working
        pool.putconn(conn)  # closed on return
    wait_until(lambda: pg.count_connections(application_name=pool.name) <= 1)
    with pytest.raises(PoolClosed):
        pool.getconn()
