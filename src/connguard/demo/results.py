"""A scenario's outcome: requests, errors, wrong results, lost writes, peak connections."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from connguard.demo.load import LoadResult, error_key
from connguard.demo.targets import mariadb, postgresql

# --------------------------------------------------------------------------------------
# Scenarios


@dataclass
class Result:
    """Outcome of one scenario run (see :func:`run_scenario`)."""

    scenario: str
    engine: str
    requests: int = 0
    ok: int = 0
    errors: int = 0
    wrong: int = 0
    lost: int = 0
    peak_server_connections: int = 0
    duration: float = 0.0
    status_counts: dict[str, int] = field(default_factory=dict)
    error_samples: dict[str, int] = field(default_factory=dict)
    wrong_samples: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def failures(self) -> int:
        """errors + wrong + lost: what connguard must bring to zero."""
        return self.errors + self.wrong + self.lost

    def has_error(self, *needles: str) -> bool:
        """True if any error sample contains any of ``needles`` (case-insensitive)."""
        lowered = [n.lower() for n in needles]
        return any(n in msg.lower() for msg in self.error_samples for n in lowered)

    def has_too_many_connections(self) -> bool:
        """The server refused connections for lack of slots (PostgreSQL: superuser or not;
        MariaDB: 1040 or max_user_connections)."""
        return self.has_error(*postgresql.TOO_MANY_CONNECTIONS, *mariadb.TOO_MANY_CONNECTIONS)

    def add_load(self, load: LoadResult) -> None:
        self.requests += load.requests
        self.ok += load.ok
        self.errors += load.errors
        self.wrong += load.wrong
        for k, v in load.status_counts.items():
            self.status_counts[k] = self.status_counts.get(k, 0) + v
        for k, v in load.error_samples.items():
            self.error_samples[k] = self.error_samples.get(k, 0) + v
        self.wrong_samples.extend(load.wrong_samples[: max(0, 10 - len(self.wrong_samples))])

    def add_error(self, message: str, count: int = 1) -> None:
        self.errors += count
        key = error_key(message)
        self.error_samples[key] = self.error_samples.get(key, 0) + count

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["failures"] = self.failures
        return data

    def summary(self) -> str:
        top = sorted(self.error_samples.items(), key=lambda kv: -kv[1])[:3]
        errs = "; ".join(f"{n}x {m}" for m, n in top)
        return (f"[{self.scenario} / {self.engine}] requests={self.requests} ok={self.ok} "
                f"errors={self.errors} wrong={self.wrong} lost={self.lost} "
                f"peak_conns={self.peak_server_connections} in {self.duration:.1f}s"
                + (f" | {errs}" if errs else "")
                + (f" | wrong e.g. {self.wrong_samples[0]}" if self.wrong_samples else "")
                + (f" | notes: {' '.join(self.notes)}" if self.notes else ""))

