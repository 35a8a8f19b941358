"""Every rule applied to the inspected databases: the shared rules in :mod:`.rules`, each
database's own through its :class:`~connguard.doctor.rules.DatabaseRules`."""

from __future__ import annotations

from connguard.doctor.findings import SEVERITIES, Finding
from connguard.doctor.model import Database, MySQLFacts, Processes, ServerFacts
from connguard.doctor.rules import (
    DatabaseRules,
    budget_findings,
    idle_findings,
    process_findings,
)
from connguard.doctor.rules_mysql import MySQLRules
from connguard.doctor.rules_postgresql import PostgresRules

_POSTGRES, _MYSQL = PostgresRules(), MySQLRules()


def rules_for(db: Database) -> DatabaseRules:
    """The rules of the database *db* runs on."""
    return _MYSQL if isinstance(db.server, MySQLFacts) or db.mysql else _POSTGRES


def diagnose(databases: list[Database], model: Processes) -> list[Finding]:
    """Every finding for these databases (each with its ``server`` inspected)."""
    found: list[Finding] = []
    servers: dict[str, ServerFacts] = {}
    for db in databases:
        if db.server is not None and db.server.error is None:
            servers.setdefault(db.server.address, db.server)
    for server in servers.values():
        dbs = [d for d in databases if d.server is server]
        found += rules_for(dbs[0]).server_findings(server, dbs, model)
    for db in databases:
        if db.server is not None and db.server.error is None:
            rules = rules_for(db)
            found += idle_findings(db, db.server, rules)
            found += rules.database_findings(db, db.server, model)
    for address, server in servers.items():
        dbs = [d for d in databases if d.server and d.server.address == address]
        found += budget_findings(server, dbs, model, rules_for(dbs[0]))
    for db in databases:
        found += process_findings([db], model, rules_for(db))
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    found.sort(key=lambda f: (rank[f.severity], f.id, f.subject))
    return found
