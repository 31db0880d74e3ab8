"""One DICOM series to one volume: a MONAI ``ImageReader`` with the geometry of :mod:`medssl.data.geometry`.

:class:`DicomSeriesReader` turns the files of one series (a list of files, or a folder holding exactly one series)
into an ``(x, y, z)`` array and MONAI metadata: slices ordered along the slice normal, spacing from the slice
positions, the affine in RAS like MONAI's ``NibabelReader`` (so NIfTI and DICOM inputs mix in one pipeline), the
modality LUT (rescale slope/intercept or a LUT) applied with pydicom, compressed transfer syntaxes decoded by pydicom's
plugins, and PHI-free descriptive tags with salted keys instead of identifiers.

Why not MONAI's own DICOM readers (checked against MONAI 1.6.1's ``monai/data/image_reader.py``):

- ``PydicomReader`` reads every file of a folder (``glob(folder/*)``) whatever its SeriesInstanceUID, orders the
  slices by ``InstanceNumber`` (which PACS routers and anonymisers renumber), takes the slice spacing from the mean
  absolute difference of the ``z`` coordinate of ImagePositionPatient only (wrong for sagittal, coronal and oblique
  stacks), only warns when slice shapes or pixel spacings differ, and never checks for mixed orientations or missing
  slices; given a list of files it returns each file as a channel rather than one volume.
- ``ITKReader`` (needs ``itk``, not a medssl dependency) groups a folder with GDCM and, when the folder holds several
  series, warns and silently takes the first one; a PACS export rarely has one series per folder.

Both are also what ``LoadImage`` falls back to when a reader given to its *constructor* raises: ``LoadImage`` then
tries the next registered reader, so a series this reader rejects (say, a radial MR whose slices have seven
orientations) can come back silently mis-stacked by ``PydicomReader``. Pass the reader at call time
(``LoadImage()(files, reader=DicomSeriesReader())``), or use :class:`medssl.transforms.LoadVolume` /
:class:`medssl.transforms.LoadVolumed`, which always do, so that errors reach the caller.
"""

from __future__ import annotations

import logging
import os
import struct
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pydicom
from monai.data import ImageReader, MetaTensor
from monai.utils import ensure_tuple
from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, get_decoder, pixel_array
from pydicom.tag import Tag

from medssl.data.geometry import SeriesGeometry, series_geometry
from medssl.data.keys import SALT_ENV, Keyer
from medssl.exceptions import DicomReadError, InputFileError, SeriesGeometryError

__all__ = [
    "DicomSeries",
    "DicomSeriesReader",
    "MultipleSeriesError",
    "UnsupportedDicomError",
    "NIFTI_SUFFIXES",
    "read_dataset",
    "load_series",
    "is_nifti_path",
]

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz", ".img", ".hdr")
_NOT_DICOM_SUFFIXES = NIFTI_SUFFIXES + (".png", ".jpg", ".jpeg", ".npy", ".npz", ".nrrd", ".mha", ".mhd", ".json")
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
# Below this many files a thread pool costs more than it saves.
_THREADS_FROM = 16
# The elements the loader needs from every instance of a multi-file series. Reading only these (pydicom's
# ``specific_tags``) skips converting the other 50 to 200 elements of each header, a quarter of the reading time;
# the descriptive tags are read once, from one file.
SERIES_TAGS = (
    "SOPClassUID",
    "SeriesInstanceUID",
    "SeriesNumber",
    "SeriesDescription",
    "Modality",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "ImagerPixelSpacing",
    "SliceThickness",
    "SpacingBetweenSlices",
    "SamplesPerPixel",
    "PhotometricInterpretation",
    "PlanarConfiguration",
    "Rows",
    "Columns",
    "BitsAllocated",
    "BitsStored",
    "HighBit",
    "PixelRepresentation",
    "NumberOfFrames",
    "RescaleSlope",
    "RescaleIntercept",
    "RescaleType",
    "ModalityLUTSequence",
    "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence",
    "ExtendedOffsetTable",
    "ExtendedOffsetTableLengths",
    "FloatPixelData",
    "DoubleFloatPixelData",
    "PixelData",
)
_SERIES_TAGS = [Tag(keyword) for keyword in SERIES_TAGS]  # converted once: pydicom converts keywords on every read
_NATIVE_DTYPES = {(8, 0): "u1", (8, 1): "i1", (16, 0): "<u2", (16, 1): "<i2", (32, 0): "<u4", (32, 1): "<i4"}


class MultipleSeriesError(InputFileError):
    """A folder given as one series holds the files of several series."""


class UnsupportedDicomError(DicomReadError):
    """A DICOM file is valid but of a kind the series loader does not support yet (colour, some multi-frame)."""


def is_nifti_path(path: str | os.PathLike) -> bool:
    """Whether a path names a NIfTI (or Analyze) file, by its suffix.

    Args:
        path: a file name.

    Returns:
        True for ``.nii``, ``.nii.gz``, ``.img`` and ``.hdr``.
    """
    return os.fspath(path).lower().endswith(NIFTI_SUFFIXES)


