"""``connguard --version``: the installed distribution's version, from its metadata."""

from __future__ import annotations

import importlib.metadata
import subprocess
import sys


def test_version_prints_the_distribution_version() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "connguard", "--version"], capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert (proc.returncode, proc.stderr) == (0, "")
    assert proc.stdout == f"connguard {importlib.metadata.version('django-connguard')}\n"
