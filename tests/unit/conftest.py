"""Fixtures for the pool's unit tests: a fake server and a factory of pools on it."""

from __future__ import annotations

import itertools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fakedb import FakeDriver, FakeServer

from connguard import ConnectionPool

_names = itertools.count(1)


@pytest.fixture
def server() -> Iterator[FakeServer]:
    srv = FakeServer()
    yield srv
    srv.close()


@pytest.fixture
def driver(server: FakeServer) -> FakeDriver:
    return FakeDriver(server)


@pytest.fixture
def make_pool(driver: FakeDriver) -> Iterator[Callable[..., ConnectionPool]]:
    """``make_pool(**options)``: a pool on the fake server, closed after the test."""
    pools: list[ConnectionPool] = []

    def make(**options: Any) -> ConnectionPool:
        options.setdefault("name", f"t{next(_names)}")
        options.setdefault("timeout", 2.0)
        pool = ConnectionPool("fake://", driver=driver, **options)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.close()
