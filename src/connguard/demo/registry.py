"""The scenario registry: ``@scenario(...)`` registers a function under a name."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the runner imports this module: no import at run time
    from connguard.demo.results import Result
    from connguard.demo.runner import Harness


#: A scenario: runs its processes and fills in the result.
ScenarioFn = Callable[["Harness", dict[str, Any], "Result"], None]


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    fn: ScenarioFn
    defaults: Mapping[str, Any] = field(default_factory=dict)
    #: The failure the stock backend shows (documentation / demo output).
    stock_failure: str = ""
    requires: Callable[[dict[str, Any]], str | None] | None = None
    #: a control or correctness check: the stock backend passes it too
    control: bool = False
    #: why this machine cannot run it (not the settings: e.g. no network namespaces), or None
    machine: Callable[[], str | None] | None = None


SCENARIOS: dict[str, Scenario] = {}


def scenario(name: str, description: str, *, defaults: Mapping[str, Any] | None = None,
             stock_failure: str = "",
             requires: Callable[[dict[str, Any]], str | None] | None = None,
             control: bool = False,
             machine: Callable[[], str | None] | None = None,
             ) -> Callable[[ScenarioFn], ScenarioFn]:
    """Register the decorated function as scenario ``name`` (one module per scenario under
    :mod:`connguard.demo.scenarios`: adding a file there adds the scenario)."""
    def register(fn: ScenarioFn) -> ScenarioFn:
        if name in SCENARIOS:
            raise ValueError(f"scenario {name!r} is registered twice")
        SCENARIOS[name] = Scenario(name, description, fn, dict(defaults or {}), stock_failure,
                                   requires, control, machine)
        return fn

    return register


def load() -> dict[str, Scenario]:
    """Every scenario: importing :mod:`connguard.demo.scenarios` registers them (once)."""
    import connguard.demo.scenarios  # noqa: F401  (its modules import the runner)

    return SCENARIOS


def get(name: str) -> Scenario:
    """Scenario ``name``; KeyError names the known ones."""
    try:
        return load()[name]
    except KeyError:
        raise KeyError(f"no scenario {name!r}; known: {', '.join(sorted(SCENARIOS))}") from None


def unavailable_here(name: str) -> str | None:
    """Why scenario ``name`` cannot run on this machine, or None."""
    spec = load().get(name)
    check = spec.machine if spec is not None else None
    return check() if check is not None else None
