"""docs/observability.md documents every stat and every doctor finding (no server needed)."""

from __future__ import annotations

from pathlib import Path

from connguard import metrics
from connguard.contrib.prometheus import metric_name
from connguard.doctor.findings import FINDINGS

DOC = (Path(__file__).resolve().parents[2] / "docs" / "observability.md").read_text()


def prometheus_name(stat: str, counter: bool) -> str:
    name = metric_name(stat)[0]
    return f"{name}_total" if counter else name


def test_every_stat_is_in_the_table_with_its_prometheus_name() -> None:
    for stat in metrics.GAUGES:
        assert f"| `{stat}` | `{prometheus_name(stat, False)}` |" in DOC, stat
    for stat in metrics.COUNTERS:
        assert f"| `{stat}` | `{prometheus_name(stat, True)}` |" in DOC, stat


def test_every_finding_is_in_the_table() -> None:
    for fid in FINDINGS:
        assert f"| {fid} |" in DOC, fid
