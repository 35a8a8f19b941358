"""pytest fixtures for the MariaDB rig, registered by ``connguard.testing.pytest_plugin``.

* ``mariadb_server`` (session): one :class:`~connguard.testing.mariadb.MariaDBServer` for the
  run. Without MariaDB server binaries or without mysqlclient the tests that use it are
  skipped with the reason — or fail, when ``CI`` is set to true, so that CI cannot pass by
  skipping.
* ``mariadb`` (function): the same server, running when the test starts; afterwards started
  again if the test left it stopped or killed, and every ``SET GLOBAL`` of the test undone.
* ``mariadb_kwargs`` (function): ``mariadb.kwargs()``, the ``MySQLdb.connect()`` keywords of
  the application account.
* ``netns_mariadb_server`` (session): a second throwaway MariaDB, run inside a network
  namespace (:class:`~connguard.testing.netns.NetnsMariaDBServer`), for silent-drop tests on
  real kernel TCP. Skipped with the reason where namespaces cannot be had (not root, no
  ``ip``/``nft``/``setpriv``) — or failed, under ``CI=true``.
* ``netns_mariadb`` (function): the same, running; afterwards its drop rules removed
  (``netns.restore()``), the application account's sessions killed (those of dropped flows
  would live on), started again if the test left it stopped, its globals reset.

Tests that use any of these are marked ``integration``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from connguard.testing.mariadb import MariaDBServer, MariaDBUnavailable, find_mariadb_bin
from connguard.testing.netns import NetnsMariaDBServer
from connguard.testing.pytest_plugin import netns_for, restored, started

__all__ = ["mariadb", "mariadb_kwargs", "mariadb_server", "netns_mariadb", "netns_mariadb_server"]

MARIADB_FIXTURES = frozenset(
    {"mariadb_server", "mariadb", "mariadb_kwargs", "netns_mariadb_server", "netns_mariadb"}
)


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


@pytest.fixture(scope="session")
def netns_mariadb_server() -> Iterator[NetnsMariaDBServer]:
    """One throwaway MariaDB in a network namespace for the whole test session."""
    what = "the MariaDB test server"
    with netns_for(what) as ns, started(lambda: NetnsMariaDBServer(ns), what) as server:
        yield server


@pytest.fixture
def netns_mariadb(netns_mariadb_server: NetnsMariaDBServer) -> Iterator[NetnsMariaDBServer]:
    """``netns_mariadb_server``, running; after the test its drop rules are removed, and it is
    started again and its globals reset as for ``mariadb``."""
    server = netns_mariadb_server
    try:
        with restored(server, lambda: server.globals_changed, server.reset_globals):
            yield server
    finally:
        server.netns.restore()
        # the sessions of dropped flows: the server never learns they are gone (it sends
        # nothing, so nothing times out); ended now, the next test counts only its own
        if server.running:
            server.kill_connections()


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
