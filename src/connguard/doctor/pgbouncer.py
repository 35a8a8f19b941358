"""The pooler inspector: a PgBouncer answers on its admin console (``SHOW VERSION`` /
``SHOW CONFIG`` / ``SHOW DATABASES``); anything else in between is a proxy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from connguard.doctor.model import Pooler
from connguard.doctor.text import one_line

_ADMIN_CONNECT_TIMEOUT = 3


def inspect_pooler(params: Mapping[str, Any], dbname: str, server_port: int, port: int) -> Pooler:
    """Something is in between: a PgBouncer answers on its admin console, else a proxy."""
    import psycopg

    admin = {**params, "dbname": "pgbouncer", "connect_timeout": _ADMIN_CONNECT_TIMEOUT}
    try:
        with psycopg.connect(autocommit=True, **admin) as conn:
            version = str(conn.execute("SHOW VERSION").fetchone()[0])  # type: ignore[index]
            if "bouncer" not in version.lower():
                raise ValueError(version)
            config = {str(r[0]): r[1] for r in conn.execute("SHOW CONFIG").fetchall()}
            cur = conn.execute("SHOW DATABASES")
            columns = [c.name for c in cur.description or ()]
            databases = [dict(zip(columns, r, strict=False)) for r in cur.fetchall()]
    except (psycopg.Error, ValueError, TypeError) as exc:
        return Pooler(
            kind="proxy",
            detail=f"the server listens on port {server_port}, the connection went to port "
            f"{port}; no PgBouncer admin console answered ({one_line(exc)})",
        )
    row = next((d for d in databases if d.get("name") == dbname), None) or next(
        (d for d in databases if d.get("name") == "*"), {}
    )

    def number(value: Any) -> int:
        try:
            return int(value)
        except (TypeError, ValueError):
            return 0

    return Pooler(
        kind="pgbouncer",
        version=version.split()[-1],
        pool_mode=(row.get("pool_mode") or config.get("pool_mode") or "session"),
        max_client_conn=number(config.get("max_client_conn")),
        pool_size=number(row.get("pool_size") or config.get("default_pool_size")),
        client_idle_timeout=float(number(config.get("client_idle_timeout"))),
        max_prepared_statements=number(config.get("max_prepared_statements")),
    )
