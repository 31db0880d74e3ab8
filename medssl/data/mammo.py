r"""Mammography exams: the four standard views of a study, one image per view, all breasts facing the same side.

An exam is a study's images grouped into the views ``L-CC``, ``R-CC``, ``L-MLO``, ``R-MLO`` (:data:`STANDARD_VIEWS`,
the order :mod:`medssl.networks.fusion` uses). This module holds the data-side rules; the MONAI transforms that apply
them to images are in :mod:`medssl.transforms.mammo`.

Choosing one image per view (:func:`rank_view_images`), among a study's MG images with that laterality and view:

1. only a screening view: the base view is CC or MLO and it has no modifier other than implant-displaced (``ID``);
   spot compression, magnification, rolled, tangential ... views (ViewModifierCodeSequence, or words in
   ViewPosition/SeriesDescription; see :mod:`medssl.data.views`) are work-up images and never chosen;
2. FOR PRESENTATION over an image without PresentationIntentType over FOR PROCESSING (raw detector data);
3. a plain view over an implant-displaced one;
4. the latest acquisition: the highest SeriesNumber (a repeat replaces a rejected first attempt), and within a series
   the last file (files of planar series are in InstanceNumber order);
5. the series key, so that the choice never depends on row order.

Missing views (:data:`MISSING_VIEW_POLICIES`): ``error`` raises :class:`MissingViewError`; ``drop`` leaves the exam
out (reported); ``duplicate`` puts the other breast's same view in its place (flipped by the orientation step, since
the flip is decided from the image's own laterality; listed under ``duplicated``); ``zeros`` leaves the view out of
the item and the transforms fill it with zeros and a 0 in the ``presence`` mask.

Facing the same side (:func:`decide_flip`), as in Wu et al. 2019 (all breasts with the chest wall on one side):

- *tags*: the side of the chest wall from PatientOrientation (``A\R`` rows run towards the nipple: chest wall on
  the left; see :func:`medssl.data.views.chest_wall_side`), else from laterality under the DICOM display convention
  (a left breast has its chest wall on the image's left, a right breast on the right - PatientOrientation ``A\R``
  for L CC, ``P\L`` for R CC);
- *content*: :func:`chest_wall_side_from_content`, the image edge the tissue (largest bright component) clings to;
- the **fallback when they disagree** (``on_conflict``): ``content`` (default) trusts the pixels when their evidence
  is clear (confidence >= ``min_confidence``), because the tissue is physically attached to the chest wall while tags
  can be stale after a workstation flipped the image; the disagreement is recorded (``orientation_conflict``).
  ``tags`` trusts the tags, ``error`` raises. When the content is ambiguous the tags decide; without tags the content
  decides; without either, nothing is flipped and ``orientation_source`` says ``none``.

Cropping (:func:`breast_bounding_box`): threshold the display-ready image (default 5% of the display range, air is
black), keep the largest connected component (MONAI ``get_largest_connected_component_mask``: labels, markers and
noise are smaller than the breast), take its bounding box (MONAI ``generate_spatial_bounding_box``) with a margin.
Resizing keeps the aspect ratio (:func:`fit_size`) and pads to the target size, on the side away from the chest wall.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medssl.data.views import STANDARD_MAMMO_VIEWS, parse_view_key, split_view, view_key
from medssl.exceptions import MedsslError, MissingSequenceError
from medssl.log import get_logger

__all__ = [
    "STANDARD_VIEWS",
    "MISSING_VIEW_POLICIES",
    "ALLOWED_MODIFIERS",
    "CHEST_WALL_TARGETS",
    "ON_CONFLICT",
    "NATIVE_CHEST_WALL_SIDE",
    "MissingViewError",
    "OrientationError",
    "other_breast",
    "is_screening_view",
    "rank_view_images",
    "apply_missing_policy",
    "exam_items_from_manifest",
    "POSITIVE_RULES",
    "exam_label",
    "split_official",
    "write_exam_datalist",
    "breast_mask",
    "breast_bounding_box",
    "chest_wall_side_from_content",
    "chest_wall_side_from_tags",
    "decide_flip",
    "fit_size",
    "pad_amounts",
]

logger = get_logger(__name__)

STANDARD_VIEWS: tuple[str, ...] = ("L-CC", "R-CC", "L-MLO", "R-MLO")
MISSING_VIEW_POLICIES = ("error", "drop", "duplicate", "zeros")
ALLOWED_MODIFIERS: tuple[str, ...] = ("ID",)
CHEST_WALL_TARGETS = ("left", "right", "native")
ON_CONFLICT = ("content", "tags", "error")
NATIVE_CHEST_WALL_SIDE = {"L": "left", "R": "right"}
_INTENT_RANK = {"FOR PRESENTATION": 0, "": 1, "FOR PROCESSING": 2}


class MissingViewError(MissingSequenceError):
    """An exam lacks a view and the missing-view policy is ``error``."""


class OrientationError(MedsslError):
    """The tags and the image content disagree on the side of the chest wall and the policy is ``error``."""


def other_breast(key: str) -> str:
    """The same view of the other breast: ``"L-CC"`` -> ``"R-CC"``."""
    laterality, view = parse_view_key(key)
    return view_key("R" if laterality == "L" else "L", view)


def is_screening_view(view: Any, allowed_modifiers: Iterable[str] = ALLOWED_MODIFIERS) -> bool:
    """Whether a normalised view is a standard screening CC or MLO (no work-up modifier).

    Args:
        view: e.g. ``"CC"``, ``"MLO+ID"``, ``"CC+SPOT"``.
        allowed_modifiers: modifiers that keep a view standard (implant-displaced by default).

    Returns:
        True for CC/MLO whose modifiers are all allowed.
    """
    base, modifiers = split_view(view)
    return base in STANDARD_MAMMO_VIEWS and set(modifiers) <= set(allowed_modifiers)


def rank_view_images(candidates: pd.DataFrame, allowed_modifiers: Iterable[str] = ALLOWED_MODIFIERS) -> pd.DataFrame:
    """Order the manifest rows of one view of one exam, best first, by the rule of the module docstring.

    Args:
        candidates: manifest rows (``view``, ``presentation_intent``, ``series_number``, ``series_key``).
        allowed_modifiers: modifiers a chosen view may carry.

    Returns:
        The screening-view rows, best first (work-up views removed).
    """
    allowed = tuple(allowed_modifiers)
    if candidates.empty:
        return candidates
    keep = candidates[[is_screening_view(v, allowed) for v in candidates["view"]]].copy()
    if keep.empty:
        return keep
    intent = keep.get("presentation_intent", pd.Series("", index=keep.index)).fillna("").astype(str).str.upper()
    keep["_intent"] = [_INTENT_RANK.get(v.strip(), 1) for v in intent]
    keep["_modified"] = [len(split_view(v)[1]) for v in keep["view"]]
    numbers = pd.to_numeric(keep.get("series_number", pd.Series(np.nan, index=keep.index)), errors="coerce")
    keep["_series"] = -numbers.fillna(-np.inf).astype(float)
    keep = keep.sort_values(["_intent", "_modified", "_series", "series_key"], kind="stable")
    return keep.drop(columns=["_intent", "_modified", "_series"])


def _path(path: str, base_dir: Path | None) -> str:
    return os.path.relpath(path, base_dir) if base_dir is not None else str(Path(path).resolve())


def apply_missing_policy(
    item: dict[str, Any],
    views: Sequence[str],
    missing: str,
    case: str,
    problems: list[dict[str, Any]],
) -> dict[str, Any] | None:
    """Fill ``presence``, ``missing`` and ``duplicated`` of an exam item, or drop it / raise, by the policy.

    Args:
        item: the item with a file under each view it has.
        views: the exam's views, in ``presence`` order.
        missing: ``error``, ``drop``, ``duplicate`` or ``zeros``.
        case: the case named in problems and errors.
        problems: where reported problems are appended (``{"case", "problem", "action"}``).

    Returns:
        The item, or None when it is dropped.

    Raises:
        MissingViewError: a view is missing and the policy is ``error``.
        MedsslError: unknown policy.
    """
    if missing not in MISSING_VIEW_POLICIES:
        raise MedsslError(f"unknown missing-view policy {missing!r}; expected one of {MISSING_VIEW_POLICIES}")
    absent = [v for v in views if not item.get(v)]
    for view in absent:
        item.pop(view, None)
    if absent and len(absent) == len(views):
        if missing == "error":
            raise MissingViewError("exam has no usable standard view", case)
        problems.append({"case": case, "problem": "no usable standard view", "action": "skipped"})
        return None
    if absent and missing == "error":
        raise MissingViewError(f"exam lacks {absent}", case)
    if absent and missing == "drop":
        problems.append({"case": case, "problem": f"missing {', '.join(absent)}", "action": "skipped"})
        return None
    duplicated = []
    if missing == "duplicate":
        for view in absent:
            source = other_breast(view) if "-" in view else ""
            if source in item and source not in absent:
                item[view] = item[source]
                duplicated.append(view)
        not_filled = [v for v in absent if v not in duplicated]
        if not_filled:
            problems.append(
                {
                    "case": case,
                    "problem": f"cannot duplicate {', '.join(not_filled)} (the other breast's view is missing too): "
                    "left as zeros",
                    "action": "included",
                }
            )
    if absent:
        filled = f"; duplicated {', '.join(duplicated)}" if duplicated else ""
        problems.append({"case": case, "problem": f"missing {', '.join(absent)}{filled}", "action": "included"})
    item["presence"] = [int(v in item) for v in views]
    item["missing"] = absent
    item["duplicated"] = duplicated
    return item


def exam_items_from_manifest(
    manifest: pd.DataFrame,
    views: Sequence[str] = STANDARD_VIEWS,
    missing: str = "zeros",
    base_dir: str | os.PathLike | None = None,
    allowed_modifiers: Iterable[str] = ALLOWED_MODIFIERS,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One exam item per mammography study of a manifest (``medssl index`` output).

    Args:
        manifest: the manifest (rows of modality MG are used; ``view`` and ``laterality`` as filled by the index).
        views: the view keys of an exam.
        missing: missing-view policy (:data:`MISSING_VIEW_POLICIES`).
        base_dir: write paths relative to this folder (absolute when None).
        allowed_modifiers: view modifiers a chosen image may carry.

    Returns:
        ``(items, problems)``. An item: ``case_key`` (the study key: an exam is a study), ``patient_key``,
        ``study_key``, ``study_rank``, one file per view present, ``presence``, ``missing``, ``duplicated`` and
        ``series_keys`` (which series was chosen per view); problems as ``{"case", "problem", "action"}``.

    Raises:
        MissingViewError: a view is missing under ``missing="error"``.
    """
    from medssl.data.manifest import series_files

    base = Path(base_dir).resolve() if base_dir is not None else None
    wanted = {v: parse_view_key(v) for v in views}
    mg = manifest[manifest["modality"].astype(str).str.upper() == "MG"]
    items: list[dict[str, Any]] = []
    problems: list[dict[str, Any]] = []
    for study_key, study in mg.groupby("study_key", sort=True):
        first = study.iloc[0]
        item: dict[str, Any] = {
            "case_key": str(study_key),
            "patient_key": str(first["patient_key"]),
            "study_key": str(study_key),
        }
        if "study_rank" in study and pd.notna(first.get("study_rank")):
            item["study_rank"] = int(first["study_rank"])
        series_keys: dict[str, str] = {}
        for key, (laterality, base_view) in wanted.items():
            same_view = np.asarray([split_view(v)[0] == base_view for v in study["view"]], dtype=bool)
            rows = study[(study["laterality"].astype(str) == laterality).to_numpy() & same_view]
            ranked = rank_view_images(rows, allowed_modifiers)
            if ranked.empty:
                continue
            best = ranked.iloc[0]
            item[key] = _path(series_files(best)[-1], base)
            series_keys[key] = str(best["series_key"])
            if len(ranked) > 1:
                problems.append(
                    {
                        "case": str(study_key),
                        "problem": f"{len(ranked)} candidate images for {key}: kept series {best['series_key']}",
                        "action": "included",
                    }
                )
        item["series_keys"] = series_keys
        kept = apply_missing_policy(item, list(views), missing, str(study_key), problems)
        if kept is not None:
            items.append(kept)
    for problem in problems:
        logger.info("%s: %s (%s)", problem["case"], problem["problem"], problem["action"])
    return items, problems


