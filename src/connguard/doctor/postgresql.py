"""The PostgreSQL server inspector: one psycopg 3 connection reads the server's settings,
its role, its connections, and whether something sits in front of it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connguard.doctor.model import PostgresFacts
from connguard.doctor.pgbouncer import inspect_pooler
from connguard.doctor.text import one_line

_GUCS = (
    "max_connections",
    "superuser_reserved_connections",
    "reserved_connections",
    "idle_session_timeout",
    "idle_in_transaction_session_timeout",
    "statement_timeout",
    "tcp_keepalives_idle",
    "tcp_keepalives_interval",
    "tcp_keepalives_count",
    "default_transaction_read_only",
    "port",
)
_CONNECT_TIMEOUT = 5


def _seconds(setting: str, unit: str | None) -> float:
    value = float(setting)
    return {"ms": value / 1000, "s": value, "min": value * 60, "h": value * 3600}.get(
        unit or "s", value
    )


def conn_params(conninfo: str) -> dict[str, Any]:
    from psycopg.conninfo import conninfo_to_dict

    params = dict(conninfo_to_dict(conninfo))
    params.setdefault("connect_timeout", _CONNECT_TIMEOUT)
    params["application_name"] = "connguard-doctor"
    return params


def inspect_server(conninfo: str) -> PostgresFacts:
    """Connect once with psycopg and read the server's facts (``error`` set on failure)."""
    import psycopg

    params = conn_params(conninfo)
    address = f"{params.get('host') or 'localhost'}:{params.get('port') or 5432}"
    server = PostgresFacts(address=address, dbname=str(params.get("dbname") or ""), user="")
    try:
        conn = psycopg.connect(autocommit=True, prepare_threshold=None, **params)
    except psycopg.Error as exc:
        server.error = one_line(exc)
        return server
    with conn:
        info = conn.info
        server.address = f"{info.host}:{info.port}"
        server.dbname, server.user = info.dbname, info.user
        server.via_tcp = not str(info.host).startswith("/")
        rows = conn.execute(
            "SELECT name, setting, unit FROM pg_settings WHERE name = ANY(%s)", [list(_GUCS)]
        ).fetchall()
        gucs = {name: (setting, unit) for name, setting, unit in rows}

        def number(name: str) -> int:
            return int(gucs[name][0]) if name in gucs else 0

        def duration(name: str) -> float:
            return _seconds(*gucs[name]) if name in gucs else 0.0

        server.max_connections = number("max_connections")
        server.superuser_reserved = number("superuser_reserved_connections")
        server.reserved = number("reserved_connections")
        server.idle_session_timeout = duration("idle_session_timeout")
        server.idle_in_transaction_session_timeout = duration("idle_in_transaction_session_timeout")
        server.statement_timeout = duration("statement_timeout")
        server.tcp_keepalives_idle = number("tcp_keepalives_idle")
        server.tcp_keepalives_interval = number("tcp_keepalives_interval")
        server.tcp_keepalives_count = number("tcp_keepalives_count")
        server.default_read_only = gucs.get("default_transaction_read_only", ("off",))[0] == "on"
        row = conn.execute(
            "SELECT pg_is_in_recovery(), current_setting('server_version'), "
            "current_setting('server_version_num')::int, host(inet_server_addr()), "
            "inet_server_port(), (SELECT count(*) FROM pg_stat_activity "
            "WHERE backend_type = 'client backend' AND pid <> pg_backend_pid())"
        ).fetchone()
        assert row is not None
        server.in_recovery, server.version, server.version_num = row[0], row[1], row[2]
        server_addr, server_port, server.connections_now = row[3], row[4], row[5]
        listen_port = number("port")
        direct = (
            server_addr == info.hostaddr and server_port == info.port
            if server.via_tcp
            else server_addr is None and listen_port == info.port
        )
        if not direct:
            server.pooler = inspect_pooler(params, server.dbname, listen_port, info.port)
    return server


class PostgresInspector:
    """:class:`~connguard.doctor.server.ServerInspector` for PostgreSQL."""

    product = "PostgreSQL"

    def inspect(self, conninfo: str, kwargs: Mapping[str, Any]) -> PostgresFacts:
        return inspect_server(conninfo)  # the conninfo says everything
