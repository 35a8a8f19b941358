"""Background work and whole-pool operations on the fake driver: lifetime with jitter, idle
expiry, keepalive, resize, check, drain, close."""

from __future__ import annotations

import gc
import logging
import threading
import time

import pytest
from fakedb import FakeServer, wait_until

from connguard import ConnectionPool, PoolClosed


def stat(pool: ConnectionPool, name: str) -> int:
    return pool.get_stats().get(name, 0)


def workers(pool_name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == f"connguard-{pool_name}"]


# -- lifetime, idle, keepalive ------------------------------------------------------------------


def test_max_lifetime_is_jittered(make_pool) -> None:
    pool = make_pool(max_size=20, max_lifetime=100, lifetime_jitter=0.2)
    conns = [pool.getconn() for _ in range(20)]
    lifetimes = [e.expires - e.created for e in pool._entries.values()]
    assert all(80 <= life <= 100 for life in lifetimes), lifetimes
    assert len({round(life, 6) for life in lifetimes}) > 10  # not all at once
    for conn in conns:
        pool.putconn(conn)


def test_max_lifetime_zero_never_expires(make_pool) -> None:
    pool = make_pool(max_size=1, max_lifetime=0)
    pool.putconn(pool.getconn())
    assert all(e.expires == float("inf") for e in pool._entries.values())


def test_expired_connections_are_retired_in_the_background_and_refilled(
    make_pool, server: FakeServer
) -> None:
    pool = make_pool(min_size=3, max_lifetime=0.2, lifetime_jitter=0.5)
    pool.wait(5)
    first = list(server.conns)
    wait_until(lambda: not any(server.is_open(c) for c in first), timeout=5)
    wait_until(lambda: stat(pool, "pool_available") == 3, timeout=5)
    assert stat(pool, "connections_expired") >= 3
    assert server.open_count() == 3


def test_lent_connection_past_its_lifetime_is_retired_on_return(
    make_pool, server: FakeServer
) -> None:
    pool = make_pool(max_size=1, max_lifetime=0.02, lifetime_jitter=0)
    conn = pool.getconn()
    time.sleep(0.03)
    pool.putconn(conn)
    assert not server.is_open(conn)
    assert stat(pool, "connections_expired") == 1 and stat(pool, "pool_size") == 0


def test_max_idle_closes_idle_extras_above_min_size(make_pool, server: FakeServer) -> None:
    pool = make_pool(min_size=1, max_size=4, max_idle=0.05)
    pool.wait(5)
    conns = [pool.getconn() for _ in range(4)]
    for conn in conns:
        pool.putconn(conn)
    assert stat(pool, "pool_size") == 4
    wait_until(lambda: stat(pool, "pool_size") == 1, timeout=5)
    assert stat(pool, "connections_idle_closed") == 3
    assert server.open_count() == 1


def test_max_idle_zero_keeps_idle_extras(make_pool) -> None:
    pool = make_pool(min_size=0, max_size=2, max_idle=0)
    a, b = pool.getconn(), pool.getconn()
    pool.putconn(a)
    pool.putconn(b)
    time.sleep(0.6)  # at least one maintenance round
    assert stat(pool, "pool_size") == 2


def test_keepalive_pings_idle_connections(make_pool, server: FakeServer) -> None:
    pool = make_pool(min_size=2, keepalive_interval=0.05)
    pool.wait(5)
    wait_until(lambda: server.pings >= 2, timeout=5)
    assert stat(pool, "pool_available") == 2


def test_keepalive_replaces_a_dead_idle_connection(make_pool, server: FakeServer) -> None:
    pool = make_pool(min_size=2, keepalive_interval=0.05)
    pool.wait(5)
    victim = server.conns[0]
    server.kill(victim)
    wait_until(lambda: stat(pool, "connections_lost") == 1, timeout=5)
    wait_until(lambda: server.open_count() == 2, timeout=5)
    assert server.connects == 3


def test_no_keepalive_by_default(make_pool, server: FakeServer) -> None:
    pool = make_pool(min_size=1)
    pool.wait(5)
    time.sleep(0.6)
    assert server.pings == 0


# -- resize, check, drain -----------------------------------------------------------------------


def test_resize_grows_min_size_in_the_background(make_pool, server: FakeServer) -> None:
    pool = make_pool(max_size=1)
    pool.resize(3, 4)
    wait_until(lambda: stat(pool, "pool_available") == 3, timeout=5)
    assert (stat(pool, "pool_min"), stat(pool, "pool_max")) == (3, 4)
    assert pool.config.min_size == 3 and pool.config.max_size == 4


def test_resize_shrinks_idle_now_and_lent_on_return(make_pool, server: FakeServer) -> None:
    pool = make_pool(max_size=4)
    conns = [pool.getconn() for _ in range(4)]
    for conn in conns[:2]:
        pool.putconn(conn)
    pool.resize(0, 1)
    stats = pool.get_stats()
    assert stats["pool_size"] == 2 and stats["pool_available"] == 0  # idle extras closed
    pool.putconn(conns[2])
    assert stat(pool, "pool_size") == 1
    pool.putconn(conns[3])
    assert stat(pool, "pool_size") == 1 and stat(pool, "pool_available") == 1
    assert server.open_count() == 1