POSITIVE_RULES = ("birads", "pathology")


def exam_label(breast_labels: Iterable[int]) -> int:
    """The exam label from its breasts' labels: 1 if any breast is positive, 0 if all known ones are negative.

    Args:
        breast_labels: 1, 0, or -1 (unknown: the breast is not in the data).

    Returns:
        1, 0, or -1 when no breast is known.
    """
    known = [int(v) for v in breast_labels if int(v) >= 0]
    return max(known) if known else -1


def split_official(
    items: Sequence[Mapping[str, Any]],
    val_fraction: float = 0.1,
    seed: int = 0,
    stratify_key: str | None = None,
    split_key: str = "official_split",
) -> dict[str, list[dict[str, Any]]]:
    """Keep a dataset's official test split and draw a patient-level validation split from its training part.

    Args:
        items: exam items with ``patient_key`` and ``split_key`` (``training`` or ``test``).
        val_fraction: share of the training patients moved to ``validation``.
        seed: seed of the validation draw.
        stratify_key: item key to stratify the validation draw on (e.g. ``label``).
        split_key: the item key holding the official split.

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}``.

    Raises:
        DatalistError: an item has another split value, or a patient is in both official splits.
    """
    from medssl.data.datalist import check_no_patient_leak
    from medssl.data.splits import split_by_patient
    from medssl.exceptions import DatalistError

    official: dict[str, list[dict[str, Any]]] = {"training": [], "test": []}
    for item in items:
        split = str(item.get(split_key, ""))
        if split not in official:
            raise DatalistError(f"case {item.get('case_key')}: {split_key} is {split!r}, not 'training' or 'test'")
        official[split].append(dict(item))
    check_no_patient_leak(official)
    if val_fraction > 0 and official["training"]:
        drawn = split_by_patient(official["training"], val_fraction, 0.0, seed, stratify_key)
        return {"training": drawn["training"], "validation": drawn["validation"], "test": official["test"]}
    return {"training": official["training"], "validation": [], "test": official["test"]}


