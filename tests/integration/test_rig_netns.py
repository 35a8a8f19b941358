"""The network-namespace rig itself (connguard.testing.netns): what it creates, the drop and
the restore, PostgreSQL and MariaDB inside, and that nothing is left behind — also when the
test process is killed.

Needs root, ip and nft: skipped with the reason otherwise, failed under CI=true.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from connguard.testing import _teardown
from connguard.testing import netns as rig
from connguard.testing._process import ServerUnavailable
from connguard.testing.mariadb import find_mariadb_bin
from connguard.testing.pytest_plugin import in_ci, skip_or_fail

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture(autouse=True)
def _needs_netns() -> None:
    reason = rig.unavailable_reason()
    if reason is not None:
        if in_ci():
            pytest.fail(f"CI=true and network namespaces are unavailable: {reason}")
        pytest.skip(f"network namespaces unavailable: {reason}")


def namespaces() -> str:
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def link_exists(name: str) -> bool:
    return subprocess.run(["ip", "link", "show", name], capture_output=True).returncode == 0


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(0.05)


def test_namespace_server_drop_restore_and_teardown() -> None:
    with rig.Netns() as ns:
        assert ns.name in namespaces() and link_exists(ns.host_if)
        for addr in (ns.host_addr, ns.ns_addr):  # both ends inside 198.18.0.0/15
            assert ipaddress.ip_address(addr) in ipaddress.ip_network("198.18.0.0/15")
        server = rig.NetnsPostgresServer(ns)
        try:
            server.start()
            assert server.host == ns.ns_addr
            conninfo = server.conninfo(connect_timeout=3)
            old = psycopg.connect(conninfo, autocommit=True)
            assert old.execute("SELECT inet_server_addr()::text").fetchone() == (
                f"{ns.ns_addr}/32",
            )
            port = old.execute("SELECT inet_client_port()").fetchone()[0]  # type: ignore[index]
            assert ns.established_ports(server.port) == [port]
            assert ns.drop_established(server.port) == [port]
            # new connections work while the old one is silenced
            with psycopg.connect(conninfo, autocommit=True) as new:
                assert new.execute("SELECT 1").fetchone() == (1,)
            old.pgconn.send_query(b"SELECT 2")
            old.pgconn.flush()
            assert not rig_poll_readable(old.pgconn.socket, 1.0)  # nothing comes back
            ns.restore()
            assert rig_poll_readable(old.pgconn.socket, 10.0)  # the retransmission gets through
            old.close()
            pid = server.pid
            assert pid is not None
        finally:
            server.cleanup()
        assert not _teardown.pid_alive(pid)
    assert ns.name not in namespaces()
    assert not link_exists(ns.host_if)
    ns.close()  # idempotent


def rig_poll_readable(fd: int, timeout: float) -> bool:
    import select

    poller = select.poll()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


def test_mariadb_in_the_namespace_listens_there_unprivileged_and_is_torn_down() -> None:
    mysqldb = pytest.importorskip("MySQLdb")
    with rig.Netns() as ns:
        try:
            server = rig.NetnsMariaDBServer(ns)
        except ServerUnavailable as exc:
            skip_or_fail("the MariaDB test server", exc)
        try:
            server.start()
            assert server.host == ns.ns_addr
            conn = mysqldb.connect(**server.kwargs(connect_timeout=3))
            cur = conn.cursor()
            cur.execute("SELECT @@bind_address, USER()")
            assert cur.fetchone() == (ns.ns_addr, f"connguard@{ns.host_addr}")
            cur.execute("SELECT SUBSTRING_INDEX(HOST, ':', -1) FROM information_schema.PROCESSLIST"
                        " WHERE ID = CONNECTION_ID()")  # fmt: skip
            port = int(cur.fetchone()[0])
            assert ns.established_ports(server.port) == [port]
            assert ns.drop_established(server.port) == [port]
            fresh = mysqldb.connect(**server.kwargs(connect_timeout=3))  # new flows work
            fresh.close()
            ns.restore()
            cur.execute("SELECT 1")  # the dropped flow's retransmissions get through
            conn.close()
            pid = server.pid
            assert pid is not None
            owner = Path(f"/proc/{pid}").stat().st_uid
            assert owner != 0 and owner == server._run_as.uid  # type: ignore[union-attr]
        finally:
            server.cleanup()
        assert not _teardown.pid_alive(pid)
        assert not server.base_dir.exists()
    assert ns.name not in namespaces()


@pytest.mark.parametrize("server", ["NetnsPostgresServer", "NetnsMariaDBServer"])
def test_killed_test_process_leaves_no_namespace_and_no_server(server: str) -> None:
    if server == "NetnsMariaDBServer":
        pytest.importorskip("MySQLdb")
        try:
            find_mariadb_bin()
        except ServerUnavailable as exc:
            skip_or_fail("the MariaDB test server", exc)
    script = textwrap.dedent(
        f"""
        import time
        from connguard.testing.netns import Netns, {server}
        ns = Netns()
        server = {server}(ns).start()
        print(ns.name, ns.host_if, server.pid, server.base_dir, flush=True)
        time.sleep(60)
        """
    )
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        name, host_if, pid_text, base = child.stdout.readline().split()
        pid = int(pid_text)
        assert name in namespaces() and _teardown.pid_alive(pid)
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(10)
    wait_for(lambda: name not in namespaces() and not link_exists(host_if))
    wait_for(lambda: not _teardown.pid_alive(pid) and not Path(base).exists())


def test_silent_listener_accepts_and_never_speaks() -> None:
    with rig.SilentListener() as listener, pytest.raises(psycopg.OperationalError, match="timeout"):
        psycopg.connect(f"host={listener.host} port={listener.port} connect_timeout=2")
    assert listener.accepted
