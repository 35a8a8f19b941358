"""Prometheus metrics of every connguard pool (``pip install 'django-connguard[prometheus]'``).

Names: ``connguard_<stat>`` for each gauge of :data:`connguard.metrics.GAUGES` and
``connguard_<stat>_total`` for each counter of :data:`connguard.metrics.COUNTERS`, with
``_ms`` counters exported in seconds (``requests_wait_ms`` -> ``connguard_requests_wait_seconds
_total``); one label, ``pool`` (the pool's name: the Django alias). Pools of the same name in
one process are summed.

Two modes, chosen the way prometheus_client chooses, by ``PROMETHEUS_MULTIPROC_DIR``:

- **One process** (runserver, uvicorn with one worker, a script): :class:`PoolCollector` reads
  ``get_stats()`` at each scrape. :func:`register` adds it to a registry, once.
- **Several processes** (gunicorn or uvicorn workers): prometheus_client does not aggregate
  custom collectors across processes, so each process *publishes* its pools into ordinary
  metric objects backed by the shared directory — counters incremented by the growth since
  the last publication, gauges in ``livesum`` mode (``breaker_open``: ``livemax``) — and a
  scrape served by any worker sums them over all workers. A small daemon thread per process
  publishes every ``CONNGUARD_METRICS_INTERVAL`` seconds (default 1); it is started lazily
  (:func:`start_publisher`, called by the Django views after each request), holds no
  reference to any pool and is started afresh in a forked child, which publishes from zero
  like prometheus_client's own values do. The process that serves a scrape publishes itself
  first. Add :func:`gunicorn_child_exit` to the gunicorn config so that a dead worker's gauges
  go away with it (:func:`exposition` also drops those of processes that no longer exist).
"""

from __future__ import annotations

import glob
import logging
import os
import re
import threading
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

try:
    import prometheus_client
    from prometheus_client import multiprocess
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.registry import REGISTRY, CollectorRegistry
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "connguard.contrib.prometheus needs the prometheus_client package: "
        "pip install 'django-connguard[prometheus]'"
    ) from exc

from connguard import metrics

if TYPE_CHECKING:
    from connguard.pool import ConnectionPool

logger = logging.getLogger("connguard.metrics")

PREFIX = "connguard_"
#: gauges whose multiprocess value is the largest over live processes, not the sum
_MAX_GAUGES = frozenset({"breaker_open"})
ENV_INTERVAL = "CONNGUARD_METRICS_INTERVAL"
DEFAULT_INTERVAL = 1.0


def metric_name(stat: str) -> tuple[str, float]:
    """``(prometheus name without _total, scale)`` of a stat: ``*_ms`` becomes seconds."""
    if stat.endswith("_ms"):
        return f"{PREFIX}{stat[:-3]}_seconds", 0.001
    return PREFIX + stat, 1.0


