"""The silent-drop scenario (``connguard demo``'s "network silently drops idle
connections") on both engines, with PostgreSQL in a network namespace the harness creates:

* stock Django (CONN_MAX_AGE=600): requests on the persistent connections the network
  dropped hang until the client gives up — the kernel would retransmit for ~15 minutes;
* connguard: zero errors — each dead idle connection is found by the ping after idle (within
  ``ping_timeout``) and replaced before a request uses it.

Needs root, ip and nft: skipped with the reason otherwise, failed under CI=true.
"""

from __future__ import annotations

from typing import Any

import pytest

from connguard.demo.base import CONNGUARD_ENGINE, STOCK_ENGINE
from connguard.demo.registry import unavailable_here
from connguard.demo.results import Result
from connguard.demo.runner import run_scenario
from connguard.testing.pytest_plugin import in_ci

pytestmark = [pytest.mark.django, pytest.mark.timeout(180)]


@pytest.fixture(autouse=True)
def _needs_netns() -> None:
    reason = unavailable_here("silent_drop")
    if reason is not None:
        if in_ci():
            pytest.fail(f"CI=true and network namespaces are unavailable: {reason}")
        pytest.skip(f"network namespaces unavailable: {reason}")


def explain(result: Result) -> str:
    details = {k: v for k, v in result.details.items() if k not in ("logs_tail", "settings")}
    return f"{result.summary()}\n{details}"


def test_stock_requests_hang_on_silently_dropped_connections(
    django_pg: Any, django_db: str
) -> None:
    r = run_scenario(
        "silent_drop", {"ENGINE": STOCK_ENGINE}, django_pg, database=django_db
    )
    print(r.summary())
    assert r.details["connections_dropped"] > 0, explain(r)
    assert r.errors > 0, explain(r)
    assert r.has_error("timed out"), explain(r)


def test_connguard_replaces_silently_dropped_connections(django_pg: Any, django_db: str) -> None:
    r = run_scenario(
        "silent_drop", {"ENGINE": CONNGUARD_ENGINE}, django_pg, database=django_db
    )
    print(r.summary())
    assert r.details["connections_dropped"] > 0, explain(r)
    assert r.requests > 0 and not r.notes, explain(r)
    assert (r.errors, r.wrong, r.lost) == (0, 0, 0), explain(r)
    assert r.ok == r.requests, explain(r)