def read_dataset(
    path: str | os.PathLike, stop_before_pixels: bool = False, specific_tags: Sequence[str | int] | None = None
) -> Dataset:
    """Read one DICOM file, turning pydicom's many failure types into :class:`DicomReadError`.

    Args:
        path: the file.
        stop_before_pixels: read the header only.
        specific_tags: read only these elements (keywords or tags) and the file meta, as ``pydicom.dcmread``.

    Returns:
        The dataset.

    Raises:
        DicomReadError: missing file, not a DICOM Part 10 file, or a header that cannot be parsed.
    """
    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels, specific_tags=specific_tags or None)
    except FileNotFoundError as error:
        raise DicomReadError("no such file", path) from error
    except InvalidDicomError as error:
        raise DicomReadError(f"not a DICOM file ({error})", path) from error
    except Exception as error:  # pydicom raises struct.error, EOFError, ValueError ... on damaged headers
        raise DicomReadError(f"cannot parse the DICOM header: {type(error).__name__}: {error}", path) from error


def _pmap(function: Callable, items: Sequence, workers: int) -> list:
    if workers <= 1 or len(items) < _THREADS_FROM:
        return [function(item) for item in items]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(function, items))


def _resolve_workers(workers: int | None) -> int:
    if workers is not None:
        return max(1, int(workers))
    return max(1, min(4, os.cpu_count() or 1))


def _float_list(value: Any) -> list[float] | None:
    if value is None:
        return None
    try:
        values = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return values or None


def _item(sequence_owner: Dataset | None, keyword: str) -> Dataset | None:
    """First item of a sequence attribute, or None."""
    if sequence_owner is None:
        return None
    sequence = sequence_owner.get(keyword)
    return sequence[0] if sequence else None


# Tags read once per file (integer tags: pydicom's keyword lookups cost more than the conversions themselves).
_ROWS, _COLUMNS, _SAMPLES, _FRAMES = Tag(0x00280010), Tag(0x00280011), Tag(0x00280002), Tag(0x00280008)
_BITS_ALLOCATED, _BITS_STORED, _PIXEL_REPRESENTATION = Tag(0x00280100), Tag(0x00280101), Tag(0x00280103)
_PHOTOMETRIC, _SLOPE, _INTERCEPT, _MODALITY_LUT = Tag(0x00280004), Tag(0x00281053), Tag(0x00281052), Tag(0x00283000)
_POSITION, _ORIENTATION, _PIXEL_SPACING = Tag(0x00200032), Tag(0x00200037), Tag(0x00280030)
_PIXEL_DATA_TAGS = (Tag(0x7FE00010), Tag(0x7FE00008), Tag(0x7FE00009))
_SOP_CLASS, _SERIES_UID = Tag(0x00080016), Tag(0x0020000E)


def _value(ds: Dataset | None, tag: Tag, default: Any = None) -> Any:
    """An element's value, parsed from its raw bytes when still raw, else pydicom's; ``default`` when absent/empty.

    The loader reads a dozen elements of every file (pixel module, rescale, geometry). pydicom's conversion of a raw
    element (hooks, validation, value objects) costs more than the rest of our per-file work, so the simple cases
    are decoded here with pydicom's public pieces (``Dataset.get_item``, ``dictionary_VR``): US/SS binary integers,
    and IS/DS/CS text. Anything else (sequences, other VRs, odd bytes) goes through pydicom's own conversion.
    """
    if ds is None:
        return default
    try:
        element = ds.get_item(tag)
    except KeyError:
        return default
    if element is None:
        return default
    value = element.value
    if isinstance(value, bytes):
        parsed = _parse_raw(tag, element.VR, value, element.is_little_endian)
        if parsed is not _UNPARSED:
            return default if parsed is None or parsed == "" else parsed
        value = ds[tag].value
    return default if value is None or value == "" else value


_UNPARSED = object()
_TEXT_VRS = ("IS", "DS", "CS", "UI")


def _parse_raw(tag: Tag, vr: str | None, value: bytes, little_endian: bool) -> Any:
    try:
        vr = vr or dictionary_VR(tag)
    except KeyError:
        return _UNPARSED
    if vr in ("US", "SS") and len(value) == 2:
        return struct.unpack(("<" if little_endian else ">") + ("H" if vr == "US" else "h"), value)[0]
    if vr in _TEXT_VRS:
        try:
            parts = [p.strip(" \x00") for p in value.decode("ascii").split("\\")]
        except UnicodeDecodeError:
            return _UNPARSED
        if vr in ("CS", "UI"):
            return parts[0] if len(parts) == 1 else parts
        try:
            numbers = [int(p) if vr == "IS" else float(p) for p in parts if p]
        except ValueError:
            return _UNPARSED
        return None if not numbers else numbers[0] if len(numbers) == 1 else numbers
    return _UNPARSED


