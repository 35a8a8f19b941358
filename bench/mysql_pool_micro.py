"""Micro-benchmark of the mysqlclient driver's two paths, on a throwaway MariaDB it starts.

* ``libmariadb``: the transaction status read from the client library (no round trip);
* ``libmysqlclient path``: the same driver told that the library cannot say (as when
  mysqlclient is built on Oracle's libmysqlclient): a ROLLBACK at each checkin unless the
  connection was just committed or rolled back through the driver.

For each: (a) checkout + return and nothing else, one thread; (b) ``with pool.connection()``
around ``SELECT 1`` (autocommit off, mysqlclient's default: the SELECT opens no transaction).
The two paths take turns round by round (AB, BA, …); each figure is the median of its rounds
with the lowest and highest. A shared machine shows as spread: read the figures as rough.

    python bench/mysql_pool_micro.py            # about 10 s
    python bench/mysql_pool_micro.py --quick
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from connguard import ConnectionPool
from connguard.drivers.mysqlclient import MysqlclientDriver
from connguard.testing.mariadb import MariaDBServer


def _libmysqlclient_path() -> MysqlclientDriver:
    driver = MysqlclientDriver()
    driver._c = type("NoConnectorC", (), {"get_infov": None})()  # type: ignore[assignment]
    return driver


def _checkout_return(pool: ConnectionPool, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        pool.putconn(pool.getconn())
    return (time.perf_counter() - started) / count * 1e6


def _select_one(pool: ConnectionPool, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        with pool.connection() as conn:
            cur = conn.cursor()
            cur.execute("SELECT 1")
            cur.fetchall()
            cur.close()
    return (time.perf_counter() - started) / count * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer, shorter rounds")
    args = parser.parse_args()
    rounds, batch = (4, 500) if args.quick else (12, 3000)
    with MariaDBServer() as server:
        pools: dict[str, ConnectionPool] = {}
        for label, driver in (
            ("libmariadb", "mysqlclient"),
            ("libmysqlclient path", _libmysqlclient_path()),
        ):
            pools[label] = ConnectionPool(
                server.conninfo(), driver=driver, min_size=1, max_size=1, name=label
            )
            pools[label].wait(30)
        results: dict[tuple[str, str], list[float]] = {}
        measures: dict[str, Callable[[ConnectionPool, int], float]] = {
            "checkout + return": _checkout_return,
            "with pool.connection(): SELECT 1": lambda pool, n: _select_one(pool, n // 3),
        }
        order = list(pools)
        for index in range(rounds):
            for label in order if index % 2 == 0 else reversed(order):
                for what, measure in measures.items():
                    results.setdefault((what, label), []).append(measure(pools[label], batch))
        print(f"MariaDB {server.execute('SELECT VERSION()')[0][0]}, {rounds} rounds")
        for (what, label), values in results.items():
            median = statistics.median(values)
            print(
                f"  {what:<34} {label:<20} {median:8.1f} µs"
                f"  (rounds {min(values):.1f} to {max(values):.1f})"
            )
        for pool in pools.values():
            pool.close()


if __name__ == "__main__":
    main()
