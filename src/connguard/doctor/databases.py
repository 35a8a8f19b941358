"""The databases to examine: the aliases of Django's ``DATABASES`` (each with the pool or
persistent connections it runs with), or the ``--dsn`` with the pool settings given."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

from connguard.doctor.model import Database

#: ENGINE -> the database behind it, for the engines the doctor reads
CONNGUARD_ENGINES = {
    "connguard.backends.postgresql": "postgresql",
    "connguard.backends.mysql": "mysql",
}
STOCK_ENGINES = {
    "django.db.backends.postgresql": "postgresql",
    "django.db.backends.postgresql_psycopg2": "postgresql",
    "django.contrib.gis.db.backends.postgis": "postgresql",
    "django.db.backends.mysql": "mysql",
    "django.contrib.gis.db.backends.mysql": "mysql",
}
KINDS = ("postgresql", "mysql")


def _kind(engine: str) -> str | None:
    return CONNGUARD_ENGINES.get(engine) or STOCK_ENGINES.get(engine)


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


def django_kinds(only: Sequence[str] = ()) -> list[str]:
    """The databases (``"postgresql"``, ``"mysql"``) the configured project's aliases run
    on, each once."""
    from django.conf import settings

    kinds = []
    for alias, db in settings.DATABASES.items():
        kind = _kind(db.get("ENGINE", ""))
        if kind and kind not in kinds and (not only or alias in only):
            kinds.append(kind)
    return kinds


def django_databases(only: Sequence[str] = (), kinds: Sequence[str] = KINDS) -> list[Database]:
    """Every alias of the configured Django project on a database of *kinds*
    (``"postgresql"``, ``"mysql"``)."""
    from django.conf import settings

    found = []
    for alias, db in settings.DATABASES.items():
        if only and alias not in only:
            continue
        engine = db.get("ENGINE", "")
        kind = _kind(engine)
        if kind not in kinds:
            continue
        options = db.get("OPTIONS", {}) or {}
        conn_max_age = db.get("CONN_MAX_AGE", 0)
        pooled = engine in CONNGUARD_ENGINES
        item, config = _mysql_alias(alias, pooled) if kind == "mysql" else _postgres_alias(alias)
        item.engine = "connguard" if pooled else "django"
        item.conn_max_age = None if conn_max_age is None else float(conn_max_age)
        item.health_checks = bool(db.get("CONN_HEALTH_CHECKS"))
        pool = options.get("pool")
        if pooled:
            if config is not None:
                item.mode = "connguard pool"
                item.min_size, item.max_size = config.min_size, config.max_size
                item.max_lifetime, item.max_idle = config.max_lifetime, config.max_idle
                item.keepalive_interval = config.keepalive_interval
                if isinstance(pool, Mapping):
                    item.server_pooler = pool.get("server_pooler")
            elif conn_max_age != 0:
                item.mode = "persistent"
        elif pool and kind == "postgresql":
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


def _postgres_alias(alias: str) -> tuple[Database, Any]:
    """A PostgreSQL alias as its backend connects (a libpq conninfo), and its pool's config
    (None: not pooled by connguard)."""
    from django.db import connections
    from psycopg.conninfo import make_conninfo

    wrapper = connections[alias]
    bad_options = getattr(wrapper, "connguard_config_error", None)
    if bad_options is not None:  # the pool it would have is unknown: nothing to judge
        raise bad_options
    keywords = _libpq_keywords()
    params = wrapper.get_connection_params()
    options = wrapper.settings_dict.get("OPTIONS", {}) or {}
    item = Database(
        alias=alias,
        engine="",
        mode="per request",
        conninfo=make_conninfo(
            **{k: v for k, v in params.items() if k in keywords and v not in (None, "")}
        ),
        server_side_cursors=not wrapper.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS", False),
        prepare_threshold=options.get("prepare_threshold"),
        statement_timeout_set="statement_timeout" in str(options.get("options", "")),
    )
    return item, getattr(wrapper, "connguard_config", None)


def _mysql_alias(alias: str, pooled: bool) -> tuple[Database, Any]:
    """A MySQL/MariaDB alias as Django's MySQL backend connects: a ``mysql://`` URL and the
    rest of its ``MySQLdb.connect()`` keywords (``init_command``, ``client_flag``, ``ssl``,
    ...); and the pool's config for connguard's engine (the PostgreSQL backend's
    ``OPTIONS["pool"]`` keys and checks)."""
    from django.db import connections
    from django.db.backends.mysql.base import DatabaseWrapper

    settings_dict = dict(connections.settings[alias])
    options = dict(settings_dict.get("OPTIONS") or {})
    config = None
    if pooled:
        from connguard.backends.registry import validate

        config = validate(alias, settings_dict)  # PoolOptionsError (ImproperlyConfigured)
        options.pop("pool", None)
    params = DatabaseWrapper({**settings_dict, "OPTIONS": options}, alias).get_connection_params()
    database = params.pop("database", params.pop("db", ""))
    host, port = params.pop("host", ""), params.pop("port", "")
    user, password = params.pop("user", ""), params.pop("password", params.pop("passwd", ""))
    auth = quote(str(user), safe="") + (f":{quote(str(password), safe='')}" if password else "")
    netloc = f"{auth}@" if auth else ""
    netloc += (host or "localhost") + (f":{port}" if port else "")
    conninfo = f"mysql://{netloc}/{quote(str(database), safe='')}"
    item = Database(
        alias=alias, engine="", mode="per request", conninfo=conninfo, connect_kwargs=params
    )
    return item, config


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
