"""``connguard stats`` (once) and ``connguard top`` (refreshing): pools and server sessions.

Only what belongs to the application, never this command's own process:

- **pools**, with ``--metrics-url``: those a running application exports to Prometheus
  (summed over its workers): size, in use, idle, waiting, checkouts, timeouts, errors, lost
  connections, breaker;
- **sessions**: ``pg_stat_activity`` of each server grouped by ``application_name`` and
  ``state`` — connguard names every connection ``<app>:<alias>:<pid>``, so each row is one
  process's connections in one state — with how many wait on a lock and the longest time
  one has been in that state. Read from Django's settings, a connguard alias shows only its
  application's connections (``application_name LIKE '<app>:<alias>:%'``, or the
  ``application_name`` its ``OPTIONS`` set); ``--like`` picks another pattern.

With nothing to read (no ``--dsn``, no Django settings, no ``--metrics-url``) they say what
to give and exit 2.

``top`` redraws every ``--interval`` seconds (rich's live display on a terminal when rich is
installed, plain text otherwise) until interrupted or ``--iterations`` rounds are done, and
adds the checkouts per second since the previous round.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from connguard import metrics

ACTIVITY_SQL = """
SELECT coalesce(nullif(application_name, ''), '-') AS application,
       coalesce(state, '-') AS state,
       count(*) AS sessions,
       count(*) FILTER (WHERE wait_event_type = 'Lock') AS waiting,
       coalesce(max(extract(epoch FROM now() - state_change)), 0)::float8 AS longest
FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
  AND (%(db)s::text IS NULL OR datname = %(db)s::text)
  AND (%(like)s::text IS NULL OR application_name LIKE %(like)s::text)
GROUP BY 1, 2
ORDER BY 1, 2
"""

POOL_COLUMNS = (
    ("pool", "name"),
    ("pid", "pid"),
    ("size", "pool_size"),
    ("max", "pool_max"),
    ("in use", "pool_in_use"),
    ("idle", "pool_available"),
    ("waiting", "requests_waiting"),
    ("checkouts", "checkouts"),
    ("timeouts", "timeouts"),
    ("errors", "requests_errors"),
    ("lost", "connections_lost"),
    ("breaker", "breaker"),
)
ACTIVITY_HEADERS = ("application", "state", "sessions", "on lock", "longest")


# -- gathering ---------------------------------------------------------------------------------


_SAMPLE = re.compile(r'^connguard_(\w+?)(?:_total)?\{pool="((?:[^"\\]|\\.)*)"\}\s+(\S+)')


def scraped_pools(url: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """A row per pool name from a Prometheus endpoint serving connguard's metrics."""
    with urllib.request.urlopen(url, timeout=timeout) as response:
        text = response.read().decode("utf-8", "replace")
    names = {_prom_stat(stat): stat for stat in metrics.STAT_NAMES}
    found: dict[str, dict[str, Any]] = {}
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None:
            continue
        prom, pool, value = match.groups()
        stat = names.get(prom)
        if stat is None:
            continue
        row = found.setdefault(pool, {"name": pool, "pid": "all", **metrics.ZEROS})
        number = float(value)
        row[stat] = round(number * 1000) if stat.endswith("_ms") else int(number)
    for row in found.values():
        row["breaker"] = "open" if row["breaker_open"] else "closed"
    return [found[name] for name in sorted(found)]


def _prom_stat(stat: str) -> str:
    return stat[:-3] + "_seconds" if stat.endswith("_ms") else stat


def activity(conninfo: str, dbname: str | None, like: str | None) -> list[tuple[Any, ...]]:
    """``pg_stat_activity`` grouped by application and state."""
    import psycopg

    from connguard.doctor.postgresql import conn_params

    with psycopg.connect(autocommit=True, prepare_threshold=None, **conn_params(conninfo)) as c:
        return list(c.execute(ACTIVITY_SQL, {"db": dbname, "like": like}).fetchall())


