"""``connguard.backends.postgresql`` behind a real PgBouncer in transaction mode.

The demo project (:mod:`connguard.demo.project`, run by :mod:`connguard.demo.runner`) is
pointed at the rig's PgBouncer (``connguard.testing.pgbouncer``), which multiplexes the workers' client connections over
fewer server connections; the rows and acknowledged writes are checked on the server
itself. Zero errors, zero wrong rows, zero lost writes:

1. a gthread gunicorn load through PgBouncer;
2. PgBouncer stopped and started again on the same port: requests in the gap fail fast with
   connguard's ``PoolUnavailable`` (counted apart), every request after it succeeds;
3. ``connections.close_all()`` on connections whose client side PgBouncer already dropped
   (``KILL`` on its admin console) never raises, and the next query works;
4. the system check for server-side cursors behind a declared transaction-mode pooler.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from connguard.demo.base import CONNGUARD_ENGINE
from connguard.demo.load import LoadResult, mixed_paths
from connguard.demo.processes import django_env
from connguard.demo.runner import Harness
from connguard.demo.targets.postgresql import DbTarget
from connguard.testing.pgbouncer import PgBouncer

pytestmark = [pytest.mark.django, pytest.mark.timeout(180)]

HAS_PSYCOPG3 = importlib.util.find_spec("psycopg") is not None
POOL_SIZE = 4  # PgBouncer's server connections per database/user
METRICS_PROJECT = Path(__file__).resolve().parent  # holds metricsproject/ (has connguard's checks)


@pytest.fixture(scope="module")
def pgbouncer_settings() -> dict[str, Any]:
    """2 gunicorn workers x max_size 4 = 8 client connections over 4 server connections."""
    return {"pool_mode": "transaction", "default_pool_size": POOL_SIZE, "max_client_conn": 200}


def engine_settings(**pool: Any) -> dict[str, Any]:
    """connguard's engine as a transaction-mode PgBouncer wants it: the pooler declared, no
    server-side cursors, no prepared statements (psycopg 3 only; psycopg2 has none and
    rejects the option)."""
    options: dict[str, Any] = {
        "pool": {"max_size": 4, "timeout": 5, "server_pooler": "transaction", **pool}
    }
    if HAS_PSYCOPG3:
        options["prepare_threshold"] = None
    return {
        "ENGINE": CONNGUARD_ENGINE,
        "OPTIONS": options,
        "DISABLE_SERVER_SIDE_CURSORS": True,
    }


def through(bouncer: PgBouncer, h: Harness) -> DbTarget:
    """The harness's database, reached through the bouncer."""
    t = h.target
    return DbTarget(bouncer.host, bouncer.port, t.user, t.password, t.dbname)


def env(h: Harness, bouncer: PgBouncer, settings: dict[str, Any]) -> dict[str, str]:
    """The project's environment with the database behind the bouncer."""
    return django_env(through(bouncer, h), settings, app_name=h.app_name)


def explain(load: LoadResult, h: Harness, bouncer: PgBouncer) -> str:
    return (
        f"requests={load.requests} ok={load.ok} errors={load.errors} wrong={load.wrong} "
        f"not_sent={load.not_sent}\nerrors: {dict(load.error_samples)}\nwrong: "
        f"{load.wrong_samples}\n{h.logs(3000)}\n--- pgbouncer ---\n{bouncer.log_tail(30)}"
    )


def assert_clean(load: LoadResult, h: Harness, bouncer: PgBouncer) -> None:
    assert load.requests > 0 and load.not_sent == 0, explain(load, h, bouncer)
    assert (load.errors, load.wrong) == (0, 0), explain(load, h, bouncer)
    assert load.ok == load.requests, explain(load, h, bouncer)
    assert h.lost_writes(load.acked_tokens) == 0, explain(load, h, bouncer)


@pytest.fixture
def bouncer(pgbouncer: PgBouncer) -> Iterator[PgBouncer]:
    """The module's PgBouncer, running before and after each test (a test may stop it)."""
    pgbouncer.start()
    yield pgbouncer
    pgbouncer.start()


# -- 1. a load through PgBouncer ---------------------------------------------------------------


