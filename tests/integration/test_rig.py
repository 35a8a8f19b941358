"""The real-server rig itself: PostgresServer's controls, FaultProxy's faults, the fixtures."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import psycopg2
import pytest

from connguard.testing import _teardown
from connguard.testing.proxy import FaultProxy
from connguard.testing.server import PostgresServer, ServerUnavailable, find_pg_bin

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

DISCONNECTED = (psycopg.OperationalError, psycopg2.OperationalError, psycopg2.InterfaceError)


@pytest.fixture
def connect() -> Iterator[Callable[..., psycopg.Connection[Any]]]:
    """``connect(conninfo, **kwargs)``: a psycopg 3 autocommit connection, closed after."""
    opened: list[psycopg.Connection[Any]] = []

    def _connect(conninfo: str, **kwargs: Any) -> psycopg.Connection[Any]:
        conn = psycopg.connect(conninfo, autocommit=True, **kwargs)
        opened.append(conn)
        return conn

    yield _connect
    for conn in opened:
        conn.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.02)


# --------------------------------------------------------------------------- server


def test_conninfo_works_with_psycopg_and_psycopg2(pg: PostgresServer, connect: Any) -> None:
    conn = connect(pg.conninfo(application_name="rig-psycopg"))
    assert conn.execute("SELECT current_user, current_database()").fetchone() == (
        "postgres",
        "postgres",
    )
    conn2 = psycopg2.connect(pg.conninfo(application_name="rig psycopg2"))
    try:
        cur = conn2.cursor()
        cur.execute("SELECT current_setting('application_name')")
        assert cur.fetchone() == ("rig psycopg2",)
    finally:
        conn2.close()
    by_url = connect(pg.url(application_name="rig-url"))
    assert by_url.execute("SELECT inet_server_port()").fetchone() == (pg.port,)
    by_socket = connect(f"host={pg.socket_dir} port={pg.port} user=postgres dbname=postgres")
    assert by_socket.execute("SELECT inet_server_addr()").fetchone() == (None,)


def test_conninfo_quotes_values(pg: PostgresServer) -> None:
    assert pg.conninfo("db", application_name="it's x") == (
        f"host=127.0.0.1 port={pg.port} user=postgres dbname=db application_name='it\\'s x'"
    )
    assert pg.url("db", sslmode="disable") == (
        f"postgresql://postgres@127.0.0.1:{pg.port}/db?sslmode=disable"
    )


def test_execute_returns_rows(pg: PostgresServer) -> None:
    assert pg.execute("SELECT %s::int + 1, 'x'", [41]) == [(42, "x")]
    assert pg.execute("SET work_mem = '8MB'") == []


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_restart_ends_existing_connection_new_one_works(
    pg: PostgresServer, connect: Any, mode: str
) -> None:
    port, pid = pg.port, pg.pid
    old = connect(pg.conninfo())
    pg.restart(mode)  # type: ignore[arg-type]
    assert pg.running and pg.pid != pid and pg.port == port
    with pytest.raises(psycopg.OperationalError):
        old.execute("SELECT 1")
    assert connect(pg.conninfo()).execute("SELECT 1").fetchone() == (1,)


def test_stop_then_start(pg: PostgresServer, connect: Any) -> None:
    old = connect(pg.conninfo())
    pg.stop()
    assert not pg.running and pg.pid is None
    pg.stop()  # stopping a stopped server does nothing
    with pytest.raises(psycopg.OperationalError):
        old.execute("SELECT 1")
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(pg.conninfo(connect_timeout=2))
    pg.start()
    assert connect(pg.conninfo()).execute("SELECT 1").fetchone() == (1,)


def test_kill_then_start_recovers(pg: PostgresServer, connect: Any) -> None:
    # The rig runs with synchronous_commit=off: only a synchronous commit survives a crash.
    old = connect(pg.conninfo(options="-c synchronous_commit=on"))
    old.execute("CREATE TABLE IF NOT EXISTS rig_kill (n int)")
    old.execute("INSERT INTO rig_kill VALUES (1)")
    pid = pg.pid
    assert pid is not None
    backends = _teardown.children_of(pid)
    pg.kill()
    assert not pg.running
    assert not any(_teardown.pid_alive(p) for p in [pid, *backends])
    with pytest.raises(psycopg.OperationalError):
        old.execute("SELECT 1")
    pg.start()  # crash recovery
    assert pg.execute("SELECT count(*) FROM rig_kill") == [(1,)]
    pg.execute("DROP TABLE rig_kill")


def test_stopped_by_a_test(pg: PostgresServer) -> None:
    pg.set_config(work_mem="7MB")
    pg.stop("immediate")


def test_pg_fixture_restarted_and_reset_after_previous_test(pg: PostgresServer) -> None:
    # Runs after test_stopped_by_a_test (file order): the fixture undid what it left.
    assert pg.running
    assert not pg.config_changed
    assert pg.execute("SHOW work_mem") == [("4MB",)]


def test_idle_session_timeout_closes_idle_connection(pg: PostgresServer, connect: Any) -> None:
    pg.set_config(idle_session_timeout="200ms")
    assert pg.config_changed
    conn = connect(pg.conninfo(application_name="rig-idle"))
    assert conn.execute("SHOW idle_session_timeout").fetchone() == ("200ms",)
    wait_for(lambda: pg.count_connections("rig-idle") == 0)
    with pytest.raises(psycopg.OperationalError):
        conn.execute("SELECT 1")
    pg.reset_config()
    assert not pg.config_changed
    assert pg.execute("SHOW idle_session_timeout") == [("0",)]


def test_set_config_is_in_force_on_return(pg: PostgresServer) -> None:
    # The postmaster reloads asynchronously; set_config/reset_config wait for it.
    for value in ("1s", "2s", "3s"):
        pg.set_config(idle_session_timeout=value)
        assert pg.execute("SHOW idle_session_timeout") == [(value,)]
    pg.reset_config()
    assert pg.execute("SHOW idle_session_timeout") == [("0",)]


def test_max_connections_needs_restart(pg: PostgresServer, connect: Any) -> None:
    with pytest.raises(ValueError, match="restart=True"):
        pg.set_config(max_connections=5)
    pg.set_config(restart=True, max_connections=5)
    assert pg.execute("SHOW max_connections") == [("5",)]
    conns = [connect(pg.conninfo(application_name="rig-max")) for _ in range(5)]
    with pytest.raises(psycopg.OperationalError, match="too many clients"):
        connect(pg.conninfo(application_name="rig-max"))
    for conn in conns:
        conn.close()
    pg.reset_config()  # restarts: max_connections is a restart-only setting
    assert pg.execute("SHOW max_connections") == [("100",)]


def test_terminate_by_application_name(pg: PostgresServer, connect: Any) -> None:
    victims = [connect(pg.conninfo(application_name=f"rig-victim-{i}")) for i in range(2)]
    bystander = connect(pg.conninfo(application_name="rig-bystander"))
    assert pg.terminate(application_name="rig-nobody") == 0
    assert pg.terminate(like="rig-victim-%") == 2
    for conn in victims:
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    assert bystander.execute("SELECT 1").fetchone() == (1,)
    assert pg.terminate(application_name="rig-bystander") == 1
    assert pg.count_connections(like="rig-%") == 0


def test_connections_by_state(pg: PostgresServer, connect: Any) -> None:
    connect(pg.conninfo(application_name="rig-state-idle"))
    in_tx = connect(pg.conninfo(application_name="rig-state-tx"))
    in_tx.execute("BEGIN")
    in_tx.execute("SELECT 1")
    busy = connect(pg.conninfo(application_name="rig-state-busy"))
    worker = threading.Thread(target=_run_quietly, args=(busy, "SELECT pg_sleep(30)"))
    worker.start()
    try:
        wait_for(lambda: pg.connections(like="rig-state-%").get("active") == 1)
        assert pg.connections(like="rig-state-%") == {
            "active": 1,
            "idle": 1,
            "idle in transaction": 1,
        }
        assert pg.connections("rig-state-tx") == {"idle in transaction": 1}
        assert pg.count_connections(like="rig-state-%") == 3
    finally:
        busy.cancel_safe()
        worker.join(10)


def _run_quietly(conn: psycopg.Connection[Any], sql: str) -> None:
    with contextlib.suppress(psycopg.Error):  # cancelled by the test
        conn.execute(sql)


def test_create_and_drop_database(pg: PostgresServer, connect: Any) -> None:
    pg.create_database("rig-db")
    conn = connect(pg.conninfo("rig-db"))
    assert conn.execute("SELECT current_database()").fetchone() == ("rig-db",)
    pg.drop_database("rig-db")  # WITH (FORCE): the open connection does not block it
    assert pg.execute("SELECT count(*) FROM pg_database WHERE datname = 'rig-db'") == [(0,)]
    pg.drop_database("rig-db")


def test_find_pg_bin_explains_a_bad_env(
    pg_bin: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    assert find_pg_bin() == pg_bin and (pg_bin / "postgres").exists()
    monkeypatch.setenv("CONNGUARD_PG_BIN", str(tmp_path))
    with pytest.raises(
        ServerUnavailable, match=r"(?s)initdb, pg_ctl, postgres;.*apt-get install postgresql"
    ):
        find_pg_bin()


def test_cleanup_removes_cluster(pg_server: PostgresServer) -> None:
    with PostgresServer(settings={"max_connections": 10}) as other:
        assert other.port != pg_server.port
        assert other.execute("SHOW max_connections") == [("10",)]
        pid, base = other.pid, other.base_dir
        assert pid is not None
    assert not _teardown.pid_alive(pid)
    assert not base.exists()
    other.cleanup()  # idempotent


def test_crashed_test_process_leaves_no_postgres(pg_bin: Path, tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from connguard.testing.server import PostgresServer
        server = PostgresServer().start()
        print(server.pid, server.base_dir, flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        pid_text, base = child.stdout.readline().split()
        pid = int(pid_text)
        assert _teardown.pid_alive(pid)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    wait_for(lambda: not _teardown.pid_alive(pid) and not Path(base).exists())


# --------------------------------------------------------------------------- proxy


def test_proxy_passthrough(pg: PostgresServer, fault_proxy: FaultProxy, connect: Any) -> None:
    conn = connect(pg.conninfo(port=fault_proxy.port, application_name="rig-proxy"))
    assert conn.execute("SELECT inet_server_port()").fetchone() == (pg.port,)
    assert fault_proxy.connections == 1
    assert pg.count_connections("rig-proxy") == 1
    conn.close()
    wait_for(lambda: fault_proxy.connections == 0)


def test_proxy_stall_blocks_queries_and_connects(
    pg: PostgresServer, fault_proxy: FaultProxy, connect: Any
) -> None:
    conn = connect(pg.conninfo(port=fault_proxy.port))
    fault_proxy.stall()
    with pytest.raises(psycopg.OperationalError, match="timeout"):
        psycopg.connect(pg.conninfo(port=fault_proxy.port, connect_timeout=1))
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(conn.execute("SELECT 7").fetchone()))
    worker.start()
    worker.join(0.5)  # the client-side timeout of this test
    assert worker.is_alive() and result == []
    fault_proxy.passthrough()  # what was held back flows again
    worker.join(10)
    assert result == [(7,)]


def test_proxy_cut_resets_open_connections(
    pg: PostgresServer, fault_proxy: FaultProxy, connect: Any
) -> None:
    conn3 = connect(pg.conninfo(port=fault_proxy.port, application_name="rig-cut"))
    conn2 = psycopg2.connect(pg.conninfo(port=fault_proxy.port, application_name="rig-cut"))
    try:
        wait_for(lambda: fault_proxy.connections == 2)
        assert fault_proxy.cut() == 2
        assert fault_proxy.connections == 0 and fault_proxy.mode == "passthrough"
        with pytest.raises(psycopg.OperationalError):
            conn3.execute("SELECT 1")
        with pytest.raises(DISCONNECTED):
            conn2.cursor().execute("SELECT 1")
    finally:
        conn2.close()
    wait_for(lambda: pg.count_connections("rig-cut") == 0)  # the server saw the reset too
    fresh = connect(pg.conninfo(port=fault_proxy.port))
    assert fresh.execute("SELECT 1").fetchone() == (1,)


def test_proxy_latency_delays_round_trips(
    pg: PostgresServer, fault_proxy: FaultProxy, connect: Any
) -> None:
    conn = connect(pg.conninfo(port=fault_proxy.port))
    fault_proxy.latency(0.1)
    assert fault_proxy.mode == "latency" and fault_proxy.delay == 0.1
    started = time.monotonic()
    assert conn.execute("SELECT 1").fetchone() == (1,)
    assert time.monotonic() - started >= 0.2  # one delayed chunk each way
    fault_proxy.latency(0)
    assert fault_proxy.mode == "passthrough"
    with pytest.raises(ValueError):
        fault_proxy.latency(-1)


def test_proxy_close_is_bounded_and_leaves_no_thread(pg: PostgresServer, connect: Any) -> None:
    proxy = FaultProxy(pg.host, pg.port)
    conns = [connect(pg.conninfo(port=proxy.port)) for _ in range(3)]
    wait_for(lambda: proxy.connections == 3)
    proxy.stall()
    proxy.close()
    proxy.close()
    assert not [t for t in threading.enumerate() if t.name.startswith(f"FaultProxy:{proxy.port}")]
    for conn in conns:
        with pytest.raises(psycopg.OperationalError):
            conn.execute("SELECT 1")
    with pytest.raises(RuntimeError, match="closed"):
        proxy.stall()