def write_exam_datalist(
    items: Sequence[Mapping[str, Any]],
    out: str | os.PathLike,
    metadata: Mapping[str, Any],
    *,
    official_split: bool = True,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    stratify_key: str | None = "label",
) -> Path:
    """Split exam items by patient and write the datalist (``medssl.data.datalist.write_datalist``).

    Args:
        items: exam items (with ``official_split`` when ``official_split``).
        out: the datalist JSON.
        metadata: top-level datalist keys (the layout's metadata).
        official_split: keep the items' official test split and draw only the validation split
            (:func:`split_official`); False draws train/validation/test by patient.
        val_fraction: share of (training) patients in ``validation``.
        test_fraction: share of patients in ``test`` when not ``official_split``.
        seed: split seed.
        stratify_key: item key to stratify the drawn splits on (None: none).

    Returns:
        The path written.

    Raises:
        DatalistError: no item, or a split that leaks a patient.
    """
    from medssl.data.datalist import write_datalist
    from medssl.data.splits import split_by_patient
    from medssl.exceptions import DatalistError

    if not items:
        raise DatalistError("no usable exam", out)
    if official_split:
        splits = split_official(items, val_fraction, seed, stratify_key)
    else:
        splits = split_by_patient(items, val_fraction, test_fraction, seed, stratify_key)
    splits = {name: split for name, split in splits.items() if split or name == "training"}
    parameters = {
        "official_split": official_split,
        "val_fraction": val_fraction,
        "test_fraction": None if official_split else test_fraction,
        "seed": seed,
        "stratify_key": stratify_key,
    }
    return write_datalist(out, splits, **metadata, split=parameters)


