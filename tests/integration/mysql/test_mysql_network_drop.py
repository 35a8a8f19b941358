"""Silent network drops on MariaDB, on real kernel TCP: ``mariadbd`` inside a network
namespace the test creates (``netns_mariadb``), the pool on the host side of a veth pair, and
nftables rules (inside the namespace) that make the established flows vanish — no FIN, no
RST — while new connections still work. The same guarantees as on PostgreSQL
(tests/integration/test_network_drop.py), on mysqlclient and PyMySQL, whose sockets get
their keepalive and ``TCP_USER_TIMEOUT`` from the driver (``setsockopt`` after connecting):

* idle connections on a dead path are never lent: the first checkout after the drop waits
  one ``ping_timeout`` (one unanswered ping retires every connection idle as long) and
  succeeds; with the ping off, the kernel's keepalive finds them and the checkout's poll sees
  it; requests that start after the drop see no error;
* a statement in flight when the path dies fails within the TCP bound the user's keys set
  (small here; the bound scales with them), with a disconnect error, and is run once only.

Needs root, ip, nft and setpriv: skipped with the reason otherwise, failed under CI=true.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from mysql_support import mysqldb, pymysql_module, scalar, stat, wait_until

from connguard import ConnectionPool
from connguard.drivers import get_driver
from connguard.drivers.mysql_common import error_code
from connguard.testing.netns import NetnsMariaDBServer

__all__ = ["mysqldb", "pymysql_module"]  # fixtures

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# Small TCP bounds, as the user's keys: a dead path is found by the kernel ~2 s after the
# last packet received (keepalive probe after 1 s, the next timer past tcp_user_timeout).
FAST_TCP = {
    "keepalives_idle": 1,
    "keepalives_interval": 1,
    "keepalives_count": 2,
    "tcp_user_timeout": 2000,
}
# three times slower: ~6 s
SLOW_TCP = {
    "keepalives_idle": 4,
    "keepalives_interval": 2,
    "keepalives_count": 2,
    "tcp_user_timeout": 6000,
}
FACTOR = 4  # generous: the machine is shared
DRIVERS = ["mysqlclient", "pymysql"]
CR_SERVER_LOST = 2013


def tcp_bound(tcp: dict[str, int]) -> float:
    """Seconds after the last packet received until the kernel gives up on a silent peer
    (no unacknowledged data): the first keepalive timer at or past ``tcp_user_timeout``,
    a probe having gone out (one at ``keepalives_idle``, then every ``keepalives_interval``)."""
    idle, interval = tcp["keepalives_idle"], tcp["keepalives_interval"]
    limit = tcp["tcp_user_timeout"] / 1000
    at = idle + interval
    while at < limit:
        at += interval
    return float(at)


@pytest.fixture(params=DRIVERS)
def driver(request: pytest.FixtureRequest) -> str:
    request.getfixturevalue("pymysql_module" if request.param == "pymysql" else "mysqldb")
    return str(request.param)


@pytest.fixture
def server(netns_mariadb: NetnsMariaDBServer) -> NetnsMariaDBServer:
    netns_mariadb.execute(
        "CREATE TABLE IF NOT EXISTS connguard.cg_net (token varchar(64)) ENGINE=InnoDB"
    )
    return netns_mariadb


@pytest.fixture
def make_pool(server: NetnsMariaDBServer) -> Iterator[Callable[..., ConnectionPool]]:
    pools: list[ConnectionPool] = []

    def make(driver: str, tcp: dict[str, int] = FAST_TCP, **options: Any) -> ConnectionPool:
        options.setdefault("timeout", 20.0)
        options.setdefault("ping_timeout", 0.5)
        pool = ConnectionPool(
            server.conninfo(connect_timeout=5),
            name=f"cg-mydrop-{uuid.uuid4().hex[:8]}",
            driver=driver,
            kwargs=tcp,
            **options,
        )
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


def session_id(conn: Any) -> int:
    return int(scalar(conn, "SELECT CONNECTION_ID()"))


def open_idle(pool: ConnectionPool, n: int) -> list[int]:
    """Check out *n* connections at once and give them back: n idle connections."""
    conns = [pool.getconn() for _ in range(n)]
    ids = [session_id(conn) for conn in conns]
    for conn in conns:
        pool.putconn(conn)
    return ids


def requests(pool: ConnectionPool, n: int, threads: int = 3) -> list[BaseException]:
    """*n* short requests from *threads* threads; the errors they got."""
    errors: list[BaseException] = []
    lock = threading.Lock()

    def run() -> None:
        for _ in range(n // threads):
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
        worker.join(60)
    assert not any(w.is_alive() for w in workers), "requests still running after 60 s"
    return errors


def established_here(ports: set[int]) -> set[int]:
    """Those of the local *ports* whose TCP socket on this (the host's) side is established."""
    found = set()
    with open("/proc/net/tcp") as table:
        for line in table.read().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "01" and int(fields[1].rsplit(":", 1)[1], 16) in ports:
                found.add(int(fields[1].rsplit(":", 1)[1], 16))
    return found


def test_first_checkout_after_a_drop_waits_one_ping_timeout_and_succeeds(
    make_pool: Any, server: NetnsMariaDBServer, driver: str
) -> None:
    ping_timeout = 1.0
    pool = make_pool(driver, max_size=3, ping_interval=0.2, ping_timeout=ping_timeout)
    ids = open_idle(pool, 3)
    assert len(server.netns.drop_established(server.port)) == 3
    time.sleep(0.3)  # past ping_interval: an idle connection is pinged before it is lent
    pings = stat(pool, "pings")
    started = time.monotonic()
    with pool.connection() as conn:
        fresh = session_id(conn)
    took = time.monotonic() - started
    print(f"{driver}: first checkout after the drop took {took:.2f} s (ping_timeout 1 s)")
    assert fresh not in ids
    assert stat(pool, "pings") - pings == 1  # one unanswered ping condemned all three
    assert stat(pool, "connections_lost") == 3
    assert ping_timeout <= took < ping_timeout * FACTOR + 2
    assert requests(pool, 30) == []


def test_kernel_finds_an_idle_dropped_path_before_it_is_lent(
    make_pool: Any, server: NetnsMariaDBServer, driver: str
) -> None:
    # ping after idle off: only the socket poll at checkout and the keepalive the driver set
    # on the socket stand between a dead connection and a request
    pool = make_pool(driver, max_size=2, ping_interval=0)
    conns = [pool.getconn() for _ in range(2)]
    driver_obj = get_driver(driver)
    ports = {
        int(scalar(conn, "SELECT SUBSTRING_INDEX(HOST, ':', -1) FROM information_schema.PROCESSLIST"
                   " WHERE ID = CONNECTION_ID()"))
        for conn in conns
    }  # fmt: skip
    assert all(driver_obj.fileno(conn) >= 0 for conn in conns)
    for conn in conns:
        pool.putconn(conn)
    assert server.netns.drop_established(server.port) == sorted(ports)
    started = time.monotonic()
    bound = tcp_bound(FAST_TCP)
    wait_until(lambda: not established_here(ports), timeout=bound * FACTOR + 5, step=0.05)
    print(f"{driver}: the kernel gave up on the dropped idle sockets after "
          f"{time.monotonic() - started:.2f} s (bound {bound:.0f} s)")  # fmt: skip
    pings = stat(pool, "pings")
    assert requests(pool, 12) == []
    assert stat(pool, "connections_lost") == 2
    assert stat(pool, "pings") - pings == 2  # the poll said "look": one ping each, failed


@pytest.mark.parametrize(
    ("driver", "tcp"),
    [("mysqlclient", FAST_TCP), ("mysqlclient", SLOW_TCP), ("pymysql", FAST_TCP)],
    ids=["mysqlclient-fast", "mysqlclient-slow", "pymysql-fast"],
    indirect=["driver"],
)
def test_statement_in_flight_fails_within_the_tcp_bound_and_runs_once(
    make_pool: Any, server: NetnsMariaDBServer, driver: str, tcp: dict[str, int]
) -> None:
    pool = make_pool(driver, tcp, max_size=2)
    token = uuid.uuid4().hex
    conn = pool.getconn()
    conn.autocommit(True)
    outcome: list[tuple[float, BaseException | None]] = []
    sent = time.monotonic()

    def statement() -> None:
        try:
            scalar(conn, "INSERT INTO cg_net SELECT %s FROM DUAL WHERE SLEEP(1.5) = 0", [token])
            outcome.append((time.monotonic() - sent, None))
        except Exception as exc:
            outcome.append((time.monotonic() - sent, exc))

    thread = threading.Thread(target=statement, daemon=True)
    thread.start()
    wait_until(
        lambda: server.execute(
            "SELECT count(*) FROM information_schema.PROCESSLIST"
            " WHERE COMMAND = 'Query' AND INFO LIKE 'INSERT INTO cg_net%%'"
        )[0][0] == 1,
        timeout=10,
    )  # fmt: skip
    assert server.netns.drop_established(server.port)
    bound = tcp_bound(tcp)
    thread.join(bound * FACTOR + 5)
    assert not thread.is_alive(), "the statement still waits on a dead path"
    took, error = outcome[0]
    print(f"{driver} {tcp}: the statement failed after {took:.2f} s (bound {bound:.0f} s "
          f"after the last packet): {error!r}")  # fmt: skip
    assert error is not None, "the statement succeeded on a dropped path"
    assert error_code(error) == CR_SERVER_LOST, error
    assert get_driver(driver).is_disconnect(error), error
    # the kernel gives up no sooner than the bound after the last packet (which came after
    # the statement was sent), and not much later
    assert bound - 0.1 <= took < bound * FACTOR + 5
    pool.putconn(conn)  # broken: discarded, never lent again
    assert stat(pool, "returns_bad") == 1
    # the server ran it once (its answer had nowhere to go); nothing ran it again
    count = "SELECT count(*) FROM connguard.cg_net WHERE token = %s"
    wait_until(lambda: server.execute(count, [token])[0][0] >= 1, timeout=10)
    time.sleep(0.5)
    assert server.execute(count, [token])[0][0] == 1
    assert requests(pool, 6) == []
