"""Closing, for real: ``close(timeout)`` waits for lent connections to come back, and never
closes one under its holder; a process's exit ends its sessions with a Terminate message
(the server logs no "unexpected EOF on client connection"), including a multiprocessing
child, which ends with os._exit() and never runs atexit."""

from __future__ import annotations

import logging
import multiprocessing
import threading
import time
from typing import Any

import pytest
from pool_support import driver, make_pool, scalar, wait_until

from connguard import ConnectionPool

__all__ = ["driver", "make_pool"]  # fixtures

_CHILD_POOL: ConnectionPool | None = None


def test_close_waits_for_a_lent_connection(make_pool, pg: Any, driver: str) -> None:
    pool = make_pool(driver=driver, max_size=2)
    taken, done = threading.Event(), threading.Event()

    def job() -> None:
        with pool.connection() as conn:
            taken.set()
            time.sleep(0.5)
            scalar(conn, "SELECT 1")
        done.set()

    t = threading.Thread(target=job)
    t.start()
    assert taken.wait(10)
    pool.close(timeout=10)
    assert done.is_set()  # close() returned after the job gave its connection back
    assert pg.count_connections(application_name=pool.name) == 0  # and it is closed
    t.join(10)


def test_close_never_closes_a_connection_under_its_holder(
    make_pool, pg: Any, driver: str, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(driver=driver, max_size=2)
    held: list[Any] = []
    release = threading.Event()

    def holder() -> None:
        held.append(pool.getconn())
        release.wait(10)

    t = threading.Thread(target=holder, name="long-job")
    t.start()
    wait_until(lambda: held)
    with caplog.at_level(logging.WARNING, logger="connguard.pool"):
        pool.close(timeout=0.2)
    assert "closed while connection #" in caplog.text and "'long-job'" in caplog.text
    assert scalar(held[0], "SELECT 1") == 1  # still the holder's
    pool.putconn(held[0])  # closed as it comes back
    wait_until(lambda: pg.count_connections(application_name=pool.name) == 0)
    release.set()
    t.join(10)


def _child(conninfo: str, driver: str) -> None:
    global _CHILD_POOL
    _CHILD_POOL = ConnectionPool(conninfo, driver=driver, min_size=2, max_size=2)  # kept
    _CHILD_POOL.wait(10)
    with _CHILD_POOL.connection() as conn:
        scalar(conn, "SELECT 1")


@pytest.mark.parametrize(
    ("runner", "driver"),
    [("multiprocessing", "psycopg"), ("multiprocessing", "psycopg2"), ("billiard", "psycopg")],
)
def test_a_multiprocessing_child_ends_its_sessions_cleanly(
    pg: Any, runner: str, driver: str
) -> None:
    """A forked multiprocessing (or billiard: Celery prefork) child keeps its pool in a
    global and returns: it ends with os._exit() (no atexit, no finalizers). Its sessions
    must still end with a Terminate, not an EOF the server logs (at DEBUG1, switched on for
    these sessions only)."""
    pytest.importorskip(driver)
    context = (
        multiprocessing.get_context("fork")
        if runner == "multiprocessing"
        else pytest.importorskip("billiard").get_context("fork")
    )
    name = f"cg-mp-exit-{runner}-{driver}-{time.monotonic_ns() % 10**9}"
    conninfo = pg.conninfo(application_name=name, options="-c log_min_messages=debug1")
    child = context.Process(target=_child, args=(conninfo, driver))
    child.start()
    child.join(30)
    assert child.exitcode == 0
    wait_until(lambda: pg.count_connections(application_name=name) == 0, timeout=5)
    time.sleep(0.3)  # let the server write its log
    log = pg.log_path.read_text(errors="replace")
    eof = [line for line in log.splitlines() if name in line and "unexpected EOF" in line]
    assert not eof, eof
