"""Checkin against the real server: reset of open and failed transactions (seen on the
server), broken connections discarded, double and foreign returns, ``pool.connection()``
committing or rolling back."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pool_support import (
    backend_pid,
    driver,
    make_pool,
    query,
    scalar,
    stat,
    tx_status,
    wait_until,
)

from connguard import ConnectionPool, ForeignConnection

__all__ = ["driver", "make_pool"]  # fixtures


@pytest.fixture
def table(pg: Any) -> Any:
    name = f"cg_items_{uuid.uuid4().hex[:8]}"
    pg.execute(f"CREATE TABLE {name} (v text)")
    yield name
    pg.execute(f"DROP TABLE IF EXISTS {name}")


def rows(pg: Any, table: str) -> list[str]:
    return [r[0] for r in pg.execute(f"SELECT v FROM {table} ORDER BY v")]


def test_open_transaction_is_rolled_back(make_pool, pg: Any, table: str, driver: str) -> None:
    pool = make_pool(driver=driver, max_size=1)
    conn = pool.getconn()
    query(conn, f"INSERT INTO {table} VALUES ('lost')")
    assert pg.connections(application_name=pool.name) == {"idle in transaction": 1}
    pool.putconn(conn)
    assert pg.connections(application_name=pool.name) == {"idle": 1}
    assert rows(pg, table) == []
    assert stat(pool, "returns_rolled_back") == 1
    again = pool.getconn()
    assert again is conn and tx_status(again) == 0
    pool.putconn(again)


def test_failed_transaction_is_rolled_back(make_pool, pg: Any, driver: str) -> None:
    pool = make_pool(driver=driver, max_size=1)
    conn = pool.getconn()
    with pytest.raises(Exception, match="division by zero"):
        query(conn, "SELECT 1/0")
    assert tx_status(conn) == 3  # INERROR
    pool.putconn(conn)
    again = pool.getconn()
    assert again is conn and scalar(again, "SELECT 1") == 1
    pool.putconn(again)
    assert pg.connections(application_name=pool.name) == {"idle": 1}


def test_broken_connection_is_discarded(make_pool, pg: Any, driver: str) -> None:
    pool = make_pool(driver=driver, max_size=1)
    conn = pool.getconn()
    pid = backend_pid(conn)
    query(conn, "SELECT 1")  # a transaction is open
    pg.execute("SELECT pg_terminate_backend(%s, 5000)", [pid])
    with pytest.raises(Exception):  # noqa: B017 - the driver's own disconnect error
        query(conn, "SELECT 1")
    pool.putconn(conn)  # quietly discarded
    assert stat(pool, "returns_bad") == 1 and stat(pool, "pool_size") == 0
    with pool.connection() as fresh:
        assert backend_pid(fresh) != pid


def test_closed_by_the_caller_is_discarded(make_pool, pg: Any, driver: str) -> None:
    pool = make_pool(driver=driver, max_size=1)
    conn = pool.getconn()
    conn.close()
    pool.putconn(conn)
    pool.putconn(conn)  # twice: harmless
    assert stat(pool, "pool_size") == 0
    wait_until(lambda: pg.count_connections(application_name=pool.name) == 0)


def test_double_putconn_is_harmless(make_pool, driver: str) -> None:
    pool = make_pool(driver=driver, max_size=2)
    conn = pool.getconn()
    pool.putconn(conn)
    pool.putconn(conn)
    a, b = pool.getconn(), pool.getconn()
    assert a is not b
    pool.putconn(a)
    pool.putconn(b)
    assert stat(pool, "pool_size") == 2


def test_foreign_connection(make_pool, pg: Any, driver: str) -> None:
    pool = make_pool(driver=driver, max_size=1)
    other = make_pool(driver=driver, max_size=1)
    stranger = other.getconn()
    with pytest.raises(ForeignConnection, match=rf"^pool {pool.name!r}: putconn\(\) got a"):
        pool.putconn(stranger)
    other.putconn(stranger)
    if driver == "psycopg":
        import psycopg

        raw = psycopg.connect(pg.conninfo())
    else:
        import psycopg2

        raw = psycopg2.connect(pg.conninfo())
    try:
        with pytest.raises(ForeignConnection):
            pool.putconn(raw)
    finally:
        raw.close()


def test_connection_context_commits_on_success(make_pool, pg: Any, table: str, driver: str) -> None:
    pool = make_pool(driver=driver, max_size=1)
    with pool.connection() as conn:
        query(conn, f"INSERT INTO {table} VALUES ('kept')")
    assert rows(pg, table) == ["kept"]
    assert pg.connections(application_name=pool.name) == {"idle": 1}


def test_connection_context_rolls_back_on_exception(
    make_pool, pg: Any, table: str, driver: str
) -> None:
    pool: ConnectionPool = make_pool(driver=driver, max_size=1)
    with pytest.raises(RuntimeError), pool.connection() as conn:
        query(conn, f"INSERT INTO {table} VALUES ('lost')")
        raise RuntimeError("boom")
    assert rows(pg, table) == []
    assert pg.connections(application_name=pool.name) == {"idle": 1}
    assert stat(pool, "pool_available") == 1


def test_autocommit_connections_are_left_alone(make_pool, pg: Any, table: str) -> None:
    pool = make_pool(max_size=1, kwargs={"autocommit": True})
    with pool.connection() as conn:
        query(conn, f"INSERT INTO {table} VALUES ('auto')")
    assert rows(pg, table) == ["auto"]
    assert stat(pool, "returns_rolled_back") == 0


def test_configure_and_reset_callbacks(make_pool, pg: Any) -> None:
    def configure(conn: Any) -> None:
        conn.execute("SET application_name = 'configured'")
        conn.commit()

    resets: list[int] = []

    def reset(conn: Any) -> None:
        resets.append(backend_pid(conn))
        conn.execute("RESET ALL")
        conn.commit()

    pool = make_pool(max_size=1, configure=configure, reset=reset)
    with pool.connection() as conn:
        assert scalar(conn, "SHOW application_name") == "configured"
        conn.execute("SET work_mem = '7MB'")
    with pool.connection() as conn:
        assert scalar(conn, "SHOW work_mem") != "7MB"
    assert len(resets) == 2