# ----------------------------------------------------------------------------------------------- image geometry
def _as_2d(image: Any) -> np.ndarray:
    array = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"expected a (H, W) or (1, H, W) image, got shape {array.shape}")
    return array


def breast_mask(image: Any, threshold: float | str = 0.05) -> np.ndarray:
    """The breast: the largest connected component of the pixels above a threshold.

    Args:
        image: display-ready ``(H, W)`` or ``(1, H, W)`` image (air black).
        threshold: a value on the image's scale, or ``"otsu"`` (scikit-image's Otsu threshold).

    Returns:
        A boolean ``(H, W)`` mask (all False for an empty image).
    """
    from monai.transforms.utils import get_largest_connected_component_mask

    array = _as_2d(image)
    if isinstance(threshold, str):
        if threshold != "otsu":
            raise ValueError(f"threshold must be a number or 'otsu', got {threshold!r}")
        from skimage.filters import threshold_otsu

        level = float(threshold_otsu(array)) if np.ptp(array) > 0 else float(array.max())
    else:
        level = float(threshold)
    mask = array > level
    if not mask.any():
        return mask
    return np.asarray(get_largest_connected_component_mask(mask[None]))[0].astype(bool)


def breast_bounding_box(image: Any, threshold: float | str = 0.05, margin: int = 0) -> tuple[slice, slice] | None:
    """Bounding box of :func:`breast_mask` with a margin (clipped to the image).

    Args:
        image: display-ready ``(H, W)`` or ``(1, H, W)`` image.
        threshold: see :func:`breast_mask`.
        margin: pixels added on every side.

    Returns:
        ``(row slice, column slice)``, or None when no pixel is above the threshold.
    """
    from monai.transforms.utils import generate_spatial_bounding_box

    mask = breast_mask(image, threshold)
    if not mask.any():
        return None
    start, end = generate_spatial_bounding_box(mask[None], margin=margin, allow_smaller=True)
    height, width = mask.shape
    return slice(max(0, start[0]), min(height, end[0])), slice(max(0, start[1]), min(width, end[1]))


