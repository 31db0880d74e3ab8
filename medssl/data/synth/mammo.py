r"""Synthetic screening mammograms in the VinDr-Mammo layout, with a lesion that needs both views to be told apart.

Writes ``OUT/images/<study_id>/<image_id>.dicom`` (one exam per patient, four views: L-CC, L-MLO, R-CC, R-MLO),
``OUT/breast-level_annotations.csv`` and ``OUT/finding_annotations.csv`` with VinDr-Mammo's columns and value formats
(``study_id, series_id, image_id, laterality, view_position, height, width, breast_birads, breast_density, split``;
``"BI-RADS 4"``, ``"DENSITY C"``, ``training``/``test``; finding boxes in pixels of the stored image).

The DICOM files carry the tags real mammography units write: Modality MG, the Digital Mammography X-Ray "For
Presentation" SOP class, ViewPosition and ImageLaterality, ViewCodeSequence with the SNOMED CT code and meaning of
the view (CID 4014, from pydicom's code dictionary), PatientOrientation (``A\R`` left CC, ``P\L`` right CC,
``A\FR`` left MLO, ``P\FL`` right MLO), PresentationIntentType, ImagerPixelSpacing, WindowCenter/WindowWidth,
12-bit values, and invented patient and study identity (names, IDs, dates - PHI stand-ins that the readers must
drop). A share of exams (``--monochrome1``) is stored MONOCHROME1 (values inverted, so the display pipeline has to
invert them back), a share (``--missing``) lacks one view, and optional extras that are not in the CSV files mimic a
PACS export: FOR PROCESSING copies (``--processing-copies``) and later spot-compression views (``--spot-views``).

The breasts, drawn with the chest wall on the image's left for left breasts and on the right for right breasts
(the DICOM display convention that PatientOrientation encodes), have a half-elliptical outline whose size varies,
a skin line, fat, fibroglandular texture whose amount follows the breast density (A to D), a pectoral muscle wedge
in the upper chest-wall corner of MLO views, quantum noise, and a black background.

The signal (per breast, see :func:`plan_breast`):

- a **malignant** breast (``--malignant``) has a lesion - a spiculated mass or a cluster of calcifications - seen in
  *both* its CC and MLO views at the same depth along the nipple-chest wall axis (and a related height), with a low,
  varying contrast; its BI-RADS is 4 or 5 (the label);
- a **benign** breast (``--benign``) has a round, circumscribed mass in both views (BI-RADS 2 or 3);
- any breast can have **distractors** (``--distractors``): lookalikes of the malignant lesions (overlapping tissue
  summing into a pseudo-mass, or a cluster of dust-like specks) that appear in *one* view only, as summation
  artefacts do in real mammography. A single view therefore shows a suspicious blob in malignant breasts and in
  many normal ones; only a lesion found in both views at a consistent depth means cancer, so a model combining the
  CC and MLO of a breast can beat one that reads views alone.

Every exam draws from its own generator seeded with ``(seed, index)``, so an exam does not change when ``--n`` does.
The split column is drawn by patient with :func:`medssl.data.splits.split_by_patient` (``--test`` share).
"""

from __future__ import annotations

import argparse
import csv
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.sr.codedict import codes
from scipy.ndimage import gaussian_filter

from medssl.data.synth.dicom_writer import new_uid, write_planar_image

__all__ = [
    "LAYOUT",
    "HELP",
    "BREAST_LEVEL_FILE",
    "FINDING_FILE",
    "BREAST_LEVEL_COLUMNS",
    "FINDING_COLUMNS",
    "DENSITY_GLANDULAR_FRACTION",
    "Lesion",
    "BreastPlan",
    "plan_breast",
    "breast_outline",
    "render_view",
    "add_arguments",
    "generate",
]

