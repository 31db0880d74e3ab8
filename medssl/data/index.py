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

import functools
import logging
import multiprocessing
import os
import struct
import threading
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
from pydicom import dcmread
from pydicom.datadict import tag_for_keyword
from pydicom.dataelem import RawDataElement
from pydicom.errors import InvalidDicomError
from pydicom.pixels import get_decoder
from pydicom.uid import UID, ImplicitVRLittleEndian

from medssl.data.geometry import plane_of, series_geometry
from medssl.data.keys import make_key, resolve_salt
from medssl.data.manifest import ERROR_COLUMNS, MANIFEST_COLUMNS
from medssl.data.sequences import has_contrast, infer_sequence
from medssl.data.views import PLANAR_MODALITIES, view_and_laterality
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
_PLANAR_OK = ("MG", "DX", "CR", "RF", "XA", "US", "OT", "SC", "DR", "SR", "ES", "XC", "SM")


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


_TAGS = {
    keyword: tag_for_keyword(keyword)
    for keyword in (
        "PatientID",
        "PatientName",
        "PatientBirthDate",
        "StudyInstanceUID",
        "SeriesInstanceUID",
        "SOPInstanceUID",
        "SOPClassUID",
        "StudyDate",
        "StudyTime",
        "Modality",
        "SeriesNumber",
        "InstanceNumber",
        "SeriesDescription",
        "ProtocolName",
        "SequenceName",
        "ImageType",
        "BodyPartExamined",
        "Manufacturer",
        "ContrastBolusAgent",
        "EchoTime",
        "RepetitionTime",
        "InversionTime",
        "Rows",
        "Columns",
        "NumberOfFrames",
        "ImagePositionPatient",
        "ImageOrientationPatient",
        "PixelSpacing",
        "ImagerPixelSpacing",
        "SliceThickness",
        "SpacingBetweenSlices",
        "PhotometricInterpretation",
        "PresentationIntentType",
        "ViewPosition",
        "ImageLaterality",
        "Laterality",
        "ViewCodeSequence",
        "PatientOrientation",
        "BitsAllocated",
        "SamplesPerPixel",
    )
}


class _Header:
    """Fast read access to the few tags the index needs.

    pydicom converts a raw element to a typed value through its hook machinery on first access, about 40 us per
    element; for the ~40 tags read per file that doubles the cost of parsing the file. Text values (the large
    majority here) are decoded directly from the raw bytes when they are ASCII, and anything else (non-ASCII text,
    sequences, already-converted elements) goes through pydicom's own conversion, so values are pydicom's.
    """

    def __init__(self, ds) -> None:
        self.ds = ds
        self.raw = ds._dict
        implicit, little = ds.original_encoding
        self.little = True if little is None else little

    def text(self, keyword: str) -> str:
        element = self.raw.get(_TAGS[keyword])
        if element is None:
            return ""
        if isinstance(element, RawDataElement) and element.VR not in ("US", "UL", "SS", "SL", "SQ"):
            value = element.value
            if value is None:
                return ""
            try:
                return value.decode("ascii").strip(" \x00")
            except UnicodeDecodeError:
                pass
        value = self.ds[_TAGS[keyword]].value
        if value is None:
            return ""
        if isinstance(value, list | tuple) or type(value).__name__ == "MultiValue":
            return "\\".join(str(v) for v in value)
        return str(value).strip()

    def texts(self, keyword: str) -> list[str]:
        text = self.text(keyword)
        return [t.strip() for t in text.split("\\")] if text else []

    def numbers(self, keyword: str) -> list[float] | None:
        try:
            values = [float(v) for v in self.texts(keyword)]
        except ValueError:
            return None
        return values or None

    def number(self, keyword: str) -> float | None:
        values = self.numbers(keyword)
        return values[0] if values else None

    def integer(self, keyword: str, default: int) -> int:
        element = self.raw.get(_TAGS[keyword])
        if element is None:
            return default
        if (
            isinstance(element, RawDataElement)
            and element.value is not None
            and (element.VR == "US" or (element.VR is None and len(element.value) == 2))
        ):
            return struct.unpack("<H" if self.little else ">H", element.value[:2])[0]
        try:
            return int(float(self.text(keyword)))
        except (TypeError, ValueError):
            return default


