"""Server down on the fake driver: fail fast, recover, jittered exponential backoff,
reconnect_failed."""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
import statistics
import threading
import time

import pytest
from fakedb import FakeServer, wait_until

from connguard import AccessDenied, ConnectionPool, PoolUnavailable
from connguard.backends import registry
from connguard.drivers import get_driver


def stat(pool: ConnectionPool, name: str) -> int:
    return pool.get_stats().get(name, 0)


def test_down_fails_fast_naming_the_connect_error(make_pool, server: FakeServer) -> None:
    pool = make_pool(name="db", max_size=2, timeout=10)
    server.down = True
    started = time.monotonic()
    with pytest.raises(PoolUnavailable) as info:
        pool.getconn()
    assert time.monotonic() - started < 0.2
    assert re.fullmatch(
        r"pool 'db': database unreachable for 0\.\d\d s, failing fast \(size=0/2, in_use=0, "
        r"idle=0, waiting=0\); the last connect attempt failed with: "
        r"OperationalError: connection refused",
        str(info.value),
    ), str(info.value)
    assert info.value.snapshot["breaker"] == "open"
    assert isinstance(info.value.__cause__, Exception)


def test_while_down_callers_fail_fast_without_connecting(make_pool, server: FakeServer) -> None:
    """A server that answers but refuses the client (here: authentication) is not hammered:
    only the backoff schedule connects."""
    pool = make_pool(name="db", max_size=4, backoff_initial=0.2, backoff_max=0.2)
    server.refuse_message = 'FATAL:  password authentication failed for user "app"'
    server.down = True
    with pytest.raises(AccessDenied):
        pool.getconn()
    attempts = server.connect_attempts
    for _ in range(50):
        started = time.monotonic()
        with pytest.raises(AccessDenied, match="password authentication failed"):
            pool.getconn(timeout=5)
        assert time.monotonic() - started < 0.2
        time.sleep(0.002)
    assert server.connect_attempts - attempts <= 1  # only the background probe, if at all
    assert stat(pool, "requests_failed_fast") >= 50
    assert stat(pool, "breaker_opened") == 1


@pytest.mark.parametrize(
    "message",
    [
        "connection refused",
        'connection to server on socket "/tmp/.s.PGSQL.5432" failed: No such file or directory',
        "FATAL:  the database system is starting up",
        "FATAL:  the database system is shutting down",
    ],
)
def test_first_request_after_an_absent_server_is_back_connects(
    make_pool, server: FakeServer, message: str
) -> None:
    """Nobody listening (refused at once): callers fail fast, but a caller probes the server
    itself, one at a time, so the first request after it is back succeeds instead of failing
    until the next scheduled probe."""
    pool = make_pool(name="db", max_size=4, backoff_initial=5.0, backoff_max=5.0)
    server.refuse_message = message
    server.down = True
    for _ in range(5):
        started = time.monotonic()
        with pytest.raises(PoolUnavailable):
            pool.getconn(timeout=5)
        assert time.monotonic() - started < 0.2
        time.sleep(0.01)
    assert stat(pool, "breaker_open") == 1
    server.down = False
    conn = pool.getconn(timeout=5)  # the next scheduled probe is seconds away
    assert conn.execute("select 1") == 1
    pool.putconn(conn)
    assert stat(pool, "breaker_open") == 0


