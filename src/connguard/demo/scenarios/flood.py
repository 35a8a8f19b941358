"""More concurrent requests than the server has connection slots."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from connguard.demo.base import GEVENT_CONFIG
from connguard.demo.load import mixed_paths
from connguard.demo.processes import HttpServer
from connguard.demo.registry import scenario
from connguard.demo.results import Result
from connguard.demo.runner import Harness


# Flood sizing note: the harness's ConnectionMonitor holds one of the 20 slots, so the app
# gets 19.  A pooled backend must cap its total (max_size x worker processes) below that, or
# it will meet "too many clients" itself, e.g. OPTIONS={"pool": {"max_size": 8}} with the
# two-process servers used here.
def _flood(h: Harness, settings: dict[str, Any], result: Result, *,
           start: Callable[[dict[str, str]], HttpServer], path: str, n: int = 100,
           max_connections: int = 20, flags: Mapping[str, Any] | None = None) -> None:
    h.prepare(settings)
    env = h.env(settings, **dict(flags or {}))
    srv = start(env)
    with h.db.max_connections(h.target, max_connections), h.monitor() as mon:
        load = h.load(srv, [path] * n, concurrency=n, timeout=30, deadline=20)
    result.add_load(load)
    result.peak_server_connections = mon.peak
    result.details["max_connections"] = max_connections


@scenario(
    "flood_gthread",
    "100 concurrent /slow/1000 against gunicorn gthread -w 2 --threads 50 with the server at "
    "max_connections=20",
    stock_failure="'sorry, too many clients already' for most requests",
)
def _scenario_flood_gthread(h: Harness, settings: dict[str, Any], result: Result) -> None:
    _flood(h, settings, result, path="/slow/500" if h.quick else "/slow/1000",
           start=lambda env: h.gunicorn(env, worker_class="gthread", workers=2, threads=50))


@scenario(
    "flood_asgi",
    "100 concurrent async /async/slow/1000 against uvicorn --workers 2 with the server at "
    "max_connections=20 (every ASGI request runs the ORM in its own thread => own connection)",
    stock_failure="'sorry, too many clients already' for most requests",
)
def _scenario_flood_asgi(h: Harness, settings: dict[str, Any], result: Result) -> None:
    _flood(h, settings, result, path="/async/slow/1000",
           start=lambda env: h.uvicorn(env, workers=2))


@scenario(
    "flood_gevent",
    "100 concurrent /slow/1000 against gunicorn -k gevent (psycopg2 + psycogreen; "
    "DRIVER='psycopg' for psycopg 3) with the server at max_connections=20",
    defaults={"DRIVER": "psycopg2"},
    stock_failure="'sorry, too many clients already' for most requests",
)
def _scenario_flood_gevent(h: Harness, settings: dict[str, Any], result: Result) -> None:
    _flood(h, settings, result, path="/slow/1000",
           start=lambda env: h.gunicorn(env, worker_class="gevent", workers=1,
                                        worker_connections=200, config=GEVENT_CONFIG))


@scenario(
    "asgi_persistent",
    "uvicorn --workers 1 with CONN_MAX_AGE=600 and the server at max_connections=20: 150 "
    "requests, 4 at a time (each ASGI request runs in a new thread, so 'persistent' "
    "connections pile up instead of being reused)",
    defaults={"CONN_MAX_AGE": 600},
    stock_failure="connections leak until 'sorry, too many clients already'",
)
def _scenario_asgi_persistent(h: Harness, settings: dict[str, Any], result: Result) -> None:
    h.prepare(settings)
    srv = h.uvicorn(h.env(settings), workers=1)
    with h.db.max_connections(h.target, 20):
        with h.monitor() as mon:
            load = h.load(srv, mixed_paths(150, prefix="/async"), concurrency=4, timeout=15,
                          deadline=20)
        result.add_load(load)
        result.peak_server_connections = mon.peak
        # The piled-up sessions fill every slot (the stock failure): let them go before the
        # harness connects to count the writes.
        srv.stop()
        result.lost = h.lost_writes(load.acked_tokens)
        result.details["max_connections"] = 20
