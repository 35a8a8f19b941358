"""Measure connguard's network bounds with its DEFAULT settings, on real kernel TCP.

(a) fail fast on a blackholed host: a loopback listener that accepts and never speaks; a
    pool with ``timeout=2`` (``connect_timeout`` left at 10 s) on each driver, through the
    driver's connect and through a ``connect=`` callable (the Django backend's path), and
    through the Django backend itself (``OPTIONS["pool"] = {"timeout": 2}``): seconds until
    ``PoolUnavailable``.
(b) a silently dropped path (the server in a network namespace, the established flows
    dropped by nftables; needs root, ip, nft and setpriv), each driver:
    - idle: 3 idle connections, the drop, then one checkout past ``ping_interval``: its
      latency (one ``ping_timeout``; the other dead ones are retired with it) and whether
      it succeeded; then how long until the kernel itself reports a dropped idle socket
      dead (keepalive: ``keepalives_idle + keepalives_interval``);
    - in flight, acknowledged: ``SELECT pg_sleep(120)`` (``SELECT SLEEP(120)``) sent, then
      the drop: seconds until the statement fails (the keepalive bound);
    - in flight, unacknowledged: the drop, then a statement on a connection lent without a
      ping (used moments ago): seconds until it fails (``tcp_user_timeout``).

    python bench/network_bounds.py            # about 4 minutes (the TCP bounds are 30-40 s)
    python bench/network_bounds.py --json out.json
    python bench/network_bounds.py --database mariadb   # mysqlclient and PyMySQL, MariaDB

``--database`` picks the engine (``postgresql``, the default: psycopg and psycopg2;
``mariadb``: mysqlclient and PyMySQL, the Django row on ``connguard.backends.mysql``).

A benchmark, not a test: it prints what it measured and exits 0.
"""

from __future__ import annotations

import argparse
import json
import select
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

from connguard import ConnectionPool
from connguard.drivers import get_driver
from connguard.testing.netns import (
    Netns,
    NetnsMariaDBServer,
    NetnsPostgresServer,
    NetnsServer,
    SilentListener,
    unavailable_reason,
)

DRIVERS = {"postgresql": ("psycopg", "psycopg2"), "mariadb": ("mysqlclient", "pymysql")}
ENGINES = {"postgresql": "connguard.backends.postgresql", "mariadb": "connguard.backends.mysql"}
SLEEP = {"postgresql": "SELECT pg_sleep(120)", "mariadb": "SELECT SLEEP(120)"}
SERVERS: dict[str, Callable[[Netns], NetnsServer]] = {
    "postgresql": NetnsPostgresServer,
    "mariadb": NetnsMariaDBServer,
}


def _connect_fn(driver: str) -> Callable[..., Any]:
    if driver == "psycopg":
        import psycopg

        return psycopg.connect
    import psycopg2

    return psycopg2.connect


def _timed(fn: Callable[[], Any]) -> tuple[float, str]:
    started = time.monotonic()
    try:
        fn()
        outcome = "ok"
    except Exception as exc:
        outcome = f"{type(exc).__name__}: {' '.join(str(exc).split())[:110]}"
    return time.monotonic() - started, outcome


def blackhole(database: str) -> list[dict[str, Any]]:
    rows = []
    for driver in DRIVERS[database]:
        # a connect= callable: PostgreSQL's (the MySQL Django backend uses the driver's path)
        for path in ("driver", "connect=") if database == "postgresql" else ("driver",):
            with SilentListener() as listener:
                options: dict[str, Any] = {"driver": driver, "timeout": 2.0}
                if path == "connect=":
                    options["connect"] = _connect_fn(driver)
                pool = ConnectionPool(
                    f"host={listener.host} port={listener.port} user=x dbname=x", **options
                )
                took, outcome = _timed(lambda p=pool: p.putconn(p.getconn()))
                pool.close()
            rows.append({"case": f"pool, {driver}, {path}", "seconds": took, "outcome": outcome})
    rows.append(_blackhole_django(database))
    return rows


