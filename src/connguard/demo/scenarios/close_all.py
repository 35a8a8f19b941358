"""``connections.close_all()`` gives every connection back."""

from __future__ import annotations

import json
from typing import Any

from connguard.demo.load import short
from connguard.demo.registry import scenario
from connguard.demo.results import Result
from connguard.demo.runner import Harness


@scenario(
    "close_all",
    "manage.py closeall: both aliases used in the main thread and 4 threads, "
    "connections.close_all() in each; then every pool must have every connection back "
    "(in_use=0, available=size)",
    stock_failure="none: connguard-specific (the stock backend has no pool)",
    control=True,
)
def _scenario_close_all(h: Harness, settings: dict[str, Any], result: Result) -> None:
    with h.other_database() as other:
        proc = h.manage(h.env(settings, DB_OTHER_NAME=other), "closeall", "--threads", "4",
                        timeout=60)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        result.add_error(f"closeall exited {proc.returncode}: {short(proc.stderr[-400:])}")
        return
    report = json.loads(lines[-1])
    result.details["report"] = report
    result.requests = 5 * len(report["aliases"])
    for msg in report["errors"]:
        result.add_error(msg)
    for pool in report["pools"]:
        if pool["in_use"] or pool["available"] != pool["size"]:
            result.add_error(f"pool {pool['name']!r} after close_all(): {pool}")
    result.ok = max(0, result.requests - result.errors)
