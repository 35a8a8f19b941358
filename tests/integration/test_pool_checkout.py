"""Checkout against the real server: bounded at max_size (counted on the server), FIFO
waiters, timeouts, load shedding, connecting without background threads, warm-up."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest
from pool_support import backend_pid, driver, make_pool, scalar, stat, wait_until

from connguard import PoolTimeout, TooManyRequests

__all__ = ["driver", "make_pool"]  # fixtures


def test_never_more_server_connections_than_max_size(make_pool, pg: Any, driver: str) -> None:
    pool = make_pool(driver=driver, max_size=3)
    seen: list[int] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def work() -> None:
        try:
            for _ in range(15):
                with pool.connection() as conn:
                    assert scalar(conn, "SELECT 1") == 1
                    time.sleep(0.002)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def count() -> None:
        while not stop.is_set():
            seen.append(pg.count_connections(application_name=pool.name))
            time.sleep(0.01)

    counter = threading.Thread(target=count)
    counter.start()
    threads = [threading.Thread(target=work) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    stop.set()
    counter.join(10)
    assert not errors, errors[:3]
    assert seen and max(seen) <= 3
    assert pg.count_connections(application_name=pool.name) == 3
    assert stat(pool, "connections_opened") == 3
    assert stat(pool, "checkouts") == 150


def test_waiters_are_served_in_order(make_pool, driver: str) -> None:
    pool = make_pool(driver=driver, max_size=1)
    held = pool.getconn()
    order: list[int] = []

    def take(i: int) -> None:
        conn = pool.getconn()
        order.append(i)
        pool.putconn(conn)

    threads = []
    for i in range(4):
        t = threading.Thread(target=take, args=(i,))
        t.start()
        threads.append(t)
        wait_until(lambda i=i: stat(pool, "requests_waiting") == i + 1)
    pool.putconn(held)
    for t in threads:
        t.join(10)
    assert order == [0, 1, 2, 3]


def test_timeout_message(make_pool, driver: str) -> None:
    pool = make_pool(driver=driver, max_size=2)
    a, b = pool.getconn(), pool.getconn()
    with pytest.raises(PoolTimeout) as info:
        pool.getconn(timeout=0.2)
    assert str(info.value) == (
        f"pool {pool.name!r}: no connection after 0.20 s (size=2/2, in_use=2, idle=0, "
        "waiting=0). Raise max_size or timeout, or hold connections for less time."
    )
    pool.putconn(a)
    pool.putconn(b)


def test_timeouts_name_the_last_connect_error(make_pool, pg: Any, driver: str) -> None:
    pool = make_pool(
        conninfo=pg.conninfo(dbname="no_such_db", connect_timeout=5), driver=driver, min_size=1
    )
    with pytest.raises(PoolTimeout) as info:
        pool.wait(timeout=0.5)
    assert re.fullmatch(
        rf"pool {pool.name!r}: min_size=1 connections not open after 0\.50 s \(size=\d/1, "
        r"in_use=0, idle=0, waiting=0\); the last connect attempt failed with: "
        r'OperationalError: .*database "no_such_db" does not exist',
        str(info.value),
    ), str(info.value)


def test_max_waiting_sheds_load(make_pool, driver: str) -> None:
    pool = make_pool(driver=driver, max_size=1, max_waiting=1)
    held = pool.getconn()
    waiter = threading.Thread(target=lambda: pool.putconn(pool.getconn()))
    waiter.start()
    wait_until(lambda: stat(pool, "requests_waiting") == 1)
    with pytest.raises(TooManyRequests, match=r"1 requests already waiting \(max_waiting=1\)"):
        pool.getconn()
    pool.putconn(held)
    waiter.join(10)
    assert stat(pool, "requests_shed") == 1


def test_the_requesting_thread_connects_no_background_thread_needed(
    make_pool, pg: Any, driver: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connguard import ConnectionPool

    monkeypatch.setattr(ConnectionPool, "_start_worker_locked", lambda self: None)
    pool = make_pool(driver=driver, max_size=2)
    with pool.connection() as conn:
        assert scalar(conn, "SELECT 1") == 1
    assert pg.count_connections(application_name=pool.name) == 1
    assert not [t for t in threading.enumerate() if t.name == f"connguard-{pool.name}"]


def test_min_size_warm_up_in_the_background(make_pool, pg: Any, driver: str) -> None:
    pool = make_pool(driver=driver, min_size=3, max_size=5)
    pool.wait(timeout=20)
    assert pg.count_connections(application_name=pool.name) == 3
    assert stat(pool, "pool_available") == 3
    pids = set()
    conns = [pool.getconn() for _ in range(3)]
    pids = {backend_pid(c) for c in conns}
    for conn in conns:
        pool.putconn(conn)
    assert len(pids) == 3
    assert stat(pool, "connections_opened") == 3


def test_open_false_then_open_wait(make_pool, pg: Any) -> None:
    pool = make_pool(min_size=2, open=False)
    assert pg.count_connections(application_name=pool.name) == 0
    pool.open(wait=True, timeout=20)
    assert pg.count_connections(application_name=pool.name) == 2


def test_repr_and_stats_against_the_server(make_pool, pg: Any) -> None:
    pool = make_pool(max_size=4)
    conn = pool.getconn()
    text = repr(pool)
    assert text.startswith(
        f"<ConnectionPool {pool.name!r} open size=1/4, in_use=1, idle=0, waiting=0 "
        "breaker=closed pid="
    )
    assert f"conninfo='host={pg.host} port={pg.port} user=postgres" in text
    pool.putconn(conn)


def test_getconn_timeout_names_the_last_connect_error(make_pool, pg: Any, fault_proxy: Any) -> None:
    """A full pool while the server cannot be reached: a waiter's PoolTimeout says why no
    connection could be opened (here: connects time out in a stalled network)."""
    pool = make_pool(
        conninfo=pg.conninfo(host=fault_proxy.host, port=fault_proxy.port,
                             application_name="cg-stall-timeout"),
        max_size=2, connect_timeout=2, backoff_initial=0.05, backoff_max=0.05,
    )  # fmt: skip
    held = pool.getconn()
    fault_proxy.stall()
    with pytest.raises(Exception, match="timeout expired"):  # PoolUnavailable, after 2 s
        pool.getconn(timeout=10)
    # the background probe now holds the second slot while it waits on the stalled network
    wait_until(lambda: stat(pool, "pool_size") == 2, timeout=5)
    with pytest.raises(PoolTimeout) as info:
        pool.getconn(timeout=0.1)
    assert re.search(
        r"\(size=2/2, in_use=1, idle=0, waiting=0\); the last connect attempt failed with: "
        r"\w+: .*timeout expired.*\. Raise max_size or timeout",
        str(info.value),
    ), str(info.value)
    fault_proxy.passthrough()
    pool.putconn(held)
