"""The same real-process scenarios as test_stock_failures.py, on ``ENGINE:
"connguard.backends.postgresql"``: zero errors, zero wrong results, zero lost writes.

Each test runs one scenario from :mod:`connguard.demo.scenarios` (the code ``connguard demo``
runs) with only the ENGINE changed — and, where the scenario is about the server's
connection limit, ``OPTIONS["pool"]["max_size"]`` chosen so that workers x max_size fits
under ``max_connections=20`` — and asserts that nothing failed. Where a bound applies, the
peak of server connections is checked against workers x max_size.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import Any

import pytest

from connguard.demo.base import CONNGUARD_ENGINE
from connguard.demo.results import Result
from connguard.demo.runner import run_scenario, scenario_database

pytestmark = [pytest.mark.django, pytest.mark.timeout(120)]

CONNGUARD: dict[str, Any] = {"ENGINE": CONNGUARD_ENGINE}
DEFAULT_MAX_SIZE = 10
HAS_PSYCOPG3 = importlib.util.find_spec("psycopg") is not None


def run(name: str, django_pg: Any, django_db: str, **overrides: Any) -> Result:
    result = run_scenario(name, {**CONNGUARD, **overrides}, django_pg, database=django_db)
    print(result.summary())
    return result


def explain(result: Result) -> str:
    details = {k: v for k, v in result.details.items() if k not in ("logs_tail", "settings")}
    return f"{result.summary()}\n{details}\n{result.details.get('logs_tail', '')[-3000:]}"


def assert_cured(result: Result, requests: int | None = None) -> None:
    assert result.engine == CONNGUARD_ENGINE
    assert result.requests > 0, explain(result)
    if requests is not None:
        assert result.requests == requests, explain(result)
    assert (result.errors, result.wrong, result.lost) == (0, 0, 0), explain(result)
    assert result.ok == result.requests, explain(result)


# -- (a) pre-fork: connections opened before a fork ---------------------------------------


@pytest.mark.parametrize(
    "name", ["preload_ready", "preload_ready_max_age_0", "preload_import", "preload_pool"]
)
def test_preload_workers_never_share_a_connection(
    django_pg: Any, django_db: str, name: str
) -> None:
    """gunicorn --preload -w 4 with a query in AppConfig.ready() / at import time (and with
    Django's built-in pool's OPTIONS, which connguard takes as they are): each worker drops
    the inherited connection without a byte sent and opens its own."""
    r = run(name, django_pg, django_db)
    assert_cured(r, requests=400)
    max_size = r.details["settings"]["OPTIONS"].get("pool", {}).get("max_size", DEFAULT_MAX_SIZE)
    # 4 workers, plus the connection(s) the master opened before forking
    assert r.peak_server_connections <= 4 * max_size + max_size, explain(r)
    if name != "preload_ready_max_age_0":
        assert "inherited a connection opened before fork()" in r.details["logs_tail"] or (
            "discard" in r.details["logs_tail"]
        ), explain(r)


def test_fork_after_import_time_query(django_pg: Any, django_db: str) -> None:
    """manage.py forkcheck: a module-level query, then os.fork() x4 children using Django."""
    r = run("fork_import", django_pg, django_db)
    assert_cured(r, requests=400)
    assert r.details["hung_children"] == 0, explain(r)


# -- (b) the server ends connections: restart, terminate, idle timeout, outage -------------


def test_restart(django_pg: Any, django_db: str) -> None:
    r = run("restart", django_pg, django_db)
    assert_cured(r, requests=40)
    assert r.peak_server_connections <= 2 * DEFAULT_MAX_SIZE, explain(r)


def test_terminate_every_backend(django_pg: Any, django_db: str) -> None:
    r = run("terminate", django_pg, django_db)
    assert r.details["terminated"] >= 2, explain(r)  # one per gthread worker at least
    assert_cured(r, requests=48)


def test_idle_session_timeout(django_pg: Any, django_db: str) -> None:
    r = run("idle_timeout", django_pg, django_db)
    assert_cured(r, requests=48)
    assert r.peak_server_connections <= 2 * DEFAULT_MAX_SIZE, explain(r)


@pytest.fixture(scope="module")
def outage(django_pg: Any, django_template: str) -> Iterator[Result]:
    """One run of the outage scenario (server stopped ~3 s), shared by the tests below."""
    with scenario_database(django_pg, "cg_dj_outage", django_template) as db:
        result = run_scenario("outage", CONNGUARD, django_pg, database=db)
    print(result.summary())
    yield result


def test_outage_fails_fast_with_a_clear_error(outage: Result) -> None:
    """While the server is down, requests fail within a second with an error naming the
    alias and what happened (not after a connect timeout, not a bare driver error)."""
    down = outage.details["outage"]
    assert down["requests"] >= 8 and down["ok"] == 0, explain(outage)
    assert down["max_latency"] < 1.0, explain(outage)
    for sample in down["error_samples"]:  # (samples are cut at 160 characters)
        assert "PoolUnavailable: pool 'default': database unreachable" in sample, explain(outage)
    # ... and the full message says why: the driver's own error
    assert (
        "the last connect attempt failed with: OperationalError" in outage.details["logs_tail"]
        and "Connection refused" in outage.details["logs_tail"]
    ), explain(outage)


def test_outage_first_requests_after_start_succeed(outage: Result) -> None:
    assert_cured(outage, requests=48)


def test_backend_killed_inside_a_transaction(django_pg: Any, django_db: str) -> None:
    """atomic() with several statements, the backend terminated mid-way: the request fails
    cleanly, none of its rows are committed, the next requests succeed."""
    r = run("kill_in_tx", django_pg, django_db)
    assert not r.notes, explain(r)
    for killed in r.details["killed"]:
        assert killed["status"] == 500, explain(r)
        assert killed["error"] in {"OperationalError", "InterfaceError"}, explain(r)
        assert killed["rows_committed"] == [], explain(r)
    assert_cured(r, requests=48)


# -- (c) long-lived connections outside requests ------------------------------------------


def test_longtask_past_idle_timeout(django_pg: Any, django_db: str) -> None:
    r = run("longtask", django_pg, django_db)
    assert r.details["exit_code"] == 0, explain(r)
    assert_cured(r, requests=2)


def test_celery_prefork_past_idle_timeout(django_pg: Any, django_db: str) -> None:
    r = run("celery_idle", django_pg, django_db)
    assert_cured(r, requests=24)


# -- (d) more requests than connections ---------------------------------------------------

FLOODS = [
    pytest.param("flood_gthread", 2, {}, id="gthread"),
    pytest.param("flood_asgi", 2, {}, id="asgi"),
    pytest.param("flood_gevent", 1, {"DRIVER": "psycopg2"}, id="gevent-psycopg2"),
    pytest.param(
        "flood_gevent",
        1,
        {"DRIVER": "psycopg"},
        id="gevent-psycopg3",
        marks=pytest.mark.skipif(not HAS_PSYCOPG3, reason="psycopg 3 is not installed"),
    ),
]


@pytest.mark.parametrize(("name", "workers", "extra"), FLOODS)
def test_flood_waits_instead_of_too_many_clients(
    django_pg: Any, django_db: str, name: str, workers: int, extra: dict[str, Any]
) -> None:
    """100 concurrent 1 s requests, server at max_connections=20 (the harness's monitor
    holds one): with workers x max_size <= 16, extra requests wait for a connection."""
    if name == "flood_gevent":
        pytest.importorskip("gevent")
        if extra["DRIVER"] == "psycopg2":
            pytest.importorskip("psycogreen")
    max_size = 16 // workers
    r = run(
        name, django_pg, django_db, OPTIONS={"pool": {"max_size": max_size, "timeout": 25}}, **extra
    )
    assert not r.has_too_many_connections(), explain(r)
    assert_cured(r, requests=100)
    assert r.peak_server_connections <= workers * max_size, explain(r)


def test_flood_with_default_max_size_over_the_server_limit(django_pg: Any, django_db: str) -> None:
    """Default max_size=10 x 2 workers = 20 > the 19 slots left: the pool meets "too many
    clients", holds at what it has and queues callers instead of failing."""
    r = run("flood_gthread", django_pg, django_db, OPTIONS={"pool": {"timeout": 25}})
    assert_cured(r, requests=100)
    assert r.peak_server_connections <= 19, explain(r)


