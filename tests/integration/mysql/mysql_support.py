"""Helpers for the MariaDB integration tests (tests/integration/mysql/).

mysqlclient is imported through the ``mysqldb`` fixture: without it the tests are skipped
with the reason (they fail instead under ``CI=true``), never broken at import.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from connguard import ConnectionPool
from connguard.testing.pytest_plugin import in_ci

_numbers = itertools.count(1)


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
        base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
        options.setdefault("name", f"cg-{base[:40]}-{next(_numbers)}")
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


def query(conn: Any, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
        return list(cur.fetchall()) if cur.description else []
    finally:
        cur.close()


def scalar(conn: Any, sql: str, params: Any = None) -> Any:
    return query(conn, sql, params)[0][0]


def session_id(conn: Any) -> int:
    return int(conn.thread_id())


def stat(pool: ConnectionPool, key: str) -> int:
    return int(pool.get_stats()[key])


def no_sessions_left(server: Any, user: str, timeout: float = 10.0) -> None:
    """Wait until *user* has no session (those of earlier tests, and of forked children,
    end asynchronously); a test that counts sessions starts from zero."""
    wait_until(lambda: server.count_connections(user) == 0, timeout=timeout)


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(step)


def in_child(body: Callable[[], Any], timeout: float = 30.0) -> Any:
    """Run body() in an os.fork() child; return its JSON result, or raise its error here."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(read)
            result: dict[str, Any] = {"ok": body()}
        except BaseException as exc:
            result = {"error": f"{type(exc).__name__}: {exc}"}
            code = 1
        try:
            with os.fdopen(write, "w") as out:
                json.dump(result, out, default=str)
        finally:
            os._exit(code)
    os.close(write)
    with os.fdopen(read) as inp:
        data = inp.read()
    deadline = time.monotonic() + timeout
    while not os.waitpid(pid, os.WNOHANG)[0]:
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            raise AssertionError("child process hung")
        time.sleep(0.01)
    result = json.loads(data)
    if "error" in result:
        raise AssertionError(f"child failed: {result['error']}")
    return result["ok"]
