"""``python manage.py connguard doctor | stats | top``: the ``connguard`` commands, reading
the project's own ``DATABASES`` (same code and output as the ``connguard`` command line)."""

from __future__ import annotations

import argparse
import importlib
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

#: subcommand -> (module, adds its arguments, runs it, one-line help)
SUBCOMMANDS = {
    "doctor": (
        "connguard.doctor.cli", "add_arguments", "run",
        "diagnose the connection risks of this project's databases and servers",
    ),
    "stats": (
        "connguard.top", "add_stats_arguments", "run_stats",
        "print pools and server sessions once",
    ),
    "top": (
        "connguard.top", "add_top_arguments", "run_top",
        "live table of pools and server sessions",
    ),
}  # fmt: skip


class Command(BaseCommand):
    help = "connguard diagnostics: doctor, stats, top."
    requires_system_checks: list[str] = []  # doctor reports problems; it must run despite them

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="subcommand", metavar="SUBCOMMAND")
        for name, (module_name, adder, _, help_text) in SUBCOMMANDS.items():
            command = sub.add_parser(name, help=help_text, description=help_text)
            getattr(importlib.import_module(module_name), adder)(command, django=True)

    def handle(self, *args: Any, **options: Any) -> None:
        name = options.get("subcommand")
        if name not in SUBCOMMANDS:
            raise CommandError(f"give a subcommand: {', '.join(SUBCOMMANDS)}")
        module_name, _, runner, _ = SUBCOMMANDS[name]
        namespace = argparse.Namespace(**options)
        code = int(getattr(importlib.import_module(module_name), runner)(namespace) or 0)
        if code:
            raise SystemExit(code)
