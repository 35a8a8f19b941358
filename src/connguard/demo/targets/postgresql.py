"""PostgreSQL as a scenario's server: :class:`PostgresTarget` over the rig's
``PostgresServer`` (or a server given with ``--dsn``), and :class:`DbTarget`, one database on
it reached with a libpq conninfo."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from connguard.demo.targets.base import AdminConnection, ServerTarget, Target

#: How PostgreSQL refuses a connection when max_connections is exhausted ("too many
#: clients" for superusers, "reserved for ... superuser" slots message for other roles).
TOO_MANY_CONNECTIONS = ("too many clients", "remaining connection slots are reserved")


def connect_admin(conninfo: str) -> AdminConnection:
    """An autocommit connection through psycopg 3 when it is installed, else psycopg2 (a
    psycopg2-only venv has only that)."""
    try:
        import psycopg
    except ImportError:
        import psycopg2

        conn = psycopg2.connect(conninfo)
        conn.autocommit = True
        return AdminConnection(conn)
    return AdminConnection(psycopg.connect(conninfo, autocommit=True))


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
        return connect_admin(self.conninfo(dbname))

    def execute(self, sql: str, params: Sequence[Any] | None = None,
                dbname: str | None = None) -> list[tuple]:
        with self.connect(dbname) as conn:
            return conn.execute(sql, params)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


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


class PostgresTarget(ServerTarget):
    """The rig's ``PostgresServer`` (duck-typed: ``conninfo()``, ``restart(mode=)``,
    ``stop(mode)``/``start()``, ``set_config(restart=, **gucs)``, ``reset_config()``,
    ``create_database``/``drop_database``, ``terminate(like=)``); a server given with
    ``--dsn``, or a :class:`DbTarget`, needs only ``conninfo()``."""

    vendor = "postgresql"
    label = "PostgreSQL"
    stock_engine = "django.db.backends.postgresql"
    connguard_engine = "connguard.backends.postgresql"
    too_many_connections = TOO_MANY_CONNECTIONS

    def target(self, dbname: str) -> DbTarget:
        return DbTarget.from_server(self.server, dbname)

    def _postgres(self) -> DbTarget:
        return DbTarget.from_server(self.server, "postgres")

    def admin(self) -> AdminConnection:
        return self._postgres().connect("postgres")

    def create_database(self, name: str, template: str | None = None) -> None:
        """With the server's ``create_database`` when it has one; a copy of ``template``
        by ``CREATE DATABASE ... TEMPLATE``."""
        if template is not None:
            self._postgres().execute(
                f"CREATE DATABASE {_quote_ident(name)} TEMPLATE {_quote_ident(template)}")
            return
        if callable(getattr(self.server, "create_database", None)):
            self.server.create_database(name)
            return
        self._postgres().execute(f"CREATE DATABASE {_quote_ident(name)}")

    def drop_database(self, name: str, *, deadline: float | None = None) -> None:
        """Falls back to ``DROP DATABASE ... WITH (FORCE)``."""
        deadline = deadline or time.monotonic() + 10
        if callable(getattr(self.server, "drop_database", None)):
            with contextlib.suppress(Exception):
                self.server.drop_database(name)
                return
        while time.monotonic() < deadline:
            try:
                self._postgres().execute(
                    f"DROP DATABASE IF EXISTS {_quote_ident(name)} WITH (FORCE)")
                return
            except Exception:
                time.sleep(0.3)

    def databases(self, prefix: str) -> list[str]:
        rows = self._postgres().execute(
            "SELECT datname FROM pg_database WHERE datname LIKE %s", [f"{prefix}%"])
        return [r[0] for r in rows]

    def seed(self, target: Target, n: int) -> None:
        target.execute(
            "INSERT INTO cg_item (key, value) SELECT 'k' || lpad(i::text, 4, '0'), "
            "'value-of-k' || lpad(i::text, 4, '0') FROM generate_series(0, %s) AS i "
            "ON CONFLICT (key) DO NOTHING",
            [n - 1],
        )

    def count_connections(self, conn: AdminConnection, dbname: str) -> int:
        rows = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
            [dbname],
        )
        return int(rows[0][0])

    def terminate(self, dbname: str, app_name: str) -> int:
        """``pg_terminate_backend`` every connection whose application_name starts with
        ``<app_name>:`` (``server.terminate(like=)``)."""
        return int(self.server.terminate(like=f"{app_name}:%"))

    def running_session(self, dbname: str, needle: str) -> int | None:
        rows = self._postgres().execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s AND state = 'active' "
            "AND query LIKE %s AND pid <> pg_backend_pid()",
            [dbname, f"%{needle}%"],
        )
        return int(rows[0][0]) if rows else None

    def kill_session(self, session: int) -> None:
        self._postgres().execute("SELECT pg_terminate_backend(%s)", [session])

    def set_idle_timeout(self, target: Target, seconds: int) -> None:
        """``idle_session_timeout`` on the scenario's database only (gone with it)."""
        assert isinstance(target, DbTarget)
        set_database_config(target, idle_session_timeout=f"{seconds}s")

    @contextlib.contextmanager
    def max_connections(self, target: Target, n: int) -> Iterator[None]:
        """``max_connections`` needs a restart, both ways; undone with ``reset_config()``
        (restarting again if the restart-only value is still in force)."""
        self.server.set_config(restart=True, max_connections=n)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                self.server.reset_config()
            try:
                current = self._postgres().execute("SHOW max_connections")[0][0]
            except Exception:
                current = None
            if current is not None and str(current) == str(n):
                self.restart()

    def restart(self) -> None:
        try:
            self.server.restart(mode="fast")
        except TypeError:
            self.server.restart("fast")

    def stop(self) -> None:
        self.server.stop("fast")

    def start(self) -> None:
        self.server.start()
