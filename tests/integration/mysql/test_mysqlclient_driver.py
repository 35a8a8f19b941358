"""The mysqlclient driver against the real server: conninfo parsing, transaction status
without a round trip, closed detection after a lost session, a bounded ping, abandon after
fork without COM_QUIT, and error classification from errors the server really raises."""

from __future__ import annotations

import copy
import gc
import os
import signal
import threading
import time
from typing import Any

import pytest
from mysql_support import (
    driver,
    fallback_driver,
    in_child,
    mysqldb,
    query,
    scalar,
    session_id,
    wait_until,
)

from connguard.drivers import TxStatus, get_driver
from connguard.drivers.base import is_ping_timeout
from connguard.testing.mariadb import APP_USER

__all__ = ["driver", "mysqldb"]  # fixtures


def test_registered_by_name(mysqldb: Any) -> None:
    assert get_driver("mysqlclient").name == "mysqlclient"


def test_parse_conninfo(driver: Any) -> None:
    from connguard.drivers.mysqlclient import parse_conninfo

    assert parse_conninfo("") == {}
    assert parse_conninfo("host=db port=3307 user=app dbname=shop connect_timeout=3") == {
        "host": "db", "port": 3307, "user": "app", "database": "shop", "connect_timeout": 3,
    }  # fmt: skip
    assert parse_conninfo("mysql://app:p%40ss@db:3307/shop?charset=utf8mb4&read_timeout=5") == {
        "host": "db", "port": 3307, "user": "app", "password": "p@ss", "database": "shop",
        "charset": "utf8mb4", "read_timeout": 5,
    }  # fmt: skip
    with pytest.raises(ValueError, match="port='x'"):
        parse_conninfo("port=x")
    with pytest.raises(ValueError, match="not key=value"):
        parse_conninfo("localhost")
    with pytest.raises(ValueError, match="scheme 'postgresql'"):
        parse_conninfo("postgresql://u@h/d")


def test_connect_kwargs_win_and_timeout_is_set(driver: Any, mariadb: Any) -> None:
    conn = driver.connect(mariadb.conninfo(database="mysql"), {"database": "connguard"}, 1.5)
    try:
        assert scalar(conn, "SELECT DATABASE()") == "connguard"
        assert driver.fileno(conn) >= 0
        assert not driver.is_closed(conn)
    finally:
        driver.close(conn)
    assert driver.is_closed(conn)
    assert driver.fileno(conn) == -1
    driver.close(conn)  # twice: never raises


def test_transaction_status(driver: Any, mariadb: Any) -> None:
    conn = driver.connect("", mariadb.kwargs(), 5)
    try:
        query(conn, "CREATE TABLE IF NOT EXISTS drv_tx (id INT PRIMARY KEY) ENGINE=InnoDB")
        assert driver.transaction_status(conn) == TxStatus.IDLE
        # autocommit off (mysqlclient's default): a read of an InnoDB table opens one
        query(conn, "SELECT * FROM drv_tx")
        assert driver.transaction_status(conn) == TxStatus.INTRANS
        driver.rollback(conn)
        assert driver.transaction_status(conn) == TxStatus.IDLE
        conn.autocommit(True)
        query(conn, "SELECT * FROM drv_tx")
        assert driver.transaction_status(conn) == TxStatus.IDLE
        query(conn, "BEGIN")
        assert driver.transaction_status(conn) == TxStatus.INTRANS
        query(conn, "INSERT INTO drv_tx VALUES (1)")
        driver.rollback(conn)
        assert driver.transaction_status(conn) == TxStatus.IDLE
        assert scalar(conn, "SELECT count(*) FROM drv_tx") == 0
    finally:
        driver.close(conn)
        mariadb.execute("DROP TABLE IF EXISTS connguard.drv_tx")
    assert driver.transaction_status(conn) == TxStatus.UNKNOWN


