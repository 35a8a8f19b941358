"""pytest fixtures for the real-server rig; load with
``pytest_plugins = ["connguard.testing.pytest_plugin"]`` in the top ``conftest.py``.

* ``pg_server`` (session): one :class:`~connguard.testing.server.PostgresServer` for the run.
  Without PostgreSQL binaries the tests that use it are skipped with the reason — or fail,
  when ``CI`` is set to true, so that CI cannot pass by skipping.
* ``pg`` (function): the same server, running when the test starts; afterwards started again
  if the test left it stopped or killed, and its configuration reset if the test changed it.
* ``pg_dsn`` (function): ``pg.conninfo()`` — the libpq keyword string for database postgres.
* ``fault_proxy`` (function): a :class:`~connguard.testing.proxy.FaultProxy` in front of the
  server, closed after the test.
* ``pgbouncer`` (module): a :class:`~connguard.testing.pgbouncer.PgBouncer` in transaction
  mode in front of ``pg_server`` for the test module (a test that stops it starts it again);
  a module overrides the ``pgbouncer_settings`` fixture to pass other ``PgBouncer()``
  arguments. Without the ``pgbouncer`` binary the tests are skipped — or fail, under
  ``CI=true``.
* ``pg_bin`` / ``pgbouncer_bin`` (session): the PostgreSQL bin directory / the ``pgbouncer``
  binary, for a test that builds its own ``PostgresServer`` or ``PgBouncer``: skipped (failed
  under ``CI=true``) with how to install them when they are missing.
  :func:`skip_or_fail` does the same for any other tool a test needs.
* ``pg_pair`` (function): a fresh primary and a streaming standby of it
  (:class:`~connguard.testing.replication.StandbyServer`), for failover tests.

Tests that use any of these are marked ``integration`` (``pytest -m "not integration"``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import pytest

from connguard.testing._process import RigProcess
from connguard.testing.netns import Netns, NetnsUnavailable, unavailable_reason
from connguard.testing.pgbouncer import PgBouncer, PgBouncerUnavailable, find_pgbouncer
from connguard.testing.proxy import FaultProxy
from connguard.testing.replication import StandbyServer
from connguard.testing.server import PostgresServer, ServerUnavailable, find_pg_bin

__all__ = [
    "fault_proxy",
    "netns_for",
    "pg",
    "pg_bin",
    "pg_dsn",
    "pg_pair",
    "pg_server",
    "pgbouncer",
    "pgbouncer_bin",
    "pgbouncer_settings",
    "restored",
    "skip_or_fail",
    "started",
]

R = TypeVar("R", bound=RigProcess)

RIG_FIXTURES = frozenset(
    {"pg_server", "pg", "pg_dsn", "fault_proxy", "pgbouncer", "pg_bin", "pgbouncer_bin", "pg_pair"}
)
#: Said after a missing tool's own install hint (connguard's scripts/test runs it as root).
SYSTEM_INSTALL_HINT = "in connguard's repository, scripts/install-system (as root) installs it"


def in_ci() -> bool:
    """True when the ``CI`` environment variable says so (``true``, ``1``, ``yes``)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


def skip_or_fail(what: str, reason: object) -> NoReturn:
    """Skip the calling test because ``what`` is unavailable (``reason`` says why and how to
    install it) — or fail it when ``CI`` is true, so that CI cannot pass by skipping."""
    if in_ci():
        pytest.fail(f"CI=true and {what} is unavailable: {reason}")
    pytest.skip(f"{what} unavailable: {reason}")


@contextlib.contextmanager
def started(make: Callable[[], R], what: str, hint: str = "") -> Iterator[R]:
    """For a fixture, ``with started(...) as server``: ``make()`` a rig server — skipped (failed under ``CI=true``) when it
    cannot be had, ``hint`` added to the reason — yield it started, clean it up after."""
    try:
        server = make()
    except ServerUnavailable as exc:
        skip_or_fail(what, f"{exc}; {hint}" if hint else exc)
    try:
        yield server.start()
    finally:
        server.cleanup()


@contextlib.contextmanager
def netns_for(what: str) -> Iterator[Netns]:
    """For a fixture, ``with netns_for("the X test server") as ns``: a
    :class:`~connguard.testing.netns.Netns`, closed after — skipped (failed under ``CI=true``)
    where namespaces cannot be had here (not root, no ``ip``/``nft``/``setpriv``)."""
    reason = unavailable_reason()
    if reason is not None:
        skip_or_fail(f"{what} in a network namespace", reason)
    try:
        ns = Netns()
    except NetnsUnavailable as exc:
        skip_or_fail(f"{what} in a network namespace", exc)
    with ns:
        yield ns


