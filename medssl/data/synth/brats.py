"""Synthetic BraTS: NIfTI cases in the BraTS 2021 or 2023 layout with a tumour that needs all four sequences.

Each case is a :class:`~medssl.data.synth.shapes.HeadPhantom` sampled on a 1 mm grid with BraTS's affine (voxel axes
towards left, posterior, superior; ``diag(-1, -1, 1)`` with the origin at ``(0, ny - 1, 0)`` as in the real data),
written as four int16 volumes and a uint8 segmentation:

- ``--layout 2021``: ``OUT/BraTS2021_00000/BraTS2021_00000_{t1,t1ce,t2,flair,seg}.nii.gz``, ET label 4;
- ``--layout 2023``: ``OUT/BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t1n,t1c,t2w,t2f,seg}.nii.gz``, ET label 3; a share
  of patients (``--timepoints``) get a second time point (``-001``) with the tumour grown.

The segmentation is the phantom's tumour (1 NCR, 2 ED, 4 or 3 ET). The tissue contrasts (see
:mod:`medssl.data.synth.shapes`) make every single sequence confuse two of the three labels, so a model has to combine
them. Some cases have no tumour and some a low-grade tumour (no enhancement, no necrosis: the core is label 1);
``OUT/case_labels.csv`` gives each case's ``tumour`` (0/1), ``grade`` (``none``, ``low``, ``high``) and ``high_grade``
(0/1) for classification. Every case draws from its own generator seeded with ``(seed, index)``, so a case does not
change when ``--n`` does.
"""

from __future__ import annotations

import argparse
import csv
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from medssl.data.layouts.brats import CASE_LABELS_FILE, CHANNELS, NAMINGS
from medssl.data.synth.shapes import BRAIN_SURFACE, TISSUE_CODES, HeadPhantom, grid_points, lps_affine_from_ras

__all__ = ["LAYOUT", "HELP", "add_arguments", "generate", "brats_affine", "generate_case"]

LAYOUT = "brats"
HELP = "NIfTI cases in the BraTS 2021/2023 layout (T1, T1C, T2, FLAIR, seg) with a multi-sequence tumour"

# Head size as a fraction of the field of view along (x, y, z), like a skull-on head in BraTS's 240x240x155 grid.
_HEAD_FRACTION = (0.38, 0.45, 0.42)
_GAIN = 1000.0  # stored value of relative signal 1.0


def brats_affine(shape: tuple[int, int, int]) -> np.ndarray:
    """The voxel-to-RAS affine of a BraTS volume of this shape (1 mm, LPS voxel order, like the real files).

    Args:
        shape: ``(nx, ny, nz)``.

    Returns:
        4x4 affine.
    """
    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    affine[1, 3] = shape[1] - 1
    return affine


def _labels(tissue: np.ndarray, et_label: int) -> np.ndarray:
    lut = np.zeros(len(TISSUE_CODES), dtype=np.uint8)
    lut[TISSUE_CODES["necrosis"]] = 1
    lut[TISSUE_CODES["edema"]] = 2
    lut[TISSUE_CODES["enhancing"]] = et_label
    return lut[tissue]


