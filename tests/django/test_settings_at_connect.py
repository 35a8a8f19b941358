"""The Django backend reads its settings at each connect, on the rig's server: a connection is
never lent to a wrapper whose settings would have configured it differently; a superseded
pool (rotated password) is retired; a configuration error is ImproperlyConfigured, leaks
nothing and never opens the breaker; ``connection.pool``; ``"reset": "discard"``; a patched
``BaseDatabaseWrapper.ensure_connection`` does not recurse."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any
from unittest import mock

import pytest
from django.conf import settings

if not settings.configured:
    settings.configure(DATABASES={}, INSTALLED_APPS=["connguard"], USE_TZ=True)
import django

django.setup()

from django.core.exceptions import ImproperlyConfigured  # noqa: E402
from django.db.backends.postgresql.psycopg_any import IsolationLevel  # noqa: E402
from django.db.utils import ConnectionHandler  # noqa: E402

from connguard.backends import registry  # noqa: E402
from connguard.errors import PoolUnavailable  # noqa: E402
from connguard.pool import ConnectionPool  # noqa: E402

ENGINE = "connguard.backends.postgresql"
ALIAS = "settings_at_connect"
pytestmark = pytest.mark.integration


def make_handler(pg_server: Any, options: dict[str, Any] | None = None, **db: Any) -> Any:
    """A connection handler of our own (Django's global one stays untouched)."""
    return ConnectionHandler(
        {
            "default": {"ENGINE": "django.db.backends.dummy"},
            ALIAS: {
                "ENGINE": ENGINE,
                "NAME": "postgres",
                "USER": pg_server.user,
                "HOST": pg_server.host,
                "PORT": pg_server.port,
                "OPTIONS": {"pool": {"max_size": 2}} if options is None else options,
                **db,
            },
        }
    )


@pytest.fixture(autouse=True)
def _close_pools() -> Iterator[None]:
    yield
    registry.close_pools(alias=ALIAS)


def query(conn: Any, *statements: str) -> Any:
    """One request: checkout, the statements, checkin; the last one's result."""
    try:
        with conn.cursor() as cursor:
            for sql in statements:
                cursor.execute(sql)
            return cursor.fetchone()[0]
    finally:
        conn.close_if_unusable_or_obsolete()


def alias_pools() -> list[ConnectionPool]:
    return [p for p in registry.all_pools() if p.name == ALIAS]


# -- C: an invalid isolation_level ---------------------------------------------------------


def test_an_invalid_isolation_level_leaks_nothing_and_keeps_the_breaker_shut(
    pg_server: Any,
) -> None:
    conn = make_handler(pg_server)[ALIAS]
    assert query(conn, "SELECT 1") == 1
    (pool,) = alias_pools()
    conn.settings_dict["OPTIONS"]["isolation_level"] = 99
    for _ in range(3):  # more than max_size: a leaked checkout would exhaust the pool
        with pytest.raises(ImproperlyConfigured) as info:
            conn.ensure_connection()
        choices = ", ".join(f"{level.value} ({level.name})" for level in IsolationLevel)
        assert str(info.value) == (
            f"DATABASES['{ALIAS}']['OPTIONS']['isolation_level']=99: Invalid transaction "
            "isolation level 99 specified. Use one of the psycopg.IsolationLevel values. "
            f"(They are {choices}.)"
        )
        assert conn.connection is None
    stats = pool.get_stats()
    assert (stats["pool_in_use"], stats["breaker_open"]) == (0, 0)
    del conn.settings_dict["OPTIONS"]["isolation_level"]
    assert query(conn, "SELECT 2") == 2


def test_an_invalid_isolation_level_in_a_fresh_process_is_not_database_down(
    pg_server: Any,
) -> None:
    """No pool and no connection yet: the error is the setting's, not PoolUnavailable."""
    conn = make_handler(pg_server, {"pool": {"max_size": 2}, "isolation_level": "bogus"})[ALIAS]
    for _ in range(2):
        with pytest.raises(ImproperlyConfigured, match="isolation_level") as info:
            conn.ensure_connection()
        assert not isinstance(info.value, PoolUnavailable)
    assert alias_pools() == []  # refused before a pool was even made
    conn.settings_dict["OPTIONS"]["isolation_level"] = IsolationLevel.SERIALIZABLE
    assert query(conn, "SELECT current_setting('transaction_isolation')") == "read committed"
    conn.set_autocommit(False)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT current_setting('transaction_isolation')")
            assert cursor.fetchone()[0] == "serializable"
    finally:
        conn.rollback()
        conn.set_autocommit(True)
        conn.close()


# -- B: settings changed after the wrapper was built -----------------------------------------


def test_pool_false_after_the_wrapper_was_built_means_no_pool(pg_server: Any) -> None:
    conn = make_handler(pg_server)[ALIAS]
    conn.settings_dict["OPTIONS"]["pool"] = False
    conn.ensure_connection()
    try:
        assert conn.connguard_pool is None and conn.pool is None
        assert alias_pools() == []
    finally:
        conn.close()
    conn.settings_dict["OPTIONS"]["pool"] = {"max_size": 1}
    assert query(conn, "SELECT 1") == 1
    (pool,) = alias_pools()
    assert conn.pool is pool and pool.get_stats()["pool_max"] == 1


def test_a_session_is_never_lent_to_a_wrapper_that_would_configure_it_otherwise(
    pg_server: Any,
) -> None:
    from django.db.backends.postgresql.base import Cursor

    class MyCursor(Cursor):  # type: ignore[misc, valid-type]
        pass

    conn = make_handler(pg_server)[ALIAS]
    assert query(conn, "SELECT current_setting('TimeZone')") == "UTC"
    first_pid = query(conn, "SELECT pg_backend_pid()")

    conn.settings_dict["TIME_ZONE"] = "Africa/Nairobi"
    for cached in ("timezone", "timezone_name"):  # Django's setting_changed handler does this
        conn.__dict__.pop(cached, None)
    assert query(conn, "SELECT current_setting('TimeZone')") == "Africa/Nairobi"
    assert query(conn, "SELECT pg_backend_pid()") != first_pid

    conn.settings_dict["OPTIONS"]["cursor_factory"] = MyCursor
    conn.ensure_connection()
    try:
        assert conn.connection.cursor_factory is MyCursor
    finally:
        conn.close()

    conn.settings_dict["OPTIONS"]["isolation_level"] = IsolationLevel.REPEATABLE_READ
    conn.ensure_connection()
    try:
        assert conn.connection.isolation_level == IsolationLevel.REPEATABLE_READ
    finally:
        conn.close()
    assert len(alias_pools()) == 1  # the superseded ones were retired


# -- issue 8, defect 5: a rotated password retires the old pool --------------------------------


def test_a_rotated_password_retires_the_old_pool(pg_server: Any) -> None:
    options = {"pool": {"min_size": 2, "max_size": 3}, "application_name": "cg-rotate"}
    holder = make_handler(pg_server, options, PASSWORD="secret-1")[ALIAS]
    holder.ensure_connection()  # lent across the rotation
    (old,) = alias_pools()
    old.wait(10)
    old_worker = old._worker
    assert old_worker is not None and old_worker.is_alive()
    old_pids = {row[0] for row in pg_server.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'cg-rotate'"
    )}  # fmt: skip
    assert len(old_pids) == 2

    rotated = make_handler(pg_server, options, PASSWORD="secret-2")[ALIAS]
    assert query(rotated, "SELECT 1") == 1
    (new,) = alias_pools()
    assert new is not old
    old_worker.join(10)  # the old pool is closed off the request's thread
    assert old.closed and not old_worker.is_alive()
    retiring = [t for t in threading.enumerate() if t.name.startswith("connguard-retire-")]
    for thread in retiring:
        thread.join(10)
    assert not any(t.is_alive() for t in retiring)
    assert old_worker not in threading.enumerate()

    with holder.cursor() as cursor:  # never closed under its holder
        cursor.execute("SELECT pg_backend_pid()")
        held_pid = cursor.fetchone()[0]
    assert held_pid in old_pids
    holder.close()  # back to a retired pool: closed now

    deadline = time.monotonic() + 10
    while True:
        live = {row[0] for row in pg_server.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = 'cg-rotate'"
        )}  # fmt: skip
        if not live & old_pids or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert live & old_pids == set()
    new.wait(10)
    assert len(live) <= 3


