"""One process, one thread, no HTTP: a request's database work, timed phase by phase.

``python -m djbench.cycle <view> <n>`` (environment as for the server, see
:mod:`djbench.settings`) runs *n* request cycles the way a WSGI handler does them —
``request_started`` (Django closes obsolete connections), the view's queries, then
``request_finished`` (Django closes or keeps the connection; a pool takes it back) — and
prints one JSON line: microseconds per cycle for each phase (median and mean). It isolates
what each configuration costs per request from the HTTP server, the load generator and the
other processes competing for the CPU. Used by ``django_macro.py --cycle``.
"""

from __future__ import annotations

import gc
import json
import random
import statistics
import sys
import time

import django

django.setup()

from django.core.signals import request_finished, request_started  # noqa: E402
from django.db import connection  # noqa: E402

from djbench import views  # noqa: E402
from djbench.models import Item  # noqa: E402

clock = time.perf_counter
PHASES = ("request_started", "checkout", "view", "request_finished")


def cycle(view: str, pk: int) -> tuple[float, float, float, float, float]:
    t0 = clock()
    request_started.send(sender=None)
    t1 = clock()
    connection.ensure_connection()  # checkout, connect or nothing (persistent)
    t2 = clock()
    if view == "select":
        Item.objects.get(pk=pk)
    else:
        views.txn(None, pk)  # type: ignore[arg-type]
    t3 = clock()
    request_finished.send(sender=None)
    t4 = clock()
    return t1 - t0, t2 - t1, t3 - t2, t4 - t3, t4 - t0


def main() -> int:
    view, n = sys.argv[1], int(sys.argv[2])
    rows = Item.objects.count()
    for _ in range(min(200, n)):  # warm-up: imports, the pool, the first connection
        cycle(view, random.randint(1, rows))
    gc.collect()
    samples = [cycle(view, random.randint(1, rows)) for _ in range(n)]
    out: dict[str, dict[str, float]] = {}
    for i, phase in enumerate((*PHASES, "total")):
        values = [s[i] * 1e6 for s in samples]
        out[phase] = {"median": statistics.median(values), "mean": statistics.fmean(values)}
    print("CGCYCLE " + json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
