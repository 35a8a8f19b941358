"""The gevent control run."""

from __future__ import annotations

from typing import Any

from connguard.demo.base import GEVENT_CONFIG
from connguard.demo.load import mixed_paths
from connguard.demo.registry import scenario
from connguard.demo.results import Result
from connguard.demo.runner import Harness


@scenario(
    "gevent_mixed",
    "gunicorn -k gevent -w 1 --worker-connections 200: 200 row/write requests, 16 at a "
    "time (one greenlet per request, each with its own Django connection handler)",
    stock_failure="none: the control run for gevent (per-request release of connections)",
    control=True,
)
def _scenario_gevent_mixed(h: Harness, settings: dict[str, Any], result: Result) -> None:
    h.prepare(settings)
    srv = h.gunicorn(h.env(settings), worker_class="gevent", workers=1,
                     worker_connections=200, config=GEVENT_CONFIG)
    h.measure(srv, mixed_paths(200), result, concurrency=16,
              timeout=15, deadline=30)
