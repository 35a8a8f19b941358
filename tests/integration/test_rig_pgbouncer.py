"""The rig's PgBouncer (``connguard.testing.pgbouncer``): configuration, admin console,
restart on the same port, and no pgbouncer left behind — not even after a SIGKILLed test
process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from connguard.testing import _teardown
from connguard.testing import pgbouncer as pgbouncer_module
from connguard.testing.pgbouncer import (
    PgBouncer,
    PgBouncerError,
    PgBouncerUnavailable,
    find_pgbouncer,
)
from connguard.testing.server import PostgresServer, _connect


def query(conninfo: str, sql: str) -> list[tuple[Any, ...]]:
    conn = _connect(conninfo)
    try:
        cur = conn.cursor()
        cur.execute(sql)
        return list(cur.fetchall())
    finally:
        conn.close()


def config(bouncer: PgBouncer) -> dict[str, str]:
    return {row["key"]: str(row["value"]) for row in bouncer.show("CONFIG")}


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    return _teardown.wait_gone([pid], timeout)


def test_fixture_is_transaction_mode_in_front_of_the_server(
    pg: PostgresServer, pgbouncer: PgBouncer
) -> None:
    assert pgbouncer.running and pgbouncer.host == "127.0.0.1"
    assert (
        pgbouncer.conninfo()
        == f"host=127.0.0.1 port={pgbouncer.port} user=postgres dbname=postgres"
    )
    rows = query(
        pgbouncer.conninfo(application_name="rig-bouncer"), "SELECT current_setting('port')"
    )
    assert rows == [(str(pg.port),)]  # the server behind it answered
    settings = config(pgbouncer)
    assert settings["pool_mode"] == "transaction"
    assert (settings["default_pool_size"], settings["max_client_conn"]) == ("20", "1000")
    assert settings["listen_addr"] == "127.0.0.1" and settings["unix_socket_dir"] == ""
    assert settings["ignore_startup_parameters"] == "extra_float_digits,options"
    pools = {row["database"]: row for row in pgbouncer.show("POOLS")}
    assert pools["postgres"]["pool_mode"] == "transaction"
    assert pgbouncer.log_path.parent == pgbouncer.workdir
    if os.geteuid() == 0:  # it refuses to run as root: the rig's postgres user runs it
        assert Path(f"/proc/{pgbouncer.pid}").stat().st_uid != 0


def test_psycopg2_and_extra_float_digits_pass(pgbouncer: PgBouncer) -> None:
    """psycopg2 and a client sending extra_float_digits connect."""
    psycopg2 = pytest.importorskip("psycopg2")
    conn = psycopg2.connect(pgbouncer.conninfo(options="-c extra_float_digits=3"))
    try:
        cur = conn.cursor()
        cur.execute("SELECT 41 + 1")
        assert cur.fetchone() == (42,)
    finally:
        conn.close()


def test_settings_extra_and_reload(pg: PostgresServer, pgbouncer_bin: str) -> None:
    with PgBouncer(
        pg, pool_mode="session", default_pool_size=3, max_client_conn=7,
        extra={"client_idle_timeout": "30"},
    ) as bouncer:  # fmt: skip
        settings = config(bouncer)
        assert (settings["pool_mode"], settings["default_pool_size"]) == ("session", "3")
        assert (settings["max_client_conn"], settings["client_idle_timeout"]) == ("7", "30")
        bouncer.reload(client_idle_timeout=2)
        assert config(bouncer)["client_idle_timeout"] == "2"


def test_bad_arguments_are_refused(pg_server: PostgresServer, pgbouncer_bin: str) -> None:
    with pytest.raises(ValueError, match="pool_mode must be"):
        PgBouncer(pg_server, pool_mode="transactional")
    with pytest.raises(ValueError, match="listen_port is managed by PgBouncer"):
        PgBouncer(pg_server, extra={"listen_port": "1"})
    bouncer = PgBouncer(pg_server)
    try:
        with pytest.raises(ValueError, match="not an admin console command"):
            bouncer.show("POOLS; SELECT 1")
    finally:
        bouncer.cleanup()


def test_restart_on_the_same_port_and_cleanup(pg: PostgresServer, pgbouncer_bin: str) -> None:
    bouncer = PgBouncer(pg).start()
    port, pid, workdir = bouncer.port, bouncer.pid, bouncer.workdir
    assert pid is not None and workdir.is_dir()
    conn = _connect(bouncer.conninfo())
    try:
        bouncer.stop()
        assert wait_gone(pid) and not workdir.exists() and bouncer.pid is None
        cur = conn.cursor()
        with pytest.raises(Exception):  # noqa: B017 - psycopg's or psycopg2's error
            cur.execute("SELECT 1")
    finally:
        conn.close()
    bouncer.start()
    assert bouncer.port == port and bouncer.pid not in (None, pid)
    assert query(bouncer.conninfo(), "SELECT 1") == [(1,)]
    second = bouncer.pid
    assert second is not None
    bouncer.kill()
    assert wait_gone(second)
    with bouncer:  # start() again, cleanup() on exit
        assert query(bouncer.conninfo(), "SELECT 2") == [(2,)]
        pid = bouncer.pid
    assert pid is not None and wait_gone(pid) and not workdir.exists()
    with pytest.raises(PgBouncerError, match="was cleaned up"):
        bouncer.start()


def test_failed_start_raises_with_the_log(pg_server: PostgresServer, pgbouncer_bin: str) -> None:
    bouncer = PgBouncer(pg_server, extra={"no_such_setting": "1"})
    try:
        with pytest.raises(PgBouncerError) as info:
            bouncer.start()
        assert "pgbouncer exited with" in str(info.value)
        assert "no_such_setting" in str(info.value)
        assert bouncer.pid is None
    finally:
        bouncer.cleanup()
    assert not bouncer.workdir.exists()


def test_missing_binary_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr(pgbouncer_module, "FALLBACK_BINARY", "/nonexistent/pgbouncer")
    with pytest.raises(PgBouncerUnavailable, match=r"apt-get install pgbouncer"):
        find_pgbouncer()


def test_nothing_survives_a_killed_test_process(
    pg: PostgresServer, pgbouncer_bin: str, tmp_path: Path
) -> None:
    """The watchdog ends pgbouncer and removes its directory when its owner is SIGKILLed."""
    script = tmp_path / "owner.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import time, types
            from connguard.testing.pgbouncer import PgBouncer
            server = types.SimpleNamespace(host="127.0.0.1", port={pg.port}, user="postgres")
            bouncer = PgBouncer(server).start()
            print(bouncer.pid, bouncer.workdir, flush=True)
            time.sleep(60)
            """
        )
    )
    owner = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        assert owner.stdout is not None
        line = owner.stdout.readline().split()
        assert len(line) == 2, line
        pid, workdir = int(line[0]), Path(line[1])
        assert _teardown.pid_alive(pid) and workdir.is_dir()
    finally:
        os.killpg(owner.pid, signal.SIGKILL)  # its own session: the owner alone
        owner.wait(10)
    assert wait_gone(pid)
    deadline = time.monotonic() + 10
    while workdir.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not workdir.exists()