LAYOUT = "mammo"
HELP = "screening mammograms (MG DICOM, four views) in the VinDr-Mammo layout, with a two-view lesion signal"
BREAST_LEVEL_FILE = "breast-level_annotations.csv"
FINDING_FILE = "finding_annotations.csv"
BREAST_LEVEL_COLUMNS = (
    "study_id",
    "series_id",
    "image_id",
    "laterality",
    "view_position",
    "height",
    "width",
    "breast_birads",
    "breast_density",
    "split",
)
FINDING_COLUMNS = BREAST_LEVEL_COLUMNS[:-1] + (
    "finding_categories",
    "finding_birads",
    "xmin",
    "ymin",
    "xmax",
    "ymax",
    "split",
)
DENSITY_GLANDULAR_FRACTION = {"A": 0.1, "B": 0.3, "C": 0.55, "D": 0.8}
_VIEWS = ("CC", "MLO")
_VIEW_CODES = {"CC": codes.cid4014.CranioCaudal, "MLO": codes.cid4014.MedioLateralObliqueProjection}
_ORIENTATION = {("L", "CC"): ["A", "R"], ("R", "CC"): ["P", "L"], ("L", "MLO"): ["A", "FR"], ("R", "MLO"): ["P", "FL"]}
_MAX_STORED = 4095  # 12 bits
_DETECTOR_HEIGHT_MM = 240.0


@dataclass
class Lesion:
    """One lesion or distractor in canonical coordinates (chest wall at x = 0).

    Attributes:
        kind: ``spiculated``, ``round`` or ``calcifications``.
        depth: position along the nipple (0) - chest wall (1) axis, as a fraction of the breast depth.
        lateral: position across the breast in the CC view, -1 (top edge) to 1 (bottom edge).
        superior: the extra term of its height in the MLO view, -1 to 1.
        radius: size in pixels (mass radius, or calcification cluster radius).
        contrast: added brightness on the display scale (0 to 1).
        views: the views it appears in.
        seed: seed of its shape (spicules, specks), the same in every view.
    """

    kind: str
    depth: float
    lateral: float
    superior: float
    radius: float
    contrast: float
    views: tuple[str, ...]
    seed: int


@dataclass
class BreastPlan:
    """What one breast holds: outcome, BI-RADS, lesions and distractors."""

    outcome: str  # normal, benign or malignant
    birads: int
    lesions: list[Lesion] = field(default_factory=list)

    @property
    def malignant(self) -> bool:
        """Whether the breast has a malignant lesion."""
        return self.outcome == "malignant"


def _lesion(
    rng: np.random.Generator,
    kind: str,
    views: tuple[str, ...],
    height: int,
    contrast: float,
    lesion_scale: float = 1.0,
) -> Lesion:
    scale = height / 256.0 * lesion_scale
    radius = (rng.uniform(4.0, 7.5) if kind != "calcifications" else rng.uniform(3.5, 6.0)) * scale
    return Lesion(
        kind=kind,
        depth=float(rng.uniform(0.25, 0.7)),
        lateral=float(rng.uniform(-1.0, 1.0)),
        superior=float(rng.uniform(-1.0, 1.0)),
        radius=float(radius),
        contrast=float(contrast * rng.uniform(0.7, 1.3)),
        views=views,
        seed=int(rng.integers(0, 2**31 - 1)),
    )


