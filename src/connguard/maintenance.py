"""The background task of a pool: fill to min_size, expire, keep alive, reap, probe.

The thread holds only a weak reference to its pool, so a pool that is dropped without
``close()`` stops its thread; an error in one round is logged and never kills the thread.
"""

from __future__ import annotations

import logging
import threading
import weakref
from typing import Protocol

logger = logging.getLogger("connguard.maintenance")


class Maintained(Protocol):
    """What the thread needs of a pool (it imports no pool: no import circle)."""

    name: str
    _closed: bool
    _worker: threading.Thread | None
    _wake: threading.Event

    def _maintain(self) -> float:
        """One round; how long to sleep before the next."""
        ...


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