def _run_without_pgbouncer(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, ci: str, *args: str
) -> pytest.RunResult:
    """This module in a pytest subprocess on a machine without pgbouncer: neither on PATH nor
    at the fallback path (a conftest hides it)."""
    pytester.makeconftest(
        """
        import connguard.testing.pgbouncer as module
        module.FALLBACK_BINARY = "/nonexistent/pgbouncer"
        pytest_plugins = ["connguard.testing.pytest_plugin"]
        """
    )
    pytester.makepyfile(test_copy=Path(__file__).read_text())
    hidden = [d for d in os.environ["PATH"].split(os.pathsep) if not Path(d, "pgbouncer").exists()]
    monkeypatch.setenv("PATH", os.pathsep.join(hidden))
    monkeypatch.setenv("CI", ci)
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-rs", "-k", "not without_pgbouncer", *args, timeout=240
    )


def test_without_pgbouncer_the_tests_skip_and_say_how_to_install(
    pg_bin: Path, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside CI, every test that needs pgbouncer skips (none errors) and says how to get it."""
    result = _run_without_pgbouncer(pytester, monkeypatch, "")
    outcomes = result.parseoutcomes()
    assert outcomes.get("skipped", 0) >= 7, result.stdout.str()
    assert "failed" not in outcomes and "errors" not in outcomes, result.stdout.str()
    result.stdout.fnmatch_lines(["*PgBouncer unavailable*apt-get install pgbouncer*"])
    result.stdout.fnmatch_lines(["*scripts/install-system*"])


def test_without_pgbouncer_ci_fails(
    pg_bin: Path, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under CI=true the same tests fail instead, so that CI cannot pass by skipping."""
    result = _run_without_pgbouncer(pytester, monkeypatch, "true", "-k", "bad_arguments")
    assert result.ret != 0
    result.stdout.fnmatch_lines(["*CI=true and PgBouncer is unavailable*"])
