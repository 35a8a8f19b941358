"""The JSON renderer: the report as one document (``--json``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from connguard.doctor.client_tcp import client_tcp, dead_path_bound
from connguard.doctor.model import Database, Report, ServerFacts


def report_dict(report: Report, strict: bool = False) -> dict[str, Any]:
    return {
        "servers": [_server_dict(s) for s in report.servers],
        "processes": dataclasses.asdict(report.processes),
        "databases": [_database_dict(d) for d in report.databases],
        "demand": [dataclasses.asdict(d) for d in report.demands],
        "findings": [dataclasses.asdict(f) for f in report.findings],
        "notes": report.notes,
        "summary": report.counts(),
        "exit_code": report.exit_code(strict),
    }


def _server_dict(server: ServerFacts) -> dict[str, Any]:
    data = dataclasses.asdict(server)
    data["budget"] = server.budget
    return data


def _database_dict(db: Database) -> dict[str, Any]:
    from connguard.config import mask_conninfo

    data = dataclasses.asdict(db)
    data.pop("server")
    data.pop("connect_kwargs")  # driver keywords (converters, a password), not settings
    data["conninfo"] = mask_conninfo(db.conninfo)
    data["server"] = db.server.address if db.server else None
    tcp = client_tcp(db)
    data["client_tcp"] = (
        None
        if tcp is None
        else {
            **tcp[0],
            "set": tcp[1],
            "dead_path_bound": dead_path_bound(tcp[0]),
        }
    )
    for key in ("max_lifetime", "max_idle", "conn_max_age"):
        if data[key] == float("inf"):
            data[key] = None
    return data
