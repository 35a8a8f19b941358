"""``connguard stats`` / ``top`` / ``manage.py connguard stats``: output compared exactly
(only the seconds a session has been in its state vary, and are masked)."""

from __future__ import annotations

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

SCRIPT = textwrap.dedent(
    """
    import os, sys
    from connguard import ConnectionPool, cli

    dsn = sys.argv[1]
    pool = ConnectionPool(dsn, name="cgtop", max_size=2, kwargs={"application_name": "cgtop-pool"})
    for _ in range(2):
        with pool.connection() as conn:
            conn.execute("SELECT 1")
    print(os.getpid(), flush=True)
    cli.main(["stats", "--dsn", dsn, "--like", "cgtop%"])
    print("----", flush=True)
    cli.main(["top", "--dsn", dsn, "--like", "cgtop%", "--iterations", "2", "--interval", "0.1"])
    pool.close()
    """
)


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


def test_stats_groups_sessions_by_application_and_state(pg: PostgresServer, sessions: None) -> None:
    proc = run([sys.executable, "-m", "connguard", "stats", "--dsn", pg.conninfo(),
                "--like", "cgstats-%"])  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert masked(proc.stdout) == (
        "Pools\n"
        "  none in this process (give --metrics-url to read a running application)\n"
        f"Sessions on 127.0.0.1:{pg.port} (database postgres, --dsn)\n"
        "  application  state                sessions  on lock  longest\n"
        "  cgstats-a    idle                        2        0  N s\n"
        "  cgstats-b    idle in transaction         1        0  N s\n"
    )


def test_stats_and_top_show_the_pools_of_the_process(pg: PostgresServer) -> None:
    proc = run([sys.executable, "-c", SCRIPT, pg.conninfo()])
    assert proc.returncode == 0, proc.stderr
    pid, rest = proc.stdout.split("\n", 1)
    stats, top = masked(rest).split("----\n")
    p = "pid".rjust(len(pid))
    sessions = (
        f"Sessions on 127.0.0.1:{pg.port} (database postgres, --dsn)\n"
        "  application  state  sessions  on lock  longest\n"
        "  cgtop-pool   idle          1        0  N s\n"
    )
    head = f"  pool   {p}  size  max  in use  idle  waiting  checkouts  timeouts  errors  lost  breaker"
    row = f"  cgtop  {pid}     1    2       0     1        0          2         0       0     0  closed"
    assert stats == f"Pools\n{head}\n{row}\n{sessions}"
    first = f"Pools\n{head}  checkouts/s\n{row}             -\n{sessions}"
    second = f"Pools\n{head}  checkouts/s\n{row}           0.0\n{sessions}"
    assert top == f"{first}\n{second}"


def test_manage_py_stats_reads_the_project_databases(pg: PostgresServer, sessions: None) -> None:
    proc = run(
        [sys.executable, "-m", "django", "connguard", "stats", "--like", "cgstats-b"],
        DJANGO_SETTINGS_MODULE="metricsproject.settings",
        PYTHONPATH=str(DJANGO_DIR),
        CGT_DB_PORT=str(pg.port),
        CGT_DB_HOST=pg.host,
    )
    assert proc.returncode == 0, proc.stderr
    assert masked(proc.stdout) == (
        "Pools\n"
        "  none in this process (give --metrics-url to read a running application)\n"
        f"Sessions on 127.0.0.1:{pg.port} (database postgres, default)\n"
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
    assert lines[2] == f"Sessions on 127.0.0.1:{port} (database postgres, --dsn)"
    assert lines[3].startswith("  unreachable: connection failed:")
