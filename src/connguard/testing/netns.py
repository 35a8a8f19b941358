"""Real kernel TCP faults: a network namespace, a veth pair, and PostgreSQL behind it.

:class:`Netns` creates a network namespace and a veth pair whose ends carry a /30 from
198.18.0.0/15 (the benchmarking range, RFC 2544): the host side gets ``.1``, the namespace side
``.2``. Nothing else is addressed or routed: traffic goes only to the namespace this object
created. :meth:`Netns.drop_established` makes the flows that are established at that moment
silent both ways (nftables rules inside the namespace, matching their ports) — no FIN, no RST,
packets vanish, as behind a NAT gateway that forgot them — while new connections still work;
:meth:`Netns.restore` takes the rules away.

:class:`NetnsPostgresServer` is the rig's :class:`~connguard.testing.server.PostgresServer`
with its postmaster started inside the namespace (``ip netns exec``, then ``setpriv`` to the
unprivileged user PostgreSQL runs as), listening only on the namespace address; clients stay
on the host side. :class:`NetnsMariaDBServer` is the rig's
:class:`~connguard.testing.mariadb.MariaDBServer` run the same way (``bind-address`` the
namespace address). What the two share is :class:`NetnsServer`, mixed in before the server
class.

Requires root, ``ip`` (iproute2), ``nft`` (nftables) and ``setpriv``: :func:`unavailable_reason`
says what is missing. Everything is torn down after: the server by its own finalizer and
watchdog; the namespace and the veth pair by :meth:`Netns.close`, a ``weakref.finalize`` and a
watchdog process that deletes them when the test process dies, however it dies (as
``_teardown`` does for the cluster).

:class:`SilentListener` needs none of that: a loopback socket that accepts connections and never
says a word (a wedged server, a dead load-balancer target), for connect-timeout tests.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import random
import shutil
import socket
import stat
import subprocess
import sys
import threading
import weakref
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from connguard.testing import _netns_teardown, _process
from connguard.testing._process import (
    ClosesOnExit,
    ProcessState,
    RigProcess,
    finalize,
    start_watchdog,
)
from connguard.testing.mariadb import MariaDBServer
from connguard.testing.server import PostgresServer

__all__ = [
    "Netns",
    "NetnsMariaDBServer",
    "NetnsPostgresServer",
    "NetnsServer",
    "NetnsUnavailable",
    "SilentListener",
    "unavailable_reason",
]

_RANGE = ipaddress.ip_network("198.18.0.0/15")
_TABLE = "connguard_drop"
_TIMEOUT = _netns_teardown.TIMEOUT
_numbers = itertools.count(1)


class NetnsUnavailable(RuntimeError):
    """This machine (or user) cannot create network namespaces and firewall rules."""


def unavailable_reason() -> str | None:
    """Why :class:`Netns` cannot work here (None when it can): not root, or a tool missing."""
    if not sys.platform.startswith("linux"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root"
    missing = [tool for tool in ("ip", "nft", "setpriv") if shutil.which(tool) is None]
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install iproute2 nftables util-linux)"
    return None


def _run(argv: Sequence[str], what: str, *, check: bool = True, input: str | None = None) -> str:
    try:
        done = subprocess.run(
            list(argv), input=input, capture_output=True, text=True, timeout=_TIMEOUT
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsUnavailable(f"{what}: {' '.join(argv)}: {exc}") from exc
    if check and done.returncode != 0:
        raise NetnsUnavailable(
            f"{what}: {' '.join(argv)} exited with {done.returncode}: "
            f"{(done.stderr or done.stdout).strip()}"
        )
    return done.stdout


@dataclass
class _State(ProcessState):
    """What the finalizer needs: the namespace and the host end of the veth pair."""

    name: str = ""
    host_if: str = ""

    def teardown(self) -> None:
        _netns_teardown.delete(self.name, self.host_if)

    def watchdog_argv(self) -> list[str]:
        return [_netns_teardown.__file__, self.name, self.host_if]


def _free_subnet() -> ipaddress.IPv4Network:
    """A /30 of 198.18.0.0/15 that no interface of this host uses yet."""
    used: list[ipaddress.IPv4Network] = []
    for line in _run(["ip", "-o", "-4", "addr", "show"], "list addresses").splitlines():
        fields = line.split()
        if "inet" in fields:
            with contextlib.suppress(ValueError):
                net = ipaddress.ip_interface(fields[fields.index("inet") + 1]).network
                used.append(net)  # type: ignore[arg-type]
    rng = random.Random()
    for _ in range(200):
        index = rng.randrange(_RANGE.num_addresses // 4)
        candidate = ipaddress.ip_network(f"{_RANGE.network_address + index * 4}/30")
        if not any(candidate.overlaps(net) for net in used):
            return candidate  # type: ignore[return-value]
    raise NetnsUnavailable("no free /30 left in 198.18.0.0/15 on this host")


class Netns(ClosesOnExit):
    """A network namespace with a veth pair to the host; see the module docstring."""

    def __init__(self) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise NetnsUnavailable(reason)
        n = next(_numbers)
        pid = os.getpid()
        self.name = f"connguard-{pid}-{n}"
        self.host_if = f"cg{pid % 1000000}h{n}"[:15]
        self.ns_if = "cgveth0"
        subnet = _free_subnet()
        self.host_addr = str(subnet.network_address + 1)
        self.ns_addr = str(subnet.network_address + 2)
        self._prefix = subnet.prefixlen
        self._state = _State(name=self.name, host_if=self.host_if)
        self._finalizer = weakref.finalize(self, finalize, self._state)
        self._dropped: list[int] = []
        try:
            self._start_watchdog()
            self._create()
        except BaseException:
            self.close()
            raise

    def _create(self) -> None:
        name, host_if, ns_if = self.name, self.host_if, self.ns_if
        _run(["ip", "netns", "add", name], "create the namespace")
        _run(
            ["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", name],
            "create the veth pair",
        )
        _run(["ip", "addr", "add", f"{self.host_addr}/{self._prefix}", "dev", host_if], "address")
        _run(["ip", "link", "set", host_if, "up"], "link up")
        self.exec(["ip", "addr", "add", f"{self.ns_addr}/{self._prefix}", "dev", ns_if])
        self.exec(["ip", "link", "set", ns_if, "up"])
        self.exec(["ip", "link", "set", "lo", "up"])

    def _start_watchdog(self) -> None:
        self._state.watchdog = start_watchdog(self._state.watchdog_argv())

    def wrap(self, argv: Sequence[str]) -> list[str]:
        """*argv* run inside the namespace (``ip netns exec NAME ...``)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def exec(self, argv: Sequence[str], input: str | None = None) -> str:
        """Run *argv* inside the namespace; its standard output."""
        return _run(self.wrap(argv), f"namespace {self.name}", input=input)

    def established_ports(self, server_port: int) -> list[int]:
        """The client ports of the TCP connections established to *server_port* inside the
        namespace (as its kernel sees them: /proc/net/tcp read from inside)."""
        text = self.exec(["cat", "/proc/net/tcp", "/proc/net/tcp6"])
        ports = set()
        for line in text.splitlines()[1:]:
            fields = line.split()
            if len(fields) < 4 or fields[3] != "01":  # 01: ESTABLISHED
                continue
            try:
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
            except (IndexError, ValueError):
                continue
            if local_port == server_port:
                ports.add(remote_port)
        return sorted(ports)

    def drop_established(self, server_port: int, only: Collection[int] | None = None) -> list[int]:
        """Silence every TCP flow established to *server_port* now (or those of them whose
        client port is in *only*), both ways; connections opened afterwards still work.
        Returns the client ports dropped (flows dropped before stay dropped)."""
        now = set(self.established_ports(server_port))
        if only is not None:
            now &= set(only)
        ports = sorted(set(self._dropped) | now)
        self._dropped = ports
        if not ports:
            return []
        listed = ", ".join(str(p) for p in ports)
        rules = (
            f"table inet {_TABLE} {{\n"
            "  chain input {\n    type filter hook input priority 0; policy accept;\n"
            f"    tcp dport {server_port} tcp sport {{ {listed} }} drop\n  }}\n"
            "  chain output {\n    type filter hook output priority 0; policy accept;\n"
            f"    tcp sport {server_port} tcp dport {{ {listed} }} drop\n  }}\n"
            "}\n"
        )
        self._delete_rules()
        self.exec(["nft", "-f", "-"], input=rules)
        return ports

    def restore(self) -> None:
        """Take the drop rules away (the dropped connections' packets flow again; the next
        :meth:`drop_established` starts afresh)."""
        self._dropped = []
        self._delete_rules()

    def _delete_rules(self) -> None:
        with contextlib.suppress(NetnsUnavailable):
            _run(self.wrap(["nft", "delete", "table", "inet", _TABLE]), "restore", check=False)

    def close(self) -> None:
        """Delete the veth pair and the namespace; stop the watchdog. Idempotent."""
        self._finalizer()

    def __repr__(self) -> str:
        return f"<Netns {self.name} {self.host_addr} <-> {self.ns_addr}>"


