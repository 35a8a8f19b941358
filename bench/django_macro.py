"""Macro benchmark: one Django app under HTTP load, on connguard and on every peer.

The same two views (``bench/djbench``: one indexed SELECT by primary key on a 10 000-row
table; a 3-statement transaction in ``atomic()``: SELECT ... FOR UPDATE, UPDATE, INSERT) are
served by gunicorn (gthread: 2 workers x 8 threads; sync: 4 workers) and driven by ``wrk``
at a fixed concurrency for a fixed time, for each configuration of ``DATABASES``:

    connguard             ENGINE connguard.backends.postgresql, pool max_size 8 per worker
    max_age_0             Django's default: a new server connection per request
    max_age_600           persistent connections (fast, and the fork/restart-unsafe one)
    max_age_600_hc        the same + CONN_HEALTH_CHECKS
    django_pool           Django's built-in pool (psycopg_pool), max_size 8 per worker
    dj_db_conn_pool       django-db-connection-pool (SQLAlchemy QueuePool), 8 per worker
    connguard_pgbouncer   connguard through PgBouncer (transaction mode)
    max_age_0_pgbouncer   CONN_MAX_AGE=0 through PgBouncer (transaction mode)

``--database mariadb`` runs the same views on a throwaway MariaDB (connguard.testing.mariadb;
never a MariaDB service of the machine) with the configurations MySQL has: connguard (ENGINE
connguard.backends.mysql), max_age_0, max_age_600, max_age_600_hc and dj_db_conn_pool
(dj_db_conn_pool.backends.mysql); Django has no built-in MySQL pool and PgBouncer is
PostgreSQL's. Each database has its own targets (:class:`Database`).

Configurations take turns round-robin, each round starting one further (A B C, B C A, ...),
``--rounds`` times (the worker classes alternate likewise); each figure
is the median over rounds, with the min-max spread. Peak server connections are sampled
from pg_stat_activity (client backends on the benchmark database: PgBouncer's server
connections included), on MariaDB from information_schema.PROCESSLIST (sessions on the
benchmark database). A sample of responses is checked for the row it asked for.

    python bench/django_macro.py                   # ~10 min; starts PostgreSQL and PgBouncer
    python bench/django_macro.py --quick           # ~2 min (83 s on the 2-core VM)
    python bench/django_macro.py --database mariadb          # ~6 min; starts MariaDB
    python bench/django_macro.py --database mariadb --quick  # ~1 min
    python bench/django_macro.py --configs connguard,max_age_0 --workers gthread --rounds 1
    python bench/django_macro.py --json out.json --plot docs/img
    python bench/django_macro.py --profile connguard,max_age_600 --rounds 1  # pyinstrument

This is a benchmark, not a test: it prints figures, marks the targets met or missed and
exits 0 either way (non-zero only when it could not run, or a response had the wrong row).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import json
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

HERE = Path(__file__).resolve().parent
if str(HERE.parent / "src") not in sys.path and (HERE.parent / "src").is_dir():
    sys.path.insert(0, str(HERE.parent / "src"))

from connguard.demo.load import http_get  # noqa: E402
from connguard.demo.processes import HttpServer, free_port  # noqa: E402
from connguard.demo.targets import server_target  # noqa: E402
from connguard.demo.targets.base import (  # noqa: E402
    AdminConnection,
    ConnectionMonitor,
    ServerTarget,
)
from connguard.demo.targets.mariadb import MariaDBTarget  # noqa: E402
from connguard.demo.targets.postgresql import (  # noqa: E402
    DbTarget,
    connect_admin,
    make_conninfo,
    parse_conninfo,
)

T = TypeVar("T")
PYTHON = sys.executable
ROWS = 10_000
WRK_CONNECTIONS = 32  # wrk's concurrency, every run
VERIFY_SAMPLES = 12  # responses checked for their row, per view and run
PGBOUNCER_POOL = 16  # server connections PgBouncer may open (= gthread's 2 x 8 threads)



@dataclasses.dataclass(frozen=True)
class Config:
    """One ``DATABASES["default"]``, for whichever database: ``engine`` names a role
    (``connguard``, ``stock`` or ``dj_db_conn_pool``) that :attr:`Database.engines` maps to
    the ENGINE of the database under test."""

    key: str
    label: str
    engine: str
    settings: dict[str, Any]  # DATABASES["default"] without ENGINE/NAME/HOST/PORT/USER/PASSWORD
    pgbouncer: bool = False

    def database(self, db: Database) -> dict[str, Any]:
        return {"ENGINE": db.engines[self.engine], **self.settings}


POOL = {"min_size": 1, "max_size": 8}  # per worker process, for connguard and Django's pool

CONFIGS: dict[str, Config] = {
    c.key: c
    for c in [
        Config("connguard", "connguard", "connguard", {"OPTIONS": {"pool": POOL}}),
        Config("max_age_0", "CONN_MAX_AGE=0", "stock", {"CONN_MAX_AGE": 0}),
        Config("max_age_600", "CONN_MAX_AGE=600", "stock", {"CONN_MAX_AGE": 600}),
        Config(
            "max_age_600_hc",
            "CONN_MAX_AGE=600 + health checks",
            "stock",
            {"CONN_MAX_AGE": 600, "CONN_HEALTH_CHECKS": True},
        ),
        Config("django_pool", "Django built-in pool", "stock", {"OPTIONS": {"pool": POOL}}),
        Config(
            "dj_db_conn_pool",
            "django-db-connection-pool",
            "dj_db_conn_pool",
            {"POOL_OPTIONS": {"POOL_SIZE": 8, "MAX_OVERFLOW": 0}},
        ),
        Config(
            "connguard_pgbouncer",
            "connguard + PgBouncer (txn)",
            "connguard",
            {"OPTIONS": {"pool": POOL}},
            pgbouncer=True,
        ),
        Config(
            "max_age_0_pgbouncer",
            "CONN_MAX_AGE=0 + PgBouncer (txn)",
            "stock",
            {"CONN_MAX_AGE": 0},
            pgbouncer=True,
        ),
    ]
}


@dataclasses.dataclass(frozen=True)
class Target:
    """connguard's req/s over ``peer``'s at least ``goal``, per worker class and view."""

    peer: str
    goal: float
    why: str


@dataclasses.dataclass(frozen=True)
class Database:
    """What differs between the databases under test: the engines, the configurations that
    exist there, the targets, and how the server is started (:func:`start_server`)."""

    key: str  # --database
    label: str
    engines: dict[str, str]  # Config.engine -> ENGINE
    configs: tuple[str, ...]  # the default --configs, in table order
    targets: tuple[Target, ...]
    peak_note: str  # what "peak server conns" counts
    missing: dict[str, str]  # configurations that do not exist here -> why


POSTGRESQL = Database(
    key="postgresql",
    label="PostgreSQL",
    engines={
        "connguard": "connguard.backends.postgresql",
        "stock": "django.db.backends.postgresql",
        "dj_db_conn_pool": "dj_db_conn_pool.backends.postgresql",
    },
    configs=tuple(CONFIGS),
    targets=(
        Target("max_age_600", 1.0, "the fastest unsafe configuration"),
        Target("max_age_0", 3.0, "Django's default"),
        Target("django_pool", 1.1, "Django's built-in pool"),
    ),
    peak_note="(client backends on the benchmark database; PgBouncer's server connections "
    "included)",
    missing={},
)

MARIADB = Database(
    key="mariadb",
    label="MariaDB",
    engines={
        "connguard": "connguard.backends.mysql",
        "stock": "django.db.backends.mysql",
        "dj_db_conn_pool": "dj_db_conn_pool.backends.mysql",
    },
    configs=("connguard", "max_age_0", "max_age_600", "max_age_600_hc", "dj_db_conn_pool"),
    targets=(
        Target("max_age_0", 3.0, "Django's default"),
        Target("max_age_600", 0.95, "the fastest unsafe configuration"),
        Target("dj_db_conn_pool", 1.1, "django-db-connection-pool"),
    ),
    peak_note="(sessions in information_schema.PROCESSLIST on the benchmark database)",
    missing={
        "django_pool": "Django has no built-in pool for MySQL",
        "connguard_pgbouncer": "PgBouncer is PostgreSQL's",
        "max_age_0_pgbouncer": "PgBouncer is PostgreSQL's",
    },
)

DATABASES: dict[str, Database] = {d.key: d for d in (POSTGRESQL, MARIADB)}


@dataclasses.dataclass(frozen=True)
class Workers:
    key: str
    label: str
    argv: tuple[str, ...]


WORKERS: dict[str, Workers] = {
    "gthread": Workers(
        "gthread", "gthread, 2 workers x 8 threads", ("-k", "gthread", "-w", "2", "--threads", "8")
    ),
    "sync": Workers("sync", "sync, 4 workers", ("-k", "sync", "-w", "4")),
}

VIEWS = {"select": "/select/", "txn": "/txn/"}
VIEW_LABELS = {
    "select": "one indexed SELECT",
    "txn": "atomic(): SELECT FOR UPDATE, UPDATE, INSERT",
}


@dataclasses.dataclass(frozen=True)
class Plan:
    duration: float
    warmup: float
    rounds: int


FULL = Plan(duration=4.0, warmup=1.0, rounds=3)
QUICK = Plan(duration=1.0, warmup=0.5, rounds=1)

# -- wrk ---------------------------------------------------------------------------------------

WRK_SCRIPT = r"""
-- requests <prefix><random id in 1..rows>; prints one JSON line with exact percentiles
local prefix, rows = "/select/", 10000
function init(args)
  prefix = args[1] or prefix
  rows = tonumber(args[2] or rows)
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end
function request()
  return wrk.format("GET", prefix .. math.random(1, rows))
