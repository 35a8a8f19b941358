"""System checks (``manage.py check``): ids ``connguard.E0xx`` (errors) and ``connguard.W0xx``.

| id | what |
|----|------|
| E001 | invalid or unknown ``OPTIONS["pool"]`` option |
| W002 | connguard is installed but an alias uses Django's own PostgreSQL or MySQL ENGINE |
| E003 | server-side cursors enabled behind a transaction/statement-mode pooler |
| W004 | prepared statements enabled behind a transaction/statement-mode pooler |
| W005 | ``CONN_MAX_AGE`` set with the default pool (no ``OPTIONS["pool"]``): it has no effect |
| E007 | ``CONN_MAX_AGE`` set with an explicit ``OPTIONS["pool"]``: refused, as Django's pool does |
| W006 | Django's built-in pool configured on the stock ENGINE next to connguard |
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from connguard.backends import registry

ENGINE = "connguard.backends.postgresql"
MYSQL_ENGINE = "connguard.backends.mysql"
#: Django's own ENGINE -> connguard's
_OURS = {"django.db.backends.postgresql": ENGINE, "django.db.backends.mysql": MYSQL_ENGINE}


# Not tagged "database": these read settings only, and Django 6.1 runs database-tagged checks
# only when `manage.py check --database` names an alias. `check --tag connguard` selects them.
@checks.register("connguard")
def check_pools(
    app_configs: Any = None, databases: Any = None, **_: Any
) -> list[checks.CheckMessage]:
    found: list[checks.CheckMessage] = []
    for alias, db in settings.DATABASES.items():
        engine = db.get("ENGINE", "")
        ours = _OURS.get(engine)
        if ours is not None:
            found.append(
                checks.Warning(
                    f"DATABASES[{alias!r}] uses {engine!r} although connguard is installed: "
                    "its connections are not pooled, fork-safe or self-healing.",
                    hint=f"Set DATABASES[{alias!r}]['ENGINE'] = {ours!r}.",
                    id="connguard.W002",
                )
            )
            if ours == ENGINE and db.get("OPTIONS", {}).get("pool"):
                found.append(
                    checks.Warning(
                        f"DATABASES[{alias!r}] configures Django's built-in pool, which is not "
                        "fork-safe and has no leak detection or metrics.",
                        hint=f"Keep OPTIONS['pool'] as it is and set ENGINE to {ours!r}: "
                        "connguard accepts the same keys.",
                        id="connguard.W006",
                    )
                )
            continue
        if engine not in (ENGINE, MYSQL_ENGINE):
            continue
        try:
            config = registry.validate(alias, db)
        except ImproperlyConfigured as exc:
            found.append(checks.Error(str(exc), id="connguard.E001"))
            continue
        options = db.get("OPTIONS", {})
        pool = options.get("pool")
        pooler = pool.get("server_pooler") if isinstance(pool, dict) else None
        if pooler in ("transaction", "statement"):
            if not db.get("DISABLE_SERVER_SIDE_CURSORS", False):
                found.append(
                    checks.Error(
                        f"DATABASES[{alias!r}] declares a {pooler}-mode pooler "
                        f"(OPTIONS['pool']['server_pooler']={pooler!r}) but server-side "
                        "cursors are enabled: .iterator() will fail with 'cursor does not "
                        "exist' when the pooler moves the transaction to another server "
                        "connection.",
                        hint=f"Set DATABASES[{alias!r}]['DISABLE_SERVER_SIDE_CURSORS'] = True.",
                        id="connguard.E003",
                    )
                )
            if options.get("prepare_threshold") is not None:
                found.append(
                    checks.Warning(
                        f"DATABASES[{alias!r}] enables prepared statements "
                        f"(OPTIONS['prepare_threshold']={options['prepare_threshold']!r}) "
                        f"behind a {pooler}-mode pooler: they fail with 'prepared statement "
                        "does not exist' unless the pooler tracks them (PgBouncer >= 1.21 "
                        "with max_prepared_statements).",
                        hint="Remove OPTIONS['prepare_threshold'], or set it to None.",
                        id="connguard.W004",
                    )
                )
        max_age = db.get("CONN_MAX_AGE", 0)
        if config is not None and max_age and "pool" in options:
            found.append(
                checks.Error(
                    f"DATABASES[{alias!r}]['CONN_MAX_AGE']={max_age!r} with "
                    f"{registry.option_path(alias)}: the pool refuses persistent connections "
                    "(as Django's own pool does); connections go back to the pool after every "
                    "request.",
                    hint=f"Remove CONN_MAX_AGE (or set 0); tune {registry.option_path(alias, 'max_lifetime')} "
                    "instead.",
                    id="connguard.E007",
                )
            )
        elif config is not None and max_age:
            found.append(
                checks.Warning(
                    f"DATABASES[{alias!r}]['CONN_MAX_AGE']={max_age!r} has no effect with the "
                    "connguard pool: connections go back to the pool after every request, and "
                    "the pool's max_lifetime (default 3600 s) bounds how long a server "
                    "connection lives.",
                    hint=f"Remove CONN_MAX_AGE (or set 0); tune {registry.option_path(alias, 'max_lifetime')} "
                    "instead.",
                    id="connguard.W005",
                )
            )
    return found
