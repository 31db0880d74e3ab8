"""CBIS-DDSM to exam-level datalist items (the views of a patient, breast and exam labels, the official split).

CBIS-DDSM (Lee et al., Scientific Data 2017; TCIA) describes its abnormalities in four CSV files,
``mass_case_description_train_set.csv``, ``mass_case_description_test_set.csv``, ``calc_case_description_train_set.csv``
and ``calc_case_description_test_set.csv``, one row per abnormality:

``patient_id, breast_density (mass) / breast density (calc), left or right breast (LEFT/RIGHT), image view (CC/MLO),
abnormality id, abnormality type (mass/calcification), ..., assessment (BI-RADS 0-5), pathology (MALIGNANT, BENIGN,
BENIGN_WITHOUT_CALLBACK), subtlety, image file path, cropped image file path, ROI mask file path``.

Column names are matched case-insensitively with spaces and underscores equal, so both spellings of the density
column work. The CSV's ``image file path`` (``Mass-Training_P_00001_LEFT_CC/<study UID>/<series UID>/000000.dcm``)
does not match the folder names of a TCIA download made with "descriptive directory names"
(``Mass-Training_P_00001_LEFT_CC/07-20-2016-DDSM-74994/1.000000-full mammogram images-24515/1-1.dcm``), so
:func:`resolve_image` tries, in order: the path under the root (or under ``ROOT/CBIS-DDSM``); then the only DICOM
file inside the folder named by the path's first component (found anywhere in the first three levels), preferring
one in a ``full mammogram`` folder. Unresolved rows are reported and count as missing views.

An exam is a patient (CBIS-DDSM has one study per patient); the mass and calcification sets describe the same full
mammograms under different folders, so a view found in both keeps the mass set's file (reported). Breast labels
follow ``positive``: ``pathology`` (default; a breast is positive when one of its abnormalities is MALIGNANT) or
``birads`` (its highest assessment is at least ``birads_threshold``). CBIS-DDSM only holds breasts with an
abnormality, so the other breast of a patient is unknown (label -1) and its views are missing (most exams have two
views); :func:`medssl.data.mammo.apply_missing_policy` applies the missing-view policy. ``official_split`` comes from
the CSV's name (``train``/``test``) or path (``Training``/``Test``); a patient in both is put in ``test`` (reported)
so that no test image is trained on.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medssl.data.keys import Keyer
from medssl.data.layouts.vindr_mammo import parse_birads, parse_density
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
    "CSV_PATTERN",
    "REQUIRED_COLUMNS",
    "find_case_descriptions",
    "read_case_descriptions",
    "resolve_image",
    "cbis_items",
    "cbis_metadata",
    "write_cbis_datalist",
    "add_arguments",
    "build",
]

logger = get_logger(__name__)

LAYOUT = "cbis-ddsm"
HELP = "CBIS-DDSM (mass/calc case description CSVs + DICOM folders): one item per patient exam"
CSV_PATTERN = "*case_description*.csv"
REQUIRED_COLUMNS = ("patient_id", "left_or_right_breast", "image_view", "pathology", "image_file_path")
_LATERALITY = {"LEFT": "L", "RIGHT": "R", "L": "L", "R": "R"}


def _column(name: str) -> str:
    return re.sub(r"[\s_]+", "_", str(name).strip().lower())


def find_case_descriptions(root: str | os.PathLike) -> list[Path]:
    """The case description CSVs under ``root`` (any depth up to three folders), sorted.

    Args:
        root: the dataset folder.

    Returns:
        The CSV paths.
    """
    root = Path(root)
    found = []
    for depth in ("", "*/", "*/*/", "*/*/*/"):
        found.extend(root.glob(depth + CSV_PATTERN))
    return sorted(set(found))


def _official_split(csv_path: Path, image_path: str) -> str:
    name = csv_path.name.lower()
    if "test" in name:
        return "test"
    if "train" in name:
        return "training"
    first = image_path.split("/", 1)[0].lower()
    return "test" if "test" in first else "training"


def read_case_descriptions(paths: Sequence[str | os.PathLike]) -> pd.DataFrame:
    """Read and concatenate case description CSVs with normalised column names.

    Args:
        paths: CSV files.

    Returns:
        One row per abnormality with ``patient_id``, ``laterality`` (L/R), ``view`` (CC/MLO), ``abnormality_type``,
        ``assessment`` (int or None), ``pathology`` (upper case), ``density``, ``image_file_path``, ``source``
        (``mass``/``calc``, from the file name) and ``official_split``.

    Raises:
        DatalistError: no file, unreadable, or a required column missing.
    """
    if not paths:
        raise DatalistError(f"no CBIS-DDSM case description CSV ({CSV_PATTERN})")
    frames = []
    for path in map(Path, paths):
        try:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
        except (OSError, ValueError) as error:
            raise DatalistError(f"cannot read the case descriptions: {error}", path) from error
        frame.columns = [_column(c) for c in frame.columns]
        absent = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
        if absent:
            raise DatalistError(f"missing columns {absent} (columns: {list(frame.columns)})", path)
        table = pd.DataFrame(
            {
                "patient_id": frame["patient_id"].str.strip(),
                "laterality": frame["left_or_right_breast"].str.strip().str.upper().map(_LATERALITY).fillna(""),
                "view": frame["image_view"].str.strip().str.upper(),
                "abnormality_type": frame.get("abnormality_type", pd.Series("", index=frame.index)).str.strip(),
                "assessment": [parse_birads(v) for v in frame.get("assessment", pd.Series("", index=frame.index))],
                "pathology": frame["pathology"].str.strip().str.upper(),
                "density": [parse_density(v) for v in frame.get("breast_density", pd.Series("", index=frame.index))],
                "image_file_path": frame["image_file_path"].str.strip(),
            }
        )
        table["source"] = "calc" if "calc" in path.name.lower() else "mass" if "mass" in path.name.lower() else ""
        table["official_split"] = [_official_split(path, p) for p in table["image_file_path"]]
        table["csv"] = path.name
        frames.append(table)
    return pd.concat(frames, ignore_index=True)


def _folder_index(root: Path, levels: int = 3) -> dict[str, list[Path]]:
    """Folder name -> folders with that name, in the first ``levels`` levels under ``root``."""
    index: dict[str, list[Path]] = {}
    for folder, dirs, _ in os.walk(root):
        depth = len(Path(folder).relative_to(root).parts)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        if depth >= levels:
            dirs[:] = []
        for name in dirs:
            index.setdefault(name, []).append(Path(folder, name))
    return index


def resolve_image(root: Path, csv_path: str, folders: dict[str, list[Path]] | None = None) -> tuple[Path | None, str]:
    """Find the DICOM file of a CSV ``image file path`` (see the module docstring for the rules).

    Args:
        root: the dataset folder.
        csv_path: the CSV's ``image file path`` value.
        folders: a folder-name index of ``root`` (built when None).

    Returns:
        ``(path, "")`` or ``(None, why not)``.
    """
    value = csv_path.strip().replace("\\", "/")
    if not value:
        return None, "empty image file path"
    for candidate in (root / value, root / "CBIS-DDSM" / value):
        if candidate.is_file():
            return candidate, ""
    first = value.split("/", 1)[0]
    folders = _folder_index(root) if folders is None else folders
    matches = folders.get(first, [])
    if not matches:
        return None, f"no file {value} and no folder {first}"
    files = sorted(p for folder in matches for p in folder.rglob("*.dcm"))
    if len(files) > 1:
        full = [p for p in files if "full mammogram" in str(p.parent).lower()]
        files = full if full else files
    if len(files) == 1:
        return files[0], ""
    return None, f"folder {first} holds {len(files)} DICOM files: cannot tell which is the full mammogram"


def _path(path: Path, base_dir: Path | None) -> str:
    return os.path.relpath(path, base_dir) if base_dir is not None else str(path.resolve())


def _breast_label(rows: pd.DataFrame, positive: str, threshold: int) -> int:
    if rows.empty:
        return -1
    if positive == "pathology":
        return int((rows["pathology"] == "MALIGNANT").any())
    assessments = [a for a in rows["assessment"] if a is not None and not pd.isna(a)]
    return int(max(assessments) >= threshold) if assessments else -1


def cbis_items(
    root: str | os.PathLike,
    *,
    salt: str | None = None,
    base_dir: str | os.PathLike | None = None,
    positive: str = "pathology",
    birads_threshold: int = 4,
    missing: str = "zeros",
    csv_files: Sequence[str | os.PathLike] | None = None,
    check_files: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One exam item per CBIS-DDSM patient.

    Args:
        root: the dataset folder (DICOM folders anywhere in the first three levels).
        salt: key salt.
        base_dir: write paths relative to this folder (absolute when None).
        positive: ``pathology`` (MALIGNANT) or ``birads`` (assessment >= ``birads_threshold``).
        birads_threshold: the BI-RADS threshold of the ``birads`` rule.
        missing: missing-view policy (``error``, ``drop``, ``duplicate``, ``zeros``).
        csv_files: the case description CSVs (default: :func:`find_case_descriptions` of ``root``).
        check_files: resolve image files (False: keep the CSV paths under ``root`` unchecked).

    Returns:
        ``(items, problems)``: items sorted by patient_id (``case_key``, ``patient_key``, ``case``, the views,
        ``label``, ``label_L``, ``label_R``, ``birads_L``, ``birads_R``, ``pathology_L``, ``pathology_R``,
        ``density``, ``abnormality_types``, ``official_split``, missing-view fields).

    Raises:
        DatalistError: no CSV, a missing column, a bad rule.
        MissingViewError: a view is missing under ``missing="error"``.
    """
    if positive not in POSITIVE_RULES:
        raise DatalistError(f"unknown positive rule {positive!r}; expected one of {POSITIVE_RULES}")
    if missing not in MISSING_VIEW_POLICIES:
        raise DatalistError(f"unknown missing-view policy {missing!r}; expected one of {MISSING_VIEW_POLICIES}")
    root = Path(root)
    table = read_case_descriptions(list(csv_files) if csv_files is not None else find_case_descriptions(root))
    keyer = Keyer(salt)
    base = Path(base_dir).resolve() if base_dir is not None else None
    folders = _folder_index(root) if check_files else {}
    items: list[dict[str, Any]] = []
    problems: list[dict[str, Any]] = []
    order = {"mass": 0, "calc": 1, "": 2}
    for patient_id, rows in table.groupby("patient_id", sort=True):
        patient_id = str(patient_id)
        item: dict[str, Any] = {
            "case_key": keyer.case(patient_id),
            "patient_key": keyer.patient(patient_id),
            "case": patient_id,
        }
        for key in STANDARD_VIEWS:
            laterality, view = key.split("-")
            candidates = rows[(rows["laterality"] == laterality) & (rows["view"] == view)]
            candidates = candidates.sort_values("source", key=lambda s: s.map(order), kind="stable")
            chosen: Path | None = None
            distinct: set[str] = set()
            for value in dict.fromkeys(candidates["image_file_path"]):
                if check_files:
                    path, why = resolve_image(root, value, folders)
                else:
                    path, why = root / value, ""
                if path is None:
                    problems.append({"case": patient_id, "problem": f"{key}: {why}", "action": "ignored"})
                    continue
                distinct.add(str(path))
                chosen = chosen or path
            if chosen is not None:
                item[key] = _path(chosen, base)
                if len(distinct) > 1:
                    problems.append(
                        {
                            "case": patient_id,
                            "problem": f"{key} in {len(distinct)} folders (mass and calc sets): "
                            f"kept {chosen.parent.name}",
                            "action": "included",
                        }
                    )
        for laterality in ("L", "R"):
            breast = rows[rows["laterality"] == laterality]
            item[f"label_{laterality}"] = _breast_label(breast, positive, birads_threshold)
            assessments = [int(a) for a in breast["assessment"] if a is not None and not pd.isna(a)]
            item[f"birads_{laterality}"] = max(assessments) if assessments else -1
            item[f"pathology_{laterality}"] = (
                "MALIGNANT"
                if (breast["pathology"] == "MALIGNANT").any()
                else (sorted(set(breast["pathology"]))[0] if len(breast) else "")
            )
        item["label"] = exam_label([item["label_L"], item["label_R"]])
        item["density"] = max((d for d in rows["density"] if d), default="")
        item["abnormality_types"] = sorted({t for t in rows["abnormality_type"] if t})
        splits = set(rows["official_split"])
        if len(splits) > 1:
            problems.append(
                {
                    "case": patient_id,
                    "problem": "patient in both the training and test sets: test",
                    "action": "included",
                }
            )
        item["official_split"] = "test" if "test" in splits else "training"
        kept = apply_missing_policy(item, list(STANDARD_VIEWS), missing, patient_id, problems)
        if kept is not None:
            items.append(kept)
    for problem in problems:
        logger.info("%s: %s (%s)", problem["case"], problem["problem"], problem["action"])
    return items, problems


