"""The Prometheus endpoint scraped from a real multi-worker gunicorn, and uvicorn, in
prometheus_client's multiprocess mode; the JSON status view. On the metrics test project
(tests/django/metricsproject), served on a free loopback port; every server is started in
a session of its own and stopped by its pid (process group)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from connguard import top
from connguard.testing.server import PostgresServer

pytestmark = pytest.mark.django

HERE = Path(__file__).resolve().parent
GUNICORN_CONF = HERE / "metricsproject" / "gunicorn_conf.py"
WORKERS = 3
MAX_SIZE = 2
REQUESTS = 240


def get(port: int, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Connection": "close"})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


@contextlib.contextmanager
def serve(argv: list[str], env: dict[str, str], port: int, logdir: Path) -> Iterator[None]:
    """Run a server until /health answers; stop its process group on the way out."""
    log = (logdir / "server.log").open("wb")
    proc = subprocess.Popen(
        argv, env=env, cwd=logdir, stdin=subprocess.DEVNULL, stdout=log,
        stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError):
                if get(port, "/health")[0] == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"{argv[2]} did not start:\n{(logdir / 'server.log').read_text()}")
            time.sleep(0.1)
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # workers left behind by a dead master
        log.close()


@pytest.fixture
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="cg-metrics-") as path:
        (Path(path) / "prometheus").mkdir()
        yield Path(path)


def project_env(server: PostgresServer, workdir: Path, options: dict[str, Any]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CGT_")}
    env.update(
        DJANGO_SETTINGS_MODULE="metricsproject.settings",
        PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
        PROMETHEUS_MULTIPROC_DIR=str(workdir / "prometheus"),
        CONNGUARD_METRICS_INTERVAL="0.2",
        CGT_DB_ENGINE="connguard.backends.postgresql",
        CGT_DB_HOST=server.host,
        CGT_DB_PORT=str(server.port),
        CGT_DB_USER=server.user,
        CGT_DB_NAME="postgres",
        CGT_DB_OPTIONS=json.dumps(options),
    )
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(port: int) -> dict[str, float]:
    """connguard samples for pool "default" from /connguard/metrics."""
    status, body = get(port, "/connguard/metrics")
    assert status == 200, body
    found = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name.startswith("connguard_") and sample.labels.get("pool") == "default":
                found[sample.name] = sample.value
    return found


def wait_for(port: int, condition: Any, timeout: float = 15.0) -> dict[str, float]:
    """Scrape until ``condition(samples)`` holds (workers publish every 0.2 s)."""
    deadline = time.monotonic() + timeout
    while True:
        found = scrape(port)
        if condition(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def load(port: int, n: int, concurrency: int) -> list[int | None]:
    """GET /query n times; the pid of the worker that served each (None: failed)."""

    def one(_: int) -> int | None:
        try:
            status, body = get(port, "/query")
        except OSError:
            return None
        return int(json.loads(body)["pid"]) if status == 200 else None

    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(one, range(n)))


def test_metrics_sum_over_gunicorn_workers(pg_server: PostgresServer, workdir: Path) -> None:
    port = free_port()
    env = project_env(pg_server, workdir, {"pool": {"max_size": MAX_SIZE}})
    argv = [
        sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers",
        str(WORKERS), "--config", str(GUNICORN_CONF), "--graceful-timeout", "2",
        "--log-level", "warning", "metricsproject.wsgi:application",
    ]  # fmt: skip
    with serve(argv, env, port, workdir):
        pids = load(port, REQUESTS, concurrency=6)
        assert None not in pids, (workdir / "server.log").read_text()
        served_by = set(pids)
        assert len(served_by) >= 2, "the load should reach several workers"

        # counters: the sum over the workers is every request served (one checkout each)
        found = wait_for(port, lambda s: s.get("connguard_checkouts_total") == REQUESTS)
        assert found["connguard_checkouts_total"] == REQUESTS
        assert found["connguard_requests_errors_total"] == 0
        # gauges (livesum): each worker that served holds a pool of max_size 2
        found = wait_for(port, lambda s: s.get("connguard_pool_max") == MAX_SIZE * len(served_by))
        assert found["connguard_pool_max"] == MAX_SIZE * len(served_by)
        assert found["connguard_pool_in_use"] == 0
        assert 1 <= found["connguard_connections_opened_total"] <= MAX_SIZE * len(served_by)
        assert found["connguard_breaker_open"] == 0

        # `connguard stats --metrics-url` reads the same endpoint into its pool table
        (row,) = top.scraped_pools(f"http://127.0.0.1:{port}/connguard/metrics")
        assert (row["name"], row["pid"], row["checkouts"], row["breaker"]) == (
            "default",
            "all",
            REQUESTS,
            "closed",
        )

        # the JSON status view: the answering worker, its pool, breaker closed
        status, body = get(port, "/connguard/status")
        report = json.loads(body)
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
            port, lambda s: s.get("connguard_pool_max") == MAX_SIZE * (len(served_by) - 1)
        )
        assert found["connguard_pool_max"] == MAX_SIZE * (len(served_by) - 1)
        assert found["connguard_checkouts_total"] == REQUESTS


def test_metrics_sum_over_uvicorn_workers(pg_server: PostgresServer, workdir: Path) -> None:
    """uvicorn spawns its workers (no fork, no hooks): each starts publishing after its first
    request; whichever answers the scrape reads them all."""
    port = free_port()
    env = project_env(pg_server, workdir, {})
    argv = [
        sys.executable, "-m", "uvicorn", "metricsproject.asgi:application", "--host",
        "127.0.0.1", "--port", str(port), "--workers", "2", "--log-level", "warning",
        "--no-access-log", "--timeout-graceful-shutdown", "2",
    ]  # fmt: skip
    with serve(argv, env, port, workdir):
        requests = 60
        pids = load(port, requests, concurrency=4)
        assert None not in pids, (workdir / "server.log").read_text()
        found = wait_for(port, lambda s: s.get("connguard_checkouts_total") == requests)
        assert found["connguard_checkouts_total"] == requests
        assert found["connguard_requests_errors_total"] == 0
