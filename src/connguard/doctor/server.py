"""The server inspector interface: what the doctor asks of each database it can read.

An inspector connects once to the server a conninfo names and returns its facts
(:class:`~connguard.doctor.model.Server`, ``error`` set when it cannot connect); it never
raises for a server that is down or refuses. Which inspector reads a conninfo is decided
by :func:`inspector_for`.
"""

from __future__ import annotations

from typing import Protocol

from connguard.doctor.model import Server
from connguard.doctor.postgresql import PostgresInspector


class ServerInspector(Protocol):
    product: str  # "PostgreSQL", ...

    def inspect(self, conninfo: str) -> Server:
        """The server's facts (``error`` set when it cannot be reached)."""
        ...


def inspector_for(conninfo: str) -> ServerInspector:
    """The inspector that reads the server *conninfo* names."""
    return PostgresInspector()
