"""Settings validation, repr(), the stats names: the diagnostics are contracts."""

from __future__ import annotations

import os
import re

import pytest
from fakedb import FakeDriver

from connguard import ConfigError, ConnectionPool, PoolClosed, PoolConfig, PoolError
from connguard.config import build_config, mask_conninfo

KNOWN = (
    "backoff_initial, backoff_max, check, configure, connect, connect_timeout, "
    "connection_class, conninfo, driver, failover_timeout, keepalive_interval, kwargs, "
    "leak_threshold, "
    "lifetime_jitter, max_idle, max_lifetime, max_size, max_waiting, min_size, name, "
    "num_workers, open, ping_interval, ping_timeout, reconnect_failed, reconnect_timeout, "
    "require_primary, reset, timeout"
)


def django_where(key: str) -> str:
    return f"DATABASES['default']['OPTIONS']['pool']['{key}']"


def test_unknown_key_suggests_the_close_match() -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"max_sise": 3})
    assert str(info.value) == (
        f"max_sise: unknown pool option 'max_sise' (did you mean 'max_size'?). Known options: {KNOWN}."
    )


def test_unknown_key_without_a_close_match() -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"zzz": 1})
    assert str(info.value) == f"zzz: unknown pool option 'zzz'. Known options: {KNOWN}."


def test_unknown_key_named_where_the_user_wrote_it() -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"timout": 3}, where=django_where)
    assert str(info.value).startswith(
        "DATABASES['default']['OPTIONS']['pool']['timout']: unknown pool option 'timout' "
        "(did you mean 'timeout'?)."
    )


def test_unknown_key_through_the_pool_constructor(driver: FakeDriver) -> None:
    with pytest.raises(ConfigError, match=r"did you mean 'max_idle'\?"):
        ConnectionPool("", driver=driver, max_idel=3)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"timeout": "5"}, "timeout='5': expected a number of seconds (float), e.g. 30.0"),
        ({"timeout": True}, "timeout=True: expected a number of seconds (float), e.g. 30.0"),
        (
            {"max_idle": float("nan")},
            "max_idle=nan: expected a number of seconds (float), e.g. 30.0",
        ),
        ({"timeout": 0}, "timeout=0: must be greater than 0 seconds"),
        ({"ping_timeout": -1.5}, "ping_timeout=-1.5: must be greater than 0 seconds"),
        ({"max_lifetime": -1}, "max_lifetime=-1: must be 0 (off) or more seconds"),
        ({"max_size": 0}, "max_size=0: must be 1 or more"),
        ({"min_size": -1}, "min_size=-1: must be 0 or more"),
        ({"min_size": 1.5}, "min_size=1.5: expected a whole number, e.g. 10"),
        ({"max_size": "10"}, "max_size='10': expected a whole number, e.g. 10"),
        ({"max_waiting": False}, "max_waiting=False: expected a whole number, e.g. 10"),
        (
            {"lifetime_jitter": 1},
            "lifetime_jitter=1: expected a fraction from 0 (off) to below 1, e.g. 0.1",
        ),
        ({"check": 3}, "check=3: expected a callable or None"),
        ({"conninfo": None}, "conninfo=None: expected a string"),
        ({"kwargs": [1]}, "kwargs=[1]: expected a dict of connect() keywords"),
        ({"open": "yes"}, "open='yes': expected True, False or None"),
        ({"timeout": float("inf")}, "timeout=inf: must be finite; use a large number"),
        (
            {"max_lifetime": float("inf")},
            "max_lifetime=inf: must be finite; use 0 to switch it off",
        ),
        (
            {"driver": "mysql"},
            "driver='mysql': unknown driver; use 'psycopg' (psycopg 3), 'psycopg2', "
            "'mysqlclient', 'pymysql' or a connguard.drivers.Driver instance",
        ),
    ],
)
def test_bad_values_are_rejected_with_the_fix(options: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(options)
    assert str(info.value) == message


def test_bad_value_named_where_the_user_wrote_it() -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"max_size": 0}, where=django_where)
    assert (
        str(info.value)
        == "DATABASES['default']['OPTIONS']['pool']['max_size']=0: must be 1 or more"
    )


def test_min_larger_than_max() -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"min_size": 5, "max_size": 2})
    assert str(info.value) == (
        "min_size=5 is larger than max_size=2: a pool cannot keep more idle connections than "
        "it may open. Lower min_size or raise max_size."
    )


def test_min_larger_than_max_named_where_the_user_wrote_it() -> None:
    with pytest.raises(ConfigError) as info:
        build_config({"min_size": 5, "max_size": 2}, where=django_where)
    assert str(info.value).startswith(
        "DATABASES['default']['OPTIONS']['pool']['min_size']=5 is larger than "
        "DATABASES['default']['OPTIONS']['pool']['max_size']=2:"
    )


def test_close_returns_true_is_refused_false_accepted() -> None:
    with pytest.raises(ConfigError, match=r"^close_returns=True is not supported"):
        build_config({"close_returns": True})
    assert build_config({"close_returns": False}) == PoolConfig()


def test_max_size_defaults_to_min_size_like_psycopg_pool() -> None:
    assert build_config({"min_size": 4}).max_size == 4
    assert build_config({"min_size": 4, "max_size": None}).max_size == 4
    assert build_config({}).max_size == 10
    assert build_config({"max_size": None}).max_size == 10


