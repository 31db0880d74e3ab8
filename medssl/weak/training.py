"""Training image classifiers on weak labels from reports, and comparing them honestly with gold-label training.

Three pieces (see ``docs/weak_labels.md``):

**The noise-aware loss** (:class:`NoiseAwareBCELoss`). The label model gives, per image and observation, a
distribution over negative / positive / uncertain; :func:`medssl.weak.soft_targets` turns it into a target
``q in [0, 1]`` and a weight ``w in [0, 1]`` under an uncertainty policy (U-Ones ``q = P(pos) + P(unc)``, U-Zeros
``q = P(pos)``, ignore ``q = P(pos) / (P(pos) + P(neg))`` with ``w = 1 - P(unc)``; ``w = 0`` for observations
that are masked: no report, or not mentioned with ``blank="ignore"``). The loss is the weighted binary
cross-entropy with soft targets::

    L = sum_ij w_ij * [-q_ij log sigmoid(z_ij) - (1 - q_ij) log(1 - sigmoid(z_ij))] / sum_ij w_ij

Because the cross-entropy is linear in the target, ``BCE(z, q) = q BCE(z, 1) + (1 - q) BCE(z, 0)``: it is the
*expected* loss when the true label is drawn from the label model's distribution, the noise-aware objective of data
programming (Ratner et al. 2016). With 0/1 probabilities it is the ordinary BCE on hard labels; a masked element
(``w = 0``) contributes nothing to the loss nor to its gradient; normalising by ``sum w`` (not by the number of
elements) keeps the scale of a batch independent of how many of its labels are masked.

**Weak labels on datalist items** (:func:`attach_weak_labels`, :func:`write_weak_datalist`): a labels CSV written by
``medssl label-reports`` (or a :class:`~medssl.weak.WeakLabels`) is joined to the items on the study key (the
report of a study labels all its images) and written to the item's ``label`` / ``label_mask`` (targets and
weights, the layout's keys, so that a bundle trains on them unchanged) and per-observation keys. Items without a
label row (no report, an unusable report) are masked, never given made-up labels.

**The comparison** (:func:`run_weak_comparison`, ``medssl weak-train``): on a chest X-ray dataset (MIMIC-CXR-JPG
layout or a datalist) it labels the training reports, trains the same classifier on (a) the weak labels of every
training image, (b) the gold labels of a small subset of training patients, (c) optionally a pretrained encoder
(an exported encoders folder, or a short ConVIRT run of the pretraining engine) fine-tuned on the weak labels, and
(d) optionally the gold labels of every training image (the ceiling); all with the same initialisation seed and the
same number of optimizer steps, no model selection (the test split is touched once), and evaluates them on the
held-out gold labels of the test patients: per-observation AUROC with patient-level bootstrap CIs, macro AUROC,
paired differences. Observations with too few test positives are reported as such.

Why a loop of its own rather than :func:`medssl.engines.supervised.train_supervised`: that engine trains one
binary output per case and selects the epoch on a validation AUROC of that output; here there are several
observations with soft targets and per-element weights, and the comparison deliberately trains a fixed budget.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from medssl.data.reports import CHEXPERT_OBSERVATIONS
from medssl.exceptions import MedsslError
from medssl.log import get_logger
from medssl.weak.aggregate import (
    UNCERTAIN_POLICIES,
    WeakLabels,
    probs_from_chexpert,
    soft_targets,
    to_chexpert,
)

__all__ = [
    "WeakTrainingError",
    "BLANK_POLICIES",
    "MODELS",
    "DEFAULT_OBSERVATIONS",
    "NoiseAwareBCELoss",
    "weak_label_targets",
    "attach_weak_labels",
    "write_weak_datalist",
    "read_gold_labels",
    "MultiLabelClassifier",
    "build_classifier",
    "fit_classifier",
    "predict_probabilities",
    "evaluate_multilabel",
    "compare_multilabel",
    "WeakTrainingConfig",
    "WeakComparisonResult",
    "run_weak_comparison",
]

logger = get_logger(__name__)

BLANK_POLICIES = ("zeros", "ignore")
MODELS = ("weak", "weak-hard", "gold-subset", "gold-all", "pretrained-weak")
"""Models of the comparison: weak soft labels, weak hard labels (the label model's 1/0/-1 decisions), gold labels
of a subset of training patients, gold labels of every training image, a pretrained encoder fine-tuned on weak
labels."""

DEFAULT_OBSERVATIONS = ("Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Pleural Effusion")
"""CheXpert's five competition observations."""

_LAYOUT_PREFIX = "mimic-cxr"


class WeakTrainingError(MedsslError):
    """Weak labels cannot be attached or a weak-label comparison cannot run with the given inputs."""


# ----------------------------------------------------------------------------------------------------------------
# Loss
# ----------------------------------------------------------------------------------------------------------------


class NoiseAwareBCELoss(nn.Module):
    """Binary cross-entropy with soft targets and per-element weights (see the module docstring).

    Usable as a MONAI ``loss_function(pred, targets)``: ``targets`` may be a tensor (weights all 1) or a mapping
    ``{"target": ..., "weight": ...}``.

    Args:
        reduction: ``"mean"`` (sum of weighted losses / sum of weights), ``"sum"``, or ``"none"`` (the weighted
            element-wise losses).
        pos_weight: optional weight of the positive term per observation (``torch``'s ``pos_weight``).

    Raises:
        WeakTrainingError: unknown reduction.
    """

    def __init__(self, reduction: str = "mean", pos_weight: Sequence[float] | None = None) -> None:
        super().__init__()
        if reduction not in ("mean", "sum", "none"):
            raise WeakTrainingError(
                f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}", "NoiseAwareBCELoss"
            )
        self.reduction = reduction
        self.register_buffer(
            "pos_weight", None if pos_weight is None else torch.as_tensor(pos_weight, dtype=torch.float32)
        )

    def forward(
        self,
        logits: torch.Tensor,
        target: torch.Tensor | Mapping[str, torch.Tensor],
        weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Compute the loss.

        Args:
            logits: ``(B, K)`` logits.
            target: ``(B, K)`` targets in [0, 1] (NaN allowed where the weight is 0), or ``{"target", "weight"}``.
            weight: ``(B, K)`` weights in [0, 1] (None: all 1).

        Returns:
            The reduced loss (a scalar) or the ``(B, K)`` weighted losses.

        Raises:
            WeakTrainingError: shapes differ.
        """
        if isinstance(target, Mapping):
            weight = target.get("weight", weight)
            target = target["target"]
        target = torch.as_tensor(target, device=logits.device)
        if target.shape != logits.shape:
            raise WeakTrainingError(
                f"targets of shape {tuple(target.shape)} for logits of shape {tuple(logits.shape)}", "NoiseAwareBCELoss"
            )
        if weight is None:
            weight = torch.ones_like(logits)
        weight = torch.as_tensor(weight, device=logits.device).to(logits.dtype)
        if weight.shape != logits.shape:
            raise WeakTrainingError(
                f"weights of shape {tuple(weight.shape)} for logits of shape {tuple(logits.shape)}", "NoiseAwareBCELoss"
            )
        # A masked element may hold NaN (no label); zero it so that 0 * loss stays 0 and its gradient exactly 0.
        target = torch.where(weight > 0, torch.nan_to_num(target.to(logits.dtype), nan=0.0), torch.zeros_like(logits))
        losses = F.binary_cross_entropy_with_logits(
            logits, target.clamp(0.0, 1.0), reduction="none", pos_weight=self.pos_weight
        )
        losses = losses * weight
        if self.reduction == "none":
            return losses
        if self.reduction == "sum":
            return losses.sum()
        return losses.sum() / weight.sum().clamp_min(1e-8)


# ----------------------------------------------------------------------------------------------------------------
# Weak labels on items
# ----------------------------------------------------------------------------------------------------------------


def _observation_keys() -> dict[str, str]:
    from medssl.data.layouts.chexpert import OBSERVATION_KEYS

    return OBSERVATION_KEYS


def _check_observations(observations: Sequence[str] | None) -> list[str]:
    names = list(CHEXPERT_OBSERVATIONS if observations is None else observations)
    unknown = [o for o in names if o not in CHEXPERT_OBSERVATIONS]
    if unknown or not names:
        raise WeakTrainingError(f"unknown observations {unknown}; expected some of {list(CHEXPERT_OBSERVATIONS)}")
    return names


def _check_policy(policy: str, blank: str) -> None:
    if policy not in UNCERTAIN_POLICIES:
        raise WeakTrainingError(f"policy must be one of {UNCERTAIN_POLICIES}, got {policy!r}")
    if blank not in BLANK_POLICIES:
        raise WeakTrainingError(f"blank must be one of {BLANK_POLICIES}, got {blank!r}")


def _study_key_from_id(study_id: Any, salt: str | None, layout: str) -> str:
    from medssl.data.keys import Keyer

    return Keyer(salt, warn=False).study(f"{layout}:{int(float(study_id))}")


def _frame_probabilities(
    frame: pd.DataFrame, observations: Sequence[str], use: str, where: str
) -> tuple[np.ndarray, str]:
    """``(n, K, 3)`` probabilities from a labels table, and which columns they came from (probs or labels)."""
    prob_columns = [f"{o}_p_pos" for o in observations] + [f"{o}_p_unc" for o in observations]
    has_probs = all(c in frame.columns for c in prob_columns)
    if use == "probs" and not has_probs:
        missing = [c for c in prob_columns if c not in frame.columns][:3]
        raise WeakTrainingError(f"no probability columns (e.g. {missing}); use='labels' takes the 1/0/-1 labels", where)
    if use in ("probs", "auto") and has_probs:
        p_pos = frame[[f"{o}_p_pos" for o in observations]].to_numpy(dtype=np.float64)
        p_unc = frame[[f"{o}_p_unc" for o in observations]].to_numpy(dtype=np.float64)
        p_neg = np.clip(1.0 - p_pos - p_unc, 0.0, 1.0)
        probs = np.stack([p_neg, p_pos, p_unc], axis=-1)
        probs[np.isnan(p_pos) | np.isnan(p_unc)] = np.nan
        return probs, "probs"
    missing = [o for o in observations if o not in frame.columns]
    if missing:
        raise WeakTrainingError(f"no label column(s) {missing} (columns: {list(frame.columns)[:20]})", where)
    values = frame[list(observations)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isnan(values) & ~np.isin(values, (1.0, 0.0, -1.0))
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise WeakTrainingError(f"label {values[row, col]!r} of {observations[col]} is not 1, 0, -1 or blank", where)
    return probs_from_chexpert(values), "labels"


def _weak_table(
    labels: str | os.PathLike | pd.DataFrame | WeakLabels,
    observations: Sequence[str],
    use: str,
    on: str,
    salt: str | None,
    layout: str,
) -> tuple[list[str], str, np.ndarray, str, str]:
    """``(keys, key kind ('study' | 'case'), probs (n, K, 3), probability source, description)``."""
    if use not in ("auto", "probs", "labels"):
        raise WeakTrainingError(f"use must be 'auto', 'probs' or 'labels', got {use!r}")
    if on not in ("auto", "study", "case"):
        raise WeakTrainingError(f"on must be 'auto', 'study' or 'case', got {on!r}")
    if isinstance(labels, WeakLabels):
        missing = [o for o in observations if o not in labels.observations]
        if missing:
            raise WeakTrainingError(f"the weak labels have no {missing}", "WeakLabels")
        index = [labels.observations.index(o) for o in observations]
        if use == "labels":
            probs, source = probs_from_chexpert(to_chexpert(labels.labels[:, index])), "labels"
        else:
            probs, source = labels.probs[:, index], "probs"
        kind = "study" if on == "auto" else on
        return [str(k) for k in labels.keys], kind, probs, source, f"WeakLabels ({labels.method})"
    where = "DataFrame"
    if not isinstance(labels, pd.DataFrame):
        where = os.fspath(labels)
        if not Path(where).is_file():
            raise WeakTrainingError("no such labels file", where)
        try:
            labels = pd.read_csv(where)
        except (OSError, ValueError) as error:
            raise WeakTrainingError(f"cannot read the labels CSV: {error}", where) from error
    frame = labels.reset_index() if labels.index.name is not None else labels
    if on in ("auto", "study") and "study_key" in frame.columns:
        keys, kind = frame["study_key"].astype(str).tolist(), "study"
    elif on in ("auto", "study") and "study_id" in frame.columns:
        ids = pd.to_numeric(frame["study_id"], errors="coerce")
        if ids.isna().any():
            raise WeakTrainingError(f"study_id {frame['study_id'][ids.isna()].iloc[0]!r} is not a number", where)
        keys, kind = [_study_key_from_id(v, salt, layout) for v in ids], "study"
    elif on in ("auto", "case") and "case_key" in frame.columns:
        keys, kind = frame["case_key"].astype(str).tolist(), "case"
    else:
        wanted = {"auto": "study_key, study_id or case_key", "study": "study_key or study_id", "case": "case_key"}[on]
        raise WeakTrainingError(f"no key column to join on ({wanted}); columns: {list(frame.columns)[:20]}", where)
    if len(set(keys)) != len(keys):
        duplicated = pd.Index(keys)[pd.Index(keys).duplicated()][0]
        raise WeakTrainingError(f"the {kind} key {duplicated} has two label rows", where)
    probs, source = _frame_probabilities(frame, observations, use, where)
    description = Path(where).name if where != "DataFrame" else where
    return keys, kind, probs, source, description


def weak_label_targets(probs: np.ndarray, policy: str = "ones", blank: str = "zeros") -> tuple[np.ndarray, np.ndarray]:
    """Targets and weights of the noise-aware loss from ``(..., 3)`` label probabilities.

    A thin layer on :func:`medssl.weak.soft_targets` with the layouts' blank vocabulary: ``blank="zeros"``
    (not mentioned = absent: target 0, weight 1) or ``"ignore"`` (weight 0).

    Args:
        probs: probabilities of negative, positive, uncertain (NaN rows: not mentioned).
        policy: ``"ones"``, ``"zeros"`` or ``"ignore"``.
        blank: ``"zeros"`` or ``"ignore"``.

    Returns:
        ``(targets, weights)``, float32 arrays of shape ``probs.shape[:-1]``.
    """
    _check_policy(policy, blank)
    return soft_targets(probs, policy=policy, blank=0.0 if blank == "zeros" else None)


def attach_weak_labels(
    items: Sequence[Mapping[str, Any]],
    labels: str | os.PathLike | pd.DataFrame | WeakLabels,
    policy: str = "ones",
    blank: str = "zeros",
    observations: Sequence[str] | None = None,
    use: str = "auto",
    on: str = "auto",
    salt: str | None = None,
    layout: str = _LAYOUT_PREFIX,
    label_key: str = "label",
    mask_key: str = "label_mask",
    gold_prefix: str | None = "gold_",
    strict: bool = True,
) -> list[dict[str, Any]]:
    """Give datalist items the weak labels of their study's report (targets and weights of the noise-aware loss).

    The join is on the study key: a labels table's ``study_key`` column, or its ``study_id`` column (MIMIC-CXR's,
    as ``medssl label-reports`` writes it for a reports folder) hashed into the study key with ``salt`` the way the
    MIMIC-CXR layout does (so the salt must be the datalist's: ``--salt`` or ``$MEDSSL_SALT``); or on ``case_key``
    (labels of a datalist's items). :class:`~medssl.weak.WeakLabels` are keyed by whatever their keys are
    (``on="auto"`` takes them as study keys).

    Each item gets ``label_key`` (targets, one per observation, in [0, 1]), ``mask_key`` (weights in [0, 1]),
    the per-observation keys (``cardiomegaly`` ...: the targets) and ``weak_labelled`` (whether its study had a
    label row). Items without a label row (no report, or an unusable one) get weight 0 everywhere. Values the item
    held under those keys (gold labels of the layout) are kept under ``gold_prefix`` + key, unless ``gold_prefix``
    is None. Usable from a bundle config::

        {"_target_": "medssl.weak.training.attach_weak_labels", "items": "@train_items",
         "labels": "/data/weak/labels.csv", "policy": "ones"}

    Args:
        items: datalist items (with ``study_key`` for a study join, ``case_key`` for a case join).
        labels: a labels CSV of ``medssl label-reports``, a DataFrame of the same columns, or weak labels.
        policy: uncertain labels: ``"ones"`` (U-Ones), ``"zeros"`` (U-Zeros) or ``"ignore"``.
        blank: not-mentioned observations: ``"zeros"`` (absent, weight 1) or ``"ignore"`` (weight 0).
        observations: the observations, in label order (default CheXpert's 14, the layouts' order).
        use: ``"auto"`` (probabilities when the table has them, else the 1/0/-1 labels), ``"probs"`` or
            ``"labels"`` (hard labels, e.g. the label model's decisions).
        on: ``"auto"``, ``"study"`` or ``"case"``.
        salt: salt of the study keys made from ``study_id`` (default ``$MEDSSL_SALT``).
        layout: the prefix the layout hashes study ids with (``"mimic-cxr"``).
        label_key: item key of the targets.
        mask_key: item key of the weights.
        gold_prefix: prefix under which existing label values are kept (None: overwritten).
        strict: raise when no item matches any label row (a salt or key mismatch rather than missing reports).

    Returns:
        New items (the input is not modified), in input order.

    Raises:
        WeakTrainingError: bad arguments, an unreadable or malformed table, an item without the join key, or (with
            ``strict``) no item matching.
    """
    _check_policy(policy, blank)
    names = _check_observations(observations)
    keys, kind, probs, source, description = _weak_table(labels, names, use, on, salt, layout)
    targets, weights = weak_label_targets(probs, policy, blank)
    row_of = {key: i for i, key in enumerate(keys)}
    item_key = "study_key" if kind == "study" else "case_key"
    observation_keys = _observation_keys()
    out: list[dict[str, Any]] = []
    matched = 0
    for index, item in enumerate(items):
        key = item.get(item_key)
        if key is None:
            raise WeakTrainingError(
                f"item {index} ({item.get('case_key', 'no case_key')}) has no {item_key!r} to join on"
            )
        d = dict(item)
        row = row_of.get(str(key))
        written = {label_key: None, mask_key: None, **{observation_keys[o]: None for o in names}}
        if gold_prefix:
            for name in written:
                if name in d:
                    d[f"{gold_prefix}{name}"] = d[name]
        if row is None:
            target, weight = [0.0] * len(names), [0.0] * len(names)
        else:
            matched += 1
            target = [float(v) for v in targets[row]]
            weight = [float(v) for v in weights[row]]
        d[label_key] = target
        d[mask_key] = weight
        for o, value in zip(names, target):
            d[observation_keys[o]] = value
        d["weak_labelled"] = row is not None
        out.append(d)
    if strict and items and matched == 0:
        hint = " (study keys made from study_id depend on the salt: use the datalist's)" if kind == "study" else ""
        raise WeakTrainingError(f"no item's {item_key} matches a label row{hint}", description)
    if matched < len(out):
        logger.warning(
            "%s: %d of %d items have no weak label (no report, or an unusable one): masked",
            description,
            len(out) - matched,
            len(out),
        )
    logger.info("%s: weak labels (%s, policy %s, blank %s) on %d items", description, source, policy, blank, matched)
    return out


def _rebase(value: Any, source_dir: Path, target_dir: Path) -> Any:
    if not isinstance(value, str) or not value or os.path.isabs(value) or "\n" in value:
        return value
    candidate = source_dir / value
    if not candidate.exists():
        return value
    return os.path.relpath(candidate.resolve(), target_dir.resolve())


def write_weak_datalist(
    datalist: str | os.PathLike,
    labels: str | os.PathLike | pd.DataFrame | WeakLabels,
    out: str | os.PathLike,
    splits: Sequence[str] = ("training", "validation"),
    policy: str = "ones",
    blank: str = "zeros",
    **options: Any,
) -> Path:
    """Write a copy of a datalist whose ``splits`` carry weak labels (:func:`attach_weak_labels`).

    The other splits (by default ``test``) keep their labels, so that evaluation stays on gold (or dataset) labels.
    Relative paths (the metadata's ``image_keys`` and ``text_keys``) are rebased on the new file's folder.

    Args:
        datalist: the input datalist JSON.
        labels: the weak labels (see :func:`attach_weak_labels`).
        out: the datalist to write.
        splits: the splits that get weak labels.
        policy: uncertainty policy.
        blank: blank policy.
        options: other arguments of :func:`attach_weak_labels` (``observations``, ``use``, ``salt`` ...).

    Returns:
        The path written.

    Raises:
        WeakTrainingError: see :func:`attach_weak_labels`.
        DatalistError: an invalid input datalist.
    """
    from medssl.data.datalist import SPLITS, read_datalist, write_datalist

    source, out = Path(datalist), Path(out)
    data = read_datalist(source)
    path_keys = [*data.get("image_keys", ["image"]), *data.get("text_keys", ["report"])]
    out.parent.mkdir(parents=True, exist_ok=True)
    present = {s: data[s] for s in SPLITS if s in data}
    new_splits: dict[str, list[dict[str, Any]]] = {}
    for name, items in present.items():
        rebased = [
            {k: (_rebase(v, source.parent, out.parent) if k in path_keys else v) for k, v in item.items()}
            for item in items
        ]
        if name in splits and rebased:
            rebased = attach_weak_labels(rebased, labels, policy=policy, blank=blank, **options)
        new_splits[name] = rebased
    metadata = {
        k: v for k, v in data.items() if k not in SPLITS and not k.startswith("num") and k != "medssl_datalist_version"
    }
    names = _check_observations(options.get("observations"))
    metadata["observations"] = names
    metadata["label_source"] = {
        "kind": "weak",
        "labels": Path(os.fspath(labels)).name if isinstance(labels, (str, os.PathLike)) else type(labels).__name__,
        "splits": [s for s in splits if s in new_splits],
        "policy": policy,
        "blank": blank,
        "use": options.get("use", "auto"),
    }
    return write_datalist(out, new_splits, **metadata)


# ----------------------------------------------------------------------------------------------------------------
# Gold labels
# ----------------------------------------------------------------------------------------------------------------


def read_gold_labels(path: str | os.PathLike, salt: str | None = None, layout: str = _LAYOUT_PREFIX) -> pd.DataFrame:
    """Gold labels per study: 1.0 present, 0.0 absent, NaN unknown, indexed by study key.

    Two formats are read:

    * ``synthetic_ground_truth.csv`` of ``medssl synth cxr`` (one row per study and observation, ``present``
      0/1): what the image shows; an observation without a row in a listed study is absent;
    * a CheXpert-coded label CSV (``subject_id, study_id`` and the observation columns, like MIMIC-CXR-JPG's
      ``mimic-cxr-2.0.0-chexpert.csv``): 1 present, 0 and blank absent (not mentioned), -1 unknown (NaN, left out
      of the evaluation). On real data these are labels read from the reports by a labeller, not an image
      reading: say so when reporting.

    Args:
        path: the CSV.
        salt: salt of the study keys (the datalist's).
        layout: prefix of the hashed study ids.

    Returns:
        ``(n_studies, 14)`` DataFrame (CheXpert's observation order).

    Raises:
        WeakTrainingError: missing file or columns.
    """
    path = Path(path)
    if not path.is_file():
        raise WeakTrainingError("no such gold-label file", path)
    try:
        table = pd.read_csv(path)
    except (OSError, ValueError) as error:
        raise WeakTrainingError(f"cannot read the CSV: {error}", path) from error
    if "study_id" not in table.columns:
        raise WeakTrainingError(f"no study_id column (columns: {list(table.columns)[:20]})", path)
    observations = list(CHEXPERT_OBSERVATIONS)
    if {"observation", "present"} <= set(table.columns):
        table = table[table["observation"].isin(observations)]
        wide = table.pivot_table(index="study_id", columns="observation", values="present", aggfunc="max")
        wide = wide.reindex(columns=observations).fillna(0.0).astype(np.float64).clip(0, 1)
    else:
        present = [o for o in observations if o in table.columns]
        if not present:
            raise WeakTrainingError(f"no observation column (expected some of {observations})", path)
        wide = table.set_index("study_id")[present].apply(pd.to_numeric, errors="coerce")
        wide = wide.reindex(columns=observations)
        unknown = wide == -1.0
        wide = wide.fillna(0.0).where(~unknown, np.nan)
        wide[[o for o in observations if o not in present]] = np.nan
    wide.index = pd.Index([_study_key_from_id(v, salt, layout) for v in wide.index], name="study_key")
    return wide[~wide.index.duplicated()]


# ----------------------------------------------------------------------------------------------------------------
# Classifier, loop, prediction
# ----------------------------------------------------------------------------------------------------------------


class MultiLabelClassifier(nn.Module):
    """An image encoder (a MONAI trunk giving ``(B, F)`` features) and a linear layer of one logit per observation.

    Args:
        trunk: the encoder, with ``out_features``.
        n_outputs: number of observations.
        dropout: dropout before the linear layer.
    """

    def __init__(self, trunk: nn.Module, n_outputs: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.trunk = trunk
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(int(trunk.out_features), int(n_outputs))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images -> ``(B, n_outputs)`` logits."""
        return self.head(self.dropout(self.trunk(image)))


def build_classifier(
    n_outputs: int,
    backbone: str = "resnet10",
    width: float = 0.25,
    backbone_kwargs: Mapping[str, Any] | None = None,
    encoder: str | os.PathLike | None = None,
    in_channels: int = 1,
    seed: int | None = 0,
) -> MultiLabelClassifier:
    """The comparison's classifier: the trunk of :class:`medssl.networks.encoders.ImageEncoder` plus a linear head.

    Built the way the pretraining engine builds its image tower (same stem defaults), so that a pretrained
    encoder and a randomly initialised one have the same architecture.

    Args:
        n_outputs: observations.
        backbone: a :data:`medssl.networks.backbones.ENCODER_NAMES` name.
        width: width multiplier.
        backbone_kwargs: other arguments of the MONAI network.
        encoder: an exported encoders folder (or its ``image.json``/``image.pt``): its architecture and weights
            replace ``backbone``, ``width`` and ``backbone_kwargs``.
        in_channels: image channels.
        seed: seed of the initial weights (None: the global random state).

    Returns:
        The classifier.
    """
    from medssl.networks.encoders import ImageEncoder, load_pretrained_image_encoder

    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        if encoder is not None:
            trunk = load_pretrained_image_encoder(encoder, region_layer=None).trunk
        else:
            trunk = ImageEncoder(backbone, 2, in_channels, width, None, dict(backbone_kwargs or {})).trunk
        return MultiLabelClassifier(trunk, n_outputs)


def _batches(n: int, batch_size: int, steps: int, generator: torch.Generator) -> Any:
    """Indices of ``steps`` batches of ``min(batch_size, n)`` items, epoch after shuffled epoch (no short batch)."""
    size = min(batch_size, n)
    pool = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        while len(pool) < size:
            pool = torch.cat([pool, torch.randperm(n, generator=generator)])
        yield pool[:size]
        pool = pool[size:]


def fit_classifier(
    model: nn.Module,
    images: torch.Tensor,
    targets: np.ndarray | torch.Tensor,
    weights: np.ndarray | torch.Tensor,
    *,
    steps: int,
    batch_size: int = 32,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    seed: int = 0,
    device: str | torch.device | None = "auto",
    loss_function: nn.Module | None = None,
    log_every: int | None = None,
) -> list[dict[str, float]]:
    """Train a classifier for a fixed number of optimizer steps (AdamW, cosine schedule); no model selection.

    Args:
        model: the classifier (trained in place).
        images: ``(n, C, H, W)`` preprocessed images (kept on the CPU; batches move to ``device``).
        targets: ``(n, K)`` targets in [0, 1].
        weights: ``(n, K)`` weights.
        steps: optimizer steps.
        batch_size: items per step (``min(batch_size, n)``).
        lr: peak learning rate.
        weight_decay: AdamW weight decay.
        seed: seed of the batch order and of dropout.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` ...
        loss_function: default :class:`NoiseAwareBCELoss`.
        log_every: steps per history record (default: one per pass over the data).

    Returns:
        History: ``{"step", "epoch", "loss"}`` records (mean loss since the previous record).

    Raises:
        WeakTrainingError: no data, mismatched shapes, or ``steps < 1``.
    """
    from medssl.engines.supervised import resolve_device

    n = len(images)
    targets = torch.as_tensor(np.asarray(targets, dtype=np.float32))
    weights = torch.as_tensor(np.asarray(weights, dtype=np.float32))
    if n == 0 or steps < 1:
        raise WeakTrainingError(f"cannot train on {n} images for {steps} steps")
    if targets.shape != weights.shape or targets.shape[0] != n:
        raise WeakTrainingError(f"{n} images, targets {tuple(targets.shape)}, weights {tuple(weights.shape)}")
    device = resolve_device(device)
    loss_function = (loss_function or NoiseAwareBCELoss()).to(device)
    model.to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    generator = torch.Generator().manual_seed(int(seed))
    size = min(batch_size, n)
    per_epoch = max(1, math.ceil(n / size))
    log_every = int(log_every or per_epoch)
    history: list[dict[str, float]] = []
    running, count = 0.0, 0
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(int(seed))
        for step, index in enumerate(_batches(n, batch_size, steps, generator), start=1):
            x = images[index].to(device, non_blocking=True)
            loss = loss_function(model(x), targets[index].to(device), weights[index].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            running += float(loss.detach())
            count += 1
            if step % log_every == 0 or step == steps:
                history.append({"step": step, "epoch": step * size / n, "loss": running / count})
                running, count = 0.0, 0
    return history


@torch.no_grad()
def predict_probabilities(
    model: nn.Module, images: torch.Tensor, batch_size: int = 64, device: str | torch.device | None = "auto"
) -> np.ndarray:
    """Sigmoid outputs of a classifier in eval mode.

    Args:
        model: the classifier.
        images: ``(n, C, H, W)`` images.
        batch_size: images per forward pass.
        device: where to run.

    Returns:
        ``(n, K)`` probabilities (float64).
    """
    from medssl.engines.supervised import resolve_device

    device = resolve_device(device)
    model.to(device).eval()
    out = [
        torch.sigmoid(model(images[i : i + batch_size].to(device)).float()).cpu()
        for i in range(0, len(images), batch_size)
    ]
    return torch.cat(out).numpy().astype(np.float64) if out else np.zeros((0, 0))


# ----------------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------------


def _known_auroc(y: np.ndarray, s: np.ndarray) -> float:
    from medssl.eval.metrics import auroc

    known = ~np.isnan(y)
    return auroc(y[known].astype(np.int64), s[known])


def _macro(columns: Sequence[int]) -> Any:
    def macro_auroc(y: np.ndarray, s: np.ndarray) -> float:
        return float(np.mean([_known_auroc(y[:, j], s[:, j]) for j in columns]))

    return macro_auroc


def evaluate_multilabel(
    gold: np.ndarray,
    probabilities: np.ndarray,
    groups: Sequence[str],
    observations: Sequence[str],
    *,
    min_positives: int = 5,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """Per-observation AUROC with patient-bootstrap CIs, and the macro AUROC over the evaluable observations.

    An observation is evaluable when the test cases with a known gold label hold at least ``min_positives``
    positives and as many negatives; the others get a row whose ``status`` says so (and no AUROC), never a silent
    omission.

    Args:
        gold: ``(n, K)`` 1/0 gold labels, NaN unknown.
        probabilities: ``(n, K)`` predicted probabilities.
        groups: ``(n,)`` patient keys (the bootstrap resamples patients).
        observations: the ``K`` names.
        min_positives: fewest positives (and negatives) for an AUROC.
        n_boot: bootstrap resamples.
        alpha: one minus the confidence level.
        seed: seed of the resampling (the same for every model: paired resamples).

    Returns:
        Rows ``observation, status, n, n_positive, n_negative, n_patients, auroc, ci_low, ci_high, n_boot_used``;
        the last row is ``macro``.
    """
    from medssl.eval.metrics import bootstrap_ci

    gold = np.asarray(gold, dtype=np.float64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    groups = np.asarray(groups, dtype=object)
    rows, evaluable = [], []
    for j, name in enumerate(observations):
        known = ~np.isnan(gold[:, j])
        n_pos = int((gold[known, j] == 1).sum())
        n_neg = int((gold[known, j] == 0).sum())
        row: dict[str, Any] = {
            "observation": name,
            "n": int(known.sum()),
            "n_positive": n_pos,
            "n_negative": n_neg,
            "n_patients": int(len(set(groups[known]))),
        }
        if min(n_pos, n_neg) < min_positives:
            fewer = "positives" if n_pos < min_positives else "negatives"
            row.update(status=f"too rare in the test set: {min(n_pos, n_neg)} {fewer} (< {min_positives})")
            row.update(auroc=math.nan, ci_low=math.nan, ci_high=math.nan, n_boot_used=0)
        else:
            est = bootstrap_ci(
                _known_auroc, gold[:, j], probabilities[:, j], groups=groups, n_boot=n_boot, alpha=alpha, seed=seed
            )
            row.update(
                status="ok", auroc=est.value, ci_low=est.ci_low, ci_high=est.ci_high, n_boot_used=est.n_boot_used
            )
            evaluable.append(j)
        rows.append(row)
    macro: dict[str, Any] = {
        "observation": "macro",
        "n": int(len(gold)),
        "n_positive": int(np.nansum(gold[:, evaluable] == 1)) if evaluable else 0,
        "n_negative": int(np.nansum(gold[:, evaluable] == 0)) if evaluable else 0,
        "n_patients": int(len(set(groups))),
    }
    if evaluable:
        est = bootstrap_ci(_macro(evaluable), gold, probabilities, groups=groups, n_boot=n_boot, alpha=alpha, seed=seed)
        macro.update(
            status=f"ok: mean over {len(evaluable)} of {len(observations)} observations",
            auroc=est.value,
            ci_low=est.ci_low,
            ci_high=est.ci_high,
            n_boot_used=est.n_boot_used,
        )
    else:
        macro.update(
            status="no evaluable observation", auroc=math.nan, ci_low=math.nan, ci_high=math.nan, n_boot_used=0
        )
    rows.append(macro)
    return pd.DataFrame(rows)


def compare_multilabel(
    gold: np.ndarray,
    probabilities_a: np.ndarray,
    probabilities_b: np.ndarray,
    groups: Sequence[str],
    observations: Sequence[str],
    evaluable: Sequence[str],
    *,
    n_boot: int = 1000,
    alpha: float = 0.05,
    seed: int = 0,
) -> pd.DataFrame:
    """AUROC differences (a - b) on paired patient resamples, per evaluable observation and macro.

    Args:
        gold: ``(n, K)`` gold labels (NaN unknown).
        probabilities_a: ``(n, K)`` probabilities of model a.
        probabilities_b: ``(n, K)`` probabilities of model b.
        groups: patient keys.
        observations: the ``K`` names.
        evaluable: the observations to compare (those :func:`evaluate_multilabel` found evaluable).
        n_boot: resamples.
        alpha: one minus the confidence level.
        seed: seed of the resampling.

    Returns:
        Rows ``observation, difference, ci_low, ci_high, n_boot_used`` (last row ``macro``).
    """
    from medssl.eval.metrics import bootstrap_ci

    gold = np.asarray(gold, dtype=np.float64)
    paired = np.stack([np.asarray(probabilities_a, np.float64), np.asarray(probabilities_b, np.float64)], axis=-1)
    columns = [list(observations).index(o) for o in evaluable]
    rows = []

    def one(j: int) -> Any:
        return lambda y, s: _known_auroc(y[:, j], s[:, j, 0]) - _known_auroc(y[:, j], s[:, j, 1])

    def macro(y: np.ndarray, s: np.ndarray) -> float:
        return _macro(columns)(y, s[..., 0]) - _macro(columns)(y, s[..., 1])

    targets = [(observations[j], one(j)) for j in columns] + ([("macro", macro)] if columns else [])
    for name, fn in targets:
        est = bootstrap_ci(
            fn, gold, paired, groups=np.asarray(groups, dtype=object), n_boot=n_boot, alpha=alpha, seed=seed
        )
        rows.append(
            {
                "observation": name,
                "difference": est.value,
                "ci_low": est.ci_low,
                "ci_high": est.ci_high,
                "n_boot_used": est.n_boot_used,
            }
        )
    return pd.DataFrame(rows, columns=["observation", "difference", "ci_low", "ci_high", "n_boot_used"])


# ----------------------------------------------------------------------------------------------------------------
# The comparison
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class WeakTrainingConfig:
    """Settings of :func:`run_weak_comparison` (plain values: JSON and the command line hold them).

    Attributes:
        source: a MIMIC-CXR(-JPG) folder, or a medssl datalist JSON (all splits pooled unless ``official_split``).
        out: output folder.
        observations: observations to train and evaluate (CheXpert names).
        models: among :data:`MODELS`; ``pretrained-weak`` needs ``encoders`` or ``pretrain_steps > 0``.
        gold: gold-label CSV (see :func:`read_gold_labels`); default: the folder's ``synthetic_ground_truth.csv``,
            else its ``mimic-cxr-2.0.0-chexpert.csv``; for a datalist, its ``label``/``label_mask``.
        gold_fraction: share of training patients whose gold labels train ``gold-subset``.
        test_fraction: share of patients held out for the test (ignored with ``official_split``).
        official_split: keep the dataset's split (training + validation train, test tests).
        policy: uncertain weak labels: ``ones``, ``zeros`` or ``ignore``.
        blank: not-mentioned observations: ``zeros`` or ``ignore``.
        label_model: ``label-model``, ``majority`` or ``snorkel``.
        jobs: worker processes of the label matrix.
        frontal_only: keep frontal images (folder sources).
        study_level: one image per study (folder sources).
        image_size: image side in pixels.
        backbone: encoder name (replaced by the encoders folder's when one is given).
        width: width multiplier.
        backbone_kwargs: other arguments of the MONAI network.
        epochs: passes over the training images; every model trains for the same number of optimizer steps.
        batch_size: images per step.
        lr: AdamW learning rate (cosine schedule).
        weight_decay: AdamW weight decay.
        encoders: an exported encoders folder (``medssl pretrain`` output ``encoders/``).
        pretrain_steps: without ``encoders``, ConVIRT steps to pretrain one on the training images and reports.
        pretrain_batch_size: pretraining batch size.
        pretrain_lr: pretraining learning rate.
        text_model: pretraining text model (folder); default a tiny BERT built on the training reports.
        min_test_positives: fewest test positives (and negatives) for an observation's AUROC.
        n_boot: bootstrap resamples.
        seed: seed of the split, the subset, the initial weights, the batches and the bootstrap.
        salt: key salt (default ``$MEDSSL_SALT``).
        device: ``auto``, ``cpu``, ``cuda`` ...
        threads: torch CPU threads (None: torch's default).
    """

    source: str = ""
    out: str = "weak_training"
    observations: list[str] = field(default_factory=lambda: list(DEFAULT_OBSERVATIONS))
    models: list[str] = field(default_factory=lambda: ["weak", "gold-subset"])
    gold: str | None = None
    gold_fraction: float = 0.1
    test_fraction: float = 0.2
    official_split: bool = False
    policy: str = "ones"
    blank: str = "zeros"
    label_model: str = "label-model"
    jobs: int = 1
    frontal_only: bool = True
    study_level: bool = True
    image_size: int = 64
    backbone: str = "resnet10"
    width: float = 0.25
    backbone_kwargs: dict[str, Any] = field(default_factory=dict)
    epochs: int = 10
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 1e-4
    encoders: str | None = None
    pretrain_steps: int = 0
    pretrain_batch_size: int = 16
    pretrain_lr: float = 1e-3
    text_model: str | None = None
    min_test_positives: int = 5
    n_boot: int = 1000
    seed: int = 0
    salt: str | None = None
    device: str = "auto"
    threads: int | None = None

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> WeakTrainingConfig:
        """Build from a mapping, refusing unknown keys.

        Raises:
            WeakTrainingError: an unknown key.
        """
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise WeakTrainingError(f"unknown setting(s) {unknown}; known: {sorted(known)}")
        return cls(**dict(values))

    def to_dict(self) -> dict[str, Any]:
        """The settings as plain data (the salt left out)."""
        out = asdict(self)
        out["salt"] = None if self.salt is None else "(given)"
        return out

    def validate(self) -> None:
        """Check the settings.

        Raises:
            WeakTrainingError: an inconsistent or out-of-range setting.
        """
        _check_observations(self.observations)
        _check_policy(self.policy, self.blank)
        unknown = [m for m in self.models if m not in MODELS]
        if unknown or not self.models or len(set(self.models)) != len(self.models):
            raise WeakTrainingError(f"models must be distinct names among {list(MODELS)}, got {self.models}")
        if "pretrained-weak" in self.models and not self.encoders and self.pretrain_steps <= 0:
            raise WeakTrainingError("the pretrained-weak model needs --encoders FOLDER or --pretrain-steps N > 0")
        if not 0 < self.gold_fraction <= 1:
            raise WeakTrainingError(f"gold_fraction must be in (0, 1], got {self.gold_fraction}")
        if not self.official_split and not 0 < self.test_fraction < 1:
            raise WeakTrainingError(f"test_fraction must be in (0, 1), got {self.test_fraction}")
        if self.label_model not in ("label-model", "majority", "snorkel"):
            raise WeakTrainingError(f"label_model must be label-model, majority or snorkel, got {self.label_model!r}")
        for name in ("image_size", "epochs", "batch_size", "n_boot", "min_test_positives"):
            if int(getattr(self, name)) < 1:
                raise WeakTrainingError(f"{name} must be at least 1, got {getattr(self, name)}")


@dataclass
class WeakComparisonResult:
    """What :func:`run_weak_comparison` produced.

    Attributes:
        out: the output folder.
        results: per model and observation: AUROC with CI and status (``results.csv``).
        differences: AUROC differences against the reference model (``differences.csv``).
        weak_quality: the weak labels against the gold labels of the training studies.
        files: the files written.
    """

    out: Path
    results: pd.DataFrame
    differences: pd.DataFrame
    weak_quality: pd.DataFrame
    files: dict[str, str] = field(default_factory=dict)


def _read_datalist_items(path: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    from medssl.data.datalist import SPLITS, load_datalist, read_datalist

    data = read_datalist(path)
    items = []
    for split in SPLITS:
        if split in data:
            for item in load_datalist(path, split):
                items.append({**item, "official_split": split})
    metadata = {k: v for k, v in data.items() if k not in SPLITS}
    return items, metadata


def _gold_from_items(items: Sequence[Mapping[str, Any]], metadata: Mapping[str, Any]) -> pd.DataFrame:
    """Gold labels from the items' ``label``/``label_mask`` (value where the mask is set), indexed by case key."""
    names = list(metadata.get("observations") or CHEXPERT_OBSERVATIONS)
    rows = {}
    for item in items:
        if "label" not in item:
            continue
        values = np.asarray(item["label"], dtype=np.float64).reshape(-1)
        mask = np.asarray(item.get("label_mask", np.ones_like(values)), dtype=np.float64).reshape(-1)
        if len(values) != len(names):
            raise WeakTrainingError(
                f"item {item.get('case_key')} has {len(values)} labels for {len(names)} observations in the metadata"
            )
        rows[str(item["case_key"])] = np.where(mask > 0, values, np.nan)
    frame = pd.DataFrame.from_dict(rows, orient="index", columns=names)
    return frame.reindex(columns=list(CHEXPERT_OBSERVATIONS))


def _load_cohort(cfg: WeakTrainingConfig) -> tuple[list[dict[str, Any]], np.ndarray, str, str]:
    """Items, ``(n, K)`` gold labels (NaN unknown), a description of the source and of the gold labels."""
    from medssl.data.layouts.mimic_cxr import CHEXPERT_FILE, find_table, mimic_cxr_items
    from medssl.data.synth.cxr import GROUND_TRUTH_FILE

    source = Path(cfg.source)
    gold_path = Path(cfg.gold) if cfg.gold else None
    if source.is_dir():
        items, problems = mimic_cxr_items(
            source,
            salt=cfg.salt,
            frontal_only=cfg.frontal_only,
            study_level=cfg.study_level,
            policy="ignore",
            blank="zeros",
        )
        description = f"MIMIC-CXR layout folder ({len(problems)} problems reported by the layout reader)"
        if gold_path is None:
            gold_path = source / GROUND_TRUTH_FILE if (source / GROUND_TRUTH_FILE).is_file() else None
        if gold_path is None:
            gold_path = find_table(source, CHEXPERT_FILE)
        if gold_path is None:
            raise WeakTrainingError(f"no gold labels: no {GROUND_TRUTH_FILE} or {CHEXPERT_FILE}; pass --gold", source)
        by_case = None
    elif source.suffix.lower() == ".json" and source.is_file():
        items, metadata = _read_datalist_items(source)
        description = f"datalist {source.name}"
        by_case = None if gold_path is not None else _gold_from_items(items, metadata)
    else:
        raise WeakTrainingError("SOURCE must be a MIMIC-CXR(-JPG) folder or a medssl datalist .json", source)
    if not items:
        raise WeakTrainingError("no usable image", source)
    for item in items:
        item.setdefault("study_key", item.get("case_key"))
    if by_case is not None:
        gold_frame = by_case.reindex([str(item["case_key"]) for item in items])
        gold_description = "the datalist's label / label_mask (masked values unknown)"
    else:
        table = read_gold_labels(gold_path, salt=cfg.salt)
        gold_frame = table.reindex([str(item["study_key"]) for item in items])
        kind = "image ground truth of the synthetic data" if "ground_truth" in gold_path.name else "CheXpert-coded CSV"
        gold_description = f"{gold_path.name} ({kind})"
    gold = gold_frame[list(cfg.observations)].to_numpy(dtype=np.float64)
    unknown = np.isnan(gold).all(axis=1)
    if unknown.all():
        raise WeakTrainingError(f"no item has a gold label in {gold_description} (a different salt?)", source)
    if unknown.any():
        logger.warning(
            "%d of %d images have no gold label (left out of every gold use)", int(unknown.sum()), len(items)
        )
    return items, gold, description, gold_description


def _split(cfg: WeakTrainingConfig, items: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the training and test items (patient-level)."""
    if cfg.official_split:
        splits = [item.get("official_split") for item in items]
        if any(s is None for s in splits):
            raise WeakTrainingError("official_split: some items have no official split", cfg.source)
        train = np.array([i for i, s in enumerate(splits) if s in ("training", "validation")], dtype=np.int64)
        test = np.array([i for i, s in enumerate(splits) if s == "test"], dtype=np.int64)
    else:
        from medssl.data.splits import split_by_patient

        indexed = [{**item, "_index": i} for i, item in enumerate(items)]
        splits = split_by_patient(indexed, val_fraction=0.0, test_fraction=cfg.test_fraction, seed=cfg.seed)
        train = np.array([item["_index"] for item in splits["training"]], dtype=np.int64)
        test = np.array([item["_index"] for item in splits["test"]], dtype=np.int64)
    if len(train) == 0 or len(test) == 0:
        raise WeakTrainingError(f"the split leaves {len(train)} training and {len(test)} test images", cfg.source)
    return train, test


def _gold_subset(cfg: WeakTrainingConfig, patients: Sequence[str]) -> set[str]:
    unique = sorted(set(patients))
    n = max(1, int(round(cfg.gold_fraction * len(unique))))
    rng = np.random.default_rng([cfg.seed, 0x601D])
    return {unique[i] for i in rng.permutation(len(unique))[:n]}


def _load_images(items: Sequence[Mapping[str, Any]], size: int) -> tuple[torch.Tensor, list[int], list[str]]:
    """Preprocessed images ``(n, 1, size, size)``, the indices loaded, and the problems (keys only)."""
    from medssl.transforms.cxr import cxr_transforms

    pipeline = cxr_transforms(size, train=False)
    images, kept, problems = [], [], []
    for index, item in enumerate(items):
        try:
            image = pipeline({"image": item["image"]})["image"]
        except (OSError, ValueError, RuntimeError) as error:  # MedsslError is a ValueError
            problems.append(f"{item.get('case_key')}: image not loaded ({type(error).__name__}: {error})")
            continue
        images.append(torch.as_tensor(image).float())
        kept.append(index)
    stacked = torch.stack(images) if images else torch.zeros(0, 1, size, size)
    return stacked, kept, problems


def _label_reports(cfg: WeakTrainingConfig, items: Sequence[Mapping[str, Any]]) -> tuple[WeakLabels, int, list[str]]:
    """Weak labels of the studies of ``items`` (one report per study), keyed by study key."""
    from medssl.weak.aggregate import aggregate
    from medssl.weak.matrix import label_matrix

    texts: dict[str, str] = {}
    problems: list[str] = []
    for item in items:
        key = str(item["study_key"])
        if key in texts:
            continue
        report = item.get("report")
        if not isinstance(report, str) or not report.strip():
            continue
        if "\n" in report or not report.lower().endswith(".txt"):
            texts[key] = report
            continue
        try:
            texts[key] = Path(report).read_text(errors="replace")
        except OSError as error:
            problems.append(f"study {key}: report not read ({error.strerror or error})")
    if not texts:
        raise WeakTrainingError("no training image has a readable report to label", cfg.source)
    matrix, errors = label_matrix(list(texts.values()), list(texts), n_jobs=cfg.jobs)
    problems += [f"study {error.path}: {error.problem}" for error in errors]
    if not matrix.keys:
        raise WeakTrainingError("no usable report among the training studies", cfg.source)
    return aggregate(matrix, model=cfg.label_model, seed=cfg.seed), len(texts), problems


def _pretrain(cfg: WeakTrainingConfig, items: Sequence[Mapping[str, Any]], out: Path) -> Path:
    """A short ConVIRT run of the pretraining engine on the training images and reports; returns the encoders."""
    from medssl.data.datalist import write_datalist
    from medssl.engines.pretrain import Pretraining
    from medssl.networks.encoders import build_tiny_text_model

    pairs = [
        {k: item[k] for k in ("image", "report", "case_key", "patient_key", "study_key") if k in item}
        for item in items
        if isinstance(item.get("report"), str) and item["report"].lower().endswith(".txt")
    ]
    if len(pairs) < 2:
        raise WeakTrainingError(f"{len(pairs)} training images with a report file: too few to pretrain", cfg.source)
    folder = out / "pretrain"
    datalist = write_datalist(folder / "datalist.json", {"training": pairs}, name="weak-train pretraining pairs")
    text_model = cfg.text_model
    if text_model is None:
        texts = [Path(pair["report"]).read_text(errors="replace") for pair in pairs]
        text_model = os.fspath(
            build_tiny_text_model(texts, folder / "text_model", vocab_size=400, hidden_size=32, seed=cfg.seed)
        )
    options = {
        "text_model": text_model,
        "image_backbone": cfg.backbone,
        "image_width": cfg.width,
        "image_kwargs": dict(cfg.backbone_kwargs),
        "image_size": cfg.image_size,
        "embed_dim": 64,
        "max_length": 64,
    }
    run = Pretraining(
        method="convirt",
        data=os.fspath(datalist),
        out=os.fspath(folder),
        options=options,
        seed=cfg.seed,
        max_steps=cfg.pretrain_steps,
        batch_size=min(cfg.pretrain_batch_size, len(pairs)),
        lr=cfg.pretrain_lr,
        warmup_steps=min(10, cfg.pretrain_steps // 10),
        checkpoint_every=0,
        keep_last=1,
        tracking=["csv"],
        progress=False,
        device=cfg.device,
        export=True,
    )
    summary = run.run()
    return Path(summary["encoders"]["image_config"]).parent


def _architecture(cfg: WeakTrainingConfig) -> dict[str, Any]:
    """Backbone settings of every model: the encoders folder's when one is given (the same architecture for all)."""
    if not cfg.encoders:
        return {"backbone": cfg.backbone, "width": cfg.width, "backbone_kwargs": dict(cfg.backbone_kwargs)}
    path = Path(cfg.encoders)
    meta_path = path / "image.json" if path.is_dir() else path.with_suffix(".json")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise WeakTrainingError(f"cannot read the image-encoder description: {error}", meta_path) from error
    if int(meta.get("spatial_dims", 2)) != 2 or int(meta.get("in_channels", 1)) != 1:
        raise WeakTrainingError(
            "the image encoder must be 2-D with one input channel (grey-level radiographs)", meta_path
        )
    size = (meta.get("preprocessing") or {}).get("image_size")
    if size and int(size) != cfg.image_size:
        logger.warning("%s was pretrained at %s px; this comparison uses %d px", meta_path, size, cfg.image_size)
    return {
        "backbone": meta["backbone"],
        "width": float(meta.get("width", 1.0)),
        "backbone_kwargs": meta.get("backbone_kwargs") or {},
    }


def _versions() -> dict[str, str]:
    import monai

    import medssl

    return {
        "medssl": medssl.__version__,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "python": platform.python_version(),
    }


def _machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} (CUDA)"
    return f"CPU ({platform.machine()}, {os.cpu_count()} cores visible, {torch.get_num_threads()} torch threads)"


def run_weak_comparison(
    config: WeakTrainingConfig | Mapping[str, Any] | None = None, command: str | None = None, **options: Any
) -> WeakComparisonResult:
    """Label the training reports, train the models of the comparison and evaluate them on held-out gold labels.

    Steps (see the module docstring): read the cohort and the gold labels; split by patient (saved in
    ``splits.json``); label the training studies' reports (:func:`medssl.weak.label_matrix`,
    :func:`medssl.weak.aggregate`; ``weak_labels.csv``); preload the images; train every model of ``models`` with
    the same initial weights and the same number of steps; predict the test images; write ``results.csv``,
    ``differences.csv``, ``predictions.csv``, ``history.csv``, ``weak_label_quality.csv``, ``auroc.png``,
    ``report.md`` and ``config.json`` in ``out``.

    Args:
        config: a :class:`WeakTrainingConfig` or a mapping of its fields.
        command: the command line, recorded in the report.
        options: fields overriding ``config``.

    Returns:
        The :class:`WeakComparisonResult`.

    Raises:
        WeakTrainingError: bad settings or unusable inputs.
    """
    from medssl.data.splits import save_splits
    from medssl.engines.supervised import resolve_device

    base = config.to_dict() if isinstance(config, WeakTrainingConfig) else dict(config or {})
    if isinstance(config, WeakTrainingConfig):
        base["salt"] = config.salt
    cfg = WeakTrainingConfig.from_dict({**base, **options})
    cfg.validate()
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    device = resolve_device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    observations = list(cfg.observations)
    problems: list[str] = []

    items, gold, source_description, gold_description = _load_cohort(cfg)
    images, kept, image_problems = _load_images(items, cfg.image_size)
    problems += image_problems
    items, gold = [items[i] for i in kept], gold[kept]
    train, test = _split(cfg, items)
    train_items = [items[i] for i in train]
    test_items = [items[i] for i in test]
    gold_patients = _gold_subset(cfg, [str(item["patient_key"]) for item in train_items])
    save_splits(
        out / "splits.json",
        {"training": train_items, "test": test_items},
        seed=cfg.seed,
        test_fraction=None if cfg.official_split else cfg.test_fraction,
        official_split=cfg.official_split,
        gold_fraction=cfg.gold_fraction,
        gold_subset_patients=sorted(gold_patients),
    )

    t0 = time.perf_counter()
    weak, n_reports, label_problems = _label_reports(cfg, train_items)
    label_seconds = time.perf_counter() - t0
    problems += label_problems
    weak_frame = weak.to_frame()
    weak_frame.index.name = "study_key"
    weak_frame.to_csv(out / "weak_labels.csv")
    soft = attach_weak_labels(train_items, weak, cfg.policy, cfg.blank, observations, on="study", gold_prefix=None)
    weak_targets = np.array([item["label"] for item in soft], dtype=np.float32)
    weak_weights = np.array([item["label_mask"] for item in soft], dtype=np.float32)
    hard = attach_weak_labels(
        train_items, weak, cfg.policy, cfg.blank, observations, use="labels", on="study", gold_prefix=None
    )
    hard_targets = np.array([item["label"] for item in hard], dtype=np.float32)
    hard_weights = np.array([item["label_mask"] for item in hard], dtype=np.float32)
    train_gold = gold[train]
    gold_known = (~np.isnan(train_gold)).astype(np.float32)
    gold_targets = np.nan_to_num(train_gold, nan=0.0).astype(np.float32)
    in_subset = np.array([str(item["patient_key"]) in gold_patients for item in train_items])
    weak_quality = _weak_quality(observations, weak_targets, weak_weights, train_gold, soft)

    architecture = _architecture(cfg)
    encoders = cfg.encoders
    pretrain_seconds = math.nan
    if "pretrained-weak" in cfg.models and not encoders:
        t0 = time.perf_counter()
        encoders = os.fspath(_pretrain(cfg, train_items, out))
        pretrain_seconds = time.perf_counter() - t0
    train_images = images[torch.as_tensor(train)]
    test_images = images[torch.as_tensor(test)]
    steps = cfg.epochs * max(1, math.ceil(len(train) / cfg.batch_size))
    plans = {
        "weak": (weak_targets, weak_weights, np.ones(len(train), bool), None, "weak soft labels (all training images)"),
        "weak-hard": (
            hard_targets,
            hard_weights,
            np.ones(len(train), bool),
            None,
            "weak hard labels (all training images)",
        ),
        "gold-subset": (
            gold_targets,
            gold_known,
            in_subset,
            None,
            f"gold labels of {len(gold_patients)} training patients",
        ),
        "gold-all": (gold_targets, gold_known, np.ones(len(train), bool), None, "gold labels (all training images)"),
        "pretrained-weak": (
            weak_targets,
            weak_weights,
            np.ones(len(train), bool),
            encoders,
            "weak soft labels, pretrained encoder",
        ),
    }
    test_gold = gold[test]
    groups = [str(item["patient_key"]) for item in test_items]
    results, histories, predictions, probabilities, summaries = [], [], [], {}, []
    for name in cfg.models:
        targets, weights, rows, encoder, description = plans[name]
        use = rows & (weights.sum(axis=1) > 0)
        if not use.any():
            raise WeakTrainingError(f"model {name}: no training image with a label", cfg.source)
        model = build_classifier(len(observations), **architecture, encoder=encoder, seed=cfg.seed)
        t0 = time.perf_counter()
        history = fit_classifier(
            model,
            train_images[torch.as_tensor(np.flatnonzero(use))],
            targets[use],
            weights[use],
            steps=steps,
            batch_size=cfg.batch_size,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            seed=cfg.seed,
            device=device,
        )
        seconds = time.perf_counter() - t0
        probs = predict_probabilities(model, test_images, device=device)
        probabilities[name] = probs
        frame = evaluate_multilabel(
            test_gold,
            probs,
            groups,
            observations,
            min_positives=cfg.min_test_positives,
            n_boot=cfg.n_boot,
            seed=cfg.seed,
        )
        frame.insert(0, "model", name)
        results.append(frame)
        histories += [{"model": name, **record} for record in history]
        summaries.append(
            {
                "model": name,
                "training labels": description,
                "training images": int(use.sum()),
                "label mass": float((targets[use] * weights[use]).sum()),
                "steps": steps,
                "seconds": seconds,
                "parameters": sum(p.numel() for p in model.parameters()),
            }
        )
        for j, observation in enumerate(observations):
            for i, item in enumerate(test_items):
                predictions.append(
                    {
                        "model": name,
                        "case_key": item["case_key"],
                        "patient_key": item["patient_key"],
                        "observation": observation,
                        "gold": test_gold[i, j],
                        "probability": probs[i, j],
                    }
                )
        logger.info("%s: trained %d steps in %.1f s", name, steps, seconds)
    results_frame = pd.concat(results, ignore_index=True)
    evaluable = [o for o in observations if (results_frame[(results_frame.observation == o)].status == "ok").all()]
    reference = "gold-subset" if "gold-subset" in cfg.models else cfg.models[0]
    differences = []
    for name in cfg.models:
        if name == reference:
            continue
        frame = compare_multilabel(
            test_gold,
            probabilities[name],
            probabilities[reference],
            groups,
            observations,
            evaluable,
            n_boot=cfg.n_boot,
            seed=cfg.seed,
        )
        frame.insert(0, "comparison", f"{name} - {reference}")
        differences.append(frame)
    differences_frame = (
        pd.concat(differences, ignore_index=True)
        if differences
        else pd.DataFrame(columns=["comparison", "observation", "difference", "ci_low", "ci_high", "n_boot_used"])
    )

    files = {
        "results": out / "results.csv",
        "differences": out / "differences.csv",
        "predictions": out / "predictions.csv",
        "history": out / "history.csv",
        "weak_label_quality": out / "weak_label_quality.csv",
        "weak_labels": out / "weak_labels.csv",
        "splits": out / "splits.json",
        "config": out / "config.json",
        "report": out / "report.md",
    }
    results_frame.to_csv(files["results"], index=False)
    differences_frame.to_csv(files["differences"], index=False)
    pd.DataFrame(predictions).to_csv(files["predictions"], index=False)
    pd.DataFrame(histories).to_csv(files["history"], index=False)
    weak_quality.to_csv(files["weak_label_quality"], index=False)
    figure = _plot(results_frame, out / "auroc.png")
    if figure is not None:
        files["figure"] = figure
    elapsed = time.perf_counter() - started
    facts = {
        "source": source_description,
        "gold": gold_description,
        "n_images": len(items),
        "n_train": len(train_items),
        "n_test": len(test_items),
        "train_patients": len({str(i["patient_key"]) for i in train_items}),
        "test_patients": len({str(i["patient_key"]) for i in test_items}),
        "gold_patients": len(gold_patients),
        "gold_images": int(in_subset.sum()),
        "n_reports": n_reports,
        "n_weak": int(sum(item["weak_labelled"] for item in soft)),
        "label_seconds": label_seconds,
        "pretrain_seconds": pretrain_seconds,
        "encoders": encoders,
        "architecture": architecture,
        "steps": steps,
        "reference": reference,
        "machine": _machine(device),
        "elapsed": elapsed,
        "problems": problems,
    }
    config_record = {
        **cfg.to_dict(),
        "command": command,
        "versions": _versions(),
        "architecture": architecture,
        "encoders_used": encoders is not None and "pretrained-weak" in cfg.models,
        "elapsed_seconds": round(elapsed, 1),
    }
    files["config"].write_text(json.dumps(config_record, indent=2, default=str) + "\n")
    files["report"].write_text(
        _report(cfg, command, facts, pd.DataFrame(summaries), results_frame, differences_frame, weak_quality)
    )
    for problem in problems:
        logger.warning("%s", problem)
    return WeakComparisonResult(
        out, results_frame, differences_frame, weak_quality, {k: os.fspath(v) for k, v in files.items()}
    )


def _weak_quality(
    observations: Sequence[str],
    targets: np.ndarray,
    weights: np.ndarray,
    gold: np.ndarray,
    items: Sequence[Mapping[str, Any]],
) -> pd.DataFrame:
    """The weak targets against the gold labels of the training images (AUROC of the targets as scores)."""
    from medssl.eval.metrics import auroc

    labelled = np.array([bool(item["weak_labelled"]) for item in items])
    rows = []
    for j, name in enumerate(observations):
        known = labelled & ~np.isnan(gold[:, j]) & (weights[:, j] > 0)
        y = gold[known, j]
        value = auroc(y.astype(np.int64), targets[known, j]) if 0 < y.sum() < len(y) else math.nan
        rows.append(
            {
                "observation": name,
                "images": int(len(items)),
                "weak_labelled": int(labelled.sum()),
                "gold_positive": int(np.nansum(gold[:, j] == 1)),
                "weak_expected_positive": float((targets[:, j] * weights[:, j]).sum()),
                "auroc_vs_gold": value,
            }
        )
    return pd.DataFrame(rows)


def _plot(results: pd.DataFrame, path: Path) -> str | None:
    from medssl.eval.plots import plot_metric_bars

    ok = results[results.status.str.startswith("ok")]
    names = [o for o in dict.fromkeys(ok.observation) if (ok.observation == o).sum() == results.model.nunique()]
    if not names:
        return None
    estimates = {
        model: {
            row.observation: {"value": row.auroc, "ci_low": row.ci_low, "ci_high": row.ci_high}
            for row in frame.itertuples()
            if row.observation in names
        }
        for model, frame in ok.groupby("model", sort=False)
    }
    plot_metric_bars(estimates, metrics=names, title="Test AUROC (95% CI, patient bootstrap)", path=path)
    return os.fspath(path)


def _fmt(value: float, digits: int = 3) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _report(
    cfg: WeakTrainingConfig,
    command: str | None,
    facts: Mapping[str, Any],
    summaries: pd.DataFrame,
    results: pd.DataFrame,
    differences: pd.DataFrame,
    quality: pd.DataFrame,
) -> str:
    models = list(cfg.models)
    arch = facts["architecture"]
    lines = ["# Weak labels from reports vs gold labels: chest X-ray classification", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    lines += [
        f"- Data: {facts['source']}; {facts['n_images']} images; training {facts['n_train']} images of "
        f"{facts['train_patients']} patients, test {facts['n_test']} images of {facts['test_patients']} patients "
        f"({'official split' if cfg.official_split else f'patient-level split, seed {cfg.seed}'}; `splits.json`).",
        f"- Gold labels (test, gold-subset, gold-all): {facts['gold']}.",
        f"- Weak labels: {facts['n_reports']} training reports labelled by the {cfg.label_model} "
        f"({facts['label_seconds']:.1f} s); {facts['n_weak']} of {facts['n_train']} training images labelled; "
        f"policy U-{cfg.policy.capitalize()}, blank {cfg.blank}; noise-aware BCE on the soft targets.",
        f"- Gold subset: {facts['gold_patients']} training patients ({cfg.gold_fraction:.0%}), {facts['gold_images']} "
        "images.",
        f"- Model: {arch['backbone']} (width {arch['width']}, {json.dumps(arch['backbone_kwargs'])}) + linear head, "
        f"{cfg.image_size} px; {facts['steps']} AdamW steps for every model (batch {cfg.batch_size}, lr {cfg.lr}, "
        f"cosine), the same initial weights (seed {cfg.seed}), no model selection: the last weights are tested once.",
    ]
    if "pretrained-weak" in models:
        if cfg.encoders:
            lines.append(f"- Pretrained encoder: {Path(cfg.encoders).name} (given).")
        else:
            lines.append(
                f"- Pretrained encoder: ConVIRT, {cfg.pretrain_steps} steps on the training images and reports "
                f"({facts['pretrain_seconds']:.0f} s), then fine-tuned on the weak labels."
            )
    lines += [f"- Machine: {facts['machine']}; total {facts['elapsed']:.0f} s.", "", "## Models", ""]
    lines += _table(
        ["model", "training labels", "images", "steps", "seconds"],
        [
            [r["model"], r["training labels"], r["training images"], r["steps"], f"{r['seconds']:.1f}"]
            for r in summaries.to_dict("records")
        ],
    )
    lines += ["", "## Test AUROC (95% CI, patient-level bootstrap)", ""]
    header = ["observation", "test positives / negatives", *models]
    rows = []
    for observation in [*cfg.observations, "macro"]:
        part = results[results.observation == observation].set_index("model")
        first = part.iloc[0]
        cells = []
        for model in models:
            row = part.loc[model]
            cells.append(
                f"{_fmt(row.auroc)} ({_fmt(row.ci_low)}-{_fmt(row.ci_high)})" if row.status.startswith("ok") else "-"
            )
        counts = f"{first.n_positive} / {first.n_negative}" if observation != "macro" else first.status
        rows.append([observation, counts, *cells])
    lines += _table(header, rows)
    rare = results[(results.model == models[0]) & ~results.status.str.startswith("ok")]
    if len(rare):
        lines += ["", "Not evaluated (reported, not dropped):", ""]
        lines += [f"- {row.observation}: {row.status}" for row in rare.itertuples()]
    if len(differences):
        lines += ["", f"## AUROC differences against {facts['reference']} (paired patient bootstrap)", ""]
        lines += _table(
            ["comparison", "observation", "difference (95% CI)"],
            [
                [r.comparison, r.observation, f"{_fmt(r.difference, 3)} ({_fmt(r.ci_low)} to {_fmt(r.ci_high)})"]
                for r in differences.itertuples()
            ],
        )
    lines += ["", "## Weak labels against gold on the training images", ""]
    lines += _table(
        ["observation", "gold positives", "weak expected positives", "AUROC of the weak targets"],
        [
            [r.observation, r.gold_positive, f"{r.weak_expected_positive:.1f}", _fmt(r.auroc_vs_gold)]
            for r in quality.itertuples()
        ],
    )
    if Path(cfg.out, "auroc.png").is_file():
        lines += ["", "![test AUROC](auroc.png)"]
    if facts["problems"]:
        lines += ["", f"## Problems ({len(facts['problems'])}, skipped)", ""]
        lines += [f"- {p}" for p in facts["problems"][:50]]
    lines += [
        "",
        "Notes: confidence intervals resample test patients (all images of a patient together), "
        f"{cfg.n_boot} resamples, seed {cfg.seed}; an observation needs {cfg.min_test_positives} test positives and "
        "negatives to be scored. Gold labels from a CheXpert-coded CSV are themselves read from reports (1 present, "
        "0 and blank absent, -1 unknown). On synthetic data the reports are generated for the shipped rules, so the "
        "weak labels are cleaner than on real reports.",
        "",
    ]
    return "\n".join(lines)
