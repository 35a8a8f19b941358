"""Contention against the real server: 64 threads over a small pool (zero errors, right
answers, invariants, never more sessions than max_size); no lock held across network I/O
(a connect stuck in a stalled network does not stop others); gevent monkey-patching."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pool_support import driver, make_pool, scalar, stat, wait_until

__all__ = ["driver", "make_pool"]  # fixtures


def test_64_threads_over_a_small_pool(make_pool, pg: Any, driver: str) -> None:
    pool = make_pool(driver=driver, max_size=4, timeout=30)
    rounds = 30
    errors: list[BaseException] = []
    wrong: list[tuple[int, Any]] = []
    violations: list[str] = []
    start = threading.Barrier(65)
    done = threading.Event()

    def work(i: int) -> None:
        try:
            start.wait(20)
            for j in range(rounds):
                token = i * 1000 + j
                with pool.connection() as conn:
                    got = scalar(conn, "SELECT %s::int", [token])
                    if got != token:
                        wrong.append((token, got))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def watch() -> None:
        while not done.is_set():
            stats = pool.get_stats()
            if stats["pool_size"] > 4:
                violations.append(f"size {stats}")
            if stats["pool_in_use"] + stats["pool_available"] > stats["pool_size"]:
                violations.append(f"books {stats}")
            sessions = pg.count_connections(application_name=pool.name)
            if sessions > 4:
                violations.append(f"{sessions} sessions on the server")
            time.sleep(0.02)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(64)]
    for t in threads:
        t.start()
    watcher = threading.Thread(target=watch)
    watcher.start()
    start.wait(20)
    for t in threads:
        t.join(60)
    done.set()
    watcher.join(10)
    assert not errors, errors[:3]
    assert not wrong, wrong[:3]
    assert not violations, violations[:3]
    stats = pool.get_stats()
    assert stats["checkouts"] == 64 * rounds
    assert stats["pool_in_use"] == 0 and stats["requests_waiting"] == 0
    assert stats["pool_available"] == stats["pool_size"] <= 4
    assert stats["requests_errors"] == 0
    assert pg.count_connections(application_name=pool.name) == stats["pool_size"]


def test_a_connect_stuck_in_a_stalled_network_does_not_block_others(
    make_pool, pg: Any, fault_proxy: Any, driver: str
) -> None:
    pool = make_pool(
        conninfo=pg.conninfo(host=fault_proxy.host, port=fault_proxy.port, connect_timeout=10,
                             application_name="cg-stalled"),
        driver=driver, max_size=3, timeout=20,
    )  # fmt: skip
    a, b = pool.getconn(), pool.getconn()
    fault_proxy.stall()
    got: list[Any] = []
    connecting = threading.Thread(target=lambda: got.append(pool.getconn()))
    connecting.start()
    wait_until(lambda: stat(pool, "pool_size") == 3)  # its slot is taken: it is connecting
    time.sleep(0.1)
    assert connecting.is_alive()
    started = time.monotonic()
    pool.putconn(b)
    assert pool.getconn() is b  # no lock held by the stuck connect
    pool.get_stats()
    repr(pool)
    pool.putconn(b)
    assert time.monotonic() - started < 0.5
    fault_proxy.passthrough()
    connecting.join(20)
    assert got and scalar(got[0], "SELECT 1") == 1
    for conn in (a, got[0]):
        pool.putconn(conn)


def test_slow_network_latency_under_contention(make_pool, pg: Any, fault_proxy: Any) -> None:
    pool = make_pool(
        conninfo=pg.conninfo(host=fault_proxy.host, port=fault_proxy.port, connect_timeout=10,
                             application_name="cg-latency"),
        max_size=3, timeout=30,
    )  # fmt: skip
    fault_proxy.latency(0.02)
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                with pool.connection() as conn:
                    scalar(conn, "SELECT 1")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors[:3]
    assert stat(pool, "checkouts") == 40 and stat(pool, "pool_size") <= 3


GEVENT_SCRIPT = """
from gevent import monkey
monkey.patch_all()
import sys
driver, conninfo = sys.argv[1], sys.argv[2]
if driver == "psycopg2":
    from psycogreen.gevent import patch_psycopg
    patch_psycopg()
import gevent
from connguard import ConnectionPool

pool = ConnectionPool(conninfo, driver=driver, name="green", min_size=2, max_size=4,
                      timeout=30)
pool.wait(20)
errors, wrong, finished = [], [], []

def query(conn, sql, params):
    cur = conn.cursor()
    cur.execute(sql, params)
    row = cur.fetchone()
    cur.close()
    return row[0]

def work(i):
    for j in range(4):
        token = i * 100 + j
        try:
            with pool.connection() as conn:
                # a few greenlets hold their connection across maintenance rounds
                got = query(conn, "SELECT %s::int FROM pg_sleep(%s)",
                            [token, 0.7 if i < 3 and j == 0 else 0.002])
                if got != token:
                    wrong.append((token, got))
            finished.append((i, j))
        except Exception as exc:
            errors.append(repr(exc))

greenlets = [gevent.spawn(work, i) for i in range(60)]
gevent.joinall(greenlets, timeout=60)

# liveness under gevent too: terminated idle sessions are replaced at checkout
with pool.connection() as conn:
    pid = query(conn, "SELECT pg_backend_pid() + %s", [0])
admin = __import__(driver).connect(conninfo.replace("cg-green", "cg-admin"))
admin.autocommit = True
query(admin, "SELECT count(pg_terminate_backend(pid, 5000)) + %s FROM pg_stat_activity "
             "WHERE application_name = 'cg-green'", [0])
admin.close()
with pool.connection() as conn:
    if query(conn, "SELECT pg_backend_pid() + %s", [0]) == pid:
        errors.append("got a terminated session back")
stats = pool.get_stats()
pool.close()
print("errors", len(errors), errors[:3])
print("wrong", len(wrong))
print("checkouts", stats["checkouts"], "reclaimed", stats["leaks_reclaimed"],
      "size", stats["pool_size"])
# cooperative: while greenlet 0 sleeps in its first query, others get connections and finish
print("overtaken", finished.index((0, 0)) if (0, 0) in finished else -1)
sys.exit(0 if not errors and not wrong and stats["checkouts"] == 242 else 1)
"""


def test_gevent_monkey_patched_greenlets(pg: Any, driver: str, tmp_path: Path) -> None:
    pytest.importorskip("gevent")
    if driver == "psycopg2":
        pytest.importorskip("psycogreen")
    script = tmp_path / "green.py"
    script.write_text(textwrap.dedent(GEVENT_SCRIPT))
    conninfo = pg.conninfo(application_name="cg-green", connect_timeout=5)
    proc = subprocess.run(
        [sys.executable, str(script), driver, conninfo],
        capture_output=True, text=True, timeout=90, env=dict(os.environ),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "reclaimed 0 " in proc.stdout, proc.stdout  # greenlets are not dead threads
    overtaken = int(proc.stdout.split("overtaken")[1])
    assert overtaken >= 10, proc.stdout  # the pool never blocked the other greenlets