def test_resize_up_serves_waiters(make_pool) -> None:
    pool = make_pool(max_size=1, timeout=5)
    held = pool.getconn()
    got: list[object] = []
    t = threading.Thread(target=lambda: got.append(pool.getconn()))
    t.start()
    wait_until(lambda: stat(pool, "requests_waiting") == 1)
    pool.resize(0, 2)
    t.join(5)
    assert len(got) == 1 and got[0] is not held
    pool.putconn(held)
    pool.putconn(got[0])


def test_resize_rejects_bad_bounds(make_pool) -> None:
    from connguard import ConfigError

    pool = make_pool(max_size=2)
    with pytest.raises(ConfigError, match="min_size=3 is larger than max_size=2"):
        pool.resize(3, 2)
    assert pool.config.max_size == 2


def test_check_discards_dead_idle_and_refills(make_pool, server: FakeServer) -> None:
    pool = make_pool(min_size=3)
    pool.wait(5)
    server.kill(server.conns[0])
    server.kill(server.conns[1])
    pool.check()
    assert stat(pool, "connections_lost") == 2
    assert stat(pool, "pool_available") == 3
    assert server.open_count() == 3


def test_drain_retires_everything_once(make_pool, server: FakeServer) -> None:
    pool = make_pool(max_size=2)
    lent = pool.getconn()
    pool.putconn(pool.getconn())
    idle = next(c for c in server.conns if c is not lent)
    pool.drain()
    assert not server.is_open(idle) and server.is_open(lent)
    pool.putconn(lent)
    assert not server.is_open(lent)
    fresh = pool.getconn()
    assert fresh not in (lent, idle)
    pool.putconn(fresh)
    assert stat(pool, "pool_size") == 1


def test_drain_racing_a_return_never_lends_the_old_connection(
    make_pool, server: FakeServer
) -> None:
    """drain() between putconn()'s lock-free checks and its append leaves an entry of the
    old generation on the idle list: the next checkout retires it instead of lending it."""
    pool = make_pool(max_size=2)
    old = pool.getconn()
    pool.putconn(old)
    pool._generation += 1  # what drain() does, after putconn() checked the generation
    pool._floor = pool._generation
    fresh = pool.getconn()
    assert fresh is not old and not server.is_open(old)
    pool.putconn(fresh)
    assert stat(pool, "connections_discarded") == 1


# -- close ----------------------------------------------------------------------------------


def test_close_wakes_waiters_with_pool_closed(make_pool) -> None:
    pool = make_pool(name="c", max_size=1, timeout=5)
    held = pool.getconn()
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            pool.getconn()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=wait) for _ in range(3)]
    for t in threads:
        t.start()
    wait_until(lambda: stat(pool, "requests_waiting") == 3)
    started = time.monotonic()
    pool.close()
    for t in threads:
        t.join(5)
    assert time.monotonic() - started < 2
    assert len(errors) == 3 and all(isinstance(e, PoolClosed) for e in errors)
    assert str(errors[0]) == "pool 'c' is closed"
    pool.putconn(held)


def test_close_closes_idle_now_and_lent_on_return(make_pool, server: FakeServer) -> None:
    pool = make_pool(name="c", min_size=2, max_size=3)
    pool.wait(5)
    lent = pool.getconn()
    pool.close()
    assert server.open_count() == 1 and server.is_open(lent)
    assert not workers("c")
    assert pool.closed
    pool.putconn(lent)
    assert server.open_count() == 0
    with pytest.raises(PoolClosed):
        pool.getconn()


def test_context_manager_closes_the_pool(make_pool, server: FakeServer) -> None:
    with make_pool(max_size=1) as pool:
        pool.putconn(pool.getconn())
    assert pool.closed and server.open_count() == 0


def test_dropped_pool_stops_its_thread(driver, server: FakeServer) -> None:
    pool = ConnectionPool("", driver=driver, name="dropped", min_size=1)
    pool.wait(5)
    assert workers("dropped")
    del pool
    gc.collect()
    wait_until(lambda: not workers("dropped"), timeout=5)
    wait_until(lambda: server.open_count() == 0, timeout=5)


def test_a_failing_round_does_not_kill_the_thread(
    make_pool, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(name="flaky", min_size=1)
    pool.wait(5)
    calls = []
    original = ConnectionPool._maintain

    def flaky(self: ConnectionPool) -> float:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return original(self)

    with caplog.at_level(logging.ERROR, logger="connguard.maintenance"):
        monkeypatch.setattr(ConnectionPool, "_maintain", flaky)
        pool._wake.set()
        wait_until(lambda: len(calls) >= 2, timeout=5)
    assert "pool 'flaky': maintenance round failed" in caplog.text
    assert workers("flaky")[0].is_alive()


def test_close_racing_a_putconn_strands_nothing(make_pool, server: FakeServer) -> None:
    """close() lands between putconn()'s lock-free checks and its append: the connection
    must still be closed, and nobody may check it out of the closed pool."""
    pool = make_pool(max_size=1)
    conn = pool.getconn()

    class CloseFirst(list):
        def append(self, entry: object) -> None:
            pool.close()  # runs after putconn() saw the pool open, before the append
            super().append(entry)

    pool._idle = CloseFirst(pool._idle)
    pool.putconn(conn)
    assert not server.is_open(conn)
    assert len(pool._idle) == 0
    with pytest.raises(PoolClosed):
        pool.getconn()
