"""Observing pools from outside: the registry of live pools and status snapshots.

The stat names (:data:`GAUGES`, :data:`COUNTERS`, :data:`STAT_NAMES`, :data:`ZEROS`) live in
:mod:`connguard.stats` and are re-exported here, where exporters have always found them.

Adapters live in :mod:`connguard.contrib` (Prometheus, and the Django views that serve it).
This module imports nothing from them, and nothing optional.
"""

from __future__ import annotations

import os
from typing import Any

from connguard import forking
from connguard.pool import ConnectionPool
from connguard.stats import COUNTERS, GAUGES, STAT_NAMES, ZEROS

__all__ = [
    "COUNTERS",
    "GAUGES",
    "STAT_NAMES",
    "ZEROS",
    "all_pools",
    "pool_status",
    "stats_by_name",
    "status",
]


def all_pools(include_closed: bool = False) -> list[ConnectionPool]:
    """Every pool alive in this process (Django's and any other), by name."""

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
    last_error = pool._breaker.last_error
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
