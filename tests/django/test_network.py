"""The Django backend on real sockets: a blackholed host fails within the pool's timeout
(``OPTIONS["pool"] = {"timeout": 2}``, no connect_timeout anywhere), and its connections get
TCP keepalives and tcp_user_timeout unless ``OPTIONS`` sets its own."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings

from support import fileno, netns_postgres, socket_options

if not settings.configured:
    settings.configure(DATABASES={}, INSTALLED_APPS=["connguard"], USE_TZ=True)
import django

django.setup()

from django.db.utils import ConnectionHandler, OperationalError  # noqa: E402

from connguard import PoolUnavailable  # noqa: E402
from connguard.backends import registry  # noqa: E402
from connguard.drivers.base import TCP_DEFAULTS  # noqa: E402
from connguard.testing.netns import SilentListener  # noqa: E402

ENGINE = "connguard.backends.postgresql"
pytestmark = pytest.mark.integration


def handler_for(host: str, port: int, user: str, **options: Any) -> ConnectionHandler:
    return ConnectionHandler(
        {
            "default": {
                "ENGINE": ENGINE,
                "NAME": "postgres",
                "USER": user,
                "HOST": host,
                "PORT": port,
                "OPTIONS": options,
            }
        }
    )


def test_request_on_a_blackholed_host_fails_within_the_pool_timeout() -> None:
    with SilentListener() as listener:
        handler = handler_for(listener.host, listener.port, "x", pool={"timeout": 2})
        outcome: list[Any] = []

        def request() -> None:
            started = time.monotonic()
            try:
                handler["default"].ensure_connection()
                outcome.append((time.monotonic() - started, None))
            except Exception as exc:
                outcome.append((time.monotonic() - started, exc))

        thread = threading.Thread(target=request, daemon=True)
        thread.start()
        thread.join(11.0)  # the bound is 2 s: generous for a shared machine
        if thread.is_alive():
            listener.close()
            thread.join(30)
        try:
            assert outcome and not thread.is_alive(), "still waiting after 11 s"
            took, error = outcome[0]
            assert isinstance(error, PoolUnavailable), error
            assert "timeout expired" in str(error), error
            assert took < 11.0
        finally:
            handler.close_all()
            registry.close_pools(alias="default")


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, {}),
        ({"keepalives_idle": 11, "tcp_user_timeout": 5000}, {"keepalives_idle": 11, "tcp_user_timeout": 5000}),
    ],
    ids=["defaults", "options-win"],
)  # fmt: skip
def test_connections_get_tcp_keepalives_unless_options_say(
    pg_server: Any, options: dict[str, Any], expected: dict[str, int]
) -> None:
    handler = handler_for(pg_server.host, pg_server.port, pg_server.user, **options)
    try:
        wrapper = handler["default"]
        wrapper.ensure_connection()
        assert socket_options(fileno(wrapper.connection)) == {**TCP_DEFAULTS, **expected}
    finally:
        handler.close_all()
        registry.close_pools(alias="default")


# -- a silent drop on real kernel TCP (PostgreSQL in a network namespace) -------------------

# small TCP bounds in OPTIONS (the user's settings win over connguard's defaults)
FAST_TCP = {"keepalives_idle": 1, "keepalives_interval": 1, "keepalives_count": 2,
            "tcp_user_timeout": 2000}  # fmt: skip


@pytest.fixture(scope="module")
def netns_pg() -> Iterator[Any]:
    with netns_postgres() as server:
        yield server


def test_django_statement_in_flight_fails_within_the_bound_once_then_requests_work(
    netns_pg: Any,
) -> None:
    handler = handler_for(
        netns_pg.host, netns_pg.port, netns_pg.user, pool={"ping_interval": 0.2,
        "ping_timeout": 0.5}, **FAST_TCP,
    )  # fmt: skip
    wrapper = handler["default"]
    token = uuid.uuid4().hex
    try:
        wrapper.ensure_connection()

        def drop_when_active() -> None:  # Django's connection stays in the test's thread
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                active = netns_pg.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE query LIKE 'INSERT INTO cg_net%%' AND state = 'active'"
                )[0][0]
                if active:
                    netns_pg.netns.drop_established(netns_pg.port)
                    return
                time.sleep(0.02)

        dropper = threading.Thread(target=drop_when_active, daemon=True)
        dropper.start()
        started = time.monotonic()
        with pytest.raises(OperationalError) as info, wrapper.cursor() as cursor:
            cursor.execute("INSERT INTO cg_net SELECT %s FROM pg_sleep(1.5) RETURNING 1", [token])
        took = time.monotonic() - started
        dropper.join(10)
        assert "timed out" in str(info.value).lower(), info.value
        assert took < 20  # the bound: ~1.5 s + ~2 s (keepalive 1 s + 1 s); generous
        # the server ran it once; Django did not run it again
        time.sleep(1.5)
        count = netns_pg.execute("SELECT count(*) FROM cg_net WHERE token = %s", [token])
        assert count == [(1,)]
        # end of that request; the next ones get a fresh connection
        wrapper.close_if_unusable_or_obsolete()
        for _ in range(5):
            wrapper.close_if_unusable_or_obsolete()
            with wrapper.cursor() as cursor:
                cursor.execute("SELECT 1")
                assert cursor.fetchone() == (1,)
            wrapper.close_if_unusable_or_obsolete()
    finally:
        netns_pg.netns.restore()
        handler.close_all()
        registry.close_pools(alias="default")


def test_django_requests_after_an_idle_drop_see_no_error(netns_pg: Any) -> None:
    handler = handler_for(
        netns_pg.host, netns_pg.port, netns_pg.user,
        pool={"ping_interval": 0.2, "ping_timeout": 0.5}, **FAST_TCP,
    )  # fmt: skip
    wrappers = [handler["default"]]
    try:
        wrapper = wrappers[0]
        wrapper.ensure_connection()
        wrapper.close_if_unusable_or_obsolete()  # back to the pool, idle
        assert netns_pg.netns.drop_established(netns_pg.port)
        time.sleep(0.3)
        for _ in range(10):
            wrapper.close_if_unusable_or_obsolete()
            with wrapper.cursor() as cursor:
                cursor.execute("SELECT 1")
                assert cursor.fetchone() == (1,)
            wrapper.close_if_unusable_or_obsolete()
    finally:
        netns_pg.netns.restore()
        handler.close_all()
        registry.close_pools(alias="default")
