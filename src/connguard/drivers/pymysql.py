"""PyMySQL, for MySQL and MariaDB: standalone (``driver="pymysql"``) or installed as
``MySQLdb`` (``pymysql.install_as_MySQLdb()``) under Django's MySQL backend.

PyMySQL is pure Python over a plain (or SSL) socket, and keeps more of the protocol's state
than mysqlclient exposes; what this driver reads, and how:

* **Transaction status** — PyMySQL keeps the status word of every OK packet in
  ``Connection.server_status`` (not that of the EOF packet ending a result set, nor of an
  error, which has none). With autocommit on, a transaction opens only with ``BEGIN`` (an OK
  packet): IN_TRANS is exact. With autocommit off, a read of an InnoDB table opens one too,
  said only in the result set's EOF packet. So the driver notes, on each connection it
  opens (its class is swapped for a subclass that tracks it), whether the last answer was
  an OK packet: when it was, its IN_TRANS bit is exact; after a result set or an error the
  connection reads as in a transaction and the pool rolls it back (one round trip).
* **Unread data** — an unbuffered (``SSCursor``) result not read to its end, or further
  result sets of a ``CALL``, are in PyMySQL's ``_result``; a readable socket at checkin
  means a session the server ended (or bytes nobody asked for). Either reads as status
  unknown, so the pool discards the connection.
* **Closed** — PyMySQL drops its socket (``_sock = None``) on any lost connection: no
  descriptor is reused behind the driver's back.
* **Ping** — ``COM_PING`` written with a write timeout and its answer awaited by ``poll``
  against a deadline: bounded even when the network swallows packets, no transaction opened.
  (PyMySQL's own ``ping()`` waits for as long as ``read_timeout`` allows, unbounded by
  default.)
* **Connect** — ``connect_timeout`` bounds the TCP connect only; PyMySQL then waits for the
  greeting and the authentication with ``read_timeout``, forever by default. The driver
  connects with ``read_timeout`` set to the pool's bound when you set none, and takes it off
  once connected.
* **Abandon after fork** — :meth:`Driver.abandon` points the socket at ``/dev/null`` before
  ``close()``: the ``COM_QUIT`` that ``close()`` writes fails (``ENOTSOCK``) and PyMySQL
  closes its descriptor; its ``__del__`` only closes the descriptor, sending nothing.
* **TCP keepalive** — as for mysqlclient (:mod:`connguard.drivers.tcp`), set on the socket
  after connecting.
"""

from __future__ import annotations

import contextlib
import math
import select
import time
from collections.abc import Mapping
from typing import Any

import pymysql
from pymysql.constants import COMMAND, SERVER_STATUS

from connguard.drivers.base import TX_IDLE, TX_INTRANS, TX_UNKNOWN, Driver, poll_wait
from connguard.drivers.mysql_common import CR_SERVER_GONE_ERROR, CR_SERVER_LOST, MySQLErrors
from connguard.drivers.mysql_common import parse_conninfo as _parse_conninfo
from connguard.drivers.tcp import apply_tcp, split_tcp, tcp_settings

_IN_TRANS = SERVER_STATUS.SERVER_STATUS_IN_TRANS
_AUTOCOMMIT = SERVER_STATUS.SERVER_STATUS_AUTOCOMMIT
#: on a tracked connection: whether server_status came with the last answer (an OK packet)
_CURRENT = "_connguard_status_current"
_tracked_classes: dict[type, type] = {}


def _tracked(cls: type) -> type:
    """*cls* (PyMySQL's ``Connection`` or a subclass) with the status tracking above."""
    sub = _tracked_classes.get(cls)
    if sub is not None:
        return sub

    def _execute_command(self: Any, command: int, sql: Any) -> Any:
        self.__dict__[_CURRENT] = False
        return cls._execute_command(self, command, sql)  # type: ignore[attr-defined]

    def _read_ok_packet(self: Any, *args: Any) -> Any:
        ok = cls._read_ok_packet(self, *args)  # type: ignore[attr-defined]
        self.__dict__[_CURRENT] = True
        return ok

    def _read_query_result(self: Any, unbuffered: bool = False) -> Any:
        rows = cls._read_query_result(self, unbuffered=unbuffered)  # type: ignore[attr-defined]
        result = self._result
        self.__dict__[_CURRENT] = result is not None and result.server_status is not None
        return rows

    sub = type(
        cls.__name__,
        (cls,),
        {
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "_execute_command": _execute_command,
            "_read_ok_packet": _read_ok_packet,
            "_read_query_result": _read_query_result,
        },
    )
    _tracked_classes[cls] = sub
    return sub