def plan_breast(
    rng: np.random.Generator,
    *,
    malignant: float,
    benign: float,
    distractors: float,
    contrast: float,
    height: int,
    lesion_scale: float = 1.0,
) -> BreastPlan:
    """Draw what a breast holds.

    Args:
        rng: the exam's generator.
        malignant: probability of a malignant lesion (spiculated mass or calcifications, both views).
        benign: probability of a round benign mass (both views) when not malignant.
        distractors: probability of a one-view lookalike (a second one with half that probability).
        contrast: mean lesion contrast on the display scale.
        height: image rows (lesion sizes scale with it).
        lesion_scale: factor on the radii of lesions and distractors (1: radius 1.5-3% of the image height), so
            that small images (64x48) can keep lesions several pixels across.

    Returns:
        The plan: outcome, BI-RADS (malignant 4-5, benign 2-3, normal 1-2) and lesions.
    """
    draw = rng.uniform()
    if draw < malignant:
        kind = "spiculated" if rng.uniform() < 0.6 else "calcifications"
        plan = BreastPlan("malignant", int(rng.choice([4, 5], p=[0.6, 0.4])))
        plan.lesions.append(_lesion(rng, kind, _VIEWS, height, contrast, lesion_scale))
    elif draw < malignant + benign * (1.0 - malignant):
        plan = BreastPlan("benign", int(rng.choice([2, 3])))
        plan.lesions.append(_lesion(rng, "round", _VIEWS, height, contrast, lesion_scale))
    else:
        plan = BreastPlan("normal", int(rng.choice([1, 2], p=[0.8, 0.2])))
    for probability in (distractors, distractors / 2):
        if rng.uniform() < probability:
            kind = "spiculated" if rng.uniform() < 0.6 else "calcifications"
            view = str(rng.choice(_VIEWS))
            plan.lesions.append(_lesion(rng, kind, (view,), height, contrast, lesion_scale))
    return plan


def breast_outline(rng: np.random.Generator, height: int, width: int, view: str, size: float) -> dict[str, float]:
    """Outline parameters of one view of a breast (canonical: chest wall at column 0).

    Args:
        rng: generator.
        height: rows.
        width: columns.
        view: ``CC`` or ``MLO``.
        size: the breast's size factor (shared by its two views), about 0.8 to 1.1.

    Returns:
        ``depth`` (semi-axis along x), ``half_height`` (semi-axis along y), ``centre`` (row of the axis),
        ``exponent`` (superellipse), and for MLO ``pectoral_width``/``pectoral_height`` of the muscle wedge.
    """
    if view == "CC":
        outline = {
            "depth": width * min(0.92, size * rng.uniform(0.62, 0.74)),
            "half_height": height * min(0.47, size * rng.uniform(0.33, 0.40)),
            "centre": height * rng.uniform(0.47, 0.53),
            "exponent": rng.uniform(1.9, 2.4),
        }
    else:
        outline = {
            "depth": width * min(0.94, size * rng.uniform(0.68, 0.80)),
            "half_height": height * min(0.5, size * rng.uniform(0.38, 0.45)),
            "centre": height * rng.uniform(0.52, 0.60),
            "exponent": rng.uniform(1.8, 2.2),
            "pectoral_width": width * rng.uniform(0.28, 0.42),
            "pectoral_height": height * rng.uniform(0.45, 0.65),
        }
    return {k: float(v) for k, v in outline.items()}


def _lesion_centre(lesion: Lesion, view: str, outline: dict[str, float]) -> tuple[float, float]:
    """Row and column of a lesion in a view: the same depth fraction in CC and MLO, a related height."""
    depth, half, centre, p = outline["depth"], outline["half_height"], outline["centre"], outline["exponent"]
    x = depth * (1.0 - lesion.depth)
    local_half = half * (1.0 - (x / depth) ** p) ** (1.0 / p)
    across = lesion.lateral if view == "CC" else float(np.clip(0.6 * lesion.lateral + 0.4 * lesion.superior, -1, 1))
    return centre + across * 0.6 * local_half, x


def _draw_lesion(rows: np.ndarray, cols: np.ndarray, lesion: Lesion, centre: tuple[float, float]) -> np.ndarray:
    shape_rng = np.random.default_rng(lesion.seed)
    dy, dx = rows - centre[0], cols - centre[1]
    distance = np.hypot(dy, dx)
    r, c = lesion.radius, lesion.contrast
    if lesion.kind == "round":
        return c / (1.0 + np.exp(-(r - distance) / 0.7))
    if lesion.kind == "spiculated":
        core = c * np.clip(1.0 - (distance / r) ** 2, 0.0, None) ** 0.8
        angle = np.arctan2(dy, dx)
        spicules = np.zeros_like(distance)
        for theta in shape_rng.uniform(0, 2 * np.pi, size=shape_rng.integers(7, 12)):
            length = r * shape_rng.uniform(1.6, 2.6)
            along = distance * np.cos(angle - theta)
            across = np.abs(distance * np.sin(angle - theta))
            on = (along > 0.5 * r) & (along < length)
            spicules = np.maximum(spicules, on * np.exp(-(across**2) / 0.8) * (1 - along / length) * 0.7 * c)
        return np.maximum(core, spicules)
    # calcifications: a cluster of bright specks
    out = np.zeros_like(distance)
    for _ in range(int(shape_rng.integers(6, 13))):
        oy, ox = shape_rng.normal(0.0, r / 2.0, size=2)
        speck = np.exp(-((dy - oy) ** 2 + (dx - ox) ** 2) / (2 * 0.55**2))
        out = np.maximum(out, speck * c * shape_rng.uniform(1.8, 2.8))
    return out