def test_flood_past_the_pool_timeout_fails_with_pool_timeout(
    django_pg: Any, django_db: str
) -> None:
    """timeout=2 s with 100 one-second requests on 2 x 8 connections: the requests that
    cannot get a connection in time fail with PoolTimeout naming the pool and its state —
    never the server's "too many clients"."""
    r = run("flood_gthread", django_pg, django_db, OPTIONS={"pool": {"max_size": 8, "timeout": 2}})
    assert r.requests == 100 and r.wrong == 0, explain(r)
    assert 0 < r.errors < 100, explain(r)
    assert not r.has_too_many_connections(), explain(r)
    for sample in r.error_samples:
        assert sample.startswith("PoolTimeout: pool 'default': no connection after N s"), explain(r)
    assert r.peak_server_connections <= 16, explain(r)


def test_asgi_persistent_connections_do_not_pile_up(django_pg: Any, django_db: str) -> None:
    """CONN_MAX_AGE=600 under uvicorn: one thread per request, but at most max_size
    connections."""
    r = run("asgi_persistent", django_pg, django_db)
    assert_cured(r, requests=150)
    assert r.peak_server_connections <= DEFAULT_MAX_SIZE, explain(r)


# -- (e) controls: no fault, several aliases, the test runner, close_all() -----------------


