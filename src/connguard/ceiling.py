"""The server-full ceiling: fewer connections for a while after "too many clients".

When the server refuses a connection for lack of slots (the driver's ``is_capacity_error``
says so), it is up: no breaker. The pool holds at the number of
connections it has for a short, jittered while, and callers wait for one to come back
instead of failing or hammering the server. Like :mod:`connguard.breaker`: state and
decisions only, called with the pool's lock held, given ``now``.
"""

from __future__ import annotations

import math
import random

# one warning per episode, not per refused attempt
_LOG_EVERY = 10.0


class Ceiling:
    __slots__ = ("_logged_at", "until", "value")

    def __init__(self) -> None:
        self.value = 0  # while `until` is in the future: the most connections to hold
        self.until = 0.0  # 0: no ceiling
        self._logged_at = -math.inf

    def limit(self, now: float, max_size: int) -> int:
        """How many connections may be open now: max_size, or the ceiling while it holds."""
        if self.until:
            if now < self.until:
                return min(max_size, self.value)
            self.until = 0.0  # try the full size again
        return max_size

    def hold(self, now: float, open_now: int, backoff_max: float) -> bool:
        """The server is full: hold at *open_now* connections for a jittered while (about
        backoff_max). True when this starts an episode worth a warning."""
        first = now - self._logged_at > _LOG_EVERY
        if first:
            self._logged_at = now
        self.value = open_now
        self.until = now + max(0.1, backoff_max) * (0.5 + random.random() / 2)
        return first

    def tick(self, now: float, tick: float) -> float:
        """How long the background task may sleep: until the ceiling lifts."""
        return min(tick, max(0.01, self.until - now)) if self.until else tick
