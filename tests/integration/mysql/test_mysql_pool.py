"""ConnectionPool(driver="mysqlclient") on the real MariaDB: fork safety, liveness after
wait_timeout, KILL of every session and a restart, failing fast while the server is down and
recovering after, `Too many connections` absorbed within max_size, and a kill inside a
transaction raised (never retried). Loops are bounded; assertions are on behaviour."""

from __future__ import annotations

import gc
import os
import threading
import time
from typing import Any

import pytest
from mysql_support import (
    in_child,
    make_pool,
    mysqldb,
    no_sessions_left,
    pool_driver,
    pymysql_module,
    query,
    scalar,
    session_id,
    stat,
    wait_until,
)

from connguard import PoolUnavailable
from connguard.drivers.base import TxStatus
from connguard.testing.mariadb import APP_USER

__all__ = ["make_pool", "mysqldb", "pool_driver", "pymysql_module"]  # fixtures

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")


def run_requests(pool: Any, count: int) -> list[int]:
    """*count* sequential requests, each one query; the session id each ran on."""
    sids = []
    for _ in range(count):
        with pool.connection() as conn:
            sids.append(scalar(conn, "SELECT CONNECTION_ID()"))
    return sids


# -- fork ------------------------------------------------------------------------------------


@pytest.mark.parametrize("drop", ["putconn", "close", "collect"])
def test_fork_child_abandons_inherited_connections(
    make_pool, mariadb: Any, drop: str, pool_driver: Any
) -> None:
    """A child gets its own sessions; the connection lent in the parent at fork time and the
    idle ones are abandoned without COM_QUIT, whatever the child does with the lent one
    (returns it, closes it, drops it): the parent keeps every session and keeps working."""
    pool = make_pool(min_size=2, max_size=4, driver=pool_driver)
    pool.wait(10)
    held = pool.getconn()
    held_sid = session_id(held)
    before = set(mariadb.connection_ids(APP_USER))
    opened = stat(pool, "connections_opened")

    def child() -> list[int]:
        nonlocal held
        sids = run_requests(pool, 3)
        if drop == "putconn":
            pool.putconn(held)  # a quiet discard
        elif drop == "close":
            held.close()
        del held
        gc.collect()
        return sids

    child_sids = in_child(child)
    assert not set(child_sids) & before  # the child never used a parent's session
    assert before <= set(mariadb.connection_ids(APP_USER))  # every parent session survives
    assert scalar(held, "SELECT CONNECTION_ID()") == held_sid
    pool.putconn(held)
    assert set(run_requests(pool, 5)) <= before
    assert stat(pool, "connections_opened") == opened  # nothing had to be replaced
    assert stat(pool, "connections_lost") == 0


def test_many_children_while_the_parent_queries(make_pool, mariadb: Any) -> None:
    pool = make_pool(min_size=2, max_size=4)
    pool.wait(10)
    errors: list[BaseException] = []
    stop = threading.Event()

    def parent_load() -> None:
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                run_requests(pool, 1)
            except BaseException as exc:
                errors.append(exc)
                return
            time.sleep(0.005)

    worker = threading.Thread(target=parent_load)
    worker.start()
    try:
        for _ in range(6):
            assert len(in_child(lambda: run_requests(pool, 3))) == 3
    finally:
        stop.set()
        worker.join(30)
    assert errors == []
    assert stat(pool, "connections_lost") == 0
    assert run_requests(pool, 2)


# -- liveness ----------------------------------------------------------------------------------


def test_wait_timeout_closed_sessions_are_replaced(make_pool, mariadb: Any) -> None:
    mariadb.set_global("wait_timeout", 1)
    pool = make_pool(min_size=2, max_size=2)
    pool.wait(10)
    old = set(mariadb.connection_ids(APP_USER))
    assert len(old) == 2
    wait_until(lambda: not set(mariadb.connection_ids(APP_USER)) & old, timeout=15)
    sids = run_requests(pool, 6)  # no request fails on a timed-out session
    assert not set(sids) & old
    assert stat(pool, "connections_lost") >= 1