def render_view(
    rng: np.random.Generator,
    height: int,
    width: int,
    view: str,
    outline: dict[str, float],
    density: str,
    lesions: list[Lesion],
    noise: float = 0.015,
) -> tuple[np.ndarray, list[tuple[Lesion, tuple[int, int, int, int]]]]:
    """Draw one view in canonical orientation (chest wall on the left), display scale [0, 1], background 0.

    Args:
        rng: generator (texture and noise).
        height: rows.
        width: columns.
        view: ``CC`` or ``MLO``.
        outline: from :func:`breast_outline`.
        density: ``A`` to ``D``.
        lesions: the breast's lesions (those listing this view are drawn).
        noise: quantum noise standard deviation.

    Returns:
        ``(image, boxes)``: float32 ``(height, width)`` and, per drawn lesion, ``(xmin, ymin, xmax, ymax)``.
    """
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    depth, half, centre, p = outline["depth"], outline["half_height"], outline["centre"], outline["exponent"]
    level = (cols / depth) ** p + (np.abs(rows - centre) / half) ** p
    breast = level <= 1.0
    muscle = np.zeros_like(level)
    if view == "MLO":
        wedge = 1.0 - cols / outline["pectoral_width"] - rows / outline["pectoral_height"]
        muscle = 1.0 / (1.0 + np.exp(-wedge * 25.0))
        # the upper edge runs from the top of the image (the axilla) down to the breast's widest point
        top_width = 1.25 * outline["pectoral_width"]
        bottom_row = centre - 0.15 * half
        edge = top_width + (depth * 0.98 - top_width) * np.clip(rows / bottom_row, 0.0, 1.0) ** 1.5
        breast |= (rows < bottom_row) & (cols <= edge)
        breast |= wedge > 0
    fraction = DENSITY_GLANDULAR_FRACTION[density]
    coarse = gaussian_filter(rng.normal(size=(height, width)), sigma=max(2.0, height / 32.0))
    strands = gaussian_filter(
        rng.normal(size=(height, width)), sigma=(max(1.0, height / 200.0), max(1.5, height / 80.0))
    )
    field = coarse / (coarse.std() + 1e-9) + 0.6 * strands / (strands.std() + 1e-9)
    field = (field - field.mean()) / (field.std() + 1e-9)
    centrality = np.exp(-(((cols - 0.4 * depth) / (0.6 * depth)) ** 2 + ((rows - centre) / (0.9 * half)) ** 2))
    field = field + 1.2 * centrality
    inside = field[breast]
    cut = np.quantile(inside, 1.0 - fraction) if inside.size else 0.0
    glandular = 1.0 / (1.0 + np.exp(-(field - cut) / 0.25))
    fine = gaussian_filter(rng.normal(size=(height, width)), sigma=1.0)
    image = 0.30 + 0.20 * glandular + 0.04 * fine / (fine.std() + 1e-9)
    image = image * (0.8 + 0.2 * (1.0 - np.clip(level, 0, 1) ** 4))  # thinner tissue towards the skin
    image += 0.07 * ((level > 0.93) & (level <= 1.0))  # skin line
    image = np.maximum(image, 0.70 * muscle + 0.05 * fine / (fine.std() + 1e-9) * muscle)
    boxes = []
    for lesion in lesions:
        if view not in lesion.views:
            continue
        where = _lesion_centre(lesion, view, outline)
        reach = int(np.ceil(lesion.radius * 3.0)) + 2  # spicules end within 2.6 radii, specks within 2 or so
        top, left = max(0, int(where[0]) - reach), max(0, int(where[1]) - reach)
        patch = (slice(top, min(height, int(where[0]) + reach + 1)), slice(left, min(width, int(where[1]) + reach + 1)))
        image[patch] += _draw_lesion(rows[patch], cols[patch], lesion, where) * breast[patch]
        extent = lesion.radius * (2.6 if lesion.kind == "spiculated" else 1.6)
        box = (
            int(max(0, np.floor(where[1] - extent))),
            int(max(0, np.floor(where[0] - extent))),
            int(min(width - 1, np.ceil(where[1] + extent))),
            int(min(height - 1, np.ceil(where[0] + extent))),
        )
        boxes.append((lesion, box))
    image = image + rng.normal(0.0, noise, size=image.shape)
    image = np.where(breast, np.clip(image, 0.02, 1.0), 0.0)
    return image.astype(np.float32), boxes


