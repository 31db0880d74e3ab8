"""``medssl evaluate``: zero-shot classification, retrieval, linear/kNN probes and fine-tuning of encoders."""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["COMMAND", "HELP", "DESCRIPTION", "TASKS", "add_arguments", "run"]

COMMAND = "evaluate"
HELP = "evaluate pretrained encoders: zero-shot, retrieval, linear probe, kNN probe, fine-tuning at label fractions"
TASKS = ("zero-shot", "retrieval", "linear-probe", "knn-probe", "finetune")
DESCRIPTION = """Evaluate the encoders a pretraining run exported (OUT/encoders).

zero-shot     classify images from class prompts (binary positive/negative prompts per finding by default, or a
              JSON file); each image scored on its own; AUROC per class and macro with bootstrap CIs.
retrieval     image -> report and report -> image on the evaluation split: Recall@1/5/10, mean/median rank
              (Precision@K with --relevance-labels), bootstrap CIs over queries, chance level alongside.
linear-probe  logistic regression on frozen features at label fractions (1%, 10%, 100% of training patients).
knn-probe     weighted kNN on frozen features at the same fractions.
finetune      encoder + linear head trained end to end at the same fractions.

The probes compare the pretrained encoder with the same architecture randomly initialised on the same labels
(--no-baseline skips it). Results: OUT/<task>.csv and OUT/<task>.md (probes: label_efficiency.csv/.md/.png).

examples:
  medssl evaluate zero-shot --model runs/convirt/encoders --data cxr/datalist.json --out eval/convirt
  medssl evaluate retrieval --model runs/gloria/encoders --data cxr/datalist.json --split test --out eval/gloria
  medssl evaluate linear-probe --model runs/convirt/encoders --data cxr/datalist.json --labels "Pleural Effusion" \\
      Cardiomegaly --fractions 0.01 0.1 1 --out eval/probe
"""

_DEFAULT_LABELS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``medssl evaluate``."""
    parser.add_argument("task", choices=TASKS, help="what to evaluate")
    parser.add_argument(
        "--model",
        required=True,
        help="exported encoders folder (OUT/encoders of medssl pretrain); " "the probes also take an image.pt",
    )
    parser.add_argument("--data", required=True, help="datalist JSON (or a folder with datalist.json)")
    parser.add_argument("--out", required=True, help="folder for the results")
    parser.add_argument("--split", default="test", help="evaluation split (default: test)")
    parser.add_argument("--train-split", default="training", help="probes: training split (default: training)")
    parser.add_argument(
        "--labels", nargs="+", default=None, help=f"observations or item keys (default: {', '.join(_DEFAULT_LABELS)})"
    )
    parser.add_argument(
        "--prompts",
        default=None,
        help="zero-shot: JSON file of prompts, {class: [prompts]} "
        "(multiclass) or {class: {positive: [...], negative: [...]}} (binary)",
    )
    parser.add_argument("--mode", default=None, help="similarity of GLoRIA models: global, local or both (default)")
    parser.add_argument(
        "--relevance-labels",
        nargs="+",
        default=None,
        help="retrieval: a report is relevant to an image when these labels agree (Precision@K)",
    )
    parser.add_argument("--ks", nargs="+", type=int, default=[1, 5, 10], help="retrieval cut-offs")
    parser.add_argument("--fractions", nargs="+", type=float, default=[0.01, 0.1, 1.0], help="label fractions")
    parser.add_argument("--no-baseline", action="store_true", help="probes: skip the random-init encoder")
    parser.add_argument("--C", type=float, default=1.0, help="linear probe: inverse regularisation")
    parser.add_argument("--k", type=int, default=20, help="kNN probe: neighbours")
    parser.add_argument("--epochs", type=int, default=10, help="finetune: epochs")
    parser.add_argument("--lr", type=float, default=1e-4, help="finetune: learning rate")
    parser.add_argument("--image-size", type=int, default=None, help="override the exported image size")
    parser.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--seed", type=int, default=0, help="seed of subsets, fits and bootstrap")
    parser.add_argument("--batch-size", type=int, default=32, help="images per forward pass")
    parser.add_argument("--num-workers", type=int, default=0, help="data-loader workers")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda")


def _write_table(rows: list[dict[str, Any]], out, name: str, title: str) -> None:
    import pandas as pd

    out.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out / f"{name}.csv", index=False)
    lines = [f"# {title}", "", "| model | metric | value (95% CI) | n |", "|---|---|---|---|"]
    for row in rows:
        ci = "" if row["ci_low"] != row["ci_low"] else f" ({row['ci_low']:.3f}-{row['ci_high']:.3f})"
        lines.append(f"| {row['model']} | {row['metric']} | {row['value']:.3f}{ci} | {row['n']} |")
    (out / f"{name}.md").write_text("\n".join(lines) + "\n")


def _image_text_inputs(args: argparse.Namespace):
    """Model, the evaluation items that loaded and their embeddings (shared by zero-shot and retrieval)."""
    from medssl.engines.pretrain import load_training_items
    from medssl.eval.zero_shot import embed_pairs
    from medssl.networks.vlp import load_vlp_model

    device = _device(args.device)
    model = load_vlp_model(args.model, map_location=device)
    prep = dict(model.preprocessing)
    if args.image_size:
        prep["image_size"] = args.image_size
    tokenizer = f"{args.model}/text"
    items = load_training_items(args.data, args.split)
    image_features, text_features, index = embed_pairs(
        model, items, tokenizer, prep, args.batch_size, args.num_workers, device
    )
    items = [items[i] for i in index]
    return model, items, image_features, text_features, tokenizer, prep, device


def _read_prompts(path: str) -> dict[str, Any]:
    """The prompts JSON file, or a ZeroShotError naming the file and the problem."""
    from pathlib import Path

    from medssl.eval.zero_shot import ZeroShotError

    try:
        prompts = json.loads(Path(path).read_text())
    except OSError as error:
        raise ZeroShotError(f"cannot read the prompts file ({error.strerror or error})", path) from error
    except json.JSONDecodeError as error:
        raise ZeroShotError(f"not valid JSON ({error})", path) from error
    if not isinstance(prompts, dict) or not prompts:
        raise ZeroShotError("prompts must be a JSON object mapping class names to prompts", path)
    return prompts


def _model_name(path: str) -> str:
    """A readable name of the model folder: the run's name for ``RUN/encoders``."""
    from pathlib import Path

    p = Path(path).resolve()
    return p.parent.name if p.name in ("encoders", "image.pt", "image.json") else p.name


