"""Real-process scenarios on the rig's MariaDB: stock ``django.db.backends.mysql`` failing
where it does, ``connguard.backends.mysql`` not (0 errors, 0 wrong rows, 0 lost writes,
peak sessions <= workers x max_size).

The same scenarios as test_stock_failures.py / test_connguard_cures.py run on PostgreSQL
(the units of :mod:`connguard.demo.scenarios`, database-neutral over a target), here on the
throwaway MariaDB of ``connguard.testing.mariadb`` (never a system service): gunicorn gthread
and gevent, uvicorn (ASGI), a Celery prefork worker on kombu's filesystem broker (no broker
service), ``manage.py`` commands, ``os.fork()``. Restart, wait_timeout and the gthread flood are in
tests/demo/test_demo_mariadb.py; the in-process checks in tests/django/test_mysql_backend.py.

Numbers seen while writing them (Django 5.2, mysqlclient 2.3, MariaDB 10.11, 2 cores):

========================  ======================================================================
stock flood_asgi          100 req: 81 errors "(1040, 'Too many connections')", peak 19
stock preload_ready       400 req: 4-8 errors (2006, 2013, "Commands out of sync"), 0-3 wrong
stock fork_import         400 ops: 4-7 errors, 3-8 wrong
stock terminate           19 req (quick): 4 errors 2013
stock longtask            exit 1: the second query "(2006, 'Server has gone away')"
stock kill_in_tx          the killed requests fail with 2013, 0 rows committed: no failure
stock outage              while down "Can't connect to server" per attempt; none after start
stock asgi_persistent     150 req, 4 at a time: 38-50 errors 1040 (connections pile up, peak 19)
stock celery_idle         24 tasks after 2.5 s idle, wait_timeout=1: 24 failed "(2006, 'Server
                          has gone away')"
stock flood_gevent        no 1040: mysqlclient blocks the gevent hub (it has no wait callback,
                          unlike psycopg2 + psycogreen or psycopg 3), so a worker runs one query
                          at a time: peak 1 session, 71 of 100 requests timed out. No engine
                          can change that; gevent_mixed checks the pool under gevent instead.
connguard                 0 failures everywhere; floods peak 16 (2 x 8), 19 with the default
                          max_size (2 x 10 meets 1040 at 19 and queues); timeout=2: 51 of 100
                          PoolTimeout naming the pool, never 1040
========================  ======================================================================

Each scenario starts from a copy of a database migrated and seeded once per module.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import connguard.demo.scenarios  # noqa: F401 - registers the scenarios run_scenario runs
from connguard.demo.results import Result
from connguard.demo.runner import prepare_template, run_scenario
from connguard.demo.targets import drop_database

pytestmark = [pytest.mark.django, pytest.mark.timeout(120)]

STOCK: dict[str, Any] = {"ENGINE": "django.db.backends.mysql"}
CONNGUARD: dict[str, Any] = {"ENGINE": "connguard.backends.mysql"}
DEFAULT_MAX_SIZE = 10
#: (2006) MySQL server has gone away, (2013) Lost connection to server during query
GONE = ("server has gone away", "lost connection to")


@pytest.fixture(scope="module")
def template(mariadb_server: Any) -> Iterator[str]:
    """A database migrated and seeded once for the module; each scenario runs on a copy."""
    name = prepare_template(mariadb_server, f"cg_myproc_{uuid.uuid4().hex[:6]}")
    try:
        yield name
    finally:
        drop_database(mariadb_server, name)


def run(
    name: str,
    mariadb: Any,
    template: str,
    engine: dict[str, Any],
    *,
    quick: bool = False,
    **overrides: Any,
) -> Result:
    result = run_scenario(name, {**engine, **overrides}, mariadb, template=template, quick=quick)
    print(result.summary())
    return result


def explain(result: Result) -> str:
    details = {k: v for k, v in result.details.items() if k not in ("logs_tail", "settings")}
    return f"{result.summary()}\n{details}\n{result.details.get('logs_tail', '')[-3000:]}"


def assert_cured(result: Result, requests: int | None = None) -> None:
    assert result.engine == CONNGUARD["ENGINE"]
    assert result.requests > 0, explain(result)
    if requests is not None:
        assert result.requests == requests, explain(result)
    assert (result.errors, result.wrong, result.lost) == (0, 0, 0), explain(result)
    assert result.ok == result.requests, explain(result)


# -- stock Django ---------------------------------------------------------------------------


def test_stock_asgi_flood_too_many_connections(mariadb: Any, template: str) -> None:
    """100 concurrent 1 s async requests on uvicorn --workers 2, max_connections=20: the ORM
    runs in a thread per request, one session each and nothing to queue them -> 1040 (the
    gthread flood: tests/demo/test_demo_mariadb.py)."""
    r = run("flood_asgi", mariadb, template, STOCK)
    assert r.errors >= 1, explain(r)
    assert r.has_too_many_connections(), explain(r)
    assert r.peak_server_connections <= 20, explain(r)


def test_stock_gevent_on_mysqlclient_runs_one_query_at_a_time(mariadb: Any, template: str) -> None:
    """Why the gevent flood has no MariaDB twin: mysqlclient blocks the gevent hub (it has no
    wait callback, unlike psycopg2 + psycogreen), so one gevent worker runs one query at a
    time: a single session, never 1040 — the requests queue in the worker instead (most of
    100 one-second requests time out, on either engine; docs/mysql.md "What differs")."""
    r = run("flood_gevent", mariadb, template, STOCK)
    assert not r.has_too_many_connections(), explain(r)
    assert r.peak_server_connections <= 1, explain(r)  # gunicorn -k gevent --workers 1


def test_stock_asgi_persistent_connections_pile_up(mariadb: Any, template: str) -> None:
    """CONN_MAX_AGE=600 under uvicorn: each request runs in a new thread with a new session
    that is never reused -> they pile up to 1040 at concurrency 4."""
    r = run("asgi_persistent", mariadb, template, STOCK)
    assert r.errors >= 1, explain(r)
    assert r.has_too_many_connections(), explain(r)


def test_stock_celery_prefork_past_wait_timeout(mariadb: Any, template: str) -> None:
    """A prefork worker keeping Django's connections across tasks (CELERY_DB_REUSE_MAX),
    wait_timeout=1, idle 2.5 s: the next tasks fail with 2006/2013."""
    r = run("celery_idle", mariadb, template, STOCK)
    assert r.errors >= 1, explain(r)
    assert r.has_error(*GONE), explain(r)
    assert r.wrong == 0 and r.lost == 0, explain(r)


# -- the demo's MariaDB scenarios on real processes ------------------------------------------
# (restart, wait_timeout and the gthread flood: tests/demo/test_demo_mariadb.py)


@pytest.mark.parametrize("name", ["preload_ready", "fork_import"])
def test_stock_fork_shares_a_connection(mariadb: Any, template: str, name: str) -> None:
    """gunicorn --preload with a query in AppConfig.ready(), or a module-level query then
    os.fork() x4: the children talk over one session (and the first to close it sends
    COM_QUIT for all) -> 2006/2013, "Commands out of sync", other requests' rows. A race:
    400 requests, 4-15 failures seen, at least one asserted."""
    r = run(name, mariadb, template, STOCK)
    assert r.requests == 400, explain(r)
    assert r.errors + r.wrong >= 1, explain(r)


@pytest.mark.parametrize(
    ("name", "needle"),
    [
        ("terminate", "lost connection to"),
        ("longtask", "server has gone away"),
    ],
)
def test_stock_session_ended_by_the_server(
    mariadb: Any, template: str, name: str, needle: str
) -> None:
    """KILL CONNECTION of every app session; a management command idle past wait_timeout:
    the next statement on each fails (2013 / 2006)."""
    r = run(name, mariadb, template, STOCK, quick=True)
    assert r.errors >= 1 and r.has_error(needle), explain(r)
    assert r.wrong == 0 and r.lost == 0, explain(r)


@pytest.mark.parametrize("name", ["preload_ready", "fork_import"])
def test_connguard_fork_never_shares_a_connection(mariadb: Any, template: str, name: str) -> None:
    """Each child abandons the inherited session without a byte sent and opens its own."""
    r = run(name, mariadb, template, CONNGUARD, quick=True)
    assert_cured(r)
    assert r.peak_server_connections <= 4 * DEFAULT_MAX_SIZE + DEFAULT_MAX_SIZE, explain(r)
    if name == "preload_ready":
        assert "discarded them without contacting the server" in r.details["logs_tail"], explain(r)
    else:
        assert r.details["hung_children"] == 0, explain(r)


@pytest.mark.parametrize("name", ["terminate", "longtask"])
def test_connguard_session_ended_by_the_server(mariadb: Any, template: str, name: str) -> None:
    r = run(name, mariadb, template, CONNGUARD, quick=True)
    assert_cured(r)
    if name == "terminate":
        assert r.details["terminated"] >= 2, explain(r)
    else:
        assert r.details["exit_code"] == 0, explain(r)


@pytest.mark.parametrize("engine", [STOCK, CONNGUARD], ids=["stock", "connguard"])
def test_kill_inside_a_transaction(mariadb: Any, template: str, engine: dict[str, Any]) -> None:
    """atomic() with three inserts, KILL CONNECTION before the last: the request fails
    (2013), none of its rows are committed, the next requests succeed — on both engines
    (MariaDB rolls the transaction back; connguard neither retries nor hands the broken
    session on)."""
    r = run("kill_in_tx", mariadb, template, engine, quick=True)
    assert not r.notes, explain(r)
    assert r.details["killed"], explain(r)
    for killed in r.details["killed"]:
        assert killed["status"] == 500, explain(r)
        assert killed["error"] in {"OperationalError", "InterfaceError"}, explain(r)
        assert killed["rows_committed"] == [], explain(r)
    assert (r.errors, r.wrong, r.lost) == (0, 0, 0), explain(r)


def test_connguard_outage_fails_fast_and_recovers(mariadb: Any, template: str) -> None:
    """The server stopped ~3 s: requests fail within a second with PoolUnavailable naming
    the pool (stock Django: "Can't connect" after each connect attempt), and the first
    requests after the start succeed."""
    r = run("outage", mariadb, template, CONNGUARD, quick=True)
    down = r.details["outage"]
    assert down["requests"] >= 8 and down["ok"] == 0, explain(r)
    assert down["max_latency"] < 1.0, explain(r)
    for sample in down["error_samples"]:
        assert "PoolUnavailable: pool 'default': database unreachable" in sample, explain(r)
    assert_cured(r)


# -- connguard: floods, Celery ----------------------------------------------------------------


def test_connguard_asgi_flood(mariadb: Any, template: str) -> None:
    """The same flood with 2 workers x max_size 8 = 16 under the 19 slots left (the
    harness's monitor holds one): extra requests wait for a connection."""
    r = run(
        "flood_asgi", mariadb, template, CONNGUARD, OPTIONS={"pool": {"max_size": 8, "timeout": 25}}
    )
    assert not r.has_too_many_connections(), explain(r)
    assert_cured(r, requests=100)
    assert r.peak_server_connections <= 2 * 8, explain(r)


def test_connguard_flood_default_max_size_over_the_limit(mariadb: Any, template: str) -> None:
    """Default max_size=10 x 2 workers = 20 > 19 slots: the pool meets 1040, holds at what
    it has and queues callers instead of failing them (100 requests of 0.5 s)."""
    r = run(
        "flood_gthread", mariadb, template, CONNGUARD, quick=True, OPTIONS={"pool": {"timeout": 25}}
    )
    assert_cured(r, requests=100)
    assert r.peak_server_connections <= 19, explain(r)


def test_connguard_flood_past_the_pool_timeout(mariadb: Any, template: str) -> None:
    """timeout=2 s, 100 one-second requests on 2 x 8 sessions: those that wait too long fail
    with PoolTimeout naming the pool and its state, never with the server's 1040."""
    r = run(
        "flood_gthread",
        mariadb,
        template,
        CONNGUARD,
        OPTIONS={"pool": {"max_size": 8, "timeout": 2}},
    )
    assert r.requests == 100 and r.wrong == 0, explain(r)
    assert 0 < r.errors < 100, explain(r)
    assert not r.has_too_many_connections(), explain(r)
    for sample in r.error_samples:
        assert sample.startswith("PoolTimeout: pool 'default': no connection after N s"), explain(r)
    assert r.peak_server_connections <= 16, explain(r)


def test_connguard_asgi_persistent(mariadb: Any, template: str) -> None:
    """CONN_MAX_AGE=600 under uvicorn: a thread per request, at most max_size sessions."""
    r = run("asgi_persistent", mariadb, template, CONNGUARD)
    assert_cured(r, requests=150)
    assert r.peak_server_connections <= DEFAULT_MAX_SIZE, explain(r)


def test_connguard_celery_prefork_past_wait_timeout(mariadb: Any, template: str) -> None:
    """Outside requests the pool revalidates at checkout: the timed-out sessions are replaced
    before a task's statement is sent."""
    r = run("celery_idle", mariadb, template, CONNGUARD)
    assert_cured(r, requests=24)


# -- controls: no fault, ASGI, gevent, several aliases, the test runner, close_all() ----------


def test_connguard_baseline(mariadb: Any, template: str) -> None:
    """gunicorn gthread and uvicorn async views, 400 mixed reads/writes."""
    r = run("baseline", mariadb, template, CONNGUARD)
    assert_cured(r, requests=400)


def test_connguard_asgi_mixed(mariadb: Any, template: str) -> None:
    """uvicorn --workers 2, sync and async views: per-request release under ASGI."""
    r = run("asgi_mixed", mariadb, template, CONNGUARD)
    assert_cured(r, requests=200)
    assert r.peak_server_connections <= 2 * DEFAULT_MAX_SIZE, explain(r)


def test_connguard_multi_db(mariadb: Any, template: str) -> None:
    """Two aliases on two databases: one pool per alias per worker process."""
    r = run("multi_db", mariadb, template, CONNGUARD, OPTIONS={"pool": {"max_size": 4}})
    assert_cured(r, requests=120)
    pools = r.details["pools_by_pid"]
    assert len(pools) == 2, explain(r)
    assert all(names == ["default", "other"] for names in pools.values()), explain(r)
    for db, peak in r.details["peak_by_database"].items():
        assert 1 <= peak <= 2 * 4, (db, explain(r))


def test_connguard_manage_test(mariadb: Any, template: str) -> None:
    """manage.py test --parallel 2 with two aliases: the runner creates, clones and drops
    the test databases while pools hold sessions."""
    r = run("manage_test", mariadb, template, CONNGUARD)
    assert_cured(r, requests=3)
    assert r.details["leftover_test_databases"] == [], explain(r)


def test_connguard_close_all(mariadb: Any, template: str) -> None:
    """connections.close_all() in five threads: every connection back in its pool."""
    r = run("close_all", mariadb, template, CONNGUARD)
    assert_cured(r, requests=10)
    assert [p["name"] for p in r.details["report"]["pools"]] == ["default", "other"], explain(r)


def test_connguard_gevent(mariadb: Any, template: str) -> None:
    """gunicorn -k gevent, a greenlet per request: each gives its connection back at the
    end of the request; at most max_size sessions."""
    pytest.importorskip("gevent")
    r = run("gevent_mixed", mariadb, template, CONNGUARD, OPTIONS={"pool": {"max_size": 4}})
    assert_cured(r, requests=200)
    assert r.peak_server_connections <= 4, explain(r)
