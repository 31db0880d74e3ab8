"""``medssl synth LAYOUT --out DIR --n N --seed S``: write synthetic data in a public layout.

Every module of :mod:`medssl.data.synth` that defines ``LAYOUT`` is a generator and gets its own sub-subcommand with
its own options (``medssl synth brats --help``); adding a generator is adding a module.
"""

from __future__ import annotations

import argparse
import importlib
import json
import pkgutil
import sys
from types import ModuleType

__all__ = ["COMMAND", "HELP", "DESCRIPTION", "discover_generators", "add_arguments", "run"]

COMMAND = "synth"
HELP = "write synthetic data in a public layout (BraTS NIfTI, PACS-style DICOM export, ...)"
DESCRIPTION = (
    "Write synthetic data in the real layout of a public dataset or of a PACS export, with a signal a model can "
    "learn. Each layout is a sub-command with its own options:\n\n"
    "  medssl synth brats --out data/brats --n 20 --seed 0 --size 64\n"
    "  medssl synth brats --out data/brats23 --n 20 --seed 0 --layout 2023\n"
    "  medssl synth mr-dicom --out data/pacs --n 10 --seed 0\n\n"
    "The same seed writes the same data. See docs/synthetic_data.md."
)
_COMMON = ("out", "n", "seed")


def discover_generators() -> dict[str, ModuleType]:
    """Find the generator modules of :mod:`medssl.data.synth` (modules defining ``LAYOUT``).

    Returns:
        ``{layout name: module}`` sorted by name.

    Raises:
        RuntimeError: two modules claim the same layout.
    """
    import medssl.data.synth as package

    generators: dict[str, ModuleType] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        layout = getattr(module, "LAYOUT", None)
        if layout is None:
            continue
        if layout in generators:
            raise RuntimeError(f"two synth modules define the layout {layout!r}")
        generators[layout] = module
    return dict(sorted(generators.items()))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one sub-command per generator, each with ``--out``, ``--n``, ``--seed`` and its own options."""
    layouts = parser.add_subparsers(dest="layout", metavar="LAYOUT", required=True)
    for name, module in discover_generators().items():
        sub = layouts.add_parser(
            name,
            help=module.HELP,
            description=(module.__doc__ or module.HELP).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument("--out", required=True, help="output folder (created)")
        sub.add_argument("--n", type=int, default=10, help="number of cases / patients (default 10)")
        sub.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
        before = {action.dest for action in sub._actions}
        module.add_arguments(sub)
        options = tuple(action.dest for action in sub._actions if action.dest not in before)
        sub.set_defaults(_generator=module, _options=options)


def run(args: argparse.Namespace) -> int:
    """Generate the data and print the generator's summary as JSON."""
    options = {name: getattr(args, name) for name in args._options}
    try:
        summary = args._generator.generate(args.out, args.n, args.seed, **options)
    except ValueError as error:  # bad option values (MedsslError, a ValueError too, is reported the same way)
        print(f"medssl synth {args.layout}: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2, default=str))
    return 0
