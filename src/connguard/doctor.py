"""``connguard doctor``: a deployment's connection risks, each with its numbers and its fix.

Three inputs, each optional but the server:

- **the databases**: Django's ``DATABASES`` (``manage.py connguard doctor``, or
  ``--settings``), or one ``--dsn`` with the pool settings given as options;
- **the process model**: gunicorn's config file (``--gunicorn-config``, else
  ``./gunicorn.conf.py`` as gunicorn itself finds it; executed in a namespace of its own),
  ``GUNICORN_CMD_ARGS``, ``WEB_CONCURRENCY``; with Django's settings, ASGI
  (``ASGI_APPLICATION`` without ``WSGI_APPLICATION``, then ``UVICORN_WORKERS``) and Celery
  (``CELERY_WORKER_CONCURRENCY``, or its default when ``CELERY_BROKER_URL`` is set); the
  ``CELERY_WORKER_CONCURRENCY`` / ``CELERYD_CONCURRENCY`` environment variables; and the
  options (``--workers``, ``--threads``, ``--preload``, ``--asgi``, ``--gevent``,
  ``--celery-concurrency``, ``--hosts``), which win (see :func:`detect_processes`);
- **the live server**, read over a plain psycopg connection: version, connection budget,
  timeouts, TCP keepalives, read-only / recovery, and what sits in front of it (a PgBouncer
  is recognised by its admin console, asked ``SHOW VERSION`` / ``SHOW CONFIG`` /
  ``SHOW DATABASES``, whenever the server reports another address or port than the one
  connected to).

Findings (:data:`FINDINGS`) have a stable id, a severity (error, warning, info), a message
with the numbers and a fix. Exit status: 0 when nothing is above the threshold, 1 with
errors (or warnings under ``--strict``), 2 when a server cannot be reached. Output: text
(coloured with rich on a terminal), or ``--json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import json
import os
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

CONNGUARD_ENGINE = "connguard.backends.postgresql"
STOCK_ENGINES = frozenset(
    {
        "django.db.backends.postgresql",
        "django.db.backends.postgresql_psycopg2",
        "django.contrib.gis.db.backends.postgis",
    }
)
SEVERITIES = ("error", "warning", "info")

#: id -> (severity, what it means); the severity of CG101 depends on the engine
FINDINGS: dict[str, tuple[str, str]] = {
    "CG001": ("error", "the server cannot be reached"),
    "CG002": ("warning", "the gunicorn configuration cannot be read"),
    "CG101": ("error", "connections may sit idle longer than the server's idle_session_timeout"),
    "CG102": ("error", "connections may sit idle longer than PgBouncer's client_idle_timeout"),
    "CG103": ("info", "the server keeps dead clients' sessions for hours (TCP keepalives)"),
    "CG104": ("info", "no statement_timeout: a runaway query holds its connection"),
    "CG105": ("info", "no idle_in_transaction_session_timeout"),
    "CG201": ("error", "the processes may open more connections than the server accepts"),
    "CG202": ("warning", "the processes may use most of the server's connections"),
    "CG203": ("error", "the processes may open more connections than PgBouncer accepts"),
    "CG204": ("warning", "connections are not bounded by any pool"),
    "CG301": ("error", "gunicorn --preload with connections that workers inherit"),
    "CG302": ("info", "gunicorn --preload: inherited connections are discarded by connguard"),
    "CG303": ("error", "persistent connections (CONN_MAX_AGE) under ASGI"),
    "CG401": ("error", "server-side cursors behind a transaction-mode pooler"),
    "CG402": ("warning", "prepared statements behind a transaction-mode pooler"),
    "CG403": ("warning", "the pooler's mode is not declared in the settings"),
    "CG404": ("info", "something between the application and the server"),
    "CG501": ("warning", "the server is read-only"),
}

_GUCS = (
    "max_connections",
    "superuser_reserved_connections",
    "reserved_connections",
    "idle_session_timeout",
    "idle_in_transaction_session_timeout",
    "statement_timeout",
    "tcp_keepalives_idle",
    "tcp_keepalives_interval",
    "tcp_keepalives_count",
    "default_transaction_read_only",
    "port",
)
_CONNECT_TIMEOUT = 5
_WARN_FRACTION = 0.8


# -- the model ---------------------------------------------------------------------------------


@dataclasses.dataclass
class Finding:
    id: str
    severity: str
    subject: str  # what it is about: an alias, a server, "processes"
    message: str
    fix: str


@dataclasses.dataclass
class Pooler:
    kind: str  # "pgbouncer" or "proxy"
    version: str | None = None
    pool_mode: str | None = None
    max_client_conn: int | None = None
    pool_size: int | None = None
    client_idle_timeout: float = 0.0
    max_prepared_statements: int = 0
    detail: str = ""


@dataclasses.dataclass
class Server:
    """What one server (as one alias reaches it) says about itself."""

    address: str  # host:port as connected to
    dbname: str
    user: str
    version: str = ""
    version_num: int = 0
    max_connections: int = 0
    superuser_reserved: int = 0
    reserved: int = 0
    idle_session_timeout: float = 0.0
    idle_in_transaction_session_timeout: float = 0.0
    statement_timeout: float = 0.0
    tcp_keepalives_idle: int = 0
    tcp_keepalives_interval: int = 0
    tcp_keepalives_count: int = 0
    default_read_only: bool = False
    in_recovery: bool = False
    via_tcp: bool = True
    connections_now: int = 0
    pooler: Pooler | None = None
    error: str | None = None

    @property
    def budget(self) -> int:
        """Connections left for applications."""
        return max(0, self.max_connections - self.superuser_reserved - self.reserved)


@dataclasses.dataclass
class Processes:
    """How many processes and threads reach the database, and how."""

    server: str = "unknown"  # "gunicorn", "asgi" (from the settings), "options" or "unknown"
    source: str = "assumed"  # where the numbers come from
    workers: int = 1
    threads: int = 1
    worker_class: str = "sync"
    worker_connections: int = 1000
    preload: bool = False
    asgi: bool = False
    gevent: bool = False
    celery: int = 0
    celery_source: str = ""  # where the Celery number comes from ("" without Celery)
    hosts: int = 1

    @property
    def concurrency(self) -> int | None:
        """Requests one process serves at once (None: not bounded)."""
        if self.gevent:
            return self.worker_connections
        if self.asgi:
            return None
        return self.threads


@dataclasses.dataclass
class Database:
    """One alias (or the --dsn) and how its connections are managed."""

    alias: str
    engine: str  # "connguard", "django" (stock) or "dsn"
    mode: str  # "connguard pool", "Django pool", "persistent", "per request"
    conninfo: str
    min_size: int = 0
    max_size: int = 10
    max_lifetime: float = 3600.0
    max_idle: float = 600.0
    keepalive_interval: float = 0.0
    conn_max_age: float | None = 0.0  # None: unlimited
    health_checks: bool = False
    server_side_cursors: bool | None = None  # None: not known (plain DSN)
    prepare_threshold: int | None = None
    server_pooler: str | None = None
    statement_timeout_set: bool = False
    server: Server | None = None

    @property
    def pooled(self) -> bool:
        return self.mode in ("connguard pool", "Django pool")

    def per_process(self, concurrency: int | None) -> int | None:
        """The most connections one process may hold (None: not bounded)."""
        if self.pooled:
            if concurrency is None:
                return self.max_size
            return max(self.min_size, min(self.max_size, concurrency))
        return concurrency

    def idle_bound(self) -> float:
        """How long a connection may sit idle between uses (inf: no bound)."""
        inf = float("inf")
        if self.mode == "per request":
            return 0.0
        if self.mode == "persistent":
            return inf if self.conn_max_age is None else self.conn_max_age
        if self.engine in ("connguard", "dsn") and self.keepalive_interval:
            return self.keepalive_interval
        lifetime = self.max_lifetime or inf
        if self.min_size:
            return lifetime  # min_size connections are kept however long they idle
        return min(self.max_idle or inf, lifetime)

    def describe(self) -> str:
        if self.pooled:
            text = (
                f"{self.mode} (min_size {self.min_size}, max_size {self.max_size}, "
                f"max_lifetime {_dur(self.max_lifetime)}, max_idle {_dur(self.max_idle)}"
            )
            if self.keepalive_interval:
                text += f", keepalive_interval {_dur(self.keepalive_interval)}"
            return text + ")"
        if self.mode == "persistent":
            age = "None" if self.conn_max_age is None else f"{self.conn_max_age:g}"
            return f"persistent connections (CONN_MAX_AGE {age})"
        return "a connection per request (CONN_MAX_AGE 0)"


@dataclasses.dataclass
class Report:
    databases: list[Database]
    processes: Processes
    servers: list[Server]
    findings: list[Finding]
    notes: list[str]
    demands: list[Demand] = dataclasses.field(default_factory=list)

    def exit_code(self, strict: bool = False) -> int:
        if any(s.error for s in self.servers):
            return 2
        worst = {f.severity for f in self.findings}
        if "error" in worst or (strict and "warning" in worst):
            return 1
        return 0

    def to_dict(self, strict: bool = False) -> dict[str, Any]:
        counts = {s: sum(1 for f in self.findings if f.severity == s) for s in SEVERITIES}
        return {
            "servers": [_server_dict(s) for s in self.servers],
            "processes": dataclasses.asdict(self.processes),
            "databases": [_database_dict(d) for d in self.databases],
            "demand": [dataclasses.asdict(d) for d in self.demands],
            "findings": [dataclasses.asdict(f) for f in self.findings],
            "notes": self.notes,
            "summary": counts,
            "exit_code": self.exit_code(strict),
        }


def _server_dict(server: Server) -> dict[str, Any]:
    data = dataclasses.asdict(server)
    data["budget"] = server.budget
    return data


def _database_dict(db: Database) -> dict[str, Any]:
    from connguard.config import mask_conninfo

    data = dataclasses.asdict(db)
    data.pop("server")
    data["conninfo"] = mask_conninfo(db.conninfo)
    data["server"] = db.server.address if db.server else None
    values, mine = client_tcp(db)
    data["client_tcp"] = {**values, "set": mine, "dead_path_bound": dead_path_bound(values)}
    for key in ("max_lifetime", "max_idle", "conn_max_age"):
        if data[key] == float("inf"):
            data[key] = None
    return data


# -- the server ---------------------------------------------------------------------------------


def _seconds(setting: str, unit: str | None) -> float:
    value = float(setting)
    return {"ms": value / 1000, "s": value, "min": value * 60, "h": value * 3600}.get(
        unit or "s", value
    )


def _conn_params(conninfo: str) -> dict[str, Any]:
    from psycopg.conninfo import conninfo_to_dict

    params = dict(conninfo_to_dict(conninfo))
    params.setdefault("connect_timeout", _CONNECT_TIMEOUT)
    params["application_name"] = "connguard-doctor"
    return params


def inspect_server(conninfo: str) -> Server:
    """Connect once with psycopg and read the server's facts (``error`` set on failure)."""
    import psycopg

    params = _conn_params(conninfo)
    address = f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}"
    server = Server(address=address, dbname=str(params.get("dbname") or ""), user="")
    try:
        conn = psycopg.connect(autocommit=True, prepare_threshold=None, **params)
    except psycopg.Error as exc:
        server.error = _one_line(exc)
        return server
    with conn:
        info = conn.info
        server.address = f"{info.host}:{info.port}"
        server.dbname, server.user = info.dbname, info.user
        server.via_tcp = not str(info.host).startswith("/")
        rows = conn.execute(
            "SELECT name, setting, unit FROM pg_settings WHERE name = ANY(%s)", [list(_GUCS)]
        ).fetchall()
        gucs = {name: (setting, unit) for name, setting, unit in rows}

        def number(name: str) -> int:
            return int(gucs[name][0]) if name in gucs else 0

        def duration(name: str) -> float:
            return _seconds(*gucs[name]) if name in gucs else 0.0

        server.max_connections = number("max_connections")
        server.superuser_reserved = number("superuser_reserved_connections")
        server.reserved = number("reserved_connections")
        server.idle_session_timeout = duration("idle_session_timeout")
        server.idle_in_transaction_session_timeout = duration("idle_in_transaction_session_timeout")
        server.statement_timeout = duration("statement_timeout")
        server.tcp_keepalives_idle = number("tcp_keepalives_idle")
        server.tcp_keepalives_interval = number("tcp_keepalives_interval")
        server.tcp_keepalives_count = number("tcp_keepalives_count")
        server.default_read_only = gucs.get("default_transaction_read_only", ("off",))[0] == "on"
        row = conn.execute(
            "SELECT pg_is_in_recovery(), current_setting('server_version'), "
            "current_setting('server_version_num')::int, host(inet_server_addr()), "
            "inet_server_port(), (SELECT count(*) FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid())"
        ).fetchone()
        assert row is not None
        server.in_recovery, server.version, server.version_num = row[0], row[1], row[2]
        server_addr, server_port, server.connections_now = row[3], row[4], row[5]
        listen_port = number("port")
        direct = (
            server_addr == info.hostaddr and server_port == info.port
            if server.via_tcp
            else server_addr is None and listen_port == info.port
        )
        if not direct:
            server.pooler = _inspect_pooler(params, server.dbname, listen_port, info.port)
    return server


