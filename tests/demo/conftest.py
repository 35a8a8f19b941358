"""``connguard demo`` tests: output formatting in-process, and the whole command end to end in
a fresh virtualenv (``demo_venv``: select or skip it with ``-m``)."""

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "demo_venv: creates a fresh virtualenv, pip-installs '.[demo]' and runs connguard "
        "demo --quick (always in CI; skipped locally when offline)",
    )
