"""Helpers shared by the test suites (integration, integration/mysql, django): the same code
for PostgreSQL and MariaDB, for the pool's tests and the Django backend's.

Importable as ``support`` from any test: ``tests/`` is on ``sys.path`` (pytest puts the
directory of ``tests/conftest.py`` there). Fixtures stay in each suite's own support module
(pool_support.py, mysql/mysql_support.py) or conftest.py; what is here is plain functions
and context managers.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from connguard import ConnectionPool

_numbers = itertools.count(1)


def pool_name(request: pytest.FixtureRequest) -> str:
    """A name unique to this test and call: ``cg-<test name>-<n>`` (a pool's sessions carry
    it as ``application_name`` where the server has one)."""
    base = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower()).strip("-")
    return f"cg-{base[:40]}-{next(_numbers)}"


def query(conn: Any, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    cur = conn.cursor()
    try:
        cur.execute(sql, params)
        return list(cur.fetchall()) if cur.description else []
    finally:
        cur.close()


def scalar(conn: Any, sql: str, params: Any = None) -> Any:
    return query(conn, sql, params)[0][0]


def stat(pool: ConnectionPool, name: str) -> int:
    return int(pool.get_stats()[name])


def wait_until(predicate: Callable[[], object], timeout: float = 10.0, step: float = 0.01) -> None:
    """Poll *predicate* until true; fail after *timeout* seconds."""
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
    deadline = time.monotonic() + timeout
    with os.fdopen(read) as inp:
        data = inp.read()
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


@contextlib.contextmanager
def password_role(server: Any, *, superuser: bool = False) -> Iterator[str]:
    """A login role on the rig's PostgreSQL whose password is 'right', checked with
    scram-sha-256 over TCP (a line put first in pg_hba.conf, removed afterwards)."""
    role = f"cg_pw_{uuid.uuid4().hex[:8]}"
    server.execute(f"CREATE ROLE {role} LOGIN{' SUPERUSER' if superuser else ''} PASSWORD 'right'")
    hba = server.data_dir / "pg_hba.conf"
    original = hba.read_text()
    hba.write_text(f"host all {role} 127.0.0.1/32 scram-sha-256\n{original}")
    server.execute("SELECT pg_reload_conf()")
    time.sleep(0.3)  # the postmaster reloads asynchronously
    try:
        yield role
    finally:
        hba.write_text(original)
        server.execute("SELECT pg_reload_conf()")
        server.execute(f"DROP ROLE IF EXISTS {role}")


def fileno(conn: Any) -> int:
    """The socket of a psycopg 3 or psycopg2 connection."""
    return int(conn.pgconn.socket) if hasattr(conn, "pgconn") else int(conn.fileno())


def socket_options(fd: int) -> dict[str, int]:
    """The TCP keepalive options of socket *fd*, by their libpq names."""
    sock = socket.socket(fileno=socket.dup(fd))
    try:
        return {
            "keepalives": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            "keepalives_idle": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            "keepalives_interval": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            "keepalives_count": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            "tcp_user_timeout": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
        }
    finally:
        sock.close()


@contextlib.contextmanager
def netns_postgres() -> Iterator[Any]:
    """A PostgreSQL server in a network namespace of its own, with a table ``cg_net``; skips
    (fails under ``CI=true``) where namespaces or the server are unavailable."""
    from connguard.testing.netns import NetnsPostgresServer
    from connguard.testing.pytest_plugin import netns_for, started

    what = "the PostgreSQL test server"
    with netns_for(what) as ns, started(lambda: NetnsPostgresServer(ns), what) as server:
        server.execute("CREATE TABLE IF NOT EXISTS cg_net (token text)")
        yield server
