"""``connguard demo``: the classic Django connection failures, then their cure.

:mod:`connguard.demo.harness` runs the demo project (:mod:`connguard.demo.project`) under
real servers; the command itself lives in :mod:`connguard.demo.cli` and is imported only
when it runs, so importing this package stays cheap.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from connguard.demo.cli import add_arguments as add

    add(parser)


def run(args: argparse.Namespace) -> int:
    from connguard.demo.cli import run as run_demo

    return run_demo(args)
