"""Metrics, handler helpers and tracking settings for the bundle configs.

- :class:`MaskedROCAUCMetric` / :class:`MaskedROCAUC`: MONAI's ROC AUC (``compute_roc_auc``) over the entries whose
  label is known (>= 0) and whose prediction is finite - exam labels of exams without a known breast, breasts absent
  from an exam (CBIS-DDSM holds one breast per patient) are -1 and left out instead of counting as negatives;
- :func:`case_key_meta`: a ``batch_transform`` for MONAI's ``MetricsSaver`` / ``ClassificationSaver`` that names
  each row by the item's salted ``case_key``, never by its file path (paths of PACS exports carry UIDs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from monai.handlers import IgniteMetricHandler
from monai.metrics import ROCAUCMetric, compute_roc_auc

__all__ = ["MaskedROCAUCMetric", "MaskedROCAUC", "case_key_meta"]


class MaskedROCAUCMetric(ROCAUCMetric):
    """ROC AUC of binary predictions over the entries with a known label (MONAI's ``ROCAUCMetric``, masked).

    Predictions and labels of any matching shape (``(B,)``, ``(B, 1)``, ``(B, NB)`` for breasts) are flattened;
    entries whose label is below 0 or whose prediction is not finite are left out. With one class only among the
    rest the AUC is undefined: NaN with a warning, as MONAI's.
    """

    def aggregate(self, average: Any = None) -> float:  # type: ignore[override]
        """Compute the AUC of the buffered predictions.

        Args:
            average: unused (binary); kept for MONAI's signature.

        Returns:
            The AUC, or NaN when undefined.
        """
        y_pred, y = self.get_buffer()
        if not isinstance(y_pred, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise ValueError("y_pred and y must be PyTorch Tensor.")
        y_pred, y = y_pred.reshape(-1).float(), y.reshape(-1).float()
        if y_pred.shape != y.shape:
            raise ValueError(f"predictions {tuple(y_pred.shape)} and labels {tuple(y.shape)} do not pair up")
        keep = (y >= 0) & torch.isfinite(y_pred)
        if not bool(keep.any()):
            return float("nan")
        return float(compute_roc_auc(y_pred=y_pred[keep], y=y[keep]))


class MaskedROCAUC(IgniteMetricHandler):
    """Ignite handler of :class:`MaskedROCAUCMetric` (like MONAI's ``ROCAUC`` handler).

    Args:
        output_transform: extracts ``(y_pred, y)`` from the engine output, e.g.
            ``monai.handlers.from_engine(["pred", "label"])``.
    """

    def __init__(self, output_transform: Callable = lambda x: x) -> None:
        super().__init__(metric_fn=MaskedROCAUCMetric(), output_transform=output_transform, save_details=False)


def case_key_meta(batch: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> list[dict[str, str]]:
    """Name the rows of MONAI's savers by the items' salted ``case_key``.

    Args:
        batch: the engine's (decollated) batch: a list of items, or a collated dict with a ``case_key`` list.

    Returns:
        ``[{"filename_or_obj": case_key}, ...]``, one per item.
    """
    if isinstance(batch, Mapping):
        keys = batch.get("case_key") or []
        return [{"filename_or_obj": str(k)} for k in keys]
    return [{"filename_or_obj": str(item.get("case_key", ""))} for item in batch]
