"""``connguard stats`` / ``top`` / ``manage.py connguard stats``: output compared exactly
(only the seconds a session has been in its state vary, and are masked)."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from connguard.testing.server import PostgresServer

DJANGO_DIR = Path(__file__).resolve().parents[1] / "django"

#: an application: a pool of its own, exported to Prometheus on a port of its own
APP = textwrap.dedent(
    """
    import sys
    import prometheus_client
    from connguard import ConnectionPool
    from connguard.contrib import prometheus

    dsn = sys.argv[1]
    pool = ConnectionPool(dsn, name="cgapp", max_size=2, kwargs={"application_name": "cgapp-pool"})
    for _ in range(2):
        with pool.connection() as conn:
            conn.execute("SELECT 1")
    registry = prometheus_client.CollectorRegistry()
    prometheus.register(registry)
    server, thread = prometheus_client.start_http_server(0, addr="127.0.0.1", registry=registry)
    print(server.server_port, flush=True)
    sys.stdin.read()  # until the test closes it
    server.shutdown()
    pool.close()
    """
)
#: the command, in a process that has a pool of its own too (never shown: not the app's)
CLI = textwrap.dedent(
    """
    import sys
    from connguard import ConnectionPool, cli

    dsn, url = sys.argv[1:]
    pool = ConnectionPool(dsn, name="cgcli", max_size=3, kwargs={"application_name": "cgcli"})
    with pool.connection() as conn:
        conn.execute("SELECT 1")
    common = ["--dsn", dsn, "--like", "cg%", "--metrics-url", url]
    print(cli.main(["stats", *common]), flush=True)
    print("----", flush=True)
    print(cli.main(["top", *common, "--iterations", "2", "--interval", "0.1"]), flush=True)
    pool.close()
    """
)


@contextlib.contextmanager
def started(argv: list[str], **env: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """A process that prints one line when ready and runs until its stdin closes."""
    proc = subprocess.Popen(
        argv, env={**os.environ, **env}, cwd=tempfile.gettempdir(), stdin=subprocess.PIPE,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = proc.stdout.readline().strip() if proc.stdout else ""
        assert line, proc.stderr.read() if proc.stderr else "no output"
        yield proc, line
    finally:
        if proc.stdin:
            proc.stdin.close()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def masked(text: str) -> str:
    return re.sub(r"\d+ s$", "N s", text, flags=re.MULTILINE)


def run(argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, env={**os.environ, **env}, cwd=tempfile.gettempdir(), capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip


@pytest.fixture
def sessions(pg: PostgresServer) -> Iterator[None]:
    """Two idle sessions named cgstats-a, one idle in a transaction named cgstats-b."""
    conns = [psycopg.connect(pg.conninfo(application_name="cgstats-a")) for _ in range(2)]
    busy = psycopg.connect(pg.conninfo(application_name="cgstats-b"))
    busy.execute("SELECT 1")  # psycopg opens a transaction: idle in transaction
    try:
        yield
    finally:
        for conn in [*conns, busy]:
            conn.close()


NO_POOLS = (
    "Pools: give --metrics-url URL (the application's Prometheus endpoint) to see its pools\n"
)


def test_stats_groups_sessions_by_application_and_state(pg: PostgresServer, sessions: None) -> None:
    proc = run([sys.executable, "-m", "connguard", "stats", "--dsn", pg.conninfo(),
                "--like", "cgstats-%"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert masked(proc.stdout) == (
        NO_POOLS
        + f"Sessions on 127.0.0.1:{pg.port} (database postgres, --dsn, application_name LIKE "
        "'cgstats-%')\n"
        "  application  state                sessions  on lock  longest\n"
        "  cgstats-a    idle                        2        0  N s\n"
        "  cgstats-b    idle in transaction         1        0  N s\n"
    )


def test_stats_and_top_show_the_application_not_their_own_process(pg: PostgresServer) -> None:
    with started([sys.executable, "-c", APP, pg.conninfo()]) as (_, port):
        url = f"http://127.0.0.1:{port}/metrics"
        proc = run([sys.executable, "-c", CLI, pg.conninfo(), url])
    assert proc.returncode == 0, proc.stderr
    stats, top = masked(proc.stdout).split("----\n")
    sessions = (
        f"Sessions on 127.0.0.1:{pg.port} (database postgres, --dsn, application_name LIKE "
        "'cg%')\n"
        "  application  state  sessions  on lock  longest\n"
        "  cgapp-pool   idle          1        0  N s\n"
        "  cgcli        idle          1        0  N s\n"
    )
    # the pool of the command's own process (cgcli) is not in the pools: only the app's
    head = (
        "  pool   pid  size  max  in use  idle  waiting  checkouts  timeouts  errors  lost  breaker"
    )
    row = (
        "  cgapp  all     1    2       0     1        0          2         0       0     0  closed"
    )
    assert stats == f"Pools\n{head}\n{row}\n{sessions}0\n"
    first = f"Pools\n{head}  checkouts/s\n{row}             -\n{sessions}"
    second = f"Pools\n{head}  checkouts/s\n{row}           0.0\n{sessions}"
    assert top == f"{first}\n{second}0\n"


@pytest.mark.parametrize("command", ["stats", "top"])
def test_with_nothing_to_show_they_say_what_to_give(command: str) -> None:
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    proc = subprocess.run(
        [sys.executable, "-m", "connguard", command, "--iterations", "1"] if command == "top"
        else [sys.executable, "-m", "connguard", command],
        env=env, cwd=tempfile.gettempdir(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == (
        f"connguard {command}: nothing to show: give --dsn (a server to read sessions from), "
        "or --settings (or DJANGO_SETTINGS_MODULE) for a Django project, and/or --metrics-url "
        "(a running application's Prometheus endpoint, for its pools)\n"
    )


DJANGO_APP = textwrap.dedent(
    """
    import os, sys
    import django

    django.setup()
    from django.db import connection

    connection.ensure_connection()
    print(os.getpid(), flush=True)
    sys.stdin.read()  # until the test closes it
    connection.close()
    """
)


def test_manage_py_stats_shows_the_project_sessions(pg: PostgresServer, sessions: None) -> None:
    """Without --like: only the project's own connections (application_name
    <app>:<alias>:<pid>), not the other sessions on the same database."""
    env = {
        "DJANGO_SETTINGS_MODULE": "metricsproject.settings", "PYTHONPATH": str(DJANGO_DIR),
        "CGT_DB_PORT": str(pg.port), "CGT_DB_HOST": pg.host,
    }  # fmt: skip
    with started([sys.executable, "-c", DJANGO_APP], **env) as (_, pid):
        proc = run([sys.executable, "-m", "django", "connguard", "stats"], **env)
    assert proc.returncode == 0, proc.stderr
    name = f"metricsproject:default:{pid}"
    assert masked(proc.stdout) == (
        NO_POOLS
        + f"Sessions on 127.0.0.1:{pg.port} (database postgres, default, application_name LIKE "
        "'metricsproject:default:%')\n"
        f"  {'application':<{len(name)}}  state  sessions  on lock  longest\n"
        f"  {name}  idle          1        0  N s\n"
    )


def test_manage_py_stats_like_picks_other_sessions(pg: PostgresServer, sessions: None) -> None:
    proc = run(
        [sys.executable, "-m", "django", "connguard", "stats", "--like", "cgstats-b"],
        DJANGO_SETTINGS_MODULE="metricsproject.settings",
        PYTHONPATH=str(DJANGO_DIR),
        CGT_DB_PORT=str(pg.port),
        CGT_DB_HOST=pg.host,
    )
    assert proc.returncode == 0, proc.stderr
    assert masked(proc.stdout) == (
        NO_POOLS
        + f"Sessions on 127.0.0.1:{pg.port} (database postgres, default, application_name LIKE "
        "'cgstats-b')\n"
        "  application  state                sessions  on lock  longest\n"
        "  cgstats-b    idle in transaction         1        0  N s\n"
    )


def test_stats_exits_2_when_the_server_is_unreachable(pg: PostgresServer) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = run([sys.executable, "-m", "connguard", "stats", "--dsn",
                f"host=127.0.0.1 port={port} user=postgres connect_timeout=2"])  # fmt: skip
    assert proc.returncode == 2
    lines = proc.stdout.splitlines()
    assert lines[1] == f"Sessions on 127.0.0.1:{port} (database postgres, --dsn)"
    assert lines[2].startswith("  unreachable: connection failed:")


def test_the_terminal_view_shows_no_pools_without_metrics_url() -> None:
    pytest.importorskip("rich")
    import io

    from rich.console import Console

    from connguard import top

    server = {
        "label": "default", "server": "db:5432", "database": "app", "like": "app:default:%",
        "sessions": [{"application": "app:default:42", "state": "idle", "sessions": 3,
                      "waiting": 0, "longest": 12.0}],
    }  # fmt: skip
    snap = {"pools": [], "servers": [server], "errors": [], "metrics_urls": []}
    console = Console(file=io.StringIO(), width=100, color_system=None)
    console.print(top._rich_view(snap, None))
    assert [line.rstrip() for line in console.file.getvalue().splitlines()] == [
        NO_POOLS.strip(),
        "Sessions on db:5432 (database app, default, application_name LIKE 'app:default:%')",
        "",
        "  application      state   sessions   on lock   longest",
        " ───────────────────────────────────────────────────────",
        "  app:default:42   idle           3         0      12 s",
        "",
    ]
