"""Write synthetic DICOM files with real tags: MR/CT series and planar images (MG, DX, CR).

Synthetic exports must look like real ones to the code that reads them, so files are written with pydicom as
standard-conformant Part 10 files (file meta, SOP class, transfer syntax) carrying the tags real scanners set:
patient/study/series identity, geometry (ImagePositionPatient, ImageOrientationPatient, PixelSpacing), rescale, MR
acquisition parameters, mammography view codes. UIDs are deterministic given a numpy random generator, so a seed
reproduces an export byte for byte (apart from file-system times).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    ComputedRadiographyImageStorage,
    CTImageStorage,
    DigitalMammographyXRayImageStorageForPresentation,
    DigitalMammographyXRayImageStorageForProcessing,
    DigitalXRayImageStorageForPresentation,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

__all__ = ["SOP_CLASSES", "new_uid", "build_dataset", "write_dataset", "write_series", "write_planar_image"]

SOP_CLASSES: dict[str, UID] = {
    "MR": MRImageStorage,
    "CT": CTImageStorage,
    "MG": DigitalMammographyXRayImageStorageForPresentation,
    "MG-PROCESSING": DigitalMammographyXRayImageStorageForProcessing,
    "DX": DigitalXRayImageStorageForPresentation,
    "CR": ComputedRadiographyImageStorage,
}


def new_uid(rng: np.random.Generator) -> str:
    """A new DICOM UID, deterministic given the generator's state.

    Args:
        rng: numpy random generator.

    Returns:
        A UID under pydicom's root.
    """
    return str(generate_uid(entropy_srcs=[str(int(v)) for v in rng.integers(0, 2**62, size=4)]))


def build_dataset(
    pixels: np.ndarray,
    tags: Mapping[str, Any],
    *,
    modality: str,
    sop_class: str | None = None,
    photometric: str = "MONOCHROME2",
    bits_stored: int | None = None,
    sop_instance_uid: str | None = None,
) -> Dataset:
    """Build one image dataset (file meta included) from a 2D pixel array and tags.

    Args:
        pixels: ``(rows, columns)`` integer array (uint8/uint16/int16) in stored values.
        tags: DICOM keywords to values (``{"PatientID": "P1", "SeriesDescription": "t1_mprage"}``).
        modality: the Modality tag; picks the SOP class unless ``sop_class`` is given.
        sop_class: SOP Class UID, or a key of :data:`SOP_CLASSES`.
        photometric: PhotometricInterpretation (``MONOCHROME1`` or ``MONOCHROME2``).
        bits_stored: BitsStored (the dtype's bit depth by default).
        sop_instance_uid: the instance UID (a fresh random one by default).

    Returns:
        The dataset, ready for :func:`write_dataset`.
    """
    pixels = np.ascontiguousarray(pixels)
    if pixels.ndim != 2:
        raise ValueError(f"expected a 2D (rows, columns) pixel array, got shape {pixels.shape}")
    if pixels.dtype.kind not in "iu":
        raise ValueError(f"stored pixel values must be integers, got {pixels.dtype}")
    sop_class_uid = SOP_CLASSES.get(sop_class or modality, sop_class or SOP_CLASSES.get(modality))
    if sop_class_uid is None:
        raise ValueError(f"no SOP class known for modality {modality!r}; pass sop_class")
    instance_uid = sop_instance_uid or str(generate_uid())

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class_uid
    ds.file_meta.MediaStorageSOPInstanceUID = instance_uid
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = instance_uid
    ds.Modality = modality
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    ds.set_pixel_data(pixels, photometric, bits_stored or pixels.dtype.itemsize * 8, generate_instance_uid=False)
    return ds


def write_dataset(ds: Dataset, path: str | os.PathLike) -> Path:
    """Write a dataset as a DICOM Part 10 file, creating parent folders.

    Args:
        ds: the dataset (with file meta).
        path: where to write; any name, with or without extension.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series(
    volume: np.ndarray,
    paths: Sequence[str | os.PathLike],
    *,
    spacing: Sequence[float],
    row_cosine: Sequence[float] = (1.0, 0.0, 0.0),
    column_cosine: Sequence[float] = (0.0, 1.0, 0.0),
    origin: Sequence[float] = (0.0, 0.0, 0.0),
    tags: Mapping[str, Any],
    modality: str = "MR",
    rescale: tuple[float, float] | None = None,
    instance_numbers: Sequence[int] | None = None,
    rng: np.random.Generator | None = None,
) -> list[Path]:
    """Write a 3D volume as a DICOM series, one file per slice.

    The volume is indexed ``(x, y, z)`` = (column, row, slice) like MONAI's DICOM readers: slice ``k`` is stored as
    ``volume[:, :, k].T`` and placed at ``origin + k * spacing[2] * normal`` (LPS), with ``normal = row_cosine x
    column_cosine``.

    Args:
        volume: ``(x, y, z)`` array of real values (after rescale) or stored integers when ``rescale`` is None.
        paths: one output path per slice (any names, in any folders: the series is defined by its UIDs).
        spacing: ``(x, y, z)`` spacing in mm.
        row_cosine: direction of increasing x (LPS).
        column_cosine: direction of increasing y (LPS).
        origin: position of the first voxel of the first slice (LPS, mm).
        tags: patient/study/series-level tags shared by every slice (must include the UIDs).
        modality: ``MR`` or ``CT``.
        rescale: ``(slope, intercept)``: stored = round((value - intercept) / slope) as int16.
        instance_numbers: InstanceNumber per slice (1..n by default; pass a permutation to mimic renumbering).
        rng: generator for the instance UIDs (random when None).

    Returns:
        The paths written, in slice order.
    """
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise ValueError(f"expected an (x, y, z) volume, got shape {volume.shape}")
    n_slices = volume.shape[2]
    if len(paths) != n_slices:
        raise ValueError(f"{len(paths)} paths for {n_slices} slices")
    row_cosine = np.asarray(row_cosine, dtype=float)
    column_cosine = np.asarray(column_cosine, dtype=float)
    normal = np.cross(row_cosine, column_cosine)
    rng = rng or np.random.default_rng()
    numbers = list(instance_numbers) if instance_numbers is not None else list(range(1, n_slices + 1))
    written = []
    for k, path in enumerate(paths):
        plane = volume[:, :, k].T
        slice_tags = dict(tags)
        if rescale is not None:
            slope, intercept = rescale
            plane = np.round((plane - intercept) / slope).astype(np.int16)
            slice_tags["RescaleSlope"] = f"{slope:g}"
            slice_tags["RescaleIntercept"] = f"{intercept:g}"
        position = np.asarray(origin, dtype=float) + k * float(spacing[2]) * normal
        slice_tags.update(
            ImagePositionPatient=[f"{v:.6f}" for v in position],
            ImageOrientationPatient=[f"{v:.6f}" for v in np.concatenate([row_cosine, column_cosine])],
            PixelSpacing=[f"{float(spacing[1]):g}", f"{float(spacing[0]):g}"],
            SliceThickness=f"{float(spacing[2]):g}",
            SpacingBetweenSlices=f"{float(spacing[2]):g}",
            SliceLocation=f"{float(position @ normal):.6f}",
            InstanceNumber=int(numbers[k]),
        )
        ds = build_dataset(
            plane.astype(plane.dtype if plane.dtype.kind in "iu" else np.int16),
            slice_tags,
            modality=modality,
            sop_instance_uid=new_uid(rng),
        )
        written.append(write_dataset(ds, path))
    return written


def write_planar_image(
    image: np.ndarray,
    path: str | os.PathLike,
    *,
    tags: Mapping[str, Any],
    modality: str,
    photometric: str = "MONOCHROME2",
    bits_stored: int = 12,
    sop_class: str | None = None,
    rng: np.random.Generator | None = None,
) -> Path:
    """Write one planar image (MG, DX, CR) as a DICOM file.

    Args:
        image: ``(rows, columns)`` stored values (uint16), already inverted for MONOCHROME1 if that is wanted.
        path: output path.
        tags: every tag to set (identity, view, laterality, windowing, PixelSpacing / ImagerPixelSpacing ...).
        modality: ``MG``, ``DX`` or ``CR``.
        photometric: ``MONOCHROME1`` or ``MONOCHROME2``.
        bits_stored: BitsStored.
        sop_class: SOP class key or UID (``MG-PROCESSING`` for FOR PROCESSING mammograms).
        rng: generator for the instance UID.

    Returns:
        The path written.
    """
    rng = rng or np.random.default_rng()
    ds = build_dataset(
        np.asarray(image, dtype=np.uint16),
        tags,
        modality=modality,
        sop_class=sop_class,
        photometric=photometric,
        bits_stored=bits_stored,
        sop_instance_uid=new_uid(rng),
    )
    return write_dataset(ds, path)
