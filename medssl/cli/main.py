"""Entry point of the ``medssl`` console script."""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from collections.abc import Sequence
from types import ModuleType

from medssl import __version__
from medssl.exceptions import MedsslError
from medssl.log import configure_logging

__all__ = ["build_parser", "main", "discover_commands"]


def discover_commands() -> dict[str, ModuleType]:
    """Find the subcommand modules of :mod:`medssl.cli`.

    Returns:
        ``{command name: module}`` sorted by name.
    """
    import medssl.cli as package

    commands: dict[str, ModuleType] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_") or info.name == "main":
            continue
        module = importlib.import_module(f"medssl.cli.{info.name}")
        name = getattr(module, "COMMAND", None)
        if name is None:
            continue
        if name in commands:
            raise RuntimeError(f"two CLI modules define the command {name!r}")
        commands[name] = module
    return dict(sorted(commands.items()))


def build_parser() -> argparse.ArgumentParser:
    """Build the ``medssl`` argument parser with every discovered subcommand."""
    parser = argparse.ArgumentParser(
        prog="medssl",
        description="Multimodal medical imaging on MONAI: index PACS exports, convert and stack series, "
        "synthesize data in public layouts, compare fusion strategies, pretrain and evaluate encoders.",
    )
    parser.add_argument("--version", action="version", version=f"medssl {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-v info, -vv debug)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in discover_commands().items():
        sub = subparsers.add_parser(
            name,
            help=module.HELP,
            description=getattr(module, "DESCRIPTION", None) or module.HELP,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-v info, -vv debug)")
        module.add_arguments(sub)
        sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``medssl`` with the given arguments.

    Args:
        argv: the arguments (``sys.argv[1:]`` by default).

    Returns:
        The exit status: 0 on success, 1 when the command ran but produced nothing usable, 2 on bad input.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 2
    configure_logging(args.verbose)
    try:
        return int(args._run(args) or 0)
    except MedsslError as error:
        print(f"medssl {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"medssl {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