@pytest.mark.parametrize("fault", ["kill", "restart"])
def test_killed_or_restarted_sessions_are_replaced(
    make_pool, mariadb: Any, fault: str, pool_driver: Any
) -> None:
    pool = make_pool(min_size=3, max_size=3, driver=pool_driver)
    pool.wait(10)
    old = set(mariadb.connection_ids(APP_USER))
    if fault == "kill":
        assert mariadb.kill_connections(APP_USER) == 3
    else:
        mariadb.restart()
    sids = run_requests(pool, 10)
    assert not set(sids) & old
    assert stat(pool, "requests_errors") == 0
    assert stat(pool, "connections_lost") >= 1


# -- outage ------------------------------------------------------------------------------------


def test_stopped_server_fails_fast_then_recovers(make_pool, mariadb: Any) -> None:
    pool = make_pool(min_size=1, max_size=3, timeout=30)
    pool.wait(10)
    mariadb.stop()
    for attempt in range(5):
        started = time.monotonic()
        with pytest.raises(PoolUnavailable) as info:
            pool.getconn()
        assert time.monotonic() - started < 10, attempt  # not the 30 s timeout
    message = str(info.value)
    assert f"pool {pool.name!r}: database unreachable" in message, message
    assert "2002" in message or "2003" in message, message
    assert stat(pool, "breaker_open") == 1
    mariadb.start()
    deadline = time.monotonic() + 20
    while True:
        try:
            assert run_requests(pool, 1)
            break
        except PoolUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    assert stat(pool, "breaker_open") == 0


# -- capacity ----------------------------------------------------------------------------------


def test_too_many_connections_is_absorbed_within_max_size(make_pool, mariadb: Any) -> None:
    """max_connections=10 (MariaDB's minimum) with 7 sessions held elsewhere: a pool of
    max_size=6 under 8 threads gets 1040 for its 4th connection, holds at what it has and
    queues callers; every request succeeds."""
    no_sessions_left(mariadb, APP_USER)
    mariadb.set_global("max_connections", 10)
    fillers = [mariadb.connect() for _ in range(7)]
    try:
        pool = make_pool(max_size=6, timeout=60)
        errors: list[BaseException] = []
        done: list[int] = []

        def worker() -> None:
            for _ in range(5):
                try:
                    with pool.connection() as conn:
                        done.append(scalar(conn, "SELECT SLEEP(0.05)"))
                except BaseException as exc:
                    errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert errors == []
        assert len(done) == 40
        assert stat(pool, "connections_refused_full") >= 1
        assert stat(pool, "pool_size") <= 3
        assert mariadb.count_connections(APP_USER) <= 10
    finally:
        for conn in fillers:
            conn.close()


def test_flood_never_exceeds_max_size(make_pool, mariadb: Any) -> None:
    no_sessions_left(mariadb, APP_USER)
    pool = make_pool(max_size=3, timeout=60)
    peak = 0
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        deadline = time.monotonic() + 60
        while not stop.is_set() and time.monotonic() < deadline:
            peak = max(peak, mariadb.count_connections(APP_USER))
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    errors: list[BaseException] = []

    def worker() -> None:
        for _ in range(5):
            try:
                with pool.connection() as conn:
                    scalar(conn, "SELECT SLEEP(0.02)")
            except BaseException as exc:
                errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(12)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
    finally:
        stop.set()
        sampler.join(30)
    assert errors == []
    assert 1 <= peak <= 3


# -- transactions ------------------------------------------------------------------------------


