"""VinDr-Mammo to exam-level datalist items (four views, breast and exam labels, the official split).

VinDr-Mammo (Nguyen et al., Scientific Data 2023) ships ``images/<study_id>/<image_id>.dicom`` and
``breast-level_annotations.csv``, one row per image:

``study_id, series_id, image_id, laterality (L/R), view_position (CC/MLO), height, width,
breast_birads ("BI-RADS 1".."BI-RADS 5"), breast_density ("DENSITY A".."DENSITY D"), split ("training"/"test")``.

:func:`vindr_items` makes one item per study (an exam): the file of each of ``L-CC``, ``R-CC``, ``L-MLO``,
``R-MLO``; ``label_L``/``label_R`` (the breast is positive when its BI-RADS is at least ``birads_threshold``, 4 by
default: BI-RADS 4/5 are suspicious findings that call for a biopsy), ``label`` (the exam: positive when a breast is),
``birads_L``/``birads_R``, ``density`` (A-D), ``official_split`` and the missing-view fields of
:func:`medssl.data.mammo.apply_missing_policy`. VinDr-Mammo has no patient identifier beyond the study (one exam per
woman), so the ``patient_key`` is made from the study_id; ``case`` keeps the public study_id.

The dataset has no pathology, so ``positive="pathology"`` is refused. A study whose rows disagree on a breast's
BI-RADS keeps the highest (reported); a view listed twice keeps the last row whose file exists (reported); a row
whose file is missing counts as a missing view (reported).

``medssl datalist vindr-mammo DIR --out vindr.json`` uses :func:`build`; :func:`write_vindr_datalist` keeps the
official test split and draws only the validation split (see :func:`medssl.data.mammo.split_official`).
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd

from medssl.data.keys import Keyer
from medssl.data.mammo import (
    MISSING_VIEW_POLICIES,
    POSITIVE_RULES,
    STANDARD_VIEWS,
    apply_missing_policy,
    exam_label,
    write_exam_datalist,
)
from medssl.exceptions import DatalistError
from medssl.log import get_logger

__all__ = [
    "LAYOUT",
    "HELP",
    "BREAST_LEVEL_FILE",
    "REQUIRED_COLUMNS",
    "parse_birads",
    "parse_density",
    "read_breast_level",
    "vindr_items",
    "vindr_metadata",
    "write_vindr_datalist",
    "add_arguments",
    "build",
]

logger = get_logger(__name__)

LAYOUT = "vindr-mammo"
HELP = "VinDr-Mammo (images/<study_id>/<image_id>.dicom + breast-level_annotations.csv): one item per exam"
BREAST_LEVEL_FILE = "breast-level_annotations.csv"
REQUIRED_COLUMNS = ("study_id", "image_id", "laterality", "view_position", "breast_birads")


def parse_birads(value: Any) -> int | None:
    """``"BI-RADS 4"`` (or ``4``, ``"4A"``, ``"BI-RADS 4C"``) -> 4; None when empty or unparseable.

    Args:
        value: a BI-RADS assessment as written in VinDr-Mammo or CBIS-DDSM.

    Returns:
        The category 0-6, or None.
    """
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return None
    match = re.search(r"([0-6])", str(value))
    return int(match.group(1)) if match else None


def parse_density(value: Any) -> str:
    """``"DENSITY C"`` (or ``"C"``, ``3``) -> ``"C"``; ``""`` when unknown."""
    text = str(value if value is not None else "").strip().upper()
    if text in ("", "NAN"):
        return ""
    match = re.search(r"\b([A-D])\s*$", text)
    if match:
        return match.group(1)
    match = re.search(r"([1-4])", text)
    return "ABCD"[int(match.group(1)) - 1] if match else ""


def read_breast_level(path: str | os.PathLike) -> pd.DataFrame:
    """Read and check ``breast-level_annotations.csv``.

    Args:
        path: the CSV file.

    Returns:
        The table (all columns as strings).

    Raises:
        DatalistError: missing file, unreadable, or a required column missing.
    """
    path = Path(path)
    if not path.is_file():
        raise DatalistError(f"no {BREAST_LEVEL_FILE} (expected VinDr-Mammo's breast-level annotations)", path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as error:
        raise DatalistError(f"cannot read the annotations: {error}", path) from error
    frame.columns = [c.strip() for c in frame.columns]
    absent = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if absent:
        raise DatalistError(f"missing columns {absent} (columns: {list(frame.columns)})", path)
    return frame


def _path(path: Path, base_dir: Path | None) -> str:
    return os.path.relpath(path, base_dir) if base_dir is not None else str(path.resolve())


def vindr_items(
    root: str | os.PathLike,
    *,
    salt: str | None = None,
    base_dir: str | os.PathLike | None = None,
    positive: str = "birads",
    birads_threshold: int = 4,
    missing: str = "zeros",
    annotations: str | os.PathLike | None = None,
    image_folder: str = "images",
    suffix: str = ".dicom",
    check_files: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One exam item per VinDr-Mammo study.

    Args:
        root: the dataset folder.
        salt: key salt (else ``$MEDSSL_SALT``, else the default).
        base_dir: write paths relative to this folder (absolute when None).
        positive: ``birads`` (the only rule VinDr-Mammo supports: it has no pathology).
        birads_threshold: a breast is positive when its BI-RADS is at least this.
        missing: missing-view policy (``error``, ``drop``, ``duplicate``, ``zeros``).
        annotations: the breast-level CSV (default ``ROOT/breast-level_annotations.csv``).
        image_folder: folder of the images under ``root``.
        suffix: image file suffix.
        check_files: treat rows whose file does not exist as missing views.

    Returns:
        ``(items, problems)``: items sorted by study_id; problems as ``{"case", "problem", "action"}``.

    Raises:
        DatalistError: no annotations, missing columns, bad rule or threshold.
        MissingViewError: a view is missing under ``missing="error"``.
    """
    if positive not in POSITIVE_RULES:
        raise DatalistError(f"unknown positive rule {positive!r}; expected one of {POSITIVE_RULES}")
    if positive == "pathology":
        raise DatalistError("VinDr-Mammo has no pathology column: use positive='birads' (with birads_threshold)")
    if not 1 <= int(birads_threshold) <= 6:
        raise DatalistError(f"birads_threshold must be 1 to 6, got {birads_threshold}")
    if missing not in MISSING_VIEW_POLICIES:
        raise DatalistError(f"unknown missing-view policy {missing!r}; expected one of {MISSING_VIEW_POLICIES}")
    root = Path(root)
    csv_path = Path(annotations) if annotations is not None else root / BREAST_LEVEL_FILE
    frame = read_breast_level(csv_path)
    keyer = Keyer(salt)
    base = Path(base_dir).resolve() if base_dir is not None else None
    items: list[dict[str, Any]] = []
    problems: list[dict[str, Any]] = []
    for study_id, rows in frame.groupby("study_id", sort=True):
        study_id = str(study_id)
        item: dict[str, Any] = {
            "case_key": keyer.case(study_id),
            "patient_key": keyer.patient(study_id),
            "study_key": keyer("study", study_id),
            "case": study_id,
        }
        birads: dict[str, list[int]] = {"L": [], "R": []}
        densities: list[str] = []
        for row in rows.to_dict("records"):
            laterality = str(row["laterality"]).strip().upper()[:1]
            view = str(row["view_position"]).strip().upper()
            value = parse_birads(row["breast_birads"])
            if laterality in birads and value is not None:
                birads[laterality].append(value)
            if row.get("breast_density"):
                densities.append(parse_density(row["breast_density"]))
            key = f"{laterality}-{view}"
            if key not in STANDARD_VIEWS:
                problems.append(
                    {"case": study_id, "problem": f"image {row['image_id']}: view {key}", "action": "ignored"}
                )
                continue
            path = root / image_folder / study_id / f"{row['image_id']}{suffix}"
            if check_files and not path.is_file():
                problems.append({"case": study_id, "problem": f"{key} file missing: {path}", "action": "ignored"})
                continue
            if key in item:
                problems.append(
                    {"case": study_id, "problem": f"{key} listed twice: kept the last row", "action": "included"}
                )
            item[key] = _path(path, base)
        for laterality, values in birads.items():
            if len(set(values)) > 1:
                problems.append(
                    {
                        "case": study_id,
                        "problem": f"breast {laterality} has BI-RADS {sorted(set(values))}: kept the highest",
                        "action": "included",
                    }
                )
            item[f"birads_{laterality}"] = max(values) if values else -1
            item[f"label_{laterality}"] = int(max(values) >= birads_threshold) if values else -1
        item["label"] = exam_label([item["label_L"], item["label_R"]])
        item["density"] = max((d for d in densities if d), default="")
        splits = {str(s).strip().lower() for s in rows["split"]} if "split" in rows else set()
        if len(splits) > 1:
            problems.append(
                {"case": study_id, "problem": f"rows in splits {sorted(splits)}: test", "action": "included"}
            )
        item["official_split"] = "test" if "test" in splits else "training"
        kept = apply_missing_policy(item, list(STANDARD_VIEWS), missing, study_id, problems)
        if kept is not None:
            items.append(kept)
    for problem in problems:
        logger.info("%s: %s (%s)", problem["case"], problem["problem"], problem["action"])
    return items, problems