def _decimals(ds: Dataset, tag: Tag) -> list[float] | None:
    """A multi-valued DS element (ImagePositionPatient ...) as a list of floats, or None."""
    value = _value(ds, tag)
    if value is None:
        return None
    iterable = hasattr(value, "__iter__") and not isinstance(value, str | bytes)
    return _float_list(value if iterable else [value])


@dataclass(frozen=True)
class _Pixels:
    """The Image Pixel module of one file, read once."""

    rows: int
    columns: int
    samples: int
    frames: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    photometric: str

    @classmethod
    def of(cls, ds: Dataset) -> _Pixels:
        allocated = int(_value(ds, _BITS_ALLOCATED, 0))
        return cls(
            rows=int(_value(ds, _ROWS, 0)),
            columns=int(_value(ds, _COLUMNS, 0)),
            samples=int(_value(ds, _SAMPLES, 1)),
            frames=int(_value(ds, _FRAMES, 1)),
            bits_allocated=allocated,
            bits_stored=int(_value(ds, _BITS_STORED, allocated)),
            pixel_representation=int(_value(ds, _PIXEL_REPRESENTATION, 0)),
            photometric=str(_value(ds, _PHOTOMETRIC, "")).strip(),
        )


@dataclass
class _Frame:
    """One 2D image of a series: a whole single-frame file or one frame of a multi-frame file."""

    dataset: Dataset
    path: str
    index: int | None  # frame index in a multi-frame file, None for a single-frame file
    pixels: _Pixels
    position: list[float] | None
    orientation: list[float] | None
    pixel_spacing: list[float] | None
    lut: Dataset  # the dataset holding this frame's Modality LUT Sequence or rescale (a functional group if enhanced)
    has_lut_sequence: bool = False
    rescale: tuple[float, float] | None = None  # (RescaleSlope, RescaleIntercept) when both are present

    @classmethod
    def of(cls, ds: Dataset, path: str, pixels: _Pixels, **geometry: Any) -> _Frame:
        lut = geometry.pop("lut", None) or ds
        slope, intercept = _value(lut, _SLOPE), _value(lut, _INTERCEPT)
        return cls(
            dataset=ds,
            path=path,
            pixels=pixels,
            lut=lut,
            has_lut_sequence=bool(_value(lut, _MODALITY_LUT)),
            rescale=None if slope is None or intercept is None else (float(slope), float(intercept)),
            **geometry,
        )


@dataclass
class DicomSeries:
    """The instances of one series, read and checked, ready to be decoded into a volume.

    Attributes:
        source: the folder or first file, named in error messages.
        files: the files of the series.
        frames: one entry per 2D image (files, or frames of one multi-frame file), in file order.
        geometry: slice order, spacing and affine; None for a planar image without patient geometry.
        rows: Rows of every image.
        columns: Columns of every image.
        header: the dataset the descriptive tags come from.
        header_complete: False when ``header`` was read with :data:`SERIES_TAGS` only.
    """

    source: str
    files: list[str]
    frames: list[_Frame]
    geometry: SeriesGeometry | None
    rows: int
    columns: int
    header: Dataset = field(repr=False)
    header_complete: bool = True

    @property
    def is_planar(self) -> bool:
        """True for a single image without ImagePositionPatient/ImageOrientationPatient (MG, DX, CR ...)."""
        return self.geometry is None


