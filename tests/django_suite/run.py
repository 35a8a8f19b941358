"""One run of Django's own test suite against a throwaway PostgreSQL or MariaDB (run by
``scripts/django-suite`` with the venv's Python; usable alone too):

    python tests/django_suite/run.py --tests-dir django-5.2.19/tests --results out.json \\
        [--database postgresql|mariadb] [--engine connguard.backends.postgresql] \\
        [--pool '{"min_size": 0, "max_size": 4}'] [--parallel 2] MODULE...

Starts a :class:`connguard.testing.server.PostgresServer` or a
:class:`connguard.testing.mariadb.MariaDBServer` (as an unprivileged user when root), runs
``runtests.py --settings=cgsuite_settings`` there, stops the server; exits with runtests'
status (the caller judges the recorded outcomes).

On MariaDB the application account is granted every privilege (Django's MySQL tests create
and drop ``test_django`` and ``test_django_other`` and read server variables) and the time
zone tables are loaded (``mariadb-tzinfo-to-sql``), as Django's MySQL tests expect."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def start_postgresql() -> Any:
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    from connguard.testing.server import PostgresServer

    driver = __import__("psycopg" if is_psycopg3 else "psycopg2")
    print(f"run.py: Django's driver: {driver.__name__} {driver.__version__}", flush=True)
    # Django's suite opens many connections at once (test databases, clones, threads)
    return PostgresServer(settings={"max_connections": 300}).start()


def start_mariadb() -> Any:
    import MySQLdb

    from connguard.testing.mariadb import MariaDBServer

    print(f"run.py: Django's driver: mysqlclient {MySQLdb.version_info}", flush=True)
    server = MariaDBServer(settings={"max_connections": 300}).start()
    try:
        server.execute(f"GRANT ALL PRIVILEGES ON *.* TO '{server.user}'@'%' WITH GRANT OPTION")
        tzinfo = shutil.which("mariadb-tzinfo-to-sql") or shutil.which("mysql_tzinfo_to_sql")
        if tzinfo and Path("/usr/share/zoneinfo").is_dir():
            sql = subprocess.run(
                [tzinfo, "/usr/share/zoneinfo"], capture_output=True, text=True, check=True
            ).stdout
            conn = server.admin_connection("mysql")
            try:
                cur = conn.cursor()
                for statement in _statements(sql):
                    cur.execute(statement)
                cur.close()
            finally:
                conn.close()
        else:
            print("run.py: no mariadb-tzinfo-to-sql: time zone tables not loaded", flush=True)
        print(f"run.py: {server.execute('SELECT VERSION()')[0][0]}", flush=True)
    except BaseException:
        server.cleanup()
        raise
    return server


def _statements(sql: str) -> list[str]:
    """The statements of mariadb-tzinfo-to-sql's output (one per line or ';'-terminated
    block; no ';' inside its string literals)."""
    return [
        part.strip()
        for part in sql.split(";\n")
        if part.strip() and not part.strip().startswith("\\d")
    ]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tests-dir", required=True, type=Path)
    parser.add_argument("--results", required=True, type=Path)
    parser.add_argument("--database", default="postgresql", choices=["postgresql", "mariadb"])
    parser.add_argument("--engine", default="connguard.backends.postgresql")
    parser.add_argument("--pool", default="", help="OPTIONS['pool'] as JSON; empty: no key")
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("modules", nargs="*")
    args = parser.parse_args()
    server = start_mariadb() if args.database == "mariadb" else start_postgresql()
    try:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
            "CGSUITE_DATABASE": args.database,
            "CGSUITE_ENGINE": args.engine,
            "CGSUITE_HOST": server.host,
            "CGSUITE_PORT": str(server.port),
            "CGSUITE_USER": server.user,
            "CGSUITE_POOL": args.pool,
            "CGSUITE_RESULTS": str(args.results.resolve()),
        }
        argv = [
            sys.executable, "runtests.py", "--settings=cgsuite_settings", "--noinput",
            f"--parallel={args.parallel}", *args.modules,
        ]  # fmt: skip
        return subprocess.call(argv, cwd=args.tests_dir, env=env)
    finally:
        server.cleanup()


if __name__ == "__main__":
    sys.exit(main())
