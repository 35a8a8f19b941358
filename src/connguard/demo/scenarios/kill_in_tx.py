"""A session killed inside a transaction: nothing partial, nothing lost."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from connguard.demo.load import http_get, mixed_paths, short
from connguard.demo.registry import scenario
from connguard.demo.results import Result
from connguard.demo.runner import Harness


def _backend_running(h: Harness, needle: str, timeout: float = 5.0) -> int | None:
    """The session (backend pid, connection id) on the target database whose statement
    contains ``needle``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        session = h.db.running_session(h.target.dbname, needle)
        if session is not None:
            return session
        time.sleep(0.02)
    return None


@scenario(
    "kill_in_tx",
    "gunicorn gthread -w 1 --threads 4: a view inserts two rows in atomic(), sleeps, inserts "
    "a third; its backend is terminated during the sleep (3 times). The request must fail, "
    "none of its rows may be committed (a partial commit counts as wrong), and the requests "
    "after it must succeed",
    stock_failure="none: Django rolls back and discards the connection (a correctness check)",
    control=True,
)
def _scenario_kill_in_tx(h: Harness, settings: dict[str, Any], result: Result, *,
                         rounds: int = 3) -> None:
    h.prepare(settings)
    srv = h.gunicorn(h.env(settings), worker_class="gthread", workers=1, threads=4)
    warm = h.load(srv, mixed_paths(16), concurrency=4, timeout=10, deadline=15)
    result.details["warmup"] = {"ok": warm.ok, "errors": warm.errors}
    killed: list[dict[str, Any]] = []
    tag = uuid.uuid4().hex[:8]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="cg-txn") as pool:
        for i in range(rounds):
            token = f"tx-{tag}-{i}"
            sent = time.monotonic()
            future = pool.submit(http_get, f"{srv.base_url}/txn/{token}/4000", 15.0)
            pid = _backend_running(h, "sleep(")
            if pid is not None:
                h.db.kill_session(pid)
            status, data, err = future.result(timeout=20)
            rows = h.target.execute("SELECT token FROM cg_write WHERE token LIKE %s",
                                    [f"{token}-%"])
            outcome = {
                "status": status, "latency": round(time.monotonic() - sent, 3),
                "error": (data or {}).get("error") if isinstance(data, dict) else err,
                "message": short((data or {}).get("message", "") if isinstance(data, dict)
                                  else str(err), 200),
                "rows_committed": sorted(r[0] for r in rows), "backend_pid": pid,
            }
            killed.append(outcome)
            if pid is None or status == 200:
                result.notes.append(f"round {i}: the backend was not terminated mid-way")
            if rows:
                result.wrong += 1
                result.wrong_samples.append(f"/txn/{token}: partial commit {outcome}")
            after = h.load(srv, mixed_paths(16, tag=f"{tag}{i}"), concurrency=4, timeout=10,
                           deadline=15)
            result.add_load(after)
            result.lost += h.lost_writes(after.acked_tokens)
    result.details["killed"] = killed
