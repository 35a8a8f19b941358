"""Stable stat names, the Prometheus collector and multiprocess publisher, the status view —
with real pools on the rig's server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from connguard import ConnectionPool, metrics
from connguard.contrib import prometheus


@pytest.fixture
def make_pool(pg_dsn: str) -> Iterator[Any]:
    pools: list[ConnectionPool] = []

    def make(name: str, conninfo: str = pg_dsn, **options: Any) -> ConnectionPool:
        pool = ConnectionPool(conninfo, name=name, timeout=5, **options)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()


def samples(text: str, pool: str) -> dict[str, float]:
    """metric sample name -> value for one pool label."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("pool") == pool:
                found[sample.name] = sample.value
    return found


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_get_stats_returns_every_canonical_name_and_only_those(make_pool: Any) -> None:
    pool = make_pool("cg-names")
    assert list(pool.get_stats()) == list(metrics.STAT_NAMES)
    assert all(pool.get_stats()[name] == 0 for name in metrics.COUNTERS)
    for _ in range(3):
        with pool.connection() as conn:
            conn.execute("SELECT 1")
    stats = pool.get_stats()
    # a counter the pool grows but metrics.py does not document would break dashboards
    assert set(stats) == set(metrics.STAT_NAMES)
    assert (stats["checkouts"], stats["connections_opened"], stats["pool_size"]) == (3, 1, 1)
    assert pool.pop_stats()["checkouts"] == 3
    assert pool.get_stats()["checkouts"] == 0


def test_all_pools_lists_the_open_pools_of_the_process(make_pool: Any) -> None:
    a, b = make_pool("cg-all-b"), make_pool("cg-all-a")
    names = [p.name for p in metrics.all_pools()]
    assert {"cg-all-a", "cg-all-b"} <= set(names)
    assert names == sorted(names)
    b.close()
    assert b not in metrics.all_pools() and b in metrics.all_pools(include_closed=True)
    assert a in metrics.all_pools()


def test_collector_reads_every_pool_at_scrape_time(make_pool: Any) -> None:
    pool = make_pool("cg-collector", max_size=2)
    registry = CollectorRegistry()
    assert prometheus.register(registry) is prometheus.register(registry)  # idempotent
    for _ in range(5):
        with pool.connection() as conn:
            conn.execute("SELECT 1")
    held = pool.getconn()
    try:
        found = samples(generate_latest(registry).decode(), "cg-collector")
    finally:
        pool.putconn(held)
    assert found["connguard_checkouts_total"] == 6
    assert found["connguard_connections_opened_total"] == 1
    assert (found["connguard_pool_in_use"], found["connguard_pool_max"]) == (1, 2)
    assert found["connguard_breaker_open"] == 0
    assert "connguard_requests_wait_seconds_total" in found  # *_ms exported in seconds
    expected = {prometheus.metric_name(s)[0] for s in metrics.GAUGES} | {
        prometheus.metric_name(s)[0] + "_total" for s in metrics.COUNTERS
    }
    assert expected == set(found)


PUBLISH_ACROSS_FORK = textwrap.dedent(
    """
    import json, os, sys
    from connguard import ConnectionPool
    from connguard.contrib import prometheus

    pool = ConnectionPool(sys.argv[1], name="cg-fork", max_size=2, timeout=5)

    def work(n):
        for _ in range(n):
            with pool.connection() as conn:
                conn.execute("SELECT 1")

    work(2)
    prometheus.publisher().publish()
    children = []
    for n in (3, 4):
        pid = os.fork()
        if pid == 0:
            work(n)
            prometheus.publisher().publish()
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.waitpid(pid, 0)
    work(1)
    body, _ = prometheus.exposition()  # the parent publishes itself, and reads everyone
    print(json.dumps({"text": body.decode(), "children": children}))
    pool.close()
    """
)


