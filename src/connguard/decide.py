"""The pool's decisions, apart from its waiting and its I/O.

What to lend, whether a caller connects, queues or fails, and which queued callers get a
slot: each function here takes a :class:`State` (the pool's numbers, read under its lock)
and the pool's two decision objects, :class:`~connguard.breaker.Breaker` and
:class:`~connguard.ceiling.Ceiling` (state and rules, no I/O), and returns a decision. Nothing
here blocks, does I/O, takes a lock or reads the clock (``now`` is given); nothing here
changes the pool: the caller reserves the slot, queues the waiter, raises the error, pings
or closes the connection.

The sync pool (:mod:`connguard.pool`) calls these with its lock held and acts on the answer,
doing the I/O after it releases the lock. An asyncio front end can call the same functions
and bring its own waiting (a future where :class:`~connguard.waiters.Waiter` holds a lock)
and its own I/O.

- :func:`check_idle` -- what an idle connection needs before it is lent (:class:`Check`).
- :func:`checkout` -- what a caller with no idle connection at hand does next (:class:`Next`).
- :func:`grants` -- how many queued callers get a slot to connect with, how many fail fast.
"""

from __future__ import annotations

import enum
import threading
from typing import TYPE_CHECKING, NamedTuple

from connguard.breaker import CONNECT as _ADMITTED
from connguard.breaker import REFUSE as _REFUSED

if TYPE_CHECKING:
    from connguard.breaker import Breaker
    from connguard.ceiling import Ceiling
    from connguard.entry import Entry


class State(NamedTuple):
    """The pool's numbers at one moment, read under its lock."""

    closed: bool
    size: int  # connections open, plus slots reserved for connects under way
    max_size: int
    idle: int  # connections on the idle list
    lent: int  # connections lent out
    waiting: int  # callers in the queue
    filling: int  # connects the background task has under way
    max_waiting: int  # 0: no bound on the queue


# -- what to lend ------------------------------------------------------------------------------


class Check(enum.Enum):
    """What an idle connection needs before it is lent."""

    LEND = "lend"  # young, current, used within ping_interval, socket quiet: lend it as is
    EXPIRED = "expired"  # past its max_lifetime: retire it
    DISCARD = "discard"  # of a generation below the floor (drain, fork): retire it
    RECHECK = "recheck"  # lent before an invalidate(): check it (role or ping), then lend it
    PING = "ping"  # idle past ping_interval, or its socket stirred: ping it, then lend it


# The members again as module globals, for the hot paths: ``Check.LEND`` is a lookup on the
# enum class (about 130 ns on Python 3.11, 35 ns on 3.12), a global about 10 ns, and a queued
# checkout asks a dozen such questions (with the pool's lock held, for some).
LEND, EXPIRED, DISCARD, RECHECK = Check.LEND, Check.EXPIRED, Check.DISCARD, Check.RECHECK
PING = Check.PING


def check_idle(
    entry: Entry,
    now: float,
    generation: int,
    floor: int,
    ping_interval: float,
    stirred: bool,
) -> Check:
    """What *entry*, just taken off the idle list, needs before it is lent. *generation* and
    *floor* are the pool's (entries below the floor are retired, those between it and the
    current generation are checked); *stirred*: its socket is readable (the server spoke
    unasked: it ended the session, or data was left unread)."""
    if now >= entry.expires:
        return EXPIRED
    if entry.generation != generation:
        return DISCARD if entry.generation < floor else RECHECK
    if now - entry.last_used >= ping_interval or stirred:
        return PING
    return LEND


# -- whether to connect ------------------------------------------------------------------------


class Next(enum.Enum):
    """What a caller without an idle connection does next."""

    RETRY = "retry"  # an idle connection is back (or a fork changed the lists): look again
    CONNECT = "connect"  # it holds a slot: open a connection
    AWAIT_PROBE = "await probe"  # wait for the connect attempt under way, then ask again
    QUEUED = "queued"  # it is in the queue: wait for a grant
    # refusals: the front end raises
    CLOSED = "closed"  # the pool is closed (or not open yet)
    FAIL_FAST = "fail fast"  # the breaker is open and allows this caller no attempt
    SHED = "shed"  # max_waiting callers are queued already


