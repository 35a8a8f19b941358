"""The bounded load client: GET requests from a thread pool, each response checked for
errors, crossed results (wrong) and acknowledged writes."""

from __future__ import annotations

import http.client
import json
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from connguard.demo.base import N_ITEMS

# --------------------------------------------------------------------------------------
# Load client


def http_get(url: str, timeout: float = 10.0) -> tuple[int | None, Any, str | None]:
    """GET ``url``: ``(status, parsed JSON body or None, error text or None)``."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80,
                                      timeout=timeout)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    try:
        conn.request("GET", path or "/", headers={"Connection": "close"})
        resp = conn.getresponse()
        body = resp.read()
        status = resp.status
    except Exception as exc:
        return None, None, f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    return status, data, None


def short(text: str, limit: int = 160) -> str:
    """One line of at most ``limit`` characters, cut after a whole word (then ``…``)."""
    line = " ".join(str(text).split())
    if len(line) <= limit:
        return line
    cut = line[: limit - 1]
    space = cut.rfind(" ")
    return (cut[:space] if space > limit // 2 else cut) + "…"


def error_key(text: str, limit: int = 160) -> str:
    """An error message as a sample key: one line, numbers (ports, pids, sizes) as N."""
    return short(re.sub(r"\d+(?:\.\d+)?", "N", short(text, 400)), limit)


@dataclass
class LoadResult:
    """Outcome of :func:`run_load`."""

    requests: int = 0
    ok: int = 0
    errors: int = 0
    wrong: int = 0
    not_sent: int = 0
    elapsed: float = 0.0
    status_counts: Counter = field(default_factory=Counter)
    error_samples: Counter = field(default_factory=Counter)
    acked_tokens: list[str] = field(default_factory=list)
    wrong_samples: list[str] = field(default_factory=list)
    #: seconds each sent request took (successful or not)
    latencies: list[float] = field(default_factory=list)

    @property
    def max_latency(self) -> float:
        return max(self.latencies, default=0.0)

    def merge(self, other: LoadResult) -> LoadResult:
        """Add ``other``'s counts to this one (returns self)."""
        for name in ("requests", "ok", "errors", "wrong", "not_sent"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.elapsed += other.elapsed
        self.status_counts.update(other.status_counts)
        self.error_samples.update(other.error_samples)
        self.acked_tokens.extend(other.acked_tokens)
        self.wrong_samples.extend(other.wrong_samples[: max(0, 10 - len(self.wrong_samples))])
        self.latencies.extend(other.latencies)
        return self


#: Paths whose last segment is a token written (and read back) by the view.
WRITE_KINDS = ("write", "multi")


def check_response(path: str, status: int | None, data: Any) -> str:
    """Classify one response: ``"ok"``, ``"wrong"`` or ``"error"``.

    ``/row/<key>`` must return that key; ``/write/<token>`` (and ``/multi/<token>``) must
    return ``ok`` and that token (then it counts as acknowledged); anything else just needs
    HTTP 200.
    """
    if status != 200 or not isinstance(data, dict):
        return "error"
    parts = [p for p in path.split("?")[0].split("/") if p]
    if len(parts) >= 2 and parts[-2] == "row":
        return "ok" if data.get("key") == parts[-1] else "wrong"
    if len(parts) >= 2 and parts[-2] in WRITE_KINDS:
        if data.get("ok") is not True:
            return "error"
        return "ok" if data.get("token") == parts[-1] else "wrong"
    return "ok"


def run_load(base_url: str, paths: Sequence[str], *, concurrency: int = 8,
             timeout: float = 10.0, deadline: float = 30.0) -> LoadResult:
    """Send each of ``paths`` once (GET) with ``concurrency`` threads.

    Bounded: at most ``len(paths)`` requests, each with a ``timeout``; requests not started
    within ``deadline`` seconds are skipped (``not_sent``).
    """
    result = LoadResult()
    lock = threading.Lock()
    start = time.monotonic()
    stop_at = start + deadline

    def one(path: str) -> None:
        if time.monotonic() >= stop_at:
            with lock:
                result.not_sent += 1
            return
        sent = time.monotonic()
        status, data, err = http_get(base_url + path, timeout=timeout)
        took = time.monotonic() - sent
        verdict = check_response(path, status, data)
        with lock:
            result.requests += 1
            result.latencies.append(took)
            result.status_counts[str(status) if status is not None else "no-response"] += 1
            if verdict == "ok":
                result.ok += 1
                parts = [p for p in path.split("/") if p]
                if len(parts) >= 2 and parts[-2] in WRITE_KINDS:
                    result.acked_tokens.append(parts[-1])
            elif verdict == "wrong":
                result.wrong += 1
                if len(result.wrong_samples) < 10:
                    result.wrong_samples.append(f"{path} -> {short(json.dumps(data), 200)}")
            else:
                result.errors += 1
                if err is not None:
                    msg = err
                elif isinstance(data, dict) and "error" in data:
                    msg = f"{data['error']}: {data.get('message', '')}"
                else:
                    msg = f"HTTP {status}"
                result.error_samples[error_key(msg)] += 1

    with ThreadPoolExecutor(max_workers=max(1, concurrency),
                            thread_name_prefix="cg-load") as pool:
        list(pool.map(one, paths))
    result.elapsed = time.monotonic() - start
    return result


def mixed_paths(n: int, *, write_every: int = 4, prefix: str = "", tag: str | None = None,
                offset: int = 0, write: str = "write") -> list[str]:
    """``n`` paths: ``/row/kNNNN`` reads with every ``write_every``-th a unique ``/write``
    (``/<write>/<token>``: ``multi`` writes to both databases)."""
    tag = tag or uuid.uuid4().hex[:8]
    out = []
    for i in range(n):
        if write_every and i % write_every == write_every - 1:
            out.append(f"{prefix}/{write}/{tag}-{offset + i}")
        else:
            out.append(f"{prefix}/row/k{(offset + i * 7) % N_ITEMS:04d}")
    return out
