"""What the chest X-ray bundles (``cxr_classification``, ``cxr_*_pretraining``) call through ``_target_``.

- :func:`cxr_datalist`: the items of one split of a MIMIC-CXR-JPG folder (real, or ``medssl synth cxr``), split by
  patient (the official split when the folder has one) with the split saved and re-applied like the other bundles'
  datalists; labels are the folder's CheXpert labels (``label_source="gold"``) or weak labels produced from the
  reports by :mod:`medssl.weak` (``"weak"``: labeling functions, a label model, the noise-aware targets and weights),
  restricted to the configured observations; :func:`write_cxr_datalist` writes every split as a medssl datalist file
  (what the pretraining engine reads);
- :func:`init_from_pretrained`: loads a pretraining bundle's exported image encoder into the classifier's trunk;
- :class:`PrepareMultiLabelBatch`, :class:`MultiLabelOutputsd`, :class:`MultiLabelAUC`: batch preparation (targets
  and weights for :class:`medssl.weak.training.NoiseAwareBCELoss`), post-processing and the per-observation masked
  ROC AUC handler of the classification bundle;
- :func:`build_dataset_text_model`: a tiny offline text model trained on a dataset's own reports (smoke tests).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.engines.utils import PrepareBatch
from monai.handlers import IgniteMetricHandler
from monai.metrics import CumulativeIterationMetric
from monai.transforms import MapTransform
from torch import nn

from medssl.bundle.datalists import _check_split, _from_datalist, select_split
from medssl.data.reports import CHEXPERT_OBSERVATIONS
from medssl.exceptions import DatalistError, MedsslError
from medssl.log import get_logger

__all__ = [
    "LABEL_SOURCES",
    "CXRBundleError",
    "observation_indices",
    "cxr_datalist",
    "write_cxr_datalist",
    "init_from_pretrained",
    "resolve_encoder_folder",
    "PrepareMultiLabelBatch",
    "MultiLabelOutputsd",
    "MultiLabelOutputsD",
    "MultiLabelOutputsDict",
    "MultiLabelAUCMetric",
    "MultiLabelAUC",
    "build_dataset_text_model",
]

logger = get_logger(__name__)

LABEL_SOURCES = ("gold", "weak")


class CXRBundleError(MedsslError):
    """A chest X-ray bundle component is configured in a way that cannot work (named in the message)."""


# ------------------------------------------------------------------------------------------------------- datalists
def observation_indices(observations: Sequence[str] | None) -> list[int]:
    """Column indices of ``observations`` among CheXpert's 14 (the layouts' ``label`` order).

    Args:
        observations: observation names (None or empty: all 14).

    Returns:
        The indices, in the given order.

    Raises:
        CXRBundleError: an unknown or repeated name.
    """
    names = list(observations or CHEXPERT_OBSERVATIONS)
    unknown = [o for o in names if o not in CHEXPERT_OBSERVATIONS]
    if unknown or len(set(names)) != len(names):
        raise CXRBundleError(
            f"observations must be distinct CheXpert names; unknown {unknown}, known {list(CHEXPERT_OBSERVATIONS)}"
        )
    return [CHEXPERT_OBSERVATIONS.index(o) for o in names]


def _folder_items(
    dataset_dir: str | os.PathLike,
    reports_dir: str | os.PathLike | None,
    frontal_only: bool,
    require_report: bool,
    policy: str,
    blank: str,
    salt: str | None,
) -> list[dict[str, Any]]:
    from medssl.data.layouts.mimic_cxr import build

    items, _, problems = build(
        dataset_dir,
        salt=salt,
        reports=reports_dir,
        frontal_only=frontal_only,
        require_report=require_report,
        policy=policy,
        blank=blank,
    )
    if not items:
        raise DatalistError(f"no usable chest X-ray ({len(problems)} problems)", dataset_dir)
    return items


def _weak_labels(items: Sequence[Mapping[str, Any]], model: str, seed: int) -> Any:
    """Weak labels of the items' studies (one report per study), keyed by study key."""
    from medssl.weak.aggregate import aggregate
    from medssl.weak.matrix import label_matrix

    texts: dict[str, str] = {}
    for item in items:
        key, report = str(item.get("study_key")), item.get("report")
        if key in texts or not isinstance(report, str) or not report:
            continue
        try:
            texts[key] = Path(report).read_text(errors="replace")
        except OSError as error:
            logger.warning("study %s: report not read (%s)", key, error.strerror or error)
    if not texts:
        raise CXRBundleError("label_source='weak' but no item has a readable report", "cxr_datalist")
    matrix, errors = label_matrix(list(texts.values()), list(texts))
    for error in errors:
        logger.warning("study %s: %s", error.path, error.problem)
    if not matrix.keys:
        raise CXRBundleError("label_source='weak' but no report is usable", "cxr_datalist")
    return aggregate(matrix, model=model, seed=seed)


