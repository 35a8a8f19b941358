"""Smoke test of bench/django_macro.py: a tiny run on two configurations produces the table
and the JSON. The benchmark itself is not a test; this only checks that it runs."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from connguard.testing.pytest_plugin import SYSTEM_INSTALL_HINT, skip_or_fail
from connguard.testing.server import PostgresServer

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "django_macro.py"

pytestmark = [pytest.mark.django, pytest.mark.timeout(90)]


@pytest.fixture(autouse=True)
def _needs_tools() -> None:
    if shutil.which("wrk") is None:
        skip_or_fail(
            "wrk", f"not on PATH; install it with: apt-get install wrk; {SYSTEM_INSTALL_HINT}"
        )
    for module in ("django", "gunicorn", "psycopg"):
        pytest.importorskip(module)


def test_tiny_run_prints_the_table_and_writes_json(
    pg_server: PostgresServer, tmp_path: Path
) -> None:
    out = tmp_path / "macro.json"
    argv = [
        sys.executable, str(SCRIPT), "--dsn", pg_server.conninfo(),
        "--configs", "connguard,max_age_0", "--workers", "gthread", "--views", "select",
        "--duration", "1", "--warmup", "0.2", "--rounds", "1", "--json", str(out),
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=80)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "| **connguard** |" in proc.stdout
    assert "| CONN_MAX_AGE=0 |" in proc.stdout
    assert ">= 3x CONN_MAX_AGE=0" in proc.stdout  # the target line, met or missed

    data = json.loads(out.read_text())
    assert data["failed"] == []
    cells = {(row["workers"], row["view"], row["config"]) for row in data["summary"]}
    assert cells == {("gthread", "select", "connguard"), ("gthread", "select", "max_age_0")}
    for run in data["runs"]:
        assert run["requests"] > 0
        assert run["rps"] > 0
        assert run["wrong"] == 0
        assert run["verified"] > 0
        assert run["peak"] >= 1
    assert [t["peer"] for t in data["targets"]] == ["max_age_0"]
    assert data["machine"]["postgresql"]


# -- MariaDB: the same script with --database mariadb (it starts its own throwaway MariaDB) --


def _needs_mariadb() -> None:
    pytest.importorskip("MySQLdb")
    from connguard.testing.mariadb import MariaDBUnavailable, find_mariadb_bin

    try:
        find_mariadb_bin()
    except MariaDBUnavailable as exc:
        skip_or_fail("MariaDB", exc)


def test_mariadb_tiny_run_prints_the_table_and_writes_json(tmp_path: Path) -> None:
    _needs_mariadb()
    out = tmp_path / "macro-mariadb.json"
    argv = [
        sys.executable, str(SCRIPT), "--database", "mariadb",
        "--configs", "connguard,max_age_0", "--workers", "gthread", "--views", "select,txn",
        "--duration", "1", "--warmup", "0.2", "--rounds", "1", "--json", str(out),
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=80)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "### MariaDB, gthread" in proc.stdout
    assert "| **connguard** |" in proc.stdout
    assert ">= 3x CONN_MAX_AGE=0" in proc.stdout
    assert "summary, MariaDB: connguard vs CONN_MAX_AGE=0" in proc.stdout

    data = json.loads(out.read_text())
    assert data["database"] == "mariadb"
    assert data["failed"] == []
    assert data["machine"]["mariadb"]
    cells = {(row["workers"], row["view"], row["config"]) for row in data["summary"]}
    assert cells == {
        ("gthread", view, config)
        for view in ("select", "txn")
        for config in ("connguard", "max_age_0")
    }
    for run in data["runs"]:
        assert run["requests"] > 0
        assert run["errors"] == 0
        assert run["wrong"] == 0
        assert run["verified"] > 0
        assert run["peak"] >= 1
    assert [t["peer"] for t in data["targets"]] == ["max_age_0", "max_age_0"]


def test_mariadb_cycle_mode_times_each_phase() -> None:
    _needs_mariadb()
    argv = [
        sys.executable, str(SCRIPT), "--database", "mariadb", "--cycle", "20",
        "--configs", "connguard,dj_db_conn_pool", "--views", "txn", "--rounds", "1",
    ]  # fmt: skip
    if importlib.util.find_spec("dj_db_conn_pool") is None:
        argv[argv.index("connguard,dj_db_conn_pool")] = "connguard"
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=80)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "FAILED" not in proc.stdout, proc.stdout[-2000:]
    assert "### MariaDB, one thread, no HTTP - txn" in proc.stdout
    assert "| connguard | " in proc.stdout


def test_mariadb_refuses_what_mariadb_does_not_have() -> None:
    """Configurations of PostgreSQL only, and --dsn, are refused before any server starts."""
    for extra in (["--configs", "connguard,django_pool"], ["--dsn", "host=127.0.0.1"]):
        argv = [sys.executable, str(SCRIPT), "--database", "mariadb", "--rounds", "1", *extra]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert proc.returncode != 0
        assert "MariaDB" in proc.stderr, proc.stderr[-2000:]
    assert "Django has no built-in pool for MySQL" in subprocess.run(
        [sys.executable, str(SCRIPT), "--database", "mariadb", "--configs", "django_pool"],
        capture_output=True, text=True, timeout=60,
    ).stderr  # fmt: skip
