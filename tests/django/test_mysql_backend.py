"""``ENGINE: "connguard.backends.mysql"`` on the rig's real MariaDB, in process (a connection
handler of our own; Django's global one stays untouched) and, for ``manage.py test``, in a
subprocess running a small project of its own."""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
import types
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings

if not settings.configured:
    settings.configure(DATABASES={}, INSTALLED_APPS=["connguard"], USE_TZ=True)
import django

django.setup()

from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.db import OperationalError  # noqa: E402
from django.db.utils import ConnectionHandler  # noqa: E402

from connguard import PoolUnavailable  # noqa: E402
from connguard.backends import registry  # noqa: E402

ENGINE = "connguard.backends.mysql"
pytestmark = pytest.mark.integration


def settings_for(server: Any, name: str, **pool: Any) -> dict[str, Any]:
    return {
        "ENGINE": ENGINE,
        "NAME": name,
        "USER": server.user,
        "HOST": server.host,
        "PORT": server.port,
        "OPTIONS": {"pool": pool},
    }


def make_handler(
    server: Any, name: str, options: dict[str, Any] | None = None, **pool: Any
) -> ConnectionHandler:
    db = settings_for(server, name, **pool)
    db["OPTIONS"].update(options or {})
    return ConnectionHandler({"default": db})


@pytest.fixture
def database(mariadb: Any) -> Iterator[str]:
    """A fresh database with one table, dropped afterwards."""
    name = f"cg_my_{uuid.uuid4().hex[:8]}"
    mariadb.create_database(name)
    mariadb.execute(f"CREATE TABLE `{name}`.t (id INT PRIMARY KEY) ENGINE=InnoDB")
    yield name
    registry.close_pools(alias="default")
    mariadb.drop_database(name)


def request(conn: Any, sql: str = "SELECT 1", params: Any = None) -> Any:
    """One request's life as close_old_connections() runs it, with a query in between."""
    conn.close_if_unusable_or_obsolete()
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql, params)
            row = cursor.fetchone()
    finally:
        conn.close_if_unusable_or_obsolete()
    return None if row is None else row[0]


def the_pool(handler: ConnectionHandler) -> Any:
    pool = handler["default"].pool
    assert pool is not None
    return pool


def test_each_request_checks_out_and_back(mariadb: Any, database: str) -> None:
    handler = make_handler(mariadb, database, max_size=2)
    conn = handler["default"]
    try:
        for _ in range(5):
            assert request(conn) == 1
            assert conn.connection is None  # handed back at the end of the request
        stats = the_pool(handler).get_stats()
        assert stats["checkouts"] == 5
        assert stats["connections_opened"] == 1
        assert type(conn).__mro__[2].__module__ == "django.db.backends.mysql.base"
    finally:
        handler.close_all()


def test_init_command_and_isolation_level_apply_to_every_checkout(
    mariadb: Any, database: str
) -> None:
    """Django's MySQL OPTIONS keep working: init_command runs when the server session opens,
    the isolation level and SQL_AUTO_IS_NULL are set once per server session."""
    handler = make_handler(
        mariadb,
        database,
        {"init_command": "SET @cg_marker = 42", "isolation_level": "serializable"},
        max_size=1,
    )
    conn = handler["default"]
    try:
        for _ in range(3):
            assert request(conn, "SELECT @cg_marker") == 42
            assert request(conn, "SELECT @@session.tx_isolation") == "SERIALIZABLE"
            assert request(conn, "SELECT @@session.sql_auto_is_null") == 0
        assert the_pool(handler).get_stats()["connections_opened"] == 1
    finally:
        handler.close_all()


def test_an_explicit_init_connection_state_runs_djangos_set_up(mariadb: Any, database: str) -> None:
    """Skipped at a checkout of a configured session, Django's set-up still runs when code
    calls init_connection_state() itself (Django's backends.mysql test_auto_is_null_auto_config)."""
    handler = make_handler(mariadb, database, {"isolation_level": "serializable"}, max_size=1)
    conn = handler["default"]
    try:
        request(conn)
        with conn.cursor() as cursor:
            cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        conn.init_connection_state()
        with conn.cursor() as cursor:
            cursor.execute("SELECT @@session.tx_isolation")
            assert cursor.fetchone()[0] == "SERIALIZABLE"
    finally:
        handler.close_all()


def test_is_usable_is_false_once_the_connection_went_back(mariadb: Any, database: str) -> None:
    """After _close() the wrapper holds no connection: is_usable() says False instead of
    raising AttributeError (Django's backends test_is_usable_after_database_disconnects)."""
    handler = make_handler(mariadb, database, max_size=1)
    conn = handler["default"]
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
        assert conn.is_usable() is True
        conn._close()
        assert conn.is_usable() is False
    finally:
        handler.close_all()


