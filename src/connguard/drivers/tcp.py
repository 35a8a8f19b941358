"""TCP keepalive and ``TCP_USER_TIMEOUT`` set on a connected socket, for drivers whose
library has no option for them (mysqlclient, PyMySQL).

The keys and their meaning are libpq's, as the PostgreSQL drivers take them (see
:data:`connguard.drivers.base.TCP_DEFAULTS` and docs/network.md): ``keepalives`` (0 turns the
probes off), ``keepalives_idle`` and ``keepalives_interval`` (seconds), ``keepalives_count``
and ``tcp_user_timeout`` (milliseconds); 0 for the last four means the OS's value. A key the
user sets wins; the others keep connguard's defaults. A unix socket is left as it is.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Mapping
from typing import Any

from connguard.drivers.base import TCP_DEFAULTS

#: the keywords that say how a connection's TCP socket is kept alive (libpq's names)
TCP_KEYS: tuple[str, ...] = tuple(TCP_DEFAULTS)
_UNITS = {
    "keepalives": "0 or 1",
    "keepalives_idle": "seconds",
    "keepalives_interval": "seconds",
    "keepalives_count": "probes",
    "tcp_user_timeout": "milliseconds",
}


def split_tcp(params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """*params* without the TCP keys (what the driver's ``connect()`` takes), and those keys
    (the user's own TCP settings)."""
    rest = {k: v for k, v in params.items() if k not in TCP_DEFAULTS}
    given = {k: v for k, v in params.items() if k in TCP_DEFAULTS}
    return rest, given


def tcp_settings(given: Mapping[str, Any], defaults: bool = True) -> dict[str, int]:
    """The settings to put on a socket: connguard's defaults (unless *defaults* is false),
    then the user's *given* values. A value that is not a whole number >= 0 raises a
    ``ValueError`` naming the key, the value and what it takes."""
    out = dict(TCP_DEFAULTS) if defaults else {}
    for key, value in given.items():
        try:
            number = int(str(value).strip())
        except ValueError:
            number = -1
        if number < 0 or (key == "keepalives" and number > 1):
            raise ValueError(
                f"{key}={value!r}: expected a whole number of {_UNITS[key]} (0 for the OS's "
                f"value{'; 0 turns the probes off' if key == 'keepalives' else ''}); "
                f"connguard's default is {TCP_DEFAULTS[key]} (docs/network.md)"
            )
        out[key] = number
    return out


def apply_tcp(fd: int, settings: Mapping[str, int]) -> bool:
    """Set *settings* on the socket *fd* when it is a TCP socket; False when it is not (a
    unix socket, no socket) and nothing was set. Keys left out, and 0 values other than
    ``keepalives``, leave the OS's value; ``keepalives=0`` turns the probes off."""
    if fd < 0 or not settings:
        return False
    try:
        sock = socket.socket(fileno=os.dup(fd))
    except OSError:
        return False
    try:
        if sock.family not in (socket.AF_INET, socket.AF_INET6):
            return False
        set_opt = sock.setsockopt
        keepalives = settings.get("keepalives")
        if keepalives is not None:
            set_opt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1 if keepalives else 0)
        if keepalives != 0:
            for key, option in (
                ("keepalives_idle", socket.TCP_KEEPIDLE),
                ("keepalives_interval", socket.TCP_KEEPINTVL),
                ("keepalives_count", socket.TCP_KEEPCNT),
            ):
                if settings.get(key):
                    set_opt(socket.IPPROTO_TCP, option, settings[key])
        if settings.get("tcp_user_timeout"):
            set_opt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, settings["tcp_user_timeout"])
        return True
    finally:
        with contextlib.suppress(OSError):
            sock.close()  # the duplicate only: the connection keeps its own descriptor


def read_tcp(fd: int) -> dict[str, int]:
    """The keepalive and ``tcp_user_timeout`` settings in effect on the TCP socket *fd* (the
    OS's values where none were set), under libpq's names."""
    sock = socket.socket(fileno=os.dup(fd))
    try:
        get = sock.getsockopt
        return {
            "keepalives": int(bool(get(socket.SOL_SOCKET, socket.SO_KEEPALIVE))),
            "keepalives_idle": get(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            "keepalives_interval": get(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            "keepalives_count": get(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
            "tcp_user_timeout": get(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT),
        }
    finally:
        sock.close()
