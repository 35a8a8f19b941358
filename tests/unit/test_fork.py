"""Fork safety on the fake driver, with real forked processes.

The fake server lives in the parent; a forked child shares the client ends of the socket
pairs. Anything the child sends on an inherited socket (a Terminate, a rollback) would show
up on the parent's server ends: the tests assert that nothing does.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import time
from pathlib import Path

import pytest
from fakedb import FakeServer, wait_until

from connguard import ConnectionPool

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def run_in_child(body, timeout: float = 10.0) -> dict:  # type: ignore[no-untyped-def]
    """Fork; run body() in the child; return what it returned (JSON) or the error it raised."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read)
        code = 0
        try:
            result = {"ok": body()}
        except BaseException as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"}
            code = 1
        with os.fdopen(write, "w") as out:
            json.dump(result, out, default=str)
        os._exit(code)
    os.close(write)
    with os.fdopen(read) as inp:
        deadline = time.monotonic() + timeout
        data = ""
        while time.monotonic() < deadline:
            chunk = inp.read()
            data += chunk
            if not chunk:
                break
    waited = 0.0
    while True:
        done, _status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if waited > timeout:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError("child hung")
        time.sleep(0.01)
        waited += 0.01
    return json.loads(data)


def test_child_abandons_inherited_connections_without_a_byte(
    make_pool, server: FakeServer, tmp_path: Path
) -> None:
    pool: ConnectionPool = make_pool(name="fk", max_size=3)
    lent = pool.getconn()
    idle = pool.getconn()
    pool.putconn(idle)
    log = tmp_path / "child.log"

    def child() -> dict:
        handler = logging.FileHandler(log)
        logger = logging.getLogger("connguard")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        # the inherited lent connection: returning or closing it is a quiet discard
        pool.putconn(lent)
        pool.putconn(lent)
        fresh = pool.getconn()
        assert fresh is not lent and fresh is not idle
        fresh.execute("select")
        pool.putconn(fresh)
        pool.putconn(pool.getconn())
        stats = pool.get_stats()
        handler.flush()
        return {
            "pid": fresh.backend_pid,
            "discarded": stats["connections_discarded_after_fork"],
            "size": stats["pool_size"],
        }

    result = run_in_child(child)
    assert "error" not in result, result
    assert result["ok"]["discarded"] == 2 and result["ok"]["size"] == 1
    assert result["ok"]["pid"] not in (lent.backend_pid, idle.backend_pid)
    # the parent's sessions heard nothing from the child
    assert server.received(lent) == b"" and server.received(idle) == b""
    assert server.is_open(lent) and server.is_open(idle)
    lent.execute("select")
    pool.putconn(lent)
    assert pool.get_stats()["pool_available"] == 2
    text = log.read_text()
    # once, naming the connections and where they were opened
    assert text.count("was forked from") == 1, text
    assert "holding 2 connection(s); discarded them without contacting the server" in text
    assert "test_child_abandons_inherited_connections_without_a_byte" in text
    assert "Open connections after forking, not before." in text
    assert "was inherited from pid" in text  # the putconn() of the lent one


def test_child_close_of_an_inherited_connection_is_harmless(make_pool, server: FakeServer) -> None:
    pool = make_pool(max_size=2)
    lent = pool.getconn()

    def child() -> str:
        lent.close()  # the caller closes it directly: the socket already points at /dev/null
        pool.putconn(lent)
        return "ok"

    assert run_in_child(child) == {"ok": "ok"}
    assert server.received(lent) == b""
    lent.execute("select")
    pool.putconn(lent)


def test_child_pool_close_sends_nothing(make_pool, server: FakeServer) -> None:
    pool = make_pool(min_size=2)
    pool.wait(5)
    parent_conns = list(server.conns)

    def child() -> str:
        pool.close()
        return "closed"

    assert run_in_child(child) == {"ok": "closed"}
    assert all(server.received(c) == b"" and server.is_open(c) for c in parent_conns)
    conn = pool.getconn()
    conn.execute("select")
    pool.putconn(conn)


def test_child_gets_its_own_background_thread(make_pool, server: FakeServer) -> None:
    pool = make_pool(name="bg", min_size=1)
    pool.wait(5)

    def child() -> int:
        import threading

        pool.getconn()  # the inherited idle one is gone: this opens a new one
        return sum(t.name == "connguard-bg" for t in threading.enumerate())

    assert run_in_child(child) == {"ok": 1}


def test_many_children_in_a_loop(make_pool, server: FakeServer) -> None:
    pool = make_pool(min_size=2, max_size=2)
    pool.wait(5)
    parent_conns = list(server.conns)

    def child() -> int:
        with pool.connection() as conn:
            conn.execute("select")
            return conn.backend_pid

    pids = set()
    for _ in range(10):
        result = run_in_child(child)
        assert "ok" in result, result
        pids.add(result["ok"])
        with pool.connection() as conn:
            conn.execute("select")
    assert not pids & {c.backend_pid for c in parent_conns}
    assert all(server.received(c) == b"" for c in parent_conns)
    assert server.connects == 2  # the parent never had to reconnect


def test_a_failing_fork_hook_is_logged_with_the_pool_name(make_pool, monkeypatch) -> None:
    pool = make_pool(name="forky")

    def broken() -> None:
        raise RuntimeError("hook broke")

    monkeypatch.setattr(pool, "_after_fork_in_child", broken)
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    handler = Keep()
    logger = logging.getLogger("connguard.forking")
    logger.addHandler(handler)
    try:
        result = run_in_child(lambda: records)
    finally:
        logger.removeHandler(handler)
    [text] = result["ok"]
    assert "pool 'forky': resetting after fork failed in child" in text, text
    assert "RuntimeError: hook broke" in text, text


def test_a_parent_that_forked_closes_its_idle_pool(
    make_pool, server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pre-fork master (gunicorn --preload): the connections it opened before forking are
    idle for ever, beside the workers' own. Once it has forked and not used the pool for
    FORKED_PARENT_IDLE, it closes them (min_size too) until its next checkout."""
    import connguard.maintenance as maintenance_module

    monkeypatch.setattr(maintenance_module, "FORKED_PARENT_IDLE", 0.3)
    monkeypatch.setattr(maintenance_module.forking, "children_forked", 0)
    pool = make_pool(min_size=2, max_size=3)
    pool.wait(5)
    pool.putconn(pool.getconn())
    time.sleep(0.8)  # no fork yet: a plain process keeps its idle connections
    assert (server.open_count(), pool.get_stats()["pool_size"]) == (2, 2)
    assert run_in_child(lambda: "child") == {"ok": "child"}  # a real fork
    wait_until(lambda: server.open_count() == 0, timeout=5)
    time.sleep(0.6)  # and min_size does not refill it while it stays unused
    stats = pool.get_stats()
    assert (stats["pool_size"], stats["connections_idle_closed"]) == (0, 2)
    conn = pool.getconn()  # used again: connects, and min_size applies again
    wait_until(lambda: pool.get_stats()["pool_size"] == 2, timeout=5)
    pool.putconn(conn)


def test_a_forked_parent_that_keeps_using_its_pool_keeps_it(
    make_pool, server: FakeServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import connguard.maintenance as maintenance_module

    monkeypatch.setattr(maintenance_module, "FORKED_PARENT_IDLE", 0.5)
    pool = make_pool(min_size=1, max_size=2)
    pool.wait(5)
    assert run_in_child(lambda: "child") == {"ok": "child"}
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        pool.putconn(pool.getconn())
        time.sleep(0.1)
    assert pool.get_stats()["connections_idle_closed"] == 0
    assert server.open_count() == 1
