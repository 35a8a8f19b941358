"""``connguard demo`` (work in progress)."""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    print("connguard demo: not available yet", file=sys.stderr)
    return 2
