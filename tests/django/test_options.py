"""OPTIONS["pool"] validation and the system checks: exact messages, no server needed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

if not settings.configured:
    settings.configure(DATABASES={}, INSTALLED_APPS=["connguard"], USE_TZ=True)
import django

django.setup()

from django.test.utils import override_settings  # noqa: E402

from connguard.backends import registry  # noqa: E402
from connguard.checks import check_pools  # noqa: E402

ENGINE = "connguard.backends.postgresql"
pytestmark = pytest.mark.filterwarnings("ignore:Overriding setting DATABASES")


def db(**kwargs: object) -> dict[str, object]:
    return {"ENGINE": ENGINE, "NAME": "app", **kwargs}


def test_absent_pool_means_pooled_with_defaults() -> None:
    config = registry.validate("default", db(OPTIONS={}))
    assert config is not None
    assert (config.name, config.min_size, config.max_size, config.timeout) == (
        "default",
        0,
        10,
        30.0,
    )


def test_true_means_defaults_false_means_off() -> None:
    assert registry.validate("default", db(OPTIONS={"pool": True})) is not None
    assert registry.validate("default", db(OPTIONS={"pool": False})) is None


def test_django_builtin_pool_keys_are_accepted() -> None:
    options = {
        "min_size": 2, "max_size": 4, "timeout": 10, "max_waiting": 5, "max_lifetime": 600,
        "max_idle": 60, "reconnect_timeout": 30, "num_workers": 3, "name": "main",
    }  # fmt: skip
    config = registry.validate("default", db(OPTIONS={"pool": options}))
    assert config is not None
    assert (config.min_size, config.max_size, config.max_lifetime) == (2, 4, 600.0)


def test_min_size_alone_sets_max_size_like_psycopg_pool() -> None:
    config = registry.validate("default", db(OPTIONS={"pool": {"min_size": 4}}))
    assert config is not None and config.max_size == 4


def test_unknown_key_names_alias_key_and_suggestion() -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        registry.validate("default", db(OPTIONS={"pool": {"max_sise": 5}}))
    message = str(info.value)
    assert message.startswith(
        "DATABASES['default']['OPTIONS']['pool']['max_sise']: unknown pool option 'max_sise' "
        "(did you mean 'max_size'?). Known options: "
    )


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("max_size", 0, "DATABASES['replica']['OPTIONS']['pool']['max_size']=0: must be 1 or more"),
        ("max_size", "8", "DATABASES['replica']['OPTIONS']['pool']['max_size']='8': expected a whole number, e.g. 10"),
        ("timeout", -1, "DATABASES['replica']['OPTIONS']['pool']['timeout']=-1: must be greater than 0 seconds"),
        ("max_idle", "600", "DATABASES['replica']['OPTIONS']['pool']['max_idle']='600': expected a number of seconds (float), e.g. 30.0"),
        ("leak_threshold", -5, "DATABASES['replica']['OPTIONS']['pool']['leak_threshold']=-5: must be 0 (off) or more seconds"),
    ],
)  # fmt: skip
def test_bad_values_are_refused_with_the_fix(key: str, value: object, expected: str) -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        registry.validate("replica", db(OPTIONS={"pool": {key: value}}))
    assert str(info.value) == expected


def test_min_larger_than_max() -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        registry.validate("default", db(OPTIONS={"pool": {"min_size": 5, "max_size": 2}}))
    assert str(info.value) == (
        "DATABASES['default']['OPTIONS']['pool']['min_size']=5 is larger than "
        "DATABASES['default']['OPTIONS']['pool']['max_size']=2: a pool cannot keep more idle "
        "connections than it may open. Lower min_size or raise max_size."
    )


def test_reserved_keys_are_refused() -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        registry.validate("default", db(OPTIONS={"pool": {"kwargs": {"sslmode": "require"}}}))
    assert str(info.value) == (
        "DATABASES['default']['OPTIONS']['pool']['kwargs'] cannot be set here: put connection "
        "parameters in DATABASES[...] (HOST, PORT, OPTIONS), not in pool."
    )


def test_pool_must_be_bool_or_dict() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"\['pool'\]=8: expected True, False or a dict"):
        registry.validate("default", db(OPTIONS={"pool": 8}))


def test_server_pooler_values() -> None:
    with pytest.raises(ImproperlyConfigured, match=r"\['server_pooler'\]='txn': expected one of"):
        registry.validate("default", db(OPTIONS={"pool": {"server_pooler": "txn"}}))


def ids(databases: dict[str, object]) -> list[str]:
    with override_settings(DATABASES=databases):
        return [m.id for m in check_pools()]  # type: ignore[misc]


def test_checks() -> None:
    assert ids({"default": db()}) == []
    assert ids({"default": db(OPTIONS={"pool": {"max_size": 0}})}) == ["connguard.E001"]
    stock = {"ENGINE": "django.db.backends.postgresql", "NAME": "x", "OPTIONS": {"pool": True}}
    assert ids({"default": stock}) == ["connguard.W002", "connguard.W006"]
    behind_pgbouncer = db(
        OPTIONS={"pool": {"server_pooler": "transaction"}, "prepare_threshold": 5}
    )
    assert ids({"default": behind_pgbouncer}) == ["connguard.E003", "connguard.W004"]
    assert ids({"default": {**behind_pgbouncer, "DISABLE_SERVER_SIDE_CURSORS": True}}) == [
        "connguard.W004"
    ]
    assert ids({"default": db(CONN_MAX_AGE=600)}) == ["connguard.W005"]
    explicit = db(CONN_MAX_AGE=600, OPTIONS={"pool": {"max_size": 4}})
    assert ids({"default": explicit}) == ["connguard.E007"]


def test_check_messages_name_the_fix() -> None:
    with override_settings(DATABASES={"default": db(CONN_MAX_AGE=600)}):
        (message,) = check_pools()
    assert message.msg == (
        "DATABASES['default']['CONN_MAX_AGE']=600 has no effect with the connguard pool: "
        "connections go back to the pool after every request, and the pool's max_lifetime "
        "(default 3600 s) bounds how long a server connection lives."
    )
    assert message.hint == (
        "Remove CONN_MAX_AGE (or set 0); tune "
        "DATABASES['default']['OPTIONS']['pool']['max_lifetime'] instead."
    )


DJANGO_KNOWN = (
    "backoff_initial, backoff_max, check, connect_timeout, failover_timeout, "
    "keepalive_interval, leak_threshold, lifetime_jitter, max_idle, max_lifetime, max_size, "
    "max_waiting, min_size, name, num_workers, ping_interval, ping_timeout, reconnect_failed, "
    "reconnect_timeout, require_primary, reset, server_pooler, timeout"
)
MAX_SISE = (
    "DATABASES['default']['OPTIONS']['pool']['max_sise']: unknown pool option 'max_sise' "
    f"(did you mean 'max_size'?). Known options: {DJANGO_KNOWN}."
)


def test_unknown_key_lists_only_what_the_backend_accepts() -> None:
    # neither the keys the backend refuses (kwargs, driver, ...) nor close_returns (accepted
    # as False for psycopg_pool settings, and doing nothing)
    with pytest.raises(registry.PoolOptionsError) as info:
        registry.validate("default", db(OPTIONS={"pool": {"max_sise": 5}}))
    assert str(info.value) == MAX_SISE
    with pytest.raises(ImproperlyConfigured, match=r"\['drivr'\]: unknown pool option 'drivr'\. "):
        registry.validate("default", db(OPTIONS={"pool": {"drivr": "psycopg2"}}))


BAD_SETTINGS = """
SECRET_KEY = "x"
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth", "connguard"]
DATABASES = {
    "default": {
        "ENGINE": "connguard.backends.postgresql", "NAME": "app", "HOST": "127.0.0.1",
        "PORT": 1, "OPTIONS": {"pool": {"max_sise": 5}},
    }
}
USE_TZ = True
"""


def django_admin(tmp_path, *args: str, module: str = "django") -> subprocess.CompletedProcess[str]:
    (tmp_path / "badpool_settings.py").write_text(BAD_SETTINGS)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "DJANGO_SETTINGS_MODULE": "badpool_settings"}
    return subprocess.run(
        [sys.executable, "-m", module, *args], env=env, cwd=tmp_path, capture_output=True,
        text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_manage_py_check_reports_bad_pool_options_as_a_system_check_error(tmp_path) -> None:
    proc = django_admin(tmp_path, "check")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert f"?: (connguard.E001) {MAX_SISE}\n" in proc.stderr
    assert proc.stderr.startswith("SystemCheckError: System check identified some issues:")


def test_a_command_that_connects_fails_on_one_line(tmp_path) -> None:
    # shell runs no system checks: the first connection raises the same message
    code = "from django.db import connection; connection.ensure_connection()"
    proc = django_admin(tmp_path, "shell", "-c", code)
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1:] == [f"PoolOptionsError: {MAX_SISE}"]
    assert "Traceback" not in proc.stderr


def test_doctor_names_bad_pool_options(tmp_path) -> None:
    pytest.importorskip("psycopg", reason="connguard doctor reads PostgreSQL with psycopg 3")
    proc = django_admin(tmp_path, "doctor", module="connguard")
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == f"connguard doctor: {MAX_SISE}\n"


MYSQL = "connguard.backends.mysql"


def test_mysql_takes_the_same_pool_options_and_errors() -> None:
    """The MySQL backend: the same keys, the same messages, the same system check ids."""
    mysql_db = {**db(), "ENGINE": MYSQL}
    assert registry.validate("default", mysql_db) is not None
    with pytest.raises(registry.PoolOptionsError) as info:
        registry.validate("default", {**mysql_db, "OPTIONS": {"pool": {"max_sise": 5}}})
    assert str(info.value) == MAX_SISE
    assert ids({"default": {**mysql_db, "OPTIONS": {"pool": {"max_size": 0}}}}) == [
        "connguard.E001"
    ]
    assert ids({"default": {**mysql_db, "CONN_MAX_AGE": 600}}) == ["connguard.W005"]
    assert ids({"default": {"ENGINE": "django.db.backends.mysql", "NAME": "x"}}) == [
        "connguard.W002"
    ]
    with pytest.raises(registry.PoolOptionsError, match="named resets are PostgreSQL's"):
        registry.validate("default", {**mysql_db, "OPTIONS": {"pool": {"reset": "discard"}}})


def test_mysql_connect_raises_bad_pool_options_before_contacting_the_server() -> None:
    from django.db.utils import ConnectionHandler

    handler = ConnectionHandler(
        {"default": {**db(), "ENGINE": MYSQL, "HOST": "127.0.0.1", "PORT": 1,
                     "OPTIONS": {"pool": {"max_sise": 5}}}}
    )  # fmt: skip
    with pytest.raises(registry.PoolOptionsError) as info:
        handler["default"].ensure_connection()
    assert str(info.value) == MAX_SISE
