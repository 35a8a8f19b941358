"""The server restarts under persistent connections."""

from __future__ import annotations

from typing import Any

from connguard.demo.load import mixed_paths
from connguard.demo.registry import scenario
from connguard.demo.results import Result
from connguard.demo.runner import Harness


@scenario(
    "restart",
    "gunicorn sync -w 2, CONN_MAX_AGE=600: warm up, restart PostgreSQL (fast), send requests",
    defaults={"CONN_MAX_AGE": 600},
    stock_failure="the first request on each worker's dead persistent connection fails",
)
def _scenario_restart(h: Harness, settings: dict[str, Any], result: Result) -> None:
    h.prepare(settings)
    srv = h.gunicorn(h.env(settings), worker_class="sync", workers=2)
    h.warm_up(srv, result, 40, concurrency=4)
    with h.monitor() as mon:
        result.details["connections_before_restart"] = h.connections()
        h.db.restart()
        load = h.load(srv, mixed_paths(h.size(40)), concurrency=4, timeout=10, deadline=15)
    result.add_load(load)
    result.peak_server_connections = mon.peak
    result.lost = h.lost_writes(load.acked_tokens)
