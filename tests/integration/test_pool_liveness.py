"""Liveness at checkout against real faults: pg_terminate_backend, restarts, a killed server,
idle_session_timeout, a stalled network (ping_timeout) and a cut one (RST). The caller
never receives a dead connection; pings happen only after ping_interval."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from pool_support import backend_pid, driver, make_pool, pid_alive, scalar, stat, wait_until

__all__ = ["driver", "make_pool"]  # fixtures


def warm(pool: Any, n: int) -> list[int]:
    """Open n connections, return them, and give back their backend pids."""
    conns = [pool.getconn() for _ in range(n)]
    pids = [backend_pid(c) for c in conns]
    for conn in conns:
        pool.putconn(conn)
    return pids


def test_terminated_backends_are_replaced_transparently(make_pool, pg: Any, driver: str) -> None:
    pool = make_pool(driver=driver, max_size=3, ping_interval=60)
    old = warm(pool, 3)
    assert pg.terminate(application_name=pool.name) == 3
    with pool.connection() as conn:
        assert scalar(conn, "SELECT 1") == 1
        assert backend_pid(conn) not in old
    stats = pool.get_stats()
    assert stats["connections_lost"] == 3  # all three found dead by the poll, confirmed
    assert stats["pings"] == 3  # one ping each: only because the socket had data
    assert stats["requests_errors"] == 0


def test_one_terminated_backend_among_healthy_ones(make_pool, pg: Any, driver: str) -> None:
    pool = make_pool(driver=driver, max_size=3, ping_interval=60)
    old = warm(pool, 3)
    pg.execute("SELECT pg_terminate_backend(%s)", [old[-1]])  # the top of the idle stack
    wait_until(lambda: not pid_alive(pg, old[-1]))
    conns = [pool.getconn() for _ in range(3)]
    pids = {backend_pid(c) for c in conns}
    assert all(scalar(c, "SELECT 1") == 1 for c in conns)
    assert old[-1] not in pids and {old[0], old[1]} <= pids
    for conn in conns:
        pool.putconn(conn)
    assert stat(pool, "connections_lost") == 1


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_server_restart(make_pool, pg: Any, driver: str, mode: str) -> None:
    pool = make_pool(driver=driver, min_size=2, max_size=2)
    pool.wait(20)
    old = warm(pool, 2)
    pg.restart(mode=mode)
    for _ in range(5):
        with pool.connection() as conn:
            assert scalar(conn, "SELECT 1") == 1
            assert backend_pid(conn) not in old
    assert stat(pool, "requests_errors") == 0
    wait_until(lambda: pg.count_connections(application_name=pool.name) == 2)


def test_server_killed_and_started_again(make_pool, pg: Any) -> None:
    pool = make_pool(max_size=2)
    warm(pool, 2)
    pg.kill()
    pg.start()
    with pool.connection() as conn:
        assert scalar(conn, "SELECT 1") == 1
    assert stat(pool, "connections_lost") >= 1


def test_idle_session_timeout(make_pool, pg: Any, driver: str) -> None:
    pg.set_config(idle_session_timeout="300ms")
    pool = make_pool(driver=driver, max_size=2, ping_interval=60)
    old = warm(pool, 2)
    wait_until(lambda: pg.count_connections(application_name=pool.name) == 0)
    with pool.connection() as conn:
        assert scalar(conn, "SELECT 1") == 1
        assert backend_pid(conn) not in old
    assert stat(pool, "connections_lost") == 2
    assert stat(pool, "requests_errors") == 0


def test_ping_only_after_ping_interval(make_pool, driver: str) -> None:
    pool = make_pool(driver=driver, max_size=1, ping_interval=0.3)
    for _ in range(50):
        pool.putconn(pool.getconn())
    assert stat(pool, "pings") == 0
    time.sleep(0.35)
    pool.putconn(pool.getconn())
    assert stat(pool, "pings") == 1
    for _ in range(10):
        pool.putconn(pool.getconn())
    assert stat(pool, "pings") == 1


def test_ping_leaves_the_connection_as_it_was(make_pool, pg: Any, driver: str) -> None:
    pool = make_pool(driver=driver, max_size=1, ping_interval=0.01)
    conn = pool.getconn()
    pool.putconn(conn)
    time.sleep(0.02)
    again = pool.getconn()
    assert again is conn and stat(pool, "pings") == 1
    assert pg.connections(application_name=pool.name) == {"idle": 1}  # no transaction left
    pool.putconn(again)


def proxied_pool(make_pool: Any, pg: Any, proxy: Any, **options: Any) -> Any:
    name = options.pop("name", None)
    pool = make_pool(
        conninfo=pg.conninfo(host=proxy.host, port=proxy.port, connect_timeout=5,
                             application_name="cg-proxied"),
        **({"name": name} if name else {}), **options,
    )  # fmt: skip
    return pool


def test_stalled_network_ping_times_out_and_connection_is_replaced(
    make_pool, pg: Any, fault_proxy: Any, driver: str
) -> None:
    pool = proxied_pool(
        make_pool, pg, fault_proxy, driver=driver, max_size=2, ping_interval=0.05,
        ping_timeout=0.5,
    )  # fmt: skip
    [old] = warm(pool, 1)
    time.sleep(0.06)
    fault_proxy.stall()
    got: list[Any] = []
    started = time.monotonic()
    taker = threading.Thread(target=lambda: got.append(pool.getconn(timeout=30)))
    taker.start()
    wait_until(lambda: stat(pool, "connections_lost") == 1, timeout=10)
    assert time.monotonic() - started >= 0.5  # the ping waited for ping_timeout...
    assert time.monotonic() - started < 5  # ...and no longer
    fault_proxy.passthrough()  # the replacement's connect goes through now
    taker.join(30)
    assert got, "getconn() did not return"
    assert backend_pid(got[0]) != old and scalar(got[0], "SELECT 1") == 1
    pool.putconn(got[0])


def test_cut_connections_are_replaced(make_pool, pg: Any, fault_proxy: Any, driver: str) -> None:
    pool = proxied_pool(make_pool, pg, fault_proxy, driver=driver, max_size=2, ping_interval=60)
    old = warm(pool, 2)
    fault_proxy.cut()
    with pool.connection() as conn:
        assert scalar(conn, "SELECT 1") == 1
        assert backend_pid(conn) not in old
    assert stat(pool, "connections_lost") == 2
    assert stat(pool, "requests_errors") == 0


def test_latency_does_not_break_anything(make_pool, pg: Any, fault_proxy: Any) -> None:
    pool = proxied_pool(make_pool, pg, fault_proxy, max_size=2, ping_interval=0.01)
    warm(pool, 1)
    fault_proxy.latency(0.05)
    time.sleep(0.02)
    with pool.connection() as conn:  # a ping (slow, but within ping_timeout), then a query
        assert scalar(conn, "SELECT 1") == 1
    assert stat(pool, "pings") >= 1 and stat(pool, "connections_lost") == 0


def test_the_caller_never_gets_a_dead_connection_over_many_rounds(
    make_pool, pg: Any, driver: str
) -> None:
    """Round after round, some idle sessions are terminated (the rig waits until they are
    gone): every checkout still gets a live connection, healthy ones are kept."""
    import random

    rnd = random.Random(7)
    pool = make_pool(driver=driver, max_size=4, ping_interval=60)
    lost = 0
    for _ in range(6):
        pids = warm(pool, 4)
        victims = rnd.sample(pids, rnd.randint(1, 4))
        for pid in victims:
            pg.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])
        lost += len(victims)
        conns = [pool.getconn() for _ in range(4)]
        got = {backend_pid(c) for c in conns}
        assert all(scalar(c, "SELECT 1") == 1 for c in conns)
        assert not got & set(victims)
        assert set(pids) - set(victims) <= got  # the healthy ones were kept
        for conn in conns:
            pool.putconn(conn)
    assert stat(pool, "connections_lost") == lost
    assert stat(pool, "requests_errors") == 0
