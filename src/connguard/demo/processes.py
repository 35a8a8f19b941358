"""The processes a scenario runs: the project's environment, managed subprocesses (HTTP
servers, Celery workers) stopped by process group, and ``manage.py`` commands."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from connguard.demo.base import (
    DEFAULT_DB_SETTINGS,
    PROJECT,
    PYTHON,
    SETTINGS_MODULE,
    TASK_ROW,
    HarnessError,
)
from connguard.demo.load import http_get
from connguard.demo.targets.base import Target

# --------------------------------------------------------------------------------------
# Environment and processes


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _import_root() -> str | None:
    """The directory this ``connguard`` package was imported from, when a fresh interpreter
    would not look there by itself (a source tree on ``sys.path``, not an installed copy)."""
    import site

    import connguard

    root = str(Path(connguard.__file__).resolve().parent.parent)
    installed = {str(Path(p).resolve()) for p in site.getsitepackages()}
    with contextlib.suppress(Exception):
        installed.add(str(Path(site.getusersitepackages()).resolve()))
    return None if root in installed else root


def django_env(target: Target, settings: Mapping[str, Any] | None = None, *,
               app_name: str | None = None, **flags: Any) -> dict[str, str]:
    """Environment for a project process.

    ``settings`` holds ``DATABASES["default"]`` keys (ENGINE, CONN_MAX_AGE,
    CONN_HEALTH_CHECKS, DISABLE_SERVER_SIDE_CURSORS, OPTIONS) over :data:`DEFAULT_DB_SETTINGS`, plus ``DRIVER``
    (``"psycopg2"`` makes Django use psycopg2 even where psycopg 3 is installed); ``flags``
    become ``CGT_<NAME>`` variables (QUERY_IN_READY, IMPORT_TIME_QUERY, CELERY_DIR,
    CELERY_DB_REUSE_MAX, ...).  ``None``/``False`` flags are left out.  ``app_name`` starts
    every connection's ``application_name`` (``<app_name>:<alias>:<pid>``, on both engines),
    so that :meth:`Harness.terminate` finds the project's backends.

    The project is imported from the same connguard as this module: its source root is put
    on ``PYTHONPATH`` when it is not an installed package.
    """
    s = {**DEFAULT_DB_SETTINGS, **(settings or {})}
    env = {k: v for k, v in os.environ.items() if not k.startswith("CGT_")}
    for var in ("DJANGO_SETTINGS_MODULE", "PYTHONPATH", "CONNGUARD_APP_NAME"):
        env.pop(var, None)
    pythonpath = [p for p in (_import_root(), os.environ.get("PYTHONPATH")) if p]
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join(pythonpath)
    env["DJANGO_SETTINGS_MODULE"] = SETTINGS_MODULE
    if app_name:
        env["CONNGUARD_APP_NAME"] = app_name
    if s.get("DRIVER"):
        env["CGT_DB_DRIVER"] = str(s["DRIVER"])
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env["CGT_DB_ENGINE"] = str(s["ENGINE"])
    env["CGT_DB_NAME"] = target.dbname
    env["CGT_DB_HOST"] = target.host
    env["CGT_DB_PORT"] = str(target.port)
    env["CGT_DB_USER"] = target.user
    env["CGT_DB_PASSWORD"] = target.password
    max_age = s.get("CONN_MAX_AGE")
    env["CGT_CONN_MAX_AGE"] = "none" if max_age is None else str(int(max_age))
    env["CGT_CONN_HEALTH_CHECKS"] = "1" if s.get("CONN_HEALTH_CHECKS") else "0"
    env["CGT_DISABLE_SERVER_SIDE_CURSORS"] = "1" if s.get("DISABLE_SERVER_SIDE_CURSORS") else "0"
    env["CGT_DB_OPTIONS"] = json.dumps(s.get("OPTIONS") or {})
    for name, value in flags.items():
        if value is None or value is False:
            continue
        env["CGT_" + name.upper()] = "1" if value is True else str(value)
    return env


_LIVE: dict[int, ManagedProcess] = {}
_LIVE_LOCK = threading.Lock()


class ManagedProcess:
    """A subprocess in its own session/process group, output to a log file.

    :meth:`stop` sends SIGTERM to the group (its pid), then SIGKILL after ``timeout``; all
    live instances are stopped at interpreter exit as a last resort.
    """

    def __init__(self, name: str, argv: Sequence[str], *, env: Mapping[str, str],
                 log_dir: Path, cwd: Path | None = None, stop_signal: int = signal.SIGTERM):
        self.name = name
        self.argv = list(argv)
        self.stop_signal = stop_signal
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}-{uuid.uuid4().hex[:6]}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            self.argv, env=dict(env), cwd=str(cwd or log_dir), stdin=subprocess.DEVNULL,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.pid = self.popen.pid
        with _LIVE_LOCK:
            _LIVE[self.pid] = self

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self, limit: int = 6000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-limit:].decode("utf-8", "replace")

    def _signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, sig)

    def stop(self, timeout: float = 8.0) -> int | None:
        if self.popen.poll() is None:
            self._signal_group(self.stop_signal)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.popen.wait(timeout=5)
        # Leftover children of the group (workers orphaned by a dead master).
        self._signal_group(signal.SIGKILL)
        with contextlib.suppress(Exception):
            self._log.close()
        with _LIVE_LOCK:
            _LIVE.pop(self.pid, None)
        return self.popen.returncode

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} pid={self.pid}>"


@atexit.register
def _stop_all_live() -> None:  # pragma: no cover - safety net
    with _LIVE_LOCK:
        live = list(_LIVE.values())
    for proc in live:
        with contextlib.suppress(Exception):
            proc.stop(timeout=3)


class HttpServer(ManagedProcess):
    """A server process listening on ``127.0.0.1:port``."""

    def __init__(self, name: str, argv: Sequence[str], *, port: int, **kwargs: Any):
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        super().__init__(name, argv, **kwargs)

    def wait_ready(self, path: str = "/health", timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not self.alive():
                raise HarnessError(f"{self.name} exited ({self.popen.returncode}):\n"
                                   f"{self.log_text()}")
            status, _, err = http_get(self.base_url + path, timeout=2.0)
            if status == 200:
                return
            last = err or f"HTTP {status}"
            time.sleep(0.1)
        raise HarnessError(f"{self.name} not ready after {timeout}s ({last}):\n{self.log_text()}")


class CeleryWorker(ManagedProcess):
    """A Celery worker plus a Django-free client app on the same filesystem broker."""

    def __init__(self, name: str, argv: Sequence[str], *, celery_dir: Path, **kwargs: Any):
        self.celery_dir = celery_dir
        super().__init__(name, argv, **kwargs)
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = celery_client(self.celery_dir)
        return self._client

    def send(self, task: str, *args: Any) -> Any:
        return self.client.send_task(task, args=list(args))

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Ready once a row task round-trips (also warms a connection)."""
        res = self.send(TASK_ROW, "k0000")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise HarnessError(f"{self.name} exited:\n{self.log_text()}")
            if res.ready():
                return
            time.sleep(0.1)
        raise HarnessError(f"{self.name} not ready after {timeout}s:\n{self.log_text()}")


def celery_client(celery_dir: Path) -> Any:
    """A Celery app (no Django) that publishes to / reads results from ``celery_dir``."""
    from celery import Celery

    app = Celery("connguard-harness-client", set_as_current=False)
    app.conf.update(_celery_config(celery_dir))
    return app


def _celery_config(celery_dir: Path) -> dict[str, Any]:
    """The project's Celery settings (creates the folders), imported without Django."""
    from connguard.demo.project.celery_config import celery_config

    return celery_config(celery_dir)


def run_manage(env: Mapping[str, str], *args: str, timeout: float = 120.0,
               check: bool = True, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``manage.py <args>`` to completion (killed by pid group on timeout)."""
    proc = subprocess.Popen(
        [PYTHON, "-m", f"{PROJECT}.manage", *args], env=dict(env),
        cwd=str(cwd or tempfile.gettempdir()),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate(timeout=10)
        raise HarnessError(f"manage.py {' '.join(args)} timed out after {timeout}s:\n{err}") \
            from None
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # forked leftovers, if any
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    if check and proc.returncode != 0:
        raise HarnessError(f"manage.py {' '.join(args)} failed ({proc.returncode}):\n{err}")
    return result