def test_multiprocess_publisher_sums_processes_and_forgets_dead_gauges(pg_dsn: str) -> None:
    with tempfile.TemporaryDirectory(prefix="cg-prom-") as mpdir:
        env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": mpdir}
        proc = subprocess.run(
            [sys.executable, "-c", PUBLISH_ACROSS_FORK, pg_dsn],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        found = samples(out["text"], "cg-fork")
        remaining = sorted(os.listdir(mpdir))
    # counters: parent 2 + 1, children 3 and 4 (they start from zero after fork)
    assert found["connguard_checkouts_total"] == 10
    # each child dropped the parent's idle connection without a word, and opened its own
    assert found["connguard_connections_discarded_after_fork_total"] == 2
    assert found["connguard_connections_opened_total"] == 3
    # gauges: the children are gone, only the parent's pool is counted
    assert (found["connguard_pool_max"], found["connguard_pool_size"]) == (2, 1)
    for pid in out["children"]:
        assert f"counter_{pid}.db" in remaining
        assert not any(name.endswith(f"_{pid}.db") and "live" in name for name in remaining)


def test_status_view_is_503_while_a_breaker_is_open(make_pool: Any) -> None:
    from django.conf import settings

    if not settings.configured:
        settings.configure(DATABASES={}, INSTALLED_APPS=["connguard"], USE_TZ=True)
    import django

    django.setup()
    from django.test import RequestFactory

    from connguard.contrib.django import views

    healthy = make_pool("cg-status-ok")
    with healthy.connection() as conn:
        conn.execute("SELECT 1")
    response = views.status(RequestFactory().get("/connguard/status"))
    assert response.status_code == 200
    report = json.loads(response.content)
    assert report["healthy"] is True and report["pid"] == os.getpid()
    mine = next(p for p in report["pools"] if p["name"] == "cg-status-ok")
    assert (mine["breaker"], mine["last_error"], mine["stats"]["checkouts"]) == ("closed", None, 1)
    assert list(mine["stats"]) == list(metrics.STAT_NAMES)

    down = make_pool(
        "cg-status-down", f"host=127.0.0.1 port={closed_port()} user=postgres connect_timeout=2"
    )
    with pytest.raises(Exception, match="cg-status-down"):
        down.getconn(timeout=1)
    response = views.status(RequestFactory().get("/connguard/status"))
    assert response.status_code == 503
    report = json.loads(response.content)
    broken = next(p for p in report["pools"] if p["name"] == "cg-status-down")
    assert broken["breaker"] == "open" and "Connection refused" in broken["last_error"]
    assert broken["stats"]["breaker_opened"] == 1
    down.close()
    assert views.status(RequestFactory().get("/connguard/status")).status_code == 200
    # POST is refused: the views are read-only
    assert views.status(RequestFactory().post("/connguard/status")).status_code == 405


def test_metrics_view_single_process(make_pool: Any) -> None:
    from django.conf import settings

    if not settings.configured:
        settings.configure(DATABASES={}, INSTALLED_APPS=["connguard"], USE_TZ=True)
    import django

    django.setup()
    from django.test import RequestFactory

    from connguard.contrib.django import views

    pool = make_pool("cg-view")
    with pool.connection() as conn:
        conn.execute("SELECT 1")
    response = views.metrics(RequestFactory().get("/connguard/metrics"))
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    assert samples(response.content.decode(), "cg-view")["connguard_checkouts_total"] == 1


def test_opentelemetry_instruments_read_every_pool(make_pool: Any) -> None:
    pytest.importorskip("opentelemetry.sdk", reason="opentelemetry-sdk is in the test extra")
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    from connguard.contrib import opentelemetry

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    made = opentelemetry.instrument(provider)
    assert opentelemetry.instrument(provider) is made  # once per provider
    pool = make_pool("cg-otel", max_size=3)
    for _ in range(4):
        with pool.connection() as conn:
            conn.execute("SELECT 1")
    points: dict[str, tuple[float, str]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    if point.attributes.get("pool") == "cg-otel":
                        points[metric.name] = (point.value, metric.unit or "")
    assert points["connguard.checkouts"] == (4, "1")
    assert points["connguard.pool_max"] == (3, "1")
    assert points["connguard.requests_wait_time"][1] == "s"
    assert len(points) == len(metrics.STAT_NAMES)
    provider.shutdown()
