"""``manage.py forkcheck``: query at import time, then ``os.fork()`` children that keep using Django.

This is the plain-Python version of the pre-fork bug (multiprocessing with fork, custom
pre-fork daemons, gunicorn ``--preload``): ``connguard.demo.project.app.preload`` runs a module-level
query, so the parent holds an open connection when it forks; every child inherits the same
socket and they all talk over it at once.

Each child runs ``--ops`` row reads / writes (calling ``close_old_connections()`` around
each one, exactly as Django's request cycle does), checks that every row is the one it
asked for, and reports through a pipe.  A child that hangs is killed after ``--timeout``
seconds (SIGALRM) and counted as ``hung``.  Prints one JSON object:
``{"requests", "ok", "errors", "wrong", "hung", "acked": [...], "error_samples": {...}}``.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import time
from collections import Counter

from django.core.management.base import BaseCommand
from django.db import close_old_connections

from connguard.demo.project.app import work
from connguard.demo.project.app.models import Item


class _Hung(BaseException):
    """Raised by the SIGALRM handler when a child is stuck (e.g. waiting for a reply that
    a sibling read from the shared socket)."""


def _on_alarm(signum, frame):
    raise _Hung()


def _child_work(index: int, ops: int, keys: list[str]) -> dict:
    res: dict = {
        "requests": 0, "ok": 0, "errors": 0, "wrong": 0, "hung": 0, "acked": [], "samples": [],
    }
    for j in range(ops):
        res["requests"] += 1
        try:
            close_old_connections()
            if j % 4 == 3:
                token = f"fork-{index}-{os.getpid()}-{j}"
                out = work.do_write(token)
                if out.get("token") != token:
                    res["wrong"] += 1
                    continue
                res["acked"].append(token)
            else:
                key = keys[(index * 7 + j) % len(keys)]
                out = work.get_row(key)
                if out.get("key") != key:
                    res["wrong"] += 1
                    continue
            res["ok"] += 1
        except _Hung:
            res["errors"] += 1
            res["hung"] = 1
            res["samples"].append("hung: no reply (alarm)")
            break
        except Exception as exc:
            res["errors"] += 1
            if len(res["samples"]) < 5:
                res["samples"].append(f"{type(exc).__name__}: {exc}"[:200])
        try:
            close_old_connections()
        except _Hung:
            res["hung"] = 1
            break
        except Exception as exc:
            res["errors"] += 1
            if len(res["samples"]) < 5:
                res["samples"].append(f"close: {type(exc).__name__}: {exc}"[:200])
    return res


class Command(BaseCommand):
    help = "Query at import time, fork children that use the inherited connection, report."

    def add_arguments(self, parser):
        parser.add_argument("--children", type=int, default=4)
        parser.add_argument("--ops", type=int, default=100)
        parser.add_argument("--timeout", type=int, default=15, help="per-child seconds")

    def handle(self, *args, **options):
        import connguard.demo.project.app.preload  # noqa: F401  (module-level query, before the fork)

        keys = list(Item.objects.order_by("key").values_list("key", flat=True)[:100])
        n, ops, timeout = options["children"], options["ops"], options["timeout"]
        children: dict[int, int] = {}
        sys.stdout.flush()
        sys.stderr.flush()
        for index in range(n):
            rfd, wfd = os.pipe()
            pid = os.fork()
            if pid == 0:  # child
                code = 0
                try:
                    os.close(rfd)
                    signal.signal(signal.SIGALRM, _on_alarm)
                    signal.alarm(timeout)
                    result = _child_work(index, ops, keys)
                    signal.alarm(0)
                    payload = json.dumps(result).encode()
                    with os.fdopen(wfd, "wb") as pipe:
                        pipe.write(payload)
                except BaseException:
                    code = 3
                finally:
                    os._exit(code)
            os.close(wfd)
            children[pid] = rfd

        chunks: dict[int, list[bytes]] = {pid: [] for pid in children}
        open_fds = {rfd: pid for pid, rfd in children.items()}
        deadline = time.monotonic() + timeout + 5
        while open_fds and time.monotonic() < deadline:
            ready, _, _ = select.select(list(open_fds), [], [], 0.5)
            for rfd in ready:
                data = os.read(rfd, 65536)
                if data:
                    chunks[open_fds[rfd]].append(data)
                else:
                    os.close(rfd)
                    del open_fds[rfd]
        for rfd in open_fds:
            os.close(rfd)

        total: Counter[str] = Counter()
        acked: list[str] = []
        samples: Counter[str] = Counter()
        hung = 0
        for pid in children:
            # Reap (bounded); a child still alive past the deadline is killed by its pid.
            status = None
            for _ in range(50):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                status = None
            raw = b"".join(chunks[pid])
            if status is None or not raw:
                hung += 1
                total["requests"] += 1
                total["errors"] += 1
                samples["child hung or died without reporting"] += 1
                continue
            res = json.loads(raw)
            hung += res["hung"]
            for field in ("requests", "ok", "errors", "wrong"):
                total[field] += res[field]
            acked.extend(res["acked"])
            samples.update(res["samples"])
        report = {
            "requests": total["requests"],
            "ok": total["ok"],
            "errors": total["errors"],
            "wrong": total["wrong"],
            "hung": hung,
            "acked": acked,
            "error_samples": dict(samples.most_common(10)),
        }
        sys.stdout.write(json.dumps(report) + "\n")
        sys.stdout.flush()
