"""``connguard demo``'s arguments and table, exactly (no server, no processes)."""

from __future__ import annotations

import argparse

import pytest

from connguard.demo import cli


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def report() -> cli.Report:
    rep = cli.Report()
    rep.add(cli.Row("preload_ready", "stock", 400, 25, 13, 0, 4))
    rep.add(cli.Row("preload_ready", "connguard", 400, 0, 0, 0, 5))
    rep.add(cli.Row("flood_gthread", "stock", 100, 81, 0, 0, 19))
    rep.add(cli.Row("flood_gthread", "connguard", 0, problem="gunicorn-gthread exited (3)"))
    return rep


def test_plain_table() -> None:
    assert cli.plain_table(report()) == "\n".join([
        "                                        ------- stock Django -------   -------- connguard ---------",
        "scenario                                 req  err  wrong  lost  peak    req  err  wrong  lost  peak",
        "gunicorn --preload, query in ready()     400   25     13     0     4    400    0      0     0     5",
        "100 slow requests, max_connections=20    100   81      0     0    19    n/a  n/a    n/a   n/a   n/a",
        "req = requests (or operations), err = errors, wrong = another request's result, lost = acknowledged writes",
        "not in the database, peak = most server connections seen at once",
    ])  # fmt: skip


def test_connguard_ok_needs_every_connguard_row_clean() -> None:
    rep = report()
    assert not rep.connguard_ok()  # one connguard scenario could not run
    rep.add(cli.Row("flood_gthread", "connguard", 100, 0, 0, 0, 16))
    assert rep.connguard_ok()
    rep.add(cli.Row("preload_ready", "connguard", 400, 0, 1, 0, 5))
    assert not rep.connguard_ok()
    assert not cli.Report().connguard_ok()  # nothing ran


def test_scenarios_argument() -> None:
    assert parse("--scenarios", "restart, longtask").scenarios == ["restart", "longtask"]
    assert parse().scenarios is None
    with pytest.raises(SystemExit):
        parse("--scenarios", "restart,nope")


def test_every_demo_scenario_exists_in_the_harness() -> None:
    from connguard.demo import harness

    assert set(cli.SCENARIOS) <= set(harness.FAILURE_SCENARIOS)
    assert set(cli.NEEDS_OWN_SERVER) <= set(harness.SCENARIOS)


def test_error_sample_drops_libpq_boilerplate() -> None:
    key = (
        'OperationalError: connection failed: connection to server at "N.N", port N '
        "failed: FATAL: sorry, too many clients already"
    )
    assert cli._sample({key: 81, "other": 1}) == (
        "OperationalError: FATAL: sorry, too many clients already"
    )


def test_plot_without_matplotlib_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name: str, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert cli.plot(report(), str(tmp_path / "x.png")) == (
        "--plot needs matplotlib: pip install 'django-connguard[plot]' (or pip install matplotlib)"
    )


def test_silent_drop_is_skipped_with_the_reason_where_namespaces_are_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from connguard.demo import harness
    from connguard.testing import netns

    assert "silent_drop" in cli.SCENARIOS
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    assert harness.unavailable_here("silent_drop") == "network namespaces need root"
    assert harness.unavailable_here("restart") is None
