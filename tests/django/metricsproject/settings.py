"""Settings read from ``CGT_*`` variables (the same as testproject's, so demo.processes.django_env
works): CGT_DB_ENGINE, CGT_DB_NAME/HOST/PORT/USER/PASSWORD, CGT_CONN_MAX_AGE (seconds or
``none``), CGT_CONN_HEALTH_CHECKS, CGT_DB_OPTIONS (JSON). Plus CGT_DISABLE_SERVER_SIDE_CURSORS.
"""

from __future__ import annotations

import json
import os


def _env(name: str, default: str = "") -> str:
    return os.environ.get("CGT_" + name, default)


def _max_age() -> int | None:
    raw = _env("CONN_MAX_AGE", "0").strip().lower()
    return None if raw in {"none", "null"} else int(raw)


SECRET_KEY = "connguard-metricsproject-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
INSTALLED_APPS = ["connguard"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "metricsproject.urls"
WSGI_APPLICATION = "metricsproject.wsgi.application"
USE_TZ = True
TIME_ZONE = "UTC"

DATABASES = {
    "default": {
        "ENGINE": _env("DB_ENGINE", "connguard.backends.postgresql"),
        "NAME": _env("DB_NAME", "postgres"),
        "HOST": _env("DB_HOST", "127.0.0.1"),
        "PORT": _env("DB_PORT", "5432"),
        "USER": _env("DB_USER", "postgres"),
        "PASSWORD": _env("DB_PASSWORD"),
        "CONN_MAX_AGE": _max_age(),
        "CONN_HEALTH_CHECKS": _env("CONN_HEALTH_CHECKS", "0") == "1",
        "DISABLE_SERVER_SIDE_CURSORS": _env("DISABLE_SERVER_SIDE_CURSORS", "0") == "1",
        "OPTIONS": json.loads(_env("DB_OPTIONS", "{}")),
    }
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"django": {"handlers": ["stderr"], "level": "WARNING"}},
}