# (module globals, as for Check above)
RETRY, CONNECT, AWAIT_PROBE, QUEUED = Next.RETRY, Next.CONNECT, Next.AWAIT_PROBE, Next.QUEUED
CLOSED, FAIL_FAST, SHED = Next.CLOSED, Next.FAIL_FAST, Next.SHED


class Decision(NamedTuple):
    """What :func:`checkout` decided: :attr:`next`, and for ``AWAIT_PROBE`` what to wait on."""

    next: Next
    event: threading.Event | None = None  # set when the probe under way ends


_RETRY = Decision(RETRY)
_CONNECT = Decision(CONNECT)
_QUEUE = Decision(QUEUED)
_CLOSED = Decision(CLOSED)
_FAIL_FAST = Decision(FAIL_FAST)
_SHED = Decision(SHED)


def checkout(
    state: State, breaker: Breaker, ceiling: Ceiling, now: float, wait_probe: bool
) -> Decision:
    """A caller found no idle connection: what does it do next? (:func:`checkout_counts`
    on a :class:`State`.)"""
    return checkout_counts(
        state.closed, state.idle, state.size, state.max_size, state.waiting, state.filling,
        state.max_waiting, breaker, ceiling, now, wait_probe,
    )  # fmt: skip


def checkout_counts(
    closed: bool, idle: int, size: int, max_size: int, waiting: int, filling: int,
    max_waiting: int, breaker: Breaker, ceiling: Ceiling, now: float, wait_probe: bool,
) -> Decision:  # fmt: skip
    """:func:`checkout` on the numbers themselves: the sync pool calls this one with its lock
    held, where building a :class:`State` first would lengthen the locked step that every
    queued checkout takes (measured: 32 threads over 8 connections lost ~8 % of their
    throughput to it).

    Look at the idle list again when one came back; connect when a slot is free, nobody
    queues before it and no warm-up connect is under way (while the breaker is open, only
    when :meth:`Breaker.admit` allows the one attempt: else fail fast, or await the cheap
    probe under way, once per checkout: *wait_probe*); else queue, unless ``max_waiting``
    callers already do. On ``CONNECT`` the breaker counts the attempt as under way; the
    caller reserves the slot."""
    if closed:
        return _CLOSED
    if idle:
        return _RETRY  # one came back meanwhile: take it
    if size < ceiling.limit(now, max_size) and not waiting:
        if breaker.down_since is not None:
            admitted = breaker.admit(now, wait_probe)
            if admitted is _REFUSED:
                return _FAIL_FAST
            if admitted is _ADMITTED:
                return _CONNECT
            assert isinstance(admitted, threading.Event)
            return Decision(AWAIT_PROBE, admitted)
        if not filling:
            return _CONNECT
        # the warm-up is opening a connection right now: wait for it rather than open one
        # more (the fill hands it over, then gives the other waiters slots)
    if max_waiting and waiting >= max_waiting:
        return _SHED
    return _QUEUE


# -- who is granted a slot ---------------------------------------------------------------------


class Grants(NamedTuple):
    """What :func:`grants` decided for the queue."""

    slots: int  # the oldest this many queued callers get a slot to connect with
    fail: int  # then the newest this many fail fast (the breaker is open)


def grants(state: State, breaker: Breaker, ceiling: Ceiling, now: float) -> Grants:
    """Free slots go to queued callers, oldest first, so that they connect themselves.

    While the breaker is open a free slot is what a new caller fails fast on: so do the
    queued callers that only a connect could serve, except one that may make the breaker's
    single connect attempt (as in :func:`checkout`). As many as a lent connection or a
    background connect may still serve keep waiting. A granted probe counts as under way."""
    limit = ceiling.limit(now, state.max_size)
    if breaker.down_since is not None and state.waiting and state.size < limit:
        slots = 1 if breaker.grant_probe(now) else 0
        servable = state.lent + state.filling
        return Grants(slots, max(0, state.waiting - slots - servable))
    return Grants(max(0, min(state.waiting, limit - state.size)), 0)
