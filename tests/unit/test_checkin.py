"""Checkin on the fake driver: reset, discard, double return, foreign connections."""

from __future__ import annotations

import pytest
from fakedb import ACTIVE, IDLE, INERROR, INTRANS, FakeDriver, FakeServer

from connguard import ConnectionPool, ForeignConnection


def test_open_transaction_is_rolled_back(make_pool, server: FakeServer) -> None:
    pool = make_pool(max_size=1)
    conn = pool.getconn()
    conn.execute("insert 1")
    assert conn.status == INTRANS
    pool.putconn(conn)
    assert conn.status == IDLE and conn.rollbacks == 1
    assert pool.get_stats()["returns_rolled_back"] == 1
    assert pool.getconn() is conn  # kept: it is healthy


def test_failed_transaction_is_rolled_back(make_pool) -> None:
    pool = make_pool(max_size=1)
    conn = pool.getconn()
    with pytest.raises(Exception, match="syntax"):
        conn.execute("error")
    assert conn.status == INERROR
    pool.putconn(conn)
    assert conn.status == IDLE
    assert pool.getconn() is conn


def test_idle_connection_is_not_rolled_back(make_pool) -> None:
    pool = make_pool(max_size=1)
    conn = pool.getconn()
    pool.putconn(conn)
    assert conn.rollbacks == 0
    assert pool.get_stats()["returns_rolled_back"] == 0


def test_broken_connection_is_discarded(make_pool, server: FakeServer) -> None:
    pool = make_pool(max_size=1)
    conn = pool.getconn()
    conn.execute("begin")
    server.kill(conn)
    pool.putconn(conn)  # the rollback fails: discarded, quietly
    stats = pool.get_stats()
    assert stats["returns_bad"] == 1 and stats["pool_size"] == 0
    fresh = pool.getconn()
    assert fresh is not conn
    pool.putconn(fresh)


def test_connection_closed_by_the_caller_is_discarded(make_pool, server: FakeServer) -> None:
    pool = make_pool(max_size=1)
    conn = pool.getconn()
    conn.close()
    pool.putconn(conn)
    assert pool.get_stats()["pool_size"] == 0
    assert pool.getconn() is not conn


def test_connection_in_an_unresettable_state_is_discarded(make_pool, server: FakeServer) -> None:
    pool = make_pool(max_size=1)
    conn = pool.getconn()
    server.set_status(conn, ACTIVE)  # a query still running
    pool.putconn(conn)
    assert not server.is_open(conn)
    assert pool.get_stats()["returns_bad"] == 1


def test_double_putconn_is_harmless(make_pool) -> None:
    pool = make_pool(max_size=2)
    conn = pool.getconn()
    pool.putconn(conn)
    pool.putconn(conn)
    stats = pool.get_stats()
    assert (stats["pool_size"], stats["pool_available"], stats["pool_in_use"]) == (1, 1, 0)
    a, b = pool.getconn(), pool.getconn()
    assert a is not b  # not on the idle list twice
    pool.putconn(a)
    pool.putconn(b)


@pytest.mark.parametrize("how", ["broken", "busy", "discard", "expired"])
def test_double_putconn_of_a_discarded_connection_is_harmless(
    make_pool, server: FakeServer, how: str
) -> None:
    pool = make_pool(max_size=1, max_lifetime=0.01 if how == "expired" else 3600)
    conn = pool.getconn()
    if how == "broken":
        conn.close()
    elif how == "busy":
        server.set_status(conn, ACTIVE)
    elif how == "expired":
        import time

        time.sleep(0.02)
    if how == "discard":
        pool.discard(conn)
    else:
        pool.putconn(conn)
    assert pool.get_stats()["pool_size"] == 0
    pool.putconn(conn)  # a second return of a connection the pool already closed
    pool.discard(conn)
    assert pool.get_stats()["pool_size"] == 0


def test_foreign_connection_is_refused(make_pool, server: FakeServer, driver: FakeDriver) -> None:
    pool = make_pool(name="a", max_size=1)
    other = make_pool(name="b", max_size=1)
    stranger = other.getconn()
    with pytest.raises(ForeignConnection) as info:
        pool.putconn(stranger)
    assert str(info.value) == (
        f"pool 'a': putconn() got a connection this pool did not lend ({stranger!r}); "
        "return each connection to the pool it came from"
    )
    other.putconn(stranger)  # still usable by its own pool
    assert other.get_stats()["pool_available"] == 1
    raw = server.connect(1.0, {})
    with pytest.raises(ForeignConnection):
        pool.putconn(raw)
    with pytest.raises(ForeignConnection):
        pool.discard(raw)
    raw.close()


def test_discard_closes_and_frees_the_slot(make_pool, server: FakeServer) -> None:
    pool = make_pool(max_size=1)
    conn = pool.getconn()
    pool.discard(conn)
    assert not server.is_open(conn)
    stats = pool.get_stats()
    assert stats["pool_size"] == 0 and stats["connections_lost"] == 1
    pool.putconn(pool.getconn())


def test_context_manager_commits_on_success(make_pool) -> None:
    pool = make_pool(max_size=1)
    with pool.connection() as conn:
        conn.execute("insert 1")
    assert conn.commits == 1 and conn.rollbacks == 0 and conn.status == IDLE
    assert pool.get_stats()["pool_available"] == 1


def test_context_manager_without_a_transaction_does_not_commit(make_pool) -> None:
    pool = make_pool(max_size=1)
    with pool.connection() as conn:
        pass
    assert conn.commits == 0


def test_context_manager_rolls_back_on_exception(make_pool) -> None:
    pool = make_pool(max_size=1)
    with pytest.raises(ZeroDivisionError), pool.connection() as conn:
        conn.execute("insert 1")
        1 / 0  # noqa: B018
    assert conn.commits == 0 and conn.rollbacks == 1 and conn.status == IDLE
    assert pool.get_stats()["pool_available"] == 1


def test_context_manager_returns_even_when_commit_fails(make_pool, server: FakeServer) -> None:
    pool = make_pool(max_size=1)
    with pytest.raises(Exception, match="server closed"), pool.connection() as conn:
        conn.execute("insert 1")
        server.kill(conn)
    stats = pool.get_stats()
    assert stats["pool_in_use"] == 0 and stats["pool_size"] == 0


def test_context_manager_timeout(make_pool) -> None:
    from connguard import PoolTimeout

    pool = make_pool(max_size=1)
    with pool.connection(), pytest.raises(PoolTimeout), pool.connection(timeout=0.02):
        pass  # pragma: no cover


def test_reset_callback_runs_on_return(make_pool) -> None:
    seen: list[object] = []
    pool = make_pool(max_size=1, reset=seen.append)
    conn = pool.getconn()
    pool.putconn(conn)
    assert seen == [conn]


def test_reset_callback_failure_discards(make_pool, server: FakeServer) -> None:
    def reset(conn: object) -> None:
        raise RuntimeError("cannot reset")

    pool = make_pool(max_size=1, reset=reset)
    conn = pool.getconn()
    pool.putconn(conn)
    assert not server.is_open(conn)
    assert pool.get_stats()["returns_bad"] == 1


def test_putconn_on_a_closed_pool_closes_the_connection(make_pool, server: FakeServer) -> None:
    pool: ConnectionPool = make_pool(max_size=2)
    a, b = pool.getconn(), pool.getconn()
    b.execute("begin")
    pool.close()
    pool.putconn(a)
    pool.putconn(b)
    assert not server.is_open(a) and not server.is_open(b)
    assert server.open_count() == 0
