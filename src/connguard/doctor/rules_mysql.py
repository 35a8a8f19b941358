"""MySQL's and MariaDB's rules: the idle timeout (``wait_timeout``, or
``interactive_timeout`` for an interactive client), the account's ``max_user_connections``,
``read_only`` / ``super_read_only``, a proxy in front, and the words the shared rules use."""

from __future__ import annotations

import math

from connguard.doctor.findings import Finding
from connguard.doctor.model import Database, MySQLFacts, Processes, ServerFacts
from connguard.doctor.rules import DatabaseRules, demand, max_size_within, processes_sharing
from connguard.doctor.text import plural


class MySQLRules(DatabaseRules):
    engine = "connguard.backends.mysql"
    idle_error = (
        "'MySQL server has gone away' (2006; or 'Lost connection to server during query', 2013)"
    )
    full_error = "'Too many connections' (1040)"
    pile_up_error = "'Too many connections' (1040)"
    shared_session_errors = (
        "crossed results, 'Commands out of sync', 'Lost connection to server during query' "
        "(2013) once one of them closes it"
    )
    multiplexer = "put ProxySQL in front (it shares server connections between clients)"

    def idle_timeouts(self, server: ServerFacts) -> list[tuple[str, str, float, str]]:
        assert isinstance(server, MySQLFacts)
        name = server.idle_timeout_name
        return [("CG106", name, server.session_wait_timeout, server.address)]

    def exempt(self, name: str, db: Database) -> str:
        bound = db.idle_bound()
        seconds = math.ceil(bound) + 60 if bound != float("inf") else 28800
        where = "OPTIONS['init_command'] = " if db.engine != "dsn" else "init_command "
        return (
            f"raise it for the application's sessions: {where}"
            f"'SET SESSION wait_timeout = {seconds}'"
        )

    def budget_text(self, server: ServerFacts) -> str:
        return f"max_connections {server.max_connections}"

    def server_findings(
        self, server: ServerFacts, dbs: list[Database], model: Processes
    ) -> list[Finding]:
        assert isinstance(server, MySQLFacts)
        found = _read_only(server)
        found += _user_limit(server, dbs, model)
        return found

    def database_findings(
        self, db: Database, server: ServerFacts, model: Processes
    ) -> list[Finding]:
        assert isinstance(server, MySQLFacts)
        return _in_front(db, server)


def _read_only(server: MySQLFacts) -> list[Finding]:
    if not (server.read_only or server.super_read_only):
        return []
    option = "super-read-only" if server.super_read_only else "read-only"
    where = server.address
    return [
        Finding(
            "CG501", "warning", where,
            f"{where} is read-only: {option.replace('-', '_')} is ON; every write will fail "
            f"with 'The {server.product} server is running with the --{option} option so it "
            "cannot execute this statement' (1290).",
            "Point the writing aliases at the primary (keep this server for a read-replica "
            "alias with a database router), or SET GLOBAL read_only = OFF (and "
            "super_read_only = OFF on MySQL).",
        )
    ]  # fmt: skip


def _user_limit(server: MySQLFacts, dbs: list[Database], model: Processes) -> list[Finding]:
    """The account's max_user_connections against what the processes may open."""
    limit = server.max_user_connections
    need = demand(server, dbs, model)
    if not limit or not need.formula or need.total <= limit:
        return []
    name, _, host = server.user.partition("@")
    account = f"'{name}'@'{host or '%'}'"
    if server.account_limit:
        whose = "the account's own limit"
        error = f"'User '{name}' has exceeded the 'max_user_connections' resource' (1226)"
        raise_it = f"ALTER USER {account} WITH MAX_USER_CONNECTIONS {need.total}"
    else:
        whose = "the server's, for every account"
        error = (
            f"'User {name} already has more than 'max_user_connections' active connections' (1203)"
        )
        raise_it = f"SET GLOBAL max_user_connections = {need.total}"
    share = processes_sharing(model)
    return [
        Finding(
            "CG205", "error", server.address,
            f"{server.address}: the processes may open {need.total} connections "
            f"({need.formula}) but the account {account} may hold {limit} at once "
            f"(max_user_connections {limit}, {whose}): past that, connects fail with {error}.",
            f"Lower max_size to {max_size_within(limit, model, dbs)} (for "
            f"{plural(share, 'process', 'processes')}), or raise the limit: {raise_it}.",
        )
    ]  # fmt: skip


_PROXY_LIMITS = {
    "proxysql": (
        "ProxySQL",
        "its own limits for clients (mysql-max_connections, mysql-wait_timeout, and "
        "max_connections per backend in mysql_servers) are on its admin interface (port "
        "6032), which the doctor does not read",
    ),
    "maxscale": (
        "MaxScale",
        "its own limits for clients (the service's max_connections, connection_timeout) are "
        "in its configuration, which the doctor does not read",
    ),
}


def _in_front(db: Database, server: MySQLFacts) -> list[Finding]:
    pooler = server.pooler
    if pooler is None:
        return []
    name, limits = _PROXY_LIMITS.get(
        pooler.kind, ("something", "a ProxySQL or MaxScale has limits of its own, unread")
    )
    return [
        Finding(
            "CG404", "info", db.alias,
            f"{db.alias}: {name} is between the application and the server: "
            f"{pooler.detail}.",
            f"The numbers above are the server's behind it; {limits}: keep the processes' "
            "demand below its client limit and max_idle below its idle timeout. A port "
            "mapping or TCP proxy needs nothing.",
        )
    ]  # fmt: skip
