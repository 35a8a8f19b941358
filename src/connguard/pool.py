"""ConnectionPool: the story of a checkout and a checkin.

``getconn()``: pop an idle entry (lock-free) and lend it if it is young, used moments ago and
its socket is quiet (one ``poll()``), else revalidate it (ping, role after a failover) or
retire it. With no idle entry, one locked step (``_reserve``) answers with a
:class:`~connguard.waiters.Verdict`: look again, connect with a reserved slot, await a probe
of the server, or wait in the queue; the caller acts on it outside the lock. Both paths fill
the lease in one place. ``putconn()``: a connection in an idle transaction goes back on the
stack (lock-free) and to the oldest waiter; one in a transaction is rolled back (outside the
lock), a broken or expired one retired.

Each concept the story uses lives in a module named after it, with a small interface:

- :mod:`connguard.entry` -- Entry (owns the socket, birth, generation, pid) and Lease (one
  checkout: owner thread, time, stack).
- :mod:`connguard.decide` -- the decisions, pure (no I/O, no lock, no clock): what an idle
  connection needs before it is lent, what a caller without one does next, who in the queue
  gets a slot. The pool reads its numbers into a snapshot, asks, and acts.
- :mod:`connguard.waiters` -- the queue, the verdicts and the hand-off.
- :mod:`connguard.breaker` -- the circuit breaker: whether a caller may connect while the
  server does not answer (state and decisions only, shared with a future asyncio pool).
- :mod:`connguard.ceiling` -- the server-full ceiling after "too many clients".
- :mod:`connguard.leaks` -- the reaper and leak reports; slots of collected connections.
- :mod:`connguard.maintenance` -- the background thread and its rounds (fill, expire idle,
  keepalive, a forked parent's idle close).
- :mod:`connguard.stats` -- counters and the canonical stat names.
- :mod:`connguard.forking` -- abandon inherited connections in a child, without a byte sent.
- :mod:`connguard.drivers` -- everything that differs between databases and libraries.

State changes happen under one lock; network I/O never does (connect, ping, rollback,
close all happen after the lock is released). The locked step decides; the caller acts.
The pool knows no database: what a server's errors, roles and sockets mean is the driver's.
"""

from __future__ import annotations

import itertools
import logging
import math
import os
import random
import threading
import time
import weakref
from _thread import get_ident
from collections import deque
from collections.abc import Callable, Iterator
from time import monotonic
from typing import Any

from connguard import decide, errors, forking, leaks, maintenance, waiters
from connguard import shutdown as _shutdown  # noqa: F401 - closes pools at exit
from connguard.breaker import ABSENT_PROBE_COST, Breaker
from connguard.ceiling import Ceiling
from connguard.config import PoolConfig, build_config, mask_conninfo
from connguard.decide import (
    AWAIT_PROBE,
    CLOSED,
    CONNECT,
    DISCARD,
    EXPIRED,
    FAIL_FAST,
    PING,
    RECHECK,
    RETRY,
    SHED,
)
from connguard.drivers import Driver, Role, TxStatus, get_driver
from connguard.drivers.base import TX_INTRANS, is_ping_timeout
from connguard.entry import (
    Entry,
    Lease,
    format_stack,
    short_stack,
    take,
    thread_name,
)
from connguard.errors import PoolClosed, PoolError, one_line
from connguard.stats import Stats
from connguard.waiters import Verdict, Waiter

logger = logging.getLogger("connguard.pool")

_pool_numbers = itertools.count(1)
_INF = math.inf


