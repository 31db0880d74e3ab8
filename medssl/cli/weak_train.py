"""``medssl weak-train SOURCE --out DIR``: train chest X-ray classifiers on weak labels from reports and compare them.

A thin door onto :func:`medssl.weak.training.run_weak_comparison`; see ``docs/weak_labels.md``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

__all__ = ["COMMAND", "HELP", "DESCRIPTION", "add_arguments", "run", "config_from_args"]

COMMAND = "weak-train"
HELP = "train CXR classifiers on weak labels from reports; compare with gold-subset training on held-out gold labels"
DESCRIPTION = """\
Close the loop from reports to an image classifier, and measure it honestly. On a chest X-ray dataset in the
MIMIC-CXR-JPG layout (images, reports, metadata/split/label CSVs) or a medssl datalist, the command

  1. splits the images by patient (training / test; splits.json);
  2. labels the training studies' reports with medssl's labeling functions and label model (weak_labels.csv);
  3. trains the same classifier (a MONAI encoder + one logit per observation) on
       weak             the weak labels of every training image (noise-aware BCE on soft targets),
       weak-hard        the label model's hard 1/0/-1 decisions instead of its probabilities,
       gold-subset      the gold labels of --gold-fraction of the training patients,
       gold-all         the gold labels of every training image (the ceiling),
       pretrained-weak  a pretrained encoder (--encoders FOLDER, or a --pretrain-steps ConVIRT run) fine-tuned on
                        the weak labels,
     all from the same initial weights, for the same number of optimizer steps, without model selection;
  4. evaluates them on the gold labels of the test patients: per-observation AUROC with patient-level bootstrap
     95% CIs, macro AUROC, paired differences against gold-subset; observations with fewer than
     --min-test-positives test positives are listed as too rare, not dropped.

Gold labels: --gold CSV, else the folder's synthetic_ground_truth.csv (medssl synth cxr: what the images show),
else its mimic-cxr-2.0.0-chexpert.csv (1 present, 0/blank absent, -1 unknown); for a datalist, its label /
label_mask. Keys are salted (--salt or $MEDSSL_SALT): no identifier reaches the outputs.

Outputs in --out: results.csv, differences.csv, predictions.csv, history.csv, weak_labels.csv,
weak_label_quality.csv, auroc.png, report.md, splits.json, config.json.

examples:
  medssl synth cxr --out data/cxr --n 300 --size 64 --lateral 0
  medssl weak-train data/cxr --out runs/weak --image-size 64 --epochs 10
  medssl weak-train data/cxr --out runs/weak-all --models weak,weak-hard,gold-subset,gold-all,pretrained-weak \\
      --pretrain-steps 200 --observations "Cardiomegaly,Pleural Effusion,Edema,Atelectasis"
  medssl weak-train lists/mimic.json --out runs/mimic --gold mimic-cxr-2.0.0-chexpert.csv --official-split \\
      --encoders runs/pretrain/encoders --models weak,gold-subset,pretrained-weak --image-size 224 \\
      --backbone resnet50 --width 1 --device cuda
