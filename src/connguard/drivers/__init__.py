"""DB-API drivers: one module per driver, each exposing a :class:`~connguard.drivers.base.Driver`."""

from __future__ import annotations

from connguard.drivers.base import Driver, Role, RolePolicy, TxStatus

__all__ = ["Driver", "Role", "RolePolicy", "TxStatus", "get_driver"]


def get_driver(name: str | Driver, connection_class: type | None = None) -> Driver:
    """Return the driver called *name* (``"psycopg"``, ``"psycopg2"``, ``"mysqlclient"`` or
    ``"pymysql"``), or *name* itself.

    A *connection_class* (psycopg_pool's option of that name: a ``psycopg.Connection``
    subclass) means psycopg 3 with that class, whatever *name* says."""
    if connection_class is not None:
        from connguard.drivers.psycopg import PsycopgDriver

        return PsycopgDriver(connection_class)
    if isinstance(name, Driver):
        return name
    if name in ("psycopg", "psycopg3"):
        from connguard.drivers.psycopg import PsycopgDriver

        return PsycopgDriver()
    if name == "psycopg2":
        from connguard.drivers.psycopg2 import Psycopg2Driver

        return Psycopg2Driver()
    if name == "mysqlclient":
        from connguard.drivers.mysqlclient import MysqlclientDriver

        return MysqlclientDriver()
    if name == "pymysql":
        from connguard.drivers.pymysql import PymysqlDriver

        return PymysqlDriver()
    raise ValueError(
        f"unknown driver {name!r}: use 'psycopg' (psycopg 3), 'psycopg2', 'mysqlclient' or "
        "'pymysql'"
    )
