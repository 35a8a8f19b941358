"""Fixtures for the real-process Django tests (tests/django).

``django_pg`` is the PostgreSQL server the scenarios run against:

* the rig's session fixture ``pg_server`` (``connguard.testing.pytest_plugin``) whenever it is
  available — the normal case;
* otherwise (SHIM, only while the rig is not in the tree / not loaded) a throwaway cluster
  started here with ``initdb``/``pg_ctl`` on a free loopback port.  It implements just the
  subset of ``PostgresServer`` that harness.py uses and never touches a system service.

``django_db`` creates a fresh database per test on that server and drops it afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import harness
import pytest


def _find_pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    root = Path("/usr/lib/postgresql")
    if root.is_dir():
        for version in sorted(root.iterdir(), reverse=True):
            candidate = version / "bin" / name
            if candidate.exists():
                return str(candidate)
    return None


class ShimPostgresServer:
    """Minimal stand-in for ``connguard.testing.server.PostgresServer`` (SHIM).

    Only what harness.py needs: ``host``, ``port``, ``conninfo()``, ``restart(mode)``,
    ``stop()``, ``start()``, ``set_config(restart=False, **gucs)``, ``reset_config()``,
    ``execute(sql)``, ``create_database(name)``, ``drop_database(name)``.
    """

    def __init__(self, basedir: Path) -> None:
        self.initdb = _find_pg_bin("initdb")
        self.pg_ctl = _find_pg_bin("pg_ctl")
        if not self.initdb or not self.pg_ctl:
            raise RuntimeError("initdb/pg_ctl not found")
        self.basedir = basedir
        self.datadir = basedir / "data"
        self.sockdir = basedir / "sock"
        self.logfile = basedir / "postgres.log"
        self.host = "127.0.0.1"
        self.user = "postgres"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._run_as: list[str] = []
        if os.geteuid() == 0:  # postgres refuses to run as root
            self._run_as = ["runuser", "-u", "postgres", "--"]
        self.sockdir.mkdir(parents=True)
        if self._run_as:
            shutil.chown(basedir, "postgres")
            shutil.chown(self.sockdir, "postgres")
        self._cmd([self.initdb, "-D", str(self.datadir), "-U", "postgres", "-A", "trust",
                   "--no-sync", "-E", "UTF8"])
        with open(self.datadir / "postgresql.conf", "a") as conf:
            conf.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                f"unix_socket_directories = '{self.sockdir}'\nfsync = off\n"
                "synchronous_commit = off\nfull_page_writes = off\nmax_connections = 200\n"
                "include_if_exists = 'connguard_test.conf'\n"
            )
        self.start()

    def _cmd(self, argv: list[str], timeout: float = 60) -> None:
        subprocess.run(self._run_as + argv, check=True, timeout=timeout,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def conninfo(self, dbname: str = "postgres") -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={dbname}"

    def start(self) -> None:
        self._cmd([self.pg_ctl, "-D", str(self.datadir), "-l", str(self.logfile), "-w",
                   "-t", "30", "start"])

    def stop(self, mode: str = "fast") -> None:
        self._cmd([self.pg_ctl, "-D", str(self.datadir), "-m", mode, "-w", "-t", "30", "stop"])

    def restart(self, mode: str = "fast") -> None:
        self._cmd([self.pg_ctl, "-D", str(self.datadir), "-m", mode, "-w", "-t", "30",
                   "-l", str(self.logfile), "restart"])

    def _write_conf(self, gucs: dict[str, Any]) -> None:
        path = self.datadir / "connguard_test.conf"
        path.write_text("".join(f"{k} = '{v}'\n" for k, v in gucs.items()))
        if self._run_as:
            shutil.chown(path, "postgres")

    def set_config(self, restart: bool = False, **gucs: Any) -> None:
        self._gucs = {**getattr(self, "_gucs", {}), **gucs}
        self._write_conf(self._gucs)
        if restart:
            self.restart()
        else:
            self.execute("SELECT pg_reload_conf()")

    def reset_config(self) -> None:
        self._gucs = {}
        self._write_conf({})
        self.restart()

    def execute(self, sql: str, dbname: str = "postgres") -> list[tuple]:
        import psycopg

        with psycopg.connect(self.conninfo(dbname), autocommit=True) as conn:
            cur = conn.execute(sql)
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str) -> None:
        self.execute(f'CREATE DATABASE "{name}"')

    def drop_database(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        shutil.rmtree(self.basedir, ignore_errors=True)


@pytest.fixture(scope="session")
def django_pg(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The rig's ``pg_server`` when available, else the local SHIM cluster."""
    try:
        server = request.getfixturevalue("pg_server")
    except pytest.FixtureLookupError:
        server = None
    if server is not None:
        yield server
        return
    try:
        shim = ShimPostgresServer(Path(tempfile.mkdtemp(prefix="cg-django-pg-")))
    except Exception as exc:  # pragma: no cover - no PostgreSQL binaries
        pytest.skip(f"no pg_server fixture and no local PostgreSQL binaries: {exc}")
    try:
        yield shim
    finally:
        shim.close()


@pytest.fixture
def django_db(django_pg: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database on ``django_pg`` for one test (dropped afterwards)."""
    name = "cg_dj_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:30]
    name = f"{name}_{uuid.uuid4().hex[:6]}"
    harness.create_database(django_pg, name)
    try:
        yield name
    finally:
        deadline = time.monotonic() + 10
        harness.drop_database(django_pg, name, deadline=deadline)
