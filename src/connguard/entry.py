"""Entry (the long-lived slot that owns a server connection) and Lease (one checkout of it)."""

from __future__ import annotations

import itertools
import os
import select
import sys
import threading
import traceback
import weakref
from typing import Any

_ids = itertools.count(1)


def short_stack(skip: int = 2, limit: int = 8) -> traceback.StackSummary:
    """The caller's stack, innermost last, without connguard's own frames and without source
    lines read from disk (cheap enough for every connect; leak detection takes it per checkout).
    """
    frame = sys._getframe(skip)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("connguard."):
        if frame.f_back is None:
            break
        frame = frame.f_back
    return traceback.StackSummary.extract(
        traceback.walk_stack(frame), limit=limit, lookup_lines=False
    )


def format_stack(stack: traceback.StackSummary | None) -> str:
    if not stack:
        return "  (no stack recorded)"
    lines = []
    for fs in reversed(stack):  # walk_stack yields innermost first
        lines.append(f'  File "{fs.filename}", line {fs.lineno}, in {fs.name}')
    return "\n".join(lines)


class Entry:
    """One server connection the pool owns: socket, birth, expiry, generation, pid, origin."""

    __slots__ = (
        "__weakref__",
        "conn",
        "created",
        "expires",
        "fd",
        "generation",
        "id",
        "last_used",
        "lease",
        "origin",
        "pid",
        "poller",
        "ref",
    )

    def __init__(
        self,
        conn: Any,
        fd: int,
        poller: select.poll | None,
        now: float,
        expires: float,
        generation: int,
        origin: traceback.StackSummary | None,
    ) -> None:
        self.id = next(_ids)
        self.conn: Any = conn
        self.fd = fd
        self.poller = poller
        self.created = now
        self.expires = expires
        self.last_used = now
        self.generation = generation
        self.pid = os.getpid()
        self.origin = origin
        self.lease: Lease | None = None
        self.ref: weakref.ref[Any] | None = None

    def describe(self) -> str:
        return f"connection #{self.id} (pid {self.pid}, fd {self.fd})"


class Lease:
    """One checkout: when, by which thread, from where (when leak detection is on)."""

    __slots__ = ("key", "reported", "stack", "taken_at", "thread")

    def __init__(
        self, key: int, taken_at: float, stack: traceback.StackSummary | None = None
    ) -> None:
        self.key = key
        self.taken_at = taken_at
        self.thread = threading.current_thread()
        self.stack = stack
        self.reported = False