def chest_wall_side_from_content(image: Any, threshold: float | str = 0.05, band: float = 0.1) -> tuple[str, float]:
    """The image edge the breast clings to: the chest wall.

    The breast is widest at the chest wall and tapers to the nipple, so the share of rows the tissue covers in a band
    of columns along the left edge is compared with the same share along the right edge.

    Args:
        image: display-ready ``(H, W)`` or ``(1, H, W)`` image.
        threshold: see :func:`breast_mask`.
        band: width of each edge band as a fraction of the image width.

    Returns:
        ``(side, confidence)``: ``"left"``/``"right"`` (``""`` for an empty image) and the difference of the two
        coverages in [0, 1] (0: no evidence, 1: the tissue fills one edge and never touches the other).
    """
    mask = breast_mask(image, threshold)
    if not mask.any():
        return "", 0.0
    width = mask.shape[1]
    columns = max(1, int(round(band * width)))
    left = float(mask[:, :columns].mean())
    right = float(mask[:, width - columns :].mean())
    if left == right:
        centre = float(np.nonzero(mask)[1].mean())
        return ("left" if centre < (width - 1) / 2 else "right"), 0.0
    return ("left" if left > right else "right"), abs(left - right)


def chest_wall_side_from_tags(laterality: str = "", orientation_side: str = "") -> tuple[str, str]:
    """The chest-wall side the tags imply: PatientOrientation first, else laterality by the DICOM convention.

    Args:
        laterality: ``L``/``R`` (of the image, not of the view it stands in for).
        orientation_side: the side from PatientOrientation (:func:`medssl.data.views.chest_wall_side`).

    Returns:
        ``(side, source)``: ``"left"``/``"right"``/``""`` and ``"PatientOrientation"``, ``"laterality"`` or ``""``.
    """
    if orientation_side in ("left", "right"):
        return orientation_side, "PatientOrientation"
    side = NATIVE_CHEST_WALL_SIDE.get(str(laterality or "").upper(), "")
    return side, ("laterality" if side else "")


