"""The MySQL / MariaDB server inspector: one mysqlclient connection, opened with the
application's own keywords (so its ``init_command`` and ``client_flag`` apply), reads the
idle timeouts its sessions get, the connection limits (``max_connections``, the account's
``max_user_connections``), ``read_only`` / ``super_read_only``, and whether something sits
in front of the server.

What is in front, and what can be told of it:

- **ProxySQL** answers ``select @@version_comment limit 1`` itself, with ``(ProxySQL)``:
  recognised. Its own limits (``mysql-max_connections``, ``mysql-wait_timeout``) live on
  its admin interface (port 6032, admin credentials), which is not read.
- **MaxScale** is recognised when its greeting names it (a ``version_string`` with
  ``maxscale``); by default it passes on the server's version, and then it is told only by
  what follows.
- **Anything else** (a TCP proxy, a port mapping, a proxy that is not recognised) is told
  when the server listens on another port (``@@port``) than the one connected to, or when
  the greeting's version differs from ``VERSION()``. A proxy on the same port that passes
  the greeting through is not seen.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import Any

from connguard.doctor.model import MySQLFacts, Pooler
from connguard.doctor.text import one_line

_CONNECT_TIMEOUT = 5
CLIENT_INTERACTIVE = 1024  # MySQLdb.constants.CLIENT.INTERACTIVE
_VARIABLES = (
    "VERSION(), @@version_comment, @@port, @@socket, @@max_connections, "
    "@@global.max_user_connections, @@session.max_user_connections, @@global.wait_timeout, "
    "@@global.interactive_timeout, @@session.wait_timeout, @@read_only, CURRENT_USER()"
)
ER_UNKNOWN_SYSTEM_VARIABLE = 1193


def connect_params(conninfo: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """``MySQLdb.connect()`` keywords: the conninfo's (mysqlclient driver syntax), then
    *kwargs*; a connect timeout unless one is set."""
    from connguard.drivers.mysql_common import parse_conninfo
    from connguard.drivers.tcp import split_tcp

    # the TCP keys (keepalives_idle, ...) are set on the socket, not connect() keywords
    params = split_tcp({**parse_conninfo(conninfo), **kwargs})[0]
    params.setdefault("connect_timeout", _CONNECT_TIMEOUT)
    return params


def inspect_server(conninfo: str, kwargs: Mapping[str, Any] | None = None) -> MySQLFacts:
    """Connect once with mysqlclient and read the server's facts (``error`` set on
    failure)."""
    import MySQLdb

    params = connect_params(conninfo, kwargs or {})
    host, port = params.get("host") or "localhost", int(params.get("port") or 3306)
    address = str(params.get("unix_socket") or f"{host}:{port}")
    server = MySQLFacts(
        address=address, dbname=str(params.get("database") or ""), user=str(params.get("user", ""))
    )
    try:
        conn = MySQLdb.connect(**params)
    except (MySQLdb.Error, ValueError, TypeError) as exc:
        server.error = one_line(exc)
        return server
    try:
        server.via_tcp = "TCP/IP" in conn.get_host_info()
        cur = conn.cursor()
        cur.execute(f"SELECT {_VARIABLES}")
        row = cur.fetchone()
        (version, comment, server_port, server_socket, max_connections, global_user_limit,
         user_limit, wait_timeout, interactive_timeout, session_wait, read_only,
         user) = row  # fmt: skip
        server.version, server.version_comment = str(version), str(comment or "")
        server.product = "MariaDB" if "mariadb" in server.version.lower() else "MySQL"
        server.max_connections = int(max_connections)
        server.max_user_connections = int(user_limit or 0)
        server.account_limit = int(user_limit or 0) != int(global_user_limit or 0)
        server.wait_timeout = float(wait_timeout)
        server.interactive_timeout = float(interactive_timeout)
        server.session_wait_timeout = float(session_wait)
        server.interactive = bool(int(params.get("client_flag") or 0) & CLIENT_INTERACTIVE)
        server.read_only = bool(int(read_only))
        server.user = str(user or server.user)  # the account: user@host
        server.super_read_only = _super_read_only(conn)
        cur.execute(
            "SELECT COUNT(*) FROM information_schema.PROCESSLIST "
            "WHERE ID <> CONNECTION_ID() AND COMMAND NOT IN ('Daemon', 'Binlog Dump') "
            "AND USER NOT IN ('system user', 'event_scheduler', 'unauthenticated user')"
        )
        server.connections_now = int(cur.fetchone()[0])
        if server.via_tcp:
            server.client_tcp = socket_tcp(conn.fileno())
        greeting = conn.get_server_info()
        server.pooler = _in_front(
            conn, greeting, server.version, port, int(server_port or 0), server.via_tcp
        )
        path = str(params.get("unix_socket") or "")
        if (
            not server.via_tcp and path and server_socket and server.pooler is None
            and os.path.realpath(path) != os.path.realpath(server_socket)
        ):  # fmt: skip
            server.pooler = Pooler(
                kind="proxy",
                detail=f"the server's socket is {server_socket}, the connection went to {path}",
            )
    except MySQLdb.Error as exc:
        server.error = one_line(exc)
    finally:
        with contextlib.suppress(Exception):
            conn.close()
    return server


def _super_read_only(conn: Any) -> bool | None:
    """MySQL's ``super_read_only``; None where the server has none (MariaDB)."""
    import MySQLdb

    cur = conn.cursor()
    try:
        cur.execute("SELECT @@super_read_only")
    except MySQLdb.OperationalError as exc:
        if exc.args and exc.args[0] == ER_UNKNOWN_SYSTEM_VARIABLE:
            return None
        raise
    return bool(int(cur.fetchone()[0]))


def _in_front(
    conn: Any, greeting: str, version: str, port: int, server_port: int, via_tcp: bool
) -> Pooler | None:
    """What sits between the client and the server (see the module's docstring)."""
    cur = conn.cursor()
    cur.execute("select @@version_comment limit 1")  # ProxySQL answers this very text itself
    comment = str(cur.fetchone()[0] or "")
    if "proxysql" in comment.lower():
        return Pooler(
            kind="proxysql",
            detail=f"it answers select @@version_comment with {comment!r}",
        )
    if "maxscale" in greeting.lower():
        return Pooler(kind="maxscale", version=greeting, detail=f"its greeting says {greeting!r}")
    seen = []
    if via_tcp and server_port and server_port != port:
        seen.append(f"the server listens on port {server_port}, the connection went to port {port}")
    greeted = greeting.removeprefix("5.5.5-")  # MariaDB's greeting for old clients
    if greeted and greeted != version:
        seen.append(f"the greeting says version {greeting!r}, VERSION() {version!r}")
    if not seen:
        return None
    return Pooler(
        kind="proxy",
        detail="; ".join(seen)
        + " (neither ProxySQL nor MaxScale recognised: a TCP proxy or port mapping?)",
    )


def socket_tcp(fd: int) -> dict[str, int]:
    """The keepalive and ``tcp_user_timeout`` settings of the TCP socket *fd*, in effect (the
    OS's defaults where the client library sets none), under libpq's names."""
    from connguard.drivers.tcp import read_tcp

    return read_tcp(fd)


class MySQLInspector:
    """:class:`~connguard.doctor.server.ServerInspector` for MySQL and MariaDB."""

    product = "MySQL"

    def inspect(self, conninfo: str, kwargs: Mapping[str, Any]) -> MySQLFacts:
        return inspect_server(conninfo, kwargs)
