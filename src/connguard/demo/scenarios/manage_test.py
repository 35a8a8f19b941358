"""``manage.py test`` with pools open."""

from __future__ import annotations

import re
from typing import Any

from connguard.demo.base import PROJECT
from connguard.demo.load import short
from connguard.demo.registry import scenario
from connguard.demo.results import Result
from connguard.demo.runner import Harness


@scenario(
    "manage_test",
    "manage.py test of the project's own app (two aliases, --parallel 2) with pools open: "
    "the runner creates, clones and drops the test databases",
    stock_failure="none: a check that open pools never block DROP DATABASE",
    control=True,
)
def _scenario_manage_test(h: Harness, settings: dict[str, Any], result: Result) -> None:
    other = f"{h.target.dbname[:55]}_o"  # only its test database is created
    env = h.env(settings, DB_OTHER_NAME=other)
    proc = h.manage(env, "test", f"{PROJECT}.app", "--noinput", "--parallel", "2", "-v", "2",
                    timeout=120)
    output = proc.stdout + proc.stderr
    ran = re.search(r"Ran (\d+) tests?", output)
    failed = re.search(r"FAILED \(([^)]*)\)", output)
    result.requests = int(ran.group(1)) if ran else 0
    bad = sum(int(n) for n in re.findall(r"(?:failures|errors)=(\d+)", failed.group(1))) \
        if failed else 0
    result.ok = max(0, result.requests - bad)
    if bad:
        result.add_error(f"{bad} test(s) failed: {short(output[-600:], 400)}", bad)
    if proc.returncode != 0 and not bad:
        result.add_error(f"manage.py test exited {proc.returncode}: {short(output[-600:], 400)}")
    if "being accessed by other users" in output:
        result.add_error("database is being accessed by other users")
    leftovers = h.db.databases(f"test_{h.target.dbname}") + h.db.databases(f"test_{other}")
    result.details["exit_code"] = proc.returncode
    result.details["leftover_test_databases"] = leftovers
    for name in leftovers:
        result.add_error(f"test database {name} was not dropped")
        h.db.drop_database(name)
    result.details["output_tail"] = output[-1500:]
