"""The client side of a database's connections: the TCP keepalive and ``tcp_user_timeout``
settings they run with, and how soon a silently dropped connection is found."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from connguard.doctor.model import Database, MySQLFacts

# Linux's defaults when neither the connection nor the system configuration sets them
_OS_KEEPALIVE = {"keepalives_idle": 7200, "keepalives_interval": 75, "keepalives_count": 9}
OS_RETRANSMIT = 924.6  # tcp_retries2 = 15: how long unacknowledged data is retried


def client_tcp(db: Database) -> tuple[dict[str, int], list[str]] | None:
    """The TCP keepalive and tcp_user_timeout settings db's connections run with, and the
    keywords of them the user set (the rest: connguard's defaults for a connguard pool, the
    OS's otherwise; 0 means the OS's value, as in libpq). On MySQL: those of the inspector's
    own connection, which mysqlclient opens as the application's (None when unread), and
    for a connguard pool what its driver sets on the socket after connecting."""
    if db.mysql:
        facts = db.server
        tcp = facts.client_tcp if isinstance(facts, MySQLFacts) else None
        if not tcp:
            return None
        if db.mode != "connguard pool":
            return dict(tcp), []
        return _mysql_pool_tcp(db)
    from psycopg import pq
    from psycopg.conninfo import conninfo_to_dict

    from connguard.drivers.base import TCP_DEFAULTS, libpq_connect_params

    try:
        given = {k: v for k, v in conninfo_to_dict(db.conninfo).items() if v is not None}
    except Exception:
        given = {}
    mine = [k for k in TCP_DEFAULTS if k in given]
    if db.mode == "connguard pool":
        given = {**given, **libpq_connect_params(given, {}, None, pq.version())}
    values: dict[str, int] = {}
    for key in TCP_DEFAULTS:
        try:
            values[key] = int(given.get(key, 1 if key == "keepalives" else 0))
        except (TypeError, ValueError):
            values[key] = 0
    for key, value in _OS_KEEPALIVE.items():
        if not values[key]:
            values[key] = _sysctl(key, value)
    return values, mine


def _mysql_pool_tcp(db: Database) -> tuple[dict[str, int], list[str]] | None:
    """What connguard's MySQL drivers set on a pooled connection's socket: its defaults, the
    TCP keys of the conninfo and the connect keywords (``OPTIONS``) over them; 0 means the
    OS's value."""
    from connguard.drivers.mysql_common import tcp_given
    from connguard.drivers.tcp import TCP_KEYS, tcp_settings

    given = tcp_given(db.conninfo, db.connect_kwargs or {})
    try:
        values = tcp_settings(given)
    except ValueError:
        return None  # the pool refuses to connect, and says why
    for key, value in _OS_KEEPALIVE.items():
        if not values[key]:
            values[key] = _sysctl(key, value)
    return values, [k for k in TCP_KEYS if k in given]


def _sysctl(key: str, default: int) -> int:
    name = {"keepalives_idle": "time", "keepalives_interval": "intvl"}.get(key, "probes")
    try:
        return int(Path(f"/proc/sys/net/ipv4/tcp_keepalive_{name}").read_text().strip())
    except (OSError, ValueError):
        return default


def dead_path_bound(values: Mapping[str, int]) -> float | None:
    """Seconds after which the kernel reports a silently dropped connection that waits for
    the server (idle, or a query sent and acknowledged); None: never (keepalives off)."""
    if not values["keepalives"]:
        return None
    idle, interval = values["keepalives_idle"], values["keepalives_interval"]
    user_timeout = values["tcp_user_timeout"] / 1000
    if not user_timeout:
        return float(idle + interval * values["keepalives_count"])
    # with tcp_user_timeout the kernel gives up at the first probe tick past it (Linux)
    bound = float(idle + interval)
    while bound < user_timeout:
        bound += interval
    return bound
