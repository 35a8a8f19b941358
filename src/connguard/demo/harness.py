"""Real-process harness for ``connguard demo`` and the Django backend tests (tests/django).

It runs the demo project (:mod:`connguard.demo.project`) under real servers — gunicorn (sync with
``--preload``, gthread, gevent), uvicorn (ASGI), a Celery prefork worker, management
commands — as subprocesses pointed at a database on the test PostgreSQL server, drives them
with a bounded load client and checks the outcome:

* **errors** — failed requests (HTTP 5xx/4xx, connection errors, timeouts);
* **wrong** — a response that carries a different row/token than the one asked for
  (a crossed connection handed someone else's result);
* **lost** — writes acknowledged to the client whose rows are not in the database;
* **peak_server_connections** — the most client backends seen on the test database.

Each classic failure is a named scenario (``SCENARIOS``) run by :func:`run_scenario`::

    result = run_scenario("restart", {"ENGINE": "django.db.backends.postgresql"}, pg_server)
    assert result.errors > 0                    # stock backend
    result = run_scenario("restart", {"ENGINE": "connguard.backends.postgresql"}, pg_server)
    assert result.failures == 0                 # connguard

``pg_server`` is the rig's ``PostgresServer`` (duck-typed: ``conninfo()``, ``restart(mode=)``,
``set_config(restart=, **gucs)``, ``reset_config()``, ``create_database``/``drop_database``,
``terminate(like=)``).  The harness imports neither pytest nor Django: the tests and the
demo command both use it, and Django runs only in the processes it starts.
Every process is started in its own session and killed by its pid (process group) when its
:class:`Harness` exits, or at interpreter exit at the latest.  Every loop is bounded in
count and time, and everything talks to loopback only.
"""

from __future__ import annotations

import atexit
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

#: The Django project the harness runs: a package of connguard, so spawned processes import
#: it from wherever connguard itself is installed (no path to a source tree needed).
PROJECT = "connguard.demo.project"
SETTINGS_MODULE = f"{PROJECT}.settings"
WSGI_APP = f"{PROJECT}.wsgi:application"
ASGI_APP = f"{PROJECT}.asgi:application"
CELERY_APP = f"{PROJECT}.celery_app"
#: By file path, not ``python:<module>``: importing it as a module would import connguard
#: (hence Django and asgiref) in the gunicorn master before gevent's monkey-patching.
GEVENT_CONFIG = Path(__file__).resolve().parent / "project" / "gunicorn_gevent.py"
#: Celery task names (see project/celery_app.py)
TASK_ROW, TASK_WRITE = f"{PROJECT}.row", f"{PROJECT}.write"
PYTHON = sys.executable

STOCK_ENGINE = "django.db.backends.postgresql"
CONNGUARD_ENGINE = "connguard.backends.postgresql"

#: Items seeded in every scenario database: keys k0000..k0199, value "value-of-<key>".
N_ITEMS = 200

#: Defaults for the Django ``DATABASES["default"]`` keys the harness controls.
DEFAULT_DB_SETTINGS: dict[str, Any] = {
    "ENGINE": STOCK_ENGINE,
    "CONN_MAX_AGE": 0,
    "CONN_HEALTH_CHECKS": False,
    "OPTIONS": {},
    "DRIVER": None,  # "psycopg2": use psycopg2 even where psycopg 3 is installed
}


#: How PostgreSQL refuses a connection when max_connections is exhausted ("too many
#: clients" for superusers, "reserved for ... superuser" slots message for other roles).
TOO_MANY_CONNECTIONS = ("too many clients", "remaining connection slots are reserved")


class HarnessError(RuntimeError):
    """A process did not start / become ready, or a helper command failed."""


class ScenarioUnsupported(Exception):
    """The scenario cannot run in this environment (e.g. needs Django >= 5.1)."""


# --------------------------------------------------------------------------------------
# Database target


class AdminConnection:
    """An autocommit connection for the harness's own SQL, through psycopg 3 when it is
    installed, else psycopg2 (a psycopg2-only venv has only that): ``execute(sql, params)``
    returns the rows (``%s`` placeholders in both)."""

    def __init__(self, conninfo: str) -> None:
        self._conn: Any
        try:
            import psycopg
        except ImportError:
            import psycopg2

            self._conn = psycopg2.connect(conninfo)
            self._conn.autocommit = True
        else:
            self._conn = psycopg.connect(conninfo, autocommit=True)

    @property
    def closed(self) -> bool:
        return bool(self._conn.closed)

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]:
        cur = self._conn.cursor()
        try:
            cur.execute(sql, params)
            return list(cur.fetchall()) if cur.description else []
        finally:
            cur.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._conn.close()

    def __enter__(self) -> AdminConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def parse_conninfo(conninfo: str) -> dict[str, str]:
    """A libpq keyword string or URL as a dict (psycopg 3's parser, else psycopg2's)."""
    try:
        from psycopg.conninfo import conninfo_to_dict
    except ImportError:
        from psycopg2.extensions import parse_dsn

        return {k: str(v) for k, v in parse_dsn(conninfo).items()}
    return {k: str(v) for k, v in conninfo_to_dict(conninfo).items() if v is not None}


def make_conninfo(**params: Any) -> str:
    """A libpq keyword string (values quoted as libpq wants)."""
    def quote(value: Any) -> str:
        text = str(value)
        if text and not any(c in text for c in " '\\\t\n"):
            return text
        return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"

    return " ".join(f"{k}={quote(v)}" for k, v in params.items() if v is not None)


@dataclass(frozen=True)
class DbTarget:
    """Where the test project's database lives (from the server's conninfo)."""

    host: str
    port: int
    user: str
    password: str
    dbname: str

    @classmethod
    def from_server(cls, pg_server: Any, dbname: str) -> DbTarget:
        raw = pg_server.conninfo() if callable(getattr(pg_server, "conninfo", None)) else ""
        info = parse_conninfo(raw) if raw else {}
        host = str(info.get("host") or getattr(pg_server, "host", None) or "127.0.0.1")
        port = int(info.get("port") or getattr(pg_server, "port", None) or 5432)
        user = str(info.get("user") or getattr(pg_server, "user", None) or "postgres")
        password = str(info.get("password") or getattr(pg_server, "password", None) or "")
        return cls(host=host, port=port, user=user, password=password, dbname=dbname)

    def conninfo(self, dbname: str | None = None) -> str:
        return make_conninfo(
            host=self.host, port=self.port, user=self.user, dbname=dbname or self.dbname,
            password=self.password or None, connect_timeout=5,
            application_name="connguard-harness",
        )

    def connect(self, dbname: str | None = None) -> AdminConnection:
        return AdminConnection(self.conninfo(dbname))

    def execute(self, sql: str, params: Sequence[Any] | None = None,
                dbname: str | None = None) -> list[tuple]:
        with self.connect(dbname) as conn:
            return conn.execute(sql, params)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def create_database(pg_server: Any, name: str, template: str | None = None) -> None:
    """Create database ``name`` on the server (``pg_server.create_database`` when it has one),
    as a copy of ``template`` when given (see :func:`prepare_template`)."""
    if template is not None:
        DbTarget.from_server(pg_server, "postgres").execute(
            f"CREATE DATABASE {_quote_ident(name)} TEMPLATE {_quote_ident(template)}",
            dbname="postgres")
        return
    if callable(getattr(pg_server, "create_database", None)):
        pg_server.create_database(name)
        return
    DbTarget.from_server(pg_server, "postgres").execute(f"CREATE DATABASE {_quote_ident(name)}",
                                                        dbname="postgres")


def drop_database(pg_server: Any, name: str, *, deadline: float | None = None) -> None:
    """Drop database ``name``; falls back to ``DROP DATABASE ... WITH (FORCE)``. Never raises."""
    deadline = deadline or time.monotonic() + 10
    if callable(getattr(pg_server, "drop_database", None)):
        with contextlib.suppress(Exception):
            pg_server.drop_database(name)
            return
    target = DbTarget.from_server(pg_server, "postgres")
    while time.monotonic() < deadline:
        try:
            target.execute(f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)",
                           dbname="postgres")
            return
        except Exception:
            time.sleep(0.3)


def set_database_config(target: DbTarget, **gucs: Any) -> None:
    """``ALTER DATABASE <target> SET guc = value`` (applies to sessions opened afterwards).

    Scoped to the scenario's own database, so it never affects other tests on the server.
    """
    for guc, value in gucs.items():
        if not guc.replace("_", "").isalnum():
            raise ValueError(f"bad GUC name {guc!r}")
        literal = "'" + str(value).replace("'", "''") + "'"  # ALTER ... SET takes no parameters
        target.execute(f"ALTER DATABASE {_quote_ident(target.dbname)} SET {guc} = {literal}",
                       dbname="postgres")


