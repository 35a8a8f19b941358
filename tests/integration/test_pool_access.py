"""A server that answers and refuses the client, for real: a wrong password (a role with a
password and a scram-sha-256 line in pg_hba.conf, set up here; the rig trusts everyone
else), an unknown role, an unknown database. Each is a configuration error, not an outage:
AccessDenied names the parameter to fix and never calls the server unreachable, and the
server is not hammered."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from pool_support import driver, make_pool, scalar

from connguard import AccessDenied, PoolUnavailable
from support import password_role as scram_role

__all__ = ["driver", "make_pool"]  # fixtures


@pytest.fixture
def password_role(pg: Any) -> Iterator[str]:
    """A login role whose password is 'right', checked with scram-sha-256 over TCP."""
    with scram_role(pg) as role:
        yield role


def refused(pool: Any) -> str:
    with pytest.raises(AccessDenied) as info:
        pool.getconn()
    assert not isinstance(info.value, PoolUnavailable)
    text = str(info.value)
    assert "unreachable" not in text, text
    assert f"pool {pool.name!r}: the database server is reachable but refused" in text, text
    assert "This is a configuration error, not an outage: check " in text, text
    return text


def test_wrong_password(make_pool, pg: Any, driver: str, password_role: str) -> None:
    wrong = make_pool(
        pg.conninfo(user=password_role, password="wrong", connect_timeout=5),
        driver=driver, max_size=2,
    )  # fmt: skip
    for _ in range(3):  # the connect's own failure, then failing fast
        text = refused(wrong)
        assert f'password authentication failed for user "{password_role}"' in text, text
        assert "check the 'password' (and 'user') connection parameter" in text, text
    right = make_pool(
        pg.conninfo(user=password_role, password="right", connect_timeout=5),
        driver=driver, max_size=2,
    )  # fmt: skip
    with right.connection() as conn:  # the same role and server, with the right password
        assert scalar(conn, "SELECT current_user") == password_role


def test_unknown_role_and_database(make_pool, pg: Any, driver: str) -> None:
    role = make_pool(pg.conninfo(user="cg_no_such_role", connect_timeout=5), driver=driver)
    text = refused(role)
    assert 'role "cg_no_such_role" does not exist' in text, text
    assert "check the 'user' connection parameter" in text, text
    database = make_pool(pg.conninfo(dbname="cg_no_such_db", connect_timeout=5), driver=driver)
    text = refused(database)
    assert 'database "cg_no_such_db" does not exist' in text, text
    assert "check the 'dbname' connection parameter" in text, text


def test_a_refused_client_does_not_hammer_the_server(
    make_pool, pg: Any, driver: str, password_role: str
) -> None:
    """Callers fail at once without connecting; the background probe backs off (to 5 s)."""
    pool = make_pool(
        pg.conninfo(user=password_role, password="wrong", connect_timeout=5),
        driver=driver, max_size=4, backoff_initial=0.05, backoff_max=0.05,
    )  # fmt: skip
    refused(pool)
    deadline = time.monotonic() + 2.0
    failures = 0
    while time.monotonic() < deadline:
        with pytest.raises(AccessDenied):
            pool.getconn()
        failures += 1
        time.sleep(0.01)
    attempts = pool.get_stats()["connections_errors"]
    assert failures > 50
    assert attempts <= 8, attempts  # 0.05 s doubling; backoff_max=0.05 alone: about 40
