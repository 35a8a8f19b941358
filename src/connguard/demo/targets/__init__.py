"""The database servers the harness drives: one :class:`~.base.ServerTarget` per database.

:func:`server_target` picks the one for a server object: the rig's ``MariaDBServer`` gets
:class:`~.mariadb.MariaDBTarget`, anything else (``PostgresServer``, the demo's ``--dsn``
server, the network-namespace server) :class:`~.postgresql.PostgresTarget`.
"""

from __future__ import annotations

from typing import Any

from connguard.demo.targets.base import ServerTarget
from connguard.demo.targets.mariadb import MariaDBTarget
from connguard.demo.targets.postgresql import PostgresTarget


def server_target(server: Any) -> ServerTarget:
    """The :class:`ServerTarget` for ``server`` (itself when it is one)."""
    if isinstance(server, ServerTarget):
        return server
    if getattr(server, "vendor", None) == "mysql" or type(server).__name__ == "MariaDBServer":
        return MariaDBTarget(server)
    return PostgresTarget(server)


def create_database(server: Any, name: str, template: str | None = None) -> None:
    """Create database ``name`` on ``server``, a copy of ``template`` when given (see
    :func:`connguard.demo.runner.prepare_template`)."""
    server_target(server).create_database(name, template)


def drop_database(server: Any, name: str) -> None:
    """Drop database ``name`` on ``server``, even while in use. Never raises."""
    server_target(server).drop_database(name)