end
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'CGBENCH {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, "write": %d, ' ..
    '"status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"mean_us": %.1f}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
"""


def ensure_wrk() -> str:
    """The wrk binary; installed with apt-get when missing (root), else a clear exit."""
    found = shutil.which("wrk")
    if found:
        return found
    print("wrk is not installed: installing it with apt-get (Debian's 'wrk' package) ...")
    apt = shutil.which("apt-get")
    if apt is None:
        sys.exit("wrk is missing and apt-get is not available: install wrk (e.g. from source)")
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    for argv in ([*prefix, apt, "update"], [*prefix, apt, "install", "-y", "wrk"]):
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            sys.exit(f"wrk is missing and `{' '.join(argv)}` failed ({exc}): install wrk")
        if proc.returncode != 0:
            sys.exit(
                f"wrk is missing and `{' '.join(argv)}` failed ({proc.returncode}): "
                f"{proc.stderr.strip()[-300:]}\ninstall wrk yourself (apt-get install wrk)"
            )
    found = shutil.which("wrk")
    if not found:
        sys.exit("apt-get installed wrk but it is not on PATH")
    print(f"installed {found}")
    return found


def wrk_version(wrk: str) -> str:
    proc = subprocess.run([wrk, "-v"], capture_output=True, text=True, timeout=10)
    match = re.search(r"wrk\s+(\S+)", proc.stdout + proc.stderr)
    return match.group(1) if match else "?"


def run_wrk(
    wrk: str, script: Path, url: str, prefix: str, duration: float, connections: int
) -> dict[str, Any]:
    """One wrk run (one thread, *connections* connections, *duration* seconds)."""
    seconds = max(1, round(duration))
    argv = [
        wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", str(script),
        url, "--", prefix, str(ROWS),
    ]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
    for line in proc.stdout.splitlines():
        if line.startswith("CGBENCH "):
            out: dict[str, Any] = json.loads(line[len("CGBENCH ") :])
            out["rps"] = out["requests"] / (out["duration_us"] / 1e6)
            out["errors"] = sum(out[k] for k in ("connect", "read", "write", "status", "timeout"))
            return out
    raise RuntimeError(f"wrk printed no result ({proc.returncode}): {proc.stderr[-500:]}")


# -- the database and the servers --------------------------------------------------------------


class BenchServer:
    """A running database server: where the projects connect (host, port, user, password),
    the benchmark database's set-up and removal, and its session count (peak sampling)."""

    db: Database
    where: str  # "throwaway server (connguard.testing)" or "--dsn (existing server)"
    host: str
    port: int
    user: str
    password: str

    def prepare(self, name: str) -> None:
        """Create database *name* with the two tables, bench_item holding ROWS rows."""
        raise NotImplementedError

    def drop(self, name: str) -> None:
        """Drop database *name*, even while in use; never raises."""
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError

    def sessions(self) -> ServerTarget:
        """What the ConnectionMonitor samples (sessions on a database, not its own)."""
        raise NotImplementedError

    def pid(self) -> int | None:
        """The server's process (its CPU time is measured), None when not ours (--dsn)."""
        rig = getattr(self, "rig", None)
        return rig.pid if rig is not None else None

    def connections(self, dbname: str) -> int:
        return self.sessions().connections(dbname)

    def settings(self, config: Config, dbname: str, host: str, port: int) -> dict[str, Any]:
        """``DATABASES["default"]`` of *config* on this server (or on PgBouncer at host:port)."""
        return {
            **config.database(self.db),
            "NAME": dbname, "HOST": host, "PORT": str(port), "USER": self.user,
            "PASSWORD": self.password,
        }  # fmt: skip


