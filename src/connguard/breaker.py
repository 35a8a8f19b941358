"""The circuit breaker: whether a checkout may connect while the server does not answer.

After a failed connect the breaker opens: callers that would have to connect fail within
milliseconds, while one attempt at a time (jittered exponential backoff, from a caller or the
background task) probes the server; the first success closes it. While the failures say
nobody is listening (refused, no socket, starting up) and cost milliseconds, a caller may also
make that one attempt itself, off schedule: the first request after the server is back then
connects instead of failing until the next scheduled probe. While the server refuses this
client (a configuration error), the backoff grows to at least :data:`DENIED_BACKOFF`. A pool
that requires a primary waits up to ``failover_timeout`` for one instead of failing fast.

:class:`Breaker` holds only state and decisions: no lock of its own (the pool calls it with
its lock held), no I/O, no logging, no clock of its own (every call is given ``now``). A
second front end (an asyncio pool) can share it as it is.
"""

from __future__ import annotations

import random
import threading
from typing import NamedTuple

from connguard.config import PoolConfig

# While the server is absent (its connects are refused at once), a caller may probe it this
# often, off the backoff schedule; a probe whose failure took longer turns this off.
ABSENT_PROBE_GAP = 0.005
ABSENT_PROBE_COST = 0.1
# While the server refuses this client (authentication, unknown role or database), connect
# attempts back off up to this many seconds (or backoff_max, if longer): a wrong password is
# not hammered, and a corrected one is picked up within this bound.
DENIED_BACKOFF = 5.0
# While a pool that requires a primary waits for one after a failover: the least time
# between two connect attempts (one at a time), so that waiting callers do not hammer.
FAILOVER_GAP = 0.05

#: :meth:`Breaker.admit`: make the connect attempt (the breaker counts it as under way)
CONNECT = "connect"
#: :meth:`Breaker.admit`: fail fast
REFUSE = "refuse"


class Failure(NamedTuple):
    """What :meth:`Breaker.failed` decided, for the pool to log and act on (unlocked)."""

    opened: bool  # this failure opened the breaker
    down_for: float  # seconds since it opened
    give_up: bool  # reconnect_timeout just passed: log it, call reconnect_failed once