class NetnsServer(RigProcess):
    """Mixed in before a rig server class (``class X(NetnsServer, PostgresServer)``): the
    server runs inside a :class:`Netns` and listens on its address only.

    The rig starts its server with :meth:`RigProcess._spawn`; here that goes through a one-line
    wrapper script in place of the server binary, ``ip netns exec NS setpriv --reuid ...
    BINARY "$@"``, spawned as root (the wrapper drops to the unprivileged user itself, after
    entering the namespace). Every exec keeps the pid, so the rig's pid checks, signals,
    finalizer and watchdog work unchanged. Setup tools (``initdb``, ``mariadb-install-db``)
    still run on the host side as the unprivileged user: they listen nowhere.
    """

    netns: Netns

    #: the server's setting that makes it listen on one address only
    listen_setting: str

    def __init__(
        self,
        netns: Netns,
        base_dir: str | os.PathLike[str] | None = None,
        settings: Mapping[str, object] | None = None,
    ) -> None:
        """The server's own ``__init__`` with the namespace's address as its host and its
        only listen address, and a random port (the namespace is empty: any port is free
        there, none of the host's is touched)."""
        self.netns = netns
        self.host = netns.ns_addr
        port = random.Random().randrange(20000, 60000)
        super().__init__(  # type: ignore[call-arg]  # the server class after this mixin
            base_dir, port, {**(settings or {}), self.listen_setting: netns.ns_addr}
        )

    def _wrapper(self, real: Path) -> Path:
        """The script that runs *real* inside the namespace as the unprivileged user."""
        run_as = self._run_as
        drop = (
            ["setpriv", f"--reuid={run_as.uid}", f"--regid={run_as.gid}", "--clear-groups"]
            if run_as is not None
            else []
        )
        argv = " ".join(_sh_quote(a) for a in [*self.netns.wrap(drop), str(real)])
        folder = self.base_dir / "netns-bin"
        folder.mkdir(exist_ok=True)
        path = folder / real.name
        path.write_text(f'#!/bin/sh\nexec {argv} "$@"\n')
        path.chmod(stat.S_IRWXU)
        return path

    def _spawn(
        self,
        argv: list[str],
        *,
        output: Path,
        cwd: Path,
        ready: Callable[[subprocess.Popen[bytes]], bool],
        timeout: float = _process.TIMEOUT,
        poll: float = 0.01,
    ) -> None:
        wrapped = [str(self._wrapper(Path(argv[0]))), *argv[1:]]
        run_as, self._run_as = self._run_as, None  # root runs the wrapper; it drops privileges
        try:
            super()._spawn(wrapped, output=output, cwd=cwd, ready=ready, timeout=timeout, poll=poll)
        finally:
            self._run_as = run_as

    def _port_taken(self) -> bool:
        return False