def _hex_id(rng: np.random.Generator) -> str:
    return "".join(f"{int(v):08x}" for v in rng.integers(0, 2**32, size=4))


def _view_code(view: str, modifier=None) -> Sequence:
    code = _VIEW_CODES[view]
    item = Dataset()
    item.CodeValue = code.value
    item.CodingSchemeDesignator = code.scheme_designator
    item.CodeMeaning = code.meaning
    modifiers = []
    if modifier is not None:
        entry = Dataset()
        entry.CodeValue = modifier.value
        entry.CodingSchemeDesignator = modifier.scheme_designator
        entry.CodeMeaning = modifier.meaning
        modifiers.append(entry)
    item.ViewModifierCodeSequence = Sequence(modifiers)
    return Sequence([item])


def _stored(image: np.ndarray, rng: np.random.Generator, monochrome1: bool) -> tuple[np.ndarray, float, float]:
    """Display values to 12-bit stored values and the window that displays them back (LINEAR VOI)."""
    offset = float(rng.uniform(80, 300))
    span = float(rng.uniform(2900, 3600))
    stored = np.where(image > 0, np.round(offset + image * span), 0.0)
    centre, width = offset + span / 2 + 0.5, span + 1.0  # LINEAR's -0.5 / -1 (PS3.3 C.11.2.1.2.1) undone
    if monochrome1:
        stored = _MAX_STORED - stored
        centre = _MAX_STORED - centre + 1.0
    return np.clip(stored, 0, _MAX_STORED).astype(np.uint16), centre, width


def _count(n: int, fraction: float, what: str) -> int:
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"{what} must be a fraction in [0, 1], got {fraction}")
    return int(round(n * fraction))


