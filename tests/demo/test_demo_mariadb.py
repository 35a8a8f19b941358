"""``connguard demo --database mariadb`` and the harness on the rig's MariaDB: stock Django's
MySQL backend failing where it does, on a real server; connguard's side once
``connguard.backends.mysql`` is installed (skipped with that reason until then)."""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from connguard.demo import cli
from connguard.demo.registry import load as load_scenarios
from connguard.demo.results import Result
from connguard.demo.runner import run_scenario
from connguard.demo.servers import MARIADB

STOCK: dict[str, Any] = {"ENGINE": "django.db.backends.mysql"}
GONE = ("server has gone away", "lost connection to server")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def explain(result: Result) -> str:
    return f"{result.summary()}\n{result.details.get('logs_tail', '')[-1500:]}"


def test_every_mariadb_scenario_exists_in_the_harness() -> None:
    assert set(MARIADB.scenarios) <= set(load_scenarios())
    assert MARIADB.engines == (
        ("stock", "django.db.backends.mysql"), ("connguard", "connguard.backends.mysql"),
    )  # fmt: skip


def test_a_scenario_mariadb_lacks_is_refused_before_anything_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "_run", lambda *a, **k: pytest.fail("the demo started"))
    args = parse("--database", "mariadb", "--scenarios", "restart,silent_drop", "--no-color")
    assert cli.run(args) == 2
    assert capsys.readouterr().err == (
        "connguard demo: not on MariaDB: silent_drop; choose from preload_ready, fork_import, "
        "restart, idle_timeout, terminate, flood_gthread, longtask, kill_in_tx, outage\n"
    )


def test_dsn_names_a_postgresql_server_only(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli, "_run", lambda *a, **k: pytest.fail("the demo started"))
    assert cli.run(parse("--database", "mariadb", "--dsn", "host=x", "--no-color")) == 2
    assert capsys.readouterr().err == (
        "connguard demo: --dsn names a PostgreSQL server; --database mariadb starts its own\n"
    )


@pytest.mark.parametrize("name", ["restart", "idle_timeout"])
def test_stock_django_loses_requests_on_mariadb(mariadb: Any, name: str) -> None:
    """Persistent connections ended by a restart, or by wait_timeout: the next request on
    each fails with 2006/2013."""
    r = run_scenario(name, STOCK, mariadb)
    assert r.engine == "django.db.backends.mysql"
    assert r.errors > 0 and r.has_error(*GONE), explain(r)
    assert r.wrong == 0 and r.lost == 0, explain(r)
    assert not mariadb.globals_changed  # wait_timeout put back after the scenario


def test_stock_django_floods_a_low_max_connections_on_mariadb(mariadb: Any) -> None:
    r = run_scenario("flood_gthread", STOCK, mariadb, quick=True)
    assert r.has_too_many_connections() and r.errors > 0, explain(r)
    assert r.peak_server_connections <= 20, explain(r)
    assert int(mariadb.get_global("max_connections")) == 100


@pytest.mark.parametrize("name", ["restart", "idle_timeout", "flood_gthread"])
def test_connguard_cures_them_on_mariadb(mariadb: Any, name: str) -> None:
    missing = MARIADB.connguard_missing()
    if missing:
        pytest.skip(missing)
    settings = {"ENGINE": MARIADB.engines[1][1], **MARIADB.connguard_settings.get(name, {})}
    r = run_scenario(name, settings, mariadb, quick=True)
    assert r.failures == 0, explain(r)


def test_demo_command_on_mariadb(
    mariadb_server: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The whole command on a MariaDB of its own (mariadb_server only proves one can run)."""
    code = cli.run(parse("--database", "mariadb", "--scenarios", "restart", "--quick",
                         "--no-color"))
    out = capsys.readouterr().out
    assert "MariaDB restart" in out and "\n!! stock " in out, out
    missing = MARIADB.connguard_missing()
    if missing:
        assert code == 2, out
        assert "skipped: connguard.backends.mysql is not installed" in out
        assert "connguard's side not run: connguard.backends.mysql is not installed" in out
    else:
        assert code == 0, out
