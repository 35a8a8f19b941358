"""MariaDB (and MySQL) as a scenario's server: :class:`MariaDBTarget` over the rig's
``MariaDBServer`` (:mod:`connguard.testing.mariadb`).

The project connects as the rig's application account (no ``SUPER``: ``max_connections``
and ``KILL`` apply to it as to an application); the harness's own SQL goes as ``root``
through the server's private socket, which MariaDB still lets in when the application has
taken every slot. What differs from PostgreSQL: the idle timeout is the server-wide
``wait_timeout`` (set with ``SET GLOBAL``, applying to sessions opened afterwards, undone after
the scenario); ``max_connections`` changes without a restart; there are no template
databases (a copy is made table by table); sessions are found in ``information_schema.
PROCESSLIST`` by their database and ended with ``KILL CONNECTION``.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from connguard.demo.targets.base import AdminConnection, ServerTarget, Target

#: ``(1040, 'Too many connections')``; ``1203``: max_user_connections
TOO_MANY_CONNECTIONS = ("too many connections", "max_user_connections")

_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def _ident(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"bad database or table name {name!r}")
    return f"`{name}`"


@dataclass(frozen=True)
class MariaDBDatabase:
    """One database on a :class:`MariaDBTarget`'s server."""

    host: str
    port: int
    user: str
    password: str
    dbname: str
    db: MariaDBTarget = field(compare=False, repr=False)

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]:
        """As root, in this database."""
        with self.db.admin(self.dbname) as conn:
            return conn.execute(sql, params)


class MariaDBTarget(ServerTarget):
    vendor = "mysql"
    label = "MariaDB"
    stock_engine = "django.db.backends.mysql"
    connguard_engine = "connguard.backends.mysql"
    too_many_connections = TOO_MANY_CONNECTIONS

    def target(self, dbname: str) -> MariaDBDatabase:
        s = self.server
        return MariaDBDatabase(s.host, int(s.port), s.user, getattr(s, "password", "") or "",
                               dbname, self)

    def admin(self, dbname: str | None = None) -> AdminConnection:
        return AdminConnection(self.server.admin_connection(dbname))

    def _execute(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]:
        with self.admin() as conn:
            return conn.execute(sql, params)

    def create_database(self, name: str, template: str | None = None) -> None:
        """A copy of ``template``: ``CREATE TABLE ... LIKE`` and ``INSERT ... SELECT`` for each
        of its tables (MariaDB has no template databases); its foreign keys are not copied
        (the project's tables have none)."""
        self._execute(f"CREATE DATABASE {_ident(name)}")
        if template is None:
            return
        with self.admin(name) as conn:
            tables = [r[0] for r in conn.execute(
                "SELECT TABLE_NAME FROM information_schema.TABLES WHERE TABLE_SCHEMA = %s "
                "AND TABLE_TYPE = 'BASE TABLE'", [template])]
            for table in tables:
                conn.execute(f"CREATE TABLE {_ident(table)} LIKE {_ident(template)}.{_ident(table)}")
                conn.execute(f"INSERT INTO {_ident(table)} SELECT * FROM "
                             f"{_ident(template)}.{_ident(table)}")

    def drop_database(self, name: str) -> None:
        with contextlib.suppress(Exception):
            self._kill(self._sessions(name))
        with contextlib.suppress(Exception):
            self._execute(f"DROP DATABASE IF EXISTS {_ident(name)}")

    def databases(self, prefix: str) -> list[str]:
        rows = self._execute("SELECT SCHEMA_NAME FROM information_schema.SCHEMATA "
                             "WHERE SCHEMA_NAME LIKE %s", [f"{prefix}%"])
        return [r[0] for r in rows]

    def seed(self, target: Target, n: int) -> None:
        """From MariaDB's sequence engine (``seq_0_to_<n-1>``)."""
        target.execute(
            "INSERT IGNORE INTO cg_item (`key`, value) SELECT CONCAT('k', LPAD(seq, 4, '0')), "
            f"CONCAT('value-of-k', LPAD(seq, 4, '0')) FROM seq_0_to_{int(n) - 1}"
        )

    _CLIENTS = ("COMMAND NOT IN ('Daemon', 'Binlog Dump') AND USER NOT IN "
                "('system user', 'event_scheduler', 'unauthenticated user')")

    def count_connections(self, conn: AdminConnection, dbname: str) -> int:
        rows = conn.execute(
            "SELECT count(*) FROM information_schema.PROCESSLIST WHERE DB = %s "
            f"AND ID <> CONNECTION_ID() AND {self._CLIENTS}", [dbname])
        return int(rows[0][0])

    def _sessions(self, dbname: str) -> list[int]:
        rows = self._execute(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s "
            f"AND ID <> CONNECTION_ID() AND {self._CLIENTS}", [dbname])
        return [int(r[0]) for r in rows]

    def _kill(self, sessions: Sequence[int]) -> int:
        killed = 0
        with self.admin() as conn:
            for session in sessions:
                try:
                    conn.execute(f"KILL CONNECTION {int(session)}")
                    killed += 1
                except Exception:  # ended meanwhile
                    pass
        return killed

    def terminate(self, dbname: str, app_name: str) -> int:
        """``KILL CONNECTION`` every session on the scenario's database (MySQL has no
        application_name: the database is the project's alone)."""
        return self._kill(self._sessions(dbname))

    def running_session(self, dbname: str, needle: str) -> int | None:
        rows = self._execute(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE DB = %s "
            "AND COMMAND = 'Query' AND INFO LIKE %s AND ID <> CONNECTION_ID()",
            [dbname, f"%{needle}%"])
        return int(rows[0][0]) if rows else None

    def kill_session(self, session: int) -> None:
        self._kill([session])

    def set_idle_timeout(self, target: Target, seconds: int) -> None:
        """``SET GLOBAL wait_timeout`` (and ``interactive_timeout``): server-wide, for
        sessions opened afterwards; undone by :meth:`reset`."""
        self.server.set_globals(wait_timeout=int(seconds), interactive_timeout=int(seconds))

    @contextlib.contextmanager
    def max_connections(self, target: Target, n: int) -> Iterator[None]:
        """``SET GLOBAL max_connections`` (no restart needed)."""
        self.server.set_global("max_connections", int(n))
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                self.server.reset_globals()

    def restart(self) -> None:
        self.server.restart()

    def stop(self) -> None:
        self.server.stop()

    def start(self) -> None:
        self.server.start()

    def reset(self) -> None:
        with contextlib.suppress(Exception):
            self.server.reset_globals()
