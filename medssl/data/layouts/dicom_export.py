"""An indexed DICOM export (the manifest of ``medssl index``) to datalist items: one item per MR study.

Each item holds, for every wanted sequence (``T1``, ``T1C``, ``T2``, ``FLAIR`` by default; ``DWI`` and ``ADC`` on
request), the absolute paths of the chosen series' files in slice order, plus ``patient_key``, ``study_key``,
``case_key`` (the study key: a study is a case), ``study_rank`` and ``series_keys`` (which series was chosen for
each sequence). Nothing else of the manifest is copied, so an item carries no PHI beyond what file paths carry (keep
patient names and IDs out of folder names when exporting; ``medssl index`` warns when they are there).

When a study has several candidate series for one sequence, :func:`rank_candidates` chooses, in this order:

1. a series that stacks into one volume (manifest ``geometry == "ok"``); one that does not is never chosen;
2. an ORIGINAL series over a DERIVED one (a reformat or projection of another series);
3. the finest voxels (smallest voxel volume: a 3D 1 mm acquisition over a 2D 5 mm one);
4. the most slices (coverage);
5. the latest acquisition (highest SeriesNumber: a repeat usually replaces a failed first attempt);
6. the series key (so that the choice never depends on row order).

A study lacking a wanted sequence follows the ``missing`` policy: ``skip`` (default; listed in the problems),
``include`` (the item lacks that key and lists it under ``missing``; studies with none of the sequences are still
skipped) or ``error`` (raise :class:`~medssl.exceptions.MissingSequenceError`).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from medssl.exceptions import DatalistError, MissingSequenceError
from medssl.log import get_logger

__all__ = [
    "LAYOUT",
    "HELP",
    "DEFAULT_SEQUENCES",
    "MISSING_POLICIES",
    "rank_candidates",
    "dicom_export_items",
    "dicom_export_metadata",
    "load_manifest",
    "add_arguments",
    "build",
]

logger = get_logger(__name__)

LAYOUT = "dicom-export"
HELP = "an indexed DICOM export (a manifest from `medssl index`, or the export folder itself): one item per MR study"
DEFAULT_SEQUENCES: tuple[str, ...] = ("T1", "T1C", "T2", "FLAIR")
MISSING_POLICIES = ("skip", "include", "error")


def _voxel_volume(spacing: Any) -> float:
    try:
        values = [float(v) for v in spacing]
    except (TypeError, ValueError):
        return float("inf")
    if len(values) != 3 or min(values) <= 0:
        return float("inf")
    return values[0] * values[1] * values[2]


def _is_derived(image_type: Any) -> bool:
    return str(image_type or "").upper().startswith("DERIVED")


def rank_candidates(candidates: pd.DataFrame) -> pd.DataFrame:
    """Order the candidate series of one sequence in one study, best first (see the module docstring).

    Args:
        candidates: manifest rows of one study and one sequence.

    Returns:
        The stackable candidates, best first (empty when none stacks).
    """
    frame = candidates.copy()
    if "geometry" in frame:
        frame = frame[frame["geometry"].fillna("ok").astype(str) == "ok"]
    if frame.empty:
        return frame
    frame["_derived"] = [_is_derived(v) for v in frame.get("image_type", pd.Series("", index=frame.index))]
    frame["_voxel"] = [_voxel_volume(v) for v in frame["spacing"]]
    frame["_slices"] = pd.to_numeric(frame["n_instances"], errors="coerce").fillna(0)
    number = frame["series_number"] if "series_number" in frame else pd.Series(0, index=frame.index)
    frame["_number"] = pd.to_numeric(number, errors="coerce").fillna(-1)
    frame = frame.sort_values(
        ["_derived", "_voxel", "_slices", "_number", "series_key"],
        ascending=[True, True, False, False, True],
        kind="stable",
    )
    return frame.drop(columns=["_derived", "_voxel", "_slices", "_number"])


def load_manifest(
    source: str | os.PathLike | pd.DataFrame,
    *,
    salt: str | None = None,
    workers: int | None = None,
    root: str | os.PathLike | None = None,
) -> pd.DataFrame:
    """A manifest from a DataFrame, a manifest file, or an export folder (indexed on the fly).

    Args:
        source: manifest DataFrame, manifest CSV/Parquet, or the export folder.
        salt: key salt when indexing a folder.
        workers: header-reading processes when indexing a folder.
        root: where the export lives now, when it moved since indexing (a manifest file only).

    Returns:
        The manifest.

    Raises:
        DatalistError: the source does not exist.
    """
    if isinstance(source, pd.DataFrame):
        return source
    path = Path(source)
    if path.is_dir():
        from medssl.data.index import index_export

        result = index_export(path, salt=salt, workers=workers)
        logger.info("%s", result.summary_line())
        return result.manifest
    if path.is_file():
        from medssl.data.manifest import read_manifest

        return read_manifest(path, root=root)
    raise DatalistError("no such manifest file or export folder", path)


def dicom_export_items(
    manifest: pd.DataFrame,
    *,
    sequences: Sequence[str] = DEFAULT_SEQUENCES,
    missing: str = "skip",
    base_dir: str | os.PathLike | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One item per MR study of a manifest, with the chosen series of each wanted sequence.

    Args:
        manifest: one row per series (:mod:`medssl.data.manifest`).
        sequences: the sequences to gather (item keys), e.g. ``("T1", "T1C", "T2", "FLAIR")``.
        missing: ``skip``, ``include`` or ``error`` (see the module docstring).
        base_dir: write paths relative to this folder (absolute when None).

    Returns:
        ``(items, problems)``: items sorted by patient key and study rank; problems as ``{"case", "patient_key",
        "problem", "action"}`` rows (keys only, no PHI).

    Raises:
        DatalistError: unknown policy, or the manifest lacks a needed column.
        MissingSequenceError: a study lacks a sequence and ``missing="error"``.
    """
    from medssl.data.manifest import series_files

    if missing not in MISSING_POLICIES:
        raise DatalistError(f"unknown missing policy {missing!r}; expected one of {MISSING_POLICIES}")
    sequences = tuple(sequences)
    if not sequences:
        raise DatalistError("no sequence requested")
    needed = [
        "patient_key",
        "study_key",
        "series_key",
        "modality",
        "sequence",
        "n_instances",
        "spacing",
        "files",
        "root",
    ]
    absent = [c for c in needed if c not in manifest]
    if absent:
        raise DatalistError(f"the manifest lacks columns {absent}")
    base = Path(base_dir).resolve() if base_dir is not None else None
    mr = manifest[manifest["modality"].astype(str).str.upper() == "MR"]
    items, problems = [], []
    for study_key, study in mr.groupby("study_key", sort=False):
        patient_key = str(study["patient_key"].iloc[0])
        item: dict[str, Any] = {}
        chosen: dict[str, str] = {}
        lacking, notes = [], []
        for sequence in sequences:
            candidates = study[study["sequence"].astype(str) == sequence]
            ranked = rank_candidates(candidates)
            if ranked.empty:
                lacking.append(sequence)
                if len(candidates):
                    notes.append(f"{sequence}: {len(candidates)} series, none stacks into a volume")
                continue
            best = ranked.iloc[0]
            files = series_files(best)
            item[sequence] = [os.path.relpath(f, base) if base is not None else os.path.abspath(f) for f in files]
            chosen[sequence] = str(best["series_key"])
            if len(ranked) > 1:
                logger.info(
                    "study %s: %d %s candidates, chose %s", study_key, len(ranked), sequence, best["series_key"]
                )
        if lacking:
            problem = f"missing {', '.join(lacking)}" + (f" ({'; '.join(notes)})" if notes else "")
            if missing == "error":
                raise MissingSequenceError(f"study {study_key} (patient {patient_key}): {problem}")
            action = "skipped" if missing == "skip" or not chosen else "included"
            problems.append({"case": study_key, "patient_key": patient_key, "problem": problem, "action": action})
            if action == "skipped":
                continue
        item.update(case_key=str(study_key), patient_key=patient_key, study_key=str(study_key))
        rank = study["study_rank"].iloc[0] if "study_rank" in study else None
        if rank is not None and not pd.isna(rank):
            item["study_rank"] = int(rank)
        item["series_keys"] = chosen
        if lacking:
            item["missing"] = lacking
        items.append(item)
    items.sort(key=lambda it: (it["patient_key"], it.get("study_rank", 0), it["study_key"]))
    for problem in problems:
        logger.warning("study %s: %s (%s)", problem["case"], problem["problem"], problem["action"])
    return items, problems


