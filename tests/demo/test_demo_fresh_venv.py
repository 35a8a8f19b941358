"""README's main job, end to end: a fresh virtualenv, ``pip install -e '.[demo]'`` from this
repository, ``connguard demo --quick``.

Runs in CI (``CI=true``), where a failure to install is a failure. Locally it runs too, and
is skipped with the reason when pip cannot reach the package index. Bounded: pip has 15
minutes, the demo 5; every process is started by this test and waited for (or killed).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from connguard.demo.report import SCENARIOS

REPO = Path(__file__).resolve().parents[2]
OFFLINE = re.compile(
    r"Failed to establish a new connection|Temporary failure in name resolution|"
    r"Name or service not known|Network is unreachable|No matching distribution found|"
    r"Could not find a version that satisfies|ProxyError|ConnectTimeout|ReadTimeout|"
    r"Max retries exceeded",
    re.IGNORECASE,
)

pytestmark = [pytest.mark.demo_venv, pytest.mark.timeout(1500)]


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes", "on"}


def clean_env(venv: Path) -> dict[str, str]:
    """The environment of a new shell: no venv, no project paths, the new venv first."""
    env = {
        k: v for k, v in os.environ.items()
        if k not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "DJANGO_SETTINGS_MODULE"}
        and not k.startswith(("CONNGUARD_", "CGT_", "PYTEST_"))
    }  # fmt: skip
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '/usr/bin:/bin')}"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def run(
    argv: list[str | Path], *, env: dict[str, str], cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [str(a) for a in argv],
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(
            f"{' '.join(map(str, argv))} did not finish in {timeout:.0f} s:\n"
            f"{(exc.stdout or b'')[-3000:]!r}\n{(exc.stderr or b'')[-3000:]!r}"
        )


def test_connguard_demo_quick_in_a_fresh_venv(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    env = clean_env(venv)
    made = run([sys.executable, "-m", "venv", venv], env=env, cwd=tmp_path, timeout=180)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"

    installed = run(
        [python, "-m", "pip", "install", "--quiet", "-e", f"{REPO}[demo]"],
        env=env,
        cwd=tmp_path,
        timeout=900,
    )
    if installed.returncode != 0:
        output = installed.stdout + installed.stderr
        if not in_ci() and OFFLINE.search(output):
            pytest.skip(
                f"offline: pip cannot reach the package index ({OFFLINE.search(output)[0]})"
            )
        pytest.fail(f"pip install -e '.[demo]' failed:\n{output[-4000:]}")

    demo = run(
        [venv / "bin" / "connguard", "demo", "--quick", "--no-color"],
        env=env,
        cwd=tmp_path,
        timeout=420,
    )
    output = demo.stdout + demo.stderr
    assert demo.returncode == 0, output
    # the silent drop runs where network namespaces can be made (root, ip, nft)
    from connguard.demo.registry import unavailable_here

    scenarios = sum(1 for name in SCENARIOS if unavailable_here(name) is None)
    assert f"connguard: zero failures in {scenarios} scenario(s)" in output, output
    # the stock backend fails in the deterministic scenarios (the fork races are likely,
    # not certain, in a quick run)
    for label in (
        "PostgreSQL restart",
        "pg_terminate_backend() every backend",
        "100 slow requests, max_connections=20",
        "long task idle past the timeout",
        *(["network silently drops idle connections"] if scenarios == 8 else []),
    ):
        stock = [ln for ln in output.splitlines() if ln.startswith("!! stock") and label in ln]
        assert stock, f"no stock failure for {label!r}:\n{output}"
    assert re.search(r"^scenario +req  err  wrong  lost  peak", output, re.M), output
    cluster = re.search(r"a throwaway cluster in (\S+), removed at exit", output)
    assert cluster, output
    assert not Path(cluster[1]).exists(), f"{cluster[1]} was left behind"
