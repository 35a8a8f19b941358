"""The Prometheus endpoint scraped from a real multi-worker gunicorn, and uvicorn, in
prometheus_client's multiprocess mode; the JSON status view. On the metrics test project
(tests/django/metricsproject)."""

from __future__ import annotations

import http.client
import os
import signal
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

try:  # the real-process harness (moving to the package for ``connguard demo``)
    from connguard.demo import harness
except ImportError:  # pragma: no cover - before the move
    import harness  # type: ignore[no-redef]

pytestmark = pytest.mark.django

HERE = Path(__file__).resolve().parent
GUNICORN_CONF = HERE / "metricsproject" / "gunicorn_conf.py"
WORKERS = 3
MAX_SIZE = 2
REQUESTS = 240


def scrape(base_url: str) -> dict[str, float]:
    """connguard samples for pool "default" from /connguard/metrics."""
    conn = http.client.HTTPConnection("127.0.0.1", int(base_url.rsplit(":", 1)[1]), timeout=10)
    try:
        conn.request("GET", "/connguard/metrics")
        response = conn.getresponse()
        body = response.read().decode()
        assert response.status == 200, body
    finally:
        conn.close()
    found = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name.startswith("connguard_") and sample.labels.get("pool") == "default":
                found[sample.name] = sample.value
    return found


def wait_for(base_url: str, condition: Any, timeout: float = 15.0) -> dict[str, float]:
    """Scrape until ``condition(samples)`` holds (workers publish every 0.2 s)."""
    deadline = time.monotonic() + timeout
    while True:
        found = scrape(base_url)
        if condition(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def project_env(h: Any, mpdir: str, settings: dict[str, Any]) -> dict[str, str]:
    """The harness's environment, pointed at the metrics project, multiprocess mode on."""
    env = dict(h.env(settings))
    env.update(
        DJANGO_SETTINGS_MODULE="metricsproject.settings",
        PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
        PROMETHEUS_MULTIPROC_DIR=mpdir,
        CONNGUARD_METRICS_INTERVAL="0.2",
    )
    return env


def test_metrics_sum_over_gunicorn_workers(pg_server: Any) -> None:
    with (
        harness.Harness(pg_server, "postgres") as h,
        tempfile.TemporaryDirectory(prefix="cg-prom-") as mpdir,
    ):
        env = project_env(
            h,
            mpdir,
            {"ENGINE": harness.CONNGUARD_ENGINE, "OPTIONS": {"pool": {"max_size": MAX_SIZE}}},
        )
        srv = h.gunicorn(
            env, workers=WORKERS, app="metricsproject.wsgi:application", config=GUNICORN_CONF
        )

        def one(_: int) -> int | None:
            status, data, _err = harness.http_get(srv.base_url + "/query", timeout=10)
            return data["pid"] if status == 200 else None

        with ThreadPoolExecutor(max_workers=6) as pool:
            pids = list(pool.map(one, range(REQUESTS)))
        assert None not in pids, h.logs()
        served_by = set(pids)
        assert len(served_by) >= 2, "the load should reach several workers"

        # counters: the sum over the workers is every request served (one checkout each)
        found = wait_for(srv.base_url, lambda s: s.get("connguard_checkouts_total") == REQUESTS)
        assert found["connguard_checkouts_total"] == REQUESTS, h.logs()
        assert found["connguard_requests_errors_total"] == 0
        # gauges (livesum): each worker that served holds a pool of max_size 2
        found = wait_for(
            srv.base_url, lambda s: s.get("connguard_pool_max") == MAX_SIZE * len(served_by)
        )
        assert found["connguard_pool_max"] == MAX_SIZE * len(served_by)
        assert found["connguard_pool_in_use"] == 0
        assert 1 <= found["connguard_connections_opened_total"] <= MAX_SIZE * len(served_by)
        assert found["connguard_breaker_open"] == 0

        # the JSON status view: the answering worker, its pool, breaker closed
        status, report, _ = harness.http_get(srv.base_url + "/connguard/status")
        assert status == 200 and report["healthy"] is True
        assert isinstance(report["pid"], int)
        for pool in report["pools"]:
            assert (pool["name"], pool["breaker"], pool["last_error"]) == (
                "default",
                "closed",
                None,
            )
            assert pool["stats"]["pool_max"] == MAX_SIZE

        # a worker dies: its counts stay in the sum, its gauges leave with it (child_exit)
        victim = sorted(served_by)[0]
        os.kill(victim, signal.SIGKILL)
        found = wait_for(
            srv.base_url,
            lambda s: s.get("connguard_pool_max") == MAX_SIZE * (len(served_by) - 1),
        )
        assert found["connguard_pool_max"] == MAX_SIZE * (len(served_by) - 1), h.logs()
        assert found["connguard_checkouts_total"] == REQUESTS


def test_metrics_sum_over_uvicorn_workers(pg_server: Any) -> None:
    """uvicorn spawns its workers (no fork, no hooks): each starts publishing after its first
    request; whichever answers the scrape reads them all."""
    with (
        harness.Harness(pg_server, "postgres") as h,
        tempfile.TemporaryDirectory(prefix="cg-prom-") as mpdir,
    ):
        env = project_env(h, mpdir, {"ENGINE": harness.CONNGUARD_ENGINE})
        srv = h.uvicorn(env, workers=2, app="metricsproject.asgi:application")
        requests = 60
        with ThreadPoolExecutor(max_workers=4) as pool:
            statuses = list(
                pool.map(lambda _: harness.http_get(srv.base_url + "/query")[0], range(requests))
            )
        assert statuses == [200] * requests, h.logs()
        found = wait_for(srv.base_url, lambda s: s.get("connguard_checkouts_total") == requests)
        assert found["connguard_checkouts_total"] == requests, h.logs()
        assert found["connguard_requests_errors_total"] == 0
