"""Settings for the connguard test project, read entirely from ``CGT_*`` environment variables.

Database:
    CGT_DB_ENGINE             default ``django.db.backends.postgresql``
                              (``connguard.backends.postgresql`` for connguard); MariaDB/MySQL:
                              ``django.db.backends.mysql`` or ``connguard.backends.mysql``
    CGT_DB_NAME / CGT_DB_HOST / CGT_DB_PORT / CGT_DB_USER / CGT_DB_PASSWORD
    CGT_CONN_MAX_AGE          integer seconds, or ``none`` for unlimited persistence (default 0)
    CGT_CONN_HEALTH_CHECKS    ``1``/``0`` (default 0)
    CGT_DISABLE_SERVER_SIDE_CURSORS  ``1``/``0`` (default 0; set it behind a transaction-mode
                              pooler such as PgBouncer)
    CGT_DB_OPTIONS            JSON object for ``DATABASES["default"]["OPTIONS"]``,
                              e.g. ``{"pool": {"min_size": 2}}``; for MySQL also its own keys
                              (``charset``, ``init_command``, ``isolation_level``, ``ssl``);
                              ``charset`` defaults to ``utf8mb4`` there
    CGT_DB_DRIVER             ``psycopg2`` hides psycopg 3 so Django's backend falls back to
                              psycopg2 (needed for the gevent + psycogreen setup)

Fork/import-time behaviour (the classic pre-fork bugs):
    CGT_QUERY_IN_READY        run a query in ``AppConfig.ready()`` (gunicorn ``--preload`` bug)
    CGT_IMPORT_TIME_QUERY     run a module-level query when wsgi.py/asgi.py is imported
                              (``connguard.demo.project.app.preload``), before any worker is forked

Multiple databases:
    CGT_DB_OTHER_NAME         adds the alias ``other`` (that database, same server and
                              settings); ``app.routers.DemoRouter`` puts ``Event`` there

Celery (kombu filesystem broker, filesystem result backend; no service needed):
    CGT_CELERY_DIR            directory holding the broker queue and results
"""

from __future__ import annotations

import json
import os
import sys


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get("CGT_" + name, default)


def env_flag(name: str, default: bool = False) -> bool:
    value = _env(name)
    if value is None or value.strip() == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _conn_max_age() -> int | None:
    raw = (_env("CONN_MAX_AGE") or "0").strip().lower()
    if raw in {"none", "null", "unlimited"}:
        return None
    return int(raw)


if (_env("DB_DRIVER") or "").strip().lower() == "psycopg2" and "psycopg" not in sys.modules:
    # Django's postgresql backend prefers psycopg 3 when importable; a ``None`` entry in
    # sys.modules makes ``import psycopg`` raise ImportError so it falls back to psycopg2.
    sys.modules["psycopg"] = None  # type: ignore[assignment]

BASE_DIR = os.path.dirname(os.path.abspath(__file__))

SECRET_KEY = "connguard-demo-project-not-a-secret"
DEBUG = env_flag("DEBUG")
ALLOWED_HOSTS = ["*"]

INSTALLED_APPS = ["connguard.demo.project.app.apps.TestAppConfig"]
# No middleware: async views stay natively async under ASGI, and the views turn database
# errors into JSON 500 responses themselves (so the load client can classify them).
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "connguard.demo.project.urls"
WSGI_APPLICATION = "connguard.demo.project.wsgi.application"
ASGI_APPLICATION = "connguard.demo.project.asgi.application"

USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {
    "default": {
        "ENGINE": _env("DB_ENGINE") or "django.db.backends.postgresql",
        "NAME": _env("DB_NAME") or "connguard_test",
        "HOST": _env("DB_HOST") or "127.0.0.1",
        "PORT": _env("DB_PORT") or "5432",
        "USER": _env("DB_USER") or "postgres",
        "PASSWORD": _env("DB_PASSWORD") or "",
        "CONN_MAX_AGE": _conn_max_age(),
        # CONN_HEALTH_CHECKS exists since Django 4.1 (fine for 5.2, 6.0 and 6.1).
        "CONN_HEALTH_CHECKS": env_flag("CONN_HEALTH_CHECKS"),
        "DISABLE_SERVER_SIDE_CURSORS": env_flag("DISABLE_SERVER_SIDE_CURSORS"),
        "OPTIONS": json.loads(_env("DB_OPTIONS") or "{}"),
    }
}
if _env("DB_OTHER_NAME"):
    # A second alias on another database (same server and settings): the router sends the
    # Event model there (multiple-database scenario).
    DATABASES["other"] = {
        **DATABASES["default"],
        "NAME": _env("DB_OTHER_NAME"),
        "OPTIONS": json.loads(_env("DB_OPTIONS") or "{}"),
    }
DATABASE_ROUTERS = ["connguard.demo.project.app.routers.DemoRouter"]

for _alias, _db in DATABASES.items():
    if _db["ENGINE"].endswith(".mysql"):
        _db["OPTIONS"].setdefault("charset", "utf8mb4")
    elif _db["ENGINE"] == "django.db.backends.postgresql":
        # connguard names its connections <app>:<alias>:<pid>; give the stock backend's the
        # same shape, so that the harness can find (and terminate) either engine's connections.
        _db["OPTIONS"].setdefault(
            "application_name",
            f"{os.environ.get('CONNGUARD_APP_NAME', 'cgdemo')}:{_alias}:{os.getpid()}"[-63:],
        )

QUERY_IN_READY = env_flag("QUERY_IN_READY")
IMPORT_TIME_QUERY = env_flag("IMPORT_TIME_QUERY")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
    "loggers": {
        "django": {"handlers": ["stderr"], "level": "WARNING"},
        "connguard.demo.project": {"handlers": ["stderr"], "level": "INFO"},
        "connguard": {"handlers": ["stderr"], "level": "INFO"},
    },
}
