"""A fake DB-API driver for unit tests, with failure switches.

Each :class:`FakeConnection` owns one end of a ``socket.socketpair()``; the :class:`FakeServer`
keeps the other. So the pool's ``poll()`` liveness check is real: :meth:`FakeServer.kill`
writes a "FATAL" message and closes the server end, exactly what PostgreSQL does to a
terminated session, and the client end becomes readable.

Switches on the server: ``down`` (connect raises "connection refused"), ``slow_connect``,
``gate`` (connect blocks until the gate opens), ``fail_ping``, ``ping_delay``, ``kill(conn)``,
``set_status(conn, status)``. It counts connects, pings, Terminate messages and the
high-water mark of connections open at once.
"""

from __future__ import annotations

import contextlib
import itertools
import select
import socket
import threading
import time
import weakref
from typing import Any

from connguard.drivers.base import LIBPQ_ACCESS_RULES, Driver, TxStatus

IDLE, ACTIVE, INTRANS, INERROR, UNKNOWN = (int(s) for s in TxStatus)


class Error(Exception):
    pass


class OperationalError(Error):
    pass


class InterfaceError(Error):
    pass


_pids = itertools.count(1000)


class FakeConnection:
    """The client side: a DB-API-ish connection whose socket is half of a socketpair."""

    def __init__(self, server: FakeServer, client: socket.socket, peer: socket.socket) -> None:
        self.server = server
        self._sock = client
        self._peer = peer  # the server end (owned by the server)
        self.backend_pid = next(_pids)
        self.status = IDLE
        self.autocommit = False
        self.closed = False
        self.broken = False
        self.commits = 0
        self.rollbacks = 0
        self.thread = threading.current_thread().name

    def __repr__(self) -> str:
        return f"<FakeConnection pid={self.backend_pid} status={self.status}>"

    def fileno(self) -> int:
        if self.closed:
            raise InterfaceError("connection already closed")
        return self._sock.fileno()

    def _check(self) -> None:
        if self.closed:
            raise InterfaceError("connection already closed")
        if self.broken:
            raise OperationalError("connection is broken")
        # the server closed its end (killed, restarted): the client reads the FATAL + EOF
        r, _, _ = select.select([self._sock], [], [], 0)
        if r:
            data = b""
            with contextlib.suppress(OSError):
                data = self._sock.recv(4096)
            self.broken = True
            raise OperationalError(
                "server closed the connection unexpectedly" + (f": {data.decode()}" if data else "")
            )

    def execute(self, sql: str) -> Any:
        self._check()
        if self.status == INERROR:
            raise Error("current transaction is aborted")
        word = sql.strip().split()[0].upper() if sql.strip() else ""
        if word == "ERROR":
            self.status = INERROR
            raise Error("syntax error")
        if word == "COMMIT" or word == "ROLLBACK":
            self.status = IDLE
        elif not self.autocommit:
            self.status = INTRANS
        if word == "PID":
            return self.backend_pid
        return 1

    def commit(self) -> None:
        self._check()
        self.commits += 1
        self.status = IDLE

    def rollback(self) -> None:
        self._check()
        self.rollbacks += 1
        self.status = IDLE

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:  # like libpq's Terminate message
            self._sock.setblocking(False)
            self._sock.send(b"X")
        except OSError:
            pass
        self._sock.close()