# -- A: connection.pool and CONN_MAX_AGE ------------------------------------------------------


def test_connection_pool_is_the_pool_with_psycopg_pools_api(pg_server: Any) -> None:
    conn = make_handler(pg_server)[ALIAS]
    pool = conn.pool
    assert isinstance(pool, ConnectionPool)
    assert query(conn, "SELECT 1") == 1
    assert conn.pool is pool
    assert pool.get_stats()["checkouts"] == 1
    pool.check()
    conn.close_pool()
    assert pool.closed


def test_conn_max_age_with_an_explicit_pool_is_refused_as_django_does(pg_server: Any) -> None:
    conn = make_handler(pg_server, CONN_MAX_AGE=60)[ALIAS]
    message = (
        f"DATABASES['{ALIAS}']['CONN_MAX_AGE']=60 with DATABASES['{ALIAS}']['OPTIONS']['pool']: "
        "Pooling doesn't support persistent connections. Remove CONN_MAX_AGE (or set 0)"
    )
    with pytest.raises(ImproperlyConfigured) as info:
        conn.ensure_connection()
    assert str(info.value).startswith(message)
    with pytest.raises(ImproperlyConfigured):
        conn.pool  # noqa: B018
    # pooled by default (no OPTIONS["pool"]): moving from persistent connections stays a
    # one-line change; the system check warns that CONN_MAX_AGE has no effect
    conn = make_handler(pg_server, {}, CONN_MAX_AGE=60)[ALIAS]
    assert query(conn, "SELECT 1") == 1
    assert conn.pool is not None


# -- "Also found": a clean session per checkout -----------------------------------------------

DIRTY_SET = "SET work_mem = '1234kB'"
DIRTY_TABLE = "CREATE TEMP TABLE cg_t (x int)"


def test_reset_discard_gives_a_clean_session_at_each_checkout(pg_server: Any) -> None:
    pg_server.execute("ALTER DATABASE postgres SET timezone = 'Asia/Tokyo'")
    try:
        dirty = make_handler(pg_server, {"pool": {"max_size": 1}})[ALIAS]
        pid = query(dirty, DIRTY_SET, DIRTY_TABLE, "SELECT pg_backend_pid()")
        # without a reset, the session carries both over to the next request
        assert query(dirty, "SELECT pg_backend_pid()") == pid
        assert query(dirty, "SELECT current_setting('work_mem')") == "1234kB"
        assert query(dirty, "SELECT to_regclass('pg_temp.cg_t') IS NOT NULL") is True
        dirty.close()
        registry.close_pools(alias=ALIAS)

        clean = make_handler(pg_server, {"pool": {"max_size": 1, "reset": "discard"}})[ALIAS]
        pid = query(clean, DIRTY_SET, DIRTY_TABLE, "SELECT pg_backend_pid()")
        assert query(clean, "SELECT pg_backend_pid()") == pid  # the same server session
        assert query(clean, "SELECT current_setting('work_mem')") != "1234kB"
        assert query(clean, "SELECT to_regclass('pg_temp.cg_t') IS NULL") is True
        # Django's session settings are applied again after DISCARD ALL
        assert query(clean, "SELECT current_setting('TimeZone')") == "UTC"
    finally:
        pg_server.execute("ALTER DATABASE postgres RESET timezone")


def test_an_unknown_named_reset_is_refused() -> None:
    with pytest.raises(ImproperlyConfigured) as info:
        registry.validate(ALIAS, {"OPTIONS": {"pool": {"reset": "discrad"}}})
    assert str(info.value) == (
        f"DATABASES['{ALIAS}']['OPTIONS']['pool']['reset']='discrad': expected a callable "
        "taking the connection, or one of 'discard' (DISCARD ALL: a clean server session at "
        "every checkout)"
    )


# -- E: a test that patches BaseDatabaseWrapper.ensure_connection ------------------------------


def test_a_patched_base_ensure_connection_does_not_recurse(pg_server: Any) -> None:
    """As Django's AssertNumQueriesUponConnectionTests does: the patch calls the bound method
    saved before patching, which is this backend's override."""
    conn = make_handler(pg_server)[ALIAS]
    real_ensure_connection = conn.ensure_connection
    calls: list[bool] = []

    def patched() -> None:
        calls.append(conn.connection is None)
        real_ensure_connection()

    target = "django.db.backends.base.base.BaseDatabaseWrapper.ensure_connection"
    with mock.patch(target, side_effect=patched):
        assert query(conn, "SELECT 1") == 1
    assert calls and calls[0] is True


# -- issue 10: the settings are read at each connect, but the key is only rebuilt on a change --


def test_a_steady_wrapper_does_not_rebuild_its_session_key(pg_server: Any) -> None:
    conn = make_handler(pg_server)[ALIAS]
    assert query(conn, "SELECT 1") == 1
    (pool,) = alias_pools()
    with mock.patch.object(registry, "session_key", wraps=registry.session_key) as spy:
        for _ in range(3):
            assert query(conn, "SELECT 1") == 1
        assert spy.call_count == 0  # nothing changed: the last checkout's pool
        assert conn.pool is pool
        conn.settings_dict["OPTIONS"]["application_name"] = "cg-changed"
        assert query(conn, "SELECT current_setting('application_name')") == "cg-changed"
        assert spy.call_count == 1
        assert query(conn, "SELECT 1") == 1
        assert spy.call_count == 1


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda sd: sd.__setitem__("PASSWORD", "rotated"), id="PASSWORD"),
        pytest.param(lambda sd: sd.__setitem__("CONN_HEALTH_CHECKS", True), id="HEALTH_CHECKS"),
        pytest.param(lambda sd: sd["OPTIONS"].__setitem__("assume_role", "cg_r"), id="role"),
        pytest.param(lambda sd: sd["OPTIONS"]["pool"].__setitem__("max_size", 3), id="pool-key"),
        pytest.param(lambda sd: sd["OPTIONS"].__setitem__("pool", {"max_size": 3}), id="pool"),
    ],
)
def test_an_in_place_change_after_a_checkout_makes_a_new_pool(pg_server: Any, change: Any) -> None:
    """settings_dict, OPTIONS and OPTIONS["pool"] changed in place (the dicts stay the same
    objects) after the wrapper remembered its pool: the next connect sees it."""
    pg_server.execute("DO $$ BEGIN CREATE ROLE cg_r; EXCEPTION WHEN duplicate_object THEN "
                      "NULL; END $$")  # fmt: skip
    pg_server.execute(f'GRANT cg_r TO "{pg_server.user}"')
    conn = make_handler(pg_server)[ALIAS]
    assert query(conn, "SELECT 1") == 1
    (old,) = alias_pools()
    change(conn.settings_dict)
    assert query(conn, "SELECT 1") == 1
    new = conn.pool
    assert new is not old and not new.closed
    if old._worker is not None:
        old._worker.join(10)  # retired off the request's thread
    assert old.closed
    assert alias_pools() == [new]


def test_override_settings_makes_the_next_connect_read_the_settings_again(
    pg_server: Any,
) -> None:
    """USE_TZ is not in DATABASES: Django's setting_changed signal tells the wrapper."""
    from django.test import override_settings

    conn = make_handler(pg_server)[ALIAS]
    assert query(conn, "SELECT 1") == 1
    (old,) = alias_pools()
    with override_settings(USE_TZ=False):
        assert query(conn, "SELECT 1") == 1
        assert conn.pool is not old
    assert query(conn, "SELECT 1") == 1
    assert len(alias_pools()) == 1


def test_a_nested_value_changed_in_place_changes_the_session_key() -> None:
    """OPTIONS["ssl"] (MySQL) or any dict/list inside the connection parameters: the key
    keeps a copy, so a change in place no longer compares equal."""
    ssl = {"ca": "/etc/ssl/a.pem", "verify": ["cert"]}
    params = {"host": "db", "ssl": ssl}
    key = registry.session_key(params, pool={"max_size": 2})
    assert registry.session_key(params, pool={"max_size": 2}) == key
    ssl["verify"].append("identity")
    assert registry.session_key(params, pool={"max_size": 2}) != key
    ssl["verify"].pop()
    ssl["ca"] = "/etc/ssl/b.pem"
    assert registry.session_key(params, pool={"max_size": 2}) != key
