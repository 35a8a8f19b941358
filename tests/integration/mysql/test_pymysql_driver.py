"""The PyMySQL driver against the real server: the transaction status PyMySQL keeps, a lost
session seen by poll then closed, a bounded ping, abandon after fork without COM_QUIT, a
bounded connect to a server that never greets, TCP keepalive, and error classification from
errors the server really raises. (The pool's guarantees on it: test_mysql_pool.py, whose
``pool_driver`` tests run on PyMySQL too.)"""

from __future__ import annotations

import gc
import os
import signal
import socket
import time
from typing import Any

import pytest
from mysql_support import in_child, pymysql_module, scalar, wait_until
from test_mysqlclient_driver import all_threads_stopped

from connguard import ConnectionPool
from connguard.drivers import TxStatus, get_driver
from connguard.drivers.base import is_ping_timeout
from connguard.drivers.tcp import read_tcp
from connguard.testing.mariadb import APP_USER

__all__ = ["pymysql_module"]  # fixtures


@pytest.fixture
def driver(pymysql_module: Any) -> Any:
    return get_driver("pymysql")


def query(conn: Any, sql: str) -> list[tuple[Any, ...]]:
    with conn.cursor() as cur:
        cur.execute(sql)
        return list(cur.fetchall())


def test_registered_by_name(driver: Any) -> None:
    assert driver.name == "pymysql"


def test_transaction_status(driver: Any, mariadb: Any, pymysql_module: Any) -> None:
    conn = driver.connect("", mariadb.kwargs(), 5)  # PyMySQL's default: autocommit off
    try:
        query(conn, "CREATE TABLE IF NOT EXISTS pym_tx (id INT PRIMARY KEY) ENGINE=InnoDB")
        assert driver.transaction_status(conn) == TxStatus.IDLE
        # a read opens a transaction that only the result set's EOF packet reports, which
        # PyMySQL does not keep: in a transaction, to be safe
        query(conn, "SELECT * FROM pym_tx")
        assert scalar_admin_trx(mariadb) == 1
        assert driver.transaction_status(conn) == TxStatus.INTRANS
        driver.rollback(conn)
        assert driver.transaction_status(conn) == TxStatus.IDLE
        # a write: its OK packet says so
        query(conn, "INSERT INTO pym_tx VALUES (1)")
        assert driver.transaction_status(conn) == TxStatus.INTRANS
        driver.commit(conn)
        assert driver.transaction_status(conn) == TxStatus.IDLE
        # an error carries no status: in a transaction, to be safe
        with pytest.raises(pymysql_module.IntegrityError):
            query(conn, "INSERT INTO pym_tx VALUES (1)")
        assert driver.transaction_status(conn) == TxStatus.INTRANS
        driver.rollback(conn)
        # autocommit on: exact, no round trip
        conn.autocommit(True)
        query(conn, "SELECT * FROM pym_tx")
        assert driver.transaction_status(conn) == TxStatus.IDLE
        query(conn, "BEGIN")
        assert driver.transaction_status(conn) == TxStatus.INTRANS
        query(conn, "SELECT * FROM pym_tx")
        assert driver.transaction_status(conn) == TxStatus.INTRANS
        query(conn, "COMMIT")
        assert driver.transaction_status(conn) == TxStatus.IDLE
        query(conn, "DROP TABLE pym_tx")
    finally:
        driver.close(conn)


def scalar_admin_trx(mariadb: Any) -> int:
    return int(
        mariadb.execute(
            "SELECT count(*) FROM information_schema.INNODB_TRX t JOIN "
            "information_schema.PROCESSLIST p ON p.ID = t.trx_mysql_thread_id "
            f"WHERE p.USER = '{APP_USER}'"
        )[0][0]
    )


@pytest.mark.parametrize("fault", ["kill", "wait_timeout", "restart"])
def test_lost_session_is_readable_then_closed(
    driver: Any, mariadb: Any, pymysql_module: Any, fault: str
) -> None:
    if fault == "wait_timeout":
        mariadb.set_global("wait_timeout", 1)
    conn = driver.connect("", mariadb.kwargs(), 5)
    try:
        poller = driver.make_poller(driver.fileno(conn))
        assert poller.poll(0) == []
        if fault == "kill":
            mariadb.kill_connections(APP_USER)
        elif fault == "restart":
            mariadb.restart()
        wait_until(lambda: poller.poll(0), timeout=15)
        assert driver.transaction_status(conn) == TxStatus.UNKNOWN
        with pytest.raises(pymysql_module.OperationalError) as info:
            driver.ping(conn, 5.0)
        assert driver.is_disconnect(info.value), info.value
        assert info.value.args[0] in (2006, 2013, 4031, 1927)
        assert driver.is_closed(conn) and driver.fileno(conn) == -1
    finally:
        driver.close(conn)
    driver.close(conn)  # twice: never raises


