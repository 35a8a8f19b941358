"""How the doctor writes durations, counts and errors for people."""

from __future__ import annotations


def dur(seconds: float | None) -> str:
    """``off`` for 0, ``never`` for no bound, else ``1.5 s`` / ``3600 s`` / ``250 ms``."""
    if seconds is None or seconds == float("inf"):
        return "never"
    if not seconds:
        return "off"
    if seconds < 1:
        return f"{seconds * 1000:g} ms"
    return f"{seconds:g} s"


def about(seconds: float) -> str:
    """A long duration for people: ``2 h 11 min``."""
    hours, rest = divmod(int(seconds), 3600)
    minutes = rest // 60
    if not hours:
        return f"{minutes} min" if minutes else f"{int(seconds)} s"
    return f"{hours} h {minutes} min" if minutes else f"{hours} h"


def plural(n: int, word: str, plural: str | None = None) -> str:
    return f"{n} {word if n == 1 else (plural or word + 's')}"


def one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
