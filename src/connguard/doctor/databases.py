"""The databases to examine: the aliases of Django's ``DATABASES`` (each with the pool or
persistent connections it runs with), or the ``--dsn`` with the pool settings given."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence

from connguard.doctor.model import Database

CONNGUARD_ENGINE = "connguard.backends.postgresql"
STOCK_ENGINES = frozenset(
    {
        "django.db.backends.postgresql",
        "django.db.backends.postgresql_psycopg2",
        "django.contrib.gis.db.backends.postgis",
    }
)


def setup_django(settings_module: str | None) -> str | None:
    """Make Django's settings usable; an error text when there are none."""
    try:
        from django.conf import settings
    except ImportError:
        return "give --dsn (Django is not installed)"
    if settings.configured and settings_module is None:
        return None
    if settings_module:
        os.environ["DJANGO_SETTINGS_MODULE"] = settings_module
    if not os.environ.get("DJANGO_SETTINGS_MODULE"):
        return "give --dsn, or --settings (or DJANGO_SETTINGS_MODULE) for a Django project"
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    import django

    django.setup()
    return None


def _libpq_keywords() -> frozenset[str]:
    from psycopg import pq

    return frozenset(o.keyword.decode() for o in pq.Conninfo.get_defaults())


def django_databases(only: Sequence[str] = ()) -> list[Database]:
    """Every PostgreSQL alias of the configured Django project."""
    from django.conf import settings
    from django.db import connections
    from psycopg.conninfo import make_conninfo

    keywords = _libpq_keywords()
    found = []
    for alias, db in settings.DATABASES.items():
        if only and alias not in only:
            continue
        engine = db.get("ENGINE", "")
        if engine != CONNGUARD_ENGINE and engine not in STOCK_ENGINES:
            continue
        options = db.get("OPTIONS", {}) or {}
        wrapper = connections[alias]
        bad_options = getattr(wrapper, "connguard_config_error", None)
        if bad_options is not None:  # the pool it would have is unknown: nothing to judge
            raise bad_options
        params = wrapper.get_connection_params()
        conninfo = make_conninfo(
            **{k: v for k, v in params.items() if k in keywords and v not in (None, "")}
        )
        conn_max_age = db.get("CONN_MAX_AGE", 0)
        item = Database(
            alias=alias,
            engine="connguard" if engine == CONNGUARD_ENGINE else "django",
            mode="per request",
            conninfo=conninfo,
            conn_max_age=None if conn_max_age is None else float(conn_max_age),
            health_checks=bool(db.get("CONN_HEALTH_CHECKS")),
            server_side_cursors=not db.get("DISABLE_SERVER_SIDE_CURSORS", False),
            prepare_threshold=options.get("prepare_threshold"),
            statement_timeout_set="statement_timeout" in str(options.get("options", "")),
        )
        pool = options.get("pool")
        if engine == CONNGUARD_ENGINE:
            config = getattr(wrapper, "connguard_config", None)
            if config is not None:
                item.mode = "connguard pool"
                item.min_size, item.max_size = config.min_size, config.max_size
                item.max_lifetime, item.max_idle = config.max_lifetime, config.max_idle
                item.keepalive_interval = config.keepalive_interval
                if isinstance(pool, Mapping):
                    item.server_pooler = pool.get("server_pooler")
            elif conn_max_age != 0:
                item.mode = "persistent"
        elif pool:
            # Django's built-in pool: psycopg_pool's defaults
            opts = pool if isinstance(pool, Mapping) else {}
            item.mode = "Django pool"
            item.min_size = int(opts.get("min_size", 4))
            item.max_size = int(opts.get("max_size") or item.min_size)
            item.max_lifetime = float(opts.get("max_lifetime", 3600.0))
            item.max_idle = float(opts.get("max_idle", 600.0))
        elif conn_max_age != 0:
            item.mode = "persistent"
        found.append(item)
    return found


def dsn_database(args: argparse.Namespace) -> Database:
    """The --dsn, pooled by connguard with the pool options given."""
    return Database(
        alias="--dsn",
        engine="dsn",
        mode="connguard pool",
        conninfo=args.dsn,
        min_size=args.min_size,
        max_size=args.max_size if args.max_size is not None else max(10, args.min_size),
        max_lifetime=args.max_lifetime,
        max_idle=args.max_idle,
        keepalive_interval=args.keepalive_interval,
        prepare_threshold=args.prepare_threshold,
        server_pooler=args.server_pooler,
        statement_timeout_set="statement_timeout" in args.dsn,
    )
