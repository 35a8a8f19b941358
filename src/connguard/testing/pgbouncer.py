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
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from connguard.testing._process import (
    ProcessState,
    RigProcess,
    ServerError,
    open_up_parents,
    unprivileged_user,
)
from connguard.testing.server import PostgresServer, _connect, libpq_conninfo

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
class _State(ProcessState):
    """What the finalizer needs; holds no reference to the PgBouncer object itself."""

    workdir: Path = field(default_factory=Path)
    watchdog_timeout = 15.0

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

    def kill(self) -> None:
        self.stop(timeout=0.0)

    def teardown(self) -> None:
        self.stop(timeout=5.0)

    def watchdog_argv(self) -> list[str]:
        return ["-c", _WATCHDOG, str(self.workdir)]


class PgBouncer(RigProcess):
    """A PgBouncer on 127.0.0.1 in front of ``server`` (see the module docstring).

    ``pool_mode``, ``default_pool_size`` and ``max_client_conn`` go to ``pgbouncer.ini`` as
    given; ``extra`` adds or overrides any other ``[pgbouncer]`` setting
    (``{"client_idle_timeout": "2"}``). ``port`` defaults to a free port, chosen once and kept
    across :meth:`stop` / :meth:`start`, so that clients find it again after a restart.

    ``with PgBouncer(server) as bouncer: psycopg.connect(bouncer.conninfo())``
    """

    display_name = "PgBouncer"
    error = PgBouncerError

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
        self.base_dir = self.workdir
        self._start_timeout = 10.0
        self._state: _State = _State(workdir=self.workdir)
        self._init_process(
            self._state, port, unprivileged_user(("postgres", "nobody"), "PgBouncer")
        )

    # ----------------------------------------------------------------- properties

    def conninfo(self, dbname: str = "postgres", **params: object) -> str:
        """A libpq keyword string through the bouncer:
        ``host=127.0.0.1 port=… user=postgres dbname=postgres`` plus ``params``."""
        return libpq_conninfo(self.host, self.port, self.user, dbname, params)

    # ----------------------------------------------------------------- lifecycle

    def start(self, timeout: float = 10.0) -> PgBouncer:
        """Write the configuration, run PgBouncer and wait until it accepts connections
        (no-op when it runs). Raises :class:`PgBouncerError` with the log tail if it exits
        or does not listen within ``timeout`` seconds."""
        self._start_timeout = timeout
        super().start()
        self._fixed_port = True  # clients reconnect to the same port after a restart
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """End PgBouncer by its pid (SIGTERM, then SIGKILL after ``timeout``) and remove its
        directory; client connections are dropped. :meth:`start` brings it back on the same
        port."""
        self._state.stop(timeout)

    def _repr_detail(self) -> str:
        return f"{self.settings['pool_mode']} mode -> {self.server.host}:{self.server.port}"

    # ----------------------------------------------------------------- admin console

    def admin(self, command: str) -> list[dict[str, Any]]:
        """Run ``command`` (``SHOW POOLS``, ``KILL postgres``, ``RESUME``, …) on the admin
        console; the rows as dicts (empty for commands that return none)."""
        if not _ADMIN_COMMAND.match(command.strip()):
            raise ValueError(f"not an admin console command: {command!r}")
        conn = _connect(self.conninfo("pgbouncer", connect_timeout=5))
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

    def _log_paths(self) -> list[Path]:
        return [self._stderr_path, self.log_path]  # and anything written to stderr

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
            open_up_parents(self.workdir, run_as, "pgbouncer")
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

    def _launch(self) -> None:
        self._prepare_workdir()
        self._spawn(
            [self.binary, str(self.ini_path)],
            output=self._stderr_path,
            cwd=self.workdir,
            ready=lambda proc: self._listening(),
            timeout=self._start_timeout,
            poll=0.02,
        )

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
