"""A host that accepts TCP and then says nothing (a wedged server, a dead load-balancer
target): with every slot busy connecting, queued callers must not be handed the slots of
failed connects one after another; once the breaker is open they fail fast."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from pool_support import DRIVERS

from connguard import ConnectionPool, PoolUnavailable

CONNECT_TIMEOUT = 2  # libpq's smallest effective connect_timeout


class SilentListener:
    """A loopback listener owned by the test: accepts connections and never answers."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.sock.settimeout(0.1)
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="silent-listener", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.accepted.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for conn in self.accepted:
            with contextlib.suppress(OSError):
                conn.close()
        self.sock.close()


@pytest.fixture
def listener() -> Iterator[SilentListener]:
    silent = SilentListener()
    yield silent
    silent.close()


@pytest.mark.parametrize("driver", DRIVERS)
def test_queued_callers_fail_within_one_connect_timeout(
    listener: SilentListener, driver: str
) -> None:
    pytest.importorskip(driver)
    conninfo = (
        f"host=127.0.0.1 port={listener.port} user=app dbname=app connect_timeout={CONNECT_TIMEOUT}"
    )
    pool = ConnectionPool(conninfo, driver=driver, name=f"swallow-{driver}", max_size=2,
                          timeout=60)  # fmt: skip
    elapsed: list[float] = []
    errors: list[BaseException] = []

    def caller() -> None:
        started = time.monotonic()
        try:
            pool.getconn()
        except BaseException as exc:
            errors.append(exc)
        elapsed.append(time.monotonic() - started)

    try:
        threads = [threading.Thread(target=caller) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        pool.close()
    assert len(errors) == 8, errors
    assert all(isinstance(e, PoolUnavailable) for e in errors), errors
    # before: 4 rounds of 2 connects, the last caller failed after 4 connect timeouts
    assert max(elapsed) < 2.5 * CONNECT_TIMEOUT, sorted(elapsed)
    # the two first-round connects, and at most one breaker probe after them
    assert len(listener.accepted) <= 3, len(listener.accepted)
