"""The runner: :class:`Harness` (processes + database for one scenario) and
:func:`run_scenario`."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from connguard.demo import registry
from connguard.demo.base import (
    ASGI_APP,
    CELERY_APP,
    DEFAULT_DB_SETTINGS,
    N_ITEMS,
    PYTHON,
    WSGI_APP,
    HarnessError,
    ScenarioUnsupported,
)
from connguard.demo.load import LoadResult, mixed_paths, run_load
from connguard.demo.processes import (
    CeleryWorker,
    HttpServer,
    ManagedProcess,
    _celery_config,
    django_env,
    free_port,
    run_manage,
)
from connguard.demo.registry import unavailable_here
from connguard.demo.results import Result
from connguard.demo.targets import create_database, drop_database, server_target
from connguard.demo.targets.base import ConnectionMonitor
from connguard.demo.targets.postgresql import DbTarget, set_database_config

# --------------------------------------------------------------------------------------
# Harness


class Harness:
    """Processes + database for one scenario/test; stops every process on exit.

    Logs go to ``log_dir`` (default: a temp dir removed on exit unless ``CG_KEEP_LOGS`` is set).

    ``with Harness(server, "dbname") as h: h.prepare(); srv = h.gunicorn(h.env()) ...``

    ``server`` is the rig's ``PostgresServer`` or ``MariaDBServer`` (or a
    :class:`~connguard.demo.targets.base.ServerTarget`); ``h.db`` drives it in its own SQL.
    """

    def __init__(self, server: Any, database: str, *, log_dir: Path | None = None,
                 quick: bool = False):
        self.server = server
        self.db = server_target(server)
        #: smaller loads and shorter sleeps in the scenarios that support it (demo --quick)
        self.quick = quick
        self.target = self.db.target(database)
        self._own_log_dir = log_dir is None
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="cg-django-"))
        self.processes: list[ManagedProcess] = []
        #: every project connection's application_name starts with this (see terminate())
        self.app_name = f"cgt{uuid.uuid4().hex[:8]}"

    # environment / database -----------------------------------------------------------
    def env(self, settings: Mapping[str, Any] | None = None, **flags: Any) -> dict[str, str]:
        return django_env(self.target, settings, app_name=self.app_name, **flags)

    def size(self, n: int) -> int:
        """A request count: ``n``, or 40 % of it (at least 8) in quick mode."""
        return max(8, n * 2 // 5) if self.quick else n

    def terminate(self) -> int:
        """End every server session of the project's processes (``pg_terminate_backend``,
        ``KILL CONNECTION``); returns how many."""
        return self.db.terminate(self.target.dbname, self.app_name)

    def migrate(self, settings: Mapping[str, Any] | None = None, timeout: float = 120,
                database: str = "default", **flags: Any) -> None:
        """``manage.py migrate`` against the target database (no fork-bug flags)."""
        run_manage(self.env(settings, **flags), "migrate", "--noinput", "-v", "0",
                   "--database", database, timeout=timeout, cwd=self.log_dir)

    def seed(self, n: int = N_ITEMS) -> None:
        self.db.seed(self.target, n)

    def is_migrated(self) -> bool:
        """The target database has the project's latest migration (e.g. a copy of a
        :func:`prepare_template` database): ``prepare()`` can skip ``migrate``."""
        try:
            rows = self.target.execute(
                "SELECT 1 FROM django_migrations WHERE app = 'testapp' AND name = %s",
                [latest_migration()])
        except Exception:  # no django_migrations table yet
            return False
        return bool(rows)

    def prepare(self, settings: Mapping[str, Any] | None = None, n_items: int = N_ITEMS,
                **flags: Any) -> None:
        """Migrate and seed the target database (and ``other``, with ``DB_OTHER_NAME``)."""
        # Migrations always run on the stock engine: the scenario is about the servers.
        stock = {**(settings or {}), "ENGINE": self.db.stock_engine, "OPTIONS": {}}
        if not self.is_migrated():
            self.migrate(stock, **flags)
        if flags.get("DB_OTHER_NAME"):
            self.migrate(stock, database="other", **flags)
        self.seed(n_items)

    @contextlib.contextmanager
    def other_database(self) -> Iterator[str]:
        """A second database next to the target, for the ``other`` alias (dropped after)."""
        name = f"{self.target.dbname[:55]}_o"
        self.db.create_database(name)
        try:
            yield name
        finally:
            self.db.drop_database(name)

    def set_database_config(self, **gucs: Any) -> None:
        """PostgreSQL settings for sessions on the target database (``ALTER DATABASE``)."""
        assert isinstance(self.target, DbTarget), "ALTER DATABASE ... SET is PostgreSQL's"
        set_database_config(self.target, **gucs)

    def set_idle_timeout(self, seconds: int) -> None:
        """The server ends sessions idle for ``seconds`` (idle_session_timeout, wait_timeout)."""
        self.db.set_idle_timeout(self.target, seconds)

    def lost_writes(self, tokens: Sequence[str], table: str = "cg_write") -> int:
        return self.db.lost_writes(self.target, tokens, table)

    def monitor(self, dbname: str | None = None, **kwargs: Any) -> ConnectionMonitor:
        return ConnectionMonitor(self.db, dbname or self.target.dbname, **kwargs)

    def connections(self) -> int:
        return self.db.connections(self.target.dbname)

    # processes ---------------------------------------------------------------------------
    def _track(self, proc: ManagedProcess) -> ManagedProcess:
        self.processes.append(proc)
        return proc

    def gunicorn(self, env: Mapping[str, str], *, worker_class: str = "sync", workers: int = 2,
                 threads: int = 1, preload: bool = False, worker_connections: int | None = None,
                 timeout: int = 30, config: str | Path | None = None,
                 app: str = WSGI_APP, extra_args: Sequence[str] = (),
                 ready_timeout: float = 30.0) -> HttpServer:
        """Start gunicorn on a free loopback port and wait for ``/health``."""
        port = free_port()
        argv = [PYTHON, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}",
                "--workers", str(workers), "--worker-class", worker_class,
                "--timeout", str(timeout), "--graceful-timeout", "2",
                "--backlog", "512", "--log-level", "warning", "--error-logfile", "-"]
        if worker_class == "gthread":
            argv += ["--threads", str(threads)]
        if worker_connections is not None:
            argv += ["--worker-connections", str(worker_connections)]
        if preload:
            argv.append("--preload")
        if config is not None:
            argv += ["--config", str(config)]
        argv += [*extra_args, app]
        srv = HttpServer(f"gunicorn-{worker_class}", argv, port=port, env=env,
                         log_dir=self.log_dir)
        self._track(srv)
        srv.wait_ready(timeout=ready_timeout)
        return srv

    def uvicorn(self, env: Mapping[str, str], *, workers: int = 1,
                app: str = ASGI_APP, extra_args: Sequence[str] = (),
                ready_timeout: float = 30.0) -> HttpServer:
        """Start uvicorn (ASGI) on a free loopback port and wait for ``/health``."""
        port = free_port()
        argv = [PYTHON, "-m", "uvicorn", app, "--host", "127.0.0.1", "--port", str(port),
                "--workers", str(workers), "--log-level", "warning", "--no-access-log",
                "--timeout-graceful-shutdown", "2", "--backlog", "512", *extra_args]
        srv = HttpServer("uvicorn", argv, port=port, env=env, log_dir=self.log_dir)
        self._track(srv)
        srv.wait_ready(timeout=ready_timeout)
        return srv

    def celery_worker(self, env: Mapping[str, str], *, concurrency: int = 2,
                      pool: str = "prefork", ready_timeout: float = 60.0) -> CeleryWorker:
        """Start a Celery worker on a fresh filesystem broker; ready once a task round-trips.

        ``env`` may carry ``CGT_CELERY_DIR``; otherwise one is made under the log dir.
        """
        env = dict(env)
        celery_dir = Path(env.get("CGT_CELERY_DIR") or self.log_dir / f"celery-{uuid.uuid4().hex[:6]}")
        env["CGT_CELERY_DIR"] = str(celery_dir)
        _celery_config(celery_dir)  # creates queue/processed/results folders
        argv = [PYTHON, "-m", "celery", "-A", CELERY_APP, "worker",
                "-P", pool, "-c", str(concurrency), "--loglevel", "WARNING",
                "--without-gossip", "--without-mingle", "--without-heartbeat"]
        worker = CeleryWorker("celery", argv, celery_dir=celery_dir, env=env,
                              log_dir=self.log_dir, stop_signal=signal.SIGQUIT)
        self._track(worker)
        worker.wait_ready(timeout=ready_timeout)
        return worker

    def manage(self, env: Mapping[str, str], *args: str, timeout: float = 120.0,
               check: bool = False) -> subprocess.CompletedProcess[str]:
        return run_manage(env, *args, timeout=timeout, check=check, cwd=self.log_dir)

    def load(self, server: HttpServer | str, paths: Sequence[str], **kwargs: Any) -> LoadResult:
        base = server if isinstance(server, str) else server.base_url
        return run_load(base, paths, **kwargs)

    def warm_up(self, server: HttpServer, result: Result, n: int, *, concurrency: int) -> None:
        """``n`` mixed requests that open the connections a fault then hits (counted apart,
        in ``result.details["warmup"]``)."""
        warm = self.load(server, mixed_paths(self.size(n)), concurrency=concurrency,
                         timeout=10, deadline=15)
        result.details["warmup"] = {"ok": warm.ok, "errors": warm.errors}

    def measure(self, server: HttpServer, paths: Sequence[str], result: Result,
                **load_kwargs: Any) -> LoadResult:
        """Send ``paths`` (see :func:`run_load`) while the connections are monitored; adds the
        requests, the peak and the lost writes to ``result``."""
        with self.monitor() as mon:
            load = self.load(server, paths, **load_kwargs)
        result.add_load(load)
        result.peak_server_connections = mon.peak
        result.lost = self.lost_writes(load.acked_tokens)
        return load

    def stop_all(self) -> None:
        for proc in reversed(self.processes):
            with contextlib.suppress(Exception):
                proc.stop()
        self.processes.clear()

    def logs(self, limit: int = 3000) -> str:
        return "\n".join(f"--- {p.name} ({p.log_path}) ---\n{p.log_text(limit)}"
                         for p in self.processes)

    def __enter__(self) -> Harness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
        self.db.reset()
        if self._own_log_dir and not os.environ.get("CG_KEEP_LOGS"):
            shutil.rmtree(self.log_dir, ignore_errors=True)



def run_scenario(name: str, engine_settings: Mapping[str, Any] | None, server: Any, *,
                 database: str | None = None, log_dir: Path | None = None,
                 template: str | None = None, quick: bool = False) -> Result:
    """Run scenario ``name`` against ``server`` and return its :class:`Result`.

    ``engine_settings`` overlays ``DATABASES["default"]`` keys (ENGINE, CONN_MAX_AGE,
    CONN_HEALTH_CHECKS, OPTIONS — OPTIONS replaces the scenario's whole) on the scenario's
    defaults (which reproduce the failure on the stock backend).  Without ``database`` a
    fresh one is created on the server (a copy of ``template``, when given: see
    :func:`prepare_template`) and dropped afterwards.  ``quick`` trims request counts and
    the flood's request duration (``connguard demo --quick``).  Raises
    :class:`ScenarioUnsupported` when the scenario cannot run here.
    """
    spec = registry.get(name)
    stock = {"ENGINE": server_target(server).stock_engine}
    settings: dict[str, Any] = {**DEFAULT_DB_SETTINGS, **stock, **spec.defaults,
                                **(engine_settings or {})}
    reason = unavailable_here(name) or (spec.requires(settings) if spec.requires else None)
    if reason:
        raise ScenarioUnsupported(f"{name}: {reason}")
    created = database is None
    if database is None:
        database = f"cg_{name}_{uuid.uuid4().hex[:8]}"[:63]
        create_database(server, database, template=template)
    result = Result(scenario=name, engine=str(settings["ENGINE"]))
    result.details["settings"] = settings
    started = time.monotonic()
    try:
        with Harness(server, database, log_dir=log_dir, quick=quick) as h:
            if log_dir is not None or os.environ.get("CG_KEEP_LOGS"):
                result.details["log_dir"] = str(h.log_dir)
            try:
                spec.fn(h, settings, result)
            except HarnessError:
                raise
            finally:
                result.details["logs_tail"] = h.logs(1500)
    finally:
        result.duration = time.monotonic() - started
        if created:
            drop_database(server, database)
    return result


def latest_migration() -> str:
    """The name of the project app's last migration (``0002_event``)."""
    folder = Path(__file__).resolve().parent / "project" / "app" / "migrations"
    return max(p.stem for p in folder.glob("[0-9][0-9][0-9][0-9]_*.py"))


def prepare_template(server: Any, name: str, *, log_dir: Path | None = None) -> str:
    """Create database ``name``, migrated and seeded: scenarios given ``template=name`` start
    from a copy of it (``CREATE DATABASE ... TEMPLATE``) instead of migrating their own.
    Nothing may stay connected to it (the harness closes its own connections)."""
    create_database(server, name)
    with Harness(server, name, log_dir=log_dir) as h:
        h.prepare()
    return name


@contextlib.contextmanager
def scenario_database(server: Any, prefix: str = "cg_demo",
                      template: str | None = None) -> Iterator[str]:
    """A fresh database for ad-hoc use, a copy of ``template`` if given (dropped afterwards)."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    create_database(server, name, template=template)
    try:
        yield name
    finally:
        drop_database(server, name)
