"""Leaks: connections lent and never returned.

Two ways a lent connection goes astray, and what the pool does about each:

- **Garbage-collected** without ``putconn()``: the pool holds a lent connection only through
  a weak reference whose callback (:func:`on_collected`) queues its entry; the next locked
  step (:func:`drain_reclaim`) frees the slot and logs where it was taken.
- **Held too long, or by a thread that exited**: the reaper (:func:`reap`, a maintenance
  round) reports leases held past ``leak_threshold`` with the stack that took them; a lease
  whose owner thread exited is either garbage (reclaimed) or still referenced elsewhere
  (reported once, never closed under its holder).

Functions over the pool's state (the :class:`Reaped` protocol), called by the pool: they
take the pool's lock for the bookkeeping and log outside it.
"""

from __future__ import annotations

import gc
import logging
import threading
import weakref
from collections import Counter, deque
from collections.abc import Callable
from time import monotonic
from typing import Any, Protocol

from connguard.config import PoolConfig
from connguard.entry import Entry, Lease, format_stack, live_thread_idents, thread_name

# a child of the pool's logger: filtering on "connguard.pool" keeps seeing these
logger = logging.getLogger("connguard.pool.leaks")


class Reaped(Protocol):
    """The part of a pool this module works on."""

    name: str
    config: PoolConfig
    _lock: threading.Lock
    _out: dict[int, Entry]
    _entries: dict[int, Entry]
    _reclaim: deque[Entry]
    _orphans: dict[int, float]
    _counts: Counter[str]

    def _drop_entry_locked(self, entry: Entry) -> bool: ...

    def _grant_slots_locked(self) -> None: ...


def on_collected(pool: Reaped, entry: Entry) -> Callable[[Any], None]:
    """The weak reference callback of a lent connection: queue its entry for reclaiming."""
    pool_ref = weakref.ref(pool)
    entry_ref = weakref.ref(entry)

    def collected(_: Any) -> None:
        # Runs inside the garbage collector, perhaps while this very thread holds the pool
        # lock: only queue the entry; the next locked step frees the slot.
        p, e = pool_ref(), entry_ref()
        if p is not None and e is not None and e.lease is not None:
            p._reclaim.append(e)

    return collected


def _referenced(entry: Entry) -> bool:
    """The lent connection of *entry* still exists (without keeping a reference to it)."""
    return entry.ref is not None and entry.ref() is not None


def drain_reclaim(pool: Reaped) -> None:
    """Free the slots of connections garbage-collected while lent; log each, unlocked."""
    with pool._lock:
        reclaimed = reclaim_locked(pool)
    for entry, lease in reclaimed:
        logger.warning(
            "pool %r: %s was garbage-collected without putconn(); its slot is free again. "
            "Taken by thread %r at:\n%s",
            pool.name, entry.describe(), thread_name(lease.thread), format_stack(lease.stack),
        )  # fmt: skip


def reclaim_locked(pool: Reaped) -> list[tuple[Entry, Lease]]:
    reclaimed: list[tuple[Entry, Lease]] = []
    while pool._reclaim:
        entry = pool._reclaim.popleft()
        lease = entry.lease
        if lease is None or pool._entries.get(entry.id) is not entry:
            continue  # returned or retired meanwhile
        # its key in _out may already belong to a new connection at the same address
        # (CPython reuses a collected object's memory at once): remove only this entry
        if pool._out.get(lease.key) is entry:
            pool._out.pop(lease.key, None)
        pool._drop_entry_locked(entry)
        pool._counts["leaks_reclaimed"] += 1
        reclaimed.append((entry, lease))
    pool._grant_slots_locked()
    return reclaimed


def reap(pool: Reaped, now: float) -> None:
    """Judge leases whose owner thread died (reclaimed when garbage, reported when still
    held); report those held past leak_threshold."""
    if not pool._out:
        return
    threshold = pool.config.leak_threshold
    # The leases first, then which threads are alive: a lease taken after this read is
    # not judged now, and the thread of one taken before it existed when we look.
    with pool._lock:
        held = [
            (entry, lease, lease.thread, lease.taken_at)
            for entry in list(pool._out.values())
            if (lease := entry.lease) is not None
        ]
    # None under gevent/eventlet: a greenlet that dies holding a connection drops it,
    # and the garbage collector's callback reclaims the slot instead
    alive = live_thread_idents()
    orphans: list[tuple[Entry, Lease, int, float]] = []
    leaks: list[tuple[str, float, int, Any]] = []
    with pool._lock:
        judged, pool._orphans = pool._orphans, {}
        for entry, lease, thread, taken_at in held:
            if entry.lease is not lease or lease.thread != thread or lease.taken_at != taken_at:
                continue  # returned (and perhaps lent again) meanwhile
            if alive is not None and thread not in alive:
                if judged.get(entry.id) == taken_at:
                    pool._orphans[entry.id] = taken_at  # reported already: still held
                elif pool._entries.get(entry.id) is entry:
                    orphans.append((entry, lease, thread, taken_at))
            elif threshold and not lease.reported and now - taken_at > threshold:
                lease.reported = True
                pool._counts["leaks_detected"] += 1
                leaks.append((entry.describe(), now - taken_at, thread, lease.stack))
    for what, held_for, thread, stack in leaks:  # logged outside the lock
        logger.warning(
            "pool %r: possible leak: %s held for %.1f s (leak_threshold=%g s) "
            "by thread %r; taken at:\n%s",
            pool.name, what, held_for, threshold, thread_name(thread), format_stack(stack),
        )  # fmt: skip
    if orphans:
        _judge_orphans(pool, orphans)


def _judge_orphans(pool: Reaped, orphans: list[tuple[Entry, Lease, int, float]]) -> None:
    """Leases whose owner thread has exited. The connection is either garbage (in a
    reference cycle, say) or still held: handed to another thread (an executor's result,
    a queue) or kept somewhere. The garbage collector decides, once: what it frees comes
    back through the weak reference's callback and its slot is reclaimed; what survives
    is still referenced, so it is reported as a leak and never closed under its holder."""
    if any(_referenced(entry) for entry, *_ in orphans):
        gc.collect()
    drain_reclaim(pool)
    survivors: list[tuple[Entry, Lease, int, float]] = []
    with pool._lock:
        for entry, lease, thread, taken_at in orphans:
            if (
                entry.lease is not lease
                or lease.taken_at != taken_at
                or pool._entries.get(entry.id) is not entry
            ):
                continue  # collected (and reclaimed) or returned meanwhile
            pool._orphans[entry.id] = taken_at
            pool._counts["leaks_detected"] += 1
            survivors.append((entry, lease, thread, taken_at))
    for entry, lease, thread, taken_at in survivors:
        logger.warning(
            "pool %r: thread %r exited without returning %s, held for %.1f s; it is still "
            "referenced (handed to another thread, or leaked), so it stays lent and is not "
            "closed: return it with putconn() when done. Taken at:\n%s",
            pool.name, thread_name(thread), entry.describe(), monotonic() - taken_at,
            format_stack(lease.stack),
        )  # fmt: skip
