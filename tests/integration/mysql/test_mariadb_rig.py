"""The MariaDB rig itself: a private server (own port, socket and files, never the
machine's service), the accounts, session counts by state, SET GLOBAL and its reset,
KILL CONNECTION by user, stop/start/restart/kill."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import pytest
from mysql_support import mysqldb, query, scalar, session_id, wait_until

from connguard.testing.mariadb import APP_USER

__all__ = ["mysqldb"]  # fixtures


def test_private_server(mariadb: Any, mysqldb: Any) -> None:
    assert mariadb.port != 3306
    assert mariadb.socket_path.is_socket()
    assert str(mariadb.socket_path).startswith(str(mariadb.base_dir))
    [(port, datadir, socket)] = mariadb.execute("SELECT @@port, @@datadir, @@socket")
    assert (port, datadir.rstrip("/"), socket) == (
        mariadb.port,
        str(mariadb.data_dir),
        str(mariadb.socket_path),
    )
    if os.geteuid() == 0:  # mariadbd runs unprivileged
        assert os.stat(f"/proc/{mariadb.pid}").st_uid != 0
    conn = mariadb.connect()
    try:
        assert scalar(conn, "SELECT CURRENT_USER()") == f"{APP_USER}@%"
        assert scalar(conn, "SELECT DATABASE()") == mariadb.database
        assert "MariaDB" in conn.get_server_info()
    finally:
        conn.close()


def test_application_account_has_no_super(mariadb: Any) -> None:
    grants = " ".join(row[0] for row in mariadb.execute(f"SHOW GRANTS FOR '{APP_USER}'@'%'"))
    for privilege in ("SUPER", "CONNECTION ADMIN", "READ_ONLY ADMIN", "ALL PRIVILEGES"):
        assert privilege not in grants


def test_connections_by_state_and_kill_by_user(mariadb: Any) -> None:
    idle = mariadb.connect()
    in_tx = mariadb.connect()
    root = mariadb.admin_connection()
    try:
        query(in_tx, "CREATE TABLE IF NOT EXISTS rig_t (id INT PRIMARY KEY) ENGINE=InnoDB")
        query(in_tx, "BEGIN")
        query(in_tx, "INSERT INTO rig_t VALUES (1)")
        assert mariadb.connections(APP_USER) == {"idle": 1, "idle in transaction": 1}
        assert mariadb.count_connections() == 3  # and root's
        assert sorted(mariadb.connection_ids(APP_USER)) == sorted(
            [session_id(idle), session_id(in_tx)]
        )
        assert mariadb.kill_connections(APP_USER) == 2
        assert mariadb.connections(APP_USER) == {}
        assert scalar(root, "SELECT 1") == 1  # the other user's session is untouched
        assert mariadb.execute("SELECT count(*) FROM connguard.rig_t")[0][0] == 0
    finally:
        for conn in (idle, in_tx, root):
            conn.close()
        mariadb.execute("DROP TABLE IF EXISTS connguard.rig_t")


def test_set_global_and_reset(mariadb: Any) -> None:
    before = int(mariadb.get_global("wait_timeout"))
    mariadb.set_globals(wait_timeout=7, max_connections=20)
    assert mariadb.globals_changed
    conn = mariadb.connect()
    try:
        assert scalar(conn, "SELECT @@SESSION.wait_timeout") == 7
    finally:
        conn.close()
    mariadb.set_global("wait_timeout", 8)  # the first value seen is what comes back
    mariadb.reset_globals()
    assert not mariadb.globals_changed
    assert int(mariadb.get_global("wait_timeout")) == before
    assert int(mariadb.get_global("max_connections")) == 100
    with pytest.raises(ValueError, match="not a system variable name"):
        mariadb.set_global("wait_timeout = 1; DROP", 1)


def test_stop_start_restart_kill(mariadb: Any, mysqldb: Any) -> None:
    port = mariadb.port
    conn = mariadb.connect()
    mariadb.restart()
    assert mariadb.port == port
    with pytest.raises(mysqldb.OperationalError) as info:
        query(conn, "SELECT 1")
    assert info.value.args[0] in (2006, 2013)
    conn.close()
    mariadb.stop()
    assert not mariadb.running
    with pytest.raises(mysqldb.OperationalError) as info:
        mariadb.connect()
    assert info.value.args[0] in (2002, 2003)
    mariadb.start()
    pid = mariadb.pid
    mariadb.kill()
    assert not mariadb.running
    assert pid is not None and not os.path.exists(f"/proc/{pid}/stat")
    mariadb.start()  # InnoDB recovery
    conn = mariadb.connect()
    try:
        assert scalar(conn, "SELECT 1") == 1
    finally:
        conn.close()


def test_watchdog_removes_the_server_of_a_killed_test_process(mariadb_server: Any) -> None:
    """A test process killed outright (SIGKILL: no finalizer runs) leaves no mariadbd and
    no directory behind: the watchdog sees its pipe close and tears the server down."""
    script = (
        "import os, signal\n"
        "from connguard.testing.mariadb import MariaDBServer\n"
        "s = MariaDBServer(); s.start()\n"
        "print(s.pid, s.base_dir, flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == -9, done.stderr
    pid_text, base_dir = done.stdout.split()
    pid = int(pid_text)
    wait_until(lambda: not os.path.exists(f"/proc/{pid}"), timeout=30)
    wait_until(lambda: not os.path.exists(base_dir), timeout=30)
