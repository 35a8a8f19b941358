"""``manage.py closeall``: use every alias in this thread and in ``--threads`` threads, call
``connections.close_all()`` in each, then report this process's pools as one JSON line:
``{"aliases": [...], "pools": [{"name", "size", "available", "in_use"}], "errors": [...]}``.

With connguard every connection must be back in its pool (``in_use == 0``) and still open
(``available == size``): ``close_all()`` hands connections back, it does not leak them.
"""

from __future__ import annotations

import json
import sys
import threading

from django.conf import settings
from django.core.management.base import BaseCommand
from django.db import connections

from connguard.demo.project.app import work


class Command(BaseCommand):
    help = "Use every alias in several threads, close_all() in each, report the pools."

    def add_arguments(self, parser):
        parser.add_argument("--threads", type=int, default=4)

    def handle(self, *args, **options):
        aliases = [a for a in ("default", "other") if a in settings.DATABASES]
        errors: list[str] = []

        def use(close: bool) -> None:
            try:
                for alias in aliases:
                    with connections[alias].cursor() as cursor:
                        cursor.execute("SELECT 1")
                        cursor.fetchone()
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}"[:300])
            finally:
                if close:
                    connections.close_all()

        threads = [
            threading.Thread(target=use, args=(True,), name=f"closeall-{i}")
            for i in range(options["threads"])
        ]
        for thread in threads:
            thread.start()
        use(close=False)  # the main thread keeps its connections while the others run
        for thread in threads:
            thread.join(timeout=30)
        connections.close_all()
        report = {"aliases": aliases, **work.pools_report(), "errors": errors}
        sys.stdout.write(json.dumps(report) + "\n")
        sys.stdout.flush()
