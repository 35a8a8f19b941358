"""A Celery prefork worker's connections idle past the server's timeout."""

from __future__ import annotations

import time
import uuid
from typing import Any

from connguard.demo.base import N_ITEMS, TASK_ROW, TASK_WRITE
from connguard.demo.processes import CeleryWorker
from connguard.demo.registry import scenario
from connguard.demo.results import Result
from connguard.demo.runner import Harness


def _collect_tasks(worker: CeleryWorker, sent: list[tuple[str, str, Any]], result: Result,
                   *, timeout: float = 20.0) -> list[str]:
    """Wait (bounded) for task results; classify as ok / wrong / error.  Returns acked tokens."""
    acked: list[str] = []
    deadline = time.monotonic() + timeout
    for kind, arg, res in sent:
        result.requests += 1
        remaining = max(0.1, deadline - time.monotonic())
        try:
            value = res.get(timeout=remaining, propagate=False, interval=0.05)
            state = res.state
        except Exception as exc:
            result.add_error(f"task {kind} not done: {type(exc).__name__}: {exc}")
            continue
        if state != "SUCCESS" or not isinstance(value, dict):
            result.add_error(f"task {kind} {state}: {type(value).__name__}: {value}")
            continue
        field_name = "key" if kind == "row" else "token"
        if value.get(field_name) != arg:
            result.wrong += 1
            if len(result.wrong_samples) < 10:
                result.wrong_samples.append(f"{kind}({arg}) -> {value}")
            continue
        result.ok += 1
        if kind == "write":
            acked.append(arg)
    return acked


@scenario(
    "celery_idle",
    "Celery prefork worker (-c 2, CELERY_DB_REUSE_MAX=1000 so Django connections are kept "
    "across tasks), idle_session_timeout=1s: run tasks, stay idle 2.5 s, run tasks",
    defaults={"CONN_MAX_AGE": 600},
    stock_failure="the first task on each child's timed-out connection fails",
)
def _scenario_celery_idle(h: Harness, settings: dict[str, Any], result: Result) -> None:
    h.prepare(settings)
    h.set_idle_timeout(1)
    env = h.env(settings, CELERY_DB_REUSE_MAX=1000)
    worker = h.celery_worker(env, concurrency=2)
    tag = uuid.uuid4().hex[:8]

    def batch(n: int, offset: int) -> list[tuple[str, str, Any]]:
        sent = []
        for i in range(n):
            if i % 3 == 2:
                token = f"celery-{tag}-{offset + i}"
                sent.append(("write", token, worker.send(TASK_WRITE, token)))
            else:
                key = f"k{(offset + i * 7) % N_ITEMS:04d}"
                sent.append(("row", key, worker.send(TASK_ROW, key)))
        return sent

    warm = Result(scenario=result.scenario, engine=result.engine)
    _collect_tasks(worker, batch(12, 0), warm)
    result.details["warmup"] = {"ok": warm.ok, "errors": warm.errors}
    time.sleep(2.5)
    with h.monitor() as mon:
        acked = _collect_tasks(worker, batch(24, 100), result)
    result.peak_server_connections = mon.peak
    result.lost = h.lost_writes(acked)
