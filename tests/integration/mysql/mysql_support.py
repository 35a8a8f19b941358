"""Helpers for the MariaDB integration tests (tests/integration/mysql/).

mysqlclient is imported through the ``mysqldb`` fixture: without it the tests are skipped
with the reason (they fail instead under ``CI=true``), never broken at import.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from connguard import ConnectionPool
from connguard.testing.pytest_plugin import in_ci
from support import in_child, pool_name, query, scalar, stat, wait_until

__all__ = [
    "driver", "fallback_driver", "in_child", "make_pool", "mysqldb", "no_sessions_left",
    "pool_driver", "query", "scalar", "session_id", "stat", "wait_until",
]  # fmt: skip


@pytest.fixture(scope="session")
def mysqldb() -> Any:
    """The ``MySQLdb`` module (mysqlclient)."""
    try:
        import MySQLdb
    except ImportError as exc:
        if in_ci():
            pytest.fail(f"CI=true and mysqlclient is not importable: {exc}")
        pytest.skip(f"mysqlclient is not importable ({exc}): pip install 'django-connguard[mysql]'")
    return MySQLdb


@pytest.fixture
def driver(mysqldb: Any) -> Any:
    """A fresh ``MysqlclientDriver``."""
    from connguard.drivers.mysqlclient import MysqlclientDriver

    return MysqlclientDriver()


def fallback_driver() -> Any:
    """A ``MysqlclientDriver`` that takes the path used when mysqlclient is built on
    Oracle's libmysqlclient (no ``mariadb_get_infov``)."""
    from connguard.drivers.mysqlclient import MysqlclientDriver

    driver = MysqlclientDriver()
    driver._c = type("NoConnectorC", (), {"get_infov": None})()
    return driver


@pytest.fixture(scope="session")
def pymysql_module() -> Any:
    """The ``pymysql`` module (PyMySQL)."""
    try:
        import pymysql
    except ImportError as exc:
        if in_ci():
            pytest.fail(f"CI=true and PyMySQL is not importable: {exc}")
        pytest.skip(f"PyMySQL is not importable ({exc}): pip install 'django-connguard[pymysql]'")
    return pymysql


@pytest.fixture(params=["libmariadb", "libmysqlclient", "pymysql"])
def pool_driver(request: pytest.FixtureRequest, mysqldb: Any) -> Any:
    """``"mysqlclient"``, the same driver on its libmysqlclient path, then ``"pymysql"``."""
    if request.param == "pymysql":
        request.getfixturevalue("pymysql_module")
        return "pymysql"
    return "mysqlclient" if request.param == "libmariadb" else fallback_driver()


@pytest.fixture
def make_pool(
    mariadb: Any, mysqldb: Any, request: pytest.FixtureRequest
) -> Iterator[Callable[..., ConnectionPool]]:
    """``make_pool(**options)``: a ``driver="mysqlclient"`` pool on the rig's server as the
    application account; closed after the test."""
    pools: list[ConnectionPool] = []

    def make(conninfo: str | None = None, **options: Any) -> ConnectionPool:
        options.setdefault("name", pool_name(request))
        options.setdefault("timeout", 10.0)
        options.setdefault("driver", "mysqlclient")
        if conninfo is None:
            conninfo = mariadb.conninfo(connect_timeout=5)
        pool = ConnectionPool(conninfo, **options)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


def session_id(conn: Any) -> int:
    return int(conn.thread_id())


def no_sessions_left(server: Any, user: str, timeout: float = 10.0) -> None:
    """Wait until *user* has no session (those of earlier tests, and of forked children,
    end asynchronously); a test that counts sessions starts from zero."""
    wait_until(lambda: server.count_connections(user) == 0, timeout=timeout)
