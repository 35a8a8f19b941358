"""What every part of the demo harness shares: the project it runs, the engines, the
default ``DATABASES`` keys, and the harness's errors."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

#: The Django project the harness runs: a package of connguard, so spawned processes import
#: it from wherever connguard itself is installed (no path to a source tree needed).
PROJECT = "connguard.demo.project"
SETTINGS_MODULE = f"{PROJECT}.settings"
WSGI_APP = f"{PROJECT}.wsgi:application"
ASGI_APP = f"{PROJECT}.asgi:application"
CELERY_APP = f"{PROJECT}.celery_app"
#: By file path, not ``python:<module>``: importing it as a module would import connguard
#: (hence Django and asgiref) in the gunicorn master before gevent's monkey-patching.
GEVENT_CONFIG = Path(__file__).resolve().parent / "project" / "gunicorn_gevent.py"
#: Celery task names (see project/celery_app.py)
TASK_ROW, TASK_WRITE = f"{PROJECT}.row", f"{PROJECT}.write"
PYTHON = sys.executable

STOCK_ENGINE = "django.db.backends.postgresql"
CONNGUARD_ENGINE = "connguard.backends.postgresql"

#: Items seeded in every scenario database: keys k0000..k0199, value "value-of-<key>".
N_ITEMS = 200

#: Defaults for the Django ``DATABASES["default"]`` keys the harness controls.
DEFAULT_DB_SETTINGS: dict[str, Any] = {
    "ENGINE": STOCK_ENGINE,
    "CONN_MAX_AGE": 0,
    "CONN_HEALTH_CHECKS": False,
    "OPTIONS": {},
    "DRIVER": None,  # "psycopg2": use psycopg2 even where psycopg 3 is installed
}



class HarnessError(RuntimeError):
    """A process did not start / become ready, or a helper command failed."""


class ScenarioUnsupported(Exception):
    """The scenario cannot run in this environment (e.g. needs Django >= 5.1)."""
