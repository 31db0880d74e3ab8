"""Compare fusion strategies on one cohort: patient-grouped K-fold cross-validation, folds x strategies.

:class:`FusionComparison` (and :func:`compare_fusion`, what ``medssl compare-fusion`` calls) takes a datalist or a
data folder in a supported layout and, for every fold and every strategy (early, joint and late fusion and
single-view baselines such as ``single:CC`` or ``single:T1C``):

1. the fold's training patients are split again, by patient, into training and an inner validation split;
2. the strategy's network (:func:`medssl.networks.fusion.build_fusion_model`, same backbone family, width or
   parameter budget) is trained with the same budget (epochs, optimiser, batch size) and the same seed
   (:func:`medssl.engines.supervised.train_supervised`); the epoch is chosen on the inner validation split;
3. the operating-point threshold is chosen on the inner validation split (:func:`select_operating_point`);
4. the test fold is predicted once, with the chosen weights and threshold.

The items are decoded and preprocessed once for all folds and strategies (MONAI ``CacheDataset`` holding the
deterministic transforms: loading, orientation, cropping, resizing, stacking, normalisation); random augmentation
runs on top of the cache. Items that fail to load are reported (``problems.csv``) and left out of every fold.

Outputs in ``out`` (see ``docs/fusion_comparison.md``): ``predictions.csv``, ``results.csv``, ``pairwise.csv``,
``report.md`` with PNG figures, ``splits.json``, ``config.json``, ``models.csv``, ``training.csv``,
``metrics.csv`` (training curves) and, on request, ``mlruns/`` (MLflow) and ``tensorboard/``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shlex
import sys
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Transform
from torch import nn

from medssl.exceptions import DatalistError, MedsslError
from medssl.log import get_logger

__all__ = [
    "CompareConfigError",
    "CompareConfig",
    "StrategySpec",
    "parse_strategy",
    "Cohort",
    "load_cohort",
    "build_transforms",
    "ReportFailures",
    "RecordSpacingd",
    "RecordSpacingD",
    "RecordSpacingDict",
    "ViewSubset",
    "build_strategy_model",
    "strategy_loss",
    "parse_operating_point",
    "select_operating_point",
    "make_folds",
    "ComparisonResult",
    "FusionComparison",
    "compare_fusion",
]

logger = get_logger(__name__)

_KINDS = ("early", "joint", "late", "single")
_DEFAULT_IMAGE_SIZE = {"mammo": [256, 192], "mr": [96, 96, 96]}
_DEFAULT_BACKBONE = {"classification": "resnet18", "segmentation": "segresnet"}
_CONFIG_EXTRA_KEYS = ("command", "versions", "format")
CONFIG_FORMAT = "medssl-compare-fusion-config"


class CompareConfigError(MedsslError):
    """A comparison's configuration is inconsistent (unknown strategy, view, task, operating point ...)."""


