"""PostgreSQL's rules: the server's own settings (read-only, TCP keepalives, statement and
idle-in-transaction timeouts), a PgBouncer in front, and the words the shared rules use."""

from __future__ import annotations

from connguard.doctor.findings import Finding
from connguard.doctor.model import Database, PostgresFacts, Processes, ServerFacts
from connguard.doctor.rules import DatabaseRules
from connguard.doctor.text import about


class PostgresRules(DatabaseRules):
    engine = "connguard.backends.postgresql"
    idle_error = (
        "'terminating connection due to idle-session timeout' (or 'server closed the "
        "connection unexpectedly')"
    )
    full_error = "'sorry, too many clients already'"
    pile_up_error = "'too many clients already'"
    shared_session_errors = "crossed results, 'lost synchronization with server', SSL errors"
    multiplexer = "put PgBouncer in transaction mode in front"
    or_django_pool = ", or Django's pool"

    def idle_timeouts(self, server: ServerFacts) -> list[tuple[str, str, float, str]]:
        assert isinstance(server, PostgresFacts)
        timeouts = [("CG101", "idle_session_timeout", server.idle_session_timeout, server.address)]
        if server.pooler is not None and server.pooler.kind == "pgbouncer":
            timeouts.append(
                ("CG102", "client_idle_timeout", server.pooler.client_idle_timeout, "PgBouncer")
            )
        return timeouts

    def exempt(self, name: str, db: Database) -> str:
        if name == "idle_session_timeout":
            return "exempt the application's role: ALTER ROLE app SET idle_session_timeout = 0"
        return "set client_idle_timeout = 0 in pgbouncer.ini"

    def budget_text(self, server: ServerFacts) -> str:
        assert isinstance(server, PostgresFacts)
        reserved = server.superuser_reserved + server.reserved
        return f"{server.max_connections} max_connections - {reserved} reserved = {server.budget}"

    def server_findings(
        self, server: ServerFacts, dbs: list[Database], model: Processes
    ) -> list[Finding]:
        assert isinstance(server, PostgresFacts)
        return _server_findings(server, dbs)

    def database_findings(
        self, db: Database, server: ServerFacts, model: Processes
    ) -> list[Finding]:
        assert isinstance(server, PostgresFacts)
        return _pooler_findings(db, server)


def _server_findings(server: PostgresFacts, dbs: list[Database]) -> list[Finding]:
    found = []
    where = server.address
    if server.in_recovery or server.default_read_only:
        why = (
            "it is a standby in recovery (pg_is_in_recovery() is true)"
            if server.in_recovery
            else "default_transaction_read_only is on"
        )
        found.append(
            Finding(
                "CG501", "warning", where,
                f"{where} is read-only: {why}; every write will fail with "
                "'cannot execute ... in a read-only transaction'.",
                "Point the writing aliases at the primary (keep this server for a "
                "read-replica alias with a database router), or "
                "ALTER SYSTEM SET default_transaction_read_only = off.",
            )
        )  # fmt: skip
    if server.via_tcp and (server.tcp_keepalives_idle == 0 or server.tcp_keepalives_idle > 600):
        idle = server.tcp_keepalives_idle or 7200
        total = idle + (server.tcp_keepalives_interval or 75) * (server.tcp_keepalives_count or 9)
        found.append(
            Finding(
                "CG103", "info", where,
                f"{where}: tcp_keepalives_idle is {idle} s: the session of a client that "
                "vanished without closing its socket (a killed host or container, a cut "
                f"network) keeps one of the {server.budget} connection slots for about "
                f"{about(total)}.",
                "ALTER SYSTEM SET tcp_keepalives_idle = 60; ALTER SYSTEM SET "
                "tcp_keepalives_interval = 10; ALTER SYSTEM SET tcp_keepalives_count = 6; "
                "SELECT pg_reload_conf();",
            )
        )  # fmt: skip
    if not server.statement_timeout and not all(d.statement_timeout_set for d in dbs):
        found.append(
            Finding(
                "CG104", "info", where,
                f"{where}: statement_timeout is off: a runaway query holds its connection, "
                "and its pool slot, until it ends.",
                "Set a bound for the application's role (ALTER ROLE app SET statement_timeout "
                "= '30s') or per alias: OPTIONS['options'] = '-c statement_timeout=30000'.",
            )
        )  # fmt: skip
    if not server.idle_in_transaction_session_timeout:
        found.append(
            Finding(
                "CG105", "info", where,
                f"{where}: idle_in_transaction_session_timeout is off: a session left idle "
                "inside a transaction (a leak, a debugger, a crashed worker's half-done "
                "request) holds its locks and its connection indefinitely.",
                "ALTER SYSTEM SET idle_in_transaction_session_timeout = '60s'; SELECT "
                "pg_reload_conf(); and set the pool's leak_threshold to find who holds "
                "connections too long.",
            )
        )  # fmt: skip
    return found


def _pooler_findings(db: Database, server: PostgresFacts) -> list[Finding]:
    found = []
    pooler = server.pooler
    detected = pooler.pool_mode if pooler is not None and pooler.kind == "pgbouncer" else None
    mode = db.server_pooler or detected
    if pooler is not None and pooler.kind == "proxy" and not db.server_pooler:
        found.append(
            Finding(
                "CG404", "info", db.alias,
                f"{db.alias}: something is between the application and the server: "
                f"{pooler.detail}.",
                "If it is a pooler in transaction or statement mode, declare it: "
                "OPTIONS['pool']['server_pooler'] = 'transaction' (then connguard's checks "
                "apply). A port mapping or TCP proxy needs nothing.",
            )
        )  # fmt: skip
    if detected in ("transaction", "statement") and db.server_pooler != detected:
        assert pooler is not None
        declared = "not declared" if db.server_pooler is None else f"declared {db.server_pooler!r}"
        found.append(
            Finding(
                "CG403", "warning", db.alias,
                f"{db.alias}: PgBouncer {pooler.version} at {server.address} runs in "
                f"{detected} mode, but the settings say server_pooler is {declared}.",
                f"Set OPTIONS['pool']['server_pooler'] = {detected!r}, so that the system "
                "checks guard against what this mode breaks.",
            )
        )  # fmt: skip
    if mode not in ("transaction", "statement"):
        return found
    source = "PgBouncer" if detected == mode else "the declared pooler"
    if db.server_side_cursors:
        found.append(
            Finding(
                "CG401", "error", db.alias,
                f"{db.alias}: server-side cursors are enabled behind {source} in {mode} mode: "
                "QuerySet.iterator() fails with 'cursor \"...\" does not exist' when the "
                "pooler runs the next fetch on another server connection.",
                f"Set DATABASES[{db.alias!r}]['DISABLE_SERVER_SIDE_CURSORS'] = True.",
            )
        )  # fmt: skip
    tracked = pooler is not None and pooler.max_prepared_statements > 0
    if db.prepare_threshold is not None and not tracked:
        where = (
            f"OPTIONS['prepare_threshold'] = {db.prepare_threshold}"
            if db.engine != "dsn"
            else f"prepare_threshold {db.prepare_threshold}"
        )
        found.append(
            Finding(
                "CG402", "warning", db.alias,
                f"{db.alias}: prepared statements are enabled ({where}) behind {source} in "
                f"{mode} mode: they fail with 'prepared statement \"_pg3_0\" does not exist' "
                "when a later execution lands on another server connection.",
                "Remove OPTIONS['prepare_threshold'] (Django then disables them), or run "
                "PgBouncer >= 1.21 with max_prepared_statements > 0.",
            )
        )  # fmt: skip
    return found