def _code_meaning(item) -> str:
    return str(item.get("CodeMeaning") or item.get("CodeValue") or "") if item is not None else ""


def _view_codes(header: _Header) -> tuple[str, str]:
    """CodeMeaning of ViewCodeSequence and of its ViewModifierCodeSequence (mammography)."""
    if _TAGS["ViewCodeSequence"] not in header.raw:
        return "", ""
    try:
        item = header.ds.ViewCodeSequence[0]
        modifiers = item.get("ViewModifierCodeSequence") or []
        return _code_meaning(item), _code_meaning(modifiers[0] if len(modifiers) else None)
    except (IndexError, AttributeError, TypeError, KeyError):
        return "", ""


def _names_in_path(rel: str, patient_id: str, patient_name: str) -> bool:
    lowered = rel.lower()
    tokens = [patient_id] if len(patient_id) >= 4 else []
    tokens += [t for t in patient_name.replace("^", " ").split() if len(t) >= 3]
    return any(t.lower() in lowered for t in tokens)


def _pixel_element(fp, syntax, deflated_ds=None) -> tuple[int, int, int] | None:
    """``(tag, value offset, length)`` of the pixel data element that ``fp`` is positioned at, or None.

    pydicom's ``stop_before_pixels`` leaves the file positioned at the pixel data element but has no API that reports
    the element's offset and length without reading or deferring it (deferring costs about a third more parse time),
    so the 8 or 12 bytes of the element header are unpacked here.
    """
    if deflated_ds is not None:  # offsets in a deflated body are not file offsets: ask pydicom (rare files)
        raw = next((deflated_ds._dict.get(t) for t in _PIXEL_TAGS if t in deflated_ds._dict), None)
        return None if raw is None else (int(raw.tag), -1, -1)
    position = fp.tell()
    head = fp.read(12)
    if len(head) < 8:
        return None
    order = "<" if syntax.is_little_endian else ">"
    group, element = struct.unpack(order + "HH", head[:4])
    tag = (group << 16) | element
    if tag not in _PIXEL_TAGS:
        return None
    if syntax.is_implicit_VR:
        return tag, position + 8, struct.unpack(order + "L", head[4:8])[0]
    if len(head) < 12:
        return tag, -1, -1
    return tag, position + 12, struct.unpack(order + "L", head[8:12])[0]


