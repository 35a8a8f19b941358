"""pytest fixtures for the MariaDB rig, registered by ``connguard.testing.pytest_plugin``.

* ``mariadb_server`` (session): one :class:`~connguard.testing.mariadb.MariaDBServer` for the
  run. Without MariaDB server binaries or without mysqlclient the tests that use it are
  skipped with the reason — or fail, when ``CI`` is set to true, so that CI cannot pass by
  skipping.
* ``mariadb`` (function): the same server, running when the test starts; afterwards started
  again if the test left it stopped or killed, and every ``SET GLOBAL`` of the test undone.
* ``mariadb_kwargs`` (function): ``mariadb.kwargs()``, the ``MySQLdb.connect()`` keywords of
  the application account.

Tests that use any of these are marked ``integration``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from connguard.testing.mariadb import MariaDBServer, MariaDBUnavailable, find_mariadb_bin
from connguard.testing.pytest_plugin import restored, started

__all__ = ["mariadb", "mariadb_kwargs", "mariadb_server"]

MARIADB_FIXTURES = frozenset({"mariadb_server", "mariadb", "mariadb_kwargs"})


@pytest.fixture(scope="session")
def mariadb_server() -> Iterator[MariaDBServer]:
    """One throwaway MariaDB server for the whole test session."""
    with started(MariaDBServer, "the MariaDB test server") as server:
        yield server


@pytest.fixture
def mariadb(mariadb_server: MariaDBServer) -> Iterator[MariaDBServer]:
    """``mariadb_server``, running; restarted and its globals reset after the test."""
    server = mariadb_server
    with restored(server, lambda: server.globals_changed, server.reset_globals):
        yield mariadb_server


@pytest.fixture
def mariadb_kwargs(mariadb: MariaDBServer) -> dict[str, Any]:
    """``MySQLdb.connect()`` keywords for the application account on the test server."""
    return mariadb.kwargs()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if MARIADB_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


def pytest_report_header() -> list[str]:
    try:
        found = find_mariadb_bin()
    except MariaDBUnavailable as exc:
        return [f"connguard rig: {str(exc).splitlines()[0]}"]
    return [f"connguard rig: MariaDB {found.server}"]
