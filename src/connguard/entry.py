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


#: frames from these modules say nothing about *where in the application* a connection was
#: taken, so stacks leave them out
_PLUMBING = ("connguard.", "django.db.", "django.utils.", "asgiref.", "contextlib", "threading")


def short_stack(skip: int = 2, limit: int = 8) -> traceback.StackSummary:
    """The application frames of the caller's stack, innermost first, without connguard's,
    Django's database plumbing and source lines read from disk (cheap enough for every
    connect; leak detection takes one per checkout)."""
    frame: Any = sys._getframe(skip)
    frames: list[tuple[Any, int]] = []
    while frame is not None and len(frames) < limit:
        if not frame.f_globals.get("__name__", "").startswith(_PLUMBING):
            frames.append((frame, frame.f_lineno))
        frame = frame.f_back
    return traceback.StackSummary.extract(iter(frames), limit=limit, lookup_lines=False)


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
        "spare_lease",
        "uses",
    )

    def __init__(
        self,
        conn: Any,
        fd: int,
        poller: Any,
        now: float,
        expires: float,
        generation: int,
        origin: traceback.StackSummary | None,
    ) -> None:
        self.id = next(_ids)
        self.conn: Any = conn
        self.fd = fd
        self.poller = poller if poller is not None else ALWAYS_READABLE
        self.created = now
        self.expires = expires
        self.last_used = now
        self.generation = generation
        self.pid = os.getpid()
        self.origin = origin
        self.lease: Lease | None = None  # set while lent
        self.uses = 0
        self.spare_lease = Lease()  # reused by every checkout: no allocation per checkout
        self.ref: weakref.ref[Any] | None = None

    def describe(self) -> str:
        return f"connection #{self.id} (pid {self.pid}, fd {self.fd})"


def take(items: list[Entry], entry: Entry) -> bool:
    """Remove *entry* from *items* atomically; False when another thread took it first."""
    try:
        items.remove(entry)
    except ValueError:
        return False
    return True


class Lease:
    """One checkout: its key, when, by which thread (ident), and from where (the stack, only
    when leak detection is on). One object per entry, refilled at every checkout."""

    __slots__ = ("key", "reported", "stack", "taken_at", "thread")

    def __init__(self) -> None:
        self.key = 0
        self.taken_at = 0.0
        self.thread = 0
        self.stack: traceback.StackSummary | None = None
        self.reported = False


class _AlwaysReadable:
    """Null poller for a connection without a socket: always asks for a ping."""

    def poll(self, timeout: float = 0) -> list[tuple[int, int]]:
        return [(-1, select.POLLIN)]


ALWAYS_READABLE = _AlwaysReadable()


def green_threads() -> bool:
    """True under gevent or eventlet monkey-patching: a thread ident then names a greenlet,
    and there is no list of the greenlets alive to look it up in."""
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("threading"):
        return True
    patcher = sys.modules.get("eventlet.patcher")
    return patcher is not None and bool(patcher.is_monkey_patched("thread"))


def live_thread_idents() -> set[int] | None:
    """The idents of every thread alive now — including threads the threading module never
    saw (started by C code or ``_thread``) — or None when that cannot be known (greenlets)."""
    if green_threads():
        return None
    alive = set(sys._current_frames())
    alive.update(t.ident for t in threading.enumerate() if t.ident is not None)
    return alive


def thread_alive(ident: int) -> bool:
    alive = live_thread_idents()
    return alive is None or ident in alive


def thread_name(ident: int) -> str:
    for t in threading.enumerate():
        if t.ident == ident:
            return t.name
    if thread_alive(ident):
        return f"<thread {ident}>"
    return f"<thread {ident}, exited>"
