"""A checkout or checkin interrupted by a BaseException — gevent.Timeout, GreenletExit,
KeyboardInterrupt — while connecting, waiting, pinging or resetting must not leak a slot,
strand a connection or jam the circuit breaker."""

from __future__ import annotations

import _thread
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from fakedb import FakeServer, wait_until

import connguard.waiters as waiters_module
from connguard import ConnectionPool, PoolUnavailable


class Interrupt(BaseException):
    """Stands for gevent.Timeout / GreenletExit / KeyboardInterrupt (not an Exception)."""


def books(pool: ConnectionPool) -> tuple[int, int, int, int]:
    s = pool.get_stats()
    return s["pool_size"], s["pool_in_use"], s["pool_available"], s["requests_waiting"]


def test_interrupted_connect_frees_its_slot(make_pool, server: FakeServer) -> None:
    pool = make_pool(max_size=1)
    original = server.connect

    def connect(timeout: float | None, kwargs: dict) -> Any:
        raise Interrupt

    server.connect = connect  # type: ignore[method-assign]
    with pytest.raises(Interrupt):
        pool.getconn()
    assert books(pool) == (0, 0, 0, 0)
    server.connect = original  # type: ignore[method-assign]
    pool.putconn(pool.getconn(timeout=0.5))


def test_interrupted_probe_does_not_jam_the_breaker(make_pool, server: FakeServer) -> None:
    pool = make_pool(max_size=2, backoff_initial=0.01, backoff_max=0.01)
    server.down = True
    with pytest.raises(PoolUnavailable):
        pool.getconn()
    original = server.connect
    interrupted = threading.Event()

    def connect(timeout: float | None, kwargs: dict) -> Any:
        if threading.current_thread() is threading.main_thread():
            interrupted.set()
            raise Interrupt
        return original(timeout, kwargs)

    server.connect = connect  # type: ignore[method-assign]
    time.sleep(0.02)
    for _ in range(400):  # fail fast until this thread's turn to probe comes: interrupted
        try:
            pool.getconn()
        except Interrupt:
            break
        except PoolUnavailable:
            time.sleep(0.005)
    assert interrupted.is_set()
    server.down = False
    server.connect = original  # type: ignore[method-assign]
    wait_until(lambda: not pool.get_stats()["breaker_open"], timeout=5)
    pool.putconn(pool.getconn(timeout=1))


class _InterruptingLock:
    """A waiter's lock whose acquire() is interrupted after a short while."""

    def __init__(self) -> None:
        self._lock = _thread.allocate_lock()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if not blocking:
            return self._lock.acquire(False)
        if self._lock.acquire(timeout=0.05):
            return True
        raise Interrupt

    def release(self) -> None:
        self._lock.release()


def waiter_with(lock_class: type) -> type:
    class Waiter(waiters_module.Waiter):
        def __init__(self) -> None:
            super().__init__()
            self.lock = lock_class()
            self.lock.acquire(False)

    return Waiter


def test_interrupted_wait_leaves_the_queue(make_pool, monkeypatch: pytest.MonkeyPatch) -> None:
    pool = make_pool(max_size=1)
    held = pool.getconn()
    monkeypatch.setattr(waiters_module, "Waiter", waiter_with(_InterruptingLock))
    with pytest.raises(Interrupt):
        pool.getconn(timeout=5)
    monkeypatch.undo()
    assert books(pool) == (1, 1, 0, 0)  # not queued any more
    pool.putconn(held)
    assert pool.getconn(timeout=0.5) is held  # not handed to the departed waiter
    pool.putconn(held)