def test_baseline_gthread_and_async_views(django_pg: Any, django_db: str) -> None:
    r = run("baseline", django_pg, django_db)
    assert_cured(r, requests=400)


def test_asgi_sync_and_async_views(django_pg: Any, django_db: str) -> None:
    r = run("asgi_mixed", django_pg, django_db)
    assert_cured(r, requests=200)
    assert r.peak_server_connections <= 2 * DEFAULT_MAX_SIZE, explain(r)


def test_gevent_gives_each_connection_back_per_request(django_pg: Any, django_db: str) -> None:
    """gunicorn -k gevent, a greenlet per request: at most max_size sessions."""
    pytest.importorskip("gevent")
    r = run("gevent_mixed", django_pg, django_db, OPTIONS={"pool": {"max_size": 4}})
    assert_cured(r, requests=200)
    assert r.peak_server_connections <= 4, explain(r)


def test_multiple_databases_one_pool_per_alias_per_process(django_pg: Any, django_db: str) -> None:
    r = run("multi_db", django_pg, django_db, OPTIONS={"pool": {"max_size": 4}})
    assert_cured(r, requests=120)
    pools = r.details["pools_by_pid"]
    assert len(pools) == 2, explain(r)  # both gunicorn workers answered
    assert all(names == ["default", "other"] for names in pools.values()), explain(r)
    for db, peak in r.details["peak_by_database"].items():
        assert 1 <= peak <= 2 * 4, (db, explain(r))


def test_manage_py_test_with_pools_open(django_pg: Any, django_db: str) -> None:
    """The test runner creates, clones (--parallel 2) and drops the test databases of both
    aliases while pools hold connections: no "being accessed by other users"."""
    r = run("manage_test", django_pg, django_db)
    assert_cured(r, requests=3)
    assert r.details["leftover_test_databases"] == [], explain(r)


def test_close_all_returns_every_connection(django_pg: Any, django_db: str) -> None:
    r = run("close_all", django_pg, django_db)
    assert_cured(r, requests=10)
    assert [p["name"] for p in r.details["report"]["pools"]] == ["default", "other"], explain(r)
    assert all(p["size"] >= 1 for p in r.details["report"]["pools"]), explain(r)
