"""The life cycle every rig server shares: :class:`RigProcess`.

A rig server (PostgreSQL, its standby, MariaDB, PgBouncer) is a child process of the test
process, listening on a free port of 127.0.0.1 and run as an unprivileged user when the test
process is root. What they share lives here, once:

* the process state the finalizer needs (:class:`ProcessState`, holding no reference to the
  server object), the ``weakref.finalize`` that tears it down and the watchdog process that
  does the same should the test process be killed outright;
* :meth:`RigProcess.start` (port chosen again when another process took it meanwhile),
  ``restart``, ``kill``, ``cleanup``, the context manager, ``repr`` and ``log_tail``;
* spawning the server as our own child in a session of its own and waiting until it is ready
  (:meth:`RigProcess._spawn`), running a setup tool (:meth:`RigProcess._run`);
* the base directory, the short socket directory and the unprivileged user.

Each server says what differs: how it is launched, when it is ready, where it logs.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar, Self

from connguard.testing import _teardown

__all__ = [
    "TIMEOUT",
    "ClosesOnExit",
    "ClusterState",
    "ProcessState",
    "RigProcess",
    "RunAs",
    "ServerError",
    "ServerUnavailable",
    "can_reach",
    "clean_env",
    "finalize",
    "free_port",
    "make_base_dir",
    "open_up_parents",
    "start_watchdog",
    "stop_watchdog",
    "unprivileged_user",
]

TIMEOUT = 60.0  # seconds for a setup tool, a start or a stop


class ServerError(RuntimeError):
    """The throwaway cluster could not be set up or controlled."""


class ServerUnavailable(ServerError):
    """No usable server binaries (or driver) on this machine."""


# --------------------------------------------------------------------------- helpers


@dataclass(frozen=True)
class RunAs:
    name: str
    uid: int
    gid: int


def unprivileged_user(
    names: Sequence[str], program: str, error: type[ServerError] = ServerUnavailable
) -> RunAs | None:
    """The first of ``names`` that exists, to run ``program`` as when we are root (None when
    we are not root)."""
    if os.geteuid() != 0:
        return None
    for name in names:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return RunAs(name, entry.pw_uid, entry.pw_gid)
    wanted = " nor a ".join(repr(n) for n in names)
    raise error(
        f"running as root, and {program} refuses to run as root, but neither a {wanted} user "
        f"exists to run it as; create one (useradd --system {names[0]})"
    )


def free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def can_reach(path: Path, run_as: RunAs, need: int = stat.S_IXOTH) -> bool:
    """Whether ``run_as`` (no supplementary groups) may search every directory down to ``path``
    and has ``need`` (given as the 'other' bit) on ``path`` itself."""
    path = path.resolve()
    chain = [*reversed(path.parents), path]
    for index, part in enumerate(chain):
        try:
            st = part.stat()
        except OSError:
            return False
        bit = need if index == len(chain) - 1 else stat.S_IXOTH
        if st.st_uid == run_as.uid:
            bit <<= 6
        elif st.st_gid == run_as.gid:
            bit <<= 3
        if not st.st_mode & bit:
            return False
    return True


def open_up_parents(path: Path, run_as: RunAs, program: str = "postgres") -> None:
    """Make the parents of ``path`` searchable by ``run_as`` — only inside the temp root.

    A parent that is not below the system temp directory is left alone: the caller gets a
    :class:`ServerError` naming it instead.
    """
    temp_root = Path(tempfile.gettempdir()).resolve()
    for parent in reversed(path.resolve().parents):
        if can_reach(parent, run_as):
            continue
        if parent == temp_root or temp_root in parent.parents:
            parent.chmod(parent.stat().st_mode | stat.S_IXOTH)
            continue
        raise ServerError(
            f"{parent} is not searchable by user {run_as.name!r}, which runs {program} because "
            f"{program} refuses to run as root; pass a base_dir under /tmp or make it "
            "searchable (chmod o+x)"
        )


def make_base_dir(base_dir: str | os.PathLike[str] | None, prefix: str) -> Path:
    """A fresh ``tempfile.mkdtemp()``, or ``base_dir`` when it is empty or absent."""
    if base_dir is None:
        return Path(tempfile.mkdtemp(prefix=prefix)).resolve()
    path = Path(base_dir).resolve()
    path.mkdir(parents=True, exist_ok=True)
    if any(path.iterdir()):
        raise ServerError(f"base_dir {path} is not empty")
    return path


def clean_env(prefixes: tuple[str, ...]) -> dict[str, str]:
    """This environment without the variables starting with ``prefixes``, C messages."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env["LC_ALL"] = "C"
    return env


def stop_watchdog(watchdog: subprocess.Popen[bytes] | None, timeout: float = 30.0) -> None:
    """Close the watchdog's stdin (it then tears down what it guards and exits) and reap it."""
    if watchdog is None:
        return
    with contextlib.suppress(OSError):
        if watchdog.stdin is not None:
            watchdog.stdin.close()
    try:
        watchdog.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        watchdog.kill()
        watchdog.wait(timeout=5)