def multiprocess_dir() -> str | None:
    """The shared directory of prometheus_client's multiprocess mode, when it is on."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


# -- one process: a collector read at scrape time ----------------------------------------------


class PoolCollector:
    """Reads every live pool of this process at each scrape."""

    def collect(self) -> Iterator[Any]:
        per_pool = metrics.stats_by_name(metrics.all_pools())
        for stat, meaning in metrics.GAUGES.items():
            name, _ = metric_name(stat)
            gauge = GaugeMetricFamily(name, meaning, labels=["pool"])
            for pool, stats in per_pool.items():
                gauge.add_metric([pool], stats[stat])
            yield gauge
        for stat, meaning in metrics.COUNTERS.items():
            name, scale = metric_name(stat)
            counter = CounterMetricFamily(name, meaning, labels=["pool"])
            for pool, stats in per_pool.items():
                counter.add_metric([pool], stats[stat] * scale)
            yield counter

    def describe(self) -> Iterator[Any]:
        return iter(())  # names are known, but this keeps registration free of side effects


_registered: weakref.WeakKeyDictionary[CollectorRegistry, PoolCollector] = (
    weakref.WeakKeyDictionary()
)
_register_lock = threading.Lock()


def register(registry: CollectorRegistry = REGISTRY) -> PoolCollector:
    """Add the pool collector to *registry* (the default one unless given); idempotent."""
    with _register_lock:
        collector = _registered.get(registry)
        if collector is None:
            collector = _registered[registry] = PoolCollector()
            registry.register(collector)
        return collector


# -- several processes: publish into the shared directory -------------------------------------


class _Metrics:
    """The prometheus_client objects one process writes its pools into (not registered:
    in multiprocess mode a scrape reads the files, see :func:`exposition`)."""

    def __init__(self) -> None:
        self.gauges: dict[str, prometheus_client.Gauge] = {}
        self.counters: dict[str, tuple[prometheus_client.Counter, float]] = {}
        for stat, meaning in metrics.GAUGES.items():
            name, _ = metric_name(stat)
            self.gauges[stat] = prometheus_client.Gauge(
                name,
                meaning,
                ["pool"],
                registry=None,
                multiprocess_mode="livemax" if stat in _MAX_GAUGES else "livesum",
            )
        for stat, meaning in metrics.COUNTERS.items():
            name, scale = metric_name(stat)
            counter = prometheus_client.Counter(name, meaning, ["pool"], registry=None)
            self.counters[stat] = (counter, scale)


class Publisher:
    """Writes this process's pool stats into prometheus_client metrics (multiprocess mode).

    Counters grow by the growth of each pool's counters since the last publication (a
    counter that went down was reset by ``pop_stats()``: its whole value is new); gauges are
    set to the sum over the process's live pools of each name, and to 0 once none is left.
    """

    def __init__(self, interval: float | None = None) -> None:
        self.interval = interval
        self._metrics: _Metrics | None = None
        self._reset()
        os.register_at_fork(
            before=self._before_fork,
            after_in_parent=self._after_fork_in_parent,
            after_in_child=self._after_fork_in_child,
        )

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._seen: weakref.WeakKeyDictionary[ConnectionPool, dict[str, int]] = (
            weakref.WeakKeyDictionary()
        )
        self._gauges: dict[str, dict[str, int]] = {}

    # fork: never let a child inherit the lock held by the publishing thread (which may be
    # inside prometheus_client's own lock), and start the child from zero
    def _before_fork(self) -> None:
        self._lock.acquire()

    def _after_fork_in_parent(self) -> None:
        self._lock.release()

    def _after_fork_in_child(self) -> None:
        self._reset()

    def publish(self) -> None:
        """Write the stats of every pool of this process now."""
        with self._lock:
            if self._metrics is None:
                self._metrics = _Metrics()
            self._publish_locked(self._metrics)

    def _publish_locked(self, m: _Metrics) -> None:
        live: dict[str, dict[str, int]] = {}
        for pool in metrics.all_pools(include_closed=True):
            stats = pool.get_stats()
            seen = self._seen.get(pool)
            for stat, (counter, scale) in m.counters.items():
                value = int(stats.get(stat, 0))
                before = seen.get(stat, 0) if seen is not None else 0
                grown = value - before if value >= before else value
                if grown:
                    counter.labels(pool.name).inc(grown * scale)
                elif seen is None:
                    counter.labels(pool.name)  # a new pool: every counter shows, at 0
            self._seen[pool] = {stat: int(stats.get(stat, 0)) for stat in m.counters}
            if pool.closed:
                continue
            into = live.setdefault(pool.name, dict.fromkeys(m.gauges, 0))
            for stat in m.gauges:
                value = int(stats.get(stat, 0))
                into[stat] = max(into[stat], value) if stat in _MAX_GAUGES else into[stat] + value
        for name in self._gauges.keys() - live.keys():
            live[name] = dict.fromkeys(m.gauges, 0)  # its last pool closed: back to zero
        for name, values in live.items():
            published = self._gauges.get(name, {})
            for stat, gauge in m.gauges.items():
                if published.get(stat) != values[stat]:
                    gauge.labels(name).set(values[stat])
        self._gauges = {name: v for name, v in live.items() if any(v.values())}

    def start(self) -> None:
        """Start the publishing thread of this process unless it runs (cheap to call often)."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop = threading.Event()
            self._thread = threading.Thread(
                target=self._run,
                args=(self._interval(), self._stop),
                name="connguard-metrics",
                daemon=True,
            )
            self._thread.start()

    def stop(self) -> None:
        """Stop the publishing thread (it publishes once more on its way out)."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(5.0)

    def _interval(self) -> float:
        if self.interval is not None:
            return self.interval
        try:
            return max(0.05, float(os.environ.get(ENV_INTERVAL, DEFAULT_INTERVAL)))
        except ValueError:
            return DEFAULT_INTERVAL

    def _run(self, interval: float, stop: threading.Event) -> None:
        pid = os.getpid()
        while os.getpid() == pid:
            stopping = stop.wait(interval)
            try:
                self.publish()
            except Exception as exc:  # a metrics thread must never die of a bad round
                logger.debug("publishing pool metrics failed: %s", exc)
            if stopping:
                return


_publisher: Publisher | None = None
_publisher_lock = threading.Lock()


def publisher() -> Publisher:
    """The process's :class:`Publisher` (one per process)."""
    global _publisher
    if _publisher is None:
        with _publisher_lock:
            if _publisher is None:
                _publisher = Publisher()
    return _publisher


def start_publisher() -> None:
    """Multiprocess mode: make sure this process publishes its pools (no-op otherwise)."""
    if multiprocess_dir():
        publisher().start()


def gunicorn_child_exit(server: Any, worker: Any) -> None:
    """gunicorn ``child_exit`` hook: forget the gauges of a worker that exited.

    In ``gunicorn.conf.py``: ``from connguard.contrib.prometheus import gunicorn_child_exit
    as child_exit`` (or call it from your own ``child_exit``).
    """
    if multiprocess_dir():
        multiprocess.mark_process_dead(worker.pid)


def gunicorn_post_fork(server: Any, worker: Any) -> None:
    """gunicorn ``post_fork`` hook: start publishing in each worker right away."""
    start_publisher()


_PID_FILE = re.compile(r"^gauge_live\w+_(\d+)\.db$")


def forget_dead_processes(path: str | None = None) -> list[int]:
    """Remove the live-gauge files of processes that no longer exist; returns their pids."""
    path = path or multiprocess_dir()
    if not path:
        return []
    dead = set()
    for file in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        found = _PID_FILE.match(os.path.basename(file))
        if found is None:
            continue
        pid = int(found.group(1))
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            dead.add(pid)
        except PermissionError:
            pass  # alive, someone else's
    for pid in dead:
        multiprocess.mark_process_dead(pid, path)
    return sorted(dead)


def exposition(registry: CollectorRegistry | None = None) -> tuple[bytes, str]:
    """``(body, content type)`` of a scrape, in either mode.

    Multiprocess: this process publishes first, then every process's metrics in the shared
    directory are read (the application's own metrics too). One process: *registry* (the
    default one unless given) with the pool collector registered in it.
    """
    path = multiprocess_dir()
    if path:
        pub = publisher()
        pub.publish()
        pub.start()
        forget_dead_processes(path)
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=path)
    else:
        registry = registry or REGISTRY
        register(registry)
    return prometheus_client.generate_latest(registry), prometheus_client.CONTENT_TYPE_LATEST
