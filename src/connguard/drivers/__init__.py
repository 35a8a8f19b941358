"""DB-API drivers: one module per driver, each exposing a :class:`~connguard.drivers.base.Driver`."""

from __future__ import annotations

from connguard.drivers.base import Driver, Role, TxStatus

__all__ = ["Driver", "Role", "TxStatus", "get_driver"]


def get_driver(name: str | Driver) -> Driver:
    """Return the driver called *name* (``"psycopg"`` or ``"psycopg2"``), or *name* itself."""
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
    raise ValueError(f"unknown driver {name!r}: use 'psycopg' (psycopg 3) or 'psycopg2'")
