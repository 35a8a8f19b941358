"""The background task of a pool and its rounds: fill to min_size, expire, keep alive,
close a forked parent's idle connections, reap leaks, probe a down server.

:class:`Maintenance` is the thread: it holds only a weak reference to its pool, so a pool
that is dropped without ``close()`` stops its thread; an error in one round is logged and
never kills the thread. :func:`run_round` is one round: each task below is a function over
the pool's state (the :class:`Maintained` protocol), deciding under the pool's lock and
closing or opening connections outside it. The pool's own ``check()`` uses :func:`fill`.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import deque
from time import monotonic
from typing import Any, Protocol

from connguard import forking, leaks
from connguard.breaker import Breaker
from connguard.ceiling import Ceiling
from connguard.entry import Entry, take
from connguard.stats import Stats

logger = logging.getLogger("connguard.maintenance")  # the thread
# the rounds' news about connections: a child of the pool's logger, as before the split
rounds_logger = logging.getLogger("connguard.pool.maintenance")

#: A process that has forked children (a pre-fork server's master: gunicorn --preload, uWSGI,
#: Celery prefork) and has made no checkout from a pool for this many seconds closes that
#: pool's idle connections, min_size included, and stops refilling it until its next
#: checkout: the master serves no requests, so what it opened before forking would otherwise
#: stay open for ever beside the workers' own. A process that never forks is not affected;
#: one that forks and keeps using its pool keeps its connections.
FORKED_PARENT_IDLE = 10.0


class Maintained(leaks.Reaped, Protocol):
    """What the thread and the rounds need of a pool (this module imports no pool)."""

    _closed: bool
    _worker: threading.Thread | None
    _wake: threading.Event
    _breaker: Breaker
    _stats: Stats
    _idle: list[Entry]
    _waiters: deque[Any]
    _size: int
    _min_size: int
    _max_size: int
    _floor: int
    _filling: int
    _parked: bool
    _uses_seen: tuple[int, float]
    _ceiling: Ceiling

    def _maintain(self) -> float:
        """One round; how long to sleep before the next."""
        ...

    def _live_uses_locked(self) -> int: ...

    def _take_all_idle_locked(self) -> list[Entry]: ...

    def _retire(self, entry: Entry, reason: str) -> None: ...

    def _return(self, entry: Entry) -> None: ...

    def _ping_idle(self, entries: list[Entry], what: str) -> None: ...

    def _open_connection(self, deadline: float | None) -> Entry | None: ...


class Maintenance(threading.Thread):
    def __init__(self, pool: Maintained) -> None:
        super().__init__(name=f"connguard-{pool.name}", daemon=True)
        self._pool = weakref.ref(pool)
        self._wake = pool._wake

    def run(self) -> None:
        while True:
            pool = self._pool()
            if pool is None or pool._closed or pool._worker is not self:
                return
            # clear before the round, not after the wait: a wake-up asked for during the round
            # (a failed connect, resize(), wait()) starts the next one at once, not a tick late
            self._wake.clear()
            try:
                delay = pool._maintain()
            except Exception:
                logger.exception("pool %r: maintenance round failed", pool.name)
                delay = 1.0
            del pool
            self._wake.wait(delay)


def run_round(pool: Maintained) -> float:
    """One round of background work; returns how long to sleep before the next."""
    now = monotonic()
    if pool._reclaim:
        leaks.drain_reclaim(pool)
    with pool._lock:
        if pool._waiters:
            pool._grant_slots_locked()  # e.g. the server-full cap just expired
    leaks.reap(pool, now)
    expire_idle(pool, now)
    if forking.children_forked:
        park_forked_parent(pool, now)
    if pool.config.keepalive_interval:
        keepalive(pool, now)
    fill(pool, now)
    tick = 0.5
    if pool.config.leak_threshold:
        tick = min(tick, pool.config.leak_threshold / 4)
    tick = pool._breaker.tick(monotonic(), tick)
    tick = pool._ceiling.tick(monotonic(), tick)
    return tick


def expire_idle(pool: Maintained, now: float) -> None:
    max_idle = pool.config.max_idle
    retire: list[Entry] = []
    with pool._lock:
        spare = len(pool._entries) - pool._min_size
        for entry in list(pool._idle):  # oldest first: LIFO puts the coldest at the bottom
            if now >= entry.expires or entry.generation < pool._floor:
                pass
            elif max_idle and spare > 0 and now - entry.last_used > max_idle:
                spare -= 1
            else:
                continue
            if take(pool._idle, entry):
                retire.append(entry)
    for entry in retire:
        reason = "connections_expired" if now >= entry.expires else "connections_idle_closed"
        pool._retire(entry, reason)


def park_forked_parent(pool: Maintained, now: float) -> None:
    """This process forked children and has not checked out of this pool for
    FORKED_PARENT_IDLE seconds: close the idle connections, keep min_size off until the
    next checkout."""
    with pool._lock:
        uses = pool._stats.checkouts(pool._live_uses_locked())
        if uses != pool._uses_seen[0]:
            pool._uses_seen = (uses, now)
            return
        if pool._parked or pool._out or now - pool._uses_seen[1] < FORKED_PARENT_IDLE:
            return
        pool._parked = True
        idle = pool._take_all_idle_locked()
    if idle:
        rounds_logger.info(
            "pool %r: process %d forked children and has not used this pool for %.0f s; "
            "closing its %d idle connection(s) (reopened on the next checkout)",
            pool.name, os.getpid(), now - pool._uses_seen[1], len(idle),
        )  # fmt: skip
    for entry in idle:
        pool._retire(entry, "connections_idle_closed")


def keepalive(pool: Maintained, now: float) -> None:
    interval = pool.config.keepalive_interval
    with pool._lock:
        due = [e for e in list(pool._idle) if now - e.last_used >= interval and take(pool._idle, e)]
    pool._ping_idle(due, "keepalive")


def fill(pool: Maintained, now: float) -> None:
    """Open connections up to min_size, and probe the server while the breaker is open."""
    while True:
        with pool._lock:
            if pool._closed:
                return
            want = (pool._size < pool._min_size and not pool._parked) or (
                pool._breaker.down_since is not None and pool._size < pool._max_size
            )
            if not want:
                return
            if pool._breaker.down_since is not None and not pool._breaker.background_probe(
                monotonic()
            ):
                return
            pool._size += 1
            pool._filling += 1
        try:
            entry = pool._open_connection(None)
            if entry is not None:
                pool._return(entry)  # to the first waiter, if any
        finally:
            with pool._lock:
                pool._filling -= 1
                pool._grant_slots_locked()  # the callers that queued behind this connect
        if entry is None:
            return