class ConnectionPool:
    """A bounded, fork-safe, self-healing pool of DB-API connections.

    Names follow ``psycopg_pool.ConnectionPool`` so code can switch by changing the import.
    """

    def __init__(
        self,
        conninfo: str = "",
        *,
        driver: str | Driver = "psycopg",
        connect: Callable[..., Any] | None = None,
        name: str | None = None,
        min_size: int = 0,
        max_size: int | None = None,
        timeout: float = 30.0,
        max_lifetime: float = 3600.0,
        max_idle: float = 600.0,
        max_waiting: int = 0,
        leak_threshold: float = 0.0,
        reconnect_timeout: float = 300.0,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> None:
        settings: dict[str, Any] = dict(
            conninfo=conninfo, driver=driver, connect=connect, min_size=min_size,
            max_size=max_size, timeout=timeout, max_lifetime=max_lifetime, max_idle=max_idle,
            max_waiting=max_waiting, leak_threshold=leak_threshold,
            reconnect_timeout=reconnect_timeout, kwargs=kwargs or {},
        )  # fmt: skip
        if name is not None:
            settings["name"] = name
        settings.update(options)
        where = options.pop("_where", None)
        settings.pop("_where", None)
        # where a framework keeps connection parameter KEY (an AccessDenied message names it)
        setting = options.pop("_setting", None)
        settings.pop("_setting", None)
        config = build_config(settings, where=where) if where else build_config(settings)
        if name is None:
            config = _replace(config, name=f"pool-{next(_pool_numbers)}")
        self._where: Callable[[str], str] | None = where
        self._setting: Callable[[str], str | None] | None = setting
        self._setup(config)
        forking.register(self)
        if config.open is not False:
            self.open()

    # -- construction -------------------------------------------------------------------

    def _setup(self, config: PoolConfig) -> None:
        self.config = config
        self.name = config.name
        self._driver: Driver = get_driver(config.driver, config.connection_class)
        self._connect_fn = config.connect
        self._min_size = config.min_size
        self._max_size = config.max_size
        self._ping_interval = config.ping_interval or _INF
        # how long after its last use getconn() may lend a connection without the slow path;
        # never when a check() callback must see every checkout (as in psycopg_pool)
        self._fresh_for = self._ping_interval if config.check is None else -_INF
        self._timeout = config.timeout
        self._leak_threshold = config.leak_threshold
        self._tx_status = self._driver.transaction_status
        self._reset = config.reset
        # a pool that must lend connections to a writable primary only (see invalidate()):
        # what the connection parameters ask of the server's role is the driver's to read
        policy = self._driver.role_policy(config.conninfo, config.kwargs, config.require_primary)
        self._needs_primary = policy.needs_primary
        self._check_new_role = policy.check_new_role
        self._roles_ok = policy.roles_ok
        self._reset_state()
        self._opened = False
        self._closed = True

    def _reset_state(self) -> None:
        """Everything that must be fresh in a new process (and in a new pool)."""
        self._lock = threading.Lock()
        self._idle: list[Entry] = []
        self._out: dict[int, Entry] = {}
        self._entries: dict[int, Entry] = {}
        self._size = 0  # entries + slots reserved by connects under way
        self._waiters: deque[Waiter] = deque()
        self._reclaim: deque[Entry] = deque()
        self._inherited: dict[int, Entry] = {}
        # entry id -> taken_at of leases whose owner thread exited while something else still
        # held the connection: reported once as a leak, never reclaimed by the reaper
        self._orphans: dict[int, float] = {}
        # connections this pool closed or abandoned, so that returning one again is harmless
        self._done: weakref.WeakValueDictionary[int, Any] = weakref.WeakValueDictionary()
        self._generation = 0
        # entries of a generation below the floor are retired (drain, fork); those between
        # it and the current generation are checked before they are lent (invalidate)
        self._floor = 0
        self._pid = os.getpid()
        self._worker: threading.Thread | None = None
        self._wake = threading.Event()
        self._breaker = Breaker(self.config, self._needs_primary)
        self._filling = 0  # connects the background task has under way
        # a forked parent's idle pool (see FORKED_PARENT_IDLE): checkouts counted when last seen
        self._parked = False
        self._uses_seen = (-1, 0.0)
        self._ceiling = Ceiling()  # after "too many clients": hold at what we have
        # statistics: checkouts are counted per entry (only its holder touches it: no lock)
        self._stats = Stats()
        self._counts = self._stats.counters  # (one attribute lookup less per event)
        self._fork_report: str | None = None

    def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        """Open the pool (done by the constructor unless ``open=False``)."""
        with self._lock:
            if self._opened and not self._closed:
                return
            if self._opened:
                raise errors.reopen_error(self.name)
            self._opened = True
            self._closed = False
        if self._min_size:
            self._ensure_worker()
        if wait:
            self.wait(timeout)

    # -- checkout -----------------------------------------------------------------------

    def getconn(self, timeout: float | None = None) -> Any:
        """Take a live connection, waiting up to *timeout* seconds (default: the pool's)."""
        now = monotonic()
        if timeout is None:
            timeout = self._timeout
        deadline = now + timeout
        idle = self._idle
        wait_probe = True
        handed: Entry | None = None  # granted to us in the queue by a returning caller
        while True:
            # Fast path, lock-free: list.pop() and dict item assignment are atomic.
            if handed is None:
                try:
                    entry: Entry | None = idle.pop()
                except IndexError:
                    entry = None
            else:  # checked like an idle one, from now: the wait is not holding time
                entry, handed, now = handed, None, monotonic()
            if entry is not None:
                conn = entry.conn
                key = id(conn)
                self._out[key] = entry
                # young, used moments ago, and nothing arrived on the socket: lend it (the
                # LEND case of decide.check_idle, inlined: this runs at every checkout)
                lend = (
                    now < entry.expires
                    and entry.generation == self._generation
                    and now - entry.last_used < self._fresh_for
                    and not entry.poller.poll(0)
                ) or self._revalidate(entry, now)
            else:
                # Slow path: reserve a slot under the lock, then wait or connect outside it.
                if self._fork_report is not None:
                    self._log_fork_report()
                if self._reclaim:  # connections garbage-collected while lent: free their slots
                    leaks.drain_reclaim(self)
                with self._lock:
                    verdict = self._reserve(now, deadline, wait_probe)
                next_ = verdict.next
                if next_ is RETRY:
                    idle = self._idle  # changed by a fork; or an entry is back: retry
                elif next_ is AWAIT_PROBE:
                    wait_probe = False
                    assert verdict.event is not None
                    verdict.event.wait(max(0.0, min(deadline - now, ABSENT_PROBE_COST)))
                elif next_ is CONNECT:
                    entry = self._open_connection(deadline)
                else:
                    assert isinstance(verdict, Waiter)
                    handed = self._wait(verdict, deadline, timeout)
                    if handed is not None:
                        continue  # check it as above
                    entry = self._open_connection(deadline)  # granted a slot: connect
                if entry is not None:  # a new connection: lend it
                    conn = entry.conn
                    key = id(conn)
                    self._out[key] = entry
                    # now, not the caller's start: the connect is not holding time
                    now = monotonic()
                lend = entry is not None
            if lend:
                assert entry is not None
                entry.conn = None  # held weakly while lent: a dropped one is reclaimed
                entry.uses += 1
                # Fill the lease, then publish it: the reaper reads entry.lease without our
                # help, and must never see the owner of a previous checkout (or none).
                lease = entry.spare_lease
                lease.key = key
                lease.taken_at = now
                lease.thread = get_ident()
                if self._leak_threshold:
                    lease.stack = short_stack()
                    lease.reported = False
                entry.lease = lease
                return conn
            now = monotonic()
            if now >= deadline:
                raise self._timeout_error(timeout)

    def _log_fork_report(self) -> None:
        """Once per process after a fork: which inherited connections were abandoned."""
        with self._lock:
            report, self._fork_report = self._fork_report, None
        if report is not None:
            logger.warning(report)

    def _reserve(self, now: float, deadline: float, wait_probe: bool = True) -> Verdict:
        """Locked step when no idle connection is at hand: what the caller does next.

        :func:`connguard.decide.checkout` decides; this acts on it: reserve a slot to
        connect with, queue a waiter, or refuse (raises). While the breaker is open and a
        cheap probe of an absent server is under way, the caller is told to await it (once
        per getconn, *wait_probe*): its outcome takes milliseconds and, when the server is
        back, spares the caller a needless failure."""
        decision = decide.checkout_counts(
            self._closed, len(self._idle), self._size, self._max_size, len(self._waiters),
            self._filling, self.config.max_waiting, self._breaker, self._ceiling, now,
            wait_probe,
        )  # fmt: skip
        next_ = decision.next
        if next_ is CLOSED:
            raise PoolClosed(errors.closed_text(self.name, self._opened))
        if self._worker is None:
            self._start_worker_locked()
        self._parked = False  # used again: min_size applies again
        if next_ is RETRY:
            return waiters.RETRY
        if next_ is CONNECT:
            self._size += 1
            return waiters.CONNECT
        if next_ is AWAIT_PROBE:
            assert decision.event is not None
            return Verdict.await_probe(decision.event)
        if next_ is FAIL_FAST:
            raise self._unavailable_error()
        if next_ is SHED:
            self._counts["requests_shed"] += 1
            raise errors.too_many_requests(self._snapshot(), self.config.max_waiting)
        waiter = waiters.Waiter()
        self._waiters.append(waiter)
        self._counts["requests_queued"] += 1
        # putconn() appends to idle without the lock, then looks for waiters: look at idle
        # again after queueing, so that one of the two always sees the other (no lost wakeup).
        waiters.hand_over(self._waiters, self._idle)
        return waiter  # (a Verdict: QUEUED, on itself)

    def _state_locked(self) -> decide.State:
        """The numbers :mod:`connguard.decide` decides on (call with the lock held)."""
        return decide.State(
            self._closed,
            self._size,
            self._max_size,
            len(self._idle),
            len(self._out),
            len(self._waiters),
            self._filling,
            self.config.max_waiting,
        )

    def _wait(self, waiter: Waiter, deadline: float, timeout: float) -> Entry | None:
        started = monotonic()
        try:
            wait_for = min(max(0.0, deadline - started), threading.TIMEOUT_MAX)
            acquired = waiter.lock.acquire(timeout=wait_for)
        except BaseException:  # gevent.Timeout, GreenletExit, KeyboardInterrupt
            if not self._leave_queue(waiter):
                self._give_back(waiter)  # granted meanwhile: nobody will use the grant
            raise
        if not acquired and self._leave_queue(waiter):
            self._count("requests_wait_ms", int((monotonic() - started) * 1000))
            raise self._timeout_error(timeout)
        # (not acquired but no longer queued: granted while we gave up, so take the grant)
        self._count("requests_wait_ms", int((monotonic() - started) * 1000))
        if waiter.closed:
            raise PoolClosed(errors.closed_text(self.name, self._opened))
        if waiter.down:
            with self._lock:
                raise self._unavailable_error()
        if waiter.slot:
            return None
        return waiter.entry

    def _leave_queue(self, waiter: Waiter) -> bool:
        """Take a waiter out of the queue; False when it was granted or woken meanwhile."""
        with self._lock:
            return waiters.leave(self._waiters, waiter)

    def _give_back(self, waiter: Waiter) -> None:
        """Return what was granted to a waiter that left without taking it."""
        if waiter.entry is not None:
            self._return(waiter.entry)
        elif waiter.slot:
            self._release_slot()

    def _release_slot(self) -> None:
        """Free a reserved slot whose connect never happened or was interrupted."""
        with self._lock:
            self._slot_freed_locked()

    def _slot_freed_locked(self) -> None:
        """A reserved slot holds no connection after all: the one place that frees it."""
        self._size -= 1
        self._breaker.attempt_over()
        self._grant_slots_locked()

    def _revalidate(self, entry: Entry, now: float) -> bool:
        """Slow liveness check of an entry just taken out of the pool; retire it if stale.

        Returns True when it may be lent (it stays registered as out), False after retiring.
        """
        check = decide.check_idle(
            entry,
            now,
            self._generation,
            self._floor,
            self._ping_interval,
            bool(entry.poller.poll(0)),
        )
        if check is EXPIRED:
            self._retire(entry, "connections_expired")
            return False
        if check is DISCARD:
            self._retire(entry, "connections_discarded")
            return False
        conn = entry.conn
        if check is RECHECK:
            # invalidated (an error said the server changed role or went away): check it
            generation = self._generation
            if not self._check_after_invalidation(entry):
                return False
            entry.generation = generation
        elif check is PING:
            self._count("pings")
            try:
                self._driver.ping(conn, self.config.ping_timeout)
            except Exception as exc:
                logger.info(
                    "pool %r: %s is dead (%s); replacing it",
                    self.name, entry.describe(), one_line(exc),
                )  # fmt: skip
                silent_since = entry.last_used
                self._retire(entry, "connections_lost")
                if is_ping_timeout(exc):
                    self._retire_silent(silent_since)
                return False
            except BaseException:  # interrupted mid-ping: its protocol state is unknown
                self._retire(entry, "connections_lost")
                raise
            entry.last_used = monotonic()
        if self.config.check is not None:
            try:
                self.config.check(conn)
            except Exception as exc:
                logger.info("pool %r: check() rejected %s: %s", self.name, entry.describe(), exc)
                self._retire(entry, "connections_lost")
                return False
            except BaseException:
                self._retire(entry, "connections_lost")
                raise
        return True

    def _retire_silent(self, since: float) -> None:
        """A ping went unanswered: the path to the server may be dead (a NAT gateway, a load
        balancer or a firewall that dropped the flows without a word). The idle connections
        silent at least as long share that fate: retire them now, instead of making the
        caller wait ``ping_timeout`` for each of them in turn (docs/network.md)."""
        with self._lock:
            suspects = [e for e in list(self._idle) if e.last_used <= since and take(self._idle, e)]
        if not suspects:
            return
        logger.info(
            "pool %r: a ping timed out; closing %d more idle connection(s) silent as long "
            "without pinging each", self.name, len(suspects),
        )  # fmt: skip
        for entry in suspects:
            self._retire(entry, "connections_lost")

    def _check_after_invalidation(self, entry: Entry) -> bool:
        """A round trip on an entry lent before the last invalidate(): its role when the pool
        requires a primary, else a ping. False after retiring it."""
        self._count("pings")
        try:
            if self._needs_primary:
                role = self._driver.role(entry.conn, self.config.ping_timeout)
            else:
                self._driver.ping(entry.conn, self.config.ping_timeout)
                role = Role.PRIMARY
        except Exception as exc:
            logger.info(
                "pool %r: %s is dead (%s); replacing it",
                self.name, entry.describe(), one_line(exc),
            )  # fmt: skip
            self._retire(entry, "connections_lost")
            return False
        except BaseException:  # interrupted mid-check: its protocol state is unknown
            self._retire(entry, "connections_lost")
            raise
        if role not in self._roles_ok:
            logger.info(
                "pool %r: %s is on a server that is now %s; replacing it",
                self.name, entry.describe(), role.value,
            )  # fmt: skip
            self._retire(entry, "connections_wrong_role")
            return False
        entry.last_used = monotonic()
        return True

    def report_error(self, exc: BaseException) -> bool:
        """Tell the pool that *exc* was raised on one of its connections. When the driver
        says it means the server changed role or is going away (read-only transaction,
        shutdown, connection lost), the pool is invalidated (see :meth:`invalidate`) and
        True is returned. The error itself stays the caller's: nothing is retried."""
        if not self._driver.is_role_change(exc):
            return False
        self.invalidate(exc)
        return True

    def invalidate(self, exc: BaseException | None = None) -> None:
        """Suspect every connection open now (a failover, a restart): each idle one is
        checked before it is lent again — its role when the pool requires a primary
        (``require_primary``, or ``target_session_attrs`` read-write/primary), else a
        ping — and replaced when it is dead or on a server of the wrong role. Lent ones are
        checked after they come back. Bumps the generation; walks no list."""
        with self._lock:
            if self._closed:
                return
            self._generation += 1
            self._counts["invalidations"] += 1
        logger.info(
            "pool %r: invalidated (%s); every connection is checked before it is lent again",
            self.name, one_line(exc) if exc is not None else "invalidate() called",
        )  # fmt: skip

    # -- opening connections --------------------------------------------------------------

    def _open_connection(self, deadline: float | None) -> Entry | None:
        """Open a connection for a slot already reserved. None when it failed: the breaker
        is then open and the caller's next turn fails fast (or, past the deadline, times out)."""
        started = monotonic()
        timeout = self.config.connect_timeout
        if deadline is not None:
            timeout = min(timeout, max(0.0, deadline - started))
        origin = short_stack(skip=3, limit=6)
        try:
            if self._connect_fn is not None:
                # the same bound and TCP defaults as the driver's own connect
                conn = self._connect_fn(
                    self.config.conninfo,
                    **self._driver.connect_params(
                        self.config.conninfo, dict(self.config.kwargs), timeout
                    ),
                )
                self._driver.finish_connect(conn, self.config.conninfo, self.config.kwargs)
            else:
                conn = self._driver.connect(self.config.conninfo, dict(self.config.kwargs), timeout)
            if self._check_new_role:
                self._require_primary_role(conn)
        except Exception as exc:
            if self._driver.is_capacity_error(exc):
                self._server_full(exc)
                return None  # the server is up: wait for a connection to come back
            self._connect_failed(exc, started)
            if deadline is None:
                return None
            now = monotonic()
            if self._breaker.failing_over(now) and now < deadline:
                return None  # waiting for a primary: the caller's next turn tries again
            with self._lock:  # it counts and snapshots the state
                error = self._unavailable_error(exc)
            raise error from exc
        except BaseException:  # interrupted (gevent.Timeout...): no verdict on the server
            self._release_slot()
            raise
        if self.config.configure is not None:
            try:
                self.config.configure(conn)
            except BaseException:
                # the application's error, not the server's: raised as itself, no breaker
                self._driver.close(conn)
                self._configure_failed()
                raise
        now = monotonic()
        if self._pid != os.getpid():  # forked by code that skipped the fork hooks
            self._driver.abandon(conn, self._driver.fileno(conn))
            self._after_fork_in_child()
            raise errors.forked_while_connecting(self.name)
        entry = self._make_entry(conn, now, origin)
        with self._lock:
            self._entries[entry.id] = entry
            self._counts["connections_opened"] += 1
            self._counts["connections_ms"] += int((now - started) * 1000)
            down_since = self._breaker.succeeded()
        if down_since is not None:
            logger.warning(
                "pool %r: database reachable again after %.2f s; circuit breaker closed",
                self.name, now - down_since,
            )  # fmt: skip
        return entry

    def _require_primary_role(self, conn: Any) -> None:
        """Refuse a new connection that is not on a writable primary (require_primary=True
        without target_session_attrs doing it: a VIP or DNS name in front of the servers)."""
        try:
            role = self._driver.role(conn, self.config.ping_timeout)
        except BaseException:
            self._driver.close(conn)
            raise
        if role is not Role.PRIMARY:
            self._driver.close(conn)
            raise errors.wrong_role(self.name, role.value)

    def _make_entry(self, conn: Any, now: float, origin: Any) -> Entry:
        fd = self._driver.fileno(conn)
        lifetime = self.config.max_lifetime
        if lifetime:
            lifetime *= 1.0 - self.config.lifetime_jitter * random.random()
            expires = now + lifetime
        else:
            expires = _INF
        entry = Entry(
            conn, fd, self._driver.make_poller(fd), now, expires, self._generation, origin
        )
        entry.ref = weakref.ref(conn, leaks.on_collected(self, entry))
        return entry

    def _configure_failed(self) -> None:
        """configure() raised on a new connection (closed by now): free its slot. The server
        answered, so a breaker this attempt was probing for closes."""
        with self._lock:
            self._breaker.answered()
            self._slot_freed_locked()

    def _server_full(self, exc: BaseException) -> None:
        """The server refused a connection for lack of slots (the driver's
        ``is_capacity_error``): it is up, so
        no breaker; cap this pool at what it holds now for a short, jittered while."""
        now = monotonic()
        message = one_line(exc)
        with self._lock:
            self._size -= 1  # (no slot granted: the ceiling below holds callers back)
            self._breaker.server_full(message)
            self._counts["connections_errors"] += 1
            self._counts["connections_refused_full"] += 1
            first = self._ceiling.hold(now, len(self._entries), self.config.backoff_max)
        if first:
            logger.warning(
                "pool %r: the server has no connection slot left (%s); holding at %d "
                "connection(s) and queueing callers until one is returned",
                self.name, message, self._ceiling.value,
            )  # fmt: skip
        self._wake.set()

    def _connect_failed(self, exc: BaseException, started: float) -> None:
        now = monotonic()
        message = one_line(exc)
        absent = self._driver.is_server_absent(exc)
        denied = self._driver.access_denied(exc)
        with self._lock:
            self._counts["connections_errors"] += 1
            breaker = self._breaker
            failure = breaker.failed(now, now - started, message, absent, denied)
            if failure.opened:
                self._counts["breaker_opened"] += 1
            self._slot_freed_locked()
        first, down_for, call_failed = failure
        if first and breaker.denied is not None:
            logger.error("%s", self._denied_text(message, down_for))
        elif first and breaker.failing_over(now):
            logger.warning(
                "pool %r: no primary (%s); checkouts wait up to %g s for one (failover_timeout)",
                self.name, message, self.config.failover_timeout,
            )  # fmt: skip
        elif first:
            logger.warning(
                "pool %r: cannot connect (%s); failing fast until the database answers again",
                self.name, message,
            )  # fmt: skip
        if call_failed:
            logger.error(
                "pool %r: %s for %.1f s (reconnect_timeout=%g s): %s",
                self.name,
                "database unreachable" if breaker.denied is None else "connections refused",
                down_for, self.config.reconnect_timeout, message,
            )  # fmt: skip
            if self.config.reconnect_failed is not None:
                try:
                    self.config.reconnect_failed(self)
                except Exception:
                    logger.exception("pool %r: reconnect_failed callback raised", self.name)
        self._wake.set()

    # -- checkin ------------------------------------------------------------------------

    def putconn(self, conn: Any) -> None:
        """Give a connection back: rolled back if a transaction is open, discarded if broken.

        A second putconn of the same connection is harmless; a connection this pool never
        lent raises :class:`~connguard.errors.ForeignConnection`.
        """
        try:
            status = self._tx_status(conn)
        except Exception:
            status = -1
        now = monotonic()
        entry = self._out.pop(id(conn), None)  # atomic: no lock on the fast path
        # fast path: idle transaction, young, nothing to reset
        if (
            status == 0
            and entry is not None
            and now < entry.expires
            and entry.generation == self._generation
            and self._size <= self._max_size
            and not self._closed
            and self._reset is None
            and entry.ref() is conn  # type: ignore[misc]
        ):
            entry.conn = conn
            entry.lease = None
            entry.last_used = now
            self._idle.append(entry)
            # see _reserve(): queued callers re-check idle, and so do we; close() empties
            # idle after setting _closed, and drain() after bumping the generation, so we
            # re-check those too (one of us sees the other)
            if self._waiters or self._closed or entry.generation != self._generation:
                with self._lock:
                    if self._closed:
                        stranded: list[Entry] = self._take_all_idle_locked()
                    elif entry.generation < self._floor and take(self._idle, entry):
                        stranded = [entry]
                    else:
                        stranded = []
                    waiters.hand_over(self._waiters, self._idle)
                for idle_entry in stranded:
                    self._retire(idle_entry, "connections_discarded")
            return
        if entry is None or entry.ref is None or entry.ref() is not conn:
            self._put_unknown(conn, entry)
            return
        entry.conn = conn
        entry.lease = None
        driver = self._driver
        try:
            if status == TxStatus.INTRANS or status == TxStatus.INERROR:
                driver.rollback(conn)
                self._count("returns_rolled_back")
                status = self._tx_status(conn)
            if status != TxStatus.IDLE or driver.is_closed(conn):
                self._retire(entry, "returns_bad")
                return
            if self._reset is not None:
                self._reset(conn)
        except Exception as exc:
            logger.info(
                "pool %r: discarding %s on return: %s", self.name, entry.describe(), one_line(exc)
            )
            self._retire(entry, "returns_bad")
            return
        except BaseException:  # interrupted mid-reset: its state is unknown
            self._retire(entry, "returns_bad")
            raise
        now = monotonic()
        entry.last_used = now
        if now >= entry.expires:
            self._retire(entry, "connections_expired")
            return
        self._return(entry)

    def _return(self, entry: Entry) -> None:
        with self._lock:
            if self._closed or entry.generation < self._floor or self._size > self._max_size:
                retire = True
            else:
                retire = False
                self._idle.append(entry)
                waiters.hand_over(self._waiters, self._idle)
        if retire:
            self._retire(entry, "connections_discarded")

    def _put_unknown(self, conn: Any, entry: Entry | None) -> None:
        if entry is not None and entry.lease is not None:
            # id() reuse: the key belonged to a collected connection; put its entry back
            with self._lock:
                self._out.setdefault(entry.lease.key, entry)
        inherited = self._inherited.pop(id(conn), None)
        if inherited is not None:
            logger.info(
                "pool %r: %s was inherited from pid %d; discarded without contacting the server",
                self.name, inherited.describe(), inherited.pid,
            )  # fmt: skip
            with self._lock:
                self._done[id(conn)] = conn
            self._driver.abandon(conn, -1)
            return
        with self._lock:
            known = (
                self._done.get(id(conn)) is conn
                or any(e.conn is conn for e in self._idle)
                or any(e.ref is not None and e.ref() is conn for e in self._entries.values())
            )
        if known:
            return  # returned twice, or already retired: harmless
        raise errors.foreign_connection(self.name, conn)

    def _retire(self, entry: Entry, reason: str) -> None:
        """Close an entry's connection (outside the lock), forget it, free its slot."""
        conn = entry.conn if entry.conn is not None else (entry.ref() if entry.ref else None)
        entry.conn = None
        if conn is not None:
            # closed before its slot is freed: never max_size + 1 sockets open at once
            self._driver.close(conn)
        with self._lock:
            self._counts[reason] += 1
            self._forget_locked(entry)
            self._grant_slots_locked()
            if conn is not None:
                self._done[id(conn)] = conn

    def _forget_locked(self, entry: Entry) -> None:
        self._drop_entry_locked(entry)
        for key, e in list(self._out.items()):  # a copy: putconn() pops without the lock
            if e is entry:
                self._out.pop(key, None)
                break

    def _drop_entry_locked(self, entry: Entry) -> bool:
        """Forget an entry and free its slot (the one place that does); False if gone."""
        if self._entries.pop(entry.id, None) is None:
            return False
        self._size -= 1
        self._stats.retired_uses += entry.uses
        return True

    def _take_all_idle_locked(self) -> list[Entry]:
        """Empty the idle list one atomic pop at a time (getconn() pops without the lock)."""
        taken = []
        while True:
            try:
                taken.append(self._idle.pop())
            except IndexError:
                return taken

    def _grant_slots_locked(self) -> None:
        """Hand free slots to queued callers so they open connections themselves; while the
        breaker is open, fail those only a connect could serve (:func:`connguard.decide.grants`
        decides)."""
        slots, fail = decide.grants(self._state_locked(), self._breaker, self._ceiling, monotonic())
        queue = self._waiters
        self._size += slots
        for _ in range(slots):
            queue.popleft().grant(None)
        for _ in range(fail):
            queue.pop().wake_down()

    def socket_of(self, conn: Any) -> tuple[int, Any] | None:
        """``(fd, poller)`` of a connection this pool lent: the poller it made when the
        connection opened (one ``poll(0)`` tells whether the server hung up), or None."""
        entry = self._out.get(id(conn))
        return None if entry is None else (entry.fd, entry.poller)

    def discard(self, conn: Any) -> None:
        """Close a connection that is known to be broken instead of returning it."""
        with self._lock:
            entry = self._out.pop(id(conn), None)
        if entry is None or entry.ref is None or entry.ref() is not conn:
            self._put_unknown(conn, entry)
            return
        entry.conn = conn
        self._retire(entry, "connections_lost")

    def connection(self, timeout: float | None = None) -> _Borrowed:
        """``with pool.connection() as conn``: commit on success, roll back on error, return."""
        return _Borrowed(self, timeout)

    # -- background maintenance ----------------------------------------------------------

    def _ensure_worker(self) -> None:
        with self._lock:
            if self._worker is None and not self._closed:
                self._start_worker_locked()

    def _start_worker_locked(self) -> None:
        self._worker = maintenance.Maintenance(self)
        self._worker.start()

    def _maintain(self) -> float:
        """One round of background work (see :mod:`connguard.maintenance`); returns how long
        to sleep before the next."""
        return maintenance.run_round(self)

    def _ping_idle(self, entries: list[Entry], what: str) -> None:
        """Ping entries taken off the idle list; put the live ones back, retire the dead."""
        for i, entry in enumerate(entries):
            try:
                self._driver.ping(entry.conn, self.config.ping_timeout)
            except Exception as exc:
                logger.info("pool %r: %s found %s dead: %s", self.name, what, entry.describe(), exc)
                self._retire(entry, "connections_lost")
                continue
            except BaseException:  # interrupted: the rest go back untouched
                self._retire(entry, "connections_lost")
                for rest in entries[i + 1 :]:
                    self._return(rest)
                raise
            entry.last_used = monotonic()
            self._return(entry)

    # -- whole-pool operations -------------------------------------------------------------

    def wait(self, timeout: float = 30.0) -> None:
        """Block until ``min_size`` connections are open; PoolTimeout after *timeout*."""
        self._ensure_worker()
        deadline = monotonic() + timeout
        while True:
            with self._lock:
                ready = len(self._entries) >= self._min_size
            if ready:
                return
            if monotonic() >= deadline:
                raise errors.not_ready_error(self._snapshot(), timeout)
            self._wake.set()
            time.sleep(0.01)

    def check(self) -> None:
        """Ping every idle connection now; discard the dead ones and refill to min_size."""
        with self._lock:
            idle = self._take_all_idle_locked()
        self._ping_idle(idle, "check()")
        maintenance.fill(self, monotonic())

    def resize(self, min_size: int, max_size: int | None = None) -> None:
        """Change the bounds; extra connections are closed as they come back."""
        max_size = min_size if max_size is None else max_size
        config = build_config(
            {**_config_dict(self.config), "min_size": min_size, "max_size": max_size}
        )
        with self._lock:
            self.config = config
            self._min_size, self._max_size = config.min_size, config.max_size
            extra = max(0, self._size - self._max_size)
            drop = [e for e in list(self._idle)[:extra] if take(self._idle, e)]
            self._grant_slots_locked()
        for entry in drop:
            self._retire(entry, "connections_discarded")
        if self._min_size:
            self._ensure_worker()  # the fill to a larger min_size is background work
        self._wake.set()

    def drain(self) -> None:
        """Retire every connection: idle ones now, lent ones when they come back."""
        with self._lock:
            self._generation += 1
            self._floor = self._generation
            idle = self._take_all_idle_locked()
        for entry in idle:
            self._retire(entry, "connections_discarded")

    def close(self, timeout: float = 5.0) -> None:
        """Close the pool: idle connections now, lent ones as they are returned.

        Waiting callers get PoolClosed. Waits up to *timeout* seconds for lent connections to
        come back (each is closed as it does; those the calling thread took itself are not
        waited for) and for the background thread. A connection still lent after that is
        logged with its holder and closed when it is returned, never under its holder.
        """
        deadline = monotonic() + timeout
        with self._lock:
            if self._closed and self._opened:
                return
            self._closed = True
            self._opened = True
            idle = self._take_all_idle_locked()
            waiters, self._waiters = list(self._waiters), deque()
            worker = self._worker
        for waiter in waiters:
            waiter.wake_closed()
        for entry in idle:
            self._retire(entry, "connections_discarded")
        self._wake.set()
        if self._pid == os.getpid():
            self._await_returns(deadline)
        if worker is not None and worker is not threading.current_thread() and worker.is_alive():
            worker.join(max(0.0, deadline - monotonic()))

    def _await_returns(self, deadline: float) -> None:
        """close(): wait until the lent connections are back (and closed), or *deadline*."""
        me = get_ident()

        def others() -> list[tuple[Entry, Lease]]:
            with self._lock:
                return [
                    (e, lease)
                    for e in self._out.values()
                    if (lease := e.lease) is not None and lease.thread != me
                ]

        pause = 0.001
        while (held := others()) and monotonic() < deadline:
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
        for entry, lease in held:
            logger.warning(
                "pool %r: closed while %s is still lent (held for %.1f s by thread %r); it "
                "will be closed when it is returned. Taken at:\n%s",
                self.name, entry.describe(), monotonic() - lease.taken_at,
                thread_name(lease.thread), format_stack(lease.stack),
            )  # fmt: skip

    def _close_at_exit(self) -> None:
        """Interpreter exit (see :mod:`connguard.shutdown`): end this process's sessions."""
        if self._pid == os.getpid() and not (self._closed and self._opened):
            self.close(timeout=0.0)

    def __enter__(self) -> ConnectionPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    # -- fork ----------------------------------------------------------------------------

    def _after_fork_in_child(self) -> None:
        """Runs in a child right after fork(): abandon everything inherited, start afresh."""
        parent = self._pid
        entries = list(self._entries.values())
        out = dict(self._out)
        closed, opened = self._closed, self._opened
        generation = self._generation
        done = self._done
        self._reset_state()
        self._done = done
        self._closed, self._opened = closed, opened
        self._generation = self._floor = generation + 1
        for entry in entries:
            if entry.conn is not None:  # idle: nobody else holds it, drop it here
                self._driver.abandon(entry.conn, entry.fd)
                entry.conn = None
            else:  # lent: the caller still holds it; make its socket harmless
                self._driver.abandon_fd(entry.fd)
        self._inherited = {key: e for key, e in out.items()}
        self._counts["connections_discarded_after_fork"] += len(entries)
        if entries:
            lines = [
                f"pool {self.name!r}: process {os.getpid()} was forked from {parent} holding "
                f"{len(entries)} connection(s); discarded them without contacting the server "
                "(the parent keeps its sessions). Open connections after forking, not before. "
                "Where they were opened:"
            ]
            for entry in entries:
                lines.append(f" {entry.describe()}:\n{format_stack(entry.origin)}")
            self._fork_report = "\n".join(lines)
        self._pid = os.getpid()

    # -- introspection -------------------------------------------------------------------

    def _snapshot(self) -> dict[str, Any]:
        in_use = len(self._out)
        return {
            "name": self.name,
            "size": self._size,
            "min_size": self._min_size,
            "max_size": self._max_size,
            "in_use": in_use,
            "idle": len(self._idle),
            "waiting": len(self._waiters),
            "breaker": "open" if self._breaker.down_since is not None else "closed",
            "last_error": self._breaker.last_error,
        }

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def _timeout_error(self, waited: float) -> PoolError:
        with self._lock:
            self._counts["requests_errors"] += 1
            self._counts["timeouts"] += 1
            snapshot = self._snapshot()
        return errors.timeout_error(snapshot, waited)

    def _unavailable_error(self, exc: BaseException | None = None) -> PoolError:
        """Build the fail-fast error; call with the lock held."""
        self._counts["requests_errors"] += 1
        self._counts["requests_failed_fast"] += 1
        breaker = self._breaker
        down = breaker.down_for(monotonic())
        error = one_line(exc) if exc is not None else breaker.last_error
        if breaker.denied is not None and breaker.down_since is not None:
            return errors.access_denied_error(
                self._snapshot(), error, self._setting_to_check(), down, breaker.backoff_cap()
            )
        return errors.unavailable_error(self._snapshot(), down, error)

    def _denied_text(self, error: str | None, down: float) -> str:
        """The server answered and refused this client: say so, and what to fix."""
        return errors.denied_text(
            self.name, error, self._setting_to_check(), down, self._breaker.backoff_cap()
        )

    def _setting_to_check(self) -> str:
        """The setting behind the connection parameter the server refused, as the user
        wrote it (or the server's rule that refused it)."""
        key = self._breaker.denied or ""
        named = self._setting(key) if self._setting is not None else None
        return errors.setting_to_check(key, self._driver.access_rule(key), named)

    def get_stats(self) -> dict[str, Any]:
        """Gauges and counters with stable names (see docs)."""
        with self._lock:
            return self._stats_locked()

    def pop_stats(self) -> dict[str, Any]:
        """Like get_stats(), and reset the counters."""
        with self._lock:
            stats = self._stats_locked()
            self._stats.reset(self._live_uses_locked())
        return stats

    def _stats_locked(self) -> dict[str, Any]:
        gauges = {
            "pool_min": self._min_size,
            "pool_max": self._max_size,
            "pool_size": self._size,
            "pool_available": len(self._idle),
            "pool_in_use": len(self._out),
            "requests_waiting": len(self._waiters),
            "breaker_open": int(self._breaker.down_since is not None),
        }
        return self._stats.report(gauges, self._live_uses_locked())

    def _live_uses_locked(self) -> int:
        return sum(e.uses for e in self._entries.values())

    def leases(self) -> Iterator[tuple[Entry, Lease]]:
        """The connections lent right now, with who holds them (for diagnostics)."""
        with self._lock:
            items = [(e, e.lease) for e in self._out.values() if e.lease is not None]
        yield from items

    def __repr__(self) -> str:
        breaker = "open" if self._breaker.down_since is not None else "closed"
        state = "closed" if self._closed else "open"
        return (
            f"<ConnectionPool {self.name!r} {state} {errors.state_text(self._snapshot())} "
            f"breaker={breaker} "
            f"pid={self._pid} conninfo={mask_conninfo(self.config.conninfo)!r}>"
        )


class _Borrowed:
    """The context manager behind ``pool.connection()`` (a class: cheaper than a generator)."""

    __slots__ = ("conn", "pool", "timeout")

    def __init__(self, pool: ConnectionPool, timeout: float | None) -> None:
        self.pool = pool
        self.timeout = timeout
        self.conn: Any = None

    def __enter__(self) -> Any:
        self.conn = self.pool.getconn(self.timeout)
        return self.conn

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, *rest: object
    ) -> None:
        conn, self.conn = self.conn, None
        pool = self.pool
        if exc is not None:
            pool.report_error(exc)
        try:
            if exc_type is None and pool._tx_status(conn) == TX_INTRANS:
                pool._driver.commit(conn)
        finally:
            pool.putconn(conn)


def _config_dict(config: PoolConfig) -> dict[str, Any]:
    import dataclasses

    return {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}


def _replace(config: PoolConfig, **changes: Any) -> PoolConfig:
    import dataclasses

    return dataclasses.replace(config, **changes)