def _blackhole_django(database: str) -> dict[str, Any]:
    from django.conf import settings

    if not settings.configured:
        settings.configure(DATABASES={}, INSTALLED_APPS=["connguard"], USE_TZ=True)
    import django

    django.setup()
    from django.db.utils import ConnectionHandler

    with SilentListener() as listener:
        handler = ConnectionHandler(
            {
                "default": {
                    "ENGINE": ENGINES[database],
                    "NAME": "x",
                    "USER": "x",
                    "HOST": listener.host,
                    "PORT": listener.port,
                    "OPTIONS": {"pool": {"timeout": 2}},
                }
            }
        )
        took, outcome = _timed(handler["default"].ensure_connection)
        handler.close_all()
    return {"case": "Django backend (default driver)", "seconds": took, "outcome": outcome}


def _fd(driver: str, conn: Any) -> int:
    if hasattr(conn, "pgconn"):  # psycopg 3
        return int(conn.pgconn.socket)
    return get_driver(driver).fileno(conn)  # psycopg2, mysqlclient, PyMySQL


def _autocommit(conn: Any) -> None:
    if callable(getattr(conn, "autocommit", None)):  # mysqlclient, PyMySQL
        conn.autocommit(True)
    else:
        conn.autocommit = True


def _sql(conn: Any, sql: str) -> None:
    cur = conn.cursor()
    try:
        cur.execute(sql)
    finally:
        cur.close()


def dropped(database: str, ns: Netns, server: Any) -> list[dict[str, Any]]:
    rows = []
    for driver in DRIVERS[database]:
        pool = ConnectionPool(server.conninfo(), driver=driver, name=f"bench-{driver}")
        try:
            conns = [pool.getconn() for _ in range(3)]
            for conn in conns:
                _autocommit(conn)
                pool.putconn(conn)
            ns.drop_established(server.port)
            time.sleep(2.2)  # past ping_interval (2 s)
            took, outcome = _timed(lambda p=pool: p.putconn(p.getconn()))
            rows.append({"case": f"{driver}: checkout after an idle drop", "seconds": took,
                         "outcome": outcome, "connections_lost":
                         pool.get_stats()["connections_lost"]})  # fmt: skip
            # the kernel's own verdict on a dropped idle socket (keepalive probes)
            conn = pool.getconn()
            ns.drop_established(server.port)
            poller = select.poll()
            poller.register(_fd(driver, conn), select.POLLERR | select.POLLHUP)
            started = time.monotonic()
            seen = poller.poll(120_000)
            rows.append({"case": f"{driver}: kernel reports an idle dropped socket dead",
                         "seconds": time.monotonic() - started,
                         "outcome": "POLLERR" if seen else "nothing in 120 s"})  # fmt: skip
            pool.putconn(conn)
            # in flight, acknowledged: waiting for the result when the path dies
            conn = pool.getconn()
            _autocommit(conn)
            thread = threading.Thread(
                target=lambda c=conn, d=driver: rows.append(_in_flight(d, c, SLEEP[database]))
            )
            thread.start()
            time.sleep(1.0)
            ns.drop_established(server.port)
            thread.join(200)
            pool.putconn(conn)
            # in flight, unacknowledged: a connection lent without a ping (used just now)
            conn = pool.getconn()
            _autocommit(conn)
            pool.putconn(conn)
            conn = pool.getconn()
            ns.drop_established(server.port)
            took, outcome = _timed(lambda c=conn: _sql(c, "SELECT 1"))
            rows.append({"case": f"{driver}: statement sent on a dead path (unacked)",
                         "seconds": took, "outcome": outcome})  # fmt: skip
            pool.putconn(conn)
        finally:
            pool.close()
            ns.restore()
    return rows


def _in_flight(driver: str, conn: Any, sleep: str) -> dict[str, Any]:
    started = time.monotonic()
    took, outcome = _timed(lambda: _sql(conn, sleep))
    # minus the 1 s before the drop
    return {"case": f"{driver}: statement in flight when the path dies (acked)",
            "seconds": took - 1.0, "outcome": outcome,
            "started": started}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--database", choices=sorted(DRIVERS), default="postgresql")
    args = parser.parse_args(argv)
    rows = blackhole(args.database)
    reason = unavailable_reason()
    if reason is None:
        with Netns() as ns:
            server = SERVERS[args.database](ns)
            try:
                server.start()
                rows += dropped(args.database, ns, server)
            finally:
                server.cleanup()
    else:
        print(f"(dropped-path figures skipped: {reason})")
    for row in rows:
        row.pop("started", None)
        print(f"{row['case']:<58} {row['seconds']:6.2f} s  {row['outcome']}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
