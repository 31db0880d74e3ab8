"""Geometry of a DICOM series from its headers: slice order, spacing and affine.

The indexer (headers only) and the series loader (pixels) share this one implementation, so a series the index calls
``ok`` is a series the loader can stack, and the reason a series cannot be stacked is known before any pixel is read.

Conventions (the same as MONAI's ITK and pydicom readers, and SimpleITK once its ``(z, y, x)`` array is transposed):

- the array axes are ``(x, y, z)`` = (column index, row index, slice index);
- ``spacing`` is ``(column spacing, row spacing, slice spacing)`` in mm, i.e. ``PixelSpacing[1], PixelSpacing[0]`` and
  the distance between consecutive slice positions along the slice normal;
- ``affine_lps`` maps ``(x, y, z, 1)`` voxel indices to DICOM patient coordinates (LPS), ``affine_ras`` to RAS as in
  NIfTI (the first two rows negated).

Slices are ordered by their ImagePositionPatient projected on the slice normal (the cross product of the row and column
direction cosines), never by InstanceNumber, which scanners and PACS routers renumber freely.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from medssl.exceptions import SeriesGeometryError

__all__ = ["SeriesGeometry", "series_geometry", "plane_of", "LPS_TO_RAS"]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

# Tolerances: direction cosines written with 4 to 6 decimals by scanners, positions with 2 to 6.
ORIENTATION_TOLERANCE = 1e-3
SPACING_RELATIVE_TOLERANCE = 0.01
SPACING_ABSOLUTE_TOLERANCE = 1e-3
SHEAR_TOLERANCE_MM = 0.01


@dataclass(frozen=True)
class SeriesGeometry:
    """The geometry of one series, in slice order.

    Attributes:
        order: indices of the input instances sorted along the slice normal (first slice first).
        row_cosine: direction of increasing column index (ImageOrientationPatient[:3]), LPS.
        column_cosine: direction of increasing row index (ImageOrientationPatient[3:]), LPS.
        normal: slice normal, ``row_cosine x column_cosine``.
        origin: ImagePositionPatient of the first slice (LPS, mm).
        spacing: ``(x, y, z)`` spacing in mm.
        positions: slice positions along the normal, in slice order (mm).
    """

    order: np.ndarray
    row_cosine: np.ndarray
    column_cosine: np.ndarray
    normal: np.ndarray
    origin: np.ndarray
    spacing: tuple[float, float, float]
    positions: np.ndarray

    @property
    def n_slices(self) -> int:
        """Number of slices."""
        return int(len(self.order))

    @property
    def affine_lps(self) -> np.ndarray:
        """Voxel ``(x, y, z)`` to LPS patient coordinates, 4x4."""
        affine = np.eye(4)
        affine[:3, 0] = self.row_cosine * self.spacing[0]
        affine[:3, 1] = self.column_cosine * self.spacing[1]
        affine[:3, 2] = self.normal * self.spacing[2]
        affine[:3, 3] = self.origin
        return affine

    @property
    def affine_ras(self) -> np.ndarray:
        """Voxel ``(x, y, z)`` to RAS coordinates (the NIfTI convention), 4x4."""
        return LPS_TO_RAS @ self.affine_lps

    @property
    def orientation(self) -> tuple[float, ...]:
        """The six direction cosines (ImageOrientationPatient), rounded to 4 decimals."""
        return tuple(round(float(v), 4) + 0.0 for v in np.concatenate([self.row_cosine, self.column_cosine]))

    @property
    def plane(self) -> str:
        """``axial``, ``coronal``, ``sagittal`` or ``oblique`` (see :func:`plane_of`)."""
        return plane_of(self.normal)


def plane_of(normal: Sequence[float], tolerance_degrees: float = 20.0) -> str:
    """Name the acquisition plane of a slice normal (LPS).

    Args:
        normal: the slice normal.
        tolerance_degrees: largest angle to a patient axis still named after it.

    Returns:
        ``axial`` (normal along S), ``coronal`` (along P), ``sagittal`` (along L) or ``oblique``.
    """
    normal = np.asarray(normal, dtype=float)
    normal = normal / (np.linalg.norm(normal) or 1.0)
    axis = int(np.argmax(np.abs(normal)))
    if np.degrees(np.arccos(min(1.0, abs(normal[axis])))) > tolerance_degrees:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def _as_array(values, length: int, what: str, path) -> np.ndarray:
    try:
        array = np.asarray([float(v) for v in values], dtype=float)
    except (TypeError, ValueError) as error:
        raise SeriesGeometryError(f"{what} is not numeric: {values!r}", path) from error
    if array.shape != (length,):
        raise SeriesGeometryError(f"{what} has {array.size} values, expected {length}", path)
    return array


def series_geometry(
    positions: Sequence[Sequence[float] | None],
    orientations: Sequence[Sequence[float] | None],
    pixel_spacings: Sequence[Sequence[float] | None],
    *,
    slice_thickness: float | None = None,
    path: str | os.PathLike | None = None,
) -> SeriesGeometry:
    """Compute a series' slice order, spacing and affine from its instances' headers.

    Args:
        positions: ImagePositionPatient of each instance.
        orientations: ImageOrientationPatient of each instance.
        pixel_spacings: PixelSpacing (row spacing, column spacing) of each instance.
        slice_thickness: spacing used for a single-slice series (SpacingBetweenSlices or SliceThickness).
        path: the series (a folder, a file or a key) named in error messages.

    Returns:
        The series geometry.

    Raises:
        SeriesGeometryError: a tag is missing, orientations or pixel spacings differ between instances, two instances
            share a position (several volumes in one series), slices are missing, spacing is inconsistent, or the
            slices are sheared (gantry tilt).
    """
    n = len(positions)
    if n == 0:
        raise SeriesGeometryError("series has no instances", path)
    if not (len(orientations) == len(pixel_spacings) == n):
        raise SeriesGeometryError("positions, orientations and pixel spacings differ in length", path)
    for name, values in (
        ("ImagePositionPatient", positions),
        ("ImageOrientationPatient", orientations),
        ("PixelSpacing", pixel_spacings),
    ):
        missing = sum(v is None or len(v) == 0 for v in values)
        if missing:
            raise SeriesGeometryError(f"{missing} of {n} instances have no {name}", path)

    iop = np.stack([_as_array(v, 6, "ImageOrientationPatient", path) for v in orientations])
    if np.abs(iop - iop[0]).max() > ORIENTATION_TOLERANCE:
        n_distinct = len({tuple(np.round(row, 3)) for row in iop})
        raise SeriesGeometryError(
            f"mixed orientations: {n_distinct} different ImageOrientationPatient values in one series "
            "(a localizer or several stacks exported as one series)",
            path,
        )
    row_cosine, column_cosine = iop[0, :3], iop[0, 3:]
    if abs(np.linalg.norm(row_cosine) - 1) > 0.01 or abs(np.linalg.norm(column_cosine) - 1) > 0.01:
        raise SeriesGeometryError(f"ImageOrientationPatient is not made of unit vectors: {iop[0].tolist()}", path)
    if abs(float(row_cosine @ column_cosine)) > 0.01:
        raise SeriesGeometryError(f"ImageOrientationPatient row and column are not orthogonal: {iop[0].tolist()}", path)
    row_cosine = row_cosine / np.linalg.norm(row_cosine)
    column_cosine = column_cosine / np.linalg.norm(column_cosine)
    normal = np.cross(row_cosine, column_cosine)

    spacing_2d = np.stack([_as_array(v, 2, "PixelSpacing", path) for v in pixel_spacings])
    if np.abs(spacing_2d - spacing_2d[0]).max() > SPACING_ABSOLUTE_TOLERANCE:
        raise SeriesGeometryError("mixed PixelSpacing values in one series", path)
    if (spacing_2d[0] <= 0).any():
        raise SeriesGeometryError(f"PixelSpacing must be positive, got {spacing_2d[0].tolist()}", path)
    row_spacing, column_spacing = float(spacing_2d[0, 0]), float(spacing_2d[0, 1])

    ipp = np.stack([_as_array(v, 3, "ImagePositionPatient", path) for v in positions])
    along = ipp @ normal
    order = np.argsort(along, kind="stable")
    along_sorted = along[order]

    if n == 1:
        slice_spacing = float(slice_thickness) if slice_thickness and slice_thickness > 0 else 1.0
        return SeriesGeometry(
            order=order,
            row_cosine=row_cosine,
            column_cosine=column_cosine,
            normal=normal,
            origin=ipp[order[0]],
            spacing=(column_spacing, row_spacing, slice_spacing),
            positions=along_sorted,
        )

    gaps = np.diff(along_sorted)
    duplicates = int((gaps < SPACING_ABSOLUTE_TOLERANCE * 10).sum())
    if duplicates:
        n_positions = n - duplicates
        raise SeriesGeometryError(
            f"{n} instances at {n_positions} distinct slice positions: several volumes (echoes, time points, "
            "b-values or phases) were exported as one series; split it before stacking",
            path,
        )
    spacing = float(np.median(gaps))
    tolerance = max(SPACING_RELATIVE_TOLERANCE * spacing, SPACING_ABSOLUTE_TOLERANCE)
    off = np.abs(gaps - spacing) > tolerance
    if off.any():
        ratios = gaps[off] / spacing
        if np.all(np.abs(ratios - np.round(ratios)) < 0.05) and np.all(np.round(ratios) >= 2):
            missing = int(np.round(ratios).sum() - len(ratios))
            raise SeriesGeometryError(
                f"missing slices: {missing} slice(s) missing from {n + missing} (gaps of {gaps[off].round(3).tolist()} "
                f"mm where the spacing is {spacing:.3f} mm)",
                path,
            )
        raise SeriesGeometryError(
            f"inconsistent slice spacing: gaps from {gaps.min():.3f} to {gaps.max():.3f} mm "
            f"(median {spacing:.3f} mm, tolerance {tolerance:.3f} mm)",
            path,
        )

    # In-plane drift of the slice origins means the slices are sheared (CT gantry tilt): an orthogonal affine would
    # misplace every slice but the first, so we refuse rather than return silently wrong geometry.
    in_plane = ipp[order] - ipp[order[0]] - np.outer(along_sorted - along_sorted[0], normal)
    if np.abs(in_plane).max() > max(SHEAR_TOLERANCE_MM, 0.01 * spacing):
        raise SeriesGeometryError(
            f"sheared slices: slice origins drift {np.abs(in_plane).max():.2f} mm in-plane (gantry tilt); "
            "resample with a tilt-correcting converter such as dcm2niix first",
            path,
        )
    return SeriesGeometry(
        order=order,
        row_cosine=row_cosine,
        column_cosine=column_cosine,
        normal=normal,
        origin=ipp[order[0]],
        spacing=(column_spacing, row_spacing, spacing),
        positions=along_sorted,
    )
