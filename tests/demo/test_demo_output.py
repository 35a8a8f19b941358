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


def test_plot_without_matplotlib_fails_before_the_demo_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args, **kwargs):
        return None if name.split(".")[0] == "matplotlib" else real_find_spec(name, *args, **kwargs)

    def started(*args, **kwargs):
        raise AssertionError("the demo started although --plot cannot work")

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(cli, "_run", started)
    assert cli.run(parse("--plot", str(tmp_path / "x.png"), "--no-color")) == 2
    out, err = capsys.readouterr()
    assert (out, err) == (
        "",
        "connguard demo: --plot needs matplotlib: pip install 'django-connguard[plot]' "
        "(or pip install matplotlib)\n",
    )


def test_plot_into_a_missing_directory_fails_before_the_demo_starts(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    if real_find_spec("matplotlib") is None:  # the directory is checked once matplotlib is there
        monkeypatch.setattr(
            importlib.util, "find_spec",
            lambda name, *a, **k: object() if name == "matplotlib" else real_find_spec(name, *a, **k),
        )  # fmt: skip
    monkeypatch.setattr(cli, "_run", lambda *a, **k: pytest.fail("the demo started"))
    target = tmp_path / "nowhere" / "x.png"
    assert cli.run(parse("--plot", str(target), "--no-color")) == 2
    assert capsys.readouterr().err == (
        f"connguard demo: --plot {target}: the directory {target.parent} does not exist\n"
    )
