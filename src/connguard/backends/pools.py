"""Django glue that knows nothing of a particular database: pool settings and the registry.

One pool per (process, alias, connection parameters). Pools reset themselves in a forked
child (see :mod:`connguard.forking`), so the registry itself needs no fork handling.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import CommandError

from connguard.config import PoolConfig, build_config
from connguard.errors import ConfigError
from connguard.pool import ConnectionPool

#: connguard keys that only the Django backend understands
DJANGO_KEYS = frozenset({"server_pooler"})
#: keys the backend sets itself; a user value would be silently overridden, so refuse it
RESERVED_KEYS = {
    "kwargs": "put connection parameters in DATABASES[...] (HOST, PORT, OPTIONS), not in pool",
    "conninfo": "put connection parameters in DATABASES[...] (HOST, PORT, OPTIONS), not in pool",
    "connect": "the backend opens connections itself with Django's parameters",
    "configure": "the backend configures connections (time zone, role) itself",
    "open": "the backend opens the pool on first use",
    "driver": "the driver is the one Django uses (psycopg 3 when installed, else psycopg2)",
    "connection_class": "use OPTIONS['cursor_factory'] / Django settings instead",
}
SERVER_POOLERS = (None, "session", "transaction", "statement")


class PoolOptionsError(ImproperlyConfigured, CommandError):
    """Bad ``OPTIONS["pool"]``: ``ImproperlyConfigured`` everywhere, and a ``CommandError``
    so that a management command using the alias ends with the message on one line, not a
    traceback (``manage.py check`` reports it as ``connguard.E001``)."""


_lock = threading.Lock()
_pools: dict[tuple[str, Any], tuple[ConnectionPool, Any]] = {}  # (alias, params) -> pool, dbname


def option_path(alias: str, key: str | None = None) -> str:
    path = f"DATABASES[{alias!r}]['OPTIONS']['pool']"
    return path if key is None else f"{path}[{key!r}]"


def pool_options(alias: str, settings_dict: Mapping[str, Any]) -> dict[str, Any] | None:
    """The user's ``OPTIONS["pool"]`` as a dict, or None when pooling is off (``False``).

    Absent means on, with defaults: changing ENGINE is the only line a user has to change.
    """
    raw = settings_dict.get("OPTIONS", {}).get("pool", True)
    if raw is False or raw is None:
        return None
    if raw is True:
        return {}
    if not isinstance(raw, Mapping):
        raise PoolOptionsError(
            f"{option_path(alias)}={raw!r}: expected True, False or a dict of pool options, "
            "e.g. {'min_size': 2, 'max_size': 8, 'timeout': 10}"
        )
    return dict(raw)


def validate(alias: str, settings_dict: Mapping[str, Any]) -> PoolConfig | None:
    """Parse and check the pool options of one alias; PoolOptionsError when bad."""
    options = pool_options(alias, settings_dict)
    if options is None:
        return None
    for key, fix in RESERVED_KEYS.items():
        if key in options:
            raise PoolOptionsError(f"{option_path(alias, key)} cannot be set here: {fix}.")
    pooler = options.get("server_pooler")
    if pooler not in SERVER_POOLERS:
        raise PoolOptionsError(
            f"{option_path(alias, 'server_pooler')}={pooler!r}: expected one of "
            f"{', '.join(repr(p) for p in SERVER_POOLERS)} (the pool mode of a PgBouncer or "
            "similar pooler between Django and PostgreSQL, None when there is none)"
        )
    options.setdefault("name", alias)
    try:
        return build_config(
            options,
            where=lambda key: option_path(alias, key),
            extra_keys=DJANGO_KEYS,
            refused_keys=frozenset(RESERVED_KEYS),
        )
    except ConfigError as exc:
        raise PoolOptionsError(str(exc)) from exc


_NOT_WHERE = ("context", "cursor_factory")


def params_key(conn_params: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters that decide where connections go (see :func:`fingerprint`), for a
    cheap equality test against the last checkout's."""
    return {k: v for k, v in conn_params.items() if k not in _NOT_WHERE}


def fingerprint(conn_params: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """What makes two sets of connection parameters reach the same server session type.

    Django builds a fresh adapters ``context`` (and passes a cursor class) at every connect;
    they do not change where connections go, so they are left out.
    """
    return tuple(sorted((k, repr(v)) for k, v in conn_params.items() if k not in _NOT_WHERE))


def get_pool(
    alias: str, conn_params: Mapping[str, Any], factory: Callable[[], ConnectionPool]
) -> ConnectionPool:
    """The pool of *alias* for these connection parameters, made by *factory* if new."""
    key = (alias, fingerprint(conn_params))
    found = _pools.get(key)
    if found is not None and not found[0].closed:
        return found[0]
    with _lock:
        found = _pools.get(key)
        if found is None or found[0].closed:
            found = _pools[key] = (factory(), conn_params.get("dbname"))
    return found[0]


def close_pools(alias: str | None = None, dbname: str | None = None) -> int:
    """Close pools (all, one alias's, or those connected to *dbname*); returns how many.

    Lent connections are closed as they come back. Used before a test database is dropped
    and by ``connections.close_all()``-style teardown.
    """
    with _lock:
        doomed = [
            (key, pool)
            for key, (pool, db) in _pools.items()
            if (alias is None or key[0] == alias) and (dbname is None or db == dbname)
        ]
        for key, _ in doomed:
            del _pools[key]
    for _, pool in doomed:
        pool.close()
    return len(doomed)


def all_pools() -> list[ConnectionPool]:
    with _lock:
        return [pool for pool, _ in _pools.values() if not pool.closed]