def _user_params(conninfo: str, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    try:
        params = _parse_conninfo(conninfo)
    except ValueError:
        params = {}  # a connect= callable reads its conninfo its own way
    return {**params, **kwargs}


class PymysqlDriver(MySQLErrors, Driver):
    """PyMySQL on MySQL or MariaDB; see the module docstring for how it reads state."""

    name = "pymysql"
    disconnect_errors = (pymysql.err.InterfaceError, OSError)

    def connect(self, conninfo: str, kwargs: dict[str, Any], timeout: float | None) -> Any:
        params = _user_params(conninfo, kwargs)
        conn = pymysql.connect(**self.connect_params(conninfo, params, timeout))
        return self.finish_connect(conn, conninfo, kwargs)

    def connect_params(
        self, conninfo: str, kwargs: dict[str, Any], timeout: float | None
    ) -> dict[str, Any]:
        """*kwargs* with the pool's bound as ``connect_timeout`` (whole seconds, at least 2)
        unless they set one, and as ``read_timeout`` (the greeting and the authentication)
        unless they set one, without the TCP keys (:meth:`after_connect` sets them on the
        socket). A bad TCP value raises ``ValueError`` here, before connecting."""
        kw, given = split_tcp(kwargs)
        tcp_settings(given)
        if timeout is not None:
            bound = max(2, math.ceil(timeout))
            kw.setdefault("connect_timeout", bound)
            kw.setdefault("read_timeout", bound)
        return kw

    def after_connect(self, conn: Any, conninfo: str, kwargs: Mapping[str, Any]) -> None:
        """The read timeout back to the user's (none unless set), and TCP keepalive and
        ``TCP_USER_TIMEOUT`` on the socket (TCP only): connguard's defaults, overridden by the
        TCP keys of *conninfo* and *kwargs*."""
        params = _user_params(conninfo, kwargs)
        conn._read_timeout = params.get("read_timeout")
        if _CURRENT not in conn.__dict__:
            conn.__class__ = _tracked(type(conn))
            conn.__dict__[_CURRENT] = True  # the connect's last answer was an OK packet
        apply_tcp(self.fileno(conn), tcp_settings(split_tcp(params)[1]))

    def fileno(self, conn: Any) -> int:
        sock = getattr(conn, "_sock", None)
        if sock is None:
            return -1
        try:
            return int(sock.fileno())
        except Exception:
            return -1

    def is_closed(self, conn: Any) -> bool:
        return getattr(conn, "_sock", None) is None

    def transaction_status(self, conn: Any) -> int:
        if conn._sock is None:
            return TX_UNKNOWN
        result = conn._result
        if result is not None and (result.unbuffered_active or result.has_next):
            return TX_UNKNOWN  # rows or result sets not read
        if self._unread(conn):
            return TX_UNKNOWN
        status = conn.server_status or 0
        if status & _IN_TRANS:
            return TX_INTRANS
        if status & _AUTOCOMMIT:
            return TX_IDLE
        # autocommit off: only an OK packet (a write, SET, COMMIT, a ping...) says whether a
        # statement opened a transaction; a result set's end or an error does not
        current = conn.__dict__.get(_CURRENT)
        if current is None:  # not opened by this driver: its last result tells
            current = result is not None and not result.field_count
        return TX_IDLE if current else TX_INTRANS

    def _unread(self, conn: Any) -> bool:
        fd = self.fileno(conn)
        poller = self.make_poller(fd)
        return poller is None or bool(poller.poll(0))

    def ping(self, conn: Any, timeout: float) -> None:
        if self.is_closed(conn):
            raise pymysql.err.OperationalError(CR_SERVER_GONE_ERROR, "connection is closed")
        fd = self.fileno(conn)
        deadline = time.monotonic() + timeout
        saved = conn._write_timeout, conn._read_timeout
        conn._write_timeout = conn._read_timeout = max(0.001, timeout)
        try:
            conn._execute_command(COMMAND.COM_PING, "")
            if not poll_wait(fd, select.POLLIN, deadline - time.monotonic()):
                raise pymysql.err.OperationalError(
                    CR_SERVER_LOST, f"ping timed out after {timeout:.2f} s"
                )
            conn._read_ok_packet()
        finally:
            conn._write_timeout, conn._read_timeout = saved

    def query_row(self, conn: Any, sql: str, timeout: float) -> tuple[Any, ...]:
        raise NotImplementedError("role checks are PostgreSQL's")

    def close(self, conn: Any) -> None:
        try:
            conn.close()
        except Exception:
            with contextlib.suppress(Exception):
                conn._force_close()  # closed already: drop the socket, if any, silently
