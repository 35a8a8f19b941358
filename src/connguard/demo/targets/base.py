"""What the harness needs of a database server, whatever the database: :class:`ServerTarget`
(one subclass per database: :mod:`.postgresql`, :mod:`.mariadb`), the admin connection it
hands out and the connection monitor built on it.

A target wraps the rig's server object (``PostgresServer``, ``MariaDBServer``, or a server
given with ``connguard demo --dsn``) and does, in that database's SQL, what the scenarios
ask: create/drop a scenario database (from a template), seed it, count the project's
connections and the acknowledged writes that are missing, set an idle timeout and a
connection limit, end the project's sessions, restart/stop/start the server.
"""

from __future__ import annotations

import contextlib
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Protocol


class AdminConnection:
    """An autocommit DB-API connection for the harness's own SQL: ``execute(sql, params)``
    returns the rows (``%s`` placeholders)."""

    def __init__(self, conn: Any) -> None:
        self._conn = conn
        self._closed = False

    @property
    def closed(self) -> bool:
        closed = getattr(self._conn, "closed", None)  # psycopg: an attribute; MySQLdb: none
        return self._closed or (bool(closed) if not callable(closed) else False)

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]:
        cur = self._conn.cursor()
        try:
            cur.execute(sql, params)
            return list(cur.fetchall()) if cur.description else []
        finally:
            cur.close()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(Exception):
            self._conn.close()

    def __enter__(self) -> AdminConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Target(Protocol):
    """One database on a server, as the project's processes reach it (``django_env``) and
    the harness queries it (``execute``)."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def user(self) -> str: ...
    @property
    def password(self) -> str: ...
    @property
    def dbname(self) -> str: ...

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> list[tuple]: ...


class ServerTarget(ABC):
    """A database server as the scenarios drive it (see the module docstring)."""

    #: Django's ``connection.vendor`` for it
    vendor: ClassVar[str]
    #: the name the demo shows ("PostgreSQL", "MariaDB")
    label: ClassVar[str]
    stock_engine: ClassVar[str]
    connguard_engine: ClassVar[str]
    #: how the server refuses a connection when it is full (substrings of the error)
    too_many_connections: ClassVar[tuple[str, ...]]

    def __init__(self, server: Any) -> None:
        self.server = server

    # -- databases
    @abstractmethod
    def target(self, dbname: str) -> Target:
        """The database ``dbname`` on this server."""

    @abstractmethod
    def admin(self) -> AdminConnection:
        """A new connection for the harness, to no scenario database (so it is not counted),
        that still gets in when the application has taken every slot where the server
        allows it. The caller closes it."""

    @abstractmethod
    def create_database(self, name: str, template: str | None = None) -> None:
        """Create ``name``, as a copy of ``template`` (migrated and seeded) when given."""

    @abstractmethod
    def drop_database(self, name: str) -> None:
        """Drop ``name`` even while sessions use it. Never raises."""

    @abstractmethod
    def databases(self, prefix: str) -> list[str]:
        """Names of the databases starting with ``prefix``."""

    @abstractmethod
    def seed(self, target: Target, n: int) -> None:
        """Items ``k0000``.. with value ``value-of-<key>`` (idempotent)."""

    def lost_writes(self, target: Target, tokens: Sequence[str], table: str = "cg_write") -> int:
        """How many acknowledged ``tokens`` have no row in ``table`` (cg_write or cg_event)."""
        if not tokens:
            return 0
        if table not in ("cg_write", "cg_event"):
            raise ValueError(f"unknown table {table!r}")
        found: set[str] = set()
        unique = sorted(set(tokens))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            marks = ", ".join(["%s"] * len(chunk))
            rows = target.execute(f"SELECT token FROM {table} WHERE token IN ({marks})", chunk)
            found |= {r[0] for r in rows}
        return len(set(tokens) - found)

    # -- sessions
    @abstractmethod
    def count_connections(self, conn: AdminConnection, dbname: str) -> int:
        """Client connections to ``dbname`` (asked on the harness's ``conn``)."""

    def connections(self, dbname: str) -> int:
        """:meth:`count_connections` on a connection of its own."""
        with self.admin() as conn:
            return self.count_connections(conn, dbname)

    @abstractmethod
    def terminate(self, dbname: str, app_name: str) -> int:
        """End every session of the project's processes on ``dbname``; how many."""

    @abstractmethod
    def running_session(self, dbname: str, needle: str) -> int | None:
        """The id of a session on ``dbname`` running a statement containing ``needle``."""

    @abstractmethod
    def kill_session(self, session: int) -> None:
        """End session ``session`` (the server's own command: pg_terminate_backend, KILL)."""

    # -- server settings and life cycle
    @abstractmethod
    def set_idle_timeout(self, target: Target, seconds: int) -> None:
        """Make the server end sessions on ``target`` idle for ``seconds`` (PostgreSQL's
        idle_session_timeout, MySQL's wait_timeout); undone by :meth:`reset`."""

    @abstractmethod
    @contextlib.contextmanager
    def max_connections(self, target: Target, n: int) -> Iterator[None]:
        """The server limited to ``n`` connections while the block runs."""

    @abstractmethod
    def restart(self) -> None:
        """Restart the server (every session ends)."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the server (fast: sessions end)."""

    @abstractmethod
    def start(self) -> None:
        """Start it again after :meth:`stop`."""

    def reset(self) -> None:  # noqa: B027 - a hook: nothing to undo by default
        """Undo what a scenario changed on the whole server (after each scenario)."""


class ConnectionMonitor:
    """Background sampler of client connections to a database (peak tracking).

    Keeps one persistent admin connection (:meth:`ServerTarget.admin`, so it is not counted)
    opened *before* the load, so it still works when the server is out of slots.  Bounded by
    ``max_seconds``; reconnects (rate-limited) after a server restart.
    """

    def __init__(self, db: ServerTarget, dbname: str, *, interval: float = 0.05,
                 max_seconds: float = 120.0):
        self.db = db
        self.dbname = dbname
        self.interval = interval
        self.max_seconds = max_seconds
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: AdminConnection | None = None

    def _query(self) -> int:
        if self._conn is None or self._conn.closed:
            self._conn = self.db.admin()
        return self.db.count_connections(self._conn, self.dbname)

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
