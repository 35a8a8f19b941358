"""The rules: facts in, findings out (each with its numbers and its fix)."""

from __future__ import annotations

from connguard.doctor.databases import CONNGUARD_ENGINE
from connguard.doctor.findings import SEVERITIES, Finding
from connguard.doctor.model import Database, Demand, Processes, Server
from connguard.doctor.text import about, dur, plural

_WARN_FRACTION = 0.8


def unreachable(servers: list[Server], databases: list[Database]) -> list[Finding]:
    """CG001 for each server that could not be inspected."""
    findings: list[Finding] = []
    for server in servers:
        if server.error:
            aliases = ", ".join(d.alias for d in databases if d.server is server)
            findings.append(
                Finding(
                    "CG001", "error", server.address,
                    f"cannot connect to {server.address} ({aliases}): {server.error}",
                    "Check HOST/PORT/NAME/USER and that the server runs and accepts "
                    "connections from here.",
                )
            )  # fmt: skip
    return findings


def diagnose(databases: list[Database], model: Processes) -> list[Finding]:
    """Every finding for these databases (each with its ``server`` inspected)."""
    found: list[Finding] = []
    servers: dict[str, Server] = {}
    for db in databases:
        if db.server is not None and db.server.error is None:
            servers.setdefault(db.server.address, db.server)
    for server in servers.values():
        found += _server_findings(server, [d for d in databases if d.server is server])
    for db in databases:
        if db.server is not None and db.server.error is None:
            found += _idle_findings(db, db.server)
            found += _pooler_findings(db, db.server)
    for address, server in servers.items():
        found += _budget_findings(
            server, [d for d in databases if d.server and d.server.address == address], model
        )
    found += _process_findings(databases, model)
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    found.sort(key=lambda f: (rank[f.severity], f.id, f.subject))
    return found


def _server_findings(server: Server, dbs: list[Database]) -> list[Finding]:
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


def _idle_findings(db: Database, server: Server) -> list[Finding]:
    found = []
    bound = db.idle_bound()
    timeouts = [("CG101", "idle_session_timeout", server.idle_session_timeout, server.address)]
    if server.pooler is not None and server.pooler.kind == "pgbouncer":
        timeouts.append(
            ("CG102", "client_idle_timeout", server.pooler.client_idle_timeout, "PgBouncer")
        )
    for fid, name, timeout, who in timeouts:
        if not timeout or bound < timeout:
            continue
        if db.pooled:
            what = _idle_reason(db)
        else:
            what = f"a worker keeps its connection between requests for up to {_age(db)}"
        consequence, severity = _idle_consequence(db)
        fix = _idle_fix(db, timeout, name)
        found.append(
            Finding(
                fid, severity, db.alias,
                f"{db.alias}: {who} closes sessions idle for {dur(timeout)} ({name}), "
                f"but {what}; {consequence}",
                fix,
            )
        )  # fmt: skip
    return found


def _idle_reason(db: Database) -> str:
    if db.keepalive_interval:
        return f"the pool pings idle connections only every {dur(db.keepalive_interval)}"
    if db.min_size:
        return (
            f"the pool keeps {db.min_size} (min_size) connections open however long they "
            f"idle, up to max_lifetime {dur(db.max_lifetime)}"
        )
    return (
        f"the pool closes idle connections only after max_idle {dur(db.max_idle)} "
        f"(max_lifetime {dur(db.max_lifetime)})"
    )


def _idle_consequence(db: Database) -> tuple[str, str]:
    if db.engine in ("connguard", "dsn"):
        return (
            "connguard finds such connections dead at checkout and replaces them "
            "(connections_lost), at the cost of a reconnect each time.",
            "warning",
        )
    if db.health_checks:
        return (
            "CONN_HEALTH_CHECKS finds them dead at the start of a request and reconnects.",
            "warning",
        )
    return (
        "the first query on such a connection fails with 'terminating connection due to "
        "idle-session timeout' (or 'server closed the connection unexpectedly').",
        "error",
    )