def dicom_export_metadata(sequences: Sequence[str] = DEFAULT_SEQUENCES) -> dict[str, Any]:
    """Datalist metadata of an export datalist: the channel names in order.

    Args:
        sequences: the item keys holding series.

    Returns:
        ``{"name", "layout", "channel_def", "image_keys", "series_value"}``.
    """
    return {
        "name": "DICOM export",
        "layout": LAYOUT,
        "channel_def": {str(i): s for i, s in enumerate(sequences)},
        "image_keys": list(sequences),
        "series_value": "list of the series' DICOM files in slice order",
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``medssl datalist dicom-export``."""
    parser.add_argument(
        "--sequences",
        default=",".join(DEFAULT_SEQUENCES),
        help="comma-separated sequences to gather (default T1,T1C,T2,FLAIR; also DWI, ADC)",
    )
    parser.add_argument(
        "--missing",
        choices=MISSING_POLICIES,
        default="skip",
        help="a study lacking a sequence: skip it (default), include it without that key, or fail",
    )
    parser.add_argument("--workers", type=int, help="header-reading processes when SOURCE is an export folder")
    parser.add_argument("--export-root", help="where the export lives now, if it moved since it was indexed")


def build(
    source: str | os.PathLike | pd.DataFrame,
    *,
    salt: str | None = None,
    base_dir: str | os.PathLike | None = None,
    sequences: str | Sequence[str] = DEFAULT_SEQUENCES,
    missing: str = "skip",
    workers: int | None = None,
    export_root: str | os.PathLike | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """Build the items, metadata and problems of an export (the ``medssl datalist`` protocol).

    Args:
        source: a manifest (DataFrame, CSV or Parquet) or the export folder (indexed first).
        salt: key salt when indexing a folder.
        base_dir: write paths relative to this folder.
        sequences: sequences to gather (a list, or a comma-separated string).
        missing: ``skip``, ``include`` or ``error``.
        workers: header-reading processes when indexing.
        export_root: where the export lives now (a manifest file only).

    Returns:
        ``(items, metadata, problems)``.
    """
    if isinstance(sequences, str):
        sequences = [s.strip().upper() for s in sequences.split(",") if s.strip()]
    manifest = load_manifest(source, salt=salt, workers=workers, root=export_root)
    items, problems = dicom_export_items(manifest, sequences=sequences, missing=missing, base_dir=base_dir)
    return items, dicom_export_metadata(sequences), problems
