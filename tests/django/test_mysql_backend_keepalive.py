"""TCP keepalive on ``ENGINE: "connguard.backends.mysql"`` connections, read back with
getsockopt on the real connection's socket: connguard's defaults on pooled connections,
libpq's keys in ``OPTIONS`` over them, a bad value refused before a checkout, and the
user's values with the pool off."""

from __future__ import annotations

from typing import Any

import pytest
from django.conf import settings

if not settings.configured:
    settings.configure(DATABASES={}, INSTALLED_APPS=["connguard"], USE_TZ=True)
import django

django.setup()

from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.db.utils import ConnectionHandler  # noqa: E402

from connguard.backends import registry  # noqa: E402
from connguard.drivers.tcp import read_tcp  # noqa: E402

pytestmark = pytest.mark.integration
DEFAULTS = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 30000,
}


def handler_for(server: Any, options: dict[str, Any]) -> ConnectionHandler:
    return ConnectionHandler(
        {
            "default": {
                "ENGINE": "connguard.backends.mysql",
                "NAME": server.database,
                "USER": server.user,
                "HOST": server.host,
                "PORT": server.port,
                "OPTIONS": options,
            }
        }
    )


def socket_options(handler: ConnectionHandler) -> dict[str, int]:
    conn = handler["default"]
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1")
    return read_tcp(conn._cg_driver.fileno(conn.connection))  # mysqlclient or PyMySQL


@pytest.fixture(autouse=True)
def _close_pools(mariadb: Any) -> Any:
    pytest.importorskip("MySQLdb")
    yield
    registry.close_pools(alias="default")


def test_pooled_connections_get_the_defaults(mariadb: Any) -> None:
    handler = handler_for(mariadb, {"pool": {"max_size": 2}})
    try:
        assert socket_options(handler) == DEFAULTS
    finally:
        handler.close_all()


def test_options_override_them(mariadb: Any) -> None:
    options = {"pool": {"max_size": 2}, "keepalives_idle": 50, "tcp_user_timeout": 20000}
    handler = handler_for(mariadb, options)
    try:
        assert socket_options(handler) == {
            **DEFAULTS, "keepalives_idle": 50, "tcp_user_timeout": 20000,
        }  # fmt: skip
    finally:
        handler.close_all()


def test_a_bad_value_is_refused_before_a_checkout(mariadb: Any) -> None:
    handler = handler_for(mariadb, {"pool": {"max_size": 2}, "keepalives_count": "three"})
    try:
        with pytest.raises(ImproperlyConfigured) as info:
            handler["default"].ensure_connection()
        assert str(info.value) == (
            "DATABASES['default']['OPTIONS']: keepalives_count='three': expected a whole "
            "number of probes (0 for the OS's value); connguard's default is 3 "
            "(docs/network.md)"
        )
    finally:
        handler.close_all()


def test_pool_off_sets_only_the_users_values(mariadb: Any) -> None:
    handler = handler_for(mariadb, {"pool": False, "keepalives_idle": 40})
    try:
        values = socket_options(handler)
        assert (values["keepalives"], values["keepalives_idle"]) == (1, 40)
        assert values["tcp_user_timeout"] == 0  # not connguard's default: the pool is off
        assert handler["default"].connguard_pool is None
    finally:
        handler.close_all()