def _expected_pixel_bytes(header: _Header) -> int:
    """Bytes a native (uncompressed) pixel data element needs, from the raw Image Pixel module values.

    pydicom's ``get_expected_length`` computes the same from a dataset, but converting its six elements through
    pydicom's value hooks costs about a third of the whole header parse, so the product is taken from the raw values
    (0 when the module is incomplete: the loader reports that when it decodes).
    """
    rows, columns = header.integer("Rows", 0), header.integer("Columns", 0)
    bits = header.integer("BitsAllocated", 0)
    samples = header.integer("SamplesPerPixel", 1) or 1
    frames = max(1, header.integer("NumberOfFrames", 1))
    if not (rows and columns and bits):
        return 0
    pixels = rows * columns * frames * samples
    if bits == 1:
        return (pixels + 7) // 8
    expected = pixels * (bits // 8)
    if header.text("PhotometricInterpretation") == "YBR_FULL_422":
        expected = expected // 3 * 2  # 4:2:2 subsampling stores two samples of three
    return expected


def _pixel_problem(header: _Header, pixel, syntax, path: Path, size: int) -> tuple[str, str] | None:
    """Check that pixel data is present, complete and decodable, without reading it."""
    if pixel is None:
        sop = header.text("SOPClassUID")
        name = UID(sop).name if sop else "unknown SOP class"
        return "no_pixel_data", f"no image in this DICOM object ({name})"
    tag, tell, length = pixel
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
    if tell < 0 or length == 0xFFFFFFFF:
        return None
    if tell + length > size:
        return "truncated", f"pixel data declares {length} bytes but the file ends {tell + length - size} bytes early"
    if tag == 0x7FE00010:
        expected = _expected_pixel_bytes(header)
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
            with open(path, "rb") as fp:
                try:
                    ds = dcmread(fp, stop_before_pixels=True)
                except InvalidDicomError:
                    # Old exports hold raw data sets without the 128-byte preamble and DICM prefix; accept them only
                    # if they parse into something carrying DICOM identifiers.
                    fp.seek(0)
                    try:
                        ds = dcmread(fp, stop_before_pixels=True, force=True)
                    except Exception:  # noqa: BLE001 - any parse failure of a forced read means "not DICOM"
                        return _error(rel, "not_dicom", "no DICM prefix and not parseable as a raw DICOM data set")
                    if not any(t in ds._dict for t in (_TAGS["SOPClassUID"], _TAGS["StudyInstanceUID"])):
                        return _error(rel, "not_dicom", "no DICM prefix and no DICOM identifying tags")
                header = _Header(ds)
                sop_class = header.text("SOPClassUID") or str(ds.file_meta.get("MediaStorageSOPClassUID") or "")
                if sop_class == MEDIA_STORAGE_DIRECTORY or "DirectoryRecordSequence" in ds:
                    return {"status": "dicomdir", "path": rel}
                syntax = UID(str(ds.file_meta.get("TransferSyntaxUID") or ImplicitVRLittleEndian))
                deflated = dcmread(path, defer_size=1024) if syntax.is_transfer_syntax and syntax.is_deflated else None
                pixel = _pixel_element(fp, syntax, deflated) if syntax.is_transfer_syntax else (0, -1, -1)
        except (EOFError, OSError) as error:
            reason = "truncated" if isinstance(error, EOFError) or "end of file" in str(error).lower() else "unreadable"
            return _error(rel, reason, f"{type(error).__name__}: {error}")
        except Exception as error:  # noqa: BLE001 - pydicom raises many types on corrupt headers
            message = str(error)
            reason = "truncated" if "end of" in message.lower() or "unexpected" in message.lower() else "unreadable"
            return _error(rel, reason, f"{type(error).__name__}: {message}")
        try:
            problem = _pixel_problem(header, pixel, syntax, path, size)
            if problem is not None:
                return _error(rel, *problem)
            return _record(header, rel, salt, sop_class, syntax)
        except Exception as error:  # noqa: BLE001 - a malformed value in any tag must not stop the whole index
            return _error(rel, "unreadable", f"{type(error).__name__} while reading tags: {error}")


# Consecutive files of a chunk mostly share their patient, study and series: hash each identifier once.
_cached_key = functools.lru_cache(maxsize=4096)(make_key)


def _record(header: _Header, rel: str, salt: str, sop_class: str, syntax) -> dict[str, Any]:
    """The PHI-free record of a parsed header (or an error record)."""
    study_uid = header.text("StudyInstanceUID")
    series_uid = header.text("SeriesInstanceUID")
    if not study_uid or not series_uid:
        missing = [k for k, v in (("StudyInstanceUID", study_uid), ("SeriesInstanceUID", series_uid)) if not v]
        return _error(rel, "missing_tags", f"no {' or '.join(missing)}")
    patient_id = header.text("PatientID")
    patient_name = header.text("PatientName")
    patient_source = patient_id or (f"name:{patient_name}|{header.text('PatientBirthDate')}" if patient_name else "")
    view_code, view_modifier = _view_codes(header)
    return {
        "status": "ok",
        "path": rel,
        "patient_key": _cached_key("patient", patient_source or f"study:{study_uid}", salt),
        "patient_id_missing": not patient_source,
        "study_key": _cached_key("study", study_uid, salt),
        "series_key": _cached_key("series", series_uid, salt),
        "instance_key": make_key("instance", header.text("SOPInstanceUID") or rel, salt),
        "_study_datetime": header.text("StudyDate") + header.text("StudyTime"),
        "path_has_phi": _names_in_path(rel, patient_id, patient_name),
        "Modality": header.text("Modality").upper(),
        "SeriesNumber": header.number("SeriesNumber"),
        "InstanceNumber": header.number("InstanceNumber"),
        "SeriesDescription": header.text("SeriesDescription"),
        "ProtocolName": header.text("ProtocolName"),
        "SequenceName": header.text("SequenceName"),
        "ImageType": header.texts("ImageType"),
        "BodyPartExamined": header.text("BodyPartExamined"),
        "Manufacturer": header.text("Manufacturer"),
        "ContrastBolusAgent": header.text("ContrastBolusAgent"),
        "EchoTime": header.number("EchoTime"),
        "RepetitionTime": header.number("RepetitionTime"),
        "InversionTime": header.number("InversionTime"),
        "Rows": header.integer("Rows", 0),
        "Columns": header.integer("Columns", 0),
        "NumberOfFrames": header.integer("NumberOfFrames", 1),
        "ImagePositionPatient": header.numbers("ImagePositionPatient"),
        "ImageOrientationPatient": header.numbers("ImageOrientationPatient"),
        "PixelSpacing": header.numbers("PixelSpacing") or header.numbers("ImagerPixelSpacing"),
        "SliceThickness": header.number("SliceThickness"),
        "SpacingBetweenSlices": header.number("SpacingBetweenSlices"),
        "PhotometricInterpretation": header.text("PhotometricInterpretation"),
        "PresentationIntentType": header.text("PresentationIntentType"),
        "TransferSyntax": syntax.name,
        "SOPClass": UID(sop_class).name if sop_class else "",
        "ViewPosition": header.text("ViewPosition"),
        "ImageLaterality": header.text("ImageLaterality"),
        "Laterality": header.text("Laterality"),
        "ViewCode": view_code,
        "ViewModifierCode": view_modifier,
        "PatientOrientation": header.texts("PatientOrientation"),
    }


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


def _first(values: Iterable[Any]) -> Any:
    return next((v for v in values if v not in (None, "") and not (isinstance(v, float) and np.isnan(v))), None)


def _mode(values: Iterable[Any]) -> str:
    counts = Counter(str(v) for v in values if v not in (None, ""))
    return counts.most_common(1)[0][0] if counts else ""


def _spacing_2d(pixel_spacing: list[float] | None) -> list[float]:
    return [float(pixel_spacing[1]), float(pixel_spacing[0])] if pixel_spacing and len(pixel_spacing) == 2 else []


def _series_row(instances: list[dict[str, Any]], root: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """One manifest row from the instances of one series (already de-duplicated)."""
    errors: list[dict[str, Any]] = []
    first = instances[0]
    problems: list[str] = []
    spacing: list[float] = []
    orientation: list[float] = []
    plane = ""
    sizes = {(r["Rows"], r["Columns"]) for r in instances}
    if len(sizes) > 1:
        problems.append(f"mixed image sizes {sorted(sizes)}")
    has_geometry = all(r["ImagePositionPatient"] and r["ImageOrientationPatient"] for r in instances)
    multi_frame = max(r["NumberOfFrames"] for r in instances) > 1
    order = sorted(range(len(instances)), key=lambda i: (instances[i]["InstanceNumber"] or 0, instances[i]["path"]))
    if has_geometry and not multi_frame:
        thickness = _first(r["SpacingBetweenSlices"] for r in instances) or _first(
            r["SliceThickness"] for r in instances
        )
        try:
            geometry = series_geometry(
                [r["ImagePositionPatient"] for r in instances],
                [r["ImageOrientationPatient"] for r in instances],
                [r["PixelSpacing"] for r in instances],
                slice_thickness=thickness,
                path=os.path.dirname(first["path"]) or ".",
            )
            order = list(geometry.order)
            spacing = [round(float(v), 6) for v in geometry.spacing]
            orientation = list(geometry.orientation)
            plane = geometry.plane
        except SeriesGeometryError as error:
            problems.append(error.problem)
            iop = first["ImageOrientationPatient"]
            if len(iop) == 6:
                normal = np.cross(iop[:3], iop[3:])
                along = [float(np.dot(r["ImagePositionPatient"], normal)) for r in instances]
                order = sorted(range(len(instances)), key=lambda i: (along[i], instances[i]["path"]))
                orientation = [round(float(v), 4) + 0.0 for v in iop]
                plane = plane_of(normal)
            spacing = _spacing_2d(first["PixelSpacing"])
    else:
        spacing = _spacing_2d(_first(r["PixelSpacing"] for r in instances))
        if multi_frame:
            problems.append("multi-frame instance(s): geometry is per frame (enhanced DICOM)")
        elif first["Modality"] not in _PLANAR_OK:
            problems.append("no ImagePositionPatient/ImageOrientationPatient: not a volume")
    files = [instances[i]["path"] for i in order]

    modality = _mode(r["Modality"] for r in instances)
    image_type = _first(r["ImageType"] for r in instances) or []
    fields = {
        k: first[k]
        for k in (
            "SeriesDescription",
            "ProtocolName",
            "SequenceName",
            "EchoTime",
            "RepetitionTime",
            "InversionTime",
            "ContrastBolusAgent",
        )
    }
    fields.update(Modality=modality, ImageType=image_type)
    view, laterality, conflict = view_and_laterality(first)
    if len(instances) > 1 and modality in PLANAR_MODALITIES:
        lateralities = {view_and_laterality(r)[1] for r in instances} - {""}
        if len(lateralities) > 1:
            conflict = conflict or f"instances disagree on laterality ({sorted(lateralities)})"
            laterality = ""
    if conflict:
        errors.append(_error(files[0], "tag_conflict", f"{conflict}; laterality left empty"))
    row = {
        "patient_key": first["patient_key"],
        "study_key": first["study_key"],
        "series_key": first["series_key"],
        "modality": modality,
        "sequence": infer_sequence(fields) if modality == "MR" else "",
        "view": view,
        "laterality": laterality,
        "n_instances": len(files),
        "n_frames": sum(r["NumberOfFrames"] for r in instances),
        "rows": first["Rows"],
        "columns": first["Columns"],
        "spacing": spacing,
        "orientation": orientation,
        "plane": plane,
        "photometric": _mode(r["PhotometricInterpretation"] for r in instances),
        "geometry": "; ".join(problems) if problems else ("ok" if orientation else "planar"),
        "series_number": _first(r["SeriesNumber"] for r in instances),
        "series_description": first["SeriesDescription"],
        "protocol_name": first["ProtocolName"],
        "body_part": first["BodyPartExamined"],
        "manufacturer": first["Manufacturer"],
        "image_type": "\\".join(image_type),
        "contrast": has_contrast(fields) if modality == "MR" else bool(fields["ContrastBolusAgent"]),
        "echo_time": _float_or_nan(first["EchoTime"]),
        "repetition_time": _float_or_nan(first["RepetitionTime"]),
        "inversion_time": _float_or_nan(first["InversionTime"]),
        "presentation_intent": first["PresentationIntentType"],
        "transfer_syntax": _mode(r["TransferSyntax"] for r in instances),
        "sop_class": first["SOPClass"],
        "files": files,
        "root": root,
        "_study_datetime": first["_study_datetime"],
    }
    return row, errors


def _float_or_nan(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def _split_planar_views(by_series: dict[str, list[dict[str, Any]]], salt: str) -> dict[str, list[dict[str, Any]]]:
    """Split planar series that hold several views into one group per (view, laterality).

    Some vendors put a whole mammography exam in one series. Each group's key is derived from the series key, so it
    stays stable and PHI-free.
    """
    split: dict[str, list[dict[str, Any]]] = {}
    for key, instances in by_series.items():
        if instances[0]["Modality"] not in PLANAR_MODALITIES or len(instances) == 1:
            split[key] = instances
            continue
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for record in instances:
            view, laterality, _ = view_and_laterality(record)
            groups.setdefault((view, laterality), []).append(record)
        if len(groups) == 1:
            split[key] = instances
            continue
        for (view, laterality), members in groups.items():
            derived = make_key("series", f"{key}|{view}|{laterality}", salt)
            split[derived] = [{**r, "series_key": derived} for r in members]
    return split


def _build_manifest(
    records: list[dict[str, Any]], root: str, salt: str = ""
) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    errors: list[dict[str, Any]] = []
    columns = [c.name for c in MANIFEST_COLUMNS]
    kept_at: dict[str, str] = {}
    by_series: dict[str, list[dict[str, Any]]] = {}
    for record in sorted(records, key=lambda r: r["path"]):
        first_path = kept_at.setdefault(record["instance_key"], record["path"])
        if first_path != record["path"]:
            errors.append(
                _error(record["path"], "duplicate_instance", f"same SOPInstanceUID as {first_path}, " "which is kept")
            )
            continue
        by_series.setdefault(record["series_key"], []).append(record)
    by_series = _split_planar_views(by_series, salt)
    rows = []
    for instances in by_series.values():
        owners = Counter((r["patient_key"], r["study_key"]) for r in instances)
        if len(owners) > 1:
            owner = owners.most_common(1)[0][0]
            for record in instances:
                if (record["patient_key"], record["study_key"]) != owner:
                    errors.append(
                        _error(
                            record["path"],
                            "inconsistent_series",
                            "its SeriesInstanceUID is shared with "
                            "files of another patient or study; the majority is kept",
                        )
                    )
            instances = [r for r in instances if (r["patient_key"], r["study_key"]) == owner]
        row, row_errors = _series_row(instances, root)
        rows.append(row)
        errors.extend(row_errors)
    if not rows:
        return pd.DataFrame(columns=columns), errors

    manifest = pd.DataFrame(rows)
    studies = manifest[["patient_key", "study_key", "_study_datetime"]].drop_duplicates("study_key")
    studies = studies.sort_values(["patient_key", "_study_datetime", "study_key"])
    studies["study_rank"] = studies.groupby("patient_key").cumcount()
    manifest = manifest.drop(columns="_study_datetime").merge(studies[["study_key", "study_rank"]], on="study_key")
    manifest["series_number"] = pd.to_numeric(manifest["series_number"], errors="coerce").astype("Int64")
    manifest = manifest.sort_values(["patient_key", "study_rank", "series_number", "series_key"], na_position="last")
    return manifest[[c for c in columns if c in manifest]].reset_index(drop=True), errors


class _NoProgress:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool):
    """A tqdm bar, or a no-op when disabled (a disabled tqdm still starts a monitor thread, which rules out fork)."""
    if not enabled:
        return _NoProgress()
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="file", desc="index", leave=False)


def _start_method() -> str:
    """``fork`` (no re-import, fastest) when this process runs a single thread, else ``forkserver``/``spawn``.

    Forking a process that runs other threads (a training loop, a tqdm monitor) can copy a held lock into the child;
    the workers only parse headers, but the safe start methods cost a second of imports per worker, so they are
    used only when needed.
    """
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


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

    results: list[dict[str, Any]] = []
    if workers == 1 or len(paths) < _IN_PROCESS_BELOW:
        bar = _progress(len(paths), progress)
        for chunk in chunks:
            results.extend(_read_chunk(chunk, str(root), salt))
            bar.update(len(chunk))
        bar.close()
    else:
        with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(_start_method())) as pool:
            futures = [pool.submit(_read_chunk, chunk, str(root), salt) for chunk in chunks]
            bar = _progress(len(paths), progress)  # its monitor thread starts after the workers are forked
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
    manifest, build_errors = _build_manifest(records, str(root), salt)
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