@dataclass(frozen=True)
class Target:
    """A server to read sessions from: ``label`` (``--dsn`` or the alias), its conninfo, and
    the ``application_name`` pattern of the application's sessions (None: every session)."""

    label: str
    conninfo: str
    like: str | None = None


class NothingToShow(Exception):
    """The command was given nothing to read; the message says what to give."""


NOTHING_TO_SHOW = (
    "give --dsn (a server to read sessions from), or --settings (or DJANGO_SETTINGS_MODULE) "
    "for a Django project, and/or --metrics-url (a running application's Prometheus endpoint, "
    "for its pools)"
)


def _targets(args: argparse.Namespace) -> list[Target]:
    """The servers to read; :class:`NothingToShow` when there is nothing to read at all."""
    from connguard.doctor.databases import django_databases, setup_django

    dsn = getattr(args, "dsn", None)
    if dsn:
        return [Target("--dsn", dsn, args.like)]

    error = setup_django(getattr(args, "settings", None))
    if error:
        if args.metrics_url:
            return []
        raise NothingToShow(NOTHING_TO_SHOW)
    from django.core.exceptions import ImproperlyConfigured

    try:
        databases = django_databases(args.database, kinds=("postgresql",))
    except ImproperlyConfigured as exc:  # bad OPTIONS["pool"] (connguard.E001)
        raise NothingToShow(str(exc)) from None
    if not databases and not args.metrics_url:
        raise NothingToShow(
            "no PostgreSQL database in DATABASES"
            + (f" among {', '.join(args.database)}" if args.database else "")
            + "; give --dsn, or --metrics-url for a running application's pools"
        )
    seen: dict[tuple[str, str | None], str] = {}
    for db in databases:
        like = args.like if args.like is not None else _application_like(db)
        seen.setdefault((db.conninfo, like), db.alias)
    return [Target(alias, conninfo, like) for (conninfo, like), alias in seen.items()]


def _application_like(db: Any) -> str | None:
    """The ``application_name`` pattern of an alias's sessions (None: not told apart). An
    ``_`` in a name matches any one character as well: close enough to leave unescaped."""
    from psycopg.conninfo import conninfo_to_dict

    set_by_user = conninfo_to_dict(db.conninfo).get("application_name")
    if set_by_user:
        return str(set_by_user)
    if db.engine != "connguard":
        return None  # the stock backend leaves application_name empty
    from connguard.backends.postgresql.base import application_name

    return application_name(db.alias).rsplit(":", 1)[0] + ":%"  # <app>:<alias>:<pid>


def snapshot(args: argparse.Namespace, targets: Sequence[Target]) -> dict[str, Any]:
    """Everything one round shows."""
    pools: list[dict[str, Any]] = []
    errors: list[str] = []
    for url in args.metrics_url:
        try:
            pools += scraped_pools(url)
        except Exception as exc:
            errors.append(f"{url}: {' '.join(str(exc).split())}")
    servers = []
    for target in targets:
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(target.conninfo)
        where = f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}"
        default = str(params.get("dbname") or params.get("user") or "") or None  # libpq's
        dbname = None if args.all_databases else default
        entry: dict[str, Any] = {
            "label": target.label, "server": where, "database": dbname or "*",
            "like": target.like,
        }  # fmt: skip
        try:
            entry["sessions"] = [
                dict(zip(("application", "state", "sessions", "waiting", "longest"), r,
                         strict=True))
                for r in activity(target.conninfo, dbname, target.like)
            ]  # fmt: skip
        except Exception as exc:
            entry["error"] = " ".join(str(exc).split())
        servers.append(entry)
    return {"pools": pools, "servers": servers, "errors": errors, "metrics_urls": args.metrics_url}