def test_wait_interrupted_right_after_the_grant_returns_the_connection(
    make_pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The grant lands, then the interrupt: the granted connection goes back to the pool."""
    pool = make_pool(max_size=1)
    held = pool.getconn()

    class GrantedThenInterrupted(_InterruptingLock):
        def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
            if not blocking:
                return self._lock.acquire(False)
            pool.putconn(held)  # hands the connection over to this waiter...
            raise Interrupt  # ...which is interrupted before it takes it

    monkeypatch.setattr(waiters_module, "Waiter", waiter_with(GrantedThenInterrupted))
    with pytest.raises(Interrupt):
        pool.getconn(timeout=5)
    monkeypatch.undo()
    assert books(pool) == (1, 0, 1, 0)
    assert pool.getconn(timeout=0.5) is held
    pool.putconn(held)


def test_wait_interrupted_after_a_slot_grant_frees_the_slot(
    make_pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = make_pool(max_size=1)
    held = pool.getconn()

    class SlotThenInterrupted(_InterruptingLock):
        def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
            if not blocking:
                return self._lock.acquire(False)
            pool.discard(held)  # frees the slot: granted to this waiter...
            raise Interrupt  # ...which is interrupted before it connects

    monkeypatch.setattr(waiters_module, "Waiter", waiter_with(SlotThenInterrupted))
    with pytest.raises(Interrupt):
        pool.getconn(timeout=5)
    monkeypatch.undo()
    assert books(pool) == (0, 0, 0, 0)
    pool.putconn(pool.getconn(timeout=0.5))


def test_interrupted_ping_retires_the_connection(make_pool, server: FakeServer) -> None:
    pool = make_pool(max_size=1, ping_interval=0.01)
    conn = pool.getconn()
    pool.putconn(conn)
    time.sleep(0.02)
    original = server.ping

    def ping(c: Any, timeout: float) -> None:
        raise Interrupt

    server.ping = ping  # type: ignore[method-assign]
    with pytest.raises(Interrupt):
        pool.getconn()
    server.ping = original  # type: ignore[method-assign]
    assert books(pool) == (0, 0, 0, 0)  # mid-ping, its state is unknown: closed
    assert not server.is_open(conn)
    pool.putconn(pool.getconn(timeout=0.5))


def test_interrupted_rollback_on_return_frees_the_slot(make_pool, server: FakeServer) -> None:
    pool = make_pool(max_size=1)
    conn = pool.getconn()
    conn.execute("insert")

    def rollback() -> None:
        raise Interrupt

    conn.rollback = rollback  # type: ignore[method-assign]
    with pytest.raises(Interrupt):
        pool.putconn(conn)
    assert books(pool) == (0, 0, 0, 0)
    assert not server.is_open(conn)
    pool.putconn(pool.getconn(timeout=0.5))


def test_gevent_timeouts_around_checkouts(tmp_path: Path) -> None:
    """The real thing: gevent.Timeout around getconn() of an exhausted pool and around a
    slow connect; afterwards every slot is still usable."""
    pytest.importorskip("gevent")
    script = tmp_path / "timeouts.py"
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
            pool = ConnectionPool("", driver=FakeDriver(server), name="gt", max_size=2,
                                  timeout=10)
            a, b = pool.getconn(), pool.getconn()
            for _ in range(5):  # waiting callers abandoned by a gevent.Timeout
                try:
                    with gevent.Timeout(0.02):
                        pool.getconn()
                except gevent.Timeout:
                    pass
            pool.putconn(a)
            pool.discard(b)
            a = pool.getconn()
            server.slow_connect(1.0)
            try:  # a connect abandoned by a gevent.Timeout
                with gevent.Timeout(0.05):
                    pool.getconn()
            except gevent.Timeout:
                pass
            pool.putconn(a)
            server.slow_connect(0)
            got = [pool.getconn(timeout=1), pool.getconn(timeout=1)]
            stats = pool.get_stats()
            print("size", stats["pool_size"], "waiting", stats["requests_waiting"],
                  "in_use", stats["pool_in_use"])
            """
        )
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, str(script), str(Path(__file__).parent)],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "size 2 waiting 0 in_use 2" in proc.stdout, proc.stdout
