"""The pool's decisions on their own (connguard.decide): a state snapshot in, a decision out;
no pool, no driver, no thread, no clock."""

from __future__ import annotations

import ast
import inspect
import threading
from types import SimpleNamespace
from typing import Any

import pytest

from connguard import decide
from connguard.breaker import Breaker
from connguard.ceiling import Ceiling
from connguard.config import build_config
from connguard.decide import Check, Grants, Next, State

NOW = 1000.0


def state(**changes: Any) -> State:
    base = State(
        closed=False, size=2, max_size=4, idle=0, lent=2, waiting=0, filling=0, max_waiting=0
    )
    return base._replace(**changes)


def breaker(**options: Any) -> Breaker:
    return Breaker(build_config({"max_size": 4, **options}), wait_for_primary=False)


def opened(b: Breaker, *, absent: bool = False, cost: float = 1.0) -> Breaker:
    """*b* after a connect failure at NOW - 1 (the next scheduled attempt is later than NOW)."""
    failure = b.failed(NOW - 1.0, cost, "OperationalError: connection refused", absent, None)
    assert failure.opened
    b.next_attempt = NOW + 5.0
    return b


def checkout(s: State, b: Breaker | None = None, c: Ceiling | None = None, wait_probe: bool = True):
    return decide.checkout(s, b or breaker(), c or Ceiling(), NOW, wait_probe)


# -- checkout ---------------------------------------------------------------------------------


def test_a_closed_pool_refuses_before_anything_else() -> None:
    assert checkout(state(closed=True, idle=3)).next is Next.CLOSED


def test_an_idle_connection_back_means_look_again() -> None:
    assert checkout(state(idle=1)).next is Next.RETRY


def test_a_free_slot_and_nobody_ahead_means_connect() -> None:
    decision = checkout(state(size=2))
    assert decision == (Next.CONNECT, None)


def test_callers_queue_behind_others_and_behind_a_full_pool() -> None:
    assert checkout(state(size=2, waiting=1)).next is Next.QUEUED  # fair: nobody jumps the queue
    assert checkout(state(size=4)).next is Next.QUEUED


def test_a_warm_up_connect_under_way_is_awaited_rather_than_doubled() -> None:
    assert checkout(state(size=2, filling=1)).next is Next.QUEUED


def test_max_waiting_sheds_load() -> None:
    assert checkout(state(size=4, waiting=3, max_waiting=3)).next is Next.SHED
    assert checkout(state(size=4, waiting=2, max_waiting=3)).next is Next.QUEUED
    assert checkout(state(size=4, waiting=99, max_waiting=0)).next is Next.QUEUED  # 0: no bound


def test_the_server_full_ceiling_holds_callers_back() -> None:
    ceiling = Ceiling()
    ceiling.hold(NOW, open_now=2, backoff_max=10.0)
    assert checkout(state(size=2), c=ceiling).next is Next.QUEUED
    assert checkout(state(size=1), c=ceiling).next is Next.CONNECT


def test_an_open_breaker_fails_fast_until_its_next_attempt() -> None:
    b = opened(breaker())
    assert checkout(state(), b).next is Next.FAIL_FAST
    b.next_attempt = NOW  # due: this caller makes the one attempt, the next fails fast
    assert checkout(state(), b).next is Next.CONNECT
    assert b.attempt_in_flight
    assert checkout(state(), b).next is Next.FAIL_FAST


def test_a_cheap_probe_under_way_is_awaited_once() -> None:
    b = opened(breaker(), absent=True, cost=0.001)  # refused at once: nobody listens
    first = checkout(state(), b)
    assert first.next is Next.CONNECT and b.probe_done is not None
    second = checkout(state(), b)
    assert second.next is Next.AWAIT_PROBE and second.event is b.probe_done
    assert isinstance(second.event, threading.Event)
    assert checkout(state(), b, wait_probe=False).next is Next.FAIL_FAST


def test_checkout_changes_nothing_but_the_breaker_it_admits() -> None:
    s = state(size=2)
    b = breaker()
    checkout(s, b)
    assert s == state(size=2) and b.down_since is None and not b.attempt_in_flight


# -- grants -----------------------------------------------------------------------------------


def grants(s: State, b: Breaker | None = None, c: Ceiling | None = None) -> Grants:
    return decide.grants(s, b or breaker(), c or Ceiling(), NOW)


def test_free_slots_go_to_queued_callers() -> None:
    assert grants(state(size=2, waiting=5)) == Grants(2, 0)
    assert grants(state(size=3, waiting=1)) == Grants(1, 0)
    assert grants(state(size=4, waiting=5)) == Grants(0, 0)
    assert grants(state(size=2, waiting=0)) == Grants(0, 0)
    assert grants(state(size=5, waiting=1)) == Grants(0, 0)  # after a resize down


def test_an_open_breaker_grants_the_probe_and_fails_the_unservable() -> None:
    b = opened(breaker())
    # not due: no probe; 2 lent + 1 filling may still serve 3 of the 5 waiting
    assert grants(state(size=2, lent=2, filling=1, waiting=5), b) == Grants(0, 2)
    b.next_attempt = NOW
    assert grants(state(size=2, lent=2, filling=0, waiting=5), b) == Grants(1, 2)
    assert b.attempt_in_flight
    # the probe is under way: no second one
    assert grants(state(size=3, lent=2, waiting=2), b) == Grants(0, 0)


def test_a_full_pool_with_an_open_breaker_fails_nobody() -> None:
    assert grants(state(size=4, lent=0, waiting=3), opened(breaker())) == Grants(0, 0)


# -- check_idle --------------------------------------------------------------------------------


def entry(*, expires: float = NOW + 60, generation: int = 3, last_used: float = NOW - 1):
    return SimpleNamespace(expires=expires, generation=generation, last_used=last_used)


@pytest.mark.parametrize(
    ("fields", "stirred", "expected"),
    [
        ({}, False, Check.LEND),
        ({}, True, Check.PING),  # the server spoke unasked
        ({"last_used": NOW - 30}, False, Check.PING),  # idle past ping_interval
        ({"expires": NOW}, False, Check.EXPIRED),
        ({"expires": NOW, "generation": 1}, True, Check.EXPIRED),  # expiry first
        ({"generation": 1}, False, Check.DISCARD),  # below the floor: drained, forked
        ({"generation": 2}, False, Check.RECHECK),  # lent before invalidate()
        ({"generation": 2, "last_used": NOW - 30}, True, Check.RECHECK),
    ],
)
def test_what_an_idle_connection_needs_before_it_is_lent(
    fields: dict[str, float], stirred: bool, expected: Check
) -> None:
    e = entry(**fields)
    got = decide.check_idle(e, NOW, generation=3, floor=2, ping_interval=10.0, stirred=stirred)  # type: ignore[arg-type]
    assert got is expected


def test_the_decisions_do_no_io_and_take_no_lock() -> None:
    """decide.py imports nothing that waits or talks: an asyncio front end can share it."""
    tree = ast.parse(inspect.getsource(decide))
    imported = {
        alias.name.split(".")[0] if isinstance(node, ast.Import) else (node.module or "")
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= {"__future__", "enum", "threading", "typing", "connguard.breaker",
                        "connguard.ceiling", "connguard.entry"}, imported  # fmt: skip
    for node in ast.walk(tree):
        assert not isinstance(node, ast.With | ast.AsyncWith | ast.Await), ast.dump(node)
        if isinstance(node, ast.Attribute | ast.Name):
            name = node.attr if isinstance(node, ast.Attribute) else node.id
            assert name not in {"acquire", "wait", "sleep", "poll", "monotonic", "time"}, name
