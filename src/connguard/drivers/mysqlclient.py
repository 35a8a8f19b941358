"""mysqlclient (``MySQLdb``), for MySQL and MariaDB.

mysqlclient says little about a connection's state; what this driver reads, and how:

* **Transaction status** — the server reports ``SERVER_STATUS_IN_TRANS`` in every OK/EOF
  packet, and the client library keeps it in ``MYSQL.server_status``; mysqlclient exposes
  only its autocommit bit. When mysqlclient is built on MariaDB Connector/C (``libmariadb``,
  as with Debian's and Ubuntu's ``libmariadb-dev``), ``mariadb_get_infov(...,
  MARIADB_CONNECTION_SERVER_STATUS)`` reads the whole word without a round trip: IN_TRANS set
  means a transaction is open (``BEGIN``, or a statement on a transactional table while
  autocommit is off). Built on Oracle's ``libmysqlclient`` there is no such call; the driver
  then reports every returned connection as in a transaction, so the pool rolls it back (one
  round trip per checkin; ``ROLLBACK`` without a transaction is a no-op), unless the last
  thing done through the driver was a commit or rollback: the status read right after one
  is idle.
* **Unread data** — a server never speaks unasked: a readable socket at checkin means rows
  left unread (an ``SSCursor``, a procedure's further result sets) or a session the server
  ended; on libmariadb the status word's ``SERVER_MORE_RESULTS_EXIST`` also says a
  ``CALL``'s results are pending. Such a connection reads as status unknown, so the pool
  discards it. (Rows of an unbuffered result still in flight at that instant are not seen:
  close an ``SSCursor`` before returning its connection — its ``close()`` drains it.)
* **Closed** — after a lost connection (2006, 2013…) the library closes the socket but
  ``fileno()`` still returns the old number, which the kernel may hand to the next socket
  opened, and ``mysql_errno()`` is cleared by the cursor's own cleanup. On libmariadb the
  driver asks the library whether it still has a socket (``MARIADB_CONNECTION_SOCKET``); on
  libmysqlclient it compares the descriptor's device and inode with those noted at connect.
* **Ping** — ``DO 1`` sent with ``send_query`` and its answer awaited by ``poll`` against a
  deadline: bounded even when the network swallows packets, no thread, no transaction opened.
  (``COM_PING`` through ``ping()`` waits for as long as ``read_timeout`` allows, unbounded by
  default.)
* **Abandon after fork** — :meth:`Driver.abandon` points the socket at ``/dev/null`` before
  ``close()``: the ``COM_QUIT`` that mysqlclient sends from ``close()`` and from its
  deallocator goes nowhere, and the parent's session lives on.
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import os
import select
import time
from collections.abc import Mapping
from typing import Any

import MySQLdb
import MySQLdb._mysql

from connguard.drivers.base import TX_IDLE, TX_INTRANS, TX_UNKNOWN, Driver, poll_wait
from connguard.drivers.mysql_common import (
    CR_SERVER_GONE_ERROR,
    CR_SERVER_LOST,
    DISCONNECT_CODES,
    MySQLErrors,
    error_code,
    parse_conninfo,
    tcp_given,
)
from connguard.drivers.tcp import apply_tcp, split_tcp, tcp_settings

__all__ = ["MysqlclientDriver", "error_code", "parse_conninfo", "tcp_given"]

_SERVER_STATUS_IN_TRANS = 1
_SERVER_MORE_RESULTS_EXIST = 8
_MARIADB_CONNECTION_SERVER_STATUS = 30  # enum mariadb_value, Connector/C 3.x (append-only)
_MARIADB_CONNECTION_SOCKET = 19
# what the driver caches on a connection object (mysqlclient's Connection has a __dict__)
_NATIVE = "_connguard_native"
_POLLER = "_connguard_poller"
_STATE = "_connguard_state"


class _ConnectorC:
    """``mariadb_get_infov`` of the MariaDB Connector/C that mysqlclient is linked with,
    when it is (None attributes otherwise)."""

    def __init__(self, enabled: bool = True) -> None:
        self.get_infov: Any = None
        #: the same function without argtypes, for transaction_status(), which passes it
        #: ready-made ctypes objects only (a c_void_p, a byref()); the plain ints it gets
        #: are small enums: no conversion per argument, at every checkin
        self.get_infov_raw: Any = None
        self.capsule_pointer: Any = None
        if not enabled:
            return
        try:
            lib = ctypes.CDLL(MySQLdb._mysql.__file__)
            get_infov = lib.mariadb_get_infov
        except (OSError, AttributeError):
            return
        get_infov.restype = ctypes.c_char
        get_infov.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p]
        raw = lib["mariadb_get_infov"]  # a new function object: its own (no) argtypes
        raw.restype = ctypes.c_char
        self.get_infov_raw = raw
        capsule_pointer = ctypes.pythonapi.PyCapsule_GetPointer
        capsule_pointer.restype = ctypes.c_void_p
        capsule_pointer.argtypes = [ctypes.py_object, ctypes.c_char_p]
        self.get_infov, self.capsule_pointer = get_infov, capsule_pointer

    def _mysql(self, conn: Any) -> Any:
        """The connection's ``MYSQL *``: it is embedded in the object, so it stays put for
        the object's life and is looked up once."""
        attrs = getattr(conn, "__dict__", {})
        pointer = attrs.get(_NATIVE)
        if pointer is None:
            pointer = self.capsule_pointer(
                conn._get_native_connection(), b"_mysql.connection.native_connection"
            )
            attrs[_NATIVE] = pointer
        return pointer

    def server_status(self, conn: Any) -> int:
        value = ctypes.c_uint()
        if (
            self.get_infov(
                self._mysql(conn), _MARIADB_CONNECTION_SERVER_STATUS, ctypes.byref(value)
            )
            != b"\x00"
        ):
            raise MySQLdb.InterfaceError("mariadb_get_infov(SERVER_STATUS) failed")
        return int(value.value)

    def answers(self, conn: Any) -> bool:
        """Whether this library answers both questions for a freshly opened *conn* (an old
        Connector/C may know neither item)."""
        try:
            self.server_status(conn)
            return self.socket(conn) == conn.fileno()
        except Exception:
            return False

    def socket(self, conn: Any) -> int:
        value = ctypes.c_int(-1)
        if (
            self.get_infov(self._mysql(conn), _MARIADB_CONNECTION_SOCKET, ctypes.byref(value))
            != b"\x00"
        ):
            return -1
        return int(value.value)