class DicomSeriesReader(ImageReader):
    """Read one DICOM series (a list of files, or a folder holding exactly one series) as one volume.

    The output array is ``(x, y, z)`` = (column, row, slice), slices ordered along the slice normal; the metadata
    carries ``affine`` (RAS, as MONAI's ``NibabelReader``; LPS when ``affine_lps_to_ras`` is False),
    ``original_affine``, ``spatial_shape``, ``spacing``, ``space``, ``original_channel_dim`` and PHI-free tags:
    ``modality``, ``series_description``, ``series_number``, ``manufacturer``, ``plane``, ``n_instances``,
    ``n_slices``, MR timing (``echo_time``, ``repetition_time``, ``inversion_time``), ``transfer_syntax``,
    ``sop_class``, ``photometric``; and ``patient_key``, ``study_key``, ``series_key`` when a salt is known (the
    ``salt`` argument or ``$MEDSSL_SALT``). Patient names, IDs, dates, accession numbers and UIDs are never copied.

    Values are the output of the modality LUT (rescale slope and intercept, or a Modality LUT Sequence, per slice),
    as float32; MONOCHROME1 images are inverted (``invert_monochrome1``) so that larger is brighter. An enhanced
    multi-frame file (one file whose PerFrameFunctionalGroupsSequence holds a PlanePositionSequence per frame) is read
    as a series of its frames. A single image without ImagePositionPatient (MG, DX, CR) loads as a 2D ``(x, y)``
    image with an affine made of its pixel spacing (``geometry`` = ``planar`` in the metadata).

    Why not MONAI's ``PydicomReader`` or ``ITKReader``: see the module docstring (folder grouping, InstanceNumber
    order, ``z``-only spacing, first-series-wins, and ``LoadImage``'s silent fallback between readers).

    Args:
        channel_dim: ``original_channel_dim`` to record; None records ``no_channel`` (the output has none).
        affine_lps_to_ras: express the affine in RAS (True, like NIfTI) or DICOM's LPS (False).
        invert_monochrome1: invert MONOCHROME1 images so that larger values are brighter.
        workers: threads that read and decode files (None: up to 4, by the CPU count).
        salt: salt for the PHI-free keys; None uses ``$MEDSSL_SALT`` and, if unset, records no keys.
        dtype: dtype of the output array (a numpy name).

    Raises (from ``read``/``get_data``):
        DicomReadError: a file is missing, not DICOM, truncated, has no pixel data or cannot be decoded.
        UnsupportedDicomError: colour images, multi-frame files without per-frame positions, several multi-frame
            files in one series.
        MultipleSeriesError: a folder holds several series.
        SeriesGeometryError: mixed orientations, missing slices, inconsistent spacing, duplicate positions, sheared
            slices, or images of different sizes in one series.

    Example:
        >>> from monai.transforms import LoadImage
        >>> image = LoadImage(image_only=True)(series_files, reader=DicomSeriesReader())  # doctest: +SKIP
    """

    def __init__(
        self,
        channel_dim: str | int | None = None,
        affine_lps_to_ras: bool = True,
        invert_monochrome1: bool = True,
        workers: int | None = None,
        salt: str | None = None,
        dtype: str = "float32",
    ) -> None:
        super().__init__()
        self.channel_dim = float("nan") if channel_dim in (None, "no_channel") else channel_dim
        self.affine_lps_to_ras = affine_lps_to_ras
        self.invert_monochrome1 = invert_monochrome1
        self.workers = _resolve_workers(workers)
        self.salt = salt
        self.dtype = np.dtype(dtype)

    # ------------------------------------------------------------------ ImageReader API
    def verify_suffix(self, filename: Sequence[str | os.PathLike] | str | os.PathLike) -> bool:
        """Whether the input looks like one DICOM series: a folder, or files that are not NIfTI/PNG/NumPy ... .

        Args:
            filename: a folder, a file, or a list of files.

        Returns:
            True when this reader should be tried.
        """
        names = [os.fspath(n) for n in ensure_tuple(filename)]
        if not names:
            return False
        if len(names) == 1 and os.path.isdir(names[0]):
            return True
        if any(n.lower().endswith(_NOT_DICOM_SUFFIXES) for n in names):
            return False
        return not os.path.isfile(names[0]) or pydicom.misc.is_dicom(names[0])

    def read(self, data: Sequence[str | os.PathLike] | str | os.PathLike, **kwargs: Any) -> DicomSeries:
        """Read the headers (and encoded pixel data) of one series and compute its geometry.

        Args:
            data: a folder holding one series, one file, or the files of one series in any order.
            kwargs: ignored (MONAI passes reader options here).

        Returns:
            The series, checked: every error about the input is raised here, before any pixel is decoded.
        """
        files, source, from_folder = self._resolve(data)
        datasets = self._read_all(files, skip_non_dicom=from_folder, source=source)
        if from_folder:
            files = [f for f, ds in zip(files, datasets) if ds is not None]
            datasets = [ds for ds in datasets if ds is not None]
            if not datasets:
                raise DicomReadError("no DICOM image files in this folder", source)
        self._check_one_series(datasets, files, source, from_folder)
        return self._build_series(datasets, files, source)

    def get_data(self, img: DicomSeries) -> tuple[np.ndarray, dict]:
        """Decode the pixels, apply the modality LUT, stack the slices and build the metadata.

        Args:
            img: the output of :meth:`read`.

        Returns:
            ``(array, metadata)``: ``(x, y, z)`` (or ``(x, y)`` for a planar image) array, MONAI metadata.
        """
        series = img
        n = len(series.frames)
        if series.geometry is not None:
            order = series.geometry.order
        else:
            order = np.arange(n)
        rank = np.empty(n, dtype=int)
        rank[order] = np.arange(n)
        # Preallocated (x, y, z) in C order: MONAI copies any other layout into a contiguous tensor, and writing each
        # (row, column) slice transposed straight into place is cheaper than stacking then transposing the volume.
        volume = np.empty((series.columns, series.rows, n), dtype=self.dtype)
        multi_frame = series.frames[0].index is not None
        if multi_frame:
            decoded = self._decode_multiframe(series)
            for i, frame in enumerate(series.frames):
                volume[:, :, rank[i]] = self._modality(decoded[i], frame).T
        else:
            rescale = self._shared_integer_rescale(series)

            def fill(i: int) -> None:
                frame = series.frames[i]
                stored = self._decode(frame)
                volume[:, :, rank[i]] = (stored if rescale is not None else self._modality(stored, frame)).T

            _pmap(fill, list(range(n)), self.workers)
            if rescale is not None and rescale != (1.0, 0.0):
                # Exact in float32 (checked by _shared_integer_rescale), so equal to pydicom's float64 arithmetic.
                volume *= rescale[0]
                volume += rescale[1]
        array = volume[:, :, 0] if series.is_planar else volume
        return array, self._metadata(series, array.shape)

    # ------------------------------------------------------------------ reading
    @staticmethod
    def _resolve(data) -> tuple[list[str], str, bool]:
        names = [os.fspath(n) for n in ensure_tuple(data)]
        if not names:
            raise InputFileError("no files given for a DICOM series")
        if len(names) == 1 and os.path.isdir(names[0]):
            folder = names[0]
            files = sorted(
                os.path.join(folder, e.name)
                for e in os.scandir(folder)
                if e.is_file() and not e.name.startswith(".") and e.name.upper() != "DICOMDIR"
            )
            if not files:
                raise DicomReadError("folder holds no files", folder)
            return files, folder, True
        folders = [n for n in names if os.path.isdir(n)]
        if folders:
            raise InputFileError(
                f"expected one folder or the files of one series, got {len(folders)} folder(s) among {len(names)} "
                "inputs; to stack several series use medssl.transforms.StackSequencesd",
                folders[0],
            )
        source = names[0] if len(names) == 1 else f"{os.path.dirname(names[0]) or '.'} ({len(names)} files)"
        return names, source, False

    def _read_all(self, files: list[str], skip_non_dicom: bool, source: str) -> list[Dataset | None]:
        tags = _SERIES_TAGS if len(files) > 1 else None

        def one(path: str) -> Dataset | None:
            try:
                ds = read_dataset(path, specific_tags=tags)
            except DicomReadError as error:
                if skip_non_dicom and isinstance(error.__cause__, InvalidDicomError):
                    logger.debug("%s: skipped, not a DICOM file", path)
                    return None
                raise
            sop_class = str(_value(ds, _SOP_CLASS, "") or ds.file_meta.get("MediaStorageSOPClassUID", ""))
            if sop_class == MEDIA_STORAGE_DIRECTORY:
                if skip_non_dicom:
                    return None
                raise DicomReadError("a DICOMDIR, not an image", path)
            return ds

        return _pmap(one, files, self.workers)

    @staticmethod
    def _check_one_series(datasets: list[Dataset], files: list[str], source: str, from_folder: bool) -> None:
        uids = [str(_value(ds, _SERIES_UID, "")) for ds in datasets]
        distinct = list(dict.fromkeys(uids))
        if len(distinct) <= 1:
            return
        counts = Counter(uids)
        described = []
        for uid in distinct:
            ds = datasets[uids.index(uid)]
            described.append(
                f"series {ds.get('SeriesNumber', '?')} {str(ds.get('SeriesDescription', '') or '').strip()!r} "
                f"({counts[uid]} files)"
            )
        what = "this folder holds" if from_folder else "these files belong to"
        raise MultipleSeriesError(
            f"{what} {len(distinct)} series, expected one: {'; '.join(described)}. Index the export "
            "(medssl index) and load each series from its manifest row",
            source,
        )

    def _build_series(self, datasets: list[Dataset], files: list[str], source: str) -> DicomSeries:
        pixels = [_Pixels.of(ds) for ds in datasets]
        for ds, path, pix in zip(datasets, files, pixels):
            if not any(tag in ds for tag in _PIXEL_DATA_TAGS):
                sop = getattr(ds.get("SOPClassUID"), "name", "unknown SOP class")
                raise DicomReadError(f"no pixel data ({sop})", path)
            if pix.samples != 1:
                raise UnsupportedDicomError(
                    f"colour image ({pix.samples} samples per pixel, {pix.photometric or '?'}): "
                    "the series loader reads grey-scale images only",
                    path,
                )
        sizes = [(pix.rows, pix.columns) for pix in pixels]
        size_counts = Counter(sizes)
        if len(size_counts) > 1:
            common = size_counts.most_common(1)[0][0]
            odd = next(f for f, s in zip(files, sizes) if s != common)
            summary = ", ".join(f"{c} x {r}x{col}" for (r, col), c in size_counts.most_common())
            raise SeriesGeometryError(
                f"images of different sizes in one series (Rows x Columns: {summary}; e.g. {odd})", source
            )
        rows, columns = sizes[0]
        if any(pix.frames > 1 for pix in pixels):
            if len(datasets) > 1:
                raise UnsupportedDicomError(
                    f"{sum(pix.frames > 1 for pix in pixels)} multi-frame files in a series of {len(datasets)} "
                    "files: not supported yet (load each multi-frame file on its own)",
                    source,
                )
            frames = self._multiframe_frames(datasets[0], files[0], pixels[0])
        else:
            frames = [
                _Frame.of(
                    ds,
                    path,
                    pix,
                    index=None,
                    position=_decimals(ds, _POSITION),
                    orientation=_decimals(ds, _ORIENTATION),
                    pixel_spacing=_decimals(ds, _PIXEL_SPACING),
                )
                for ds, path, pix in zip(datasets, files, pixels)
            ]
        planar = len(frames) == 1 and (frames[0].position is None or frames[0].orientation is None)
        geometry = None
        if not planar:
            header = datasets[0]
            thickness = _float_list([header.get("SpacingBetweenSlices") or header.get("SliceThickness") or 0])
            geometry = series_geometry(
                [f.position for f in frames],
                [f.orientation for f in frames],
                [f.pixel_spacing for f in frames],
                slice_thickness=thickness[0] if thickness else None,
                path=source,
            )
        return DicomSeries(
            source=source,
            files=files,
            frames=frames,
            geometry=geometry,
            rows=rows,
            columns=columns,
            header=datasets[0],
            header_complete=len(datasets) == 1,
        )

    @staticmethod
    def _multiframe_frames(ds: Dataset, path: str, pixels: _Pixels) -> list[_Frame]:
        n_frames = pixels.frames
        per_frame = ds.get("PerFrameFunctionalGroupsSequence")
        shared = _item(ds, "SharedFunctionalGroupsSequence")
        if not per_frame or len(per_frame) != n_frames:
            raise UnsupportedDicomError(
                f"multi-frame file ({n_frames} frames) without per-frame positions "
                "(PerFrameFunctionalGroupsSequence with PlanePositionSequence): not supported yet",
                path,
            )
        frames = []
        for index, group in enumerate(per_frame):

            def find(sequence: str, group: Dataset = group) -> Dataset | None:
                return _item(group, sequence) or _item(shared, sequence)

            position = find("PlanePositionSequence")
            if position is None or "ImagePositionPatient" not in position:
                raise UnsupportedDicomError(
                    f"frame {index + 1} of {n_frames} has no PlanePositionSequence/ImagePositionPatient: "
                    "multi-frame files without per-frame positions are not supported yet",
                    path,
                )
            orientation = find("PlaneOrientationSequence")
            measures = find("PixelMeasuresSequence")
            transform = find("PixelValueTransformationSequence")
            # pydicom's apply_modality_lut reads RescaleSlope/Intercept (or a Modality LUT) from the dataset it is
            # given: an enhanced file keeps them in a functional group, so that group's item is what we pass.
            frames.append(
                _Frame.of(
                    ds,
                    path,
                    pixels,
                    index=index,
                    position=_float_list(position.ImagePositionPatient),
                    orientation=_float_list(orientation.get("ImageOrientationPatient") if orientation else None),
                    pixel_spacing=_float_list(measures.get("PixelSpacing") if measures else None),
                    lut=transform,
                )
            )
        return frames

    # ------------------------------------------------------------------ decoding
    @staticmethod
    def _decode(frame: _Frame) -> np.ndarray:
        ds, path = frame.dataset, frame.path
        native = _native_frame(ds, frame.pixels)
        if native is not None:
            return native
        try:
            return pixel_array(ds)
        except (NotImplementedError, RuntimeError, ImportError) as error:
            raise DicomReadError(_undecodable(ds, error), path) from error
        except Exception as error:  # ValueError for short pixel data, codec errors for damaged streams
            raise DicomReadError(f"pixel data is truncated or cannot be decoded: {error}", path) from error

    def _decode_multiframe(self, series: DicomSeries) -> np.ndarray:
        array = self._decode(series.frames[0])
        if array.ndim == 2:
            array = array[None]
        return array

    def _shared_integer_rescale(self, series: DicomSeries) -> tuple[float, float] | None:
        """The one rescale of a series when applying it to the whole float32 volume is exact, else None.

        The common case (CT's 1 and -1024, MR's 1 and 0, the same on every slice, no LUT, no MONOCHROME1) lets each
        slice be copied as stored integers, then rescaled once in place, instead of going through a float64 slice:
        a quarter of the decoding time. Exact when slope and intercept are integers and every result fits in the
        24-bit mantissa of float32; otherwise (fractional or per-slice rescale) each slice takes the general path.
        """
        if self.dtype != np.float32:
            return None
        first = series.frames[0]
        rescale = first.rescale or (1.0, 0.0)
        for frame in series.frames:
            if frame.has_lut_sequence or (frame.rescale or (1.0, 0.0)) != rescale:
                return None
            if frame.pixels.photometric == "MONOCHROME1" and self.invert_monochrome1:
                return None
        slope, intercept = rescale
        bits = max(f.pixels.bits_stored or f.pixels.bits_allocated for f in series.frames)
        if not (slope.is_integer() and intercept.is_integer()) or bits > 16:
            return None
        if 2.0**bits * abs(slope) + abs(intercept) >= 2.0**24:
            return None
        return (float(slope), float(intercept))

    def _modality(self, stored: np.ndarray, frame: _Frame) -> np.ndarray:
        values = _apply_modality(stored, frame)
        if self.invert_monochrome1 and frame.pixels.photometric == "MONOCHROME1":
            # pydicom has no inversion helper: MONOCHROME1 means the smallest value is displayed white, so we
            # mirror the values within the modality-LUT image of the stored range [min, max] (BitsStored, sign).
            bits, signed = frame.pixels.bits_stored or 16, frame.pixels.pixel_representation == 1
            low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
            limits = _apply_modality(np.array([low, high], dtype=np.int64), frame).astype(np.float64)
            values = (limits.min() + limits.max()) - values.astype(np.float64)
        return values

    # ------------------------------------------------------------------ metadata
    def _metadata(self, series: DicomSeries, shape: tuple[int, ...]) -> dict:
        ds = series.header if series.header_complete else read_dataset(series.files[0], stop_before_pixels=True)
        if series.geometry is not None:
            affine = series.geometry.affine_ras if self.affine_lps_to_ras else series.geometry.affine_lps
            spacing = np.asarray(series.geometry.spacing, dtype=float)
        else:
            spacing_2d = _float_list(ds.get("PixelSpacing")) or _float_list(ds.get("ImagerPixelSpacing"))
            sx, sy = (spacing_2d[1], spacing_2d[0]) if spacing_2d and len(spacing_2d) == 2 else (1.0, 1.0)
            affine = np.diag([sx, sy, 1.0, 1.0])
            if self.affine_lps_to_ras:
                affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine
            spacing = np.asarray([sx, sy], dtype=float)
        meta: dict[str, Any] = {
            "affine": affine.copy(),
            "original_affine": affine.copy(),
            "spatial_shape": np.asarray(shape),
            "spacing": spacing,
            "space": "RAS" if self.affine_lps_to_ras else "LPS",
            "original_channel_dim": self.channel_dim,
            "geometry": "planar" if series.is_planar else "volume",
            "n_instances": len(series.files),
            "n_slices": len(series.frames),
        }
        if series.geometry is not None:
            meta["plane"] = series.geometry.plane
        if series.is_planar and not (_float_list(ds.get("PixelSpacing")) or _float_list(ds.get("ImagerPixelSpacing"))):
            meta["note"] = "no PixelSpacing or ImagerPixelSpacing: spacing set to 1 mm"
        meta.update(_descriptive_tags(ds))
        salt = self.salt or os.environ.get(SALT_ENV)
        if salt:
            keyer = Keyer(salt, warn=False)
            for kind, keyword in (
                ("patient", "PatientID"),
                ("study", "StudyInstanceUID"),
                ("series", "SeriesInstanceUID"),
            ):
                value = str(ds.get(keyword, "") or "").strip()
                if value:
                    meta[f"{kind}_key"] = keyer(kind, value)
        return meta


