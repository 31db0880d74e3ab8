"""Supervised training and evaluation of fusion networks: binary classification and region segmentation.

The pieces are MONAI-shaped so that a bundle can plug them into :class:`monai.engines.SupervisedTrainer` and
:class:`monai.engines.SupervisedEvaluator` (``prepare_batch``, ``loss_function``), while
:func:`train_supervised` and :func:`predict` are a small loop of their own that the ``medssl compare-fusion``
command runs for every fold and strategy:

* :class:`FusionPrepareBatch` turns a collated batch into ``(inputs, targets, (presence,), {})``: a view-keyed dict
  (mammography) or a channel-stacked image (MR) for the network, and the targets the loss needs - the exam label,
  each view's label (the label of the view's breast when the datalist has breast labels), the breast labels, or the
  region masks of a label map (segmentation);
* :class:`FusionLoss` is the loss of every fusion strategy: exam-level BCE on ``logits`` (early and joint fusion),
  per-view BCE on ``view_logits`` over the present views (late fusion and the single-view baselines), per-breast BCE
  on ``breast_logits`` (joint fusion with a breast head); Dice + BCE on the region channels for segmentation. Labels
  below 0 (unknown, ``-1`` in the datalists) are masked out;
* :func:`train_supervised` trains with AdamW and a cosine schedule, evaluates on the validation data after every
  epoch, keeps the weights of the best epoch (validation AUROC, ties going to the lower validation loss; validation
  loss when the AUROC is undefined; mean Dice for segmentation) and stops early after ``patience`` epochs without
  improvement. Model selection only ever sees the validation data it is given (:func:`selection_score` is the one
  place the score is computed);
* :func:`predict` returns per-case outputs keyed by ``case_key`` and ``patient_key`` (no paths, no PHI).

Everything is built from plain arguments, so a bundle config can say
``{"_target_": "medssl.engines.supervised.FusionLoss", "view_weight": 1.0, "exam_weight": 0.0}``.
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from monai.engines.utils import PrepareBatch
from torch import nn
from torch.nn import functional as F

from medssl.exceptions import MedsslError
from medssl.log import get_logger

__all__ = [
    "TASKS",
    "SupervisedConfigError",
    "region_targets",
    "regions_to_label_map",
    "FusionPrepareBatch",
    "FusionLoss",
    "exam_probabilities",
    "Predictions",
    "TrainingResult",
    "resolve_device",
    "predict",
    "selection_score",
    "train_supervised",
]

logger = get_logger(__name__)

TASKS = ("classification", "segmentation")


class SupervisedConfigError(MedsslError):
    """The supervised engine's arguments are inconsistent (task, keys, outputs the loss needs)."""


# --------------------------------------------------------------------------------------------------------- regions
def region_targets(label_map: torch.Tensor, regions: Mapping[str, Sequence[int]]) -> torch.Tensor:
    """One binary channel per region of a label map (BraTS: TC, WT, ET from labels 1, 2, 4).

    Args:
        label_map: ``(B, 1, *spatial)`` or ``(B, *spatial)`` integer labels.
        regions: ``{region: labels}`` in channel order.

    Returns:
        ``(B, R, *spatial)`` float masks.
    """
    if label_map.dim() >= 3 and label_map.shape[1] == 1:
        label_map = label_map[:, 0]
    label_map = label_map.round().long()
    channels = []
    for values in regions.values():
        wanted = torch.as_tensor([int(v) for v in values], device=label_map.device)
        channels.append(torch.isin(label_map, wanted))
    return torch.stack(channels, 1).float()


def regions_to_label_map(masks: np.ndarray, regions: Mapping[str, Sequence[int]]) -> np.ndarray:
    """Turn nested region masks back into a label map (BraTS: WT ⊃ TC ⊃ ET -> ED 2, NCR 1, ET 4).

    Regions are ordered from the largest label set to the smallest; each must contain the next, and each ring (a
    region minus the next) must hold exactly one label, which its voxels get. A voxel is in a region only when it is
    in every larger region too (the prediction is made nested first).

    Args:
        masks: ``(R, *spatial)`` booleans in the order of ``regions``.
        regions: ``{region: labels}``.

    Returns:
        The ``(*spatial)`` label map (uint8).

    Raises:
        SupervisedConfigError: the regions are not nested with one label per ring.
    """
    names = list(regions)
    order = sorted(range(len(names)), key=lambda i: -len(regions[names[i]]))
    sets = [set(int(v) for v in regions[names[i]]) for i in order]
    label = np.zeros(masks.shape[1:], dtype=np.uint8)
    inside = np.ones(masks.shape[1:], dtype=bool)
    for position, index in enumerate(order):
        ring = sets[position] - (sets[position + 1] if position + 1 < len(sets) else set())
        if (position + 1 < len(sets) and not sets[position + 1] <= sets[position]) or len(ring) != 1:
            raise SupervisedConfigError(
                f"regions {dict(regions)} are not nested with one label per ring: cannot rebuild a label map",
                "regions_to_label_map",
            )
        inside = inside & masks[index].astype(bool)
        label[inside] = next(iter(ring))
    return label