@contextlib.contextmanager
def restored(server: R, changed: Callable[[], bool], reset: Callable[[], object]) -> Iterator[R]:
    """For a function fixture over a session server: running when the test starts; after
    it, started again if the test left it stopped or killed, and ``reset()`` when
    ``changed()`` says the test changed its settings."""
    server.start()
    yield server
    server.start()
    if changed():
        reset()


@pytest.fixture(scope="session")
def pg_bin() -> Path:
    """The directory with ``initdb``, ``pg_ctl`` and ``postgres`` (``find_pg_bin()``)."""
    try:
        return find_pg_bin()
    except ServerUnavailable as exc:
        skip_or_fail("the PostgreSQL test server", f"{exc}; {SYSTEM_INSTALL_HINT}")


@pytest.fixture(scope="session")
def pgbouncer_bin() -> str:
    """The ``pgbouncer`` binary (``find_pgbouncer()``), for a test that builds its own
    :class:`PgBouncer`."""
    try:
        return find_pgbouncer()
    except PgBouncerUnavailable as exc:
        skip_or_fail("PgBouncer", f"{exc}; {SYSTEM_INSTALL_HINT}")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL cluster for the whole test session."""
    with started(PostgresServer, "the PostgreSQL test server", SYSTEM_INSTALL_HINT) as server:
        yield server


@pytest.fixture
def pg(pg_server: PostgresServer) -> Iterator[PostgresServer]:
    """``pg_server``, running; restarted and its configuration reset after the test."""
    with restored(pg_server, lambda: pg_server.config_changed, pg_server.reset_config):
        yield pg_server


@pytest.fixture
def pg_dsn(pg: PostgresServer) -> str:
    """The libpq keyword string for database ``postgres`` on the test server."""
    return pg.conninfo()


@pytest.fixture
def fault_proxy(pg: PostgresServer) -> Iterator[FaultProxy]:
    """A :class:`FaultProxy` in front of the test server; connect to its host and port."""
    with FaultProxy(pg.host, pg.port) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def pgbouncer_settings() -> dict[str, Any]:
    """Keyword arguments for the module's ``PgBouncer(pg_server, **settings)``; override it in
    a test module, e.g. ``{"max_client_conn": 10, "extra": {"client_idle_timeout": "20"}}``."""
    return {}


@pytest.fixture(scope="module")
def pgbouncer(
    pg_server: PostgresServer, pgbouncer_bin: str, pgbouncer_settings: dict[str, Any]
) -> Iterator[PgBouncer]:
    """A PgBouncer (transaction mode unless ``pgbouncer_settings`` says otherwise) in front
    of ``pg_server`` for the test module; connect with ``pgbouncer.conninfo()``. A test that
    stops it starts it again."""
    bouncer = PgBouncer(pg_server, **pgbouncer_settings)
    try:
        pg_server.start()
        bouncer.start()
        yield bouncer
    finally:
        bouncer.cleanup()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if RIG_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def pytest_report_header() -> list[str]:
    try:
        lines = [f"connguard rig: PostgreSQL binaries in {find_pg_bin()}"]
    except ServerUnavailable as exc:
        lines = [f"connguard rig: {str(exc).splitlines()[0]}"]
    try:
        lines.append(f"connguard rig: pgbouncer {find_pgbouncer()}")
    except PgBouncerUnavailable as exc:
        lines.append(f"connguard rig: {exc}")
    return lines


# The MariaDB rig's fixtures (mariadb_server, mariadb, mariadb_kwargs) live in their own module.
pytest_plugins = ["connguard.testing.mariadb_plugin"]


@pytest.fixture
def pg_pair() -> Iterator[tuple[PostgresServer, StandbyServer]]:
    """A fresh primary and a streaming standby of it (``pg_basebackup -R``), for failover
    tests that promote, stop or demote them; both removed after the test. Skipped (failed
    under ``CI=true``) without PostgreSQL binaries or ``pg_basebackup``."""
    with (
        started(PostgresServer, "the PostgreSQL test server", SYSTEM_INSTALL_HINT) as primary,
        started(lambda: StandbyServer(primary), "a streaming standby") as standby,
    ):
        yield primary, standby