def _undecodable(ds: Dataset, error: BaseException) -> str:
    """Why pydicom could not decode a file's pixel data, and what to do about it."""
    uid = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    syntax = getattr(uid, "name", "unknown transfer syntax")
    try:
        decoder = get_decoder(uid)
    except (NotImplementedError, ValueError, TypeError):
        return f"cannot decode {syntax} pixel data: no pydicom decoder exists for this transfer syntax"
    if not decoder.is_available:
        missing = "; ".join(f"{name}: {', '.join(deps)}" for name, deps in decoder.missing_dependencies.items())
        return (
            f"cannot decode {syntax} pixel data: its decoders are not installed ({missing}); "
            "`pip install medssl[codecs]` installs pylibjpeg with its JPEG, JPEG-LS and JPEG 2000 plugins"
        )
    return f"cannot decode {syntax} pixel data: {error}"


def _apply_modality(stored: np.ndarray, frame: _Frame) -> np.ndarray:
    """The Modality LUT of one frame: pydicom's ``apply_modality_lut``, with the rescale values read once.

    A Modality LUT Sequence goes through pydicom. For the common linear case this does what
    ``pydicom.pixels.apply_modality_lut`` does (``stored`` as float64 times RescaleSlope plus RescaleIntercept, when
    both are present; unchanged otherwise) with the slope and intercept read once per file: pydicom looks the tags
    up on every call, about 1 ms per slice, as much as reading the file. Tests check both agree.
    """
    if frame.has_lut_sequence:
        return apply_modality_lut(stored, frame.lut)
    if frame.rescale is not None:
        slope, intercept = frame.rescale
        values = stored.astype(np.float64) * slope
        values += intercept
        return values
    return stored