# ------------------------------------------------------------------------------------------------------------ config
@dataclass
class CompareConfig:
    """Everything a fusion comparison depends on; ``config.json`` is this, plus the command line and versions.

    Attributes:
        source: a medssl datalist (JSON) or a data folder in a layout of ``medssl datalist`` (``vindr-mammo``,
            ``brats`` ...).
        out: the output folder.
        layout: the folder's layout (detected from its files when None).
        layout_options: keyword arguments of the layout's ``build`` (``birads_threshold``, ``case_labels`` ...).
        splits: the datalist splits pooled into the cohort (default: all of them; folds are drawn anew).
        task: ``classification`` (binary) or ``segmentation`` (regions of a label map).
        label_key: item key of the label (classification: 0/1, e.g. ``label`` or ``tumour``; segmentation: the
            label map).
        modality: ``mammo`` (view-keyed 2D exams), ``mr`` (stacked 3D sequences) or ``auto`` (from the datalist).
        views: the views or sequences, in the networks' input order (default: the datalist's ``view_names`` or
            ``channel_def``).
        strategies: ``early``, ``joint``, ``late`` and ``single:<view or projection>`` baselines.
        folds: K of the cross-validation.
        val_fraction: share of each training fold's patients in the inner validation split.
        stratify: item key to stratify folds and validation splits on; ``auto``: the label (classification).
        epochs: training epochs (every strategy the same).
        batch_size: batch size.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        patience: early stopping after this many epochs without a better validation score (None: off).
        seed: the seed of folds, splits, initialisation, shuffling and augmentation (per fold, the same for every
            strategy).
        backbone: backbone name (default ``resnet18`` for classification, ``segresnet`` for segmentation).
        backbone_kwargs: arguments of the MONAI backbone.
        width: base-width multiplier of every backbone.
        param_budget: fit every strategy's width to at most this many parameters (None: same ``width``).
        strategy_options: per strategy kind or name, arguments of the fusion network (``{"joint": {"pooling":
            "attention"}}``).
        image_size: ``[H, W]`` (mammography) or ``[D, H, W]`` (MR); one number for a square/cube.
        augment: random flips and intensity scaling in training.
        missing: missing-view policy of the mammography transforms (``zeros`` with presence masks).
        use_breast_labels: mammography: train per-view and per-breast outputs on the breast labels of the
            datalist (``label_L``/``label_R``) rather than the exam label.
        operating_point: ``youden``, ``closest``, ``sensitivity=0.9``, ``specificity=0.9`` or ``fixed=0.5``.
        n_boot: bootstrap resamples of the CIs.
        alpha: one minus the confidence level.
        tracking: extra tracking backends: ``mlflow`` (local file store ``out/mlruns`` unless ``mlflow_uri``),
            ``tensorboard``; ``metrics.csv`` is always written.
        mlflow_uri: MLflow tracking URI.
        device: ``auto``, ``cpu``, ``cuda`` ...
        num_workers: DataLoader workers.
        threads: torch CPU threads during the run (None: torch's default; 1 is often fastest on a shared machine).
        cache_workers: threads filling the cache (0: MONAI's default).
        save_models: save each fold's chosen weights under ``out/models``.
        progress: progress bars and one line per fold and strategy on standard error.
        salt: key salt for a data folder (default ``$MEDSSL_SALT``).
        regions: segmentation regions ``{name: labels}`` (default: the datalist's ``label_regions``).
    """

    source: str = ""
    out: str = "compare_fusion"
    layout: str | None = None
    layout_options: dict[str, Any] = field(default_factory=dict)
    splits: list[str] | None = None
    task: str = "classification"
    label_key: str = "label"
    modality: str = "auto"
    views: list[str] | None = None
    strategies: list[str] = field(default_factory=lambda: ["early", "joint", "late"])
    folds: int = 5
    val_fraction: float = 0.2
    stratify: str | None = "auto"
    epochs: int = 20
    batch_size: int = 8
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int | None = None
    seed: int = 0
    backbone: str | None = None
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    width: float = 1.0
    param_budget: int | None = None
    strategy_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    image_size: list[int] | None = None
    augment: bool = True
    missing: str = "zeros"
    use_breast_labels: bool = True
    operating_point: str = "youden"
    n_boot: int = 1000
    alpha: float = 0.05
    tracking: list[str] = field(default_factory=list)
    mlflow_uri: str | None = None
    device: str = "auto"
    num_workers: int = 0
    threads: int | None = None
    cache_workers: int = 0
    save_models: bool = False
    progress: bool = True
    salt: str | None = None
    regions: dict[str, list[int]] | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CompareConfig:
        """Build from a mapping (``config.json``); ``command``, ``versions`` and ``format`` are ignored.

        Raises:
            CompareConfigError: unknown keys.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names - set(_CONFIG_EXTRA_KEYS))
        if unknown:
            raise CompareConfigError(f"unknown configuration keys {unknown}; known: {sorted(names)}")
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        """The configuration as JSON-ready values."""
        return json.loads(json.dumps(dataclasses.asdict(self), default=str))

    def validate(self) -> None:
        """Check the values that do not need the data.

        Raises:
            CompareConfigError: the first inconsistency found.
        """
        where = "compare-fusion config"
        if not self.source:
            raise CompareConfigError("no source: give a datalist JSON or a data folder", where)
        if self.task not in ("classification", "segmentation"):
            raise CompareConfigError(f"task must be classification or segmentation, got {self.task!r}", where)
        if self.modality not in ("auto", "mammo", "mr"):
            raise CompareConfigError(f"modality must be auto, mammo or mr, got {self.modality!r}", where)
        if not self.strategies:
            raise CompareConfigError("no strategy to compare", where)
        if len(set(self.strategies)) != len(self.strategies):
            raise CompareConfigError(f"a strategy is listed twice: {self.strategies}", where)
        if self.folds < 2:
            raise CompareConfigError(f"folds must be at least 2, got {self.folds}", where)
        if not 0.0 < self.val_fraction < 1.0:
            raise CompareConfigError(f"val_fraction must be in (0, 1), got {self.val_fraction}", where)
        if self.epochs < 1 or self.batch_size < 1:
            raise CompareConfigError("epochs and batch_size must be at least 1", where)
        if self.n_boot < 1:
            raise CompareConfigError(f"n_boot must be at least 1, got {self.n_boot}", where)
        unknown = [t for t in self.tracking if t not in ("mlflow", "tensorboard")]
        if unknown:
            raise CompareConfigError(f"unknown tracking backends {unknown}: use mlflow and/or tensorboard", where)
        parse_operating_point(self.operating_point)


# -------------------------------------------------------------------------------------------------------- strategies
@dataclass(frozen=True)
class StrategySpec:
    """One strategy of a comparison.

    Attributes:
        name: as given (``"joint"``, ``"single:CC"``).
        kind: ``early``, ``joint``, ``late`` or ``single``.
        views_used: the views a single-view baseline looks at (None: all).
    """

    name: str
    kind: str
    views_used: tuple[str, ...] | None = None


def parse_strategy(text: str, view_names: Sequence[str]) -> StrategySpec:
    """Parse ``early``, ``joint``, ``late`` or ``single:<what>``.

    ``<what>`` is a view (``L-CC``, ``T1C``), a projection (``CC``: ``L-CC`` and ``R-CC`` with one shared trunk) or a
    laterality (``L``: ``L-CC`` and ``L-MLO``).

    Args:
        text: the strategy.
        view_names: the views of the cohort.

    Returns:
        The :class:`StrategySpec`.

    Raises:
        CompareConfigError: unknown strategy, or a single-view target matching no view.
    """
    text = str(text).strip()
    if text in ("early", "joint", "late"):
        return StrategySpec(text, text)
    head, _, what = text.partition(":")
    if head not in ("single", "single_view") or not what:
        raise CompareConfigError(
            f"unknown strategy {text!r}: use early, joint, late or single:<view> (single:CC, single:L-CC, single:T1C)"
        )
    views = [str(v) for v in view_names]
    if what in views:
        used = [what]
    else:
        used = [v for v in views if "-" in v and what in v.split("-", 1)]
    if not used:
        raise CompareConfigError(f"strategy {text!r}: {what!r} is no view, projection or laterality of {views}")
    return StrategySpec(text, "single", tuple(used))


# ------------------------------------------------------------------------------------------------------------ cohort
@dataclass
class Cohort:
    """The cases of a comparison, before any loading of images.

    Attributes:
        items: datalist items (paths resolved).
        metadata: the datalist's metadata (``view_names``, ``channel_def``, ``label_regions`` ...).
        problems: cases skipped by the layout adapter (``case``, ``problem``, ``action``).
        modality: ``mammo`` or ``mr``.
        view_names: views / sequences in input order.
    """

    items: list[dict[str, Any]]
    metadata: dict[str, Any]
    problems: list[dict[str, Any]]
    modality: str
    view_names: list[str]

    @property
    def spatial_dims(self) -> int:
        """2 for mammography exams, 3 for MR studies."""
        return 2 if self.modality == "mammo" else 3


def _detect_layout(folder: Path) -> str:
    if (folder / "breast-level_annotations.csv").is_file():
        return "vindr-mammo"
    if (folder / "case_labels.csv").is_file() or any(folder.glob("*/*seg.nii*")):
        return "brats"
    raise CompareConfigError(
        "cannot tell the layout of this folder: give --layout (see `medssl datalist --help`) or a datalist JSON",
        folder,
    )


def load_cohort(
    source: str | os.PathLike,
    layout: str | None = None,
    layout_options: Mapping[str, Any] | None = None,
    splits: Sequence[str] | None = None,
    modality: str = "auto",
    views: Sequence[str] | None = None,
    salt: str | None = None,
) -> Cohort:
    """Read the cases of a datalist (all or some splits pooled) or of a data folder in a supported layout.

    Args:
        source: datalist JSON or data folder.
        layout: the folder's layout (detected when None).
        layout_options: keyword arguments of the layout's ``build``.
        splits: datalist splits to pool (default all present).
        modality: ``mammo``, ``mr`` or ``auto``.
        views: views / sequences in input order (default from the metadata).
        salt: key salt for a folder.

    Returns:
        The :class:`Cohort`.

    Raises:
        CompareConfigError: unknown layout, modality or views.
        DatalistError: an invalid datalist.
    """
    from medssl.data.datalist import SPLITS, load_datalist, read_datalist

    source = Path(source)
    problems: list[dict[str, Any]] = []
    if source.is_file():
        data = read_datalist(source)
        chosen = list(splits) if splits else [s for s in SPLITS if s in data]
        absent = [s for s in chosen if s not in data]
        if absent:
            raise DatalistError(f"no split {absent} (has {[s for s in SPLITS if s in data]})", source)
        items = [dict(item) for s in chosen for item in load_datalist(source, s)]
        metadata = {k: v for k, v in data.items() if k not in SPLITS}
    elif source.is_dir():
        from medssl.cli.datalist import discover_layouts

        name = layout or _detect_layout(source)
        layouts = discover_layouts()
        if name not in layouts:
            raise CompareConfigError(f"unknown layout {name!r}; known: {sorted(layouts)}", source)
        items, metadata, problems = layouts[name].build(source, salt=salt, base_dir=None, **dict(layout_options or {}))
        metadata = dict(metadata)
    else:
        raise DatalistError("no such datalist or folder", source)
    if not items:
        raise DatalistError("no case to compare", source)

    if modality == "auto":
        named = metadata.get("view_names") or metadata.get("image_keys") or []
        modality = "mammo" if named and all("-" in str(v) for v in named) else "mr"
    if views:
        view_names = [str(v) for v in views]
    elif modality == "mammo":
        view_names = [str(v) for v in (metadata.get("view_names") or metadata.get("image_keys") or [])]
        if not view_names:
            from medssl.data.mammo import STANDARD_VIEWS

            view_names = list(STANDARD_VIEWS)
    else:
        channel_def = metadata.get("channel_def") or {}
        view_names = [str(channel_def[k]) for k in sorted(channel_def, key=int)] if channel_def else []
        view_names = view_names or [str(v) for v in metadata.get("image_keys") or []]
    if not view_names:
        raise CompareConfigError("no view or sequence names: give views (--views T1,T1C,T2,FLAIR)", source)
    return Cohort(items, metadata, problems, modality, view_names)


# -------------------------------------------------------------------------------------------------------- transforms
class RecordSpacingd(MapTransform):
    """Put the voxel spacing (mm, from the image's affine after resizing) into the item, for HD95.

    Args:
        keys: the image key (the first key is used).
        spacing_key: where the ``(spatial_dims,)`` spacing goes.
        allow_missing_keys: skip items without the image.
    """

    def __init__(self, keys: KeysCollection = "image", spacing_key: str = "spacing", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.spacing_key = spacing_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Record the spacing (1 mm per axis when the image carries no affine)."""
        d = dict(data)
        for key in self.key_iterator(d):
            image = d[key]
            dims = image.dim() - 1
            affine = getattr(image, "affine", None)
            if affine is None:
                d[self.spacing_key] = torch.ones(dims)
            else:
                affine = torch.as_tensor(affine, dtype=torch.float64)
                d[self.spacing_key] = torch.sqrt((affine[:dims, :dims] ** 2).sum(0)).float()
            break
        return d


RecordSpacingD = RecordSpacingDict = RecordSpacingd


class ReportFailures(Transform):
    """Run a transform; when the item cannot be used, return a marker instead of raising (batch jobs skip).

    A MONAI ``Transform`` (not a plain callable) so that ``CacheDataset`` caches its output: MONAI treats any
    callable that is not a ``Transform`` like a random transform and re-runs it on every access.

    The marker is ``{"case_key", "patient_key", "_failed": problem}``; only medssl errors (missing file, unreadable
    DICOM, broken geometry, missing view ...) and ``OSError`` are caught, anything else is a bug and propagates. The
    problem text names the error and its message without the file path (paths can hold identifiers).

    Args:
        transform: the deterministic transform chain.
    """

    def __init__(self, transform: Callable[[Any], Any]) -> None:
        self.transform = transform

    def __call__(self, data: Mapping[Hashable, Any]) -> Any:
        """Apply the transform or return the failure marker."""
        from medssl.transforms.array import find_medssl_error

        try:
            return self.transform(data)
        except Exception as error:  # noqa: BLE001 - filtered just below, the rest re-raised
            cause = find_medssl_error(error)
            chain, os_error = error, None
            while chain is not None and os_error is None:
                os_error = chain if isinstance(chain, OSError) else None
                chain = chain.__cause__ or chain.__context__
            if cause is None and os_error is None:
                raise
            problem = f"{type(cause).__name__}: {cause.problem}" if cause is not None else f"{type(os_error).__name__}"
            return {"case_key": data.get("case_key"), "patient_key": data.get("patient_key"), "_failed": problem}


def build_transforms(
    modality: str,
    view_names: Sequence[str],
    image_size: Sequence[int],
    task: str = "classification",
    label_key: str = "label",
    extra_keys: Sequence[str] = (),
    augment: bool = True,
    missing: str = "zeros",
    salt: str | None = None,
) -> tuple[Any, Any | None]:
    """The deterministic (cached) and random (training only) transforms of a comparison.

    Mammography: :func:`medssl.transforms.mammo.mammo_exam_transforms` (load, orient, crop, resize keeping the
    aspect ratio, fill missing views with a presence mask). MR: :func:`medssl.transforms.mr.mr_stack_transforms`
    (load, resample onto the first sequence's grid, stack with a presence mask), resize to ``image_size``, per-channel
    z-score normalisation inside the head, spacing recorded. Both end with plain tensors and only the keys used.
    Augmentation: flips (all views together, so CC and MLO stay consistent) and intensity scaling.

    Args:
        modality: ``mammo`` or ``mr``.
        view_names: views / sequences in input order.
        image_size: ``[H, W]`` or ``[D, H, W]``.
        task: ``classification`` or ``segmentation``.
        label_key: the label (label map for segmentation).
        extra_keys: further item keys to keep (breast labels).
        augment: build the random part.
        missing: mammography missing-view policy.
        salt: key salt for DICOM metadata.

    Returns:
        ``(deterministic, random or None)``.
    """
    from monai.transforms import (
        Compose,
        EnsureTyped,
        NormalizeIntensityd,
        RandFlipd,
        RandScaleIntensityd,
        Resized,
        SelectItemsd,
    )

    views = [str(v) for v in view_names]
    keep = ["case_key", "patient_key", label_key, *extra_keys]
    if modality == "mammo":
        from medssl.transforms.mammo import mammo_exam_transforms

        size = list(image_size)
        deterministic = Compose(
            [
                mammo_exam_transforms(image_size=size, views=views, missing=missing, salt=salt),
                SelectItemsd(keys=views + ["presence"] + keep, allow_missing_keys=True),
            ]
        )
        image_keys = views
        spatial_axes = [0]
    else:
        from medssl.transforms.mr import mr_stack_transforms

        segmentation = task == "segmentation"
        chain = [
            mr_stack_transforms(views, missing="zeros", label_key=label_key if segmentation else None, salt=salt),
            Resized(
                keys=["image", label_key] if segmentation else ["image"],
                spatial_size=list(image_size),
                mode=["trilinear", "nearest"] if segmentation else ["trilinear"],
            ),
            NormalizeIntensityd(keys="image", nonzero=True, channel_wise=True),
        ]
        if segmentation:
            chain.append(RecordSpacingd(keys="image", spacing_key="spacing"))
            keep.append("spacing")
        tensor_keys = ["image", "presence"] + ([label_key] if segmentation else [])
        chain += [
            EnsureTyped(keys=tensor_keys, data_type="tensor", track_meta=False),
            SelectItemsd(keys=["image", "presence"] + keep, allow_missing_keys=True),
        ]
        deterministic = Compose(chain)
        image_keys = ["image", label_key] if segmentation else ["image"]
        spatial_axes = [0, 1, 2]
    if not augment:
        return deterministic, None
    random_part = [RandFlipd(keys=image_keys, prob=0.5, spatial_axis=axis) for axis in spatial_axes]
    intensity_keys = views if modality == "mammo" else ["image"]
    random_part.append(RandScaleIntensityd(keys=intensity_keys, factors=0.1, prob=0.5))
    return deterministic, Compose(random_part)


# ------------------------------------------------------------------------------------------------------------ models
class ViewSubset(nn.Module):
    """Pass only the ``used`` views (their channels and presence columns) of the full input to ``network``.

    For segmentation baselines: an early-fusion network built on ``used`` alone, fed from the cohort's full input.

    Args:
        network: the network built for ``used``.
        view_names: the views of the full input, in order.
        used: the views kept, in the network's order.
        in_channels: channels per view.
    """

    def __init__(self, network: nn.Module, view_names: Sequence[str], used: Sequence[str], in_channels: int = 1):
        super().__init__()
        self.network = network
        self.view_names = [str(v) for v in view_names]
        self.used = [str(v) for v in used]
        unknown = [v for v in self.used if v not in self.view_names]
        if unknown:
            raise CompareConfigError(f"views {unknown} are not in {self.view_names}", "ViewSubset")
        index = [self.view_names.index(v) for v in self.used]
        channels = [i * in_channels + c for i in index for c in range(in_channels)]
        self.register_buffer("view_index", torch.tensor(index, dtype=torch.long), persistent=False)
        self.register_buffer("channel_index", torch.tensor(channels, dtype=torch.long), persistent=False)

    def forward(self, x: Any, presence: torch.Tensor | None = None) -> Any:
        """Select the used views, then run the network."""
        if isinstance(x, dict):
            x = {k: v for k, v in x.items() if k in self.used}
        else:
            x = x.index_select(1, self.channel_index)
        if presence is not None:
            presence = presence.index_select(1, self.view_index)
        return self.network(x, presence)


def _strategy_options(spec: StrategySpec, modality: str, task: str, config_options: Mapping[str, Any]) -> dict:
    options: dict[str, Any] = {}
    if task == "classification" and modality == "mammo":
        if spec.kind == "joint":
            options.update(share="projection", breasts="laterality")
        elif spec.kind == "late":
            options.update(share="projection")
    options.update(config_options.get(spec.kind, {}))
    options.update(config_options.get(spec.name, {}))
    return options


def build_strategy_model(
    spec: StrategySpec,
    view_names: Sequence[str],
    spatial_dims: int,
    *,
    task: str = "classification",
    num_classes: int = 1,
    modality: str = "mammo",
    backbone: str = "resnet18",
    backbone_kwargs: Mapping[str, Any] | None = None,
    width: float = 1.0,
    param_budget: int | None = None,
    strategy_options: Mapping[str, Mapping[str, Any]] | None = None,
) -> Any:
    """Build the network of one strategy with :func:`medssl.networks.fusion.build_fusion_model`.

    Defaults for mammography classification: joint fusion with one trunk per projection (``share="projection"``,
    CC and MLO trunks) and a breast head (``breasts="laterality"``); late fusion with one model per projection;
    single-view baselines one shared trunk (``share="all"``) over the views used. MR: one trunk per sequence. A
    segmentation comparison supports ``early`` and ``single:<sequence>`` (early fusion on those channels only).
    ``strategy_options`` overrides per kind or per name.

    Args:
        spec: the strategy.
        view_names: views / sequences of the input.
        spatial_dims: 2 or 3.
        task: ``classification`` or ``segmentation``.
        num_classes: outputs (1 for binary classification; regions for segmentation).
        modality: ``mammo`` or ``mr``.
        backbone: backbone name.
        backbone_kwargs: its arguments.
        width: base-width multiplier.
        param_budget: fit the width to this many parameters.
        strategy_options: ``{kind or name: {argument: value}}``.

    Returns:
        The network (``fusion_width`` set).

    Raises:
        CompareConfigError: joint or late fusion asked for a segmentation.
    """
    from medssl.networks.fusion import build_fusion_model

    options = _strategy_options(spec, modality, task, strategy_options or {})
    common = dict(
        spatial_dims=spatial_dims,
        num_classes=num_classes,
        backbone=backbone,
        backbone_kwargs=dict(backbone_kwargs or {}),
        width=width,
        param_budget=param_budget,
    )
    if task == "segmentation":
        if spec.kind not in ("early", "single"):
            raise CompareConfigError(f"segmentation compares early fusion and single:<sequence>, not {spec.name!r}")
        used = list(spec.views_used or view_names)
        network = build_fusion_model("early", used, task="segmentation", **common, **options)
        if spec.kind == "early":
            return network
        wrapped = ViewSubset(network, view_names, used)
        wrapped.fusion_width = network.fusion_width
        return wrapped
    if spec.kind == "single":
        options.setdefault("views_used", list(spec.views_used or []))
        return build_fusion_model("single_view", list(view_names), **common, **options)
    return build_fusion_model(spec.kind, list(view_names), **common, **options)


def strategy_loss(spec: StrategySpec, task: str, breast_labels: bool) -> Any:
    """The :class:`medssl.engines.supervised.FusionLoss` of a strategy.

    Early fusion: exam BCE. Joint fusion: exam BCE (+ breast BCE when the network has a breast head and the data
    breast labels). Late fusion and single-view baselines: per-view BCE (each view against its breast's label, or
    the exam label). Segmentation: Dice + BCE.
    """
    from medssl.engines.supervised import FusionLoss

    if task == "segmentation":
        return FusionLoss("segmentation")
    if spec.kind == "early":
        return FusionLoss(exam_weight=1.0)
    if spec.kind == "joint":
        return FusionLoss(exam_weight=1.0, breast_weight=1.0 if breast_labels else 0.0)
    return FusionLoss(exam_weight=0.0, view_weight=1.0)


def _describe(model: Any, spec: StrategySpec) -> str:
    inner = model.network if isinstance(model, ViewSubset) else model
    text = type(inner).__name__
    for attribute in ("groups",):
        groups = getattr(inner, attribute, None)
        if groups:
            text += " trunks " + "/".join(groups)
    if spec.views_used:
        text += " on " + "+".join(spec.views_used)
    return text


# -------------------------------------------------------------------------------------------------- operating point
def parse_operating_point(text: str) -> dict[str, Any]:
    """``youden`` | ``closest`` | ``sensitivity=0.9`` | ``specificity=0.9`` | ``fixed=0.5`` -> arguments.

    Returns:
        ``{"method": ...}``, ``{"sensitivity": x}``, ``{"specificity": x}`` or ``{"fixed": x}``.

    Raises:
        CompareConfigError: anything else.
    """
    text = str(text).strip().lower()
    if text in ("youden", "closest"):
        return {"method": text}
    name, _, value = text.partition("=")
    if name in ("sensitivity", "specificity", "fixed"):
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if 0.0 <= number <= 1.0:
            return {name: number}
    raise CompareConfigError(
        f"operating point {text!r}: use youden, closest, sensitivity=0.9, specificity=0.9 or fixed=0.5"
    )


def select_operating_point(case_keys: Sequence[str], labels: Any, probabilities: Any, rule: str = "youden") -> float:
    """Choose the decision threshold on validation predictions (never on test predictions).

    ``case_keys`` are not used to compute anything: they make the selection auditable (the tests check that no
    test case ever reaches this function).

    Args:
        case_keys: the validation cases.
        labels: their 0/1 labels.
        probabilities: their predicted probabilities.
        rule: see :func:`parse_operating_point`.

    Returns:
        The threshold (a case is positive when ``probability >= threshold``).

    Raises:
        UndefinedMetricError: the validation cases hold one class (for the rules that need both).
    """
    from medssl.eval.metrics import threshold_for

    arguments = parse_operating_point(rule)
    if "fixed" in arguments:
        return float(arguments["fixed"])
    labels = np.asarray(labels)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if len(case_keys) != labels.size:
        raise CompareConfigError(f"{len(case_keys)} case keys for {labels.size} labels", "select_operating_point")
    usable = np.isfinite(probabilities)
    return float(threshold_for(labels[usable], probabilities[usable], **arguments))


# ------------------------------------------------------------------------------------------------------------- folds
def make_folds(
    items: Sequence[Mapping[str, Any]], k: int, seed: int, val_fraction: float, stratify_key: str | None
) -> list[dict[str, list[int]]]:
    """Patient-grouped K folds, each with an inner validation split of its training patients.

    Args:
        items: the cohort's usable items.
        k: folds.
        seed: seed of the folds (fold ``f``'s validation split uses ``seed + f``).
        val_fraction: share of a training fold's patients in its validation split.
        stratify_key: item key to stratify on, or None.

    Returns:
        Per fold ``{"training": [...], "validation": [...], "test": [...]}`` item indices.
    """
    from medssl.data.splits import grouped_folds, split_by_patient

    index_of = {str(item["case_key"]): i for i, item in enumerate(items)}
    folds = []
    for fold, (train, test) in enumerate(grouped_folds(items, k, seed, stratify_key)):
        inner = split_by_patient([items[i] for i in train], val_fraction, 0.0, seed + fold, stratify_key)
        folds.append(
            {
                "training": sorted(index_of[str(i["case_key"])] for i in inner["training"]),
                "validation": sorted(index_of[str(i["case_key"])] for i in inner["validation"]),
                "test": sorted(int(i) for i in test),
            }
        )
    return folds


# --------------------------------------------------------------------------------------------------------- the run
@dataclass
class ComparisonResult:
    """What a comparison wrote and computed.

    Attributes:
        out: the output folder.
        predictions: the per-case predictions table.
        results: ``results.csv`` as a table.
        pairwise: ``pairwise.csv`` as a table.
        files: ``{name: path}`` of the files written.
        problems: cases left out.
    """

    out: Path
    predictions: pd.DataFrame
    results: pd.DataFrame
    pairwise: pd.DataFrame
    files: dict[str, Path]
    problems: list[dict[str, Any]]


def _binary(value: Any) -> int | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return int(number) if number in (0.0, 1.0) else None


def _versions() -> dict[str, str]:
    import monai
    import sklearn
    import torch

    import medssl

    return {
        "medssl": medssl.__version__,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "numpy": np.__version__,
        "scikit_learn": sklearn.__version__,
        "pandas": pd.__version__,
        "python": sys.version.split()[0],
    }


def _metric_name(text: str) -> str:
    """MLflow metric names allow letters, digits, ``_-./`` and spaces: ``single:CC`` -> ``single-CC``."""
    return "".join(c if c.isalnum() or c in "_-./ " else "-" for c in text)


class FusionComparison:
    """A fusion comparison, buildable from a config (``_target_``) and run with :meth:`run`.

    Args:
        config: a :class:`CompareConfig` or a mapping of its fields.
        options: fields overriding ``config``.

    Example:
        >>> FusionComparison(source="data/mammo", out="runs/cmp", strategies=["joint", "single:CC"],
        ...                  folds=5, epochs=10).run()  # doctest: +SKIP
    """

    def __init__(self, config: CompareConfig | Mapping[str, Any] | None = None, **options: Any) -> None:
        if config is None:
            config = CompareConfig()
        if not isinstance(config, CompareConfig):
            config = CompareConfig.from_dict(config)
        self.config = dataclasses.replace(config, **options) if options else config
        self.config.validate()

    # ------------------------------------------------------------------------------------------------ helpers
    def _echo(self, message: str) -> None:
        logger.info(message)
        if self.config.progress:
            print(message, file=sys.stderr, flush=True)

    def _usable_items(self, cohort: Cohort) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        cfg = self.config
        problems = [
            {"case_key": p.get("case_key", ""), "problem": str(p.get("problem", "")), "action": p.get("action", "")}
            for p in cohort.problems
            if p.get("action") == "skipped"
        ]
        items = []
        for item in cohort.items:
            if not item.get("case_key") or not item.get("patient_key"):
                raise DatalistError(f"an item lacks case_key/patient_key: {sorted(item)}", cfg.source)
            if cfg.task == "classification":
                label = _binary(item.get(cfg.label_key))
                if label is None:
                    problems.append(
                        {
                            "case_key": item["case_key"],
                            "problem": f"{cfg.label_key!r} is {item.get(cfg.label_key)!r}, not 0 or 1",
                            "action": "skipped",
                        }
                    )
                    continue
                item = {**item, cfg.label_key: label}
            elif cfg.label_key not in item:
                problems.append({"case_key": item["case_key"], "problem": f"no {cfg.label_key!r}", "action": "skipped"})
                continue
            items.append(item)
        return items, problems

    def _breast_label_keys(self, cohort: Cohort, items: Sequence[Mapping[str, Any]]) -> dict[str, str] | None:
        cfg = self.config
        mapping = cohort.metadata.get("breast_label_keys")
        if cohort.modality != "mammo" or cfg.task != "classification" or not cfg.use_breast_labels or not mapping:
            return None
        if cfg.label_key != "label" or not all(all(k in item for k in mapping.values()) for item in items):
            return None
        return {str(k): str(v) for k, v in mapping.items()}

    # ---------------------------------------------------------------------------------------------------- run
    def run(self, command: str | None = None) -> ComparisonResult:
        """Run every fold and strategy, write the predictions and the report.

        Args:
            command: the command line to record (default: this process's arguments).

        Returns:
            The :class:`ComparisonResult`.

        Raises:
            CompareConfigError: inconsistent configuration for these data.
            DatalistError: unreadable cohort or too few patients for the folds.
        """
        threads = torch.get_num_threads()
        if self.config.threads:
            torch.set_num_threads(int(self.config.threads))
        try:
            return self._run(command)
        finally:
            torch.set_num_threads(threads)

    def _run(self, command: str | None) -> ComparisonResult:
        from monai.data import CacheDataset, Dataset
        from torch.utils.data import Subset

        from medssl.data.datalist import check_no_patient_leak
        from medssl.engines.supervised import (
            FusionPrepareBatch,
            predict,
            resolve_device,
            train_supervised,
        )
        from medssl.engines.tracking import Tracker
        from medssl.eval.report import write_fusion_report
        from medssl.networks.profile import profile_model

        cfg = self.config
        started = time.time()
        command = command or " ".join(shlex.quote(a) for a in ["medssl", *sys.argv[1:]])
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        cohort = load_cohort(cfg.source, cfg.layout, cfg.layout_options, cfg.splits, cfg.modality, cfg.views, cfg.salt)
        views = cohort.view_names
        specs = [parse_strategy(s, views) for s in cfg.strategies]
        task = cfg.task
        regions = None
        if task == "segmentation":
            unsupported = [s.name for s in specs if s.kind not in ("early", "single")]
            if unsupported:
                raise CompareConfigError(
                    f"segmentation compares early fusion and single:<sequence>, not {unsupported}", cfg.source
                )
            if cohort.modality != "mr":
                raise CompareConfigError("segmentation comparisons need MR studies with a label map", cfg.source)
            regions = cfg.regions or cohort.metadata.get("label_regions")
            if not regions:
                raise CompareConfigError("no regions: the datalist has no label_regions; give regions", cfg.source)
            regions = {str(k): [int(v) for v in vs] for k, vs in regions.items()}
        image_size = list(cfg.image_size or _DEFAULT_IMAGE_SIZE[cohort.modality])
        if len(image_size) == 1:
            image_size = image_size * cohort.spatial_dims
        if len(image_size) != cohort.spatial_dims:
            raise CompareConfigError(f"image_size {image_size} is not {cohort.spatial_dims}-D", cfg.source)
        backbone = cfg.backbone or _DEFAULT_BACKBONE[task]

        items, problems = self._usable_items(cohort)
        breast_keys = self._breast_label_keys(cohort, items)
        extra = list(breast_keys.values()) if breast_keys else []
        deterministic, augmentation = build_transforms(
            cohort.modality, views, image_size, task, cfg.label_key, extra, cfg.augment, cfg.missing, cfg.salt
        )
        self._echo(f"compare-fusion: decoding and caching {len(items)} cases once for all folds and strategies")
        cache = CacheDataset(
            data=items,
            transform=ReportFailures(deterministic),
            cache_rate=1.0,
            num_workers=cfg.cache_workers or None,
            progress=cfg.progress,
        )
        usable: list[int] = []
        for index in range(len(items)):
            entry = cache[index]
            if "_failed" in entry:
                problems.append(
                    {"case_key": items[index]["case_key"], "problem": entry["_failed"], "action": "skipped"}
                )
            else:
                usable.append(index)
        if problems:
            pd.DataFrame(problems, columns=["case_key", "problem", "action"]).to_csv(out / "problems.csv", index=False)
            self._echo(f"compare-fusion: {len(problems)} cases left out (problems.csv)")
        usable_items = [items[i] for i in usable]
        stratify = cfg.label_key if cfg.stratify == "auto" and task == "classification" else None
        if cfg.stratify not in ("auto", None, ""):
            stratify = cfg.stratify
        folds = [
            {name: [usable[i] for i in split] for name, split in fold.items()}
            for fold in make_folds(usable_items, cfg.folds, cfg.seed, cfg.val_fraction, stratify)
        ]
        for fold in folds:
            check_no_patient_leak({name: [items[i] for i in split] for name, split in fold.items()})
        splits_record = {
            "parameters": {
                "folds": cfg.folds,
                "seed": cfg.seed,
                "val_fraction": cfg.val_fraction,
                "stratify_key": stratify,
                "n_cases": len(usable),
                "n_patients": len({items[i]["patient_key"] for i in usable}),
            },
            "folds": [
                {"fold": f, **{name: [str(items[i]["case_key"]) for i in split] for name, split in fold.items()}}
                for f, fold in enumerate(folds)
            ],
            "patients": {str(items[i]["case_key"]): str(items[i]["patient_key"]) for i in usable},
        }
        (out / "splits.json").write_text(json.dumps(splits_record, indent=1) + "\n")
        config_record = {
            "format": CONFIG_FORMAT,
            **cfg.to_dict(),
            "command": command,
            "versions": _versions(),
        }
        (out / "config.json").write_text(json.dumps(config_record, indent=2) + "\n")

        view_label_keys = None
        if breast_keys:
            view_label_keys = [breast_keys.get(v.split("-", 1)[0], cfg.label_key) for v in views]
        breast_label_keys = (
            [breast_keys[k] for k in dict.fromkeys(v.split("-", 1)[0] for v in views)] if breast_keys else None
        )
        prepare = FusionPrepareBatch(
            image_keys=views if cohort.modality == "mammo" else "image",
            presence_key="presence",
            label_key=cfg.label_key,
            task=task,
            view_label_keys=view_label_keys,
            breast_label_keys=breast_label_keys,
            regions=regions,
        )
        device = resolve_device(cfg.device)
        if "mlflow" in cfg.tracking and not cfg.mlflow_uri:
            # MLflow 3 keeps the local file store (out/mlruns) behind this opt-in; a server or database URI needs none.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        tracker = Tracker(
            out,
            backends=["csv", *cfg.tracking],
            mlflow_uri=cfg.mlflow_uri,
            mlflow_experiment="medssl-compare-fusion",
            run_name=out.name,
        )
        tracker.log_params({k: v for k, v in cfg.to_dict().items() if k not in ("source", "out", "salt")})
        rows: list[dict[str, Any]] = []
        training_rows: list[dict[str, Any]] = []
        model_rows: dict[str, dict[str, Any]] = {}
        notes: list[str] = []
        num_classes = len(regions) if regions else 1
        try:
            for f, fold in enumerate(folds):
                train_data = Subset(cache, fold["training"])
                if augmentation is not None:
                    train_data = Dataset(data=train_data, transform=augmentation)
                val_data = Subset(cache, fold["validation"])
                test_data = Subset(cache, fold["test"])
                prevalence = float(np.mean([items[i][cfg.label_key] for i in fold["training"]])) if not regions else 0
                for spec in specs:
                    seed = cfg.seed * 1000 + f  # the same for every strategy of this fold
                    torch.manual_seed(seed)
                    np.random.seed(seed % 2**32)
                    if augmentation is not None:
                        augmentation.set_random_state(seed=seed)
                    model = build_strategy_model(
                        spec,
                        views,
                        cohort.spatial_dims,
                        task=task,
                        num_classes=num_classes,
                        modality=cohort.modality,
                        backbone=backbone,
                        backbone_kwargs=cfg.backbone_kwargs,
                        width=cfg.width,
                        param_budget=cfg.param_budget,
                        strategy_options=cfg.strategy_options,
                    )
                    if spec.name not in model_rows:
                        model_rows[spec.name] = self._profile(model, spec, cache, fold["test"], prepare, profile_model)
                    tag = f"fold{f}/{_metric_name(spec.name)}"
                    began = time.time()
                    result = train_supervised(
                        model,
                        train_data,
                        val_data,
                        prepare,
                        strategy_loss(spec, task, breast_keys is not None),
                        epochs=cfg.epochs,
                        batch_size=cfg.batch_size,
                        lr=cfg.lr,
                        weight_decay=cfg.weight_decay,
                        patience=cfg.patience,
                        seed=seed,
                        device=device,
                        num_workers=cfg.num_workers,
                        progress=cfg.progress,
                        tracker=tracker,
                        tag=tag,
                        checkpoint_path=(
                            (out / "models" / f"fold{f}_{_metric_name(spec.name)}.pt") if cfg.save_models else None
                        ),
                    )
                    record = {
                        "fold": f,
                        "strategy": spec.name,
                        "best_epoch": result.best_epoch,
                        "epochs_run": result.epochs_run,
                        "selection": result.selection,
                        "val_score": result.best_score,
                    }
                    test = predict(model, test_data, prepare, batch_size=cfg.batch_size, device=device)
                    if regions:
                        rows += self._segmentation_rows(test, f, spec.name, regions)
                    else:
                        val = result.val_predictions
                        threshold, note = self._threshold(val, f, spec.name)
                        if note:
                            notes.append(note)
                        record["threshold"] = threshold
                        rows += self._classification_rows(test, f, spec.name, threshold, prevalence)
                    record["wall_s"] = time.time() - began
                    training_rows.append(record)
                    self._echo(
                        f"fold {f + 1}/{len(folds)} {spec.name}: epoch {result.best_epoch}/{result.epochs_run} kept "
                        f"({result.selection} {result.best_score:.3f}), {record['wall_s']:.1f} s"
                    )
            predictions = pd.DataFrame(rows)
            predictions.to_csv(out / "predictions.csv", index=False)
            training = pd.DataFrame(training_rows)
            training.to_csv(out / "training.csv", index=False)
            models = pd.DataFrame(list(model_rows.values()))
            models.to_csv(out / "models.csv", index=False)
            imputed = predictions.groupby("strategy")["imputed"].sum() if "imputed" in predictions else pd.Series()
            for name, count in imputed.items():
                if count:
                    notes.append(
                        f"{name}: {int(count)} test cases had none of the strategy's views; they were given the "
                        "training fold's prevalence as probability (`imputed` = 1 in predictions.csv)."
                    )
            files = write_fusion_report(
                out,
                predictions,
                task,
                n_boot=cfg.n_boot,
                alpha=cfg.alpha,
                seed=cfg.seed,
                title=f"Fusion strategy comparison ({cohort.metadata.get('name', cohort.modality)}, {task})",
                command=command,
                models=models,
                training=training,
                problems=pd.DataFrame(problems) if problems else None,
                notes=notes,
                operating_point=f"{cfg.operating_point}, chosen on each fold's inner validation split",
            )
            results = pd.read_csv(files["results"])
            pairwise = pd.read_csv(files["pairwise"])
            for r in results.to_dict("records"):
                tracker.log_metrics({f"{_metric_name(r['strategy'])}/{r['metric']}": r["value"]}, step=0)
        except BaseException:
            tracker.close("FAILED")
            raise
        tracker.close()
        files["predictions"] = out / "predictions.csv"
        files["splits"] = out / "splits.json"
        files["config"] = out / "config.json"
        self._echo(f"compare-fusion: wrote {out / 'report.md'} ({time.time() - started:.0f} s)")
        return ComparisonResult(out, predictions, results, pairwise, files, problems)

    def _profile(
        self, model: Any, spec: StrategySpec, cache: Any, indices: Sequence[int], prepare: Any, profile_model: Any
    ) -> dict[str, Any]:
        from monai.data import list_data_collate

        row = {
            "strategy": spec.name,
            "parameters": math.nan,
            "flops": math.nan,
            "width": float(getattr(model, "fusion_width", math.nan)),
            "description": _describe(model, spec),
        }
        if not indices:
            return row
        # FLOPs of a complete exam: networks skip absent views, so an exam with a missing view would count fewer
        complete = [i for i in indices if bool(torch.as_tensor(cache[i].get("presence", 1)).all())]
        batch = list_data_collate([cache[(complete or list(indices))[0]]])
        inputs, _, args, _ = prepare(batch, "cpu")
        was_training = model.training
        model.eval()
        try:
            row.update(profile_model(model, inputs, *args))
        finally:
            model.train(was_training)
        return row

    def _threshold(self, val: Any, fold: int, name: str) -> tuple[float, str | None]:
        from medssl.eval.metrics import UndefinedMetricError

        try:
            return select_operating_point(val.case_keys, val.labels, val.outputs, self.config.operating_point), None
        except UndefinedMetricError as error:
            return 0.5, f"fold {fold} {name}: no threshold could be chosen on validation ({error}); 0.5 used."

    @staticmethod
    def _classification_rows(test: Any, fold: int, name: str, threshold: float, prevalence: float) -> list[dict]:
        rows = []
        n_views = test.n_views if test.n_views is not None else np.full(len(test.case_keys), np.nan)
        for case, patient, label, prob, views in zip(
            test.case_keys, test.patient_keys, test.labels, test.outputs, n_views
        ):
            imputed = not math.isfinite(float(prob))
            prob = prevalence if imputed else float(prob)
            rows.append(
                {
                    "case_key": case,
                    "patient_key": patient,
                    "fold": fold,
                    "strategy": name,
                    "probability": prob,
                    "label": int(label),
                    "threshold": threshold,
                    "decision": int(prob >= threshold),
                    "n_views": float(views),
                    "imputed": int(imputed),
                }
            )
        return rows

    @staticmethod
    def _segmentation_rows(test: Any, fold: int, name: str, regions: Mapping[str, Sequence[int]]) -> list[dict]:
        from medssl.eval.metrics import segmentation_metrics

        metrics = segmentation_metrics(test.outputs, test.labels, regions, test.spacings, case_ids=test.case_keys)
        rows = []
        for i, (case, patient) in enumerate(zip(test.case_keys, test.patient_keys)):
            row = {"case_key": case, "patient_key": patient, "fold": fold, "strategy": name}
            row.update({k: float(v[i]) for k, v in metrics.items()})
            rows.append(row)
        return rows


def compare_fusion(config: CompareConfig | Mapping[str, Any] | None = None, **options: Any) -> ComparisonResult:
    """Run a fusion comparison (see :class:`FusionComparison` and :class:`CompareConfig`).

    Args:
        config: the configuration (or None).
        options: configuration fields.

    Returns:
        The :class:`ComparisonResult`.
    """
    return FusionComparison(config, **options).run()
