"""One run of Django's own test suite against a throwaway PostgreSQL (run by
``scripts/django-suite`` with the venv's Python; usable alone too):

    python tests/django_suite/run.py --tests-dir django-5.2.19/tests --results out.json \\
        [--engine connguard.backends.postgresql] [--pool '{"min_size": 0, "max_size": 4}'] \\
        [--parallel 2] MODULE...

Starts a :class:`connguard.testing.server.PostgresServer` (as an unprivileged user when
root), runs ``runtests.py --settings=cgsuite_settings`` there, stops the server; exits with
runtests' status (the caller judges the recorded outcomes)."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from connguard.testing.server import PostgresServer

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tests-dir", required=True, type=Path)
    parser.add_argument("--results", required=True, type=Path)
    parser.add_argument("--engine", default="connguard.backends.postgresql")
    parser.add_argument("--pool", default="", help="OPTIONS['pool'] as JSON; empty: no key")
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("modules", nargs="*")
    args = parser.parse_args()
    from django.db.backends.postgresql.psycopg_any import is_psycopg3

    driver = __import__("psycopg" if is_psycopg3 else "psycopg2")
    print(f"run.py: Django's driver: {driver.__name__} {driver.__version__}", flush=True)
    # Django's suite opens many connections at once (test databases, clones, threads)
    server = PostgresServer(settings={"max_connections": 300}).start()
    try:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
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
