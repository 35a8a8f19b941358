"""Fixtures for the real-process Django tests (tests/django).

``django_pg`` is the PostgreSQL server the scenarios run against: the rig's session fixture
``pg_server`` (``connguard.testing.pytest_plugin``, loaded by tests/conftest.py) whenever it
is available.  SHIM: while that plugin is not loaded, a session-wide
``connguard.testing.server.PostgresServer`` is started here instead (the same throwaway
cluster the fixture provides); without the rig module or the server binaries the tests skip.
Never a system service.

``django_db`` creates a fresh database per test on that server (a copy of ``django_template``,
migrated and seeded once per session) and drops it afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from connguard.demo.runner import prepare_template
from connguard.demo.targets import create_database, drop_database


@pytest.fixture(scope="session")
def django_pg(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The rig's ``pg_server`` when the plugin is loaded, else a PostgresServer of our own."""
    try:
        server = request.getfixturevalue("pg_server")
    except pytest.FixtureLookupError:
        server = None
    if server is not None:
        yield server
        return
    try:
        from connguard.testing.server import PostgresServer
    except ImportError as exc:  # pragma: no cover - rig not in the tree
        pytest.skip(f"no pg_server fixture and no connguard.testing.server: {exc}")
    try:
        own = PostgresServer().start()
    except Exception as exc:  # pragma: no cover - no PostgreSQL binaries
        pytest.skip(f"no pg_server fixture and PostgresServer could not start: {exc}")
    try:
        yield own
    finally:
        own.cleanup()


@pytest.fixture(scope="session")
def django_template(django_pg: Any) -> Iterator[str]:
    """A database migrated and seeded once per session; ``django_db`` copies it."""
    name = prepare_template(django_pg, f"cg_dj_template_{uuid.uuid4().hex[:6]}")
    try:
        yield name
    finally:
        drop_database(django_pg, name)


@pytest.fixture
def django_db(
    django_pg: Any, django_template: str, request: pytest.FixtureRequest
) -> Iterator[str]:
    """A fresh database on ``django_pg`` for one test, a copy of the migrated and seeded
    ``django_template`` (dropped afterwards)."""
    base = "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:40]
    name = f"cg_dj_{base}_{uuid.uuid4().hex[:6]}"
    create_database(django_pg, name, template=django_template)
    try:
        yield name
    finally:
        drop_database(django_pg, name)
