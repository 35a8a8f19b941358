"""A throwaway MariaDB server for tests: ``MariaDBServer``.

The server lives in a fresh temporary directory: ``mariadb-install-db`` creates its data
directory, ``mariadbd`` runs as our own child process, listens on a free port of 127.0.0.1
and on a private unix socket, and reads only the option file the rig writes
(``--defaults-file`` is always the first argument, so no ``/etc/mysql`` file and no
``~/.my.cnf`` is read). A MariaDB service that may run on the machine (port 3306,
``/run/mysqld``) is never touched: the rig uses none of its files, sockets or ports.

Accounts: ``root`` (no password, every privilege) for the rig's own SQL, reached through the
private socket; ``connguard`` (no password, from any host, database privileges but neither
``SUPER`` nor ``CONNECTION ADMIN`` nor ``READ_ONLY ADMIN``) for the code under test, so that
``max_connections``, ``read_only`` and ``KILL`` apply to it as to an application, and the
rig's root still gets MariaDB's one extra connection when the application has taken them all.

Faults are made for real: :meth:`MariaDBServer.restart`, :meth:`~MariaDBServer.stop`,
:meth:`~MariaDBServer.kill` (SIGKILL), :meth:`~MariaDBServer.kill_connections`
(``KILL CONNECTION``) and :meth:`~MariaDBServer.set_global` (``SET GLOBAL``, e.g.
``wait_timeout`` or ``max_connections``, undone by :meth:`~MariaDBServer.reset_globals`).

``mariadbd`` refuses to run as root: under euid 0 the server runs as the ``mysql`` system
user when it exists, else as ``nobody``. As with :class:`~connguard.testing.server.PostgresServer`,
no server is left behind: :meth:`cleanup` runs from the context manager, from a
``weakref.finalize`` and, should the test process be killed outright, from a watchdog process.

The rig's SQL goes through mysqlclient (``MySQLdb``); without it the server cannot be driven
and :class:`MariaDBUnavailable` says so.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

from connguard.testing import _teardown
from connguard.testing._process import (
    TIMEOUT,
    ClusterState,
    RigProcess,
    ServerError,
    ServerUnavailable,
    make_base_dir,
    open_up_parents,
    unprivileged_user,
)

__all__ = ["MariaDBServer", "MariaDBUnavailable", "find_mariadb_bin"]

ENV_MARIADB_BIN = "CONNGUARD_MARIADB_BIN"
_SERVER_NAMES = ("mariadbd", "mysqld")
_INSTALL_NAMES = ("mariadb-install-db", "mysql_install_db")
_SEARCH_DIRS = ("/usr/sbin", "/usr/libexec", "/usr/local/sbin", "/usr/local/bin", "/usr/bin")
_VARIABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# the name _teardown looks for: the watchdog finds mariadbd's pid as it finds a postmaster's
_PIDFILE = _teardown.PIDFILE

APP_USER = "connguard"
APP_DATABASE = "connguard"
# Privileges of the application account: everything a Django project and its test runner
# use (CREATE/DROP of test databases included), nothing that lifts the connection limit,
# read_only or KILL protection (SUPER, CONNECTION ADMIN, READ_ONLY ADMIN).
_APP_PRIVILEGES = (
    "SELECT, INSERT, UPDATE, DELETE, CREATE, DROP, REFERENCES, INDEX, ALTER, "
    "CREATE TEMPORARY TABLES, LOCK TABLES, EXECUTE, CREATE VIEW, SHOW VIEW, "
    "CREATE ROUTINE, ALTER ROUTINE, EVENT, TRIGGER, PROCESS"
)

DEFAULT_SETTINGS: Mapping[str, object] = {
    "bind-address": "127.0.0.1",
    "skip-name-resolve": True,
    "skip-log-bin": True,
    "max_connections": 100,
    "character-set-server": "utf8mb4",
    "collation-server": "utf8mb4_unicode_ci",
    "performance_schema": "OFF",
    "innodb_buffer_pool_size": "32M",
    "innodb_log_file_size": "16M",
    "innodb_flush_log_at_trx_commit": 2,
    "innodb_doublewrite": 0,
    "innodb_use_native_aio": 0,
    "innodb_fast_shutdown": 1,
    "skip-external-locking": True,
    "loose-skip-ssl": True,
}

INSTALL_HINT = (
    "install the MariaDB server binaries (no service needs to run) with\n"
    "  apt-get install mariadb-server      (Debian/Ubuntu)\n"
    f"or point ${ENV_MARIADB_BIN} at the directory holding mariadbd (and mariadb-install-db, or\n"
    "have it in the sibling bin/ or sbin/ directory)"
)


class MariaDBUnavailable(ServerUnavailable):
    """No usable MariaDB server binaries (or no mysqlclient) on this machine."""


# --------------------------------------------------------------------------- binaries


@dataclass(frozen=True)
class MariaDBBinaries:
    server: Path
    install_db: Path


def _find_one(names: tuple[str, ...], dirs: list[str], on_path: bool) -> Path | None:
    for name in names:
        found = shutil.which(name) if on_path else None
        if found:
            return Path(found)
        for folder in dirs:
            candidate = Path(folder) / name
            if candidate.is_file() and os.access(candidate, os.X_OK):
                return candidate
    return None


def find_mariadb_bin() -> MariaDBBinaries:
    """``mariadbd`` and ``mariadb-install-db`` (or their ``mysqld``/``mysql_install_db``
    names, when they are MariaDB's): in ``$CONNGUARD_MARIADB_BIN`` (or its ``bin``/``sbin``
    sibling) when set, else on ``PATH`` and in ``/usr/sbin`` and its usual siblings. Raises
    :class:`MariaDBUnavailable`."""
    explicit = os.environ.get(ENV_MARIADB_BIN)
    if explicit:  # that directory, and its bin/sbin sibling (Debian splits the two)
        root = Path(explicit).expanduser()
        dirs = [str(root)]
        if root.is_dir():
            dirs += [str(root.parent / "bin"), str(root.parent / "sbin")]
    else:
        dirs = list(_SEARCH_DIRS)
    server = _find_one(_SERVER_NAMES, dirs, on_path=not explicit)
    install_db = _find_one(_INSTALL_NAMES, dirs, on_path=not explicit)
    if server is None or install_db is None:
        where = f"${ENV_MARIADB_BIN}={explicit!r}" if explicit else "PATH, " + ", ".join(dirs)
        missing = [
            names[0] for names, hit in ((_SERVER_NAMES, server), (_INSTALL_NAMES, install_db))
            if hit is None
        ]  # fmt: skip
        raise MariaDBUnavailable(f"no {' or '.join(missing)} in {where}; {INSTALL_HINT}")
    if server.name == "mysqld":
        try:
            version = subprocess.run(
                [str(server), "--version"], capture_output=True, text=True, timeout=30
            ).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            raise MariaDBUnavailable(f"cannot run {server} --version: {exc}") from exc
        if "mariadb" not in version.lower():
            raise MariaDBUnavailable(
                f"{server} is not MariaDB ({version.strip()!r}); the rig drives MariaDB "
                f"only. {INSTALL_HINT}"
            )
    return MariaDBBinaries(server, install_db)


def _mysqldb() -> Any:
    try:
        import MySQLdb
    except ImportError as exc:
        raise MariaDBUnavailable(
            f"mysqlclient is not importable ({exc}); install it with "
            "`pip install 'django-connguard[mysql]'` (it builds against libmariadb-dev and needs "
            "pkg-config)"
        ) from exc
    return MySQLdb


# --------------------------------------------------------------------------- helpers


def _option_text(value: object) -> str:
    if isinstance(value, bool):
        return ""
    return f" = {value}"


def _check_name(name: str) -> str:
    if not _VARIABLE_NAME.match(name):
        raise ValueError(f"not a system variable name: {name!r}")
    return name


def _sql_literal(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace("'", "\\'")
    return f"'{text}'"


def _greeting(path: str, timeout: float) -> bool:
    """True when the server at unix socket *path* sends a handshake (it accepts sessions)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(path)
            head = sock.recv(5)
    except OSError:
        return False
    # 3-byte length, 1-byte sequence, then the protocol version 10 (0xff would be an error)
    return len(head) == 5 and head[4] == 10