def test_a_bad_isolation_level_is_refused_before_a_checkout(mariadb: Any, database: str) -> None:
    from django.core.exceptions import ImproperlyConfigured

    handler = make_handler(mariadb, database, {"isolation_level": "chaos"})
    with pytest.raises(ImproperlyConfigured, match="Invalid transaction isolation level 'chaos'"):
        request(handler["default"])
    assert not [p for p in registry.all_pools() if p.name == "default"]


def test_wait_timeout_then_a_request_succeeds(mariadb: Any, database: str) -> None:
    mariadb.set_global("wait_timeout", 1)
    handler = make_handler(mariadb, database, max_size=2)
    conn = handler["default"]
    try:
        assert request(conn) == 1
        time.sleep(2.5)  # the server ended the idle session
        assert request(conn) == 1
        assert the_pool(handler).get_stats()["connections_opened"] == 2
    finally:
        handler.close_all()


def test_kill_of_every_app_connection_then_requests_succeed(mariadb: Any, database: str) -> None:
    handler = make_handler(mariadb, database, min_size=2, max_size=2)
    conn = handler["default"]
    try:
        assert request(conn) == 1
        the_pool(handler).wait(timeout=10)
        assert mariadb.kill_connections() >= 1
        for _ in range(4):
            assert request(conn) == 1
    finally:
        handler.close_all()


def test_outside_requests_a_killed_connection_is_replaced_before_the_statement(
    mariadb: Any, database: str
) -> None:
    """A management command or worker keeps its connection between statements: a KILL
    while it sat idle is seen (poll) and the connection replaced before the next one."""
    handler = make_handler(mariadb, database, max_size=2)
    conn = handler["default"]
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT CONNECTION_ID()")
            first = cursor.fetchone()[0]
        mariadb.kill_connections()
        with conn.cursor() as cursor:
            cursor.execute("SELECT CONNECTION_ID()")
            assert cursor.fetchone()[0] != first
    finally:
        handler.close_all()


def test_restart_then_requests_succeed(mariadb: Any, database: str) -> None:
    handler = make_handler(mariadb, database, max_size=2)
    conn = handler["default"]
    try:
        assert request(conn) == 1
        mariadb.restart()
        for _ in range(3):
            assert request(conn) == 1
    finally:
        handler.close_all()


def test_server_stopped_fails_fast_with_a_clear_error_and_recovers(
    mariadb: Any, database: str
) -> None:
    handler = make_handler(mariadb, database, max_size=2, timeout=5, connect_timeout=2)
    conn = handler["default"]
    try:
        assert request(conn) == 1
        mariadb.stop()
        started = time.monotonic()
        for _ in range(3):
            with pytest.raises(PoolUnavailable, match="pool 'default': database unreachable"):
                request(conn)
        assert time.monotonic() - started < 3 * 2 * 3  # bound: 3x the connect timeout each
        mariadb.start()
        deadline = time.monotonic() + 30
        while True:
            try:
                assert request(conn) == 1
                break
            except PoolUnavailable:  # the breaker's back-off: tries again shortly
                assert time.monotonic() < deadline
                time.sleep(0.2)
    finally:
        handler.close_all()


def test_a_kill_inside_a_transaction_is_raised_never_retried(mariadb: Any, database: str) -> None:
    handler = make_handler(mariadb, database, max_size=2)
    conn = handler["default"]
    try:
        with pytest.raises(OperationalError) as raised, _Transaction(conn):
            with conn.cursor() as cursor:
                cursor.execute("INSERT INTO t VALUES (1)")
            mariadb.kill_connections()
            with conn.cursor() as cursor:
                cursor.execute("INSERT INTO t VALUES (2)")
        assert raised.value.args[0] in (2006, 2013, 4031, 1927), raised.value
        conn.close_if_unusable_or_obsolete()
        assert request(conn, "SELECT COUNT(*) FROM t") == 0  # 0 partial, 0 retried
    finally:
        handler.close_all()