# -- output ------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> list[str]:
    """Aligned plain-text columns: numbers to the right, text to the left."""
    rows = [[_cell(v) for v in row] for row in rows]
    numeric = [
        all(_is_number(row[i]) for row in rows) if rows else False for i in range(len(headers))
    ]
    widths = [max([len(h)] + [len(row[i]) for row in rows]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            c.rjust(w) if numeric[i] else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    return [line(list(headers)), *(line(row) for row in rows)]


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    return str(value)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return text == "-"
    return True


def pool_rows(pools: list[dict[str, Any]], rates: dict[str, float] | None) -> list[list[Any]]:
    rows = []
    for pool in pools:
        row = [pool.get(key, "") for _, key in POOL_COLUMNS]
        if rates is not None:
            rate = rates.get(f"{pool['name']}:{pool['pid']}")
            row.append("-" if rate is None else f"{rate:.1f}")
        rows.append(row)
    return rows


def lines_for(snap: dict[str, Any], rates: dict[str, float] | None = None) -> list[str]:
    """The plain-text rendering of one round."""
    out: list[str] = []
    headers = [h for h, _ in POOL_COLUMNS] + (["checkouts/s"] if rates is not None else [])
    if snap["pools"]:
        out.append("Pools")
        out += ["  " + line for line in table(headers, pool_rows(snap["pools"], rates))]
    elif not snap.get("metrics_urls"):
        out.append(NO_POOLS)
    for server in snap["servers"]:
        out.append(sessions_title(server))
        if "error" in server:
            out.append(f"  unreachable: {server['error']}")
            continue
        rows = [
            (s["application"], s["state"], s["sessions"], s["waiting"], f"{s['longest']:.0f} s")
            for s in server["sessions"]
        ]
        if rows:
            out += ["  " + line for line in table(ACTIVITY_HEADERS, rows)]
        else:
            out.append("  none")
    out += [f"error: {error}" for error in snap["errors"]]
    return out


#: the pools line without --metrics-url (this command's own process has none worth showing)
NO_POOLS = "Pools: give --metrics-url URL (the application's Prometheus endpoint) to see its pools"


def sessions_title(server: dict[str, Any]) -> str:
    """``Sessions on host:port (database d, label[, application_name LIKE 'p'])``."""
    like = f", application_name LIKE '{server['like']}'" if server.get("like") else ""
    return (
        f"Sessions on {server['server']} (database {server['database']}, {server['label']}{like})"
    )


def _rich_view(snap: dict[str, Any], rates: dict[str, float] | None) -> Any:
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    parts: list[Any] = []
    headers = [h for h, _ in POOL_COLUMNS] + (["checkouts/s"] if rates is not None else [])
    if snap["pools"]:
        pools = Table(title="Pools", title_justify="left", box=box.SIMPLE_HEAD)
        for i, header in enumerate(headers):
            pools.add_column(header, justify="left" if i == 0 else "right", no_wrap=True)
        for row in pool_rows(snap["pools"], rates):
            style = "red" if row[len(POOL_COLUMNS) - 1] == "open" else ""
            pools.add_row(*(_cell(v) for v in row), style=style)
        parts.append(pools)
    elif not snap.get("metrics_urls"):
        parts.append(Text(NO_POOLS, style="dim"))
    for server in snap["servers"]:
        title = sessions_title(server)
        if "error" in server:
            parts.append(Text(f"{title}: unreachable: {server['error']}", style="red"))
            continue
        if not server["sessions"]:
            parts.append(Text(f"{title}: none", style="dim"))
            continue
        parts.append(Text(title, style="italic"))  # a title of its own: as wide as it needs
        sessions = Table(box=box.SIMPLE_HEAD)
        for i, header in enumerate(ACTIVITY_HEADERS):
            sessions.add_column(header, justify="left" if i < 2 else "right", no_wrap=i > 0)
        for s in server["sessions"]:
            style = "yellow" if s["state"].startswith("idle in transaction") else ""
            sessions.add_row(
                s["application"], s["state"], str(s["sessions"]), str(s["waiting"]),
                f"{s['longest']:.0f} s", style=style,
            )  # fmt: skip
        parts.append(sessions)
    for error in snap["errors"]:
        parts.append(Text(f"error: {error}", style="red"))
    return Group(*parts)


def _rates(
    before: dict[str, Any] | None, now: dict[str, Any], seconds: float
) -> dict[str, float] | None:
    if before is None or seconds <= 0:
        return {}
    old = {f"{p['name']}:{p['pid']}": p.get("checkouts", 0) for p in before["pools"]}
    return {
        key: max(0, p.get("checkouts", 0) - old[key]) / seconds
        for p in now["pools"]
        if (key := f"{p['name']}:{p['pid']}") in old
    }


# -- commands ----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser, django: bool = False) -> None:
    if not django:
        parser.add_argument("--dsn", help="the server to read pg_stat_activity from")
        parser.add_argument("--settings", help="a Django settings module: read its databases")
    parser.add_argument(
        "--database", action="append", default=[], metavar="ALIAS",
        help="only this Django alias (repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--metrics-url", action="append", default=[], metavar="URL",
        help="show the pools a running application exports (its Prometheus endpoint; "
        "repeatable)",
    )  # fmt: skip
    parser.add_argument(
        "--all-databases", action="store_true", help="sessions of every database, not one"
    )
    parser.add_argument(
        "--like", metavar="PATTERN", help="only sessions whose application_name is LIKE this"
    )
    parser.add_argument("--json", action="store_true", help="print JSON")
    parser.add_argument("--no-color", action="store_true", help="plain text even on a terminal")


add_stats_arguments = add_arguments


def add_top_arguments(parser: argparse.ArgumentParser, django: bool = False) -> None:
    add_arguments(parser, django)
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between rounds")
    parser.add_argument(
        "--iterations", type=int, default=0, metavar="N", help="stop after N rounds (0: never)"
    )


def _psycopg3_missing(command: str) -> bool:
    from connguard.doctor.cli import missing_psycopg3

    missing = missing_psycopg3(command)
    if missing:
        print(missing, file=sys.stderr)
    return missing is not None


def _targets_or_say(command: str, args: argparse.Namespace) -> list[Target] | None:
    """The targets, or None after saying on stderr what to give."""
    try:
        return _targets(args)
    except NothingToShow as exc:
        print(f"connguard {command}: nothing to show: {exc}", file=sys.stderr)
        return None


def run_stats(args: argparse.Namespace) -> int:
    if _psycopg3_missing("stats"):
        return 2
    targets = _targets_or_say("stats", args)
    if targets is None:
        return 2
    snap = snapshot(args, targets)
    if args.json:
        print(json.dumps(snap, indent=2, default=str))
    elif _use_rich(args):
        from rich.console import Console

        Console().print(_rich_view(snap, None))
    else:
        print("\n".join(lines_for(snap)))
    return 2 if failed(snap) else 0


run = run_stats


def failed(snap: dict[str, Any]) -> bool:
    return bool(snap["errors"]) or any("error" in s for s in snap["servers"])


def run_top(args: argparse.Namespace) -> int:
    if _psycopg3_missing("top"):
        return 2
    targets = _targets_or_say("top", args)
    if targets is None:
        return 2
    interval = max(0.1, args.interval)
    previous: dict[str, Any] | None = None
    taken = time.monotonic()
    rounds = 0
    live: Any = None
    if _use_rich(args) and not args.json:
        from rich.live import Live

        live = Live(auto_refresh=False)
        live.start()
    try:
        while True:
            snap = snapshot(args, targets)
            now = time.monotonic()
            rates = _rates(previous, snap, now - taken)
            if args.json:
                print(json.dumps({**snap, "checkouts_per_second": rates}, default=str))
            elif live is not None:
                live.update(_rich_view(snap, rates), refresh=True)
            else:
                if rounds:
                    print()
                print("\n".join(lines_for(snap, rates)), flush=True)
            previous, taken = snap, now
            rounds += 1
            if args.iterations and rounds >= args.iterations:
                return 0
            time.sleep(interval)
    except KeyboardInterrupt:
        return 0
    finally:
        if live is not None:
            live.stop()


def _use_rich(args: argparse.Namespace) -> bool:
    if args.no_color or not sys.stdout.isatty():
        return False
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True