def test_durations_become_floats_and_config_is_frozen() -> None:
    config = build_config({"timeout": 3, "max_idle": 0})
    assert config.timeout == 3.0 and isinstance(config.timeout, float)
    assert config.max_idle == 0.0
    with pytest.raises(AttributeError):
        config.timeout = 1.0  # type: ignore[misc]


def test_every_psycopg_pool_keyword_is_accepted() -> None:
    config = build_config(
        dict(
            conninfo="dbname=x", kwargs={"application_name": "a"}, min_size=1, max_size=2,
            open=False, configure=None, check=None, reset=None, name="n", close_returns=False,
            timeout=1, max_waiting=3, max_lifetime=10, max_idle=5, reconnect_timeout=7,
            reconnect_failed=None, num_workers=3, connection_class=None,
        )
    )  # fmt: skip
    assert (config.name, config.max_waiting, config.num_workers) == ("n", 3, 3)


def test_config_error_is_a_value_error_and_a_pool_error() -> None:
    assert issubclass(ConfigError, ValueError)
    assert issubclass(ConfigError, PoolError)


def test_masked_hides_secrets() -> None:
    config = build_config(
        {
            "conninfo": "host=db password=s3cret user=u",
            "kwargs": {"password": "pw", "sslpassword": "x", "application_name": "app"},
            "check": test_masked_hides_secrets,
        }
    )
    masked = config.masked()
    assert masked["conninfo"] == "host=db password=*** user=u"
    assert masked["kwargs"] == {"password": "***", "sslpassword": "***", "application_name": "app"}
    assert masked["check"] == "test_masked_hides_secrets"
    assert "s3cret" not in repr(masked) and "'pw'" not in repr(masked)


@pytest.mark.parametrize(
    ("conninfo", "masked"),
    [
        ("host=a password=secret", "host=a password=***"),
        ("host=a password = 'se cr\\'et' port=5", "host=a password = *** port=5"),
        ("postgresql://user:secret@host:5432/db", "postgresql://user:***@host:5432/db"),
        ("postgresql://user@host/db", "postgresql://user@host/db"),
        ("", ""),
    ],
)
def test_mask_conninfo(conninfo: str, masked: str) -> None:
    assert mask_conninfo(conninfo) == masked


def test_repr_exact(driver: FakeDriver) -> None:
    pool = ConnectionPool(
        "host=db user=u password=secret", driver=driver, name="web", max_size=3, open=False
    )
    assert repr(pool) == (
        f"<ConnectionPool 'web' closed size=0/3, in_use=0, idle=0, waiting=0 breaker=closed "
        f"pid={os.getpid()} conninfo='host=db user=u password=***'>"
    )
    pool.open()
    try:
        conn = pool.getconn()
        assert repr(pool) == (
            f"<ConnectionPool 'web' open size=1/3, in_use=1, idle=0, waiting=0 breaker=closed "
            f"pid={os.getpid()} conninfo='host=db user=u password=***'>"
        )
        pool.putconn(conn)
        assert "size=1/3, in_use=0, idle=1, waiting=0" in repr(pool)
    finally:
        pool.close()
    assert repr(pool).startswith("<ConnectionPool 'web' closed size=0/3, in_use=0, idle=0,")


def test_default_names_are_unique(driver: FakeDriver) -> None:
    a = ConnectionPool("", driver=driver, open=False)
    b = ConnectionPool("", driver=driver, open=False)
    assert re.fullmatch(r"pool-\d+", a.name) and re.fullmatch(r"pool-\d+", b.name)
    assert a.name != b.name


def test_not_open_yet_and_closed_for_good(driver: FakeDriver) -> None:
    pool = ConnectionPool("", driver=driver, name="lazy", open=False)
    with pytest.raises(PoolClosed) as info:
        pool.getconn()
    assert str(info.value) == "pool 'lazy' is not open yet: call open() first"
    pool.open()
    pool.putconn(pool.getconn())
    pool.close()
    with pytest.raises(PoolClosed) as info:
        pool.getconn()
    assert str(info.value) == "pool 'lazy' is closed"
    with pytest.raises(PoolClosed, match=r"^pool 'lazy' was closed and cannot be reopened$"):
        pool.open()
    pool.close()  # twice: harmless


def test_stats_names(make_pool) -> None:
    from connguard.metrics import STAT_NAMES

    pool = make_pool(max_size=2)
    assert list(pool.get_stats()) == list(STAT_NAMES)  # every name, always, in this order
    a = pool.getconn()
    b = pool.getconn()
    pool.putconn(a)
    pool.putconn(b)
    stats = pool.get_stats()
    assert list(stats) == list(STAT_NAMES)
    assert stats["checkouts"] == 2
    assert stats["connections_opened"] == 2
    assert (stats["pool_size"], stats["pool_available"], stats["pool_in_use"]) == (2, 2, 0)


def test_pop_stats_resets_counters_not_gauges(make_pool) -> None:
    pool = make_pool(max_size=2)
    for _ in range(3):
        pool.putconn(pool.getconn())
    first = pool.pop_stats()
    assert first["checkouts"] == 3 and first["connections_opened"] == 1
    second = pool.get_stats()
    assert second["checkouts"] == 0 and second["connections_opened"] == 0
    assert second["pool_size"] == 1 and second["pool_available"] == 1
    pool.putconn(pool.getconn())
    assert pool.pop_stats()["checkouts"] == 1
    # a retired entry's checkouts before pop_stats() are not counted again
    conn = pool.getconn()
    pool.discard(conn)
    assert pool.get_stats()["checkouts"] == 1
