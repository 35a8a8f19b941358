"""``connguard`` command line: ``demo | doctor | stats | top``.

Each subcommand lives in its own module and is imported only when used, so ``connguard``
starts fast and optional dependencies stay optional.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import sys
from collections.abc import Sequence

#: subcommand -> (module, one-line help); each module has ``add_arguments(parser)`` and
#: ``run(args) -> int``
COMMANDS = {
    "demo": ("connguard.demo", "show the classic connection failures and their cure"),
    "doctor": ("connguard.doctor.cli", "diagnose a deployment's connection risks"),
    "stats": ("connguard.top", "print pool and server connection statistics once"),
    "top": ("connguard.top", "live table of pools and server connections"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only *command*'s module is imported (all of them with None, for tests)."""
    parser = argparse.ArgumentParser(
        prog="connguard",
        description="Pooled, fork-safe, self-healing database connections for Django.",
    )
    parser.add_argument("--version", action="version", version=f"connguard {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in COMMANDS.items():
        subparser = sub.add_parser(name, help=help_text, description=help_text)
        if command is None or name == command:
            module = importlib.import_module(module_name)
            adder = getattr(module, f"add_{name}_arguments", None) or module.add_arguments
            adder(subparser)
    return parser


def version() -> str:
    """The installed distribution's version (the package's own when it is not installed)."""
    try:
        return importlib.metadata.version("django-connguard")
    except importlib.metadata.PackageNotFoundError:
        from connguard import __version__

        return __version__


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else "")
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    module = importlib.import_module(COMMANDS[args.command][0])
    runner = getattr(module, f"run_{args.command}", None) or module.run
    return int(runner(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