def _native_frame(ds: Dataset, pixels: _Pixels | None = None) -> np.ndarray | None:
    """The stored values of a native little-endian grey-scale single frame, or None to let pydicom decode it.

    pydicom's ``pixel_array`` spends about 0.3 ms per call resolving decoding options, as much as reading the file,
    for frames whose decoding is a buffer view. For native (uncompressed) little-endian single-frame grey-scale data
    its native decoder does exactly what this function does: view the buffer with the dtype of BitsAllocated and
    PixelRepresentation, reshape to (Rows, Columns), and when BitsStored < BitsAllocated shift left then right by
    the unused bits (sign-extending signed data, clearing the unused high bits of unsigned data). Anything else
    (compressed, big endian, 1-bit, colour, multi-frame, short or float pixel data) goes through pydicom; tests
    check both agree.
    """
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax is None or syntax.is_compressed or not syntax.is_little_endian:
        return None
    pixels = pixels or _Pixels.of(ds)
    if pixels.samples != 1 or pixels.frames != 1 or _PIXEL_DATA_TAGS[0] not in ds:
        return None
    allocated, stored = pixels.bits_allocated, pixels.bits_stored
    dtype = _NATIVE_DTYPES.get((allocated, pixels.pixel_representation))
    rows, columns = pixels.rows, pixels.columns
    if dtype is None or not 0 < stored <= allocated or rows * columns == 0:
        return None
    buffer = ds.get_item(_PIXEL_DATA_TAGS[0]).value  # the raw element's bytes: no conversion needed for OB/OW
    if len(buffer) < rows * columns * allocated // 8:
        return None  # pydicom raises the precise "pixel data is short" error
    array = np.frombuffer(buffer, dtype=dtype, count=rows * columns).reshape(rows, columns)
    shift = allocated - stored
    if shift:
        array = np.right_shift(np.left_shift(array, shift), shift)
    return array


