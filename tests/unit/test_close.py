"""close(timeout) on the fake driver: waits for lent connections, never closes one under
its holder; closing every pool at exit."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from fakedb import FakeServer, wait_until

from connguard import shutdown


def test_close_waits_for_lent_connections(make_pool, server: FakeServer) -> None:
    pool = make_pool(max_size=2)
    taken, returned = threading.Event(), threading.Event()

    def job() -> None:
        conn = pool.getconn()
        taken.set()
        time.sleep(0.3)
        pool.putconn(conn)
        returned.set()

    t = threading.Thread(target=job)
    t.start()
    assert taken.wait(5)
    pool.close(timeout=5)
    assert returned.is_set()
    assert server.open_count() == 0  # closed as it came back, before close() returned
    t.join(5)


def test_close_does_not_wait_for_the_callers_own_connection(make_pool, server) -> None:
    pool = make_pool(max_size=1)
    conn = pool.getconn()
    pool.close(timeout=60)  # returns at once: only this thread could give it back
    assert server.is_open(conn)
    pool.putconn(conn)
    assert server.open_count() == 0


def test_close_timeout_leaves_a_held_connection_to_its_holder(
    make_pool, server: FakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    pool = make_pool(name="cl", max_size=1, leak_threshold=60)
    held: list = []
    release = threading.Event()

    def holder() -> None:
        held.append(pool.getconn())
        release.wait(10)

    t = threading.Thread(target=holder, name="long-job")
    t.start()
    wait_until(lambda: held)
    with caplog.at_level(logging.WARNING, logger="connguard.pool"):
        pool.close(timeout=0.1)
    assert server.is_open(held[0])
    assert held[0].execute("select 1") == 1
    [message] = [r.getMessage() for r in caplog.records if "closed while" in r.getMessage()]
    assert message.startswith("pool 'cl': closed while connection #"), message
    assert "by thread 'long-job'); it will be closed when it is returned" in message, message
    assert "in holder" in message  # where it was taken
    held[0].rollback()
    pool.putconn(held[0])
    assert not server.is_open(held[0])
    release.set()
    t.join(5)


def test_close_all_closes_the_pools_of_this_process(make_pool, server: FakeServer) -> None:
    pools = [make_pool(min_size=1, max_size=1) for _ in range(2)]
    for pool in pools:
        pool.wait(5)
    assert server.open_count() == 2
    shutdown.close_all()
    assert all(pool.closed for pool in pools)
    assert server.open_count() == 0
