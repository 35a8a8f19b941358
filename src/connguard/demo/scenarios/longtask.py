"""A management command idle past the server's timeout."""

from __future__ import annotations

import json
from typing import Any

from connguard.demo.load import short
from connguard.demo.registry import scenario
from connguard.demo.results import Result
from connguard.demo.runner import Harness


@scenario(
    "longtask",
    "manage.py longtask: query, sleep 2.5 s past idle_session_timeout=1s, query again",
    stock_failure="the second query fails and the command exits 1",
)
def _scenario_longtask(h: Harness, settings: dict[str, Any], result: Result) -> None:
    h.prepare(settings)
    h.set_idle_timeout(1)
    proc = h.manage(h.env(settings), "longtask", "--sleep", "2.5", timeout=30)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    report = json.loads(lines[-1]) if lines else {}
    result.details["exit_code"] = proc.returncode
    result.details["report"] = report
    result.requests += int(report.get("queries", 2))
    if proc.returncode == 0 and report.get("ok"):
        result.ok += result.requests
        return
    errors = report.get("errors") or [f"exit {proc.returncode}: {short(proc.stderr[-300:])}"]
    for msg in errors:
        if "wrong row" in msg:
            result.wrong += 1
        else:
            result.add_error(msg)
    result.ok += max(0, result.requests - len(errors))
