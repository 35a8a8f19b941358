"""The registry of Django pools, and the parsing of ``OPTIONS["pool"]`` (any database).

One pool per (process, alias) at a time, for the settings that shape its sessions: when they
change (a rotated password or token, another TIME_ZONE, NAME renamed by the test runner), the
next connect makes a new pool and the superseded one is retired (idle connections closed at
once, lent ones as they come back, its background thread ended). Pools reset themselves in a
forked child (see :mod:`connguard.forking`), so the registry itself needs no fork handling.
"""

from __future__ import annotations

import logging
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
    "driver": "the driver is the one Django's ENGINE uses (psycopg 3 when installed, else "
    "psycopg2; mysqlclient, or PyMySQL installed as MySQLdb)",
    "connection_class": "use OPTIONS['cursor_factory'] / Django settings instead",
}
SERVER_POOLERS = (None, "session", "transaction", "statement")
#: ``OPTIONS["pool"]["reset"]`` by name: the statement run on every connection given back
#: (PostgreSQL only: MySQL has no statement that resets a session)
NAMED_RESETS = {"discard": "DISCARD ALL"}

logger = logging.getLogger("connguard.django")


class PoolOptionsError(ImproperlyConfigured, CommandError):
    """Bad ``OPTIONS["pool"]``: ``ImproperlyConfigured`` everywhere, and a ``CommandError``
    so that a management command using the alias ends with the message on one line, not a
    traceback (``manage.py check`` reports it as ``connguard.E001``)."""


_lock = threading.Lock()
# alias -> (session key, pool, database name): the pool for the alias's current settings
_pools: dict[str, tuple[Any, ConnectionPool, Any]] = {}


# connection parameter (as Driver.access_denied names it) -> the Django setting holding it
_CONNECTION_SETTINGS = {"password": "PASSWORD", "user": "USER", "dbname": "NAME"}


def connection_setting(alias: str, key: str) -> str | None:
    """The Django setting that holds connection parameter *key* of *alias*, as an
    ``AccessDenied`` message names it; None for a parameter Django has no setting for."""
    setting = _CONNECTION_SETTINGS.get(key)
    if setting is None:
        return None
    also = " (and USER)" if key == "password" else ""
    return f"DATABASES[{alias!r}][{setting!r}]{also}"


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
    return resolve_named(alias, dict(raw), str(settings_dict.get("ENGINE", "")))


def resolve_named(alias: str, options: dict[str, Any], engine: str = "") -> dict[str, Any]:
    """Replace a reset given by name (``"reset": "discard"``) by the callable that runs it."""
    reset = options.get("reset")
    if isinstance(reset, str):
        if engine.endswith(".mysql"):
            raise PoolOptionsError(
                f"{option_path(alias, 'reset')}={reset!r}: named resets are PostgreSQL's "
                "(DISCARD ALL); on MySQL give a callable taking the connection, or leave it "
                "out (every connection given back is rolled back, or discarded when its "
                "state is unknown)"
            )
        sql = NAMED_RESETS.get(reset)
        if sql is None:
            raise ImproperlyConfigured(
                f"{option_path(alias, 'reset')}={reset!r}: expected a callable taking the "
                f"connection, or one of {', '.join(repr(n) for n in NAMED_RESETS)} "
                "(DISCARD ALL: a clean server session at every checkout)"
            )
        options["reset"] = run_on_checkin(sql)
    return options


def run_on_checkin(sql: str) -> Callable[[Any], None]:
    """A reset callable running *sql* in autocommit (DISCARD ALL refuses a transaction)."""

    def reset(conn: Any) -> None:
        conn.autocommit = True  # Django sets its own mode again at the next checkout
        cursor = conn.cursor()
        try:
            cursor.execute(sql)
        finally:
            cursor.close()

    reset.__qualname__ = reset.__name__ = f"reset_{sql.split()[0].lower()}"
    return reset


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


def session_key(conn_params: Mapping[str, Any], **settings: Any) -> tuple[Any, ...]:
    """Everything that shapes a server session made for these settings: every connection
    parameter (the cursor class and the secret included: a rotated password makes a new pool
    and retires the old one) and the *settings* the backend applies to a new session (time
    zone, role, isolation level, pool options...). Two wrappers share connections only when
    their keys are equal. Django's adapters ``context`` is new at every connect and follows
    from the time zone settings, so it is left out.

    Compared with ``==`` only (values need not be hashable). Nested dicts and lists are
    copied (:func:`snapshot`), so that one changed in place later (``OPTIONS["ssl"]["ca"]``)
    no longer compares equal. Built only when the settings changed (the wrapper remembers
    what its last key was built from: ``PooledDatabaseWrapperMixin._cg_pool_now``)."""
    return (
        *[(k, snapshot(v)) for k, v in conn_params.items() if k != "context"],
        *[(f"settings.{k}", snapshot(v)) for k, v in settings.items()],
    )


def snapshot(value: Any) -> Any:
    """*value* with its dicts and lists copied (at every depth), for a later ``==`` to tell
    whether it was changed in place; anything else (strings, numbers, classes, callables)
    as it is."""
    if isinstance(value, dict):
        return {k: snapshot(v) for k, v in value.items()}
    if isinstance(value, list):
        return [snapshot(v) for v in value]
    return value


def _changed(old: tuple[Any, ...], new: tuple[Any, ...]) -> str:
    """The names whose values differ between two session keys (never the values)."""
    before, after = dict(old), dict(new)
    names = [n for n in {**before, **after} if before.get(n, _changed) != after.get(n, _changed)]
    return ", ".join(sorted(n.removeprefix("settings.") for n in names)) or "?"


def get_pool(
    alias: str,
    key: tuple[Any, ...],
    factory: Callable[[], ConnectionPool],
    dbname: Any = None,
) -> ConnectionPool:
    """The pool of *alias* for the session settings *key*, made by *factory* if new.

    A new key supersedes the alias's previous pool, which is retired: its idle connections
    are closed now, lent ones when they come back (never under their holder), and its
    background thread ends.
    """
    found = _pools.get(alias)
    if found is not None and found[0] == key and not found[1].closed:
        return found[1]
    with _lock:
        found = _pools.get(alias)
        if found is not None and found[0] == key and not found[1].closed:
            return found[1]
        pool = factory()
        _pools[alias] = (key, pool, dbname)
    if found is not None and not found[1].closed:
        logger.info(
            "database %r: settings changed (%s): retiring the pool made for the old ones "
            "(idle connections closed now, lent ones when they come back)",
            alias, _changed(found[0], key),
        )  # fmt: skip
        # off the request's thread: closing joins the pool's background thread (and may wait
        # for lent connections to come back)
        threading.Thread(
            target=found[1].close, name=f"connguard-retire-{found[1].name}", daemon=True
        ).start()
    return pool


def close_pools(alias: str | None = None, dbname: str | None = None) -> int:
    """Close pools (all, one alias's, or those connected to *dbname*); returns how many.

    Lent connections are closed as they come back. Used before a test database is dropped
    and by ``connections.close_all()``-style teardown.
    """
    with _lock:
        doomed = [
            (name, pool)
            for name, (_, pool, db) in _pools.items()
            if (alias is None or name == alias) and (dbname is None or db == dbname)
        ]
        for name, _ in doomed:
            del _pools[name]
    for _, pool in doomed:
        pool.close()
    return len(doomed)


def all_pools() -> list[ConnectionPool]:
    with _lock:
        return [pool for _, pool, _ in _pools.values() if not pool.closed]
