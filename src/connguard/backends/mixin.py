"""The Django glue that knows no database: a mixin over Django's own ``DatabaseWrapper``.

``class DatabaseWrapper(PooledDatabaseWrapperMixin, <Django's DatabaseWrapper>)`` does
everything Django's backend always did; the mixin only changes where connections come from
and where they go:

- ``get_new_connection`` -> ``pool.getconn()`` (a live connection: checked at checkout);
  ``_close`` -> ``pool.putconn()`` (rolled back, or discarded when broken; never raises).
- ``close_if_unusable_or_obsolete`` (Django's end-of-request hook, ``close_old_connections``)
  hands a pooled connection back after every request and Celery task, as ``connection.close()``
  does; never in the middle of ``atomic()``.
- ``wrap_database_errors`` (every database call Django makes goes through it) tells the pool
  about each driver error as it is raised: one that says the server changed role or is going
  away (a failover) invalidates the pool, so the next checkout in this process checks its
  connection's role instead of failing again (see docs/failover.md). The error is re-raised.
- ``pool`` is the :class:`~connguard.pool.ConnectionPool` the next connection comes from
  (``get_stats()``, ``check()``, ``close()``... as in psycopg_pool), None when not pooled.
  Whether and where to pool is decided at each connect from the settings as they are then.
- ``ensure_connection`` (called before every statement) makes a connection kept outside
  requests (management commands, workers, threads) safe to use: one inherited across
  ``fork()`` is dropped without a byte sent to the server, and one that sat idle past the ping
  interval, or on which the server already hung up, is checked and transparently replaced —
  only where nothing can be lost: outside ``atomic()``, in autocommit, no transaction open.
- Django's session set-up (``init_connection_state``) runs once per server session, not at
  every checkout (at every checkout when a ``reset`` callable may undo it); a call of its own
  runs it again, as on the stock backend.

What differs per database is a few hooks a thin subclass fills in (``_cg_driver_name``,
``_cg_session_settings``, ``_cg_connect_params``, ``_cg_pool_kwargs``,
``_cg_configure_session``, ``dbname_param``): see backends/postgresql and backends/mysql.

``OPTIONS["pool"]`` takes the keys of Django's built-in pool (psycopg_pool's) plus
connguard's; absent means pooled with defaults, ``False`` means no pool (connections are
still fork-safe and health-checked).
"""

from __future__ import annotations

import copy
import logging
import os
import weakref
from collections.abc import Mapping
from time import monotonic
from typing import TYPE_CHECKING, Any, NamedTuple

from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.db.backends.base.base import NO_DB_ALIAS, BaseDatabaseWrapper
from django.db.utils import DEFAULT_DB_ALIAS, DatabaseErrorWrapper
from django.utils.functional import cached_property

from connguard import forking
from connguard.backends import parent as _parent  # noqa: F401 - see its docstring
from connguard.backends import registry
from connguard.config import PoolConfig
from connguard.drivers import Driver, get_driver
from connguard.drivers.base import TX_IDLE, TX_UNKNOWN
from connguard.entry import ALWAYS_READABLE
from connguard.pool import ConnectionPool

logger = logging.getLogger("connguard.django")

_NEVER = float("inf")

#: Counts Django's ``setting_changed`` signals (``override_settings``, pytest-django's
#: ``settings`` fixture): a session also depends on settings outside ``DATABASES``
#: (``USE_TZ``, ``TIME_ZONE``), so any change makes the next connect of every wrapper
#: choose its pool again (see ``_cg_pool_now``).
_settings_version = 0


def _on_setting_changed(**_: Any) -> None:
    global _settings_version
    _settings_version += 1


setting_changed.connect(_on_setting_changed, weak=False, dispatch_uid="connguard.mixin")

# Django's own, as imported (before any test patches it): see ensure_connection()
_django_ensure_connection = BaseDatabaseWrapper.ensure_connection

# mypy sees the mixin as what it is mixed into
if TYPE_CHECKING:
    _Base = BaseDatabaseWrapper
else:
    _Base = object