class _Transaction:
    """A transaction on our own handler's wrapper (``transaction.atomic()`` uses Django's
    global handler): commit on success, roll back on error."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def __enter__(self) -> None:
        self.conn.set_autocommit(False)

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        if exc_type is None:
            self.conn.commit()
        else:
            with contextlib.suppress(Exception):
                self.conn.rollback()
        with contextlib.suppress(Exception):
            self.conn.set_autocommit(True)


def test_fork_after_a_module_level_query(mariadb: Any, database: str) -> None:
    """A query before fork() (import time, AppConfig.ready()): the child drops the inherited
    connection without COM_QUIT and opens its own; the parent's session lives on."""
    handler = make_handler(mariadb, database, max_size=2)
    conn = handler["default"]
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT CONNECTION_ID()")
            parent_id = cursor.fetchone()[0]
        raw = conn.connection  # the parent keeps its own reference to the session
        pid = os.fork()
        if pid == 0:  # the child: no pytest machinery, only an exit code
            code = 1
            try:
                conn.connection = raw  # as if the parent had not handed it back at fork()
                with conn.cursor() as cursor:
                    cursor.execute("SELECT CONNECTION_ID()")
                    child_id = cursor.fetchone()[0]
                conn.close()
                del raw
                gc.collect()
                code = 0 if child_id != parent_id else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert parent_id in mariadb.connection_ids()  # no COM_QUIT reached the session
        cur = raw.cursor()  # and the parent can still use it
        cur.execute("SELECT CONNECTION_ID()")
        assert int(cur.fetchone()[0]) == parent_id
        cur.close()
        assert request(conn) == 1
    finally:
        handler.close_all()


