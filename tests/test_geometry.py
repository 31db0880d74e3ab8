from __future__ import annotations

import numpy as np
import pytest

from medssl.data.geometry import plane_of, series_geometry
from medssl.exceptions import SeriesGeometryError


def _stack(n, spacing=2.0, row=(1, 0, 0), col=(0, 1, 0), origin=(10.0, -5.0, 3.0), pixel=(0.5, 0.7)):
    row, col = np.asarray(row, float), np.asarray(col, float)
    normal = np.cross(row, col)
    positions = [list(np.asarray(origin) + k * spacing * normal) for k in range(n)]
    return positions, [list(row) + list(col)] * n, [list(pixel)] * n


def test_order_spacing_and_affine_from_shuffled_positions():
    a = 1 / np.sqrt(2)
    positions, orientations, spacings = _stack(6, spacing=2.5, row=(a, a, 0), col=(0, 0, -1))
    shuffle = [3, 0, 5, 1, 4, 2]
    geometry = series_geometry([positions[i] for i in shuffle], orientations, spacings)
    assert [shuffle[i] for i in geometry.order] == list(range(6))
    assert geometry.spacing == pytest.approx((0.7, 0.5, 2.5))
    affine = geometry.affine_lps
    # voxel (x=1) moves one column along the row cosine; voxel (z=1) one slice along the normal
    np.testing.assert_allclose(affine[:3, 3], positions[0])
    np.testing.assert_allclose(affine @ [1, 0, 0, 1], np.r_[np.asarray(positions[0]) + 0.7 * np.array([a, a, 0]), 1])
    np.testing.assert_allclose(affine @ [0, 0, 1, 1], np.r_[positions[1], 1], atol=1e-9)
    np.testing.assert_allclose(geometry.affine_ras[:2], -affine[:2])
    assert geometry.plane == "oblique"


def test_single_slice_uses_thickness():
    positions, orientations, spacings = _stack(1)
    geometry = series_geometry(positions, orientations, spacings, slice_thickness=4.0)
    assert geometry.spacing[2] == 4.0 and geometry.n_slices == 1


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda p, o, s: (p[:2] + p[3:], o[:-1], s[:-1]), "missing slices: 1 slice"),
        (lambda p, o, s: (p, o[:-1] + [[0, 1, 0, 0, 0, -1]], s), "mixed orientations"),
        (lambda p, o, s: (p + [p[2]], o + [o[0]], s + [s[0]]), "several volumes"),
        (lambda p, o, s: (p[:3] + [[v + d for v, d in zip(p[3], (0, 0, 0.7))]] + p[4:], o, s), "inconsistent slice"),
        (lambda p, o, s: ([[x + 1.5 * k, y, z] for k, (x, y, z) in enumerate(p)], o, s), "sheared"),
        (lambda p, o, s: (p, o, s[:-1] + [[0.9, 0.9]]), "mixed PixelSpacing"),
        (lambda p, o, s: (p[:-1] + [None], o, s), "have no ImagePositionPatient"),
        (lambda p, o, s: (p, [[1, 0, 0, 0.6, 0.8, 0]] * len(o), s), "not orthogonal"),
    ],
)
def test_broken_series_raise_clear_errors(mutate, message):
    positions, orientations, spacings = _stack(6)
    with pytest.raises(SeriesGeometryError, match=message) as info:
        series_geometry(*mutate(positions, orientations, spacings), path="export/series7")
    assert str(info.value).startswith("export/series7: ")


def test_plane_names():
    assert plane_of([0, 0, 1]) == "axial"
    assert plane_of([0, -1, 0]) == "coronal"
    assert plane_of([1, 0, 0]) == "sagittal"
    assert plane_of([1, 1, 1]) == "oblique"