# --------------------------------------------------------------------------- server


class MariaDBServer(RigProcess):
    """A throwaway MariaDB server on 127.0.0.1 (see the module docstring).

    ``base_dir`` defaults to a fresh ``tempfile.mkdtemp()``; a given one must be empty or
    absent and is removed by :meth:`cleanup`. ``port`` defaults to a free port, kept across
    restarts. ``settings`` are extra ``[mysqld]`` options (``{"max_connections": 20}``) on top
    of :data:`DEFAULT_SETTINGS`.
    """

    user = APP_USER
    database = APP_DATABASE
    display_name = "MariaDBServer"
    # no MYSQL_* variables (MYSQL_PWD, MYSQL_HOST, MYSQL_UNIX_PORT...)
    env_prefixes = ("MYSQL", "MARIADB")

    def __init__(
        self,
        base_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        settings: Mapping[str, object] | None = None,
    ) -> None:
        self.binaries = find_mariadb_bin()
        self._mysqldb = _mysqldb()
        run_as = unprivileged_user(("mysql", "nobody"), "mariadbd", MariaDBUnavailable)
        self.settings: dict[str, object] = {**DEFAULT_SETTINGS, **(settings or {})}
        self.base_dir = make_base_dir(base_dir, "connguard-mariadb-")
        self.data_dir = self.base_dir / "data"
        self.run_dir = self.base_dir / "run"
        self.socket_path = self.run_dir / "mysqld.sock"
        self.log_path = self.base_dir / "mariadbd.log"
        self.config_path = self.base_dir / "my.cnf"
        self._state: ClusterState = ClusterState(run_dir=self.run_dir, remove=[self.base_dir])
        self._init_process(self._state, port, run_as)
        self._saved_globals: dict[str, Any] = {}
        self._prepare_dirs()

    # ----------------------------------------------------------------- properties

    @property
    def globals_changed(self) -> bool:
        """True after :meth:`set_global` until :meth:`reset_globals`."""
        return bool(self._saved_globals)

    def kwargs(self, database: str | None = None, **extra: Any) -> dict[str, Any]:
        """``MySQLdb.connect()`` keywords for the application account over TCP:
        ``host``, ``port``, ``user``, ``database``, then ``extra`` (``connect_timeout=3``...)."""
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "database": database or self.database,
            **extra,
        }

    def conninfo(self, database: str | None = None, **extra: object) -> str:
        """The same as a keyword string, ``host=127.0.0.1 port=N user=connguard database=x``,
        as the ``mysqlclient`` driver of :class:`~connguard.ConnectionPool` takes it."""
        params = self.kwargs(database, **extra)
        return " ".join(f"{key}={value}" for key, value in params.items())

    def url(self, database: str | None = None) -> str:
        """``mysql://connguard@127.0.0.1:N/connguard``."""
        name = database or self.database
        return f"mysql://{quote(self.user)}@{self.host}:{self.port}/{quote(name)}"

    # ----------------------------------------------------------------- lifecycle

    def _launch(self) -> None:
        self._write_config()
        fresh = not (self.data_dir / "mysql").is_dir()
        if fresh:
            self._install_db()
        self._spawn(
            [str(self.binaries.server), f"--defaults-file={self.config_path}"],
            output=self.log_path,
            cwd=self.base_dir,
            ready=lambda proc: self.pid == proc.pid and _greeting(str(self.socket_path), 1.0),
            poll=0.02,
        )
        if fresh:
            self._create_accounts()

    def stop(self) -> None:
        """Shut down cleanly (SIGTERM: clients' sessions end, the server exits); no-op when
        it is not running."""
        self._stop_by_signal(signal.SIGTERM, "mariadbd")

    def _repr_detail(self) -> str:
        return f"dir={self.base_dir}"

    # ----------------------------------------------------------------- SQL

    def admin_connection(self, database: str | None = None) -> Any:
        """A new autocommit ``MySQLdb`` connection as ``root`` through the private socket;
        the caller closes it."""
        kwargs: dict[str, Any] = {
            "unix_socket": str(self.socket_path),
            "user": "root",
            "connect_timeout": 10,
            "autocommit": True,
        }
        if database:
            kwargs["database"] = database
        return self._mysqldb.connect(**kwargs)

    def connect(self, database: str | None = None, **extra: Any) -> Any:
        """A new ``MySQLdb`` connection as the application account (TCP)."""
        return self._mysqldb.connect(**self.kwargs(database, connect_timeout=10, **extra))

    def execute(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        """Run one statement as root on a fresh autocommit connection, closed after."""
        conn = self.admin_connection()
        try:
            cur = conn.cursor()
            cur.execute(sql, params)
            return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    def get_global(self, name: str) -> Any:
        """``@@GLOBAL.name``."""
        return self.execute(f"SELECT @@GLOBAL.{_check_name(name)}")[0][0]

    def set_global(self, name: str, value: object) -> None:
        """``SET GLOBAL name = value`` (``set_global("wait_timeout", 1)``); the value it had
        before the first change is kept for :meth:`reset_globals`. Sessions take
        ``wait_timeout`` and the like when they start: connections opened before keep their
        old value. MariaDB raises ``max_connections`` below 10 to 10."""
        self.set_globals(**{name: value})

    def set_globals(self, **values: object) -> None:
        """:meth:`set_global` for each keyword, on one connection."""
        for name in values:
            _check_name(name)
        conn = self.admin_connection()
        try:
            cur = conn.cursor()
            for name, value in values.items():
                if name not in self._saved_globals:
                    cur.execute(f"SELECT @@GLOBAL.{name}")
                    self._saved_globals[name] = cur.fetchall()[0][0]
                cur.execute(f"SET GLOBAL {name} = {_sql_literal(value)}")
        finally:
            conn.close()

    def reset_globals(self) -> None:
        """Put back every variable :meth:`set_global` changed (also lost on a restart)."""
        saved, self._saved_globals = self._saved_globals, {}
        if not saved or not self.running:
            return
        conn = self.admin_connection()
        try:
            cur = conn.cursor()
            for name, value in saved.items():
                if isinstance(value, bytes):
                    value = value.decode()
                cur.execute(f"SET GLOBAL {name} = {_sql_literal(value)}")
        finally:
            conn.close()

    def connections(self, user: str | None = None) -> dict[str, int]:
        """Client sessions by state — ``idle``, ``idle in transaction`` (an InnoDB
        transaction is open), ``active`` — for ``user`` (all users when None); the asking
        connection and the server's own threads are not counted."""
        rows = self.execute(
            "SELECT CASE WHEN p.COMMAND <> 'Sleep' THEN 'active'"
            " WHEN t.trx_id IS NULL THEN 'idle' ELSE 'idle in transaction' END, count(*)"
            " FROM information_schema.PROCESSLIST p"
            " LEFT JOIN information_schema.INNODB_TRX t ON t.trx_mysql_thread_id = p.ID"
            " WHERE p.ID <> CONNECTION_ID() AND p.COMMAND NOT IN ('Daemon', 'Binlog Dump')"
            " AND p.USER NOT IN ('system user', 'event_scheduler', 'unauthenticated user')"
            " AND (%s IS NULL OR p.USER = %s) GROUP BY 1 ORDER BY 1",
            (user, user),
        )
        return {str(state): int(count) for state, count in rows}

    def count_connections(self, user: str | None = None) -> int:
        """The number of client sessions of ``user`` (all users when None)."""
        return sum(self.connections(user).values())

    def connection_ids(self, user: str | None = None) -> list[int]:
        """``CONNECTION_ID()`` of each client session of ``user`` (all when None)."""
        rows = self.execute(
            "SELECT ID FROM information_schema.PROCESSLIST WHERE ID <> CONNECTION_ID()"
            " AND COMMAND NOT IN ('Daemon', 'Binlog Dump')"
            " AND USER NOT IN ('system user', 'event_scheduler', 'unauthenticated user')"
            " AND (%s IS NULL OR USER = %s) ORDER BY ID",
            (user, user),
        )
        return [int(row[0]) for row in rows]

    def kill_connections(self, user: str | None = APP_USER, timeout: float = 10.0) -> int:
        """``KILL CONNECTION`` every session of ``user`` (the application account by
        default; every client when None) but the asking one; returns once they are gone,
        with how many were killed."""
        ids = self.connection_ids(user)
        if not ids:
            return 0
        conn = self.admin_connection()
        try:
            cur = conn.cursor()
            for thread_id in ids:
                with contextlib.suppress(self._mysqldb.OperationalError):  # gone meanwhile
                    cur.execute(f"KILL CONNECTION {int(thread_id)}")
        finally:
            conn.close()
        deadline = time.monotonic() + timeout
        while set(ids) & set(self.connection_ids(user)):
            if time.monotonic() >= deadline:
                raise ServerError(f"sessions {ids} survived KILL CONNECTION for {timeout} s")
            time.sleep(0.02)
        return len(ids)

    def create_database(self, name: str) -> None:
        self.execute(f"CREATE DATABASE `{_check_name(name)}`")

    def drop_database(self, name: str) -> None:
        self.execute(f"DROP DATABASE IF EXISTS `{_check_name(name)}`")

    # ----------------------------------------------------------------- internals

    def _prepare_dirs(self) -> None:
        for path in (self.run_dir,):
            path.mkdir(mode=0o755, exist_ok=True)
        if len(str(self.socket_path)) > 100:  # sun_path holds 108 bytes
            short = self._short_dir("cgmy-")
            self.socket_path = short / "mysqld.sock"
            self._own_dir(short)
        run_as = self._run_as
        if run_as is None:
            return
        open_up_parents(self.base_dir, run_as, "mariadbd")
        for path in (self.base_dir, self.run_dir):
            self._own_dir(path)
        self.log_path.touch(mode=0o644)  # the server appends to it as run_as
        os.chown(self.log_path, run_as.uid, run_as.gid)

    def _write_config(self) -> None:
        options = {
            **self.settings,
            "datadir": self.data_dir,
            "port": self.port,
            "socket": self.socket_path,
            "pid-file": self.run_dir / _PIDFILE,
            "log-error": self.log_path,
            "tmpdir": self.run_dir,
        }
        lines = [f"{name}{_option_text(value)}" for name, value in options.items()]
        text = "# connguard test rig\n[mysqld]\n" + "\n".join(lines) + "\n"
        self.config_path.write_text(text)
        self.config_path.chmod(0o644)

    def _install_db(self) -> None:
        argv = [
            str(self.binaries.install_db),
            f"--defaults-file={self.config_path}",
            "--auth-root-authentication-method=normal",
            "--skip-test-db",
        ]
        basedir = self.binaries.server.parent.parent
        if (basedir / "share").is_dir():
            argv.append(f"--basedir={basedir}")
        try:
            self._run(argv, "mariadb-install-db", timeout=TIMEOUT * 3)
        except ServerError:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            raise

    def _create_accounts(self) -> None:
        conn = self.admin_connection()
        try:
            cur = conn.cursor()
            cur.execute(f"CREATE USER IF NOT EXISTS '{APP_USER}'@'%'")
            cur.execute(f"GRANT {_APP_PRIVILEGES} ON *.* TO '{APP_USER}'@'%'")
            cur.execute(f"CREATE DATABASE IF NOT EXISTS `{APP_DATABASE}`")
        finally:
            conn.close()

    def _port_taken(self) -> bool:
        tail = self.log_tail(30)
        return "Address already in use" in tail or "Do you already have another" in tail