def test_low_max_connections_many_threads_bounded_zero_errors(mariadb: Any, database: str) -> None:
    mariadb.set_global("max_connections", 8)
    handler = make_handler(mariadb, database, max_size=4, timeout=30)
    errors: list[BaseException] = []
    peak = [0]
    done = threading.Event()

    def worker() -> None:
        conn = handler["default"]
        try:
            for _ in range(10):
                assert request(conn, "SELECT SLEEP(0.01)") == 0
        except BaseException as exc:  # counted, not raised in the thread
            errors.append(exc)
        finally:
            conn.close()

    def monitor() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], mariadb.count_connections(mariadb.user))
            time.sleep(0.02)

    watcher = threading.Thread(target=monitor)
    watcher.start()
    threads = [threading.Thread(target=worker) for _ in range(16)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
    finally:
        done.set()
        watcher.join(10)
        handler.close_all()
    assert not errors, errors[:3]
    assert 1 <= peak[0] <= 4


def test_manage_py_test_creates_and_drops_the_test_database(
    mariadb: Any, database: str, tmp_path: Path
) -> None:
    """``manage.py test`` with pools open: the test database is created, used through the
    pool and dropped; no session is left on it."""
    app = tmp_path / "shop"
    app.mkdir()
    (app / "__init__.py").write_text("")
    (app / "models.py").write_text(
        "from django.db import models\n\n\nclass Item(models.Model):\n"
        "    name = models.CharField(max_length=20)\n"
    )
    (app / "tests.py").write_text(
        textwrap.dedent(
            """
            from django.db import connection
            from django.test import TestCase, TransactionTestCase

            from shop.models import Item


            class Pooled(TransactionTestCase):
                def test_pooled(self):
                    Item.objects.create(name="a")
                    self.assertEqual(Item.objects.count(), 1)
                    self.assertIsNotNone(connection.pool)


            class InTransaction(TestCase):
                def test_rolled_back(self):
                    Item.objects.create(name="b")
                    self.assertEqual(Item.objects.count(), 1)
            """
        )
    )
    (tmp_path / "cgsettings.py").write_text(
        textwrap.dedent(
            f"""
            SECRET_KEY = "x"
            INSTALLED_APPS = ["connguard", "shop"]
            USE_TZ = True
            DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
            DATABASES = {{"default": {{
                "ENGINE": {ENGINE!r}, "NAME": {database!r}, "USER": {mariadb.user!r},
                "HOST": {mariadb.host!r}, "PORT": {mariadb.port},
                "OPTIONS": {{"pool": {{"min_size": 2, "max_size": 4}}}},
                "TEST": {{"NAME": "test_{database}"}},
            }}}}
            """
        )
    )
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "cgsettings", "PYTHONPATH": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "django", "test", "--noinput", "-v", "2", "shop"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Ran 2 tests" in done.stderr
    names = [row[0] for row in mariadb.execute("SHOW DATABASES")]
    assert f"test_{database}" not in names


def test_a_read_only_server_invalidates_the_pool(mariadb: Any, database: str) -> None:
    """1290 (--read-only, as after a failover demoted the server) is raised to the caller and
    told to the pool, which checks every connection before lending it again."""
    handler = make_handler(mariadb, database, max_size=2)
    conn = handler["default"]
    try:
        assert request(conn) == 1
        mariadb.set_global("read_only", 1)
        with pytest.raises(OperationalError) as raised:
            request(conn, "INSERT INTO t VALUES (1)")
        assert raised.value.args[0] == 1290, raised.value
        assert the_pool(handler).get_stats()["invalidations"] == 1
        mariadb.set_global("read_only", 0)
        request(conn, "INSERT INTO t VALUES (2)")
        assert request(conn, "SELECT COUNT(*) FROM t") == 1
    finally:
        handler.close_all()


PYMYSQL = """
import sys
import pymysql
pymysql.install_as_MySQLdb()
import django
from django.conf import settings
settings.configure(DATABASES={"default": {
    "ENGINE": "connguard.backends.mysql", "NAME": sys.argv[1], "USER": sys.argv[2],
    "HOST": sys.argv[3], "PORT": sys.argv[4], "OPTIONS": {"pool": {"max_size": 2}},
}})
django.setup()
from django.db import close_old_connections, connection
for _ in range(3):
    close_old_connections()
    with connection.cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID()")
        session = cursor.fetchone()[0]
    close_old_connections()
stats = connection.pool.get_stats()
print(connection._cg_driver.name, stats["checkouts"], stats["connections_opened"])
"""


def test_pymysql_as_mysqldb_runs_on_the_pymysql_driver(mariadb: Any) -> None:
    """pymysql.install_as_MySQLdb(): Django's MySQL backend accepts PyMySQL's version, and
    connguard's backend runs on its PyMySQL driver (the whole of this module runs on it too:
    test_mysql_pymysql.py)."""
    pytest.importorskip("pymysql")
    done = subprocess.run(
        [sys.executable, "-c", PYMYSQL, mariadb.database, mariadb.user, mariadb.host,
         str(mariadb.port)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.stdout.split() == ["pymysql", "3", "1"], done.stderr[-2000:]


def test_another_mysqldb_is_refused_with_a_clear_error(mariadb: Any) -> None:
    from connguard.backends.mysql.base import DatabaseWrapper

    class Other(DatabaseWrapper):
        Database = types.SimpleNamespace(__name__="mysql.connector")

    with pytest.raises(ImproperlyConfigured) as info:
        Other(settings_for(mariadb, "x"), "default")
    assert str(info.value) == (
        "DATABASES['default']['ENGINE']='connguard.backends.mysql' needs mysqlclient or "
        "PyMySQL; MySQLdb is mysql.connector here (installed as MySQLdb?), which connguard "
        "has no driver for (it reads the socket, the transaction status and the error "
        "numbers through the driver). Install mysqlclient (pip install "
        "'django-connguard[mysql]'), or use 'django.db.backends.mysql'."
    )


def test_transaction_state_never_leaks_to_the_next_checkout(mariadb: Any, database: str) -> None:
    """A request that ends with a transaction open (autocommit off, no commit): the pool
    rolls it back at checkin; the next user sees neither the row nor an open transaction."""
    handler = make_handler(mariadb, database, max_size=1)
    conn = handler["default"]
    try:
        conn.set_autocommit(False)
        with conn.cursor() as cursor:
            cursor.execute("INSERT INTO t VALUES (7)")
        conn.close()  # the end of the request, uncommitted
        assert request(conn, "SELECT COUNT(*) FROM t") == 0
        assert request(conn, "SELECT @@in_transaction") == 0
        # connect() turned autocommit back on (the session kept it off through the checkin)
        assert request(conn, "SELECT @@autocommit") == 1
        conn.ensure_connection()
        assert conn.get_autocommit() is True and conn.connection.get_autocommit() is True
        conn.close()
        assert the_pool(handler).get_stats()["connections_opened"] == 1
    finally:
        handler.close_all()


def test_a_stalled_server_costs_a_bounded_ping_outside_requests(
    mariadb: Any, database: str
) -> None:
    """A connection kept outside requests, idle past ping_interval, on a server that stopped
    answering (SIGSTOP): the ping gives up after ping_timeout and the caller gets an error
    in bounded time instead of hanging; once the server answers again, statements work."""
    handler = make_handler(
        mariadb, database, max_size=2, ping_interval=0.2, ping_timeout=1, connect_timeout=2,
        timeout=3,
    )  # fmt: skip
    conn = handler["default"]
    pid = mariadb.pid
    assert pid is not None
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT 1")
        time.sleep(0.4)
        os.kill(pid, signal.SIGSTOP)
        try:
            started = time.monotonic()
            with (
                pytest.raises(PoolUnavailable, match="unreachable") as raised,
                conn.cursor() as cursor,
            ):
                cursor.execute("SELECT 1")
            assert time.monotonic() - started < 3 * (1 + 2 + 3), raised.value
        finally:
            os.kill(pid, signal.SIGCONT)
        deadline = time.monotonic() + 30
        while True:
            try:
                with conn.cursor() as cursor:
                    cursor.execute("SELECT 1")
                break
            except Exception:  # the breaker's back-off: tries again shortly
                assert time.monotonic() < deadline
                conn.close()
                time.sleep(0.2)
    finally:
        handler.close_all()
