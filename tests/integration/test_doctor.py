"""``connguard doctor``: each finding triggered for real on the rig's server (and a real
PgBouncer in front of it), the text output compared exactly, the exit codes."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from connguard import cli
from connguard.doctor import cli as doctor_cli
from connguard.doctor import processes as doctor_processes
from connguard.doctor.model import Processes
from connguard.doctor.render_text import describe_processes
from connguard.testing import _teardown
from connguard.testing.pgbouncer import PgBouncer
from connguard.testing.server import PostgresServer

# The doctor talks to servers and poolers through psycopg 3 (the [cli] extra); a psycopg2-only
# environment (the django60 step of CI) has nothing to run here.
pytest.importorskip("psycopg", reason="connguard doctor needs psycopg 3 (pip install '.[cli]')")

DJANGO_DIR = Path(__file__).resolve().parents[1] / "django"
CONNGUARD = "connguard.backends.postgresql"
STOCK = "django.db.backends.postgresql"
#: environment variables the process model is read from (the tests set their own)
DETECTED_ENV = (
    "GUNICORN_CMD_ARGS", "WEB_CONCURRENCY", "UVICORN_WORKERS", "CELERY_WORKER_CONCURRENCY",
    "CELERYD_CONCURRENCY", "CELERY_BROKER_URL",
)  # fmt: skip


@pytest.fixture(autouse=True)
def _no_detected_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in DETECTED_ENV:
        monkeypatch.delenv(name, raising=False)


def doctor(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """``connguard doctor ARGV`` in this process: (exit code, stdout)."""
    code = cli.main(["doctor", *argv])
    return code, capsys.readouterr().out


def doctor_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code, out = doctor(capsys, "--json", *argv)
    return code, json.loads(out)


def ids(report: dict[str, Any]) -> dict[str, str]:
    """finding id -> severity (each id once in these tests)."""
    return {f["id"]: f["severity"] for f in report["findings"]}


def manage_doctor(
    server: PostgresServer,
    *argv: str,
    port: int | None = None,
    extra_settings: str = "",
    env: Mapping[str, str] | None = None,
    **settings: str,
) -> tuple[int, dict[str, Any]]:
    """``manage.py connguard doctor --json`` of the test project with CGT_* settings.

    ``extra_settings``: Python run after the test project's settings (in a settings module of
    its own); ``env``: environment variables (GUNICORN_CMD_ARGS, ...), none inherited."""
    environ = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("CGT_", "GUNICORN")) and k not in DETECTED_ENV
    }  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="cg-doctor-") as cwd:
        module = "metricsproject.settings"
        if extra_settings:
            module = "doctor_settings"
            Path(cwd, f"{module}.py").write_text(
                "from metricsproject.settings import *  # noqa: F403\n\n" + extra_settings
            )
        environ.update(
            DJANGO_SETTINGS_MODULE=module,
            PYTHONPATH=os.pathsep.join([cwd, str(DJANGO_DIR), environ.get("PYTHONPATH", "")]),
            CGT_DB_HOST=server.host,
            CGT_DB_PORT=str(port or server.port),
            CGT_DB_USER=server.user,
            CGT_DB_NAME="postgres",
        )
        environ.update({f"CGT_{k}": v for k, v in settings.items()})
        environ.update(env or {})
        proc = subprocess.run(
            [sys.executable, "-m", "django", "connguard", "doctor", "--json", *argv],
            env=environ, cwd=cwd, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert proc.stdout.startswith("{"), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def server_lines(server: PostgresServer) -> tuple[str, str]:
    version, num = server.execute(
        "SELECT current_setting('server_version'), current_setting('server_version_num')::int"
    )[0]
    reserved = "reserved 3 (superuser 3)"
    if num >= 160000:
        reserved = "reserved 3 (superuser 3, reserved_connections 0)"
    return version, reserved


# -- exact output ------------------------------------------------------------------------------


def test_exact_text_with_idle_session_timeout(
    pg: PostgresServer, capsys: pytest.CaptureFixture[str]
) -> None:
    pg.set_config(
        idle_session_timeout="5s", statement_timeout="30s",
        idle_in_transaction_session_timeout="60s", tcp_keepalives_idle=60,
        tcp_keepalives_interval=10, tcp_keepalives_count=6,
    )  # fmt: skip
    version, reserved = server_lines(pg)
    code, out = doctor(capsys, "--dsn", pg.conninfo(), "--workers", "2", "--threads", "4")
    at = f"127.0.0.1:{pg.port}"
    assert out == (
        f"Server {at}\n"
        f"  PostgreSQL {version}, primary, read-write\n"
        f"  max_connections 100, {reserved}: 97 for applications\n"
        "  idle_session_timeout 5 s, idle_in_transaction_session_timeout 60 s, "
        "statement_timeout 30 s\n"
        "  tcp_keepalives idle 60 s, interval 10 s, count 6\n"
        "  in front: nothing (direct connection)\n"
        "Processes\n"
        "  2 workers x 4 threads (gthread), preload off (from options); 1 host\n"
        "Databases\n"
        "  --dsn  connguard pool (min_size 0, max_size 10, max_lifetime 3600 s, max_idle 600 s)"
        f" -> {at}/postgres\n"
        "         client TCP: keepalive after 30 s idle, every 10 s, 3 probes; tcp_user_timeout "
        "30 s (connguard's defaults): a silently dropped connection is found after 40 s\n"
        f"  at most 8 connections to {at} (2 workers x 4 (--dsn)); it accepts 97\n"
        "Findings\n"
        f"  WARNING CG101  --dsn: {at} closes sessions idle for 5 s (idle_session_timeout), but "
        "the pool closes idle connections only after max_idle 600 s (max_lifetime 3600 s); "
        "connguard finds such connections dead at checkout and replaces them "
        "(connections_lost), at the cost of a reconnect each time.\n"
        "                 fix: Set the pool's keepalive_interval below the timeout (e.g. 2.5 s: "
        "idle connections are then pinged), or max_idle to 2.5 s with min_size 0; or exempt "
        "the application's role: ALTER ROLE app SET idle_session_timeout = 0.\n"
        "0 errors, 1 warning, 0 info\n"
    )
    assert code == 0  # a warning alone passes...
    assert doctor(capsys, "--dsn", pg.conninfo(), "--strict")[0] == 1  # ...unless --strict
    # the fix works: pings every 2 s keep the sessions alive
    code, report = doctor_json(capsys, "--dsn", pg.conninfo(), "--keepalive-interval", "2")
    assert (code, ids(report)) == (0, {})


def test_default_server_reports_keepalives_and_missing_timeouts(
    pg: PostgresServer, capsys: pytest.CaptureFixture[str]
) -> None:
    code, report = doctor_json(capsys, "--dsn", pg.conninfo() + " password=s3cret")
    assert code == 0
    assert ids(report) == {"CG103": "info", "CG104": "info", "CG105": "info"}
    assert report["databases"][0]["conninfo"] == pg.conninfo() + " password=***"
    message = next(f["message"] for f in report["findings"] if f["id"] == "CG103")
    assert "tcp_keepalives_idle is 7200 s" in message and "2 h 11 min" in message
    (server,) = report["servers"]
    assert (server["max_connections"], server["budget"], server["in_recovery"]) == (100, 97, False)
    assert report["processes"]["server"] == "unknown"
    assert report["notes"] == [
        "process model unknown: 1 process with 1 thread assumed (give --workers/--threads, "
        "--gunicorn-config, --asgi or --gevent)"
    ]


def test_client_tcp_settings_in_effect(
    pg: PostgresServer, capsys: pytest.CaptureFixture[str]
) -> None:
    # connguard's defaults, except what the conninfo sets
    conninfo = pg.conninfo(keepalives_idle=60, tcp_user_timeout=0)
    _, out = doctor(capsys, "--dsn", conninfo)
    (line,) = [ln for ln in out.splitlines() if "client TCP:" in ln]
    assert line == (
        "         client TCP: keepalive after 60 s idle, every 10 s, 3 probes; no "
        "tcp_user_timeout (set: keepalives_idle, tcp_user_timeout; connguard's defaults for "
        "the rest): a silently dropped connection is found after 1 min (15 min with a "
        "statement unacknowledged)"
    )
    _, report = doctor_json(capsys, "--dsn", pg.conninfo())
    assert report["databases"][0]["client_tcp"] == {
        "keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10,
        "keepalives_count": 3, "tcp_user_timeout": 30000, "set": [], "dead_path_bound": 40.0,
    }  # fmt: skip


def test_cannot_connect_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    code, report = doctor_json(
        capsys, "--dsn", f"host=127.0.0.1 port={port} user=postgres connect_timeout=2"
    )
    assert code == 2
    (finding,) = report["findings"]
    assert finding["id"] == "CG001" and finding["severity"] == "error"
    assert finding["message"].startswith(f"cannot connect to 127.0.0.1:{port} (--dsn): ")


def test_read_only_server(pg: PostgresServer, capsys: pytest.CaptureFixture[str]) -> None:
    pg.set_config(default_transaction_read_only="on")
    _, report = doctor_json(capsys, "--dsn", pg.conninfo())
    assert ids(report)["CG501"] == "warning"
    message = next(f["message"] for f in report["findings"] if f["id"] == "CG501")
    assert message == (
        f"127.0.0.1:{pg.port} is read-only: default_transaction_read_only is on; every write "
        "will fail with 'cannot execute ... in a read-only transaction'."
    )


@pytest.fixture
def standby(pg: PostgresServer) -> Iterator[PostgresServer]:
    """A hot standby of the rig's server (pg_basebackup -R), running on its own port."""
    replica = PostgresServer()
    run_as = replica._run_as
    as_user = _teardown.run_as_kwargs(run_as.uid, run_as.gid) if run_as else {}
    try:
        replica._run(
            [str(replica.bin_dir / "pg_basebackup"), "-h", pg.host, "-p", str(pg.port),
             "-U", pg.user, "-D", str(replica.data_dir), "-R", "-c", "fast", "--no-sync"],
            "pg_basebackup",
        )  # fmt: skip
        replica._write_conf()  # its own port and socket directory
        with replica.log_path.open("ab") as log:
            proc = subprocess.Popen(
                [str(replica.bin_dir / "postgres"), "-D", str(replica.data_dir)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, **as_user,
            )  # fmt: skip
        try:
            deadline = time.monotonic() + 30
            pidfile = replica.data_dir / "postmaster.pid"
            while True:  # a hot standby says "standby" where a primary says "ready"
                with contextlib.suppress(OSError):
                    lines = pidfile.read_text().splitlines()
                    if len(lines) >= 8 and lines[7].strip() in ("ready", "standby"):
                        break
                assert proc.poll() is None and time.monotonic() < deadline, replica.log_tail()
                time.sleep(0.02)
            yield replica
        finally:
            proc.send_signal(signal.SIGINT)  # fast shutdown
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
    finally:
        replica.cleanup()


def test_standby_in_recovery(standby: PostgresServer, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = doctor_json(capsys, "--dsn", standby.conninfo())
    assert code == 0 and report["servers"][0]["in_recovery"] is True
    message = next(f["message"] for f in report["findings"] if f["id"] == "CG501")
    assert message == (
        f"127.0.0.1:{standby.port} is read-only: it is a standby in recovery "
        "(pg_is_in_recovery() is true); every write will fail with 'cannot execute ... in a "
        "read-only transaction'."
    )


# -- the connection budget ---------------------------------------------------------------------


def test_budget_against_max_connections_20(
    pg: PostgresServer, capsys: pytest.CaptureFixture[str]
) -> None:
    pg.set_config(restart=True, max_connections=20)
    at = f"127.0.0.1:{pg.port}"
    # 4 workers x min(max_size 10, 8 threads) = 32 > 20 - 3 reserved
    code, report = doctor_json(capsys, "--dsn", pg.conninfo(), "--workers", "4", "--threads", "8")
    assert code == 1 and ids(report)["CG201"] == "error"
    finding = next(f for f in report["findings"] if f["id"] == "CG201")
    assert finding["message"] == (
        f"{at}: the processes may open 32 connections (4 workers x 8 (--dsn)) but the server "
        "accepts 17 (20 max_connections - 3 reserved = 17): past that, connects fail with "
        "'sorry, too many clients already'."
    )
    assert finding["fix"] == (
        "Lower max_size to 4 (for 4 processes), put PgBouncer in transaction mode in front, "
        "or raise max_connections."
    )
    # the same fleet on 3 hosts, each 1 worker x 8 threads: 24 > 17
    code, report = doctor_json(
        capsys, "--dsn", pg.conninfo(), "--workers", "1", "--threads", "8", "--hosts", "3"
    )
    finding = next(f for f in report["findings"] if f["id"] == "CG201")
    assert "may open 24 connections (3 hosts x (1 worker x 8 (--dsn)))" in finding["message"]
    # 2 x 8 = 16 fits in 17, but leaves no room: a warning
    code, report = doctor_json(capsys, "--dsn", pg.conninfo(), "--workers", "2", "--threads", "8")
    assert code == 0 and ids(report)["CG202"] == "warning"
    # Celery processes count too: 2 x 4 + 10 x 1 = 18 > 17
    code, report = doctor_json(
        capsys, "--dsn", pg.conninfo(), "--workers", "2", "--threads", "4",
        "--celery-concurrency", "10",
    )  # fmt: skip
    assert "2 workers x 4 (--dsn) + 10 Celery x 1" in next(
        f["message"] for f in report["findings"] if f["id"] == "CG201"
    )


# -- the process model, read from Django settings and a gunicorn config -------------------------


def test_stock_engine_preload_asgi_and_idle_timeout(pg: PostgresServer, tmp_path: Path) -> None:
    pg.set_config(idle_session_timeout="30s")
    config = tmp_path / "gunicorn.conf.py"
    config.write_text("import multiprocessing\nworkers = 2 + 1\npreload_app = True\n")
    code, report = manage_doctor(
        pg, "--gunicorn-config", str(config), "--asgi", DB_ENGINE=STOCK, CONN_MAX_AGE="60"
    )
    assert code == 1
    found = ids(report)
    assert {k: found[k] for k in ("CG101", "CG301", "CG303")} == {
        "CG101": "error",  # CONN_MAX_AGE 60 > idle_session_timeout 30 s, no health checks
        "CG301": "error",  # preload + persistent connections
        "CG303": "error",  # persistent connections under ASGI
    }
    assert report["processes"]["workers"] == 3 and report["processes"]["preload"] is True
    assert report["processes"]["source"] == f"{config}, options"
    cg101 = next(f for f in report["findings"] if f["id"] == "CG101")
    assert cg101["message"] == (
        f"default: 127.0.0.1:{pg.port} closes sessions idle for 30 s (idle_session_timeout), "
        "but a worker keeps its connection between requests for up to 60 s; the first query "
        "on such a connection fails with 'terminating connection due to idle-session "
        "timeout' (or 'server closed the connection unexpectedly')."
    )


def test_client_tcp_of_the_stock_engine_is_the_os_defaults(pg: PostgresServer) -> None:
    _, report = manage_doctor(pg, DB_ENGINE=STOCK)
    tcp = report["databases"][0]["client_tcp"]
    assert (tcp["keepalives"], tcp["tcp_user_timeout"], tcp["set"]) == (1, 0, [])
    _, report = manage_doctor(pg, DB_ENGINE=CONNGUARD)
    tcp = report["databases"][0]["client_tcp"]
    assert (tcp["keepalives_idle"], tcp["tcp_user_timeout"], tcp["dead_path_bound"]) == (
        30,
        30000,
        40.0,
    )


def test_preload_with_connguard_is_neutralised(pg: PostgresServer) -> None:
    code, report = manage_doctor(pg, "--preload", "--workers", "2", DB_ENGINE=CONNGUARD)
    assert code == 0 and ids(report)["CG302"] == "info" and "CG301" not in ids(report)
    # the stock engine without persistent connections: a warning, not an error
    code, report = manage_doctor(pg, "--preload", "--workers", "2", DB_ENGINE=STOCK)
    assert code == 0 and ids(report)["CG301"] == "warning"
    # ...and under ASGI nothing bounds its connections
    _, report = manage_doctor(pg, "--asgi", DB_ENGINE=STOCK)
    assert ids(report)["CG204"] == "warning"
    assert report["databases"][0]["mode"] == "per request"
    # connguard's engine with the pool off keeps Django's persistent connections: same pile-up
    code, report = manage_doctor(
        pg, "--asgi", DB_ENGINE=CONNGUARD, CONN_MAX_AGE="60", DB_OPTIONS='{"pool": false}'
    )
    assert code == 1 and ids(report)["CG303"] == "error"


def test_unreadable_gunicorn_config(
    pg: PostgresServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gunicorn.conf.py"
    config.write_text("workers = undefined_name\n")
    _, report = doctor_json(capsys, "--dsn", pg.conninfo(), "--gunicorn-config", str(config))
    finding = next(f for f in report["findings"] if f["id"] == "CG002")
    assert finding["message"] == (
        f"cannot read the gunicorn config {config}: name 'undefined_name' is not defined"
    )


def test_gunicorn_cmd_args(
    pg: PostgresServer, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GUNICORN_CMD_ARGS", "--workers 5 -k gevent --worker-connections 50")
    _, report = doctor_json(capsys, "--dsn", pg.conninfo(), "--max-size", "4")
    proc = report["processes"]
    assert (proc["workers"], proc["gevent"], proc["worker_connections"]) == (5, True, 50)
    assert (proc["asgi"], proc["source"]) == (False, "GUNICORN_CMD_ARGS")
    assert report["demand"][0]["total"] == 20  # 5 workers x min(max_size 4, 50 greenlets)
    assert describe_processes(Processes(**proc)) == (
        "5 workers x 50 greenlets (gevent), preload off (from GUNICORN_CMD_ARGS); 1 host"
    )


ASGI_ONLY = 'ASGI_APPLICATION = "metricsproject.asgi.application"\ndel WSGI_APPLICATION\n'
ASGI_TOO = 'ASGI_APPLICATION = "metricsproject.asgi.application"\n'
WORKERS_UNKNOWN = (
    "ASGI server's worker processes unknown: 1 assumed "
    "(give --workers, or set UVICORN_WORKERS or WEB_CONCURRENCY)"
)
BOTH_SET = (
    "ASGI_APPLICATION and WSGI_APPLICATION are both set: served through WSGI assumed; pass "
    "--asgi if it is served through ASGI (uvicorn, daphne, hypercorn)"
)


def processes(report: dict[str, Any]) -> tuple[str, bool, int, str]:
    proc = report["processes"]
    return proc["server"], proc["asgi"], proc["workers"], proc["source"]


def test_asgi_from_the_settings(pg: PostgresServer) -> None:
    # ASGI_APPLICATION without WSGI_APPLICATION: served through ASGI
    _, report = manage_doctor(pg, extra_settings=ASGI_ONLY, DB_ENGINE=STOCK)
    assert processes(report) == ("asgi", True, 1, "ASGI_APPLICATION")
    assert ids(report)["CG204"] == "warning"  # nothing bounds the stock engine under ASGI
    assert report["notes"] == [WORKERS_UNKNOWN]
    assert describe_processes(Processes(**report["processes"])) == (
        "1 worker x ASGI (requests in flight not bounded), preload off (from ASGI_APPLICATION); "
        "1 host"
    )
    # persistent connections: the ASGI finding, as with --asgi
    code, report = manage_doctor(pg, extra_settings=ASGI_ONLY, DB_ENGINE=STOCK, CONN_MAX_AGE="60")
    assert code == 1 and ids(report)["CG303"] == "error"
    # uvicorn's workers: UVICORN_WORKERS over WEB_CONCURRENCY (as uvicorn reads them)...
    env = {"WEB_CONCURRENCY": "2", "UVICORN_WORKERS": "3"}
    _, report = manage_doctor(pg, extra_settings=ASGI_ONLY, env=env)
    assert processes(report) == (
        "asgi", True, 3, "WEB_CONCURRENCY, ASGI_APPLICATION, UVICORN_WORKERS"
    )  # fmt: skip
    assert report["notes"] == []
    _, report = manage_doctor(pg, extra_settings=ASGI_ONLY, env={"WEB_CONCURRENCY": "2"})
    assert processes(report) == ("asgi", True, 2, "WEB_CONCURRENCY, ASGI_APPLICATION")
    # ...and --workers over both
    _, report = manage_doctor(pg, "--workers", "5", extra_settings=ASGI_ONLY, env=env)
    assert processes(report)[1:3] == (True, 5)
    assert report["processes"]["source"].endswith(", options")
    # gunicorn says otherwise: its worker class (sync by default) serves WSGI
    _, report = manage_doctor(pg, extra_settings=ASGI_ONLY, env={"GUNICORN_CMD_ARGS": "-w 2"})
    assert processes(report) == ("gunicorn", False, 2, "GUNICORN_CMD_ARGS")
    assert report["notes"] == []
    _, report = manage_doctor(pg, "--worker-class", "gthread", extra_settings=ASGI_ONLY)
    assert report["processes"]["asgi"] is False
    _, report = manage_doctor(pg, "--gevent", extra_settings=ASGI_ONLY)
    assert (report["processes"]["asgi"], report["processes"]["gevent"]) == (False, True)


def test_asgi_and_wsgi_both_set_is_not_guessed(pg: PostgresServer) -> None:
    _, report = manage_doctor(pg, "--workers", "2", extra_settings=ASGI_TOO)
    assert processes(report) == ("gunicorn", False, 2, "options")
    assert report["notes"] == [BOTH_SET]
    # --asgi says it
    _, report = manage_doctor(pg, "--asgi", "--workers", "2", extra_settings=ASGI_TOO)
    assert processes(report) == ("gunicorn", True, 2, "options")
    assert report["notes"] == []
    # a gunicorn config says it too (sync workers: WSGI)
    _, report = manage_doctor(pg, extra_settings=ASGI_TOO, env={"GUNICORN_CMD_ARGS": "-w 2"})
    assert processes(report) == ("gunicorn", False, 2, "GUNICORN_CMD_ARGS")
    assert report["notes"] == []
    # WSGI_APPLICATION alone (the test project): nothing to say
    _, report = manage_doctor(pg, "--workers", "2")
    assert report["notes"] == []


def test_gevent_and_uvicorn_workers_in_gunicorn_cmd_args(pg: PostgresServer) -> None:
    # gunicorn's gevent workers serve WSGI even where the settings name only an ASGI app
    cmd_args = "-w 3 -k gevent --worker-connections 20"
    _, report = manage_doctor(
        pg, extra_settings=ASGI_ONLY, env={"GUNICORN_CMD_ARGS": cmd_args}, DB_ENGINE=CONNGUARD
    )
    proc = report["processes"]
    assert (proc["gevent"], proc["asgi"], proc["worker_class"]) == (True, False, "gevent")
    assert (proc["workers"], proc["worker_connections"]) == (3, 20)
    assert proc["source"] == "GUNICORN_CMD_ARGS"
    assert report["demand"][0]["total"] == 30  # 3 workers x min(max_size 10, 20 greenlets)
    # uvicorn's gunicorn worker: ASGI whatever the settings say
    cmd_args = "--worker-class=uvicorn.workers.UvicornWorker -w 3"
    _, report = manage_doctor(pg, env={"GUNICORN_CMD_ARGS": cmd_args}, DB_ENGINE=STOCK)
    assert processes(report) == ("gunicorn", True, 3, "GUNICORN_CMD_ARGS")
    assert report["processes"]["gevent"] is False and ids(report)["CG204"] == "warning"


def test_celery_from_the_settings_and_the_environment(pg: PostgresServer) -> None:
    celery = "CELERY_BROKER_URL = 'memory://'\nCELERY_WORKER_CONCURRENCY = 6\n"
    argv = ("--workers", "2", "--threads", "4")
    _, report = manage_doctor(pg, *argv, extra_settings=celery, DB_ENGINE=CONNGUARD)
    proc = report["processes"]
    assert (proc["celery"], proc["celery_source"]) == (6, "CELERY_WORKER_CONCURRENCY")
    (need,) = report["demand"]
    assert need["total"] == 14 and need["formula"] == "2 workers x 4 (default) + 6 Celery x 1"
    assert describe_processes(Processes(**proc)) == (
        "2 workers x 4 threads (gthread), preload off (from options); Celery: 6 processes "
        "(from CELERY_WORKER_CONCURRENCY); 1 host"
    )
    assert report["notes"] == []
    # the environment (a worker's -c $CELERYD_CONCURRENCY) over the setting
    env = {"CELERYD_CONCURRENCY": "3"}
    _, report = manage_doctor(pg, *argv, extra_settings=celery, env=env)
    proc = report["processes"]
    assert (proc["celery"], proc["celery_source"]) == (3, "CELERYD_CONCURRENCY")
    # the option over both
    _, report = manage_doctor(
        pg, *argv, "--celery-concurrency", "2", extra_settings=celery, env=env
    )
    proc = report["processes"]
    assert (proc["celery"], proc["celery_source"]) == (2, "options")
    # a broker but no concurrency: Celery's default, the CPU count, said to be assumed
    cpus = os.cpu_count() or 1
    broker = "CELERY_BROKER_URL = 'memory://'\n"
    _, report = manage_doctor(pg, *argv, extra_settings=broker)
    proc = report["processes"]
    assert (proc["celery"], proc["celery_source"]) == (
        cpus, "CELERY_BROKER_URL; Celery's default assumed"
    )  # fmt: skip
    assert report["notes"] == [
        "Celery: a broker is configured (CELERY_BROKER_URL) but no concurrency: Celery's "
        f"default, the CPU count, assumed: {cpus} process{'es' if cpus != 1 else ''} per host "
        "(this machine's CPUs; give --celery-concurrency, or set CELERY_WORKER_CONCURRENCY)"
    ]
    assert f" + {cpus} Celery x 1" in report["demand"][0]["formula"]
    # no broker, no concurrency: no Celery
    _, report = manage_doctor(pg, *argv)
    assert (report["processes"]["celery"], report["processes"]["celery_source"]) == (0, "")


def detect(argv: Sequence[str] = (), settings: Any = None) -> tuple[Processes, list[str]]:
    """``detect_processes`` for these options and settings (any object with attributes)."""
    parser = argparse.ArgumentParser()
    doctor_cli.add_arguments(parser)
    notes: list[str] = []
    model, _ = doctor_processes.detect_processes(parser.parse_args(argv), notes, settings)
    return model, notes


def test_celery_settings_need_celery(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no ./gunicorn.conf.py
    settings = SimpleNamespace(CELERY_WORKER_CONCURRENCY="4", CELERY_BROKER_URL="redis://x")
    assert (detect(settings=settings)[0].celery, detect()[0].celery) == (4, 0)
    old = SimpleNamespace(CELERYD_CONCURRENCY=5)  # Celery's old setting name
    assert detect(settings=old)[0].celery_source == "CELERYD_CONCURRENCY"
    auto = SimpleNamespace(CELERY_WORKER_CONCURRENCY="auto")
    model, notes = detect(settings=auto)
    assert model.celery == (os.cpu_count() or 1)
    assert model.celery_source == "CELERY_WORKER_CONCURRENCY 'auto'; the CPU count assumed"
    assert notes[0].startswith("Celery: CELERY_WORKER_CONCURRENCY is 'auto', the CPU count, ")
    monkeypatch.setattr(doctor_processes, "_celery_importable", lambda: False)
    assert detect(settings=settings)[0].celery == 0  # the app cannot run Celery
    # the environment describes the deployment, with or without Django's settings
    monkeypatch.setenv("CELERY_WORKER_CONCURRENCY", "7")
    model, _ = detect()
    assert (model.celery, model.celery_source) == (7, "CELERY_WORKER_CONCURRENCY")
    # without Celery, the web process model stays unknown
    monkeypatch.delenv("CELERY_WORKER_CONCURRENCY")
    model, notes = detect(["--celery-concurrency", "3"])
    assert (model.server, model.celery, model.celery_source) == ("unknown", 3, "options")
    assert notes[0].startswith("process model unknown")


# -- what sits in front of the server ----------------------------------------------------------


@pytest.fixture(scope="module")
def pgbouncer_settings() -> dict[str, Any]:
    """The rig's ``pgbouncer`` fixture, small enough for the findings below."""
    return {
        "pool_mode": "transaction", "max_client_conn": 10, "default_pool_size": 4,
        "extra": {"client_idle_timeout": "20"},
    }  # fmt: skip


def test_pgbouncer_in_transaction_mode(pg: PostgresServer, pgbouncer: PgBouncer) -> None:
    port = pgbouncer.port
    code, report = manage_doctor(
        pg, "--workers", "4", "--threads", "4", port=port,
        DB_ENGINE=CONNGUARD, DB_OPTIONS=json.dumps({"prepare_threshold": 5}),
    )  # fmt: skip
    (server,) = report["servers"]
    assert server["pooler"]["kind"] == "pgbouncer"
    assert (server["pooler"]["pool_mode"], server["pooler"]["max_client_conn"]) == (
        "transaction",
        10,
    )
    assert server["max_connections"] == 100  # the facts still come from the server behind
    assert code == 1
    assert ids(report) == {
        "CG401": "error",  # server-side cursors enabled
        "CG203": "error",  # 4 workers x 4 > max_client_conn 10
        "CG102": "warning",  # idle 600 s > client_idle_timeout 20 s
        "CG402": "warning",  # prepare_threshold 5
        "CG403": "warning",  # server_pooler not declared
        "CG103": "info",
        "CG104": "info",
        "CG105": "info",
    }
    by_id = {f["id"]: f for f in report["findings"]}
    assert by_id["CG403"]["message"] == (
        f"default: PgBouncer {server['pooler']['version']} at 127.0.0.1:{port} runs in "
        "transaction mode, but the settings say server_pooler is not declared."
    )
    assert by_id["CG203"]["message"] == (
        f"PgBouncer at 127.0.0.1:{port}: up to 16 client connections (4 workers x 4 "
        "(default)) but max_client_conn is 10: the rest are refused with 'no more "
        "connections allowed'."
    )
    # declared and fixed: nothing left but the server's own infos
    code, report = manage_doctor(
        pg, "--workers", "2", port=port, DB_ENGINE=CONNGUARD,
        DISABLE_SERVER_SIDE_CURSORS="1",
        DB_OPTIONS=json.dumps({"pool": {"server_pooler": "transaction", "max_idle": 10}}),
    )  # fmt: skip
    assert code == 0
    assert set(ids(report)) == {"CG103", "CG104", "CG105"}


def test_unknown_proxy_in_front(
    pg: PostgresServer, fault_proxy: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = f"host={fault_proxy.host} port={fault_proxy.port} user={pg.user} dbname=postgres"
    _, report = doctor_json(capsys, "--dsn", dsn)
    assert report["servers"][0]["pooler"]["kind"] == "proxy"
    finding = next(f for f in report["findings"] if f["id"] == "CG404")
    assert finding["message"].startswith(
        f"--dsn: something is between the application and the server: the server listens on "
        f"port {pg.port}, the connection went to port {fault_proxy.port}; no PgBouncer admin "
        "console answered ("
    )