def count_lost_writes(target: DbTarget, tokens: Sequence[str], table: str = "cg_write") -> int:
    """How many acknowledged ``tokens`` have no row in ``table`` (cg_write or cg_event)."""
    if not tokens:
        return 0
    if table not in ("cg_write", "cg_event"):
        raise ValueError(f"unknown table {table!r}")
    rows = target.execute(f"SELECT token FROM {table} WHERE token = ANY(%s)", [list(tokens)])
    return len(set(tokens) - {r[0] for r in rows})


def count_server_connections(target: DbTarget) -> int:
    """Client backends currently connected to the target database."""
    rows = target.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
        "AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
        [target.dbname], dbname="postgres",
    )
    return int(rows[0][0])


class ConnectionMonitor:
    """Background sampler of client connections to the target database (peak tracking).

    Keeps one persistent admin connection (to the ``postgres`` database, so it is not counted)
    opened *before* the load, so it still works when the server is out of slots.  Bounded by
    ``max_seconds``; reconnects (rate-limited) after a server restart.
    """

    def __init__(self, target: DbTarget, *, interval: float = 0.05, max_seconds: float = 120.0):
        self.target = target
        self.interval = interval
        self.max_seconds = max_seconds
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Any = None

    def _query(self) -> int:
        if self._conn is None or self._conn.closed:
            self._conn = self.target.connect("postgres")
        row = self._conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
            "AND backend_type = 'client backend'",
            [self.target.dbname],
        )
        return int(row[0][0])

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                n = self._query()
                self.samples += 1
                self.peak = max(self.peak, n)
            except Exception:
                with contextlib.suppress(Exception):
                    if self._conn is not None:
                        self._conn.close()
                self._conn = None
                self._stop.wait(0.25)
            self._stop.wait(self.interval)

    def start(self) -> ConnectionMonitor:
        with contextlib.suppress(Exception):
            self.peak = max(self.peak, self._query())  # open the admin connection now
        self._thread = threading.Thread(target=self._run, name="cg-conn-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._thread is None or not self._thread.is_alive():
            # a last sample: a load shorter than the interval may end between two samples,
            # while the connections it opened (persistent or pooled) are still there
            with contextlib.suppress(Exception):
                self.peak = max(self.peak, self._query())
        with contextlib.suppress(Exception):
            if self._conn is not None:
                self._conn.close()
        self._conn = None
        return self.peak

    def __enter__(self) -> ConnectionMonitor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --------------------------------------------------------------------------------------
# Environment and processes


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _import_root() -> str | None:
    """The directory this ``connguard`` package was imported from, when a fresh interpreter
    would not look there by itself (a source tree on ``sys.path``, not an installed copy)."""
    import site

    import connguard

    root = str(Path(connguard.__file__).resolve().parent.parent)
    installed = {str(Path(p).resolve()) for p in site.getsitepackages()}
    with contextlib.suppress(Exception):
        installed.add(str(Path(site.getusersitepackages()).resolve()))
    return None if root in installed else root


def django_env(target: DbTarget, settings: Mapping[str, Any] | None = None, *,
               app_name: str | None = None, **flags: Any) -> dict[str, str]:
    """Environment for a project process.

    ``settings`` holds ``DATABASES["default"]`` keys (ENGINE, CONN_MAX_AGE,
    CONN_HEALTH_CHECKS, DISABLE_SERVER_SIDE_CURSORS, OPTIONS) over :data:`DEFAULT_DB_SETTINGS`, plus ``DRIVER``
    (``"psycopg2"`` makes Django use psycopg2 even where psycopg 3 is installed); ``flags``
    become ``CGT_<NAME>`` variables (QUERY_IN_READY, IMPORT_TIME_QUERY, CELERY_DIR,
    CELERY_DB_REUSE_MAX, ...).  ``None``/``False`` flags are left out.  ``app_name`` starts
    every connection's ``application_name`` (``<app_name>:<alias>:<pid>``, on both engines),
    so that :meth:`Harness.terminate` finds the project's backends.

    The project is imported from the same connguard as this module: its source root is put
    on ``PYTHONPATH`` when it is not an installed package.
    """
    s = {**DEFAULT_DB_SETTINGS, **(settings or {})}
    env = {k: v for k, v in os.environ.items() if not k.startswith("CGT_")}
    for var in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "CONNGUARD_APP_NAME"):
        env.pop(var, None)
    pythonpath = [p for p in (_import_root(), os.environ.get("PYTHONPATH")) if p]
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    env["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    if app_name:
        env["CONNGUARD_APP_NAME"] = app_name
    if s.get("DRIVER"):
        env["CGT_DB_DRIVER"] = str(s["DRIVER"])
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["CGT_DB_ENGINE"] = str(s["ENGINE"])
    env["CGT_DB_NAME"] = target.dbname
    env["CGT_DB_HOST"] = target.host
    env["CGT_DB_PORT"] = str(target.port)
    env["CGT_DB_USER"] = target.user
    env["CGT_DB_PASSWORD"] = target.password
    max_age = s.get("CONN_MAX_AGE")
    env["CGT_CONN_MAX_AGE"] = "none" if max_age is None else str(int(max_age))
    env["CGT_CONN_HEALTH_CHECKS"] = "1" if s.get("CONN_HEALTH_CHECKS") else "0"
    env["CGT_DISABLE_SERVER_SIDE_CURSORS"] = "1" if s.get("DISABLE_SERVER_SIDE_CURSORS") else "0"
    env["CGT_DB_OPTIONS"] = json.dumps(s.get("OPTIONS") or {})
    for name, value in flags.items():
        if value is None or value is False:
            continue
        env["CGT_" + name.upper()] = "1" if value is True else str(value)
    return env


_LIVE: dict[int, ManagedProcess] = {}
_LIVE_LOCK = threading.Lock()


class ManagedProcess:
    """A subprocess in its own session/process group, output to a log file.

    :meth:`stop` sends SIGTERM to the group (its pid), then SIGKILL after ``timeout``; all
    live instances are stopped at interpreter exit as a last resort.
    """

    def __init__(self, name: str, argv: Sequence[str], *, env: Mapping[str, str],
                 log_dir: Path, cwd: Path | None = None, stop_signal: int = signal.SIGTERM):
        self.name = name
        self.argv = list(argv)
        self.stop_signal = stop_signal
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            self.argv, env=dict(env), cwd=str(cwd or log_dir), stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.pid = self.popen.pid
        with _LIVE_LOCK:
            _LIVE[self.pid] = self

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self, limit: int = 6000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-limit:].decode("utf-8", "replace")

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def stop(self, timeout: float = 8.0) -> int | None:
        if self.popen.poll() is None:
            self._signal_group(self.stop_signal)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(timeout=5)
        # Leftover children of the group (workers orphaned by a dead master).
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(Exception):
            self._log.close()
        with _LIVE_LOCK:
            _LIVE.pop(self.pid, None)
        return self.popen.returncode

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} pid={self.pid}>"


@atexit.register
def _stop_all_live() -> None:  # pragma: no cover - safety net
    with _LIVE_LOCK:
        live = list(_LIVE.values())
    for proc in live:
        with contextlib.suppress(Exception):
            proc.stop(timeout=3)


