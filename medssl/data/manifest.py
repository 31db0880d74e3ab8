"""The manifest: one row per DICOM series of an export, free of PHI.

The manifest is the contract between ``medssl index`` and everything after it (``medssl convert``, the datalist
builders, pretraining on an export). Its columns are defined once, in :data:`MANIFEST_COLUMNS`, documented in
``data_manifests/README.md`` and checked when a manifest is read. CSV and Parquet hold the same table; in CSV, list
columns (``spacing``, ``orientation``, ``files``) are JSON-encoded.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medssl.exceptions import ManifestError

__all__ = [
    "Column",
    "MANIFEST_COLUMNS",
    "REQUIRED_COLUMNS",
    "LIST_COLUMNS",
    "ERROR_COLUMNS",
    "write_table",
    "read_table",
    "write_manifest",
    "read_manifest",
    "series_files",
]


@dataclass(frozen=True)
class Column:
    """One manifest column: its name, type, whether every manifest must have it, and its meaning."""

    name: str
    dtype: str
    required: bool
    description: str


MANIFEST_COLUMNS: tuple[Column, ...] = (
    Column("patient_key", "str", True, "salted hash of PatientID (`pat-` + 16 hex digits)"),
    Column("study_key", "str", True, "salted hash of StudyInstanceUID (`stu-...`)"),
    Column("series_key", "str", True, "salted hash of SeriesInstanceUID (`ser-...`)"),
    Column(
        "study_rank",
        "int",
        False,
        "0-based order of the study among the patient's studies, by date and time; "
        "the dates themselves are not kept",
    ),
    Column("modality", "str", True, "DICOM Modality (MR, CT, MG, DX, CR ...)"),
    Column("sequence", "str", True, "MR sequence: T1, T1C, T2, FLAIR, DWI, ADC or OTHER; empty for other modalities"),
    Column(
        "view",
        "str",
        True,
        "planar view (CC, MLO ... for MG, with a `+MODIFIER` such as `CC+SPOT`; PA, AP, LL ... for DX/CR); "
        "empty otherwise",
    ),
    Column("laterality", "str", True, "L, R, B (both) or empty"),
    Column("n_instances", "int", True, "number of files (instances) in the series"),
    Column("n_frames", "int", False, "total number of frames (more than n_instances for multi-frame files)"),
    Column("rows", "int", True, "Rows of the images"),
    Column("columns", "int", True, "Columns of the images"),
    Column(
        "spacing",
        "list[float]",
        True,
        "(x, y, z) spacing in mm: PixelSpacing[1], PixelSpacing[0], slice spacing "
        "from positions; empty when the series has no geometry",
    ),
    Column("orientation", "list[float]", True, "ImageOrientationPatient (6 direction cosines, 4 decimals)"),
    Column("plane", "str", False, "axial, coronal, sagittal or oblique (from the slice normal)"),
    Column("photometric", "str", True, "PhotometricInterpretation (MONOCHROME1 is inverted by the loaders)"),
    Column("geometry", "str", False, "`ok`, or why the series cannot be stacked into one volume"),
    Column("series_number", "int", False, "SeriesNumber"),
    Column("series_description", "str", False, "SeriesDescription"),
    Column("protocol_name", "str", False, "ProtocolName"),
    Column("body_part", "str", False, "BodyPartExamined"),
    Column("manufacturer", "str", False, "Manufacturer"),
    Column("image_type", "str", False, "ImageType values joined with `\\`"),
    Column("contrast", "bool", False, "a contrast agent is recorded (ContrastBolusAgent or the sequence rules)"),
    Column("echo_time", "float", False, "EchoTime (ms)"),
    Column("repetition_time", "float", False, "RepetitionTime (ms)"),
    Column("inversion_time", "float", False, "InversionTime (ms)"),
    Column("presentation_intent", "str", False, "FOR PRESENTATION or FOR PROCESSING (mammography)"),
    Column("transfer_syntax", "str", False, "name of the transfer syntax"),
    Column("sop_class", "str", False, "name of the SOP class"),
    Column("files", "list[str]", True, "the series' files, relative to `root`, sorted along the slice normal"),
    Column("root", "str", True, "the indexed folder (absolute)"),
)
REQUIRED_COLUMNS = tuple(c.name for c in MANIFEST_COLUMNS if c.required)
LIST_COLUMNS = tuple(c.name for c in MANIFEST_COLUMNS if c.dtype.startswith("list"))
ERROR_COLUMNS = ("path", "reason", "detail")
_KEY_PATTERNS = {
    "patient_key": r"pat-[0-9a-f]{16}",
    "study_key": r"stu-[0-9a-f]{16}",
    "series_key": r"ser-[0-9a-f]{16}",
}


def _is_parquet(path: str | os.PathLike) -> bool:
    return str(path).lower().endswith((".parquet", ".pq"))


def write_table(frame: pd.DataFrame, path: str | os.PathLike, list_columns: tuple[str, ...] = ()) -> Path:
    """Write a table as CSV or Parquet (by the file name), JSON-encoding list columns in CSV.

    Args:
        frame: the table.
        path: ``*.csv`` or ``*.parquet``; parent folders are created.
        list_columns: columns holding lists.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if _is_parquet(path):
        frame.to_parquet(path, index=False)
        return path
    frame = frame.copy()
    for column in list_columns:
        if column in frame:
            frame[column] = [json.dumps(list(v)) if _is_list(v) else "" for v in frame[column]]
    frame.to_csv(path, index=False)
    return path