def _idle_fix(db: Database, timeout: float, name: str) -> str:
    below = dur(max(1.0, timeout * 0.5))
    exempt = (
        "exempt the application's role: ALTER ROLE app SET idle_session_timeout = 0"
        if name == "idle_session_timeout"
        else "set client_idle_timeout = 0 in pgbouncer.ini"
    )
    if db.engine in ("connguard", "dsn") and db.pooled:
        key, also = (
            ("OPTIONS['pool']['keepalive_interval']", "['max_idle']")
            if db.engine == "connguard"
            else ("the pool's keepalive_interval", "max_idle")
        )
        return (
            f"Set {key} below the timeout (e.g. {below}: idle connections are then pinged), "
            f"or {also} to {below} with min_size 0; or {exempt}."
        )
    if db.mode == "Django pool":
        return (
            f"Use ENGINE '{CONNGUARD_ENGINE}' (it checks connections at checkout), or set "
            f"OPTIONS['pool'] max_idle to {below} with min_size 0 and CONN_HEALTH_CHECKS = True."
        )
    age = int(max(1.0, timeout * 0.5))
    if db.engine == "connguard":  # OPTIONS['pool'] = False: Django's persistent connections
        return f"Set CONN_MAX_AGE below the timeout (e.g. {age}), or turn the pool back on."
    return (
        f"Use ENGINE '{CONNGUARD_ENGINE}', or set CONN_MAX_AGE below the timeout (e.g. "
        f"{age}) and CONN_HEALTH_CHECKS = True."
    )


def _age(db: Database) -> str:
    return "ever (CONN_MAX_AGE None)" if db.conn_max_age is None else dur(db.conn_max_age)


def _pooler_findings(db: Database, server: Server) -> list[Finding]:
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


def demand(server: Server, dbs: list[Database], model: Processes) -> Demand:
    terms: list[str] = []
    total = 0
    unbounded: list[str] = []
    for db in dbs:
        per_worker = db.per_process(model.concurrency)
        if per_worker is None:
            unbounded.append(db.alias)
            continue
        term = f"{plural(model.workers, 'worker')} x {per_worker} ({db.alias})"
        total += model.workers * per_worker
        if model.celery:
            per_task = db.per_process(1) or 1
            total += model.celery * per_task
            term += f" + {model.celery} Celery x {per_task}"
        terms.append(term)
    total *= model.hosts
    formula = " + ".join(terms)
    if model.hosts > 1 and terms:
        formula = f"{model.hosts} hosts x ({formula})"
    pooler = server.pooler
    if pooler is not None and pooler.kind == "pgbouncer" and pooler.max_client_conn:
        limit = pooler.max_client_conn
    else:
        limit = server.budget
    return Demand(server.address, total, formula, limit, unbounded)


