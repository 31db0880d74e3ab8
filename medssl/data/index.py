"""Index a PACS export: read every file's DICOM header, group instances into series, write a PHI-free manifest.

A hospital export is whatever the PACS or the CD burner wrote: DICOMDIR file-sets with 8-character names, patient/
study/series folders, flat folders where several series are mixed, files with or without extensions, and some files
that cannot be used. :func:`index_export` walks all of it, reads headers only (pixel data is skipped, its presence and
length are checked), in parallel, and groups instances by SeriesInstanceUID, never by folder. Each series becomes one
manifest row (:mod:`medssl.data.manifest`); each file that cannot be used becomes one row of the errors table with a
reason code, and indexing goes on.

Reason codes of the errors table:

==============================  ==============================================================================
``empty_file``                  zero bytes
``not_dicom``                   not a DICOM file (no ``DICM`` prefix and not parseable as raw DICOM)
``unreadable``                  the file could not be opened or parsed (the detail says why)
``truncated``                   the header or the pixel data ends before its declared length
``no_pixel_data``               a DICOM object without an image (SR, RT plan, presentation state ...)
``unsupported_transfer_syntax`` no installed pixel decoder handles the transfer syntax
``missing_tags``                no StudyInstanceUID or SeriesInstanceUID
``duplicate_instance``          the same SOPInstanceUID in a second file (the first is kept)
``inconsistent_series``         a SeriesInstanceUID shared by files of different patients or studies
``tag_conflict``                tags that contradict each other (e.g. ImageLaterality vs Laterality)
``dicomdir_missing_file``       a DICOMDIR references a file that is not there
``dicomdir_unreadable``         a DICOMDIR that pydicom's FileSet cannot read
==============================  ==============================================================================

PHI never leaves the worker that read the header: patient IDs and UIDs are turned into salted keys
(:mod:`medssl.data.keys`) before anything is returned, and study dates only survive as a per-patient rank.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import time
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medssl.data.geometry import plane_of, series_geometry
from medssl.data.keys import make_key, resolve_salt
from medssl.data.manifest import ERROR_COLUMNS, MANIFEST_COLUMNS
from medssl.data.sequences import has_contrast, infer_sequence
from medssl.data.views import view_and_laterality
from medssl.exceptions import InputFileError, SeriesGeometryError
from medssl.log import get_logger

__all__ = ["IndexResult", "find_files", "read_instance", "index_export", "ERROR_REASONS"]

logger = get_logger(__name__)

ERROR_REASONS = (
    "empty_file",
    "not_dicom",
    "unreadable",
    "truncated",
    "no_pixel_data",
    "unsupported_transfer_syntax",
    "missing_tags",
    "duplicate_instance",
    "inconsistent_series",
    "tag_conflict",
    "dicomdir_missing_file",
    "dicomdir_unreadable",
)
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
_PIXEL_TAGS = (0x7FE00010, 0x7FE00008, 0x7FE00009)  # PixelData, FloatPixelData, DoubleFloatPixelData
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
_IN_PROCESS_BELOW = 256  # files; below this a process pool costs more than it saves
_CHUNK = 64


@dataclass
class IndexResult:
    """What :func:`index_export` found.

    Attributes:
        manifest: one row per series (the manifest schema).
        errors: one row per file that could not be used (``path``, ``reason``, ``detail``).
        summary: counts for the one-line summary and for reports.
    """

    manifest: pd.DataFrame
    errors: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)

    def summary_line(self) -> str:
        """A one-line human summary (no PHI)."""
        s = self.summary
        line = (
            f"indexed {s['n_instances']} instances into {s['n_series']} series "
            f"({s['n_studies']} studies, {s['n_patients']} patients) from {s['n_files']} files in {s['seconds']:.1f} s"
        )
        if s["n_errors"]:
            reasons = ", ".join(f"{n} {r}" for r, n in sorted(s["errors_by_reason"].items(), key=lambda x: -x[1]))
            line += f"; {s['n_errors']} files not used ({reasons})"
        return line


def find_files(root: str | os.PathLike) -> list[Path]:
    """Every regular file under ``root`` (hidden folders skipped, symbolic links not followed), sorted.

    Args:
        root: the export folder.

    Returns:
        Absolute paths.
    """
    root = Path(root)
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if name.startswith("."):
                continue
            path = Path(folder, name)
            if path.is_file() and not path.is_symlink():
                found.append(path)
    return sorted(found)


def _error(rel: str, reason: str, detail: str) -> dict[str, Any]:
    return {"status": "error", "path": rel, "reason": reason, "detail": detail[:300]}


def _value(ds, keyword: str) -> Any:
    value = ds.get(keyword)
    if value is None:
        return None
    if hasattr(value, "value") and not isinstance(value, str | bytes):  # DataElement from .get on some tags
        value = value.value
    if isinstance(value, bytes):
        return None
    if isinstance(value, str | int | float):
        return value
    try:
        return [v if isinstance(v, int | float) else str(v) for v in value]
    except TypeError:
        return str(value)


def _int(ds, keyword: str, default: int) -> int:
    try:
        value = ds.get(keyword)
        return default if value in (None, "") else int(value)
    except (TypeError, ValueError):
        return default


def _float_list(ds, keyword: str) -> list[float] | None:
    value = ds.get(keyword)
    if value is None or value == "":
        return None
    try:
        return [float(v) for v in value]
    except (TypeError, ValueError):
        return None


def _code_meaning(ds, keyword: str) -> str:
    sequence = ds.get(keyword)
    if not sequence:
        return ""
    try:
        item = sequence[0]
        return str(item.get("CodeMeaning") or item.get("CodeValue") or "")
    except (IndexError, TypeError, AttributeError):
        return ""


def _view_modifier(ds) -> str:
    sequence = ds.get("ViewCodeSequence")
    if not sequence:
        return ""
    try:
        return _code_meaning(sequence[0], "ViewModifierCodeSequence")
    except (IndexError, TypeError):
        return ""


def _names_in_path(rel: str, patient_id: str, patient_name: str) -> bool:
    lowered = rel.lower()
    tokens = [patient_id] if len(patient_id) >= 4 else []
    tokens += [t for t in patient_name.replace("^", " ").split() if len(t) >= 3]
    return any(t.lower() in lowered for t in tokens)


def _pixel_problem(ds, path: Path, size: int) -> tuple[str, str] | None:
    """Check that pixel data is present, complete and decodable, without reading it."""
    from pydicom.pixels import get_decoder
    from pydicom.pixels.utils import get_expected_length
    from pydicom.uid import UID

    raw = next((ds._dict.get(tag) for tag in _PIXEL_TAGS if tag in ds._dict), None)
    if raw is None:
        sop = ds.get("SOPClassUID")
        name = UID(str(sop)).name if sop else "unknown SOP class"
        return "no_pixel_data", f"no image in this DICOM object ({name})"
    tell, length = getattr(raw, "value_tell", None), getattr(raw, "length", None)
    syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2")))
    if not syntax.is_transfer_syntax:
        return "unsupported_transfer_syntax", f"unknown transfer syntax {syntax}"
    if syntax.is_encapsulated:
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError:
            return "unsupported_transfer_syntax", f"no pixel decoder exists for {syntax.name} ({syntax})"
        if not decoder.is_available:
            return (
                "unsupported_transfer_syntax",
                f"{syntax.name} needs a decoder plugin that is not installed (pip install 'medssl[codecs]')",
            )
        with open(path, "rb") as handle:
            handle.seek(max(0, size - 512))
            if _SEQUENCE_DELIMITER not in handle.read():
                return "truncated", "encapsulated pixel data has no sequence delimiter at the end of the file"
        return None
    if syntax.is_deflated or tell is None or length is None or length == 0xFFFFFFFF:
        return None  # offsets of a deflated body are not file offsets; undefined lengths cannot be checked here
    if tell + length > size:
        return "truncated", f"pixel data declares {length} bytes but the file ends {tell + length - size} bytes early"
    if raw.tag == 0x7FE00010:
        try:
            expected = get_expected_length(ds, unit="bytes")
        except (AttributeError, KeyError, TypeError, ValueError):
            expected = 0  # incomplete image pixel module: the loader reports it when it decodes
        if expected and length < expected:
            return "truncated", f"pixel data holds {length} bytes where Rows/Columns/frames need {expected}"
    return None


def read_instance(path: str | os.PathLike, root: str | os.PathLike, salt: str) -> dict[str, Any]:
    """Read one file's header into a PHI-free record, or an error record.

    Args:
        path: the file.
        root: the export root (paths are reported relative to it).
        salt: the key salt.

    Returns:
        ``{"status": "ok", ...instance fields...}``, ``{"status": "dicomdir", "path": ...}`` or
        ``{"status": "error", "path", "reason", "detail"}``.
    """
    from pydicom import dcmread
    from pydicom.errors import InvalidDicomError

    path = Path(path)
    rel = os.path.relpath(path, root)
    try:
        size = path.stat().st_size
    except OSError as error:
        return _error(rel, "unreadable", str(error))
    if size == 0:
        return _error(rel, "empty_file", "the file has zero bytes")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            try:
                ds = dcmread(path, defer_size=1024)
            except InvalidDicomError:
                # Old exports hold raw data sets without the 128-byte preamble and DICM prefix; accept them only if
                # they parse into something that looks like an image header.
                try:
                    ds = dcmread(path, defer_size=1024, force=True)
                except Exception:  # noqa: BLE001 - any parse failure of a forced read means "not DICOM"
                    return _error(rel, "not_dicom", "no DICM prefix and not parseable as a raw DICOM data set")
                if not any(k in ds for k in ("SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID")):
                    return _error(rel, "not_dicom", "no DICM prefix and no DICOM identifying tags")
        except (EOFError, OSError) as error:
            reason = "truncated" if isinstance(error, EOFError) or "end of file" in str(error).lower() else "unreadable"
            return _error(rel, reason, f"{type(error).__name__}: {error}")
        except Exception as error:  # noqa: BLE001 - pydicom raises many types on corrupt headers
            message = str(error)
            reason = "truncated" if "end of" in message.lower() or "unexpected" in message.lower() else "unreadable"
            return _error(rel, reason, f"{type(error).__name__}: {message}")

        try:
            return _record(ds, rel, path, size, salt)
        except Exception as error:  # noqa: BLE001 - a malformed value in any tag must not stop the whole index
            return _error(rel, "unreadable", f"{type(error).__name__} while reading tags: {error}")


def _record(ds, rel: str, path: Path, size: int, salt: str) -> dict[str, Any]:
    """The PHI-free record of a parsed header (or an error record)."""
    from pydicom.uid import UID

    sop_class = str(ds.get("SOPClassUID") or ds.file_meta.get("MediaStorageSOPClassUID") or "")
    if sop_class == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
        return {"status": "dicomdir", "path": rel}
    try:
        problem = _pixel_problem(ds, path, size)
    except Exception as error:  # noqa: BLE001
        problem = ("unreadable", f"{type(error).__name__}: {error}")
    if problem is not None:
        return _error(rel, *problem)
    study_uid = str(ds.get("StudyInstanceUID") or "").strip()
    series_uid = str(ds.get("SeriesInstanceUID") or "").strip()
    if not study_uid or not series_uid:
        missing = [k for k, v in (("StudyInstanceUID", study_uid), ("SeriesInstanceUID", series_uid)) if not v]
        return _error(rel, "missing_tags", f"no {' or '.join(missing)}")

    patient_id = str(ds.get("PatientID") or "").strip()
    patient_name = str(ds.get("PatientName") or "").strip()
    patient_source = patient_id or (f"name:{patient_name}|{ds.get('PatientBirthDate') or ''}" if patient_name else "")
    pixel_spacing = _float_list(ds, "PixelSpacing") or _float_list(ds, "ImagerPixelSpacing")
    record: dict[str, Any] = {
        "status": "ok",
        "path": rel,
        "patient_key": make_key("patient", patient_source or f"study:{study_uid}", salt),
        "patient_id_missing": not patient_source,
        "study_key": make_key("study", study_uid, salt),
        "series_key": make_key("series", series_uid, salt),
        "instance_key": make_key("instance", str(ds.get("SOPInstanceUID") or rel), salt),
        "_study_datetime": f"{ds.get('StudyDate') or ''}{ds.get('StudyTime') or ''}",
        "path_has_phi": _names_in_path(rel, patient_id, patient_name),
        "Modality": str(ds.get("Modality") or "").upper(),
        "SeriesNumber": _value(ds, "SeriesNumber"),
        "InstanceNumber": _value(ds, "InstanceNumber"),
        "SeriesDescription": str(ds.get("SeriesDescription") or ""),
        "ProtocolName": str(ds.get("ProtocolName") or ""),
        "SequenceName": str(ds.get("SequenceName") or ""),
        "ImageType": _value(ds, "ImageType"),
        "BodyPartExamined": str(ds.get("BodyPartExamined") or ""),
        "Manufacturer": str(ds.get("Manufacturer") or ""),
        "ContrastBolusAgent": str(ds.get("ContrastBolusAgent") or ""),
        "EchoTime": _value(ds, "EchoTime"),
        "RepetitionTime": _value(ds, "RepetitionTime"),
        "InversionTime": _value(ds, "InversionTime"),
        "Rows": _int(ds, "Rows", 0),
        "Columns": _int(ds, "Columns", 0),
        "NumberOfFrames": _int(ds, "NumberOfFrames", 1),
        "ImagePositionPatient": _float_list(ds, "ImagePositionPatient"),
        "ImageOrientationPatient": _float_list(ds, "ImageOrientationPatient"),
        "PixelSpacing": pixel_spacing,
        "SliceThickness": _value(ds, "SliceThickness"),
        "SpacingBetweenSlices": _value(ds, "SpacingBetweenSlices"),
        "PhotometricInterpretation": str(ds.get("PhotometricInterpretation") or ""),
        "PresentationIntentType": str(ds.get("PresentationIntentType") or ""),
        "TransferSyntax": UID(str(ds.file_meta.get("TransferSyntaxUID", "1.2.840.10008.1.2"))).name,
        "SOPClass": UID(sop_class).name if sop_class else "",
        "ViewPosition": str(ds.get("ViewPosition") or ""),
        "ImageLaterality": str(ds.get("ImageLaterality") or ""),
        "Laterality": str(ds.get("Laterality") or ""),
        "ViewCode": _code_meaning(ds, "ViewCodeSequence"),
        "ViewModifierCode": _view_modifier(ds),
        "PatientOrientation": _value(ds, "PatientOrientation"),
    }
    return record


def _read_chunk(paths: Sequence[str], root: str, salt: str) -> list[dict[str, Any]]:
    logging.getLogger("pydicom").setLevel(logging.CRITICAL)
    return [read_instance(p, root, salt) for p in paths]


def _dicomdir_errors(root: Path, dicomdirs: Iterable[str], known: set[str]) -> tuple[list[dict], int]:
    """Check DICOMDIR file-sets: every referenced file must exist."""
    from pydicom.fileset import FileSet

    errors, referenced = [], 0
    for rel in dicomdirs:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                fileset = FileSet(root / rel)
                paths = [os.path.relpath(instance.path, root) for instance in fileset]
        except Exception as error:  # noqa: BLE001 - FileSet raises ValueError/KeyError/... on malformed records
            errors.append(_error(rel, "dicomdir_unreadable", f"{type(error).__name__}: {error}"))
            continue
        for path in paths:
            referenced += 1
            if path not in known and not (root / path).is_file():
                errors.append(_error(path, "dicomdir_missing_file", f"referenced by {rel} but not on disk"))
    return errors, referenced


def _first(values: pd.Series) -> Any:
    for value in values:
        if value is not None and not (isinstance(value, float) and np.isnan(value)) and value != "":
            return value
    return None


def _mode(values: pd.Series) -> Any:
    counts = Counter(str(v) for v in values if v not in (None, ""))
    return counts.most_common(1)[0][0] if counts else ""


def _series_row(series: pd.DataFrame, root: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One manifest row from the instances of one series (already de-duplicated)."""
    errors: list[dict[str, Any]] = []
    first = series.iloc[0]
    files = list(series["path"])
    problems: list[str] = []
    spacing: list[float] = []
    orientation: list[float] = []
    plane = ""
    sizes = set(zip(series["Rows"], series["Columns"], strict=True))
    if len(sizes) > 1:
        problems.append(f"mixed image sizes {sorted(sizes)}")
    has_geometry = series["ImagePositionPatient"].map(lambda v: v is not None).all() and series[
        "ImageOrientationPatient"
    ].map(lambda v: v is not None).all()
    multi_frame = int(series["NumberOfFrames"].max()) > 1
    order = np.lexsort((series["path"].to_numpy(), pd.to_numeric(series["InstanceNumber"], errors="coerce").fillna(0)))
    if has_geometry and not multi_frame:
        thickness = _first(series["SpacingBetweenSlices"]) or _first(series["SliceThickness"])
        try:
            geometry = series_geometry(
                list(series["ImagePositionPatient"]),
                list(series["ImageOrientationPatient"]),
                [v if v is not None else None for v in series["PixelSpacing"]],
                slice_thickness=float(thickness) if thickness not in (None, "") else None,
                path=os.path.dirname(files[0]) or ".",
            )
            order = geometry.order
            spacing = [round(float(v), 6) for v in geometry.spacing]
            orientation = list(geometry.orientation)
            plane = geometry.plane
        except SeriesGeometryError as error:
            problems.append(error.problem)
            iop = series["ImageOrientationPatient"].iloc[0]
            if iop is not None and len(iop) == 6:
                normal = np.cross(iop[:3], iop[3:])
                along = np.array([np.dot(p, normal) if p is not None else 0.0 for p in series["ImagePositionPatient"]])
                order = np.argsort(along, kind="stable")
                orientation = [round(float(v), 4) + 0.0 for v in iop]
                plane = plane_of(normal)
            ps = series["PixelSpacing"].iloc[0]
            if ps is not None and len(ps) == 2:
                spacing = [float(ps[1]), float(ps[0])]
    else:
        ps = _first(series["PixelSpacing"])
        if ps is not None and len(ps) == 2:
            spacing = [float(ps[1]), float(ps[0])]
        if multi_frame:
            problems.append("multi-frame instance(s): geometry is per frame (enhanced DICOM)")
        elif series["Modality"].iloc[0] not in ("MG", "DX", "CR", "RF", "XA", "US", "OT", "SC", "DR"):
            problems.append("no ImagePositionPatient/ImageOrientationPatient: not a volume")
    files = [files[i] for i in order]

    fields = {k: first[k] for k in ("Modality", "SeriesDescription", "ProtocolName", "SequenceName", "ImageType",
                                     "EchoTime", "RepetitionTime", "InversionTime", "ContrastBolusAgent")}
    fields["ImageType"] = _first(series["ImageType"])
    view, laterality, conflict = view_and_laterality(first.to_dict())
    lateralities = {view_and_laterality(r)[1] for r in series.to_dict("records")} - {""}
    if len(lateralities) > 1:
        conflict = conflict or f"instances disagree on laterality ({sorted(lateralities)})"
        laterality = ""
    if conflict:
        errors.append(_error(files[0], "tag_conflict", f"{conflict}; laterality left empty"))
    modality = _mode(series["Modality"])
    row = {
        "patient_key": first["patient_key"],
        "study_key": first["study_key"],
        "series_key": first["series_key"],
        "modality": modality,
        "sequence": infer_sequence(fields) if modality == "MR" else "",
        "view": view,
        "laterality": laterality,
        "n_instances": len(files),
        "n_frames": int(series["NumberOfFrames"].sum()),
        "rows": int(first["Rows"]),
        "columns": int(first["Columns"]),
        "spacing": spacing,
        "orientation": orientation,
        "plane": plane,
        "photometric": _mode(series["PhotometricInterpretation"]),
        "geometry": "; ".join(problems) if problems else ("ok" if orientation else "planar"),
        "series_number": _first(series["SeriesNumber"]),
        "series_description": first["SeriesDescription"],
        "protocol_name": first["ProtocolName"],
        "body_part": first["BodyPartExamined"],
        "manufacturer": first["Manufacturer"],
        "image_type": "\\".join(str(v) for v in fields["ImageType"]) if isinstance(fields["ImageType"], list) else
        (fields["ImageType"] or ""),
        "contrast": has_contrast(fields) if modality == "MR" else bool(fields["ContrastBolusAgent"]),
        "echo_time": _float_or_nan(first["EchoTime"]),
        "repetition_time": _float_or_nan(first["RepetitionTime"]),
        "inversion_time": _float_or_nan(first["InversionTime"]),
        "presentation_intent": first["PresentationIntentType"],
        "transfer_syntax": _mode(series["TransferSyntax"]),
        "sop_class": first["SOPClass"],
        "files": files,
        "root": root,
    }
    return row, errors


