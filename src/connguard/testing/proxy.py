"""A TCP proxy that makes network faults on demand: ``FaultProxy``.

It listens on a free loopback port and forwards every connection to a target (the test
PostgreSQL server). Its mode decides what happens to the bytes:

* :meth:`FaultProxy.passthrough` — forward as they come;
* :meth:`FaultProxy.stall` — a black hole: connections, old and new, are accepted and kept
  open, but nothing is forwarded either way (a new one is not even connected upstream) until
  the mode changes, when what was held back flows again;
* :meth:`FaultProxy.latency` — forward, each chunk after a delay;
* :meth:`FaultProxy.cut` — reset every current connection, both sides, with RST
  (``SO_LINGER`` 0), then pass new connections through.

One thread accepts; one thread per connection pumps both directions and is the only one that
closes that connection's sockets, so a socket is never closed under a thread blocked on it.
:meth:`FaultProxy.close` stops them all within a few seconds and leaves no thread behind.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
import time
from typing import Literal

from connguard.testing._process import ClosesOnExit

__all__ = ["FaultProxy"]

Mode = Literal["passthrough", "stall", "latency"]

_CHUNK = 65536
_CONNECT_TIMEOUT = 5.0
_JOIN_TIMEOUT = 5.0


def _wake(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.send(b"x")


def _drain(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        while sock.recv(4096):
            pass


class _Link:
    """One proxied connection: the client side, the upstream side and their pump thread."""

    def __init__(self, client: socket.socket) -> None:
        self.client = client
        self.upstream: socket.socket | None = None
        self.lock = threading.Lock()  # guards closing the sockets vs. shutdown from close()
        self.wake_r, self.wake_w = socket.socketpair()
        self.wake_r.setblocking(False)
        self.reset = False  # cut(): close with RST
        self.closing = False  # close(): close normally
        self.closed = False
        self.done = threading.Event()
        self.thread: threading.Thread | None = None

    def finish(self, rst: bool) -> None:
        """Close both sides (RST when ``rst``), and the wake pair. Pump thread only."""
        with self.lock:
            for sock in (self.client, self.upstream):
                if sock is None:
                    continue
                if rst:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                with contextlib.suppress(OSError):
                    sock.close()
            self.closed = True
        self.wake_r.close()
        self.wake_w.close()

    def unblock(self) -> None:
        """Wake a pump blocked in send or recv (from any thread)."""
        with self.lock:
            if self.closed:
                return
            for sock in (self.client, self.upstream):
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)


class FaultProxy(ClosesOnExit):
    """A threaded TCP proxy on ``listen_host`` (a free port) in front of a target.

    ``host``/``port`` are where clients connect; :attr:`connections` counts the connections
    being proxied. Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, target_host: str, target_port: int, listen_host: str = "127.0.0.1") -> None:
        self.target_host = target_host
        self.target_port = target_port
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((listen_host, 0))
        self._listener.listen(128)
        self._listener.setblocking(False)
        self.host: str = listen_host
        self.port: int = int(self._listener.getsockname()[1])
        self._lock = threading.Lock()
        self._mode: Mode = "passthrough"
        self._delay = 0.0
        self._links: set[_Link] = set()
        self._closed = False
        self._stopping = threading.Event()  # interrupts latency sleeps on close()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._acceptor = threading.Thread(
            target=self._accept_loop, name=f"FaultProxy:{self.port}-accept", daemon=True
        )
        self._acceptor.start()

    # ----------------------------------------------------------------- state

    @property
    def mode(self) -> Mode:
        return self._mode

    @property
    def delay(self) -> float:
        """The per-chunk delay in seconds (0 unless in ``latency`` mode)."""
        return self._delay

    @property
    def connections(self) -> int:
        """How many client connections are being proxied now."""
        with self._lock:
            return len(self._links)

    def __repr__(self) -> str:
        mode = f"latency {self._delay:.3f} s" if self._mode == "latency" else self._mode
        return (
            f"<FaultProxy {self.host}:{self.port} -> {self.target_host}:{self.target_port}"
            f" {mode}, connections={self.connections}{', closed' if self._closed else ''}>"
        )

    # ----------------------------------------------------------------- controls

    def passthrough(self) -> None:
        """Forward everything, without delay (held-back bytes flow again)."""
        self._set_mode("passthrough", 0.0)

    def stall(self) -> None:
        """Forward nothing, either way, on current and new connections; keep them open."""
        self._set_mode("stall", 0.0)

    def latency(self, seconds: float) -> None:
        """Forward each chunk ``seconds`` after it arrives (``0`` is passthrough)."""
        if seconds < 0:
            raise ValueError(f"latency must be >= 0 seconds, not {seconds!r}")
        self._set_mode("latency" if seconds else "passthrough", float(seconds))

    def cut(self, timeout: float = _JOIN_TIMEOUT) -> int:
        """Reset every current connection (RST to the client and to the server), then go
        back to passthrough. Returns how many were cut, once they are closed."""
        with self._lock:
            links = list(self._links)
            for link in links:
                link.reset = True
            self._mode, self._delay = "passthrough", 0.0
        for link in links:
            _wake(link.wake_w)
        self._wait_done(links, timeout)
        return len(links)

    def close(self) -> None:
        """Stop accepting, close every connection and wait for the threads (bounded)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            links = list(self._links)
            for link in links:
                link.closing = True
        self._stopping.set()
        _wake(self._wake_w)
        self._acceptor.join(_JOIN_TIMEOUT)
        for link in links:
            _wake(link.wake_w)
        if not self._wait_done(links, 1.0):
            for link in links:
                link.unblock()
            self._wait_done(links, _JOIN_TIMEOUT)
        for link in links:
            if link.thread is not None:
                link.thread.join(_JOIN_TIMEOUT)
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    # ----------------------------------------------------------------- internals

    def _set_mode(self, mode: Mode, delay: float) -> None:
        with self._lock:
            closed = self._closed
            if not closed:
                self._mode, self._delay = mode, delay
            links = list(self._links)
        if closed:
            raise RuntimeError(f"{self!r} is closed")
        for link in links:
            _wake(link.wake_w)

    @staticmethod
    def _wait_done(links: list[_Link], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        return all(link.done.wait(max(0.0, deadline - time.monotonic())) for link in links)

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as sel:
            sel.register(self._listener, selectors.EVENT_READ)
            sel.register(self._wake_r, selectors.EVENT_READ)
            while not self._closed:
                for key, _ in sel.select():
                    if key.fileobj is self._wake_r:
                        _drain(self._wake_r)
                        continue
                    try:
                        client, _addr = self._listener.accept()
                    except (BlockingIOError, InterruptedError):
                        continue
                    except OSError:
                        return
                    self._adopt(client)

    def _adopt(self, client: socket.socket) -> None:
        client.setblocking(True)
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        link = _Link(client)
        with self._lock:
            if self._closed:
                client.close()
                link.finish(rst=False)
                return
            self._links.add(link)
        link.thread = threading.Thread(
            target=self._pump,
            args=(link,),
            name=f"FaultProxy:{self.port}-link",
            daemon=True,
        )
        link.thread.start()

    def _pump(self, link: _Link) -> None:
        rst = False
        try:
            rst = self._forward(link)
        except OSError:
            pass
        finally:
            link.finish(rst=rst or link.reset)
            with self._lock:
                self._links.discard(link)
            link.done.set()

    def _forward(self, link: _Link) -> bool:
        """Move bytes until either side closes or the link is cut/closed; True means RST."""
        client = link.client
        held: dict[socket.socket, list[bytes]] = {}
        with selectors.DefaultSelector() as sel:
            sel.register(link.wake_r, selectors.EVENT_READ)
            watching = False
            while True:
                if link.reset:
                    return True
                if link.closing:
                    return False
                stalled = self._mode == "stall"
                if not stalled and link.upstream is None:
                    link.upstream = self._connect_upstream()
                    if link.upstream is None:
                        return True
                upstream = link.upstream
                if not stalled and upstream is not None:
                    for dst, chunks in list(held.items()):
                        for chunk in chunks:
                            dst.sendall(chunk)
                        del held[dst]
                if upstream is not None and watching == stalled:
                    for sock in (client, upstream):
                        if stalled:
                            sel.unregister(sock)
                        else:
                            sel.register(sock, selectors.EVENT_READ)
                    watching = not stalled
                for key, _ in sel.select():
                    if key.fileobj is link.wake_r:
                        _drain(link.wake_r)
                        continue
                    assert upstream is not None
                    src = client if key.fileobj is client else upstream
                    dst = upstream if src is client else client
                    data = src.recv(_CHUNK)
                    if not data:
                        return False
                    delay = self._delay
                    if delay and self._stopping.wait(delay):
                        return False
                    if link.reset:
                        return True
                    if self._mode == "stall":
                        held.setdefault(dst, []).append(data)
                    else:
                        dst.sendall(data)

    def _connect_upstream(self) -> socket.socket | None:
        try:
            sock = socket.create_connection(
                (self.target_host, self.target_port), timeout=_CONNECT_TIMEOUT
            )
        except OSError:
            return None
        sock.settimeout(None)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock
