"""Label efficiency of an image-SSL encoder: linear probe, kNN and fine-tuning at 1/10/100 % labels vs random init.

The protocol, the probes, the metrics and the report are :mod:`medssl.eval.probe`'s (``linear_probe``,
``knn_probe``, ``finetune``, ``subsample_patients``, ``evaluate_scores``, ``write_label_efficiency_report``). This
module only adapts two things that :func:`medssl.eval.probe.label_efficiency` fixes for radiographs:

* the **encoder**: MAE exports a ViT (``backbone: "vit"``), the other methods a MONAI CNN trunk; both load through
  :func:`medssl.ssl.methods.load_ssl_image_encoder` (also at random initialisation, the baseline);
* the **loading**: mammograms are oriented and cropped, MR volumes reoriented and scaled, as in pretraining
  (:func:`medssl.ssl.methods.ssl_load_transforms` with the exported ``preprocessing``).

Instead of an exported encoder, :func:`label_efficiency_of` also takes ``{name: (encoder, out_features)}`` with a
preprocessing, for experiments that never write an export.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from medssl.log import get_logger

__all__ = ["ssl_label_efficiency", "label_efficiency_of"]

logger = get_logger(__name__)


def label_efficiency_of(
    encoders: Mapping[str, Callable[[], tuple[nn.Module, int]]],
    preprocessing: Mapping[str, Any],
    train_items: Sequence[Mapping[str, Any]],
    test_items: Sequence[Mapping[str, Any]],
    labels: Sequence[str],
    fractions: Sequence[float] = (0.01, 0.1, 1.0),
    protocols: Sequence[str] = ("linear-probe",),
    seed: int = 0,
    n_boot: int = 1000,
    batch_size: int = 32,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    C: float = 1.0,
    k: int = 20,
    finetune_epochs: int = 10,
    finetune_lr: float = 1e-4,
) -> list[dict[str, Any]]:
    """The label-efficiency rows of several encoders on the same patient subsets and test split.

    Args:
        encoders: ``{name: factory}``; each factory returns ``(encoder, out_features)`` (a fresh encoder: fine-tuning
            trains a copy).
        preprocessing: how images are loaded (an export's ``preprocessing``).
        train_items: the training split (subsampled by patient per fraction).
        test_items: the test split.
        labels: label names or item keys (:func:`medssl.eval.probe.item_labels`).
        fractions: label fractions in (0, 1].
        protocols: any of ``linear-probe``, ``knn-probe``, ``finetune``.
        seed: seed of the subsets, fits and bootstrap.
        n_boot: bootstrap resamples.
        batch_size: images per forward pass / step.
        device: where to compute.
        num_workers: loader workers.
        C: linear-probe regularisation.
        k: kNN neighbours.
        finetune_epochs: fine-tuning epochs.
        finetune_lr: fine-tuning learning rate.

    Returns:
        Rows as :func:`medssl.eval.probe.label_efficiency` returns them (``encoder`` is the name given here).

    Raises:
        ProbeError: an unknown protocol, or unusable labels.
    """
    from medssl.data.splits import patient_groups
    from medssl.eval.probe import (
        PROTOCOLS,
        ProbeError,
        evaluate_scores,
        extract_features,
        finetune,
        item_labels,
        knn_probe,
        linear_probe,
        subsample_patients,
    )
    from medssl.eval.zero_shot import estimates_table
    from medssl.ssl.methods import ssl_load_transforms

    unknown = [p for p in protocols if p not in PROTOCOLS]
    if unknown:
        raise ProbeError(f"unknown protocol(s) {unknown}; known: {list(PROTOCOLS)}")
    train_items, test_items = [dict(i) for i in train_items], [dict(i) for i in test_items]
    key = preprocessing.get("image_key", "image")
    transforms = ssl_load_transforms(preprocessing, key, final_size=int(preprocessing.get("image_size", 224)))
    train_y, test_y = item_labels(train_items, labels), item_labels(test_items, labels)
    test_groups = patient_groups(test_items)
    subsets = {f: subsample_patients(train_items, f, seed) for f in fractions}
    position = {item["case_key"]: i for i, item in enumerate(train_items)}
    rows: list[dict[str, Any]] = []
    for name, factory in encoders.items():
        encoder, out_features = factory()
        probes = [p for p in protocols if p != "finetune"]
        if probes:
            train_x = np.full((len(train_items), out_features), np.nan)
            test_x = np.full((len(test_items), out_features), np.nan)
            found, where = extract_features(encoder, train_items, transforms, key, batch_size, device, num_workers)
            train_x[where] = found
            found, where = extract_features(encoder, test_items, transforms, key, batch_size, device, num_workers)
            test_x[where] = found
            test_ok = ~np.isnan(test_x).any(axis=1)
        for fraction in fractions:
            subset = subsets[fraction]
            rows_of = np.array([position[item["case_key"]] for item in subset])
            info = {
                "encoder": name,
                "fraction": float(fraction),
                "n_train_patients": len(set(patient_groups(subset))),
                "n_train": len(subset),
                "n_test": len(test_items),
            }
            for protocol in protocols:
                if protocol == "finetune":
                    scores = finetune(
                        copy.deepcopy(encoder),
                        out_features,
                        subset,
                        train_y[rows_of],
                        test_items,
                        transforms,
                        key,
                        finetune_epochs,
                        finetune_lr,
                        batch_size=batch_size,
                        seed=seed,
                        device=device,
                        num_workers=num_workers,
                    )
                else:
                    ok = rows_of[~np.isnan(train_x[rows_of]).any(axis=1)]
                    probe = linear_probe if protocol == "linear-probe" else knn_probe
                    extra = {"C": C, "seed": seed} if protocol == "linear-probe" else {"k": k}
                    scores = np.full(test_y.shape, np.nan)
                    scores[test_ok] = probe(train_x[ok], train_y[ok], test_x[test_ok], **extra)
                estimates = evaluate_scores(scores, test_y, labels, test_groups, n_boot=n_boot, seed=seed)
                rows += estimates_table(estimates, **info, protocol=protocol)
                logger.info("%s %s at %g: macro AUROC %s", name, protocol, fraction, estimates.get("auroc/macro"))
    return rows


def ssl_label_efficiency(
    encoder_path: str | os.PathLike,
    train_items: Sequence[Mapping[str, Any]],
    test_items: Sequence[Mapping[str, Any]],
    labels: Sequence[str],
    baseline: bool = True,
    seed: int = 0,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Label efficiency of an exported SSL encoder (CNN or MAE's ViT) against the same architecture at random init.

    Args:
        encoder_path: ``image.pt`` / ``image.json`` or their folder (``OUT/encoders`` of ``medssl pretrain``).
        train_items: the training split.
        test_items: the test split.
        labels: label names or item keys.
        baseline: also evaluate the randomly initialised encoder (``random-init``).
        seed: seed of the random initialisation, the subsets, the fits and the bootstrap.
        kwargs: other arguments of :func:`label_efficiency_of` (``fractions``, ``protocols``, ``n_boot`` ...).

    Returns:
        The rows (write them with :func:`medssl.eval.probe.write_label_efficiency_report`).
    """
    from medssl.ssl.methods import load_ssl_image_encoder

    _, _, preprocessing = load_ssl_image_encoder(encoder_path, pretrained=False, seed=seed)

    def factory(pretrained: bool) -> Callable[[], tuple[nn.Module, int]]:
        def build() -> tuple[nn.Module, int]:
            encoder, out_features, _ = load_ssl_image_encoder(encoder_path, pretrained=pretrained, seed=seed)
            return encoder, out_features

        return build

    encoders = {"pretrained": factory(True), **({"random-init": factory(False)} if baseline else {})}
    return label_efficiency_of(encoders, preprocessing, train_items, test_items, labels, seed=seed, **kwargs)
