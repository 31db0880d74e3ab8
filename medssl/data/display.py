"""Planar images (MG, DX, CR) as a radiologist sees them: modality LUT, VOI LUT or window, MONOCHROME1 inverted.

A mammogram or a radiograph is stored in detector values; what a reader looks at is the result of the DICOM
grayscale pipeline (PS3.3 C.11, PS3.4 N.2):

1. **Modality LUT**: RescaleSlope/RescaleIntercept or a Modality LUT Sequence (pydicom's ``apply_modality_lut``);
2. **VOI LUT**: the VOI LUT Sequence when present, else WindowCenter/WindowWidth with the VOILUTFunction (LINEAR,
   LINEAR_EXACT or SIGMOID) - pydicom's ``apply_voi_lut`` with ``prefer_lut=True``; the first of several windows
   unless ``voi_index`` says otherwise. An image without any VOI information (typical of FOR PROCESSING images)
   is scaled from its minimum to its maximum, and ``info["voi"]`` says ``minmax``;
3. **Presentation**: the VOI output is scaled to [0, 1] from the output range the standard defines for it (the LUT's
   bit depth; for a window, the range of the stored values after rescale), and MONOCHROME1 images (where larger
   values are darker) are inverted, so that dense tissue and bone are always bright.

:func:`display_image` runs this for one file or dataset and returns ``(image, info)``: a float32 ``(rows, columns)``
array in [0, 1] and a PHI-free dictionary (view, laterality, photometric, presentation intent with a
``for_processing`` flag, pixel spacing from PixelSpacing or ImagerPixelSpacing, which VOI was used, the chest-wall
side from PatientOrientation, salted keys). :class:`PlanarDicomReader` is the same as a MONAI ``ImageReader``, so
``LoadImage(reader=PlanarDicomReader())`` returns display-ready images with that metadata.

FOR PROCESSING images (raw detector data meant for the vendor's processing) are loaded, never refused, but flagged
(``info["for_processing"]``, and a log line), because they do not look like what a radiologist reads; exams prefer
FOR PRESENTATION images (:mod:`medssl.data.mammo`).

:func:`export_planar_display` writes a display-ready 16-bit PNG and a JSON sidecar per image, with the signature of a
``medssl convert`` series exporter (:func:`medssl.data.nifti.register_exporter`); :func:`register_planar_exporter`
routes MG/DX/CR there.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.data import ImageReader
from monai.utils import ensure_tuple
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut
from pydicom.uid import UID

from medssl.data.keys import SALT_ENV, make_key
from medssl.data.views import chest_wall_side, fields_from_dataset, split_view, view_and_laterality
from medssl.exceptions import DicomReadError, InputFileError
from medssl.log import get_logger

__all__ = [
    "PlanarImageError",
    "DISPLAY_INFO_KEYS",
    "read_planar_dataset",
    "pixel_spacing",
    "display_info",
    "display_image",
    "PlanarDicomReader",
    "write_display_png",
    "export_planar_display",
    "register_planar_exporter",
]

logger = get_logger(__name__)

_NOT_DICOM_SUFFIXES = (".nii", ".nii.gz", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".npy", ".npz", ".json", ".csv")
DISPLAY_INFO_KEYS = (
    "modality",
    "view",
    "view_base",
    "view_modifiers",
    "laterality",
    "view_conflict",
    "photometric",
    "presentation_intent",
    "for_processing",
    "pixel_spacing",
    "spacing_source",
    "voi",
    "window_center",
    "window_width",
    "inverted",
    "rows",
    "columns",
    "bits_stored",
    "patient_orientation",
    "chest_wall_side",
    "sop_class",
    "image_type",
    "instance_number",
    "series_number",
    "patient_key",
    "study_key",
    "series_key",
    "instance_key",
)


class PlanarImageError(DicomReadError):
    """A planar DICOM image cannot be made display-ready (colour, no pixel data, an invalid VOI ...)."""


def _name(source: Any) -> str:
    if isinstance(source, Dataset):
        return str(getattr(source, "filename", None) or "<dataset>")
    return os.fspath(source)


def read_planar_dataset(source: str | os.PathLike | Dataset) -> Dataset:
    """Read a DICOM file (or pass a dataset through), with errors that name the file.

    Args:
        source: a file path or a ``pydicom.Dataset``.

    Returns:
        The dataset, pixel data included.

    Raises:
        InputFileError: the file does not exist.
        DicomReadError: not a DICOM file, or unreadable.
    """
    if isinstance(source, Dataset):
        return source
    path = Path(source)
    if not path.is_file():
        raise InputFileError("no such file", path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return dcmread(path)
    except InvalidDicomError as error:
        raise DicomReadError(f"not a DICOM file ({error})", path) from error
    except Exception as error:  # noqa: BLE001 - pydicom raises many types on corrupt files
        raise DicomReadError(f"cannot read the DICOM file: {type(error).__name__}: {error}", path) from error


def pixel_spacing(ds: Dataset) -> tuple[tuple[float, float], str]:
    """Row and column spacing in mm: PixelSpacing, else ImagerPixelSpacing (the detector's, usual in MG/DX).

    Args:
        ds: the dataset.

    Returns:
        ``((row spacing, column spacing), source keyword)``; ``((nan, nan), "")`` when neither is usable.
    """
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        try:
            values = [float(v) for v in value] if value is not None else []
        except (TypeError, ValueError):
            values = []
        if len(values) == 2 and all(v > 0 and math.isfinite(v) for v in values):
            return (values[0], values[1]), keyword
    return (math.nan, math.nan), ""


def _salt(salt: str | None) -> str | None:
    return salt or os.environ.get(SALT_ENV) or None


def _keys(ds: Dataset, salt: str | None) -> dict[str, str]:
    """Salted keys of the image's identifiers ("" when no salt is configured: no keys rather than guessable ones)."""
    salt = _salt(salt)
    names = {"patient_key": "", "study_key": "", "series_key": "", "instance_key": ""}
    if not salt:
        return names
    patient = str(ds.get("PatientID") or "")
    pairs = (
        ("patient_key", "patient", patient),
        ("study_key", "study", str(ds.get("StudyInstanceUID") or "")),
        ("series_key", "series", str(ds.get("SeriesInstanceUID") or "")),
        ("instance_key", "instance", str(ds.get("SOPInstanceUID") or "")),
    )
    for name, kind, identifier in pairs:
        if identifier.strip():
            names[name] = make_key(kind, identifier, salt)
    return names


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def display_info(ds: Dataset, salt: str | None = None) -> dict[str, Any]:
    """PHI-free description of a planar image (no names, IDs, dates or UIDs: salted keys only).

    Args:
        ds: the dataset.
        salt: key salt (else ``$MEDSSL_SALT``; without either, the key fields are empty).

    Returns:
        A dict with the keys of :data:`DISPLAY_INFO_KEYS` (the VOI keys are filled by :func:`display_image`).
    """
    fields = fields_from_dataset(ds)
    view, laterality, conflict = view_and_laterality(fields)
    base, modifiers = split_view(view)
    spacing, spacing_source = pixel_spacing(ds)
    sop = str(ds.get("SOPClassUID") or "")
    sop_name = UID(sop).name if sop else ""
    intent = str(ds.get("PresentationIntentType") or "").strip().upper()
    image_type = ds.get("ImageType")
    info = {
        "modality": fields["Modality"].upper(),
        "view": view,
        "view_base": base,
        "view_modifiers": "+".join(modifiers),
        "laterality": laterality,
        "view_conflict": conflict,
        "photometric": str(ds.get("PhotometricInterpretation") or ""),
        "presentation_intent": intent,
        "for_processing": intent == "FOR PROCESSING" or "For Processing" in sop_name,
        "pixel_spacing": [float(spacing[0]), float(spacing[1])],
        "spacing_source": spacing_source,
        "voi": "",
        "window_center": math.nan,
        "window_width": math.nan,
        "inverted": False,
        "rows": int(ds.get("Rows") or 0),
        "columns": int(ds.get("Columns") or 0),
        "bits_stored": int(ds.get("BitsStored") or 0),
        "patient_orientation": "\\".join(fields["PatientOrientation"]),
        "chest_wall_side": chest_wall_side(fields["PatientOrientation"]),
        "sop_class": sop_name,
        "image_type": "\\".join(str(v) for v in image_type) if image_type else "",
        "instance_number": (
            int(_number(ds.get("InstanceNumber"))) if math.isfinite(_number(ds.get("InstanceNumber"))) else -1
        ),
        "series_number": int(_number(ds.get("SeriesNumber"))) if math.isfinite(_number(ds.get("SeriesNumber"))) else -1,
    }
    info.update(_keys(ds, salt))
    return info


def _window_output_range(ds: Dataset) -> tuple[float, float]:
    """The output range of pydicom's ``apply_windowing`` for this dataset.

    pydicom maps a window onto the range of the stored values after the modality LUT (PS3.3 C.11.2.1.2) but does not
    return that range, and scaling the result to [0, 1] needs it; the same rule is restated here.
    """
    if ds.get("ModalityLUTSequence"):
        bits = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2**bits - 1)
    bits = int(ds.get("BitsStored") or 16)
    if int(ds.get("PixelRepresentation") or 0) == 0:
        low, high = 0.0, float(2**bits - 1)
    else:
        low, high = float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        low, high = low * float(slope) + float(intercept), high * float(slope) + float(intercept)
    return low, high


