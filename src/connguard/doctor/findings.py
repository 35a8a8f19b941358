"""The findings the doctor can report: their ids, severities and meanings."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

SEVERITIES = ("error", "warning", "info")

#: id -> (severity, what it means); the severity of CG101, CG102 and CG106 depends on the
#: engine
FINDINGS: dict[str, tuple[str, str]] = {
    "CG001": ("error", "the server cannot be reached"),
    "CG002": ("warning", "the gunicorn configuration cannot be read"),
    "CG101": ("error", "connections may sit idle longer than the server's idle_session_timeout"),
    "CG102": ("error", "connections may sit idle longer than PgBouncer's client_idle_timeout"),
    "CG106": ("error", "connections may sit idle longer than MySQL's wait_timeout"),
    "CG103": ("info", "the server keeps dead clients' sessions for hours (TCP keepalives)"),
    "CG104": ("info", "no statement_timeout: a runaway query holds its connection"),
    "CG105": ("info", "no idle_in_transaction_session_timeout"),
    "CG201": ("error", "the processes may open more connections than the server accepts"),
    "CG202": ("warning", "the processes may use most of the server's connections"),
    "CG203": ("error", "the processes may open more connections than PgBouncer accepts"),
    "CG205": ("error", "the processes may open more connections than the account may hold"),
    "CG204": ("warning", "connections are not bounded by any pool"),
    "CG301": ("error", "gunicorn --preload with connections that workers inherit"),
    "CG302": ("info", "gunicorn --preload: inherited connections are discarded by connguard"),
    "CG303": ("error", "persistent connections (CONN_MAX_AGE) under ASGI"),
    "CG401": ("error", "server-side cursors behind a transaction-mode pooler"),
    "CG402": ("warning", "prepared statements behind a transaction-mode pooler"),
    "CG403": ("warning", "the pooler's mode is not declared in the settings"),
    "CG404": ("info", "something between the application and the server"),
    "CG501": ("warning", "the server is read-only"),
}


@dataclasses.dataclass
class Finding:
    id: str
    severity: str
    subject: str  # what it is about: an alias, a server, "processes"
    message: str
    fix: str


def findings_table() -> Iterable[tuple[str, str, str]]:
    """``(id, severity, meaning)`` of every finding (for the docs)."""
    for fid, (severity, meaning) in FINDINGS.items():
        yield fid, severity, meaning
