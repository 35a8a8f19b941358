"""Process-level teardown of a throwaway cluster (stdlib only).

Shared by :class:`connguard.testing.server.PostgresServer` (its finalizer) and by the watchdog
process it starts, which runs this module as a script: the watchdog blocks on a pipe whose
write end only the test process holds, so when that process dies — however it dies — the
watchdog reads EOF and removes the cluster. A postgres left running after a crashed test run
is what this exists to prevent.

Every process this touches is found by pid through the cluster's own ``postmaster.pid`` and
``/proc``: the postmaster and its direct children, never anything matched by name.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

PIDFILE = "postmaster.pid"


def read_postmaster_pid(data_dir: Path) -> int | None:
    """The postmaster pid recorded in ``data_dir/postmaster.pid``, or None."""
    try:
        first = (data_dir / PIDFILE).read_text().split("\n", 1)[0].strip()
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None
    return int(first) if first.isdigit() else None


def pid_alive(pid: int) -> bool:
    """True when ``pid`` is a live (not zombie) process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def children_of(pid: int) -> list[int]:
    """Direct children of ``pid`` (from /proc; empty where /proc is absent)."""
    found: list[int] = []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for name in entries:
        if not name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{name}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.append(int(name))
    return found


def wait_gone(pids: Sequence[int], timeout: float) -> bool:
    """Wait until none of ``pids`` is alive; True if they all went within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        if not any(pid_alive(pid) for pid in pids):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def kill_cluster(
    data_dir: Path,
    lockfiles: Sequence[Path] = (),
    reap: Callable[[], object] | None = None,
    timeout: float = 10.0,
) -> bool:
    """SIGKILL the postmaster of ``data_dir`` and then each of its backends.

    The postmaster goes first so that it cannot fork new children. Returns True when
    something was running. The lock files (``postmaster.pid`` and ``lockfiles``) stay, so that
    the next start can clean up the old shared memory, unless the dead postmaster's pid still
    answers (a zombie nobody reaped, or a reused pid): then the next start would take it for a
    running postmaster, so they are removed.
    """
    pid = read_postmaster_pid(data_dir)
    if pid is None or not pid_alive(pid):
        _drop_stale_locks(pid, [data_dir / PIDFILE, *lockfiles])
        return False
    children = children_of(pid)
    for victim in [pid, *children]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    # A child forked between the listing and the kill of the postmaster.
    late = [p for p in children_of(pid) if p not in children]
    for victim in late:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    victims = [pid, *children, *late]
    if reap is not None:
        reap()
    if not wait_gone(victims, timeout):
        raise RuntimeError(f"postgres processes {victims} survived SIGKILL")
    _drop_stale_locks(pid, [data_dir / PIDFILE, *lockfiles])
    return True


def _drop_stale_locks(pid: int | None, lockfiles: Sequence[Path], grace: float = 2.0) -> None:
    if pid is None:
        return
    deadline = time.monotonic() + grace  # for whoever reaps the dead postmaster
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        except PermissionError:
            break
        if time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    for path in lockfiles:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def run_as_kwargs(uid: int | None, gid: int | None) -> dict[str, Any]:
    """``subprocess`` keyword arguments that run the child as ``uid``:``gid`` (root only)."""
    if uid is None or gid is None:
        return {}
    return {"user": uid, "group": gid, "extra_groups": []}


def teardown(
    data_dir: Path,
    remove: Sequence[Path],
    reap: Callable[[], object] | None = None,
    timeout: float = 10.0,
) -> None:
    """Stop the cluster (immediate shutdown, then SIGKILL) and delete ``remove``.

    ``reap`` waits for the postmaster when the caller is its parent.
    """
    pid = read_postmaster_pid(data_dir)
    if pid is not None and pid_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGQUIT)  # immediate shutdown: backends quit at once
        if reap is not None:
            with contextlib.suppress(Exception):
                reap()
        wait_gone([pid], timeout)
    kill_cluster(data_dir, reap=reap)
    for path in remove:
        shutil.rmtree(path, ignore_errors=True)


def _watchdog(argv: Sequence[str]) -> int:
    """``python _teardown.py DATA_DIR REMOVE...``: wait for EOF on stdin, then tear down."""
    data_dir, *remove = argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        while sys.stdin.buffer.read(4096):
            pass
    teardown(Path(data_dir), [Path(p) for p in remove])
    return 0


if __name__ == "__main__":
    sys.exit(_watchdog(sys.argv[1:]))
