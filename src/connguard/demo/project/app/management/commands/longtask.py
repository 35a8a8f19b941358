"""``manage.py longtask --sleep N``: query, sleep N seconds, query again; exit 0 on success, 1 on failure.

Sleeping past the server's ``idle_session_timeout`` (or across a restart) kills the
connection that Django keeps open for the whole command (management commands have no
request cycle, so CONN_MAX_AGE never closes it): on the stock backend the second query
fails.  Prints one JSON line describing what happened.
"""

from __future__ import annotations

import json
import sys
import time

from django.core.management.base import BaseCommand

from connguard.demo.project.app import work


class Command(BaseCommand):
    help = "Query, sleep past the idle timeout, query again (exit 1 if a query fails)."

    def add_arguments(self, parser):
        parser.add_argument("--sleep", type=float, default=5.0, help="seconds to sleep")
        parser.add_argument("--key", default="k0000", help="Item key to read")

    def handle(self, *args, **options):
        key = options["key"]
        report: dict = {"key": key, "sleep": options["sleep"], "queries": 0, "errors": []}
        ok = True
        for step in ("before", "after"):
            if step == "after":
                time.sleep(options["sleep"])
            report["queries"] += 1
            try:
                row = work.get_row(key)
            except Exception as exc:
                ok = False
                report["errors"].append(f"{step}: {type(exc).__name__}: {exc}"[:500])
                continue
            report[step] = row
            if row.get("key") != key:
                ok = False
                report["errors"].append(f"{step}: wrong row {row!r}")
        report["ok"] = ok
        sys.stdout.write(json.dumps(report) + "\n")
        sys.stdout.flush()
        if not ok:
            sys.exit(1)
