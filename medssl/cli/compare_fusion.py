"""``medssl compare-fusion SOURCE --out DIR``: cross-validated comparison of fusion strategies, with a report.

A thin door onto :mod:`medssl.eval.compare` (the folds x strategies run) and :mod:`medssl.eval.report` (the
tables, tests and figures); see ``docs/fusion_comparison.md``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

__all__ = ["COMMAND", "HELP", "DESCRIPTION", "add_arguments", "run", "config_from_args"]

COMMAND = "compare-fusion"
HELP = "compare early, joint and late fusion and single-view baselines by patient-grouped cross-validation"
DESCRIPTION = (
    "Compare fusion strategies on one cohort with patient-grouped K-fold cross-validation: every strategy sees the "
    "same folds, backbone family, training budget and seeds; epochs and operating-point thresholds are chosen on an "
    "inner validation split, never on the test fold. Writes predictions.csv, results.csv (AUROC, AUPRC, "
    "sensitivity/specificity, ECE, Brier with patient-bootstrap 95% CIs and per-fold values), pairwise.csv (DeLong "
    "tests), report.md with ROC/PR/reliability/metric-bar figures, splits.json and config.json.\n\n"
    "  medssl synth mammo --out data/mammo --n 300 --size 128x96\n"
    "  medssl compare-fusion data/mammo --out runs/mammo --strategies early,joint,late,single:CC,single:L-CC \\\n"
    "      --folds 5 --epochs 10 --image-size 64x48 --backbone resnet10 --width 0.25\n"
    "  medssl compare-fusion data/brats --label tumour --strategies early,late,single:T1C --image-size 32\n"
    "  medssl compare-fusion data/brats --task segmentation --strategies early,single:FLAIR --image-size 32\n"
    "  medssl compare-fusion --config runs/mammo/config.json --out runs/mammo-again   # rerun a comparison\n"
    "  medssl compare-fusion --report-only runs/mammo   # rebuild the report from predictions.csv\n\n"
    "SOURCE is a medssl datalist (all its splits are pooled; --splits to choose) or a data folder in a layout of "
    "`medssl datalist` (vindr-mammo and brats are detected; --layout otherwise). Small on a laptop CPU "
    "(--image-size 64x48 --backbone resnet10 --width 0.25 --threads 1), full size on a GPU (--image-size 512x384 "
    "--backbone resnet18). See docs/fusion_comparison.md."
)


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _size(text: str) -> list[int]:
    try:
        return [int(part) for part in text.lower().replace(",", "x").split("x") if part]
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"image size must be N, HxW or DxHxW, got {text!r}") from error


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from error
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key.replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.replace("-", "_"), value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``medssl compare-fusion`` (defaults are those of :class:`medssl.eval.compare.CompareConfig`)."""
    S = argparse.SUPPRESS  # options not given keep the config file's (or CompareConfig's) value
    parser.add_argument("source", nargs="?", default=S, help="datalist JSON or data folder")
    parser.add_argument("--out", default=S, metavar="DIR", help="output folder (default compare_fusion)")
    parser.add_argument("--config", metavar="JSON", help="a config.json of an earlier run (options override it)")
    parser.add_argument(
        "--report-only", metavar="DIR", help="rebuild results, pairwise, figures and report.md from DIR/predictions.csv"
    )
    data = parser.add_argument_group("data")
    data.add_argument("--layout", default=S, help="layout of a data folder (detected for vindr-mammo and brats)")
    data.add_argument(
        "--layout-option",
        dest="layout_options",
        action="append",
        type=_key_value,
        default=S,
        metavar="KEY=VALUE",
        help="option of the layout adapter, e.g. birads_threshold=4 (repeatable)",
    )
    data.add_argument("--splits", type=_csv, default=S, help="datalist splits to pool (default: all)")
    data.add_argument(
        "--task", choices=["classification", "segmentation"], default=S, help="default classification (binary)"
    )
    data.add_argument(
        "--label", dest="label_key", default=S, help="item key of the label (default label; BraTS: tumour)"
    )
    data.add_argument("--modality", choices=["auto", "mammo", "mr"], default=S, help="default auto")
    data.add_argument("--views", type=_csv, default=S, help="views/sequences in input order (default from datalist)")
    data.add_argument("--image-size", type=_size, default=S, help="HxW (mammo, default 256x192) or N/DxHxW (MR, 96)")
    data.add_argument("--missing", choices=["zeros", "duplicate", "error"], default=S, help="missing views (zeros)")
    data.add_argument("--no-augment", dest="augment", action="store_false", default=S, help="no random flips/scaling")
    data.add_argument("--salt", default=S, help="key salt for a data folder (default $MEDSSL_SALT)")
    design = parser.add_argument_group("design")
    design.add_argument(
        "--strategies",
        type=_csv,
        default=S,
        help="comma list of early, joint, late, single:<view|projection|laterality> (default early,joint,late)",
    )
    design.add_argument("--folds", type=int, default=S, help="K of the cross-validation (default 5)")
    design.add_argument("--val-fraction", type=float, default=S, help="share of training patients for validation (0.2)")
    design.add_argument("--stratify", default=S, help="item key to stratify folds on (default: the label; none)")
    design.add_argument("--seed", type=int, default=S, help="seed of everything (default 0)")
    design.add_argument(
        "--operating-point",
        default=S,
        help="youden (default), closest, sensitivity=0.9, specificity=0.9 or fixed=0.5; chosen on validation",
    )
    design.add_argument("--n-boot", type=int, default=S, help="bootstrap resamples (default 1000)")
    design.add_argument("--alpha", type=float, default=S, help="1 - confidence level (default 0.05)")
    model = parser.add_argument_group("models and training")
    model.add_argument("--backbone", default=S, help="resnet10/18/..., densenet121, segresnet ... (default resnet18)")
    model.add_argument("--backbone-kwargs", type=_json_object, default=S, help="JSON arguments of the backbone")
    model.add_argument("--width", type=float, default=S, help="base-width multiplier of every backbone (default 1)")
    model.add_argument("--param-budget", type=int, default=S, help="fit each strategy's width to this many parameters")
    model.add_argument(
        "--strategy-options", type=_json_object, default=S, help='JSON, e.g. {"joint": {"pooling": "attention"}}'
    )
    model.add_argument("--epochs", type=int, default=S, help="epochs per strategy and fold (default 20)")
    model.add_argument("--batch-size", type=int, default=S, help="default 8")
    model.add_argument("--lr", type=float, default=S, help="AdamW learning rate (default 1e-3)")
    model.add_argument("--weight-decay", type=float, default=S, help="default 1e-4")
    model.add_argument("--patience", type=int, default=S, help="early stopping patience in epochs (default off)")
    model.add_argument("--save-models", action="store_true", default=S, help="keep each fold's weights in OUT/models")
    run_group = parser.add_argument_group("running")
    run_group.add_argument("--device", default=S, help="auto (default), cpu, cuda, cuda:1 ...")
    run_group.add_argument("--threads", type=int, default=S, help="torch CPU threads (1 is fastest on busy machines)")
    run_group.add_argument("--num-workers", type=int, default=S, help="DataLoader workers (default 0)")
    run_group.add_argument("--cache-workers", type=int, default=S, help="threads decoding into the cache")
    run_group.add_argument(
        "--tracking", type=_csv, default=S, help="mlflow and/or tensorboard (metrics.csv is always written)"
    )
    run_group.add_argument("--mlflow-uri", default=S, help="MLflow tracking URI (default: local store OUT/mlruns)")
    run_group.add_argument("--no-progress", dest="progress", action="store_false", default=S, help="no progress bars")