def decide_flip(
    image: Any,
    target: str,
    *,
    laterality: str = "",
    orientation_side: str = "",
    threshold: float | str = 0.05,
    min_confidence: float = 0.1,
    on_conflict: str = "content",
    name: str | None = None,
) -> tuple[bool, dict[str, Any]]:
    """Whether to flip an image left-right so that its chest wall is on the ``target`` side.

    Args:
        image: display-ready ``(H, W)`` or ``(1, H, W)`` image.
        target: ``"left"`` or ``"right"``.
        laterality: the image's laterality.
        orientation_side: the chest-wall side from PatientOrientation (``""`` when absent).
        threshold: tissue threshold (see :func:`breast_mask`).
        min_confidence: content evidence below this is ignored (see :func:`chest_wall_side_from_content`).
        on_conflict: ``content``, ``tags`` or ``error`` (see the module docstring).
        name: the image or case named in an :class:`OrientationError`.

    Returns:
        ``(flip, info)`` with ``chest_wall_side`` (before flipping), ``orientation_source`` (``tags``, ``content``,
        ``tags+content`` when both agree, or ``none``), ``orientation_conflict``, ``content_confidence``.

    Raises:
        OrientationError: tags and content disagree under ``on_conflict="error"``.
        ValueError: bad ``target`` or ``on_conflict``.
    """
    if target not in ("left", "right"):
        raise ValueError(f"target must be 'left' or 'right', got {target!r}")
    if on_conflict not in ON_CONFLICT:
        raise ValueError(f"on_conflict must be one of {ON_CONFLICT}, got {on_conflict!r}")
    tag_side, tag_source = chest_wall_side_from_tags(laterality, orientation_side)
    content_side, confidence = chest_wall_side_from_content(image, threshold)
    clear = bool(content_side) and confidence >= min_confidence
    conflict = bool(tag_side) and clear and content_side != tag_side
    if conflict and on_conflict == "error":
        raise OrientationError(
            f"the tags ({tag_source}) put the chest wall on the {tag_side}, the image content on the {content_side} "
            f"(confidence {confidence:.2f})",
            name,
        )
    if tag_side and clear:
        side = content_side if (conflict and on_conflict == "content") else tag_side
        source = "tags+content" if not conflict else ("content" if on_conflict == "content" else "tags")
    elif tag_side:
        side, source = tag_side, "tags"
    elif content_side:
        side, source = content_side, "content"
    else:
        side, source = "", "none"
    if conflict:
        logger.warning(
            "%s: tags (%s) say chest wall %s, content says %s (confidence %.2f): using the %s",
            name or "image",
            tag_source,
            tag_side,
            content_side,
            confidence,
            on_conflict,
        )
    info = {
        "chest_wall_side": side,
        "orientation_source": source,
        "orientation_conflict": conflict,
        "content_confidence": float(confidence),
    }
    return bool(side) and side != target, info


def fit_size(shape: Sequence[int], target: Sequence[int]) -> tuple[int, int]:
    """The largest ``(h, w)`` with ``shape``'s aspect ratio that fits in ``target``.

    Args:
        shape: ``(H, W)`` of the image.
        target: ``(H, W)`` to fit in.

    Returns:
        ``(h, w)``, each at least 1 and at most the target's.
    """
    height, width = int(shape[0]), int(shape[1])
    scale = min(target[0] / height, target[1] / width)
    return (
        min(int(target[0]), max(1, int(round(height * scale)))),
        min(int(target[1]), max(1, int(round(width * scale)))),
    )


def pad_amounts(shape: Sequence[int], target: Sequence[int], chest_wall_side: str = "") -> list[int]:
    """Padding ``[top, bottom, left, right]`` from ``shape`` to ``target``: rows centred, columns away from the wall.

    Args:
        shape: ``(h, w)`` after resizing.
        target: ``(H, W)``.
        chest_wall_side: ``"left"`` pads on the right, ``"right"`` on the left, ``""`` on both sides equally.

    Returns:
        The four pad widths.
    """
    rows = int(target[0]) - int(shape[0])
    columns = int(target[1]) - int(shape[1])
    top = rows // 2
    if chest_wall_side == "left":
        left = 0
    elif chest_wall_side == "right":
        left = columns
    else:
        left = columns // 2
    return [top, rows - top, left, columns - left]
