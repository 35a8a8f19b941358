"""The ASGI control run."""

from __future__ import annotations

import uuid
from typing import Any

from connguard.demo.load import mixed_paths
from connguard.demo.registry import scenario
from connguard.demo.results import Result
from connguard.demo.runner import Harness


@scenario(
    "asgi_mixed",
    "uvicorn --workers 2: 200 sync and async (sync_to_async) row/write requests, 16 at a time",
    stock_failure="none: the control run for ASGI",
    control=True,
)
def _scenario_asgi_mixed(h: Harness, settings: dict[str, Any], result: Result) -> None:
    h.prepare(settings)
    srv = h.uvicorn(h.env(settings), workers=2)
    tag = uuid.uuid4().hex[:8]
    paths = [p for pair in zip(mixed_paths(100, tag=tag),
                               mixed_paths(100, prefix="/async", tag=tag, offset=100),
                               strict=True) for p in pair]
    h.measure(srv, paths, result, concurrency=16, timeout=15, deadline=30)
