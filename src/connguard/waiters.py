"""The waiter queue: callers that found no idle connection, and what the pool tells them.

The pool's locked step for such a caller (``ConnectionPool._reserve``, on the decision of
:func:`connguard.decide.checkout`) answers with a :class:`Verdict`, one meaning: what the
caller does next, outside the lock — look at the idle list again, open a connection with the
slot it now holds, wait for a probe of the server to end, or wait in the queue: then the
verdict is the caller's :class:`Waiter` itself (one object per queued checkout, not two). A
queued waiter is later granted a connection, or a slot to connect with, or woken because the
pool closed or the breaker opened. Hand-off is oldest caller first (:func:`hand_over`); the
newest connection goes first (the idle list is a stack).

Nothing here blocks while holding the pool's lock, and nothing does I/O; a second front end
(asyncio) would keep the decisions (:mod:`connguard.decide`) and replace :class:`Waiter`'s
lock with a future.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import TYPE_CHECKING

from connguard import decide
from connguard.decide import Next

if TYPE_CHECKING:
    from connguard.entry import Entry


class Verdict:
    """The answer of the pool's locked step: :attr:`next` (never a refusal: those are raised),
    and for ``AWAIT_PROBE`` the event to wait on (``QUEUED``: the verdict is a :class:`Waiter`)."""

    __slots__ = ("event", "next")

    def __init__(self, next: Next, event: threading.Event | None = None) -> None:
        self.next = next
        self.event = event

    @classmethod
    def await_probe(cls, event: threading.Event) -> Verdict:
        return cls(decide.AWAIT_PROBE, event)


RETRY = Verdict(decide.RETRY)
CONNECT = Verdict(decide.CONNECT)


class Waiter(Verdict):
    """A queued getconn(), and the verdict that queued it (``QUEUED``): granted either a
    connection entry or a slot to connect with, or told that the breaker is open (``down``:
    fail fast rather than connect)."""

    __slots__ = ("closed", "down", "entry", "lock", "slot")

    def __init__(self) -> None:
        self.next = decide.QUEUED
        self.event = None
        self.lock = threading.Lock()
        self.lock.acquire()
        self.entry: Entry | None = None
        self.slot = False
        self.closed = False
        self.down = False

    def wake_closed(self) -> None:
        self.closed = True
        self.lock.release()

    def wake_down(self) -> None:
        self.down = True
        self.lock.release()

    def grant(self, entry: Entry | None) -> None:
        if entry is None:
            self.slot = True
        else:
            self.entry = entry
        self.lock.release()


def hand_over(waiters: deque[Waiter], idle: list[Entry]) -> None:
    """Give idle connections to queued callers, oldest caller first (pool lock held)."""
    while waiters:
        try:
            entry = idle.pop()
        except IndexError:
            return
        waiters.popleft().grant(entry)


def leave(waiters: deque[Waiter], waiter: Waiter) -> bool:
    """Take *waiter* out of the queue; False when it was granted or woken meanwhile."""
    try:
        waiters.remove(waiter)
    except ValueError:
        return False
    return True