def cbis_metadata(positive: str = "pathology", birads_threshold: int = 4, missing: str = "zeros") -> dict[str, Any]:
    """Datalist metadata of a CBIS-DDSM exam datalist.

    Args:
        positive: the positive-class rule.
        birads_threshold: the BI-RADS threshold of the ``birads`` rule.
        missing: the missing-view policy used.

    Returns:
        The metadata dict.
    """
    rule = "a MALIGNANT abnormality" if positive == "pathology" else f"assessment >= {birads_threshold}"
    return {
        "name": "CBIS-DDSM",
        "layout": LAYOUT,
        "tensorImageSize": "2D",
        "image_keys": list(STANDARD_VIEWS),
        "view_names": list(STANDARD_VIEWS),
        "labels": {"0": "no breast positive", "1": f"a breast with {rule}"},
        "positive_rule": {"rule": positive, "birads_threshold": int(birads_threshold)},
        "breast_label_keys": {"L": "label_L", "R": "label_R"},
        "missing_views": missing,
        "unknown_label": -1,
    }


def write_cbis_datalist(
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
    """Build and write a CBIS-DDSM datalist with the official test split (or a fresh patient-level one).

    Args:
        root: the dataset folder.
        out: the datalist JSON.
        val_fraction: share of training patients in ``validation``.
        seed: split seed.
        official_split: keep the train/test sets of the CSV files (False: draw train/val/test by patient).
        test_fraction: share of patients in ``test`` when ``official_split`` is False.
        stratify_key: item key to stratify the drawn splits on (None: no stratification).
        relative: write paths relative to the datalist's folder.
        options: passed to :func:`cbis_items` (``salt``, ``positive``, ``birads_threshold``, ``missing`` ...).

    Returns:
        The path written.
    """
    out = Path(out)
    items, _ = cbis_items(root, base_dir=out.parent.resolve() if relative else None, **options)
    metadata = cbis_metadata(
        options.get("positive", "pathology"), options.get("birads_threshold", 4), options.get("missing", "zeros")
    )
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
    """Options of ``medssl datalist cbis-ddsm``."""
    parser.add_argument(
        "--positive",
        choices=POSITIVE_RULES,
        default="pathology",
        help="positive breast: a MALIGNANT abnormality (pathology, default) or BI-RADS >= --birads-threshold",
    )
    parser.add_argument("--birads-threshold", type=int, default=4, help="threshold of --positive birads (default 4)")
    parser.add_argument(
        "--missing",
        choices=MISSING_VIEW_POLICIES,
        default="zeros",
        help="an exam lacking a view (most CBIS-DDSM exams hold one breast): zeros (default), duplicate, drop, error",
    )


def build(
    source: str | os.PathLike,
    *,
    salt: str | None = None,
    base_dir: str | os.PathLike | None = None,
    positive: str = "pathology",
    birads_threshold: int = 4,
    missing: str = "zeros",
) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """Items, metadata and problems of a CBIS-DDSM folder (the ``medssl datalist`` protocol).

    Args:
        source: the dataset folder.
        salt: key salt.
        base_dir: write paths relative to this folder.
        positive: ``pathology`` or ``birads``.
        birads_threshold: the BI-RADS threshold.
        missing: missing-view policy.

    Returns:
        ``(items, metadata, problems)``; every item carries ``official_split``.
    """
    items, problems = cbis_items(
        source, salt=salt, base_dir=base_dir, positive=positive, birads_threshold=birads_threshold, missing=missing
    )
    return items, cbis_metadata(positive, birads_threshold, missing), problems
