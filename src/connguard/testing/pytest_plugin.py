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
* ``pg_pair`` (function): a fresh primary and a streaming standby of it
  (:class:`~connguard.testing.replication.StandbyServer`), for failover tests.

Tests that use any of these are marked ``integration`` (``pytest -m "not integration"``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from connguard.testing.pgbouncer import PgBouncer, PgBouncerUnavailable, find_pgbouncer
from connguard.testing.proxy import FaultProxy
from connguard.testing.replication import StandbyServer
from connguard.testing.server import PostgresServer, ServerUnavailable, find_pg_bin

__all__ = ["fault_proxy", "pg", "pg_dsn", "pg_pair", "pg_server", "pgbouncer", "pgbouncer_settings"]

RIG_FIXTURES = frozenset({"pg_server", "pg", "pg_dsn", "fault_proxy", "pgbouncer", "pg_pair"})


def in_ci() -> bool:
    """True when the ``CI`` environment variable says so (``true``, ``1``, ``yes``)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL cluster for the whole test session."""
    try:
        server = PostgresServer()
    except ServerUnavailable as exc:
        if in_ci():
            pytest.fail(f"CI=true and the PostgreSQL test server is unavailable: {exc}")
        pytest.skip(f"PostgreSQL test server unavailable: {exc}")
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def pg(pg_server: PostgresServer) -> Iterator[PostgresServer]:
    """``pg_server``, running; restarted and its configuration reset after the test."""
    pg_server.start()
    yield pg_server
    pg_server.start()
    if pg_server.config_changed:
        pg_server.reset_config()


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
def pgbouncer(pg_server: PostgresServer, pgbouncer_settings: dict[str, Any]) -> Iterator[PgBouncer]:
    """A PgBouncer (transaction mode unless ``pgbouncer_settings`` says otherwise) in front
    of ``pg_server`` for the test module; connect with ``pgbouncer.conninfo()``. A test that
    stops it starts it again."""
    try:
        bouncer = PgBouncer(pg_server, **pgbouncer_settings)
    except PgBouncerUnavailable as exc:
        if in_ci():
            pytest.fail(f"CI=true and PgBouncer is unavailable: {exc}")
        pytest.skip(f"PgBouncer unavailable: {exc}")
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


@pytest.fixture
def pg_pair() -> Iterator[tuple[PostgresServer, StandbyServer]]:
    """A fresh primary and a streaming standby of it (``pg_basebackup -R``), for failover
    tests that promote, stop or demote them; both removed after the test. Skipped (failed
    under ``CI=true``) without PostgreSQL binaries or ``pg_basebackup``."""
    try:
        primary = PostgresServer()
    except ServerUnavailable as exc:
        if in_ci():
            pytest.fail(f"CI=true and the PostgreSQL test server is unavailable: {exc}")
        pytest.skip(f"PostgreSQL test server unavailable: {exc}")
    standby: StandbyServer | None = None
    try:
        primary.start()
        try:
            standby = StandbyServer(primary)
        except ServerUnavailable as exc:
            if in_ci():
                pytest.fail(f"CI=true and a standby cannot be made: {exc}")
            pytest.skip(f"no streaming standby: {exc}")
        standby.start()
        yield primary, standby
    finally:
        if standby is not None:
            standby.cleanup()
        primary.cleanup()