def _inspect_pooler(params: Mapping[str, Any], dbname: str, server_port: int, port: int) -> Pooler:
    """Something is in between: a PgBouncer answers on its admin console, else a proxy."""
    import psycopg

    admin = {**params, "dbname": "pgbouncer", "connect_timeout": min(3, _CONNECT_TIMEOUT)}
    try:
        with psycopg.connect(autocommit=True, **admin) as conn:
            version = str(conn.execute("SHOW VERSION").fetchone()[0])  # type: ignore[index]
            if "bouncer" not in version.lower():
                raise ValueError(version)
            config = {str(r[0]): r[1] for r in conn.execute("SHOW CONFIG").fetchall()}
            cur = conn.execute("SHOW DATABASES")
            columns = [c.name for c in cur.description or ()]
            databases = [dict(zip(columns, r, strict=False)) for r in cur.fetchall()]
    except (psycopg.Error, ValueError, TypeError) as exc:
        return Pooler(
            kind="proxy",
            detail=f"the server listens on port {server_port}, the connection went to port "
            f"{port}; no PgBouncer admin console answered ({_one_line(exc)})",
        )
    row = next((d for d in databases if d.get("name") == dbname), None) or next(
        (d for d in databases if d.get("name") == "*"), {}
    )

    def number(value: Any) -> int:
        try:
            return int(value)
        except (TypeError, ValueError):
            return 0

    return Pooler(
        kind="pgbouncer",
        version=version.split()[-1],
        pool_mode=(row.get("pool_mode") or config.get("pool_mode") or "session"),
        max_client_conn=number(config.get("max_client_conn")),
        pool_size=number(row.get("pool_size") or config.get("default_pool_size")),
        client_idle_timeout=float(number(config.get("client_idle_timeout"))),
        max_prepared_statements=number(config.get("max_prepared_statements")),
    )