def test_transaction_status_without_connector_c(mysqldb: Any, mariadb: Any) -> None:
    """Built on libmysqlclient (no mariadb_get_infov): every checkin rolls back, and the
    status read right after that rollback is idle."""
    driver = fallback_driver()
    conn = driver.connect("", mariadb.kwargs(), 5)
    try:
        assert driver.transaction_status(conn) == TxStatus.INTRANS
        driver.rollback(conn)
        assert driver.transaction_status(conn) == TxStatus.IDLE
        assert driver.transaction_status(conn) == TxStatus.INTRANS  # once only
        driver.commit(conn)
        assert driver.transaction_status(conn) == TxStatus.IDLE
        driver.ping(conn, 5.0)
        mariadb.kill_connections(APP_USER)
        with pytest.raises(Exception):  # noqa: B017
            query(conn, "SELECT 1")
        assert driver.is_closed(conn)
        assert driver.transaction_status(conn) == TxStatus.UNKNOWN
    finally:
        driver.close(conn)


def test_a_connector_c_that_does_not_answer_selects_the_other_path(
    driver: Any, mariadb: Any
) -> None:
    if driver._c.get_infov is None:
        pytest.skip("mysqlclient is not built on MariaDB Connector/C here")
    driver._c = copy.copy(driver._c)  # not the process-wide one
    driver._c.answers = lambda conn: False  # as an old Connector/C would
    conn = driver.connect("", mariadb.kwargs(), 5)
    try:
        assert driver._c.get_infov is None
        assert driver.transaction_status(conn) == TxStatus.INTRANS
        driver.rollback(conn)
        assert driver.transaction_status(conn) == TxStatus.IDLE
        assert not driver.is_closed(conn)
    finally:
        driver.close(conn)
    assert driver.is_closed(conn)


@pytest.mark.parametrize("fault", ["kill", "wait_timeout", "restart"])
def test_lost_session_is_readable_then_closed(
    driver: Any, mariadb: Any, mysqldb: Any, fault: str
) -> None:
    """KILL, wait_timeout and a restart each leave the socket readable (the poll the pool
    does at checkout); after the error the connection reads as closed, though mysqlclient's
    fileno() still returns the old descriptor number."""
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
        with pytest.raises(mysqldb.OperationalError) as info:
            driver.ping(conn, 5.0)
        assert driver.is_disconnect(info.value), info.value
        assert info.value.args[0] in (2006, 2013, 4031, 1927)
        assert driver.is_closed(conn)
        assert driver.transaction_status(conn) == TxStatus.UNKNOWN
    finally:
        driver.close(conn)


def test_ping_is_bounded_on_a_stalled_server(driver: Any, mariadb: Any, mysqldb: Any) -> None:
    conn = driver.connect("", mariadb.kwargs(), 5)
    pid = mariadb.pid
    try:
        driver.ping(conn, 5.0)
        assert driver.transaction_status(conn) == TxStatus.IDLE  # the ping opened none
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_until(lambda: all_threads_stopped(pid), timeout=10)  # a group stop takes time
            started = time.monotonic()
            with pytest.raises(
                mysqldb.OperationalError, match=r"ping timed out after 0\.50 s"
            ) as info:
                driver.ping(conn, 0.5)
            assert time.monotonic() - started < 10  # bounded, not mysqlclient's forever
            # the pool then retires the other idle connections silent as long (one ping
            # timeout per dead path, not per connection)
            assert is_ping_timeout(info.value)
        finally:
            os.kill(pid, signal.SIGCONT)
    finally:
        driver.close(conn)


def all_threads_stopped(pid: int) -> bool:
    """Every thread of *pid* is in the stopped state (``T`` in /proc)."""
    states = []
    for task in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{task}/stat") as stat:
                states.append(stat.read().rsplit(")", 1)[-1].split()[0])
        except OSError:
            continue
    return bool(states) and all(state in ("T", "t") for state in states)


