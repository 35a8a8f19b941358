"""A streaming standby of a rig server, for failover tests: ``StandbyServer``.

``StandbyServer(primary)`` is a :class:`~connguard.testing.server.PostgresServer` whose data
directory is made with ``pg_basebackup -R`` from *primary* (instead of ``initdb``): it starts
as a hot standby on its own free port and socket directory, streaming from the primary over
TCP (the rig's ``initdb --auth=trust`` already lets local replication connections in, and the
default ``wal_level`` is ``replica``). Then a test flips the roles for real:

* :meth:`StandbyServer.wait_caught_up` — the standby has replayed everything the primary wrote;
* :meth:`StandbyServer.promote` — ``pg_ctl promote``: the standby becomes a primary;
* :func:`set_read_only` — the old primary keeps answering but refuses writes
  (``default_transaction_read_only``), by a reload (sessions stay up: a VIP or DNS name still
  pointing at it) or a restart (sessions end);
* or ``primary.stop()``.

It runs as the unprivileged user the rig uses under root, and is cleaned up like any rig
server (context manager, finalizer, and the watchdog process should the test process die).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping

from connguard.testing.server import PostgresServer, ServerError, ServerUnavailable

__all__ = ["StandbyServer", "is_in_recovery", "set_read_only"]


class StandbyServer(PostgresServer):
    """A hot standby of *primary*, made with ``pg_basebackup -R`` at the first :meth:`start`."""

    def __init__(
        self,
        primary: PostgresServer,
        base_dir: str | os.PathLike[str] | None = None,
        port: int | None = None,
        settings: Mapping[str, object] | None = None,
    ) -> None:
        basebackup = primary.bin_dir / "pg_basebackup"
        if not os.access(basebackup, os.X_OK):
            raise ServerUnavailable(
                f"no pg_basebackup next to {primary.bin_dir / 'postgres'}: a standby cannot be "
                "made (install the full PostgreSQL server package)"
            )
        self.primary = primary
        super().__init__(base_dir, port, {**primary.settings, **(settings or {})})

    def _initdb(self) -> None:
        """The data directory is a base backup of the primary, set up to follow it (``-R``:
        ``standby.signal`` and ``primary_conninfo`` in ``postgresql.auto.conf``)."""
        if not self.primary.running:
            raise ServerError(f"cannot make a standby of {self.primary!r}: it is not running")
        self._run(
            [
                str(self.primary.bin_dir / "pg_basebackup"),
                "-D", str(self.data_dir),
                "-h", self.primary.host,
                "-p", str(self.primary.port),
                "-U", self.primary.user,
                "-R", "-X", "stream", "-c", "fast", "--no-sync",
            ],
            "pg_basebackup",
        )  # fmt: skip
        # the primary's own include file came along; start() writes ours over it

    @property
    def in_recovery(self) -> bool:
        return is_in_recovery(self)

    def wait_caught_up(self, timeout: float = 30.0) -> None:
        """Wait until the standby has replayed every WAL record the primary has inserted, and
        the primary inserted nothing more meanwhile (a commit acknowledged just before may
        still sit in its WAL buffers: the rig runs with ``synchronous_commit=off``, so the
        insert position counts, not the write position). Fence writes first
        (:func:`set_read_only`), or a later commit is not waited for."""
        deadline = time.monotonic() + timeout
        target = self._primary_lsn()
        while True:
            done = self.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [target])[0][0]
            if done:
                latest = self._primary_lsn()
                if latest == target:
                    return
                target = latest
                continue
            if time.monotonic() >= deadline:
                raise ServerError(
                    f"standby {self.port} did not replay up to {target} within {timeout:.0f} s"
                    f"\n{self.log_tail()}"
                )
            time.sleep(0.01)

    def _primary_lsn(self) -> str:
        return str(self.primary.execute("SELECT pg_current_wal_insert_lsn()::text")[0][0])

    def promote(self, timeout: float = 30.0) -> float:
        """``pg_ctl promote -w``: end recovery; return the seconds it took."""
        started = time.monotonic()
        self._run(
            [
                str(self.bin_dir / "pg_ctl"), "promote", "-w",
                "-t", str(int(timeout)), "-D", str(self.data_dir),
            ],
            "pg_ctl promote",
        )  # fmt: skip
        deadline = started + timeout
        while is_in_recovery(self):  # pg_ctl -w saw the pid file; make sure SQL agrees
            if time.monotonic() >= deadline:
                raise ServerError(f"standby {self.port} still in recovery after promote")
            time.sleep(0.01)
        return time.monotonic() - started


def is_in_recovery(server: PostgresServer) -> bool:
    """``pg_is_in_recovery()`` on *server*."""
    return bool(server.execute("SELECT pg_is_in_recovery()")[0][0])


def set_read_only(server: PostgresServer, on: bool = True, *, restart: bool = False) -> None:
    """Make *server* refuse writes (``default_transaction_read_only``), or accept them again.

    Written to the rig's own configuration file (no ``ALTER SYSTEM``, which a later
    ``reset_config()`` would have to undo), then a reload — open sessions stay connected and
    their next transaction is read-only, as behind a VIP that still points at a demoted
    primary — or a fast restart, which ends every session.
    """
    if on:
        server.settings["default_transaction_read_only"] = True
    else:
        server.settings.pop("default_transaction_read_only", None)
    if restart or not server.running:
        server.stop("fast")
        server.start()
        return
    server._write_conf()
    server._reload()