def generate_case(
    phantom: HeadPhantom,
    shape: tuple[int, int, int],
    rng: np.random.Generator,
    *,
    et_label: int = 4,
    noise: float = 0.03,
    skull_stripped: bool = False,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Sample one case's volumes from a phantom on the BraTS grid.

    Args:
        phantom: the head (LPS coordinates).
        shape: ``(nx, ny, nz)``.
        rng: generator for gains, bias fields and noise.
        et_label: value of the enhancing tumour (4 in 2021, 3 in 2023).
        noise: noise level relative to the brightest tissue.
        skull_stripped: zero everything outside the brain, like the released BraTS data.

    Returns:
        ``({sequence: int16 volume}, uint8 segmentation, RAS affine)``.
    """
    affine = brats_affine(shape)
    points = grid_points(lps_affine_from_ras(affine), shape)
    tissue = phantom.tissue(points)
    # The brain mask of skull stripping: inside the brain surface (the CSF shell around it goes with the skull).
    brain = np.linalg.norm(phantom.to_head(points) / phantom.radii, axis=1) <= BRAIN_SURFACE
    images = {}
    for sequence in CHANNELS:
        signal = phantom.image(points, sequence, rng, noise=noise, tissue=tissue)
        gain = _GAIN * rng.uniform(0.7, 1.3)  # scanners' arbitrary units: normalise per volume
        if skull_stripped:
            signal = np.where(brain, signal, 0.0)
        images[sequence] = np.round(signal * gain).clip(0, 32767).astype(np.int16).reshape(shape)
    return images, _labels(tissue, et_label).reshape(shape), affine


def _save(array: np.ndarray, affine: np.ndarray, path: Path) -> None:
    import nibabel as nib

    image = nib.Nifti1Image(array, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    image.header.set_xyzt_units("mm", "sec")
    nib.save(image, path)


def _parse_size(value: str | int | tuple[int, ...] | list[int]) -> tuple[int, int, int]:
    if isinstance(value, str):
        parts = [int(v) for v in value.replace("x", ",").split(",") if v.strip()]
    elif isinstance(value, int):
        parts = [value]
    else:
        parts = [int(v) for v in value]
    if len(parts) == 1:
        parts *= 3
    if len(parts) != 3 or min(parts) < 8:
        raise ValueError(f"size must be one or three integers >= 8, got {value!r}")
    return tuple(parts)  # type: ignore[return-value]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``medssl synth brats``."""
    parser.add_argument("--layout", choices=sorted(NAMINGS), default="2021", help="BraTS naming (default 2021)")
    parser.add_argument(
        "--size",
        default="64",
        help="grid size: N or NX,NY,NZ voxels of 1 mm (default 64; the real data is 240,240,155)",
    )
    parser.add_argument("--no-tumour", type=float, default=0.2, help="share of cases without tumour (default 0.2)")
    parser.add_argument(
        "--low-grade", type=float, default=0.3, help="share of tumour cases that are low grade (default 0.3)"
    )
    parser.add_argument(
        "--timepoints",
        type=float,
        default=0.2,
        help="2023 naming: share of cases that are a patient's second time point (default 0.2)",
    )
    parser.add_argument("--noise", type=float, default=0.03, help="noise relative to the brightest tissue")
    parser.add_argument(
        "--skull-stripped", action="store_true", help="zero everything outside the brain, like the released BraTS"
    )


def _count(n: int, fraction: float, what: str) -> int:
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"{what} must be a fraction in [0, 1], got {fraction}")
    return int(round(n * fraction))


