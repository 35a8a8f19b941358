"""Fork safety with real forked processes (os.fork and multiprocessing's 'fork' context)
against the real server: a child never uses or terminates the parent's sessions; returning
or closing an inherited connection in the child is a quiet discard; the child logs once what
it discarded and where it was opened; many children while the parent keeps querying."""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from pool_support import backend_pid, driver, make_pool, pid_alive, scalar, stat

from connguard import ConnectionPool
from support import in_child

__all__ = ["driver", "make_pool"]  # fixtures

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def log_to(path: Path) -> None:
    """In a child: send connguard's log records to a file (caplog does not cross fork)."""
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    logger = logging.getLogger("connguard")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def open_here(pool: ConnectionPool) -> Any:
    """Open a connection from a function whose name the fork report must show."""
    return pool.getconn()


def test_child_never_touches_the_parents_sessions(
    make_pool, pg: Any, driver: str, tmp_path: Path
) -> None:
    pool = make_pool(driver=driver, max_size=3)
    lent = open_here(pool)
    idle = open_here(pool)
    pool.putconn(idle)
    parent_pids = {backend_pid(lent), backend_pid(idle)}
    log = tmp_path / "child.log"

    def child() -> dict[str, Any]:
        log_to(log)
        pool.putconn(lent)  # the inherited, lent connection: a quiet discard
        pool.putconn(lent)  # and again: still quiet
        pids = []
        for _ in range(3):
            with pool.connection() as conn:
                pids.append(backend_pid(conn))
                assert scalar(conn, "SELECT 1") == 1
        stats = pool.get_stats()
        pool.close()
        return {"pids": pids, "discarded": stats["connections_discarded_after_fork"]}

    result = in_child(child)
    assert not set(result["pids"]) & parent_pids  # the child had its own sessions
    assert result["discarded"] == 2
    # the parent's sessions are alive and work
    assert all(pid_alive(pg, pid) for pid in parent_pids)
    assert scalar(lent, "SELECT 1") == 1
    lent.rollback()
    pool.putconn(lent)
    with pool.connection() as conn:
        assert backend_pid(conn) in parent_pids
        assert scalar(conn, "SELECT 2") == 2
    text = log.read_text()
    assert text.count("was forked from") == 1, text  # logged once
    assert "holding 2 connection(s); discarded them without contacting the server" in text
    assert "in open_here" in text  # where the inherited connections were opened
    assert "test_pool_fork.py" in text
    assert "was inherited from pid" in text  # the putconn() of the lent one


def test_child_closing_inherited_connections_directly(make_pool, pg: Any, driver: str) -> None:
    pool = make_pool(driver=driver, min_size=2)
    pool.wait(20)
    lent = pool.getconn()
    pids = {r[0] for r in pg.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s", [pool.name]
    )}  # fmt: skip

    def child() -> str:
        lent.close()  # sends Terminate... to /dev/null: the socket was abandoned at fork
        pool.putconn(lent)
        pool.close()
        return "ok"

    assert in_child(child) == "ok"
    assert all(pid_alive(pg, pid) for pid in pids)
    assert scalar(lent, "SELECT 1") == 1
    lent.rollback()
    pool.putconn(lent)


def _mp_child(queue: Any) -> None:
    pool = _MP["pool"]
    try:
        with pool.connection() as conn:
            queue.put(("ok", backend_pid(conn), scalar(conn, "SELECT 41 + 1")))
    except BaseException as exc:  # pragma: no cover - reported in the parent
        queue.put(("error", repr(exc), None))


_MP: dict[str, Any] = {}


def test_multiprocessing_fork_context(make_pool, pg: Any, driver: str) -> None:
    pool = make_pool(driver=driver, min_size=2, max_size=2)
    pool.wait(20)
    lent, idle = pool.getconn(), pool.getconn()
    parent_pids = {backend_pid(lent), backend_pid(idle)}
    pool.putconn(idle)  # one idle, one lent across the forks
    _MP["pool"] = pool
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_mp_child, args=(queue,)) for _ in range(4)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=30) for _ in procs]
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert all(r[0] == "ok" and r[2] == 42 for r in results), results
    assert not {r[1] for r in results} & parent_pids
    assert all(pid_alive(pg, pid) for pid in parent_pids)
    assert scalar(lent, "SELECT 1") == 1
    lent.rollback()
    pool.putconn(lent)
    with pool.connection() as conn:
        assert backend_pid(conn) in parent_pids
    _MP.clear()


def test_many_children_while_the_parent_queries(make_pool, pg: Any, driver: str) -> None:
    """20 children, one after the other, each using the pool it inherited, while a parent
    thread keeps querying through the same pool: no error and no wrong answer anywhere."""
    pool = make_pool(driver=driver, min_size=2, max_size=3)
    pool.wait(20)
    parent_pids = set()
    wrong: list[Any] = []
    errors: list[BaseException] = []
    stop = threading.Event()
    queries = [0]

    def parent_work() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            try:
                with pool.connection() as conn:
                    parent_pids.add(backend_pid(conn))
                    got = scalar(conn, "SELECT %s::int", [n])
                    if got != n:
                        wrong.append((n, got))
                queries[0] += 1
            except BaseException as exc:
                errors.append(exc)

    worker = threading.Thread(target=parent_work)
    worker.start()

    def child() -> list[int]:
        out = []
        for i in range(3):
            with pool.connection() as conn:
                out.append(backend_pid(conn))
                assert scalar(conn, "SELECT %s::int", [1000 + i]) == 1000 + i
        pool.close()
        return out

    child_pids: set[int] = set()
    try:
        for _ in range(20):
            child_pids.update(in_child(child))
    finally:
        stop.set()
        worker.join(30)
    assert not errors, errors[:3]
    assert not wrong, wrong[:3]
    assert queries[0] > 0
    assert not child_pids & parent_pids
    assert stat(pool, "connections_lost") == 0  # no child ever broke a parent session
    assert stat(pool, "requests_errors") == 0