def _select_observations(items: list[dict[str, Any]], index: Sequence[int]) -> list[dict[str, Any]]:
    out = []
    for item in items:
        d = dict(item)
        label = d.get("label") or [0.0] * len(CHEXPERT_OBSERVATIONS)
        mask = d.get("label_mask") or [0.0] * len(CHEXPERT_OBSERVATIONS)
        d["label"] = [float(label[i]) for i in index]
        d["label_mask"] = [float(mask[i]) for i in index]
        out.append(d)
    return out


def cxr_datalist(
    dataset_dir: str | os.PathLike,
    split: str = "training",
    *,
    datalist: str | os.PathLike | None = None,
    reports_dir: str | os.PathLike | None = None,
    frontal_only: bool = True,
    require_report: bool = False,
    policy: str = "ones",
    blank: str = "zeros",
    official_split: bool = True,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    seed: int = 0,
    splits_file: str | os.PathLike | None = None,
    observations: Sequence[str] | None = None,
    label_source: str = "gold",
    weak_splits: Sequence[str] = ("training", "validation"),
    weak_model: str = "label-model",
    weak_policy: str | None = None,
    weak_blank: str | None = None,
    salt: str | None = None,
) -> list[dict[str, Any]]:
    """Image items of one split of a MIMIC-CXR-JPG folder, with gold or weak multi-label targets.

    The split is the folder's official one (``mimic-cxr-2.0.0-split.csv``) when ``official_split`` and every image
    has one, else drawn by patient from ``seed``; with ``splits_file`` it is saved as case keys on the first call and
    re-applied afterwards (see :func:`medssl.bundle.datalists.select_split`), so train, evaluate and inference agree.

    Labels: ``label`` and ``label_mask`` hold one value per observation (``observations``, CheXpert's order by
    default). ``label_source="gold"`` takes them from the folder's CheXpert CSV under ``policy``/``blank``;
    ``"weak"`` labels the reports of the ``weak_splits`` items with :mod:`medssl.weak` (CheXpert labeling
    functions, then ``weak_model``: ``label-model`` or ``majority``) and writes the noise-aware targets and weights
    (:func:`medssl.weak.training.attach_weak_labels`; a study without a usable report is masked). The other splits
    (the test split by default) keep the gold labels, so evaluation is always against the dataset's labels.

    Args:
        dataset_dir: the MIMIC-CXR-JPG folder (unused with ``datalist``).
        split: ``training``, ``validation``, ``test`` or ``all``.
        datalist: a prebuilt medssl datalist (``medssl datalist mimic-cxr ...``) to use instead of the folder.
        reports_dir: a separate reports folder (``files/pXX/...``), when the reports are not in ``dataset_dir``.
        frontal_only: keep frontal images (PA/AP) only.
        require_report: skip images whose study has no report.
        policy: uncertain gold labels: ``ones``, ``zeros`` or ``ignore``.
        blank: blank gold labels: ``zeros`` (absent) or ``ignore`` (masked).
        official_split: use the folder's official split when it has one.
        val_fraction: validation share of patients of a drawn split.
        test_fraction: test share of patients of a drawn split.
        seed: seed of a drawn split and of the label model.
        splits_file: where the split is kept.
        observations: the observations (default: CheXpert's 14).
        label_source: ``gold`` or ``weak``.
        weak_splits: splits that get weak labels with ``label_source="weak"``.
        weak_model: ``label-model`` (Dawid-Skene) or ``majority``.
        weak_policy: uncertainty policy of the weak targets (default: ``policy``).
        weak_blank: blank policy of the weak targets (default: ``blank``).
        salt: key salt (default ``$MEDSSL_SALT``).

    Returns:
        The split's items: ``image``, ``report`` (when found), ``label``, ``label_mask``, ``case_key``,
        ``patient_key``, ``study_key`` ...

    Raises:
        DatalistError: an unknown split, no usable image, or a saved split that no longer fits the folder.
        CXRBundleError: unknown observations or label source, or weak labels without usable reports.
    """
    from medssl.data.layouts.chexpert import official_splits
    from medssl.data.splits import split_by_patient

    _check_split(split)
    index = observation_indices(observations)
    if label_source not in LABEL_SOURCES:
        raise CXRBundleError(f"label_source must be one of {LABEL_SOURCES}, got {label_source!r}", "cxr_datalist")
    if datalist:
        items = _from_datalist(datalist, split)
    else:
        every = _folder_items(dataset_dir, reports_dir, frontal_only, require_report, policy, blank, salt)

        def draw(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
            official = official_splits(rows) if official_split else None
            if official is not None and official["training"] and official["test"]:
                return official
            return split_by_patient(rows, val_fraction, test_fraction, seed)

        parameters = {
            "layout": "mimic-cxr",
            "official_split": official_split,
            "val_fraction": val_fraction,
            "test_fraction": test_fraction,
            "seed": seed,
            "frontal_only": frontal_only,
            "require_report": require_report,
        }
        items = select_split(every, split, draw, splits_file, parameters)
        if label_source == "weak" and split != "all" and split in weak_splits:
            pool = [i for s in weak_splits for i in select_split(every, s, draw, splits_file, parameters)]
            weak = _weak_labels(pool, weak_model, seed)
            from medssl.weak.training import attach_weak_labels

            items = attach_weak_labels(
                items,
                weak,
                policy=weak_policy or policy,
                blank=weak_blank or blank,
                on="study",
                gold_prefix=None,
                strict=False,
            )
    return _select_observations(items, index)


def write_cxr_datalist(dataset_dir: str | os.PathLike, out: str | os.PathLike, **options: Any) -> str:
    """Write every split of :func:`cxr_datalist` as a medssl datalist file (atomically; safe for concurrent ranks).

    Args:
        dataset_dir: the MIMIC-CXR-JPG folder.
        out: the datalist JSON to write.
        options: arguments of :func:`cxr_datalist` (``splits_file``, ``datalist``, ``seed`` ...).

    Returns:
        The path written (a string, for config expressions).
    """
    import tempfile

    from medssl.data.datalist import SPLITS, write_datalist
    from medssl.data.layouts.mimic_cxr import mimic_cxr_metadata

    splits = {s: cxr_datalist(dataset_dir, s, **options) for s in SPLITS}
    if not splits["training"]:
        raise DatalistError("the training split is empty", dataset_dir)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    os.close(handle)
    try:
        kept = {k: v for k, v in splits.items() if v or k == "training"}
        write_datalist(tmp, kept, **mimic_cxr_metadata(labelled=False))
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return os.fspath(out)


# ----------------------------------------------------------------------------------------------- pretrained encoder
def resolve_encoder_folder(path: str | os.PathLike) -> Path:
    """The folder of an exported image encoder (``image.json`` + ``image.pt``).

    Accepts the encoders folder, a pretraining bundle's ``models/`` or bundle folder, or one of the two files.

    Raises:
        CXRBundleError: nothing usable there.
    """
    path = Path(path)
    if path.is_file():
        path = path.parent
    for candidate in (path, path / "encoders", path / "models" / "encoders"):
        if (candidate / "image.json").is_file():
            return candidate
    raise CXRBundleError(
        "no exported image encoder (image.json + image.pt) here, nor in encoders/ or models/encoders/", path
    )


def init_from_pretrained(network: nn.Module, encoder: str | os.PathLike | None = None) -> nn.Module:
    """Initialise a classifier's trunk from a pretraining bundle's exported image encoder (random init when empty).

    Args:
        network: a network with ``load_encoder_state`` (:class:`medssl.networks.EarlyFusion` ...).
        encoder: an encoders folder, a pretraining bundle's ``models/`` or bundle folder, or ``image.pt``; None or
            ``""`` leaves the network as it is.

    Returns:
        The network (weights loaded in place).

    Raises:
        CXRBundleError: no encoder there, or an architecture that does not fit the configured backbone (the
            message names the exported backbone and width).
    """
    if not encoder:
        return network
    folder = resolve_encoder_folder(encoder)
    meta = json.loads((folder / "image.json").read_text())
    try:
        network.load_encoder_state(folder / meta.get("state_dict", "image.pt"))
    except MedsslError as error:
        raise CXRBundleError(
            f"the exported encoder ({meta.get('backbone')}, width {meta.get('width')}, kwargs "
            f"{meta.get('backbone_kwargs')}) does not fit the configured backbone: set backbone, width and "
            f"backbone_kwargs to the pretraining's ({error})",
            folder,
        ) from error
    logger.info("image encoder initialised from %s (%s)", folder.name, meta.get("backbone"))
    return network


# ------------------------------------------------------------------------------------- engine glue (classification)
class PrepareMultiLabelBatch(PrepareBatch):
    """Collated batch -> ``(image, {"target", "weight"}, (), {})`` for :class:`~medssl.weak.training.NoiseAwareBCELoss`.

    Args:
        image_key: the image.
        label_key: the targets ``(B, K)`` in [0, 1].
        mask_key: the weights ``(B, K)`` (absent: all 1).
    """

    def __init__(self, image_key: str = "image", label_key: str = "label", mask_key: str = "label_mask") -> None:
        self.image_key, self.label_key, self.mask_key = image_key, label_key, mask_key

    def __call__(
        self,
        batchdata: Mapping[str, Any],
        device: str | torch.device | None = None,
        non_blocking: bool = False,
        **kwargs: Any,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor] | None, tuple, dict]:
        """Prepare one batch; targets are None when the batch has no labels (inference)."""

        def move(value: Any) -> torch.Tensor:
            value = value.as_tensor() if hasattr(value, "as_tensor") else torch.as_tensor(value)
            return value.to(device=device, non_blocking=non_blocking, **kwargs).float()

        image = move(batchdata[self.image_key])
        if self.label_key not in batchdata:
            return image, None, (), {}
        target = move(batchdata[self.label_key])
        weight = move(batchdata[self.mask_key]) if self.mask_key in batchdata else torch.ones_like(target)
        return image, {"target": target, "weight": weight}, (), {}