def test_gthread_load_through_pgbouncer(django_pg: Any, django_db: str, bouncer: PgBouncer) -> None:
    """gunicorn gthread -w 2 --threads 4, 400 reads and writes 16 at a time: the workers'
    pooled client connections (up to 8) share PgBouncer's 4 server connections."""
    with Harness(django_pg, django_db) as h:
        h.prepare()
        srv = h.gunicorn(env(h, bouncer, engine_settings()), worker_class="gthread", threads=4)
        with h.monitor() as mon:
            load = h.load(srv, mixed_paths(400, write_every=3), concurrency=16,
                          timeout=10, deadline=60)  # fmt: skip
        assert_clean(load, h, bouncer)
        assert len(load.acked_tokens) >= 130
        # what reached the server was PgBouncer's pool, not one connection per client
        assert 1 <= mon.peak <= POOL_SIZE, explain(load, h, bouncer)
        pools = [p for p in bouncer.show("POOLS") if p["database"] == django_db]
        assert pools and pools[0]["pool_mode"] == "transaction"
        clients = [c for c in bouncer.show("CLIENTS") if c["database"] == django_db]
        assert 1 <= len(clients) <= 8, clients  # each worker's pool: at most max_size 4


# -- 2. PgBouncer restarted --------------------------------------------------------------------


def test_pgbouncer_restart(django_pg: Any, django_db: str, bouncer: PgBouncer) -> None:
    """Warm pools, PgBouncer stopped ~2 s (every client connection cut) and started on the
    same port: the requests in the gap fail fast with PoolUnavailable naming the pool;
    after it, the pools replace their dead connections and every request succeeds."""
    with Harness(django_pg, django_db) as h:
        h.prepare()
        srv = h.gunicorn(env(h, bouncer, engine_settings()), worker_class="gthread", threads=4)
        warm = h.load(srv, mixed_paths(64), concurrency=8, timeout=10, deadline=30)
        assert_clean(warm, h, bouncer)
        assert bouncer.pid is not None
        old_pid = bouncer.pid
        gap = LoadResult()
        bouncer.stop()
        try:
            ends = time.monotonic() + 2.0
            for _ in range(40):  # bounded: at most 40 batches of 4 in the gap
                if time.monotonic() >= ends:
                    break
                gap.merge(h.load(srv, mixed_paths(4), concurrency=4, timeout=10,
                                 deadline=10))  # fmt: skip
                time.sleep(0.05)
        finally:
            bouncer.start()
        assert bouncer.pid != old_pid
        print(f"gap: {gap.requests} requests, {gap.errors} errors, max latency "
              f"{gap.max_latency:.3f} s: {dict(gap.error_samples)}")  # fmt: skip
        after = h.load(srv, mixed_paths(160, write_every=3), concurrency=8,
                       timeout=10, deadline=60)  # fmt: skip
        assert_clean(after, h, bouncer)
        # the gap: fast, clear failures; nothing acknowledged that was not written
        assert gap.requests >= 8 and gap.ok == 0, explain(gap, h, bouncer)
        assert gap.wrong == 0 and gap.max_latency < 2.0, explain(gap, h, bouncer)
        for sample in gap.error_samples:  # samples are cut at 160 characters
            assert sample.startswith("PoolUnavailable: pool 'default': database unreachable"), (
                explain(gap, h, bouncer)
            )
        assert "Connection refused" in h.logs(20000) or "connection refused" in h.logs(20000)


# -- 3. close() after PgBouncer dropped the connection -----------------------------------------

CLOSE_SCRIPT = """
import json, sys
import django
django.setup()
from django.db import connection, connections

mode = sys.argv[1]
if mode == "in_transaction":
    connection.set_autocommit(False)  # a transaction stays open on the server
with connection.cursor() as cur:
    cur.execute("SELECT 1")
    cur.fetchone()
print("ready", flush=True)
sys.stdin.readline()  # the test KILLs the database on PgBouncer's console meanwhile
report = {"close_error": None}
try:
    connections.close_all()
except Exception as exc:
    report["close_error"] = "%s: %s" % (type(exc).__name__, exc)
report["connection_after_close"] = connection.connection is not None
connection.set_autocommit(True)
with connection.cursor() as cur:
    cur.execute("SELECT 41 + 1")
    report["after"] = cur.fetchone()[0]
pool = getattr(connection, "connguard_pool", None)
report["stats"] = pool.get_stats() if pool is not None else None
connections.close_all()
print(json.dumps(report), flush=True)
"""