# PHI-free descriptive tags copied into the metadata: (metadata name, DICOM keyword, type).
_DESCRIPTIVE_TAGS: tuple[tuple[str, str, type], ...] = (
    ("modality", "Modality", str),
    ("series_number", "SeriesNumber", int),
    ("series_description", "SeriesDescription", str),
    ("manufacturer", "Manufacturer", str),
    ("body_part", "BodyPartExamined", str),
    ("laterality", "ImageLaterality", str),
    ("view", "ViewPosition", str),
    ("photometric", "PhotometricInterpretation", str),
    ("echo_time", "EchoTime", float),
    ("repetition_time", "RepetitionTime", float),
    ("inversion_time", "InversionTime", float),
    ("flip_angle", "FlipAngle", float),
    ("magnetic_field_strength", "MagneticFieldStrength", float),
)


def _descriptive_tags(ds: Dataset) -> dict[str, Any]:
    tags: dict[str, Any] = {}
    for name, keyword, kind in _DESCRIPTIVE_TAGS:
        value = ds.get(keyword)
        if value is None or value == "":
            continue
        try:
            tags[name] = kind(value) if kind is not str else str(value).strip()
        except (TypeError, ValueError):
            continue
    image_type = ds.get("ImageType")
    if image_type:
        tags["image_type"] = "\\".join(str(v) for v in ensure_tuple(image_type))
    tags["contrast_agent"] = bool(str(ds.get("ContrastBolusAgent", "") or "").strip())
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax:
        tags["transfer_syntax"] = syntax.name
    sop_class = ds.get("SOPClassUID")
    if sop_class:
        tags["sop_class"] = sop_class.name
    return {k: v for k, v in tags.items() if v != ""}


