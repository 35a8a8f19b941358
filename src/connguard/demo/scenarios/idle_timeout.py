"""The server ends idle sessions."""

from __future__ import annotations

import time
from typing import Any

from connguard.demo.load import mixed_paths
from connguard.demo.registry import scenario
from connguard.demo.results import Result
from connguard.demo.runner import Harness


@scenario(
    "idle_timeout",
    "gunicorn gthread -w 2 --threads 4, CONN_MAX_AGE=600, idle_session_timeout=1s on the "
    "database: warm up, stay idle 2.5 s, send requests",
    defaults={"CONN_MAX_AGE": 600},
    stock_failure="requests on connections the server timed out fail "
                  "('terminating connection due to idle-session timeout')",
)
def _scenario_idle_timeout(h: Harness, settings: dict[str, Any], result: Result) -> None:
    h.prepare(settings)
    h.set_idle_timeout(1)
    srv = h.gunicorn(h.env(settings), worker_class="gthread", workers=2, threads=4)
    h.warm_up(srv, result, 48, concurrency=8)
    result.details["connections_before_idle"] = h.connections()
    time.sleep(2.5)
    h.measure(srv, mixed_paths(h.size(48)), result, concurrency=8, timeout=10, deadline=15)
