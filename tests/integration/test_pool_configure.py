"""A ``configure`` callback that raises, on the real server: the application's error is
raised as itself, the new session is closed and the breaker stays closed (before: the pool
reported "database unreachable, failing fast" to every caller for a while)."""

from __future__ import annotations

from typing import Any

import pytest
from pool_support import driver, make_pool, scalar, stat, wait_until

__all__ = ["driver", "make_pool"]  # fixtures


class SetupBug(Exception):
    pass


def test_configure_error_is_the_applications_not_an_outage(make_pool, pg: Any, driver: str) -> None:
    calls: list[Any] = []

    def configure(conn: Any) -> None:
        calls.append(conn)
        if len(calls) == 1:
            raise SetupBug("configure() failed")

    pool = make_pool(driver=driver, max_size=2, configure=configure)
    with pytest.raises(SetupBug):
        pool.getconn()
    wait_until(lambda: pg.count_connections(application_name=pool.name) == 0, timeout=10)
    assert stat(pool, "breaker_opened") == 0
    with pool.connection() as conn:  # at once: not failing fast on a healthy server
        assert scalar(conn, "SELECT 1") == 1
    assert stat(pool, "pool_size") == 1
