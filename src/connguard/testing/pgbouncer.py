"""A throwaway PgBouncer in front of a :class:`~connguard.testing.server.PostgresServer`.

``PgBouncer(server).start()`` writes a ``pgbouncer.ini`` into a fresh temporary directory and
runs the ``pgbouncer`` binary (found by :func:`find_pgbouncer`) as a child process: it listens
on a free port of 127.0.0.1 (no unix socket), sends every database to the server with
``auth_type = trust``, accepts the server's user on its admin console (database
``pgbouncer``) and logs into ``workdir/pgbouncer.log``.

PgBouncer refuses to run as root: under euid 0 it runs as the same unprivileged user as the
rig's postgres (``postgres``, else ``nobody``).

As with the server, nothing outlives the test process: :meth:`PgBouncer.stop` ends it by pid
and removes its directory; a ``weakref.finalize`` does the same at interpreter exit, and a
small watchdog process does it if the test process is killed outright.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from connguard.testing import _teardown
from connguard.testing.server import (
    PostgresServer,
    ServerError,
    _free_port,
    _libpq_value,
    _open_up_parents,
    _unprivileged_user,
)

__all__ = ["PgBouncer", "PgBouncerError", "PgBouncerUnavailable", "find_pgbouncer"]

FALLBACK_BINARY = "/usr/sbin/pgbouncer"
INSTALL_HINT = "install it with: apt-get install pgbouncer (Debian/Ubuntu)"
_ADMIN_COMMAND = re.compile(r"^[A-Za-z_][A-Za-z0-9_ ,]*$")
_SETTING_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")

#: ``[pgbouncer]`` settings every rig bouncer gets (``extra`` may override them).
DEFAULT_SETTINGS: Mapping[str, str] = {
    # psycopg2/libpq, psycopg 3 and Django send none of the unsupported ones by default;
    # JDBC-style clients send extra_float_digits, and a user's OPTIONS may carry "options".
    "ignore_startup_parameters": "extra_float_digits,options",
    # A server that was restarted is tried again after 1 s, not PgBouncer's 15 s.
    "server_login_retry": "1",
    "log_connections": "0",
    "log_disconnections": "0",
}


class PgBouncerError(ServerError):
    """The throwaway PgBouncer could not be started or controlled."""


class PgBouncerUnavailable(PgBouncerError):
    """No ``pgbouncer`` binary on this machine."""


def find_pgbouncer() -> str:
    """The ``pgbouncer`` binary: on ``PATH``, else ``/usr/sbin/pgbouncer`` (Debian puts it
    there, outside a normal user's ``PATH``). Raises :class:`PgBouncerUnavailable`."""
    found = shutil.which("pgbouncer")
    if found:
        return found
    if os.access(FALLBACK_BINARY, os.X_OK):
        return FALLBACK_BINARY
    raise PgBouncerUnavailable(
        f"no pgbouncer binary found (looked on PATH and at {FALLBACK_BINARY}); {INSTALL_HINT}"
    )


# A stdlib-only watchdog, run with ``python -S -c``: waits for EOF on stdin (the test process
# holds the only write end), then ends the pgbouncer recorded in the pid file — only when that
# pid still runs with our ini file on its command line — and removes the directory.
_WATCHDOG = r"""
import os, shutil, signal, sys, time
signal.signal(signal.SIGINT, signal.SIG_IGN)
workdir = sys.argv[1]
try:
    while sys.stdin.buffer.read(4096):
        pass
except OSError:
    pass
try:
    pid = int(open(os.path.join(workdir, "pgbouncer.pid")).read().split()[0])
    cmdline = open("/proc/%d/cmdline" % pid, "rb").read()
except (OSError, ValueError, IndexError):
    pid = None
if pid is not None and os.path.join(workdir, "pgbouncer.ini").encode() in cmdline:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.kill(pid, sig)
        except OSError:
            break
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and os.path.exists("/proc/%d" % pid):
            time.sleep(0.05)
shutil.rmtree(workdir, ignore_errors=True)
"""


@dataclass
class _State:
    """What the finalizer needs; holds no reference to the PgBouncer object itself."""

    owner_pid: int
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    watchdog: subprocess.Popen[bytes] | None = None
    done: bool = False

    def stop(self, timeout: float) -> None:
        """SIGTERM (an immediate shutdown up to PgBouncer 1.22; a wait for the clients to
        leave from 1.23), SIGKILL after ``timeout``; reaped; its directory removed."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(10)
        shutil.rmtree(self.workdir, ignore_errors=True)


def _finalize(state: _State) -> None:
    """Stop PgBouncer and remove its directory (idempotent; nothing in a forked child)."""
    if state.done or os.getpid() != state.owner_pid:
        return
    state.done = True
    try:
        state.stop(timeout=5.0)
    finally:
        watchdog, state.watchdog = state.watchdog, None
        if watchdog is not None:
            with contextlib.suppress(OSError):
                if watchdog.stdin is not None:
                    watchdog.stdin.close()
            try:
                watchdog.wait(timeout=15)
            except subprocess.TimeoutExpired:
                watchdog.kill()
                watchdog.wait(timeout=5)


def _admin_connect(conninfo: str) -> Any:
    """An autocommit connection through psycopg 3, or psycopg2 where only that exists."""
    try:
        import psycopg
    except ImportError:
        import psycopg2

        conn = psycopg2.connect(conninfo)
        conn.autocommit = True
        return conn
    return psycopg.connect(conninfo, autocommit=True)


class PgBouncer:
    """A PgBouncer on 127.0.0.1 in front of ``server`` (see the module docstring).

    ``pool_mode``, ``default_pool_size`` and ``max_client_conn`` go to ``pgbouncer.ini`` as
    given; ``extra`` adds or overrides any other ``[pgbouncer]`` setting
    (``{"client_idle_timeout": "2"}``). ``port`` defaults to a free port, chosen once and kept
    across :meth:`stop` / :meth:`start`, so that clients find it again after a restart.

    ``with PgBouncer(server) as bouncer: psycopg.connect(bouncer.conninfo())``
    """

    host = "127.0.0.1"

    def __init__(
        self,
        server: PostgresServer,
        *,
        pool_mode: str = "transaction",
        default_pool_size: int = 20,
        max_client_conn: int = 1000,
        port: int | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> None:
        if pool_mode not in ("session", "transaction", "statement"):
            raise ValueError(
                f"pool_mode must be 'session', 'transaction' or 'statement', not {pool_mode!r}"
            )
        self.binary = find_pgbouncer()
        self.server = server
        self.user = server.user
        self._run_as = _unprivileged_user()
        self._fixed_port = port is not None
        self.port = port if port is not None else _free_port(self.host)
        self.settings: dict[str, str] = {
            "pool_mode": pool_mode,
            "default_pool_size": str(default_pool_size),
            "max_client_conn": str(max_client_conn),
            **DEFAULT_SETTINGS,
        }
        self._update_settings(extra or {})
        self.workdir = Path(tempfile.mkdtemp(prefix="cg-pgbouncer-")).resolve()
        self.ini_path = self.workdir / "pgbouncer.ini"
        self.log_path = self.workdir / "pgbouncer.log"
        self._stderr_path = self.workdir / "stderr.log"
        self._state = _State(owner_pid=os.getpid(), workdir=self.workdir)
        self._finalizer = weakref.finalize(self, _finalize, self._state)

    # ----------------------------------------------------------------- properties

    @property
    def pid(self) -> int | None:
        """PgBouncer's pid while it runs, else None."""
        proc = self._state.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def conninfo(self, dbname: str = "postgres", **params: object) -> str:
        """A libpq keyword string through the bouncer:
        ``host=127.0.0.1 port=… user=postgres dbname=postgres`` plus ``params``."""
        values: dict[str, object] = {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "dbname": dbname,
            **params,
        }
        return " ".join(f"{key}={_libpq_value(value)}" for key, value in values.items())

    # ----------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 10.0) -> PgBouncer:
        """Write the configuration, run PgBouncer and wait until it accepts connections
        (no-op when it runs). Raises :class:`PgBouncerError` with the log tail if it exits
        or does not listen within ``timeout`` seconds."""
        if not self._finalizer.alive:
            raise PgBouncerError(f"{self!r} was cleaned up; make a new PgBouncer")
        if self.running:
            return self
        self._start_watchdog()
        attempts = 1 if self._fixed_port else 5
        for attempt in range(attempts):
            self._prepare_workdir()
            try:
                self._spawn(timeout)
            except PgBouncerError:
                if attempt + 1 < attempts and self._port_taken():
                    self.port = _free_port(self.host)
                    continue
                raise
            break
        self._fixed_port = True  # clients reconnect to the same port after a restart
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """End PgBouncer by its pid (SIGTERM, then SIGKILL after ``timeout``) and remove its
        directory; client connections are dropped. :meth:`start` brings it back on the same
        port."""
        self._state.stop(timeout)

    def kill(self) -> None:
        """SIGKILL PgBouncer, as in a crash (its directory is removed too)."""
        self._state.stop(timeout=0.0)

    def cleanup(self) -> None:
        """Stop it for good (the object cannot be started again)."""
        self._finalizer()

    def __enter__(self) -> PgBouncer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return (
            f"<PgBouncer {self.host}:{self.port} {state} {self.settings['pool_mode']} mode "
            f"-> {self.server.host}:{self.server.port}>"
        )

    # ----------------------------------------------------------------- admin console

    def admin(self, command: str) -> list[dict[str, Any]]:
        """Run ``command`` (``SHOW POOLS``, ``KILL postgres``, ``RESUME``, …) on the admin
        console; the rows as dicts (empty for commands that return none)."""
        if not _ADMIN_COMMAND.match(command.strip()):
            raise ValueError(f"not an admin console command: {command!r}")
        conn = _admin_connect(self.conninfo("pgbouncer", connect_timeout=5))
        try:
            cur = conn.cursor()
            cur.execute(command)
            if not cur.description:
                return []
            names = [column[0] for column in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
        finally:
            conn.close()

    def show(self, what: str) -> list[dict[str, Any]]:
        """``SHOW <what>`` on the admin console (``POOLS``, ``CONFIG``, ``CLIENTS``, …)."""
        return self.admin(f"SHOW {what}")

    def reload(self, **settings: object) -> None:
        """Change ``[pgbouncer]`` settings (``client_idle_timeout=1``) and ``RELOAD``; only
        settings PgBouncer can change online take effect (not ``listen_port``)."""
        self._update_settings({k: str(v) for k, v in settings.items()})
        self._write_config()
        if self.running:
            self.admin("RELOAD")

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the log (and of anything written to stderr)."""
        text = ""
        for path in (self._stderr_path, self.log_path):
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    # ----------------------------------------------------------------- internals

    def _update_settings(self, settings: Mapping[str, str]) -> None:
        for name, value in settings.items():
            if not _SETTING_NAME.match(name) or "\n" in str(value):
                raise ValueError(f"bad pgbouncer setting {name}={value!r}")
            if name in ("listen_addr", "listen_port", "unix_socket_dir", "logfile", "pidfile"):
                raise ValueError(f"{name} is managed by PgBouncer() (use port= for the port)")
            self.settings[name] = str(value)

    def _prepare_workdir(self) -> None:
        self.workdir.mkdir(mode=0o755, exist_ok=True)
        run_as = self._run_as
        if run_as is not None:
            _open_up_parents(self.workdir, run_as)
            os.chown(self.workdir, run_as.uid, run_as.gid)
        for stale in (self.log_path, self._stderr_path):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        self._write_config()

    def _write_config(self) -> None:
        if not self.workdir.is_dir():
            return
        server = self.server
        users = self.workdir / "users.txt"
        users.write_text(f'"{self.user}" ""\n')
        lines = {
            "listen_addr": self.host,
            "listen_port": str(self.port),
            "unix_socket_dir": "",
            "auth_type": "trust",
            "auth_file": str(users),
            "admin_users": self.user,
            "logfile": str(self.log_path),
            "pidfile": str(self.workdir / "pgbouncer.pid"),
            **self.settings,
        }
        databases = f"[databases]\n* = host={server.host} port={server.port}\n"
        settings = "".join(f"{name} = {value}\n" for name, value in lines.items())
        self.ini_path.write_text(f"{databases}[pgbouncer]\n{settings}")
        for path in (users, self.ini_path):
            path.chmod(0o644)

    def _spawn(self, timeout: float) -> None:
        run_as = self._run_as
        with self._stderr_path.open("ab") as stderr:
            proc = subprocess.Popen(
                [self.binary, str(self.ini_path)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                start_new_session=True,  # a Ctrl-C meant for pytest does not reach it
                **_teardown.run_as_kwargs(
                    run_as.uid if run_as else None, run_as.gid if run_as else None
                ),
            )
        self._state.proc = proc
        deadline = time.monotonic() + timeout
        while True:
            code = proc.poll()
            if code is not None:
                self._state.proc = None
                raise PgBouncerError(
                    f"pgbouncer exited with {code} while starting on port {self.port}"
                    f"\n--- {self.log_path} (tail) ---\n{self.log_tail()}"
                )
            if self._listening() and proc.poll() is None:
                return
            if time.monotonic() >= deadline:
                self._state.stop(timeout=2.0)
                raise PgBouncerError(
                    f"pgbouncer not accepting connections on {self.host}:{self.port} after "
                    f"{timeout:.1f} s\n--- {self.log_path} (tail) ---\n{self.log_tail()}"
                )
            time.sleep(0.02)

    def _listening(self) -> bool:
        """It accepts TCP connections and its log says it listens there (not some other
        process that took the port)."""
        with socket.socket() as sock:
            sock.settimeout(0.5)
            try:
                sock.connect((self.host, self.port))
            except OSError:
                return False
        try:
            return f"listening on {self.host}:{self.port}" in self.log_path.read_text(
                errors="replace"
            )
        except OSError:
            return False

    def _port_taken(self) -> bool:
        tail = self.log_tail(50)
        return "Address already in use" in tail or "bind" in tail.lower()

    def _start_watchdog(self) -> None:
        state = self._state
        if state.watchdog is not None:
            return
        state.watchdog = subprocess.Popen(
            [sys.executable, "-S", "-c", _WATCHDOG, str(self.workdir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            cwd="/",
        )