def generate(
    out: str | os.PathLike,
    n: int,
    seed: int,
    *,
    layout: str = "2021",
    size: str | int | tuple[int, ...] = 64,
    no_tumour: float = 0.2,
    low_grade: float = 0.3,
    timepoints: float = 0.2,
    noise: float = 0.03,
    skull_stripped: bool = False,
) -> dict[str, Any]:
    """Write ``n`` synthetic BraTS cases and ``case_labels.csv`` under ``out``.

    Args:
        out: the dataset folder (created).
        n: number of cases (case folders).
        seed: random seed; the same seed writes the same data.
        layout: ``2021`` or ``2023`` naming.
        size: grid size, ``N`` or ``(nx, ny, nz)`` (1 mm voxels).
        no_tumour: share of cases without tumour.
        low_grade: share of tumour cases without enhancement or necrosis.
        timepoints: 2023 naming only: share of cases that are a second time point of an earlier case's patient.
        noise: noise level relative to the brightest tissue.
        skull_stripped: zero everything outside the brain.

    Returns:
        A summary: ``layout``, ``naming``, ``out``, ``n_cases``, ``n_patients``, ``size``, ``cases``,
        ``case_labels``, ``labels``.

    Raises:
        ValueError: bad size, fraction or naming.
    """
    if layout not in NAMINGS:
        raise ValueError(f"unknown BraTS layout {layout!r}; expected one of {sorted(NAMINGS)}")
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    spec = NAMINGS[layout]
    shape = _parse_size(size)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    plan = np.random.default_rng([seed, 0x5EED])
    n_followups = _count(n, timepoints, "timepoints") if layout == "2023" else 0
    n_followups = min(n_followups, n // 2)
    n_patients = n - n_followups
    # Which cases are follow-ups, of which patient; which patients have no tumour or a low-grade one.
    followup_of = sorted(plan.choice(n_patients, size=n_followups, replace=False).tolist()) if n_followups else []
    no_tumour_set = set(
        plan.choice(n_patients, size=_count(n_patients, no_tumour, "no_tumour"), replace=False).tolist()
    )
    with_tumour = [p for p in range(n_patients) if p not in no_tumour_set]
    n_low = _count(len(with_tumour), low_grade, "low_grade")
    low_set = set(plan.choice(with_tumour, size=n_low, replace=False).tolist()) if n_low else set()

    fov = np.asarray(shape, dtype=float)
    radii = fov * np.asarray(_HEAD_FRACTION)
    centre_index = (fov - 1) / 2
    centre_lps = (lps_affine_from_ras(brats_affine(shape)) @ np.append(centre_index, 1.0))[:3]

    cases, rows = [], []
    jobs = [(p, 0) for p in range(n_patients)] + [(p, 1) for p in followup_of]
    for index, (patient, timepoint) in enumerate(jobs):
        rng = np.random.default_rng([seed, patient])
        tumour = patient not in no_tumour_set
        enhancing = patient not in low_set
        phantom = HeadPhantom.random(
            rng,
            radii=radii,
            centre=centre_lps + rng.uniform(-0.03, 0.03, size=3) * fov,
            tumour=tumour,
            enhancing=enhancing,
            max_rotation_degrees=4.0,
        )
        case_rng = np.random.default_rng([seed, patient, timepoint])
        if timepoint:
            phantom = phantom.moved(case_rng, shift_mm=0.02 * fov.min(), max_rotation_degrees=2.0)
            if phantom.tumour is not None:
                phantom = replace(phantom, tumour=phantom.tumour.grown(1.2))
        if layout == "2023":
            case = spec.case_format.format(index=patient, timepoint=timepoint)
        else:
            case = spec.case_format.format(index=index)
        images, seg, affine = generate_case(
            phantom, shape, case_rng, et_label=spec.et_label, noise=noise, skull_stripped=skull_stripped
        )
        folder = out / case
        folder.mkdir(parents=True, exist_ok=True)
        for sequence, volume in images.items():
            _save(volume, affine, folder / spec.file_name(case, sequence))
        _save(seg, affine, folder / spec.file_name(case, "label"))
        grade = "none" if not tumour else "high" if enhancing else "low"
        rows.append({"case": case, "tumour": int(tumour), "grade": grade, "high_grade": int(grade == "high")})
        cases.append(case)

    order = np.argsort(cases, kind="stable")
    labels_path = out / CASE_LABELS_FILE
    with labels_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["case", "tumour", "grade", "high_grade"])
        writer.writeheader()
        writer.writerows(rows[i] for i in order)
    return {
        "layout": LAYOUT,
        "naming": layout,
        "out": str(out),
        "n_cases": len(cases),
        "n_patients": n_patients,
        "size": list(shape),
        "cases": sorted(cases),
        "case_labels": str(labels_path),
        "labels": {str(v): name for v, name in spec.labels.items()},
        "grades": {g: sum(r["grade"] == g for r in rows) for g in ("none", "low", "high")},
    }