def _is_list(value) -> bool:
    return hasattr(value, "__len__") and not isinstance(value, str | bytes)


def read_table(path: str | os.PathLike, list_columns: tuple[str, ...] = ()) -> pd.DataFrame:
    """Read a table written by :func:`write_table`, decoding list columns.

    Args:
        path: ``*.csv`` or ``*.parquet``.
        list_columns: columns holding lists.

    Returns:
        The table, list columns as Python lists.

    Raises:
        ManifestError: the file does not exist or cannot be parsed.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError("no such file", path)
    try:
        if _is_parquet(path):
            frame = pd.read_parquet(path)
        else:
            frame = pd.read_csv(path, keep_default_na=False, na_values=[""], dtype=str)
    except Exception as error:  # pandas raises many types for a malformed file
        raise ManifestError(f"cannot read table: {error}", path) from error
    for column in list_columns:
        if column in frame:
            frame[column] = [_decode_list(v, column, path) for v in frame[column]]
    return frame


def _decode_list(value, column: str, path) -> list:
    if _is_list(value):
        return list(value)
    if value is None or (isinstance(value, float) and pd.isna(value)) or value == "":
        return []
    try:
        decoded = json.loads(value)
    except json.JSONDecodeError as error:
        raise ManifestError(f"column {column!r} holds {value!r}, not a JSON list", path) from error
    if not isinstance(decoded, list):
        raise ManifestError(f"column {column!r} holds {value!r}, not a JSON list", path)
    return decoded


def write_manifest(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a manifest (CSV, or Parquet when the name ends in ``.parquet``), columns in schema order.

    Args:
        frame: one row per series with at least :data:`REQUIRED_COLUMNS`.
        path: output file.

    Returns:
        The path written.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in frame]
    if missing:
        raise ManifestError(f"manifest lacks required columns {missing}", path)
    known = [c.name for c in MANIFEST_COLUMNS if c.name in frame]
    extra = [c for c in frame.columns if c not in known]
    return write_table(frame[known + extra], path, LIST_COLUMNS)


def read_manifest(path: str | os.PathLike, root: str | os.PathLike | None = None) -> pd.DataFrame:
    """Read and validate a manifest.

    Args:
        path: the manifest (CSV or Parquet).
        root: where the export lives now, when it moved since indexing (replaces the ``root`` column).

    Returns:
        The manifest with typed columns and lists decoded.

    Raises:
        ManifestError: a required column is missing, a key is malformed, or ``n_instances`` disagrees with ``files``.
    """
    frame = read_table(path, LIST_COLUMNS)
    missing = [c for c in REQUIRED_COLUMNS if c not in frame]
    if missing:
        raise ManifestError(f"not a medssl manifest: missing columns {missing}", path)
    for column, pattern in _KEY_PATTERNS.items():
        bad = ~frame[column].astype(str).str.fullmatch(pattern)
        if bad.any():
            row = int(bad.idxmax())
            raise ManifestError(f"row {row}: {column} {frame[column][row]!r} is not a medssl key", path)
    for column in MANIFEST_COLUMNS:
        if column.name not in frame or column.dtype.startswith("list"):
            continue
        if column.dtype == "int":
            frame[column.name] = pd.to_numeric(frame[column.name], errors="coerce").astype("Int64")
        elif column.dtype == "float":
            frame[column.name] = pd.to_numeric(frame[column.name], errors="coerce").astype(float)
        elif column.dtype == "bool":
            frame[column.name] = frame[column.name].map(_to_bool).astype("boolean")
        else:
            frame[column.name] = frame[column.name].fillna("").astype(str)
    counts = frame["files"].map(len)
    bad = counts != frame["n_instances"]
    if bad.any():
        row = int(bad.idxmax())
        raise ManifestError(
            f"row {row}: n_instances is {frame['n_instances'][row]} but {counts[row]} files are listed", path
        )
    if root is not None:
        frame["root"] = os.fspath(Path(root).resolve())
    return frame


def _to_bool(value) -> bool | None:
    if isinstance(value, bool):
        return value
    if value is None or (isinstance(value, float) and pd.isna(value)) or value == "":
        return None
    return str(value).strip().lower() in ("true", "1", "yes")


def series_files(row: pd.Series | dict) -> list[str]:
    """Absolute paths of a manifest row's files, in slice order.

    Args:
        row: one manifest row.

    Returns:
        ``root`` joined with each of ``files``.
    """
    root = row["root"]
    return [os.path.join(root, f) for f in row["files"]]
