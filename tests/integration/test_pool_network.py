"""Network bounds on real sockets: a blackholed host fails fast on every connect path, and
every TCP connection carries keepalives and tcp_user_timeout unless the user set its own.

The blackhole is a loopback listener this test owns, which accepts and never speaks (a
wedged server, a dead load-balancer target): before connguard passed its bound to the driver,
a pool with a ``connect=`` callable (the Django backend's path) waited psycopg's 130 s, or
forever on psycopg2.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from pool_support import DRIVERS, make_pool

from connguard import ConnectionPool, PoolUnavailable
from connguard.drivers.base import TCP_DEFAULTS, connect_timeout_seconds
from connguard.testing.netns import SilentListener
from support import fileno, socket_options

__all__ = ["make_pool"]  # fixtures
pytestmark = pytest.mark.integration

BOUND_FACTOR = 4  # "fails within about the bound": generous, the machine is shared
MARGIN = 3.0


def driver_connect(driver: str) -> Any:
    if driver == "psycopg":
        import psycopg

        return psycopg.connect
    import psycopg2

    return psycopg2.connect


def timed_getconn(
    pool: ConnectionPool, listener: SilentListener, limit: float
) -> tuple[float, Any]:
    """getconn() in a thread: (seconds it took, what it raised). A getconn still blocked after
    *limit* seconds fails the test (the listener is closed then, so that it returns)."""
    outcome: list[Any] = []

    def run() -> None:
        started = time.monotonic()
        try:
            pool.putconn(pool.getconn())
            outcome.append((time.monotonic() - started, None))
        except Exception as exc:
            outcome.append((time.monotonic() - started, exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(limit)
    if thread.is_alive():
        listener.close()  # the FIN ends the driver's wait
        thread.join(30)
        pytest.fail(f"getconn() still waiting on a silent host after {limit:.0f} s")
    return outcome[0]  # type: ignore[no-any-return]


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("path", ["connect", "driver"])
def test_blackholed_host_fails_within_the_callers_timeout(driver: str, path: str) -> None:
    with SilentListener() as listener:
        conninfo = f"host={listener.host} port={listener.port} user=x dbname=x"
        options: dict[str, Any] = {"driver": driver, "timeout": 2.0}  # connect_timeout: 10 s
        if path == "connect":
            options["connect"] = driver_connect(driver)
        pool = ConnectionPool(conninfo, name=f"blackhole-{path}-{driver}", **options)
        try:
            limit = 2.0 * BOUND_FACTOR + MARGIN
            took, error = timed_getconn(pool, listener, limit)
        finally:
            pool.close()
    assert isinstance(error, PoolUnavailable), error
    assert "timeout expired" in str(error).lower() or "timed out" in str(error).lower(), error
    assert listener.accepted, "the silent listener never saw the connection"
    assert took < limit


@pytest.mark.parametrize("driver", DRIVERS)
def test_blackholed_host_fails_within_connect_timeout(driver: str) -> None:
    with SilentListener() as listener:
        conninfo = f"host={listener.host} port={listener.port} user=x dbname=x"
        pool = ConnectionPool(
            conninfo, name=f"blackhole-ct-{driver}", driver=driver, timeout=60.0,
            connect_timeout=3.0, connect=driver_connect(driver),
        )  # fmt: skip
        try:
            limit = 3.0 * BOUND_FACTOR + MARGIN
            took, error = timed_getconn(pool, listener, limit)
        finally:
            pool.close()
    assert isinstance(error, PoolUnavailable), error
    assert took < limit


def test_connect_bound_is_whole_seconds_at_least_two() -> None:
    assert [connect_timeout_seconds(t) for t in (0.1, 1.0, 1.9, 2.0, 2.9, 10.0)] == [
        2, 2, 2, 2, 2, 10
    ]  # fmt: skip


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("path", ["connect", "driver"])
def test_every_tcp_connection_gets_keepalives_and_user_timeout(
    make_pool, driver: str, path: str
) -> None:
    options: dict[str, Any] = {"driver": driver}
    if path == "connect":
        options["connect"] = driver_connect(driver)
    pool = make_pool(**options)
    with pool.connection() as conn:
        assert socket_options(fileno(conn)) == {
            **TCP_DEFAULTS, "keepalives": 1
        }  # fmt: skip


@pytest.mark.parametrize("driver", DRIVERS)
def test_the_users_own_tcp_settings_win(pg: Any, make_pool, driver: str) -> None:
    # in the conninfo and in kwargs; each one not set keeps connguard's default
    pool = make_pool(
        conninfo=pg.conninfo(keepalives_idle=7, tcp_user_timeout=4000, connect_timeout=5),
        driver=driver,
        kwargs={"keepalives_count": 9},
    )
    with pool.connection() as conn:
        assert socket_options(fileno(conn)) == {
            **TCP_DEFAULTS, "keepalives_idle": 7, "tcp_user_timeout": 4000, "keepalives_count": 9
        }  # fmt: skip
    off = make_pool(conninfo=pg.conninfo(keepalives=0, connect_timeout=5), driver=driver)
    with off.connection() as conn:
        assert socket_options(fileno(conn))["keepalives"] == 0


def test_a_shorter_connect_timeout_of_the_users_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    from connguard.drivers import get_driver

    for name in DRIVERS:
        driver = get_driver(name)

        def bound(conninfo: str, kwargs: dict[str, Any], timeout: float, d: Any = driver) -> Any:
            return d.connect_params(conninfo, kwargs, timeout).get("connect_timeout", "own")

        assert bound("connect_timeout=3", {}, 8.5) == "own"  # shorter: the conninfo's stands
        assert bound("connect_timeout=30", {}, 8.5) == 8
        assert bound("connect_timeout=0", {}, 8.5) == 8  # 0 is "wait forever" in libpq
        assert bound("", {"connect_timeout": 4}, 0.3) == 2  # libpq's minimum
        assert bound("", {"connect_timeout": 3}, 9.0) == 3
        monkeypatch.setenv("PGCONNECT_TIMEOUT", "5")
        assert bound("", {}, 8.5) == "own"
        assert bound("", {}, 30.0) == "own"
        assert bound("", {}, 3.0) == 3
        monkeypatch.delenv("PGCONNECT_TIMEOUT")


def test_django_options_win_over_the_pools_additions(monkeypatch: pytest.MonkeyPatch) -> None:
    from connguard.drivers.base import with_pool_params

    added = {"connect_timeout": 2, **TCP_DEFAULTS}
    assert with_pool_params({"host": "h"}, added) == {"host": "h", **added}
    mine = {"keepalives_idle": 60, "connect_timeout": 1}
    assert with_pool_params(mine, added) == {**added, **mine}
    assert with_pool_params({"connect_timeout": 30}, added)["connect_timeout"] == 2
    monkeypatch.setenv("PGCONNECT_TIMEOUT", "1")
    assert "connect_timeout" not in with_pool_params({}, added)  # libpq reads the shorter 1