class PostgresBench(BenchServer):
    """PostgreSQL: the throwaway cluster's (``rig``) or --dsn's."""

    db = POSTGRESQL

    def __init__(self, host: str, port: int, user: str, password: str, where: str,
                 rig: Any = None) -> None:  # fmt: skip
        self.host, self.port, self.user, self.password = host, port, user, password
        self.where = where
        self.rig = rig

    @property
    def bouncer_source(self) -> Any:
        """What connguard.testing.pgbouncer.PgBouncer fronts (anything with conninfo())."""
        return self.rig if self.rig is not None else self

    def conninfo(self, dbname: str = "postgres", **params: Any) -> str:
        return make_conninfo(
            host=self.host, port=self.port, user=self.user, password=self.password or None,
            dbname=dbname, **params,
        )  # fmt: skip

    def prepare(self, name: str) -> None:
        with connect_admin(self.conninfo()) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        with connect_admin(self.conninfo(name)) as conn:
            conn.execute(
                "CREATE TABLE bench_item (id bigint PRIMARY KEY, key varchar(32) NOT NULL, "
                "value varchar(200) NOT NULL, counter bigint NOT NULL DEFAULT 0)"
            )
            conn.execute(
                "CREATE TABLE bench_log (id bigserial PRIMARY KEY, item_id bigint NOT NULL, "
                "counter bigint NOT NULL)"
            )
            conn.execute(
                "INSERT INTO bench_item (id, key, value) SELECT i, 'key-' || i, "
                "'value-of-' || i FROM generate_series(1, %s) AS i",
                [ROWS],
            )
            conn.execute("VACUUM ANALYZE bench_item")

    def drop(self, name: str) -> None:
        with contextlib.suppress(Exception), connect_admin(self.conninfo()) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def version(self) -> str:
        with connect_admin(self.conninfo()) as conn:
            return str(conn.execute("SHOW server_version")[0][0]).split()[0]

    def sessions(self) -> ServerTarget:
        return server_target(
            DbTarget(self.host, self.port, self.user, self.password, "postgres")
        )


class MariaDBBench(BenchServer):
    """The rig's throwaway MariaDB (connguard.testing.mariadb): the projects connect over
    TCP as its application account (no SUPER: as an application would), the benchmark's
    own SQL goes as root through its private socket."""

    db = MARIADB
    where = "throwaway server (connguard.testing)"

    def __init__(self, rig: Any) -> None:
        self.rig = rig
        self.host, self.port, self.user, self.password = rig.host, int(rig.port), rig.user, ""

    def prepare(self, name: str) -> None:
        self.rig.create_database(name)
        with AdminConnection(self.rig.admin_connection(name)) as conn:
            conn.execute(
                "CREATE TABLE bench_item (id bigint PRIMARY KEY, `key` varchar(32) NOT NULL, "
                "value varchar(200) NOT NULL, counter bigint NOT NULL DEFAULT 0) ENGINE=InnoDB"
            )
            conn.execute(
                "CREATE TABLE bench_log (id bigint AUTO_INCREMENT PRIMARY KEY, "
                "item_id bigint NOT NULL, counter bigint NOT NULL) ENGINE=InnoDB"
            )
            conn.execute(  # MariaDB's sequence engine
                "INSERT INTO bench_item (id, `key`, value) SELECT seq, CONCAT('key-', seq), "
                f"CONCAT('value-of-', seq) FROM seq_1_to_{ROWS}"
            )
            conn.execute("ANALYZE TABLE bench_item")

    def drop(self, name: str) -> None:
        MariaDBTarget(self.rig).drop_database(name)

    def version(self) -> str:
        return str(self.rig.execute("SELECT VERSION()")[0][0])

    def sessions(self) -> ServerTarget:
        return MariaDBTarget(self.rig)


@contextlib.contextmanager
def start_server(db: Database, dsn: str | None) -> Iterator[BenchServer]:
    """The server of *db*: --dsn's (PostgreSQL only), else a throwaway one, removed after."""
    if db is MARIADB:
        if dsn:
            sys.exit(
                "--dsn is for PostgreSQL only: --database mariadb starts its own throwaway "
                "MariaDB (connguard.testing.mariadb); drop --dsn"
            )
        from connguard.testing.mariadb import MariaDBServer

        rig = MariaDBServer(settings={"max_connections": 200})
        try:
            rig.start()
            yield MariaDBBench(rig)
        finally:
            rig.cleanup()
        return
    if dsn:
        info = parse_conninfo(dsn)
        yield PostgresBench(
            info.get("host", "127.0.0.1"), int(info.get("port", 5432)),
            info.get("user", "postgres"), info.get("password", ""), "--dsn (existing server)",
        )  # fmt: skip
        return
    from connguard.testing.server import PostgresServer

    pg = PostgresServer(settings={"max_connections": 200})
    try:
        pg.start()
        yield PostgresBench(
            pg.host, pg.port, pg.user, "", "throwaway server (connguard.testing)", rig=pg
        )
    finally:
        pg.cleanup()


def pgbouncer_api() -> Any:
    """connguard.testing.pgbouncer (PgBouncer, find_pgbouncer, PgBouncerUnavailable)."""
    from connguard.testing import pgbouncer

    return pgbouncer


CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def tree_cpu(pid: int | None) -> float:
    """CPU seconds (user + system) of process *pid* and its live descendants, with the
    children each has reaped (PostgreSQL's ended backends); 0.0 where /proc cannot tell."""
    total, todo, seen = 0.0, [pid] if pid else [], set()
    while todo:
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15]) / CLK_TCK  # utime stime cutime cstime
            for children in glob.glob(f"/proc/{p}/task/*/children"):
                with open(children) as f:
                    todo.extend(int(x) for x in f.read().split())
        except (OSError, ValueError, IndexError):
            continue
    return total