def _fork_and_drop(driver: Any, conn: Any, how: str) -> None:
    """In a child: drop the inherited *conn* ``how`` — ``abandon`` (what the pool does with
    an idle connection), ``abandon_fd`` and then the holder's own ``close()`` (a lent one),
    or ``close`` alone (no connguard) — then let it be collected."""
    fd = driver.fileno(conn)

    def child() -> bool:
        nonlocal conn
        if how == "abandon":
            driver.abandon(conn, fd)
        else:
            if how == "abandon_fd":
                driver.abandon_fd(fd)
            conn.close()  # mysqlclient's close() sends COM_QUIT ...
        del conn
        gc.collect()  # ... and so would its deallocation
        return True

    assert in_child(child)


@pytest.mark.parametrize("how", ["abandon", "abandon_fd"])
def test_abandon_after_fork_sends_no_com_quit(driver: Any, mariadb: Any, how: str) -> None:
    conn = driver.connect("", mariadb.kwargs(), 5)
    try:
        sid = session_id(conn)
        _fork_and_drop(driver, conn, how)
        assert sid in mariadb.connection_ids(APP_USER)  # the server-side session survives
        assert scalar(conn, "SELECT CONNECTION_ID()") == sid
    finally:
        driver.close(conn)


def test_abandon_before_collection_sends_no_com_quit(driver: Any, mariadb: Any) -> None:
    """The deallocator alone (no close() call) is bypassed too."""
    conn = driver.connect("", mariadb.kwargs(), 5)
    try:
        sid = session_id(conn)
        fd = driver.fileno(conn)

        def child() -> bool:
            nonlocal conn
            driver.abandon_fd(fd)
            del conn
            gc.collect()
            return True

        assert in_child(child)
        assert sid in mariadb.connection_ids(APP_USER)
        assert scalar(conn, "SELECT CONNECTION_ID()") == sid
    finally:
        driver.close(conn)


def test_without_abandon_the_child_quits_the_parents_session(
    driver: Any, mariadb: Any, mysqldb: Any
) -> None:
    """The hazard the abandon exists for, shown on the real server: the child's close()
    sends COM_QUIT on the shared socket and the parent's session ends."""
    conn = driver.connect("", mariadb.kwargs(), 5)
    try:
        sid = session_id(conn)
        _fork_and_drop(driver, conn, "close")
        wait_until(lambda: sid not in mariadb.connection_ids(APP_USER), timeout=10)
        with pytest.raises(mysqldb.OperationalError) as info:
            query(conn, "SELECT 1")
        assert driver.is_disconnect(info.value)
    finally:
        driver.close(conn)


def test_without_abandon_collection_quits_the_parents_session(
    driver: Any, mariadb: Any, mysqldb: Any
) -> None:
    conn = driver.connect("", mariadb.kwargs(), 5)
    try:
        sid = session_id(conn)

        def child() -> bool:
            nonlocal conn
            del conn
            gc.collect()
            return True

        assert in_child(child)
        wait_until(lambda: sid not in mariadb.connection_ids(APP_USER), timeout=10)
    finally:
        driver.close(conn)


