"""The one parser and validator of pool settings: keyword arguments in, frozen PoolConfig out.

Accepts every keyword of ``psycopg_pool.ConnectionPool`` (so switching is a one-line change)
plus connguard's own. A bad value is rejected with a message that names the setting (as the
caller spells it, e.g. ``DATABASES['default']['OPTIONS']['pool']['max_size']``), the value
and the fix. Nothing is silently corrected.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

from connguard.errors import ConfigError

#: keywords of psycopg_pool.ConnectionPool that connguard accepts with the same meaning
PSYCOPG_POOL_KEYS = frozenset(
    {
        "conninfo", "connection_class", "kwargs", "min_size", "max_size", "open",
        "configure", "check", "reset", "name", "close_returns", "timeout", "max_waiting",
        "max_lifetime", "max_idle", "reconnect_timeout", "reconnect_failed", "num_workers",
    }
)  # fmt: skip


@dataclasses.dataclass(frozen=True, slots=True)
class PoolConfig:
    """Validated pool settings. Durations are float seconds; ``0`` switches a feature off."""

    name: str = "pool"
    conninfo: str = ""
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    driver: Any = "psycopg"
    connect: Callable[..., Any] | None = None
    connection_class: type | None = None
    min_size: int = 0
    max_size: int = 10
    timeout: float = 30.0
    max_waiting: int = 0
    max_lifetime: float = 3600.0
    lifetime_jitter: float = 0.1
    max_idle: float = 600.0
    ping_interval: float = 2.0
    ping_timeout: float = 5.0
    keepalive_interval: float = 0.0
    leak_threshold: float = 0.0
    reconnect_timeout: float = 300.0
    backoff_initial: float = 0.05
    backoff_max: float = 0.5
    connect_timeout: float = 10.0
    num_workers: int = 1
    require_primary: bool | None = None
    failover_timeout: float = 5.0
    open: bool | None = None
    configure: Callable[[Any], None] | None = None
    check: Callable[[Any], None] | None = None
    reset: Callable[[Any], None] | None = None
    reconnect_failed: Callable[[Any], None] | None = None

    def masked(self) -> dict[str, Any]:
        """The settings with secrets hidden, for logs and diagnostics."""
        out: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "conninfo":
                value = mask_conninfo(value)
            elif field.name == "kwargs":
                value = {k: ("***" if k in _SECRET_KEYS else v) for k, v in value.items()}
            elif callable(value):
                value = getattr(value, "__qualname__", repr(value))
            out[field.name] = value
        return out


_SECRET_KEYS = {"password", "passwd", "passfile", "sslpassword", "sslkey"}
_FIELDS = {f.name: f for f in dataclasses.fields(PoolConfig)}
_DURATIONS = {
    "timeout", "max_lifetime", "max_idle", "ping_interval", "ping_timeout",
    "keepalive_interval", "leak_threshold", "reconnect_timeout", "backoff_initial",
    "backoff_max", "connect_timeout", "failover_timeout",
}  # fmt: skip
_CALLABLES = {"connect", "configure", "check", "reset", "reconnect_failed"}
_POSITIVE_DURATIONS = {
    "timeout",
    "ping_timeout",
    "backoff_initial",
    "backoff_max",
    "connect_timeout",
}


def mask_conninfo(conninfo: str) -> str:
    """Hide the password in a libpq keyword string or URL."""
    import re

    masked = re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1***", conninfo)
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", masked)


def build_config(
    options: Mapping[str, Any],
    *,
    where: Callable[[str], str] = lambda key: key,
    extra_keys: frozenset[str] = frozenset(),
    refused_keys: frozenset[str] = frozenset(),
) -> PoolConfig:
    """Validate *options* and return a :class:`PoolConfig`.

    *where* turns a key into the name the user wrote it under, for error messages.
    *extra_keys* are accepted and ignored here (a caller's own keys); *refused_keys* are
    keys the caller refuses itself, left out of the known options an unknown key lists.
    """
    values: dict[str, Any] = {}
    for key, value in options.items():
        if key in extra_keys:
            continue
        if key == "close_returns":
            if value:
                raise ConfigError(
                    f"{where(key)}=True is not supported: connguard hands out the driver's own "
                    "connection objects, whose close() really closes. Return connections with "
                    "putconn() or the pool.connection() context manager, and drop this option."
                )
            continue
        if key not in _FIELDS:
            # close_returns is accepted (False only) so that psycopg_pool settings carry
            # over; not offered: it does nothing
            offered = (set(_FIELDS) | extra_keys) - refused_keys
            known = ", ".join(sorted(offered))
            hint = _close_match(key, offered)
            raise ConfigError(
                f"{where(key)}: unknown pool option {key!r}"
                + (f" (did you mean {hint!r}?)" if hint else "")
                + f". Known options: {known}."
            )
        values[key] = _check(key, value, where)
    if values.get("max_size") is None:
        values.pop("max_size", None)
        min_size = values.get("min_size", 0)
        if min_size:
            values["max_size"] = min_size
    config = PoolConfig(**values)
    if config.min_size > config.max_size:
        raise ConfigError(
            f"{where('min_size')}={config.min_size} is larger than "
            f"{where('max_size')}={config.max_size}: a pool cannot keep more idle connections "
            f"than it may open. Lower min_size or raise max_size."
        )
    return config


def _check(key: str, value: Any, where: Callable[[str], str]) -> Any:
    if key in _DURATIONS:
        if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
            raise ConfigError(
                f"{where(key)}={value!r}: expected a number of seconds (float), e.g. 30.0"
            )
        if value < 0 or (key in _POSITIVE_DURATIONS and value == 0):
            what = "greater than 0" if key in _POSITIVE_DURATIONS else "0 (off) or more"
            raise ConfigError(f"{where(key)}={value!r}: must be {what} seconds")
        if math.isinf(value):
            fix = "a large number" if key in _POSITIVE_DURATIONS else "0 to switch it off"
            raise ConfigError(f"{where(key)}={value!r}: must be finite; use {fix}")
        return float(value)
    if key == "driver":
        from connguard.drivers.base import Driver

        known = ("psycopg", "psycopg3", "psycopg2", "mysqlclient", "pymysql")
        if isinstance(value, Driver) or value in known:
            return value
        raise ConfigError(
            f"{where(key)}={value!r}: unknown driver; use 'psycopg' (psycopg 3), 'psycopg2', "
            "'mysqlclient', 'pymysql' or a connguard.drivers.Driver instance"
        )
    if key in ("min_size", "max_size", "max_waiting", "num_workers"):
        if key == "max_size" and value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where(key)}={value!r}: expected a whole number, e.g. 10")
        low = 1 if key in ("max_size", "num_workers") else 0
        if value < low:
            raise ConfigError(f"{where(key)}={value!r}: must be {low} or more")
        return value
    if key == "lifetime_jitter":
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
            raise ConfigError(
                f"{where(key)}={value!r}: expected a fraction from 0 (off) to below 1, e.g. 0.1"
            )
        return float(value)
    if key in _CALLABLES:
        if value is not None and not callable(value):
            raise ConfigError(f"{where(key)}={value!r}: expected a callable or None")
        return value
    if key in ("conninfo", "name"):
        if not isinstance(value, str):
            raise ConfigError(f"{where(key)}={value!r}: expected a string")
        return value
    if key == "kwargs":
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where(key)}={value!r}: expected a dict of connect() keywords")
        return dict(value)
    if key == "require_primary" and value is not None and not isinstance(value, bool):
        raise ConfigError(
            f"{where(key)}={value!r}: expected True (every connection must be on a writable "
            "primary), False, or None (True when target_session_attrs is read-write or primary)"
        )
    if key == "open" and value is not None and not isinstance(value, bool):
        raise ConfigError(f"{where(key)}={value!r}: expected True, False or None")
    return value


def _close_match(key: str, names: set[str]) -> str | None:
    import difflib

    found = difflib.get_close_matches(key, sorted(names), n=1)
    return found[0] if found else None