@pytest.mark.parametrize("mode", ["idle", "in_transaction"])
@pytest.mark.parametrize("pooled", [True, False], ids=["pool", "no-pool"])
def test_close_after_pgbouncer_dropped_the_connection(
    django_pg: Any, django_db: str, bouncer: PgBouncer, mode: str, pooled: bool
) -> None:
    """``KILL <db>`` on the console drops the client connections; ``close_all()`` then must
    not raise (with the pool: a rollback on a dead socket; without: a plain close), and the
    next query gets a new connection."""
    settings = engine_settings() if pooled else {**engine_settings(), "OPTIONS": {"pool": False}}
    with Harness(django_pg, django_db) as h:
        proc = subprocess.Popen(
            [sys.executable, "-c", CLOSE_SCRIPT, mode], env=env(h, bouncer, settings),
            cwd=tempfile.gettempdir(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True, start_new_session=True,
        )  # fmt: skip
        try:
            assert proc.stdout is not None and proc.stdin is not None
            ready = proc.stdout.readline()
            if ready.strip() != "ready":
                proc.kill()
                pytest.fail(f"the script did not get ready: {ready!r}\n{proc.communicate()[1]}")
            clients = [c for c in bouncer.show("CLIENTS") if c["database"] == django_db]
            assert len(clients) == 1, clients
            bouncer.admin(f"KILL {django_db}")
            try:
                deadline = time.monotonic() + 5
                while [c for c in bouncer.show("CLIENTS") if c["database"] == django_db]:
                    assert time.monotonic() < deadline, "KILL left the client connected"
                    time.sleep(0.02)
            finally:
                bouncer.admin(f"RESUME {django_db}")
            out, err = proc.communicate("go\n", timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
    assert proc.returncode == 0, err
    report = json.loads(out.strip().splitlines()[-1])
    print(report)
    assert report["close_error"] is None, err
    assert report["connection_after_close"] is False
    assert report["after"] == 42, err
    assert "Traceback" not in err, err
    if pooled:  # the dead connection was dropped (at checkin or next checkout), one new one
        stats = report["stats"]
        assert stats["connections_opened"] == 2, stats
        assert stats["connections_lost"] + stats["returns_bad"] == 1, stats


# -- 4. the system check ----------------------------------------------------------------------


def manage_check(bouncer: PgBouncer, **settings: str) -> subprocess.CompletedProcess[str]:
    """``manage.py check`` of tests/django/metricsproject (which installs connguard) with
    the database behind the bouncer and CGT_* ``settings``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CGT_")}
    environ.update(
        DJANGO_SETTINGS_MODULE="metricsproject.settings",
        PYTHONPATH=os.pathsep.join(
            p for p in (str(METRICS_PROJECT), environ.get("PYTHONPATH")) if p
        ),
        CGT_DB_ENGINE=CONNGUARD_ENGINE,
        CGT_DB_HOST=bouncer.host,
        CGT_DB_PORT=str(bouncer.port),
        CGT_DB_USER=bouncer.user,
        CGT_DB_NAME="postgres",
    )
    environ.update({f"CGT_{k}": v for k, v in settings.items()})
    return subprocess.run(
        [sys.executable, "-m", "django", "check"], env=environ, cwd=tempfile.gettempdir(),
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_system_check_server_side_cursors_behind_transaction_pooler(bouncer: PgBouncer) -> None:
    declared = json.dumps({"pool": {"server_pooler": "transaction"}})
    done = manage_check(bouncer, DB_OPTIONS=declared)
    assert done.returncode == 1, done.stdout + done.stderr
    assert (
        "?: (connguard.E003) DATABASES['default'] declares a transaction-mode pooler "
        "(OPTIONS['pool']['server_pooler']='transaction') but server-side cursors are "
        "enabled: .iterator() will fail with 'cursor does not exist' when the pooler moves "
        "the transaction to another server connection.\n"
        "\tHINT: Set DATABASES['default']['DISABLE_SERVER_SIDE_CURSORS'] = True."
    ) in done.stderr, done.stderr
    # prepared statements behind it: a warning (psycopg 3's option)
    done = manage_check(
        bouncer, DB_OPTIONS=json.dumps({"pool": {"server_pooler": "transaction"},
                                        "prepare_threshold": 5}),
        DISABLE_SERVER_SIDE_CURSORS="1",
    )  # fmt: skip
    assert "connguard.W004" in done.stderr and "connguard.E003" not in done.stderr, done.stderr
    # fixed: nothing to report
    done = manage_check(bouncer, DB_OPTIONS=declared, DISABLE_SERVER_SIDE_CURSORS="1")
    assert done.returncode == 0, done.stderr
    assert "System check identified no issues" in done.stdout, done.stdout + done.stderr
    # undeclared: the check cannot know (connguard doctor finds the pooler: CG403)
    done = manage_check(bouncer)
    assert done.returncode == 0 and "connguard.E003" not in done.stderr, done.stderr