# ----------------------------------------------------------------------------------------------------- batch, loss
class FusionPrepareBatch(PrepareBatch):
    """Batch -> ``(inputs, targets, (presence,), {})`` for fusion networks (a MONAI ``PrepareBatch``).

    Args:
        image_keys: one key of a channel-stacked image (``"image"``: MR sequences) or the view keys
            (``["L-CC", "R-CC", "L-MLO", "R-MLO"]``), which become a view-keyed dict.
        presence_key: the ``(B, V)`` presence mask key; None (or absent from the batch) for "all present".
        label_key: the exam (case) label, or the label map for segmentation.
        task: ``"classification"`` or ``"segmentation"``.
        view_label_keys: per view (in the network's view order) the batch key of its label, e.g. the view's breast
            label ``["label_L", "label_R", "label_L", "label_R"]``; None: every view gets the exam label.
        breast_label_keys: the breast labels in the network's breast order (``["label_L", "label_R"]``), or None.
        regions: ``{region: labels}`` for segmentation (targets are region masks).

    Raises:
        SupervisedConfigError: unknown task, or segmentation without regions.
    """

    def __init__(
        self,
        image_keys: str | Sequence[str] = "image",
        presence_key: str | None = "presence",
        label_key: str = "label",
        task: str = "classification",
        view_label_keys: Sequence[str] | None = None,
        breast_label_keys: Sequence[str] | None = None,
        regions: Mapping[str, Sequence[int]] | None = None,
    ) -> None:
        if task not in TASKS:
            raise SupervisedConfigError(f"task must be one of {TASKS}, got {task!r}", "FusionPrepareBatch")
        if task == "segmentation" and not regions:
            raise SupervisedConfigError("segmentation needs regions ({name: labels})", "FusionPrepareBatch")
        self.image_keys = image_keys if isinstance(image_keys, str) else [str(k) for k in image_keys]
        self.presence_key = presence_key
        self.label_key = label_key
        self.task = task
        self.view_label_keys = None if view_label_keys is None else [str(k) for k in view_label_keys]
        self.breast_label_keys = None if breast_label_keys is None else [str(k) for k in breast_label_keys]
        self.regions = None if regions is None else {str(k): [int(v) for v in vs] for k, vs in regions.items()}

    @staticmethod
    def _tensor(value: Any, device: Any, non_blocking: bool, **kwargs: Any) -> torch.Tensor:
        tensor = torch.as_tensor(value)
        return tensor.to(device=device, non_blocking=non_blocking, **kwargs) if device is not None else tensor

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[Any, Any, tuple[Any, ...], dict[str, Any]]:
        """Prepare one collated batch.

        Args:
            batchdata: the collated batch (a dict).
            device: where the tensors go.
            non_blocking: ``Tensor.to`` flag.
            kwargs: further ``Tensor.to`` arguments.

        Returns:
            ``(inputs, targets, args, kwargs)`` as MONAI's trainers expect: ``inputs`` a tensor or view dict,
            ``targets`` a dict (classification: ``label`` ``(B,)``, ``view`` ``(B, V)``, ``breast`` ``(B, NB)``) or
            region masks ``(B, R, *spatial)``, ``args`` ``(presence,)`` or ``()``.
        """
        move = dict(device=device, non_blocking=non_blocking, **kwargs)
        if isinstance(self.image_keys, str):
            inputs: Any = self._tensor(batchdata[self.image_keys], **move).float()
        else:
            inputs = {k: self._tensor(batchdata[k], **move).float() for k in self.image_keys if k in batchdata}
        args: tuple[Any, ...] = ()
        if self.presence_key and self.presence_key in batchdata:
            args = (self._tensor(batchdata[self.presence_key], **move).float(),)
        if self.label_key not in batchdata:
            return inputs, None, args, {}
        label = self._tensor(batchdata[self.label_key], **move)
        if self.task == "segmentation":
            return inputs, region_targets(label, self.regions or {}), args, {}
        label = label.float().reshape(-1)
        targets: dict[str, torch.Tensor] = {"label": label}
        if self.view_label_keys is not None:
            targets["view"] = torch.stack(
                [self._tensor(batchdata[k], **move).float().reshape(-1) for k in self.view_label_keys], 1
            )
        if self.breast_label_keys is not None:
            targets["breast"] = torch.stack(
                [self._tensor(batchdata[k], **move).float().reshape(-1) for k in self.breast_label_keys], 1
            )
        return inputs, targets, args, {}