class FakeServer:
    """The server side and the failure switches."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.down = False
        self.refuse_message = "connection refused"
        self.connect_delay = 0.0
        self.gate: threading.Event | None = None
        self.fail_ping = False
        self.ping_delay = 0.0
        self._sessions: list[tuple[socket.socket, weakref.ref[FakeConnection]]] = []
        self.connects = 0
        self.connect_attempts = 0
        self.connecting = 0
        self.pings = 0
        self.high_water = 0
        self.connect_times: list[float] = []
        self.connect_kwargs: list[dict[str, Any]] = []

    # -- switches ------------------------------------------------------------------------

    def slow_connect(self, seconds: float) -> None:
        self.connect_delay = seconds

    def hold_connects(self) -> threading.Event:
        """Make connect() block until the returned event is set (bounded by its timeout)."""
        self.gate = threading.Event()
        return self.gate

    def kill(self, conn: FakeConnection, message: bytes = b"FATAL: terminating connection") -> None:
        """What pg_terminate_backend does: a FATAL message, then the server closes its end."""
        peer = conn._peer
        if peer.fileno() < 0:
            return
        with contextlib.suppress(OSError):
            peer.send(message)
        peer.close()

    def kill_all(self) -> None:
        for conn in list(self.conns):
            self.kill(conn)

    def set_status(self, conn: FakeConnection, status: int) -> None:
        conn.status = status

    # -- observations --------------------------------------------------------------------

    def is_open(self, conn: FakeConnection) -> bool:
        """The server still has this session: its end is open and the client did not close."""
        return conn._peer.fileno() >= 0 and not self.terminated(conn)

    def terminated(self, conn: FakeConnection) -> bool:
        """The server end received a Terminate ('X') or end-of-file from the client."""
        return not self._peer_open(conn._peer)

    @staticmethod
    def _peer_open(peer: socket.socket) -> bool:
        return not FakeServer._peer_closed(peer)

    @staticmethod
    def _peer_closed(peer: socket.socket) -> bool:
        try:  # kill() may close it from another thread at any moment
            if peer.fileno() < 0:
                return True
            r, _, _ = select.select([peer], [], [], 0)
            if not r:
                return False
            data = peer.recv(4096, socket.MSG_PEEK)
        except (OSError, ValueError):
            return True
        return data == b"" or b"X" in data

    def received(self, conn: FakeConnection) -> bytes:
        """Everything the client sent so far (without consuming it)."""
        peer = conn._peer
        if peer.fileno() < 0:
            return b""
        r, _, _ = select.select([peer], [], [], 0)
        if not r:
            return b""
        try:
            return peer.recv(4096, socket.MSG_PEEK)
        except OSError:
            return b""

    @property
    def conns(self) -> list[FakeConnection]:
        """The connections opened so far that are still referenced somewhere."""
        return [c for _, ref in self._sessions if (c := ref()) is not None]

    def open_count(self) -> int:
        """Sessions the server still has: a collected client socket counts as closed."""
        # a snapshot: a session counted was open when it was taken (sessions never reopen)
        return sum(1 for peer, _ in list(self._sessions) if self._peer_open(peer))

    def close(self) -> None:
        for conn in self.conns:
            if not conn.closed:
                conn.closed = True
                conn._sock.close()
        for peer, _ in self._sessions:
            peer.close()

    # -- the server's side of connect ----------------------------------------------------

    def connect(self, timeout: float | None, kwargs: dict[str, Any]) -> FakeConnection:
        with self.lock:
            self.connect_attempts += 1
            self.connecting += 1
        try:
            limit = 10.0 if timeout is None else timeout
            if self.gate is not None and not self.gate.wait(limit):
                raise OperationalError(f"connection timeout expired after {limit:.2f} s")
            if self.connect_delay:
                if self.connect_delay > limit:
                    time.sleep(limit)
                    raise OperationalError(f"connection timeout expired after {limit:.2f} s")
                time.sleep(self.connect_delay)
            if self.down:
                raise OperationalError(self.refuse_message)
            client, peer = socket.socketpair()
            conn = FakeConnection(self, client, peer)
            with self.lock:
                self._sessions.append((peer, weakref.ref(conn)))
                self.connects += 1
                self.connect_times.append(time.monotonic())
                self.connect_kwargs.append(dict(kwargs))
                self.high_water = max(self.high_water, self.open_count())
            return conn
        finally:
            with self.lock:
                self.connecting -= 1

    def ping(self, conn: FakeConnection, timeout: float) -> None:
        with self.lock:
            self.pings += 1
        if self.ping_delay:
            time.sleep(min(self.ping_delay, timeout))
            if self.ping_delay >= timeout:
                raise OperationalError(f"ping timed out after {timeout:.2f} s")
        conn._check()
        if self.fail_ping:
            conn.broken = True
            raise OperationalError("ping failed")


class FakeDriver(Driver):
    name = "fake"
    disconnect_errors = (OperationalError, InterfaceError, OSError)

    def __init__(self, server: FakeServer) -> None:
        self.server = server

    def connect(self, conninfo: str, kwargs: dict[str, Any], timeout: float | None) -> Any:
        return self.server.connect(timeout, kwargs)

    def is_closed(self, conn: Any) -> bool:
        return bool(conn.closed or conn.broken)

    def transaction_status(self, conn: Any) -> int:
        if conn.closed:
            return UNKNOWN
        return int(conn.status)

    def ping(self, conn: Any, timeout: float) -> None:
        self.server.ping(conn, timeout)

    def access_rule(self, key: str) -> str | None:
        return LIBPQ_ACCESS_RULES.get(key)  # it speaks PostgreSQL's messages, as libpq does


def wait_until(predicate: Any, timeout: float = 5.0, step: float = 0.002) -> None:
    """Poll *predicate* until it is true; fail the test after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(step)