def _lut_output_range(ds: Dataset, index: int) -> tuple[float, float]:
    """The output range of a VOI LUT Sequence item: 0 to 2**bits - 1, bits from its LUTDescriptor (PS3.3 C.11.2.1.1)."""
    item = ds.VOILUTSequence[index]
    bits = int(item.LUTDescriptor[2])
    return 0.0, float(2**bits - 1)


def _window_dataset(ds: Dataset, center: float, width: float) -> Dataset:
    """A dataset carrying only what pydicom's windowing reads, with the given window (an override)."""
    window = Dataset()
    for keyword in (
        "PhotometricInterpretation",
        "BitsStored",
        "PixelRepresentation",
        "RescaleSlope",
        "RescaleIntercept",
        "ModalityLUTSequence",
        "VOILUTFunction",
    ):
        if keyword in ds:
            setattr(window, keyword, ds.data_element(keyword).value)
    window.WindowCenter = float(center)
    window.WindowWidth = float(width)
    return window


def _scale(values: np.ndarray, low: float, high: float) -> np.ndarray:
    if not math.isfinite(low) or not math.isfinite(high) or high == low:
        return np.zeros_like(values, dtype=np.float64)
    return np.clip((values - low) / (high - low), 0.0, 1.0)


def _first_window(ds: Dataset, index: int) -> tuple[float, float]:
    values = []
    for keyword in ("WindowCenter", "WindowWidth"):
        element = ds.get(keyword)
        items = list(element) if isinstance(element, Sequence) and not isinstance(element, str) else [element]
        values.append(_number(items[min(index, len(items) - 1)]) if items and items[0] is not None else math.nan)
    return values[0], values[1]


