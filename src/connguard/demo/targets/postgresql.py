"""The PostgreSQL side of a scenario: the harness's own admin connection, creating and
dropping databases, counting server connections and lost writes, server settings."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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
