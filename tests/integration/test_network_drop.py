"""Silent network drops on real kernel TCP: PostgreSQL inside a network namespace the test
creates, the pool on the host side of a veth pair, and nftables rules (inside the namespace)
that make the established flows vanish — no FIN, no RST — while new connections still work.

* an idle connection whose path died is never lent: the ping after idle, the background
  keepalive or the kernel (its keepalive probes unanswered: the socket reports the error)
  finds it, and the pool replaces it; requests that start after the drop see no error;
* a statement already sent when the path dies fails within the TCP bound (keepalive /
  tcp_user_timeout, small here so that the tests are short) with an error saying so, and is
  not run a second time.

Needs root, ip and nft: skipped with the reason otherwise, failed under CI=true.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pool_support import DRIVERS, scalar, stat, wait_until

from connguard import ConnectionPool
from connguard.testing import netns as rig
from support import netns_postgres

pytestmark = pytest.mark.integration

# Small TCP bounds: a dead path is found by the kernel ~2 s after the last packet received.
FAST_TCP = {
    "keepalives_idle": 1,
    "keepalives_interval": 1,
    "keepalives_count": 2,
    "tcp_user_timeout": 2000,
}
TCP_BOUND = 1 + 1 + 2.0  # idle + interval, and the unacknowledged-data timeout, in s
FACTOR = 4  # generous: the machine is shared


@pytest.fixture(scope="module")
def netns_pg() -> Iterator[rig.NetnsPostgresServer]:
    with netns_postgres() as server:
        yield server


@pytest.fixture
def dropper(netns_pg: rig.NetnsPostgresServer) -> Iterator[rig.Netns]:
    """The namespace, its drop rules removed after the test."""
    yield netns_pg.netns
    netns_pg.netns.restore()


@pytest.fixture
def make_pool(netns_pg: rig.NetnsPostgresServer) -> Iterator[Any]:
    pools: list[ConnectionPool] = []

    def make(driver: str, **options: Any) -> ConnectionPool:
        name = f"cg-drop-{uuid.uuid4().hex[:8]}"
        options.setdefault("timeout", 20.0)
        options.setdefault("ping_timeout", 0.5)
        pool = ConnectionPool(
            netns_pg.conninfo(application_name=name),
            name=name,
            driver=driver,
            kwargs=FAST_TCP,
            **options,
        )
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


def open_idle(pool: ConnectionPool, n: int) -> list[int]:
    """Check out *n* connections at once and give them back: n idle connections."""
    conns = [pool.getconn() for _ in range(n)]
    pids = [backend_pid(conn) for conn in conns]
    for conn in conns:
        pool.putconn(conn)
    return pids


def backend_pid(conn: Any) -> int:
    if hasattr(conn, "info"):
        return int(conn.info.backend_pid)
    return int(conn.get_backend_pid())


def requests(pool: ConnectionPool, n: int, threads: int = 3) -> list[BaseException]:
    """*n* short requests from *threads* threads; the errors they got."""
    errors: list[BaseException] = []
    lock = threading.Lock()
    per_thread = n // threads

    def run() -> None:
        for _ in range(per_thread):
            try:
                with pool.connection() as conn:
                    assert scalar(conn, "SELECT 1") == 1
            except BaseException as exc:
                with lock:
                    errors.append(exc)

    workers = [threading.Thread(target=run) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert not any(w.is_alive() for w in workers), "requests still running after 120 s"
    return errors


@pytest.mark.parametrize("driver", DRIVERS)
def test_ping_after_idle_replaces_connections_on_a_dropped_path(
    make_pool: Any, dropper: rig.Netns, netns_pg: rig.NetnsPostgresServer, driver: str
) -> None:
    pool = make_pool(driver, max_size=3, ping_interval=0.2)
    open_idle(pool, 3)
    assert len(dropper.drop_established(netns_pg.port)) >= 3
    time.sleep(0.3)  # past ping_interval: each idle connection is pinged before it is lent
    errors = requests(pool, 30)
    assert errors == []
    assert stat(pool, "connections_lost") == 3


@pytest.mark.parametrize("driver", DRIVERS)
def test_background_keepalive_replaces_connections_on_a_dropped_path(
    make_pool: Any, dropper: rig.Netns, netns_pg: rig.NetnsPostgresServer, driver: str
) -> None:
    pool = make_pool(driver, max_size=3, min_size=3, keepalive_interval=0.3)
    pool.wait(10)
    open_idle(pool, 3)
    assert len(dropper.drop_established(netns_pg.port)) >= 3
    # no request meanwhile: the pool's own keepalive finds them dead and refills min_size
    wait_until(lambda: stat(pool, "connections_lost") == 3, timeout=30)
    wait_until(lambda: pool.get_stats()["pool_size"] == 3, timeout=30)
    assert requests(pool, 30) == []


@pytest.mark.parametrize("driver", DRIVERS)
def test_kernel_finds_an_idle_dropped_path_before_it_is_lent(
    make_pool: Any, dropper: rig.Netns, netns_pg: rig.NetnsPostgresServer, driver: str
) -> None:
    # ping_interval off: only the socket poll at checkout and the kernel's keepalive stand
    # between a dead connection and a request
    pool = make_pool(driver, max_size=2, ping_interval=0)
    open_idle(pool, 2)
    assert len(dropper.drop_established(netns_pg.port)) >= 2
    time.sleep(TCP_BOUND * 2)  # the kernel gives up on the silent peer and reports the error
    pings = stat(pool, "pings")
    assert requests(pool, 12) == []
    assert stat(pool, "connections_lost") == 2
    assert stat(pool, "pings") - pings == 2  # the poll said "look": one ping each, failed


@pytest.mark.parametrize("driver", DRIVERS)
def test_statement_in_flight_fails_within_the_tcp_bound_and_runs_once(
    make_pool: Any, dropper: rig.Netns, netns_pg: rig.NetnsPostgresServer, driver: str
) -> None:
    pool = make_pool(driver, max_size=2)
    token = uuid.uuid4().hex
    conn = pool.getconn()
    conn.autocommit = True
    outcome: list[Any] = []

    def statement() -> None:
        started = time.monotonic()
        try:
            scalar(conn, "INSERT INTO cg_net SELECT %s FROM pg_sleep(1.5) RETURNING 1", [token])
            outcome.append((time.monotonic() - started, None))
        except Exception as exc:
            outcome.append((time.monotonic() - started, exc))

    thread = threading.Thread(target=statement, daemon=True)
    thread.start()
    wait_until(
        lambda: (
            netns_pg.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'INSERT INTO cg_net%%'"
                " AND state = 'active'"
            )[0][0]
            == 1
        ),
        timeout=10,
    )
    dropped_at = time.monotonic()
    dropper.drop_established(netns_pg.port)
    thread.join(TCP_BOUND * FACTOR + 5)
    assert not thread.is_alive(), "the statement still waits on a dead path"
    _took, error = outcome[0]
    assert error is not None, "the statement succeeded on a dropped path"
    assert "timed out" in str(error).lower(), error
    assert time.monotonic() - dropped_at < TCP_BOUND * FACTOR + 5
    pool.putconn(conn)  # broken: discarded, never lent again
    assert stat(pool, "returns_bad") == 1
    # the server ran it once (its result had nowhere to go); nothing ran it again
    wait_until(
        lambda: (
            netns_pg.execute("SELECT count(*) FROM cg_net WHERE token = %s", [token])[0][0] >= 1
        ),
        timeout=10,
    )
    time.sleep(0.5)
    assert netns_pg.execute("SELECT count(*) FROM cg_net WHERE token = %s", [token])[0][0] == 1
    # and new requests work at once
    assert requests(pool, 6) == []


@pytest.mark.parametrize("driver", DRIVERS)
def test_one_unanswered_ping_retires_the_idle_connections_silent_as_long(
    make_pool: Any, dropper: rig.Netns, netns_pg: rig.NetnsPostgresServer, driver: str
) -> None:
    # a NAT gateway forgot every idle flow: the first ping that times out condemns the
    # connections idle at least as long, so the caller waits one ping_timeout, not three
    pool = make_pool(driver, max_size=3, ping_interval=0.2, ping_timeout=1.0)
    open_idle(pool, 3)
    assert len(dropper.drop_established(netns_pg.port)) >= 3
    time.sleep(0.3)
    pings = stat(pool, "pings")
    with pool.connection() as conn:
        assert scalar(conn, "SELECT 1") == 1
    assert stat(pool, "pings") - pings == 1
    assert stat(pool, "connections_lost") == 3
    assert requests(pool, 12) == []
