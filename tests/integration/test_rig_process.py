"""The process base every rig server shares (connguard.testing._process) and the fixture
helpers over it (started, restored)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from connguard.testing._process import RigProcess, ServerError, ServerUnavailable
from connguard.testing.pgbouncer import PgBouncer, PgBouncerError
from connguard.testing.pytest_plugin import restored, started
from connguard.testing.server import PostgresServer


def test_every_server_is_a_rig_process(pg_bin: Path, pgbouncer_bin: str) -> None:
    from connguard.testing.mariadb import MariaDBServer
    from connguard.testing.netns import NetnsMariaDBServer, NetnsPostgresServer
    from connguard.testing.replication import StandbyServer

    for cls in (
        PostgresServer, StandbyServer, NetnsPostgresServer, MariaDBServer, NetnsMariaDBServer,
        PgBouncer,
    ):  # fmt: skip
        assert issubclass(cls, RigProcess), cls


def test_a_cleaned_up_server_refuses_to_start_and_names_its_class(pg_bin: Path) -> None:
    server = PostgresServer()
    base = server.base_dir
    assert re.fullmatch(
        rf"<PostgresServer 127\.0\.0\.1:{server.port} stopped dir={base}>", repr(server)
    )
    server.close()  # the same as cleanup()
    assert not base.exists()
    with pytest.raises(ServerError, match="was cleaned up; make a new PostgresServer"):
        server.start()


def test_pgbouncer_restart_keeps_its_port_and_repr(pg: PostgresServer, pgbouncer_bin: str) -> None:
    with PgBouncer(pg, pool_mode="session") as bouncer:
        port, pid = bouncer.port, bouncer.pid
        assert repr(bouncer) == (
            f"<PgBouncer 127.0.0.1:{port} pid={pid} session mode -> {pg.host}:{pg.port}>"
        )
        bouncer.restart()
        assert bouncer.port == port and bouncer.pid not in (None, pid)
        assert bouncer.show("POOLS") is not None
    assert not bouncer.running and not bouncer.workdir.exists()
    with pytest.raises(PgBouncerError, match="make a new PgBouncer"):
        bouncer.start()


def _unavailable() -> PostgresServer:
    raise ServerUnavailable("no binaries here")


def test_started_skips_without_the_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with (
        pytest.raises(
            pytest.skip.Exception, match="the X server unavailable: no binaries here; hint"
        ),
        started(_unavailable, "the X server", "hint"),
    ):
        pass


def test_started_fails_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with (
        pytest.raises(pytest.fail.Exception, match="CI=true and the X server is unavailable"),
        started(_unavailable, "the X server"),
    ):
        pass


@pytest.mark.parametrize("ci", ["", "true"])
def test_netns_for_skips_or_fails_without_namespaces(
    monkeypatch: pytest.MonkeyPatch, ci: str
) -> None:
    from connguard.testing import pytest_plugin

    monkeypatch.setenv("CI", ci)
    monkeypatch.setattr(pytest_plugin, "unavailable_reason", lambda: "network namespaces need root")
    expected = (
        (pytest.fail.Exception, "CI=true and the X server in a network namespace is unavailable")
        if ci
        else (pytest.skip.Exception, "the X server in a network namespace unavailable: .*root")
    )
    with pytest.raises(expected[0], match=expected[1]), pytest_plugin.netns_for("the X server"):
        pass


def test_started_cleans_up_a_server_that_fails_to_start(
    pg_server: PostgresServer, pgbouncer_bin: str
) -> None:
    made: list[PgBouncer] = []

    def make() -> PgBouncer:
        # a port PostgreSQL already listens on: pgbouncer cannot bind it (fixed: no retry)
        made.append(PgBouncer(pg_server, port=pg_server.port))
        return made[0]

    with pytest.raises(PgBouncerError), started(make, "PgBouncer"):
        pass
    assert not made[0].workdir.exists()
    with pytest.raises(PgBouncerError, match="was cleaned up"):
        made[0].start()


def test_restored_restarts_and_resets(pg_server: PostgresServer) -> None:
    resets: list[bool] = []
    with restored(pg_server, lambda: True, lambda: resets.append(True)) as server:
        assert server.running
        server.stop()
    assert pg_server.running and resets == [True]
