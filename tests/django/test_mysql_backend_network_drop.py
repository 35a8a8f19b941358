"""``ENGINE: "connguard.backends.mysql"`` after a silent network drop, on real kernel TCP:
MariaDB in a network namespace (``netns_mariadb``), its established flows silenced by
nftables — no FIN, no RST.

* outside requests (a management command, a worker, a thread keeping its connection): the
  next statement after the drop costs one bounded ping (``ping_timeout``), then runs on a
  fresh connection — no error, nothing to catch;
* between requests (the connection back in the pool): no error either;
* a statement in flight fails with Django's ``OperationalError`` within the TCP bound the
  ``OPTIONS`` keys set, is not run again, and the next request gets a fresh connection.

Needs root, ip, nft and setpriv: skipped with the reason otherwise, failed under CI=true.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from django.conf import settings

if not settings.configured:
    settings.configure(DATABASES={}, INSTALLED_APPS=["connguard"], USE_TZ=True)
import django

django.setup()

from django.db import OperationalError  # noqa: E402
from django.db.utils import ConnectionHandler  # noqa: E402

from connguard.backends import registry  # noqa: E402

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]

# small TCP bounds in OPTIONS (the user's keys win over connguard's defaults): ~2 s
FAST_TCP = {"keepalives_idle": 1, "keepalives_interval": 1, "keepalives_count": 2,
            "tcp_user_timeout": 2000}  # fmt: skip
TCP_BOUND = 2.0
FACTOR = 4  # generous: the machine is shared


@pytest.fixture
def server(netns_mariadb: Any) -> Any:
    pytest.importorskip("MySQLdb")
    netns_mariadb.execute(
        "CREATE TABLE IF NOT EXISTS connguard.cg_net (token varchar(64)) ENGINE=InnoDB"
    )
    return netns_mariadb


@pytest.fixture
def handler(server: Any) -> Iterator[Any]:
    """``handler(**options)``: a ``ConnectionHandler`` with the connguard MySQL backend on the
    namespace's server; closed, and its pools with it, after the test."""
    made: list[ConnectionHandler] = []

    def make(**options: Any) -> ConnectionHandler:
        made.append(
            ConnectionHandler(
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
        )
        return made[-1]

    yield make
    for each in made:
        each.close_all()
    registry.close_pools(alias="default")


def session_id(wrapper: Any) -> int:
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT CONNECTION_ID()")
        return int(cursor.fetchone()[0])


def test_outside_requests_the_next_statement_pings_once_then_runs_on_a_fresh_connection(
    handler: Any, server: Any
) -> None:
    # connguard's TCP defaults (30 s keepalive): in the first 40 s only the ping finds the drop
    ping_timeout = 1.0
    wrapper = handler(pool={"ping_interval": 0.2, "ping_timeout": ping_timeout})["default"]
    first = session_id(wrapper)  # kept by the wrapper, as a management command keeps it
    assert server.netns.drop_established(server.port)
    time.sleep(0.3)  # idle past ping_interval
    started = time.monotonic()
    second = session_id(wrapper)
    took = time.monotonic() - started
    print(f"the statement after the drop took {took:.2f} s (ping_timeout {ping_timeout} s)")
    assert second != first
    assert ping_timeout <= took < ping_timeout * FACTOR + 2
    assert wrapper.connguard_pool.get_stats()["connections_lost"] == 1
    for _ in range(5):  # and the statements after it run at once on the new connection
        assert session_id(wrapper) == second


def test_requests_after_an_idle_drop_see_no_error(handler: Any, server: Any) -> None:
    wrapper = handler(pool={"ping_interval": 0.2, "ping_timeout": 0.5}, **FAST_TCP)["default"]
    first = session_id(wrapper)
    wrapper.close_if_unusable_or_obsolete()  # end of the request: back to the pool, idle
    assert server.netns.drop_established(server.port)
    time.sleep(0.3)
    for _ in range(10):
        wrapper.close_if_unusable_or_obsolete()
        assert session_id(wrapper) != first
        wrapper.close_if_unusable_or_obsolete()


def test_statement_in_flight_fails_within_the_bound_once_then_requests_work(
    handler: Any, server: Any
) -> None:
    wrapper = handler(pool={"ping_interval": 0.2, "ping_timeout": 0.5}, **FAST_TCP)["default"]
    token = uuid.uuid4().hex
    wrapper.ensure_connection()

    def drop_when_active() -> None:  # Django's connection stays in the test's thread
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            active = server.execute(
                "SELECT count(*) FROM information_schema.PROCESSLIST"
                " WHERE COMMAND = 'Query' AND INFO LIKE 'INSERT INTO cg_net%%'"
            )[0][0]
            if active:
                server.netns.drop_established(server.port)
                return
            time.sleep(0.02)

    dropper = threading.Thread(target=drop_when_active, daemon=True)
    dropper.start()
    started = time.monotonic()
    with pytest.raises(OperationalError) as info, wrapper.cursor() as cursor:
        cursor.execute("INSERT INTO cg_net SELECT %s FROM DUAL WHERE SLEEP(1.5) = 0", [token])
    took = time.monotonic() - started
    dropper.join(10)
    print(f"the statement failed after {took:.2f} s: {info.value!r}")
    assert info.value.args[0] == 2013, info.value  # Lost connection ... during query
    assert TCP_BOUND - 0.1 <= took < TCP_BOUND * FACTOR + 5
    # the server ran it once; Django did not run it again
    count = "SELECT count(*) FROM connguard.cg_net WHERE token = %s"
    deadline = time.monotonic() + 10
    while server.execute(count, [token])[0][0] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    assert server.execute(count, [token]) == [(1,)]
    # end of that request; the next ones get a fresh connection
    for _ in range(5):
        wrapper.close_if_unusable_or_obsolete()
        with wrapper.cursor() as cursor:
            cursor.execute("SELECT 1")
            assert cursor.fetchone() == (1,)
        wrapper.close_if_unusable_or_obsolete()