class PooledDatabaseWrapperMixin(_Base):
    """Put before Django's ``DatabaseWrapper`` in the bases of a connguard backend."""

    #: the key of the database name in ``get_connection_params()`` (the registry closes the
    #: pools on a database before the test runner drops it)
    dbname_param = "dbname"

    def __init__(self, settings_dict: dict[str, Any], alias: str = DEFAULT_DB_ALIAS) -> None:
        super().__init__(settings_dict, alias)
        # (OPTIONS["pool"] as it was parsed, its PoolConfig): parsed again when it changes.
        # Bad pool options are not raised here: Django makes wrappers while it imports the
        # models, so every command would die with a traceback; manage.py check reports them
        # (connguard.E001) and connecting raises them (connguard_config parses them again).
        self._cg_config: tuple[Any, PoolConfig | None] | None = None
        self._cg_ping_interval, self._cg_ping_timeout = 2.0, 5.0
        self._cg_ensuring = False
        self.connguard_pool: ConnectionPool | None = None  # the pool the connection came from
        self._cg_driver: Driver = get_driver(self._cg_driver_name())
        self._cg_forks = forking.generation
        self._cg_fd = -1
        self._cg_poller: Any = ALWAYS_READABLE
        self._cg_last_used = 0.0
        self._cg_connecting = False
        # the pool of the last checkout and what it was chosen from: the next checkout whose
        # settings and parameters are the same takes it without building the session key
        # again nor asking the registry (_cg_pool_now)
        self._cg_pool_cache: _PoolChoice | None = None

    # -- what differs per database (overridden by the thin backends) -----------------------

    def _cg_driver_name(self) -> str:
        """The connguard driver for the DB-API module Django uses."""
        raise NotImplementedError

    def _cg_session_settings(self) -> dict[str, Any]:
        """Settings besides the connection parameters that shape a new server session."""
        return {}

    def _cg_connect_params(
        self, params: dict[str, Any], pool_params: dict[str, Any]
    ) -> dict[str, Any]:
        """Django's connect() keywords completed with the pool's (connect bound, keepalive)."""
        return params

    def _cg_pool_kwargs(self, conn_params: dict[str, Any]) -> dict[str, Any] | None:
        """Connection parameters the pool itself must know (e.g. the role to require)."""
        return None

    def _cg_configure_session(self) -> None:
        """Django's session set-up on a new server session."""
        super().init_connection_state()

    # -- settings ------------------------------------------------------------------------

    @property
    def connguard_config(self) -> PoolConfig | None:
        """The pool settings in effect now, None when not pooled: ``OPTIONS["pool"]`` is
        read at each connect, so a change after the wrapper was built takes effect."""
        if self.alias == NO_DB_ALIAS:
            return None
        raw = self.settings_dict.get("OPTIONS", {}).get("pool", True)
        cached = self._cg_config
        if cached is not None and cached[0] == raw:
            return cached[1]
        config = registry.validate(self.alias, self.settings_dict)
        self._cg_config = (copy.copy(raw), config)
        self._cg_ping_interval = (config.ping_interval if config else 2.0) or _NEVER
        self._cg_ping_timeout = config.ping_timeout if config else 5.0
        return config

    @property
    def connguard_config_error(self) -> registry.PoolOptionsError | None:
        """What is wrong with ``OPTIONS["pool"]`` now (for the doctor), None when it is valid."""
        try:
            self.connguard_config  # noqa: B018 - parses and validates
        except registry.PoolOptionsError as exc:
            return exc
        return None

    # Django's built-in pool (5.1+, PostgreSQL) stays out of the way: each code path of
    # Django's that asks `self.pool` is overridden here (get_new_connection, _close,
    # init_connection_state, close_if_health_check_failed, close_pool), and the connector
    # that opens the pool's connections is a wrapper with the pool off.
    @property
    def pool(self) -> ConnectionPool | None:
        """The pool the next connection of this wrapper comes from (made if new), with the
        parts of psycopg_pool's API that code uses (``get_stats()``, ``check()``,
        ``close()``, ``resize()``, ``wait()``...); None when ``OPTIONS["pool"]`` is False."""
        return self._cg_pool_now(self.get_connection_params())

    def close_pool(self) -> None:
        """Close this alias's pools (Django calls it when TIME_ZONE changes, e.g. in tests)."""
        registry.close_pools(alias=self.alias)

    #: whether Django's get_connection_params() would pass OPTIONS["pool"] on to connect()
    #: (or refuse it): Django's PostgreSQL backend takes it out itself on 5.1+ with psycopg 3
    _cg_hide_pool = True

    def get_connection_params(self) -> dict[str, Any]:
        options = self.settings_dict["OPTIONS"]
        if not self._cg_hide_pool or "pool" not in options:
            return super().get_connection_params()
        saved = self.settings_dict
        self.settings_dict = {
            **saved,
            "OPTIONS": {k: v for k, v in options.items() if k != "pool"},
        }
        try:
            return super().get_connection_params()
        finally:
            self.settings_dict = saved

    @cached_property
    def wrap_database_errors(self) -> DatabaseErrorWrapper:
        return _ReportingErrorWrapper(self)

    def _cg_report_error(self, exc: BaseException) -> None:
        """A driver error was raised on this alias: let the pool judge it (a failover?)."""
        pool = self.connguard_pool
        if pool is None and self._cg_pool_cache is not None:
            pool = self._cg_pool_cache.pool  # the connection is gone already
        if pool is not None and isinstance(exc, self.Database.Error):  # type: ignore[attr-defined]
            try:
                pool.report_error(exc)
            except Exception:  # never mask the application's error
                logger.exception("database %r: reporting an error to the pool failed", self.alias)

    # -- where connections come from ---------------------------------------------------

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        # Everything that can be wrong with the settings is found before a checkout, so a
        # configuration error never leaks a connection nor reads as "database down".
        pool = self._cg_pool_now(conn_params)
        if pool is None:
            conn = self._cg_connect_unpooled(conn_params)
            self._cg_track(conn, None)
            return conn
        conn = pool.getconn()
        try:
            self._cg_track(conn, pool)
        except BaseException:
            pool.putconn(conn)
            raise
        self.connguard_pool = pool
        return conn

    def _cg_connect_unpooled(self, conn_params: dict[str, Any]) -> Any:
        """A connection of Django's own when ``OPTIONS["pool"]`` is False (a backend may
        take out, then apply, what its driver's connect() refuses)."""
        return super().get_new_connection(conn_params)

    def _cg_refuse_persistent(self) -> None:
        """CONN_MAX_AGE with an explicit pool is refused when the pool is made, as Django's
        own pool does (and as there, not when it is changed on a wrapper whose pool exists)."""
        max_age = self.settings_dict.get("CONN_MAX_AGE", 0)
        if max_age != 0 and self.settings_dict["OPTIONS"].get("pool"):
            raise ImproperlyConfigured(
                f"DATABASES[{self.alias!r}]['CONN_MAX_AGE']={max_age!r} with "
                f"{registry.option_path(self.alias)}: Pooling doesn't support persistent "
                "connections. Remove CONN_MAX_AGE (or set 0): a pooled connection goes back "
                "to the pool at the end of each request, and how long a server connection "
                f"lives is {registry.option_path(self.alias, 'max_lifetime')}."
            )

    def _cg_pool_now(self, conn_params: dict[str, Any]) -> ConnectionPool | None:
        """The pool for the settings as they are now (made if new), None when not pooled.

        The settings are read at every connect (a rotated PASSWORD, a changed OPTIONS take
        effect without a restart), but the pool is only chosen again when something it was
        chosen from may have changed since the last checkout: the connection parameters
        Django just built (nested dicts and lists by value), ``settings_dict``, its
        ``OPTIONS`` and ``OPTIONS["pool"]`` (each compared with a copy taken then, so a value
        changed in place counts), Django's ``setting_changed`` count (``USE_TZ``,
        ``TIME_ZONE``), the fork generation, the pool still open. All the same: the last
        checkout's pool, for a few dict comparisons instead of parsing, validating and
        building the session key again."""
        cached = self._cg_pool_cache
        settings_dict = self.settings_dict
        options = settings_dict["OPTIONS"]
        if (
            cached is not None
            and cached.params == conn_params
            and cached.settings == settings_dict
            and cached.options == options
            and cached.pool_options == options.get("pool", True)
            and cached.version == _settings_version
            and cached.generation == forking.generation
            and not cached.pool.closed
        ):
            return cached.pool
        config = self.connguard_config
        if config is None:
            self._cg_pool_cache = None
            return None
        return self._cg_pool_for(conn_params, config)

    def _cg_pool_for(self, conn_params: dict[str, Any], config: PoolConfig) -> ConnectionPool:
        """The pool for the settings as they are now: a connection is only ever lent to a
        wrapper whose settings would have configured its session the same way."""
        # what the choice is made from, copied before it is read (a change meanwhile is seen
        # at the next connect)
        version, settings_dict = _settings_version, dict(self.settings_dict)
        options = dict(settings_dict["OPTIONS"])
        raw = options.get("pool", True)
        pool_options = registry.snapshot(dict(raw) if isinstance(raw, Mapping) else raw)
        key = registry.session_key(
            conn_params,
            **self._cg_session_settings(),
            isolation_level=options.get("isolation_level"),
            CONN_HEALTH_CHECKS=self.settings_dict.get("CONN_HEALTH_CHECKS"),
            pool=options.get("pool"),
        )
        params = registry.snapshot(conn_params)
        cached = self._cg_pool_cache
        if (
            cached is not None
            and cached.generation == forking.generation
            and cached.key == key
            and not cached.pool.closed
        ):
            pool = cached.pool
        else:
            pool = registry.get_pool(
                self.alias,
                key,
                lambda: self._make_pool(config, conn_params),
                conn_params.get(self.dbname_param),
            )
        self._cg_pool_cache = _PoolChoice(
            forking.generation, key, pool, params, settings_dict, options, pool_options, version
        )
        return pool

    def _make_pool(self, config: PoolConfig, conn_params: dict[str, Any]) -> ConnectionPool:
        self._cg_refuse_persistent()
        # opens the pool's connections through Django's own get_new_connection(): a wrapper
        # with these settings and the pool off (so that Django's code takes its direct path)
        connector = type(self)(
            {**self.settings_dict, "OPTIONS": {**self.settings_dict["OPTIONS"], "pool": False}},
            self.alias,
        )
        django_connect = super(PooledDatabaseWrapperMixin, connector).get_new_connection
        options = registry.pool_options(self.alias, self.settings_dict) or {}
        options.pop("server_pooler", None)
        options.setdefault("name", self.alias)
        if self.settings_dict.get("CONN_HEALTH_CHECKS") and "check" not in options:
            # Django's meaning: check before use. With a pool: a ping at every checkout.
            driver, timeout = self._cg_driver, config.ping_timeout
            options["check"] = lambda conn: driver.ping(conn, timeout)

        # Django's own (non-pooled) connect with the same parameters, completed with the
        # pool's bound on this attempt (its connect_timeout, or less when the caller's wait
        # ends sooner) and the backend's additions
        def connect(_conninfo: str, **kw: Any) -> Any:
            return django_connect(connector._cg_connect_params(dict(conn_params), kw))

        kwargs = self._cg_pool_kwargs(conn_params)
        if kwargs is not None:
            options["kwargs"] = kwargs
        pool = ConnectionPool(
            driver=self._cg_driver,
            connect=connect,
            _where=lambda key: registry.option_path(self.alias, key),
            _setting=lambda key: registry.connection_setting(self.alias, key),
            **options,
        )
        # connections Django configured already (time zone, role, isolation level): as
        # Django's own pool, once per server session, not at every checkout (close_pool()
        # starts over on a change); at every checkout when a reset callable may undo it
        if config.reset is None:
            pool.django_configured = weakref.WeakSet()  # type: ignore[attr-defined]
        return pool

    def _cg_track(self, conn: Any, pool: ConnectionPool | None) -> None:
        self._cg_forks = forking.generation
        known = pool.socket_of(conn) if pool is not None else None
        if known is not None:  # the pool's own poller for this connection
            self._cg_fd, self._cg_poller = known
        else:
            self._cg_fd = self._cg_driver.fileno(conn)
            poller = self._cg_driver.make_poller(self._cg_fd)
            self._cg_poller = poller if poller is not None else ALWAYS_READABLE
        self._cg_last_used = monotonic()

    def connect(self) -> None:
        # Django's connect() calls ensure_connection() (through set_autocommit) on the
        # connection it just got: the checkout checked it moments ago.
        self._cg_connecting = True
        try:
            super().connect()
        finally:
            self._cg_connecting = False

    def init_connection_state(self) -> None:
        conn = self.connection
        configured = getattr(self.connguard_pool, "django_configured", None)
        # skipped only at connect(): a call of its own (code that re-applies the session
        # settings) runs Django's set-up again, as on the stock backend
        if (
            self._cg_connecting
            and conn is not None
            and configured is not None
            and conn in configured
        ):
            BaseDatabaseWrapper.init_connection_state(self)  # the server version check, once
            return
        self._cg_configure_session()
        if conn is not None and configured is not None:
            configured.add(conn)

    def is_usable(self) -> bool:
        # a connection given back to the pool is no longer held (Django's MySQL is_usable()
        # would call ping() on None after _close())
        if self.connection is None:
            return False
        return bool(super().is_usable())

    def close_if_unusable_or_obsolete(self) -> None:
        if self.connguard_pool is not None and self.connection is not None:
            # End of a request or task: a pooled connection always goes back, whatever
            # CONN_MAX_AGE says. The pool rolls it back or discards it, and checks it at the
            # next checkout (the stock path would check it here first, for nothing).
            self.health_check_done = False
            self.close()
            return
        super().close_if_unusable_or_obsolete()

    def close_if_health_check_failed(self) -> None:
        if self.connguard_pool is not None:
            return  # checked at checkout, and before each statement by ensure_connection()
        super().close_if_health_check_failed()

    # -- where connections go ------------------------------------------------------------

    def _close(self) -> None:
        conn = self.connection
        if conn is None:
            return
        pool, self.connguard_pool = self.connguard_pool, None
        try:
            if pool is not None:
                pool.putconn(conn)  # rolls back, or discards a broken / inherited one
            elif self._cg_forks != forking.generation:
                self._cg_driver.abandon(conn, self._cg_fd)  # not ours to close
            else:
                conn.close()
        except Exception as exc:  # close() must never raise: the connection is gone either way
            logger.debug("%r: ignoring an error while closing: %s", self.alias, exc)
            self._cg_driver.close(conn)
        finally:
            # Never keep a reference to a connection that went back to the pool.
            self.connection = None

    # -- before every statement ------------------------------------------------------------

    def ensure_connection(self) -> None:
        if self._cg_ensuring:
            # Re-entered: Django's connect() asks again, or a test patched
            # BaseDatabaseWrapper.ensure_connection with a function that calls the bound method
            # it saved (this override) — Django's own then, never super() in a loop.
            _django_ensure_connection(self)
            return
        self._cg_ensuring = True
        try:
            if self.connection is not None and not self._cg_connecting:
                if self._cg_forks != forking.generation:
                    self._cg_drop_inherited()
                else:
                    now = monotonic()
                    if (
                        now - self._cg_last_used >= self._cg_ping_interval
                        or self._cg_poller.poll(0)
                    ) and self._cg_replaceable():
                        self._cg_revalidate()
                    self._cg_last_used = now
            super().ensure_connection()
        finally:
            self._cg_ensuring = False

    def _cg_replaceable(self) -> bool:
        """Only where replacing the connection cannot lose anything."""
        if self.in_atomic_block or not self.autocommit:
            return False
        # Django knows of no transaction here; the driver may not know the status when the
        # server hung up (MySQL: its goodbye packet waits unread): the ping decides then
        try:
            status = self._cg_driver.transaction_status(self.connection)
            return status in (TX_IDLE, TX_UNKNOWN)
        except Exception:
            return True  # status unreadable: the connection is broken

    def _cg_revalidate(self) -> None:
        try:
            self._cg_driver.ping(self.connection, self._cg_ping_timeout)
            return
        except Exception as exc:
            logger.info(
                "database %r: connection lost while idle (%s); reconnecting before the "
                "next statement", self.alias, " ".join(str(exc).split()),
            )  # fmt: skip
        pool = self.connguard_pool
        conn, self.connection, self.connguard_pool = self.connection, None, None
        if pool is not None:
            pool.discard(conn)
        else:
            self._cg_driver.close(conn)

    def _cg_drop_inherited(self) -> None:
        """The connection was opened before this process forked: drop it without a word to
        the server (the parent, or a sibling, may be using the same session)."""
        conn, self.connection = self.connection, None
        pool, self.connguard_pool = self.connguard_pool, None
        logger.warning(
            "database %r: process %d inherited a connection opened before fork() "
            "(a query at import time or in AppConfig.ready() under a preforking server?); "
            "discarded it without contacting the server and opening a new one%s",
            self.alias, os.getpid(),
            "" if pool is None else "; where it was opened is logged by connguard.pool",
        )  # fmt: skip
        if pool is not None:
            pool.putconn(conn)  # recognised as inherited: a quiet discard
        else:
            self._cg_driver.abandon(conn, self._cg_fd)
        # A fresh start for the transaction state Django kept about the old connection.
        self.in_atomic_block = False
        self.savepoint_ids = []
        self.atomic_blocks = []
        self.needs_rollback = False
        self._cg_forks = forking.generation


class _PoolChoice(NamedTuple):
    """The pool of a wrapper's last checkout, and what it was chosen from."""

    generation: int  # forking.generation then
    key: tuple[Any, ...]  # registry.session_key()
    pool: ConnectionPool
    # copies of what the pool was chosen from (see _cg_pool_now)
    params: dict[str, Any]  # the connection parameters (registry.snapshot())
    settings: dict[str, Any]  # settings_dict (shallow)
    options: dict[str, Any]  # settings_dict["OPTIONS"] (shallow)
    pool_options: Any  # OPTIONS["pool"] (registry.snapshot())
    version: int  # _settings_version


class _ReportingErrorWrapper(DatabaseErrorWrapper):
    """Django's DatabaseErrorWrapper, telling the pool about each error first."""

    wrapper: PooledDatabaseWrapperMixin

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        if exc_type is None:
            return  # the common case: as cheap as Django's own
        self.wrapper._cg_report_error(exc_value)
        super().__exit__(exc_type, exc_value, traceback)
