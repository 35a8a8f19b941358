"""Leaks against the real server: leak_threshold logs the owner thread and its stack; a
connection whose owner thread died is reclaimed (and its session closed) when it is garbage,
and never closed while another thread holds it; one dropped without putconn() frees its
slot."""

from __future__ import annotations

import gc
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from pool_support import backend_pid, driver, make_pool, pid_alive, scalar, stat, wait_until

__all__ = ["driver", "make_pool"]  # fixtures


def slow_report_job(pool: Any, seconds: float) -> None:
    with pool.connection() as conn:
        scalar(conn, "SELECT 1")
        time.sleep(seconds)


def test_leak_threshold_logs_owner_and_stack(
    make_pool, caplog: pytest.LogCaptureFixture, driver: str
) -> None:
    pool = make_pool(driver=driver, max_size=2, leak_threshold=0.1)
    with caplog.at_level(logging.WARNING, logger="connguard.pool"):
        t = threading.Thread(target=slow_report_job, args=(pool, 0.5), name="report-builder")
        t.start()
        wait_until(lambda: stat(pool, "leaks_detected") == 1, timeout=10)
        t.join(10)
    [record] = [r for r in caplog.records if "possible leak" in r.getMessage()]
    text = record.getMessage()
    assert re.match(
        rf"pool {pool.name!r}: possible leak: connection #\d+ \(pid \d+, fd \d+\) held for "
        r"\d+\.\d s \(leak_threshold=0\.1 s\) by thread 'report-builder'; taken at:\n",
        text,
    ), text
    assert "in slow_report_job" in text and "test_pool_leaks.py" in text
    assert stat(pool, "pool_available") == 1  # reported, and returned normally


def test_connection_of_a_dead_thread_is_reclaimed(make_pool, pg: Any, driver: str) -> None:
    """The owner thread exited and nothing can reach the connection any more (a reference
    cycle): the reaper's one collection frees it, and its slot and session come back."""
    pool = make_pool(driver=driver, max_size=1)
    pids: list[int] = []

    def take_and_drop() -> None:
        cycle: dict[str, Any] = {"conn": pool.getconn()}
        cycle["self"] = cycle
        pids.append(backend_pid(cycle["conn"]))

    gc.disable()  # only the reaper's collection may free the cycle
    try:
        t = threading.Thread(target=take_and_drop)
        t.start()
        t.join(10)
        with pool.connection(timeout=10) as conn:  # the slot comes back within a round or two
            assert backend_pid(conn) != pids[0]
    finally:
        gc.enable()
    assert stat(pool, "leaks_reclaimed") == 1
    wait_until(lambda: not pid_alive(pg, pids[0]))  # the leaked session was closed


def test_connection_handed_to_another_thread_stays_open(
    make_pool, pg: Any, driver: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker thread checks a connection out and returns it as an executor's result, then
    exits: the connection has a live holder, so the reaper never closes it (before: about a
    second later, "the connection is closed" in the holder's hands)."""
    pool = make_pool(driver=driver, max_size=1)
    with caplog.at_level(logging.WARNING, logger="connguard.pool"):
        with ThreadPoolExecutor(max_workers=1) as executor:
            conn = executor.submit(pool.getconn).result(10)
        # the executor's thread has exited; several maintenance rounds pass
        wait_until(lambda: stat(pool, "leaks_detected") == 1, timeout=10)
        time.sleep(1.5)
        assert scalar(conn, "SELECT 1") == 1
        assert pid_alive(pg, backend_pid(conn))
    assert stat(pool, "leaks_reclaimed") == 0
    assert stat(pool, "leaks_detected") == 1  # reported once, with where it was taken
    assert len([r for r in caplog.records if "exited without returning" in r.getMessage()]) == 1
    pool.putconn(conn)
    with pool.connection(timeout=2) as again:
        assert again is conn


def test_dropped_connection_frees_its_slot(make_pool, pg: Any, driver: str) -> None:
    pool = make_pool(driver=driver, max_size=1)
    conn = pool.getconn()
    pid = backend_pid(conn)
    del conn
    gc.collect()
    with pool.connection(timeout=2) as fresh:
        assert backend_pid(fresh) != pid
        assert scalar(fresh, "SELECT 1") == 1
    assert stat(pool, "leaks_reclaimed") == 1
    wait_until(lambda: pg.count_connections(application_name=pool.name) == 1)


def test_leak_detection_counts_holding_time_not_the_wait(make_pool, driver: str) -> None:
    """A saturated pool: the second caller waits ~1.6 s for the only connection, then holds
    it 0.3 s. Only the first one (held 1.6 s) passes leak_threshold=1.0; before, the
    second was reported too, its lease stamped when it started waiting."""
    pool = make_pool(driver=driver, max_size=1, leak_threshold=1.0)
    first_taken = threading.Event()

    def job(hold: float, taken: threading.Event | None = None) -> None:
        with pool.connection() as conn:
            if taken is not None:
                taken.set()
            scalar(conn, "SELECT 1")
            time.sleep(hold)

    first = threading.Thread(target=job, args=(1.6, first_taken), name="first")
    first.start()
    assert first_taken.wait(10)
    second = threading.Thread(target=job, args=(0.3,), name="second")
    second.start()
    first.join(10)
    second.join(10)
    time.sleep(0.3)  # a few more reaper rounds (every leak_threshold / 4)
    assert stat(pool, "leaks_detected") == 1
