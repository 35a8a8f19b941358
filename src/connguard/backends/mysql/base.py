"""``ENGINE: "connguard.backends.mysql"``: Django's MySQL backend over a connguard pool,
for MySQL and MariaDB through mysqlclient, or PyMySQL installed as ``MySQLdb``.

Django's own ``DatabaseWrapper`` plus :class:`~connguard.backends.mixin.PooledDatabaseWrapperMixin`
(checkout on connect, checkin on close, per-request release, fork discard, revalidation
before a statement outside requests). What is MySQL's here:

- the driver (:mod:`connguard.drivers.mysqlclient`, or :mod:`connguard.drivers.pymysql`
  after ``pymysql.install_as_MySQLdb()``): liveness by poll, a bounded ping, the
  transaction status read from the client library, MySQL's error codes;
- the session: ``init_command``, ``charset`` and the other ``OPTIONS`` are connect()
  keywords (``init_command`` runs once per server session, when it opens); Django's own
  set-up (``SET SQL_AUTO_IS_NULL = 0`` and the ``isolation_level``) runs once per server
  session too, when the connection is first lent (the pool rolls back, never resets the
  session); a connection is only lent to settings that would have configured it the same;
- the pool's connect bound becomes ``connect_timeout`` (whole seconds, at least 2) unless
  ``OPTIONS`` sets a shorter one;
- TCP keepalive (30 s idle, 10 s interval, 3 probes, ``TCP_USER_TIMEOUT`` 30 s) is set on
  each pooled connection's socket after it connects, as the PostgreSQL backend passes it to
  libpq; libpq's keys in ``OPTIONS`` (``keepalives_idle``, ...) override it
  (:mod:`connguard.drivers.tcp`).
"""

from __future__ import annotations

import math
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db.backends.mysql import base as mysql

from connguard.backends.mixin import PooledDatabaseWrapperMixin
from connguard.backends.mysql.creation import DatabaseCreation
from connguard.drivers.tcp import TCP_KEYS, apply_tcp, split_tcp, tcp_settings


class DatabaseWrapper(PooledDatabaseWrapperMixin, mysql.DatabaseWrapper):
    creation_class = DatabaseCreation
    dbname_param = "database"

    def _cg_driver_name(self) -> str:
        module = getattr(self.Database, "__name__", "MySQLdb")
        if module == "pymysql":  # pymysql.install_as_MySQLdb()
            return "pymysql"
        if module != "MySQLdb":
            raise ImproperlyConfigured(
                f"DATABASES[{self.alias!r}]['ENGINE']='connguard.backends.mysql' needs "
                f"mysqlclient or PyMySQL; MySQLdb is {module} here (installed as MySQLdb?), "
                "which connguard has no driver for (it reads the socket, the transaction "
                "status and the error numbers through the driver). Install mysqlclient "
                "(pip install 'django-connguard[mysql]'), or use 'django.db.backends.mysql'."
            )
        return "mysqlclient"

    def get_connection_params(self) -> dict[str, Any]:
        # Django's MySQL get_connection_params() copies OPTIONS into the connect() keywords
        # last, untouched: OPTIONS["pool"] is taken out of its result (at every connect, so
        # cheaper than hiding it from a copy of settings_dict as the mixin does)
        params = super(PooledDatabaseWrapperMixin, self).get_connection_params()
        params.pop("pool", None)
        return params

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        # TCP keepalive: the libpq keys in OPTIONS (keepalives, keepalives_idle, ...), which
        # MySQLdb.connect() would refuse, are set on the socket after connecting; a bad value
        # is found before a checkout (at every connect: looked up key by key, no copies when
        # there are none). The pool's connections: _cg_connect_params() leaves the TCP keys
        # out of the connect keywords, the pool is told them (_cg_pool_kwargs) and its driver
        # sets them on the socket, over connguard's defaults; not pooled: see below.
        for key in TCP_KEYS:
            if key in conn_params:
                self._cg_tcp_settings(conn_params)
                break
        return super().get_new_connection(conn_params)

    def _cg_tcp_settings(self, conn_params: dict[str, Any]) -> dict[str, int]:
        """The TCP keys of *conn_params* as numbers (none: ``{}``); a bad one is raised as
        ``ImproperlyConfigured`` naming the alias, the key, the value and what it takes."""
        try:
            return tcp_settings(split_tcp(conn_params)[1], defaults=False)
        except ValueError as exc:
            raise ImproperlyConfigured(f"DATABASES[{self.alias!r}]['OPTIONS']: {exc}") from None

    def _cg_connect_unpooled(self, conn_params: dict[str, Any]) -> Any:
        # not pooled: as Django, with your TCP values set on the socket
        settings = self._cg_tcp_settings(conn_params)
        conn = super()._cg_connect_unpooled(split_tcp(conn_params)[0] if settings else conn_params)
        apply_tcp(self._cg_driver.fileno(conn), settings)
        return conn

    def set_autocommit(
        self, autocommit: bool, force_begin_transaction_with_broken_autocommit: bool = False
    ) -> None:
        # Django's connect() turns autocommit on for each connection it gets: a pooled one
        # almost always is already (mysqlclient's and PyMySQL's autocommit() would then
        # send nothing either), so at connect() only the flag is set, without Django's
        # checks around it (no atomic block: connect() just reset that; the checkout checked
        # the connection). Anything else, or a status that cannot be read: Django's way.
        conn = self.connection
        if (
            autocommit
            and self._cg_connecting
            and conn is not None
            and self.connguard_pool is not None
            and not self.run_commit_hooks_on_set_autocommit_on
        ):
            try:
                on = conn.get_autocommit()
            except Exception:
                on = False
            if on is True:
                self.autocommit = True
                return
        super().set_autocommit(autocommit, force_begin_transaction_with_broken_autocommit)

    def _cg_pool_kwargs(self, conn_params: dict[str, Any]) -> dict[str, Any] | None:
        """The TCP keys of OPTIONS, and its read_timeout: the pool's driver reads them after
        each connect (PyMySQL's read_timeout is the pool's bound while connecting only)."""
        kwargs = split_tcp(conn_params)[1]
        if "read_timeout" in conn_params:
            kwargs["read_timeout"] = conn_params["read_timeout"]
        return kwargs or None

    def _cg_connect_params(
        self, params: dict[str, Any], pool_params: dict[str, Any]
    ) -> dict[str, Any]:
        params = split_tcp(params)[0]
        bound = pool_params.get("connect_timeout")
        if bound is not None:
            own = params.get("connect_timeout")
            if own is None or float(own) > bound:
                params["connect_timeout"] = max(2, math.ceil(bound))
            if self._cg_driver.name == "pymysql":
                # PyMySQL's connect_timeout bounds the TCP connect only; the greeting and the
                # authentication wait up to read_timeout, which the driver then takes off
                params.setdefault("read_timeout", max(2, math.ceil(bound)))
        return params
