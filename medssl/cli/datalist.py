"""``medssl datalist LAYOUT SOURCE --out datalist.json``: a public layout or an export to a split datalist.

Every module of :mod:`medssl.data.layouts` that defines ``LAYOUT`` is a sub-command. Such a module defines
``HELP``, ``add_arguments(parser)`` for its own options and
``build(source, *, salt, base_dir, **options) -> (items, metadata, problems)``; this command adds the patient-level
split (:mod:`medssl.data.splits`), writes the datalist, the split record and the problems table.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
from pathlib import Path
from types import ModuleType

__all__ = ["COMMAND", "HELP", "DESCRIPTION", "discover_layouts", "add_arguments", "run"]

COMMAND = "datalist"
HELP = "build a MONAI datalist (patient-level train/val/test split) from a public layout or an indexed export"
DESCRIPTION = (
    "Build a MONAI datalist (list-of-dicts JSON) from a dataset in a public layout or from a DICOM export, split by "
    "patient so that no patient is in two splits:\n\n"
    "  medssl datalist brats data/BraTS2021 --out brats.json --val 0.2 --test 0.2 --seed 0\n"
    "  medssl datalist dicom-export manifest.csv --out export.json --missing include\n"
    "  medssl datalist brats data/brats --out cv.json --test 0.2 --folds 5 --stratify grade\n\n"
    "When the dataset has an official split (MIMIC-CXR, CheXpert, VinDr-Mammo), its test set is kept and validation is "
    "drawn by patient from its training set; --resplit draws all three by patient instead.\n\n"
    "Writes OUT (the datalist), OUT's name + .splits.json (the case keys of each split and the parameters that drew "
    "it) and, when some cases were skipped or incomplete, OUT's name + .problems.csv. See docs/layouts.md."
)


def discover_layouts() -> dict[str, ModuleType]:
    """Find the layout modules of :mod:`medssl.data.layouts` (modules defining ``LAYOUT``).

    Returns:
        ``{layout name: module}`` sorted by name.

    Raises:
        RuntimeError: two modules claim the same layout.
    """
    import medssl.data.layouts as package

    layouts: dict[str, ModuleType] = {}
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        name = getattr(module, "LAYOUT", None)
        if name is None or not hasattr(module, "build"):
            continue
        if name in layouts:
            raise RuntimeError(f"two layout modules define the layout {name!r}")
        layouts[name] = module
    return dict(sorted(layouts.items()))


def _official_splits(items: list[dict]) -> dict[str, list[dict]] | None:
    """The dataset's own split when every item names one (``official_split``: training, validation or test)."""
    splits: dict[str, list[dict]] = {"training": [], "validation": [], "test": []}
    for item in items:
        split = item.get("official_split")
        if split not in splits:
            return None
        splits[split].append(item)
    return splits


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one sub-command per layout, with the split options and the layout's own options."""
    layouts = parser.add_subparsers(dest="layout", metavar="LAYOUT", required=True)
    for name, module in discover_layouts().items():
        sub = layouts.add_parser(
            name,
            help=module.HELP,
            description=(module.__doc__ or module.HELP).strip(),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument("source", help="the dataset folder (or manifest file, for an export)")
        sub.add_argument("--out", required=True, help="datalist JSON to write")
        sub.add_argument("--val", type=float, default=0.2, help="share of patients in validation (default 0.2)")
        sub.add_argument("--test", type=float, default=0.2, help="share of patients in test (default 0.2)")
        sub.add_argument("--seed", type=int, default=0, help="split seed (default 0)")
        sub.add_argument("--stratify", metavar="KEY", help="item key to stratify on (e.g. grade)")
        sub.add_argument(
            "--folds",
            type=int,
            metavar="K",
            help="instead of a validation split, deal the non-test patients into K folds (a 'fold' key per item)",
        )
        sub.add_argument(
            "--resplit",
            action="store_true",
            help="ignore the dataset's official split (items' `official_split`) and draw a new one by patient",
        )
        sub.add_argument("--salt", help="key salt (default $MEDSSL_SALT)")
        sub.add_argument(
            "--relative", action="store_true", help="write paths relative to the datalist's folder (default absolute)"
        )
        before = {action.dest for action in sub._actions}
        module.add_arguments(sub)
        options = tuple(action.dest for action in sub._actions if action.dest not in before)
        sub.set_defaults(_layout_module=module, _options=options)


def run(args: argparse.Namespace) -> int:
    """Build, split and write the datalist; print a one-line summary."""
    import pandas as pd

    from medssl.data.datalist import write_datalist
    from medssl.data.splits import assign_folds, save_splits, split_by_patient

    out = Path(args.out)
    options = {name: getattr(args, name) for name in args._options}
    base_dir = out.parent.resolve() if args.relative else None
    items, metadata, problems = args._layout_module.build(args.source, salt=args.salt, base_dir=base_dir, **options)
    if not items:
        print(
            f"medssl datalist {args.layout}: no usable case in {args.source} ({len(problems)} problems)",
            file=sys.stderr,
        )
        return 1
    parameters = {
        "seed": args.seed,
        "val_fraction": 0.0 if args.folds else args.val,
        "test_fraction": args.test,
        "stratify_key": args.stratify,
        "folds": args.folds,
    }
    official = _official_splits(items) if not args.resplit else None
    if official is not None:
        # the dataset's own split: its test set is kept as is, validation is drawn by patient from its training set
        # unless the dataset has one
        parameters.update(official=True, test_fraction=None)
        splits = {name: official[name] for name in ("training", "validation", "test")}
        if not splits["validation"] and not args.folds:
            drawn = split_by_patient(splits["training"], args.val, 0.0, args.seed, args.stratify)
            splits["training"], splits["validation"] = drawn["training"], drawn["validation"]
    else:
        splits = split_by_patient(items, parameters["val_fraction"], args.test, args.seed, args.stratify)
    if args.folds:
        splits["training"] = assign_folds(splits["training"], args.folds, args.seed, args.stratify)
    splits = {name: split for name, split in splits.items() if split or name == "training"}
    write_datalist(out, splits, **metadata, split=parameters)
    stem = out.with_suffix("") if out.suffix == ".json" else out
    save_splits(f"{stem}.splits.json", splits, layout=args.layout, **parameters)
    if problems:
        pd.DataFrame(problems).to_csv(f"{stem}.problems.csv", index=False)
    counts = ", ".join(f"{len(v)} {k}" for k, v in splits.items())
    skipped = sum(p.get("action") == "skipped" for p in problems)
    print(f"wrote {out}: {counts}; {len(problems)} problems ({skipped} cases skipped)")
    return 0