def start_watchdog(argv: Sequence[str]) -> subprocess.Popen[bytes]:
    """A watchdog process (``python -S ...``) that waits for EOF on its stdin — the test
    process holds the only write end — then tears down."""
    return subprocess.Popen(
        [sys.executable, "-S", *argv],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        cwd="/",
    )


class ClosesOnExit:
    """``with x:`` returns ``x`` and calls ``x.close()`` at the end."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


# --------------------------------------------------------------------------- state


@dataclass
class ProcessState:
    """What the finalizer needs; holds no reference to the server object itself."""

    owner_pid: int = field(default_factory=os.getpid)
    proc: subprocess.Popen[bytes] | None = None
    watchdog: subprocess.Popen[bytes] | None = None
    done: bool = False
    watchdog_timeout: ClassVar[float] = 30.0

    def reap(self, timeout: float = 10.0) -> None:
        """Wait for the process we started (our child) to exit, and collect it."""
        proc = self.proc
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout)
            if proc.returncode is not None:
                self.proc = None

    def live_pid(self) -> int | None:
        proc = self.proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def kill(self) -> None:
        raise NotImplementedError

    def teardown(self) -> None:
        raise NotImplementedError

    def watchdog_argv(self) -> list[str]:
        raise NotImplementedError


@dataclass
class ClusterState(ProcessState):
    """A server that writes its pid file into ``run_dir`` (``_teardown`` finds it there)."""

    run_dir: Path = Path()
    remove: list[Path] = field(default_factory=list)

    def live_pid(self) -> int | None:
        pid = _teardown.read_postmaster_pid(self.run_dir)
        return pid if pid is not None and _teardown.pid_alive(pid) else None

    def kill(self, extra: Sequence[Path] = ()) -> None:
        _teardown.kill_cluster(self.run_dir, list(extra), reap=self.reap)

    def teardown(self) -> None:
        _teardown.teardown(self.run_dir, self.remove, self.reap)

    def watchdog_argv(self) -> list[str]:
        return [_teardown.__file__, str(self.run_dir), *(str(p) for p in self.remove)]


def finalize(state: ProcessState) -> None:
    """Tear down and stop the watchdog (idempotent; does nothing in a forked child)."""
    if state.done or os.getpid() != state.owner_pid:
        return
    state.done = True
    try:
        state.teardown()
    finally:
        watchdog, state.watchdog = state.watchdog, None
        stop_watchdog(watchdog, state.watchdog_timeout)


# --------------------------------------------------------------------------- base


class RigProcess(ClosesOnExit):
    """The life cycle of a rig server (see the module docstring).

    A subclass calls :meth:`_init_process` from ``__init__`` and provides ``_launch`` (one
    attempt at starting on ``self.port``), ``_port_taken`` and ``_repr_detail``.
    """

    host = "127.0.0.1"
    #: the name in ``repr`` and messages (kept by subclasses such as ``StandbyServer``)
    display_name: ClassVar[str] = "server"
    #: the error this server raises
    error: ClassVar[type[ServerError]] = ServerError
    #: environment variables its processes do not inherit
    env_prefixes: ClassVar[tuple[str, ...] | None] = None

    port: int
    base_dir: Path  # the server's own directory: removed with it, the cwd of its tools
    log_path: Path
    _state: ProcessState
    _run_as: RunAs | None

    def _init_process(self, state: ProcessState, port: int | None, run_as: RunAs | None) -> None:
        self._run_as = run_as
        self._fixed_port = port is not None
        self.port = port if port is not None else free_port(self.host)
        self._state = state
        self._finalizer = weakref.finalize(self, finalize, state)

    # ----------------------------------------------------------------- properties

    @property
    def pid(self) -> int | None:
        """The server's pid while it runs, else None."""
        return self._state.live_pid()

    @property
    def running(self) -> bool:
        return self.pid is not None

    # ----------------------------------------------------------------- lifecycle

    def start(self) -> Self:
        """Start the server and wait until it accepts connections; no-op when it runs. The
        port is kept across restarts."""
        self._check_alive_object()
        if self.running:
            return self
        self._before_start()
        self._start_watchdog()
        attempts = 1 if self._fixed_port else 5
        for attempt in range(attempts):
            try:
                self._launch()
            except ServerError:
                if attempt + 1 < attempts and self._port_taken():
                    self.port = free_port(self.host)
                    continue
                raise
            break
        return self

    def restart(self) -> None:
        """Stop and start again (every client session is ended)."""
        self.stop()
        self.start()

    def stop(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        """SIGKILL the server, as in a crash."""
        self._state.kill()

    def cleanup(self) -> None:
        """Stop the server and delete its directory; the object is done after."""
        self._finalizer()

    def close(self) -> None:
        """The same as :meth:`cleanup` (what ``with`` calls at the end)."""
        self.cleanup()

    def __enter__(self) -> Self:
        return self.start()

    def __repr__(self) -> str:
        state = f"pid={self.pid}" if self.running else "stopped"
        return f"<{self.display_name} {self.host}:{self.port} {state} {self._repr_detail()}>"

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of the server's log."""
        text = ""
        for path in self._log_paths():
            with contextlib.suppress(OSError):
                text += path.read_text(errors="replace")
        return "\n".join(text.splitlines()[-lines:])

    # ----------------------------------------------------------------- for subclasses

    def _repr_detail(self) -> str:
        return ""

    def _log_paths(self) -> list[Path]:
        return [self.log_path]

    def _before_start(self) -> None:
        """Once per :meth:`start`, before the watchdog and the attempts."""

    def _launch(self) -> None:
        raise NotImplementedError

    def _port_taken(self) -> bool:
        return False

    def _check_alive_object(self) -> None:
        if not self._finalizer.alive:
            raise self.error(f"{self!r} was cleaned up; make a new {self.display_name}")

    def _start_watchdog(self) -> None:
        state = self._state
        if state.watchdog is None:
            state.watchdog = start_watchdog(state.watchdog_argv())

    def _run_kwargs(self) -> dict[str, Any]:
        """``subprocess`` keywords that run a child as the unprivileged user (when root)."""
        run_as = self._run_as
        return _teardown.run_as_kwargs(
            run_as.uid if run_as else None, run_as.gid if run_as else None
        )

    def _env(self) -> dict[str, str] | None:
        return None if self.env_prefixes is None else clean_env(self.env_prefixes)

    def _own_dir(self, path: Path) -> None:
        """``path`` (a directory) readable by all and owned by the unprivileged user."""
        path.chmod(0o755)
        if self._run_as is not None:
            os.chown(path, self._run_as.uid, self._run_as.gid)

    def _short_dir(self, prefix: str) -> Path:
        """A directory with a short path, for a unix socket (``sun_path`` holds 108 bytes);
        removed with the server."""
        short = Path(tempfile.mkdtemp(prefix=prefix)).resolve()
        remove = getattr(self._state, "remove", None)
        if remove is not None:
            remove.append(short)
        return short

    def _stop_by_signal(self, sig: signal.Signals, what: str) -> None:
        """Send ``sig`` to the server and wait until it is gone (no-op when not running)."""
        pid = self.pid
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        self._state.reap(TIMEOUT)
        if not _teardown.wait_gone([pid], 5.0):
            raise self.error(
                f"{what} {pid} still runs {TIMEOUT:.0f} s after it was sent {sig.name}"
                f"\n{self.log_tail()}"
            )

    def _run(
        self, argv: list[str], what: str, timeout: float = TIMEOUT + 30
    ) -> subprocess.CompletedProcess[str]:
        """Run a setup tool as the unprivileged user; a :class:`ServerError` with its output
        and the log tail when it fails."""
        try:
            done = subprocess.run(
                argv,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd=self.base_dir,
                env=self._env(),
                **self._run_kwargs(),
            )
        except subprocess.TimeoutExpired as exc:
            raise self.error(f"{what}: {' '.join(argv)} timed out\n{self.log_tail()}") from exc
        except OSError as exc:
            raise self.error(f"{what}: cannot run {argv[0]}: {exc}") from exc
        if done.returncode != 0:
            output = (done.stdout + done.stderr).strip()
            raise self.error(
                f"{what}: {' '.join(argv)} exited with {done.returncode}\n{output[-3000:]}"
                f"\n--- {self.log_path} (tail) ---\n{self.log_tail()}"
            )
        return done

    def _spawn(
        self,
        argv: list[str],
        *,
        output: Path,
        cwd: Path,
        ready: Callable[[subprocess.Popen[bytes]], bool],
        timeout: float = TIMEOUT,
        poll: float = 0.01,
    ) -> None:
        """Run the server as our own child (so that it is reaped the moment it dies) in a
        session of its own (so that a Ctrl-C meant for pytest does not reach it), its output
        appended to ``output``, and wait until ``ready(proc)``; killed when not ready within
        ``timeout``."""
        name = Path(argv[0]).name
        with output.open("ab") as log:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=self._env(),
                start_new_session=True,
                **self._run_kwargs(),
            )
        self._state.proc = proc
        deadline = time.monotonic() + timeout
        while True:
            code = proc.poll()
            if code is not None:
                self._state.proc = None
                raise self.error(
                    f"{name} exited with {code} while starting on port {self.port}"
                    f"\n--- {self.log_path} (tail) ---\n{self.log_tail()}"
                )
            if ready(proc) and proc.poll() is None:
                return
            if time.monotonic() >= deadline:
                self._state.kill()
                raise self.error(
                    f"{name} not ready on {self.host}:{self.port} after {timeout:.1f} s"
                    f"\n--- {self.log_path} (tail) ---\n{self.log_tail()}"
                )
            time.sleep(poll)
