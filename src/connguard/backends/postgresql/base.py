"""``ENGINE: "connguard.backends.postgresql"``: Django's PostgreSQL backend over a connguard pool.

Django's own ``DatabaseWrapper`` plus :class:`~connguard.backends.mixin.PooledDatabaseWrapperMixin`
(checkout on connect, checkin on close, per-request release, fork discard, revalidation
before a statement outside requests). What is PostgreSQL's here: the driver (psycopg 3 when
installed, else psycopg2), the settings that shape a session (time zone, role, isolation
level), an ``application_name`` naming app, alias and pid, TCP keepalive defaults, and
``target_session_attrs`` told to the pool for failovers.
"""

from __future__ import annotations

import os
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.postgresql import base as postgres
from django.db.backends.postgresql.psycopg_any import IsolationLevel, is_psycopg3

from connguard.backends.mixin import PooledDatabaseWrapperMixin
from connguard.backends.postgresql.creation import DatabaseCreation
from connguard.drivers.base import with_pool_params

# Django 5.1+ configures sessions in _configure_connection() and skips it for a pool of its own
_HAS_CONFIGURE = hasattr(postgres.DatabaseWrapper, "_configure_connection")


def application_name(alias: str) -> str:
    """``<app>:<alias>:<pid>`` (at most 63 bytes, PostgreSQL's limit), so that
    ``pg_stat_activity`` tells which process holds which connection."""
    app = (
        os.environ.get("CONNGUARD_APP_NAME")
        or (os.environ.get("DJANGO_SETTINGS_MODULE", "django").split(".")[0])
    )
    return f"{app}:{alias}:{os.getpid()}"[-63:]


class DatabaseWrapper(PooledDatabaseWrapperMixin, postgres.DatabaseWrapper):
    creation_class = DatabaseCreation
    # Django 5.1+ takes OPTIONS["pool"] out of the connection parameters itself (and refuses
    # a pool dict with psycopg2: then the mixin hides it)
    _cg_hide_pool = not (_HAS_CONFIGURE and is_psycopg3)

    def _cg_driver_name(self) -> str:
        return "psycopg" if is_psycopg3 else "psycopg2"

    def _cg_session_settings(self) -> dict[str, Any]:
        return {
            "TIME_ZONE": self.timezone_name,
            "USE_TZ": settings.USE_TZ,
            "assume_role": self.settings_dict["OPTIONS"].get("assume_role"),
        }

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        # a bad isolation level is found before a checkout (and leaks no connection)
        if "isolation_level" in self.settings_dict["OPTIONS"]:
            level = self._cg_isolation_level()
        else:
            level = IsolationLevel.READ_COMMITTED
        conn = super().get_new_connection(conn_params)
        self.isolation_level = level  # as Django's get_new_connection() records it
        return conn

    def _cg_isolation_level(self) -> IsolationLevel:
        options = self.settings_dict["OPTIONS"]
        if "isolation_level" not in options:
            return IsolationLevel.READ_COMMITTED
        value = options["isolation_level"]
        try:
            return IsolationLevel(value)
        except ValueError:
            choices = ", ".join(f"{level.value} ({level.name})" for level in IsolationLevel)
            raise ImproperlyConfigured(
                f"DATABASES[{self.alias!r}]['OPTIONS']['isolation_level']={value!r}: "
                f"Invalid transaction isolation level {value} specified. Use one of the "
                f"psycopg.IsolationLevel values. (They are {choices}.)"
            ) from None

    def _cg_connect_params(
        self, params: dict[str, Any], pool_params: dict[str, Any]
    ) -> dict[str, Any]:
        # an application_name naming app, alias and pid, read at each connect (a forked child
        # names itself), unless the user set one; the pool's connect bound and the TCP
        # keepalive defaults: the user's OPTIONS win, except a connect_timeout longer than
        # the bound (docs/network.md)
        if "application_name" not in params:
            params["application_name"] = application_name(self.alias)
        return with_pool_params(params, pool_params)

    def _cg_pool_kwargs(self, conn_params: dict[str, Any]) -> dict[str, Any] | None:
        """target_session_attrs in OPTIONS is what libpq checks at connect; the pool is told
        too (its kwargs: connect() ignores them), to check the same role after a failover
        (see ConnectionPool.invalidate)."""
        attrs = conn_params.get("target_session_attrs")
        return None if attrs is None else {"target_session_attrs": str(attrs)}

    def _cg_configure_session(self) -> None:
        conn = self.connection
        if _HAS_CONFIGURE:
            # Django's, without its `not self.pool` test (ours is not Django's pool)
            BaseDatabaseWrapper.init_connection_state(self)
            configure = self._configure_connection  # type: ignore[attr-defined]
            if conn is not None and configure(conn) and not self.get_autocommit():
                conn.commit()
        else:  # Django < 5.1: no pool of its own to step around
            postgres.DatabaseWrapper.init_connection_state(self)