def _device(name: str):
    from medssl.engines.distributed import resolve_device

    return resolve_device(name)


def run(args: argparse.Namespace) -> int:
    """Evaluate and write the results; print the main figures."""
    from pathlib import Path

    import numpy as np

    from medssl.eval.zero_shot import estimates_table

    out = Path(args.out)
    labels = list(args.labels or _DEFAULT_LABELS)
    if args.task in ("zero-shot", "retrieval"):
        model, items, image_features, text_features, tokenizer, prep, device = _image_text_inputs(args)
        if args.task == "zero-shot":
            from medssl.data.splits import patient_groups
            from medssl.eval.probe import item_labels
            from medssl.eval.zero_shot import (
                CHEXPERT_BINARY_PROMPTS,
                ZeroShotError,
                zero_shot_evaluation,
                zero_shot_scores,
            )

            prompts = (
                _read_prompts(args.prompts)
                if args.prompts
                else {k: v for k, v in CHEXPERT_BINARY_PROMPTS.items() if k in labels}
            )
            if args.prompts and args.labels is None:
                labels = list(prompts)
            names = [n for n in labels if n in prompts]
            if not names:
                raise ZeroShotError(
                    f"no prompts for the labels {labels}; prompts exist for {sorted(prompts)} "
                    "(give --prompts FILE.json for other classes)"
                )
            prompts = {n: prompts[n] for n in names}
            probs, names = zero_shot_scores(
                model, image_features, prompts, tokenizer, int(prep.get("max_length", 64)), args.mode, device
            )
            y = item_labels(items, names)
            estimates = zero_shot_evaluation(probs, y, names, patient_groups(items), args.n_boot, args.seed)
            rows = estimates_table(estimates, model=_model_name(args.model))
            rows += [
                {
                    "model": "chance",
                    "metric": "auroc/macro",
                    "value": 0.5,
                    "ci_low": float("nan"),
                    "ci_high": float("nan"),
                    "n": len(items),
                    "n_boot_used": 0,
                }
            ]
        else:
            from medssl.eval.zero_shot import retrieval_evaluation

            relevance = None
            if args.relevance_labels:
                from medssl.eval.probe import item_labels

                y = np.nan_to_num(item_labels(items, args.relevance_labels), nan=-1)
                relevance = (y[:, None, :] == y[None, :, :]).all(axis=2)
            estimates = retrieval_evaluation(
                model, image_features, text_features, args.ks, relevance, args.mode, args.n_boot, args.seed, device
            )
            rows = estimates_table(estimates, model=_model_name(args.model))
            n = len(items)
            for k in args.ks:
                if k <= n:
                    for d in ("i2t", "t2i"):
                        rows.append(
                            {
                                "model": "chance",
                                "metric": f"{d}_recall@{k}",
                                "value": k / n,
                                "ci_low": float("nan"),
                                "ci_high": float("nan"),
                                "n": n,
                                "n_boot_used": 0,
                            }
                        )
        _write_table(rows, out, args.task, f"{args.task}: {_model_name(args.model)} on {args.split}")
        for row in rows:
            if row["metric"] in ("auroc/macro", "i2t_recall@1", "i2t_recall@5", "t2i_recall@1"):
                print(f"{row['model']}: {row['metric']} = {row['value']:.3f}")
        print(f"results: {out / (args.task + '.csv')}")
        return 0

    from medssl.engines.pretrain import load_training_items
    from medssl.eval.probe import label_efficiency, write_label_efficiency_report

    model_path = Path(args.model)
    rows = label_efficiency(
        model_path,
        load_training_items(args.data, args.train_split),
        load_training_items(args.data, args.split),
        labels,
        fractions=args.fractions,
        protocols=[args.task],
        baseline=not args.no_baseline,
        seed=args.seed,
        n_boot=args.n_boot,
        batch_size=args.batch_size,
        device=_device(args.device),
        num_workers=args.num_workers,
        image_size=args.image_size,
        C=args.C,
        k=args.k,
        finetune_epochs=args.epochs,
        finetune_lr=args.lr,
    )
    paths = write_label_efficiency_report(rows, out, title=f"{args.task}: {_model_name(args.model)}")
    for row in rows:
        if row["metric"] in ("auroc/macro", "auroc_gain/macro"):
            what = "macro AUROC" if row["metric"] == "auroc/macro" else "macro AUROC gain"
            print(
                f"{row['encoder']} {row['protocol']} at {row['fraction']:g}: {what} {row['value']:.3f} "
                f"({row['ci_low']:.3f}-{row['ci_high']:.3f})"
            )
    print("results: " + ", ".join(str(p) for p in paths.values()))
    return 0
