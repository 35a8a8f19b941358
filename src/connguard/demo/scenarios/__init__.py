"""The scenarios: one module each (related variants share one), each registering itself with
``@scenario(...)`` (:mod:`connguard.demo.registry`). Importing this package imports every
module in it, so adding a scenario is adding a file here.
"""

from __future__ import annotations

import importlib
import pkgutil

from connguard.demo.registry import SCENARIOS

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

#: Scenarios whose failure reproduces on the stock backend (everything but the controls).
#: "preload_ready_max_age_0" does not fail on stock Django (request_started closes the
#: inherited connection before any worker uses it); "baseline" is the no-fault control;
#: the others marked ``control`` check correctness (both engines must pass them).
FAILURE_SCENARIOS: tuple[str, ...] = tuple(
    name for name, spec in SCENARIOS.items()
    if not spec.control and name != "preload_ready_max_age_0"
)