def _parse_size(size: Any) -> tuple[int, int]:
    if isinstance(size, str):
        parts = size.lower().replace(",", "x").split("x")
        values = [int(p) for p in parts if p.strip()]
    elif isinstance(size, int):
        values = [size, int(round(size * 0.75))]
    else:
        values = [int(v) for v in size]
    if len(values) != 2 or min(values) < 32:
        raise ValueError(f"size must be ROWSxCOLUMNS with both at least 32, got {size!r}")
    return values[0], values[1]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``medssl synth mammo``."""
    parser.add_argument("--size", default="256x192", help="stored image size ROWSxCOLUMNS (default 256x192)")
    parser.add_argument("--malignant", type=float, default=0.2, help="share of breasts with cancer (default 0.2)")
    parser.add_argument("--benign", type=float, default=0.15, help="share of other breasts with a benign mass")
    parser.add_argument(
        "--distractors", type=float, default=0.5, help="probability of a one-view lookalike per breast (default 0.5)"
    )
    parser.add_argument(
        "--contrast", type=float, default=0.25, help="mean lesion contrast, display scale (default 0.25)"
    )
    parser.add_argument(
        "--lesion-scale",
        type=float,
        default=1.0,
        help="factor on lesion and distractor radii (default 1: 1.5-3%% of the image height; 3-4 keeps lesions "
        "several pixels across at 64x48)",
    )
    parser.add_argument("--noise", type=float, default=0.015, help="quantum noise, display scale")
    parser.add_argument("--missing", type=float, default=0.1, help="share of exams lacking one view (default 0.1)")
    parser.add_argument(
        "--monochrome1", type=float, default=0.25, help="share of exams stored MONOCHROME1 (default 0.25)"
    )
    parser.add_argument("--test", type=float, default=0.2, help="share of patients in the 'test' split")
    parser.add_argument(
        "--processing-copies",
        type=float,
        default=0.0,
        help="share of exams with an extra FOR PROCESSING image of one view (not in the CSV files)",
    )
    parser.add_argument(
        "--spot-views",
        type=float,
        default=0.0,
        help="share of exams with an extra, later spot-compression CC (not in the CSV files)",
    )


def generate(
    out: str | os.PathLike,
    n: int,
    seed: int,
    *,
    size: Any = "256x192",
    malignant: float = 0.2,
    benign: float = 0.15,
    distractors: float = 0.5,
    contrast: float = 0.25,
    lesion_scale: float = 1.0,
    noise: float = 0.015,
    missing: float = 0.1,
    monochrome1: float = 0.25,
    test: float = 0.2,
    processing_copies: float = 0.0,
    spot_views: float = 0.0,
) -> dict[str, Any]:
    """Write ``n`` synthetic screening exams in the VinDr-Mammo layout under ``out``.

    Args:
        out: the dataset folder (created).
        n: number of exams (one per patient).
        seed: random seed; the same seed writes the same data.
        size: stored image size ``"ROWSxCOLUMNS"`` or ``(rows, columns)``.
        malignant: probability that a breast has cancer.
        benign: probability that a breast without cancer has a benign mass.
        distractors: probability of a one-view lookalike per breast.
        contrast: mean lesion contrast on the display scale.
        lesion_scale: factor on the radii of lesions and distractors (default 1: radius 1.5-3% of the height).
        noise: quantum noise on the display scale.
        missing: share of exams lacking one view.
        monochrome1: share of exams stored MONOCHROME1.
        test: share of patients in the ``test`` split.
        processing_copies: share of exams with an extra FOR PROCESSING image (not in the CSV files).
        spot_views: share of exams with an extra later spot-compression CC (not in the CSV files).

    Returns:
        A summary: counts of exams, images, missing views, MONOCHROME1 exams, malignant breasts, positive exams,
        distractors and extra images, the CSV paths and the split sizes.

    Raises:
        ValueError: bad size, fraction or lesion scale.
    """
    from medssl.data.splits import split_by_patient

    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    for name, value in (("malignant", malignant), ("benign", benign), ("distractors", distractors)):
        _count(1, value, name)
    if not lesion_scale > 0:
        raise ValueError(f"lesion_scale must be positive, got {lesion_scale}")
    height, width = _parse_size(size)
    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    plan = np.random.default_rng([seed, 0x3A330])
    missing_set = set(plan.choice(n, size=_count(n, missing, "missing"), replace=False).tolist())
    mono1_set = set(plan.choice(n, size=_count(n, monochrome1, "monochrome1"), replace=False).tolist())
    processing_set = set(plan.choice(n, size=_count(n, processing_copies, "processing_copies"), replace=False).tolist())
    spot_set = set(plan.choice(n, size=_count(n, spot_views, "spot_views"), replace=False).tolist())
    _count(1, test, "test")
    spacing = _DETECTOR_HEIGHT_MM / height

    rows: list[dict[str, Any]] = []
    findings: list[dict[str, Any]] = []
    counts = {"missing_views": 0, "distractors": 0, "malignant_breasts": 0, "positive_exams": 0, "extra_images": 0}
    studies: list[str] = []
    for index in range(n):
        rng = np.random.default_rng([seed, index])
        study_id = _hex_id(rng)
        studies.append(study_id)
        density = str(rng.choice(list("ABCD"), p=[0.1, 0.4, 0.4, 0.1]))
        size_factor = float(rng.uniform(0.85, 1.1))
        breasts = {
            side: plan_breast(
                rng,
                malignant=malignant,
                benign=benign,
                distractors=distractors,
                contrast=contrast,
                height=height,
                lesion_scale=lesion_scale,
            )
            for side in ("L", "R")
        }
        counts["malignant_breasts"] += sum(b.malignant for b in breasts.values())
        counts["positive_exams"] += int(any(b.malignant for b in breasts.values()))
        counts["distractors"] += sum(len(lesion.views) == 1 for b in breasts.values() for lesion in b.lesions)
        views = [(side, view) for side in ("L", "R") for view in _VIEWS]
        dropped = views[int(rng.integers(len(views)))] if index in missing_set else None
        counts["missing_views"] += dropped is not None
        mono1 = index in mono1_set
        study_uid = new_uid(rng)
        identity = {
            "PatientID": f"SYNMG{index:05d}",
            "PatientName": f"SYNTH^MAMMO{index:05d}",
            "PatientBirthDate": f"{int(rng.integers(1940, 1985))}0{int(rng.integers(1, 10))}15",
            "PatientSex": "F",
            "StudyInstanceUID": study_uid,
            "StudyDate": f"20{int(rng.integers(18, 21))}0{int(rng.integers(1, 10))}{int(rng.integers(10, 29))}",
            "StudyTime": "093000",
            "AccessionNumber": f"ACC{seed % 1000:03d}{index:06d}",
            "StudyID": f"{index + 1}",
            "StudyDescription": "MAMMOGRAPHY SCREENING BILATERAL",
            "Manufacturer": "medssl synthetic",
            "BodyPartExamined": "BREAST",
            "PositionerType": "MAMMOGRAPHIC",
            "BreastImplantPresent": "NO",
            "ImagerPixelSpacing": [f"{spacing:.4f}", f"{spacing:.4f}"],
        }
        outlines = {(s, v): breast_outline(rng, height, width, v, size_factor) for s, v in views}
        for number, (side, view) in enumerate(views, start=1):
            image, boxes = render_view(
                rng, height, width, view, outlines[(side, view)], density, breasts[side].lesions, noise
            )
            if side == "R":
                image = image[:, ::-1]
                boxes = [(lesion, (width - 1 - b[2], b[1], width - 1 - b[0], b[3])) for lesion, b in boxes]
            image_id, series_id = _hex_id(rng), _hex_id(rng)
            series_uid = new_uid(rng)
            if (side, view) == dropped:
                continue
            stored, centre, window = _stored(image, rng, mono1)
            tags = {
                **identity,
                "SeriesInstanceUID": series_uid,
                "SeriesNumber": number,
                "InstanceNumber": 1,
                "SeriesDescription": f"{side} {view}",
                "ImageType": ["ORIGINAL", "PRIMARY", ""],
                "PresentationIntentType": "FOR PRESENTATION",
                "ViewPosition": view,
                "ImageLaterality": side,
                "ViewCodeSequence": _view_code(view),
                "PatientOrientation": _ORIENTATION[(side, view)],
                "WindowCenter": f"{centre:.1f}",
                "WindowWidth": f"{window:.1f}",
                "VOILUTFunction": "LINEAR",
            }
            write_planar_image(
                stored,
                out / "images" / study_id / f"{image_id}.dicom",
                tags=tags,
                modality="MG",
                photometric="MONOCHROME1" if mono1 else "MONOCHROME2",
                bits_stored=12,
                rng=rng,
            )
            row = {
                "study_id": study_id,
                "series_id": series_id,
                "image_id": image_id,
                "laterality": side,
                "view_position": view,
                "height": height,
                "width": width,
                "breast_birads": f"BI-RADS {breasts[side].birads}",
                "breast_density": f"DENSITY {density}",
            }
            rows.append(row)
            annotated = [(lesion, box) for lesion, box in boxes if len(lesion.views) == 2 and breasts[side].birads >= 3]
            for lesion, box in annotated or [(None, None)]:
                category = (
                    "No Finding"
                    if lesion is None
                    else "Suspicious Calcification" if lesion.kind == "calcifications" else "Mass"
                )
                findings.append(
                    {
                        **row,
                        "finding_categories": f"['{category}']",
                        "finding_birads": "" if lesion is None else f"BI-RADS {breasts[side].birads}",
                        "xmin": "" if box is None else f"{box[0]:.2f}",
                        "ymin": "" if box is None else f"{box[1]:.2f}",
                        "xmax": "" if box is None else f"{box[2]:.2f}",
                        "ymax": "" if box is None else f"{box[3]:.2f}",
                    }
                )
            extra_tags = None
            if index in processing_set and (side, view) == ("L", "CC"):
                raw = np.where(image > 0, np.round(_MAX_STORED * (1.0 - 0.8 * image)), _MAX_STORED)
                extra_tags = {
                    **{k: v for k, v in tags.items() if k not in ("WindowCenter", "WindowWidth", "VOILUTFunction")},
                    "SeriesNumber": 100 + number,
                    "PresentationIntentType": "FOR PROCESSING",
                    "SeriesDescription": f"{side} {view} RAW",
                }
                extra = (raw.astype(np.uint16), extra_tags, "MG-PROCESSING", "MONOCHROME2")
            elif index in spot_set and (side, view) == ("R", "CC"):
                spot, _ = render_view(rng, height, width, view, outlines[(side, view)], density, [], noise)
                spot_stored, spot_centre, spot_window = _stored(spot[:, ::-1], rng, mono1)
                extra_tags = {
                    **tags,
                    "SeriesNumber": 200 + number,
                    "SeriesDescription": f"{side} {view} SPOT",
                    "ViewCodeSequence": _view_code(view, codes.cid4015.SpotCompression),
                    "WindowCenter": f"{spot_centre:.1f}",
                    "WindowWidth": f"{spot_window:.1f}",
                }
                extra = (spot_stored, extra_tags, None, "MONOCHROME1" if mono1 else "MONOCHROME2")
            if extra_tags is not None:
                extra_tags["SeriesInstanceUID"] = new_uid(rng)
                pixels, extra_tags, sop_class, photometric = extra
                write_planar_image(
                    pixels,
                    out / "images" / study_id / f"{_hex_id(rng)}.dicom",
                    tags=extra_tags,
                    modality="MG",
                    photometric=photometric,
                    bits_stored=12,
                    sop_class=sop_class,
                    rng=rng,
                )
                counts["extra_images"] += 1

    patients = [{"patient_key": s, "case_key": s} for s in studies]
    if len(patients) >= 3 and test > 0:
        split = split_by_patient(patients, val_fraction=0.0, test_fraction=test, seed=seed)
        test_set = {item["case_key"] for item in split["test"]}
    else:
        test_set = set()
    for row in rows + findings:
        row["split"] = "test" if row["study_id"] in test_set else "training"
    _write_csv(out / BREAST_LEVEL_FILE, BREAST_LEVEL_COLUMNS, rows)
    _write_csv(out / FINDING_FILE, FINDING_COLUMNS, findings)
    return {
        "layout": LAYOUT,
        "format": "vindr-mammo",
        "out": str(out),
        "n_exams": n,
        "n_images": len(rows),
        "size": [height, width],
        "n_missing_views": counts["missing_views"],
        "n_monochrome1_exams": len(mono1_set),
        "n_malignant_breasts": counts["malignant_breasts"],
        "n_positive_exams": counts["positive_exams"],
        "n_distractors": counts["distractors"],
        "n_extra_images": counts["extra_images"],
        "breast_level_annotations": str(out / BREAST_LEVEL_FILE),
        "finding_annotations": str(out / FINDING_FILE),
        "splits": {"training": n - len(test_set), "test": len(test_set)},
    }


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows({c: row.get(c, "") for c in columns} for row in rows)
