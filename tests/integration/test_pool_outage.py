"""Server down, for real: stop the server and checkouts fail within milliseconds naming the
connect error; start it and the pool recovers by itself; reconnect_failed fires after
reconnect_timeout."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
from pool_support import backend_pid, driver, make_pool, scalar, stat, wait_until

from connguard import PoolUnavailable

__all__ = ["driver", "make_pool"]  # fixtures


def test_stopped_server_fails_fast_then_recovers(make_pool, pg: Any, driver: str) -> None:
    pool = make_pool(driver=driver, min_size=2, max_size=4, timeout=30)
    pool.wait(20)
    pg.stop()
    for attempt in range(20):
        started = time.monotonic()
        with pytest.raises(PoolUnavailable) as info:
            pool.getconn()
        elapsed = time.monotonic() - started
        assert elapsed < 0.2, (attempt, elapsed)  # not the 30 s timeout
    message = str(info.value)
    assert re.match(
        rf"pool {pool.name!r}: database unreachable for \d+\.\d\d s, failing fast \(size=\d/4, "
        r"in_use=0, idle=0, waiting=0\); the last connect attempt failed with: OperationalError: ",
        message,
    ), message
    assert "Connection refused" in message or "No such file" in message, message
    assert stat(pool, "breaker_open") == 1
    pg.start()
    # the background probe closes the breaker without any request
    wait_until(lambda: stat(pool, "breaker_open") == 0, timeout=10)
    wait_until(lambda: pg.count_connections(application_name=pool.name) == 2, timeout=10)
    with pool.connection() as conn:
        assert scalar(conn, "SELECT 1") == 1
    assert stat(pool, "breaker_opened") == 1


def test_first_request_after_the_server_is_back_succeeds(make_pool, pg: Any, driver: str) -> None:
    """No wait for the next scheduled probe: while connects are refused at once, a caller
    probes the server itself, so the very first request after start() connects."""
    pool = make_pool(driver=driver, max_size=2, backoff_initial=5.0, backoff_max=5.0)
    with pool.connection():
        pass
    pg.stop()
    for _ in range(3):
        with pytest.raises(PoolUnavailable):
            pool.getconn()
    pg.start()
    started = time.monotonic()
    with pool.connection() as conn:
        assert scalar(conn, "SELECT 1") == 1
    assert time.monotonic() - started < 1.0
    assert stat(pool, "breaker_open") == 0


def test_lent_connections_during_an_outage(make_pool, pg: Any, driver: str) -> None:
    pool = make_pool(driver=driver, max_size=2)
    conn = pool.getconn()
    old = backend_pid(conn)
    pg.restart(mode="immediate")
    with pytest.raises(Exception):  # noqa: B017 - the caller's query on a dead session fails
        scalar(conn, "SELECT 1")
    pool.putconn(conn)  # discarded, quietly
    with pool.connection() as fresh:
        assert backend_pid(fresh) != old


def test_reconnect_failed_after_reconnect_timeout(make_pool, pg: Any) -> None:
    calls: list[float] = []
    pool = make_pool(max_size=1, reconnect_timeout=0.3,
                     reconnect_failed=lambda p: calls.append(time.monotonic()))  # fmt: skip
    with pool.connection():
        pass
    pg.stop()
    started = time.monotonic()
    with pytest.raises(PoolUnavailable):
        pool.getconn()
    wait_until(lambda: calls, timeout=10)
    assert calls[0] - started >= 0.3
    time.sleep(0.3)
    assert len(calls) == 1
    pg.start()
    wait_until(lambda: stat(pool, "breaker_open") == 0, timeout=10)


def test_server_killed(make_pool, pg: Any, driver: str) -> None:
    pool = make_pool(driver=driver, min_size=1, max_size=2)
    pool.wait(20)
    pg.kill()
    started = time.monotonic()
    with pytest.raises(PoolUnavailable):
        pool.getconn()
    assert time.monotonic() - started < 0.2
    pg.start()
    wait_until(lambda: stat(pool, "breaker_open") == 0, timeout=20)
    with pool.connection() as conn:
        assert scalar(conn, "SELECT 1") == 1
