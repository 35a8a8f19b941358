"""Settings of the benchmark project, read from ``CGB_*`` environment variables."""

from __future__ import annotations

import json
import os

SECRET_KEY = "connguard-bench-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]

# "connguard" wires nothing on the request path (system checks, Celery signals); it is listed
# as the README tells users to, for every configuration alike.
INSTALLED_APPS = ["connguard", "djbench"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "djbench.urls"
WSGI_APPLICATION = "djbench.wsgi.application"
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

DATABASES = {"default": json.loads(os.environ.get("CGB_DATABASE") or "{}")}
DATABASES["default"].setdefault("ENGINE", "django.db.backends.postgresql")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
    "loggers": {
        "django": {"handlers": ["stderr"], "level": "ERROR"},
        "connguard": {"handlers": ["stderr"], "level": "WARNING"},
    },
}
