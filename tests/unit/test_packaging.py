"""What pip installs: the pool needs no Django, the ``django`` extra brings a supported one,
the README's install line names it, and the classifiers say what CI runs."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
SUPPORTED_DJANGO = ("5.2", "6.0", "6.1")  # .ci/run: 5.2 on Python 3.11, 6.0 on 3.12, 6.1 on 3.13
SUPPORTED_PYTHON = ("3.11", "3.12", "3.13")


def django_requirement(extra: str) -> Requirement:
    found = [
        Requirement(r) for r in PROJECT["optional-dependencies"][extra] if r.startswith("django>")
    ]
    assert len(found) == 1, (extra, found)
    return found[0]


def test_the_pool_depends_on_nothing_and_imports_without_django() -> None:
    assert PROJECT["dependencies"] == []
    code = (
        "import sys; sys.modules['django'] = None\n"  # any `import django` now fails
        "from connguard import ConnectionPool\n"
        "assert 'django' not in [m.split('.')[0] for m in sys.modules if sys.modules[m]]\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_every_extra_with_django_requires_a_supported_one() -> None:
    for extra in ("django", "demo", "bench", "test"):
        spec = django_requirement(extra).specifier
        assert not spec.contains("4.2.30") and not spec.contains("5.1.15"), (extra, spec)
        for series in SUPPORTED_DJANGO:
            assert spec.contains(f"{series}.1"), (extra, spec, series)


def test_mysql_extra() -> None:
    assert [Requirement(r).name for r in PROJECT["optional-dependencies"]["mysql"]] == [
        "mysqlclient"
    ]


def test_readme_install_line_brings_django() -> None:
    readme = (REPO / "README.md").read_text()
    lines = [line for line in readme.splitlines() if line.startswith("Install: `pip install")]
    assert len(lines) == 1, lines
    assert re.search(r"django-connguard\[django,psycopg\]", lines[0]), lines[0]


def test_classifiers_and_requires_python_tell_the_truth() -> None:
    classifiers = set(PROJECT["classifiers"])
    django = {c.rsplit(" :: ", 1)[1] for c in classifiers if c.startswith("Framework :: Django ::")}
    assert django == set(SUPPORTED_DJANGO)
    python = {
        c.rsplit(" :: ", 1)[1]
        for c in classifiers
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    }
    assert python == set(SUPPORTED_PYTHON)
    requires = Requirement(f"python{PROJECT['requires-python']}").specifier
    assert all(requires.contains(f"{v}.0") for v in SUPPORTED_PYTHON)
    assert not requires.contains("3.10.0")
    assert Version(min(SUPPORTED_PYTHON, key=Version)) == Version("3.11")
