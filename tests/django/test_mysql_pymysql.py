"""The Django backend's MariaDB tests again, on PyMySQL installed as ``MySQLdb``
(``pymysql.install_as_MySQLdb()``, which tests/conftest.py does under
``CONNGUARD_MYSQLDB=pymysql``), in a pytest subprocess: that process imports PyMySQL as
MySQLdb before Django, as an application does; this one has mysqlclient's."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from connguard.testing.netns import unavailable_reason
from connguard.testing.pytest_plugin import in_ci

pytestmark = pytest.mark.integration
HERE = Path(__file__).parent
MODULES = ["test_mysql_backend.py", "test_mysql_backend_keepalive.py"]
# the silent-drop tests need network namespaces; where there are none this run skips them
# already (failing under CI=true), and the PyMySQL run, which must not skip, leaves them out
NETNS_MODULES = ["test_mysql_backend_network_drop.py"]


def modules() -> list[str]:
    return MODULES + (NETNS_MODULES if unavailable_reason() is None else [])


def test_the_django_mysql_tests_pass_on_pymysql() -> None:
    if os.environ.get("CONNGUARD_MYSQLDB") == "pymysql":
        pytest.skip("already the PyMySQL run")
    try:
        import pymysql  # noqa: F401
    except ImportError as exc:
        if in_ci():
            pytest.fail(f"CI=true and PyMySQL is not importable: {exc}")
        pytest.skip(f"PyMySQL is not importable ({exc})")
    env = {**os.environ, "CONNGUARD_MYSQLDB": "pymysql"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--timeout", "120",
         *(str(HERE / m) for m in modules())],
        env=env, cwd=HERE.parent.parent, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    tail = done.stdout[-4000:]
    assert done.returncode == 0, tail + done.stderr[-2000:]
    assert " passed" in tail and "failed" not in tail and "skipped" not in tail, tail
