"""The server inspector interface: what the doctor asks of each database it can read.

An inspector connects once to the server a conninfo (and the driver keywords beside it)
names and returns its facts (:data:`~connguard.doctor.model.ServerFacts`, ``error`` set when
it cannot connect); it never raises for a server that is down or refuses. Which inspector
reads a conninfo is decided by :func:`inspector_for`: a ``mysql://`` URL is MySQL's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from connguard.doctor.model import ServerFacts, is_mysql
from connguard.doctor.mysql import MySQLInspector
from connguard.doctor.postgresql import PostgresInspector


class ServerInspector(Protocol):
    product: str  # "PostgreSQL", "MySQL"

    def inspect(self, conninfo: str, kwargs: Mapping[str, Any]) -> ServerFacts:
        """The server's facts (``error`` set when it cannot be reached)."""
        ...


def inspector_for(conninfo: str) -> ServerInspector:
    """The inspector that reads the server *conninfo* names."""
    return MySQLInspector() if is_mysql(conninfo) else PostgresInspector()