def _budget_findings(server: Server, dbs: list[Database], model: Processes) -> list[Finding]:
    """Connections all processes of all hosts may open to this server at once."""
    need = demand(server, dbs, model)
    total, formula = need.total, need.formula
    unbounded = [db for db in dbs if db.alias in need.unbounded]
    found = []
    for db in unbounded:
        if db.mode == "persistent":
            continue  # CG303 says worse
        found.append(
            Finding(
                "CG204", "warning", db.alias,
                f"{db.alias}: under ASGI every request in flight opens its own connection "
                f"({db.describe()}): nothing bounds how many of the {server.budget} "
                f"connections of {server.address} a burst takes.",
                f"Use ENGINE '{CONNGUARD_ENGINE}' (at most max_size per process; others wait "
                "for timeout), or Django's pool.",
            )
        )  # fmt: skip
    if not formula:
        return found
    pooler = server.pooler
    if pooler is not None and pooler.kind == "pgbouncer":
        if pooler.max_client_conn and total > pooler.max_client_conn:
            found.append(
                Finding(
                    "CG203", "error", server.address,
                    f"PgBouncer at {server.address}: up to {total} client connections "
                    f"({formula}) but max_client_conn is {pooler.max_client_conn}: the "
                    "rest are refused with 'no more connections allowed'.",
                    f"Raise max_client_conn to at least {total}, or lower max_size.",
                )
            )  # fmt: skip
        return found
    budget = server.budget
    reserved = server.superuser_reserved + server.reserved
    budget_text = f"{server.max_connections} max_connections - {reserved} reserved = {budget}"
    share = model.hosts * (model.workers + model.celery)
    if total > budget:
        suggest = max(1, budget // max(1, share * max(1, len(dbs))))
        found.append(
            Finding(
                "CG201", "error", server.address,
                f"{server.address}: the processes may open {total} connections ({formula}) "
                f"but the server accepts {budget} ({budget_text}): past that, connects fail "
                "with 'sorry, too many clients already'.",
                f"Lower max_size to {suggest} (for {plural(share, 'process', 'processes')}), "
                "put PgBouncer in transaction mode in front, or raise max_connections.",
            )
        )  # fmt: skip
    elif total > budget * _WARN_FRACTION:
        found.append(
            Finding(
                "CG202", "warning", server.address,
                f"{server.address}: the processes may open {total} connections ({formula}), "
                f"{round(100 * total / max(1, budget))}% of the {budget} the server accepts "
                f"({budget_text}); deploys (old and new workers at once), migrations and "
                "consoles need room too.",
                f"Lower max_size to {max(1, int(budget * _WARN_FRACTION) // max(1, share * len(dbs)))} "
                f"(for {plural(share, 'process', 'processes')}), or raise max_connections, so "
                f"that the total stays below {int(budget * _WARN_FRACTION)}.",
            )
        )  # fmt: skip
    return found


def _process_findings(dbs: list[Database], model: Processes) -> list[Finding]:
    found = []
    for db in dbs:
        if model.preload and db.engine == "django":
            if db.mode in ("persistent", "Django pool"):
                found.append(
                    Finding(
                        "CG301", "error", db.alias,
                        f"{db.alias}: gunicorn --preload with {db.describe()}: a connection "
                        "opened in the master (a query at import time or in AppConfig.ready()) "
                        "is inherited by every worker, which then share one server session: "
                        "crossed results, 'lost synchronization with server', SSL errors.",
                        f"Use ENGINE '{CONNGUARD_ENGINE}' (each worker drops inherited "
                        "connections without a byte sent), or close them in the master before "
                        "it forks: a gunicorn pre_fork hook calling "
                        "django.db.connections.close_all().",
                    )
                )  # fmt: skip
            else:
                found.append(
                    Finding(
                        "CG301", "warning", db.alias,
                        f"{db.alias}: gunicorn --preload: a connection opened in the master (a "
                        "query at import time or in AppConfig.ready()) stays open there and is "
                        "inherited by every worker; each closes its copy at its first request, "
                        "which ends the session the master still holds.",
                        f"Use ENGINE '{CONNGUARD_ENGINE}', or avoid queries at import time, or "
                        "call django.db.connections.close_all() in a gunicorn pre_fork hook.",
                    )
                )  # fmt: skip
        elif model.preload and db.engine == "connguard":
            found.append(
                Finding(
                    "CG302", "info", db.alias,
                    f"{db.alias}: gunicorn --preload: connections opened in the master are "
                    "discarded by each worker without a byte sent (connguard logs where they "
                    "were opened, and counts connections_discarded_after_fork).",
                    "Nothing to do; to save the master's connections, avoid queries at import "
                    "time and in AppConfig.ready().",
                )
            )  # fmt: skip
        if model.asgi and db.mode == "persistent":
            found.append(
                Finding(
                    "CG303", "error", db.alias,
                    f"{db.alias}: {db.describe()} under ASGI: Django keeps a connection per "
                    "thread and async context, which ASGI servers create per request; they are "
                    "never reused and pile up until 'too many clients already'.",
                    f"Set CONN_MAX_AGE = 0, or use ENGINE '{CONNGUARD_ENGINE}' with its pool "
                    "(connections return to it after every request).",
                )
            )  # fmt: skip
    return found