def display_image(
    source: str | os.PathLike | Dataset,
    voi: bool = True,
    *,
    invert_monochrome1: bool = True,
    window: tuple[float, float] | None = None,
    voi_index: int = 0,
    frame: int = 0,
    salt: str | None = None,
) -> tuple[np.ndarray, dict[str, Any]]:
    """One planar image as displayed: modality LUT, VOI LUT or window, MONOCHROME1 inverted, scaled to [0, 1].

    Args:
        source: a DICOM file or a ``pydicom.Dataset``.
        voi: apply the image's VOI LUT or window (False: scale the modality-LUT output from its minimum to maximum).
        invert_monochrome1: invert MONOCHROME1 images so that dense tissue is bright.
        window: ``(center, width)`` overriding the file's VOI (LINEAR function unless the file names another).
        voi_index: which of several windows / VOI LUTs to use.
        frame: the frame of a multi-frame file.
        salt: salt of the keys in ``info`` (else ``$MEDSSL_SALT``; without either, no keys).

    Returns:
        ``(image, info)``: float32 ``(rows, columns)`` in [0, 1] and the PHI-free description of
        :func:`display_info` with ``voi`` (``lut``, ``window``, ``window_override`` or ``minmax``), the window used
        and ``inverted``.

    Raises:
        InputFileError: no such file.
        DicomReadError: not DICOM, unreadable.
        PlanarImageError: no pixel data, a colour image, an undecodable transfer syntax, an invalid VOI, a frame out
            of range.
    """
    ds = read_planar_dataset(source)
    name = _name(source)
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise PlanarImageError("no pixel data (not an image)", name)
    if int(ds.get("SamplesPerPixel") or 1) != 1:
        raise PlanarImageError(
            f"a colour image ({ds.get('PhotometricInterpretation')}, {ds.SamplesPerPixel} samples per pixel); only "
            "grayscale MONOCHROME1/MONOCHROME2 images have a DICOM grayscale display pipeline",
            name,
        )
    photometric = str(ds.get("PhotometricInterpretation") or "").strip().upper()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise PlanarImageError(f"PhotometricInterpretation {photometric or 'missing'} is not MONOCHROME1/2", name)
    try:
        stored = ds.pixel_array
    except Exception as error:  # noqa: BLE001 - pydicom raises many types for missing plugins or corrupt data
        raise PlanarImageError(f"cannot decode the pixel data: {type(error).__name__}: {error}", name) from error
    n_frames = int(ds.get("NumberOfFrames") or 1)
    if n_frames > 1:
        if not 0 <= frame < n_frames:
            raise PlanarImageError(f"frame {frame} out of range: the file has {n_frames} frames", name)
        stored = stored[frame]
    elif frame != 0:
        raise PlanarImageError(f"frame {frame} out of range: the file has one frame", name)
    info = display_info(ds, salt)
    values = np.asarray(apply_modality_lut(stored, ds))
    try:
        if window is not None:
            center, width = float(window[0]), float(window[1])
            output = apply_voi_lut(values, _window_dataset(ds, center, width))
            image = _scale(np.asarray(output, dtype=np.float64), *_window_output_range(ds))
            info.update(voi="window_override", window_center=center, window_width=width)
        elif voi and ds.get("VOILUTSequence"):
            index = min(voi_index, len(ds.VOILUTSequence) - 1)
            indices = values if values.dtype.kind in "iu" else np.round(values).astype(np.int64)  # a LUT is indexed
            output = apply_voi_lut(indices, ds, index=index, prefer_lut=True)
            image = _scale(np.asarray(output, dtype=np.float64), *_lut_output_range(ds, index))
            info.update(voi="lut")
        elif voi and ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
            output = apply_voi_lut(values, ds, index=voi_index, prefer_lut=False)
            image = _scale(np.asarray(output, dtype=np.float64), *_window_output_range(ds))
            center, width = _first_window(ds, voi_index)
            info.update(voi="window", window_center=center, window_width=width)
        else:
            values = values.astype(np.float64)
            image = _scale(values, float(values.min()), float(values.max()))
            info.update(voi="minmax")
    except (ValueError, IndexError, KeyError, AttributeError, TypeError) as error:
        raise PlanarImageError(f"cannot apply the VOI LUT / window: {error}", name) from error
    if photometric == "MONOCHROME1" and invert_monochrome1:
        image = 1.0 - image
        info["inverted"] = True
    if info["for_processing"]:
        logger.info("%s: FOR PROCESSING image (raw detector data), not what a radiologist reads", info["instance_key"])
    return image.astype(np.float32), info