def load_series(
    data: Sequence[str | os.PathLike] | str | os.PathLike,
    *,
    sequence: str | None = None,
    ensure_channel_first: bool = False,
    salt: str | None = None,
    workers: int | None = None,
) -> MetaTensor:
    """Load one DICOM series (its files in any order, or a folder holding exactly one series) as a MetaTensor.

    Args:
        data: the files of one series, or its folder; a single file works too (one slice, an enhanced multi-frame
            file, or a planar MG/DX/CR image).
        sequence: MR sequence name to record in the metadata (``T1``, ``T1C`` ...), when the caller knows it.
        ensure_channel_first: add a channel dimension first (``(1, x, y, z)``).
        salt: salt for the keys in the metadata (default ``$MEDSSL_SALT``; no keys without one).
        workers: threads reading and decoding files.

    Returns:
        The ``(x, y, z)`` float32 volume (``(x, y)`` for a planar image) with affine (RAS) and PHI-free metadata.

    Raises:
        DicomReadError: a file is unreadable, truncated or undecodable.
        MultipleSeriesError: a folder holds several series.
        SeriesGeometryError: the instances do not form one volume.

    Example:
        >>> volume = load_series(manifest_row_files)  # doctest: +SKIP
        >>> volume.shape, volume.affine  # doctest: +SKIP
    """
    from medssl.transforms.array import LoadVolume  # imported here: medssl.transforms imports this module

    reader = DicomSeriesReader(salt=salt, workers=workers)
    names = [os.fspath(n) for n in ensure_tuple(data)]
    if len(names) > 1 or not os.path.isdir(names[0]):
        missing = [n for n in names if not os.path.exists(n)]
        if missing:
            raise DicomReadError("no such file", missing[0])
    image = LoadVolume(ensure_channel_first=ensure_channel_first)(names, reader=reader)
    if sequence:
        image.meta["sequence"] = sequence
    return image
