"""The facts the inspectors gather: the server (and what sits in front of it), the process
model, the databases (aliases) and how many connections they may open; and the report."""

from __future__ import annotations

import dataclasses
from typing import Any

from connguard.doctor.findings import SEVERITIES, Finding
from connguard.doctor.text import dur

MYSQL_SCHEMES = ("mysql://", "mariadb://", "mysql+mysqldb://")


def is_mysql(conninfo: str) -> bool:
    """Whether *conninfo* names a MySQL or MariaDB server (else PostgreSQL)."""
    return conninfo.strip().lower().startswith(MYSQL_SCHEMES)


@dataclasses.dataclass
class Pooler:
    kind: str  # "pgbouncer", "proxysql", "maxscale" or "proxy"
    version: str | None = None
    pool_mode: str | None = None
    max_client_conn: int | None = None
    pool_size: int | None = None
    client_idle_timeout: float = 0.0
    max_prepared_statements: int = 0
    detail: str = ""


@dataclasses.dataclass
class PostgresFacts:
    """What one PostgreSQL server (as one alias reaches it) says about itself."""

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

    @property
    def limit(self) -> int:
        """The most connections the application may open: a PgBouncer's max_client_conn,
        else the budget."""
        pooler = self.pooler
        if pooler is not None and pooler.kind == "pgbouncer" and pooler.max_client_conn:
            return pooler.max_client_conn
        return self.budget


@dataclasses.dataclass
class MySQLFacts:
    """What one MySQL or MariaDB server (as one alias reaches it) says about itself."""

    address: str  # host:port as connected to
    dbname: str
    user: str  # the account, user@host (CURRENT_USER())
    product: str = "MySQL"  # or "MariaDB"
    version: str = ""  # VERSION()
    version_comment: str = ""  # @@version_comment
    max_connections: int = 0
    max_user_connections: int = 0  # the account's limit in effect (0: none)
    account_limit: bool = False  # max_user_connections is the account's own, not the global
    wait_timeout: float = 0.0  # @@global.wait_timeout
    interactive_timeout: float = 0.0
    session_wait_timeout: float = 0.0  # what sessions opened as the application's get
    interactive: bool = False  # the client says it is interactive (CLIENT_INTERACTIVE)
    read_only: bool = False
    super_read_only: bool | None = None  # None: the server has no such variable (MariaDB)
    via_tcp: bool = True
    connections_now: int = 0
    client_tcp: dict[str, int] | None = None  # the TCP options of the doctor's own connection
    pooler: Pooler | None = None
    error: str | None = None

    @property
    def budget(self) -> int:
        """Connections left for applications (the one spare slot is for an administrator)."""
        return self.max_connections

    @property
    def limit(self) -> int:
        """The most connections the application may open: the budget, or the account's
        max_user_connections when lower."""
        if self.max_user_connections:
            return min(self.budget, self.max_user_connections)
        return self.budget

    @property
    def idle_timeout_name(self) -> str:
        """The variable the application's sessions' idle timeout comes from."""
        return "interactive_timeout" if self.interactive else "wait_timeout"


#: the facts of a server, whichever database it runs
ServerFacts = PostgresFacts | MySQLFacts


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
    #: driver keywords beyond the conninfo (a MySQL alias: Django's connection parameters)
    connect_kwargs: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)
    server: ServerFacts | None = None

    @property
    def mysql(self) -> bool:
        """A MySQL or MariaDB database (its conninfo is a ``mysql://`` URL)."""
        return is_mysql(self.conninfo)

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
                f"max_lifetime {dur(self.max_lifetime)}, max_idle {dur(self.max_idle)}"
            )
            if self.keepalive_interval:
                text += f", keepalive_interval {dur(self.keepalive_interval)}"
            return text + ")"
        if self.mode == "persistent":
            age = "None" if self.conn_max_age is None else f"{self.conn_max_age:g}"
            return f"persistent connections (CONN_MAX_AGE {age})"
        return "a connection per request (CONN_MAX_AGE 0)"


@dataclasses.dataclass
class Demand:
    """The most connections all processes of all hosts may open to one server at once."""

    server: str
    total: int
    formula: str
    limit: int  # what the server (or the PgBouncer in front) accepts
    unbounded: list[str]  # aliases nothing bounds


@dataclasses.dataclass
class Report:
    databases: list[Database]
    processes: Processes
    servers: list[ServerFacts]
    findings: list[Finding]
    notes: list[str]
    demands: list[Demand] = dataclasses.field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """Findings per severity, every severity present."""
        return {s: sum(1 for f in self.findings if f.severity == s) for s in SEVERITIES}

    def exit_code(self, strict: bool = False) -> int:
        if any(s.error for s in self.servers):
            return 2
        worst = {f.severity for f in self.findings}
        if "error" in worst or (strict and "warning" in worst):
            return 1
        return 0
