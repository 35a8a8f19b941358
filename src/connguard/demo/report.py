"""What ``connguard demo`` shows: its scenarios with their labels, one :class:`Row` per
scenario and engine, the :class:`Report` of a run."""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass, field

#: The demo's scenarios, in order, with the label shown in its output.
SCENARIOS: dict[str, str] = {
    "preload_ready": "gunicorn --preload, query in ready()",
    "fork_import": "import-time query, then os.fork()",
    "restart": "PostgreSQL restart",
    "idle_timeout": "idle_session_timeout=1s",
    "terminate": "pg_terminate_backend() every backend",
    "flood_gthread": "100 slow requests, max_connections=20",
    "longtask": "long task idle past the timeout",
    "silent_drop": "network silently drops idle flows",
    "failover": "primary fails over to its standby",
}
#: ``connguard demo --database mariadb``: the scenarios that make sense on MariaDB.
MARIADB_SCENARIOS: dict[str, str] = {
    "preload_ready": "gunicorn --preload, query in ready()",
    "fork_import": "import-time query, then os.fork()",
    "restart": "MariaDB restart",
    "idle_timeout": "wait_timeout=1",
    "terminate": "KILL of every app connection",
    "flood_gthread": "100 slow requests, max_connections=20",
    "longtask": "long task idle past wait_timeout",
    "kill_in_tx": "KILL inside a transaction",
    "outage": "server down for 3 s",
}


@dataclass
class Row:
    """One scenario on one engine."""

    name: str
    engine: str
    requests: int = 0
    errors: int = 0
    wrong: int = 0
    lost: int = 0
    peak: int = 0
    seconds: float = 0.0
    sample: str = ""
    problem: str = ""  # the scenario could not run

    @property
    def failures(self) -> int:
        return self.errors + self.wrong + self.lost


@dataclass
class Report:
    rows: dict[tuple[str, str], Row] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    #: the scenarios' labels (the PostgreSQL demo's by default)
    labels: dict[str, str] = field(default_factory=lambda: dict(SCENARIOS))
    database: str = "PostgreSQL"

    def add(self, row: Row) -> None:
        self.rows[(row.name, row.engine)] = row

    def label(self, name: str) -> str:
        return self.labels.get(name, name)

    def names(self) -> list[str]:
        return list(dict.fromkeys(name for name, _ in self.rows))

    def connguard_ok(self) -> bool:
        ran = [r for (_, engine), r in self.rows.items() if engine == "connguard"]
        return bool(ran) and all(r.failures == 0 and not r.problem for r in ran)



def sample(samples: dict[str, int]) -> str:
    """The most frequent error, without libpq's 'connection to server at ... failed:'."""
    if not samples:
        return ""
    text = max(samples.items(), key=lambda kv: kv[1])[0]
    text = re.sub(
        r'(connection failed: )?connection to server at "[^"]*", port N failed: ', "", text
    )
    return textwrap.shorten(text, 300, placeholder=" …")
