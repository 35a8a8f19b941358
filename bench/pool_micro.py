"""Side-by-side micro-benchmark: connguard vs psycopg_pool vs SQLAlchemy QueuePool vs no pool.

One process, one run, a real PostgreSQL server (a throwaway one started here, or ``--dsn``):

(a) one thread, checkout + return and nothing else, many iterations per batch; the contenders
    take turns batch by batch (ABC… then …CBA, round after round) and each figure is the
    median of its rounds, with the spread and the drift from the first half of the run to the
    second, so a machine that speeds up or slows down shows instead of favouring one pool.
    Liveness check on for everyone: connguard's default (one ``poll()`` on the socket; a ping
    only after ``ping_interval`` idle), psycopg_pool ``check=ConnectionPool.check_connection``,
    SQLAlchemy ``pre_ping=True``; the same pools without a check are listed for reference.
    The floor is a connection held by the caller (checkout = nothing); connecting and closing
    per operation shows why pools exist.
(b) 32 threads sharing 8 connections, each checkout running ``SELECT 1``: throughput, the
    wait for a connection (p50, p99, max), fairness (the slowest thread's share) and this
    process's CPU time and context switches per operation, rounds interleaved the same way.
    For reference: 8 threads each holding a connection (the ceiling) and a bare
    ``queue.SimpleQueue`` of connections (fast, and unfair: it starves threads).
(c) connguard with leak detection on (``leak_threshold=30``), in both (a) and (b); and with
    leak detection *and* metrics on: the Prometheus collector
    (``connguard.contrib.prometheus.register``) in a registry that a thread scrapes
    (``generate_latest``, which reads every pool's ``get_stats()`` under its lock) every
    50 ms while that contender runs, 300 times as often as a 15 s Prometheus scrape. The
    pool's counters themselves are always kept: there is no switch that turns them off.

Every connection is opened with ``autocommit=True`` so that ``SELECT 1`` is one round trip
and every return takes each pool's clean path (no ROLLBACK at checkin).

    python bench/pool_micro.py                # about 85 s; starts its own server
    python bench/pool_micro.py --quick        # about 10 s, for a smoke run
    python bench/pool_micro.py --dsn "host=127.0.0.1 user=postgres dbname=postgres"
    python bench/pool_micro.py --json results.json
    python bench/pool_micro.py --plot docs/img   # the chart (matplotlib), pool_micro.png

This is a benchmark, not a test: it prints figures and marks the targets met or missed, and
exits 0 either way.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import itertools
import json
import operator
import os
import platform
import queue
import resource
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import psycopg_pool
import sqlalchemy
from sqlalchemy.dialects.postgresql.psycopg import dialect as PsycopgDialect
from sqlalchemy.pool import QueuePool

import connguard
from connguard.config import mask_conninfo

clock = time.perf_counter

# -- targets from the issue ------------------------------------------------------------------

TARGET_A_US = 1.0  # connguard checkout+return about 1 us ...
TARGET_A_SLACK = 1.25  # ... counted as met up to 1.25 us
TARGET_A_VS_PSYCOPG_POOL = 0.5  # connguard us <= 0.5 x psycopg_pool us
TARGET_A_VS_SQLALCHEMY = 0.3  # connguard us <= 0.3 x QueuePool us
TARGET_B_VS_PSYCOPG_POOL = 1.2  # connguard ops/s >= 1.2 x psycopg_pool ops/s

SCRAPE_INTERVAL = 0.05  # seconds between two scrapes of the metrics, "metrics on"

UNSTEADY = 0.10  # flag a figure whose drift or p25-p75 spread exceeds 10 % of its median


@dataclasses.dataclass(frozen=True)
class Plan:
    a_rounds: int
    a_batch_s: float  # wall time of one batch of one contender in (a)
    connect_ops: int  # raw connect+close operations, in total
    b_rounds: int
    b_batch_s: float  # wall time of one batch of one contender in (b)
    threads: int = 32
    connections: int = 8


FULL = Plan(a_rounds=15, a_batch_s=0.06, connect_ops=300, b_rounds=10, b_batch_s=0.75)
QUICK = Plan(a_rounds=5, a_batch_s=0.015, connect_ops=50, b_rounds=2, b_batch_s=0.3)


# -- contenders ------------------------------------------------------------------------------


@dataclasses.dataclass
class Contender:
    """One way of getting a connection: ``get() -> handle``, ``put(handle)``, and ``unwrap``
    from the handle to the psycopg connection (SQLAlchemy hands out a proxy)."""

    key: str
    label: str
    check: str  # the liveness check it does at checkout, in words
    get: Callable[[], Any]
    put: Callable[[Any], Any]
    unwrap: Callable[[Any], Any] = lambda handle: handle
    threads: int | None = None  # (b): run with this many threads instead of plan.threads
    thread_setup: Callable[[int], None] | None = None  # (b): called first in each thread
    #: called before / after each batch it runs (the metrics scraper of "metrics on")
    start: Callable[[], None] = lambda: None
    stop: Callable[[], None] = lambda: None


class Scraper:
    """A thread that scrapes a Prometheus registry holding connguard's collector every
    *interval* seconds, between start() and stop(): "metrics on" for one contender."""

    def __init__(self, interval: float) -> None:
        from prometheus_client import CollectorRegistry, generate_latest

        from connguard.contrib.prometheus import register

        self.interval = interval
        self.registry = CollectorRegistry()
        register(self.registry)
        self._generate = generate_latest
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.scrapes = 0

    def _run(self, stop: threading.Event) -> None:
        for _ in range(1_000_000):  # bounded; a batch lasts about a second at most
            self._generate(self.registry)
            self.scrapes += 1
            if stop.wait(self.interval):
                return

    def start(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(self._stop,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None


def _enter_exit(cm: Any) -> None:
    """``with pool.connection(): pass`` split in two for the harness: get() makes the context
    manager, this enters and leaves it."""
    with cm:
        pass


def _connguard(dsn: str, size: int, name: str, **options: Any) -> connguard.ConnectionPool:
    pool = connguard.ConnectionPool(
        dsn, name=name, min_size=size, max_size=size, kwargs={"autocommit": True}, **options
    )
    pool.wait(30)
    return pool


def _psycopg_pool(dsn: str, size: int, name: str, check: bool) -> psycopg_pool.ConnectionPool:
    pool = psycopg_pool.ConnectionPool(
        dsn, name=name, min_size=size, max_size=size, kwargs={"autocommit": True}, open=True,
        check=psycopg_pool.ConnectionPool.check_connection if check else None,
    )  # fmt: skip
    pool.wait(30)
    return pool


def _queue_pool(dsn: str, size: int, pre_ping: bool) -> QueuePool:
    def creator() -> Any:
        return psycopg.connect(dsn, autocommit=True)

    pool = QueuePool(
        creator,
        pool_size=size, max_overflow=0, timeout=30, pre_ping=pre_ping,
        dialect=PsycopgDialect(),  # pre_ping needs a dialect: PGDialect_psycopg.do_ping
    )  # fmt: skip
    held = [pool.connect() for _ in range(size)]  # open all of them now, not while timed
    for fairy in held:
        fairy.close()
    return pool


def make_contenders(stack: ExitStack, dsn: str, size: int, scenario: str) -> list[Contender]:
    """The pools of scenario "a" or "b", opened and filled; *stack* closes them."""
    out: list[Contender] = []

    def add_connguard(
        key: str, label: str, check: str, cm: bool = False, scraper: Scraper | None = None,
        **options: Any,
    ) -> None:  # fmt: skip
        pool = _connguard(dsn, size, f"bench-{scenario}-{key}", **options)
        stack.callback(pool.close)
        if cm:
            out.append(Contender(key, label, check, pool.connection, _enter_exit))
        else:
            out.append(Contender(key, label, check, pool.getconn, pool.putconn))
        if scraper is not None:
            out[-1].start, out[-1].stop = scraper.start, scraper.stop
            stack.callback(scraper.stop)

    def add_psycopg_pool(key: str, label: str, check: bool, cm: bool = False) -> None:
        pool = _psycopg_pool(dsn, size, f"bench-{scenario}-{key}", check)
        stack.callback(pool.close)
        words = "check_connection: SELECT '' round trip" if check else "none"
        if cm:
            out.append(Contender(key, label, words, pool.connection, _enter_exit))
        else:
            out.append(Contender(key, label, words, pool.getconn, pool.putconn))

    def add_queue_pool(key: str, label: str, pre_ping: bool) -> None:
        pool = _queue_pool(dsn, size, pre_ping)
        stack.callback(pool.dispose)
        words = "pre_ping: SELECT 1 round trip" if pre_ping else "none"
        close, dbapi = operator.methodcaller("close"), operator.attrgetter("dbapi_connection")
        out.append(Contender(key, label, words, pool.connect, close, unwrap=dbapi))

    def raw_connections(n: int) -> list[Any]:
        conns = [psycopg.connect(dsn, autocommit=True) for _ in range(n)]
        for conn in conns:
            stack.callback(conn.close)
        return conns

    if scenario == "a":
        # The floor: the caller keeps its connection. get and put are C calls doing nothing.
        get = itertools.repeat(raw_connections(1)[0]).__next__
        out.append(Contender("raw_held", "raw connection, held (floor)", "none", get, id))
    else:
        # The ceiling: as many threads as connections, each holding its own; nobody waits.
        conns, local = raw_connections(size), threading.local()

        def hold(i: int) -> None:
            local.conn = conns[i]

        def own() -> Any:
            return local.conn

        ceiling = Contender(
            "raw_held", f"raw, {size} threads x own conn", "none (ceiling: no pool)",
            own, id, threads=size, thread_setup=hold,
        )  # fmt: skip
        out.append(ceiling)
    # The least a thread-safe pool can do: hand connections over a C queue, check nothing.
    bare: queue.SimpleQueue[Any] = queue.SimpleQueue()
    for conn in raw_connections(size):
        bare.put(conn)
    out.append(
        Contender("simplequeue", "queue.SimpleQueue (bare pool)", "none", bare.get, bare.put)
    )
    poll = "poll() on the socket; ping after 2 s idle"
    add_connguard("connguard", "connguard", poll)
    add_connguard(
        "connguard_leak", "connguard leak_threshold=30", "as connguard, + stack capture",
        leak_threshold=30.0,
    )  # fmt: skip
    add_connguard(
        "connguard_observed", "connguard leak=30 + metrics",
        "as leak=30, + a metrics scrape every 50 ms", leak_threshold=30.0,
        scraper=Scraper(SCRAPE_INTERVAL),
    )  # fmt: skip
    if scenario == "a":
        add_connguard(
            "connguard_ping", "connguard ping every checkout", "ping (empty query) round trip",
            ping_interval=1e-9,
        )  # fmt: skip
    add_psycopg_pool("psycopg_pool_check", "psycopg_pool check=", True)
    add_psycopg_pool("psycopg_pool", "psycopg_pool (no check)", False)
    if scenario == "a":  # the context manager most code uses, rather than getconn/putconn
        add_connguard("connguard_cm", "connguard, with .connection()", poll, cm=True)
        add_psycopg_pool("psycopg_pool_cm", "psycopg_pool, with .connection()", False, cm=True)
    add_queue_pool("queuepool_ping", "SQLAlchemy QueuePool pre_ping", True)
    add_queue_pool("queuepool", "SQLAlchemy QueuePool (no ping)", False)
    return out


# -- measuring -------------------------------------------------------------------------------


def interleaved(items: list[Any], rounds: int) -> Iterator[tuple[int, Any]]:
    """ABC CBA ABC …: every contender runs early and late in a round equally often."""
    for r in range(rounds):
        for item in items if r % 2 == 0 else reversed(items):
            yield r, item


def time_batch(get: Callable[[], Any], put: Callable[[Any], Any], n: int) -> float:
    """Seconds for *n* checkout+return pairs."""
    loop = itertools.repeat(None, n)
    started = clock()
    for _ in loop:
        put(get())
    return clock() - started


def calibrate(c: Contender, batch_s: float) -> int:
    """Iterations that make one batch last about *batch_s* (after a warm-up)."""
    c.start()
    try:
        time_batch(c.get, c.put, 50)
        n = 16
        while True:
            elapsed = time_batch(c.get, c.put, n)
            if elapsed >= 0.01 or n >= 1 << 22:
                break
            n *= 4
    finally:
        c.stop()
    return max(50, int(batch_s / (elapsed / n)))


@dataclasses.dataclass
class Series:
    """Per-round figures of one contender."""

    values: list[float] = dataclasses.field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    def quartiles(self) -> tuple[float, float]:
        if len(self.values) < 2:
            return self.values[0], self.values[0]
        q = statistics.quantiles(self.values, n=4, method="inclusive")
        return q[0], q[2]

    def drift(self) -> float:
        """Median of the second half of the rounds over that of the first half, minus one."""
        half = len(self.values) // 2
        if half == 0:
            return 0.0
        first = statistics.median(self.values[:half])
        second = statistics.median(self.values[-half:])
        return second / first - 1.0

    def unsteady(self) -> bool:
        """Rounds disagree: the machine was busy, or the figure is bimodal (round trips)."""
        lo, hi = self.quartiles()
        return abs(self.drift()) > UNSTEADY or (hi - lo) / self.median > UNSTEADY

    def ratio_to(self, other: Series) -> float:
        """Median over rounds of self / other, round by round. The rounds are interleaved, so
        each pair was measured moments apart: a slowdown of the machine mostly cancels."""
        return statistics.median(x / y for x, y in zip(self.values, other.values, strict=True))


def scenario_a(contenders: list[Contender], plan: Plan) -> dict[str, Series]:
    sizes = {c.key: calibrate(c, plan.a_batch_s) for c in contenders}
    results = {c.key: Series() for c in contenders}
    for _, c in interleaved(contenders, plan.a_rounds):
        gc.collect()
        c.start()
        try:
            elapsed = time_batch(c.get, c.put, sizes[c.key])
        finally:
            c.stop()
        results[c.key].values.append(elapsed / sizes[c.key] * 1e6)
    return results


def raw_connect(dsn: str, plan: Plan) -> Series:
    """µs per psycopg.connect() + close(), no pool: a few hundred, in 5 rounds."""
    rounds = 5
    per_round = max(1, plan.connect_ops // rounds)
    series = Series()
    for _ in range(rounds):
        started = clock()
        for _ in range(per_round):
            psycopg.connect(dsn, autocommit=True).close()
        series.values.append((clock() - started) / per_round * 1e6)
    return series


@dataclasses.dataclass
class Load:
    ops_per_s: Series = dataclasses.field(default_factory=Series)
    p50_wait_us: Series = dataclasses.field(default_factory=Series)
    p99_wait_us: Series = dataclasses.field(default_factory=Series)
    max_wait_us: Series = dataclasses.field(default_factory=Series)
    slowest_thread: Series = dataclasses.field(default_factory=Series)  # its ops / mean ops
    cpu_us_per_op: Series = dataclasses.field(default_factory=Series)  # this process, all threads
    switches_per_op: Series = dataclasses.field(default_factory=Series)
    ops: int = 0


@dataclasses.dataclass
class Run:
    elapsed: float  # seconds
    waits: list[list[float]]  # per thread, the seconds each get() took: one per operation
    cpu: float  # seconds of CPU this process used (user + system, every thread)
    switches: int  # context switches of this process (voluntary + involuntary)


def run_load(c: Contender, threads: int, duration: float) -> Run:
    """*threads* threads loop get / SELECT 1 / put for *duration* seconds."""
    threads = c.threads or threads
    barrier = threading.Barrier(threads + 1)
    box: dict[str, float] = {}
    waits: list[list[float]] = [[] for _ in range(threads)]
    ends = [0.0] * threads
    errors: list[BaseException] = []

    def worker(i: int) -> None:
        get, put, unwrap, mine = c.get, c.put, c.unwrap, waits[i]
        append = mine.append
        try:
            if c.thread_setup is not None:
                c.thread_setup(i)
            barrier.wait()
            deadline = box["deadline"]
            while True:
                t0 = clock()
                if t0 >= deadline:
                    break
                handle = get()
                t1 = clock()
                unwrap(handle).execute("SELECT 1").fetchone()
                put(handle)
                append(t1 - t0)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        ends[i] = clock()

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for t in pool:
        t.start()
    gc.collect()
    c.start()
    try:
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = clock()
        box["deadline"] = started + duration
        barrier.wait()
        for t in pool:
            t.join()
        after = resource.getrusage(resource.RUSAGE_SELF)
    finally:
        c.stop()
    if errors:
        raise RuntimeError(f"{c.label}: a worker failed") from errors[0]
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    switches = after.ru_nvcsw + after.ru_nivcsw - before.ru_nvcsw - before.ru_nivcsw
    return Run(max(ends) - started, waits, cpu, switches)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def scenario_b(contenders: list[Contender], plan: Plan) -> dict[str, Load]:
    for c in contenders:  # warm-up: threads, prepared paths, every connection once
        run_load(c, plan.threads, 0.1)
    results = {c.key: Load() for c in contenders}
    for _, c in interleaved(contenders, plan.b_rounds):
        run = run_load(c, plan.threads, plan.b_batch_s)
        per_thread = run.waits
        waits = [w for mine in per_thread for w in mine]
        ops = len(waits)
        load = results[c.key]
        load.ops += ops
        load.ops_per_s.values.append(ops / run.elapsed)
        load.cpu_us_per_op.values.append(run.cpu / ops * 1e6)
        load.switches_per_op.values.append(run.switches / ops)
        load.slowest_thread.values.append(min(map(len, per_thread)) / (ops / len(per_thread)))
        load.p50_wait_us.values.append(percentile(waits, 0.50) * 1e6)
        load.p99_wait_us.values.append(percentile(waits, 0.99) * 1e6)
        load.max_wait_us.values.append(max(waits) * 1e6)
    return results


# -- the run ---------------------------------------------------------------------------------


@contextmanager
def database(dsn: str | None) -> Iterator[tuple[str, str]]:
    """Yield (dsn, where): the given server, or a throwaway one removed afterwards."""
    if dsn:
        yield dsn, "--dsn (existing server)"
        return
    try:
        from connguard.testing.server import PostgresServer
    except ImportError as exc:
        sys.exit(f"cannot start a throwaway server ({exc}); pass --dsn")
    server = PostgresServer()
    try:
        server.start()
        yield server.conninfo(dbname="postgres"), "throwaway server (connguard.testing)"
    finally:
        server.cleanup()


def machine(dsn: str) -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    return {
        "load_before": load_average(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "psycopg": f"{psycopg.__version__} ({psycopg.pq.__impl__})",
        "psycopg_pool": psycopg_pool.__version__,
        "sqlalchemy": sqlalchemy.__version__,
        "connguard": connguard.__version__,
        "postgresql": row[0] if row else "?",
    }


def load_average() -> str:
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def report(
    info: dict[str, Any],
    where: str,
    plan: Plan,
    a: dict[str, Series],
    a_rows: list[Contender],
    connect: Series,
    b: dict[str, Load],
    b_rows: list[Contender],
) -> tuple[str, list[dict[str, Any]]]:
    lines: list[str] = []
    out = lines.append
    out(
        f"connguard {info['connguard']} pool micro-benchmark: Python {info['python']}, "
        f"psycopg {info['psycopg']}, psycopg_pool {info['psycopg_pool']}, "
        f"SQLAlchemy {info['sqlalchemy']}"
    )
    out(
        f"PostgreSQL {info['postgresql'].split()[0]} on 127.0.0.1, {where}; "
        f"{info['cpus']} CPU {info['cpu']}, {info['os']}; load average {info['load_before']} "
        f"before, {info['load_after']} after"
    )
    out("")
    cg = a["connguard"]
    flagged = False

    def flag(*series: Series) -> str:
        nonlocal flagged
        if any(s.unsteady() for s in series):
            flagged = True
            return " *"
        return ""

    out(
        f"(a) one thread, checkout + return, liveness check on; median of {plan.a_rounds} "
        "interleaved rounds (ABC..CBA)"
    )
    head = f"{'':34} {'liveness check at checkout':42} {'us/op':>8} {'p25-p75':>13}"
    out(f"{head} {'drift':>6} {'x connguard':>11}")
    for c in a_rows:
        s = a[c.key]
        lo, hi = s.quartiles()
        out(
            f"{c.label:34} {c.check:42} {s.median:8.2f} {f'{lo:.2f}-{hi:.2f}':>13} "
            f"{s.drift() * 100:+5.0f}% {s.ratio_to(cg):10.2f}x{flag(s)}"
        )
    lo, hi = connect.quartiles()
    out(
        f"{'raw connect+close per op':34} {f'({plan.connect_ops} ops, no pool)':42} "
        f"{connect.median:8.0f} {f'{lo:.0f}-{hi:.0f}':>13} {connect.drift() * 100:+5.0f}% "
        f"{connect.median / cg.median:10.0f}x{flag(connect)}"
    )
    out(
        "  p25-p75 and drift (median of the 2nd half of the rounds vs the 1st) are over "
        "rounds; x connguard = median of per-round ratios"
    )
    out("")
    leak = a["connguard_leak"]
    out(
        f"(c) leak detection: connguard leak_threshold=30 costs "
        f"{leak.median - cg.median:+.2f} us per checkout ({leak.median:.2f} vs "
        f"{cg.median:.2f} us/op, {leak.ratio_to(cg):.1f}x){flag(leak, cg)}"
    )
    observed = a["connguard_observed"]
    out(
        f"    leak detection + metrics (a scrape every {SCRAPE_INTERVAL * 1000:.0f} ms): "
        f"{observed.median - cg.median:+.2f} us per checkout ({observed.median:.2f} us/op, "
        f"{observed.ratio_to(cg):.1f}x); the metrics alone: "
        f"{observed.median - leak.median:+.2f} us{flag(observed)}"
    )
    out("")
    bcg = b["connguard"].ops_per_s
    out(
        f"(b) {plan.threads} threads over {plan.connections} connections, SELECT 1 per checkout; "
        f"median of {plan.b_rounds} interleaved rounds x {plan.b_batch_s:g} s"
    )
    out(
        f"{'':34} {'ops/s':>7} {'p25-p75':>12} {'wait p50':>9} {'p99':>6} {'max':>8} "
        f"{'slowest':>8} {'CPU':>6} {'switches':>9} {'connguard ops/s':>16}"
    )
    out(
        f"{'':34} {'':7} {'':12} {'us':>9} {'us':>6} {'us':>8} {'thread':>8} {'us/op':>6} "
        f"{'per op':>9} {'/ this':>16}"
    )
    for c in b_rows:
        load = b[c.key]
        lo, hi = load.ops_per_s.quartiles()
        out(
            f"{c.label:34} {load.ops_per_s.median:7.0f} {f'{lo:.0f}-{hi:.0f}':>12} "
            f"{load.p50_wait_us.median:9.0f} {load.p99_wait_us.median:6.0f} "
            f"{load.max_wait_us.median:8.0f} {load.slowest_thread.median * 100:7.0f}% "
            f"{load.cpu_us_per_op.median:6.1f} {load.switches_per_op.median:9.2f} "
            f"{bcg.ratio_to(load.ops_per_s):15.2f}x{flag(load.ops_per_s)}"
        )
    out(
        "  wait = time in get(), liveness check included; slowest thread = its operations "
        "as a share of the mean per thread (100% = fair, 0% = starved for the whole round);"
    )
    out(
        "  CPU and switches = this process's (pool + driver + threads), per operation; CPU "
        "that other processes take is not counted in it"
    )
    if flagged:
        out(
            f"  * unsteady: drift or p25-p75 spread over {UNSTEADY:.0%} of the median (a busy "
            "machine, or round trips that are bimodal on few cores); rerun before quoting it"
        )
    out("")

    targets: list[dict[str, Any]] = []

    def target(name: str, value: float, goal: str, ok: bool, note: str = "") -> None:
        targets.append({"target": name, "value": value, "goal": goal, "met": ok, "note": note})
        out(f"  {name:52} {value:6.3f}  {goal:11} {verdict(ok):6}  {note}".rstrip())

    out("Targets (from the issue)")
    target(
        "(a) connguard us per checkout+return",
        cg.median, f"~{TARGET_A_US:g} (<={TARGET_A_SLACK:g})", cg.median <= TARGET_A_SLACK,
    )  # fmt: skip
    for key, goal, name, note in [
        ("psycopg_pool_check", TARGET_A_VS_PSYCOPG_POOL, "psycopg_pool check=",
         "peer pings (round trip), connguard polls"),
        ("queuepool_ping", TARGET_A_VS_SQLALCHEMY, "QueuePool pre_ping",
         "peer pings (round trip), connguard polls"),
        ("psycopg_pool", TARGET_A_VS_PSYCOPG_POOL, "psycopg_pool (no check)",
         "stricter: the peer checks nothing"),
        ("queuepool", TARGET_A_VS_SQLALCHEMY, "QueuePool (no ping)",
         "stricter: the peer checks nothing"),
    ]:  # fmt: skip
        ratio = cg.ratio_to(a[key])
        target(f"(a) connguard us / {name} us", ratio, f"<= {goal:g}", ratio <= goal, note)
    ratio = a["connguard_cm"].ratio_to(a["psycopg_pool_cm"])
    target(
        "(a) same, with pool.connection(), vs psycopg_pool", ratio,
        f"<= {TARGET_A_VS_PSYCOPG_POOL:g}", ratio <= TARGET_A_VS_PSYCOPG_POOL,
        "extra line: the context manager; the peer checks nothing",
    )  # fmt: skip
    for key, name, note in [
        ("psycopg_pool", "psycopg_pool (no check)", "psycopg_pool's default: no check"),
        ("psycopg_pool_check", "psycopg_pool check=", "both check liveness"),
    ]:
        ratio = bcg.ratio_to(b[key].ops_per_s)
        target(
            f"(b) connguard ops/s / {name} ops/s",
            ratio, f">= {TARGET_B_VS_PSYCOPG_POOL:g}", ratio >= TARGET_B_VS_PSYCOPG_POOL, note,
        )  # fmt: skip
    return "\n".join(lines), targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="libpq conninfo of an existing server (default: start one)")
    parser.add_argument("--quick", action="store_true", help="a short run (a few seconds)")
    parser.add_argument("--json", metavar="FILE", help="also write the results to FILE")
    parser.add_argument("--plot", metavar="DIR", help="write the chart (PNG) into DIR")
    args = parser.parse_args(argv)
    plan = QUICK if args.quick else FULL
    started = clock()
    with database(args.dsn) as (dsn, where), ExitStack() as stack:
        info = machine(dsn)
        print(f"benchmarking against {where}: {mask_conninfo(dsn)}", flush=True)
        a_rows = make_contenders(stack, dsn, 1, "a")
        print("(a) single thread ...", flush=True)
        a = scenario_a(a_rows, plan)
        stack.close()
        connect = raw_connect(dsn, plan)
        b_rows = make_contenders(stack, dsn, plan.connections, "b")
        print(f"(b) {plan.threads} threads / {plan.connections} connections ...", flush=True)
        b = scenario_b(b_rows, plan)
        stack.close()
        info["load_after"] = load_average()
    text, targets = report(info, where, plan, a, a_rows, connect, b, b_rows)
    print()
    print(text)
    print(f"\n(total {clock() - started:.0f} s)")
    data = {
        "machine": info,
        "server": where,
        "plan": dataclasses.asdict(plan),
        "a_us_per_op": {k: dataclasses.asdict(s) for k, s in a.items()},
        "raw_connect_us_per_op": dataclasses.asdict(connect),
        "b": {k: dataclasses.asdict(load) for k, load in b.items()},
        "targets": targets,
        "labels": {c.key: c.label for c in [*a_rows, *b_rows]},
        "labels_a": {c.key: c.label for c in a_rows},
        "labels_b": {c.key: c.label for c in b_rows},
        "table": text,
    }
    if args.json:
        with open(args.json, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
    if args.plot:
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from plot import plot_micro

        print(f"chart: {plot_micro(data, Path(args.plot) / 'pool_micro.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
