"""Training items for image-only pretraining from a datalist, a manifest, or a plain folder of images.

Image-only methods need nothing but images (and, for patient-aware positives, the patient and study keys), so
``medssl pretrain --method simclr --data X`` accepts:

* a **datalist** JSON, or a folder holding ``datalist.json``: the split's items (as every method);
* a **manifest** (CSV or Parquet written by ``medssl index``): one item per series of the preset's modality
  (``cxr``: CR/DX, ``mammo``: MG, ``mr``: MR), keeping ``patient_key``, ``study_key``, ``study_rank``; planar
  images take the series' (first) file, volumes the list of its files in slice order (series whose geometry does
  not stack into one volume are left out); an optional ``sequences`` filter keeps MR sequences by name;
* a **folder of images**: every PNG/JPEG/TIFF (2D) or NIfTI (3D) file under it, one item each, keyed by a hash
  of its relative path; these items have no patient, so patient-aware positives need a datalist or a manifest;
* an **export folder of DICOM files** (no datalist, no images): indexed on the fly
  (:func:`medssl.data.layouts.dicom_export.load_manifest`), then as a manifest.

Items carry keys, never names: the manifest's keys are already salted hashes.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medssl.exceptions import DatalistError
from medssl.log import get_logger

__all__ = [
    "MODALITY_CODES",
    "IMAGE_SUFFIXES_2D",
    "IMAGE_SUFFIXES_3D",
    "is_manifest_file",
    "manifest_image_items",
    "folder_image_items",
    "load_ssl_items",
]

logger = get_logger(__name__)

#: DICOM Modality values of each preset modality.
MODALITY_CODES: dict[str, tuple[str, ...]] = {"cxr": ("CR", "DX"), "mammo": ("MG",), "mr": ("MR",)}
IMAGE_SUFFIXES_2D = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
IMAGE_SUFFIXES_3D = (".nii", ".nii.gz", ".nrrd", ".mha", ".mhd")


def is_manifest_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a CSV or Parquet file (a manifest candidate, as opposed to a datalist JSON)."""
    name = os.fspath(path).lower()
    return name.endswith((".csv", ".parquet", ".pq"))


def manifest_image_items(
    manifest: Any,
    modality: str = "cxr",
    spatial_dims: int = 2,
    sequences: Sequence[str] | None = None,
    where: str | os.PathLike | None = None,
) -> list[dict[str, Any]]:
    """One item per usable series of a manifest.

    Args:
        manifest: the manifest DataFrame (:func:`medssl.data.manifest.read_manifest`).
        modality: ``cxr``, ``mammo`` or ``mr`` (which DICOM modalities are kept).
        spatial_dims: 2 (planar images: one file per item) or 3 (volumes: the series' files).
        sequences: MR sequences to keep (``["T1", "FLAIR"]``); ``None`` keeps all.
        where: the manifest's path (for messages).

    Returns:
        Items ``{"image", "patient_key", "study_key", "case_key" (the series key), "study_rank", "modality",
        "sequence", "view", "laterality"}`` (the last four when the manifest has them).

    Raises:
        DatalistError: no series of that modality.
    """
    from medssl.data.manifest import series_files

    codes = MODALITY_CODES.get(modality)
    if codes is None:
        raise DatalistError(f"no manifest modality for {modality!r}; known: {sorted(MODALITY_CODES)}", where)
    frame = manifest[manifest["modality"].astype(str).str.upper().isin(codes)]
    if sequences:
        frame = frame[frame["sequence"].astype(str).isin(list(sequences))]
    if int(spatial_dims) == 3 and "geometry" in frame:
        stacks = frame["geometry"].fillna("ok").astype(str) == "ok"
        if (~stacks).any():
            logger.warning("%d series do not stack into a volume and are left out", int((~stacks).sum()))
        frame = frame[stacks]
    items: list[dict[str, Any]] = []
    for _, row in frame.iterrows():
        files = series_files(row)
        if not files:
            continue
        item: dict[str, Any] = {
            "image": files if int(spatial_dims) == 3 else files[0],
            "patient_key": str(row["patient_key"]),
            "study_key": str(row["study_key"]),
            "case_key": str(row["series_key"]),
        }
        for column in ("study_rank", "modality", "sequence", "view", "laterality"):
            if column in row and row[column] is not None and str(row[column]) not in ("", "nan", "<NA>"):
                value = row[column]
                item[column] = int(value) if column == "study_rank" else str(value)
        items.append(item)
    if not items:
        raise DatalistError(
            f"no {'/'.join(codes)} series{' of ' + ', '.join(sequences) if sequences else ''} in the manifest", where
        )
    return items


def folder_image_items(folder: str | os.PathLike, spatial_dims: int = 2) -> list[dict[str, Any]]:
    """One item per image file under ``folder`` (recursively, in sorted order).

    Args:
        folder: the folder.
        spatial_dims: 2 (PNG, JPEG, TIFF) or 3 (NIfTI, NRRD, MetaImage).

    Returns:
        Items ``{"image": absolute path, "case_key": "img-" + hash of the relative path}``.

    Raises:
        DatalistError: no image file.
    """
    root = Path(folder).resolve()
    suffixes = IMAGE_SUFFIXES_3D if int(spatial_dims) == 3 else IMAGE_SUFFIXES_2D
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name.lower().endswith(suffixes))
    if not files:
        raise DatalistError(
            f"no datalist.json and no {'/'.join(suffixes)} image under this folder (write a datalist, or point "
            "--data at a manifest)",
            root,
        )
    return [
        {
            "image": os.fspath(path),
            "case_key": "img-" + hashlib.sha256(path.relative_to(root).as_posix().encode()).hexdigest()[:16],
        }
        for path in files
    ]


def _has_dicom(folder: Path) -> bool:
    from medssl.transforms.cxr import is_dicom_file

    for path in folder.rglob("*"):
        if path.is_file() and (path.suffix.lower() == ".dcm" or (not path.suffix and is_dicom_file(path))):
            return True
    return False


def load_ssl_items(
    data: str | os.PathLike,
    split: str = "training",
    modality: str = "cxr",
    spatial_dims: int = 2,
    sequences: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Training items from a datalist, a manifest, a folder of images or a DICOM export (see the module docstring).

    Args:
        data: the source.
        split: the datalist split (datalists only).
        modality: ``cxr``, ``mammo`` or ``mr`` (manifests and exports: which series).
        spatial_dims: 2 or 3.
        sequences: MR sequences to keep (manifests and exports).

    Returns:
        The items.

    Raises:
        DatalistError: the source does not exist or holds no usable image.
    """
    from medssl.engines.pretrain import load_training_items

    path = Path(data)
    if path.is_file():
        if is_manifest_file(path):
            from medssl.data.manifest import read_manifest

            return manifest_image_items(read_manifest(path), modality, spatial_dims, sequences, path)
        return load_training_items(path, split)
    if path.is_dir():
        if (path / "datalist.json").is_file():
            return load_training_items(path, split)
        suffixes = IMAGE_SUFFIXES_3D if int(spatial_dims) == 3 else IMAGE_SUFFIXES_2D
        has_images = any(p.name.lower().endswith(suffixes) for p in path.rglob("*") if p.is_file())
        if not has_images and _has_dicom(path):
            from medssl.data.layouts.dicom_export import load_manifest

            return manifest_image_items(load_manifest(path), modality, spatial_dims, sequences, path)
        return folder_image_items(path, spatial_dims)
    raise DatalistError("no such datalist, manifest or folder", path)
