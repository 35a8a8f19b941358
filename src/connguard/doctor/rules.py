"""The rules every database shares: facts in, findings out (each with its numbers and its
fix). What they say differently per database comes from a :class:`DatabaseRules`
(:mod:`.rules_postgresql`, :mod:`.rules_mysql`), which also holds that database's own rules."""

from __future__ import annotations

import abc

from connguard.doctor.findings import Finding
from connguard.doctor.model import Database, Demand, Processes, ServerFacts
from connguard.doctor.text import dur, plural

_WARN_FRACTION = 0.8


class DatabaseRules(abc.ABC):
    """One database's rules, and the words the shared rules use for it."""

    engine: str  # connguard's ENGINE for it
    idle_error: str  # what the first query on a session the server closed fails with
    full_error: str  # what a connect fails with when the server is full
    pile_up_error: str  # what connections piling up end in
    shared_session_errors: str  # what workers sharing an inherited session see
    multiplexer: str  # the fix that puts something in front to share server connections
    or_django_pool: str = ""  # ", or Django's pool" where Django has one

    @abc.abstractmethod
    def idle_timeouts(self, server: ServerFacts) -> list[tuple[str, str, float, str]]:
        """``(finding id, setting, seconds, who)`` of each idle timeout in the way."""

    @abc.abstractmethod
    def exempt(self, name: str, db: Database) -> str:
        """The fix that takes the application out of idle timeout *name*."""

    @abc.abstractmethod
    def budget_text(self, server: ServerFacts) -> str:
        """How the server's connection budget is made up."""

    @abc.abstractmethod
    def server_findings(
        self, server: ServerFacts, dbs: list[Database], model: Processes
    ) -> list[Finding]:
        """Findings about the server itself (dbs: the aliases that use it)."""

    @abc.abstractmethod
    def database_findings(
        self, db: Database, server: ServerFacts, model: Processes
    ) -> list[Finding]:
        """This database's own findings about one alias (the pooler in front, ...)."""


def unreachable(servers: list[ServerFacts], databases: list[Database]) -> list[Finding]:
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


def idle_findings(db: Database, server: ServerFacts, rules: DatabaseRules) -> list[Finding]:
    """The server (or what is in front of it) closes sessions idle longer than db keeps them."""
    found = []
    bound = db.idle_bound()
    for fid, name, timeout, who in rules.idle_timeouts(server):
        if not timeout or bound < timeout:
            continue
        if db.pooled:
            what = idle_reason(db)
        else:
            what = f"a worker keeps its connection between requests for up to {age(db)}"
        consequence, severity = _idle_consequence(db, rules)
        fix = _idle_fix(db, timeout, name, rules)
        found.append(
            Finding(
                fid, severity, db.alias,
                f"{db.alias}: {who} closes sessions idle for {dur(timeout)} ({name}), "
                f"but {what}; {consequence}",
                fix,
            )
        )  # fmt: skip
    return found


def idle_reason(db: Database) -> str:
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


def _idle_consequence(db: Database, rules: DatabaseRules) -> tuple[str, str]:
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
    return f"the first query on such a connection fails with {rules.idle_error}.", "error"


def _idle_fix(db: Database, timeout: float, name: str, rules: DatabaseRules) -> str:
    below = dur(max(1.0, timeout * 0.5))
    exempt = rules.exempt(name, db)
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
            f"Use ENGINE '{rules.engine}' (it checks connections at checkout), or set "
            f"OPTIONS['pool'] max_idle to {below} with min_size 0 and CONN_HEALTH_CHECKS = True."
        )
    age = int(max(1.0, timeout * 0.5))
    if db.engine == "connguard":  # OPTIONS['pool'] = False: Django's persistent connections
        return f"Set CONN_MAX_AGE below the timeout (e.g. {age}), or turn the pool back on."
    return (
        f"Use ENGINE '{rules.engine}', or set CONN_MAX_AGE below the timeout (e.g. "
        f"{age}) and CONN_HEALTH_CHECKS = True."
    )


def age(db: Database) -> str:
    return "ever (CONN_MAX_AGE None)" if db.conn_max_age is None else dur(db.conn_max_age)


def demand(server: ServerFacts, dbs: list[Database], model: Processes) -> Demand:
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
    return Demand(server.address, total, formula, server.limit, unbounded)


def processes_sharing(model: Processes) -> int:
    """Processes of all hosts that open connections of their own."""
    return model.hosts * (model.workers + model.celery)


def max_size_within(limit: int, model: Processes, dbs: list[Database]) -> int:
    """The max_size that keeps every process of every alias within *limit* connections."""
    return max(1, limit // max(1, processes_sharing(model) * max(1, len(dbs))))


def budget_findings(
    server: ServerFacts, dbs: list[Database], model: Processes, rules: DatabaseRules
) -> list[Finding]:
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
                f"Use ENGINE '{rules.engine}' (at most max_size per process; others wait "
                f"for timeout){rules.or_django_pool}.",
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
    budget_text = rules.budget_text(server)
    share = processes_sharing(model)
    if total > budget:
        suggest = max_size_within(budget, model, dbs)
        found.append(
            Finding(
                "CG201", "error", server.address,
                f"{server.address}: the processes may open {total} connections ({formula}) "
                f"but the server accepts {budget} ({budget_text}): past that, connects fail "
                f"with {rules.full_error}.",
                f"Lower max_size to {suggest} (for {plural(share, 'process', 'processes')}), "
                f"{rules.multiplexer}, or raise max_connections.",
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
                f"Lower max_size to {max_size_within(int(budget * _WARN_FRACTION), model, dbs)} "
                f"(for {plural(share, 'process', 'processes')}), or raise max_connections, so "
                f"that the total stays below {int(budget * _WARN_FRACTION)}.",
            )
        )  # fmt: skip
    return found


def process_findings(dbs: list[Database], model: Processes, rules: DatabaseRules) -> list[Finding]:
    """What the process model does to the connections of dbs."""
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
                        f"{rules.shared_session_errors}.",
                        f"Use ENGINE '{rules.engine}' (each worker drops inherited "
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
                        f"Use ENGINE '{rules.engine}', or avoid queries at import time, or "
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
                    f"never reused and pile up until {rules.pile_up_error}.",
                    f"Set CONN_MAX_AGE = 0, or use ENGINE '{rules.engine}' with its pool "
                    "(connections return to it after every request).",
                )
            )  # fmt: skip
    return found
