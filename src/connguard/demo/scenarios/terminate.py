"""Every server session of the app ended by an administrator."""

from __future__ import annotations

from typing import Any

from connguard.demo.load import mixed_paths
from connguard.demo.registry import scenario
from connguard.demo.results import Result
from connguard.demo.runner import Harness


@scenario(
    "terminate",
    "gunicorn gthread -w 2 --threads 4, CONN_MAX_AGE=600: warm up, pg_terminate_backend() "
    "every backend of the app, send requests",
    defaults={"CONN_MAX_AGE": 600},
    stock_failure="requests on the terminated persistent connections fail ('terminating "
                  "connection due to administrator command')",
)
def _scenario_terminate(h: Harness, settings: dict[str, Any], result: Result) -> None:
    h.prepare(settings)
    srv = h.gunicorn(h.env(settings), worker_class="gthread", workers=2, threads=4)
    h.warm_up(srv, result, 48, concurrency=8)
    result.details["terminated"] = h.terminate()
    h.measure(srv, mixed_paths(h.size(48)), result, concurrency=8, timeout=10, deadline=15)
