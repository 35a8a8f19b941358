"""The server down for seconds while requests keep coming."""

from __future__ import annotations

import time
from typing import Any

from connguard.demo.load import LoadResult, mixed_paths
from connguard.demo.registry import scenario
from connguard.demo.results import Result
from connguard.demo.runner import Harness


@scenario(
    "outage",
    "gunicorn gthread -w 2 --threads 4, CONN_MAX_AGE=600: warm up, stop PostgreSQL for "
    "~3 s while requests keep coming (counted apart, in details['outage']), start it, send "
    "requests",
    defaults={"CONN_MAX_AGE": 600},
    stock_failure="after the restart, requests on the dead persistent connections fail",
)
def _scenario_outage(h: Harness, settings: dict[str, Any], result: Result, *,
                     outage_seconds: float = 3.0) -> None:
    h.prepare(settings)
    srv = h.gunicorn(h.env(settings), worker_class="gthread", workers=2, threads=4)
    h.warm_up(srv, result, 48, concurrency=8)
    outage = LoadResult()
    h.db.stop()
    try:
        ends = time.monotonic() + outage_seconds
        for _ in range(40):  # bounded: at most 40 batches of 4 during the outage
            if time.monotonic() >= ends:
                break
            outage.merge(h.load(srv, mixed_paths(4), concurrency=4, timeout=5, deadline=5))
            time.sleep(0.1)
    finally:
        h.db.start()
    result.details["outage"] = {
        "requests": outage.requests, "errors": outage.errors, "ok": outage.ok,
        "max_latency": round(outage.max_latency, 3),
        "error_samples": dict(outage.error_samples.most_common(5)),
    }
    h.measure(srv, mixed_paths(h.size(48)), result, concurrency=8, timeout=10, deadline=15)
