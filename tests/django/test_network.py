"""The Django backend on real sockets: a blackholed host fails within the pool's timeout
(``OPTIONS["pool"] = {"timeout": 2}``, no connect_timeout anywhere), and its connections get
TCP keepalives and tcp_user_timeout unless ``OPTIONS`` sets its own."""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import pytest
from django.conf import settings

if not settings.configured:
    settings.configure(DATABASES={}, INSTALLED_APPS=["connguard"], USE_TZ=True)
import django

django.setup()

from django.db.utils import ConnectionHandler  # noqa: E402

from connguard import PoolUnavailable  # noqa: E402
from connguard.backends import pools  # noqa: E402
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
            pools.close_pools(alias="default")


def _socket_options(conn: Any) -> dict[str, int]:
    fd = conn.pgconn.socket if hasattr(conn, "pgconn") else conn.fileno()
    sock = socket.socket(fileno=socket.dup(fd))
    try:
        return {
            "keepalives": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            "keepalives_idle": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            "keepalives_interval": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            "keepalives_count": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            "tcp_user_timeout": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
        }
    finally:
        sock.close()


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
        assert _socket_options(wrapper.connection) == {**TCP_DEFAULTS, **expected}
    finally:
        handler.close_all()
        pools.close_pools(alias="default")
