"""Failover under gunicorn: the demo's ``failover`` scenario (connguard.demo.scenarios.failover) on
both engines and both drivers.

A throwaway primary and its streaming standby (pg_basebackup -R); the project under gunicorn
(sync, 2 workers) with HOST/PORT naming both servers and target_session_attrs=read-write;
writes with unique tokens throughout; the primary is demoted read-only (sessions kept) or
stopped, the standby promoted with pg_ctl promote.

connguard: at most one failed request per worker process, zero lost or duplicated writes
(counted on the new primary), writes succeed again soon after the promotion. Stock Django
with persistent connections: its sessions stay on the read-only old primary and writes keep
failing.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from connguard.demo.base import CONNGUARD_ENGINE, STOCK_ENGINE
from connguard.demo.processes import django_env, run_manage
from connguard.demo.results import Result
from connguard.demo.runner import run_scenario
from connguard.demo.scenarios.failover import WORKERS
from connguard.demo.targets.postgresql import DbTarget

pytestmark = [pytest.mark.django, pytest.mark.timeout(180)]

HAS_PSYCOPG3 = importlib.util.find_spec("psycopg") is not None
DRIVERS = [
    pytest.param(
        "psycopg",
        marks=pytest.mark.skipif(not HAS_PSYCOPG3, reason="psycopg 3 is not installed"),
    ),
    "psycopg2",
]


def run(django_pg: Any, **settings: Any) -> Result:
    result = run_scenario("failover", settings, django_pg)
    details = {k: v for k, v in result.details.items() if k not in ("failover_logs", "settings")}
    print(f"\n{result.summary()}\n{details}")
    return result


def explain(result: Result) -> str:
    details = {k: v for k, v in result.details.items() if k != "settings"}
    return f"{result.summary()}\n{details}"


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("mode", ["read-only", "stop"])
def test_connguard_failover_bounds(django_pg: Any, driver: str, mode: str) -> None:
    r = run(django_pg, ENGINE=CONNGUARD_ENGINE, DRIVER=driver, FAILOVER=mode)
    d = r.details
    assert r.ok > 0 and d["acked_writes"] == r.ok, explain(r)
    assert (r.errors, r.wrong, r.lost) == (0, 0, 0), explain(r)
    assert d["duplicated_writes"] == 0, explain(r)
    assert d["max_failed_per_worker"] <= 1 and d["failed_requests"] <= WORKERS, explain(r)
    # writes succeed again soon after the promotion (generous: a shared, loaded machine)
    assert d["writes_ok_again_after_s"] is not None, explain(r)
    assert d["writes_ok_again_after_s"] < d["promote_seconds"] + 5.0, explain(r)


@pytest.mark.parametrize("driver", DRIVERS)
def test_stock_django_keeps_failing_on_the_demoted_primary(django_pg: Any, driver: str) -> None:
    r = run(django_pg, ENGINE=STOCK_ENGINE, DRIVER=driver, FAILOVER="read-only")
    assert r.lost == 0, explain(r)
    assert r.errors > 10, explain(r)
    assert r.has_error("read-only transaction"), explain(r)
    assert r.details["writes_ok_again_after_s"] is None, explain(r)


ROLE_SCRIPT = (
    "from django.db import connection\n"
    "with connection.cursor() as c:\n"
    "    c.execute(\"SELECT pg_is_in_recovery(), current_setting('port')\")\n"
    "    print('ROLE', *c.fetchone())\n"
    "print('POOL', type(connection.connguard_pool).__name__)\n"
)


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize(
    ("attrs", "in_recovery"), [("prefer-standby", True), ("read-write", False), ("primary", False)]
)
def test_multi_host_and_target_session_attrs_through_the_backend(
    pg_pair: Any, driver: str, attrs: str, in_recovery: bool
) -> None:
    """HOST/PORT naming both servers and OPTIONS["target_session_attrs"] reach libpq through
    connguard's pool, on both drivers."""
    primary, standby = pg_pair
    target = DbTarget(primary.host, primary.port, "postgres", "", "postgres")
    settings = {
        "ENGINE": CONNGUARD_ENGINE,
        "DRIVER": driver,
        "OPTIONS": {"target_session_attrs": attrs},
    }
    env = django_env(target, settings)
    env["CGT_DB_HOST"] = f"{primary.host},{standby.host}"
    env["CGT_DB_PORT"] = f"{primary.port},{standby.port}"
    out = run_manage(env, "shell", "-c", ROLE_SCRIPT, timeout=60).stdout
    expected_port = standby.port if in_recovery else primary.port
    assert f"ROLE {in_recovery} {expected_port}" in out, out
    assert "POOL ConnectionPool" in out, out
