"""Failover on real servers: a streaming standby (pg_basebackup -R) promoted with pg_ctl
promote while the old primary is stopped, demoted read-only, or left behind a "VIP".

A writer thread writes rows with unique tokens through the pool throughout the flip. The
promise checked: at most one write fails per failover (the one in flight when the primary
went away or turned read-only: raised, never retried), writes succeed again soon after the
promotion, every acknowledged write is on the new primary exactly once.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from connguard import ConnectionPool
from connguard.testing.proxy import FaultProxy
from connguard.testing.replication import StandbyServer, set_read_only
from connguard.testing.server import PostgresServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

DRIVERS = ["psycopg", "psycopg2"]
TABLE = "CREATE TABLE cg_fo (token text PRIMARY KEY, port int NOT NULL)"
INSERT = "INSERT INTO cg_fo (token, port) VALUES (%s, current_setting('port')::int)"


@dataclass
class Writes:
    """What a writer thread saw: acknowledged tokens, errors, and when."""

    acked: list[str] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)
    ok_times: list[float] = field(default_factory=list)
    ports: list[int] = field(default_factory=list)


def write_loop(pool: ConnectionPool, stop: threading.Event, out: Writes, limit: int = 5000) -> None:
    """Insert one row per iteration (bounded in count; stopped by *stop*)."""
    for _ in range(limit):
        if stop.is_set():
            return
        token = uuid.uuid4().hex
        try:
            with pool.connection() as conn:
                cur = conn.cursor()
                cur.execute(INSERT, [token])
                cur.execute("SELECT current_setting('port')::int")
                port = cur.fetchone()[0]
        except Exception as exc:  # raised to us, never retried: it may have executed
            out.errors.append((time.monotonic(), f"{type(exc).__name__}: {exc}".strip()))
        else:
            out.acked.append(token)
            out.ok_times.append(time.monotonic())
            out.ports.append(int(port))
        time.sleep(0.005)


@pytest.fixture
def writer() -> Iterator[Callable[[ConnectionPool], tuple[Writes, Callable[[], None]]]]:
    threads: list[tuple[threading.Thread, threading.Event]] = []

    def start(pool: ConnectionPool) -> tuple[Writes, Callable[[], None]]:
        out, stop = Writes(), threading.Event()
        thread = threading.Thread(target=write_loop, args=(pool, stop, out), daemon=True)
        thread.start()
        threads.append((thread, stop))

        def finish() -> None:
            stop.set()
            thread.join(30)
            assert not thread.is_alive()

        return out, finish

    yield start
    for thread, stop in threads:
        stop.set()
        thread.join(30)


def wait_for_writes(out: Writes, n: int, timeout: float = 20.0) -> None:
    target = len(out.acked) + n
    deadline = time.monotonic() + timeout
    while len(out.acked) < target:
        assert time.monotonic() < deadline, f"no {n} writes within {timeout} s: {out.errors[-3:]}"
        time.sleep(0.01)


def assert_exactly_once(server: PostgresServer, tokens: list[str]) -> None:
    """Every acknowledged token is on *server*, once (the primary key forbids twice)."""
    rows = server.execute("SELECT token FROM cg_fo WHERE token = ANY(%s)", [tokens])
    found = {r[0] for r in rows}
    assert len(rows) == len(found)
    lost = set(tokens) - found
    assert not lost, f"{len(lost)} acknowledged writes missing on the new primary"


def multi_host(
    primary: PostgresServer, standby: PostgresServer, attrs: str, form: str = "keywords"
) -> str:
    if form == "url":
        return (
            f"postgresql://postgres@{primary.host}:{primary.port},{standby.host}:{standby.port}"
            f"/postgres?target_session_attrs={attrs}&connect_timeout=3"
        )
    return (
        f"host={primary.host},{standby.host} port={primary.port},{standby.port} "
        f"user=postgres dbname=postgres target_session_attrs={attrs} connect_timeout=3"
    )


def report(label: str, out: Writes, flipped_at: float, promote_took: float) -> float:
    """Seconds from the flip's start until writes succeeded again (the first success after
    the flip and after the last error)."""
    since = max([flipped_at, *(t for t, _ in out.errors)])
    after = [t for t in out.ok_times if t > since]
    assert after, f"no write succeeded after the flip: {out.errors[-3:]}"
    recovered = after[0] - flipped_at
    print(
        f"\n{label}: errors={len(out.errors)} acked={len(out.acked)} "
        f"writes ok again {recovered:.2f} s after the flip began "
        f"(pg_ctl promote took {promote_took:.2f} s); errors: {[e for _, e in out.errors]}"
    )
    return recovered


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize(("form", "attrs"), [("keywords", "read-write"), ("url", "primary")])
def test_stop_and_promote_through_a_multi_host_conninfo(
    pg_pair: tuple[PostgresServer, StandbyServer],
    driver: str,
    form: str,
    attrs: str,
    writer: Any,
) -> None:
    """The primary stops (fast shutdown); the standby is promoted. The pool's conninfo names
    both hosts with target_session_attrs: the pool waits for the promotion (failover_timeout)
    instead of failing fast, then writes go to the new primary."""
    primary, standby = pg_pair
    primary.execute(TABLE)
    pool = ConnectionPool(
        multi_host(primary, standby, attrs, form), driver=driver, max_size=2, timeout=10,
        name=f"fo-stop-{driver}",
    )  # fmt: skip
    with pool:
        out, finish = writer(pool)
        wait_for_writes(out, 20)
        assert set(out.ports) == {primary.port}
        flipped_at = time.monotonic()
        primary.stop("fast")  # a clean shutdown sends every WAL record to the standby first
        promote_took = standby.promote()
        wait_for_writes(out, 20)
        finish()
        recovered = report(f"stop+promote/{driver}", out, flipped_at, promote_took)
        assert len(out.errors) <= 1, out.errors
        assert out.ports[-1] == standby.port
        assert recovered < promote_took + 5.0
        stats = pool.get_stats()
        assert stats["requests_failed_fast"] == 0
    assert_exactly_once(standby, out.acked)


@pytest.mark.parametrize("driver", DRIVERS)
def test_demoted_read_only_primary_stays_up(
    pg_pair: tuple[PostgresServer, StandbyServer], driver: str, writer: Any
) -> None:
    """The old primary stays up and turns read-only (sessions kept: their next write gets
    SQLSTATE 25006); the standby catches up and is promoted. One write fails (raised, not
    retried); the error invalidates the pool, every idle connection is role-checked and the
    ones on the old primary are replaced; writes go to the new primary."""
    primary, standby = pg_pair
    primary.execute(TABLE)
    url = multi_host(primary, standby, "read-write", "url")
    pool = ConnectionPool(url, driver=driver, min_size=2, timeout=10, name=f"fo-ro-{driver}")
    with pool:
        pool.wait(10)
        out, finish = writer(pool)
        wait_for_writes(out, 20)
        flipped_at = time.monotonic()
        set_read_only(primary)  # reload: the pool's sessions stay connected
        standby.wait_caught_up()
        promote_took = standby.promote()
        wait_for_writes(out, 20)
        finish()
        recovered = report(f"read-only+promote/{driver}", out, flipped_at, promote_took)
        assert len(out.errors) <= 1, out.errors
        assert all("read-only" in e for _, e in out.errors), out.errors
        assert out.ports[-1] == standby.port
        assert recovered < promote_took + 5.0
        stats = pool.get_stats()
        if out.errors:
            assert stats["invalidations"] >= 1
            assert stats["connections_wrong_role"] >= 1
    assert_exactly_once(standby, out.acked)


@pytest.mark.parametrize("driver", DRIVERS)
def test_read_only_restart_then_promote(
    pg_pair: tuple[PostgresServer, StandbyServer], driver: str, writer: Any
) -> None:
    """The old primary restarts read-only (its sessions end: 57P01 or a lost connection for
    the write in flight), then the standby is promoted; multi-host keyword conninfo."""
    primary, standby = pg_pair
    primary.execute(TABLE)
    pool = ConnectionPool(
        multi_host(primary, standby, "read-write"), driver=driver, max_size=2, timeout=10,
        name=f"fo-restart-{driver}",
    )  # fmt: skip
    with pool:
        out, finish = writer(pool)
        wait_for_writes(out, 20)
        flipped_at = time.monotonic()
        set_read_only(primary, restart=True)
        standby.wait_caught_up()
        promote_took = standby.promote()
        wait_for_writes(out, 20)
        finish()
        report(f"read-only restart+promote/{driver}", out, flipped_at, promote_took)
        assert len(out.errors) <= 1, out.errors
        assert out.ports[-1] == standby.port
    assert_exactly_once(standby, out.acked)


@pytest.mark.parametrize("driver", DRIVERS)
def test_vip_flip_with_require_primary(
    pg_pair: tuple[PostgresServer, StandbyServer], driver: str, writer: Any
) -> None:
    """One address in front of the servers (a VIP or DNS name: here a proxy whose target
    changes), so libpq cannot pick the primary: require_primary=True makes the pool check
    the role of invalidated and new connections itself."""
    primary, standby = pg_pair
    primary.execute(TABLE)
    with FaultProxy(primary.host, primary.port) as vip:
        conninfo = f"host={vip.host} port={vip.port} user=postgres dbname=postgres"
        pool = ConnectionPool(
            conninfo, driver=driver, min_size=2, timeout=10, require_primary=True,
            name=f"fo-vip-{driver}",
        )  # fmt: skip
        with pool:
            pool.wait(10)
            out, finish = writer(pool)
            wait_for_writes(out, 20)
            flipped_at = time.monotonic()
            set_read_only(primary)  # old sessions through the VIP stay up, read-only
            standby.wait_caught_up()
            promote_took = standby.promote()
            vip.target_port = standby.port  # new connections reach the new primary
            wait_for_writes(out, 20)
            finish()
            report(f"vip flip/{driver}", out, flipped_at, promote_took)
            assert len(out.errors) <= 1, out.errors
            assert out.ports[-1] == standby.port
    assert_exactly_once(standby, out.acked)


@pytest.mark.parametrize("driver", DRIVERS)
def test_without_require_primary_a_vip_flip_keeps_failing(
    pg_pair: tuple[PostgresServer, StandbyServer], driver: str
) -> None:
    """The control for the test above: a pool that does not know it needs a primary pings
    the invalidated connections, finds them alive, and lends them again: every write fails
    against the demoted server (as with stock Django behind a VIP)."""
    primary, standby = pg_pair
    primary.execute(TABLE)
    with FaultProxy(primary.host, primary.port) as vip:
        conninfo = f"host={vip.host} port={vip.port} user=postgres dbname=postgres"
        with ConnectionPool(conninfo, driver=driver, min_size=1, max_size=1, timeout=5) as pool:
            pool.wait(10)
            set_read_only(primary)
            standby.wait_caught_up()
            standby.promote()
            vip.target_port = standby.port
            out = Writes()
            stop = threading.Event()
            write_loop(pool, stop, out, limit=10)
            assert len(out.errors) == 10


@pytest.mark.parametrize("driver", DRIVERS)
def test_prefer_standby_lends_standby_connections(
    pg_pair: tuple[PostgresServer, StandbyServer], driver: str
) -> None:
    primary, standby = pg_pair
    with (
        ConnectionPool(
            multi_host(primary, standby, "prefer-standby"), driver=driver, max_size=1
        ) as pool,
        pool.connection() as conn,
    ):
        cur = conn.cursor()
        cur.execute("SELECT pg_is_in_recovery(), current_setting('port')::int")
        assert tuple(cur.fetchone()) == (True, standby.port)
