"""Post-processing transforms of the bundle configs (MONAI dictionary transforms applied to decollated outputs).

- :class:`FusionOutputsd`: turns a fusion network's output (logits tensor or output dict) and its targets into flat
  keys that MONAI's metric handlers and savers read: ``pred`` (exam probability), ``label`` (exam label),
  ``breast_pred``/``breast_label`` (per breast, -1 where the breast is absent or its label unknown);
- :class:`CaseKeyAsFilenamed`: names an output image by the item's salted ``case_key`` (``SaveImaged`` names files
  after ``filename_or_obj``), so that no input path - which may carry UIDs - reaches an output file name.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

__all__ = [
    "FusionOutputsd",
    "FusionOutputsD",
    "FusionOutputsDict",
    "CaseKeyAsFilenamed",
    "CaseKeyAsFilenameD",
    "CaseKeyAsFilenameDict",
]


def _exam_probability(pred: Any) -> torch.Tensor:
    if isinstance(pred, Mapping):
        if "probs" in pred:
            return torch.as_tensor(pred["probs"]).float().reshape(-1)[:1]
        return torch.sigmoid(torch.as_tensor(pred["logits"]).float().reshape(-1)[:1])
    return torch.sigmoid(torch.as_tensor(pred).float().reshape(-1)[:1])


class FusionOutputsd(MapTransform):
    """Flatten one item's fusion output and targets for the metric handlers.

    Reads ``pred_key`` (a logits tensor ``(1,)``, or a fusion output dict with ``logits``/``probs`` and optionally
    ``breast_logits``/``breast_probs``, ``breast_presence``) and ``label_key`` (a label, or the targets dict of
    :class:`medssl.engines.supervised.FusionPrepareBatch`). Writes ``pred`` ``(1,)`` - the exam probability (late
    fusion's mean of the present views, else the sigmoid of the exam logits) - and ``label`` ``(1,)``; with breast
    outputs also ``breast_pred`` ``(NB,)`` (NaN for a breast absent from the exam: the networks' zeros there are
    placeholders, not predictions) and, when the targets have breasts, ``breast_label`` ``(NB,)`` with -1 where the
    breast is absent. A missing label (inference) stays missing.

    Args:
        keys: the output key (``pred``).
        label_key: the target key (``label``).
        breast_pred_key: where the breast probabilities go.
        breast_label_key: where the breast labels go.
        allow_missing_keys: skip items without ``keys``.
    """

    def __init__(
        self,
        keys: KeysCollection = "pred",
        label_key: str = "label",
        breast_pred_key: str = "breast_pred",
        breast_label_key: str = "breast_label",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_key = label_key
        self.breast_pred_key = breast_pred_key
        self.breast_label_key = breast_label_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Flatten one decollated item (a copy)."""
        d = dict(data)
        for key in self.key_iterator(d):
            pred = d[key]
            target = d.get(self.label_key)
            d[key] = _exam_probability(pred)
            breast_present = None
            if isinstance(pred, Mapping) and ("breast_probs" in pred or "breast_logits" in pred):
                if "breast_probs" in pred:
                    breast = torch.as_tensor(pred["breast_probs"]).float().reshape(-1)
                else:
                    breast = torch.sigmoid(torch.as_tensor(pred["breast_logits"]).float().reshape(-1))
                if "breast_presence" in pred:
                    breast_present = torch.as_tensor(pred["breast_presence"]).reshape(-1).to(breast.device) > 0
                    breast = torch.where(breast_present, breast, torch.full_like(breast, float("nan")))
                d[self.breast_pred_key] = breast
            if target is None:
                continue
            if isinstance(target, Mapping):
                d[self.label_key] = torch.as_tensor(target["label"]).float().reshape(-1)[:1]
                if "breast" in target and self.breast_pred_key in d:
                    breast_label = torch.as_tensor(target["breast"]).float().reshape(-1).clone()
                    if breast_present is not None:
                        breast_label[~breast_present.to(breast_label.device)] = -1.0
                    d[self.breast_label_key] = breast_label
            else:
                d[self.label_key] = torch.as_tensor(target).float().reshape(-1)[:1]
        return d


class CaseKeyAsFilenamed(MapTransform):
    """Set ``filename_or_obj`` in the metadata of ``keys`` to the item's ``case_key`` (for ``SaveImaged``).

    Args:
        keys: image keys (e.g. ``pred``).
        case_key: the item key holding the salted case key.
        allow_missing_keys: skip absent keys.

    Raises:
        KeyError: the item has no ``case_key``.
    """

    def __init__(self, keys: KeysCollection, case_key: str = "case_key", allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.case_key = case_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Rename the outputs of one item (a copy; the tensors' metadata is updated in place)."""
        d = dict(data)
        if self.case_key not in d:
            raise KeyError(f"the item has no {self.case_key!r} to name its outputs by")
        for key in self.key_iterator(d):
            if isinstance(d[key], MetaTensor):
                d[key].meta["filename_or_obj"] = str(d[self.case_key])
        return d


FusionOutputsD = FusionOutputsDict = FusionOutputsd
CaseKeyAsFilenameD = CaseKeyAsFilenameDict = CaseKeyAsFilenamed
