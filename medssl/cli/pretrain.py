"""``medssl pretrain``: image-report (ConVIRT, GLoRIA) or image-only pretraining on a datalist."""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["COMMAND", "HELP", "DESCRIPTION", "add_arguments", "run", "settings_from_args"]

COMMAND = "pretrain"
HELP = "pretrain image (and report) encoders: ConVIRT, GLoRIA, and the registered image-only methods"
DESCRIPTION = """Pretrain encoders on a datalist (image + report items for ConVIRT/GLoRIA).

Runs on the CPU, one GPU (bf16 autocast) or many through torchrun (DDP: gloo on CPU, NCCL on GPU). Checkpoints are
written atomically every --checkpoint-every steps (the last --keep-last kept); --resume continues from the latest one
with the same optimizer, schedule, random states and data position, so a killed run resumed ends where an
uninterrupted one would. Metrics go to OUT/metrics.csv, TensorBoard (OUT/tensorboard) and, with --tracking mlflow, a
local MLflow store (OUT/mlruns). At the end the encoders are exported to OUT/encoders (image.pt + image.json, text/
for image-report methods). Settings can come from a JSON file (--config: PretrainConfig fields, method options under
"options"); flags given on the command line win.

examples:
  medssl pretrain --method convirt --data cxr/datalist.json --out runs/convirt --text-model models/clinical-bert
  medssl pretrain --method gloria --data cxr --out runs/gloria --text-model bert-dir --batch-size 16 --accumulate 4
  torchrun --nproc_per_node=4 -m medssl pretrain --method convirt --data cxr --out runs/ddp --text-model bert-dir
  medssl pretrain --method convirt --data cxr --out runs/convirt --text-model bert-dir --resume
  medssl pretrain --method simclr --data cxr/datalist.json --out runs/simclr --option preset=cxr
  medssl pretrain --method micle --data brats/datalist.json --out runs/micle --option spatial_dims=3 \
      --option 'image_keys=["T1","T1C","T2","FLAIR"]' --option positives=study
  medssl pretrain --list-methods
"""

