"""The pool's statistics: the canonical names and the counters one pool keeps.

``pool.get_stats()`` returns every name in :data:`GAUGES` and :data:`COUNTERS`, always (a
counter is ``0`` until its event happens), so dashboards and alerts can rely on them.
Counters only grow, until ``pool.pop_stats()`` resets them; gauges are the state right now.
Durations are counted in whole milliseconds (``*_ms``); exporters turn them into seconds.

This module knows no pool: the pool owns a :class:`Stats` and feeds it under its lock;
:mod:`connguard.metrics` (the registry of live pools, status snapshots) reads pools.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

#: gauge -> meaning (the state right now)
GAUGES: dict[str, str] = {
    "pool_min": "connections the pool keeps open even when idle (min_size)",
    "pool_max": "connections the pool may open at most (max_size)",
    "pool_size": "connections open now, plus connects under way",
    "pool_available": "idle connections ready to be lent",
    "pool_in_use": "connections lent out now",
    "requests_waiting": "getconn() calls queued for a connection now",
    "breaker_open": "1 while the circuit breaker is open (server unreachable: callers fail fast)",
}

#: counter -> meaning (events since the pool was made, or since the last pop_stats())
COUNTERS: dict[str, str] = {
    "checkouts": "connections lent by getconn()",
    "requests_queued": "getconn() calls that had to wait for a connection",
    "requests_wait_ms": "time callers spent waiting in the queue, in milliseconds",
    "requests_errors": "getconn() calls that failed (timeouts and fail-fast errors)",
    "requests_shed": "getconn() calls refused at once: max_waiting callers already queued",
    "requests_failed_fast": "getconn() calls failed at once while the breaker was open",
    "timeouts": "getconn() calls that got no connection within their timeout",
    "connections_opened": "server connections opened",
    "connections_ms": "time spent opening server connections, in milliseconds",
    "connections_errors": "connect attempts that failed",
    "connections_refused_full": "connect attempts the server refused for lack of slots (53300)",
    "connections_lost": "connections found dead (closed by the server or the network) and replaced",
    "connections_expired": "connections closed on reaching max_lifetime",
    "connections_idle_closed": "idle connections above min_size closed after max_idle (all of them in a process that forked and left the pool unused for 10 s)",
    "connections_discarded": "connections closed because the pool was drained or shrunk",
    "connections_discarded_after_fork": "connections inherited across fork() and dropped "
    "without a byte sent to the server",
    "returns_bad": "connections returned broken or in an unusable state, and closed",
    "returns_rolled_back": "connections returned inside a transaction, and rolled back",
    "pings": "liveness round trips at checkout (after idle, or when the socket had data)",
    "leaks_detected": "checkouts held longer than leak_threshold, or still referenced after their owner thread exited (logged with the taking stack)",
    "leaks_reclaimed": "connections never returned whose slot was taken back (holder gone)",
    "breaker_opened": "times the circuit breaker opened (the server became unreachable)",
    "invalidations": "errors that said the server changed role or went away (failover): "
    "each makes every connection be checked before it is lent again",
    "connections_wrong_role": "connections replaced because their server is no longer a "
    "writable primary (pools that require one)",
}

#: every stat name, gauges first, in the order get_stats() returns them
STAT_NAMES: tuple[str, ...] = (*GAUGES, *COUNTERS)

#: ``dict.fromkeys(STAT_NAMES, 0)``: what get_stats() starts from
ZEROS: dict[str, int] = dict.fromkeys(STAT_NAMES, 0)


class Stats:
    """One pool's counters. Mutated under the pool's lock; checkouts are counted per entry
    (only its holder touches it, no lock) and summed here when asked."""

    __slots__ = ("counters", "retired_uses")

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()
        # checkouts of entries no longer in the pool (live entries count their own)
        self.retired_uses = 0

    def checkouts(self, live_uses: int) -> int:
        return self.retired_uses + live_uses

    def report(self, gauges: dict[str, Any], live_uses: int) -> dict[str, Any]:
        """Every canonical name (0 until its event happens): *gauges*, then the counters."""
        stats: dict[str, Any] = {**gauges, "checkouts": self.checkouts(live_uses)}
        stats.update(self.counters)
        return {**ZEROS, **stats}

    def reset(self, live_uses: int) -> None:
        """pop_stats(): counters from zero; checkouts of live entries so far not counted."""
        self.counters.clear()
        self.retired_uses = -live_uses
