"""What the MySQL drivers (mysqlclient, PyMySQL) share: MySQL's error numbers and what they
mean to a pool, and the connection target's syntax (a ``mysql://`` URL or keywords)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from connguard.drivers.tcp import split_tcp

# client (CR_*) and server (ER_*) error codes
CR_CONNECTION_ERROR = 2002  # can't connect through the socket file / to the host
CR_CONN_HOST_ERROR = 2003
CR_SERVER_GONE_ERROR = 2006
CR_SERVER_LOST = 2013
CR_SERVER_LOST_EXTENDED = 2055
ER_CON_COUNT_ERROR = 1040  # Too many connections
ER_SERVER_SHUTDOWN = 1053
ER_ABORTING_CONNECTION = 1152
ER_NET_READ_INTERRUPTED = 1159
ER_NET_WRITE_INTERRUPTED = 1161
ER_TOO_MANY_USER_CONNECTIONS = 1203
ER_USER_LIMIT_REACHED = 1226
ER_OPTION_PREVENTS_STATEMENT = 1290  # --read-only / --super-read-only
ER_READ_ONLY_MODE = 1836
ER_CONNECTION_KILLED = 1927  # MariaDB: KILL CONNECTION while a statement ran
ER_CLIENT_INTERACTION_TIMEOUT = 4031  # MySQL 8.0.24+: wait_timeout, said before closing

#: the session is gone (or going): the connection is unusable
DISCONNECT_CODES = frozenset(
    {
        CR_SERVER_GONE_ERROR,
        CR_SERVER_LOST,
        CR_SERVER_LOST_EXTENDED,
        ER_SERVER_SHUTDOWN,
        ER_ABORTING_CONNECTION,
        ER_NET_READ_INTERRUPTED,
        ER_NET_WRITE_INTERRUPTED,
        ER_CONNECTION_KILLED,
        ER_CLIENT_INTERACTION_TIMEOUT,
    }
)
#: nobody accepts sessions at the address (refused, no socket file, shutting down)
ABSENT_CODES = frozenset({CR_CONNECTION_ERROR, CR_CONN_HOST_ERROR, ER_SERVER_SHUTDOWN})
_INT_KEYS = frozenset(
    {"port", "connect_timeout", "read_timeout", "write_timeout", "client_flag", "local_infile"}
)
_ALIASES = {"dbname": "database", "db": "database", "passwd": "password"}


def error_code(exc: BaseException) -> int | None:
    """The MySQL error number of a ``MySQLdb.Error`` (``exc.args[0]``), else None."""
    args = getattr(exc, "args", ())
    if args and isinstance(args[0], int) and not isinstance(args[0], bool):
        return args[0]
    return None


def parse_conninfo(conninfo: str) -> dict[str, Any]:
    """``MySQLdb.connect()`` keywords from a URL (``mysql://user:pw@host:3306/db?charset=
    utf8mb4``) or a keyword string (``host=127.0.0.1 port=3306 user=app database=db``).

    ``dbname``/``db`` mean ``database``, ``passwd`` means ``password``; ports and timeouts
    become ints; other values stay strings. An empty string gives ``{}``.
    """
    text = conninfo.strip()
    params: dict[str, Any] = {}
    if not text:
        return params
    if "://" in text:
        url = urlsplit(text)
        if url.scheme not in ("mysql", "mariadb", "mysql+mysqldb", "mysql+pymysql"):
            raise ValueError(f"not a mysql:// URL: scheme {url.scheme!r}")
        if url.hostname:
            params["host"] = url.hostname
        if url.port:
            params["port"] = url.port
        if url.username:
            params["user"] = unquote(url.username)
        if url.password is not None:
            params["password"] = unquote(url.password)
        if url.path.strip("/"):
            params["database"] = unquote(url.path.strip("/"))
        items = parse_qsl(url.query, keep_blank_values=True)
    else:
        items = []
        for word in text.split():
            key, sep, value = word.partition("=")
            if not sep or not key:
                raise ValueError(f"not key=value in a MySQL conninfo: {word!r}")
            items.append((key, value))
    for key, value in items:
        params[_ALIASES.get(key, key)] = value
    for key in _INT_KEYS & params.keys():
        try:
            params[key] = int(params[key])
        except (TypeError, ValueError):
            raise ValueError(
                f"{key}={params[key]!r} in a MySQL conninfo: expected a whole number"
            ) from None
    return params


def tcp_given(conninfo: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """The TCP keys (``keepalives``, ``keepalives_idle``, ...) the user set in *conninfo* or
    *kwargs* (which win). A conninfo this driver cannot read counts as setting none: a
    ``connect=`` callable reads it its own way."""
    try:
        params = parse_conninfo(conninfo)
    except ValueError:
        params = {}
    return split_tcp({**params, **kwargs})[1]


class MySQLErrors:
    """Error classification by MySQL error number (``exc.args[0]``), for a
    :class:`~connguard.drivers.base.Driver` subclass; *disconnect_errors* are the driver's
    own exception classes that mean the connection is closed."""

    disconnect_errors: tuple[type[BaseException], ...] = (OSError,)

    def is_disconnect(self, exc: BaseException) -> bool:
        """The connection is unusable: the session was lost, killed, timed out or shut
        down (2006, 2013, 2055, 4031, 1927, 1053, …), or the connection was closed."""
        if error_code(exc) in DISCONNECT_CODES:
            return True
        return isinstance(exc, self.disconnect_errors)

    def is_capacity_error(self, exc: BaseException) -> bool:
        """The server is up but has no session for us: ``Too many connections`` (1040) or
        the account's ``max_user_connections`` (1203, 1226)."""
        code = error_code(exc)
        if code in (ER_CON_COUNT_ERROR, ER_TOO_MANY_USER_CONNECTIONS):
            return True
        return code == ER_USER_LIMIT_REACHED and "max_user_connections" in str(exc)

    def is_server_absent(self, exc: BaseException) -> bool:
        """Nothing accepts sessions at the address: refused or no socket file (2002, 2003),
        or the server is shutting down (1053)."""
        return error_code(exc) in ABSENT_CODES

    def is_role_change(self, exc: BaseException) -> bool:
        """The server no longer takes writes: ``read_only`` / ``super_read_only`` (1290
        naming it, e.g. after a failover demoted it) or InnoDB read-only mode (1836)."""
        code = error_code(exc)
        if code == ER_READ_ONLY_MODE:
            return True
        text = str(exc).lower()
        return code == ER_OPTION_PREVENTS_STATEMENT and ("read-only" in text or "read_only" in text)