def test_kill_inside_a_transaction_is_raised_not_retried(
    make_pool, mariadb: Any, mysqldb: Any, pool_driver: Any
) -> None:
    mariadb.execute(
        "CREATE TABLE IF NOT EXISTS connguard.pool_tx (id INT PRIMARY KEY) ENGINE=InnoDB"
    )
    try:
        pool = make_pool(max_size=2, driver=pool_driver)
        driver = pool._driver
        errors: tuple[type[BaseException], ...] = (mysqldb.OperationalError,)
        if pool_driver == "pymysql":
            import pymysql

            errors = (pymysql.OperationalError,)
        with pytest.raises(errors) as info, pool.connection() as conn:
            query(conn, "INSERT INTO pool_tx VALUES (1)")
            assert driver.transaction_status(conn) == TxStatus.INTRANS
            mariadb.kill_connections(APP_USER)
            query(conn, "INSERT INTO pool_tx VALUES (2)")
        assert driver.is_disconnect(info.value), info.value
        # 0 partial (the open transaction died with its session), 0 duplicated (nothing was
        # sent again on another session)
        assert mariadb.execute("SELECT count(*) FROM connguard.pool_tx")[0][0] == 0
        assert stat(pool, "returns_bad") + stat(pool, "connections_lost") >= 1
        with pool.connection() as conn:
            query(conn, "INSERT INTO pool_tx VALUES (3)")
        assert mariadb.execute("SELECT id FROM connguard.pool_tx") == [(3,)]
    finally:
        mariadb.execute("DROP TABLE IF EXISTS connguard.pool_tx")


def test_checkin_rolls_back_an_open_transaction(make_pool, mariadb: Any, pool_driver: Any) -> None:
    mariadb.execute(
        "CREATE TABLE IF NOT EXISTS connguard.pool_rb (id INT PRIMARY KEY) ENGINE=InnoDB"
    )
    try:
        pool = make_pool(max_size=1, driver=pool_driver)
        conn = pool.getconn()
        query(conn, "INSERT INTO pool_rb VALUES (1)")
        pool.putconn(conn)  # not committed: rolled back, connection kept
        assert stat(pool, "returns_rolled_back") == 1
        with pool.connection() as again:  # committed on the way out: nothing to roll back
            query(again, "SELECT * FROM pool_rb")
        assert stat(pool, "returns_rolled_back") == 1
        assert mariadb.connections(APP_USER) == {"idle": 1}
        with pool.connection() as again:
            assert again is conn
            assert scalar(again, "SELECT count(*) FROM pool_rb") == 0
    finally:
        mariadb.execute("DROP TABLE IF EXISTS connguard.pool_rb")


def test_unread_rows_at_checkin_discard_the_connection(
    make_pool, mariadb: Any, mysqldb: Any, pool_driver: Any
) -> None:
    """An unbuffered result left half-read leaves the protocol out of sync: the next user
    would get 2014 (commands out of sync). With the server's next rows waiting on the
    socket, the pool sees them and discards the connection."""
    if pool_driver == "pymysql":
        from pymysql.cursors import SSCursor
    else:
        from MySQLdb.cursors import SSCursor  # type: ignore[no-redef]

    pool = make_pool(max_size=1, driver=pool_driver)
    conn = pool.getconn()
    cur = conn.cursor(SSCursor)
    cur.execute("SELECT seq FROM seq_1_to_100000")
    cur.fetchone()
    poller = pool._driver.make_poller(pool._driver.fileno(conn))
    wait_until(lambda: poller.poll(0), timeout=10)
    pool.putconn(conn)
    assert stat(pool, "returns_bad") == 1
    with pool.connection() as fresh:
        assert fresh is not conn
        assert scalar(fresh, "SELECT 1") == 1


def test_unread_procedure_results_at_checkin_discard_the_connection(
    make_pool, mariadb: Any, pool_driver: Any
) -> None:
    """A CALL's second result set not fetched (no nextset()): discarded, not lent out of
    sync."""
    mariadb.execute(
        "CREATE OR REPLACE PROCEDURE connguard.two_results() BEGIN SELECT 1; SELECT 2; END"
    )
    try:
        pool = make_pool(max_size=1, driver=pool_driver)
        conn = pool.getconn()
        cur = conn.cursor()
        cur.execute("CALL two_results()")
        assert cur.fetchall() == ((1,),)
        pool.putconn(conn)
        assert stat(pool, "returns_bad") == 1
        with pool.connection() as fresh:
            assert scalar(fresh, "SELECT 3") == 3
        del cur
    finally:
        mariadb.execute("DROP PROCEDURE IF EXISTS connguard.two_results")
