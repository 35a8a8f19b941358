"""The databases ``connguard demo`` runs on (``--database``): for each, the server it starts
(or the one given with ``--dsn``), its scenarios with their labels, the two engines compared,
what the connguard run sets besides ENGINE, and what must be installed."""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from connguard.demo.report import MARIADB_SCENARIOS, SCENARIOS

NEEDED = ("django", "gunicorn")
INSTALL = "pip install 'django-connguard[demo]'"


class DemoUnavailable(Exception):
    """The demo's server cannot be had here; the message says why and what to install."""


class ExternalServer:
    """``--dsn``: a server the demo does not own (no restart, no settings, no terminate)."""

    def __init__(self, dsn: str) -> None:
        from connguard.demo.targets.postgresql import parse_conninfo

        self.params = {k: v for k, v in parse_conninfo(dsn).items() if k != "dbname"}
        self.host = self.params.get("host", "localhost")
        self.port = int(self.params.get("port", 5432))
        self.user = self.params.get("user", os.environ.get("USER", "postgres"))

    def conninfo(self, dbname: str = "postgres", **extra: object) -> str:
        from connguard.demo.targets.postgresql import make_conninfo

        return make_conninfo(**{**self.params, "dbname": dbname, **extra})

    def describe(self) -> str:
        return f"{self.host}:{self.port} (given with --dsn)"


def _postgres_server() -> Any:
    from connguard.testing.server import PostgresServer

    return PostgresServer()


def _postgres_where(server: Any) -> str:
    return (
        f"PostgreSQL {server.major_version} on {server.host}:{server.port} "
        f"(a throwaway cluster in {server.base_dir}, removed at exit)"
    )


def _mariadb_server() -> Any:
    from connguard.testing.mariadb import MariaDBServer

    return MariaDBServer()


def _mariadb_where(server: Any) -> str:
    version = str(server.get_global("version")).split("-")[0]
    return (
        f"MariaDB {version} on {server.host}:{server.port} "
        f"(a throwaway server in {server.base_dir}, removed at exit)"
    )


@dataclass(frozen=True)
class DemoDatabase:
    """One ``--database`` choice."""

    name: str
    label: str
    #: the scenarios it runs, in order, with the label shown in the output
    scenarios: dict[str, str]
    #: (heading, ENGINE): stock Django first, then connguard
    engines: tuple[tuple[str, str], tuple[str, str]]
    #: modules Django's backend needs: (shown name, distributions, importable modules)
    drivers: tuple[tuple[str, tuple[str, ...], tuple[str, ...]], ...]
    #: a new server of the rig (not started); raises ServerError when it cannot be had
    new_server: Callable[[], Any]
    #: the line that says which server runs where
    describe: Callable[[Any], str]
    #: "cluster" (PostgreSQL's word) or "server"
    server_noun: str
    #: what the connguard run sets besides ENGINE: in the flood, 2 gunicorn workers x
    #: max_size 8 stay under the server's 20 connections (the harness's monitor holds one)
    connguard_settings: dict[str, dict[str, Any]] = field(default_factory=lambda: {
        "flood_gthread": {"OPTIONS": {"pool": {"max_size": 8, "timeout": 25}}},
    })
    #: whether --dsn can name a server of this database
    dsn: bool = False
    #: how to install what it needs
    install: str = INSTALL

    def make_server(self) -> Any:
        """A new server, not started yet; :class:`DemoUnavailable` says why there is none."""
        from connguard.testing.server import ServerError

        try:
            return self.new_server()
        except ServerError as exc:  # no server binaries or driver: the message says how
            raise DemoUnavailable(f"cannot start {self.label}: {exc}") from exc

    def driver(self) -> tuple[str, tuple[str, ...]] | None:
        """The first driver installed: (shown name, distributions), or None."""
        for shown, dists, modules in self.drivers:
            if any(importlib.util.find_spec(m) is not None for m in modules):
                return shown, dists
        return None

    def missing(self) -> list[str]:
        missing = [m for m in NEEDED if importlib.util.find_spec(m) is None]
        if self.driver() is None:
            missing.append(self.drivers[0][0])
        return missing

    def versions(self) -> str:
        """Django, the driver Django will use and gunicorn."""
        driver = self.driver() or (self.drivers[0][0], self.drivers[0][1])
        parts: list[str] = []
        for name, dists in (("Django", ("django",)), driver, ("gunicorn", ("gunicorn",))):
            for dist in dists:
                with contextlib.suppress(importlib.metadata.PackageNotFoundError):
                    parts.append(f"{name} {importlib.metadata.version(dist)}")
                    break
        return ", ".join(parts)

    def connguard_missing(self) -> str | None:
        """Why the connguard engine cannot run (its backend module is absent), or None."""
        engine = self.engines[1][1]
        if importlib.util.find_spec(engine) is None:
            return f"{engine} is not installed"
        return None


POSTGRESQL = DemoDatabase(
    name="postgresql",
    label="PostgreSQL",
    scenarios=SCENARIOS,
    engines=(("stock", "django.db.backends.postgresql"),
             ("connguard", "connguard.backends.postgresql")),
    drivers=(("psycopg", ("psycopg", "psycopg-binary"), ("psycopg",)),
             ("psycopg2", ("psycopg2", "psycopg2-binary"), ("psycopg2",))),
    new_server=_postgres_server,
    describe=_postgres_where,
    server_noun="cluster",
    dsn=True,
)
MARIADB = DemoDatabase(
    name="mariadb",
    label="MariaDB",
    scenarios=MARIADB_SCENARIOS,
    engines=(("stock", "django.db.backends.mysql"), ("connguard", "connguard.backends.mysql")),
    drivers=(("mysqlclient", ("mysqlclient",), ("MySQLdb",)),),
    install="pip install 'django-connguard[demo,mysql]' (mysqlclient builds with gcc, "
    "pkg-config and libmariadb-dev; the server binaries: apt-get install mariadb-server)",
    new_server=_mariadb_server,
    describe=_mariadb_where,
    server_noun="server",
)
DATABASES: dict[str, DemoDatabase] = {db.name: db for db in (POSTGRESQL, MARIADB)}