class PlanarDicomReader(ImageReader):
    """MONAI ``ImageReader`` for planar DICOM images (MG, DX, CR): display-ready values with PHI-free metadata.

    ``LoadImage(reader=PlanarDicomReader())(path)`` gives the output of :func:`display_image` (float in [0, 1], dense
    tissue bright) and, in the metadata, every key of :data:`DISPLAY_INFO_KEYS` (view, laterality, photometric,
    presentation intent, ``for_processing``, pixel spacing ...), ``spacing``, ``affine`` and ``spatial_shape``. No
    patient name, ID, date or UID is copied. Strings stay strings and missing numbers are NaN, so that items collate.

    Args:
        voi: apply the VOI LUT / window (see :func:`display_image`).
        invert_monochrome1: invert MONOCHROME1 images.
        reverse_indexing: return ``(columns, rows)`` like MONAI's ``PILReader`` and the DICOM series readers (x
            first); False (default) returns ``(rows, columns)``, the image as displayed, ``(H, W)``.
        salt: salt of the keys (else ``$MEDSSL_SALT``).
        dtype: output dtype.

    Raises (from ``get_data``):
        PlanarImageError, DicomReadError, InputFileError: see :func:`display_image`.
    """

    def __init__(
        self,
        voi: bool = True,
        invert_monochrome1: bool = True,
        reverse_indexing: bool = False,
        salt: str | None = None,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        self.voi = voi
        self.invert_monochrome1 = invert_monochrome1
        self.reverse_indexing = reverse_indexing
        self.salt = salt
        self.dtype = np.dtype(dtype)

    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        """Whether every file is an existing DICOM file (by its preamble) that is not an image of another format."""
        from pydicom.misc import is_dicom

        names = [os.fspath(n) for n in ensure_tuple(filename)]
        if not names:
            return False
        for name in names:
            if name.lower().endswith(_NOT_DICOM_SUFFIXES) or not os.path.isfile(name):
                return False
            if not is_dicom(name):
                return False
        return True

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> list[Dataset]:
        """Read the datasets (pixel data decoded later, in ``get_data``).

        Args:
            data: one file or several (stacked as channels by ``get_data``).
            kwargs: ignored.

        Returns:
            One dataset per file.
        """
        return [read_planar_dataset(n) for n in ensure_tuple(data)]

    def get_data(self, img: Dataset | Sequence[Dataset]) -> tuple[np.ndarray, dict]:
        """Make each image display-ready and build the metadata (of the first image when several are stacked).

        Args:
            img: the output of :meth:`read`.

        Returns:
            ``(array, meta)``: ``(H, W)`` (or ``(W, H)`` with ``reverse_indexing``); several files give
            ``(N, H, W)`` with ``original_channel_dim`` 0.
        """
        datasets = [img] if isinstance(img, Dataset) else list(img)
        arrays, infos = [], []
        for ds in datasets:
            array, info = display_image(ds, self.voi, invert_monochrome1=self.invert_monochrome1, salt=self.salt)
            arrays.append(array.T if self.reverse_indexing else array)
            infos.append(info)
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise PlanarImageError(f"cannot stack images of different sizes {sorted(shapes)}", _name(datasets[0]))
        info = infos[0]
        spacing = np.asarray(info["pixel_spacing"], dtype=np.float64)
        spacing = np.where(np.isfinite(spacing), spacing, 1.0)
        if self.reverse_indexing:
            spacing = spacing[::-1].copy()
        affine = np.diag([spacing[0], spacing[1], 1.0, 1.0])
        meta = {key: info[key] for key in DISPLAY_INFO_KEYS}
        meta["pixel_spacing"] = np.asarray(info["pixel_spacing"], dtype=np.float64)
        meta.update(
            affine=affine,
            original_affine=affine.copy(),
            spacing=spacing,
            spatial_shape=np.asarray(arrays[0].shape),
            original_channel_dim=float("nan") if len(arrays) == 1 else 0,
            geometry="planar",
        )
        array = arrays[0] if len(arrays) == 1 else np.stack(arrays)
        return array.astype(self.dtype, copy=False), meta


def write_display_png(image: np.ndarray, path: str | os.PathLike) -> Path:
    """Write a [0, 1] image as a 16-bit grayscale PNG (0 -> 0, 1 -> 65535).

    Args:
        image: ``(rows, columns)`` float array in [0, 1].
        path: output file; parent folders are created.

    Returns:
        The path written.
    """
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    values = np.round(np.clip(np.asarray(image, dtype=np.float64), 0.0, 1.0) * 65535.0).astype(np.uint16)
    Image.fromarray(values).save(path)
    return path


def _json_value(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def export_planar_display(row: Mapping[str, Any], out_stem: str | os.PathLike) -> list[Path]:
    """Write a manifest row's planar images display-ready: ``<out_stem>.png`` (16-bit) and ``<out_stem>.json``.

    The signature of a ``medssl convert`` series exporter. A series of several images writes ``<out_stem>_<i>.png``
    (``i`` from 0, in the manifest's file order) and one sidecar listing them.

    Args:
        row: a manifest row (``root``, ``files``, keys, ``view``, ``laterality`` ...).
        out_stem: output path without extension.

    Returns:
        The files written (PNGs, then the sidecar).
    """
    from medssl import __version__
    from medssl.data.manifest import series_files

    out_stem = Path(out_stem)
    files = series_files(row)
    written: list[Path] = []
    images: list[dict[str, Any]] = []
    for index, path in enumerate(files):
        image, info = display_image(path)
        name = f"{out_stem.name}.png" if len(files) == 1 else f"{out_stem.name}_{index}.png"
        written.append(write_display_png(image, out_stem.with_name(name)))
        images.append({"file": name, **{k: _json_value(v) for k, v in info.items()}})
    sidecar = {
        "patient_key": row.get("patient_key"),
        "study_key": row.get("study_key"),
        "series_key": row.get("series_key"),
        "view": str(row.get("view", "") or ""),
        "laterality": str(row.get("laterality", "") or ""),
        "images": images,
        "png": "16-bit grayscale, display-ready: modality LUT, VOI LUT/window, MONOCHROME1 inverted; "
        "0 = black, 65535 = white",
        "converter": f"medssl {__version__} convert (medssl.data.display.export_planar_display)",
    }
    side = out_stem.with_name(out_stem.name + ".json")
    side.parent.mkdir(parents=True, exist_ok=True)
    side.write_text(json.dumps(sidecar, indent=2) + "\n")
    written.append(side)
    return written


def export_planar_display_nifti(row: Mapping[str, Any], out_stem: str | os.PathLike) -> list[Path]:
    """Write a manifest row's planar images display-ready as float NIfTI in [0, 1]: ``<out_stem>.nii.gz`` + sidecar.

    Same display pipeline as :func:`export_planar_display` (modality LUT, VOI window, MONOCHROME1 inverted, no flip),
    kept as floats; the 2D affine carries the pixel spacing (``(x, y)`` = (column, row), like MONAI's readers). A
    series of several images writes ``<out_stem>_<i>.nii.gz``.

    Args:
        row: a manifest row.
        out_stem: output path without extension.

    Returns:
        The files written (images, then the sidecar).
    """
    from medssl import __version__
    from medssl.data.manifest import series_files
    from medssl.data.nifti import write_nifti

    out_stem = Path(out_stem)
    files = series_files(row)
    written: list[Path] = []
    images: list[dict[str, Any]] = []
    for index, path in enumerate(files):
        image, info = display_image(path)
        spacing = info.get("pixel_spacing") or [1.0, 1.0]  # (row, column) spacing in mm
        affine = np.diag([float(spacing[1]), float(spacing[0]), 1.0, 1.0])
        name = f"{out_stem.name}.nii.gz" if len(files) == 1 else f"{out_stem.name}_{index}.nii.gz"
        written += write_nifti(image.T.astype(np.float32), out_stem.with_name(name), affine=affine, dtype="float32")
        images.append({"file": name, **{k: _json_value(v) for k, v in info.items()}})
    sidecar = {
        "patient_key": row.get("patient_key"),
        "study_key": row.get("study_key"),
        "series_key": row.get("series_key"),
        "view": str(row.get("view", "") or ""),
        "laterality": str(row.get("laterality", "") or ""),
        "display": "modality LUT, VOI window, MONOCHROME1 inverted, values in [0, 1], not flipped",
        "images": images,
        "medssl_version": __version__,
    }
    side = out_stem.with_name(out_stem.name + ".json")
    side.write_text(json.dumps(sidecar, indent=2) + "\n")
    return written + [side]


#: ``medssl convert --planar-format`` to exporter (dotted names, resolved in worker processes).
PLANAR_EXPORTERS = {
    "png": "medssl.data.display.export_planar_display",
    "nifti": "medssl.data.display.export_planar_display_nifti",
}


def register_planar_exporter(modalities: Sequence[str] = ("MG", "DX", "CR"), planar_format: str = "png") -> None:
    """Route ``medssl convert``'s planar series of this process to a display-ready exporter.

    ``medssl convert`` already uses the display-ready exporters by default (``--planar-format``); this is for code
    that calls :func:`medssl.data.nifti.convert_manifest` with a changed registry.

    Args:
        modalities: the DICOM modalities to route.
        planar_format: ``png`` (16-bit) or ``nifti`` (float).
    """
    from medssl.data.nifti import register_exporter

    for modality in modalities:
        register_exporter(modality, PLANAR_EXPORTERS[planar_format])