class MultiLabelOutputsd(MapTransform):
    """One decollated item: logits to probabilities, targets to ``label`` with -1 where the weight is 0.

    Args:
        keys: the prediction key (``pred``).
        label_key: where the targets are (a :class:`PrepareMultiLabelBatch` dict or a tensor).
        allow_missing_keys: skip items without ``keys``.
    """

    def __init__(self, keys: KeysCollection = "pred", label_key: str = "label", allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.label_key = label_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Convert one item (a copy)."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = torch.sigmoid(torch.as_tensor(d[key]).float())
        target = d.get(self.label_key)
        if isinstance(target, Mapping):
            value = torch.as_tensor(target["target"]).float()
            weight = torch.as_tensor(target.get("weight", torch.ones_like(value))).float()
            d[self.label_key] = torch.where(weight > 0, value, torch.full_like(value, -1.0))
        return d


class MultiLabelAUCMetric(CumulativeIterationMetric):
    """ROC AUC per observation over the entries with a known label (>= 0; soft labels count as positive >= 0.5).

    ``aggregate()`` returns the per-observation AUCs (NaN where an observation has a single class among the known
    labels); :class:`MultiLabelAUC` reports their mean over the defined ones.
    """

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> Any:  # type: ignore[override]
        if y is None:
            raise ValueError("MultiLabelAUCMetric needs labels")
        return y_pred, y

    def aggregate(self) -> np.ndarray:  # type: ignore[override]
        """Per-observation AUCs of the buffered predictions."""
        from sklearn.metrics import roc_auc_score

        y_pred, y = self.get_buffer()
        pred = torch.as_tensor(y_pred).float().reshape(len(y_pred), -1).cpu().numpy()
        label = torch.as_tensor(y).float().reshape(len(y), -1).cpu().numpy()
        if pred.shape != label.shape:
            raise ValueError(f"predictions {pred.shape} and labels {label.shape} do not pair up")
        values = np.full(pred.shape[1], np.nan)
        for j in range(pred.shape[1]):
            known = (label[:, j] >= 0) & np.isfinite(pred[:, j])
            positive = label[known, j] >= 0.5
            if known.any() and 0 < positive.sum() < known.sum():
                values[j] = roc_auc_score(positive, pred[known, j])
        return values


class MultiLabelAUC(IgniteMetricHandler):
    """Ignite handler: the mean ROC AUC over observations, and each observation's as ``{name}_{observation key}``.

    Args:
        observations: the observation names in output order (for the per-observation metric names).
        output_transform: ``(y_pred, y)`` from the engine output, e.g. ``from_engine(["pred", "label"])``.
    """

    def __init__(self, observations: Sequence[str] | None = None, output_transform: Callable = lambda x: x) -> None:
        super().__init__(metric_fn=MultiLabelAUCMetric(), output_transform=output_transform, save_details=False)
        from medssl.data.layouts.chexpert import OBSERVATION_KEYS

        self.observation_keys = [OBSERVATION_KEYS[CHEXPERT_OBSERVATIONS[i]] for i in observation_indices(observations)]

    def compute(self) -> float:
        """The mean AUC over the observations where it is defined (NaN when none is); per observation kept."""
        values = np.asarray(self.metric_fn.aggregate(), dtype=float)
        self.per_observation = values
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

    def completed(self, engine: Any, name: str) -> None:
        """Store the mean under ``name`` and each observation's AUC under ``{name}_{key}``."""
        super().completed(engine, name)
        for key, value in zip(self.observation_keys, getattr(self, "per_observation", [])):
            engine.state.metrics[f"{name}_{key}"] = float(value)


MultiLabelOutputsD = MultiLabelOutputsDict = MultiLabelOutputsd


# -------------------------------------------------------------------------------------------------- smoke tests
def build_dataset_text_model(dataset_dir: str | os.PathLike, folder: str = "text_model", **options: Any) -> Path:
    """A tiny offline BERT and WordPiece tokenizer trained on a dataset's reports (``files/**/s*.txt``).

    What the bundles' smoke tests use as ``text_model`` (no download): see
    :func:`medssl.networks.encoders.build_tiny_text_model` for ``options``.

    Args:
        dataset_dir: a MIMIC-CXR-JPG folder.
        folder: sub-folder to write.
        options: model size options.

    Returns:
        The model folder.
    """
    from medssl.networks.encoders import build_tiny_text_model

    root = Path(dataset_dir)
    reports = [p.read_text(errors="replace") for p in sorted(root.rglob("s*.txt"))]
    if not reports:
        raise CXRBundleError("no report (s*.txt) to train a tokenizer on", root)
    return build_tiny_text_model(reports, root / folder, **options)