def _float_or_nan(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _build_manifest(records: list[dict[str, Any]], root: str) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    errors: list[dict[str, Any]] = []
    columns = [c.name for c in MANIFEST_COLUMNS]
    if not records:
        return pd.DataFrame(columns=columns), errors
    instances = pd.DataFrame.from_records(records).sort_values("path", kind="stable").reset_index(drop=True)

    duplicated = instances.duplicated("instance_key", keep="first")
    for _, row in instances[duplicated].iterrows():
        kept = instances.loc[(instances["instance_key"] == row["instance_key"]) & ~duplicated, "path"].iloc[0]
        errors.append(_error(row["path"], "duplicate_instance", f"same SOPInstanceUID as {kept}, which is kept"))
    instances = instances[~duplicated]

    rows = []
    for _, series in instances.groupby("series_key", sort=False):
        owners = series.groupby(["patient_key", "study_key"]).size().sort_values(ascending=False)
        if len(owners) > 1:
            patient, study = owners.index[0]
            stray = series[(series["patient_key"] != patient) | (series["study_key"] != study)]
            for path in stray["path"]:
                errors.append(_error(path, "inconsistent_series", "its SeriesInstanceUID is shared with files of "
                                     "another patient or study; the majority is kept"))
            series = series.drop(stray.index)
        row, row_errors = _series_row(series.reset_index(drop=True), root)
        row["_study_datetime"] = series["_study_datetime"].iloc[0]
        rows.append(row)
        errors.extend(row_errors)

    manifest = pd.DataFrame(rows)
    studies = manifest[["patient_key", "study_key", "_study_datetime"]].drop_duplicates("study_key")
    studies = studies.sort_values(["patient_key", "_study_datetime", "study_key"])
    studies["study_rank"] = studies.groupby("patient_key").cumcount()
    manifest = manifest.drop(columns="_study_datetime").merge(studies[["study_key", "study_rank"]], on="study_key")
    manifest = manifest.sort_values(["patient_key", "study_rank", "series_number", "series_key"], na_position="last")
    manifest["series_number"] = pd.to_numeric(manifest["series_number"], errors="coerce").astype("Int64")
    return manifest[[c for c in columns if c in manifest]].reset_index(drop=True), errors


def index_export(
    root: str | os.PathLike,
    *,
    salt: str | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> IndexResult:
    """Index every DICOM file under ``root`` into a manifest (one row per series) and an errors table.

    Args:
        root: the export folder (any layout).
        salt: key salt (else ``$MEDSSL_SALT``, else the default with a warning).
        workers: header-reading processes (all cores by default; 1 reads in this process).
        progress: show a progress bar on standard error.

    Returns:
        The manifest, the errors and a summary.

    Raises:
        InputFileError: ``root`` is not a folder.
    """
    started = time.perf_counter()
    root = Path(root).resolve()
    if not root.is_dir():
        raise InputFileError("not a folder", root)
    salt = resolve_salt(salt)
    paths = [str(p) for p in find_files(root)]
    if not workers:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = max(1, min(int(workers), max(1, len(paths) // _CHUNK)))
    chunks = [paths[i : i + _CHUNK] for i in range(0, len(paths), _CHUNK)]

    from tqdm.auto import tqdm

    bar = tqdm(total=len(paths), unit="file", desc="index", disable=not progress, leave=False)
    results: list[dict[str, Any]] = []
    if workers == 1 or len(paths) < _IN_PROCESS_BELOW:
        for chunk in chunks:
            results.extend(_read_chunk(chunk, str(root), salt))
            bar.update(len(chunk))
    else:
        context = multiprocessing.get_context("forkserver" if "forkserver" in multiprocessing.get_all_start_methods()
                                              else "spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            futures = [pool.submit(_read_chunk, chunk, str(root), salt) for chunk in chunks]
            for future in futures:
                chunk_result = future.result()
                results.extend(chunk_result)
                bar.update(len(chunk_result))
    bar.close()

    records = [r for r in results if r["status"] == "ok"]
    errors = [r for r in results if r["status"] == "error"]
    dicomdirs = [r["path"] for r in results if r["status"] == "dicomdir"]
    dicomdir_errors, referenced = _dicomdir_errors(root, dicomdirs, {r["path"] for r in results})
    errors.extend(dicomdir_errors)
    manifest, build_errors = _build_manifest(records, str(root))
    errors.extend(build_errors)
    errors_frame = pd.DataFrame([{k: e[k] for k in ERROR_COLUMNS} for e in errors], columns=list(ERROR_COLUMNS))
    errors_frame = errors_frame.sort_values(["reason", "path"]).reset_index(drop=True)
    for error in errors_frame.itertuples():
        logger.info("skipped %s: %s (%s)", error.path, error.reason, error.detail)

    n_phi_paths = sum(bool(r["path_has_phi"]) for r in records)
    n_missing_id = len({r["study_key"] for r in records if r["patient_id_missing"]})
    if n_phi_paths:
        logger.warning(
            "%d file paths contain the patient's ID or name; the manifest's `files` column holds those paths. "
            "Keep the manifest with the export, or share `medssl convert` outputs (named by keys) instead.",
            n_phi_paths,
        )
    if n_missing_id:
        logger.warning("%d studies have no PatientID or PatientName: each is keyed as its own patient", n_missing_id)
    summary = {
        "n_files": len(paths),
        "n_instances": int(manifest["n_instances"].sum()) if len(manifest) else 0,
        "n_series": len(manifest),
        "n_studies": int(manifest["study_key"].nunique()) if len(manifest) else 0,
        "n_patients": int(manifest["patient_key"].nunique()) if len(manifest) else 0,
        "n_dicomdirs": len(dicomdirs),
        "n_dicomdir_references": referenced,
        "n_errors": len(errors_frame),
        "errors_by_reason": dict(Counter(errors_frame["reason"])),
        "series_by_modality": dict(Counter(manifest["modality"])) if len(manifest) else {},
        "series_by_sequence": dict(Counter(s for s in manifest["sequence"] if s)) if len(manifest) else {},
        "n_paths_with_phi": n_phi_paths,
        "n_studies_without_patient_id": n_missing_id,
        "workers": workers,
        "seconds": time.perf_counter() - started,
    }
    return IndexResult(manifest=manifest, errors=errors_frame, summary=summary)
