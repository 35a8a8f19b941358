"""Deleting a test network namespace and its veth pair (stdlib only).

Used by :class:`connguard.testing.netns.Netns` and by the watchdog process it starts, which
runs this module as a script: the watchdog blocks on a pipe whose write end only the test
process holds, so when that process dies — however it dies — the watchdog reads EOF and
deletes the namespace and the veth pair (as ``_teardown`` does for a cluster).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Sequence

TIMEOUT = 20.0


def delete(name: str, host_if: str) -> None:
    """Delete the veth pair and the namespace (idempotent, never raises)."""
    for argv in (["ip", "link", "del", host_if], ["ip", "netns", "del", name]):
        with contextlib.suppress(Exception):
            subprocess.run(argv, capture_output=True, timeout=TIMEOUT)


def _watchdog(argv: Sequence[str]) -> int:
    """``python _netns_teardown.py NAME HOST_IF``: wait for EOF on stdin, then delete both."""
    name, host_if = argv
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with contextlib.suppress(OSError):
        while sys.stdin.buffer.read(4096):
            pass
    delete(name, host_if)
    return 0


if __name__ == "__main__":
    sys.exit(_watchdog(sys.argv[1:]))
