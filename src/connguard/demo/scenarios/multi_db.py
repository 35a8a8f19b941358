"""Two aliases on two databases."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

from connguard.demo.load import http_get, mixed_paths
from connguard.demo.registry import scenario
from connguard.demo.results import Result
from connguard.demo.runner import Harness


@scenario(
    "multi_db",
    "two aliases (default + other on a second database, a router sending Event there), "
    "gunicorn gthread -w 2 --threads 4: 120 requests writing to both; then each worker "
    "reports its pools (details['pools_by_pid'])",
    stock_failure="none: the control run for multiple databases",
    control=True,
)
def _scenario_multi_db(h: Harness, settings: dict[str, Any], result: Result) -> None:
    with h.other_database() as other:
        h.prepare(settings, DB_OTHER_NAME=other)
        srv = h.gunicorn(
            h.env(settings, DB_OTHER_NAME=other), worker_class="gthread", workers=2, threads=4
        )
        other_mon = h.monitor(other).start()
        try:
            with h.monitor() as mon:
                load = h.load(
                    srv,
                    mixed_paths(120, write_every=2, write="multi"),
                    concurrency=8,
                    timeout=10,
                    deadline=20,
                )
        finally:
            other_mon.stop()
        result.add_load(load)
        result.peak_server_connections = mon.peak + other_mon.peak
        result.details["peak_by_database"] = {"default": mon.peak, "other": other_mon.peak}
        result.lost = h.lost_writes(load.acked_tokens) + h.db.lost_writes(
            h.db.target(other), load.acked_tokens, table="cg_event"
        )
        pools_by_pid: dict[int, list[str]] = {}
        # bounded: until both workers answered; 8 at a time, since one idle worker may accept
        # every request of a sequential loop
        with ThreadPoolExecutor(8) as ask:
            for _ in range(10):
                batch = ask.map(lambda _i: http_get(srv.base_url + "/pools", timeout=5), range(8))
                for status, data, _err in batch:
                    if status == 200 and isinstance(data, dict):
                        pools_by_pid[data["pid"]] = [p["name"] for p in data["pools"]]
                if len(pools_by_pid) >= 2:
                    break
        result.details["pools_by_pid"] = pools_by_pid