class _Native:
    """What transaction_status() passes to ``mariadb_get_infov`` for one connection, made at
    its first checkin: the ``MYSQL *`` and the two result buffers with their references
    (each connection its own: a connection is used by one thread at a time), and the poller
    of its socket."""

    __slots__ = ("fd", "poller", "ptr", "sock", "sock_ref", "status", "status_ref")

    def __init__(self, c: _ConnectorC, conn: Any) -> None:
        self.ptr = ctypes.c_void_p(c._mysql(conn))
        self.sock = ctypes.c_int(-1)
        self.sock_ref = ctypes.byref(self.sock)
        self.status = ctypes.c_uint()
        self.status_ref = ctypes.byref(self.status)
        self.fd = -1
        self.poller: Any = None


_connector: _ConnectorC | None = None


def _connector_c() -> _ConnectorC:
    global _connector
    if _connector is None:
        _connector = _ConnectorC()
    return _connector


class MysqlclientDriver(MySQLErrors, Driver):
    """mysqlclient on MySQL or MariaDB; see the module docstring for how it reads state."""

    name = "mysqlclient"
    disconnect_errors = (MySQLdb.InterfaceError, OSError)
    #: the attribute a rollback or commit leaves on a connection when the transaction status
    #: cannot be read (libmysqlclient): the status read next says idle, once
    _ROLLED_BACK = "_connguard_rolled_back"
    #: where connect() notes the socket's identity when the library cannot say whether the
    #: socket is still open (libmysqlclient): a closed and reused descriptor differs
    _SOCKET = "_connguard_socket"

    def __init__(self) -> None:
        self._c = _connector_c()

    def connect(self, conninfo: str, kwargs: dict[str, Any], timeout: float | None) -> Any:
        # connect_timeout (whole seconds) bounds the TCP connect and the server's greeting;
        # the authentication exchange after it waits up to read_timeout, which is left to
        # the caller because it also bounds every later query.
        kw = self.connect_params(conninfo, {**parse_conninfo(conninfo), **kwargs}, timeout)
        conn = MySQLdb.connect(**kw)
        if self._c.get_infov is not None and not self._c.answers(conn):
            self._c = _ConnectorC(enabled=False)  # an older Connector/C: use the other path
        if self._c.get_infov is None:
            with contextlib.suppress(Exception):
                st = os.fstat(conn.fileno())
                setattr(conn, self._SOCKET, (st.st_dev, st.st_ino))
        return self.finish_connect(conn, conninfo, kwargs)

    def connect_params(
        self, conninfo: str, kwargs: dict[str, Any], timeout: float | None
    ) -> dict[str, Any]:
        """*kwargs* with the pool's bound as ``connect_timeout`` (whole seconds, at least 2)
        unless they set one, and without the TCP keys (``keepalives``, ...:
        ``MySQLdb.connect()`` has no such keywords; :meth:`after_connect` sets them on the
        socket). A bad TCP value raises ``ValueError`` here, before connecting."""
        kw, given = split_tcp(kwargs)
        tcp_settings(given)
        if timeout is not None and "connect_timeout" not in kw:
            kw["connect_timeout"] = max(2, math.ceil(timeout))
        return kw

    def after_connect(self, conn: Any, conninfo: str, kwargs: Mapping[str, Any]) -> None:
        """TCP keepalive and ``TCP_USER_TIMEOUT`` on the new connection's socket (TCP only):
        connguard's defaults, overridden by the TCP keys of *conninfo* and *kwargs*
        (:mod:`connguard.drivers.tcp`)."""
        apply_tcp(self.fileno(conn), tcp_settings(tcp_given(conninfo, kwargs)))

    def is_closed(self, conn: Any) -> bool:
        try:
            if not conn.open or conn.errno() in DISCONNECT_CODES:
                return True
            if self._c.get_infov is not None:
                return self._c.socket(conn) < 0
            socket = getattr(conn, self._SOCKET, None)
            if socket is not None:
                st = os.fstat(conn.fileno())
                return (st.st_dev, st.st_ino) != socket
        except Exception:
            return True
        return False

    def transaction_status(self, conn: Any) -> int:
        c = self._c
        if c.get_infov is None:
            if self.is_closed(conn) or self._unread(conn):
                return TX_UNKNOWN
            if conn.__dict__.pop(self._ROLLED_BACK, False):
                return TX_IDLE
            return TX_INTRANS
        # libmariadb, at every checkin: the same three questions as is_closed(), _unread()
        # and server_status() ask, with the per-connection ctypes arguments made once
        get_infov = c.get_infov_raw
        try:
            native = conn.__dict__.get(_STATE)
            if native is None:
                native = conn.__dict__[_STATE] = _Native(c, conn)
            if not conn.open or conn.errno() in DISCONNECT_CODES:
                return TX_UNKNOWN
            sock = native.sock
            sock.value = -1
            if get_infov(native.ptr, _MARIADB_CONNECTION_SOCKET, native.sock_ref) != b"\x00":
                return TX_UNKNOWN  # the library cannot say: as closed
            fd = sock.value
            if fd < 0:
                return TX_UNKNOWN  # closed
            if native.fd != fd:
                native.fd, native.poller = fd, self.make_poller(fd)
            if native.poller.poll(0):  # unread rows, or the server hung up
                return TX_UNKNOWN
            if (
                get_infov(native.ptr, _MARIADB_CONNECTION_SERVER_STATUS, native.status_ref)
                != b"\x00"
            ):
                return TX_UNKNOWN
            status = native.status.value
        except Exception:
            return TX_UNKNOWN
        if status & _SERVER_MORE_RESULTS_EXIST:  # a CALL's further results unread
            return TX_UNKNOWN
        return TX_INTRANS if status & _SERVER_STATUS_IN_TRANS else TX_IDLE

    def _unread(self, conn: Any) -> bool:
        """Bytes wait on the socket of a connection that should be quiet: rows of an
        unbuffered (``SSCursor``) result or a result set not fetched, or an error packet and
        end-of-file from a server that ended the session. Either way it is not idle."""
        try:
            fd = int(conn.fileno())
            attrs = getattr(conn, "__dict__", {})
            cached = attrs.get(_POLLER)
            if cached is None or cached[0] != fd:
                cached = attrs[_POLLER] = (fd, self.make_poller(fd))
            poller = cached[1]
            return poller is None or bool(poller.poll(0))
        except Exception:
            return True

    def rollback(self, conn: Any) -> None:
        conn.rollback()
        if self._c.get_infov is None:
            setattr(conn, self._ROLLED_BACK, True)

    def commit(self, conn: Any) -> None:
        conn.commit()
        if self._c.get_infov is None:  # no transaction after it either: no rollback needed
            setattr(conn, self._ROLLED_BACK, True)

    def ping(self, conn: Any, timeout: float) -> None:
        if self.is_closed(conn):
            raise MySQLdb.OperationalError(CR_SERVER_GONE_ERROR, "connection is closed")
        send_query = getattr(conn, "send_query", None)
        if send_query is None:  # mysqlclient < 2.1: COM_PING, bounded by read_timeout only
            conn.ping()
            return
        fd = self._c.socket(conn) if self._c.get_infov is not None else self.fileno(conn)
        deadline = time.monotonic() + timeout
        send_query(b"DO 1")
        if not poll_wait(fd, select.POLLIN, deadline - time.monotonic()):
            raise MySQLdb.OperationalError(CR_SERVER_LOST, f"ping timed out after {timeout:.2f} s")
        conn.read_query_result()

    def close(self, conn: Any) -> None:
        with contextlib.suppress(Exception):
            conn.close()