class Breaker:
    """State and decisions of one pool's circuit breaker (call with the pool's lock held)."""

    __slots__ = (
        "absent",
        "attempt_in_flight",
        "backoff",
        "config",
        "denied",
        "down_since",
        "failover_until",
        "failover_wait",
        "gave_up",
        "last_attempt",
        "last_error",
        "next_attempt",
        "probe_done",
        "wait_for_primary",
    )

    def __init__(self, config: PoolConfig, wait_for_primary: bool) -> None:
        self.config = config
        # a pool that requires a primary: after a failure, callers wait for one
        self.wait_for_primary = wait_for_primary and bool(config.failover_timeout)
        self.down_since: float | None = None  # None: closed
        self.last_error: str | None = None
        self.next_attempt = 0.0
        self.attempt_in_flight = False
        self.last_attempt = 0.0
        self.probe_done: threading.Event | None = None  # set when that attempt ends
        self.absent = False  # the last connect failure said nobody listens, and failed fast
        self.denied: str | None = None  # ... or the parameter to fix, when the server refused us
        self.backoff = 0.0
        self.gave_up = False  # reconnect_failed was called for this outage
        # failover: until then, a pool that requires a primary waits for one
        self.failover_until = 0.0
        self.failover_wait = threading.Event()  # never set: a bounded sleep between turns

    @property
    def is_open(self) -> bool:
        return self.down_since is not None

    # -- decisions -------------------------------------------------------------------------

    def admit(self, now: float, wait_probe: bool) -> str | threading.Event:
        """A caller with a free slot wants to connect while the breaker is open: CONNECT
        (the attempt is then under way), REFUSE (fail fast), or an event to wait on (a
        cheap probe, or a failover's next turn) before asking again."""
        if now < self.failover_until:
            # a failover is under way: wait for a primary, one connect at a time
            if self.attempt_in_flight or now - self.last_attempt < FAILOVER_GAP:
                return self.probe_done or self.failover_wait
            self._begin()
            return CONNECT
        if self.attempt_in_flight:
            if self.probe_done is not None and wait_probe:
                return self.probe_done
            return REFUSE
        if now < self.next_attempt and not self._absent_probe_due(now):
            return REFUSE
        self._begin()
        return CONNECT

    def grant_probe(self, now: float) -> bool:
        """May a queued caller make the one attempt now? True: it is under way."""
        if self.attempt_in_flight or not (now >= self.next_attempt or self._absent_probe_due(now)):
            return False
        self._begin()
        return True

    def background_probe(self, now: float) -> bool:
        """May the background task make the one attempt now (on schedule only)?"""
        if self.attempt_in_flight or now < self.next_attempt:
            return False
        self._begin()
        return True

    def failing_over(self, now: float) -> bool:
        """A pool that requires a primary is waiting for one (callers wait, not fail)."""
        return now < self.failover_until

    def backoff_cap(self) -> float:
        """backoff_max; or, while the server refuses this client (a configuration error that
        no retry fixes until someone changes a setting), at least DENIED_BACKOFF."""
        cap = self.config.backoff_max
        return cap if self.denied is None else max(cap, DENIED_BACKOFF)

    def down_for(self, now: float) -> float:
        return now - self.down_since if self.down_since is not None else 0.0

    def tick(self, now: float, tick: float) -> float:
        """How long the background task may sleep: until the next scheduled probe."""
        if self.down_since is not None:
            return min(tick, max(0.01, self.next_attempt - now))
        return tick

    # -- outcomes --------------------------------------------------------------------------

    def attempt_over(self) -> None:
        """The one connect attempt allowed while the breaker is open has ended (any way)."""
        self.attempt_in_flight = False
        done = self.probe_done
        if done is not None:
            self.probe_done = None
            done.set()

    def succeeded(self) -> float | None:
        """A connect succeeded: close. Returns when it had opened (None: it was closed)."""
        down_since, self.down_since = self.down_since, None
        self.attempt_over()
        self.failover_until = 0.0
        self.backoff = 0.0
        self.gave_up = False
        return down_since

    def answered(self) -> None:
        """The server answered, though the connection is not used (configure() raised)."""
        self.attempt_over()
        if self.down_since is not None:
            self.down_since = None
            self.backoff = 0.0

    def server_full(self, message: str) -> None:
        """The server is up but has no slot left: no breaker (the pool caps its size)."""
        self.attempt_over()
        self.down_since = None
        self.last_error = message

    def failed(
        self, now: float, cost: float, message: str, absent: bool, denied: str | None
    ) -> Failure:
        """A connect failed after *cost* seconds: open (or stay open), schedule the next
        attempt. *absent*: the driver says nobody listens; *denied*: the parameter that the
        server refused (authentication, unknown role or database)."""
        self.last_error = message
        self.attempt_over()
        self.last_attempt = now
        self.absent = cost < ABSENT_PROBE_COST and absent
        self.denied = denied
        opened = self.down_since is None
        if opened:
            self.down_since = now
            if self.wait_for_primary:
                # no primary (gone, demoted, not promoted yet): callers wait for one
                # (failover_timeout at most, within their own timeout) instead of failing
                # fast; also a process that never had a connection (a worker started
                # during the failover, one that had served no request yet)
                self.failover_until = now + self.config.failover_timeout
        initial, cap = self.config.backoff_initial, self.backoff_cap()
        self.backoff = min(cap, max(initial, self.backoff * 2))
        self.next_attempt = now + self.backoff * (0.5 + random.random() / 2)
        down_for = self.down_for(now)
        give_up = down_for >= self.config.reconnect_timeout and not self.gave_up
        if give_up:
            self.gave_up = True
        return Failure(opened, down_for, give_up)

    def _begin(self) -> None:
        self.attempt_in_flight = True
        if self.absent:  # a cheap probe: callers arriving meanwhile await its verdict
            self.probe_done = threading.Event()

    def _absent_probe_due(self, now: float) -> bool:
        return self.absent and now - self.last_attempt >= ABSENT_PROBE_GAP
