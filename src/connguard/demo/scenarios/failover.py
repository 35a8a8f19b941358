"""The failover scenario: a primary replaced by its promoted standby under Django + gunicorn.

It needs servers of its own (the demo's server cannot be flipped): a throwaway primary and
a streaming standby made with ``pg_basebackup -R`` (:mod:`connguard.testing.replication`).
The project runs under gunicorn (sync, 2 workers) with a multi-host ``HOST``/``PORT`` and
``OPTIONS["target_session_attrs"] = "read-write"``; client threads write rows with unique
tokens throughout. Then the primary fails over:

* ``FAILOVER: "read-only"`` (default): the old primary turns read-only by a configuration
  reload, its sessions staying up (as a primary fenced behind a VIP); the standby catches up
  and is promoted with ``pg_ctl promote``;
* ``FAILOVER: "stop"``: the old primary shuts down (fast), the standby is promoted.

Counted: every request's outcome and worker pid; acknowledged writes missing on the new
primary (lost) or stored twice; how long after the flip began writes succeed again. A
failover may fail the request each worker has in flight when it happens (raised, never
retried: it may have executed), so ``errors`` counts failures beyond one per worker process;
the in-flight ones are in the details. Stock Django with persistent connections
(``CONN_MAX_AGE=None``) keeps its sessions on the demoted server: its writes keep failing.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from typing import Any

from connguard.demo.base import ScenarioUnsupported
from connguard.demo.load import http_get
from connguard.demo.registry import scenario
from connguard.demo.results import Result
from connguard.demo.runner import Harness
from connguard.demo.targets import create_database
from connguard.demo.targets.postgresql import DbTarget

WORKERS = 2
CLIENTS = 4


@scenario(
    "failover",
    "the primary fails over to its promoted standby (pg_basebackup, pg_ctl promote; the old "
    "one demoted read-only), multi-host HOST with target_session_attrs=read-write, gunicorn "
    "sync -w 2, writes throughout; errors beyond one in-flight request per worker count",
    defaults={"CONN_MAX_AGE": None},
    stock_failure="persistent connections stay on the read-only old primary: every write "
                  "fails (cannot execute INSERT in a read-only transaction) until restart",
)
def run_failover(h: Harness, settings: dict[str, Any], result: Result) -> None:
    from connguard.testing.replication import StandbyServer, set_read_only
    from connguard.testing.server import PostgresServer, ServerError

    mode = str(settings.get("FAILOVER", "read-only"))
    if mode not in ("read-only", "stop"):
        raise ValueError(f"FAILOVER={mode!r}: use 'read-only' or 'stop'")
    try:
        primary = PostgresServer()
    except ServerError as exc:
        raise ScenarioUnsupported(f"failover: no local PostgreSQL binaries: {exc}") from exc
    standby: StandbyServer | None = None
    try:
        primary.start()
        database = h.target.dbname
        create_database(primary, database)
        with Harness(primary, database, log_dir=h.log_dir, quick=h.quick) as fh:
            fh.prepare(settings)
            try:
                standby = StandbyServer(primary)
            except ServerError as exc:
                raise ScenarioUnsupported(f"failover: {exc}") from exc
            standby.start()
            options = {**(settings.get("OPTIONS") or {}), "target_session_attrs": "read-write"}
            env = fh.env({**settings, "OPTIONS": options})
            env["CGT_DB_HOST"] = f"{primary.host},{standby.host}"
            env["CGT_DB_PORT"] = f"{primary.port},{standby.port}"
            srv = fh.gunicorn(env, worker_class="sync", workers=WORKERS, timeout=20)
            _drive(srv.base_url, result, primary, standby, mode, set_read_only, h.quick)
            _count_writes(DbTarget.from_server(standby, database), result)
            result.details["failover_logs"] = fh.logs(3000)
    finally:
        if standby is not None:
            standby.cleanup()
        primary.cleanup()


class _Load:
    """Client threads writing unique tokens until stopped (bounded in count)."""

    def __init__(self, base_url: str, limit: int = 4000) -> None:
        self.base_url = base_url
        self.tag = uuid.uuid4().hex[:8]
        self.limit = limit
        self.stop = threading.Event()
        self.lock = threading.Lock()
        # (sent, done, ok, token, pid, message)
        self.outcomes: list[tuple[float, float, bool, str, int | None, str]] = []
        self._n = 0
        self.threads = [
            threading.Thread(target=self._run, name=f"cg-failover-{i}", daemon=True)
            for i in range(CLIENTS)
        ]

    def start(self) -> _Load:
        for thread in self.threads:
            thread.start()
        return self

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(30)

    def acked(self) -> int:
        with self.lock:
            return sum(1 for o in self.outcomes if o[2])

    def _run(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                if self._n >= self.limit:
                    return
                self._n += 1
                token = f"{self.tag}-{self._n}"
            sent = time.monotonic()
            status, data, err = http_get(f"{self.base_url}/write/{token}", timeout=15)
            done = time.monotonic()
            ok = status == 200 and isinstance(data, dict) and data.get("token") == token
            pid = data.get("pid") if isinstance(data, dict) else None
            if ok:
                message = ""
            elif err is not None:
                message = err
            elif isinstance(data, dict):
                message = f"{data.get('error')}: {data.get('message', '')}"
            else:
                message = f"HTTP {status}"
            with self.lock:
                self.outcomes.append((sent, done, ok, token, pid, " ".join(message.split())))
            time.sleep(0.005)


def _drive(
    base_url: str,
    result: Result,
    primary: Any,
    standby: Any,
    mode: str,
    set_read_only: Any,
    quick: bool,
) -> None:
    load = _Load(base_url).start()
    try:
        deadline = time.monotonic() + 30
        while load.acked() < 40 and time.monotonic() < deadline:
            time.sleep(0.02)
        flipped_at = time.monotonic()
        if mode == "stop":
            primary.stop("fast")
        else:
            set_read_only(primary)
            standby.wait_caught_up()
        promote_took = standby.promote()
        time.sleep(2.0 if quick else 4.0)
    finally:
        load.finish()
    outcomes = list(load.outcomes)
    result.requests = len(outcomes)
    result.ok = sum(1 for o in outcomes if o[2])
    failed = [o for o in outcomes if not o[2]]
    per_pid: Counter[str] = Counter(str(o[4]) for o in failed)
    # The request each worker has in flight when the primary goes away may fail (reported,
    # never retried): the first failure of each worker pid. Any other failure counts.
    seen: set[Any] = set()
    inflight: list[str] = []
    for o in failed:
        if o[4] is not None and o[4] not in seen:
            seen.add(o[4])
            inflight.append(o[5])
        else:
            result.add_error(o[5] or "failed")
    since = max([flipped_at, *(o[1] for o in failed)])
    later = [o[1] for o in outcomes if o[2] and o[0] >= since]
    result.details.update(
        failover=mode,
        failed_requests=len(failed),
        failed_per_worker=dict(per_pid),
        max_failed_per_worker=max(per_pid.values(), default=0),
        inflight_errors=inflight,
        promote_seconds=round(promote_took, 3),
        # None: writes never succeeded again before the load stopped
        writes_ok_again_after_s=round(min(later) - flipped_at, 3) if later else None,
        acked_tokens=[o[3] for o in outcomes if o[2]],
    )
    result.notes.append(
        f"{len(failed)} request(s) failed at the failover "
        f"({dict(per_pid) or 'none'} by worker pid); promote took {promote_took:.2f} s"
    )


def _count_writes(target: DbTarget, result: Result) -> None:
    tokens = result.details.pop("acked_tokens", [])
    if not tokens:
        return
    rows = target.execute("SELECT token FROM cg_write WHERE token = ANY(%s)", [tokens])
    found = [r[0] for r in rows]
    result.lost = len(set(tokens) - set(found))
    result.details["duplicated_writes"] = len(found) - len(set(found))
    result.details["acked_writes"] = len(tokens)