def test_error_classification_from_the_server(driver: Any, mariadb: Any, mysqldb: Any) -> None:
    # server absent: nothing listens
    mariadb.stop()
    with pytest.raises(mysqldb.OperationalError) as info:
        driver.connect("", mariadb.kwargs(), 2)
    assert driver.is_server_absent(info.value), info.value
    assert not driver.is_capacity_error(info.value)
    mariadb.start()
    # capacity: max_connections (10 is MariaDB's minimum) taken by this account
    mariadb.set_global("max_connections", 10)
    held: list[Any] = []
    try:
        with pytest.raises(mysqldb.OperationalError) as info:
            for _ in range(12):
                held.append(driver.connect("", mariadb.kwargs(), 5))
        assert info.value.args[0] == 1040, info.value
        assert driver.is_capacity_error(info.value)
        assert not driver.is_server_absent(info.value)
        assert not driver.is_disconnect(info.value)
    finally:
        for conn in held:
            driver.close(conn)
    # role change: read_only (the account has no READ_ONLY ADMIN)
    conn = driver.connect("", mariadb.kwargs(), 5)
    try:
        mariadb.set_global("read_only", 1)
        with pytest.raises(mysqldb.OperationalError) as info:
            query(conn, "CREATE TABLE drv_ro (i INT)")
        assert info.value.args[0] == 1290, info.value
        assert driver.is_role_change(info.value)
        assert not driver.is_disconnect(info.value)
        # a statement error that is neither
        with pytest.raises(mysqldb.Error) as info:
            query(conn, "SELECT * FROM no_such_table")
        assert not driver.is_disconnect(info.value)
        assert not driver.is_role_change(info.value)
        assert not driver.is_closed(conn)
    finally:
        driver.close(conn)
    # killed while a statement runs: 2013 (or MariaDB's 1927)
    conn = driver.connect("", mariadb.kwargs(), 5)
    killer = threading.Timer(0.3, mariadb.kill_connections, [APP_USER])
    killer.start()
    try:
        with pytest.raises(mysqldb.OperationalError) as info:
            query(conn, "SELECT SLEEP(20)")
        assert info.value.args[0] in (2013, 1927), info.value
        assert driver.is_disconnect(info.value)
    finally:
        killer.join()
        driver.close(conn)


def test_classification_of_codes(driver: Any, mysqldb: Any) -> None:
    op = mysqldb.OperationalError
    for code in (2006, 2013, 2055, 4031, 1927, 1053):
        assert driver.is_disconnect(op(code, "x")), code
    assert driver.is_disconnect(mysqldb.InterfaceError(0, ""))
    for code in (1205, 1213, 1317, 1064):  # lock wait, deadlock, query killed, syntax
        assert not driver.is_disconnect(op(code, "x")), code
    assert driver.is_capacity_error(op(1040, "Too many connections"))
    assert driver.is_capacity_error(op(1203, "User app already has more than ..."))
    assert driver.is_capacity_error(
        op(1226, "User 'app' has exceeded the 'max_user_connections' resource (current value: 5)")
    )
    assert not driver.is_capacity_error(
        op(1226, "User 'app' has exceeded the 'max_questions' resource (current value: 5)")
    )
    for code in (2002, 2003, 1053):
        assert driver.is_server_absent(op(code, "x")), code
    assert driver.is_role_change(
        op(1290, "The MySQL server is running with the --super-read-only option so it ...")
    )
    assert not driver.is_role_change(
        op(1290, "The MySQL server is running with the --secure-file-priv option so it ...")
    )


def test_connect_to_a_silent_server_is_bounded(driver: Any, mysqldb: Any) -> None:
    """A listener that accepts (the kernel's backlog) but never greets: connect_timeout,
    set from the deadline, ends the wait for the greeting."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        started = time.monotonic()
        with pytest.raises(mysqldb.OperationalError) as info:
            driver.connect(f"host=127.0.0.1 port={port} user=x", {}, 1.0)
        elapsed = time.monotonic() - started
    assert elapsed < 3 * 2 + 5, elapsed  # connect_timeout=2 (whole seconds, at least 2)
    assert driver.is_disconnect(info.value) or driver.is_server_absent(info.value), info.value


def test_pool_masks_the_password(mysqldb: Any) -> None:
    from connguard import ConnectionPool

    pool = ConnectionPool(
        "mysql://app:s3cret@db.invalid:3306/shop",
        driver="mysqlclient",
        kwargs={"passwd": "0ther", "charset": "utf8mb4"},
        open=False,
    )
    try:
        shown = f"{pool!r} {pool.config.masked()}"
        assert "s3cret" not in shown and "0ther" not in shown, shown
        assert "mysql://app:***@db.invalid:3306/shop" in shown
    finally:
        pool.close()