class HttpServer(ManagedProcess):
    """A server process listening on ``127.0.0.1:port``."""

    def __init__(self, name: str, argv: Sequence[str], *, port: int, **kwargs: Any):
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        super().__init__(name, argv, **kwargs)

    def wait_ready(self, path: str = "/health", timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not self.alive():
                raise HarnessError(f"{self.name} exited ({self.popen.returncode}):\n"
                                   f"{self.log_text()}")
            status, _, err = http_get(self.base_url + path, timeout=2.0)
            if status == 200:
                return
            last = err or f"HTTP {status}"
            time.sleep(0.1)
        raise HarnessError(f"{self.name} not ready after {timeout}s ({last}):\n{self.log_text()}")


class CeleryWorker(ManagedProcess):
    """A Celery worker plus a Django-free client app on the same filesystem broker."""

    def __init__(self, name: str, argv: Sequence[str], *, celery_dir: Path, **kwargs: Any):
        self.celery_dir = celery_dir
        super().__init__(name, argv, **kwargs)
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = celery_client(self.celery_dir)
        return self._client

    def send(self, task: str, *args: Any) -> Any:
        return self.client.send_task(task, args=list(args))

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Ready once a row task round-trips (also warms a connection)."""
        res = self.send(TASK_ROW, "k0000")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise HarnessError(f"{self.name} exited:\n{self.log_text()}")
            if res.ready():
                return
            time.sleep(0.1)
        raise HarnessError(f"{self.name} not ready after {timeout}s:\n{self.log_text()}")


def celery_client(celery_dir: Path) -> Any:
    """A Celery app (no Django) that publishes to / reads results from ``celery_dir``."""
    from celery import Celery

    app = Celery("connguard-harness-client", set_as_current=False)
    app.conf.update(_celery_config(celery_dir))
    return app


def _celery_config(celery_dir: Path) -> dict[str, Any]:
    """The project's Celery settings (creates the folders), imported without Django."""
    from connguard.demo.project.celery_config import celery_config

    return celery_config(celery_dir)


def run_manage(env: Mapping[str, str], *args: str, timeout: float = 120.0,
               check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``manage.py <args>`` to completion (killed by pid group on timeout)."""
    proc = subprocess.Popen(
        [PYTHON, "-m", f"{PROJECT}.manage", *args], env=dict(env),
        cwd=str(cwd or tempfile.gettempdir()),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        raise HarnessError(f"manage.py {' '.join(args)} timed out after {timeout}s:\n{err}") \
            from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # forked leftovers, if any
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    if check and proc.returncode != 0:
        raise HarnessError(f"manage.py {' '.join(args)} failed ({proc.returncode}):\n{err}")
    return result


# --------------------------------------------------------------------------------------
# Load client


def http_get(url: str, timeout: float = 10.0) -> tuple[int | None, Any, str | None]:
    """GET ``url``: ``(status, parsed JSON body or None, error text or None)``."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80,
                                      timeout=timeout)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("GET", path or "/", headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read()
        status = resp.status
    except Exception as exc:
        return None, None, f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    return status, data, None


def _short(text: str, limit: int = 160) -> str:
    """One line of at most ``limit`` characters, cut after a whole word (then ``…``)."""
    line = " ".join(str(text).split())
    if len(line) <= limit:
        return line
    cut = line[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut) + "…"


def _error_key(text: str, limit: int = 160) -> str:
    """An error message as a sample key: one line, numbers (ports, pids, sizes) as N."""
    return _short(re.sub(r"\d+(?:\.\d+)?", "N", _short(text, 400)), limit)


@dataclass
class LoadResult:
    """Outcome of :func:`run_load`."""

    requests: int = 0
    ok: int = 0
    errors: int = 0
    wrong: int = 0
    not_sent: int = 0
    elapsed: float = 0.0
    status_counts: Counter = field(default_factory=Counter)
    error_samples: Counter = field(default_factory=Counter)
    acked_tokens: list[str] = field(default_factory=list)
    wrong_samples: list[str] = field(default_factory=list)
    #: seconds each sent request took (successful or not)
    latencies: list[float] = field(default_factory=list)

    @property
    def max_latency(self) -> float:
        return max(self.latencies, default=0.0)

    def merge(self, other: LoadResult) -> LoadResult:
        """Add ``other``'s counts to this one (returns self)."""
        for name in ("requests", "ok", "errors", "wrong", "not_sent"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.elapsed += other.elapsed
        self.status_counts.update(other.status_counts)
        self.error_samples.update(other.error_samples)
        self.acked_tokens.extend(other.acked_tokens)
        self.wrong_samples.extend(other.wrong_samples[: max(0, 10 - len(self.wrong_samples))])
        self.latencies.extend(other.latencies)
        return self


#: Paths whose last segment is a token written (and read back) by the view.
WRITE_KINDS = ("write", "multi")


def check_response(path: str, status: int | None, data: Any) -> str:
    """Classify one response: ``"ok"``, ``"wrong"`` or ``"error"``.

    ``/row/<key>`` must return that key; ``/write/<token>`` (and ``/multi/<token>``) must
    return ``ok`` and that token (then it counts as acknowledged); anything else just needs
    HTTP 200.
    """
    if status != 200 or not isinstance(data, dict):
        return "error"
    parts = [p for p in path.split("?")[0].split("/") if p]
    if len(parts) >= 2 and parts[-2] == "row":
        return "ok" if data.get("key") == parts[-1] else "wrong"
    if len(parts) >= 2 and parts[-2] in WRITE_KINDS:
        if data.get("ok") is not True:
            return "error"
        return "ok" if data.get("token") == parts[-1] else "wrong"
    return "ok"


def run_load(base_url: str, paths: Sequence[str], *, concurrency: int = 8,
             timeout: float = 10.0, deadline: float = 30.0) -> LoadResult:
    """Send each of ``paths`` once (GET) with ``concurrency`` threads.

    Bounded: at most ``len(paths)`` requests, each with a ``timeout``; requests not started
    within ``deadline`` seconds are skipped (``not_sent``).
    """
    result = LoadResult()
    lock = threading.Lock()
    start = time.monotonic()
    stop_at = start + deadline

    def one(path: str) -> None:
        if time.monotonic() >= stop_at:
            with lock:
                result.not_sent += 1
            return
        sent = time.monotonic()
        status, data, err = http_get(base_url + path, timeout=timeout)
        took = time.monotonic() - sent
        verdict = check_response(path, status, data)
        with lock:
            result.requests += 1
            result.latencies.append(took)
            result.status_counts[str(status) if status is not None else "no-response"] += 1
            if verdict == "ok":
                result.ok += 1
                parts = [p for p in path.split("/") if p]
                if len(parts) >= 2 and parts[-2] in WRITE_KINDS:
                    result.acked_tokens.append(parts[-1])
            elif verdict == "wrong":
                result.wrong += 1
                if len(result.wrong_samples) < 10:
                    result.wrong_samples.append(f"{path} -> {_short(json.dumps(data), 200)}")
            else:
                result.errors += 1
                if err is not None:
                    msg = err
                elif isinstance(data, dict) and "error" in data:
                    msg = f"{data['error']}: {data.get('message', '')}"
                else:
                    msg = f"HTTP {status}"
                result.error_samples[_error_key(msg)] += 1

    with ThreadPoolExecutor(max_workers=max(1, concurrency),
                            thread_name_prefix="cg-load") as pool:
        list(pool.map(one, paths))
    result.elapsed = time.monotonic() - start
    return result


def mixed_paths(n: int, *, write_every: int = 4, prefix: str = "", tag: str | None = None,
                offset: int = 0, write: str = "write") -> list[str]:
    """``n`` paths: ``/row/kNNNN`` reads with every ``write_every``-th a unique ``/write``
    (``/<write>/<token>``: ``multi`` writes to both databases)."""
    tag = tag or uuid.uuid4().hex[:8]
    out = []
    for i in range(n):
        if write_every and i % write_every == write_every - 1:
            out.append(f"{prefix}/{write}/{tag}-{offset + i}")
        else:
            out.append(f"{prefix}/row/k{(offset + i * 7) % N_ITEMS:04d}")
    return out


# --------------------------------------------------------------------------------------
# Harness


class Harness:
    """Processes + database for one scenario/test; stops every process on exit.

    Logs go to ``log_dir`` (default: a temp dir removed on exit unless ``CG_KEEP_LOGS`` is set).

    ``with Harness(pg_server, "dbname") as h: h.prepare(); srv = h.gunicorn(h.env()) ...``
    """

    def __init__(self, pg_server: Any, database: str, *, log_dir: Path | None = None,
                 quick: bool = False):
        self.pg_server = pg_server
        #: smaller loads and shorter sleeps in the scenarios that support it (demo --quick)
        self.quick = quick
        self.target = DbTarget.from_server(pg_server, database)
        self._own_log_dir = log_dir is None
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="cg-django-"))
        self.processes: list[ManagedProcess] = []
        #: every project connection's application_name starts with this (see terminate())
        self.app_name = f"cgt{uuid.uuid4().hex[:8]}"

    # environment / database -----------------------------------------------------------
    def env(self, settings: Mapping[str, Any] | None = None, **flags: Any) -> dict[str, str]:
        return django_env(self.target, settings, app_name=self.app_name, **flags)

    def size(self, n: int) -> int:
        """A request count: ``n``, or 40 % of it (at least 8) in quick mode."""
        return max(8, n * 2 // 5) if self.quick else n

    def terminate(self) -> int:
        """``pg_terminate_backend`` every server connection of the project's processes
        (``pg_server.terminate(like="<app_name>:%")``); returns how many."""
        return int(self.pg_server.terminate(like=f"{self.app_name}:%"))

    def migrate(self, settings: Mapping[str, Any] | None = None, timeout: float = 120,
                database: str = "default", **flags: Any) -> None:
        """``manage.py migrate`` against the target database (no fork-bug flags)."""
        run_manage(self.env(settings, **flags), "migrate", "--noinput", "-v", "0",
                   "--database", database, timeout=timeout, cwd=self.log_dir)

    def seed(self, n: int = N_ITEMS) -> None:
        self.target.execute(
            "INSERT INTO cg_item (key, value) SELECT 'k' || lpad(i::text, 4, '0'), "
            "'value-of-k' || lpad(i::text, 4, '0') FROM generate_series(0, %s) AS i "
            "ON CONFLICT (key) DO NOTHING",
            [n - 1],
        )

    def is_migrated(self) -> bool:
        """The target database has the project's latest migration (e.g. a copy of a
        :func:`prepare_template` database): ``prepare()`` can skip ``migrate``."""
        try:
            rows = self.target.execute(
                "SELECT 1 FROM django_migrations WHERE app = 'testapp' AND name = %s",
                [latest_migration()])
        except Exception:  # no django_migrations table yet
            return False
        return bool(rows)

    def prepare(self, settings: Mapping[str, Any] | None = None, n_items: int = N_ITEMS,
                **flags: Any) -> None:
        """Migrate and seed the target database (and ``other``, with ``DB_OTHER_NAME``)."""
        # Migrations always run on the stock engine: the scenario is about the servers.
        stock = {**(settings or {}), "ENGINE": STOCK_ENGINE, "OPTIONS": {}}
        if not self.is_migrated():
            self.migrate(stock, **flags)
        if flags.get("DB_OTHER_NAME"):
            self.migrate(stock, database="other", **flags)
        self.seed(n_items)

    def set_database_config(self, **gucs: Any) -> None:
        set_database_config(self.target, **gucs)

    def lost_writes(self, tokens: Sequence[str]) -> int:
        return count_lost_writes(self.target, tokens)

    def monitor(self, **kwargs: Any) -> ConnectionMonitor:
        return ConnectionMonitor(self.target, **kwargs)

    def connections(self) -> int:
        return count_server_connections(self.target)

    # processes ---------------------------------------------------------------------------
    def _track(self, proc: ManagedProcess) -> ManagedProcess:
        self.processes.append(proc)
        return proc

    def gunicorn(self, env: Mapping[str, str], *, worker_class: str = "sync", workers: int = 2,
                 threads: int = 1, preload: bool = False, worker_connections: int | None = None,
                 timeout: int = 30, config: str | Path | None = None,
                 app: str = WSGI_APP, extra_args: Sequence[str] = (),
                 ready_timeout: float = 30.0) -> HttpServer:
        """Start gunicorn on a free loopback port and wait for ``/health``."""
        port = free_port()
        argv = [PYTHON, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}",
                "--workers", str(workers), "--worker-class", worker_class,
                "--timeout", str(timeout), "--graceful-timeout", "2",
                "--backlog", "512", "--log-level", "warning", "--error-logfile", "-"]
        if worker_class == "gthread":
            argv += ["--threads", str(threads)]
        if worker_connections is not None:
            argv += ["--worker-connections", str(worker_connections)]
        if preload:
            argv.append("--preload")
        if config is not None:
            argv += ["--config", str(config)]
        argv += [*extra_args, app]
        srv = HttpServer(f"gunicorn-{worker_class}", argv, port=port, env=env,
                         log_dir=self.log_dir)
        self._track(srv)
        srv.wait_ready(timeout=ready_timeout)
        return srv

    def uvicorn(self, env: Mapping[str, str], *, workers: int = 1,
                app: str = ASGI_APP, extra_args: Sequence[str] = (),
                ready_timeout: float = 30.0) -> HttpServer:
        """Start uvicorn (ASGI) on a free loopback port and wait for ``/health``."""
        port = free_port()
        argv = [PYTHON, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(workers), "--log-level", "warning", "--no-access-log",
                "--timeout-graceful-shutdown", "2", "--backlog", "512", *extra_args]
        srv = HttpServer("uvicorn", argv, port=port, env=env, log_dir=self.log_dir)
        self._track(srv)
        srv.wait_ready(timeout=ready_timeout)
        return srv

    def celery_worker(self, env: Mapping[str, str], *, concurrency: int = 2,
                      pool: str = "prefork", ready_timeout: float = 60.0) -> CeleryWorker:
        """Start a Celery worker on a fresh filesystem broker; ready once a task round-trips.

        ``env`` may carry ``CGT_CELERY_DIR``; otherwise one is made under the log dir.
        """
        env = dict(env)
        celery_dir = Path(env.get("CGT_CELERY_DIR") or self.log_dir / f"celery-{uuid.uuid4().hex[:6]}")
        env["CGT_CELERY_DIR"] = str(celery_dir)
        _celery_config(celery_dir)  # creates queue/processed/results folders
        argv = [PYTHON, "-m", "celery", "-A", CELERY_APP, "worker",
                "-P", pool, "-c", str(concurrency), "--loglevel", "WARNING",
                "--without-gossip", "--without-mingle", "--without-heartbeat"]
        worker = CeleryWorker("celery", argv, celery_dir=celery_dir, env=env,
                              log_dir=self.log_dir, stop_signal=signal.SIGQUIT)
        self._track(worker)
        worker.wait_ready(timeout=ready_timeout)
        return worker

    def manage(self, env: Mapping[str, str], *args: str, timeout: float = 120.0,
               check: bool = False) -> subprocess.CompletedProcess[str]:
        return run_manage(env, *args, timeout=timeout, check=check, cwd=self.log_dir)

    def load(self, server: HttpServer | str, paths: Sequence[str], **kwargs: Any) -> LoadResult:
        base = server if isinstance(server, str) else server.base_url
        return run_load(base, paths, **kwargs)

    def stop_all(self) -> None:
        for proc in reversed(self.processes):
            with contextlib.suppress(Exception):
                proc.stop()
        self.processes.clear()

    def logs(self, limit: int = 3000) -> str:
        return "\n".join(f"--- {p.name} ({p.log_path}) ---\n{p.log_text(limit)}"
                         for p in self.processes)

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
        if self._own_log_dir and not os.environ.get("CG_KEEP_LOGS"):
            shutil.rmtree(self.log_dir, ignore_errors=True)


# --------------------------------------------------------------------------------------
# Scenarios


@dataclass
class Result:
    """Outcome of one scenario run (see :func:`run_scenario`)."""

    scenario: str
    engine: str
    requests: int = 0
    ok: int = 0
    errors: int = 0
    wrong: int = 0
    lost: int = 0
    peak_server_connections: int = 0
    duration: float = 0.0
    status_counts: dict[str, int] = field(default_factory=dict)
    error_samples: dict[str, int] = field(default_factory=dict)
    wrong_samples: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def failures(self) -> int:
        """errors + wrong + lost: what connguard must bring to zero."""
        return self.errors + self.wrong + self.lost

    def has_error(self, *needles: str) -> bool:
        """True if any error sample contains any of ``needles`` (case-insensitive)."""
        lowered = [n.lower() for n in needles]
        return any(n in msg.lower() for msg in self.error_samples for n in lowered)

    def has_too_many_connections(self) -> bool:
        """The server refused connections for lack of slots (superuser or not)."""
        return self.has_error(*TOO_MANY_CONNECTIONS)

    def add_load(self, load: LoadResult) -> None:
        self.requests += load.requests
        self.ok += load.ok
        self.errors += load.errors
        self.wrong += load.wrong
        for k, v in load.status_counts.items():
            self.status_counts[k] = self.status_counts.get(k, 0) + v
        for k, v in load.error_samples.items():
            self.error_samples[k] = self.error_samples.get(k, 0) + v
        self.wrong_samples.extend(load.wrong_samples[: max(0, 10 - len(self.wrong_samples))])

    def add_error(self, message: str, count: int = 1) -> None:
        self.errors += count
        key = _error_key(message)
        self.error_samples[key] = self.error_samples.get(key, 0) + count

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["failures"] = self.failures
        return data

    def summary(self) -> str:
        top = sorted(self.error_samples.items(), key=lambda kv: -kv[1])[:3]
        errs = "; ".join(f"{n}x {m}" for m, n in top)
        return (f"[{self.scenario} / {self.engine}] requests={self.requests} ok={self.ok} "
                f"errors={self.errors} wrong={self.wrong} lost={self.lost} "
                f"peak_conns={self.peak_server_connections} in {self.duration:.1f}s"
                + (f" | {errs}" if errs else "")
                + (f" | wrong e.g. {self.wrong_samples[0]}" if self.wrong_samples else "")
                + (f" | notes: {' '.join(self.notes)}" if self.notes else ""))


ScenarioFn = Callable[[Harness, dict[str, Any], Result], None]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    fn: ScenarioFn
    defaults: Mapping[str, Any] = field(default_factory=dict)
    #: The failure the stock backend shows (documentation / demo output).
    stock_failure: str = ""
    requires: Callable[[dict[str, Any]], str | None] | None = None
    #: a control or correctness check: the stock backend passes it too
    control: bool = False


SCENARIOS: dict[str, Scenario] = {}


def scenario(name: str, description: str, *, defaults: Mapping[str, Any] | None = None,
             stock_failure: str = "",
             requires: Callable[[dict[str, Any]], str | None] | None = None,
             control: bool = False) -> Callable[[ScenarioFn], ScenarioFn]:
    def register(fn: ScenarioFn) -> ScenarioFn:
        SCENARIOS[name] = Scenario(name, description, fn, dict(defaults or {}), stock_failure,
                                   requires, control)
        return fn

    return register


def run_scenario(name: str, engine_settings: Mapping[str, Any] | None, pg_server: Any, *,
                 database: str | None = None, log_dir: Path | None = None,
                 template: str | None = None, quick: bool = False) -> Result:
    """Run scenario ``name`` against ``pg_server`` and return its :class:`Result`.

    ``engine_settings`` overlays ``DATABASES["default"]`` keys (ENGINE, CONN_MAX_AGE,
    CONN_HEALTH_CHECKS, OPTIONS — OPTIONS replaces the scenario's whole) on the scenario's
    defaults (which reproduce the failure on the stock backend).  Without ``database`` a
    fresh one is created on the server (a copy of ``template``, when given: see
    :func:`prepare_template`) and dropped afterwards.  ``quick`` trims request counts and
    the flood's request duration (``connguard demo --quick``).  Raises
    :class:`ScenarioUnsupported` when the scenario cannot run here.
    """
    spec = SCENARIOS[name]
    settings: dict[str, Any] = {**DEFAULT_DB_SETTINGS, **spec.defaults, **(engine_settings or {})}
    if spec.requires is not None:
        reason = spec.requires(settings)
        if reason:
            raise ScenarioUnsupported(f"{name}: {reason}")
    created = database is None
    if database is None:
        database = f"cg_{name}_{uuid.uuid4().hex[:8]}"[:63]
        create_database(pg_server, database, template=template)
    result = Result(scenario=name, engine=str(settings["ENGINE"]))
    result.details["settings"] = settings
    started = time.monotonic()
    try:
        with Harness(pg_server, database, log_dir=log_dir, quick=quick) as h:
            if log_dir is not None or os.environ.get("CG_KEEP_LOGS"):
                result.details["log_dir"] = str(h.log_dir)
            try:
                spec.fn(h, settings, result)
            except HarnessError:
                raise
            finally:
                result.details["logs_tail"] = h.logs(1500)
    finally:
        result.duration = time.monotonic() - started
        if created:
            drop_database(pg_server, database)
    return result


def latest_migration() -> str:
    """The name of the project app's last migration (``0002_event``)."""
    folder = Path(__file__).resolve().parent / "project" / "app" / "migrations"
    return max(p.stem for p in folder.glob("[0-9][0-9][0-9][0-9]_*.py"))


def prepare_template(pg_server: Any, name: str, *, log_dir: Path | None = None) -> str:
    """Create database ``name``, migrated and seeded: scenarios given ``template=name`` start
    from a copy of it (``CREATE DATABASE ... TEMPLATE``) instead of migrating their own.
    Nothing may stay connected to it (the harness closes its own connections)."""
    create_database(pg_server, name)
    with Harness(pg_server, name, log_dir=log_dir) as h:
        h.prepare()
    return name


def _needs_django_pool(settings: dict[str, Any]) -> str | None:
    """On the stock engine, OPTIONS["pool"] is Django's pool (5.1+, psycopg_pool);
    connguard takes the same keys on any Django version."""
    if settings.get("ENGINE") != STOCK_ENGINE:
        return None
    import importlib.metadata
    import importlib.util

    version = importlib.metadata.version("django")
    if tuple(int(x) for x in version.split(".")[:2]) < (5, 1):
        return f"Django's built-in pool needs Django >= 5.1 (have {version})"
    if importlib.util.find_spec("psycopg_pool") is None:
        return "psycopg_pool is not installed"
    return None


def _restart_server(pg_server: Any) -> None:
    try:
        pg_server.restart(mode="fast")
    except TypeError:
        pg_server.restart("fast")


def _set_server_config(pg_server: Any, **gucs: Any) -> None:
    pg_server.set_config(restart=True, **gucs)


def _reset_server_config(pg_server: Any, target: DbTarget, **expected: Any) -> None:
    """Undo :func:`_set_server_config`; restarts if a restart-only GUC is still in force."""
    with contextlib.suppress(Exception):
        pg_server.reset_config()
    for guc, value in expected.items():
        try:
            current = target.execute(f"SHOW {guc}", dbname="postgres")[0][0]
        except Exception:
            current = None
        if current is not None and str(current) == str(value):
            _restart_server(pg_server)
            break


def _preload_common(h: Harness, settings: dict[str, Any], result: Result, *,
                    query_in_ready: bool = False, import_time_query: bool = False,
                    workers: int = 4, n: int = 400, concurrency: int = 16) -> None:
    h.prepare(settings)
    env = h.env(settings, QUERY_IN_READY=query_in_ready, IMPORT_TIME_QUERY=import_time_query)
    srv = h.gunicorn(env, worker_class="sync", workers=workers, preload=True, timeout=6)
    tag = uuid.uuid4().hex[:8]
    with h.monitor() as mon:
        load = h.load(srv, mixed_paths(h.size(n), write_every=3, tag=tag), concurrency=concurrency,
                      timeout=5.0, deadline=16.0)
    result.add_load(load)
    result.peak_server_connections = mon.peak
    result.lost = h.lost_writes(load.acked_tokens)
    result.details["acked_writes"] = len(load.acked_tokens)
    result.details["not_sent"] = load.not_sent
    if load.not_sent:
        result.notes.append(f"{load.not_sent} requests not sent before the deadline")


@scenario(
    "baseline",
    "no fault: gunicorn gthread -w 2 --threads 4 and uvicorn (async views), 200 mixed "
    "reads/writes each, 8 at a time",
    stock_failure="none: the control run (the harness must report zero failures)",
    control=True,
)
def _scenario_baseline(h: Harness, settings: dict[str, Any], result: Result) -> None:
    h.prepare(settings)
    env = h.env(settings)
    with h.monitor() as mon:
        srv = h.gunicorn(env, worker_class="gthread", workers=2, threads=4)
        load = h.load(srv, mixed_paths(200), concurrency=8, timeout=10, deadline=20)
        result.add_load(load)
        acked = list(load.acked_tokens)
        asgi = h.uvicorn(env, workers=1)
        load = h.load(asgi, mixed_paths(200, prefix="/async"), concurrency=8, timeout=10,
                      deadline=20)
        result.add_load(load)
        acked += load.acked_tokens
    result.peak_server_connections = mon.peak
    result.lost = h.lost_writes(acked)
    result.details["acked_writes"] = len(acked)


@scenario(
    "preload_ready",
    "gunicorn sync -w 4 --preload, a query in AppConfig.ready(), CONN_MAX_AGE=600: every "
    "worker inherits the master's connection and they all talk over one socket",
    defaults={"CONN_MAX_AGE": 600},
    stock_failure="errors (protocol desync, 'another command is already in progress', "
                  "closed connections) and wrong rows",
)
def _scenario_preload_ready(h: Harness, settings: dict[str, Any], result: Result) -> None:
    _preload_common(h, settings, result, query_in_ready=True)


@scenario(
    "preload_ready_max_age_0",
    "same as preload_ready with CONN_MAX_AGE=0: the first request of each worker reuses and "
    "then closes the shared connection",
    defaults={"CONN_MAX_AGE": 0},
    stock_failure="a few errors while the workers' first requests race on the shared socket",
)
def _scenario_preload_ready_max_age_0(h: Harness, settings: dict[str, Any],
                                      result: Result) -> None:
    _preload_common(h, settings, result, query_in_ready=True)


@scenario(
    "preload_import",
    "gunicorn sync -w 4 --preload with a module-level query when wsgi.py is imported "
    "(CONN_MAX_AGE=600)",
    defaults={"CONN_MAX_AGE": 600},
    stock_failure="errors and wrong rows, as preload_ready",
)
def _scenario_preload_import(h: Harness, settings: dict[str, Any], result: Result) -> None:
    _preload_common(h, settings, result, import_time_query=True)


@scenario(
    "preload_pool",
    "Django's built-in pool (OPTIONS={'pool': ...}) under gunicorn --preload with a query in "
    "AppConfig.ready(): every worker gets a copy of the master's pool, same connections",
    defaults={"CONN_MAX_AGE": 0,
              "OPTIONS": {"pool": {"min_size": 2, "max_size": 4, "timeout": 5}}},
    stock_failure="wrong rows / errors / acknowledged-but-lost writes",
    requires=_needs_django_pool,
)
def _scenario_preload_pool(h: Harness, settings: dict[str, Any], result: Result) -> None:
    _preload_common(h, settings, result, query_in_ready=True)


@scenario(
    "fork_import",
    "manage.py forkcheck: a module-level query, then os.fork() x4 children that keep using "
    "Django (close_old_connections around each operation)",
    defaults={"CONN_MAX_AGE": 600},
    stock_failure="errors / wrong rows / hung children",
)
def _scenario_fork_import(h: Harness, settings: dict[str, Any], result: Result) -> None:
    h.prepare(settings)
    env = h.env(settings, IMPORT_TIME_QUERY=True)
    with h.monitor() as mon:
        proc = h.manage(env, "forkcheck", "--children", "4", "--ops", str(h.size(100)),
                        "--timeout", "8",
                        timeout=40)
    result.peak_server_connections = mon.peak
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        result.add_error(f"forkcheck exited {proc.returncode}: {_short(proc.stderr[-400:])}")
        return
    report = json.loads(lines[-1])
    result.requests += report["requests"]
    result.ok += report["ok"]
    result.errors += report["errors"]
    result.wrong += report["wrong"]
    for msg, n in report["error_samples"].items():
        key = _error_key(msg)
        result.error_samples[key] = result.error_samples.get(key, 0) + n
    result.details["hung_children"] = report["hung"]
    result.details["acked_writes"] = len(report["acked"])
    result.lost = h.lost_writes(report["acked"])


@scenario(
    "restart",
    "gunicorn sync -w 2, CONN_MAX_AGE=600: warm up, restart PostgreSQL (fast), send requests",
    defaults={"CONN_MAX_AGE": 600},
    stock_failure="the first request on each worker's dead persistent connection fails",
)
def _scenario_restart(h: Harness, settings: dict[str, Any], result: Result) -> None:
    h.prepare(settings)
    srv = h.gunicorn(h.env(settings), worker_class="sync", workers=2)
    warm = h.load(srv, mixed_paths(h.size(40)), concurrency=4, timeout=10, deadline=15)
    result.details["warmup"] = {"ok": warm.ok, "errors": warm.errors}
    with h.monitor() as mon:
        result.details["connections_before_restart"] = h.connections()
        _restart_server(h.pg_server)
        load = h.load(srv, mixed_paths(h.size(40)), concurrency=4, timeout=10, deadline=15)
    result.add_load(load)
    result.peak_server_connections = mon.peak
    result.lost = h.lost_writes(load.acked_tokens)


@scenario(
    "idle_timeout",
    "gunicorn gthread -w 2 --threads 4, CONN_MAX_AGE=600, idle_session_timeout=1s on the "
    "database: warm up, stay idle 2.5 s, send requests",
    defaults={"CONN_MAX_AGE": 600},
    stock_failure="requests on connections the server timed out fail "
                  "('terminating connection due to idle-session timeout')",
)
def _scenario_idle_timeout(h: Harness, settings: dict[str, Any], result: Result) -> None:
    h.prepare(settings)
    h.set_database_config(idle_session_timeout="1s")
    srv = h.gunicorn(h.env(settings), worker_class="gthread", workers=2, threads=4)
    warm = h.load(srv, mixed_paths(h.size(48)), concurrency=8, timeout=10, deadline=15)
    result.details["warmup"] = {"ok": warm.ok, "errors": warm.errors}
    result.details["connections_before_idle"] = h.connections()
    time.sleep(2.5)
    with h.monitor() as mon:
        load = h.load(srv, mixed_paths(h.size(48)), concurrency=8, timeout=10, deadline=15)
    result.add_load(load)
    result.peak_server_connections = mon.peak
    result.lost = h.lost_writes(load.acked_tokens)


# Flood sizing note: the harness's ConnectionMonitor holds one of the 20 slots, so the app
# gets 19.  A pooled backend must cap its total (max_size x worker processes) below that, or
# it will meet "too many clients" itself, e.g. OPTIONS={"pool": {"max_size": 8}} with the
# two-process servers used here.
def _flood(h: Harness, settings: dict[str, Any], result: Result, *,
           start: Callable[[dict[str, str]], HttpServer], path: str, n: int = 100,
           max_connections: int = 20, flags: Mapping[str, Any] | None = None) -> None:
    h.prepare(settings)
    env = h.env(settings, **dict(flags or {}))
    srv = start(env)
    _set_server_config(h.pg_server, max_connections=max_connections)
    try:
        with h.monitor() as mon:
            load = h.load(srv, [path] * n, concurrency=n, timeout=30, deadline=20)
        result.add_load(load)
        result.peak_server_connections = mon.peak
        result.details["max_connections"] = max_connections
    finally:
        _reset_server_config(h.pg_server, h.target, max_connections=max_connections)


@scenario(
    "flood_gthread",
    "100 concurrent /slow/1000 against gunicorn gthread -w 2 --threads 50 with the server at "
    "max_connections=20",
    stock_failure="'sorry, too many clients already' for most requests",
)
def _scenario_flood_gthread(h: Harness, settings: dict[str, Any], result: Result) -> None:
    _flood(h, settings, result, path="/slow/500" if h.quick else "/slow/1000",
           start=lambda env: h.gunicorn(env, worker_class="gthread", workers=2, threads=50))


@scenario(
    "flood_asgi",
    "100 concurrent async /async/slow/1000 against uvicorn --workers 2 with the server at "
    "max_connections=20 (every ASGI request runs the ORM in its own thread => own connection)",
    stock_failure="'sorry, too many clients already' for most requests",
)
def _scenario_flood_asgi(h: Harness, settings: dict[str, Any], result: Result) -> None:
    _flood(h, settings, result, path="/async/slow/1000",
           start=lambda env: h.uvicorn(env, workers=2))


@scenario(
    "flood_gevent",
    "100 concurrent /slow/1000 against gunicorn -k gevent (psycopg2 + psycogreen; "
    "DRIVER='psycopg' for psycopg 3) with the server at max_connections=20",
    defaults={"DRIVER": "psycopg2"},
    stock_failure="'sorry, too many clients already' for most requests",
)
def _scenario_flood_gevent(h: Harness, settings: dict[str, Any], result: Result) -> None:
    _flood(h, settings, result, path="/slow/1000",
           start=lambda env: h.gunicorn(env, worker_class="gevent", workers=1,
                                        worker_connections=200, config=GEVENT_CONFIG))


@scenario(
    "asgi_persistent",
    "uvicorn --workers 1 with CONN_MAX_AGE=600 and the server at max_connections=20: 150 "
    "requests, 4 at a time (each ASGI request runs in a new thread, so 'persistent' "
    "connections pile up instead of being reused)",
    defaults={"CONN_MAX_AGE": 600},
    stock_failure="connections leak until 'sorry, too many clients already'",
)
def _scenario_asgi_persistent(h: Harness, settings: dict[str, Any], result: Result) -> None:
    h.prepare(settings)
    srv = h.uvicorn(h.env(settings), workers=1)
    _set_server_config(h.pg_server, max_connections=20)
    try:
        with h.monitor() as mon:
            load = h.load(srv, mixed_paths(150, prefix="/async"), concurrency=4, timeout=15,
                          deadline=20)
        result.add_load(load)
        result.peak_server_connections = mon.peak
        # The piled-up sessions fill every slot (the stock failure): let them go before the
        # harness connects to count the writes.
        srv.stop()
        result.lost = h.lost_writes(load.acked_tokens)
        result.details["max_connections"] = 20
    finally:
        _reset_server_config(h.pg_server, h.target, max_connections=20)


@scenario(
    "longtask",
    "manage.py longtask: query, sleep 2.5 s past idle_session_timeout=1s, query again",
    stock_failure="the second query fails and the command exits 1",
)
def _scenario_longtask(h: Harness, settings: dict[str, Any], result: Result) -> None:
    h.prepare(settings)
    h.set_database_config(idle_session_timeout="1s")
    proc = h.manage(h.env(settings), "longtask", "--sleep", "2.5", timeout=30)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    report = json.loads(lines[-1]) if lines else {}
    result.details["exit_code"] = proc.returncode
    result.details["report"] = report
    result.requests += int(report.get("queries", 2))
    if proc.returncode == 0 and report.get("ok"):
        result.ok += result.requests
        return
    errors = report.get("errors") or [f"exit {proc.returncode}: {_short(proc.stderr[-300:])}"]
    for msg in errors:
        if "wrong row" in msg:
            result.wrong += 1
        else:
            result.add_error(msg)
    result.ok += max(0, result.requests - len(errors))


def _collect_tasks(worker: CeleryWorker, sent: list[tuple[str, str, Any]], result: Result,
                   *, timeout: float = 20.0) -> list[str]:
    """Wait (bounded) for task results; classify as ok / wrong / error.  Returns acked tokens."""
    acked: list[str] = []
    deadline = time.monotonic() + timeout
    for kind, arg, res in sent:
        result.requests += 1
        remaining = max(0.1, deadline - time.monotonic())
        try:
            value = res.get(timeout=remaining, propagate=False, interval=0.05)
            state = res.state
        except Exception as exc:
            result.add_error(f"task {kind} not done: {type(exc).__name__}: {exc}")
            continue
        if state != "SUCCESS" or not isinstance(value, dict):
            result.add_error(f"task {kind} {state}: {type(value).__name__}: {value}")
            continue
        field_name = "key" if kind == "row" else "token"
        if value.get(field_name) != arg:
            result.wrong += 1
            if len(result.wrong_samples) < 10:
                result.wrong_samples.append(f"{kind}({arg}) -> {value}")
            continue
        result.ok += 1
        if kind == "write":
            acked.append(arg)
    return acked


@scenario(
    "celery_idle",
    "Celery prefork worker (-c 2, CELERY_DB_REUSE_MAX=1000 so Django connections are kept "
    "across tasks), idle_session_timeout=1s: run tasks, stay idle 2.5 s, run tasks",
    defaults={"CONN_MAX_AGE": 600},
    stock_failure="the first task on each child's timed-out connection fails",
)
def _scenario_celery_idle(h: Harness, settings: dict[str, Any], result: Result) -> None:
    h.prepare(settings)
    h.set_database_config(idle_session_timeout="1s")
    env = h.env(settings, CELERY_DB_REUSE_MAX=1000)
    worker = h.celery_worker(env, concurrency=2)
    tag = uuid.uuid4().hex[:8]

    def batch(n: int, offset: int) -> list[tuple[str, str, Any]]:
        sent = []
        for i in range(n):
            if i % 3 == 2:
                token = f"celery-{tag}-{offset + i}"
                sent.append(("write", token, worker.send(TASK_WRITE, token)))
            else:
                key = f"k{(offset + i * 7) % N_ITEMS:04d}"
                sent.append(("row", key, worker.send(TASK_ROW, key)))
        return sent

    warm = Result(scenario=result.scenario, engine=result.engine)
    _collect_tasks(worker, batch(12, 0), warm)
    result.details["warmup"] = {"ok": warm.ok, "errors": warm.errors}
    time.sleep(2.5)
    with h.monitor() as mon:
        acked = _collect_tasks(worker, batch(24, 100), result)
    result.peak_server_connections = mon.peak
    result.lost = h.lost_writes(acked)


@scenario(
    "terminate",
    "gunicorn gthread -w 2 --threads 4, CONN_MAX_AGE=600: warm up, pg_terminate_backend() "
    "every backend of the app, send requests",
    defaults={"CONN_MAX_AGE": 600},
    stock_failure="requests on the terminated persistent connections fail ('terminating "
                  "connection due to administrator command')",
)
def _scenario_terminate(h: Harness, settings: dict[str, Any], result: Result) -> None:
    h.prepare(settings)
    srv = h.gunicorn(h.env(settings), worker_class="gthread", workers=2, threads=4)
    warm = h.load(srv, mixed_paths(h.size(48)), concurrency=8, timeout=10, deadline=15)
    result.details["warmup"] = {"ok": warm.ok, "errors": warm.errors}
    result.details["terminated"] = h.terminate()
    with h.monitor() as mon:
        load = h.load(srv, mixed_paths(h.size(48)), concurrency=8, timeout=10, deadline=15)
    result.add_load(load)
    result.peak_server_connections = mon.peak
    result.lost = h.lost_writes(load.acked_tokens)


@scenario(
    "outage",
    "gunicorn gthread -w 2 --threads 4, CONN_MAX_AGE=600: warm up, stop PostgreSQL for "
    "~3 s while requests keep coming (counted apart, in details['outage']), start it, send "
    "requests",
    defaults={"CONN_MAX_AGE": 600},
    stock_failure="after the restart, requests on the dead persistent connections fail",
)
def _scenario_outage(h: Harness, settings: dict[str, Any], result: Result, *,
                     outage_seconds: float = 3.0) -> None:
    h.prepare(settings)
    srv = h.gunicorn(h.env(settings), worker_class="gthread", workers=2, threads=4)
    warm = h.load(srv, mixed_paths(h.size(48)), concurrency=8, timeout=10, deadline=15)
    result.details["warmup"] = {"ok": warm.ok, "errors": warm.errors}
    outage = LoadResult()
    h.pg_server.stop("fast")
    try:
        ends = time.monotonic() + outage_seconds
        for _ in range(40):  # bounded: at most 40 batches of 4 during the outage
            if time.monotonic() >= ends:
                break
            outage.merge(h.load(srv, mixed_paths(4), concurrency=4, timeout=5, deadline=5))
            time.sleep(0.1)
    finally:
        h.pg_server.start()
    result.details["outage"] = {
        "requests": outage.requests, "errors": outage.errors, "ok": outage.ok,
        "max_latency": round(outage.max_latency, 3),
        "error_samples": dict(outage.error_samples.most_common(5)),
    }
    with h.monitor() as mon:
        load = h.load(srv, mixed_paths(h.size(48)), concurrency=8, timeout=10, deadline=15)
    result.add_load(load)
    result.peak_server_connections = mon.peak
    result.lost = h.lost_writes(load.acked_tokens)


def _backend_running(h: Harness, needle: str, timeout: float = 5.0) -> int | None:
    """The pid of the backend on the target database whose query contains ``needle``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = h.target.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND state = 'active' "
            "AND query LIKE %s AND pid <> pg_backend_pid()",
            [h.target.dbname, f"%{needle}%"], dbname="postgres",
        )
        if rows:
            return int(rows[0][0])
        time.sleep(0.02)
    return None


@scenario(
    "kill_in_tx",
    "gunicorn gthread -w 1 --threads 4: a view inserts two rows in atomic(), sleeps, inserts "
    "a third; its backend is terminated during the sleep (3 times). The request must fail, "
    "none of its rows may be committed (a partial commit counts as wrong), and the requests "
    "after it must succeed",
    stock_failure="none: Django rolls back and discards the connection (a correctness check)",
    control=True,
)
def _scenario_kill_in_tx(h: Harness, settings: dict[str, Any], result: Result, *,
                         rounds: int = 3) -> None:
    h.prepare(settings)
    srv = h.gunicorn(h.env(settings), worker_class="gthread", workers=1, threads=4)
    warm = h.load(srv, mixed_paths(16), concurrency=4, timeout=10, deadline=15)
    result.details["warmup"] = {"ok": warm.ok, "errors": warm.errors}
    killed: list[dict[str, Any]] = []
    tag = uuid.uuid4().hex[:8]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cg-txn") as pool:
        for i in range(rounds):
            token = f"tx-{tag}-{i}"
            sent = time.monotonic()
            future = pool.submit(http_get, f"{srv.base_url}/txn/{token}/4000", 15.0)
            pid = _backend_running(h, "pg_sleep")
            if pid is not None:
                h.target.execute("SELECT pg_terminate_backend(%s)", [pid], dbname="postgres")
            status, data, err = future.result(timeout=20)
            rows = h.target.execute("SELECT token FROM cg_write WHERE token LIKE %s",
                                    [f"{token}-%"])
            outcome = {
                "status": status, "latency": round(time.monotonic() - sent, 3),
                "error": (data or {}).get("error") if isinstance(data, dict) else err,
                "message": _short((data or {}).get("message", "") if isinstance(data, dict)
                                  else str(err), 200),
                "rows_committed": sorted(r[0] for r in rows), "backend_pid": pid,
            }
            killed.append(outcome)
            if pid is None or status == 200:
                result.notes.append(f"round {i}: the backend was not terminated mid-way")
            if rows:
                result.wrong += 1
                result.wrong_samples.append(f"/txn/{token}: partial commit {outcome}")
            after = h.load(srv, mixed_paths(16, tag=f"{tag}{i}"), concurrency=4, timeout=10,
                           deadline=15)
            result.add_load(after)
            result.lost += h.lost_writes(after.acked_tokens)
    result.details["killed"] = killed


@scenario(
    "asgi_mixed",
    "uvicorn --workers 2: 200 sync and async (sync_to_async) row/write requests, 16 at a time",
    stock_failure="none: the control run for ASGI",
    control=True,
)
def _scenario_asgi_mixed(h: Harness, settings: dict[str, Any], result: Result) -> None:
    h.prepare(settings)
    srv = h.uvicorn(h.env(settings), workers=2)
    tag = uuid.uuid4().hex[:8]
    paths = [p for pair in zip(mixed_paths(100, tag=tag),
                               mixed_paths(100, prefix="/async", tag=tag, offset=100),
                               strict=True) for p in pair]
    with h.monitor() as mon:
        load = h.load(srv, paths, concurrency=16, timeout=15, deadline=30)
    result.add_load(load)
    result.peak_server_connections = mon.peak
    result.lost = h.lost_writes(load.acked_tokens)


@contextlib.contextmanager
def _other_database(h: Harness) -> Iterator[str]:
    """A second database next to the target, for the ``other`` alias (dropped after)."""
    name = f"{h.target.dbname[:55]}_o"
    create_database(h.pg_server, name)
    try:
        yield name
    finally:
        drop_database(h.pg_server, name)


@scenario(
    "multi_db",
    "two aliases (default + other on a second database, a router sending Event there), "
    "gunicorn gthread -w 2 --threads 4: 120 requests writing to both; then each worker "
    "reports its pools (details['pools_by_pid'])",
    stock_failure="none: the control run for multiple databases",
    control=True,
)
def _scenario_multi_db(h: Harness, settings: dict[str, Any], result: Result) -> None:
    with _other_database(h) as other:
        h.prepare(settings, DB_OTHER_NAME=other)
        srv = h.gunicorn(h.env(settings, DB_OTHER_NAME=other), worker_class="gthread",
                         workers=2, threads=4)
        other_target = DbTarget(h.target.host, h.target.port, h.target.user,
                                h.target.password, other)
        other_mon = ConnectionMonitor(other_target).start()
        try:
            with h.monitor() as mon:
                load = h.load(srv, mixed_paths(120, write_every=2, write="multi"),
                              concurrency=8, timeout=10, deadline=20)
        finally:
            other_mon.stop()
        result.add_load(load)
        result.peak_server_connections = mon.peak + other_mon.peak
        result.details["peak_by_database"] = {"default": mon.peak, "other": other_mon.peak}
        result.lost = h.lost_writes(load.acked_tokens) + count_lost_writes(
            other_target, load.acked_tokens, table="cg_event")
        pools_by_pid: dict[int, list[str]] = {}
        for _ in range(40):  # bounded: until both workers answered
            status, data, _err = http_get(srv.base_url + "/pools", timeout=5)
            if status == 200 and isinstance(data, dict):
                pools_by_pid[data["pid"]] = [p["name"] for p in data["pools"]]
            if len(pools_by_pid) >= 2:
                break
        result.details["pools_by_pid"] = pools_by_pid


@scenario(
    "manage_test",
    "manage.py test of the project's own app (two aliases, --parallel 2) with pools open: "
    "the runner creates, clones and drops the test databases",
    stock_failure="none: a check that open pools never block DROP DATABASE",
    control=True,
)
def _scenario_manage_test(h: Harness, settings: dict[str, Any], result: Result) -> None:
    other = f"{h.target.dbname[:55]}_o"  # only its test database is created
    env = h.env(settings, DB_OTHER_NAME=other)
    proc = h.manage(env, "test", f"{PROJECT}.app", "--noinput", "--parallel", "2", "-v", "2",
                    timeout=120)
    output = proc.stdout + proc.stderr
    ran = re.search(r"Ran (\d+) tests?", output)
    failed = re.search(r"FAILED \(([^)]*)\)", output)
    result.requests = int(ran.group(1)) if ran else 0
    bad = sum(int(n) for n in re.findall(r"(?:failures|errors)=(\d+)", failed.group(1))) \
        if failed else 0
    result.ok = max(0, result.requests - bad)
    if bad:
        result.add_error(f"{bad} test(s) failed: {_short(output[-600:], 400)}", bad)
    if proc.returncode != 0 and not bad:
        result.add_error(f"manage.py test exited {proc.returncode}: {_short(output[-600:], 400)}")
    if "being accessed by other users" in output:
        result.add_error("database is being accessed by other users")
    leftovers = h.target.execute(
        "SELECT datname FROM pg_database WHERE datname LIKE %s OR datname LIKE %s",
        [f"test_{h.target.dbname}%", f"test_{other}%"], dbname="postgres",
    )
    result.details["exit_code"] = proc.returncode
    result.details["leftover_test_databases"] = [r[0] for r in leftovers]
    for (name,) in leftovers:
        result.add_error(f"test database {name} was not dropped")
        drop_database(h.pg_server, name)
    result.details["output_tail"] = output[-1500:]


@scenario(
    "close_all",
    "manage.py closeall: both aliases used in the main thread and 4 threads, "
    "connections.close_all() in each; then every pool must have every connection back "
    "(in_use=0, available=size)",
    stock_failure="none: connguard-specific (the stock backend has no pool)",
    control=True,
)
def _scenario_close_all(h: Harness, settings: dict[str, Any], result: Result) -> None:
    with _other_database(h) as other:
        proc = h.manage(h.env(settings, DB_OTHER_NAME=other), "closeall", "--threads", "4",
                        timeout=60)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        result.add_error(f"closeall exited {proc.returncode}: {_short(proc.stderr[-400:])}")
        return
    report = json.loads(lines[-1])
    result.details["report"] = report
    result.requests = 5 * len(report["aliases"])
    for msg in report["errors"]:
        result.add_error(msg)
    for pool in report["pools"]:
        if pool["in_use"] or pool["available"] != pool["size"]:
            result.add_error(f"pool {pool['name']!r} after close_all(): {pool}")
    result.ok = max(0, result.requests - result.errors)


def _netns_unavailable() -> str | None:
    """Why the silent-drop scenario cannot run on this machine (it needs network namespaces:
    root, ip and nft), or None."""
    from connguard.testing.netns import unavailable_reason

    return unavailable_reason()


#: Scenarios that need something of the machine (not of the settings): name -> check giving
#: the reason they cannot run here, or None. ``connguard demo`` skips them with the reason.
MACHINE_REQUIREMENTS: dict[str, Callable[[], str | None]] = {
    "silent_drop": _netns_unavailable,
}


def unavailable_here(name: str) -> str | None:
    """Why scenario ``name`` cannot run on this machine, or None."""
    check = MACHINE_REQUIREMENTS.get(name)
    return check() if check is not None else None


@scenario(
    "silent_drop",
    "gunicorn gthread -w 2 --threads 2, CONN_MAX_AGE=600, PostgreSQL in a network namespace "
    "behind a veth pair: warm up, then the network silently drops every established "
    "connection of the app (no FIN, no RST: a NAT gateway or load balancer that forgot its "
    "idle flows), stay idle 2.5 s, send requests; new connections still work",
    defaults={"CONN_MAX_AGE": 600},
    stock_failure="requests hang on the dead connections until the client gives up (the "
                  "kernel retransmits for ~15 minutes before it reports the path dead)",
    requires=lambda _settings: _netns_unavailable(),
)
def _scenario_silent_drop(h: Harness, settings: dict[str, Any], result: Result) -> None:
    # Its own PostgreSQL, inside a namespace: the drop is made by the kernel (nftables rules
    # in the namespace matching the app's client ports), not by a proxy.
    from connguard.testing.netns import Netns, NetnsPostgresServer

    with Netns() as ns:
        server = NetnsPostgresServer(ns)
        try:
            server.start()
            database = "cg_silent_drop"
            create_database(server, database)
            (h.log_dir / "netns").mkdir(exist_ok=True)
            with Harness(server, database, log_dir=h.log_dir / "netns", quick=h.quick) as nh:
                nh.prepare(settings)
                srv = nh.gunicorn(nh.env(settings), worker_class="gthread", workers=2,
                                  threads=2)
                warm = nh.load(srv, mixed_paths(nh.size(40)), concurrency=4, timeout=10,
                               deadline=20)
                result.details["warmup"] = {"ok": warm.ok, "errors": warm.errors}
                ports = [int(row[0]) for row in nh.target.execute(
                    "SELECT client_port FROM pg_stat_activity WHERE application_name LIKE %s",
                    [f"{nh.app_name}:%"])]
                dropped = ns.drop_established(server.port, only=ports)
                result.details["connections_dropped"] = len(dropped)
                if not dropped:
                    result.notes.append("no connection of the app was open to drop")
                time.sleep(2.5)
                with nh.monitor() as mon:
                    load = nh.load(srv, mixed_paths(nh.size(40)), concurrency=4, timeout=10,
                                   deadline=15)
                result.add_load(load)
                result.peak_server_connections = mon.peak
                result.lost = nh.lost_writes(load.acked_tokens)
                result.details["latency_max"] = round(load.max_latency, 2)
                if load.not_sent:
                    result.notes.append(f"{load.not_sent} requests not sent before the deadline")
                result.details["logs_netns"] = nh.logs(1500)
        finally:
            server.cleanup()


@scenario(
    "failover",
    "the primary fails over to its promoted standby (pg_basebackup, pg_ctl promote; the old "
    "one demoted read-only), multi-host HOST with target_session_attrs=read-write, gunicorn "
    "sync -w 2, writes throughout; errors beyond one in-flight request per worker count",
    defaults={"CONN_MAX_AGE": None},
    stock_failure="persistent connections stay on the read-only old primary: every write "
                  "fails (cannot execute INSERT in a read-only transaction) until restart",
)
def _scenario_failover(h: Harness, settings: dict[str, Any], result: Result) -> None:
    from connguard.demo.failover import run_failover  # servers of its own: see there

    run_failover(h, settings, result)


#: Scenarios whose failure reproduces on the stock backend (everything but the controls).
#: "preload_ready_max_age_0" does not fail on stock Django (request_started closes the
#: inherited connection before any worker uses it); "baseline" is the no-fault control;
#: the others marked ``control`` check correctness (both engines must pass them).
FAILURE_SCENARIOS: tuple[str, ...] = tuple(
    name for name, spec in SCENARIOS.items()
    if not spec.control and name != "preload_ready_max_age_0"
)


@contextlib.contextmanager
def scenario_database(pg_server: Any, prefix: str = "cg_demo",
                      template: str | None = None) -> Iterator[str]:
    """A fresh database for ad-hoc use, a copy of ``template`` if given (dropped afterwards)."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    create_database(pg_server, name, template=template)
    try:
        yield name
    finally:
        drop_database(pg_server, name)
