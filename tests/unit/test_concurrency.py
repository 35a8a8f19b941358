"""Contention on the fake driver: many threads, invariants, no lock held across I/O, gevent."""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from fakedb import FakeServer, OperationalError, wait_until

from connguard import ConnectionPool, PoolTimeout


def check_invariants(pool: ConnectionPool, server: FakeServer, max_size: int) -> None:
    stats = pool.get_stats()
    assert stats["pool_size"] <= max_size, stats
    assert stats["pool_in_use"] + stats["pool_available"] <= stats["pool_size"], stats
    assert stats["pool_in_use"] >= 0 and stats["pool_available"] >= 0, stats
    assert server.open_count() <= max_size


def test_64_threads_over_a_small_pool(make_pool, server: FakeServer) -> None:
    pool = make_pool(max_size=4, timeout=20)
    rounds = 100
    errors: list[BaseException] = []
    start = threading.Barrier(65)

    def work(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            start.wait(10)
            for _ in range(rounds):
                conn = pool.getconn()
                try:
                    assert conn.status == 0
                    conn.execute("insert")
                    if rnd.random() < 0.3:
                        time.sleep(0.0002)
                    if rnd.random() < 0.5:
                        conn.commit()
                finally:
                    pool.putconn(conn)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    start.wait(10)
    deadline = time.monotonic() + 60
    while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
        check_invariants(pool, server, 4)
        time.sleep(0.005)
    for t in threads:
        t.join(5)
    assert not errors, errors[:3]
    stats = pool.get_stats()
    assert stats["checkouts"] == 64 * rounds
    assert stats["pool_in_use"] == 0 and stats["pool_available"] == stats["pool_size"] <= 4
    assert stats["requests_waiting"] == 0
    assert server.high_water <= 4
    assert stats.get("connections_lost", 0) == 0 and stats.get("returns_bad", 0) == 0


def test_contention_with_failures_keeps_the_books_straight(make_pool, server: FakeServer) -> None:
    """Threads that break, discard, drop and time out, while connections get killed."""
    pool = make_pool(max_size=3, timeout=0.5, max_lifetime=0.05, lifetime_jitter=0.5)
    stop = time.monotonic() + 1.0
    unexpected: list[BaseException] = []

    def work(seed: int) -> None:
        rnd = random.Random(seed)
        while time.monotonic() < stop:
            try:
                conn = pool.getconn()
            except PoolTimeout:
                continue
            except BaseException as exc:  # pragma: no cover - reported below
                unexpected.append(exc)
                return
            roll = rnd.random()
            try:
                if roll < 0.1:
                    pool.discard(conn)
                elif roll < 0.2:
                    conn.close()
                    pool.putconn(conn)
                elif roll < 0.25:
                    del conn  # dropped: reclaimed by the garbage collector
                else:
                    # killed after the checkout: putconn() discards it
                    with contextlib.suppress(OperationalError):
                        conn.execute("insert")
                    pool.putconn(conn)
            except BaseException as exc:  # pragma: no cover - reported below
                unexpected.append(exc)
                return

    threads = [threading.Thread(target=work, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        check_invariants(pool, server, 3)
        idle = [c for c in server.conns if server.is_open(c) and c.status == 0]
        if idle and random.random() < 0.3:
            server.kill(random.choice(idle))
        # (no reference kept: a connection a thread dropped while lent must be collectable;
        # one this list still held would be a live lease, rightly never taken back)
        del idle
        time.sleep(0.003)
    for t in threads:
        t.join(5)
    assert not unexpected, unexpected[:3]
    import gc

    gc.collect()
    # A dropped connection leaves _out at once when a new one reuses its address, but its
    # slot comes back when the next locked step drains the collector's queue: wait for both.
    wait_until(
        lambda: (
            (s := pool.get_stats())["pool_in_use"] == 0 and s["pool_size"] == s["pool_available"]
        ),
        timeout=5,
    )
    stats = pool.get_stats()
    assert stats["pool_size"] == stats["pool_available"] <= 3
    # every connection the server still has is one the pool knows about
    wait_until(lambda: server.open_count() == pool.get_stats()["pool_size"], timeout=5)


def test_a_slow_connect_does_not_block_idle_checkouts(make_pool, server: FakeServer) -> None:
    pool = make_pool(max_size=3, timeout=5)
    a, b = pool.getconn(), pool.getconn()
    gate = server.hold_connects()
    connecting = threading.Thread(target=lambda: pool.putconn(pool.getconn()))
    connecting.start()
    wait_until(lambda: server.connecting == 1)
    # the locked step is over: everything else goes on while that thread waits on the network
    started = time.monotonic()
    pool.putconn(b)
    assert pool.getconn() is b
    pool.putconn(a)
    assert pool.getconn() is a
    assert pool.get_stats()["pool_size"] == 3
    repr(pool)
    assert time.monotonic() - started < 0.5
    assert connecting.is_alive()
    gate.set()
    connecting.join(5)
    pool.putconn(a)
    pool.putconn(b)
    server.gate = None


def test_a_slow_ping_does_not_block_other_checkouts(make_pool, server: FakeServer) -> None:
    pool = make_pool(max_size=2, timeout=5, ping_interval=0.05, ping_timeout=5)
    a, b = pool.getconn(), pool.getconn()
    pool.putconn(a)
    time.sleep(0.06)  # a now needs a ping before it is lent
    server.ping_delay = 0.5
    pinging = threading.Thread(target=lambda: pool.putconn(pool.getconn()))
    pinging.start()
    wait_until(lambda: server.pings == 1)
    started = time.monotonic()
    pool.putconn(b)  # fresh: lent without a ping
    assert pool.getconn() is b
    pool.get_stats()
    assert time.monotonic() - started < 0.3
    pinging.join(5)
    pool.putconn(b)
    server.ping_delay = 0


def test_gevent_many_greenlets(tmp_path: Path) -> None:
    """Under gevent monkey-patching: many greenlets over a small pool, holding connections
    longer than a maintenance round (the owner of a lease is a greenlet, not a thread)."""
    script = tmp_path / "green.py"
    script.write_text(
        textwrap.dedent(
            """
            from gevent import monkey
            monkey.patch_all()
            import sys
            sys.path.insert(0, sys.argv[1])
            import gevent
            from fakedb import FakeDriver, FakeServer
            from connguard import ConnectionPool

            server = FakeServer()
            pool = ConnectionPool("", driver=FakeDriver(server), name="green", min_size=2,
                                  max_size=4, timeout=10)
            pool.wait(5)
            errors = []

            def work(i):
                for j in range(5):
                    try:
                        with pool.connection() as conn:
                            conn.execute("insert")
                            gevent.sleep(0.7 if i < 3 and j == 0 else 0.001)
                            conn.execute("select")
                    except Exception as exc:
                        errors.append(repr(exc))

            greenlets = [gevent.spawn(work, i) for i in range(50)]
            gevent.joinall(greenlets, timeout=30)
            stats = pool.get_stats()
            pool.close()
            print("errors", len(errors), errors[:3])
            print("checkouts", stats["checkouts"], "reclaimed", stats.get("leaks_reclaimed", 0),
                  "size", stats["pool_size"], "high", server.high_water)
            sys.exit(1 if errors or stats["checkouts"] != 250 else 0)
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, str(script), str(Path(__file__).parent)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "reclaimed 0" in proc.stdout and "high 4" in proc.stdout, proc.stdout


@pytest.mark.parametrize("threads", [8])
def test_close_under_contention(make_pool, server: FakeServer, threads: int) -> None:
    """close() while threads hammer the pool: each gets a connection or PoolClosed; nothing
    hangs and no connection is left open once they are returned."""
    from connguard import PoolClosed

    pool = make_pool(max_size=2, timeout=5)
    unexpected: list[BaseException] = []
    done = threading.Event()

    def work() -> None:
        while not done.is_set():
            try:
                conn = pool.getconn()
            except PoolClosed:
                return
            except BaseException as exc:  # pragma: no cover - reported below
                unexpected.append(exc)
                return
            time.sleep(0.0005)
            pool.putconn(conn)

    workers = [threading.Thread(target=work) for _ in range(threads)]
    for t in workers:
        t.start()
    time.sleep(0.1)
    pool.close()
    done.set()
    for t in workers:
        t.join(5)
    assert not any(t.is_alive() for t in workers)
    assert not unexpected, unexpected[:3]
    wait_until(lambda: server.open_count() == 0, timeout=2)