"""


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _json_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise argparse.ArgumentTypeError(f"not JSON: {error}") from error
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``medssl weak-train`` (defaults are those of :class:`medssl.weak.training.WeakTrainingConfig`)."""
    from medssl.weak.training import DEFAULT_OBSERVATIONS, MODELS

    parser.add_argument("source", help="MIMIC-CXR(-JPG) folder or medssl datalist JSON")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    data = parser.add_argument_group("data and labels")
    data.add_argument(
        "--observations",
        type=_csv,
        default=list(DEFAULT_OBSERVATIONS),
        help="comma-separated CheXpert observations (default: the five competition ones)",
    )
    data.add_argument("--gold", metavar="CSV", help="gold labels (default: see above)")
    data.add_argument(
        "--gold-fraction", type=float, default=0.1, help="share of training patients with gold labels (default 0.1)"
    )
    data.add_argument("--test-fraction", type=float, default=0.2, help="share of patients held out (default 0.2)")
    data.add_argument("--official-split", action="store_true", help="keep the dataset's split (test = official test)")
    data.add_argument(
        "--policy", choices=("ones", "zeros", "ignore"), default="ones", help="uncertain weak labels (default ones)"
    )
    data.add_argument(
        "--blank",
        choices=("zeros", "ignore"),
        default="zeros",
        help="not-mentioned observations: absent (zeros, default) or masked (ignore)",
    )
    data.add_argument(
        "--label-model",
        choices=("label-model", "majority", "snorkel"),
        default="label-model",
        help="aggregation of the labeling functions (default: medssl's Dawid-Skene label model)",
    )
    data.add_argument("--jobs", type=int, default=1, help="worker processes of the label matrix")
    data.add_argument("--all-views", action="store_true", help="keep lateral images too (folder sources)")
    data.add_argument("--all-images", action="store_true", help="every image of a study, not one (folder sources)")
    data.add_argument("--salt", help="key salt (default $MEDSSL_SALT)")
    training = parser.add_argument_group("models and training")
    training.add_argument(
        "--models",
        type=_csv,
        default=None,
        help=f"comma-separated among {','.join(MODELS)} (default weak,gold-subset, plus pretrained-weak with "
        "--encoders or --pretrain-steps)",
    )
    training.add_argument("--image-size", type=int, default=64, help="image side in pixels (default 64)")
    training.add_argument("--backbone", default="resnet10", help="MONAI encoder name (default resnet10)")
    training.add_argument("--width", type=float, default=0.25, help="width multiplier (default 0.25)")
    training.add_argument(
        "--backbone-kwargs", type=_json_object, default={}, metavar="JSON", help="other arguments of the encoder"
    )
    training.add_argument("--epochs", type=int, default=10, help="passes over the training images (default 10)")
    training.add_argument("--batch-size", type=int, default=32, help="images per step (default 32)")
    training.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    training.add_argument("--weight-decay", type=float, default=1e-4, help="AdamW weight decay (default 1e-4)")
    training.add_argument("--encoders", metavar="DIR", help="exported encoders folder (image.json + image.pt)")
    training.add_argument(
        "--pretrain-steps", type=int, default=0, help="without --encoders: ConVIRT steps on the training pairs"
    )
    training.add_argument("--pretrain-batch-size", type=int, default=16, help="pretraining batch size (default 16)")
    training.add_argument("--pretrain-lr", type=float, default=1e-3, help="pretraining learning rate (default 1e-3)")
    training.add_argument("--text-model", metavar="DIR", help="pretraining text model (default: a tiny BERT)")
    training.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N (default auto)")
    training.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    training.add_argument("--seed", type=int, default=0, help="seed of split, subset, weights, batches, bootstrap")
    evaluation = parser.add_argument_group("evaluation")
    evaluation.add_argument(
        "--min-test-positives", type=int, default=5, help="fewest test positives (and negatives) to score (default 5)"
    )
    evaluation.add_argument("--n-boot", type=int, default=1000, help="bootstrap resamples (default 1000)")


def config_from_args(args: argparse.Namespace) -> Any:
    """The :class:`~medssl.weak.training.WeakTrainingConfig` of parsed arguments."""
    from medssl.weak.training import WeakTrainingConfig

    models = args.models
    if models is None:
        models = ["weak", "gold-subset"]
        if args.encoders or args.pretrain_steps > 0:
            models.append("pretrained-weak")
    return WeakTrainingConfig(
        source=args.source,
        out=args.out,
        observations=list(args.observations),
        models=list(models),
        gold=args.gold,
        gold_fraction=args.gold_fraction,
        test_fraction=args.test_fraction,
        official_split=args.official_split,
        policy=args.policy,
        blank=args.blank,
        label_model=args.label_model,
        jobs=args.jobs,
        frontal_only=not args.all_views,
        study_level=not args.all_images,
        image_size=args.image_size,
        backbone=args.backbone,
        width=args.width,
        backbone_kwargs=dict(args.backbone_kwargs),
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        weight_decay=args.weight_decay,
        encoders=args.encoders,
        pretrain_steps=args.pretrain_steps,
        pretrain_batch_size=args.pretrain_batch_size,
        pretrain_lr=args.pretrain_lr,
        text_model=args.text_model,
        min_test_positives=args.min_test_positives,
        n_boot=args.n_boot,
        seed=args.seed,
        salt=args.salt,
        device=args.device,
        threads=args.threads,
    )


def run(args: argparse.Namespace) -> int:
    """Run the comparison and print where the report is."""
    from medssl.weak.training import run_weak_comparison

    config = config_from_args(args)
    command = "medssl " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if len(sys.argv) > 1 else None
    result = run_weak_comparison(config, command=command)
    macro = result.results[result.results.observation == "macro"]
    for row in macro.itertuples():
        print(f"{row.model}: macro AUROC {row.auroc:.3f} ({row.ci_low:.3f}-{row.ci_high:.3f}) [{row.status}]")
    print(f"wrote {Path(result.files['report'])}")
    return 0