def test_absent_server_probe_is_awaited_by_concurrent_callers(
    make_pool, server: FakeServer
) -> None:
    """While one caller's probe of an absent server is under way, the others wait for its
    verdict (milliseconds) instead of failing: when the server is back, nobody fails."""
    pool = make_pool(name="db", max_size=8, backoff_initial=5.0, backoff_max=5.0)
    server.down = True
    with pytest.raises(PoolUnavailable):
        pool.getconn()
    time.sleep(0.01)
    server.down = False
    server.slow_connect(0.03)
    results: list[object] = []

    def one() -> None:
        try:
            conn = pool.getconn(timeout=5)
            time.sleep(0.05)
            pool.putconn(conn)
            results.append("ok")
        except BaseException as exc:  # reported below
            results.append(exc)

    threads = [threading.Thread(target=one) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert results == ["ok"] * 6, results


def test_absent_server_probes_stay_one_at_a_time_and_fail_fast(
    make_pool, server: FakeServer
) -> None:
    pool = make_pool(name="db", max_size=8, backoff_initial=5.0, backoff_max=5.0)
    server.down = True
    with pytest.raises(PoolUnavailable):
        pool.getconn()
    attempts = server.connect_attempts
    peak = 0
    slow: list[float] = []

    def hammer() -> None:
        for _ in range(30):
            started = time.monotonic()
            with contextlib.suppress(PoolUnavailable):
                pool.getconn(timeout=5)
            slow.append(time.monotonic() - started)
            time.sleep(0.002)

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak = max(peak, server.connecting)
        time.sleep(0.001)
    for t in threads:
        t.join(10)
    assert peak <= 1
    assert max(slow) < 0.2, max(slow)
    # off-schedule probes happen, but at most one per _ABSENT_PROBE_GAP
    elapsed = sum(slow) / 4 + 30 * 0.002
    assert 1 <= server.connect_attempts - attempts <= elapsed / 0.005 + 5


def test_only_one_attempt_at_a_time_while_down(make_pool, server: FakeServer) -> None:
    pool = make_pool(max_size=8, backoff_initial=0.01, backoff_max=0.01)
    server.down = True
    with pytest.raises(PoolUnavailable):
        pool.getconn()
    server.slow_connect(0.2)
    peak = 0
    errors: list[BaseException] = []

    def hammer() -> None:
        for _ in range(20):
            try:
                pool.getconn(timeout=1)
            except PoolUnavailable:
                pass
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)
            time.sleep(0.01)

    threads = [threading.Thread(target=hammer) for _ in range(6)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        peak = max(peak, server.connecting)
        time.sleep(0.002)
    for t in threads:
        t.join(10)
    assert not errors
    assert peak == 1


def test_healthy_idle_connections_are_still_lent_while_down(make_pool, server: FakeServer) -> None:
    pool = make_pool(max_size=2)
    a = pool.getconn()
    pool.putconn(a)
    server.down = True
    b = pool.getconn()  # the idle one
    with pytest.raises(PoolUnavailable):
        pool.getconn()  # a second one would need a connect
    assert pool.getconn.__self__ is pool
    pool.putconn(b)
    assert pool.getconn() is a
    pool.putconn(a)


def test_recovers_when_the_server_is_back(make_pool, server: FakeServer) -> None:
    pool = make_pool(name="db", max_size=2)
    server.down = True
    with pytest.raises(PoolUnavailable):
        pool.getconn()
    server.down = False
    time.sleep(0.6)  # more than backoff_max
    conn = pool.getconn()
    assert conn.execute("select 1") == 1
    pool.putconn(conn)
    assert stat(pool, "breaker_open") == 0


def test_background_probe_closes_the_breaker_without_requests(
    make_pool, server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(name="db", max_size=2)
    server.down = True
    with pytest.raises(PoolUnavailable):
        pool.getconn()
    assert stat(pool, "breaker_open") == 1
    with caplog.at_level(logging.WARNING, logger="connguard.pool"):
        server.down = False
        wait_until(lambda: stat(pool, "breaker_open") == 0, timeout=5)
    assert server.conns[-1].thread == "connguard-db"
    assert stat(pool, "pool_available") == 1  # the probe's connection is kept
    assert re.search(
        r"pool 'db': database reachable again after \d+\.\d\d s; circuit breaker closed",
        caplog.text,
    )


def test_backoff_is_exponential_jittered_and_capped(make_pool, server: FakeServer) -> None:
    attempts: list[float] = []
    original = server.connect

    def record(timeout: float | None, kwargs: dict) -> object:
        attempts.append(time.monotonic())
        return original(timeout, kwargs)

    server.connect = record  # type: ignore[method-assign]
    server.down = True
    pool = make_pool(max_size=1, backoff_initial=0.01, backoff_max=0.08)
    with pytest.raises(PoolUnavailable):
        pool.getconn()
    wait_until(lambda: len(attempts) >= 12, timeout=10)
    server.down = False
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    # 0.01, 0.02, 0.04, 0.08, 0.08, ... each times a random factor from 0.5 to 1
    assert gaps[0] < 0.04, gaps
    capped = gaps[4:]
    assert all(0.035 <= g <= 0.08 + 0.06 for g in capped), gaps
    assert statistics.mean(capped) > 3 * gaps[0] or gaps[0] < 0.012, gaps
    assert max(capped) - min(capped) > 0.004, gaps  # jittered: not all alike


def test_backoff_formula(make_pool, server: FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The schedule itself, with the randomness pinned: backoff * (0.5 + random / 2)."""
    import connguard.pool as pool_module

    pool = make_pool(max_size=1, backoff_initial=0.1, backoff_max=0.5, open=False)
    for rnd, expected in [(0.0, [0.05, 0.1, 0.2, 0.25, 0.25]), (1.0, [0.1, 0.2, 0.4, 0.5, 0.5])]:
        monkeypatch.setattr(pool_module.random, "random", lambda r=rnd: r)
        pool._breaker.backoff = 0.0
        got = []
        for _ in range(5):
            with pool._lock:
                pool._size += 1  # the slot the failed attempt held
            pool._connect_failed(OSError("refused"), time.monotonic())
            got.append(pool._breaker.next_attempt - time.monotonic())
        assert [round(g, 2) for g in got] == expected


def test_reconnect_failed_after_reconnect_timeout(
    make_pool, server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[tuple[ConnectionPool, float]] = []
    pool = make_pool(
        name="db", max_size=1, reconnect_timeout=0.2, backoff_initial=0.02, backoff_max=0.05,
        reconnect_failed=lambda p: calls.append((p, time.monotonic())),
    )  # fmt: skip
    server.down = True
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="connguard.pool"), pytest.raises(PoolUnavailable):
        pool.getconn()
    assert calls == []
    wait_until(lambda: calls, timeout=5)
    assert calls[0][0] is pool
    assert calls[0][1] - started >= 0.2
    time.sleep(0.2)
    assert len(calls) == 1  # once per outage
    assert re.search(
        r"pool 'db': database unreachable for \d+\.\d s \(reconnect_timeout=0\.2 s\): "
        r"OperationalError: connection refused",
        caplog.text,
    )
    # recovered, then down again: a new outage calls it again
    server.down = False
    wait_until(lambda: stat(pool, "breaker_open") == 0, timeout=5)
    server.down = True
    server.kill_all()
    with pytest.raises(PoolUnavailable):
        pool.getconn()
    wait_until(lambda: len(calls) == 2, timeout=5)
    server.down = False


def test_reconnect_failed_callback_errors_are_logged_not_raised(
    make_pool, server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    def explode(pool: ConnectionPool) -> None:
        raise RuntimeError("callback bug")

    pool = make_pool(name="db", max_size=1, reconnect_timeout=0.05, reconnect_failed=explode,
                     backoff_initial=0.01, backoff_max=0.02)  # fmt: skip
    server.down = True
    with caplog.at_level(logging.ERROR, logger="connguard.pool"), pytest.raises(PoolUnavailable):
        pool.getconn()
        wait_until(lambda: "reconnect_failed callback raised" in caplog.text, timeout=5)
    wait_until(lambda: "reconnect_failed callback raised" in caplog.text, timeout=5)
    server.down = False


def test_waiters_are_not_stranded_when_a_connect_fails(make_pool, server: FakeServer) -> None:
    """A waiter handed the slot of a failed connect tries itself (or fails fast); it does not
    sit out its whole timeout."""
    pool = make_pool(max_size=1, timeout=5)
    gate = server.hold_connects()
    errors: list[BaseException] = []

    def get() -> None:
        try:
            pool.putconn(pool.getconn())
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=get) for _ in range(3)]
    for t in threads:
        t.start()
    wait_until(lambda: server.connecting == 1 and stat(pool, "requests_waiting") == 2)
    server.down = True
    started = time.monotonic()
    gate.set()
    for t in threads:
        t.join(5)
    assert time.monotonic() - started < 1
    assert len(errors) == 3 and all(isinstance(e, PoolUnavailable) for e in errors)
    server.gate = None
    server.down = False


def test_queued_callers_fail_fast_once_the_breaker_opens(make_pool, server: FakeServer) -> None:
    """A host that swallows connects, max_size=2 and 8 callers: the slots freed by the two
    failed connects are not handed to queued callers one after another (8 connects, the last
    caller failing after 8 timeouts): the breaker is open, so they fail fast, and at most one
    connect attempt is in flight at a time after the first failure."""
    pool = make_pool(name="q", max_size=2, timeout=30, connect_timeout=1.0)
    gate = server.hold_connects()  # connects hang until the driver's timeout (1 s)
    elapsed: list[float] = []
    errors: list[BaseException] = []
    peak = 0

    def caller() -> None:
        started = time.monotonic()
        try:
            pool.getconn()
        except BaseException as exc:
            errors.append(exc)
        elapsed.append(time.monotonic() - started)

    threads = [threading.Thread(target=caller) for _ in range(8)]
    for t in threads:
        t.start()
    wait_until(lambda: server.connecting == 2 and stat(pool, "requests_waiting") == 6)
    while any(t.is_alive() for t in threads):
        if stat(pool, "breaker_open"):
            peak = max(peak, server.connecting)
        time.sleep(0.002)
    for t in threads:
        t.join(10)
    gate.set()
    server.gate = None
    assert len(errors) == 8 and all(isinstance(e, PoolUnavailable) for e in errors), errors
    # every caller fails within about one connect timeout (today: the last after 4 rounds)
    assert max(elapsed) < 2.5, sorted(elapsed)
    assert server.connect_attempts <= 3, server.connect_attempts
    assert peak <= 2  # the second first-round connect may still be under way


@pytest.mark.parametrize(
    ("refusal", "setting", "django_setting"),
    [
        ('FATAL:  password authentication failed for user "app"', "the 'password' (and 'user') "
         "connection parameter", "DATABASES['default']['PASSWORD'] (and USER)"),
        ("fe_sendauth: no password supplied", "the 'password' (and 'user') connection parameter",
         "DATABASES['default']['PASSWORD'] (and USER)"),
        ('FATAL:  role "app" does not exist', "the 'user' connection parameter",
         "DATABASES['default']['USER']"),
        ('FATAL:  role "app" is not permitted to log in', "the 'user' connection parameter",
         "DATABASES['default']['USER']"),
        ('FATAL:  database "shop" does not exist', "the 'dbname' connection parameter",
         "DATABASES['default']['NAME']"),
        ('FATAL:  no pg_hba.conf entry for host "10.0.0.1", user "app", database "shop"',
         "the server's pg_hba.conf", "the server's pg_hba.conf"),
    ],
)  # fmt: skip
def test_a_refused_client_is_a_configuration_error_not_an_outage(
    make_pool, server: FakeServer, refusal: str, setting: str, django_setting: str
) -> None:
    """Wrong password, unknown role or database: the server is reachable, so the error says
    it refused the client, names the setting to fix and never says "unreachable"."""
    server.refuse_message = f'connection to server at "127.0.0.1", port 5432 failed: {refusal}'
    server.down = True
    plain = make_pool(name="db", max_size=2)
    django = make_pool(
        name="default", max_size=2,
        _where=lambda key: f"DATABASES['default']['OPTIONS']['pool'][{key!r}]",
        _setting=lambda key: registry.connection_setting("default", key),
    )  # fmt: skip
    for pool, where in ((plain, setting), (django, django_setting)):
        for _ in range(2):  # the connect's own failure, then the fail-fast one
            with pytest.raises(AccessDenied) as info:
                pool.getconn()
            text = str(info.value)
            assert "unreachable" not in text, text
            assert text.startswith(
                f"pool {pool.name!r}: the database server is reachable but refused the "
                f"connection (OperationalError: connection to server at"
            ), text
            assert refusal.replace("  ", " ") in text, text
            assert f"This is a configuration error, not an outage: check {where}" in text, text
            assert not isinstance(info.value, PoolUnavailable)
    try:
        from django.db.utils import OperationalError
    except ImportError:  # pragma: no cover - Django is a test dependency
        return
    assert isinstance(info.value, OperationalError)


def test_a_refused_client_is_retried_at_a_bounded_rate(make_pool, server: FakeServer) -> None:
    """A wrong password is not hammered: the background probe backs off up to 5 s (not
    backoff_max) while the server refuses the client, and callers fail without connecting."""
    pool = make_pool(max_size=4, backoff_initial=0.05, backoff_max=0.05)
    server.refuse_message = 'FATAL:  password authentication failed for user "app"'
    server.down = True
    with pytest.raises(AccessDenied):
        pool.getconn()
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        with pytest.raises(AccessDenied):
            pool.getconn()
        time.sleep(0.005)
    # 0.05 s doubling: about 5 probes in 1.5 s (with backoff_max=0.05 alone: about 40)
    assert server.connect_attempts <= 8, server.connect_attempts
    server.down = False


def test_queued_callers_a_lent_connection_can_serve_keep_waiting(
    make_pool, server: FakeServer
) -> None:
    """Breaker open with a free slot: the queued callers that only a connect could serve
    fail fast, the newest first; the one a lent connection will serve keeps waiting."""
    pool = make_pool(max_size=2, timeout=10, backoff_initial=5, backoff_max=5)
    a, b = pool.getconn(), pool.getconn()
    results: dict[int, object] = {}

    def wait(i: int) -> None:
        try:
            results[i] = pool.getconn()
        except BaseException as exc:
            results[i] = exc

    threads = []
    for i in range(3):
        threads.append(threading.Thread(target=wait, args=(i,)))
        threads[-1].start()
        wait_until(lambda n=i: stat(pool, "requests_waiting") == n + 1)
    server.down = True
    pool.discard(a)  # a slot frees: the oldest caller connects, fails, the breaker opens
    wait_until(lambda: len(results) == 2, timeout=5)
    assert isinstance(results[0], PoolUnavailable), results
    assert isinstance(results[2], PoolUnavailable), results  # only a connect could serve it
    assert 1 not in results  # b will come back: it waits for it
    pool.putconn(b)
    threads[1].join(5)
    assert results[1] is b
    pool.putconn(b)
    server.down = False


def test_only_a_postgresql_driver_names_a_server_rule_to_check() -> None:
    """What "check ..." says for a refusal that names no connection parameter is the driver's:
    pg_hba.conf for the libpq drivers; the neutral default (mysqlclient's) names none."""
    from connguard.drivers.base import Driver

    assert Driver().access_rule("pg_hba.conf") is None
    assert Driver().access_rule("password") is None
    for name in ("psycopg", "psycopg2"):
        driver = get_driver(name)
        assert driver.access_rule("pg_hba.conf") == (
            "the server's pg_hba.conf (no line admits this user, database and host)"
        )
        assert driver.access_rule("password") is None