def _masked_bce(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean BCE over the entries where ``mask`` is set (0 when none is), unknown labels (< 0) already masked."""
    mask = mask.to(logits.dtype)
    safe = torch.where(mask > 0, target.to(logits.dtype).clamp(0, 1), torch.zeros_like(logits))
    loss = F.binary_cross_entropy_with_logits(logits, safe, reduction="none")
    return (loss * mask).sum() / mask.sum().clamp_min(1.0)


class FusionLoss(nn.Module):
    """The training loss of every fusion strategy (a MONAI ``loss_function(pred, targets)``).

    Classification (one binary output): ``exam_weight`` x BCE of the exam ``logits`` + ``view_weight`` x BCE of
    ``view_logits`` over the present views (``presence`` output) against each view's target (or the exam label) +
    ``breast_weight`` x BCE of ``breast_logits`` over the present breasts. A tensor output (early fusion) is the exam
    logits. Targets below 0 are unknown and masked out. Segmentation: Dice (MONAI ``DiceLoss``, sigmoid per region)
    plus BCE on the region channels.

    Args:
        task: ``"classification"`` or ``"segmentation"``.
        exam_weight: weight of the exam-level term.
        view_weight: weight of the per-view term (late fusion and single-view baselines train on it).
        breast_weight: weight of the per-breast term (joint fusion with ``breasts``).
        dice_weight: segmentation: weight of the Dice term (BCE has weight 1).

    Raises:
        SupervisedConfigError: unknown task or no positive weight.
    """

    def __init__(
        self,
        task: str = "classification",
        exam_weight: float = 1.0,
        view_weight: float = 0.0,
        breast_weight: float = 0.0,
        dice_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if task not in TASKS:
            raise SupervisedConfigError(f"task must be one of {TASKS}, got {task!r}", "FusionLoss")
        if task == "classification" and max(exam_weight, view_weight, breast_weight) <= 0:
            raise SupervisedConfigError("at least one of the loss weights must be positive", "FusionLoss")
        self.task = task
        self.exam_weight = float(exam_weight)
        self.view_weight = float(view_weight)
        self.breast_weight = float(breast_weight)
        self.dice = None
        if task == "segmentation":
            from monai.losses import DiceLoss

            self.dice = DiceLoss(sigmoid=True, smooth_nr=0.0, smooth_dr=1e-5, squared_pred=True)
            self.dice_weight = float(dice_weight)

    def _need(self, pred: Mapping[str, torch.Tensor], key: str, term: str) -> torch.Tensor:
        if key not in pred:
            raise SupervisedConfigError(
                f"the {term} term needs the network output {key!r}; the network returns {sorted(pred)}", "FusionLoss"
            )
        return pred[key]

    def forward(self, pred: torch.Tensor | Mapping[str, torch.Tensor], target: Any) -> torch.Tensor:
        """Compute the loss.

        Args:
            pred: the network output (tensor or dict).
            target: :class:`FusionPrepareBatch` targets.

        Returns:
            A scalar tensor.
        """
        if self.task == "segmentation":
            logits = pred if isinstance(pred, torch.Tensor) else pred["logits"]
            target = target.to(logits.dtype)
            return self.dice_weight * self.dice(logits, target) + F.binary_cross_entropy_with_logits(logits, target)
        out = {"logits": pred} if isinstance(pred, torch.Tensor) else pred
        label = target["label"]
        total = torch.zeros((), device=label.device)
        if self.exam_weight > 0:
            logits = self._need(out, "logits", "exam")[:, 0]
            total = total + self.exam_weight * _masked_bce(logits, label, label >= 0)
        if self.view_weight > 0:
            view_logits = self._need(out, "view_logits", "view")[..., 0]
            present = self._need(out, "presence", "view") > 0
            view_target = target.get("view")
            if view_target is None:
                view_target = label.unsqueeze(1).expand_as(view_logits)
            total = total + self.view_weight * _masked_bce(view_logits, view_target, present & (view_target >= 0))
        if self.breast_weight > 0 and "breast" in target:
            breast_logits = self._need(out, "breast_logits", "breast")[..., 0]
            present = self._need(out, "breast_presence", "breast") > 0
            breast_target = target["breast"]
            total = total + self.breast_weight * _masked_bce(
                breast_logits, breast_target, present & (breast_target >= 0)
            )
        return total


def exam_probabilities(pred: torch.Tensor | Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The exam-level probability of the positive class from any fusion output.

    Late fusion's ``probs`` (the mean of the present views' probabilities) is used when present; otherwise the
    sigmoid of the exam ``logits``.

    Args:
        pred: network output (tensor of logits ``(B, 1)`` or a dict).

    Returns:
        ``(B,)`` probabilities (NaN for an exam with no usable view).
    """
    if isinstance(pred, torch.Tensor):
        return torch.sigmoid(pred[:, 0].float())
    if "probs" in pred:
        return pred["probs"][:, 0].float()
    return torch.sigmoid(pred["logits"][:, 0].float())


# --------------------------------------------------------------------------------------------------------- results
@dataclass
class Predictions:
    """Per-case outputs of :func:`predict` (keys only, no paths).

    Attributes:
        case_keys: ``case_key`` of each case.
        patient_keys: ``patient_key`` of each case.
        labels: classification: ``(n,)`` labels; segmentation: per-case label maps.
        outputs: classification: ``(n,)`` probabilities (NaN when the network saw no usable view); segmentation:
            per-case predicted label maps.
        n_views: classification: views (or sequences) the network used per case.
        spacings: segmentation: per-case voxel spacing (mm), when the batches carry ``spacing``.
        loss: mean loss over the cases (NaN without a loss function or targets).
    """

    case_keys: list[str]
    patient_keys: list[str]
    labels: Any
    outputs: Any
    n_views: np.ndarray | None = None
    spacings: list[Any] | None = None
    loss: float = math.nan


@dataclass
class TrainingResult:
    """What :func:`train_supervised` did.

    Attributes:
        best_epoch: the epoch (1-based) whose weights were kept.
        best_score: its validation score.
        selection: what the score is (``val_auroc``, ``val_loss`` negated, ``val_dice``).
        epochs_run: epochs trained (fewer than asked after an early stop).
        history: one dict per epoch: ``epoch``, ``train_loss``, ``val_loss``, ``val_score``.
        val_predictions: the validation predictions of the kept weights.
    """

    best_epoch: int
    best_score: float
    selection: str
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)
    val_predictions: Predictions | None = None


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` (or None): CUDA when available, else the CPU; anything else as given."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _loader(data: Any, batch_size: int, shuffle: bool, seed: int, num_workers: int) -> Any:
    from monai.data import DataLoader

    generator = torch.Generator().manual_seed(int(seed))
    return DataLoader(
        data, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, generator=generator, drop_last=False
    )


def _progress(iterable: Any, enabled: bool, **kwargs: Any) -> Any:
    if not enabled:
        return iterable
    from monai.utils import optional_import

    tqdm, has_tqdm = optional_import("tqdm", name="tqdm")
    return tqdm(iterable, **kwargs) if has_tqdm else iterable


def _as_list(value: Any, n: int, name: str) -> list[str]:
    if value is None:
        return [""] * n
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    return [str(v) for v in value]


@torch.no_grad()
def predict(
    model: nn.Module,
    data: Any,
    prepare_batch: FusionPrepareBatch,
    *,
    loss_function: Callable[..., torch.Tensor] | None = None,
    batch_size: int = 8,
    device: str | torch.device | None = "auto",
    num_workers: int = 0,
    threshold: float = 0.5,
    progress: bool = False,
    desc: str = "predict",
) -> Predictions:
    """Run a model over a dataset in eval mode and collect per-case outputs.

    Args:
        model: the network.
        data: a dataset of transformed items (each with ``case_key`` and ``patient_key``).
        prepare_batch: how batches become inputs and targets.
        loss_function: also average this loss over the data.
        batch_size: batch size.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` ...
        num_workers: DataLoader workers.
        threshold: segmentation: probability threshold of the region masks.
        progress: show a progress bar.
        desc: its label.

    Returns:
        The :class:`Predictions`.
    """
    device = resolve_device(device)
    model.eval().to(device)
    segmentation = prepare_batch.task == "segmentation"
    case_keys: list[str] = []
    patient_keys: list[str] = []
    labels: list[Any] = []
    outputs: list[Any] = []
    n_views: list[np.ndarray] = []
    spacings: list[Any] = []
    total_loss, total_n = 0.0, 0
    loader = _loader(data, batch_size, False, 0, num_workers)
    for batch in _progress(loader, progress, desc=desc, leave=False):
        inputs, targets, args, kwargs = prepare_batch(batch, device)
        pred = model(inputs, *args, **kwargs)
        n = len(batch["case_key"])
        case_keys += _as_list(batch.get("case_key"), n, "case_key")
        patient_keys += _as_list(batch.get("patient_key"), n, "patient_key")
        if loss_function is not None and targets is not None:
            total_loss += float(loss_function(pred, targets)) * n
            total_n += n
        if segmentation:
            logits = pred if isinstance(pred, torch.Tensor) else pred["logits"]
            masks = (torch.sigmoid(logits.float()) >= threshold).cpu().numpy()
            label_maps = batch[prepare_batch.label_key]
            regions = prepare_batch.regions or {}
            for i in range(n):
                outputs.append(regions_to_label_map(masks[i], regions))
                label_map = torch.as_tensor(label_maps[i]).cpu().numpy()
                labels.append(label_map[0] if label_map.ndim == masks.ndim - 1 else label_map)
            if "spacing" in batch:
                spacings += [np.asarray(torch.as_tensor(s).cpu()) for s in batch["spacing"]]
            continue
        outputs.append(exam_probabilities(pred).cpu().numpy())
        if targets is not None:
            labels.append(targets["label"].cpu().numpy())
        if isinstance(pred, Mapping) and "presence" in pred:
            n_views.append(pred["presence"].sum(1).cpu().numpy())
        elif args:
            n_views.append(args[0].sum(1).cpu().numpy())
        else:
            n_views.append(np.full(n, np.nan))
    loss = total_loss / total_n if total_n else math.nan
    if segmentation:
        return Predictions(case_keys, patient_keys, labels, outputs, spacings=spacings or None, loss=loss)
    return Predictions(
        case_keys,
        patient_keys,
        np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64),
        np.concatenate(outputs).astype(np.float64) if outputs else np.zeros(0),
        n_views=np.concatenate(n_views) if n_views else None,
        loss=loss,
    )


def selection_score(
    predictions: Predictions, task: str = "classification", regions: Mapping[str, Sequence[int]] | None = None
) -> tuple[float, str]:
    """The validation score that chooses the epoch to keep (higher is better).

    This is the only place where model selection looks at data; the callers give it validation predictions only
    (the tests check that no test case ever reaches it).

    Args:
        predictions: validation predictions.
        task: ``"classification"`` or ``"segmentation"``.
        regions: segmentation: ``{region: labels}`` of the Dice.

    Returns:
        ``(score, name)``: the AUROC (``val_auroc``), or minus the loss (``val_loss``) when the AUROC is undefined
        (one class, or no finite probability); segmentation: the mean Dice over regions and cases (``val_dice``).
    """
    if task == "segmentation":
        from medssl.eval.metrics import dice_per_region

        values = []
        for pred, label in zip(predictions.outputs, predictions.labels):
            values += list(dice_per_region(pred, label, regions or {}).values())
        return (float(np.nanmean(values)) if values else math.nan), "val_dice"
    from medssl.eval.metrics import auroc

    labels = np.asarray(predictions.labels)
    probs = np.asarray(predictions.outputs, dtype=np.float64)
    usable = np.isfinite(probs) & (labels >= 0)
    if usable.any() and len(np.unique(labels[usable])) == 2:
        return auroc(labels[usable], probs[usable]), "val_auroc"
    return -float(predictions.loss), "val_loss"


def _lower(loss: float, best_loss: float) -> bool:
    """Whether ``loss`` is finite and below ``best_loss`` (any finite loss beats NaN)."""
    return math.isfinite(loss) and (not math.isfinite(best_loss) or loss < best_loss)


def _set_seed(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train_supervised(
    model: nn.Module,
    train_data: Any,
    val_data: Any,
    prepare_batch: FusionPrepareBatch,
    loss_function: Callable[..., torch.Tensor],
    *,
    epochs: int = 10,
    batch_size: int = 8,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    patience: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = "auto",
    num_workers: int = 0,
    progress: bool = True,
    tracker: Any | None = None,
    tag: str = "",
    checkpoint_path: str | os.PathLike | None = None,
) -> TrainingResult:
    """Train a fusion network, choosing the epoch on validation data only, and leave the chosen weights loaded.

    Args:
        model: the network (trained in place; the best epoch's weights are loaded at the end).
        train_data: training dataset (random augmentation belongs in its transform).
        val_data: validation dataset (patients not in the training data, not in the test data).
        prepare_batch: :class:`FusionPrepareBatch`.
        loss_function: :class:`FusionLoss` (or any ``loss(pred, targets)``).
        epochs: maximum epochs.
        batch_size: batch size.
        lr: AdamW learning rate (cosine-annealed to 0 over ``epochs``).
        weight_decay: AdamW weight decay.
        patience: stop after this many epochs without a better validation score (None: never).
        seed: seed of the shuffling, dropout and initial state of the loop.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` ...
        num_workers: DataLoader workers.
        progress: show progress bars.
        tracker: a :class:`medssl.engines.tracking.Tracker` (``log_metrics(dict, step)``), or None.
        tag: prefix of the tracked metric names and of the progress bars (``"fold0/joint"``).
        checkpoint_path: save the chosen weights there (``state_dict`` only; load with ``weights_only=True``).

    Returns:
        The :class:`TrainingResult`.

    Raises:
        SupervisedConfigError: ``epochs`` or ``batch_size`` below 1, or an empty dataset.
    """
    if epochs < 1 or batch_size < 1:
        raise SupervisedConfigError(f"epochs and batch_size must be >= 1, got {epochs} and {batch_size}", tag or None)
    if len(train_data) == 0 or len(val_data) == 0:
        raise SupervisedConfigError(
            f"empty data: {len(train_data)} training and {len(val_data)} validation cases", tag or None
        )
    device = resolve_device(device)
    _set_seed(seed)
    model.to(device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    loader = _loader(train_data, batch_size, True, seed, num_workers)
    task = prepare_batch.task
    best_state: dict[str, torch.Tensor] | None = None
    best = TrainingResult(best_epoch=0, best_score=-math.inf, selection="", epochs_run=0)
    best_loss = math.nan
    stale = 0
    prefix = f"{tag}/" if tag else ""
    for epoch in range(1, epochs + 1):
        model.train()
        running, seen = 0.0, 0
        bar = _progress(loader, progress, desc=f"{tag} epoch {epoch}/{epochs}".strip(), leave=False)
        for batch in bar:
            inputs, targets, args, kwargs = prepare_batch(batch, device)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_function(model(inputs, *args, **kwargs), targets)
            loss.backward()
            optimizer.step()
            n = len(batch["case_key"])
            running += float(loss.detach()) * n
            seen += n
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{running / seen:.4f}")
        scheduler.step()
        val = predict(
            model,
            val_data,
            prepare_batch,
            loss_function=loss_function,
            batch_size=batch_size,
            device=device,
            num_workers=num_workers,
        )
        score, name = selection_score(val, task, prepare_batch.regions)
        record = {"epoch": epoch, "train_loss": running / max(seen, 1), "val_loss": val.loss, "val_score": score}
        best.history.append(record)
        best.epochs_run = epoch
        if tracker is not None:
            tracker.log_metrics(
                {f"{prefix}train_loss": record["train_loss"], f"{prefix}val_loss": val.loss, f"{prefix}{name}": score},
                step=epoch,
            )
        # ties (a small validation split often has AUROC 1.0 for several epochs) go to the lower validation loss
        improved = math.isfinite(score) and (
            not math.isfinite(best.best_score)
            or score > best.best_score
            or (score == best.best_score and _lower(val.loss, best_loss))
        )
        if improved or best_state is None:
            best.best_epoch, best.best_score, best.selection = epoch, score, name
            best_loss = val.loss
            best.val_predictions = val
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in model.state_dict().items()})
            stale = 0
        else:
            stale += 1
        logger.info("%s epoch %d: train loss %.4f, %s %.4f", tag, epoch, record["train_loss"], name, score)
        if patience is not None and stale >= patience:
            logger.info("%s: no better %s for %d epochs, stopping", tag, name, patience)
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    if checkpoint_path is not None:
        from medssl.engines.checkpoint import atomic_torch_save

        atomic_torch_save(
            {"state_dict": best_state, "best_epoch": best.best_epoch, "selection": best.selection}, checkpoint_path
        )
    return best
