"""The rig's streaming standby (connguard.testing.replication): made, promoted, demoted and
cleaned up for real, even when the test process dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from connguard.testing import _teardown
from connguard.testing.replication import StandbyServer, is_in_recovery, set_read_only
from connguard.testing.server import PostgresServer

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met"
        time.sleep(0.05)


def test_standby_streams_promotes_and_the_old_primary_turns_read_only(
    pg_pair: tuple[PostgresServer, StandbyServer],
) -> None:
    primary, standby = pg_pair
    assert standby.port != primary.port and standby.socket_dir != primary.socket_dir
    assert standby.in_recovery and not is_in_recovery(primary)
    if os.geteuid() == 0:  # the rig's convention: never postgres as root
        assert Path(f"/proc/{standby.pid}").stat().st_uid != 0
    primary.execute("CREATE TABLE t (x int)")
    primary.execute("INSERT INTO t VALUES (1)")
    standby.wait_caught_up()
    assert standby.execute("SELECT x FROM t") == [(1,)]
    set_read_only(primary)
    with pytest.raises(Exception, match="read-only transaction"):
        primary.execute("INSERT INTO t VALUES (2)")
    assert standby.promote() >= 0
    assert not standby.in_recovery
    standby.execute("INSERT INTO t VALUES (3)")
    assert standby.execute("SELECT x FROM t ORDER BY x") == [(1,), (3,)]
    set_read_only(primary, restart=True)  # a restart keeps it read-only
    assert primary.execute("SHOW default_transaction_read_only") == [("on",)]
    set_read_only(primary, on=False)
    assert primary.execute("SHOW default_transaction_read_only") == [("off",)]


def test_crashed_test_process_leaves_no_standby(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import time
        from connguard.testing.server import PostgresServer
        from connguard.testing.replication import StandbyServer
        primary = PostgresServer().start()
        standby = StandbyServer(primary).start()
        print(primary.pid, primary.base_dir, standby.pid, standby.base_dir, flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        fields = child.stdout.readline().split()
        pids, bases = [int(fields[0]), int(fields[2])], [fields[1], fields[3]]
        assert all(_teardown.pid_alive(pid) for pid in pids)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    wait_for(
        lambda: (
            not any(_teardown.pid_alive(p) for p in pids)
            and not any(Path(b).exists() for b in bases)
        )
    )
