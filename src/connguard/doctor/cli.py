"""``connguard doctor`` and ``manage.py connguard doctor``: the options, and a run from
them (databases and process model read, each server inspected once, the rules applied, the
report rendered)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from typing import Any

from connguard.doctor.databases import (
    django_databases,
    django_kinds,
    dsn_database,
    setup_django,
)
from connguard.doctor.diagnose import diagnose
from connguard.doctor.findings import Finding
from connguard.doctor.model import Database, Processes, Report, ServerFacts, is_mysql
from connguard.doctor.processes import detect_processes
from connguard.doctor.render_json import report_dict
from connguard.doctor.render_text import render
from connguard.doctor.rules import demand, unreachable
from connguard.doctor.server import inspector_for


def examine(databases: list[Database], model: Processes, notes: list[str]) -> Report:
    """Inspect each distinct server once and diagnose."""
    inspected: dict[str, ServerFacts] = {}
    for db in databases:
        # the same target reached the same way (conv: mysqlclient's converters, not the way)
        key = db.conninfo + repr({k: v for k, v in db.connect_kwargs.items() if k != "conv"})
        if key not in inspected:
            inspector = inspector_for(db.conninfo)
            inspected[key] = inspector.inspect(db.conninfo, db.connect_kwargs)
        db.server = inspected[key]
    servers = list({id(s): s for s in inspected.values()}.values())
    findings: list[Finding] = unreachable(servers, databases)
    findings += diagnose(databases, model)
    demands = [
        demand(s, [d for d in databases if d.server is s], model)
        for s in servers
        if s.error is None
    ]
    return Report(databases, model, servers, findings, notes, demands)


def add_arguments(parser: argparse.ArgumentParser, django: bool = False) -> None:
    if not django:
        what = parser.add_argument_group("what to examine (one of)")
        what.add_argument(
            "--dsn",
            help="a libpq connection string or URL, or a mysql:// URL, to examine",
        )
        what.add_argument("--settings", help="a Django settings module (as DJANGO_SETTINGS_MODULE)")
    parser.add_argument(
        "--database", action="append", default=[], metavar="ALIAS",
        help="only this Django alias (repeatable)",
    )  # fmt: skip
    out = parser.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print a JSON report")
    out.add_argument("--strict", action="store_true", help="exit 1 on warnings too (for CI)")
    out.add_argument("--no-color", action="store_true", help="plain text even on a terminal")
    proc = parser.add_argument_group("process model (overrides what is detected)")
    proc.add_argument("--gunicorn-config", metavar="FILE", help="gunicorn.conf.py to read")
    proc.add_argument("--workers", type=int, help="worker processes per host")
    proc.add_argument("--threads", type=int, help="threads per worker")
    proc.add_argument("--worker-class", help="gunicorn worker class (sync, gthread, gevent, …)")
    proc.add_argument("--worker-connections", type=int, help="greenlets per gevent worker")
    proc.add_argument("--preload", action="store_true", help="gunicorn --preload")
    proc.add_argument("--asgi", action="store_true", help="served by an ASGI server")
    proc.add_argument("--gevent", action="store_true", help="gevent/eventlet workers")
    proc.add_argument(
        "--celery-concurrency", type=int, default=0, metavar="N",
        help="Celery worker processes per host using the same databases",
    )  # fmt: skip
    proc.add_argument(
        "--hosts", type=int, default=1, metavar="N",
        help="hosts (containers, machines) running this process model",
    )  # fmt: skip
    if not django:
        pool = parser.add_argument_group("pool settings for --dsn (connguard defaults)")
        pool.add_argument("--min-size", type=int, default=0)
        pool.add_argument("--max-size", type=int, default=None, help="default 10")
        pool.add_argument("--max-lifetime", type=float, default=3600.0)
        pool.add_argument("--max-idle", type=float, default=600.0)
        pool.add_argument("--keepalive-interval", type=float, default=0.0)
        pool.add_argument(
            "--prepare-threshold", type=int, default=None,
            help="psycopg prepare_threshold in use (default: none, as Django sets it)",
        )  # fmt: skip
        pool.add_argument(
            "--server-pooler", choices=("session", "transaction", "statement"),
            help="the mode of a pooler in front of the server",
        )  # fmt: skip


def missing_psycopg3(command: str) -> str | None:
    """What to print when psycopg 3, which these commands read the server with, is absent."""
    if importlib.util.find_spec("psycopg") is not None:
        return None
    return (
        f"connguard {command}: reading the server needs psycopg 3, which is not installed "
        "(your Django may use psycopg2: the two install side by side without changing "
        "that). Install it with: pip install 'django-connguard[cli]'"
    )


def missing_mysqlclient() -> str | None:
    """What to print when mysqlclient, which MySQL and MariaDB are read with, is absent."""
    if importlib.util.find_spec("MySQLdb") is not None:
        return None
    return (
        "connguard doctor: reading a MySQL or MariaDB server needs mysqlclient, which is not "
        "installed. Install it with: pip install mysqlclient (it builds against "
        "libmariadb-dev or libmysqlclient-dev, and needs pkg-config)"
    )


def _missing_driver(kinds: list[str]) -> str | None:
    """The install hint for the first driver that reading these databases lacks."""
    for kind in kinds:
        missing = missing_mysqlclient() if kind == "mysql" else missing_psycopg3("doctor")
        if missing:
            return missing
    return None


def run(args: argparse.Namespace) -> int:
    """``connguard doctor`` and ``manage.py connguard doctor``."""
    notes: list[str] = []
    dsn = getattr(args, "dsn", None)
    if dsn is not None:
        missing = _missing_driver(["mysql" if is_mysql(dsn) else "postgresql"])
        if missing:
            print(missing, file=sys.stderr)
            return 2
        databases = [dsn_database(args)]
    else:
        missing = _missing_driver(["postgresql"])
        error = setup_django(getattr(args, "settings", None))
        if error:
            print(missing or f"connguard doctor: {error}", file=sys.stderr)
            return 2
        missing = _missing_driver(django_kinds(args.database))
        if missing:
            print(missing, file=sys.stderr)
            return 2
        from django.core.exceptions import ImproperlyConfigured

        try:
            databases = django_databases(args.database)
        except ImproperlyConfigured as exc:  # bad OPTIONS["pool"] (connguard.E001)
            print(f"connguard doctor: {exc}", file=sys.stderr)
            return 2
        if not databases:
            print(
                "connguard doctor: no PostgreSQL, MySQL or MariaDB database in DATABASES",
                file=sys.stderr,
            )
            return 2
    django_settings: Any = None
    if dsn is None:
        from django.conf import settings as django_settings
    model, process_findings = detect_processes(args, notes, django_settings)
    report = examine(databases, model, notes)
    report.findings = process_findings + report.findings
    if args.json:
        print(json.dumps(report_dict(report, args.strict), indent=2, default=str))
    else:
        render(report, color=not args.no_color)
    return report.exit_code(args.strict)
