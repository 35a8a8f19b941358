"""Settings for Django's own test suite (``tests/runtests.py --settings=cgsuite_settings``) on
connguard's ENGINE, written by ``scripts/django-suite``'s run.py through the environment:

- ``CGSUITE_ENGINE``: ``connguard.backends.postgresql`` (default), ``connguard.backends.mysql``
  or Django's stock backend;
- ``CGSUITE_DATABASE``: ``postgresql`` (default) or ``mariadb`` (the test databases' charset);
- ``CGSUITE_HOST``, ``CGSUITE_PORT``, ``CGSUITE_USER``: the throwaway server;
- ``CGSUITE_POOL``: ``OPTIONS["pool"]`` as JSON (absent: no ``pool`` key at all);
- ``CGSUITE_RESULTS``: where the recording runner writes each test's outcome.
"""

from __future__ import annotations

import json
import os
from typing import Any

_options: dict[str, Any] = {}
if os.environ.get("CGSUITE_POOL"):
    _options["pool"] = json.loads(os.environ["CGSUITE_POOL"])


def _alias(name: str) -> dict[str, Any]:
    return {
        "ENGINE": os.environ.get("CGSUITE_ENGINE", "connguard.backends.postgresql"),
        "NAME": name,
        "USER": os.environ["CGSUITE_USER"],
        "HOST": os.environ["CGSUITE_HOST"],
        "PORT": os.environ["CGSUITE_PORT"],
        "OPTIONS": dict(_options),
        **_test,
    }


# MariaDB: the test databases in utf8mb4, as the server's own default (Django's MySQL tests
# store 4-byte characters)
_test: dict[str, Any] = {}
if os.environ.get("CGSUITE_DATABASE") == "mariadb":
    _test["TEST"] = {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"}


# The release's own test settings (SECRET_KEY, PASSWORD_HASHERS, USE_TZ, and
# DEFAULT_AUTO_FIELD up to 5.2), from its tests/ directory, which runtests.py puts on sys.path
from test_sqlite import *  # type: ignore[import-not-found]  # noqa: E402, F403

DATABASES = {"default": _alias("django"), "other": _alias("django_other")}
TEST_RUNNER = "cgsuite_runner.RecordingRunner"
