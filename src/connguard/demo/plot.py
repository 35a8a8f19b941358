"""``connguard demo --plot FILE.png``: the results as a chart (matplotlib)."""

from __future__ import annotations

import importlib.util
import os

from connguard.demo.report import Report

PLOT_MISSING = (
    "--plot needs matplotlib: pip install 'django-connguard[plot]' (or pip install matplotlib)"
)


def plot_problem(path: str) -> str | None:
    """Why ``--plot path`` cannot work, checked before the demo starts; None when it can."""
    if importlib.util.find_spec("matplotlib") is None:
        return PLOT_MISSING
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        return f"--plot {path}: the directory {folder} does not exist"
    if not os.access(folder, os.W_OK):
        return f"--plot {path}: the directory {folder} is not writable"
    return None


def plot(report: Report, path: str) -> str | None:
    """Draw failures and peak connections per scenario; returns an error text or None."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return PLOT_MISSING
    names = report.names()
    labels = [report.label(n) for n in names]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 0.55 * len(names) + 2.2), sharey=True)
    ys = range(len(names))
    for ax, metric, title in (
        (ax1, lambda r: r.failures, "failures (errors + wrong results + lost writes)"),
        (ax2, lambda r: r.peak, "peak server connections"),
    ):
        for offset, (engine, color) in (
            (-0.2, ("stock", "#d9822b")),
            (0.2, ("connguard", "#2b8a3e")),
        ):
            values = [
                metric(row) if (row := report.rows.get((n, engine))) and not row.problem else 0
                for n in names
            ]
            bars = ax.barh([y + offset for y in ys], values, height=0.38, color=color, label=engine)
            ax.bar_label(bars, padding=2, fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    ax1.set_yticks(list(ys), labels, fontsize=9)
    ax1.invert_yaxis()
    ax1.legend(loc="lower right")
    fig.suptitle(f"connguard demo: Django's stock {report.database} backend vs connguard")
    fig.tight_layout()
    try:
        fig.savefig(path, dpi=110)
    except OSError as exc:
        return f"cannot write {path}: {exc}"
    finally:
        plt.close(fig)
    return None
