"""gunicorn ``--preload``: every worker inherits the master's connection (or pool)."""

from __future__ import annotations

import uuid
from typing import Any

from connguard.demo.base import STOCK_ENGINE
from connguard.demo.load import mixed_paths
from connguard.demo.registry import scenario
from connguard.demo.results import Result
from connguard.demo.runner import Harness


def _needs_django_pool(settings: dict[str, Any]) -> str | None:
    """On the stock engine, OPTIONS["pool"] is Django's pool (5.1+, psycopg_pool);
    connguard takes the same keys on any Django version."""
    if settings.get("ENGINE") != STOCK_ENGINE:
        return None
    import importlib.metadata
    import importlib.util

    version = importlib.metadata.version("django")
    if tuple(int(x) for x in version.split(".")[:2]) < (5, 1):
        return f"Django's built-in pool needs Django >= 5.1 (have {version})"
    if importlib.util.find_spec("psycopg_pool") is None:
        return "psycopg_pool is not installed"
    return None



def _preload_common(h: Harness, settings: dict[str, Any], result: Result, *,
                    query_in_ready: bool = False, import_time_query: bool = False,
                    workers: int = 4, n: int = 400, concurrency: int = 16) -> None:
    h.prepare(settings)
    env = h.env(settings, QUERY_IN_READY=query_in_ready, IMPORT_TIME_QUERY=import_time_query)
    srv = h.gunicorn(env, worker_class="sync", workers=workers, preload=True, timeout=6)
    tag = uuid.uuid4().hex[:8]
    load = h.measure(srv, mixed_paths(h.size(n), write_every=3, tag=tag), result,
                     concurrency=concurrency, timeout=5.0, deadline=16.0)
    result.details["acked_writes"] = len(load.acked_tokens)
    result.details["not_sent"] = load.not_sent
    if load.not_sent:
        result.notes.append(f"{load.not_sent} requests not sent before the deadline")


@scenario(
    "preload_ready",
    "gunicorn sync -w 4 --preload, a query in AppConfig.ready(), CONN_MAX_AGE=600: every "
    "worker inherits the master's connection and they all talk over one socket",
    defaults={"CONN_MAX_AGE": 600},
    stock_failure="errors (protocol desync, 'another command is already in progress', "
                  "closed connections) and wrong rows",
)
def _scenario_preload_ready(h: Harness, settings: dict[str, Any], result: Result) -> None:
    _preload_common(h, settings, result, query_in_ready=True)


@scenario(
    "preload_ready_max_age_0",
    "same as preload_ready with CONN_MAX_AGE=0: the first request of each worker reuses and "
    "then closes the shared connection",
    defaults={"CONN_MAX_AGE": 0},
    stock_failure="a few errors while the workers' first requests race on the shared socket",
)
def _scenario_preload_ready_max_age_0(h: Harness, settings: dict[str, Any],
                                      result: Result) -> None:
    _preload_common(h, settings, result, query_in_ready=True)


@scenario(
    "preload_import",
    "gunicorn sync -w 4 --preload with a module-level query when wsgi.py is imported "
    "(CONN_MAX_AGE=600)",
    defaults={"CONN_MAX_AGE": 600},
    stock_failure="errors and wrong rows, as preload_ready",
)
def _scenario_preload_import(h: Harness, settings: dict[str, Any], result: Result) -> None:
    _preload_common(h, settings, result, import_time_query=True)


@scenario(
    "preload_pool",
    "Django's built-in pool (OPTIONS={'pool': ...}) under gunicorn --preload with a query in "
    "AppConfig.ready(): every worker gets a copy of the master's pool, same connections",
    defaults={"CONN_MAX_AGE": 0,
              "OPTIONS": {"pool": {"min_size": 2, "max_size": 4, "timeout": 5}}},
    stock_failure="wrong rows / errors / acknowledged-but-lost writes",
    requires=_needs_django_pool,
)
def _scenario_preload_pool(h: Harness, settings: dict[str, Any], result: Result) -> None:
    _preload_common(h, settings, result, query_in_ready=True)
