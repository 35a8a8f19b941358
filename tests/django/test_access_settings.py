"""A Django project with a wrong PASSWORD or NAME, on the real server: the error says the
server refused the connection, that this is a configuration error, and names the Django
setting to fix (before: "database unreachable for 0.19 s, failing fast")."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest

from connguard.demo.base import CONNGUARD_ENGINE
from connguard.demo.processes import django_env, run_manage
from connguard.demo.targets.postgresql import DbTarget
from support import password_role as scram_role

pytestmark = [pytest.mark.django, pytest.mark.timeout(120)]

PROBE = (
    "from django.db import connection\n"
    "try:\n"
    "    connection.ensure_connection()\n"
    "    print('connected')\n"
    "except Exception as exc:\n"
    "    print(type(exc).__mro__[1].__name__, type(exc).__name__, exc)\n"
)


@pytest.fixture
def password_role(django_pg: Any) -> Iterator[str]:
    """A login role whose password is 'right', checked with scram-sha-256 over TCP."""
    with scram_role(django_pg, superuser=True) as role:
        yield role


def probe(target: DbTarget) -> str:
    env = django_env(target, {"ENGINE": CONNGUARD_ENGINE})
    proc = run_manage(env, "shell", "-c", PROBE, timeout=60, check=False)
    return proc.stdout + proc.stderr


def test_wrong_password_names_the_setting(
    django_pg: Any, django_db: str, password_role: str
) -> None:
    base = DbTarget.from_server(django_pg, django_db)
    wrong = dataclasses.replace(base, user=password_role, password="wrong")
    out = probe(wrong)
    assert "AccessDenied" in out, out
    assert "unreachable" not in out, out
    assert f'password authentication failed for user "{password_role}"' in out, out
    assert (
        "This is a configuration error, not an outage: check "
        "DATABASES['default']['PASSWORD'] (and USER)"
    ) in out, out
    right = dataclasses.replace(wrong, password="right")
    out = probe(right)
    assert "connected" in out and "Denied" not in out, out  # the right password connects


def test_unknown_database_names_the_setting(django_pg: Any, django_db: str) -> None:
    target = dataclasses.replace(
        DbTarget.from_server(django_pg, django_db), dbname="cg_no_such_db"
    )
    out = probe(target)
    assert "AccessDenied" in out and "unreachable" not in out, out
    assert 'database "cg_no_such_db" does not exist' in out, out
    assert "check DATABASES['default']['NAME']" in out, out