def vindr_metadata(positive: str = "birads", birads_threshold: int = 4, missing: str = "zeros") -> dict[str, Any]:
    """Datalist metadata of a VinDr-Mammo exam datalist.

    Args:
        positive: the positive-class rule.
        birads_threshold: the BI-RADS threshold.
        missing: the missing-view policy used.

    Returns:
        ``{"name", "layout", "image_keys", "labels", "positive_rule", "missing_views", ...}``.
    """
    return {
        "name": "VinDr-Mammo",
        "layout": LAYOUT,
        "tensorImageSize": "2D",
        "image_keys": list(STANDARD_VIEWS),
        "view_names": list(STANDARD_VIEWS),
        "labels": {"0": f"all breasts BI-RADS < {birads_threshold}", "1": f"a breast BI-RADS >= {birads_threshold}"},
        "positive_rule": {"rule": positive, "birads_threshold": int(birads_threshold)},
        "breast_label_keys": {"L": "label_L", "R": "label_R"},
        "missing_views": missing,
        "unknown_label": -1,
    }


def write_vindr_datalist(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    val_fraction: float = 0.1,
    seed: int = 0,
    official_split: bool = True,
    test_fraction: float = 0.2,
    stratify_key: str | None = "label",
    relative: bool = False,
    **options: Any,
) -> Path:
    """Build and write a VinDr-Mammo datalist with the official test split (or a fresh patient-level one).

    Args:
        root: the dataset folder.
        out: the datalist JSON.
        val_fraction: share of training patients in ``validation``.
        seed: split seed.
        official_split: keep the CSV's ``split`` column as the test split (False: draw train/val/test by patient).
        test_fraction: share of patients in ``test`` when ``official_split`` is False.
        stratify_key: item key to stratify the drawn splits on (None: no stratification).
        relative: write paths relative to the datalist's folder.
        options: passed to :func:`vindr_items` (``salt``, ``birads_threshold``, ``missing`` ...).

    Returns:
        The path written.
    """
    out = Path(out)
    items, _ = vindr_items(root, base_dir=out.parent.resolve() if relative else None, **options)
    metadata = vindr_metadata("birads", options.get("birads_threshold", 4), options.get("missing", "zeros"))
    return write_exam_datalist(
        items,
        out,
        metadata,
        official_split=official_split,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        stratify_key=stratify_key,
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``medssl datalist vindr-mammo``."""
    parser.add_argument(
        "--birads-threshold",
        type=int,
        default=4,
        help="a breast is positive when its BI-RADS is at least this (default 4: BI-RADS 4/5)",
    )
    parser.add_argument(
        "--missing",
        choices=MISSING_VIEW_POLICIES,
        default="zeros",
        help="an exam lacking a view: keep it with a presence mask (zeros, default), put the other breast's view in "
        "its place (duplicate), leave it out (drop), or fail (error)",
    )
    parser.add_argument("--annotations", metavar="CSV", help=f"breast-level CSV (default SOURCE/{BREAST_LEVEL_FILE})")


def build(
    source: str | os.PathLike,
    *,
    salt: str | None = None,
    base_dir: str | os.PathLike | None = None,
    birads_threshold: int = 4,
    missing: str = "zeros",
    annotations: str | os.PathLike | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """Items, metadata and problems of a VinDr-Mammo folder (the ``medssl datalist`` protocol).

    Args:
        source: the dataset folder.
        salt: key salt.
        base_dir: write paths relative to this folder.
        birads_threshold: BI-RADS threshold of the positive class.
        missing: missing-view policy.
        annotations: the breast-level CSV (default ``SOURCE/breast-level_annotations.csv``).

    Returns:
        ``(items, metadata, problems)``; every item carries ``official_split``.
    """
    items, problems = vindr_items(
        source,
        salt=salt,
        base_dir=base_dir,
        birads_threshold=birads_threshold,
        missing=missing,
        annotations=annotations,
    )
    return items, vindr_metadata("birads", birads_threshold, missing), problems
