"""Pools over a process's life under gunicorn, on the real server: a worker that exits
(graceful HUP reload) ends its server sessions cleanly, and a ``--preload`` master that
forked its workers closes the idle connections it opened before forking."""

from __future__ import annotations

import os
import signal
import time
from typing import Any

import pytest

from connguard.demo.base import CONNGUARD_ENGINE
from connguard.demo.load import run_load
from connguard.demo.processes import HttpServer
from connguard.demo.runner import Harness
from connguard.maintenance import FORKED_PARENT_IDLE

pytestmark = [pytest.mark.django, pytest.mark.timeout(120)]

WORKERS = 2
MAX_SIZE = 2


def settings(min_size: int = 0) -> dict[str, Any]:
    pool: dict[str, Any] = {"max_size": MAX_SIZE}
    if min_size:
        pool["min_size"] = min_size
    return {"ENGINE": CONNGUARD_ENGINE, "OPTIONS": {"pool": pool}}


def sessions(h: Harness) -> dict[int, int]:
    """Server sessions of the project: backend pid -> pid of the process holding it."""
    rows = h.target.execute(
        "SELECT pid, application_name FROM pg_stat_activity WHERE application_name LIKE %s",
        [f"{h.app_name}:%"], dbname="postgres",
    )  # fmt: skip
    return {int(pid): int(name.rsplit(":", 1)[1]) for pid, name in rows}


def wait_for(predicate: Any, timeout: float, what: str) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - started


def busy(srv: HttpServer, n: int = 40) -> None:
    load = run_load(srv.base_url, [f"/row/k{i % 10:04d}" for i in range(n)],
                            concurrency=4)  # fmt: skip
    assert load.errors == 0, load


def test_worker_exit_ends_its_sessions_cleanly(django_pg: Any, django_db: str) -> None:
    """gunicorn HUP: the old workers stop gracefully (sys.exit, so atexit runs) and their
    sessions end with a Terminate message: gone from pg_stat_activity at once, and no
    "unexpected EOF on client connection" in the server log (logged at DEBUG1, switched on
    for this database only)."""
    with Harness(django_pg, django_db) as h:
        h.set_database_config(log_min_messages="debug1")
        srv = h.gunicorn(h.env(settings(min_size=MAX_SIZE)), workers=WORKERS)
        for _ in range(10):  # until both workers have served (and opened min_size)
            busy(srv)
            before = sessions(h)
            workers = set(before.values())
            if len(workers) == WORKERS:
                break
        assert len(workers) == WORKERS, before
        os.kill(srv.pid, signal.SIGHUP)  # reload: new workers, the old ones exit gracefully
        gone = wait_for(lambda: not set(sessions(h).values()) & workers, 20,
                        "the old workers' sessions to end")  # fmt: skip
        time.sleep(0.5)  # let the server write its log
        log = django_pg.log_path.read_text(errors="replace")
        eof = [
            line for line in log.splitlines()
            if "unexpected EOF on client connection" in line
            and any(f"[{pid}]" in line for pid in before)
        ]  # fmt: skip
        assert not eof, eof
        print(f"old workers' sessions gone {gone:.2f} s after HUP")


def test_preload_master_closes_its_idle_connections(django_pg: Any, django_db: str) -> None:
    """gunicorn --preload -w 2 with a query in ready(): the master opened a connection before
    forking and serves no requests; once it has forked and not used its pool for
    FORKED_PARENT_IDLE seconds it closes that connection, so the server holds at most
    workers x max_size connections from the app (the doctor's bound)."""
    with Harness(django_pg, django_db) as h:
        srv = h.gunicorn(h.env(settings(), QUERY_IN_READY=True), workers=WORKERS, preload=True)
        busy(srv)
        assert srv.pid in sessions(h).values(), "the master opened no connection in ready()"
        waited = wait_for(
            lambda: srv.pid not in sessions(h).values(),
            FORKED_PARENT_IDLE + 10,
            "the master to close its idle connections",
        )
        held = sessions(h)
        assert len(held) <= WORKERS * MAX_SIZE, held
        busy(srv)  # the workers are unaffected
        assert srv.pid not in sessions(h).values()
        print(f"master's connections closed {waited:.1f} s after the first check")
