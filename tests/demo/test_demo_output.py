"""``connguard demo``'s arguments and table, exactly (no server, no processes)."""

from __future__ import annotations

import argparse
import io
import re
from pathlib import Path

import pytest

from connguard.demo import cli, load, plot, table
from connguard.demo.report import SCENARIOS, Report, Row
from connguard.demo.report import sample as error_sample


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    return parser.parse_args(argv)


def report() -> Report:
    rep = Report()
    rep.add(Row("preload_ready", "stock", 400, 25, 13, 0, 4))
    rep.add(Row("preload_ready", "connguard", 400, 0, 0, 0, 5))
    rep.add(Row("flood_gthread", "stock", 100, 81, 0, 0, 19))
    rep.add(Row("flood_gthread", "connguard", 0, problem="gunicorn-gthread exited (3)"))
    return rep


def test_plain_table() -> None:
    assert table.plain_table(report()) == "\n".join([
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
    rep.add(Row("flood_gthread", "connguard", 100, 0, 0, 0, 16))
    assert rep.connguard_ok()
    rep.add(Row("preload_ready", "connguard", 400, 0, 1, 0, 5))
    assert not rep.connguard_ok()
    assert not Report().connguard_ok()  # nothing ran


def test_scenarios_argument() -> None:
    assert parse("--scenarios", "restart, longtask").scenarios == ["restart", "longtask"]
    assert parse().scenarios is None
    with pytest.raises(SystemExit):
        parse("--scenarios", "restart,nope")


def test_every_demo_scenario_exists_in_the_harness() -> None:
    from connguard.demo import registry
    from connguard.demo.scenarios import FAILURE_SCENARIOS

    assert set(SCENARIOS) <= set(FAILURE_SCENARIOS)
    assert set(cli.NEEDS_OWN_SERVER) <= set(registry.SCENARIOS)


def test_error_sample_drops_libpq_boilerplate() -> None:
    key = (
        'OperationalError: connection failed: connection to server at "N.N", port N '
        "failed: FATAL: sorry, too many clients already"
    )
    assert error_sample({key: 81, "other": 1}) == (
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
    assert plot.plot(report(), str(tmp_path / "x.png")) == (
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


# -- the terminal table and the piped output --------------------------------------------------

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_block() -> list[str]:
    """The table under README.md's "What the demo shows"."""
    text = README.read_text()
    section = text[text.index("## What the demo shows") :]
    start = section.index("```\n") + 4
    return section[start : section.index("\n```", start)].splitlines()


def readme_report() -> Report:
    """The report README.md's table shows, read back from it (whatever scenarios it lists)."""
    by_label = {label: name for name, label in SCENARIOS.items()}
    rep = Report()
    for line in readme_block()[2:]:
        match = re.match(r"^(.*?)\s+((?:\d+\s+){9}\d+)$", line)
        if match is None:
            continue
        numbers = [int(n) for n in match[2].split()]
        name = by_label[match[1]]
        rep.add(Row(name, "stock", *numbers[:5]))
        rep.add(Row(name, "connguard", *numbers[5:]))
    return rep


def test_the_readme_table_is_what_the_demo_prints() -> None:
    rep = readme_report()
    assert len(rep.names()) >= 7
    assert table.plain_table(rep).splitlines() == readme_block()


def text_of(lines: list[list[tuple[str, str]]]) -> list[str]:
    return ["".join(text for text, _ in line) for line in lines]


def test_a_wide_terminal_shows_the_readme_table() -> None:
    rep = readme_report()
    assert text_of(table.table_layout(rep, 120)) == table.plain_table(rep).splitlines()


EIGHTY = [
    "                               ----- stock Django ----   ------ connguard ------",
    "scenario                       req err wrong lost peak   req err wrong lost peak",
    "gunicorn --preload, query in   400   6     1    0    4   400   0     0    0    5",
    "  ready()",
    "import-time query, then        400  10     7    0    4   400   0     0    0    5",
    "  os.fork()",
    "PostgreSQL restart              40   2     0    0    2    40   0     0    0    2",
    "idle_session_timeout=1s         48   8     0    0    8    48   0     0    0    8",
    "pg_terminate_backend() every    48   8     0    0    8    48   0     0    0    8",
    "  backend",
    "100 slow requests,             100  81     0    0   19   100   0     0    0   16",
    "  max_connections=20",
    "long task idle past the          2   1     0    0    0     2   0     0    0    0",
    "  timeout",
    "req = requests (or operations), err = errors, wrong = another request's result,",
    "lost = acknowledged writes not in the database, peak = most server connections",
    "seen at once",
]  # fmt: skip


def eighty_report() -> Report:
    rep = Report()
    for name, stock, cg in (
        ("preload_ready", (400, 6, 1, 0, 4), (400, 0, 0, 0, 5)),
        ("fork_import", (400, 10, 7, 0, 4), (400, 0, 0, 0, 5)),
        ("restart", (40, 2, 0, 0, 2), (40, 0, 0, 0, 2)),
        ("idle_timeout", (48, 8, 0, 0, 8), (48, 0, 0, 0, 8)),
        ("terminate", (48, 8, 0, 0, 8), (48, 0, 0, 0, 8)),
        ("flood_gthread", (100, 81, 0, 0, 19), (100, 0, 0, 0, 16)),
        ("longtask", (2, 1, 0, 0, 0), (2, 0, 0, 0, 0)),
    ):
        rep.add(Row(name, "stock", *stock))
        rep.add(Row(name, "connguard", *cg))
    return rep


def test_an_80_column_terminal_gets_the_same_layout_with_whole_scenario_names() -> None:
    lines = text_of(table.table_layout(eighty_report(), 80))
    assert lines == EIGHTY
    assert max(len(line) for line in lines) <= 80


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def terminal(monkeypatch: pytest.MonkeyPatch, columns: int) -> tuple[Terminal, table.Out]:
    pytest.importorskip("rich")
    monkeypatch.setenv("COLUMNS", str(columns))
    monkeypatch.setenv("TERM", "xterm-256color")
    monkeypatch.delenv("NO_COLOR", raising=False)
    stream = Terminal()
    out = table.Out(stream, color=True)
    assert out.console is not None and out.console.width == columns
    return stream, out


def plain(stream: io.StringIO) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", stream.getvalue())


def test_rich_prints_the_readme_layout_in_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    stream, out = terminal(monkeypatch, 80)
    out.table(eighty_report())
    assert plain(stream) == "\n".join(EIGHTY) + "\n"
    assert "\x1b[" in stream.getvalue()  # with colours


def test_progress_on_an_80_column_terminal_wraps_names_never_cuts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stream, out = terminal(monkeypatch, 80)
    sample = (
        "OperationalError: consuming input failed: terminating connection due to administrator "
        "command SSL connection has been closed unexpectedly"
    )
    flood = SCENARIOS["flood_gthread"]
    out.progress(Row("flood_gthread", "stock", 100, 81, 0, 0, 19, 12.34, sample), flood)
    out.progress(
        Row("preload_ready", "connguard", 400, 0, 0, 0, 5, 3.0),
        "gunicorn --preload, query in ready()",
    )
    out.progress(Row("restart", "connguard", problem="HarnessError: gunicorn-gthread exited (3) before it served a request"), "PostgreSQL restart")  # fmt: skip
    assert plain(stream).splitlines() == [
        "!! 100 slow requests,             100 req 81 err  0 wrong  0 lost peak 19 12.3 s",
        "   max_connections=20",
        "   OperationalError: consuming input failed: terminating connection due to",
        "   administrator command SSL connection has been closed unexpectedly",
        "ok gunicorn --preload, query in   400 req  0 err  0 wrong  0 lost peak  5  3.0 s",
        "   ready()",
        "-- PostgreSQL restart: could not run: HarnessError: gunicorn-gthread exited (3)",
        "   before it served a request",
    ]  # fmt: skip


def test_piped_error_text_wraps_at_word_boundaries() -> None:
    stream = io.StringIO()
    out = table.Out(stream, color=False)
    sample = (
        "OperationalError: consuming input failed: terminating connection due to administrator "
        "command SSL connection has been closed unexpectedly"
    )
    flood = SCENARIOS["flood_gthread"]
    out.progress(Row("flood_gthread", "stock", 100, 81, 0, 0, 19, 12.34, sample), flood)
    problem = "HarnessError: gunicorn-gthread exited (3) before it served a request: " + "x " * 20
    out.progress(Row("restart", "connguard", problem=problem.strip()), "PostgreSQL restart")
    assert stream.getvalue().splitlines() == [
        "!! stock      100 slow requests, max_connections=20  100 req  81 err   0 wrong   0 lost  peak 19  12.3 s",
        "             OperationalError: consuming input failed: terminating connection due to administrator",
        "             command SSL connection has been closed unexpectedly",
        "  connguard  PostgreSQL restart                     could not run: HarnessError: gunicorn-gthread",
        "             exited (3) before it served a request: x x x x x x x x x x x x x x x x x x x x",
    ]  # fmt: skip


def test_error_sample_is_shortened_at_a_word_boundary() -> None:
    text = "OperationalError: " + " ".join(f"word{i}" for i in range(100))
    sample = error_sample({text: 1})
    assert len(sample) <= 300 and sample.endswith(" …")
    assert text.startswith(sample[: -len(" …")] + " ")


def test_harness_error_samples_are_cut_after_a_whole_word() -> None:
    text = (
        "OperationalError: consuming input failed: server closed the connection unexpectedly "
        "This probably means the server terminated abnormally before or while processing the "
        "request. (pid 4242)"
    )
    assert load.error_key(text) == (
        "OperationalError: consuming input failed: server closed the connection unexpectedly "
        "This probably means the server terminated abnormally before or while…"
    )
    assert load.error_key("short, port 5432") == "short, port N"


def test_silent_drop_is_skipped_with_the_reason_where_namespaces_are_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from connguard.demo.registry import unavailable_here
    from connguard.testing import netns

    assert "silent_drop" in SCENARIOS
    monkeypatch.setattr(netns.os, "geteuid", lambda: 1000)
    assert unavailable_here("silent_drop") == "network namespaces need root"
    assert unavailable_here("restart") is None
