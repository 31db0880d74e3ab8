"""NIfTI in and out: one reader for NIfTI files and DICOM series, NIfTI writing with sidecars, manifest conversion.

- :class:`VolumeReader` is a MONAI ``ImageReader`` that reads a NIfTI file with MONAI's ``NibabelReader`` and anything
  else (a DICOM folder, file or list of files) with :class:`medssl.data.dicom.DicomSeriesReader`, so one
  ``LoadImaged`` handles a study whose sequences come as a mix of NIfTI files and DICOM series. Both give RAS affines.
- :func:`write_nifti` writes a volume (or a channel-first stack, as a 4D file) with its affine and a JSON sidecar.
- :func:`convert_manifest` is what ``medssl convert`` runs: every series of a manifest to NIfTI (like dcm2niix, names
  built from keys), or one multi-channel NIfTI per MR study on the grid of a reference sequence. Studies or series
  that fail are reported (errors CSV, log line with the key) and skipped.

Series exporters are looked up per modality in :data:`EXPORTERS` (dotted names, so that worker processes resolve
them too): volumes (MR, CT, PT ...) go to :func:`export_volume_nifti`, planar images (MG, DX, CR ...) display-ready
(modality LUT, VOI window, MONOCHROME1 inverted, not flipped) to :mod:`medssl.data.display`'s 16-bit PNG or float
NIfTI exporters (``planar_format``). :func:`register_exporter` routes a modality elsewhere.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import multiprocessing
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from monai.data import ImageReader, NibabelReader
from monai.utils import ensure_tuple

from medssl import __version__
from medssl.data.dicom import DicomSeriesReader, is_nifti_path
from medssl.data.manifest import series_files, write_table
from medssl.exceptions import InputFileError, MedsslError

__all__ = [
    "VolumeReader",
    "write_nifti",
    "sidecar_path",
    "EXPORTERS",
    "register_exporter",
    "get_exporter",
    "export_volume_nifti",
    "series_label",
    "select_series",
    "SELECTION_RULE",
    "ConvertResult",
    "convert_manifest",
    "CONVERT_ERROR_COLUMNS",
    "CONVERTED_COLUMNS",
]

logger = logging.getLogger(__name__)

PLANAR_MODALITIES = ("MG", "DX", "CR", "RG", "XA", "RF", "IO", "PX")
CONVERT_ERROR_COLUMNS = ("patient_key", "study_key", "series_key", "reason", "detail")
CONVERTED_COLUMNS = ("patient_key", "study_key", "series_key", "kind", "label", "path", "sidecar", "shape", "spacing")
SELECTION_RULE = (
    "per sequence, the series with usable geometry (manifest `geometry` == 'ok' when the column exists), then the "
    "most slices (n_frames, else n_instances), then the highest SeriesNumber (the latest acquisition, e.g. a repeat "
    "after motion), then the largest series key"
)
# Metadata of a loaded DICOM series that may go into a sidecar: PHI-free by construction (no paths, no UIDs).
_SIDECAR_META = (
    "modality",
    "series_number",
    "series_description",
    "manufacturer",
    "body_part",
    "laterality",
    "view",
    "photometric",
    "echo_time",
    "repetition_time",
    "inversion_time",
    "flip_angle",
    "magnetic_field_strength",
    "image_type",
    "contrast_agent",
    "transfer_syntax",
    "sop_class",
    "plane",
    "geometry",
    "n_instances",
    "n_slices",
    "note",
)


class VolumeReader(ImageReader):
    """Read one volume from a NIfTI file (MONAI's ``NibabelReader``) or a DICOM series (:class:`DicomSeriesReader`).

    The input decides: a path ending in ``.nii``/``.nii.gz`` is NIfTI; a folder, a DICOM file or a list of DICOM
    files is one DICOM series. Both yield ``(x, y, z)`` arrays with RAS affines, so sequences from either source mix.
    Errors are medssl errors naming the file (use it as a call-time reader, or through
    :class:`medssl.transforms.LoadVolume`, so that ``LoadImage`` does not fall back to another reader).

    Args:
        salt: salt of the keys in DICOM metadata (default ``$MEDSSL_SALT``).
        workers: threads reading DICOM files.
        invert_monochrome1: invert MONOCHROME1 DICOM images.
        nibabel_kwargs: keyword arguments of MONAI's ``NibabelReader``.
    """

    def __init__(
        self,
        salt: str | None = None,
        workers: int | None = None,
        invert_monochrome1: bool = True,
        nibabel_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.dicom = DicomSeriesReader(salt=salt, workers=workers, invert_monochrome1=invert_monochrome1)
        self.nifti = NibabelReader(**dict(nibabel_kwargs or {}))

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        """Whether the input is a NIfTI file or looks like a DICOM series.

        Args:
            filename: a path or a list of paths.

        Returns:
            True when this reader can read it.
        """
        names = [os.fspath(n) for n in ensure_tuple(filename)]
        return (len(names) == 1 and is_nifti_path(names[0])) or self.dicom.verify_suffix(names)

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> tuple[str, Any]:
        """Read a NIfTI file or a DICOM series.

        Args:
            data: one NIfTI path, or a DICOM folder / file / list of files.
            kwargs: ignored.

        Returns:
            ``("nifti" | "dicom", reader object)`` for :meth:`get_data`.

        Raises:
            InputFileError: a missing or unreadable NIfTI file, several NIfTI files, or NIfTI mixed with DICOM.
        """
        names = [os.fspath(n) for n in ensure_tuple(data)]
        nifti = [n for n in names if is_nifti_path(n)]
        if not nifti:
            return "dicom", self.dicom.read(names)
        if len(names) > 1:
            raise InputFileError(
                f"expected one NIfTI file or one DICOM series, got {len(names)} paths ({len(nifti)} NIfTI)", names[0]
            )
        path = names[0]
        if not os.path.isfile(path):
            raise InputFileError("no such file", path)
        try:
            return "nifti", self.nifti.read(path)
        except Exception as error:  # nibabel raises ImageFileError, EOFError, zlib errors ... on damaged files
            raise InputFileError(f"cannot read NIfTI: {type(error).__name__}: {error}", path) from error

    def get_data(self, img: tuple[str, Any]) -> tuple[np.ndarray, dict]:
        """Array and metadata of what :meth:`read` returned.

        Args:
            img: the output of :meth:`read`.

        Returns:
            ``(array, metadata)`` as MONAI readers return them.
        """
        kind, obj = img
        if kind == "dicom":
            return self.dicom.get_data(obj)
        try:
            return self.nifti.get_data(obj)
        except Exception as error:  # truncated data blocks surface only when the array is read
            name = getattr(obj, "get_filename", lambda: None)() or "NIfTI file"
            raise InputFileError(f"cannot read NIfTI data: {type(error).__name__}: {error}", name) from error


# ---------------------------------------------------------------------------------------------------- writing
def sidecar_path(image_path: str | os.PathLike) -> Path:
    """The JSON sidecar next to an image: ``x.nii.gz`` -> ``x.json``.

    Args:
        image_path: the image file.

    Returns:
        The sidecar path.
    """
    path = Path(image_path)
    name = path.name
    for suffix in (".nii.gz", ".nii", ".png"):
        if name.endswith(suffix):
            return path.with_name(name[: -len(suffix)] + ".json")
    return path.with_suffix(".json")


def _json_ready(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_ready(v) for v in value]
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return _json_ready(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_nifti(
    image: Any,
    path: str | os.PathLike,
    *,
    affine: np.ndarray | None = None,
    channel_first: bool = False,
    sidecar: Mapping[str, Any] | None = None,
    dtype: str | None = None,
) -> list[Path]:
    """Write a volume as NIfTI (scanner-anatomical sform and qform, mm units), with an optional JSON sidecar.

    Args:
        image: ``(x, y, z)`` (or ``(x, y)``) array or tensor, or ``(C, x, y, z)`` when ``channel_first`` (written as a
            4D ``(x, y, z, C)`` file, the layout of the Medical Segmentation Decathlon that MONAI reads back
            channel-last). A ``MetaTensor`` brings its own affine.
        path: output file (``.nii.gz`` or ``.nii``); parent folders are created.
        affine: RAS affine (default: the MetaTensor's).
        channel_first: the first axis holds channels.
        sidecar: JSON-serialisable metadata written next to the image (``x.json``).
        dtype: output dtype; by default int16 when every value is an integer in int16 range, else float32.

    Returns:
        The files written (image, then sidecar).
    """
    import nibabel as nib

    if affine is None:
        affine = getattr(image, "affine", None)
    if affine is None:
        raise ValueError("write_nifti needs an affine (pass one, or a MetaTensor)")
    affine = np.asarray(affine.detach().cpu() if hasattr(affine, "detach") else affine, dtype=np.float64)
    array = image.detach().cpu().numpy() if hasattr(image, "detach") else np.asarray(image)
    if channel_first:
        array = np.moveaxis(array, 0, -1)
    if dtype is None:
        finite = np.isfinite(array).all()
        integral = finite and array.size and np.array_equal(array, np.round(array))
        in_range = integral and array.min() >= np.iinfo(np.int16).min and array.max() <= np.iinfo(np.int16).max
        dtype = "int16" if in_range else "float32"
    nifti = nib.Nifti1Image(np.asarray(array, dtype=dtype), affine)
    nifti.header.set_xyzt_units("mm", "sec")
    nifti.set_sform(affine, code=1)
    nifti.set_qform(affine, code=1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nifti, str(path))
    written = [path]
    if sidecar is not None:
        side = sidecar_path(path)
        side.write_text(json.dumps(_json_ready(dict(sidecar)), indent=2, sort_keys=False) + "\n")
        written.append(side)
    return written


# ---------------------------------------------------------------------------------------------------- exporters
SeriesExporter = Callable[[Mapping[str, Any], Path], list[Path]]

EXPORTERS: dict[str, str] = {
    **{modality: "medssl.data.display.export_planar_display" for modality in PLANAR_MODALITIES},
    "*": "medssl.data.nifti.export_volume_nifti",
}


def register_exporter(modality: str, exporter: str) -> None:
    """Route a modality's series to another exporter.

    Args:
        modality: DICOM Modality (``MG``, ``DX`` ...) or ``*`` for the default.
        exporter: dotted name of a function ``(row, out_stem) -> list[Path]`` (a name rather than the function, so
            that worker processes of ``--workers N`` resolve it by importing its module).
    """
    EXPORTERS[modality.upper()] = exporter


def get_exporter(modality: str, exporters: Mapping[str, str] | None = None) -> SeriesExporter:
    """The exporter function of a modality.

    Args:
        modality: DICOM Modality.
        exporters: the registry to look in (default :data:`EXPORTERS`); passed explicitly to worker processes.

    Returns:
        The function registered for it, else the default.
    """
    exporters = EXPORTERS if exporters is None else exporters
    name = exporters.get(str(modality).upper(), exporters["*"])
    module, _, attribute = name.rpartition(".")
    return getattr(importlib.import_module(module), attribute)


def series_label(row: Mapping[str, Any]) -> str:
    """The label that ends a series' file name: its MR sequence, else modality (+ laterality and view if planar).

    Args:
        row: a manifest row.

    Returns:
        e.g. ``T1C``, ``CT``, ``MG-L-CC``.
    """
    sequence = str(row.get("sequence", "") or "")
    modality = str(row.get("modality", "") or "") or "UNKNOWN"
    if sequence and sequence != "OTHER":
        return sequence
    parts = [modality]
    if modality in PLANAR_MODALITIES:
        parts += [str(row.get("laterality", "") or ""), str(row.get("view", "") or "")]
    label = "-".join(p for p in parts if p)
    return "".join(c if c.isalnum() or c in "-" else "-" for c in label)


def _row_sidecar(row: Mapping[str, Any], image: Any) -> dict[str, Any]:
    meta = getattr(image, "meta", {})
    sidecar: dict[str, Any] = {
        "patient_key": row.get("patient_key"),
        "study_key": row.get("study_key"),
        "series_key": row.get("series_key"),
        "sequence": str(row.get("sequence", "") or "") or None,
    }
    for name in ("study_rank", "view", "laterality"):
        value = row.get(name)
        if value is not None and not (isinstance(value, float) and math.isnan(value)) and value is not pd.NA:
            sidecar[name] = value
    for name in _SIDECAR_META:
        if name in meta and name not in sidecar:
            sidecar[name] = meta[name]
    sidecar["shape"] = list(image.shape)
    sidecar["spacing"] = [float(v) for v in np.asarray(meta.get("spacing", []), dtype=float).tolist()]
    sidecar["affine_ras"] = np.asarray(image.affine, dtype=float).tolist()
    sidecar["converter"] = f"medssl {__version__} convert"
    return {k: v for k, v in sidecar.items() if v is not None}


def export_volume_nifti(row: Mapping[str, Any], out_stem: Path) -> list[Path]:
    """Write one series as ``<out_stem>.nii.gz`` and ``<out_stem>.json`` (the default exporter).

    Args:
        row: a manifest row.
        out_stem: output path without extension.

    Returns:
        The files written.
    """
    from medssl.data.dicom import load_series

    image = load_series(series_files(row), sequence=str(row.get("sequence", "") or "") or None)
    sidecar = _row_sidecar(row, image)
    return write_nifti(image, out_stem.with_name(out_stem.name + ".nii.gz"), sidecar=sidecar)


# ---------------------------------------------------------------------------------------------------- conversion
@dataclass
class ConvertResult:
    """What :func:`convert_manifest` did.

    Attributes:
        converted: one record per output image (:data:`CONVERTED_COLUMNS`).
        errors: one record per skipped series or study (:data:`CONVERT_ERROR_COLUMNS`).
        ignored: number of series left out on purpose (non-MR series when stacking).
        errors_path: where the errors CSV was written.
        converted_path: where the list of outputs was written.
    """

    converted: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    ignored: int = 0
    errors_path: Path | None = None
    converted_path: Path | None = None

    def summary_line(self) -> str:
        """One line for the end of a run."""
        kinds = {record["kind"] for record in self.converted}
        what = "stacked studies" if kinds == {"stack"} else "series"
        line = f"wrote {len(self.converted)} {what}"
        if self.errors:
            line += f"; skipped {len(self.errors)} with errors (see {self.errors_path})"
        if self.ignored:
            line += f"; ignored {self.ignored} series outside the stack"
        return line


def _value(row: Mapping[str, Any], name: str, default: Any) -> Any:
    value = row.get(name, default)
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return default
    return value


def select_series(candidates: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """Pick one series among several of the same sequence in a study (rule: :data:`SELECTION_RULE`).

    Args:
        candidates: manifest rows (at least one).

    Returns:
        The chosen row.
    """

    def rank(row: Mapping[str, Any]) -> tuple:
        geometry_ok = str(_value(row, "geometry", "ok") or "ok") == "ok"
        slices = int(_value(row, "n_frames", 0) or 0) or int(_value(row, "n_instances", 0) or 0)
        return (geometry_ok, slices, int(_value(row, "series_number", -1)), str(row.get("series_key", "")))

    return max(candidates, key=rank)


def _medssl_cause(error: BaseException) -> MedsslError | None:
    from medssl.transforms.array import find_medssl_error  # imported here: medssl.transforms imports this module

    return find_medssl_error(error)


def _error_record(row: Mapping[str, Any], error: BaseException, series: bool) -> dict[str, Any]:
    reason = type(error).__name__
    # Paths relative to the export root, as in the manifest: the absolute location of an export says nothing useful
    # and may name a site or a person.
    detail = str(error)
    root = str(row.get("root", "") or "")
    if root:
        detail = detail.replace(root.rstrip(os.sep) + os.sep, "")
    key = row.get("series_key") if series else row.get("study_key")
    logger.warning("%s %s: %s", key, reason, detail)
    return {
        "patient_key": row.get("patient_key", ""),
        "study_key": row.get("study_key", ""),
        "series_key": row.get("series_key", "") if series else "",
        "reason": reason,
        "detail": detail,
    }


def _converted_record(row: Mapping[str, Any], kind: str, label: str, written: list[Path], out_dir: Path) -> dict:
    image = written[0]
    sidecar = written[1] if len(written) > 1 else None
    info = json.loads(sidecar.read_text()) if sidecar is not None and sidecar.suffix == ".json" else {}
    return {
        "patient_key": row.get("patient_key", ""),
        "study_key": row.get("study_key", ""),
        "series_key": row.get("series_key", "") if kind == "series" else "",
        "kind": kind,
        "label": label,
        "path": os.path.relpath(image, out_dir),
        "sidecar": os.path.relpath(sidecar, out_dir) if sidecar is not None else "",
        "shape": info.get("shape", []),
        "spacing": info.get("spacing", []),
    }


def _convert_one_series(
    row: dict[str, Any], out_dir: str, overwrite: bool, exporters: Mapping[str, str] | None = None
) -> dict[str, Any]:
    out = Path(out_dir)
    label = series_label(row)
    stem = out / str(row["patient_key"]) / str(row["study_key"]) / f"{row['series_key']}_{label}"
    sidecar = stem.with_name(stem.name + ".json")  # every exporter writes one, whatever its image format
    try:
        if sidecar.exists() and not overwrite:
            # listed as the exporters list them: images first, the sidecar last
            found = [p for p in stem.parent.glob(f"{stem.name}[._]*") if p != sidecar]
            written = sorted(found) + [sidecar]
        else:
            written = get_exporter(str(row.get("modality", "")), exporters)(row, stem)
        return {"converted": _converted_record(row, "series", label, written, out)}
    except Exception as error:  # a batch job reports and goes on; unexpected tracebacks go to the debug log
        cause = _medssl_cause(error)
        if cause is None:
            logger.debug("unexpected error on series %s", row.get("series_key"), exc_info=True)
        return {"error": _error_record(row, cause or error, series=True)}


def _convert_one_study(
    rows: list[dict[str, Any]],
    out_dir: str,
    sequences: tuple[str, ...],
    reference: str,
    missing: str,
    overwrite: bool,
) -> dict[str, Any]:
    from medssl.transforms.mr import mr_stack_transforms

    out = Path(out_dir)
    study = rows[0]
    label = "stack"
    target = out / str(study["patient_key"]) / str(study["study_key"]) / f"{study['study_key']}_{label}.nii.gz"
    try:
        if target.exists() and not overwrite:
            written = [p for p in (target, sidecar_path(target)) if p.exists()]
            return {"converted": _converted_record(study, "stack", label, written, out)}
        chosen: dict[str, Mapping[str, Any]] = {}
        alternatives: dict[str, list[str]] = {}
        for name in sequences:
            candidates = [r for r in rows if str(r.get("sequence", "")) == name]
            if candidates:
                chosen[name] = select_series(candidates)
                others = [str(r["series_key"]) for r in candidates if r is not chosen[name]]
                if others:
                    alternatives[name] = others
        item: dict[str, Any] = {"case_key": study["study_key"], "patient_key": study["patient_key"]}
        item.update({name: series_files(row) for name, row in chosen.items()})
        stack = mr_stack_transforms(
            sequences=sequences, reference=reference, missing=missing, label_key=None, presence_key="presence"
        )
        result = stack(item)
        image = result["image"]
        presence = [float(v) for v in result["presence"].tolist()]
        sidecar = {
            "patient_key": study["patient_key"],
            "study_key": study["study_key"],
            "channel_def": {str(i): name for i, name in enumerate(sequences)},
            "presence": presence,
            "reference": image.meta.get("reference", reference),
            "missing_policy": missing,
            "sources": {name: str(row["series_key"]) for name, row in chosen.items()},
            "alternatives": alternatives,
            "selection_rule": SELECTION_RULE,
            "shape": [*image.shape[1:], image.shape[0]],
            "spacing": [float(v) for v in np.asarray(image.meta.get("spacing", []), dtype=float).tolist()],
            "affine_ras": np.asarray(image.affine, dtype=float).tolist(),
            "layout": "4D NIfTI (x, y, z, channel); channel i is channel_def[i]",
            "converter": f"medssl {__version__} convert --stack",
        }
        written = write_nifti(image, target, channel_first=True, sidecar=sidecar, dtype="float32")
        return {"converted": _converted_record(study, "stack", label, written, out)}
    except Exception as error:  # a batch job reports and goes on; unexpected tracebacks go to the debug log
        cause = _medssl_cause(error)
        if cause is None:
            logger.debug("unexpected error on study %s", study.get("study_key"), exc_info=True)
        return {"error": _error_record(study, cause or error, series=False)}


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    records = []
    for record in frame.to_dict(orient="records"):
        records.append({k: (None if v is pd.NA else v) for k, v in record.items()})
    return records


def convert_manifest(
    manifest: pd.DataFrame,
    out_dir: str | os.PathLike,
    *,
    stack: Sequence[str] | None = None,
    reference: str | None = None,
    missing: str = "error",
    workers: int = 1,
    overwrite: bool = False,
    planar_format: str = "png",
) -> ConvertResult:
    """Convert the series of a manifest to NIfTI, or stack each MR study's sequences into one NIfTI.

    Without ``stack``: every series goes to ``<out>/<patient_key>/<study_key>/<series_key>_<label>.nii.gz`` with a
    ``.json`` sidecar (PHI-free: keys, modality, sequence, geometry, acquisition parameters), through the exporter of
    its modality (:data:`EXPORTERS`). With ``stack`` (e.g. ``("T1C", "T1", "T2", "FLAIR")``): each study holding MR
    series goes to ``<out>/<patient_key>/<study_key>/<study_key>_stack.nii.gz`` (4D, channels in the given order,
    resampled onto the grid of ``reference``) with a sidecar holding ``channel_def``, ``presence`` and the chosen
    series (one per sequence, by :data:`SELECTION_RULE`); other series are ignored.

    Failures (unreadable files, broken geometry, a missing sequence under ``missing="error"``) are logged with the
    key, written to ``<out>/convert_errors.csv`` and skipped. ``<out>/converted.csv`` lists the outputs.

    Args:
        manifest: the manifest (see :func:`medssl.data.manifest.read_manifest`).
        out_dir: output folder.
        stack: sequences to stack, in channel order; None converts series one by one.
        reference: the sequence whose grid the stack uses (default: the first of ``stack``).
        missing: ``error`` (skip the study) or ``zeros`` (zero channel, presence 0) for a missing sequence.
        workers: processes (1 runs in this process).
        overwrite: rewrite outputs that exist (else they are listed as they are).
        planar_format: planar series (MG, DX, CR ...) written display-ready (modality LUT, VOI window, MONOCHROME1
            inverted, not flipped) as 16-bit ``png`` or float ``nifti``.

    Returns:
        The outputs, the errors and the paths of the two CSV files.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    result = ConvertResult()
    tasks: list[tuple[Callable, tuple]] = []
    if stack:
        sequences = tuple(stack)
        reference = reference or sequences[0]
        if reference not in sequences:
            raise MedsslError(f"reference {reference!r} is not one of the stacked sequences {list(sequences)}")
        if missing not in ("error", "zeros"):
            raise MedsslError(f"missing must be 'error' or 'zeros', got {missing!r}")
        is_mr = manifest["modality"].astype(str) == "MR"
        result.ignored = int((~is_mr).sum())
        for _, study in manifest[is_mr].groupby("study_key", sort=True):
            tasks.append((_convert_one_study, (_records(study), str(out), sequences, reference, missing, overwrite)))
    else:
        from medssl.data.display import PLANAR_EXPORTERS

        if planar_format not in PLANAR_EXPORTERS:
            raise MedsslError(f"planar_format must be one of {sorted(PLANAR_EXPORTERS)}, got {planar_format!r}")
        exporters = dict(EXPORTERS)
        for modality in PLANAR_MODALITIES:
            if exporters.get(modality) == "medssl.data.display.export_planar_display":  # not re-routed by the user
                exporters[modality] = PLANAR_EXPORTERS[planar_format]
        for row in _records(manifest.sort_values(["patient_key", "study_key", "series_key"])):
            tasks.append((_convert_one_series, (row, str(out), overwrite, exporters)))

    if workers > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=get_context(_start_method()), initializer=_worker_init
        ) as pool:
            outcomes = list(pool.map(_run_task, tasks))
    else:
        outcomes = [_run_task(task) for task in tasks]
    for outcome in outcomes:
        if "converted" in outcome:
            result.converted.append(outcome["converted"])
        else:
            result.errors.append(outcome["error"])

    result.errors_path = write_table(
        pd.DataFrame(result.errors, columns=list(CONVERT_ERROR_COLUMNS)), out / "convert_errors.csv"
    )
    result.converted_path = write_table(
        pd.DataFrame(result.converted, columns=list(CONVERTED_COLUMNS)), out / "converted.csv", ("shape", "spacing")
    )
    return result


def _start_method() -> str:
    """The start method of worker processes, chosen as :mod:`medssl.data.index` does.

    ``fork`` when this process runs one Python thread (no re-import of torch and MONAI: seconds per worker), else
    ``forkserver``/``spawn``: forking a process running other threads can copy a held lock into the child.
    """
    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return "fork"
    return "forkserver" if "forkserver" in methods else "spawn"


def _worker_init() -> None:
    # One torch thread per worker process: N processes already use N cores, and a forked child must not reuse the
    # parent's OpenMP thread pool.
    import torch

    torch.set_num_threads(1)


def _run_task(task: tuple[Callable, tuple]) -> dict[str, Any]:
    function, arguments = task
    return function(*arguments)
