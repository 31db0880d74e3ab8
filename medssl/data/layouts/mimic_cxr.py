"""MIMIC-CXR-JPG (and MIMIC-CXR DICOM) to datalist items: images, reports, CheXpert labels, the official split.

The layout (PhysioNet's MIMIC-CXR-JPG 2.x, with the reports of MIMIC-CXR)::

    ROOT/files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg
    ROOT/files/p10/p10000032/s50414267.txt      report (MIMIC-CXR's files/ tree; or a separate --reports folder)
    ROOT/mimic-cxr-2.0.0-metadata.csv[.gz]      dicom_id, subject_id, study_id, PerformedProcedureStepDescription,
                                                ViewPosition, Rows, Columns, StudyDate, StudyTime, ...
    ROOT/mimic-cxr-2.0.0-split.csv[.gz]         dicom_id, study_id, subject_id, split (train / validate / test)
    ROOT/mimic-cxr-2.0.0-chexpert.csv[.gz]      subject_id, study_id, the 14 observations (1.0/0.0/-1.0/blank)

MIMIC-CXR's DICOM release has the same tree with ``<dicom_id>.dcm`` files; ``--format dcm`` (or ``auto``, the
default: the JPG when it exists, else the DICOM) uses them. The reports are the ``sSTUDY.txt`` files next to the study
folders, or, with ``reports``, in a separate folder holding ``files/pXX/...`` (how ``mimic-cxr-reports.zip``
unpacks) or ``pXX/...``. Without the metadata CSV the images are found by walking ``files/`` (the view then comes
from the DICOM header, or is unknown for JPGs); without the label CSV the items have no labels; without the split
CSV the caller splits by patient.

One item per image: ``image``, ``report`` (path; absent when the study has none, reported as a problem),
``view`` (``PA``, ``AP``, ``LATERAL``, ``LL`` ... normalised from ViewPosition by :mod:`medssl.data.views`),
``frontal`` (bool), ``case_key`` (salted hash of the dicom_id), ``patient_key`` (of subject_id: MIMIC's ids are
de-identified already, but are hashed like any other so that keys never reveal them), ``study_key`` (of study_id),
``official_split`` (``training``/``validation``/``test`` from the split CSV) and, with the label CSV, the label keys
of :func:`medssl.data.layouts.chexpert.label_fields` (one per observation, ``label``, ``label_mask``) under the
chosen uncertainty policy. Options keep frontal images only, or one image per study.

:func:`mimic_cxr_datalist` writes the datalist with the official split (or :func:`medssl.data.splits.split_by_patient`
when there is none, or when asked to).
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path
from typing import Any

from medssl.data.keys import Keyer
from medssl.data.layouts.chexpert import (
    OBSERVATION_KEYS,
    add_label_arguments,
    label_fields,
    normalise_cxr_view,
    normalise_policy,
    official_splits,
    one_per_study,
)
from medssl.data.reports import CHEXPERT_OBSERVATIONS, ReportError
from medssl.exceptions import DatalistError
from medssl.log import get_logger

__all__ = [
    "LAYOUT",
    "HELP",
    "METADATA_FILE",
    "SPLIT_FILE",
    "CHEXPERT_FILE",
    "IMAGE_FORMATS",
    "OFFICIAL_SPLITS",
    "find_table",
    "image_path",
    "report_path",
    "report_path_for_image",
    "mimic_cxr_items",
    "mimic_cxr_metadata",
    "mimic_cxr_datalist",
    "add_arguments",
    "build",
]

logger = get_logger(__name__)

LAYOUT = "mimic-cxr"
HELP = "MIMIC-CXR-JPG (or MIMIC-CXR DICOM) files/pXX tree with the metadata, split and CheXpert label CSVs and reports"

METADATA_FILE = "mimic-cxr-2.0.0-metadata.csv"
SPLIT_FILE = "mimic-cxr-2.0.0-split.csv"
CHEXPERT_FILE = "mimic-cxr-2.0.0-chexpert.csv"
IMAGE_FORMATS = ("auto", "jpg", "dcm")
OFFICIAL_SPLITS = {"train": "training", "validate": "validation", "validation": "validation", "test": "test"}
_ID = re.compile(r"^\d+$")


def find_table(root: str | os.PathLike, name: str) -> Path | None:
    """The CSV ``name`` in ``root``, plain or gzipped (PhysioNet ships ``.csv.gz``), or None.

    Args:
        root: the dataset folder.
        name: e.g. ``mimic-cxr-2.0.0-metadata.csv``.

    Returns:
        The path, or None when neither exists.
    """
    for candidate in (Path(root) / name, Path(root) / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    return None


def _study_folder(root: Path, subject: str, study: str) -> Path:
    return root / "files" / f"p{subject[:2]}" / f"p{subject}" / f"s{study}"


def image_path(root: str | os.PathLike, subject_id: Any, study_id: Any, dicom_id: str, image_format: str = "auto"):
    """Where an image of MIMIC-CXR(-JPG) is: ``ROOT/files/pXX/pSUBJECT/sSTUDY/DICOM_ID.jpg`` (or ``.dcm``).

    Args:
        root: the dataset folder.
        subject_id: the subject (8 digits).
        study_id: the study (8 digits).
        dicom_id: the image id.
        image_format: ``jpg``, ``dcm`` or ``auto`` (the JPG when it exists, else the DICOM).

    Returns:
        The path, or None when no such file exists.
    """
    folder = _study_folder(Path(root), str(subject_id), str(study_id))
    suffixes = {"jpg": (".jpg",), "dcm": (".dcm",), "auto": (".jpg", ".dcm")}[image_format]
    for suffix in suffixes:
        candidate = folder / f"{dicom_id}{suffix}"
        if candidate.is_file():
            return candidate
    return None


def report_path(
    root: str | os.PathLike, subject_id: Any, study_id: Any, reports: str | os.PathLike | None = None
) -> Path | None:
    """Where a study's report is: ``sSTUDY.txt`` next to the study folder, or in a separate reports folder.

    Args:
        root: the dataset folder.
        subject_id: the subject.
        study_id: the study.
        reports: a folder holding ``files/pXX/...`` or ``pXX/...`` (None: the dataset's own tree).

    Returns:
        The path, or None when there is no such file.
    """
    subject, study = str(subject_id), str(study_id)
    relative = Path(f"p{subject[:2]}") / f"p{subject}" / f"s{study}.txt"
    bases = [Path(reports) / "files", Path(reports)] if reports is not None else [Path(root) / "files"]
    for base in bases:
        if (base / relative).is_file():
            return base / relative
    return None


def report_path_for_image(image: str | os.PathLike, reports_dir: str | os.PathLike | None = None) -> Path:
    """The MIMIC-CXR report of an image's study: ``.../pXX/pSUBJECT/sSTUDY/<dicom_id>.jpg`` -> ``.../sSTUDY.txt``.

    Args:
        image: an image path in MIMIC-CXR(-JPG)'s ``files/pXX/pSUBJECT/sSTUDY/`` tree.
        reports_dir: a separate reports folder (holding ``files/pXX/...`` or ``pXX/...``); None: the report next to
            the study folder.

    Returns:
        The report's path (which may not exist).

    Raises:
        ReportError: the image is not in a ``pXX/pSUBJECT/sSTUDY`` folder.
    """
    image = Path(image)
    study, subject, group = image.parent, image.parent.parent, image.parent.parent.parent
    if not (
        re.fullmatch(r"s\d+", study.name) and re.fullmatch(r"p\d+", subject.name) and re.fullmatch(r"p\d+", group.name)
    ):
        raise ReportError("not in a MIMIC-CXR pXX/pSUBJECT/sSTUDY folder: cannot find its report", image)
    if reports_dir is None:
        return study.with_name(f"{study.name}.txt")
    root = Path(reports_dir)
    if (root / "files").is_dir():
        root = root / "files"
    return root / group.name / subject.name / f"{study.name}.txt"


def _read(path: Path, required: tuple[str, ...]) -> list[dict[str, str]]:
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, EOFError) as error:
        raise DatalistError(f"cannot read the CSV: {error}", path) from error
    absent = [c for c in required if c not in frame.columns]
    if absent:
        raise DatalistError(f"no {absent} column(s) (columns: {list(frame.columns)})", path)
    return frame.to_dict("records")


def _walk_images(root: Path, image_format: str) -> list[dict[str, str]]:
    """Metadata rows of the images found under ``files/`` when there is no metadata CSV (views from DICOM headers)."""
    suffixes = {"jpg": (".jpg",), "dcm": (".dcm",), "auto": (".jpg", ".dcm")}[image_format]
    rows: dict[tuple[str, str, str], dict[str, str]] = {}
    for path in sorted((root / "files").glob("p*/p*/s*/*")):
        if path.suffix.lower() not in suffixes:
            continue
        subject, study = path.parent.parent.name[1:], path.parent.name[1:]
        key = (subject, study, path.stem)
        if key in rows and image_format == "auto":
            continue  # the JPG (sorted first) wins
        view = ""
        if path.suffix.lower() == ".dcm":
            import pydicom

            try:
                view = str(
                    pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["ViewPosition"]).get(
                        "ViewPosition", ""
                    )
                )
            except Exception:  # noqa: BLE001 - an unreadable header only loses the view
                view = ""
        rows[key] = {"dicom_id": path.stem, "subject_id": subject, "study_id": study, "ViewPosition": view}
    return list(rows.values())


def _path(path: Path, base_dir: Path | None) -> str:
    return os.path.relpath(path, base_dir) if base_dir is not None else str(path.resolve())


def mimic_cxr_items(
    root: str | os.PathLike,
    *,
    salt: str | None = None,
    base_dir: str | os.PathLike | None = None,
    reports: str | os.PathLike | None = None,
    policy: str = "ones",
    blank: str = "ignore",
    frontal_only: bool = False,
    study_level: bool = False,
    image_format: str = "auto",
    require_report: bool = False,
    labels: str | os.PathLike | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One datalist item per MIMIC-CXR image.

    Args:
        root: the dataset folder (``files/`` and the CSVs).
        salt: key salt (else ``$MEDSSL_SALT``, else the default).
        base_dir: write paths relative to this folder (absolute when None).
        reports: separate reports folder (see :func:`report_path`).
        policy: uncertainty policy (``ones``, ``zeros``, ``ignore``).
        blank: blank-label policy (``ignore``, ``zeros``).
        frontal_only: keep frontal images only.
        study_level: one image per study (PA, else AP, else another frontal view, else a lateral).
        image_format: ``auto``, ``jpg`` or ``dcm``.
        require_report: skip images whose study has no report (else keep them without ``report``).
        labels: the label CSV (default ``ROOT/mimic-cxr-2.0.0-chexpert.csv[.gz]``; e.g. the NegBio one instead).

    Returns:
        ``(items, problems)``: items sorted by subject, study and image; problems are ``{"case", "problem",
        "action"}`` rows naming the image or report file.

    Raises:
        DatalistError: not a folder, no ``files/`` tree, unknown options, or a CSV without its columns.
    """
    root = Path(root)
    policy = normalise_policy(policy)
    if image_format not in IMAGE_FORMATS:
        raise DatalistError(f"unknown image format {image_format!r}; expected one of {IMAGE_FORMATS}")
    if not root.is_dir():
        raise DatalistError("not a folder", root)
    if not (root / "files").is_dir():
        raise DatalistError("no files/ folder: not a MIMIC-CXR(-JPG) tree (files/pXX/pSUBJECT/sSTUDY/)", root)
    if reports is not None and not Path(reports).is_dir():
        raise DatalistError("reports folder not found", reports)
    keyer = Keyer(salt)
    base = Path(base_dir).resolve() if base_dir is not None else None

    metadata_path = find_table(root, METADATA_FILE)
    if metadata_path is not None:
        rows = _read(metadata_path, ("dicom_id", "subject_id", "study_id"))
    else:
        logger.warning("%s: no %s; finding the images under files/", root, METADATA_FILE)
        rows = _walk_images(root, image_format)
    split_path = find_table(root, SPLIT_FILE)
    split_of: dict[str, str] = {}
    if split_path is not None:
        for row in _read(split_path, ("dicom_id", "split")):
            split_of[row["dicom_id"].strip()] = row["split"].strip().lower()
    label_path = Path(labels) if labels is not None else find_table(root, CHEXPERT_FILE)
    labels_of: dict[tuple[str, str], dict[str, str]] | None = None
    if label_path is not None:
        labels_of = {
            (row["subject_id"].strip(), row["study_id"].strip()): row
            for row in _read(label_path, ("subject_id", "study_id", *CHEXPERT_OBSERVATIONS))
        }

    items: list[dict[str, Any]] = []
    problems: list[dict[str, Any]] = []
    seen: set[str] = set()
    report_cache: dict[tuple[str, str], Path | None] = {}
    for row in sorted(rows, key=lambda r: (str(r["subject_id"]), str(r["study_id"]), str(r["dicom_id"]))):
        subject, study, dicom_id = (str(row[k]).strip() for k in ("subject_id", "study_id", "dicom_id"))
        where = f"files/p{subject[:2]}/p{subject}/s{study}/{dicom_id}"
        if not (_ID.match(subject) and _ID.match(study) and dicom_id):
            problems.append(
                {"case": where, "problem": "subject_id/study_id not numeric or no dicom_id", "action": "skipped"}
            )
            continue
        if dicom_id in seen:
            problems.append({"case": where, "problem": "dicom_id listed twice", "action": "skipped"})
            continue
        seen.add(dicom_id)
        view, group, frontal = normalise_cxr_view(row.get("ViewPosition", ""))
        if frontal_only and not frontal:
            continue
        image = image_path(root, subject, study, dicom_id, image_format)
        if image is None:
            suffix = {"auto": ".jpg/.dcm", "jpg": ".jpg", "dcm": ".dcm"}[image_format]
            problems.append({"case": where + suffix, "problem": "image file not found", "action": "skipped"})
            continue
        item: dict[str, Any] = {"image": _path(image, base)}
        first_image_of_study = (subject, study) not in report_cache
        if first_image_of_study:
            report_cache[(subject, study)] = report_path(root, subject, study, reports)
        report = report_cache[(subject, study)]
        if report is not None:
            item["report"] = _path(report, base)
        else:
            action = "skipped" if require_report else "included"
            if first_image_of_study:  # one problem per study, not per image
                problems.append(
                    {
                        "case": f"files/p{subject[:2]}/p{subject}/s{study}.txt",
                        "problem": "no report",
                        "action": f"images {action}",
                    }
                )
            if require_report:
                continue
        item.update(
            view=view,
            frontal=frontal,
            case_key=keyer.case(f"mimic-cxr:{dicom_id}"),
            patient_key=keyer.patient(f"mimic-cxr:{subject}"),
            study_key=keyer.study(f"mimic-cxr:{study}"),
        )
        if split_of:
            split = OFFICIAL_SPLITS.get(split_of.get(dicom_id, ""))
            if split is None:
                problems.append(
                    {"case": where, "problem": "not in the split CSV (or an unknown split name)", "action": "skipped"}
                )
                continue
            item["official_split"] = split
        if labels_of is not None:
            label_row = labels_of.get((subject, study))
            if label_row is None:
                problems.append(
                    {"case": where, "problem": "study not in the label CSV: all labels masked", "action": "included"}
                )
            try:
                item.update(label_fields(label_row, policy, blank))
            except ValueError as error:
                problems.append({"case": where, "problem": f"label CSV: {error}", "action": "skipped"})
                continue
        items.append(item)
    if study_level:
        items = one_per_study(items)
    for problem in problems:
        logger.warning("%s: %s (%s)", problem["case"], problem["problem"], problem["action"])
    return items, problems


def mimic_cxr_metadata(policy: str = "ones", blank: str = "ignore", labelled: bool = True) -> dict[str, Any]:
    """Datalist metadata of a MIMIC-CXR datalist.

    Args:
        policy: the uncertainty policy used.
        blank: the blank policy used.
        labelled: whether the items carry labels.

    Returns:
        ``{"name", "layout", "modality", "image_keys", ...}`` with the observation names and policies when labelled.
    """
    metadata: dict[str, Any] = {
        "name": "MIMIC-CXR",
        "layout": LAYOUT,
        "modality": "CR",
        "image_keys": ["image"],
        "text_keys": ["report"],
    }
    if labelled:
        metadata.update(
            observations=list(CHEXPERT_OBSERVATIONS),
            observation_keys=[OBSERVATION_KEYS[o] for o in CHEXPERT_OBSERVATIONS],
            uncertainty_policy=normalise_policy(policy),
            blank_policy=blank,
            labels={str(i): o for i, o in enumerate(CHEXPERT_OBSERVATIONS)},
        )
    return metadata


def mimic_cxr_datalist(
    root: str | os.PathLike,
    out: str | os.PathLike,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    resplit: bool = False,
    relative: bool = False,
    salt: str | None = None,
    **options: Any,
) -> tuple[Path, list[dict[str, Any]]]:
    """Write a MIMIC-CXR datalist with the official split (or a patient-level split when there is none).

    Args:
        root: the dataset folder.
        out: the datalist JSON to write.
        seed: seed of the patient-level split (used without an official split, or with ``resplit``).
        val_fraction: share of patients in validation for a patient-level split.
        test_fraction: share of patients in test for a patient-level split.
        resplit: ignore the official split and split by patient.
        relative: write paths relative to the datalist's folder.
        salt: key salt.
        options: the options of :func:`mimic_cxr_items` (``reports``, ``policy``, ``frontal_only`` ...).

    Returns:
        ``(path written, problems)``.

    Raises:
        DatalistError: no usable image, or an invalid split (a patient in two splits).
    """
    from medssl.data.datalist import write_datalist
    from medssl.data.splits import split_by_patient

    out = Path(out)
    base_dir = out.parent.resolve() if relative else None
    items, problems = mimic_cxr_items(root, salt=salt, base_dir=base_dir, **options)
    if not items:
        raise DatalistError(f"no usable image ({len(problems)} problems)", root)
    splits = None if resplit else official_splits(items)
    split_record: dict[str, Any] = {"source": "official"}
    if splits is None:
        splits = split_by_patient(items, val_fraction, test_fraction, seed)
        split_record = {"source": "patient", "seed": seed, "val_fraction": val_fraction, "test_fraction": test_fraction}
    metadata = mimic_cxr_metadata(
        options.get("policy", "ones"), options.get("blank", "ignore"), labelled=any("label" in item for item in items)
    )
    path = write_datalist(
        out, {k: v for k, v in splits.items() if v or k == "training"}, **metadata, split=split_record
    )
    return path, problems


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``medssl datalist mimic-cxr``."""
    parser.add_argument("--reports", metavar="DIR", help="reports folder (files/pXX/... or pXX/...) if not in SOURCE")
    parser.add_argument(
        "--format",
        dest="image_format",
        choices=IMAGE_FORMATS,
        default="auto",
        help="image files: jpg (MIMIC-CXR-JPG), dcm (MIMIC-CXR) or auto (default: jpg, else dcm)",
    )
    parser.add_argument("--require-report", action="store_true", help="skip images whose study has no report")
    parser.add_argument("--labels", metavar="CSV", help=f"label CSV (default SOURCE/{CHEXPERT_FILE}[.gz])")
    add_label_arguments(parser)


def build(
    source: str | os.PathLike,
    *,
    salt: str | None = None,
    base_dir: str | os.PathLike | None = None,
    reports: str | os.PathLike | None = None,
    image_format: str = "auto",
    require_report: bool = False,
    labels: str | os.PathLike | None = None,
    policy: str = "ones",
    blank: str = "ignore",
    frontal_only: bool = False,
    study_level: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """Build the items, metadata and problems of a MIMIC-CXR folder (the ``medssl datalist`` protocol).

    Args:
        source: the dataset folder.
        salt: key salt.
        base_dir: write paths relative to this folder.
        reports: separate reports folder.
        image_format: ``auto``, ``jpg`` or ``dcm``.
        require_report: skip images without a report.
        labels: label CSV.
        policy: uncertainty policy.
        blank: blank-label policy.
        frontal_only: frontal images only.
        study_level: one image per study.

    Returns:
        ``(items, metadata, problems)``; items carry ``official_split`` when the split CSV exists (see
        :func:`medssl.data.layouts.chexpert.official_splits`).
    """
    items, problems = mimic_cxr_items(
        source,
        salt=salt,
        base_dir=base_dir,
        reports=reports,
        policy=policy,
        blank=blank,
        frontal_only=frontal_only,
        study_level=study_level,
        image_format=image_format,
        require_report=require_report,
        labels=labels,
    )
    labelled = any("label" in item for item in items)
    return items, mimic_cxr_metadata(policy, blank, labelled), problems