def children_cpu() -> float:
    """CPU seconds of this process's reaped children (wrk, once subprocess.run returns)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def wait_drained(server: BenchServer, dbname: str, timeout: float = 15.0) -> int:
    """Wait (bounded) until no client session is left on the benchmark database."""
    deadline = time.monotonic() + timeout
    n = server.connections(dbname)
    while n and time.monotonic() < deadline:
        time.sleep(0.1)
        n = server.connections(dbname)
    return n


def project_env(database: dict[str, Any], extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CGB_", "CGT_"))}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    paths = [str(HERE)]
    if (HERE.parent / "src" / "connguard").is_dir():
        paths.append(str(HERE.parent / "src"))
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["DJANGO_SETTINGS_MODULE"] = "djbench.settings"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["CGB_DATABASE"] = json.dumps(database)
    env.update(extra or {})
    return env


def start_gunicorn(
    env: dict[str, str], workers: Workers, log_dir: Path, name: str
) -> HttpServer:
    port = free_port()
    argv = [
        PYTHON, "-m", "gunicorn", "djbench.wsgi:application", "-b", f"127.0.0.1:{port}",
        *workers.argv, "--log-level", "warning", "--backlog", "2048",
        "--graceful-timeout", "3", "--timeout", "60",
    ]  # fmt: skip
    srv = HttpServer(name, argv, port=port, env=env, log_dir=log_dir)
    try:
        srv.wait_ready("/health", timeout=60)
    except BaseException:
        srv.stop()
        raise
    return srv


def verify(base_url: str, view: str, n: int) -> tuple[int, int, list[str]]:
    """Ask for *n* random rows one by one: (ok, wrong, samples of wrong answers)."""
    ok = wrong = 0
    samples: list[str] = []
    for _ in range(n):
        pk = random.randint(1, ROWS)
        status, data, err = http_get(f"{base_url}{VIEWS[view]}{pk}", timeout=10)
        good = (
            status == 200
            and isinstance(data, dict)
            and data.get("id") == pk
            and data.get("key") == f"key-{pk}"
            and (data.get("value") == f"value-of-{pk}" if view == "select" else data["counter"] > 0)
        )
        if good:
            ok += 1
        else:
            wrong += 1
            if len(samples) < 3:
                samples.append(f"{VIEWS[view]}{pk} -> {status} {data or err}")
    return ok, wrong, samples


# -- the run -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Cell:
    """One (worker class, view, configuration): a result per round."""

    runs: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def values(self, key: str) -> list[float]:
        return [float(r[key]) for r in self.runs]

    def median(self, key: str) -> float:
        return statistics.median(self.values(key))

    def spread(self, key: str) -> tuple[float, float]:
        vals = self.values(key)
        return min(vals), max(vals)

    def ratio_to(self, other: Cell) -> tuple[float, list[float]]:
        """self's req/s over other's: the median of per-round ratios (the two ran within
        the same round, a minute or two apart, so a slower machine mostly cancels) and the
        per-round ratios."""
        mine = {r["round"]: r["rps"] for r in self.runs}
        per_round = [mine[r["round"]] / r["rps"] for r in other.runs if r["round"] in mine]
        if not per_round:
            return self.median("rps") / other.median("rps"), []
        return statistics.median(per_round), per_round

    def cpu(self) -> float | None:
        """Median CPU us per request (gunicorn + database server + wrk), None if unknown."""
        vals = [float(r["cpu_us"]) for r in self.runs if r.get("cpu_us")]
        return statistics.median(vals) if vals else None

    def cpu_ratio_to(self, other: Cell) -> float | None:
        """other's CPU per request over self's (median of per-round ratios): the req/s ratio
        to expect where the CPU is the limit and nothing else runs; far steadier than req/s
        on a shared machine."""
        mine = {r["round"]: r.get("cpu_us") for r in self.runs}
        per_round = [
            r["cpu_us"] / mine[r["round"]]
            for r in other.runs
            if r.get("cpu_us") and mine.get(r["round"])
        ]
        return statistics.median(per_round) if per_round else None


def machine_info(server: BenchServer, wrk: str) -> dict[str, Any]:
    import gunicorn

    import connguard
    import django

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as f:
        cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    drivers = ("psycopg", "psycopg-pool") if server.db is POSTGRESQL else ("mysqlclient",)
    versions: dict[str, str] = {}
    for dist in (*drivers, "django-db-connection-pool", "SQLAlchemy"):
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            versions[dist] = version(dist)
    pgbouncer = "?"
    with contextlib.suppress(Exception):
        if server.db is not POSTGRESQL:
            raise LookupError  # not used
        binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
        out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
        pgbouncer = out.stdout.split()[1]
    mem = "?"
    with contextlib.suppress(Exception):
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        mem = f"{pages / 2**30:.0f} GB"
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "django": django.__version__,
        "gunicorn": gunicorn.__version__,
        "connguard": connguard.__version__,
        "database": server.db.key,
        server.db.key: server.version(),  # "postgresql": "17.2" / "mariadb": "10.11.19-..."
        **({"pgbouncer": pgbouncer} if server.db is POSTGRESQL else {}),
        "wrk": wrk_version(wrk),
        **versions,
        "load_before": load_average(),
    }


def load_average() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def run_config(
    *,
    config: Config,
    workers: Workers,
    views: list[str],
    plan: Plan,
    server: BenchServer,
    dbname: str,
    wrk: str,
    script: Path,
    log_dir: Path,
    extra_env: dict[str, str] | None = None,
) -> dict[str, dict[str, Any]]:
    """Start (PgBouncer and) gunicorn for one configuration, load each view: view -> run."""
    db_pids = [server.pid()]
    with contextlib.ExitStack() as stack:
        host, port = server.host, server.port
        if config.pgbouncer:
            assert isinstance(server, PostgresBench)
            api = pgbouncer_api()
            bouncer = api.PgBouncer(
                server.bouncer_source, pool_mode="transaction", default_pool_size=PGBOUNCER_POOL,
                max_client_conn=1000,
            )  # fmt: skip
            bouncer.start(timeout=10)
            stack.callback(bouncer.cleanup)
            host, port = bouncer.host, bouncer.port
            db_pids.append(bouncer.pid)
        database = server.settings(config, dbname, host, port)
        if config.pgbouncer:
            database["DISABLE_SERVER_SIDE_CURSORS"] = True  # what Django asks behind PgBouncer
        env = project_env(database, extra_env)
        srv = start_gunicorn(env, workers, log_dir, f"{workers.key}-{config.key}")
        stack.callback(srv.stop)
        out: dict[str, dict[str, Any]] = {}
        for view in views:
            prefix = VIEWS[view]
            run_wrk(wrk, script, srv.base_url, prefix, plan.warmup, WRK_CONNECTIONS)
            ok, wrong, samples = verify(srv.base_url, view, VERIFY_SAMPLES)
            monitor = ConnectionMonitor(
                server.sessions(), dbname, interval=0.05,
                max_seconds=plan.duration + 30,
            ).start()
            cpu0 = (tree_cpu(srv.pid), sum(map(tree_cpu, db_pids)), children_cpu())
            try:
                result = run_wrk(wrk, script, srv.base_url, prefix, plan.duration, WRK_CONNECTIONS)
            finally:
                peak = monitor.stop()
            cpu1 = (tree_cpu(srv.pid), sum(map(tree_cpu, db_pids)), children_cpu())
            per_request = 1e6 / max(1, result["requests"])
            app, dbs, load = ((b - a) * per_request for a, b in zip(cpu0, cpu1, strict=True))
            result.update(cpu_app_us=app, cpu_db_us=dbs, cpu_wrk_us=load, cpu_us=app + dbs + load)
            result.update(peak=peak, verified=ok, wrong=wrong, wrong_samples=samples)
            out[view] = result
        if not srv.alive():
            raise RuntimeError(f"gunicorn died during the run:\n{srv.log_text()}")
    left = wait_drained(server, dbname)
    if left:
        print(f"  warning: {left} server connections left after {config.key}", flush=True)
    return out


def fmt_ms(us: float) -> str:
    ms = us / 1000
    return f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def report(
    db: Database,
    info: dict[str, Any],
    where: str,
    plan: Plan,
    configs: list[Config],
    workers: list[Workers],
    views: list[str],
    cells: dict[tuple[str, str, str], Cell],
) -> tuple[str, list[dict[str, Any]]]:
    lines: list[str] = []
    out = lines.append
    if db is POSTGRESQL:
        server = (
            f"psycopg {info.get('psycopg')}, PostgreSQL {info['postgresql']} ({where}), "
            f"PgBouncer {info['pgbouncer']}"
        )
    else:
        server = f"mysqlclient {info.get('mysqlclient')}, {db.label} {info[db.key]} ({where})"
    out(
        f"connguard {info['connguard']} Django macro benchmark: Django {info['django']}, "
        f"gunicorn {info['gunicorn']}, Python {info['python']}, {server}, wrk {info['wrk']}"
    )
    out(
        f"machine: {info['cpus']} CPU {info['cpu']}, {info['memory']}, {info['os']}; load "
        f"average {info['load_before']} before, {info.get('load_after', '?')} after"
    )
    out(
        f"wrk -t1 -c{WRK_CONNECTIONS}, {plan.duration:g} s per run after {plan.warmup:g} s of "
        f"warm-up; {plan.rounds} round(s), configurations round-robin, rotated each round; "
        "median (min-max)"
    )
    targets: list[dict[str, Any]] = []
    for w in workers:
        for view in views:
            out("")
            on = "" if db is POSTGRESQL else f"{db.label}, "
            out(f"### {on}{w.label} — {view}: {VIEW_LABELS[view]}")
            out("")
            out(
                "| configuration | req/s | req/s min-max | p50 ms | p99 ms | p99 min-max "
                "| errors | wrong | peak server conns | CPU us/req (app+db) | connguard / this |"
            )
            out("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
            base = cells.get((w.key, view, "connguard"))
            for c in configs:
                cell = cells.get((w.key, view, c.key))
                if cell is None or not cell.runs:
                    continue
                lo, hi = cell.spread("rps")
                plo, phi = cell.spread("p99_us")
                ratio = base.ratio_to(cell)[0] if base and base.runs else None
                name = f"**{c.label}**" if c.key == "connguard" else c.label
                cpu = cell.cpu()
                if cpu is not None:
                    app = statistics.median(cell.values("cpu_app_us"))
                    dbs = statistics.median(cell.values("cpu_db_us"))
                    cpu_text = f"{cpu:.0f} ({app:.0f}+{dbs:.0f})"
                else:
                    cpu_text = ""
                out(
                    f"| {name} | {cell.median('rps'):.0f} | {lo:.0f}-{hi:.0f} | "
                    f"{fmt_ms(cell.median('p50_us'))} | {fmt_ms(cell.median('p99_us'))} | "
                    f"{fmt_ms(plo)}-{fmt_ms(phi)} | {sum(cell.values('errors')):.0f} | "
                    f"{sum(cell.values('wrong')):.0f} | {max(cell.values('peak')):.0f} | "
                    f"{cpu_text} | {'' if ratio is None else f'{ratio:.2f}x'} |"
                )
            if base is None or not base.runs:
                continue
            for t in db.targets:
                cell = cells.get((w.key, view, t.peer))
                if cell is None or not cell.runs:
                    continue
                ratio, per_round = base.ratio_to(cell)
                targets.append(
                    {
                        "workers": w.key, "view": view, "peer": t.peer, "goal": t.goal,
                        "ratio": ratio, "met": ratio >= t.goal, "why": t.why,
                        "per_round": per_round, "cpu_ratio": base.cpu_ratio_to(cell),
                    }
                )  # fmt: skip
    out("")
    out("errors = wrk's socket errors + non-2xx responses, summed over rounds; wrong = sampled")
    out("responses that did not carry the row asked for; peak = most server connections seen")
    out(f"{db.peak_note}.")
    out("CPU us/req = CPU time of the gunicorn workers, the database server (and PgBouncer) and")
    out("wrk over the requests served (app+db: the first two), median over rounds.")
    out("connguard / this = median over rounds of connguard's req/s over this one's, round by")
    out("round (a paired comparison: both ran in the same round). by CPU = this one's CPU per")
    out("request over connguard's: what req/s would show where CPU is the limit and nothing")
    out("else runs (steadier than req/s on a shared machine; not what the targets are judged by).")
    if targets:
        out("")
        out("| target | worker class | view | connguard / peer | per round | | by CPU |")
        out("|---|---|---|---:|---|---|---:|")
        for row in targets:
            rounds = ", ".join(f"{r:.2f}" for r in row["per_round"])
            by_cpu = "" if row.get("cpu_ratio") is None else f"{row['cpu_ratio']:.2f}x"
            out(
                f"| >= {row['goal']:g}x {CONFIGS[row['peer']].label} | {row['workers']} "
                f"| {row['view']} | {row['ratio']:.2f}x | {rounds} "
                f"| {'met' if row['met'] else '**missed**'} | {by_cpu} |"
            )
        out("")
        out(summary_line(db, targets))
    return "\n".join(lines), targets


def span(values: list[float]) -> str:
    """'1.23x' or '1.10-1.35x'."""
    lo, hi = f"{min(values):.2f}", f"{max(values):.2f}"
    return f"{lo}x" if lo == hi else f"{lo}-{hi}x"


def summary_line(db: Database, targets: list[dict[str, Any]]) -> str:
    """One line to quote: per target, the range of connguard / peer over the cells and how
    many cells met it."""
    parts = []
    for t in db.targets:
        rows = [r for r in targets if r["peer"] == t.peer]
        if not rows:
            continue
        met = sum(r["met"] for r in rows)
        by_cpu = [r["cpu_ratio"] for r in rows if r.get("cpu_ratio") is not None]
        cpu_text = f", by CPU {span([*by_cpu])}" if by_cpu else ""
        parts.append(
            f"vs {CONFIGS[t.peer].label} {span([r['ratio'] for r in rows])} "
            f"(>= {t.goal:g}x: {met}/{len(rows)} met{cpu_text})"
        )
    total = sum(r["met"] for r in targets)
    return f"summary, {db.label}: connguard {'; '.join(parts)}; {total}/{len(targets)} targets met"


def summarize(cells: dict[tuple[str, str, str], Cell]) -> list[dict[str, Any]]:
    rows = []
    for (w, view, key), cell in cells.items():
        if not cell.runs:
            continue
        row: dict[str, Any] = {"workers": w, "view": view, "config": key}
        for metric in ("rps", "p50_us", "p99_us"):
            lo, hi = cell.spread(metric)
            row[metric] = {"median": cell.median(metric), "min": lo, "max": hi}
        row["errors"] = sum(cell.values("errors"))
        row["wrong"] = sum(cell.values("wrong"))
        row["peak"] = max(cell.values("peak"))
        row["cpu_us"] = cell.cpu()
        rows.append(row)
    return rows


def rotated(items: list[T], r: int) -> list[T]:
    """*items* starting at the r-th: round r of the round-robin (A B C, B C A, C A B, ...),
    so that no configuration always runs first after a change (a fresh worker class, the
    machine's state after the previous one)."""
    k = r % len(items) if items else 0
    return items[k:] + items[:k]


def parse_list(text: str, known: dict[str, Any], what: str) -> list[str]:
    keys = [k.strip() for k in text.split(",") if k.strip()]
    bad = [k for k in keys if k not in known]
    if bad:
        sys.exit(f"unknown {what}: {', '.join(bad)} (choose from {', '.join(known)})")
    return keys


def parse_configs(text: str | None, db: Database, option: str = "--configs") -> list[str]:
    """The configuration keys asked for (default: every one *db* has), or a clear exit."""
    if text is None:
        return list(db.configs)
    keys = parse_list(text, CONFIGS, "configurations")
    absent = [k for k in keys if k in db.missing]
    if absent:
        why = "; ".join(f"{k}: {db.missing[k]}" for k in absent)
        sys.exit(
            f"{option}: not on {db.label}: {why}. --database {db.key} runs "
            f"{', '.join(db.configs)}"
        )
    return keys


#: Django's connection handling, the same entry points for every configuration: checkout (or
#: connect) happens in ensure_connection(), checkin (or close) in close_old_connections(),
#: connected to request_started and request_finished.
CONNECTION_ENTRY_POINTS = ("ensure_connection", "close_old_connections")


def connection_overhead(session: Any, requests: int) -> list[tuple[str, float]]:
    """(where, us per request) for the connection entry points and every outermost
    connguard frame, from a combined pyinstrument session of *requests* requests."""
    rows: dict[str, float] = {}

    def visit(frame: Any, in_entry: bool, in_connguard: bool) -> None:
        name = frame.function or ""
        path = (frame.file_path or "").replace("\\", "/")
        if name == "<module>":  # an import: once per worker (the first request), not per request
            rows["imports (first requests of each worker)"] = (
                rows.get("imports (first requests of each worker)", 0.0) + frame.time
            )
            return
        is_connguard = "/connguard/" in path and "/djbench/" not in path
        if name in CONNECTION_ENTRY_POINTS and not in_entry:
            key = f"{name}() [{Path(path).name}]"
            rows[key] = rows.get(key, 0.0) + frame.time
            in_entry = True
        if is_connguard and not in_connguard:
            key = f"  connguard: {name}() [{Path(path).name}:{frame.line_no}]"
            rows[key] = rows.get(key, 0.0) + frame.time
            in_connguard = True
        for child in frame.children:
            visit(child, in_entry, in_connguard)

    root = session.root_frame()
    if root is not None:
        visit(root, False, False)
        rows["whole request (profiled, imports included)"] = root.time
    scale = 1e6 / max(1, requests)
    return sorted(((k, v * scale) for k, v in rows.items()), key=lambda kv: -kv[1])


def profile(args: argparse.Namespace, plan: Plan) -> int:
    """Run one configuration with pyinstrument in the workers; print where a request's time
    goes, and the time in Django's connection entry points and in connguard, per request."""
    try:
        import pyinstrument  # noqa: F401
    except ImportError:
        sys.exit("--profile needs pyinstrument: pip install pyinstrument")
    from pyinstrument.renderers import ConsoleRenderer
    from pyinstrument.session import Session

    wrk = ensure_wrk()
    db = DATABASES[args.database]
    keys = parse_configs(args.profile, db, "--profile")
    workers = WORKERS["gthread" if args.workers == "both" else args.workers]
    views = parse_list(args.views, VIEWS, "views")
    with start_server(db, args.dsn) as server, tempfile.TemporaryDirectory() as tmp:
        dbname = f"cgbench_{uuid.uuid4().hex[:8]}"
        server.prepare(dbname)
        script = Path(tmp) / "bench.lua"
        script.write_text(WRK_SCRIPT)
        try:
            for key, view in [(k, v) for v in views for k in keys]:
                config = CONFIGS[key]
                prof_dir = Path(tmp) / f"prof-{key}-{view}"
                prof_dir.mkdir()
                result = run_config(
                    config=config, workers=workers, views=[view], plan=plan, server=server,
                    dbname=dbname, wrk=wrk, script=script, log_dir=Path(tmp),
                    extra_env={"CGB_PROFILE_DIR": str(prof_dir)},
                )[view]  # fmt: skip
                files = sorted(glob.glob(str(prof_dir / "*.pyisession")))
                if not files:
                    print(f"{key} {view}: no profile written")
                    continue
                session = Session.load(files[0])
                for other in files[1:]:
                    session = Session.combine(session, Session.load(other))
                requests = sum(
                    int(Path(f).read_text()) for f in glob.glob(str(prof_dir / "*.count"))
                )
                print(
                    f"\n== {db.label}, {config.label}, {workers.label}, view {view}: "
                    f"{result['rps']:.0f} "
                    f"req/s under the profiler; {requests} requests profiled"
                )
                if args.profile_tree:
                    renderer = ConsoleRenderer(unicode=True, color=False, show_all=False)
                    print(renderer.render(session))
                print(f"{'us per request (wall time in the serving thread)':58} {'us':>8}")
                for where, us in connection_overhead(session, requests):
                    print(f"{where:58} {us:8.0f}")
                if args.profile_out:
                    out = Path(args.profile_out) / f"profile-{key}-{view}.pyisession"
                    session.save(str(out))
                    print(f"session saved to {out} (pyinstrument --load {out})")
        finally:
            server.drop(dbname)
    return 0


def run_cycles(args: argparse.Namespace, plan: Plan) -> int:
    """``--cycle N``: each configuration's per-request database work in one thread, no HTTP
    (``djbench.cycle``), rounds round-robin; a table of microseconds per phase."""
    db = DATABASES[args.database]
    configs = [CONFIGS[k] for k in parse_configs(args.configs, db)]
    views = parse_list(args.views, VIEWS, "views")
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    with start_server(db, args.dsn) as server, contextlib.ExitStack() as stack:
        dbname = f"cgbench_{uuid.uuid4().hex[:8]}"
        server.prepare(dbname)
        stack.callback(server.drop, dbname)
        print(
            f"{db.label}, one thread, {args.cycle} request cycles per run, {plan.rounds} "
            f"round(s), {server.where}"
        )
        for r in range(plan.rounds):
            for c in rotated(configs, r):
                with contextlib.ExitStack() as per_config:
                    host, port = server.host, server.port
                    if c.pgbouncer:
                        assert isinstance(server, PostgresBench)
                        bouncer = pgbouncer_api().PgBouncer(
                            server.bouncer_source, pool_mode="transaction",
                            default_pool_size=PGBOUNCER_POOL,
                        )  # fmt: skip
                        bouncer.start(timeout=10)
                        per_config.callback(bouncer.cleanup)
                        host, port = bouncer.host, bouncer.port
                    env = project_env(server.settings(c, dbname, host, port))
                    for view in views:
                        argv = [PYTHON, "-m", "djbench.cycle", view, str(args.cycle)]
                        proc = subprocess.run(
                            argv, env=env, capture_output=True, text=True, timeout=300,
                            cwd=tempfile.gettempdir(),
                        )  # fmt: skip
                        line = next(
                            (x for x in proc.stdout.splitlines() if x.startswith("CGCYCLE ")), None
                        )
                        if line is None:
                            print(f"  FAILED {c.key} {view}: {proc.stderr[-800:]}", flush=True)
                            continue
                        data = json.loads(line[len("CGCYCLE ") :])
                        results.setdefault((c.key, view), []).append(data)
                        print(
                            f"round {r + 1}/{plan.rounds} {c.key:20} {view:6} "
                            f"{data['total']['median']:7.0f} us per cycle",
                            flush=True,
                        )
    phases = ["request_started", "checkout", "view", "request_finished", "total"]
    for view in views:
        print(f"\n### {db.label}, one thread, no HTTP - {view}: {VIEW_LABELS[view]}\n")
        print(
            "| configuration | request_started us | checkout us | view us "
            "| request_finished us | total us | connection handling us |"
        )
        print("|---|---:|---:|---:|---:|---:|---:|")
        for c in configs:
            runs = results.get((c.key, view))
            if not runs:
                continue
            med = {p: statistics.median(run[p]["median"] for run in runs) for p in phases}
            handling = med["request_started"] + med["checkout"] + med["request_finished"]
            cells = " | ".join(f"{med[p]:.1f}" for p in phases)
            print(f"| {c.label} | {cells} | {handling:.1f} |")
    print(
        "\nmedian over rounds of each run's median; connection handling = request_started + "
        "checkout + request_finished (what the configuration adds to a request, outside the "
        "view's own queries; a connect per request shows there)"
    )
    return 0


def rerender(args: argparse.Namespace) -> int:
    """The report of a saved run (``--json``), with this version's table and chart."""
    saved = json.loads(Path(args.from_json).read_text())
    cells: dict[tuple[str, str, str], Cell] = {}
    for run in saved["runs"]:
        key = (run["workers"], run["view"], run["config"])
        cells.setdefault(key, Cell()).runs.append(run)
    configs = [CONFIGS[k] for k in saved["configs"]]
    workers = [WORKERS[k] for k in saved["workers"]]
    views = list(saved["views"])
    plan = Plan(**saved["plan"])
    db = DATABASES[saved.get("database") or saved["machine"].get("database") or "postgresql"]
    return finish(args, db, saved["machine"], saved["server"], plan, configs, workers, views,
                  cells, saved.get("failed", []), None)  # fmt: skip


def finish(
    args: argparse.Namespace,
    db: Database,
    info: dict[str, Any],
    where: str,
    plan: Plan,
    configs: list[Config],
    workers: list[Workers],
    views: list[str],
    cells: dict[tuple[str, str, str], Cell],
    failed: list[str],
    started: float | None,
) -> int:
    """Print the report; write --json and --plot."""
    text, targets = report(db, info, where, plan, configs, workers, views, cells)
    print()
    print(text)
    if failed:
        print("\ncould not run:\n  " + "\n  ".join(failed))
    if started is not None:
        print(f"\n(total {time.monotonic() - started:.0f} s)")
    data = {
        "database": db.key,
        "machine": info,
        "server": where,
        "plan": dataclasses.asdict(plan),
        "wrk_connections": WRK_CONNECTIONS,
        "workers": {w.key: w.label for w in workers},
        "views": {v: VIEW_LABELS[v] for v in views},
        "configs": {c.key: c.label for c in configs},
        "runs": [
            {"workers": w, "view": v, "config": k, **run}
            for (w, v, k), cell in cells.items()
            for run in cell.runs
        ],
        "summary": summarize(cells),
        "targets": targets,
        "failed": failed,
        "table": text,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
    if args.plot:
        sys.path.insert(0, str(HERE))
        from plot import plot_macro

        name = "django_macro.png" if db is POSTGRESQL else f"django_macro_{db.key}.png"
        path = plot_macro(data, Path(args.plot) / name)
        print(f"chart: {path}")
    wrong = sum(sum(cell.values("wrong")) for cell in cells.values())
    return 1 if wrong or (failed and not cells) else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument(
        "--database", default="postgresql", choices=list(DATABASES),
        help="the database under test (default postgresql); mariadb starts a throwaway MariaDB",
    )  # fmt: skip
    parser.add_argument(
        "--dsn", help="libpq conninfo of an existing PostgreSQL server (default: start one)"
    )
    parser.add_argument(
        "--duration", type=float, help="seconds of load per run (default 4; wrk counts whole s)"
    )
    parser.add_argument("--warmup", type=float, help="seconds of warm-up per run (default 1)")
    parser.add_argument("--rounds", type=int, help="rounds over the configurations (default 3)")
    parser.add_argument(
        "--configs", help="comma-separated keys (default: all the database has): "
        f"{', '.join(CONFIGS)}; on mariadb: {', '.join(MARIADB.configs)}",
    )  # fmt: skip
    parser.add_argument("--workers", default="both", choices=["both", "gthread", "sync"])
    parser.add_argument("--views", default="select,txn", help="select, txn or both")
    parser.add_argument("--quick", action="store_true", help="a short run (~2 min)")
    parser.add_argument("--json", metavar="FILE", help="also write the results to FILE")
    parser.add_argument("--plot", metavar="DIR", help="write the chart (PNG) into DIR")
    parser.add_argument(
        "--profile", metavar="CONFIGS", help="profile these configurations instead (pyinstrument)"
    )
    parser.add_argument("--profile-tree", action="store_true", help="print the call trees too")
    parser.add_argument(
        "--cycle", type=int, metavar="N",
        help="no HTTP: N request cycles per configuration in one thread, timed by phase",
    )  # fmt: skip
    parser.add_argument(
        "--from-json", metavar="FILE", help="no run: the table (and --plot) from saved --json"
    )
    parser.add_argument("--profile-out", metavar="DIR", help="where --profile saves sessions")
    args = parser.parse_args(argv)
    base = QUICK if args.quick else FULL
    plan = Plan(
        duration=args.duration if args.duration is not None else base.duration,
        warmup=args.warmup if args.warmup is not None else base.warmup,
        rounds=args.rounds if args.rounds is not None else base.rounds,
    )
    if plan.rounds < 1 or plan.duration <= 0 or plan.warmup < 0:
        sys.exit("--rounds must be >= 1, --duration > 0 and --warmup >= 0")
    if args.profile:
        return profile(args, plan)
    if args.from_json:
        return rerender(args)
    if args.cycle:
        return run_cycles(args, plan)
    db = DATABASES[args.database]
    configs = [CONFIGS[k] for k in parse_configs(args.configs, db)]
    workers = [
        WORKERS[k] for k in (["gthread", "sync"] if args.workers == "both" else [args.workers])
    ]
    views = parse_list(args.views, VIEWS, "views")
    wrk = ensure_wrk()
    if any(c.pgbouncer for c in configs):
        try:
            pgbouncer_api().find_pgbouncer()
        except Exception as exc:
            sys.exit(f"a PgBouncer configuration was asked for, but: {exc}")
    started = time.monotonic()
    cells: dict[tuple[str, str, str], Cell] = {}
    failed: list[str] = []
    with start_server(db, args.dsn) as server, tempfile.TemporaryDirectory() as tmp:
        where = server.where
        info = machine_info(server, wrk)
        bouncer = f", PgBouncer {info['pgbouncer']}" if "pgbouncer" in info else ""
        print(
            f"machine: {info['cpus']} CPU {info['cpu']}, {info['memory']}, {info['os']}; "
            f"Python {info['python']}, Django {info['django']}, {db.label} {info[db.key]}"
            f"{bouncer}, wrk {info['wrk']}; load average {info['load_before']}",
            flush=True,
        )
        dbname = f"cgbench_{uuid.uuid4().hex[:8]}"
        server.prepare(dbname)
        script = Path(tmp) / "bench.lua"
        script.write_text(WRK_SCRIPT)
        try:
            for r in range(plan.rounds):
                for w in rotated(workers, r):
                    for c in rotated(configs, r):
                        t0 = time.monotonic()
                        try:
                            results = run_config(
                                config=c, workers=w, views=views, plan=plan, server=server,
                                dbname=dbname, wrk=wrk, script=script, log_dir=Path(tmp),
                            )  # fmt: skip
                        except Exception as exc:
                            failed.append(f"round {r + 1} {w.key} {c.key}: {exc}")
                            print(f"  FAILED {w.key} {c.key}: {str(exc)[:800]}", flush=True)
                            continue
                        summary = []
                        for view, result in results.items():
                            result["round"] = r + 1
                            cells.setdefault((w.key, view, c.key), Cell()).runs.append(result)
                            summary.append(
                                f"{view} {result['rps']:6.0f} req/s p99 "
                                f"{fmt_ms(result['p99_us']):>5} ms peak {result['peak']:2d}"
                                + (f" errors {result['errors']}" if result["errors"] else "")
                                + (f" WRONG {result['wrong']}" if result["wrong"] else "")
                            )
                        print(
                            f"round {r + 1}/{plan.rounds} {w.key:7} {c.key:20} "
                            f"{' | '.join(summary)}  ({time.monotonic() - t0:.0f} s)",
                            flush=True,
                        )
        finally:
            server.drop(dbname)
        info["load_after"] = load_average()
    return finish(args, db, info, where, plan, configs, workers, views, cells, failed, started)


if __name__ == "__main__":
    sys.exit(main())
