"""Leaks on the fake driver: held too long, owner thread died, dropped without putconn."""

from __future__ import annotations

import _thread
import gc
import logging
import queue
import re
import socket
import threading
import time
import weakref

import pytest
from fakedb import FakeConnection, FakeServer, wait_until

from connguard import PoolTimeout, leaks


def stat(pool, name: str) -> int:
    return pool.get_stats().get(name, 0)


def hold_connection_here(pool, seconds: float, out: list) -> None:
    conn = pool.getconn()
    out.append(conn)
    time.sleep(seconds)
    pool.putconn(conn)


def test_leak_threshold_logs_owner_thread_and_stack(
    make_pool, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(name="lk", max_size=2, leak_threshold=0.05)
    got: list = []
    with caplog.at_level(logging.WARNING, logger="connguard.pool"):
        t = threading.Thread(target=hold_connection_here, args=(pool, 0.4, got), name="slow-worker")
        t.start()
        wait_until(lambda: stat(pool, "leaks_detected") == 1, timeout=5)
        t.join(5)
    messages = [r.getMessage() for r in caplog.records if "possible leak" in r.getMessage()]
    assert len(messages) == 1  # reported once per checkout
    text = messages[0]
    assert re.match(
        r"pool 'lk': possible leak: connection #\d+ \(pid \d+, fd \d+\) held for \d+\.\d s "
        r"\(leak_threshold=0\.05 s\) by thread 'slow-worker'; taken at:\n",
        text,
    ), text
    assert "in hold_connection_here" in text and "test_leaks.py" in text
    assert "connguard/pool.py" not in text  # the caller's frames, not ours
    assert stat(pool, "leaks_reclaimed") == 0  # reported, not taken away
    assert stat(pool, "pool_available") == 1


def test_leak_is_reported_again_for_a_new_checkout(make_pool) -> None:
    pool = make_pool(max_size=1, leak_threshold=0.03)
    for _ in range(2):
        conn = pool.getconn()
        wait_until(lambda n=_: stat(pool, "leaks_detected") == n + 1, timeout=5)
        pool.putconn(conn)


def test_no_leak_report_without_a_threshold(make_pool) -> None:
    pool = make_pool(max_size=1)
    conn = pool.getconn()
    time.sleep(0.6)
    assert stat(pool, "leaks_detected") == 0
    pool.putconn(conn)


def test_connection_of_a_dead_thread_is_reclaimed(
    make_pool, server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A thread exits holding a connection nobody else can reach (here: in a reference
    cycle, which only the garbage collector frees): the reaper lets the collector decide,
    and the slot comes back."""
    pool = make_pool(name="dt", max_size=1)
    got: list = []

    def take_and_drop() -> None:
        cycle: dict = {"conn": pool.getconn()}
        cycle["self"] = cycle
        got.append(weakref.ref(cycle["conn"]))

    gc.disable()  # only the reaper's collection may free the cycle
    try:
        t = threading.Thread(target=take_and_drop, name="short-lived")
        with caplog.at_level(logging.WARNING, logger="connguard.pool"):
            t.start()
            t.join(5)
            conn = pool.getconn(timeout=5)  # waits until the reaper frees the slot
            wait_until(lambda: "garbage-collected" in caplog.text, timeout=5)  # logged unlocked
    finally:
        gc.enable()
    assert got[0]() is None
    assert stat(pool, "leaks_reclaimed") == 1
    assert stat(pool, "leaks_detected") == 0
    assert re.search(
        r"pool 'dt': connection #\d+ .* was garbage-collected without putconn\(\); its slot is "
        r"free again",
        caplog.text,
    ), caplog.text
    pool.putconn(conn)


def test_connection_handed_to_another_thread_is_never_closed_by_the_reaper(
    make_pool, server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A thread checks a connection out and hands it to another (an executor's result, a
    queue), then exits: the connection is still held, so the reaper must not close it. It
    reports it once, with where it was taken, and leaves the slot to its holder."""
    pool = make_pool(name="ho", max_size=1, leak_threshold=60)
    handed: queue.Queue = queue.Queue()

    def take_and_hand_over() -> None:
        handed.put(pool.getconn())

    with caplog.at_level(logging.WARNING, logger="connguard.pool"):
        t = threading.Thread(target=take_and_hand_over, name="producer")
        t.start()
        t.join(5)
        conn = handed.get(timeout=5)
        wait_until(lambda: stat(pool, "leaks_detected") == 1, timeout=5)
        time.sleep(1.2)  # more maintenance rounds: reported once, never closed
    assert server.is_open(conn)
    assert conn.execute("select 1") == 1
    conn.rollback()
    assert stat(pool, "leaks_reclaimed") == 0
    assert stat(pool, "leaks_detected") == 1
    messages = [r.getMessage() for r in caplog.records if "exited without" in r.getMessage()]
    assert len(messages) == 1, messages
    assert re.match(
        r"pool 'ho': thread '<thread \d+, exited>' exited without returning connection #\d+ "
        r".*held for \d+\.\d s; it is still referenced \(handed to another thread, or leaked\), "
        r"so it stays lent and is not closed: return it with putconn\(\) when done\. Taken at:\n",
        messages[0],
    ), messages[0]
    assert "in take_and_hand_over" in messages[0]
    pool.putconn(conn)
    assert stat(pool, "pool_available") == 1


def test_thread_started_without_threading_module_is_not_reaped(make_pool) -> None:
    """A thread the threading module does not know (C code, _thread) is alive all the same."""
    pool = make_pool(max_size=1)
    pool.putconn(pool.getconn())  # the maintenance thread runs from here on
    result: list = []
    done = threading.Event()

    def work() -> None:
        try:
            conn = pool.getconn()
            time.sleep(0.8)  # more than one maintenance round
            conn.execute("select 1")
            conn.rollback()
            pool.putconn(conn)
            result.append("ok")
        except BaseException as exc:
            result.append(exc)
        finally:
            done.set()

    _thread.start_new_thread(work, ())
    assert done.wait(10)
    assert result == ["ok"]
    assert stat(pool, "leaks_reclaimed") == 0


def test_connection_dropped_without_putconn_frees_its_slot(
    make_pool, server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(name="gc", max_size=1, leak_threshold=60)
    conn = pool.getconn()
    pid = conn.backend_pid
    with caplog.at_level(logging.WARNING, logger="connguard.pool"):
        del conn
        gc.collect()
        fresh = pool.getconn(timeout=1)
    assert fresh.backend_pid != pid
    assert stat(pool, "leaks_reclaimed") == 1
    assert "was garbage-collected without putconn(); its slot is free again" in caplog.text
    assert "test_connection_dropped_without_putconn_frees_its_slot" in caplog.text
    assert stat(pool, "pool_size") == 1
    pool.putconn(fresh)


def test_dropped_connection_is_reclaimed_in_the_background(make_pool) -> None:
    pool = make_pool(max_size=2)
    pool.putconn(pool.getconn())
    pool.getconn()  # dropped at once: the value is never stored
    gc.collect()
    wait_until(lambda: stat(pool, "leaks_reclaimed") == 1, timeout=5)
    assert stat(pool, "pool_size") == 0 and stat(pool, "pool_in_use") == 0


def test_without_reclaim_a_full_pool_would_time_out(make_pool) -> None:
    """The control for the tests above: a held connection really blocks the slot."""
    pool = make_pool(max_size=1)
    conn = pool.getconn()
    with pytest.raises(PoolTimeout):
        pool.getconn(timeout=0.05)
    pool.putconn(conn)


def test_leases_lists_who_holds_what(make_pool) -> None:
    pool = make_pool(max_size=2, leak_threshold=10)
    conn = pool.getconn()
    leases = list(pool.leases())
    assert len(leases) == 1
    _entry, lease = leases[0]
    assert lease.thread == threading.get_ident()
    assert lease.stack is not None and lease.stack[0].name == "test_leases_lists_who_holds_what"
    pool.putconn(conn)
    assert list(pool.leases()) == []


def test_a_new_connection_at_a_dropped_ones_address_does_not_leak_its_slot(
    make_pool, server: FakeServer
) -> None:
    """CPython reuses the memory of a collected object at once, so a connection opened right
    after one was dropped often has the same id(): the pool's books must not mix them up."""
    dropped: list = []
    same_address: list[bool] = []
    original = server.connect

    def connect(timeout: float | None, kwargs: dict) -> FakeConnection:
        if not dropped:
            return original(timeout, kwargs)
        client, peer = socket.socketpair()
        key = id(dropped[0])
        dropped.clear()  # the lent connection is collected here...
        conn = FakeConnection(server, client, peer)  # ...and this one likely takes its place
        server._sessions.append((peer, weakref.ref(conn)))
        same_address.append(id(conn) == key)
        return conn

    server.connect = connect  # type: ignore[method-assign]
    pool = make_pool(max_size=2)
    for attempt in range(1, 31):  # until the allocator did reuse the address (bounded)
        dropped.append(pool.getconn())
        fresh = pool.getconn()
        pool.putconn(fresh)
        del fresh  # the next round's dropped one is this one, taken from the idle list
        pool._maintain()  # one background round: the reclaimed slot is processed by now
        stats = pool.get_stats()
        assert stats["leaks_reclaimed"] == attempt
        assert (stats["pool_size"], stats["pool_available"], stats["pool_in_use"]) == (1, 1, 0)
        if same_address[-1]:
            break
    assert any(same_address), "the allocator never reused the address: scenario not tested"


def test_a_thread_that_takes_a_connection_while_the_reaper_looks_is_not_reaped(
    make_pool, server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reaper's list of live threads is a snapshot; a thread born after it that takes a
    connection at once must not count as dead."""
    pool = make_pool(max_size=3)
    pool.putconn(pool.getconn())
    mine = pool.getconn()  # a lease to look at, held by a live thread
    real = leaks.live_thread_idents
    got: list = []
    taken, release = threading.Event(), threading.Event()

    def newcomer() -> None:
        conn = pool.getconn()
        got.append(conn)
        taken.set()
        release.wait(5)
        conn.execute("select 1")
        conn.rollback()
        pool.putconn(conn)
        got.append("ok")

    def snapshot_then_newcomer() -> set[int] | None:
        alive = real()
        if threading.current_thread() is threading.main_thread() and not got:
            threading.Thread(target=newcomer, name="newcomer").start()
            assert taken.wait(5)
        return alive

    monkeypatch.setattr(leaks, "live_thread_idents", snapshot_then_newcomer)
    leaks.reap(pool, time.monotonic())
    monkeypatch.undo()
    release.set()
    wait_until(lambda: "ok" in got or not server.is_open(got[0]), timeout=5)
    assert got[-1] == "ok", got
    assert stat(pool, "leaks_reclaimed") == 0
    pool.putconn(mine)


@pytest.mark.parametrize("path", ["new connection", "idle connection"])
def test_the_reaper_never_sees_a_lease_being_filled(
    make_pool, server: FakeServer, monkeypatch: pytest.MonkeyPatch, path: str
) -> None:
    """The reaper reads leases without the caller's help: if it ran while a checkout was still
    filling the lease, it saw no owner (or the previous one, perhaps dead) and closed the
    connection in the caller's hands ('the connection is closed' on its first query). The
    reaper here runs at the worst moment: while the checkout asks for its thread's ident."""
    import connguard.pool as pool_module

    pool = make_pool(max_size=2)
    if path == "idle connection":
        done = threading.Thread(target=lambda: pool.putconn(pool.getconn()))
        done.start()
        done.join(5)  # the idle connection's last owner is a dead thread
    real_ident = pool_module.get_ident

    def reap_then_ident() -> int:
        leaks.reap(pool, time.monotonic())
        return real_ident()

    monkeypatch.setattr(pool_module, "get_ident", reap_then_ident)
    conn = pool.getconn()
    monkeypatch.undo()
    assert server.is_open(conn)
    assert conn.execute("select 1") == 1
    pool.putconn(conn)
    assert stat(pool, "leaks_reclaimed") == 0
