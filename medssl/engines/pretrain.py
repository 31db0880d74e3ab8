"""The pretraining engine shared by every method: an ignite ``Engine`` with exact resume, DDP, AMP and tracking.

:class:`Pretraining` builds everything from plain arguments (so a MONAI bundle config can build it with
``_target_``) and runs it; ``medssl pretrain`` is a thin command-line door onto it. What it does:

* **data**: the datalist split, the method's transforms (deterministic part optionally cached with MONAI's
  ``CacheDataset``, random part seeded per item), batches from :class:`~medssl.engines.data.ResumableBatchSampler`;
* **one ignite iteration = one optimizer step**: the loader yields ``batch_size * accumulate`` items per rank, cut
  into ``accumulate`` micro-batches whose gradients add up (DDP synchronises only on the last one, ``no_sync``);
  bf16 autocast on GPU (``amp``), losses in float32; optional gradient clipping; warm-up + cosine (or constant)
  learning rate;
* **DDP** under ``torchrun``: gloo on CPU, NCCL on GPU; rank ``r`` takes the ``r``-th slice of every global batch,
  so ``n`` ranks of ``b`` items take the step one process takes with ``n * b`` items (the losses gather negatives
  from all ranks);
* **checkpoints** every ``checkpoint_every`` steps and at the end (atomic, the last ``keep_last`` kept): model,
  loss, optimizer, scheduler, step, every rank's random states, the tracker's run id, the hyperparameters (no paths);
  ``resume="latest"`` (or a file) continues with the same data order, augmentations and random streams, so a run
  killed at any point and resumed ends with the weights of an uninterrupted run (exactly, on CPU);
* **tracking**: ``metrics.csv`` always, TensorBoard and MLflow on request; a progress bar on rank 0;
* **export** at the end: the method's encoders in ``{out}/encoders``.

Why an ignite ``Engine`` and not MONAI's ``SupervisedTrainer``: the step is the method's (``forward_loss``), the
batch is a dict of tensors without ``label``, and exact resume needs the sampler, the random states and the step
counter restored together; the ``Engine`` keeps ignite's events, so MONAI handlers (``StatsHandler``,
``TensorBoardStatsHandler``, ``MLFlowHandler`` ...) attach to :attr:`Pretraining.engine` as to any trainer.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from torch import nn

from medssl.engines.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    CheckpointManager,
    capture_rng_state,
    restore_rng_state,
)
from medssl.engines.data import SeededDataset, build_loader
from medssl.engines.distributed import (
    DistributedContext,
    all_gather_objects,
    broadcast_object,
    cleanup_distributed,
    init_distributed,
)
from medssl.engines.methods import MethodConfigError, PretrainMethod, create_method
from medssl.engines.tracking import Tracker
from medssl.log import get_logger

__all__ = [
    "PretrainConfig",
    "Pretraining",
    "PretrainStep",
    "WarmupCosine",
    "run_pretraining",
    "load_training_items",
    "CHECKPOINT_VERSION",
]

logger = get_logger(__name__)

CHECKPOINT_VERSION = 1
# Settings that must not change between a checkpoint and the run resuming from it (they decide the data order,
# the batches or the schedule); everything else (logging, checkpoint frequency, workers ...) may change.
_RESUME_INVARIANTS = ("method", "seed", "batch_size", "accumulate", "world_size", "total_steps", "steps_per_epoch")


@dataclass
class PretrainConfig:
    """Every setting of a pretraining run (plain values: JSON, the command line and bundle configs can hold them).

    Attributes:
        method: registered method name (``convirt``, ``gloria``, and the image-only ones once registered).
        data: datalist JSON, or a folder holding ``datalist.json`` (image-only methods: also a manifest or a folder
            of images, see the method's ``load_items``).
        out: the run folder (checkpoints, metrics, encoders).
        split: datalist split to train on.
        options: method options (see the method's ``defaults()``).
        seed: seed of the weights, the data order and the augmentations.
        epochs: epochs to train when ``max_steps`` is not given.
        max_steps: optimizer steps in total (overrides ``epochs``).
        batch_size: items per micro-batch and rank.
        accumulate: micro-batches per optimizer step (gradient accumulation).
        lr: peak learning rate.
        weight_decay: AdamW weight decay (not on biases, norms and temperatures).
        optimizer: ``adamw``, ``adam`` or ``sgd`` (momentum 0.9).
        warmup_steps: linear warm-up steps.
        schedule: ``cosine`` (to ``min_lr_ratio * lr``) or ``constant`` after the warm-up.
        min_lr_ratio: final learning rate of the cosine schedule, relative to ``lr``.
        max_grad_norm: clip the gradient norm (``None``: no clipping).
        num_workers: data-loader workers per rank.
        cache_rate: share of items whose deterministic transforms (loading, resizing) are cached in memory.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        amp: ``auto`` (bf16 autocast on GPU), ``bf16`` or ``off``.
        sync_batchnorm: convert BatchNorm to SyncBatchNorm under DDP on GPUs (batch statistics over the global batch).
        checkpoint_every: steps between checkpoints (0: only at the end).
        keep_last: checkpoints kept.
        log_every: steps between metric records.
        tracking: backends among ``csv``, ``tensorboard``, ``mlflow``.
        mlflow_uri: MLflow tracking URI (default: a file store in ``{out}/mlruns``).
        experiment: MLflow experiment name.
        progress: show a progress bar (rank 0).
        resume: ``None``, ``"latest"`` (the newest checkpoint in ``{out}/checkpoints``; a fresh start when there is
            none) or a checkpoint file.
        stop_after: stop this invocation after this many steps (with a checkpoint), e.g. for time-limited jobs;
            resume later.
        export: write the encoders at the end.
    """

    method: str = "convirt"
    data: str = ""
    out: str = "pretrain_output"
    split: str = "training"
    options: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    epochs: int = 1
    max_steps: int | None = None
    batch_size: int = 32
    accumulate: int = 1
    lr: float = 1e-4
    weight_decay: float = 1e-6
    optimizer: str = "adamw"
    warmup_steps: int = 0
    schedule: str = "cosine"
    min_lr_ratio: float = 0.0
    max_grad_norm: float | None = None
    num_workers: int = 0
    cache_rate: float = 0.0
    device: str = "auto"
    amp: str = "auto"
    sync_batchnorm: bool = False
    checkpoint_every: int = 500
    keep_last: int = 3
    log_every: int = 10
    tracking: Sequence[str] = ("csv", "tensorboard")
    mlflow_uri: str | None = None
    experiment: str = "medssl-pretrain"
    progress: bool = True
    resume: str | None = None
    stop_after: int | None = None
    export: bool = True

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PretrainConfig:
        """Build from a mapping, refusing unknown keys.

        Raises:
            MethodConfigError: an unknown key.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise MethodConfigError(f"unknown pretraining setting(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain data."""
        out = asdict(self)
        out["tracking"] = list(self.tracking)
        return out


class WarmupCosine:
    """Learning-rate factor: linear warm-up, then cosine decay to ``min_ratio`` (or constant).

    A callable object with plain attributes, so ``LambdaLR`` saves it in its state dict.

    Args:
        warmup_steps: steps of linear warm-up from ``1 / (warmup_steps + 1)`` to 1.
        total_steps: the step count of the run.
        min_ratio: final factor of the cosine.
        cosine: decay (True) or stay at 1 (False) after the warm-up.
    """

    def __init__(self, warmup_steps: int, total_steps: int, min_ratio: float = 0.0, cosine: bool = True) -> None:
        self.warmup_steps = int(warmup_steps)
        self.total_steps = int(total_steps)
        self.min_ratio = float(min_ratio)
        self.cosine = bool(cosine)

    def __call__(self, step: int) -> float:
        """The factor of the learning rate at ``step``."""
        if step < self.warmup_steps:
            return (step + 1) / (self.warmup_steps + 1)
        if not self.cosine:
            return 1.0
        span = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


class _MethodModule(nn.Module):
    """Model + loss as one module whose forward is the method's loss (the unit DDP wraps)."""

    def __init__(self, method: PretrainMethod, model: nn.Module, loss: nn.Module) -> None:
        super().__init__()
        self.method = method
        self.model = model
        self.loss = loss

    def forward(self, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        return self.method.forward_loss(self.model, self.loss, batch)


def _split_batch(batch: Mapping[str, Any], parts: int) -> list[dict[str, Any]]:
    """Cut a collated batch into ``parts`` micro-batches along dim 0 (tensors; lists sliced alike)."""
    if parts == 1:
        return [dict(batch)]
    sizes = {len(v) for v in batch.values() if torch.is_tensor(v) or isinstance(v, list)}
    n = max(sizes) if sizes else 0
    bounds = np.linspace(0, n, parts + 1).round().astype(int)
    return [
        {k: v[a:b] if (torch.is_tensor(v) or isinstance(v, list)) else v for k, v in batch.items()}
        for a, b in zip(bounds[:-1], bounds[1:])
    ]


class PretrainStep:
    """The ignite process function: one optimizer step over ``accumulate`` micro-batches.

    Args:
        method: the method (computes the loss of a micro-batch).
        module: :class:`_MethodModule`, or its DDP wrapper.
        optimizer: the optimizer.
        scheduler: a per-step learning-rate scheduler (or ``None``).
        accumulate: micro-batches per step.
        amp_dtype: autocast dtype (``None``: no autocast).
        max_grad_norm: gradient-norm clip (``None``: none).
        context: the distributed context.
    """

    def __init__(
        self,
        method: PretrainMethod,
        module: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any | None,
        accumulate: int = 1,
        amp_dtype: torch.dtype | None = None,
        max_grad_norm: float | None = None,
        context: DistributedContext | None = None,
    ) -> None:
        self.method = method
        self.module = module
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.accumulate = int(accumulate)
        self.amp_dtype = amp_dtype
        self.max_grad_norm = max_grad_norm
        self.context = context or DistributedContext()
        self.params = [p for group in optimizer.param_groups for p in group["params"]]

    def _usable(self, batch: Mapping[str, Any] | None) -> bool:
        """Every micro-batch of every rank has an item and the global batch has two (a contrastive minimum)."""
        smallest = (
            0 if batch is None else min(self.method.batch_size_of(b) for b in _split_batch(batch, self.accumulate))
        )
        total = 0 if batch is None else self.method.batch_size_of(batch)
        if self.context.backend is None:
            return smallest >= 1 and total >= 2
        flags = torch.tensor([smallest, -total], device=self.context.device, dtype=torch.long)
        torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MIN)
        return int(flags[0]) >= 1 and -int(flags[1]) >= 2

    def __call__(self, engine: Engine, batch: Mapping[str, Any] | None) -> dict[str, float]:
        """Take one step; return the mean of each logged scalar over the micro-batches (and the learning rate)."""
        lr = float(self.optimizer.param_groups[0]["lr"])
        if not self._usable(batch):
            logger.warning(
                "step %d skipped: a micro-batch is empty after dropping unloadable items", engine.state.iteration
            )
            return {"loss": float("nan"), "lr": lr, "skipped": 1.0}
        self.module.train()
        self.optimizer.zero_grad(set_to_none=True)
        chunks = _split_batch(batch, self.accumulate)
        device = self.context.device
        totals: dict[str, float] = {}
        for i, chunk in enumerate(chunks):
            last = i == len(chunks) - 1
            sync = contextlib.nullcontext() if last or not hasattr(self.module, "no_sync") else self.module.no_sync()
            with sync:
                with torch.autocast(
                    device_type=device.type, dtype=self.amp_dtype or torch.bfloat16, enabled=self.amp_dtype is not None
                ):
                    out = self.module(chunk)
                (out["loss"] / len(chunks)).backward()
            for name, value in out.items():
                totals[name] = totals.get(name, 0.0) + float(value.detach()) / len(chunks)
        if self.max_grad_norm:
            totals["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(self.params, self.max_grad_norm))
        self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        totals["lr"] = lr
        return totals


def load_training_items(data: str | os.PathLike, split: str = "training") -> list[dict[str, Any]]:
    """The items of a datalist split (a JSON file, or a folder with ``datalist.json``), paths resolved.

    Raises:
        DatalistError: no datalist, an invalid one, or no such split.
    """
    from medssl.data.datalist import load_datalist
    from medssl.exceptions import DatalistError

    path = Path(data)
    if path.is_dir():
        if not (path / "datalist.json").is_file():
            raise DatalistError(
                "a folder without datalist.json: write one first (e.g. medssl datalist mimic-cxr ROOT --out "
                "ROOT/datalist.json) or pass the datalist file",
                path,
            )
        path = path / "datalist.json"
    return load_datalist(path, split=split)


class Pretraining:
    """A pretraining run built from plain settings (see :class:`PretrainConfig` for every argument).

    ``Pretraining(method="convirt", data="datalist.json", out="run", options={"text_model": "..."}).run()``;
    in a bundle: ``{"_target_": "medssl.engines.Pretraining", "method": "gloria", "data": "@datalist", ...}`` and
    ``"$@pretraining.run()"``. :meth:`setup` builds the pieces (exposed as attributes, e.g. :attr:`engine` to attach
    MONAI handlers to) without running.

    Args:
        config: a :class:`PretrainConfig` or a mapping of its fields.
        kwargs: fields of :class:`PretrainConfig` (override ``config``).
    """

    def __init__(self, config: PretrainConfig | Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        base = config.to_dict() if isinstance(config, PretrainConfig) else dict(config or {})
        self.config = PretrainConfig.from_dict({**base, **kwargs})
        self.engine: Engine | None = None
        self._resume_state: dict[str, Any] | None = None
        self._start_step = 0
        self._last_saved = -1

    # ------------------------------------------------------------------------------------------------ set-up
    def setup(self) -> Pretraining:
        """Build data, model, loss, optimizer, scheduler, engine, tracker and handlers (once).

        Returns:
            Itself.
        """
        if self.engine is not None:
            return self
        cfg = self.config
        self.context = init_distributed(cfg.device)
        self.out = Path(cfg.out)
        self.method = create_method(cfg.method, **cfg.options)
        self._check_config()
        if self.context.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str) + "\n")
        self.checkpoints = CheckpointManager(self.out / "checkpoints", keep_last=cfg.keep_last)
        self._resume_state = self._find_resume_state()

        _seed_everything(cfg.seed)  # identical initial weights on every rank
        self.model = self.method.build_model()
        self.loss = self.method.build_loss()
        self._build_data()
        self.model.to(self.context.device)
        self.loss.to(self.context.device)
        if cfg.sync_batchnorm and self.context.distributed and self.context.device.type == "cuda":
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.module = _MethodModule(self.method, self.model, self.loss)
        self.wrapped: nn.Module = self.module
        if self.context.backend is not None:  # any process group, even of one rank: one code path
            ids = [self.context.device.index] if self.context.device.type == "cuda" else None
            self.wrapped = nn.parallel.DistributedDataParallel(self.module, device_ids=ids)
        self.optimizer = self._build_optimizer()
        self.steps_per_epoch = len(self.sampler)
        self.total_steps = int(cfg.max_steps) if cfg.max_steps else int(cfg.epochs) * self.steps_per_epoch
        if self.total_steps < 1:
            raise MethodConfigError(
                f"nothing to train: {self.total_steps} steps (epochs={cfg.epochs}, max_steps={cfg.max_steps})"
            )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer,
            WarmupCosine(cfg.warmup_steps, self.total_steps, cfg.min_lr_ratio, cosine=cfg.schedule == "cosine"),
        )
        amp_dtype = self._amp_dtype()
        self.step_function = PretrainStep(
            self.method,
            self.wrapped,
            self.optimizer,
            self.scheduler,
            cfg.accumulate,
            amp_dtype,
            cfg.max_grad_norm,
            self.context,
        )
        self.engine = Engine(self.step_function)
        # MONAI-trainer-like attributes, for handlers that look for them
        self.engine.network, self.engine.optimizer, self.engine.data_loader = self.model, self.optimizer, self.loader
        self.engine.loss_function = self.loss
        self.engine.logger.setLevel("WARNING")

        if self._resume_state is not None:
            self._load_state(self._resume_state)
        else:
            _seed_everything(cfg.seed + 1 + self.context.rank)  # per-rank streams (dropout ...) from here on
        tracking_state = (self._resume_state or {}).get("tracking", {})
        self.tracker = Tracker(
            self.out,
            backends=cfg.tracking,
            enabled=self.context.is_main,
            resume_step=self._start_step if self._resume_state is not None else None,
            mlflow_uri=cfg.mlflow_uri,
            mlflow_experiment=cfg.experiment,
            mlflow_run_id=tracking_state.get("mlflow_run_id"),
            run_name=Path(cfg.out).name,
        )
        if self._resume_state is None:
            self.tracker.log_params(self.hyperparameters())
        self._resume_state = None  # large; not needed any more
        self._attach_handlers()
        return self

    def _check_config(self) -> None:
        cfg = self.config
        if cfg.batch_size < 1 or cfg.accumulate < 1:
            raise MethodConfigError(
                f"batch_size and accumulate must be >= 1, got {cfg.batch_size} and {cfg.accumulate}"
            )
        if cfg.schedule not in ("cosine", "constant"):
            raise MethodConfigError(f"schedule must be 'cosine' or 'constant', got {cfg.schedule!r}")
        if cfg.amp not in ("auto", "bf16", "off"):
            raise MethodConfigError(f"amp must be 'auto', 'bf16' or 'off', got {cfg.amp!r}")
        if cfg.optimizer not in ("adamw", "adam", "sgd"):
            raise MethodConfigError(f"optimizer must be 'adamw', 'adam' or 'sgd', got {cfg.optimizer!r}")

    def _amp_dtype(self) -> torch.dtype | None:
        amp, device = self.config.amp, self.context.device
        if amp == "off" or (amp == "auto" and device.type != "cuda"):
            return None
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            logger.warning("this GPU has no bf16 support: training in float32")
            return None
        return torch.bfloat16

    def _build_data(self) -> None:
        from monai.data import CacheDataset, Dataset
        from monai.transforms import Compose

        cfg = self.config
        items = self.method.load_items(cfg.data, cfg.split)
        required = self.method.required_keys
        usable = [item for item in items if all(item.get(k) not in (None, "") for k in required)]
        if len(usable) < len(items):
            logger.warning(
                "%d of %d items lack %s and are left out", len(items) - len(usable), len(items), list(required)
            )
        usable = self.method.prepare_items(usable)
        deterministic, random_part = self.method.transforms(train=True)
        if cfg.cache_rate > 0:
            base = CacheDataset(
                usable,
                Compose(deterministic),
                cache_rate=cfg.cache_rate,
                num_workers=cfg.num_workers or None,
                progress=False,
            )
        else:
            base = Dataset(usable, Compose(deterministic))
        self.dataset = SeededDataset(base, Compose(random_part), seed=cfg.seed)
        self.loader, self.sampler = build_loader(
            self.dataset,
            cfg.batch_size * cfg.accumulate,
            seed=cfg.seed,
            rank=self.context.rank,
            world_size=self.context.world_size,
            num_workers=cfg.num_workers,
            pin_memory=self.context.device.type == "cuda",
        )

    def _build_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.config
        groups = self.method.parameter_groups(self.model, self.loss, cfg.weight_decay)
        if cfg.optimizer == "adam":
            return torch.optim.Adam(groups, lr=cfg.lr)
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=cfg.lr, momentum=0.9)
        return torch.optim.AdamW(groups, lr=cfg.lr)

    def hyperparameters(self) -> dict[str, Any]:
        """Settings and method options without paths (what checkpoints and trackers keep)."""
        cfg = self.config.to_dict()
        for key in ("data", "out", "resume", "mlflow_uri", "options"):
            cfg.pop(key, None)
        cfg["world_size"] = self.context.world_size
        cfg["total_steps"] = self.total_steps
        cfg["steps_per_epoch"] = self.steps_per_epoch
        cfg["options"] = self.method.hyperparameters()
        return cfg

    # ------------------------------------------------------------------------------------------------ resume
    def _find_resume_state(self) -> dict[str, Any] | None:
        resume = self.config.resume
        if not resume:
            return None
        if resume == "latest":
            if self.checkpoints.latest() is None:
                logger.warning("resume: no checkpoint in %s, starting from scratch", self.checkpoints.directory)
                return None
            return self.checkpoints.load()
        return self.checkpoints.load(resume)

    def _load_state(self, state: Mapping[str, Any]) -> None:
        saved = state.get("hyperparameters", {})
        now = self.hyperparameters()
        changed = {k: (saved.get(k), now.get(k)) for k in _RESUME_INVARIANTS if saved.get(k) != now.get(k)}
        if changed:
            detail = ", ".join(f"{k}: {a!r} in the checkpoint vs {b!r} now" for k, (a, b) in changed.items())
            raise CheckpointError(f"cannot resume exactly with different settings ({detail})")
        if saved.get("options") != now.get("options"):
            logger.warning("resume: method options differ from the checkpoint's; continuing with the new ones")
        self.model.load_state_dict(state["model"])
        self.loss.load_state_dict(state["loss"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        rng = state["rng"]
        if len(rng) != self.context.world_size:
            raise CheckpointError(
                f"the checkpoint has random states of {len(rng)} ranks, this run has {self.context.world_size}"
            )
        restore_rng_state(rng[self.context.rank])
        self._start_step = int(state["step"])
        self._last_saved = self._start_step
        self.engine.load_state_dict(
            {"iteration": self._start_step, "epoch_length": self.steps_per_epoch, "max_iters": self.total_steps}
        )
        logger.info("resumed from step %d of %d", self._start_step, self.total_steps)

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint of the current step (collective under DDP: every rank must call it)."""
        rng = all_gather_objects(capture_rng_state())
        return {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "method": self.method.name,
            "step": int(self.engine.state.iteration),
            "epoch": int(self.engine.state.epoch),
            "model": self.model.state_dict(),
            "loss": self.loss.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng,
            "tracking": self.tracker.state_dict() if hasattr(self, "tracker") else {},
            "hyperparameters": self.hyperparameters(),
        }

    def save_checkpoint(self) -> Path | None:
        """Write the checkpoint of the current step (rank 0 writes; every rank must call it)."""
        step = int(self.engine.state.iteration)
        state = self.state_dict()
        path = None
        if self.context.is_main:
            path = self.checkpoints.save(state, step)
        self._last_saved = step
        return path

    # ------------------------------------------------------------------------------------------------ handlers
    def _attach_handlers(self) -> None:
        cfg, engine = self.config, self.engine

        @engine.on(Events.EPOCH_STARTED)
        def _position_sampler(engine: Engine) -> None:
            epoch = engine.state.epoch - 1
            self.sampler.set_epoch(epoch, start_batch=engine.state.iteration - epoch * self.steps_per_epoch)

        @engine.on(Events.ITERATION_COMPLETED)
        def _after_step(engine: Engine) -> None:
            step = engine.state.iteration
            output = engine.state.output or {}
            if cfg.log_every and (step % cfg.log_every == 0 or step == self.total_steps):
                self.tracker.log_metrics({f"train/{k}": v for k, v in output.items()}, step)
            if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                self.save_checkpoint()
            if cfg.stop_after and step - self._start_step >= cfg.stop_after and step < self.total_steps:
                if self._last_saved != step:
                    self.save_checkpoint()
                engine.terminate()

        if cfg.progress and self.context.is_main:
            from ignite.handlers import ProgressBar

            ProgressBar(persist=True).attach(
                engine, output_transform=lambda out: {"loss": out.get("loss", float("nan"))}
            )

    # ------------------------------------------------------------------------------------------------ run
    def run(self) -> dict[str, Any]:
        """Train (or continue) to the last step, checkpoint, export the encoders.

        Returns:
            ``{"steps", "total_steps", "finished", "loss", "checkpoint", "encoders", "out"}``.
        """
        self.setup()
        status = "FAILED"
        try:
            if self._start_step < self.total_steps:
                self.engine.run(self.loader, max_iters=self.total_steps, epoch_length=self.steps_per_epoch)
            step = int(self.engine.state.iteration)
            if self._last_saved != step:
                self.save_checkpoint()
            finished = step >= self.total_steps
            encoders: dict[str, str] = {}
            if finished and self.config.export:
                if self.context.is_main:
                    encoders = self.method.export(self.model, self.loss, self.out / "encoders")
                encoders = broadcast_object(encoders)
            status = "FINISHED" if finished else "KILLED"
            output = self.engine.state.output or {}
            return {
                "steps": step,
                "total_steps": self.total_steps,
                "finished": finished,
                "loss": output.get("loss"),
                "checkpoint": os.fspath(self.checkpoints.path_for(step)),
                "encoders": encoders,
                "out": os.fspath(self.out),
            }
        finally:
            self.tracker.close(status)
            cleanup_distributed(self.context)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))
    random.seed(seed)


def run_pretraining(config: PretrainConfig | Mapping[str, Any] | None = None, **kwargs: Any) -> dict[str, Any]:
    """Build and run a :class:`Pretraining`; see it for the arguments and the returned summary."""
    return Pretraining(config, **kwargs).run()