class NetnsPostgresServer(NetnsServer, PostgresServer):
    """The rig's throwaway PostgreSQL, run inside *netns* and listening on its address only
    (``listen_addresses``; ``pg_hba.conf`` trusts the host end of the veth pair)."""

    listen_setting = "listen_addresses"

    def _initdb(self) -> None:
        super()._initdb()
        # initdb trusts loopback only: trust the host end of the veth pair too
        hba = self.data_dir / "pg_hba.conf"
        with hba.open("a") as conf:
            conf.write(
                f"\n# connguard netns rig: the host side of the veth pair\n"
                f"host all all {self.netns.host_addr}/32 trust\n"
                f"host replication all {self.netns.host_addr}/32 trust\n"
            )


class NetnsMariaDBServer(NetnsServer, MariaDBServer):
    """The rig's throwaway MariaDB, ``mariadbd`` run inside *netns* with ``bind-address`` its
    address; the rig's own SQL (as ``root``) still goes through the private unix socket, and
    the application account (``connguard``, from any host) connects over TCP from the host
    side."""

    listen_setting = "bind-address"


def _sh_quote(text: str) -> str:
    if text and all(c.isalnum() or c in "-_./=:" for c in text):
        return text
    return "'" + text.replace("'", "'\\''") + "'"


class SilentListener(ClosesOnExit):
    """A loopback TCP listener that accepts every connection and never sends a byte.

    ``host``/``port`` to connect to; the accepted sockets stay open until :meth:`close`.
    """

    def __init__(self, host: str = "127.0.0.1") -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind((host, 0))
        self._sock.listen(64)
        self._sock.settimeout(0.2)
        self.host = host
        self.port = int(self._sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="silent-listener", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self.accepted.append(conn)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._sock.close()
        for conn in self.accepted:
            conn.close()