def test_ping_is_bounded_on_a_stalled_server(
    driver: Any, mariadb: Any, pymysql_module: Any
) -> None:
    conn = driver.connect("", mariadb.kwargs(), 5)
    pid = mariadb.pid
    try:
        driver.ping(conn, 5.0)
        assert driver.transaction_status(conn) == TxStatus.IDLE  # the ping opened none
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_until(lambda: all_threads_stopped(pid), timeout=10)
            started = time.monotonic()
            with pytest.raises(pymysql_module.OperationalError) as info:
                driver.ping(conn, 0.5)
            assert time.monotonic() - started < 10  # bounded, not PyMySQL's forever
            assert is_ping_timeout(info.value), info.value
            assert conn._read_timeout is None  # the user's (none) again
        finally:
            os.kill(pid, signal.SIGCONT)
    finally:
        driver.close(conn)


@pytest.mark.parametrize("how", ["abandon", "abandon_fd", "collect"])
def test_abandon_after_fork_sends_no_com_quit(driver: Any, mariadb: Any, how: str) -> None:
    conn = driver.connect("", mariadb.kwargs(), 5)
    try:
        sid = int(conn.thread_id())
        fd = driver.fileno(conn)

        def child() -> bool:
            nonlocal conn
            if how == "abandon":
                driver.abandon(conn, fd)
            else:
                driver.abandon_fd(fd)
                if how == "abandon_fd":
                    conn.close()  # PyMySQL's close() writes COM_QUIT ...
            del conn
            gc.collect()
            return True

        assert in_child(child)
        assert sid in mariadb.connection_ids(APP_USER)  # the server-side session survives
        assert scalar(conn, "SELECT CONNECTION_ID()") == sid
    finally:
        driver.close(conn)


def test_without_abandon_the_child_quits_the_parents_session(
    driver: Any, mariadb: Any, pymysql_module: Any
) -> None:
    """PyMySQL's close() in a child ends the parent's session: the hazard is the same."""
    conn = driver.connect("", mariadb.kwargs(), 5)
    try:
        sid = int(conn.thread_id())

        def child() -> bool:
            conn.close()
            return True

        assert in_child(child)
        wait_until(lambda: sid not in mariadb.connection_ids(APP_USER), timeout=10)
    finally:
        driver.close(conn)


def test_connect_to_a_silent_server_is_bounded(driver: Any, pymysql_module: Any) -> None:
    """A listener that accepts but never greets: PyMySQL's connect_timeout covers the TCP
    connect only; the driver's read_timeout during the connect ends the wait."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(pymysql_module.OperationalError) as info:
            driver.connect(f"host=127.0.0.1 port={port} user=x", {}, 1.0)
        elapsed = time.monotonic() - started
    assert elapsed < 2 * 2 + 5, elapsed  # read_timeout=2 (whole seconds, at least 2)
    assert driver.is_disconnect(info.value), info.value


def test_keepalive_and_read_timeout(driver: Any, mariadb: Any) -> None:
    conn = driver.connect(mariadb.conninfo(keepalives_idle=44), {}, 5)
    try:
        assert read_tcp(driver.fileno(conn)) == {
            "keepalives": 1, "keepalives_idle": 44, "keepalives_interval": 10,
            "keepalives_count": 3, "tcp_user_timeout": 30000,
        }  # fmt: skip
        assert conn._read_timeout is None  # the pool's bound was for the connect only
    finally:
        driver.close(conn)
    conn = driver.connect("", mariadb.kwargs(read_timeout=30), 5)
    try:
        assert conn._read_timeout == 30  # the user's own
    finally:
        driver.close(conn)


def test_error_classification_from_the_server(
    driver: Any, mariadb: Any, pymysql_module: Any
) -> None:
    mariadb.set_global("max_connections", 10)
    held = []
    try:
        with pytest.raises(pymysql_module.OperationalError) as info:
            for _ in range(12):
                held.append(driver.connect("", mariadb.kwargs(), 5))
        assert driver.is_capacity_error(info.value), info.value
    finally:
        for conn in held:
            driver.close(conn)
    mariadb.stop()
    with pytest.raises(pymysql_module.OperationalError) as info:
        driver.connect("", mariadb.kwargs(), 2)
    assert driver.is_server_absent(info.value), info.value
    assert not driver.is_capacity_error(info.value)


def test_pool_on_pymysql(mariadb: Any, pymysql_module: Any) -> None:
    pool = ConnectionPool(mariadb.url(), driver="pymysql", max_size=2, timeout=10)
    try:
        with pool.connection() as conn:
            assert scalar(conn, "SELECT 1") == 1
        assert pool.get_stats()["returns_rolled_back"] == 0  # committed on the way out
        mariadb.kill_connections(APP_USER)
        with pool.connection() as conn:  # the killed one is seen and replaced
            assert scalar(conn, "SELECT 2") == 2
        assert pool.get_stats()["connections_lost"] == 1
    finally:
        pool.close()
