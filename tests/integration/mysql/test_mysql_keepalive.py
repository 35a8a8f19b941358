"""TCP keepalive and TCP_USER_TIMEOUT on MySQL connections: mysqlclient has no option for
them, so the driver sets them on the socket after connecting (connguard's defaults, the
user's libpq-named keys over them); read back with getsockopt on the real connection."""

from __future__ import annotations

from typing import Any

import pytest
from mysql_support import driver, make_pool, mysqldb, scalar

from connguard import ConnectionPool
from connguard.drivers.tcp import apply_tcp, read_tcp, tcp_settings

__all__ = ["driver", "make_pool", "mysqldb"]  # fixtures

DEFAULTS = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "tcp_user_timeout": 30000,
}


def os_values() -> dict[str, int]:
    """What a fresh TCP socket of this machine has (none of the options set)."""
    import socket

    with socket.socket() as sock:
        return {**read_tcp(sock.fileno()), "keepalives": 0}


def test_driver_sets_the_defaults_on_a_tcp_connection(driver: Any, mariadb: Any) -> None:
    conn = driver.connect(mariadb.conninfo(), {}, 5)
    try:
        assert read_tcp(driver.fileno(conn)) == DEFAULTS
        assert scalar(conn, "SELECT 1") == 1
    finally:
        driver.close(conn)


def test_the_users_values_win(driver: Any, mariadb: Any) -> None:
    os_default = os_values()
    # kwargs
    conn = driver.connect(mariadb.conninfo(), {"keepalives_idle": 60, "tcp_user_timeout": 0}, 5)
    try:
        assert read_tcp(driver.fileno(conn)) == {
            **DEFAULTS,
            "keepalives_idle": 60,
            "tcp_user_timeout": os_default["tcp_user_timeout"],  # 0: the OS's value
        }
    finally:
        driver.close(conn)
    # the conninfo, as a URL query or keywords; kwargs win over it
    url = f"{mariadb.url()}?keepalives_interval=7&keepalives_count=5"
    conn = driver.connect(url, {"keepalives_count": "4"}, 5)
    try:
        values = read_tcp(driver.fileno(conn))
        assert (values["keepalives_interval"], values["keepalives_count"]) == (7, 4)
    finally:
        driver.close(conn)
    # keepalives=0: no probes
    conn = driver.connect(mariadb.conninfo(keepalives=0), {}, 5)
    try:
        assert read_tcp(driver.fileno(conn))["keepalives"] == 0
        assert scalar(conn, "SELECT 1") == 1
    finally:
        driver.close(conn)


def test_a_unix_socket_is_left_alone(driver: Any, mariadb: Any) -> None:
    conn = driver.connect("", {"unix_socket": str(mariadb.socket_path), "user": "root"}, 5)
    try:
        assert "socket" in conn.get_host_info().lower()
        assert not apply_tcp(driver.fileno(conn), DEFAULTS)
        assert scalar(conn, "SELECT 1") == 1
    finally:
        driver.close(conn)


def test_a_bad_value_is_refused_before_connecting(driver: Any) -> None:
    with pytest.raises(ValueError) as info:
        driver.connect_params("", {"host": "h", "keepalives_idle": "half a minute"}, 5)
    assert str(info.value) == (
        "keepalives_idle='half a minute': expected a whole number of seconds (0 for the OS's "
        "value); connguard's default is 30 (docs/network.md)"
    )
    with pytest.raises(ValueError, match=r"keepalives=2: .* 0 turns the probes off"):
        tcp_settings({"keepalives": 2})


def test_the_pools_connections_have_them(make_pool: Any, mariadb: Any) -> None:
    pool = make_pool(mariadb.conninfo(keepalives_idle=45), min_size=0, max_size=1)
    with pool.connection() as conn:
        assert read_tcp(conn.fileno()) == {**DEFAULTS, "keepalives_idle": 45}


def test_a_connect_callable_gets_no_tcp_keys_and_the_socket_gets_them(
    mysqldb: Any, mariadb: Any
) -> None:
    seen: list[dict[str, Any]] = []

    def connect(conninfo: str, **kwargs: Any) -> Any:
        seen.append(kwargs)
        return mysqldb.connect(**kwargs)

    pool = ConnectionPool(
        "",
        driver="mysqlclient",
        connect=connect,
        kwargs={**mariadb.kwargs(), "keepalives_count": 6},
        min_size=0,
        max_size=1,
        timeout=10,
    )
    try:
        with pool.connection() as conn:
            assert read_tcp(conn.fileno()) == {**DEFAULTS, "keepalives_count": 6}
        assert not set(seen[0]) & set(DEFAULTS)
        assert seen[0]["connect_timeout"] >= 2
    finally:
        pool.close()
