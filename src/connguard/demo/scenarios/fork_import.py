"""A module-level query, then ``os.fork()``."""

from __future__ import annotations

import json
from typing import Any

from connguard.demo.load import error_key, short
from connguard.demo.registry import scenario
from connguard.demo.results import Result
from connguard.demo.runner import Harness


@scenario(
    "fork_import",
    "manage.py forkcheck: a module-level query, then os.fork() x4 children that keep using "
    "Django (close_old_connections around each operation)",
    defaults={"CONN_MAX_AGE": 600},
    stock_failure="errors / wrong rows / hung children",
)
def _scenario_fork_import(h: Harness, settings: dict[str, Any], result: Result) -> None:
    h.prepare(settings)
    env = h.env(settings, IMPORT_TIME_QUERY=True)
    with h.monitor() as mon:
        proc = h.manage(env, "forkcheck", "--children", "4", "--ops", str(h.size(100)),
                        "--timeout", "8",
                        timeout=40)
    result.peak_server_connections = mon.peak
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        result.add_error(f"forkcheck exited {proc.returncode}: {short(proc.stderr[-400:])}")
        return
    report = json.loads(lines[-1])
    result.requests += report["requests"]
    result.ok += report["ok"]
    result.errors += report["errors"]
    result.wrong += report["wrong"]
    for msg, n in report["error_samples"].items():
        key = error_key(msg)
        result.error_samples[key] = result.error_samples.get(key, 0) + n
    result.details["hung_children"] = report["hung"]
    result.details["acked_writes"] = len(report["acked"])
    result.lost = h.lost_writes(report["acked"])
