"""doctor / stats / top read the server with psycopg 3: without it (a psycopg2-only
install) they say what to install instead of dying with a traceback."""

from __future__ import annotations

import sys

import pytest

from connguard.cli import main


@pytest.mark.parametrize("command", ["doctor", "stats", "top"])
def test_missing_psycopg3_is_explained(
    command: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if not installed
    assert main([command, "--dsn", "host=127.0.0.1 port=1"]) == 2
    err = capsys.readouterr().err
    assert err == (
        f"connguard {command}: reading the server needs psycopg 3, which is not installed "
        "(your Django may use psycopg2: the two install side by side without changing that). "
        "Install it with: pip install 'django-connguard[cli]'\n"
    )


def test_missing_mysqlclient_is_explained(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "MySQLdb", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "psycopg", None)  # not needed for a MySQL server
    assert main(["doctor", "--dsn", "mysql://app@127.0.0.1:1/app"]) == 2
    assert capsys.readouterr().err == (
        "connguard doctor: reading a MySQL or MariaDB server needs mysqlclient, which is not "
        "installed. Install it with: pip install mysqlclient (it builds against "
        "libmariadb-dev or libmysqlclient-dev, and needs pkg-config)\n"
    )
