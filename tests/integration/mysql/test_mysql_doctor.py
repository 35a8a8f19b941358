"""``connguard doctor`` on the real MariaDB: wait_timeout against the pool's idle bound,
max_connections and the account's max_user_connections against workers x max_size,
read_only, a proxy in front, an unreachable server, and Django settings with a MySQL
ENGINE (Django's, and connguard's) read as the application's sessions see the server. The
text output is compared exactly, as tests/integration/test_doctor.py does for PostgreSQL."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from mysql_support import mysqldb

from connguard import cli
from connguard.doctor.client_tcp import OS_RETRANSMIT, dead_path_bound
from connguard.doctor.text import about
from connguard.testing.mariadb import MariaDBServer
from connguard.testing.proxy import FaultProxy

__all__ = ["mysqldb"]  # fixtures

STOCK = "django.db.backends.mysql"
CONNGUARD = "connguard.backends.mysql"
#: environment variables the process model is read from (the tests set their own)
DETECTED_ENV = (
    "GUNICORN_CMD_ARGS", "WEB_CONCURRENCY", "UVICORN_WORKERS", "CELERY_WORKER_CONCURRENCY",
    "CELERYD_CONCURRENCY", "CELERY_BROKER_URL",
)  # fmt: skip


@pytest.fixture(autouse=True)
def _no_detected_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in DETECTED_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no ./gunicorn.conf.py


def doctor(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(["doctor", *argv])
    return code, capsys.readouterr().out


def doctor_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code, out = doctor(capsys, "--json", *argv)
    return code, json.loads(out)


def ids(report: dict[str, Any]) -> dict[str, str]:
    return {f["id"]: f["severity"] for f in report["findings"]}


def finding(report: dict[str, Any], fid: str) -> dict[str, Any]:
    return next(f for f in report["findings"] if f["id"] == fid)


@pytest.fixture
def account_limit(mariadb: MariaDBServer) -> Iterator[int]:
    """The application account limited to 5 sessions (``MAX_USER_CONNECTIONS``), undone after."""
    mariadb.execute(f"ALTER USER {mariadb.user} WITH MAX_USER_CONNECTIONS 5")
    try:
        yield 5
    finally:
        mariadb.execute(f"ALTER USER {mariadb.user} WITH MAX_USER_CONNECTIONS 0")


def os_keepalive_line() -> str:
    """The client TCP line for a connection on the OS's keepalive settings (libmariadb turns
    SO_KEEPALIVE on and sets nothing else)."""

    def sysctl(name: str) -> int:
        return int(Path(f"/proc/sys/net/ipv4/tcp_keepalive_{name}").read_text())

    idle, interval, count = sysctl("time"), sysctl("intvl"), sysctl("probes")
    bound = dead_path_bound(
        {"keepalives": 1, "keepalives_idle": idle, "keepalives_interval": interval,
         "keepalives_count": count, "tcp_user_timeout": 0}
    )  # fmt: skip
    assert bound is not None
    return (
        f"         client TCP: keepalive after {idle} s idle, every {interval} s, {count} "
        "probes; no tcp_user_timeout (mysqlclient's and the OS's, as the doctor's own "
        f"connection has them): a silently dropped connection is found after {about(bound)} "
        f"({about(OS_RETRANSMIT)} with a statement unacknowledged)\n"
    )


# -- exact output ------------------------------------------------------------------------------


def test_exact_text_with_a_low_wait_timeout(
    mariadb: MariaDBServer, mysqldb: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    mariadb.set_global("wait_timeout", 5)
    version, comment = mariadb.execute("SELECT VERSION(), @@version_comment")[0]
    at = f"127.0.0.1:{mariadb.port}"
    code, out = doctor(capsys, "--dsn", mariadb.url(), "--workers", "2", "--threads", "4")
    assert out == (
        f"Server {at}\n"
        f"  MariaDB {version} ({comment}), read-write\n"
        "  max_connections 100, max_user_connections 0 (none): 100 for the application\n"
        "  wait_timeout 5 s, interactive_timeout 28800 s: the application's sessions close "
        "after 5 s idle\n"
        "  in front: nothing (direct connection)\n"
        "Processes\n"
        "  2 workers x 4 threads (gthread), preload off (from options); 1 host\n"
        "Databases\n"
        "  --dsn  connguard pool (min_size 0, max_size 10, max_lifetime 3600 s, max_idle 600 s)"
        f" -> {at}/connguard\n"
        + "         client TCP: keepalive after 30 s idle, every 10 s, 3 probes; "
        "tcp_user_timeout 30 s (connguard's defaults): a silently dropped connection is found "
        "after 40 s\n"
        + f"  at most 8 connections to {at} (2 workers x 4 (--dsn)); it accepts 100\n"
        "Findings\n"
        f"  WARNING CG106  --dsn: {at} closes sessions idle for 5 s (wait_timeout), but the "
        "pool closes idle connections only after max_idle 600 s (max_lifetime 3600 s); "
        "connguard finds such connections dead at checkout and replaces them "
        "(connections_lost), at the cost of a reconnect each time.\n"
        "                 fix: Set the pool's keepalive_interval below the timeout (e.g. 2.5 s: "
        "idle connections are then pinged), or max_idle to 2.5 s with min_size 0; or raise it "
        "for the application's sessions: init_command 'SET SESSION wait_timeout = 660'.\n"
        "0 errors, 1 warning, 0 info\n"
    )
    assert code == 0
    assert doctor(capsys, "--dsn", mariadb.url(), "--strict")[0] == 1
    # the fix works: pings every 2 s keep the sessions alive
    code, report = doctor_json(capsys, "--dsn", mariadb.url(), "--keepalive-interval", "2")
    assert (code, ids(report)) == (0, {})
    (server,) = report["servers"]
    assert (server["product"], server["wait_timeout"], server["session_wait_timeout"]) == (
        "MariaDB", 5.0, 5.0,
    )  # fmt: skip
    assert (server["read_only"], server["super_read_only"], server["pooler"]) == (
        False, None, None,
    )  # fmt: skip


def test_max_connections_10(
    mariadb: MariaDBServer, mysqldb: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    mariadb.set_global("max_connections", 10)
    at = f"127.0.0.1:{mariadb.port}"
    # 4 workers x min(max_size 10, 8 threads) = 32 > 10
    code, report = doctor_json(capsys, "--dsn", mariadb.url(), "--workers", "4", "--threads", "8")
    assert code == 1 and ids(report) == {"CG201": "error"}
    assert finding(report, "CG201")["message"] == (
        f"{at}: the processes may open 32 connections (4 workers x 8 (--dsn)) but the server "
        "accepts 10 (max_connections 10): past that, connects fail with 'Too many "
        "connections' (1040)."
    )
    assert finding(report, "CG201")["fix"] == (
        "Lower max_size to 2 (for 4 processes), put ProxySQL in front (it shares server "
        "connections between clients), or raise max_connections."
    )
    # 1 worker x 8 = 8 of 10: no room for deploys and consoles
    code, report = doctor_json(capsys, "--dsn", mariadb.url(), "--threads", "9")
    assert (code, ids(report)) == (0, {"CG202": "warning"})
    assert report["demand"][0]["limit"] == 10


def test_max_user_connections_of_the_account(
    mariadb: MariaDBServer, mysqldb: Any, account_limit: int, capsys: pytest.CaptureFixture[str]
) -> None:
    at = f"127.0.0.1:{mariadb.port}"
    code, report = doctor_json(capsys, "--dsn", mariadb.url(), "--workers", "2", "--threads", "4")
    assert code == 1 and ids(report) == {"CG205": "error"}
    assert finding(report, "CG205")["message"] == (
        f"{at}: the processes may open 8 connections (2 workers x 4 (--dsn)) but the account "
        "'connguard'@'%' may hold 5 at once (max_user_connections 5, the account's own "
        "limit): past that, connects fail with 'User 'connguard' has exceeded the "
        "'max_user_connections' resource' (1226)."
    )
    assert finding(report, "CG205")["fix"] == (
        "Lower max_size to 2 (for 2 processes), or raise the limit: ALTER USER "
        "'connguard'@'%' WITH MAX_USER_CONNECTIONS 8."
    )
    (server,) = report["servers"]
    assert (server["max_user_connections"], server["account_limit"]) == (5, True)
    assert report["demand"][0]["limit"] == 5
    # the limit is real: the sixth session is refused with the error the finding names
    conns = [mariadb.connect() for _ in range(5)]
    try:
        with pytest.raises(mysqldb.OperationalError) as refused:
            mariadb.connect()
        assert refused.value.args[0] == 1226
    finally:
        for conn in conns:
            conn.close()
    _, out = doctor(capsys, "--dsn", mariadb.url(), "--workers", "2", "--threads", "2")
    assert (
        "  max_connections 100, max_user_connections 5 (the account's own): 5 for the "
        "application\n" in out
    )
    assert "0 errors, 0 warnings, 0 info\n" in out


def test_read_only(
    mariadb: MariaDBServer, mysqldb: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    mariadb.set_global("read_only", 1)
    at = f"127.0.0.1:{mariadb.port}"
    code, report = doctor_json(capsys, "--dsn", mariadb.url())
    assert (code, ids(report)) == (0, {"CG501": "warning"})
    assert finding(report, "CG501")["message"] == (
        f"{at} is read-only: read_only is ON; every write will fail with 'The MariaDB server "
        "is running with the --read-only option so it cannot execute this statement' (1290)."
    )
    assert report["servers"][0]["read_only"] is True
    # the message is the server's own
    conn = mariadb.connect()
    try:
        with pytest.raises(mysqldb.OperationalError) as refused:
            conn.cursor().execute("CREATE TABLE doctor_ro (id int)")
        assert refused.value.args == (
            1290,
            "The MariaDB server is running with the --read-only option so it cannot execute "
            "this statement",
        )
    finally:
        conn.close()
    _, out = doctor(capsys, "--dsn", mariadb.url())
    assert ", read-only (read_only ON)\n" in out


def test_cannot_connect_exits_2(mysqldb: Any, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    code, report = doctor_json(capsys, "--dsn", f"mysql://app@127.0.0.1:{port}/app")
    assert code == 2
    (only,) = report["findings"]
    assert (only["id"], only["severity"]) == ("CG001", "error")
    assert only["message"].startswith(f"cannot connect to 127.0.0.1:{port} (--dsn): (2002, ")
    assert report["databases"][0]["client_tcp"] is None


def test_proxy_in_front(
    mariadb: MariaDBServer, mysqldb: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    with FaultProxy(mariadb.host, mariadb.port) as proxy:
        url = f"mysql://{mariadb.user}@{proxy.host}:{proxy.port}/{mariadb.database}"
        code, report = doctor_json(capsys, "--dsn", url)
    assert (code, ids(report)) == (0, {"CG404": "info"})
    assert report["servers"][0]["pooler"]["kind"] == "proxy"
    assert finding(report, "CG404")["message"] == (
        f"--dsn: something is between the application and the server: the server listens on "
        f"port {mariadb.port}, the connection went to port {proxy.port} (neither ProxySQL "
        "nor MaxScale recognised: a TCP proxy or port mapping?)."
    )


# -- Django settings with a MySQL ENGINE -------------------------------------------------------


def manage_doctor(
    server: MariaDBServer, engine: str, *argv: str, **database: Any
) -> tuple[int, str, str]:
    """``manage.py connguard doctor ARGV`` of a project whose one database is *server*
    (*database*: more keys of it); (exit code, stdout, stderr)."""
    db = {
        "ENGINE": engine, "NAME": server.database, "USER": server.user,
        "HOST": server.host, "PORT": str(server.port), **database,
    }  # fmt: skip
    environ = {k: v for k, v in os.environ.items() if k not in DETECTED_ENV}
    with tempfile.TemporaryDirectory(prefix="cg-doctor-mysql-") as cwd:
        Path(cwd, "doctor_mysql_settings.py").write_text(
            "SECRET_KEY = 'x'\nINSTALLED_APPS = ['connguard']\nUSE_TZ = True\n"
            f"DATABASES = {{'default': {db!r}}}\n"
        )
        environ.update(
            DJANGO_SETTINGS_MODULE="doctor_mysql_settings",
            PYTHONPATH=os.pathsep.join([cwd, environ.get("PYTHONPATH", "")]),
        )
        proc = subprocess.run(
            [sys.executable, "-m", "django", "connguard", "doctor", *argv],
            env=environ, cwd=cwd, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    return proc.returncode, proc.stdout, proc.stderr


def manage_json(server: MariaDBServer, engine: str, *argv: str, **db: Any) -> dict[str, Any]:
    _, out, err = manage_doctor(server, engine, "--json", *argv, **db)
    assert out.startswith("{"), err
    return dict(json.loads(out))


def test_client_tcp_of_a_pool_with_the_users_values(
    mariadb: MariaDBServer, mysqldb: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """What the pool's driver sets on its sockets: the user's keys over connguard's defaults
    (the stock engine's line, the OS's values, is checked by test_stock_engine_client_tcp)."""
    url = f"{mariadb.url()}?keepalives_idle=60&tcp_user_timeout=0"
    code, out = doctor(capsys, "--dsn", url)
    assert code == 0
    (line,) = [x for x in out.splitlines() if "client TCP" in x]
    assert line.strip() == (
        "client TCP: keepalive after 60 s idle, every 10 s, 3 probes; no tcp_user_timeout "
        "(set: keepalives_idle, tcp_user_timeout; connguard's defaults for the rest): a "
        f"silently dropped connection is found after {about(90.0)} ({about(OS_RETRANSMIT)} with "
        "a statement unacknowledged)"
    )
    _, report = doctor_json(capsys, "--dsn", f"{mariadb.url()}?keepalives=0")
    tcp = report["databases"][0]["client_tcp"]
    assert (tcp["keepalives"], tcp["set"], tcp["dead_path_bound"]) == (0, ["keepalives"], None)


def test_stock_engine_client_tcp(mariadb: MariaDBServer, mysqldb: Any) -> None:
    _, out, err = manage_doctor(mariadb, STOCK)
    assert os_keepalive_line() in out, err
    # the connguard engine: its defaults, OPTIONS over them
    report = manage_json(mariadb, CONNGUARD, OPTIONS={"keepalives_count": 5})
    tcp = report["databases"][0]["client_tcp"]
    assert tcp == {
        "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
        "keepalives_count": 5, "tcp_user_timeout": 30000, "set": ["keepalives_count"],
        "dead_path_bound": 40.0,
    }  # fmt: skip


def test_stock_engine_past_wait_timeout(mariadb: MariaDBServer, mysqldb: Any) -> None:
    mariadb.set_globals(wait_timeout=5, interactive_timeout=7)
    report = manage_json(mariadb, STOCK, "--workers", "2", CONN_MAX_AGE=60)
    assert report["exit_code"] == 1 and ids(report) == {"CG106": "error"}
    assert report["databases"][0]["mode"] == "persistent"
    assert finding(report, "CG106")["message"] == (
        f"default: 127.0.0.1:{mariadb.port} closes sessions idle for 5 s (wait_timeout), but "
        "a worker keeps its connection between requests for up to 60 s; the first query on "
        "such a connection fails with 'MySQL server has gone away' (2006; or 'Lost connection "
        "to server during query', 2013)."
    )
    assert finding(report, "CG106")["fix"] == (
        "Use ENGINE 'connguard.backends.mysql', or set CONN_MAX_AGE below the timeout (e.g. "
        "2) and CONN_HEALTH_CHECKS = True."
    )
    # read as the application's sessions get it: its init_command raises the timeout
    options = {"init_command": "SET SESSION wait_timeout = 3600"}
    report = manage_json(mariadb, STOCK, CONN_MAX_AGE=60, OPTIONS=options)
    assert ids(report) == {}
    assert report["servers"][0]["session_wait_timeout"] == 3600.0
    # an interactive client gets interactive_timeout
    report = manage_json(mariadb, STOCK, CONN_MAX_AGE=60, OPTIONS={"client_flag": 1024})
    assert finding(report, "CG106")["message"].startswith(
        f"default: 127.0.0.1:{mariadb.port} closes sessions idle for 7 s (interactive_timeout)"
    )
    # a connection per request: nothing to say
    assert ids(manage_json(mariadb, STOCK)) == {}


def test_connguard_engine_with_pool_options(mariadb: MariaDBServer, mysqldb: Any) -> None:
    mariadb.set_global("wait_timeout", 5)
    report = manage_json(mariadb, CONNGUARD, "--workers", "3", OPTIONS={"pool": {"max_size": 4}})
    (db,) = report["databases"]
    assert (db["engine"], db["mode"], db["max_size"], db["max_idle"]) == (
        "connguard", "connguard pool", 4, 600.0,
    )  # fmt: skip
    assert ids(report) == {"CG106": "warning"}
    assert finding(report, "CG106")["fix"].endswith(
        "or ['max_idle'] to 2.5 s with min_size 0; or raise it for the application's "
        "sessions: OPTIONS['init_command'] = 'SET SESSION wait_timeout = 660'."
    )
    assert report["demand"][0]["formula"] == "3 workers x 1 (default)"
    # the fix: idle connections closed before the server does
    report = manage_json(mariadb, CONNGUARD, OPTIONS={"pool": {"max_idle": 2}})
    assert (report["exit_code"], ids(report)) == (0, {})
    # bad pool options: the backend's own message, exit 2
    code, out, err = manage_doctor(mariadb, CONNGUARD, OPTIONS={"pool": {"max_sise": 4}})
    assert (code, out) == (2, "")
    assert err.startswith("connguard doctor: DATABASES['default']['OPTIONS']['pool']")
