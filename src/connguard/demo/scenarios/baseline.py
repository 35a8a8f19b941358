"""The no-fault control run."""

from __future__ import annotations

from typing import Any

from connguard.demo.load import mixed_paths
from connguard.demo.registry import scenario
from connguard.demo.results import Result
from connguard.demo.runner import Harness


@scenario(
    "baseline",
    "no fault: gunicorn gthread -w 2 --threads 4 and uvicorn (async views), 200 mixed "
    "reads/writes each, 8 at a time",
    stock_failure="none: the control run (the harness must report zero failures)",
    control=True,
)
def _scenario_baseline(h: Harness, settings: dict[str, Any], result: Result) -> None:
    h.prepare(settings)
    env = h.env(settings)
    with h.monitor() as mon:
        srv = h.gunicorn(env, worker_class="gthread", workers=2, threads=4)
        load = h.load(srv, mixed_paths(200), concurrency=8, timeout=10, deadline=20)
        result.add_load(load)
        acked = list(load.acked_tokens)
        asgi = h.uvicorn(env, workers=1)
        load = h.load(asgi, mixed_paths(200, prefix="/async"), concurrency=8, timeout=10,
                      deadline=20)
        result.add_load(load)
        acked += load.acked_tokens
    result.peak_server_connections = mon.peak
    result.lost = h.lost_writes(acked)
    result.details["acked_writes"] = len(acked)