# flag -> method option (only passed when given)
_OPTION_FLAGS = {
    "text_model": "text_model",
    "tokenizer": "tokenizer",
    "image_backbone": "image_backbone",
    "image_size": "image_size",
    "image_width": "image_width",
    "in_channels": "in_channels",
    "embed_dim": "embed_dim",
    "temperature": "temperature",
    "max_length": "max_length",
    "trainable_layers": "trainable_layers",
}
# flag -> PretrainConfig field (only passed when given)
_SETTING_FLAGS = (
    "method",
    "data",
    "out",
    "split",
    "seed",
    "epochs",
    "max_steps",
    "batch_size",
    "accumulate",
    "lr",
    "weight_decay",
    "optimizer",
    "warmup_steps",
    "schedule",
    "min_lr_ratio",
    "max_grad_norm",
    "num_workers",
    "cache_rate",
    "device",
    "amp",
    "checkpoint_every",
    "keep_last",
    "log_every",
    "tracking",
    "mlflow_uri",
    "experiment",
    "resume",
    "stop_after",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the arguments of ``medssl pretrain``."""
    what = parser.add_argument_group("what to train")
    what.add_argument(
        "--method",
        default=None,
        help="method name: convirt (default), gloria, or a registered " "image-only method (see --list-methods)",
    )
    what.add_argument(
        "--data",
        default=None,
        help="datalist JSON, or a folder holding datalist.json; image-only methods also take a manifest "
        "(CSV/Parquet), a folder of images or a DICOM export",
    )
    what.add_argument("--out", default=None, help="run folder: checkpoints, metrics, encoders")
    what.add_argument("--split", default=None, help="datalist split to train on (default: training)")
    what.add_argument(
        "--config",
        default=None,
        help="JSON file of settings (PretrainConfig fields, method options "
        "under 'options'); command-line flags override it",
    )
    what.add_argument("--list-methods", action="store_true", help="print the available methods and their options")

    model = parser.add_argument_group("model (method options)")
    model.add_argument("--text-model", default=None, help="text model: local folder (always works) or cached hub name")
    model.add_argument("--tokenizer", default=None, help="tokenizer folder if not the text model's")
    model.add_argument(
        "--image-backbone", default=None, help="MONAI image encoder (resnet50 default, resnet18, " "densenet121 ...)"
    )
    model.add_argument("--image-size", type=int, default=None, help="training image side (ConVIRT 224, GLoRIA 299)")
    model.add_argument("--image-width", type=float, default=None, help="width multiplier of the image backbone")
    model.add_argument("--in-channels", type=int, default=None, help="image channels (1 for radiographs)")
    model.add_argument("--embed-dim", type=int, default=None, help="joint embedding size (ConVIRT 512, GLoRIA 768)")
    model.add_argument("--temperature", type=float, default=None, help="contrastive temperature (0.1)")
    model.add_argument("--max-length", type=int, default=None, help="tokens per report")
    model.add_argument(
        "--trainable-layers",
        type=int,
        default=None,
        help="last text layers that train " "(ConVIRT: 6; the rest and the embeddings are frozen)",
    )
    model.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other method option (value parsed as JSON when it can be), repeatable",
    )

    train = parser.add_argument_group("optimisation")
    train.add_argument("--epochs", type=int, default=None, help="epochs (default 1) when --max-steps is not given")
    train.add_argument("--max-steps", type=int, default=None, help="optimizer steps in total")
    train.add_argument("--batch-size", type=int, default=None, help="items per micro-batch and process (32)")
    train.add_argument("--accumulate", type=int, default=None, help="micro-batches per optimizer step (1)")
    train.add_argument("--lr", type=float, default=None, help="peak learning rate (1e-4)")
    train.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay (1e-6)")
    train.add_argument("--optimizer", choices=("adamw", "adam", "sgd"), default=None, help="optimizer (adamw)")
    train.add_argument("--warmup-steps", type=int, default=None, help="linear warm-up steps (0)")
    train.add_argument("--schedule", choices=("cosine", "constant"), default=None, help="after warm-up (cosine)")
    train.add_argument("--min-lr-ratio", type=float, default=None, help="final lr of the cosine / lr (0)")
    train.add_argument("--max-grad-norm", type=float, default=None, help="clip the gradient norm")
    train.add_argument("--seed", type=int, default=None, help="seed of weights, data order, augmentation (0)")

    run_group = parser.add_argument_group("hardware, checkpoints, logging")
    run_group.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N")
    run_group.add_argument(
        "--amp", choices=("auto", "bf16", "off"), default=None, help="bf16 autocast: auto = on GPUs only (default)"
    )
    run_group.add_argument("--sync-batchnorm", action="store_true", help="SyncBatchNorm under DDP on GPUs")
    run_group.add_argument("--num-workers", type=int, default=None, help="data-loader workers per process (0)")
    run_group.add_argument("--cache-rate", type=float, default=None, help="share of decoded images kept in memory")
    run_group.add_argument("--checkpoint-every", type=int, default=None, help="steps between checkpoints (500)")
    run_group.add_argument("--keep-last", type=int, default=None, help="checkpoints kept (3)")
    run_group.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="CHECKPOINT",
        help="continue from the latest checkpoint in OUT (or the given file); a fresh start when " "there is none",
    )
    run_group.add_argument(
        "--stop-after",
        type=int,
        default=None,
        help="stop this invocation after N steps (with a " "checkpoint), e.g. within a job's time limit; resume later",
    )
    run_group.add_argument(
        "--tracking",
        nargs="+",
        choices=("csv", "tensorboard", "mlflow"),
        default=None,
        help="tracking backends (default: csv tensorboard)",
    )
    run_group.add_argument("--mlflow-uri", default=None, help="MLflow tracking URI (default: OUT/mlruns)")
    run_group.add_argument("--experiment", default=None, help="MLflow experiment name")
    run_group.add_argument("--log-every", type=int, default=None, help="steps between metric records (10)")
    run_group.add_argument("--no-progress", action="store_true", help="no progress bar")
    run_group.add_argument("--no-export", action="store_true", help="do not export the encoders at the end")


def _parse_option(text: str) -> tuple[str, Any]:
    from medssl.engines.methods import MethodConfigError

    key, sep, value = text.partition("=")
    if not sep or not key:
        raise MethodConfigError(f"--option expects KEY=VALUE, got {text!r}")
    try:
        return key.strip().replace("-", "_"), json.loads(value)
    except json.JSONDecodeError:
        return key.strip().replace("-", "_"), value


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """Settings of :class:`medssl.engines.PretrainConfig` from ``--config`` and the flags (flags win).

    Raises:
        MethodConfigError: an unreadable ``--config`` or a malformed ``--option``.
    """
    from pathlib import Path

    from medssl.engines.methods import MethodConfigError

    settings: dict[str, Any] = {}
    if args.config:
        try:
            settings = json.loads(Path(args.config).read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise MethodConfigError(f"cannot read the settings: {error}", args.config) from error
        if not isinstance(settings, dict):
            raise MethodConfigError("the settings file must hold a JSON object", args.config)
    options = dict(settings.get("options") or {})
    for flag, option in _OPTION_FLAGS.items():
        value = getattr(args, flag, None)
        if value is not None:
            options[option] = value
    for text in args.option:
        key, value = _parse_option(text)
        options[key] = value
    for name in _SETTING_FLAGS:
        value = getattr(args, name, None)
        if value is not None:
            settings[name] = value
    if args.sync_batchnorm:
        settings["sync_batchnorm"] = True
    if args.no_progress:
        settings["progress"] = False
    if args.no_export:
        settings["export"] = False
    settings["options"] = options
    return settings


def _list_methods() -> int:
    from medssl.engines.methods import available_methods, get_method

    for name in available_methods():
        klass = get_method(name)
        print(f"{name}: {klass.summary}")
        for key, value in klass.defaults().items():
            print(f"    {key} = {json.dumps(value)}")
    return 0


def run(args: argparse.Namespace) -> int:
    """Train, print a one-line summary and where the checkpoint and the encoders are."""
    import sys

    if args.list_methods:
        return _list_methods()
    settings = settings_from_args(args)
    missing = [flag for flag, key in (("--data", "data"), ("--out", "out")) if not settings.get(key)]
    if missing:
        print(f"medssl pretrain: error: {' and '.join(missing)} required (or in --config)", file=sys.stderr)
        return 2
    settings.setdefault("progress", sys.stderr.isatty())

    from medssl.engines.pretrain import Pretraining

    run_ = Pretraining(settings)
    summary = run_.run()
    if run_.context.is_main:
        state = "finished" if summary["finished"] else "stopped (resume with --resume)"
        loss = summary["loss"]
        loss_text = "n/a" if loss is None else f"{loss:.4f}"
        print(
            f"{settings.get('method', 'convirt')}: {state} at step {summary['steps']}/{summary['total_steps']}, "
            f"last loss {loss_text}"
        )
        print(f"checkpoint: {summary['checkpoint']}")
        for name, path in summary["encoders"].items():
            print(f"{name}: {path}")
    return 0
