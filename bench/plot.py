"""Charts for the benchmarks (matplotlib), written as PNG files.

    python bench/plot.py --macro macro.json --micro micro.json --out docs/img

``django_macro.py --plot DIR`` and ``pool_micro.py --plot DIR`` call the same functions.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

CONNGUARD_COLOUR = "#1f77b4"
PEER_COLOUR = "#9e9e9e"
BOUNCER_COLOUR = "#c7a04a"


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        sys.exit("charts need matplotlib: pip install -e '.[bench]'")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _colour(key: str) -> str:
    if key.startswith("connguard"):
        return CONNGUARD_COLOUR if "pgbouncer" not in key else "#6baed6"
    return BOUNCER_COLOUR if "pgbouncer" in key else PEER_COLOUR


def plot_macro(data: dict[str, Any], path: Path) -> Path:
    """One row per worker class, one column per view: req/s bars (median, min-max whiskers)
    with the p99 latency written on each bar."""
    plt = _pyplot()
    workers = list(data["workers"])
    views = list(data["views"])
    configs = list(data["configs"])
    summary = {(r["workers"], r["view"], r["config"]): r for r in data["summary"]}
    fig, axes = plt.subplots(
        len(workers), len(views), figsize=(6.2 * len(views), 0.55 * len(configs) * len(workers) + 2),
        squeeze=False,
    )  # fmt: skip
    for i, w in enumerate(workers):
        for j, v in enumerate(views):
            ax = axes[i][j]
            rows = [(k, summary[(w, v, k)]) for k in configs if (w, v, k) in summary]
            labels = [data["configs"][k] for k, _ in rows]
            med = [r["rps"]["median"] for _, r in rows]
            err = [
                [r["rps"]["median"] - r["rps"]["min"] for _, r in rows],
                [r["rps"]["max"] - r["rps"]["median"] for _, r in rows],
            ]
            ys = list(range(len(rows)))[::-1]
            ax.barh(ys, med, xerr=err, color=[_colour(k) for k, _ in rows], capsize=3)
            ax.set_yticks(ys, labels, fontsize=8)
            top = max(med, default=1.0)
            for y, (_, r) in zip(ys, rows, strict=True):
                ax.text(
                    r["rps"]["max"] + top * 0.02, y,
                    f"p99 {r['p99_us']['median'] / 1000:.1f} ms", va="center", fontsize=7,
                )  # fmt: skip
            ax.set_xlim(0, top * 1.35)
            ax.set_xlabel("requests/s (median of rounds; whiskers: min-max)", fontsize=8)
            ax.set_title(f"{data['workers'][w]}: view {v}", fontsize=9)
            ax.grid(axis="x", alpha=0.3)
    m = data["machine"]
    database = data.get("database", "postgresql")
    label = {"postgresql": "PostgreSQL", "mariadb": "MariaDB"}.get(database, database)
    fig.suptitle(
        f"Django under wrk -c{data['wrk_connections']}: {m['cpus']} CPU {m['cpu']}, "
        f"{label} {m.get(database, '?')}, Django {m['django']}, {data['plan']['rounds']} round(s) "
        f"x {data['plan']['duration']:g} s",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_micro(data: dict[str, Any], path: Path) -> Path:
    """(a) µs per checkout + return (log scale) and (b) ops/s with 32 threads."""
    plt = _pyplot()
    labels_a = data.get("labels_a", data["labels"])
    labels_b = data.get("labels_b", data["labels"])
    a = data["a_us_per_op"]
    b = data["b"]
    a_keys = [k for k in a if k in labels_a]
    a_med = [statistics.median(a[k]["values"]) for k in a_keys]
    b_keys = [k for k in b if k in labels_b]
    b_med = [statistics.median(b[k]["ops_per_s"]["values"]) for k in b_keys]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 0.4 * max(len(a_keys), len(b_keys)) + 2))
    ys = list(range(len(a_keys)))[::-1]
    ax1.barh(ys, a_med, color=[_colour(k) for k in a_keys])
    ax1.set_xscale("log")
    ax1.set_yticks(ys, [labels_a[k] for k in a_keys], fontsize=8)
    for y, v in zip(ys, a_med, strict=True):
        ax1.text(v * 1.1, y, f"{v:.2f}", va="center", fontsize=7)
    ax1.set_xlabel("µs per checkout + return, one thread (log scale; lower is better)", fontsize=8)
    ax1.grid(axis="x", alpha=0.3)
    ys = list(range(len(b_keys)))[::-1]
    ax2.barh(ys, b_med, color=[_colour(k) for k in b_keys])
    ax2.set_yticks(ys, [labels_b[k] for k in b_keys], fontsize=8)
    for y, v in zip(ys, b_med, strict=True):
        ax2.text(v * 1.01, y, f"{v:.0f}", va="center", fontsize=7)
    ax2.set_xlim(0, max(b_med, default=1.0) * 1.2)
    ax2.set_xlabel("ops/s, 32 threads over 8 connections, SELECT 1 (higher is better)", fontsize=8)
    ax2.grid(axis="x", alpha=0.3)
    m = data["machine"]
    fig.suptitle(
        f"pool micro-benchmark: {m['cpus']} CPU {m['cpu']}, Python {m['python']}, "
        f"PostgreSQL {m['postgresql'].split()[0]}",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="charts from the benchmarks' --json output")
    parser.add_argument("--macro", metavar="JSON", help="django_macro.py --json output")
    parser.add_argument("--micro", metavar="JSON", help="pool_micro.py --json output")
    parser.add_argument("--out", default="docs/img", help="directory for the PNG files")
    args = parser.parse_args(argv)
    out = Path(args.out)
    if args.macro:
        macro = json.loads(Path(args.macro).read_text())
        database = macro.get("database", "postgresql")
        name = "django_macro.png" if database == "postgresql" else f"django_macro_{database}.png"
        print(plot_macro(macro, out / name))
    if args.micro:
        print(plot_micro(json.loads(Path(args.micro).read_text()), out / "pool_micro.png"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
