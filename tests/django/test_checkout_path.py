"""The Django checkout/checkin path, in process, on the rig's server: what each checkout does
(and skips), and that the wrapper's cached pool is dropped whenever it must be."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings

if not settings.configured:
    settings.configure(DATABASES={}, INSTALLED_APPS=["connguard"], USE_TZ=True)
import django

django.setup()

from django.db.backends.postgresql import base as postgres  # noqa: E402
from django.db.utils import ConnectionHandler  # noqa: E402

from connguard.backends import registry  # noqa: E402

ENGINE = "connguard.backends.postgresql"
pytestmark = pytest.mark.integration


def make_handler(pg_server: Any, **pool: Any) -> ConnectionHandler:
    """A connection handler of our own (Django's global one stays untouched)."""
    return ConnectionHandler(
        {
            "default": {
                "ENGINE": ENGINE,
                "NAME": "postgres",
                "USER": pg_server.user,
                "HOST": pg_server.host,
                "PORT": pg_server.port,
                "OPTIONS": {"pool": pool},
            }
        }
    )


@pytest.fixture
def handler(pg_server: Any) -> Iterator[ConnectionHandler]:
    handler = make_handler(pg_server, max_size=2)
    yield handler
    handler.close_all()
    registry.close_pools(alias="default")


def request(conn: Any, sql: str = "SELECT 1") -> Any:
    """One request's life as close_old_connections() runs it on request_started and
    request_finished (for our own handler's wrapper), with a query in between."""
    conn.close_if_unusable_or_obsolete()
    with conn.cursor() as cursor:
        cursor.execute(sql)
        row = cursor.fetchone()
    conn.close_if_unusable_or_obsolete()
    return row[0]


def test_each_request_checks_out_and_back(handler: ConnectionHandler) -> None:
    conn = handler["default"]
    for _ in range(5):
        assert request(conn) == 1
        assert conn.connection is None  # handed back at the end of the request
    assert conn.connguard_pool is None  # the wrapper forgets the pool with the connection
    (pool,) = [p for p in registry.all_pools() if p.name == "default"]
    assert pool.get_stats()["checkouts"] == 5
    assert pool.get_stats()["connections_opened"] == 1


def test_a_server_session_is_configured_once(
    handler: ConnectionHandler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Time zone and role are set when the server session is new, not at every checkout
    (as Django's own pool does); the session keeps them."""
    name = (
        "_configure_connection"
        if hasattr(postgres.DatabaseWrapper, "_configure_connection")
        else "ensure_timezone"
    )
    original = getattr(postgres.DatabaseWrapper, name)
    calls: list[int] = []

    def spy(self: Any, *args: Any) -> Any:
        calls.append(1)
        return original(self, *args)

    monkeypatch.setattr(postgres.DatabaseWrapper, name, spy)
    conn = handler["default"]
    for _ in range(4):
        assert request(conn, "SELECT current_setting('TimeZone')") == "UTC"
    assert len(calls) == 1


def test_with_a_reset_the_session_is_configured_at_every_checkout(
    pg_server: Any,
) -> None:
    """A reset callable may undo Django's settings (RESET ALL): then Django configures the
    session again at each checkout, and the time zone is right every time."""

    def reset(raw: Any) -> None:
        cursor = raw.cursor()
        cursor.execute("RESET ALL")
        cursor.close()

    handler = make_handler(pg_server, max_size=1, reset=reset)
    pg_server.execute("ALTER DATABASE postgres SET timezone = 'Asia/Tokyo'")
    try:
        conn = handler["default"]
        for _ in range(3):
            assert request(conn, "SELECT current_setting('TimeZone')") == "UTC"
    finally:
        pg_server.execute("ALTER DATABASE postgres RESET timezone")
        handler.close_all()
        registry.close_pools(alias="default")


def test_a_closed_pool_is_not_reused_by_the_wrapper(handler: ConnectionHandler) -> None:
    conn = handler["default"]
    assert request(conn) == 1
    first = conn._cg_pool_cache[2]
    registry.close_pools(alias="default")  # e.g. close_pool() after a TIME_ZONE change
    assert request(conn) == 1
    second = conn._cg_pool_cache[2]
    assert second is not first and first.closed and not second.closed


def test_new_connection_parameters_find_their_own_pool(handler: ConnectionHandler) -> None:
    """The test runner renames NAME in place: the next checkout must not reuse the old pool."""
    conn = handler["default"]
    assert request(conn, "SELECT current_database()") == "postgres"
    conn.settings_dict["NAME"] = "template1"
    assert request(conn, "SELECT current_database()") == "template1"


def test_the_checkin_hands_back_the_same_session(handler: ConnectionHandler) -> None:
    conn = handler["default"]
    conn.ensure_connection()
    raw = conn.connection
    conn.close_if_unusable_or_obsolete()  # request_finished
    assert conn.connection is None
    conn.ensure_connection()
    assert conn.connection is raw  # the same server session, from the pool
    conn.close()
