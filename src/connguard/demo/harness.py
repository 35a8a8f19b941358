"""Real-process harness for ``connguard demo`` and the Django backend tests (tests/django):
its public API in one import.

It runs the demo project (:mod:`connguard.demo.project`) under real servers — gunicorn (sync with
``--preload``, gthread, gevent), uvicorn (ASGI), a Celery prefork worker, management
commands — as subprocesses pointed at a database on the test server, drives them with a
bounded load client and checks the outcome:

* **errors** — failed requests (HTTP 5xx/4xx, connection errors, timeouts);
* **wrong** — a response that carries a different row/token than the one asked for
  (a crossed connection handed someone else's result);
* **lost** — writes acknowledged to the client whose rows are not in the database;
* **peak_server_connections** — the most client connections seen on the test database.

Each classic failure is a named scenario (``SCENARIOS``) run by :func:`run_scenario`::

    result = run_scenario("restart", {"ENGINE": "django.db.backends.postgresql"}, pg_server)
    assert result.errors > 0                    # stock backend
    result = run_scenario("restart", {"ENGINE": "connguard.backends.postgresql"}, pg_server)
    assert result.failures == 0                 # connguard

Where each part lives:

=================================  ===========================================================
:mod:`connguard.demo.base`         the project, engines, default settings, errors
:mod:`connguard.demo.targets`      the database server: admin SQL, databases, connection
                                   counts, server settings, restart (PostgreSQL, MariaDB)
:mod:`connguard.demo.processes`    the project's environment; gunicorn/uvicorn/Celery/manage.py
:mod:`connguard.demo.load`         the bounded load client and its response checks
:mod:`connguard.demo.results`      :class:`Result`
:mod:`connguard.demo.registry`     ``@scenario`` and ``SCENARIOS``
:mod:`connguard.demo.runner`       :class:`Harness` and :func:`run_scenario`
:mod:`connguard.demo.scenarios`    one module per scenario (adding one is adding a file)
=================================  ===========================================================

The harness imports neither pytest nor Django: the tests and the demo command both use it,
and Django runs only in the processes it starts. Every process is started in its own session
and killed by its pid (process group) when its :class:`Harness` exits, or at interpreter exit
at the latest. Every loop is bounded in count and time, and everything talks to loopback only.
"""

from __future__ import annotations

from connguard.demo.base import (
    CONNGUARD_ENGINE,
    DEFAULT_DB_SETTINGS,
    N_ITEMS,
    PROJECT,
    STOCK_ENGINE,
    HarnessError,
    ScenarioUnsupported,
)
from connguard.demo.load import LoadResult, check_response, http_get, mixed_paths, run_load
from connguard.demo.processes import (
    CeleryWorker,
    HttpServer,
    ManagedProcess,
    django_env,
    free_port,
    run_manage,
)
from connguard.demo.registry import SCENARIOS, Scenario, scenario, unavailable_here
from connguard.demo.results import Result
from connguard.demo.runner import (
    Harness,
    latest_migration,
    prepare_template,
    run_scenario,
    scenario_database,
)
from connguard.demo.scenarios import FAILURE_SCENARIOS
from connguard.demo.targets import create_database, drop_database, server_target
from connguard.demo.targets.base import AdminConnection, ConnectionMonitor, ServerTarget
from connguard.demo.targets.mariadb import MariaDBTarget
from connguard.demo.targets.postgresql import (
    DbTarget,
    PostgresTarget,
    connect_admin,
    make_conninfo,
    parse_conninfo,
    set_database_config,
)

__all__ = [
    "CONNGUARD_ENGINE",
    "DEFAULT_DB_SETTINGS",
    "FAILURE_SCENARIOS",
    "N_ITEMS",
    "PROJECT",
    "SCENARIOS",
    "STOCK_ENGINE",
    "AdminConnection",
    "CeleryWorker",
    "ConnectionMonitor",
    "DbTarget",
    "Harness",
    "HarnessError",
    "HttpServer",
    "LoadResult",
    "ManagedProcess",
    "MariaDBTarget",
    "PostgresTarget",
    "Result",
    "Scenario",
    "ScenarioUnsupported",
    "ServerTarget",
    "check_response",
    "connect_admin",
    "create_database",
    "django_env",
    "drop_database",
    "free_port",
    "http_get",
    "latest_migration",
    "make_conninfo",
    "mixed_paths",
    "parse_conninfo",
    "prepare_template",
    "run_load",
    "run_manage",
    "run_scenario",
    "scenario",
    "scenario_database",
    "server_target",
    "set_database_config",
    "unavailable_here",
]
