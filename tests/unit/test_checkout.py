"""Checkout on the fake driver: bounds, waiters, timeouts, load shedding, liveness."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest
from fakedb import ACTIVE, FakeServer, wait_until

from connguard import ConnectionPool, PoolTimeout, PoolUnavailable, TooManyRequests


def waiting(pool: ConnectionPool) -> int:
    return pool.get_stats()["requests_waiting"]


# -- bounded, FIFO, timeouts, load shedding ---------------------------------------------------


def test_never_more_connections_than_max_size(make_pool, server: FakeServer) -> None:
    pool = make_pool(max_size=3, timeout=5)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(30):
                conn = pool.getconn()
                assert server.open_count() <= 3
                time.sleep(0.0005)
                pool.putconn(conn)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors
    assert server.high_water == 3
    assert server.connects == 3
    stats = pool.get_stats()
    assert stats["pool_size"] == 3 and stats["checkouts"] == 240


def test_waiters_are_served_first_in_first_out(make_pool) -> None:
    pool = make_pool(max_size=1, timeout=5)
    held = pool.getconn()
    order: list[int] = []

    def wait_turn(i: int) -> None:
        conn = pool.getconn()
        order.append(i)
        pool.putconn(conn)

    threads = []
    for i in range(5):
        t = threading.Thread(target=wait_turn, args=(i,))
        t.start()
        threads.append(t)
        wait_until(lambda i=i: waiting(pool) == i + 1)  # queued in this order
    pool.putconn(held)
    for t in threads:
        t.join(5)
    assert order == [0, 1, 2, 3, 4]
    assert pool.get_stats()["requests_queued"] == 5


def test_timeout_message_names_pool_and_numbers(make_pool) -> None:
    pool = make_pool(name="web", max_size=2)
    a, b = pool.getconn(), pool.getconn()
    started = time.monotonic()
    with pytest.raises(PoolTimeout) as info:
        pool.getconn(timeout=0.1)
    assert 0.1 <= time.monotonic() - started < 1.0
    assert str(info.value) == (
        "pool 'web': no connection after 0.10 s (size=2/2, in_use=2, idle=0, waiting=0). "
        "Raise max_size or timeout, or hold connections for less time."
    )
    assert info.value.snapshot["in_use"] == 2 and info.value.snapshot["name"] == "web"
    stats = pool.get_stats()
    assert stats["timeouts"] == 1 and stats["requests_errors"] == 1
    assert stats["requests_waiting"] == 0  # the timed-out waiter left the queue
    pool.putconn(a)
    pool.putconn(b)


def test_timeout_message_counts_the_other_waiters(make_pool) -> None:
    pool = make_pool(name="web", max_size=1)
    held = pool.getconn()
    other = threading.Thread(target=lambda: pool.putconn(pool.getconn(timeout=5)))
    other.start()
    wait_until(lambda: waiting(pool) == 1)
    with pytest.raises(PoolTimeout, match=re.escape("(size=1/1, in_use=1, idle=0, waiting=1)")):
        pool.getconn(timeout=0.05)
    pool.putconn(held)
    other.join(5)
    assert not other.is_alive()


def test_getconn_can_wait_without_a_limit(make_pool) -> None:
    pool = make_pool(max_size=1)
    held = pool.getconn()
    threading.Timer(0.05, pool.putconn, (held,)).start()
    assert pool.getconn(timeout=float("inf")) is held
    pool.putconn(held)


def test_default_timeout_comes_from_the_config(make_pool) -> None:
    pool = make_pool(max_size=1, timeout=0.05)
    held = pool.getconn()
    with pytest.raises(PoolTimeout, match=r"no connection after 0\.05 s"):
        pool.getconn()
    pool.putconn(held)


def test_timeout_shows_the_last_connect_error_while_the_database_is_down(
    make_pool, server: FakeServer
) -> None:
    pool = make_pool(name="web", max_size=2, backoff_initial=0.01, backoff_max=0.02)
    held = pool.getconn()
    server.down = True
    server.slow_connect(0.3)  # the background probe holds the last slot while it tries
    with pytest.raises(PoolUnavailable):
        pool.getconn(timeout=1)
    wait_until(lambda: server.connecting == 1, timeout=5)  # a probe is under way: size=2/2
    with pytest.raises(PoolTimeout) as info:
        pool.getconn(timeout=0.05)
    assert str(info.value).endswith(
        "; the last connect attempt failed with: OperationalError: connection refused. "
        "Raise max_size or timeout, or hold connections for less time."
    )
    server.down = False
    server.slow_connect(0)
    pool.putconn(held)


def test_timeout_does_not_blame_a_connect_error_that_was_since_fixed(
    make_pool, server: FakeServer
) -> None:
    pool = make_pool(name="web", max_size=1)
    server.down = True
    with pytest.raises(PoolUnavailable):
        pool.getconn()
    server.down = False
    wait_until(lambda: not pool.get_stats()["breaker_open"], timeout=5)  # background probe
    held = pool.getconn()
    with pytest.raises(PoolTimeout) as info:
        pool.getconn(timeout=0.05)
    assert "last connect attempt failed" not in str(info.value)
    pool.putconn(held)


def test_max_waiting_sheds_load(make_pool) -> None:
    pool = make_pool(name="api", max_size=1, max_waiting=2)
    held = pool.getconn()
    threads = [
        threading.Thread(target=lambda: pool.putconn(pool.getconn(timeout=5))) for _ in range(2)
    ]
    for t in threads:
        t.start()
    wait_until(lambda: waiting(pool) == 2)
    started = time.monotonic()
    with pytest.raises(TooManyRequests) as info:
        pool.getconn()
    assert time.monotonic() - started < 0.5  # shed at once, not after the timeout
    assert str(info.value) == (
        "pool 'api': 2 requests already waiting (max_waiting=2); shedding load. "
        "State: size=1/1, in_use=1, idle=0, waiting=2"
    )
    assert pool.get_stats()["requests_shed"] == 1
    pool.putconn(held)
    for t in threads:
        t.join(5)
    assert pool.get_stats()["requests_waiting"] == 0


# -- no background thread needed; warm-up in the background --------------------------------


def test_the_requesting_thread_opens_the_connection(make_pool, server: FakeServer) -> None:
    pool = make_pool(max_size=2)
    conn = pool.getconn()
    assert conn.thread == threading.current_thread().name
    pool.putconn(conn)


def test_works_with_no_background_thread_at_all(
    make_pool, server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ConnectionPool, "_start_worker_locked", lambda self: None)
    pool = make_pool(max_size=2)
    a = pool.getconn()
    b = pool.getconn()
    pool.putconn(a)
    server.kill(b)
    pool.putconn(b)
    for _ in range(5):
        conn = pool.getconn()
        assert conn.execute("select 1") == 1
        conn.rollback()
        pool.putconn(conn)
    assert not any(t.name.startswith("connguard-") and pool.name in t.name
                   for t in threading.enumerate())  # fmt: skip


def test_min_size_warms_up_in_the_background(make_pool, server: FakeServer) -> None:
    server.slow_connect(0.02)
    started = time.monotonic()
    pool = make_pool(name="warm", min_size=3)
    assert time.monotonic() - started < 0.02  # the constructor does not connect
    pool.wait(timeout=5)
    assert server.connects == 3
    assert {c.thread for c in server.conns} == {"connguard-warm"}
    assert pool.get_stats()["pool_available"] == 3


def test_a_checkout_during_warm_up_takes_the_connection_being_opened(
    make_pool, server: FakeServer
) -> None:
    """A caller that arrives while the warm-up is connecting waits for that connection
    instead of opening one more (one connection for one caller, as min_size=1 asks)."""
    gate = server.hold_connects()
    pool = make_pool(name="warm", min_size=1, max_size=4)
    wait_until(lambda: server.connecting == 1)  # the warm-up's connect is under way
    got: list = []
    caller = threading.Thread(target=lambda: got.append(pool.getconn(timeout=5)))
    caller.start()
    wait_until(lambda: pool.get_stats()["requests_waiting"] == 1)
    gate.set()
    caller.join(5)
    assert got and got[0].thread == "connguard-warm"
    assert server.connects == 1
    pool.putconn(got[0])


def test_callers_queued_behind_the_warm_up_get_slots_when_it_is_done(
    make_pool, server: FakeServer
) -> None:
    """More callers than warm-up connects: the first takes the warm-up's connection, the
    others are given slots and connect themselves as soon as it is done (no wait for the
    background task's next round)."""
    gate = server.hold_connects()
    pool = make_pool(name="warm", min_size=1, max_size=4, timeout=5)
    wait_until(lambda: server.connecting == 1)
    got: list = []
    lock = threading.Lock()

    def take() -> None:
        conn = pool.getconn()
        with lock:
            got.append(conn)

    callers = [threading.Thread(target=take) for _ in range(3)]
    for t in callers:
        t.start()
    wait_until(lambda: pool.get_stats()["requests_waiting"] == 3)
    gate.set()
    for t in callers:
        t.join(5)
    assert len(got) == 3 and len({id(c) for c in got}) == 3
    assert server.connects == 3
    assert pool.get_stats()["requests_waiting"] == 0
    for conn in got:
        pool.putconn(conn)


def test_open_wait_true_blocks_until_min_size(make_pool, server: FakeServer) -> None:
    pool = make_pool(min_size=2, open=False)
    pool.open(wait=True, timeout=5)
    assert pool.get_stats()["pool_available"] == 2


def test_wait_times_out_naming_the_connect_error(make_pool, server: FakeServer) -> None:
    server.down = True
    pool = make_pool(name="warm", min_size=2)
    with pytest.raises(PoolTimeout) as info:
        pool.wait(timeout=0.2)
    assert str(info.value) == (
        "pool 'warm': min_size=2 connections not open after 0.20 s (size=0/2, in_use=0, "
        "idle=0, waiting=0); the last connect attempt failed with: "
        "OperationalError: connection refused"
    )


# -- liveness at checkout ---------------------------------------------------------------------


def test_a_connection_the_server_closed_is_replaced_without_a_ping_round(
    make_pool, server: FakeServer
) -> None:
    pool = make_pool(max_size=2, ping_interval=60)
    conn = pool.getconn()
    pool.putconn(conn)
    server.kill(conn)
    fresh = pool.getconn()
    assert fresh is not conn
    assert fresh.execute("select 1") == 1
    stats = pool.get_stats()
    assert stats["connections_lost"] == 1
    assert stats["pings"] == 1  # the poll saw the FATAL message: confirmed by one ping
    pool.putconn(fresh)


def test_all_idle_connections_dead_at_once(make_pool, server: FakeServer) -> None:
    pool = make_pool(max_size=4, min_size=4)
    pool.wait(5)
    server.kill_all()
    conn = pool.getconn()
    assert conn.execute("select 1") == 1
    assert pool.get_stats()["connections_lost"] == 4
    pool.putconn(conn)


def test_ping_only_after_ping_interval(make_pool, server: FakeServer) -> None:
    pool = make_pool(max_size=1, ping_interval=0.1)
    for _ in range(20):
        pool.putconn(pool.getconn())
    assert pool.get_stats().get("pings", 0) == 0
    time.sleep(0.12)
    pool.putconn(pool.getconn())
    assert pool.get_stats()["pings"] == 1
    pool.putconn(pool.getconn())
    assert pool.get_stats()["pings"] == 1  # fresh again after the ping


def test_ping_interval_zero_never_pings_a_healthy_connection(make_pool) -> None:
    pool = make_pool(max_size=1, ping_interval=0)
    pool.putconn(pool.getconn())
    time.sleep(0.02)
    pool.putconn(pool.getconn())
    assert pool.get_stats().get("pings", 0) == 0


def test_failed_ping_replaces_the_connection(make_pool, server: FakeServer) -> None:
    pool = make_pool(max_size=1, ping_interval=0.01)
    first = pool.getconn()
    pool.putconn(first)
    time.sleep(0.02)
    server.fail_ping = True
    conn = pool.getconn()
    assert conn is not first and not server.is_open(first)
    assert pool.get_stats()["connections_lost"] == 1
    server.fail_ping = False
    pool.putconn(conn)


def test_ping_timeout_bounds_a_stalled_ping(make_pool, server: FakeServer) -> None:
    pool = make_pool(max_size=1, ping_interval=0.01, ping_timeout=0.1)
    first = pool.getconn()
    pool.putconn(first)
    time.sleep(0.02)
    server.ping_delay = 10
    started = time.monotonic()
    conn = pool.getconn()
    assert 0.1 <= time.monotonic() - started < 2
    assert conn is not first
    assert pool.get_stats()["connections_lost"] == 1
    pool.putconn(conn)


def test_expired_idle_connection_is_replaced_at_checkout(make_pool, server: FakeServer) -> None:
    pool = make_pool(max_size=1, max_lifetime=0.05, lifetime_jitter=0)
    first = pool.getconn()
    pool.putconn(first)
    time.sleep(0.06)
    conn = pool.getconn()
    assert conn is not first and not server.is_open(first)
    assert pool.get_stats()["connections_expired"] == 1
    pool.putconn(conn)


def test_check_callback_runs_at_every_checkout_like_psycopg_pool(make_pool) -> None:
    checked: list[Any] = []
    pool = make_pool(max_size=1, check=checked.append)
    conn = pool.getconn()
    pool.putconn(conn)
    for _ in range(3):
        pool.putconn(pool.getconn())
    assert checked == [conn, conn, conn]


def test_check_callback_rejecting_replaces_the_connection(make_pool, server: FakeServer) -> None:
    bad: set[int] = set()

    def check(conn: Any) -> None:
        if conn.backend_pid in bad:
            raise RuntimeError("nope")

    pool = make_pool(max_size=1, check=check)
    first = pool.getconn()
    pool.putconn(first)
    bad.add(first.backend_pid)
    conn = pool.getconn()
    assert conn is not first and not server.is_open(first)
    pool.putconn(conn)


def test_the_caller_never_gets_a_dead_connection(make_pool, server: FakeServer) -> None:
    """Kill connections at random while threads use the pool: every checkout works."""
    import random

    pool = make_pool(max_size=4, timeout=5)
    stop = time.monotonic() + 0.5
    errors: list[BaseException] = []

    def work() -> None:
        try:
            while time.monotonic() < stop:
                conn = pool.getconn()
                try:
                    conn.execute("select 1")
                    conn.rollback()
                finally:
                    pool.putconn(conn)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    killed = 0
    while time.monotonic() < stop and killed < 200:
        idle = [c for c in server.conns if server.is_open(c) and c.status == 0]
        if idle:
            server.kill(random.choice(idle))
            killed += 1
        time.sleep(0.003)
    for t in threads:
        t.join(10)
    # a kill can land between the checkout and the query: that one error is the caller's;
    # what must never happen is receiving a connection that was already dead at checkout
    assert not [e for e in errors if "already" in str(e)], errors
    assert killed > 0


def test_connect_keywords_are_passed(make_pool, server: FakeServer) -> None:
    pool = make_pool(kwargs={"application_name": "app"})
    pool.putconn(pool.getconn())
    assert server.connect_kwargs == [{"application_name": "app"}]


def test_custom_connect_function(make_pool, server: FakeServer) -> None:
    calls: list[tuple[str, dict]] = []

    def connect(conninfo: str, **kwargs: Any) -> Any:
        calls.append((conninfo, kwargs))
        return server.connect(1.0, kwargs)

    pool = make_pool(connect=connect, kwargs={"a": 1})
    conn = pool.getconn()
    assert calls == [("fake://", {"a": 1})]
    pool.putconn(conn)


def test_configure_runs_once_per_new_connection(make_pool) -> None:
    configured: list[Any] = []
    pool = make_pool(configure=configured.append)
    conn = pool.getconn()
    pool.putconn(conn)
    pool.putconn(pool.getconn())
    assert configured == [conn]


def test_configure_failure_closes_the_connection(make_pool, server: FakeServer) -> None:
    def configure(conn: Any) -> None:
        raise RuntimeError("bad setup")

    pool = make_pool(configure=configure)
    with pytest.raises(Exception, match="bad setup"):
        pool.getconn()
    assert server.open_count() == 0
    assert pool.get_stats()["pool_size"] == 0


def test_checkout_of_a_busy_connection_status_is_not_lent(make_pool, server: FakeServer) -> None:
    pool = make_pool(max_size=1)
    conn = pool.getconn()
    server.set_status(conn, ACTIVE)
    pool.putconn(conn)  # ACTIVE: cannot be reset, so it is discarded
    assert not server.is_open(conn)
    assert pool.get_stats()["returns_bad"] == 1
    fresh = pool.getconn()
    assert fresh is not conn
    pool.putconn(fresh)


def test_socket_of_gives_the_lent_connections_own_poller(make_pool) -> None:
    """What the Django backend polls before each statement: the poller the pool made when
    the connection opened (no new one per checkout); None once it is back or never lent."""
    pool = make_pool(max_size=2)
    conn = pool.getconn()
    fd, poller = pool.socket_of(conn)
    assert fd == conn.fileno()
    assert poller.poll(0) == []  # nothing from the server
    pool.putconn(conn)
    assert pool.socket_of(conn) is None
    again = pool.getconn()
    assert again is conn and pool.socket_of(again)[1] is poller
    pool.putconn(again)


def test_configure_error_is_raised_as_itself_without_opening_the_breaker(
    make_pool, server: FakeServer
) -> None:
    """An exception from configure() is the application's bug, not an outage: it propagates
    as itself, the connection is closed, the slot freed, and the next caller connects."""
    calls: list[Any] = []

    def configure(conn: Any) -> None:
        calls.append(conn)
        if len(calls) == 1:
            raise KeyError("bad setup")

    pool = make_pool(max_size=1, configure=configure)
    with pytest.raises(KeyError, match="bad setup"):
        pool.getconn()
    assert not server.is_open(calls[0])
    stats = pool.get_stats()
    assert (stats["breaker_open"], stats["breaker_opened"], stats["pool_size"]) == (0, 0, 0)
    conn = pool.getconn()  # not "database unreachable, failing fast"
    assert conn is calls[1]
    pool.putconn(conn)


def test_lease_is_stamped_when_lent_not_when_the_caller_started(
    make_pool, server: FakeServer
) -> None:
    """Leak detection measures holding time: the connect (or the wait) before the lease is
    not part of it."""
    pool = make_pool(max_size=1)
    server.slow_connect(0.3)
    conn = pool.getconn()
    lent_at = time.monotonic()
    [(_, lease)] = list(pool.leases())
    assert lent_at - lease.taken_at < 0.1, lent_at - lease.taken_at
    pool.putconn(conn)