# -- the process model -------------------------------------------------------------------------


def read_gunicorn_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The settings a gunicorn config file assigns (the file runs in a namespace of its own,
    as gunicorn runs it)."""
    file = Path(path)
    namespace: dict[str, Any] = {"__file__": str(file), "__name__": "__config__"}
    exec(compile(file.read_text(), str(file), "exec"), namespace)
    keys = ("workers", "threads", "worker_class", "worker_connections", "preload_app")
    return {key: namespace[key] for key in keys if key in namespace}


def _parse_gunicorn_args(text: str) -> tuple[dict[str, Any], str | None]:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-w", "--workers", type=int)
    parser.add_argument("--threads", type=int)
    parser.add_argument("-k", "--worker-class")
    parser.add_argument("--worker-connections", type=int)
    parser.add_argument("--preload", action="store_true", default=None)
    parser.add_argument("-c", "--config")
    known, _ = parser.parse_known_args(shlex.split(text))
    values = {
        "workers": known.workers,
        "threads": known.threads,
        "worker_class": known.worker_class,
        "worker_connections": known.worker_connections,
        "preload_app": known.preload,
    }
    return {k: v for k, v in values.items() if v is not None}, known.config


def detect_processes(
    args: argparse.Namespace, notes: list[str], django_settings: Any = None
) -> tuple[Processes, list[Finding]]:
    """The process model: ``WEB_CONCURRENCY`` < gunicorn config < ``GUNICORN_CMD_ARGS`` <
    options; with Django's settings (``django_settings``), ASGI and Celery too.

    ASGI: a gunicorn worker class containing ``uvicorn``, or ``--asgi``; else, with the
    settings, no gunicorn in sight (no config file, no ``GUNICORN_CMD_ARGS``: their worker
    class, ``sync`` by default, decides) and no ``--worker-class``/``--gevent``:
    ``ASGI_APPLICATION`` set and ``WSGI_APPLICATION`` not (both set: WSGI, with a note).
    Outside gunicorn, ``UVICORN_WORKERS`` then counts the workers (over ``WEB_CONCURRENCY``,
    as uvicorn reads them). Celery: see :func:`_detect_celery`.
    """
    found: list[Finding] = []
    model = Processes()
    settings: dict[str, Any] = {}
    sources: list[str] = []
    env_args, env_config = _parse_gunicorn_args(os.environ.get("GUNICORN_CMD_ARGS", ""))
    config = args.gunicorn_config or env_config
    if config is None and Path("gunicorn.conf.py").is_file():
        config = "gunicorn.conf.py"
    gunicorn = bool(config or env_args)  # gunicorn serves: its worker class decides
    if os.environ.get("WEB_CONCURRENCY", "").isdigit():
        settings["workers"] = int(os.environ["WEB_CONCURRENCY"])
        sources.append("WEB_CONCURRENCY")
    if config:
        try:
            settings.update(read_gunicorn_config(config))
            sources.append(str(config))
        except Exception as exc:
            found.append(
                Finding(
                    "CG002", "warning", "processes",
                    f"cannot read the gunicorn config {config}: {_one_line(exc)}",
                    "Fix the file, or give --workers/--threads/--preload instead.",
                )
            )  # fmt: skip
    if env_args:
        settings.update(env_args)
        sources.append("GUNICORN_CMD_ARGS")
    flags = {
        "workers": args.workers,
        "threads": args.threads,
        "worker_class": args.worker_class,
        "worker_connections": args.worker_connections,
        "preload_app": True if args.preload else None,
    }
    flags = {k: v for k, v in flags.items() if v is not None}
    asgi_app = False  # ASGI read from the settings
    if (
        django_settings is not None
        and not (gunicorn or args.asgi or args.gevent)
        and "worker_class" not in flags
    ):
        asgi_app = _settings_asgi(django_settings, notes)
        if asgi_app:
            sources.append("ASGI_APPLICATION")
    if (asgi_app or args.asgi) and not gunicorn:
        uvicorn_workers = os.environ.get("UVICORN_WORKERS", "")
        if uvicorn_workers.isdigit():
            settings["workers"] = int(uvicorn_workers)
            sources.append("UVICORN_WORKERS")
    if flags or args.asgi or args.gevent:
        settings.update(flags)
        sources.append("options")
    if settings or asgi_app:
        model.server = "asgi" if asgi_app else "gunicorn"
        model.source = ", ".join(sources)
    if asgi_app and "workers" not in settings:
        notes.append(
            "ASGI server's worker processes unknown: 1 assumed "
            "(give --workers, or set UVICORN_WORKERS or WEB_CONCURRENCY)"
        )
    model.workers = int(settings.get("workers") or 1)
    model.threads = int(settings.get("threads") or 1)
    model.worker_connections = int(settings.get("worker_connections") or 1000)
    model.preload = bool(settings.get("preload_app"))
    worker_class = str(settings.get("worker_class") or "sync")
    if worker_class == "sync" and model.threads > 1:
        worker_class = "gthread"
    model.worker_class = worker_class
    lowered = worker_class.lower()
    model.gevent = bool(args.gevent) or "gevent" in lowered or "eventlet" in lowered
    model.asgi = bool(args.asgi) or "uvicorn" in lowered or asgi_app
    if model.server == "unknown" and (model.asgi or model.gevent):
        model.server, model.source = "options", "options"
    model.celery, model.celery_source = _detect_celery(args, notes, django_settings)
    model.hosts = int(args.hosts or 1)
    if model.server == "unknown":
        notes.append(
            "process model unknown: 1 process with 1 thread assumed "
            "(give --workers/--threads, --gunicorn-config, --asgi or --gevent)"
        )
    return model, found


def _settings_asgi(django_settings: Any, notes: list[str]) -> bool:
    """ASGI by the settings: ``ASGI_APPLICATION`` without ``WSGI_APPLICATION`` (both: a note)."""
    asgi_app = getattr(django_settings, "ASGI_APPLICATION", None)
    wsgi_app = getattr(django_settings, "WSGI_APPLICATION", None)
    if asgi_app and wsgi_app:
        notes.append(
            "ASGI_APPLICATION and WSGI_APPLICATION are both set: served through WSGI assumed; "
            "pass --asgi if it is served through ASGI (uvicorn, daphne, hypercorn)"
        )
    return bool(asgi_app) and not wsgi_app


_CELERY_ENV = ("CELERY_WORKER_CONCURRENCY", "CELERYD_CONCURRENCY")
_CELERY_SETTINGS = ("CELERY_WORKER_CONCURRENCY", "CELERYD_CONCURRENCY")


def _celery_importable() -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec("celery") is not None
    except (ImportError, ValueError):
        return False


def _celery_number(value: Any) -> int | str | None:
    """A concurrency setting: a count, ``"auto"``, or None when unset (0 is Celery's unset)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value if value > 0 else None
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    return int(text) if text.isdigit() and int(text) > 0 else None


def _detect_celery(
    args: argparse.Namespace, notes: list[str], django_settings: Any = None
) -> tuple[int, str]:
    """Celery worker processes per host, and where the number comes from.

    ``--celery-concurrency`` < the ``CELERY_WORKER_CONCURRENCY`` / ``CELERYD_CONCURRENCY``
    environment variables (as a worker's ``-c $CELERYD_CONCURRENCY`` gets them) < with
    Django's settings and Celery importable, the ``CELERY``-namespaced settings
    (``app.config_from_object("django.conf:settings", namespace="CELERY")``):
    ``CELERY_WORKER_CONCURRENCY`` (or the old ``CELERYD_CONCURRENCY``), else, when a broker
    is configured (``CELERY_BROKER_URL``, setting or environment), Celery's default: the
    CPU count, with a note. ``auto`` is counted as the CPU count too.
    """
    if args.celery_concurrency:
        return int(args.celery_concurrency), "options"
    number, name = _first_concurrency({n: os.environ.get(n) for n in _CELERY_ENV})
    if number is None and django_settings is not None and _celery_importable():
        number, name = _first_concurrency(
            {n: getattr(django_settings, n, None) for n in _CELERY_SETTINGS}
        )
        broker = getattr(django_settings, "CELERY_BROKER_URL", None) or os.environ.get(
            "CELERY_BROKER_URL"
        )
        if number is None and broker:
            number, name = "auto", "CELERY_BROKER_URL"
    if number is None:
        return 0, ""
    if isinstance(number, int):
        return number, name
    cpus = os.cpu_count() or 1
    if name == "CELERY_BROKER_URL":
        why = "a broker is configured (CELERY_BROKER_URL) but no concurrency: Celery's default"
        source = "CELERY_BROKER_URL; Celery's default assumed"
    else:
        why = f"{name} is 'auto'"
        source = f"{name} 'auto'; the CPU count assumed"
    notes.append(
        f"Celery: {why}, the CPU count, assumed: {_plural(cpus, 'process', 'processes')} "
        "per host (this machine's CPUs; give --celery-concurrency, or set "
        "CELERY_WORKER_CONCURRENCY)"
    )
    return cpus, source


def _first_concurrency(values: Mapping[str, Any]) -> tuple[int | str | None, str]:
    """The first set concurrency among ``name -> value``, and its name."""
    for name, value in values.items():
        number = _celery_number(value)
        if number is not None:
            return number, name
    return None, ""


def describe_processes(model: Processes) -> str:
    if model.server == "unknown":
        text = "unknown: 1 process with 1 thread assumed"
    else:
        if model.gevent:
            each = f"{model.worker_connections} greenlets ({model.worker_class})"
        elif model.asgi:
            each = "ASGI (requests in flight not bounded)"
        else:
            each = f"{_plural(model.threads, 'thread')} ({model.worker_class})"
        text = (
            f"{_plural(model.workers, 'worker')} x {each}, preload "
            f"{'on' if model.preload else 'off'} (from {model.source})"
        )
    if model.celery:
        text += f"; Celery: {_plural(model.celery, 'process', 'processes')}"
        text += f" (from {model.celery_source})" if model.celery_source else ""
    return text + f"; {_plural(model.hosts, 'host')}"


# -- the databases -----------------------------------------------------------------------------


def _libpq_keywords() -> frozenset[str]:
    from psycopg import pq

    return frozenset(o.keyword.decode() for o in pq.Conninfo.get_defaults())


def django_databases(only: Sequence[str] = ()) -> list[Database]:
    """Every PostgreSQL alias of the configured Django project."""
    from django.conf import settings
    from django.db import connections
    from psycopg.conninfo import make_conninfo

    keywords = _libpq_keywords()
    found = []
    for alias, db in settings.DATABASES.items():
        if only and alias not in only:
            continue
        engine = db.get("ENGINE", "")
        if engine != CONNGUARD_ENGINE and engine not in STOCK_ENGINES:
            continue
        options = db.get("OPTIONS", {}) or {}
        wrapper = connections[alias]
        bad_options = getattr(wrapper, "connguard_config_error", None)
        if bad_options is not None:  # the pool it would have is unknown: nothing to judge
            raise bad_options
        params = wrapper.get_connection_params()
        conninfo = make_conninfo(
            **{k: v for k, v in params.items() if k in keywords and v not in (None, "")}
        )
        conn_max_age = db.get("CONN_MAX_AGE", 0)
        item = Database(
            alias=alias,
            engine="connguard" if engine == CONNGUARD_ENGINE else "django",
            mode="per request",
            conninfo=conninfo,
            conn_max_age=None if conn_max_age is None else float(conn_max_age),
            health_checks=bool(db.get("CONN_HEALTH_CHECKS")),
            server_side_cursors=not db.get("DISABLE_SERVER_SIDE_CURSORS", False),
            prepare_threshold=options.get("prepare_threshold"),
            statement_timeout_set="statement_timeout" in str(options.get("options", "")),
        )
        pool = options.get("pool")
        if engine == CONNGUARD_ENGINE:
            config = getattr(wrapper, "connguard_config", None)
            if config is not None:
                item.mode = "connguard pool"
                item.min_size, item.max_size = config.min_size, config.max_size
                item.max_lifetime, item.max_idle = config.max_lifetime, config.max_idle
                item.keepalive_interval = config.keepalive_interval
                if isinstance(pool, Mapping):
                    item.server_pooler = pool.get("server_pooler")
            elif conn_max_age != 0:
                item.mode = "persistent"
        elif pool:
            # Django's built-in pool: psycopg_pool's defaults
            opts = pool if isinstance(pool, Mapping) else {}
            item.mode = "Django pool"
            item.min_size = int(opts.get("min_size", 4))
            item.max_size = int(opts.get("max_size") or item.min_size)
            item.max_lifetime = float(opts.get("max_lifetime", 3600.0))
            item.max_idle = float(opts.get("max_idle", 600.0))
        elif conn_max_age != 0:
            item.mode = "persistent"
        found.append(item)
    return found


def dsn_database(args: argparse.Namespace) -> Database:
    """The --dsn, pooled by connguard with the pool options given."""
    return Database(
        alias="--dsn",
        engine="dsn",
        mode="connguard pool",
        conninfo=args.dsn,
        min_size=args.min_size,
        max_size=args.max_size if args.max_size is not None else max(10, args.min_size),
        max_lifetime=args.max_lifetime,
        max_idle=args.max_idle,
        keepalive_interval=args.keepalive_interval,
        prepare_threshold=args.prepare_threshold,
        server_pooler=args.server_pooler,
        statement_timeout_set="statement_timeout" in args.dsn,
    )


# -- the rules ---------------------------------------------------------------------------------


def diagnose(databases: list[Database], model: Processes) -> list[Finding]:
    """Every finding for these databases (each with its ``server`` inspected)."""
    found: list[Finding] = []
    servers: dict[str, Server] = {}
    for db in databases:
        if db.server is not None and db.server.error is None:
            servers.setdefault(db.server.address, db.server)
    for server in servers.values():
        found += _server_findings(server, [d for d in databases if d.server is server])
    for db in databases:
        if db.server is not None and db.server.error is None:
            found += _idle_findings(db, db.server)
            found += _pooler_findings(db, db.server)
    for address, server in servers.items():
        found += _budget_findings(
            server, [d for d in databases if d.server and d.server.address == address], model
        )
    found += _process_findings(databases, model)
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    found.sort(key=lambda f: (rank[f.severity], f.id, f.subject))
    return found


def _server_findings(server: Server, dbs: list[Database]) -> list[Finding]:
    found = []
    where = server.address
    if server.in_recovery or server.default_read_only:
        why = (
            "it is a standby in recovery (pg_is_in_recovery() is true)"
            if server.in_recovery
            else "default_transaction_read_only is on"
        )
        found.append(
            Finding(
                "CG501", "warning", where,
                f"{where} is read-only: {why}; every write will fail with "
                "'cannot execute ... in a read-only transaction'.",
                "Point the writing aliases at the primary (keep this server for a "
                "read-replica alias with a database router), or "
                "ALTER SYSTEM SET default_transaction_read_only = off.",
            )
        )  # fmt: skip
    if server.via_tcp and (server.tcp_keepalives_idle == 0 or server.tcp_keepalives_idle > 600):
        idle = server.tcp_keepalives_idle or 7200
        total = idle + (server.tcp_keepalives_interval or 75) * (server.tcp_keepalives_count or 9)
        found.append(
            Finding(
                "CG103", "info", where,
                f"{where}: tcp_keepalives_idle is {idle} s: the session of a client that "
                "vanished without closing its socket (a killed host or container, a cut "
                f"network) keeps one of the {server.budget} connection slots for about "
                f"{_about(total)}.",
                "ALTER SYSTEM SET tcp_keepalives_idle = 60; ALTER SYSTEM SET "
                "tcp_keepalives_interval = 10; ALTER SYSTEM SET tcp_keepalives_count = 6; "
                "SELECT pg_reload_conf();",
            )
        )  # fmt: skip
    if not server.statement_timeout and not all(d.statement_timeout_set for d in dbs):
        found.append(
            Finding(
                "CG104", "info", where,
                f"{where}: statement_timeout is off: a runaway query holds its connection, "
                "and its pool slot, until it ends.",
                "Set a bound for the application's role (ALTER ROLE app SET statement_timeout "
                "= '30s') or per alias: OPTIONS['options'] = '-c statement_timeout=30000'.",
            )
        )  # fmt: skip
    if not server.idle_in_transaction_session_timeout:
        found.append(
            Finding(
                "CG105", "info", where,
                f"{where}: idle_in_transaction_session_timeout is off: a session left idle "
                "inside a transaction (a leak, a debugger, a crashed worker's half-done "
                "request) holds its locks and its connection indefinitely.",
                "ALTER SYSTEM SET idle_in_transaction_session_timeout = '60s'; SELECT "
                "pg_reload_conf(); and set the pool's leak_threshold to find who holds "
                "connections too long.",
            )
        )  # fmt: skip
    return found


def _idle_findings(db: Database, server: Server) -> list[Finding]:
    found = []
    bound = db.idle_bound()
    timeouts = [("CG101", "idle_session_timeout", server.idle_session_timeout, server.address)]
    if server.pooler is not None and server.pooler.kind == "pgbouncer":
        timeouts.append(
            ("CG102", "client_idle_timeout", server.pooler.client_idle_timeout, "PgBouncer")
        )
    for fid, name, timeout, who in timeouts:
        if not timeout or bound < timeout:
            continue
        if db.pooled:
            what = _idle_reason(db)
        else:
            what = f"a worker keeps its connection between requests for up to {_age(db)}"
        consequence, severity = _idle_consequence(db)
        fix = _idle_fix(db, timeout, name)
        found.append(
            Finding(
                fid, severity, db.alias,
                f"{db.alias}: {who} closes sessions idle for {_dur(timeout)} ({name}), "
                f"but {what}; {consequence}",
                fix,
            )
        )  # fmt: skip
    return found


def _idle_reason(db: Database) -> str:
    if db.keepalive_interval:
        return f"the pool pings idle connections only every {_dur(db.keepalive_interval)}"
    if db.min_size:
        return (
            f"the pool keeps {db.min_size} (min_size) connections open however long they "
            f"idle, up to max_lifetime {_dur(db.max_lifetime)}"
        )
    return (
        f"the pool closes idle connections only after max_idle {_dur(db.max_idle)} "
        f"(max_lifetime {_dur(db.max_lifetime)})"
    )


def _idle_consequence(db: Database) -> tuple[str, str]:
    if db.engine in ("connguard", "dsn"):
        return (
            "connguard finds such connections dead at checkout and replaces them "
            "(connections_lost), at the cost of a reconnect each time.",
            "warning",
        )
    if db.health_checks:
        return (
            "CONN_HEALTH_CHECKS finds them dead at the start of a request and reconnects.",
            "warning",
        )
    return (
        "the first query on such a connection fails with 'terminating connection due to "
        "idle-session timeout' (or 'server closed the connection unexpectedly').",
        "error",
    )


def _idle_fix(db: Database, timeout: float, name: str) -> str:
    below = _dur(max(1.0, timeout * 0.5))
    exempt = (
        "exempt the application's role: ALTER ROLE app SET idle_session_timeout = 0"
        if name == "idle_session_timeout"
        else "set client_idle_timeout = 0 in pgbouncer.ini"
    )
    if db.engine in ("connguard", "dsn") and db.pooled:
        key, also = (
            ("OPTIONS['pool']['keepalive_interval']", "['max_idle']")
            if db.engine == "connguard"
            else ("the pool's keepalive_interval", "max_idle")
        )
        return (
            f"Set {key} below the timeout (e.g. {below}: idle connections are then pinged), "
            f"or {also} to {below} with min_size 0; or {exempt}."
        )
    if db.mode == "Django pool":
        return (
            f"Use ENGINE '{CONNGUARD_ENGINE}' (it checks connections at checkout), or set "
            f"OPTIONS['pool'] max_idle to {below} with min_size 0 and CONN_HEALTH_CHECKS = True."
        )
    age = int(max(1.0, timeout * 0.5))
    if db.engine == "connguard":  # OPTIONS['pool'] = False: Django's persistent connections
        return f"Set CONN_MAX_AGE below the timeout (e.g. {age}), or turn the pool back on."
    return (
        f"Use ENGINE '{CONNGUARD_ENGINE}', or set CONN_MAX_AGE below the timeout (e.g. "
        f"{age}) and CONN_HEALTH_CHECKS = True."
    )


def _age(db: Database) -> str:
    return "ever (CONN_MAX_AGE None)" if db.conn_max_age is None else _dur(db.conn_max_age)


def _pooler_findings(db: Database, server: Server) -> list[Finding]:
    found = []
    pooler = server.pooler
    detected = pooler.pool_mode if pooler is not None and pooler.kind == "pgbouncer" else None
    mode = db.server_pooler or detected
    if pooler is not None and pooler.kind == "proxy" and not db.server_pooler:
        found.append(
            Finding(
                "CG404", "info", db.alias,
                f"{db.alias}: something is between the application and the server: "
                f"{pooler.detail}.",
                "If it is a pooler in transaction or statement mode, declare it: "
                "OPTIONS['pool']['server_pooler'] = 'transaction' (then connguard's checks "
                "apply). A port mapping or TCP proxy needs nothing.",
            )
        )  # fmt: skip
    if detected in ("transaction", "statement") and db.server_pooler != detected:
        assert pooler is not None
        declared = "not declared" if db.server_pooler is None else f"declared {db.server_pooler!r}"
        found.append(
            Finding(
                "CG403", "warning", db.alias,
                f"{db.alias}: PgBouncer {pooler.version} at {server.address} runs in "
                f"{detected} mode, but the settings say server_pooler is {declared}.",
                f"Set OPTIONS['pool']['server_pooler'] = {detected!r}, so that the system "
                "checks guard against what this mode breaks.",
            )
        )  # fmt: skip
    if mode not in ("transaction", "statement"):
        return found
    source = "PgBouncer" if detected == mode else "the declared pooler"
    if db.server_side_cursors:
        found.append(
            Finding(
                "CG401", "error", db.alias,
                f"{db.alias}: server-side cursors are enabled behind {source} in {mode} mode: "
                "QuerySet.iterator() fails with 'cursor \"...\" does not exist' when the "
                "pooler runs the next fetch on another server connection.",
                f"Set DATABASES[{db.alias!r}]['DISABLE_SERVER_SIDE_CURSORS'] = True.",
            )
        )  # fmt: skip
    tracked = pooler is not None and pooler.max_prepared_statements > 0
    if db.prepare_threshold is not None and not tracked:
        where = (
            f"OPTIONS['prepare_threshold'] = {db.prepare_threshold}"
            if db.engine != "dsn"
            else f"prepare_threshold {db.prepare_threshold}"
        )
        found.append(
            Finding(
                "CG402", "warning", db.alias,
                f"{db.alias}: prepared statements are enabled ({where}) behind {source} in "
                f"{mode} mode: they fail with 'prepared statement \"_pg3_0\" does not exist' "
                "when a later execution lands on another server connection.",
                "Remove OPTIONS['prepare_threshold'] (Django then disables them), or run "
                "PgBouncer >= 1.21 with max_prepared_statements > 0.",
            )
        )  # fmt: skip
    return found


@dataclasses.dataclass
class Demand:
    """The most connections all processes of all hosts may open to one server at once."""

    server: str
    total: int
    formula: str
    limit: int  # what the server (or the PgBouncer in front) accepts
    unbounded: list[str]  # aliases nothing bounds


def demand(server: Server, dbs: list[Database], model: Processes) -> Demand:
    terms: list[str] = []
    total = 0
    unbounded: list[str] = []
    for db in dbs:
        per_worker = db.per_process(model.concurrency)
        if per_worker is None:
            unbounded.append(db.alias)
            continue
        term = f"{_plural(model.workers, 'worker')} x {per_worker} ({db.alias})"
        total += model.workers * per_worker
        if model.celery:
            per_task = db.per_process(1) or 1
            total += model.celery * per_task
            term += f" + {model.celery} Celery x {per_task}"
        terms.append(term)
    total *= model.hosts
    formula = " + ".join(terms)
    if model.hosts > 1 and terms:
        formula = f"{model.hosts} hosts x ({formula})"
    pooler = server.pooler
    if pooler is not None and pooler.kind == "pgbouncer" and pooler.max_client_conn:
        limit = pooler.max_client_conn
    else:
        limit = server.budget
    return Demand(server.address, total, formula, limit, unbounded)


def _budget_findings(server: Server, dbs: list[Database], model: Processes) -> list[Finding]:
    """Connections all processes of all hosts may open to this server at once."""
    need = demand(server, dbs, model)
    total, formula = need.total, need.formula
    unbounded = [db for db in dbs if db.alias in need.unbounded]
    found = []
    for db in unbounded:
        if db.mode == "persistent":
            continue  # CG303 says worse
        found.append(
            Finding(
                "CG204", "warning", db.alias,
                f"{db.alias}: under ASGI every request in flight opens its own connection "
                f"({db.describe()}): nothing bounds how many of the {server.budget} "
                f"connections of {server.address} a burst takes.",
                f"Use ENGINE '{CONNGUARD_ENGINE}' (at most max_size per process; others wait "
                "for timeout), or Django's pool.",
            )
        )  # fmt: skip
    if not formula:
        return found
    pooler = server.pooler
    if pooler is not None and pooler.kind == "pgbouncer":
        if pooler.max_client_conn and total > pooler.max_client_conn:
            found.append(
                Finding(
                    "CG203", "error", server.address,
                    f"PgBouncer at {server.address}: up to {total} client connections "
                    f"({formula}) but max_client_conn is {pooler.max_client_conn}: the "
                    "rest are refused with 'no more connections allowed'.",
                    f"Raise max_client_conn to at least {total}, or lower max_size.",
                )
            )  # fmt: skip
        return found
    budget = server.budget
    reserved = server.superuser_reserved + server.reserved
    budget_text = f"{server.max_connections} max_connections - {reserved} reserved = {budget}"
    share = model.hosts * (model.workers + model.celery)
    if total > budget:
        suggest = max(1, budget // max(1, share * max(1, len(dbs))))
        found.append(
            Finding(
                "CG201", "error", server.address,
                f"{server.address}: the processes may open {total} connections ({formula}) "
                f"but the server accepts {budget} ({budget_text}): past that, connects fail "
                "with 'sorry, too many clients already'.",
                f"Lower max_size to {suggest} (for {_plural(share, 'process', 'processes')}), "
                "put PgBouncer in transaction mode in front, or raise max_connections.",
            )
        )  # fmt: skip
    elif total > budget * _WARN_FRACTION:
        found.append(
            Finding(
                "CG202", "warning", server.address,
                f"{server.address}: the processes may open {total} connections ({formula}), "
                f"{round(100 * total / max(1, budget))}% of the {budget} the server accepts "
                f"({budget_text}); deploys (old and new workers at once), migrations and "
                "consoles need room too.",
                f"Lower max_size to {max(1, int(budget * _WARN_FRACTION) // max(1, share * len(dbs)))} "
                f"(for {_plural(share, 'process', 'processes')}), or raise max_connections, so "
                f"that the total stays below {int(budget * _WARN_FRACTION)}.",
            )
        )  # fmt: skip
    return found


def _process_findings(dbs: list[Database], model: Processes) -> list[Finding]:
    found = []
    for db in dbs:
        if model.preload and db.engine == "django":
            if db.mode in ("persistent", "Django pool"):
                found.append(
                    Finding(
                        "CG301", "error", db.alias,
                        f"{db.alias}: gunicorn --preload with {db.describe()}: a connection "
                        "opened in the master (a query at import time or in AppConfig.ready()) "
                        "is inherited by every worker, which then share one server session: "
                        "crossed results, 'lost synchronization with server', SSL errors.",
                        f"Use ENGINE '{CONNGUARD_ENGINE}' (each worker drops inherited "
                        "connections without a byte sent), or close them in the master before "
                        "it forks: a gunicorn pre_fork hook calling "
                        "django.db.connections.close_all().",
                    )
                )  # fmt: skip
            else:
                found.append(
                    Finding(
                        "CG301", "warning", db.alias,
                        f"{db.alias}: gunicorn --preload: a connection opened in the master (a "
                        "query at import time or in AppConfig.ready()) stays open there and is "
                        "inherited by every worker; each closes its copy at its first request, "
                        "which ends the session the master still holds.",
                        f"Use ENGINE '{CONNGUARD_ENGINE}', or avoid queries at import time, or "
                        "call django.db.connections.close_all() in a gunicorn pre_fork hook.",
                    )
                )  # fmt: skip
        elif model.preload and db.engine == "connguard":
            found.append(
                Finding(
                    "CG302", "info", db.alias,
                    f"{db.alias}: gunicorn --preload: connections opened in the master are "
                    "discarded by each worker without a byte sent (connguard logs where they "
                    "were opened, and counts connections_discarded_after_fork).",
                    "Nothing to do; to save the master's connections, avoid queries at import "
                    "time and in AppConfig.ready().",
                )
            )  # fmt: skip
        if model.asgi and db.mode == "persistent":
            found.append(
                Finding(
                    "CG303", "error", db.alias,
                    f"{db.alias}: {db.describe()} under ASGI: Django keeps a connection per "
                    "thread and async context, which ASGI servers create per request; they are "
                    "never reused and pile up until 'too many clients already'.",
                    f"Set CONN_MAX_AGE = 0, or use ENGINE '{CONNGUARD_ENGINE}' with its pool "
                    "(connections return to it after every request).",
                )
            )  # fmt: skip
    return found


# -- running it --------------------------------------------------------------------------------


def examine(databases: list[Database], model: Processes, notes: list[str]) -> Report:
    """Inspect each distinct server once and diagnose."""
    inspected: dict[str, Server] = {}
    for db in databases:
        if db.conninfo not in inspected:
            inspected[db.conninfo] = inspect_server(db.conninfo)
        db.server = inspected[db.conninfo]
    servers = list({id(s): s for s in inspected.values()}.values())
    findings: list[Finding] = []
    for server in servers:
        if server.error:
            aliases = ", ".join(d.alias for d in databases if d.server is server)
            findings.append(
                Finding(
                    "CG001", "error", server.address,
                    f"cannot connect to {server.address} ({aliases}): {server.error}",
                    "Check HOST/PORT/NAME/USER and that the server runs and accepts "
                    "connections from here.",
                )
            )  # fmt: skip
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
        what.add_argument("--dsn", help="a libpq connection string or URL to examine")
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


def run(args: argparse.Namespace) -> int:
    """``connguard doctor`` and ``manage.py connguard doctor``."""
    missing = missing_psycopg3("doctor")
    if missing:
        print(missing, file=sys.stderr)
        return 2
    notes: list[str] = []
    dsn = getattr(args, "dsn", None)
    if dsn is not None:
        databases = [dsn_database(args)]
    else:
        error = _setup_django(getattr(args, "settings", None))
        if error:
            print(f"connguard doctor: {error}", file=sys.stderr)
            return 2
        from django.core.exceptions import ImproperlyConfigured

        try:
            databases = django_databases(args.database)
        except ImproperlyConfigured as exc:  # bad OPTIONS["pool"] (connguard.E001)
            print(f"connguard doctor: {exc}", file=sys.stderr)
            return 2
        if not databases:
            print("connguard doctor: no PostgreSQL database in DATABASES", file=sys.stderr)
            return 2
    django_settings: Any = None
    if dsn is None:
        from django.conf import settings as django_settings
    model, process_findings = detect_processes(args, notes, django_settings)
    report = examine(databases, model, notes)
    report.findings = process_findings + report.findings
    if args.json:
        print(json.dumps(report.to_dict(args.strict), indent=2, default=str))
    else:
        render(report, color=not args.no_color)
    return report.exit_code(args.strict)


def _setup_django(settings_module: str | None) -> str | None:
    """Make Django's settings usable; an error text when there are none."""
    try:
        from django.conf import settings
    except ImportError:
        return "give --dsn (Django is not installed)"
    if settings.configured and settings_module is None:
        return None
    if settings_module:
        os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        return "give --dsn, or --settings (or DJANGO_SETTINGS_MODULE) for a Django project"
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    import django

    django.setup()
    return None


# -- output -----------------------------------------------------------------------------------


def report_lines(report: Report) -> list[tuple[str, str]]:
    """The text report as ``(line, style)``; style is a severity or ``""``/``"head"``."""
    lines: list[tuple[str, str]] = []
    add = lines.append
    for server in report.servers:
        add((f"Server {server.address}", "head"))
        if server.error:
            add((f"  unreachable: {server.error}", "error"))
            continue
        role = "standby in recovery" if server.in_recovery else "primary"
        access = "read-only" if server.in_recovery or server.default_read_only else "read-write"
        add((f"  PostgreSQL {server.version}, {role}, {access}", ""))
        reserved = f"superuser {server.superuser_reserved}"
        if server.version_num >= 160000:
            reserved += f", reserved_connections {server.reserved}"
        add(
            (
                f"  max_connections {server.max_connections}, reserved "
                f"{server.superuser_reserved + server.reserved} ({reserved}): "
                f"{server.budget} for applications",
                "",
            )
        )
        add(
            (
                f"  idle_session_timeout {_dur(server.idle_session_timeout)}, "
                "idle_in_transaction_session_timeout "
                f"{_dur(server.idle_in_transaction_session_timeout)}, "
                f"statement_timeout {_dur(server.statement_timeout)}",
                "",
            )
        )
        if server.via_tcp:
            add(
                (
                    f"  tcp_keepalives idle {server.tcp_keepalives_idle} s, interval "
                    f"{server.tcp_keepalives_interval} s, count {server.tcp_keepalives_count}",
                    "",
                )
            )
        add((f"  in front: {_describe_pooler(server.pooler)}", ""))
    add(("Processes", "head"))
    add((f"  {describe_processes(report.processes)}", ""))
    add(("Databases", "head"))
    width = max((len(d.alias) for d in report.databases), default=0)
    for db in report.databases:
        target = f"{db.server.address}/{db.server.dbname}" if db.server else "?"
        add((f"  {db.alias:<{width}}  {db.describe()} -> {target}", ""))
        if db.server is None or db.server.via_tcp:
            add((f"  {'':<{width}}  client TCP: {describe_client_tcp(db)}", ""))
    for need in report.demands:
        if need.formula:
            add(
                (
                    f"  at most {need.total} connections to {need.server} "
                    f"({need.formula}); it accepts {need.limit}",
                    "",
                )
            )
    for note in report.notes:
        add((f"  note: {note}", ""))
    add(("Findings", "head"))
    if not report.findings:
        add(("  none", ""))
    for f in report.findings:
        add((f"  {f.severity.upper():<7} {f.id}  {f.message}", f.severity))
        add((f"{'':17}fix: {f.fix}", ""))
    counts = [
        _plural(
            sum(1 for f in report.findings if f.severity == s), s, s + "s" if s != "info" else s
        )
        for s in SEVERITIES
    ]
    add((", ".join(counts), "head"))
    return lines


# Linux's defaults when neither the connection nor the system configuration sets them
_OS_KEEPALIVE = {"keepalives_idle": 7200, "keepalives_interval": 75, "keepalives_count": 9}
_OS_RETRANSMIT = 924.6  # tcp_retries2 = 15: how long unacknowledged data is retried


def client_tcp(db: Database) -> tuple[dict[str, int], list[str]]:
    """The TCP keepalive and tcp_user_timeout settings db's connections run with, and the
    keywords of them the user set (the rest: connguard's defaults for a connguard pool, the
    OS's otherwise; 0 means the OS's value, as in libpq)."""
    from psycopg import pq
    from psycopg.conninfo import conninfo_to_dict

    from connguard.drivers.base import TCP_DEFAULTS, libpq_connect_params

    try:
        given = {k: v for k, v in conninfo_to_dict(db.conninfo).items() if v is not None}
    except Exception:
        given = {}
    mine = [k for k in TCP_DEFAULTS if k in given]
    if db.mode == "connguard pool":
        given = {**given, **libpq_connect_params(given, {}, None, pq.version())}
    values: dict[str, int] = {}
    for key in TCP_DEFAULTS:
        try:
            values[key] = int(given.get(key, 1 if key == "keepalives" else 0))
        except (TypeError, ValueError):
            values[key] = 0
    for key, value in _OS_KEEPALIVE.items():
        if not values[key]:
            values[key] = _sysctl(key, value)
    return values, mine


def _sysctl(key: str, default: int) -> int:
    name = {"keepalives_idle": "time", "keepalives_interval": "intvl"}.get(key, "probes")
    try:
        return int(Path(f"/proc/sys/net/ipv4/tcp_keepalive_{name}").read_text().strip())
    except (OSError, ValueError):
        return default


def dead_path_bound(values: Mapping[str, int]) -> float | None:
    """Seconds after which the kernel reports a silently dropped connection that waits for
    the server (idle, or a query sent and acknowledged); None: never (keepalives off)."""
    if not values["keepalives"]:
        return None
    idle, interval = values["keepalives_idle"], values["keepalives_interval"]
    user_timeout = values["tcp_user_timeout"] / 1000
    if not user_timeout:
        return float(idle + interval * values["keepalives_count"])
    # with tcp_user_timeout the kernel gives up at the first probe tick past it (Linux)
    bound = float(idle + interval)
    while bound < user_timeout:
        bound += interval
    return bound


def describe_client_tcp(db: Database) -> str:
    values, mine = client_tcp(db)
    if not values["keepalives"]:
        keepalive = "keepalives off"
    else:
        keepalive = (
            f"keepalive after {values['keepalives_idle']} s idle, every "
            f"{values['keepalives_interval']} s, {values['keepalives_count']} probes"
        )
    user_timeout = values["tcp_user_timeout"]
    unacked = (
        f"tcp_user_timeout {_dur(user_timeout / 1000)}" if user_timeout else ("no tcp_user_timeout")
    )
    if db.mode == "connguard pool":
        rest = "connguard's defaults"
    else:
        rest = "libpq's and the OS's defaults"
    source = f"set: {', '.join(mine)}; {rest} for the rest" if mine else rest
    bound = dead_path_bound(values)
    found = (
        "a silently dropped connection is never found while idle"
        if bound is None
        else f"a silently dropped connection is found after {_about(bound)}"
    )
    if not user_timeout:
        found += f" ({_about(_OS_RETRANSMIT)} with a statement unacknowledged)"
    return f"{keepalive}; {unacked} ({source}): {found}"


def _describe_pooler(pooler: Pooler | None) -> str:
    if pooler is None:
        return "nothing (direct connection)"
    if pooler.kind == "proxy":
        return f"a proxy or port mapping ({pooler.detail})"
    return (
        f"PgBouncer {pooler.version}, pool_mode {pooler.pool_mode}, max_client_conn "
        f"{pooler.max_client_conn}, pool_size {pooler.pool_size}, client_idle_timeout "
        f"{_dur(pooler.client_idle_timeout)}"
    )


_STYLES = {"error": "bold red", "warning": "yellow", "info": "cyan", "head": "bold"}


def render(report: Report, color: bool = True, file: Any = None) -> None:
    """Print the report: rich colours on a terminal (when rich is installed), else plain."""
    out = file or sys.stdout
    lines = report_lines(report)
    if color and out.isatty():
        try:
            from rich.console import Console
            from rich.text import Text
        except ImportError:
            pass
        else:
            console = Console(file=out, highlight=False)
            for text, style in lines:
                console.print(Text(text, style=_STYLES.get(style, "")))
            return
    for text, _ in lines:
        print(text, file=out)


def _dur(seconds: float | None) -> str:
    """``off`` for 0, ``never`` for no bound, else ``1.5 s`` / ``3600 s`` / ``250 ms``."""
    if seconds is None or seconds == float("inf"):
        return "never"
    if not seconds:
        return "off"
    if seconds < 1:
        return f"{seconds * 1000:g} ms"
    return f"{seconds:g} s"


def _about(seconds: float) -> str:
    """A long duration for people: ``2 h 11 min``."""
    hours, rest = divmod(int(seconds), 3600)
    minutes = rest // 60
    if not hours:
        return f"{minutes} min" if minutes else f"{int(seconds)} s"
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def _plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def findings_table() -> Iterable[tuple[str, str, str]]:
    """``(id, severity, meaning)`` of every finding (for the docs)."""
    for fid, (severity, meaning) in FINDINGS.items():
        yield fid, severity, meaning