_NOT_CONFIG = ("config", "report_only", "verbose", "command", "_run")


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~medssl.eval.compare.CompareConfig` of the parsed arguments (over ``--config`` when given).

    Raises:
        CompareConfigError: unknown keys in the config file.
        DatalistError: unreadable config file.
    """
    from medssl.eval.compare import CompareConfig
    from medssl.exceptions import DatalistError

    base: dict[str, Any] = {}
    if args.config:
        try:
            base = json.loads(Path(args.config).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise DatalistError(f"cannot read the configuration: {error}", args.config) from error
    given = {k: v for k, v in vars(args).items() if k not in _NOT_CONFIG}
    if "layout_options" in given:
        given["layout_options"] = dict(given["layout_options"])
    if given.get("stratify") in ("none", "None", ""):
        given["stratify"] = None
    if given.get("tracking") == ["none"]:
        given["tracking"] = []
    return CompareConfig.from_dict({**base, **given})


def _report_only(folder: Path) -> int:
    import pandas as pd

    from medssl.eval.report import read_predictions, write_fusion_report

    config: dict[str, Any] = {}
    if (folder / "config.json").is_file():
        config = json.loads((folder / "config.json").read_text())
    predictions = read_predictions(folder / "predictions.csv")
    task = "classification" if "probability" in predictions.columns else "segmentation"

    def optional(name: str) -> Any:
        path = folder / name
        return pd.read_csv(path) if path.is_file() else None

    files = write_fusion_report(
        folder,
        predictions,
        task,
        n_boot=int(config.get("n_boot", 1000)),
        alpha=float(config.get("alpha", 0.05)),
        seed=int(config.get("seed", 0)),
        command=config.get("command"),
        models=optional("models.csv"),
        training=optional("training.csv"),
        problems=optional("problems.csv"),
        operating_point=config.get("operating_point"),
    )
    print(f"wrote {files['report']}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the comparison (or rebuild a report) and print the main table."""
    if args.report_only:
        return _report_only(Path(args.report_only))
    from medssl.eval.compare import FusionComparison

    config = config_from_args(args)
    command = " ".join(shlex.quote(a) for a in ["medssl", *sys.argv[1:]])
    result = FusionComparison(config).run(command=command)
    main_metric = "auroc" if config.task == "classification" else None
    table = result.results
    if main_metric:
        table = table[table["metric"] == main_metric]
    for row in table.to_dict("records"):
        print(
            f"{row['strategy']:>16s} {row['metric']:<12s} {row['value']:.3f} "
            f"({row['ci_low']:.3f}-{row['ci_high']:.3f})"
        )
    print(f"report: {result.files['report']}")
    return 0
