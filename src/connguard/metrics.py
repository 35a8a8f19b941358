"""Pool statistics: the canonical names, the registry of live pools, and status snapshots.

``pool.get_stats()`` returns every name in :data:`GAUGES` and :data:`COUNTERS`, always (a
counter is ``0`` until its event happens), so dashboards and alerts can rely on them.
Counters only grow, until ``pool.pop_stats()`` resets them; gauges are the state right now.
Durations are counted in whole milliseconds (``*_ms``); exporters turn them into seconds.

Adapters live in :mod:`connguard.contrib` (Prometheus, and the Django views that serve it).
This module imports nothing from them, and nothing optional.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from connguard import forking

if TYPE_CHECKING:
    from connguard.pool import ConnectionPool

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


def all_pools(include_closed: bool = False) -> list[ConnectionPool]:
    """Every pool alive in this process (Django's and any other), by name."""
    from connguard.pool import ConnectionPool

    found = [
        obj
        for obj in list(forking._registry)
        if isinstance(obj, ConnectionPool) and (include_closed or not obj.closed)
    ]
    return sorted(found, key=lambda pool: pool.name)


def stats_by_name(pools: list[ConnectionPool]) -> dict[str, dict[str, int]]:
    """Stats of pools that share a name summed (``breaker_open``: the largest), per name."""
    found: dict[str, dict[str, int]] = {}
    for pool in pools:
        stats = pool.get_stats()
        into = found.setdefault(pool.name, dict(ZEROS))
        for stat in STAT_NAMES:
            value = int(stats.get(stat, 0))
            into[stat] = max(into[stat], value) if stat == "breaker_open" else into[stat] + value
    return found


def pool_status(pool: ConnectionPool) -> dict[str, Any]:
    """One pool's name, breaker state, last connect error and every stat."""
    stats = pool.get_stats()
    last_error = getattr(pool, "_last_error", None)
    return {
        "name": pool.name,
        "breaker": "open" if stats.get("breaker_open") else "closed",
        "last_error": last_error if stats.get("breaker_open") else None,
        "stats": stats,
    }


def status() -> dict[str, Any]:
    """What a health check needs: this process's pools; ``healthy`` is False while any
    pool's breaker is open (its database is unreachable)."""
    pools = [pool_status(pool) for pool in all_pools()]
    return {
        "healthy": all(p["breaker"] == "closed" for p in pools),
        "pid": os.getpid(),
        "pools": pools,
    }
