"""How much a pretrained image encoder helps with few labels: linear probe, kNN probe and fine-tuning at 1/10/100 %.

The protocol of ConVIRT and GLoRIA's label-efficiency experiments:

1. the training split is subsampled **by patient** to each label fraction (seeded; the patients of a smaller fraction
   are a subset of a larger one's, so the curve measures the labels, not a new draw);
2. each encoder is evaluated on the same subsets and the same test split:

   * **linear probe**: scikit-learn ``LogisticRegression`` (one per label, standardised features) on frozen features;
   * **kNN probe**: the share of positive labels among the ``k`` nearest training features (cosine), weighted by
     similarity (the usual self-supervised check, no training at all);
   * **fine-tuning**: the encoder and a linear head trained end to end (binary cross-entropy, unknown labels masked);

3. the pretrained encoder is compared with the same architecture **randomly initialised** and trained on the same
   labels (for the probes: its random features), so the gain of pretraining is measured, not assumed;
4. AUROC per label and its macro average with bootstrap CIs over test patients
   (:func:`medssl.eval.metrics.bootstrap_ci`), and the gain of pretraining (macro AUROC of the pretrained encoder
   minus the random-init one's) with a paired bootstrap CI (:func:`auroc_gain`); results as a CSV, a markdown table
   and the label-efficiency plot.

Labels come from the datalist items: observation names (``"Pleural Effusion"``: the item key ``pleural_effusion``,
masked by ``label_mask`` where the datalist has one) or any item key holding 0/1. Unknown labels are NaN and left out.
Everything image-only: the image-SSL methods use the same functions with their exported encoders.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medssl.eval.metrics import Estimate
from medssl.exceptions import MedsslError
from medssl.log import get_logger

__all__ = [
    "ProbeError",
    "DEFAULT_FRACTIONS",
    "PROTOCOLS",
    "item_labels",
    "subsample_patients",
    "extract_features",
    "linear_probe",
    "knn_probe",
    "finetune",
    "evaluate_scores",
    "auroc_gain",
    "label_efficiency",
    "write_label_efficiency_report",
    "encoder_from_export",
]

logger = get_logger(__name__)

DEFAULT_FRACTIONS = (0.01, 0.1, 1.0)
PROTOCOLS = ("linear-probe", "knn-probe", "finetune")


class ProbeError(MedsslError):
    """Labels, fractions or features that a probe cannot use."""


# ----------------------------------------------------------------------------------------------------------------
# Labels and subsets
# ----------------------------------------------------------------------------------------------------------------


def item_labels(items: Sequence[Mapping[str, Any]], labels: Sequence[str]) -> np.ndarray:
    """A ``(N, K)`` float matrix of 0/1 labels, NaN where unknown.

    Args:
        items: datalist items.
        labels: CheXpert observation names (``"Pleural Effusion"``, looked up as ``pleural_effusion`` and masked by
            the item's ``label_mask``) or plain item keys.

    Returns:
        The matrix.

    Raises:
        ProbeError: no item has one of the labels.
    """
    from medssl.data.layouts.chexpert import OBSERVATION_KEYS
    from medssl.data.reports import CHEXPERT_OBSERVATIONS

    out = np.full((len(items), len(labels)), np.nan)
    for j, name in enumerate(labels):
        key = OBSERVATION_KEYS.get(name, name)
        position = CHEXPERT_OBSERVATIONS.index(name) if name in CHEXPERT_OBSERVATIONS else None
        for i, item in enumerate(items):
            value = item.get(key)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            mask = item.get("label_mask")
            if position is not None and mask is not None and not float(mask[position]):
                continue
            out[i, j] = float(value)
        if np.isnan(out[:, j]).all():
            raise ProbeError(f"no item has a known {name!r} label (item key {key!r})")
    bad = ~np.isnan(out) & ~np.isin(out, (0.0, 1.0))
    if bad.any():
        raise ProbeError(f"labels must be 0 or 1; found {sorted(set(out[bad].tolist()))[:5]}")
    return out


def subsample_patients(items: Sequence[Mapping[str, Any]], fraction: float, seed: int = 0) -> list[dict[str, Any]]:
    """Keep the items of a seeded ``fraction`` of the patients (at least one patient).

    The patient order is drawn once from ``seed``, so the patients of a smaller fraction are among those of a
    larger one.

    Args:
        items: datalist items with ``patient_key``.
        fraction: share of patients, in (0, 1].
        seed: seed of the patient order.

    Returns:
        The kept items, in their original order.

    Raises:
        ProbeError: a fraction outside (0, 1].
    """
    return [dict(items[i]) for i in _subset_positions(items, fraction, seed)]


def _subset_positions(items: Sequence[Mapping[str, Any]], fraction: float, seed: int) -> np.ndarray:
    """Positions of the items :func:`subsample_patients` keeps."""
    from medssl.data.splits import patient_groups

    if not 0 < float(fraction) <= 1:
        raise ProbeError(f"label fraction must be in (0, 1], got {fraction}")
    groups = patient_groups(items)
    patients = np.unique(groups)
    order = np.random.default_rng(seed).permutation(patients.size)
    n_keep = max(1, math.ceil(float(fraction) * patients.size - 1e-9))
    keep = set(patients[order[:n_keep]].tolist())
    return np.array([i for i, group in enumerate(groups) if group in keep], dtype=int)


# ----------------------------------------------------------------------------------------------------------------
# Features and probes
# ----------------------------------------------------------------------------------------------------------------


def _image_features(encoder: nn.Module, image: torch.Tensor) -> torch.Tensor:
    out = encoder(image)
    return out[0] if isinstance(out, (tuple, list)) else out


_INDEX = "_probe_index"
_TARGET = "_probe_y"


def _loader(
    items: Sequence[Mapping[str, Any]],
    transforms: Sequence[Callable],
    image_key: str,
    batch_size: int,
    num_workers: int,
    shuffle: bool = False,
    seed: int = 0,
):
    """Batches of ``{image_key, _probe_index[, _probe_y]}``; items that fail to load are reported and dropped."""
    from monai.data import Dataset
    from monai.transforms import Compose, SelectItemsd
    from torch.utils.data import DataLoader

    from medssl.engines.data import SeededDataset, collate_dropping_failures

    indexed = [dict(item, **{_INDEX: i}) for i, item in enumerate(items)]
    pipeline = Compose([*transforms, SelectItemsd([image_key, _INDEX, _TARGET], allow_missing_keys=True)])
    dataset = SeededDataset(Dataset(indexed), pipeline, seed=seed)
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        num_workers=num_workers,
        generator=generator,
        collate_fn=collate_dropping_failures,
    )


def _images(batch: Mapping[str, Any], image_key: str, device: str | torch.device) -> torch.Tensor:
    image = batch[image_key]
    return (image.as_tensor() if hasattr(image, "as_tensor") else torch.as_tensor(image)).to(device)


@torch.no_grad()
def extract_features(
    encoder: nn.Module,
    items: Sequence[Mapping[str, Any]],
    transforms: Sequence[Callable],
    image_key: str = "image",
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Frozen features of every item that loads (encoder in eval mode); the others are reported and left out.

    Args:
        encoder: maps ``(B, C, *spatial)`` to ``(B, F)`` (or a tuple whose first entry is that, like
            :class:`medssl.networks.encoders.ImageEncoder`).
        items: datalist items.
        transforms: deterministic transforms giving ``image_key`` as a tensor.
        image_key: the image key.
        batch_size: images per forward pass.
        device: where to compute.
        num_workers: loader workers.

    Returns:
        ``(features, index)``: ``(M, F)`` float64 features and the ``(M,)`` positions in ``items`` they belong to.

    Raises:
        ProbeError: no item could be loaded.
    """
    encoder.eval().to(device)
    parts, index = [], []
    for batch in _loader(items, transforms, image_key, batch_size, num_workers):
        if batch is None:
            continue
        parts.append(_image_features(encoder, _images(batch, image_key, device)).float().cpu().numpy())
        index.append(np.asarray(batch[_INDEX]).reshape(-1))
    if not parts:
        raise ProbeError(f"none of the {len(items)} images could be loaded")
    return np.concatenate(parts).astype(np.float64), np.concatenate(index).astype(int)


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    C: float = 1.0,
    max_iter: int = 2000,
    seed: int = 0,
) -> np.ndarray:
    """Fit one logistic regression per label on standardised frozen features; predict test probabilities.

    Args:
        train_x: ``(N, F)`` training features.
        train_y: ``(N, K)`` 0/1 labels, NaN unknown (left out of that label's fit).
        test_x: ``(M, F)`` test features.
        C: inverse L2 regularisation strength.
        max_iter: solver iterations.
        seed: seed of the solver.

    Returns:
        ``(M, K)`` probabilities; a label with a single class among its training rows gets NaN (logged).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_y = np.asarray(train_y, dtype=np.float64).reshape(len(train_x), -1)
    out = np.full((len(test_x), train_y.shape[1]), np.nan)
    for j in range(train_y.shape[1]):
        known = ~np.isnan(train_y[:, j])
        y = train_y[known, j]
        if np.unique(y).size < 2:
            logger.warning("linear probe: label %d has a single class among %d training rows: not fitted", j, y.size)
            continue
        model = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=max_iter, random_state=seed))
        model.fit(train_x[known], y.astype(int))
        out[:, j] = model.predict_proba(test_x)[:, 1]
    return out


def knn_probe(
    train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray, k: int = 20, temperature: float = 0.07
) -> np.ndarray:
    """Weighted kNN on cosine similarity: each label's score is the weighted share of positive neighbours.

    Weights are ``exp(cos / temperature)`` (the kNN monitor of self-supervised training). Only neighbours whose label
    is known vote for that label.

    Args:
        train_x: ``(N, F)`` training features.
        train_y: ``(N, K)`` 0/1 labels, NaN unknown.
        test_x: ``(M, F)`` test features.
        k: neighbours.
        temperature: weight sharpness.

    Returns:
        ``(M, K)`` scores in [0, 1] (NaN for a label no training row knows).
    """
    train_y = np.asarray(train_y, dtype=np.float64).reshape(len(train_x), -1)

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    sim = unit(np.asarray(test_x, dtype=np.float64)) @ unit(np.asarray(train_x, dtype=np.float64)).T
    out = np.full((len(test_x), train_y.shape[1]), np.nan)
    for j in range(train_y.shape[1]):
        known = np.flatnonzero(~np.isnan(train_y[:, j]))
        if known.size == 0:
            continue
        kk = min(int(k), known.size)
        s = sim[:, known]
        top = np.argpartition(-s, kk - 1, axis=1)[:, :kk]
        top_sim = np.take_along_axis(s, top, axis=1)
        weights = np.exp((top_sim - top_sim.max(axis=1, keepdims=True)) / temperature)
        votes = train_y[known[top], j]
        out[:, j] = (weights * votes).sum(axis=1) / weights.sum(axis=1)
    return out


class _Classifier(nn.Module):
    def __init__(self, encoder: nn.Module, in_features: int, n_labels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(in_features, n_labels)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(_image_features(self.encoder, image))


def finetune(
    encoder: nn.Module,
    out_features: int,
    train_items: Sequence[Mapping[str, Any]],
    train_y: np.ndarray,
    test_items: Sequence[Mapping[str, Any]],
    transforms: Sequence[Callable],
    image_key: str = "image",
    epochs: int = 10,
    lr: float = 1e-4,
    weight_decay: float = 1e-4,
    batch_size: int = 32,
    seed: int = 0,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
) -> np.ndarray:
    """Train the encoder with a linear head on the labelled items (BCE, unknown labels masked); predict the test set.

    Args:
        encoder: the image encoder (trained in place: pass a copy to keep the original).
        out_features: its feature size.
        train_items: labelled training items.
        train_y: ``(N, K)`` their labels (NaN unknown).
        test_items: items to predict.
        transforms: deterministic transforms giving ``image_key`` as a tensor (training uses the same ones).
        image_key: the image key.
        epochs: passes over the training items.
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        batch_size: images per step.
        seed: seed of the head, the order and dropout.
        device: where to train.
        num_workers: loader workers.

    Returns:
        ``(M, K)`` probabilities of the test items (NaN rows for test items that could not be loaded).
    """
    train_y = np.asarray(train_y, dtype=np.float64).reshape(len(train_items), -1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _Classifier(encoder, out_features, train_y.shape[1]).to(device)
        labelled = [dict(item, **{_TARGET: train_y[i].astype(np.float32)}) for i, item in enumerate(train_items)]
        loader = _loader(labelled, transforms, image_key, batch_size, num_workers, shuffle=True, seed=seed)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        for _ in range(int(epochs)):
            model.train()
            for batch in loader:
                if batch is None:
                    continue
                image = _images(batch, image_key, device)
                y = torch.as_tensor(batch[_TARGET]).to(device)
                known = ~torch.isnan(y)
                if image.shape[0] < 2 or not known.any():
                    continue  # BatchNorm needs two images; a batch without labels teaches nothing
                logits = model(image)
                loss = nn.functional.binary_cross_entropy_with_logits(logits[known], y[known])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
    logits, index = _predict_logits(model, test_items, transforms, image_key, batch_size, device, num_workers)
    out = np.full((len(test_items), train_y.shape[1]), np.nan)
    out[index] = 1.0 / (1.0 + np.exp(-logits))
    return out


@torch.no_grad()
def _predict_logits(model, items, transforms, image_key, batch_size, device, num_workers):
    model.eval()
    parts, index = [], []
    for batch in _loader(items, transforms, image_key, batch_size, num_workers):
        if batch is None:
            continue
        parts.append(model(_images(batch, image_key, device)).float().cpu().numpy())
        index.append(np.asarray(batch[_INDEX]).reshape(-1))
    if not parts:
        raise ProbeError(f"none of the {len(items)} test images could be loaded")
    return np.concatenate(parts).astype(np.float64), np.concatenate(index).astype(int)


# ----------------------------------------------------------------------------------------------------------------
# Metrics and the label-efficiency experiment
# ----------------------------------------------------------------------------------------------------------------


def evaluate_scores(
    scores: np.ndarray,
    labels: np.ndarray,
    label_names: Sequence[str],
    groups: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> dict[str, Estimate]:
    """AUROC per label and macro, with bootstrap CIs over patients (labels or scores NaN left out).

    Returns:
        ``{"auroc/<label>": Estimate, "auroc/macro": Estimate}`` (labels that cannot be scored are skipped).
    """
    from medssl.eval.zero_shot import zero_shot_evaluation

    scores = np.asarray(scores, dtype=np.float64).copy()
    labels = np.asarray(labels, dtype=np.float64).copy()
    labels[np.isnan(scores)] = np.nan  # a label without a fitted model is not scored
    scores = np.nan_to_num(scores, nan=0.5)
    return zero_shot_evaluation(scores, labels, label_names, groups, n_boot=n_boot, seed=seed)


def encoder_from_export(
    path: str | os.PathLike, pretrained: bool = True, seed: int = 0
) -> tuple[nn.Module, int, dict[str, Any]]:
    """The image encoder of an export (``image.pt`` + ``image.json``), or the same architecture at random init.

    Args:
        path: ``image.pt``, ``image.json`` or their folder.
        pretrained: load the weights (False: random initialisation under ``seed``, for the baseline).
        seed: seed of the random initialisation.

    Returns:
        ``(encoder, out_features, preprocessing)``; the encoder returns ``(features, regions)``.
    """
    import json

    from medssl.networks.encoders import ImageEncoder, load_pretrained_image_encoder

    path = Path(path)
    meta_path = path / "image.json" if path.is_dir() else path.with_suffix(".json")
    if not meta_path.is_file():
        raise ProbeError(
            "no image.json: not an exported image encoder (medssl pretrain writes OUT/encoders)", meta_path
        )
    if pretrained:
        encoder = load_pretrained_image_encoder(path, region_layer=None)
    else:
        meta = json.loads(meta_path.read_text())
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            encoder = ImageEncoder(
                meta["backbone"],
                meta["spatial_dims"],
                meta["in_channels"],
                meta.get("width", 1.0),
                None,
                meta.get("backbone_kwargs") or {},
            )
    meta = json.loads(meta_path.read_text())
    return encoder, encoder.out_features, dict(meta.get("preprocessing") or {})


def label_efficiency(
    encoder_path: str | os.PathLike,
    train_items: Sequence[Mapping[str, Any]],
    test_items: Sequence[Mapping[str, Any]],
    labels: Sequence[str],
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    protocols: Sequence[str] = ("linear-probe",),
    baseline: bool = True,
    seed: int = 0,
    n_boot: int = 1000,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    image_size: int | None = None,
    C: float = 1.0,
    k: int = 20,
    finetune_epochs: int = 10,
    finetune_lr: float = 1e-4,
    load_encoder: Callable[[Any, bool, int], tuple[nn.Module, int, dict[str, Any]]] | None = None,
    transforms: Sequence[Callable] | Callable[[Mapping[str, Any]], Sequence[Callable]] | None = None,
) -> list[dict[str, Any]]:
    """Run the label-efficiency experiment (see the module docstring) and return its result rows.

    Works with any image encoder, 2D or 3D: ``load_encoder`` builds it (pretrained or at random init) and
    ``transforms`` prepare its images; the defaults read a medssl export and load radiographs.

    Args:
        encoder_path: the exported image encoder (``image.pt`` / ``image.json`` or their folder), or whatever
            ``load_encoder`` takes.
        train_items: the training split (subsampled by patient per fraction).
        test_items: the test split (always whole).
        labels: label names (see :func:`item_labels`).
        fractions: label fractions in (0, 1].
        protocols: any of ``linear-probe``, ``knn-probe``, ``finetune``.
        baseline: also evaluate the randomly initialised encoder.
        seed: seed of the subsets, the random initialisation, the fits and the bootstrap.
        n_boot: bootstrap resamples.
        batch_size: images per forward pass / training step.
        device: where to compute.
        num_workers: loader workers.
        image_size: override the exported preprocessing's image size.
        C: linear-probe regularisation.
        k: kNN neighbours.
        finetune_epochs: fine-tuning epochs.
        finetune_lr: fine-tuning learning rate.
        load_encoder: ``(encoder_path, pretrained, seed) -> (encoder, out_features, preprocessing)`` (default:
            :func:`encoder_from_export`); ``pretrained=False`` must give the same architecture at random init.
        transforms: deterministic transforms giving the image tensor under ``preprocessing["image_key"]``, or a
            function of the preprocessing returning them (default: radiograph loading,
            :func:`medssl.engines.methods.image_load_transforms`, at the exported image size).

    Returns:
        Rows ``{"encoder", "protocol", "fraction", "n_train_patients", "n_train", "n_test", "metric", "value",
        "ci_low", "ci_high", "n", "n_boot_used"}``.

    Raises:
        ProbeError: an unknown protocol, or unusable labels.
    """
    import copy

    from medssl.data.splits import patient_groups
    from medssl.engines.methods import image_load_transforms
    from medssl.eval.zero_shot import estimates_table

    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise ProbeError(f"unknown protocol(s) {unknown}; known: {list(PROTOCOLS)}")
    train_items, test_items = [dict(i) for i in train_items], [dict(i) for i in test_items]
    train_y_all = item_labels(train_items, labels)
    test_y = item_labels(test_items, labels)
    test_groups = patient_groups(test_items)
    encoders = {"pretrained": True, **({"random-init": False} if baseline else {})}
    rows: list[dict[str, Any]] = []
    all_scores: dict[tuple[str, str, float], np.ndarray] = {}
    positions = {f: _subset_positions(train_items, f, seed) for f in fractions}
    load = load_encoder or encoder_from_export
    for name, pretrained in encoders.items():
        encoder, out_features, prep = load(encoder_path, pretrained, seed)
        key = prep.get("image_key", "image")
        if transforms is None:
            size = int(image_size or prep.get("image_size", 224))
            steps = image_load_transforms(
                key,
                int(prep.get("load_size", size)),
                prep.get("fit", "pad"),
                int(prep.get("in_channels", 1)),
                final_size=size,
            )
        elif isinstance(transforms, Sequence):
            steps = list(transforms)
        else:
            steps = list(transforms(prep))
        probes = [p for p in protocols if p != "finetune"]
        if probes:
            # features of items that could not be loaded are NaN: their rows never enter a fit or a score
            train_x = np.full((len(train_items), out_features), np.nan)
            test_x = np.full((len(test_items), out_features), np.nan)
            features, where = extract_features(encoder, train_items, steps, key, batch_size, device, num_workers)
            train_x[where] = features
            features, where = extract_features(encoder, test_items, steps, key, batch_size, device, num_workers)
            test_x[where] = features
            test_ok = ~np.isnan(test_x).any(axis=1)
        for fraction in fractions:
            rows_of = positions[fraction]
            subset = [train_items[i] for i in rows_of]
            if probes:
                rows_of_ok = rows_of[~np.isnan(train_x[rows_of]).any(axis=1)]
            info = {
                "encoder": name,
                "fraction": float(fraction),
                "n_train_patients": len(set(patient_groups(subset))),
                "n_train": len(subset),
                "n_test": len(test_items),
            }
            for protocol in protocols:
                if protocol in ("linear-probe", "knn-probe"):
                    scores = np.full(test_y.shape, np.nan)
                    if protocol == "linear-probe":
                        fitted = linear_probe(
                            train_x[rows_of_ok], train_y_all[rows_of_ok], test_x[test_ok], C=C, seed=seed
                        )
                    else:
                        fitted = knn_probe(train_x[rows_of_ok], train_y_all[rows_of_ok], test_x[test_ok], k=k)
                    scores[test_ok] = fitted
                else:
                    scores = finetune(
                        copy.deepcopy(encoder),
                        out_features,
                        subset,
                        train_y_all[rows_of],
                        test_items,
                        steps,
                        key,
                        finetune_epochs,
                        finetune_lr,
                        batch_size=batch_size,
                        seed=seed,
                        device=device,
                        num_workers=num_workers,
                    )
                estimates = evaluate_scores(scores, test_y, labels, test_groups, n_boot=n_boot, seed=seed)
                rows += estimates_table(estimates, **info, protocol=protocol)
                all_scores[(name, protocol, float(fraction))] = scores
                logger.info("%s %s at %g: macro AUROC %s", name, protocol, fraction, estimates.get("auroc/macro"))
    if baseline:
        for protocol in protocols:
            for fraction in fractions:
                key = (protocol, float(fraction))
                gain = auroc_gain(
                    all_scores[("pretrained", *key)],
                    all_scores[("random-init", *key)],
                    test_y,
                    test_groups,
                    n_boot=n_boot,
                    seed=seed,
                )
                if gain is None:
                    continue
                info = next(r for r in rows if (r["encoder"], r["protocol"], r["fraction"]) == ("pretrained", *key))
                rows += estimates_table(
                    {"auroc_gain/macro": gain},
                    **{k: info[k] for k in ("fraction", "n_train_patients", "n_train", "n_test")},
                    encoder="pretrained - random-init",
                    protocol=protocol,
                )
    return rows


def auroc_gain(
    scores: np.ndarray,
    baseline_scores: np.ndarray,
    labels: np.ndarray,
    groups: Sequence[str] | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> Estimate | None:
    """Macro AUROC of ``scores`` minus that of ``baseline_scores`` on the same cases, with a paired bootstrap CI.

    Both are computed on the same resamples of patients (:func:`medssl.eval.metrics.bootstrap_ci`), over the labels
    both can score (NaN scores or labels left out). A CI above 0 means the first encoder is better on these labels.

    Args:
        scores: ``(N, K)`` scores of the encoder of interest.
        baseline_scores: ``(N, K)`` scores of the baseline.
        labels: ``(N, K)`` 0/1 labels, NaN unknown.
        groups: patient key of each row (resampling unit).
        n_boot: bootstrap resamples.
        seed: seed of the resampling.
        alpha: one minus the confidence level.

    Returns:
        The estimate, or ``None`` when no label has both classes and scores from both encoders.
    """
    from medssl.eval.metrics import MetricInputError, auroc, bootstrap_ci

    a, b = np.asarray(scores, dtype=np.float64), np.asarray(baseline_scores, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64).copy()
    y[np.isnan(a) | np.isnan(b)] = np.nan
    columns = [j for j in range(y.shape[1]) if np.unique(y[~np.isnan(y[:, j]), j]).size == 2]
    if not columns:
        return None
    k = y.shape[1]

    def gain(y_: np.ndarray, s: np.ndarray) -> float:
        values = []
        for j in columns:
            known = ~np.isnan(y_[:, j])
            if np.unique(y_[known, j]).size < 2:
                raise MetricInputError("a label has a single value in this resample", "AUROC gain")
            values.append(auroc(y_[known, j], s[known, j]) - auroc(y_[known, j], s[known, k + j]))
        return float(np.mean(values))

    both = np.concatenate([np.nan_to_num(a, nan=0.5), np.nan_to_num(b, nan=0.5)], axis=1)
    group_arr = None if groups is None else np.asarray(groups, dtype=object)
    return bootstrap_ci(gain, y, both, group_arr, n_boot=n_boot, alpha=alpha, seed=seed)


def write_label_efficiency_report(
    rows: Sequence[Mapping[str, Any]], out_dir: str | os.PathLike, title: str = "Label efficiency"
) -> dict[str, Path]:
    """Write ``label_efficiency.csv``, ``label_efficiency.md`` and ``label_efficiency.png`` (macro AUROC curves).

    Args:
        rows: :func:`label_efficiency` rows.
        out_dir: the folder (created).
        title: heading of the markdown and the plot.

    Returns:
        ``{"csv", "markdown", "plot"}`` paths (no plot when there is no macro AUROC).
    """
    import pandas as pd

    from medssl.eval.plots import plot_label_efficiency

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = pd.DataFrame(list(rows))
    paths = {"csv": out / "label_efficiency.csv", "markdown": out / "label_efficiency.md"}
    table.to_csv(paths["csv"], index=False)
    lines = [
        f"# {title}",
        "",
        "AUROC with 95% bootstrap CIs over test patients.",
        "",
        "| encoder | protocol | fraction | train patients | metric | AUROC (95% CI) |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['encoder']} | {row['protocol']} | {row['fraction']:g} | {row['n_train_patients']} | "
            f"{row['metric'].split('/', 1)[-1]} | {row['value']:.3f} ({row['ci_low']:.3f}-{row['ci_high']:.3f}) |"
        )
    paths["markdown"].write_text("\n".join(lines) + "\n")
    macro = table[table["metric"] == "auroc/macro"] if len(table) else table
    if len(macro):
        fractions = sorted(macro["fraction"].unique())
        series: dict[str, list[dict[str, float]]] = {}
        for (encoder, protocol), part in macro.groupby(["encoder", "protocol"], sort=False):
            by_fraction = {r["fraction"]: r for r in part.to_dict("records")}
            series[f"{encoder} ({protocol})"] = [
                by_fraction.get(f, {"value": np.nan, "ci_low": np.nan, "ci_high": np.nan}) for f in fractions
            ]
        paths["plot"] = out / "label_efficiency.png"
        plot_label_efficiency(fractions, series, metric_name="macro AUROC", title=title, path=paths["plot"])
    return paths
