"""Synthetic chest X-rays with reports, in the MIMIC-CXR-JPG layout (or CheXpert's), whose images show the findings.

``medssl synth cxr --out DIR --n N --seed S`` writes ``N`` patients, each with one to ``--max-studies`` studies, each
study with a frontal image (PA or AP) and sometimes a lateral one, in MIMIC-CXR-JPG's layout::

    DIR/files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg
    DIR/files/p10/p10000032/s50414267.txt          (the report, as in MIMIC-CXR's files/ tree)
    DIR/mimic-cxr-2.0.0-metadata.csv               (dicom_id, subject_id, study_id, ViewPosition, Rows, Columns ...)
    DIR/mimic-cxr-2.0.0-split.csv                  (dicom_id, study_id, subject_id, split: train/validate/test)
    DIR/mimic-cxr-2.0.0-chexpert.csv               (subject_id, study_id, 14 observations: 1.0/0.0/-1.0/blank)
    DIR/synthetic_ground_truth.csv                 (not in the real layout: what each study truly shows)

``--reports separate`` writes the reports under ``DIR/mimic-cxr-reports/files/...`` instead (the way MIMIC-CXR's
``mimic-cxr-reports.zip`` unpacks); ``--dicom`` adds DX/CR DICOM files ``<dicom_id>.dcm`` next to the JPGs (about a
third MONOCHROME1, all with a VOI window), ``--dicom-only`` writes them instead of the JPGs. ``--layout chexpert``
writes the same kind of images in CheXpert-v1.0-small's layout (``train.csv``/``valid.csv`` with Path, Sex, Age,
Frontal/Lateral, AP/PA and the 14 observations; ``train/patient00001/study1/view1_frontal.jpg``; no reports).

How the pairs are made. Each study's labels are drawn by :func:`medssl.data.synth.report_text.sample_findings`
(CheXpert coding: 1 positive, 0 negated, -1 uncertain, absent = not mentioned). Every positive finding gets
attributes (side, severity or degree, lobe, nodule size, device) that the image shows and the report states,
through :func:`medssl.data.synth.report_text.generate_report`'s ``attributes``; an uncertain finding is drawn
subtle (trace effusion, mild cardiomegaly ...) in half of the studies and absent in the others; negated and
unmentioned findings are absent. The label CSV holds the report's coding, so its -1 and blanks match the wording,
and ``synthetic_ground_truth.csv`` holds the truth: one row per study and mentioned or present observation with
``label`` (the report's coding), ``present`` (0/1, what the image shows) and the attributes ``side``,
``severity`` (small/moderate/large or mild/moderate/severe), ``lobe``, ``size_cm`` and ``device``.

What the images show (frontal views are displayed as usual, the patient's right on the image's left):

===========================  ===================================================================================
finding                      drawing
===========================  ===================================================================================
Cardiomegaly                 heart widened to a cardiothoracic ratio of about 0.5 / 0.56 / 0.62 (mild/mod/severe)
Enlarged Cardiomediastinum   widened upper mediastinum
Pleural Effusion             basal opacity with a meniscus blunting the costophrenic angle, one side or both,
                             height by size
Pneumothorax                 lung edge retracted from the apex and chest wall: a lucent rim without markings
                             and a thin visible pleural line
Consolidation / Pneumonia    patchy dense (consolidation) or softer (pneumonia) opacity in the named lobe
Lung Opacity                 hazy opacity in the named lobe
Atelectasis                  plate-like band at the base(s), hemidiaphragm slightly raised
Edema                        bilateral perihilar haze, denser markings, Kerley lines when moderate or severe
Lung Lesion                  a round nodule of the stated size (cm) in the named lobe
Pleural Other                apical pleural cap on the named side
Fracture                     a rib with a gap, a step and callus on the named side
Support Devices              endotracheal tube, jugular line, PICC, nasogastric tube, pacemaker with leads or
                             sternotomy wires
===========================  ===================================================================================

on a background of body, lungs with vessel markings, mediastinum, heart, aortic knob, spine, ribs, clavicles,
hemidiaphragms and gastric bubble, with per-patient habitus, per-image position, rotation, magnification (AP views
enlarge the heart), exposure (window, gamma), blur and noise. Lateral views show the heart, effusions (posterior
sulcus), lobar opacities, nodules, edema and devices, but not the side. Everything is deterministic given the seed.
"""

from __future__ import annotations

import argparse
import csv
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from medssl.data.layouts.mimic_cxr import CHEXPERT_FILE, METADATA_FILE, SPLIT_FILE
from medssl.data.reports import CHEXPERT_OBSERVATIONS
from medssl.data.synth.report_text import generate_report, sample_findings

__all__ = [
    "LAYOUT",
    "HELP",
    "LOBES",
    "DEVICES",
    "METADATA_FILE",
    "SPLIT_FILE",
    "CHEXPERT_FILE",
    "GROUND_TRUTH_FILE",
    "METADATA_COLUMNS",
    "CHEXPERT_CSV_COLUMNS",
    "GROUND_TRUTH_COLUMNS",
    "Finding",
    "Anatomy",
    "sample_study_findings",
    "render_cxr",
    "add_arguments",
    "generate",
]

LAYOUT = "cxr"
HELP = "chest X-rays (JPG, optional DX DICOM) with MIMIC-style reports, MIMIC-CXR-JPG or CheXpert layout"

GROUND_TRUTH_FILE = "synthetic_ground_truth.csv"
CHEXPERT_DIR = "CheXpert-v1.0-small"

METADATA_COLUMNS: tuple[str, ...] = (
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)
"""Columns of MIMIC-CXR-JPG's ``mimic-cxr-2.0.0-metadata.csv``, in its order."""

CHEXPERT_CSV_COLUMNS: tuple[str, ...] = (
    "No Finding",
    "Enlarged Cardiomediastinum",
    "Cardiomegaly",
    "Lung Opacity",
    "Lung Lesion",
    "Edema",
    "Consolidation",
    "Pneumonia",
    "Atelectasis",
    "Pneumothorax",
    "Pleural Effusion",
    "Pleural Other",
    "Fracture",
    "Support Devices",
)
"""The observation columns of CheXpert's ``train.csv``/``valid.csv``, in its order (MIMIC-CXR-JPG's label CSV has
the same 14 names in alphabetical order)."""

GROUND_TRUTH_COLUMNS: tuple[str, ...] = (
    "subject_id",
    "study_id",
    "observation",
    "label",
    "present",
    "side",
    "severity",
    "lobe",
    "size_cm",
    "device",
)

# Lobes: name -> (side, |X| of the centre, Y of the centre) in the frontal phantom's coordinates (see _Frame).
LOBES: dict[str, tuple[str, float, float]] = {
    "right upper lobe": ("right", 0.42, -0.30),
    "right middle lobe": ("right", 0.36, 0.18),
    "right lower lobe": ("right", 0.48, 0.36),
    "left upper lobe": ("left", 0.42, -0.30),
    "lingula": ("left", 0.52, 0.08),
    "left lower lobe": ("left", 0.50, 0.38),
}
"""Lobes a finding can be placed in (the names the report generator uses)."""

# Device -> (report keyword, sides it can be on; empty when it has no side).
DEVICES: dict[str, tuple[str, tuple[str, ...]]] = {
    "endotracheal tube": ("endotracheal", ()),
    "jugular line": ("internal jugular", ("left", "right")),
    "PICC": ("PICC", ("left", "right")),
    "nasogastric tube": ("nasogastric", ()),
    "pacemaker": ("pacemaker", ()),
    "sternotomy wires": ("sternotomy", ()),
}
"""Support devices drawn, with the word that picks the report sentence naming them."""

_SIZES = ("small", "moderate", "large")
_DEGREES = ("mild", "moderate", "severe")
_CM = 0.05  # phantom units per centimetre: the chest (about 32 cm wide) spans about 1.6 units
_PROCEDURES = {
    "PA": ("CHEST (PA AND LAT)", "postero-anterior", "Erect"),
    "AP": ("CHEST (PORTABLE AP)", "antero-posterior", "Erect"),
    "LATERAL": ("CHEST (PA AND LAT)", "lateral", "Erect"),
    "LL": ("CHEST (PA AND LAT)", "left lateral", "Erect"),
}


@dataclass
class Finding:
    """One observation of a study: the report's label and what the image shows.

    Attributes:
        observation: a CheXpert observation name.
        label: the report's coding (1, 0, -1), None when not mentioned.
        present: whether the image shows it.
        attributes: ``side``, ``sev`` (small/moderate/large), ``deg`` (mild/moderate/severe), ``lobe``, ``size``
            (cm, as text), ``keyword`` and ``device`` for support devices; the keys the report generator fills in.
    """

    observation: str
    label: int | None
    present: bool
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Anatomy:
    """A patient's habitus, shared by all of the patient's images.

    Attributes:
        width: body and lung width factor.
        height: lung height factor.
        heart: heart width factor (1 is a cardiothoracic ratio of about 0.42).
        diaphragm: height of the hemidiaphragms (added to Y).
        texture_seed: seed of the lung-marking pattern.
    """

    width: float
    height: float
    heart: float
    diaphragm: float
    texture_seed: int

    @classmethod
    def random(cls, rng: np.random.Generator) -> Anatomy:
        """Draw a habitus."""
        return cls(
            width=float(rng.uniform(0.92, 1.06)),
            height=float(rng.uniform(0.94, 1.05)),
            heart=float(rng.uniform(0.93, 1.07)),
            diaphragm=float(rng.uniform(-0.04, 0.04)),
            texture_seed=int(rng.integers(2**31)),
        )


# --------------------------------------------------------------------------------------------------------- findings


def _draw_attributes(observation: str, rng: np.random.Generator, subtle: bool) -> dict[str, str]:
    """Attributes of a present finding; ``subtle`` draws the mildest form (uncertain findings)."""
    size = "small" if subtle else str(rng.choice(_SIZES))
    degree = "mild" if subtle else str(rng.choice(_DEGREES))
    if observation in ("Cardiomegaly", "Edema"):
        return {"deg": degree}
    if observation == "Pleural Effusion":
        return {"side": str(rng.choice(("left", "right", "bilateral"), p=(0.35, 0.35, 0.3))), "sev": size}
    if observation == "Pneumothorax":
        return {"side": str(rng.choice(("left", "right"))), "sev": size}
    if observation == "Atelectasis":
        return {"side": str(rng.choice(("left", "right", "bilateral"), p=(0.4, 0.4, 0.2))), "deg": degree}
    if observation in ("Consolidation", "Pneumonia", "Lung Opacity", "Lung Lesion"):
        lobe = str(rng.choice(list(LOBES)))
        attributes = {"lobe": lobe, "side": LOBES[lobe][0]}
        if observation == "Lung Lesion":
            attributes["size"] = f"{rng.uniform(0.8, 1.3) if subtle else rng.uniform(1.0, 4.5):.1f}"
        return attributes
    if observation in ("Pleural Other", "Fracture"):
        return {"side": str(rng.choice(("left", "right")))}
    if observation == "Support Devices":
        device = str(rng.choice(list(DEVICES)))
        keyword, sides = DEVICES[device]
        attributes = {"device": device, "keyword": keyword}
        if sides:
            attributes["side"] = str(rng.choice(sides))
        if device == "endotracheal tube":
            attributes["size"] = f"{rng.uniform(2.0, 6.0):.1f}"
        return attributes
    return {}


def sample_study_findings(rng: np.random.Generator, normal_fraction: float = 0.3) -> list[Finding]:
    """Draw one study's findings: report labels (CheXpert coding) and what the image shows.

    Args:
        rng: the random generator.
        normal_fraction: share of normal studies (see :func:`medssl.data.synth.report_text.sample_findings`).

    Returns:
        One :class:`Finding` per mentioned or present observation, in :data:`CHEXPERT_OBSERVATIONS` order.
    """
    labels = sample_findings(rng, normal_fraction=normal_fraction)
    findings = []
    for observation in CHEXPERT_OBSERVATIONS:
        label = labels.get(observation)
        if label is None:
            continue
        if observation == "No Finding":
            findings.append(Finding(observation, int(label), present=bool(label == 1)))
            continue
        if label == 1:
            present, subtle = True, False
        elif label == -1:
            present, subtle = bool(rng.random() < 0.5), True
        else:
            present, subtle = False, False
        attributes = _draw_attributes(observation, rng, subtle) if (present or label == -1) else {}
        findings.append(Finding(observation, int(label), present, attributes))
    return findings


# --------------------------------------------------------------------------------------------------------- drawing


@dataclass
class _Frame:
    """Phantom coordinates of an image's pixels: X across (patient's right negative in frontal views), Y down.

    One unit is half the image height at magnification 1; the pose (shift, rotation, magnification) maps pixels to
    phantom coordinates, so the anatomy moves and scales inside the image.
    """

    X: np.ndarray
    Y: np.ndarray
    pixel: float  # size of one pixel in phantom units

    @classmethod
    def make(cls, shape: tuple[int, int], rng: np.random.Generator, magnification: float = 1.0) -> _Frame:
        rows, columns = shape
        half = rows / 2.0
        y, x = np.mgrid[0:rows, 0:columns].astype(np.float64)
        x = (x + 0.5 - columns / 2.0) / half
        y = (y + 0.5 - rows / 2.0) / half
        angle = np.deg2rad(rng.normal(0.0, 2.5))
        shift = rng.uniform(-0.06, 0.06, size=2)
        scale = rng.uniform(0.92, 1.06) * magnification
        x, y = x - shift[0], y - shift[1]
        cos, sin = np.cos(angle), np.sin(angle)
        X = (cos * x + sin * y) / scale
        Y = (-sin * x + cos * y) / scale
        return cls(X=X, Y=Y, pixel=1.0 / (half * scale))

    def soft(self, inside: np.ndarray, width: float = 1.0) -> np.ndarray:
        """A smooth 0-1 mask from a signed distance (negative inside), edges about ``width`` pixels wide."""
        return 0.5 * (1.0 - np.tanh(inside / (width * self.pixel)))

    def ellipse(self, cx: float, cy: float, ax: float, ay: float, power: float = 2.0) -> np.ndarray:
        """Signed pseudo-distance to a superellipse (negative inside)."""
        value = np.abs((self.X - cx) / ax) ** power + np.abs((self.Y - cy) / ay) ** power
        return (value ** (1.0 / power) - 1.0) * min(ax, ay)

    def segment(self, a: Sequence[float], b: Sequence[float]) -> np.ndarray:
        """Distance of every pixel to the segment from ``a`` to ``b``."""
        ax, ay = a
        dx, dy = b[0] - ax, b[1] - ay
        length2 = max(dx * dx + dy * dy, 1e-12)
        t = np.clip(((self.X - ax) * dx + (self.Y - ay) * dy) / length2, 0.0, 1.0)
        return np.hypot(self.X - ax - t * dx, self.Y - ay - t * dy)

    def polyline(self, points: Sequence[Sequence[float]]) -> np.ndarray:
        """Distance of every pixel to a polyline."""
        return np.minimum.reduce([self.segment(points[i], points[i + 1]) for i in range(len(points) - 1)])

    def line_mask(self, points: Sequence[Sequence[float]], thickness: float) -> np.ndarray:
        """A soft mask of a polyline at least about one pixel thick."""
        half = max(thickness / 2.0, 0.6 * self.pixel)
        return self.soft(self.polyline(points) - half, 0.7)


def _smooth_noise(shape: tuple[int, int], rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise scaled to unit standard deviation."""
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=max(sigma, 0.5), mode="reflect")
    return noise / (noise.std() + 1e-9)


def _side_sign(side: str) -> tuple[int, ...]:
    """Frontal X signs of a side: the patient's right is on the image's left."""
    return {"right": (-1,), "left": (1,), "bilateral": (-1, 1)}.get(side, ())


def _lung_shape(X: np.ndarray, Y: np.ndarray, s: int, cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
    """Signed pseudo-distance to a lung outline: rounded apex narrower than the base, straighter medial border."""
    u = (X - cx) / ax
    v = (Y - cy) / ay
    width = 0.5 + 0.5 * np.clip((v + 1.0) / 1.2, 0.0, 1.0) ** 0.7
    u = u / width
    u = np.where(s * u < 0, u * 1.25, u)  # medial side (towards the mediastinum) flatter
    return (np.sqrt(u**2 + v**2) - 1.0) * min(ax, ay)


def _by_name(findings: Sequence[Finding]) -> dict[str, Finding]:
    return {f.observation: f for f in findings if f.present and f.observation != "No Finding"}


def _frontal(frame: _Frame, findings: Sequence[Finding], anatomy: Anatomy, rng: np.random.Generator, ap: bool):
    """Density map of a frontal view (larger is denser)."""
    X, Y, shape = frame.X, frame.Y, frame.X.shape
    present = _by_name(findings)
    w, h = anatomy.width, anatomy.height
    density = 0.55 * frame.soft(frame.ellipse(0.0, 0.12, 0.95 * w, 1.2))  # body
    density += 0.25 * frame.soft(frame.ellipse(0.0, -1.15, 0.28, 0.35))  # neck

    # Heart and mediastinum.
    heart_factor = anatomy.heart * (1.1 if ap else 1.0)
    cardiomegaly = present.get("Cardiomegaly")
    if cardiomegaly:
        heart_factor *= {"mild": 1.26, "moderate": 1.42, "severe": 1.6}[cardiomegaly.attributes.get("deg", "moderate")]
    heart_half = 0.37 * w * heart_factor
    heart_cx = 0.13 + 0.3 * (heart_half - 0.37 * w)  # grows more to the patient's left
    heart = frame.soft(frame.ellipse(heart_cx, 0.27, heart_half, 0.27 * h * min(heart_factor, 1.25)))
    mediastinum_half = 0.13 * (1.6 if "Enlarged Cardiomediastinum" in present else 1.0)
    mediastinum = frame.soft(np.maximum(np.abs(X - 0.01) - mediastinum_half, np.abs(Y + 0.2) - 0.6))
    knob = frame.soft(
        frame.ellipse(0.13 * (1.4 if "Enlarged Cardiomediastinum" in present else 1.0), -0.32, 0.07, 0.06)
    )
    central = np.maximum.reduce([heart, mediastinum, knob])

    # Lungs: superellipses cut by the hemidiaphragm domes and the central shadow.
    lungs, lung_masks, domes = np.zeros(shape), {}, {}
    for s in (-1, 1):
        cx, cy, ax, ay = s * 0.42 * w, -0.06, 0.33 * w, 0.62 * h
        base = 0.55 + anatomy.diaphragm + (0.04 if s == 1 else 0.0)
        atelectasis = present.get("Atelectasis")
        if atelectasis and s in _side_sign(atelectasis.attributes.get("side", "")):
            base -= 0.03 * (1 + _DEGREES.index(atelectasis.attributes.get("deg", "mild")))
        t = np.clip((X - cx) / ax, -1.5, 1.5)
        dome = base - 0.16 * (1.0 - t**2)
        domes[s] = (base, cx, ax)
        inside = np.maximum(_lung_shape(X, Y, s, cx, cy, ax, ay), Y - dome)
        lung = frame.soft(inside) * (1.0 - central)
        lung_masks[s] = lung
        lungs = np.maximum(lungs, lung)

    # Vessel markings: rays from the hila plus band-pass texture, denser near the hila.
    # Vessels: an angular profile of narrow peaks around each hilum (a fixed pattern per patient), wavy with the
    # distance, fading to the periphery; evaluated by interpolation, so its cost does not grow with the vessel count.
    texture_rng = np.random.default_rng(anatomy.texture_seed)
    markings = np.zeros(shape)
    grid = np.linspace(-np.pi, np.pi, 1441)
    for s in (-1, 1):
        hx, hy = s * 0.2 * w, -0.02
        profile = np.zeros_like(grid)
        for centre in texture_rng.uniform(-1.3, 1.4, size=16):
            profile += np.exp(-(((grid - centre) / texture_rng.uniform(0.02, 0.04)) ** 2))
        radius = np.hypot(X - hx, Y - hy)
        phase = texture_rng.uniform(0, 2 * np.pi)
        angle = np.arctan2(Y - hy, s * (X - hx)) + 0.12 * np.sin(9.0 * radius + phase)
        markings += (
            0.045 * np.interp(angle, grid, profile) * np.clip(1.0 - radius / 0.75, 0.0, 1.0) * (s * (X - hx) > -0.05)
        )
    radial = np.minimum(np.hypot(X - 0.2 * np.sign(X), Y + 0.02), 1.0)
    markings += 0.025 * (1.2 - radial) * _smooth_noise(shape, rng, 1.2 / (frame.pixel * 64))
    edema = present.get("Edema")
    if edema:
        markings *= 1.0 + 0.4 * (1 + _DEGREES.index(edema.attributes.get("deg", "mild")))

    # Opacity (0-1, share of the lung's air replaced by fluid or tissue).
    fill = np.zeros(shape)
    lucent = np.zeros(shape)  # pneumothorax: air without lung
    for name, strength, radius, patchiness in (
        ("Consolidation", 0.9, 0.2, 0.35),
        ("Pneumonia", 0.65, 0.24, 0.6),
        ("Lung Opacity", 0.45, 0.26, 0.2),
    ):
        finding = present.get(name)
        if not finding:
            continue
        side, lx, ly = LOBES[finding.attributes["lobe"]]
        cx = _side_sign(side)[0] * lx * w
        blob = frame.soft(frame.ellipse(cx, ly * h, radius * w, radius * 0.8 * h), 4.0)
        patches = np.clip(0.6 + patchiness * _smooth_noise(shape, rng, 0.04 / frame.pixel), 0.0, 1.0)
        fill = np.maximum(fill, strength * blob * patches)
    lesion = present.get("Lung Lesion")
    if lesion:
        side, lx, ly = LOBES[lesion.attributes["lobe"]]
        radius = float(lesion.attributes.get("size", "2.0")) * _CM / 2.0
        cx = _side_sign(side)[0] * (lx + rng.uniform(-0.06, 0.06)) * w
        nodule = frame.soft(frame.ellipse(cx, ly * h + rng.uniform(-0.06, 0.06), radius, radius * 0.95))
        fill = np.maximum(fill, 1.1 * nodule)
    if edema:
        amplitude = 0.2 + 0.14 * _DEGREES.index(edema.attributes.get("deg", "mild"))
        for s in (-1, 1):
            haze = np.exp(-(((X - s * 0.22 * w) / 0.3) ** 2 + ((Y - 0.02) / 0.35) ** 2))
            fill = np.maximum(fill, amplitude * haze)
        if edema.attributes.get("deg") in ("moderate", "severe"):
            for s in (-1, 1):
                for k in range(5):
                    y0 = 0.2 + 0.05 * k
                    x0 = s * (0.72 * w - 0.01 * k)
                    fill = np.maximum(fill, 0.5 * frame.line_mask([(x0, y0), (x0 - s * 0.08, y0)], 0.008))
    if atelectasis := present.get("Atelectasis"):
        for s in _side_sign(atelectasis.attributes.get("side", "")):
            base, cx, _ = domes[s]
            y0 = base - 0.22
            band = frame.line_mask([(cx - s * 0.18, y0 + 0.02), (cx + s * 0.2, y0 - 0.03)], 0.03)
            fill = np.maximum(fill, 0.85 * band)
    if effusion := present.get("Pleural Effusion"):
        height = {"small": 0.14, "moderate": 0.25, "large": 0.42}[effusion.attributes.get("sev", "small")]
        for s in _side_sign(effusion.attributes.get("side", "")):
            base, cx, ax = domes[s]
            lateral = np.clip(s * (X - cx) / ax, 0.0, 1.2)
            level = base - 0.16 - height * h + 0.06 - 0.25 * lateral**2 * (0.4 + height)
            fluid = frame.soft(level - Y, 1.5) * (s * X > 0.05)
            fill = np.maximum(fill, fluid)
    if other := present.get("Pleural Other"):
        for s in _side_sign(other.attributes.get("side", "")):
            cx, cy, ax, ay = s * 0.42 * w, -0.06, 0.33 * w, 0.62 * h
            cap = frame.soft(-_lung_shape(X, Y, s, cx, cy + 0.05, ax - 0.04, ay - 0.05)) * (Y < -0.3)
            fill = np.maximum(fill, 0.8 * cap * lung_masks[s])
    if pneumothorax := present.get("Pneumothorax"):
        factor = {"small": 0.9, "moderate": 0.8, "large": 0.66}[pneumothorax.attributes.get("sev", "small")]
        for s in _side_sign(pneumothorax.attributes.get("side", "")):
            # The lung shrinks towards its medial base: a rim of air along the apex and the chest wall.
            ox, oy = s * 0.2 * w, 0.45
            cx, cy, ax, ay = s * 0.42 * w, -0.06, 0.33 * w, 0.62 * h
            sx, sy = ox + (X - ox) / factor, oy + (Y - oy) / factor
            shrunk = frame.soft(_lung_shape(sx, sy, s, cx, cy, ax, ay) * factor)
            rim = lung_masks[s] * (1.0 - shrunk)
            lucent = np.maximum(lucent, rim)
            edge = 4.0 * shrunk * (1.0 - shrunk) * lung_masks[s]
            fill = np.maximum(fill, 0.9 * edge)
            markings = markings * (1.0 - rim)

    density += 0.12 * central
    density += -0.38 * lungs * (1.0 - fill) + 0.05 * fill * lungs + markings * lungs * (1.0 - fill)
    density -= 0.06 * lucent

    # Bones: spine, ribs, clavicles.
    density += (
        0.07 * frame.soft(np.maximum(np.abs(X) - 0.07, np.abs(Y) - 1.3)) * (0.75 + 0.25 * np.cos(np.pi * Y / 0.09) ** 2)
    )
    # Ribs: ten parallel arcs per side (one periodic band pattern), a broken sixth rib with a step and callus.
    fracture = present.get("Fracture")
    ribs = np.zeros(shape)
    spacing = 0.13 * h
    cage = frame.soft(frame.ellipse(0.0, 0.0, 0.82 * w, 0.95 * h))
    for s in (-1, 1):
        t = np.clip(s * X - 0.06, 0.0, None) / w
        offset = Y - (-0.74 * h - 0.12 * t + 0.55 * t**2)
        index = np.round(offset / spacing)
        if fracture is not None and s in _side_sign(fracture.attributes.get("side", "")):
            offset = offset - 0.025 * ((t > 0.55) & (index == 5))
            index = np.round(offset / spacing)
        band = frame.soft(np.abs(offset - index * spacing) - 0.018, 0.8) * ((index >= 0) & (index <= 9))
        if fracture is not None and s in _side_sign(fracture.attributes.get("side", "")):
            band = band * (1.0 - frame.soft(np.abs(t - 0.55) - 0.012) * (index == 5))
            y0 = -0.74 * h + 5 * spacing - 0.12 * 0.55 + 0.55 * 0.55**2
            band = np.maximum(band, frame.soft(frame.ellipse(s * (0.55 * w + 0.06), y0 + 0.01, 0.03, 0.025)))
        ribs = np.maximum(ribs, band * cage * (s * X > 0.0))
        clavicle = frame.line_mask([(s * 0.08, -0.78), (s * 0.62 * w, -0.9)], 0.05)
        ribs = np.maximum(ribs, 1.3 * clavicle)
    density += 0.05 * ribs

    # Abdomen below the domes and the gastric bubble.
    density -= 0.12 * frame.soft(frame.ellipse(0.45 * w, 0.7 + anatomy.diaphragm, 0.1, 0.06))

    devices = present.get("Support Devices")
    if devices:
        density += 0.6 * _device_mask(frame, devices.attributes, frontal=True)
    return density


def _device_mask(frame: _Frame, attributes: Mapping[str, str], frontal: bool) -> np.ndarray:
    """Radio-opaque lines and boxes of a support device."""
    device = attributes.get("device", "endotracheal tube")
    s = _side_sign(attributes.get("side", "right"))[0] if attributes.get("side") else 1
    line = 0.012
    if not frontal:  # lateral view: everything projects onto the anterior-posterior plane
        s_x = {"pacemaker": -0.55, "sternotomy wires": -0.62}.get(device, 0.02)
        if device == "endotracheal tube":
            carina = -0.1 - float(attributes.get("size", "4")) * _CM
            return frame.line_mask([(0.05, -1.2), (0.05, carina)], 0.02)
        if device == "nasogastric tube":
            return frame.line_mask([(0.15, -1.2), (0.18, 0.2), (-0.1, 0.75)], line)
        if device == "pacemaker":
            box = frame.soft(frame.ellipse(-0.55, -0.62, 0.07, 0.09, power=4.0))
            return np.maximum(box, frame.line_mask([(-0.5, -0.6), (-0.15, -0.3), (-0.25, 0.3)], line))
        if device == "sternotomy wires":
            return np.maximum.reduce(
                [frame.line_mask([(s_x, y), (s_x + 0.03, y)], 0.02) for y in np.linspace(-0.5, 0.2, 6)]
            )
        return frame.line_mask([(-0.1, -1.1), (-0.05, -0.6), (0.0, -0.2)], line)
    if device == "endotracheal tube":
        carina = -0.1 - float(attributes.get("size", "4")) * _CM
        return frame.line_mask([(0.0, -1.3), (0.0, carina)], 0.022)
    if device == "jugular line":
        return frame.line_mask([(s * 0.22, -1.2), (s * 0.12, -0.75), (-0.03, -0.5), (-0.04, -0.2)], line)
    if device == "PICC":
        return frame.line_mask(
            [(s * 1.2, -0.6), (s * 0.6, -0.72), (s * 0.2, -0.62), (-0.03, -0.45), (-0.04, -0.2)], line
        )
    if device == "nasogastric tube":
        return frame.line_mask([(-0.02, -1.3), (0.02, 0.3), (0.3, 0.66), (0.45, 0.72)], line)
    if device == "pacemaker":
        box = frame.soft(frame.ellipse(0.55, -0.7, 0.1, 0.07, power=4.0))
        leads = frame.line_mask([(0.5, -0.68), (0.1, -0.55), (-0.04, -0.2), (0.05, 0.3)], line)
        return np.maximum(box, leads)
    if device == "sternotomy wires":
        loops = [frame.soft(frame.ellipse(0.0, y, 0.03, 0.012) + 0.004) for y in np.linspace(-0.55, 0.15, 6)]
        return np.maximum.reduce(loops)
    return np.zeros_like(frame.X)


def _lateral(frame: _Frame, findings: Sequence[Finding], anatomy: Anatomy, rng: np.random.Generator):
    """Density map of a lateral view (anterior on the image's left, the spine on its right)."""
    X, Y, shape = frame.X, frame.Y, frame.X.shape
    present = _by_name(findings)
    h = anatomy.height
    density = 0.55 * frame.soft(frame.ellipse(0.0, 0.1, 0.85, 1.2))
    heart_factor = anatomy.heart
    if cardiomegaly := present.get("Cardiomegaly"):
        heart_factor *= {"mild": 1.2, "moderate": 1.35, "severe": 1.5}[cardiomegaly.attributes.get("deg", "moderate")]
    heart = frame.soft(frame.ellipse(-0.25 + 0.12 * (heart_factor - 1), 0.28, 0.3 * heart_factor, 0.26 * h))
    base = 0.42 + anatomy.diaphragm
    dome = base + 0.22 * np.clip(X / 0.6, 0.0, 1.2) ** 2 + 0.06 * np.clip(-X / 0.6, 0.0, 1.2) ** 2
    lung = frame.soft(np.maximum(frame.ellipse(0.06, -0.08, 0.6, 0.64 * h, power=2.2), Y - dome)) * (1.0 - heart)
    texture = 0.02 * _smooth_noise(shape, rng, 0.03 / frame.pixel)

    fill = np.zeros(shape)
    lateral_place = {"upper": (0.0, -0.35), "middle": (-0.32, 0.1), "lingula": (-0.32, 0.1), "lower": (0.35, 0.3)}
    for name, strength in (("Consolidation", 0.85), ("Pneumonia", 0.6), ("Lung Opacity", 0.4)):
        if finding := present.get(name):
            key = next(k for k in lateral_place if k in finding.attributes["lobe"])
            cx, cy = lateral_place[key]
            blob = frame.soft(frame.ellipse(cx, cy, 0.22, 0.18), 4.0)
            fill = np.maximum(
                fill, strength * blob * np.clip(0.6 + 0.35 * _smooth_noise(shape, rng, 0.04 / frame.pixel), 0, 1)
            )
    if lesion := present.get("Lung Lesion"):
        key = next(k for k in lateral_place if k in lesion.attributes["lobe"])
        cx, cy = lateral_place[key]
        radius = float(lesion.attributes.get("size", "2.0")) * _CM / 2.0
        fill = np.maximum(fill, 1.1 * frame.soft(frame.ellipse(cx, cy, radius, radius)))
    if edema := present.get("Edema"):
        amplitude = 0.2 + 0.14 * _DEGREES.index(edema.attributes.get("deg", "mild"))
        fill = np.maximum(fill, amplitude * np.exp(-(((X - 0.05) / 0.35) ** 2 + ((Y - 0.0) / 0.35) ** 2)))
    if effusion := present.get("Pleural Effusion"):
        height = {"small": 0.08, "moderate": 0.18, "large": 0.34}[effusion.attributes.get("sev", "small")]
        level = dome - height * (0.3 + 0.9 * np.clip((X + 0.1) / 0.7, 0.0, 1.0)) - 0.02
        fill = np.maximum(fill, frame.soft(level - Y, 1.5) * (X > -0.1))
    if "Atelectasis" in present:
        fill = np.maximum(fill, 0.8 * frame.line_mask([(0.1, base - 0.05), (0.45, base - 0.02)], 0.025))

    density += 0.12 * heart
    density += -0.38 * lung * (1.0 - fill) + 0.05 * fill * lung + texture * lung * (1.0 - fill)
    spine = frame.soft(np.maximum(np.abs(X - 0.68) - 0.09, np.abs(Y) - 1.3))
    density += 0.16 * spine * (0.6 + 0.4 * (np.cos(np.pi * Y / 0.1) ** 2 > 0.15))
    density += 0.08 * frame.soft(np.maximum(np.abs(X + 0.66) - 0.025, np.abs(Y + 0.1) - 0.55))  # sternum
    density -= 0.1 * frame.soft(np.maximum(np.abs(X - 0.08) - 0.035, np.abs(Y + 0.6) - 0.5))  # trachea
    if devices := present.get("Support Devices"):
        density += 0.6 * _device_mask(frame, devices.attributes, frontal=False)
    return density


def render_cxr(
    findings: Sequence[Finding],
    view: str,
    shape: tuple[int, int],
    rng: np.random.Generator,
    anatomy: Anatomy | None = None,
) -> np.ndarray:
    """Draw one chest X-ray showing the present findings.

    Args:
        findings: the study's findings (only ``present`` ones are drawn, with their attributes).
        view: ``PA``, ``AP`` (frontal; AP magnifies the heart) or ``LATERAL``/``LL``.
        shape: ``(rows, columns)``.
        rng: the random generator (pose, exposure, noise, patchy textures).
        anatomy: the patient's habitus (drawn from ``rng`` when None).

    Returns:
        A ``(rows, columns)`` float32 image in [0, 1], bright where dense (bone, fluid), as displayed.
    """
    anatomy = anatomy or Anatomy.random(rng)
    frontal = view.upper() in ("PA", "AP")
    frame = _Frame.make(shape, rng, magnification=1.0)
    if frontal:
        density = _frontal(frame, findings, anatomy, rng, ap=view.upper() == "AP")
    else:
        density = _lateral(frame, findings, anatomy, rng)
    # Exposure: a window on the density with a gamma, then detector blur and noise.
    low, high = rng.uniform(-0.03, 0.07), rng.uniform(0.78, 0.95)
    image = np.clip((density - low) / (high - low), 0.0, 1.0) ** rng.uniform(0.8, 1.25)
    image = ndimage.gaussian_filter(image, sigma=rng.uniform(0.3, 0.7))
    image = image + rng.normal(0.0, rng.uniform(0.008, 0.025), size=image.shape)
    return np.clip(image, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------------------- writing


def _write_jpg(image: np.ndarray, path: Path, quality: int) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(image * 255.0).astype(np.uint8), mode="L").save(path, format="JPEG", quality=quality)


def _write_png(image: np.ndarray, path: Path) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(image * 255.0).astype(np.uint8), mode="L").save(path, format="PNG")


def _write_dicom(
    image: np.ndarray,
    path: Path,
    *,
    view: str,
    subject_id: int,
    study_uid: str,
    series_uid: str,
    study_date: str,
    study_time: str,
    monochrome1: bool,
    modality: str,
    rng: np.random.Generator,
) -> None:
    """Write a DX/CR file: 12-bit stored values with a VOI window, inverted for MONOCHROME1."""
    from medssl.data.synth.dicom_writer import write_planar_image

    low, high = int(rng.integers(200, 600)), int(rng.integers(3300, 3900))
    stored = np.round(low + image * (high - low)).astype(np.uint16)
    photometric = "MONOCHROME1" if monochrome1 else "MONOCHROME2"
    if monochrome1:
        stored = (4095 - stored).astype(np.uint16)
    rows, columns = image.shape
    spacing = f"{430.0 / rows:.4f}"
    frontal = view in ("PA", "AP")
    tags = {
        "PatientID": str(subject_id),
        "PatientName": f"Synthetic^{subject_id}",
        "PatientBirthDate": "",
        "PatientSex": "",
        "StudyInstanceUID": study_uid,
        "SeriesInstanceUID": series_uid,
        "StudyID": "1",
        "AccessionNumber": "",
        "StudyDate": study_date,
        "StudyTime": study_time,
        "SeriesNumber": 1,
        "InstanceNumber": 1,
        "BodyPartExamined": "CHEST",
        "ViewPosition": view,
        "PatientOrientation": ["L", "F"] if frontal and view == "PA" else ["R", "F"] if frontal else ["A", "F"],
        "ImagerPixelSpacing": [spacing, spacing],
        "PixelSpacing": [spacing, spacing],
        "WindowCenter": f"{(4095 - (low + high) / 2) if monochrome1 else (low + high) / 2:.0f}",
        "WindowWidth": f"{high - low:.0f}",
        "RescaleSlope": "1",
        "RescaleIntercept": "0",
        "PresentationLUTShape": "INVERSE" if monochrome1 else "IDENTITY",
        "StudyDescription": _PROCEDURES.get(view, _PROCEDURES["PA"])[0],
        "SeriesDescription": view,
        "ImageType": ["ORIGINAL", "PRIMARY"],
        "Manufacturer": "medssl synthetic",
    }
    if modality == "DX":
        tags["PresentationIntentType"] = "FOR PRESENTATION"
    write_planar_image(stored, path, tags=tags, modality=modality, photometric=photometric, bits_stored=12, rng=rng)


def _dicom_id(rng: np.random.Generator) -> str:
    """A MIMIC-CXR style image id: five groups of eight hexadecimal digits."""
    return "-".join(f"{int(v):08x}" for v in rng.integers(0, 2**32, size=5))


def _csv_value(label: int | None) -> str:
    return "" if label is None else f"{float(label):.1f}"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``medssl synth cxr``."""
    parser.add_argument(
        "--layout",
        choices=("mimic", "chexpert"),
        default="mimic",
        help="MIMIC-CXR-JPG (default; with reports) or CheXpert-v1.0-small (train.csv/valid.csv, no reports)",
    )
    parser.add_argument("--size", type=int, default=128, help="image height in pixels (default 128)")
    parser.add_argument("--jpeg-quality", type=int, default=95, help="JPEG quality (default 95, as MIMIC-CXR-JPG)")
    parser.add_argument("--max-studies", type=int, default=3, help="most studies per patient (default 3)")
    parser.add_argument(
        "--lateral", type=float, default=0.4, help="share of studies with a lateral view too (default 0.4)"
    )
    parser.add_argument("--normal", type=float, default=0.3, help="share of normal studies (default 0.3)")
    parser.add_argument(
        "--reports",
        choices=("tree", "separate"),
        default="tree",
        help="reports in the image tree as files/pXX/pSUBJECT/sSTUDY.txt (default) or under mimic-cxr-reports/",
    )
    parser.add_argument("--dicom", action="store_true", help="also write DX/CR DICOM files <dicom_id>.dcm")
    parser.add_argument("--dicom-only", action="store_true", help="write DICOM files instead of JPGs")
    parser.add_argument(
        "--monochrome1", type=float, default=0.35, help="share of DICOM files stored MONOCHROME1 (default 0.35)"
    )


def _check_fraction(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a fraction in [0, 1], got {value}")


def _split_of(index: int, n: int, rng: np.random.Generator) -> str:
    """MIMIC-style split of a patient: about 80/10/10, at least one test and one validation patient when n >= 3."""
    if n >= 3 and index == 0:
        return "test"
    if n >= 3 and index == 1:
        return "validate"
    u = rng.random()
    return "train" if u < 0.8 else "validate" if u < 0.9 else "test"


def generate(
    out: str | os.PathLike,
    n: int,
    seed: int,
    *,
    layout: str = "mimic",
    size: int = 128,
    jpeg_quality: int = 95,
    max_studies: int = 3,
    lateral: float = 0.4,
    normal: float = 0.3,
    reports: str = "tree",
    dicom: bool = False,
    dicom_only: bool = False,
    monochrome1: float = 0.35,
) -> dict[str, Any]:
    """Write ``n`` synthetic patients' chest X-rays, reports and label CSVs under ``out``.

    Args:
        out: the dataset folder (created).
        n: number of patients.
        seed: random seed; the same seed writes the same data.
        layout: ``mimic`` (MIMIC-CXR-JPG) or ``chexpert`` (CheXpert-v1.0-small).
        size: image height in pixels; widths vary by +-15 %.
        jpeg_quality: JPEG quality of the images.
        max_studies: most studies per patient (each patient has 1 to ``max_studies``).
        lateral: share of studies with a lateral image besides the frontal one.
        normal: share of normal studies.
        reports: ``tree`` (``files/pXX/pSUBJECT/sSTUDY.txt`` next to the study folders) or ``separate``
            (``mimic-cxr-reports/files/...``).
        dicom: also write ``<dicom_id>.dcm`` DX/CR files (MIMIC layout only).
        dicom_only: write the DICOM files instead of the JPGs.
        monochrome1: share of DICOM files stored as MONOCHROME1.

    Returns:
        A summary: ``layout``, ``out``, ``n_patients``, ``n_studies``, ``n_images``, ``n_dicom``, ``files`` (the CSVs
        written) and ``positives`` (studies per positive observation).

    Raises:
        ValueError: bad counts, fractions or choices.
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if size < 16:
        raise ValueError(f"size must be at least 16 pixels, got {size}")
    if max_studies < 1:
        raise ValueError(f"max_studies must be at least 1, got {max_studies}")
    if layout not in ("mimic", "chexpert"):
        raise ValueError(f"unknown layout {layout!r}; expected 'mimic' or 'chexpert'")
    if reports not in ("tree", "separate"):
        raise ValueError(f"reports must be 'tree' or 'separate', got {reports!r}")
    if not 1 <= jpeg_quality <= 100:
        raise ValueError(f"jpeg_quality must be in 1..100, got {jpeg_quality}")
    for name, value in (("lateral", lateral), ("normal", normal), ("monochrome1", monochrome1)):
        _check_fraction(name, value)
    if layout == "chexpert" and (dicom or dicom_only):
        raise ValueError("--dicom applies to the MIMIC layout only (CheXpert is distributed as JPG)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    write_jpg = not dicom_only
    write_dcm = dicom or dicom_only

    ids_rng = np.random.default_rng([seed, 0xC0])
    subjects = np.sort(10_000_000 + ids_rng.choice(10_000_000, size=n, replace=False))
    counts = ids_rng.integers(1, max_studies + 1, size=n)
    all_studies = 50_000_000 + ids_rng.choice(10_000_000, size=int(counts.sum()), replace=False)
    starts = np.concatenate([[0], np.cumsum(counts)])
    split_rng = np.random.default_rng([seed, 0x5B])
    metadata_rows, split_rows, label_rows, truth_rows, chexpert_rows = [], [], [], [], {"train": [], "valid": []}
    n_studies = n_images = n_dicom = 0
    positives: dict[str, int] = {}
    for p, subject in enumerate(int(s) for s in subjects):
        rng = np.random.default_rng([seed, p])
        anatomy = Anatomy.random(rng)
        split = _split_of(p, n, split_rng)
        study_ids = sorted(int(v) for v in all_studies[starts[p] : starts[p + 1]])
        day = int(rng.integers(0, 3000))
        sex, age = str(rng.choice(("Male", "Female"))), int(rng.integers(20, 90))
        for k, study_id in enumerate(study_ids):
            study_rng = np.random.default_rng([seed, p, k])
            report_rng = np.random.default_rng([seed, p, k, 1])
            findings = sample_study_findings(study_rng, normal_fraction=normal)
            day += int(study_rng.integers(1, 400))
            date = np.datetime64("2110-01-01") + np.timedelta64(day, "D")
            study_date = str(date).replace("-", "")
            hour, minute, second, millisecond = (int(v) for v in study_rng.integers(0, (24, 60, 60, 1000)))
            study_time = f"{hour:02d}{minute:02d}{second:02d}.{millisecond:03d}"
            portable = "Support Devices" in _by_name(findings) or study_rng.random() < 0.3
            views = ["AP" if portable else "PA"]
            if study_rng.random() < lateral:
                views.append("LATERAL" if study_rng.random() < 0.85 else "LL")
            labels = {f.observation: f.label for f in findings if f.label is not None}
            attributes = {
                f.observation: {k: v for k, v in f.attributes.items() if k != "device"}
                for f in findings
                if f.label in (1, -1) and f.attributes
            }
            text = generate_report(labels, report_rng, attributes=attributes)
            n_studies += 1
            for f in findings:
                if f.present and f.observation != "No Finding":
                    positives[f.observation] = positives.get(f.observation, 0) + 1
                truth_rows.append(
                    {
                        "subject_id": subject,
                        "study_id": study_id,
                        "observation": f.observation,
                        "label": "" if f.label is None else f.label,
                        "present": int(f.present),
                        "side": f.attributes.get("side", ""),
                        "severity": f.attributes.get("sev", f.attributes.get("deg", "")),
                        "lobe": f.attributes.get("lobe", ""),
                        "size_cm": f.attributes.get("size", "") if f.observation == "Lung Lesion" else "",
                        "device": f.attributes.get("device", ""),
                    }
                )
            label_rows.append(
                {
                    "subject_id": subject,
                    "study_id": study_id,
                    **{o: _csv_value(labels.get(o)) for o in sorted(CHEXPERT_OBSERVATIONS)},
                }
            )
            study_uid = f"2.25.{int(study_rng.integers(1, 2**62))}{study_id}"
            series_uid = f"{study_uid}.1"
            for v, view in enumerate(views):
                image_rng = np.random.default_rng([seed, p, k, 2 + v])
                columns = int(round(size * image_rng.uniform(0.85, 1.15) / 2) * 2)
                image = render_cxr(findings, view, (size, columns), image_rng, anatomy)
                dicom_id = _dicom_id(image_rng)
                n_images += 1
                if layout == "chexpert":
                    chexpert_split = "valid" if split == "test" else "train"
                    kind = "frontal" if view in ("PA", "AP") else "lateral"
                    relative = f"{CHEXPERT_DIR}/{chexpert_split}/patient{p + 1:05d}/study{k + 1}/view{v + 1}_{kind}.jpg"
                    _write_jpg(image, out / relative, jpeg_quality)
                    chexpert_rows[chexpert_split].append(
                        _chexpert_row(relative, sex, age, view, findings, valid=chexpert_split == "valid")
                    )
                    continue
                folder = out / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study_id}"
                if write_jpg:
                    _write_jpg(image, folder / f"{dicom_id}.jpg", jpeg_quality)
                if write_dcm:
                    modality = "CR" if view == "AP" and image_rng.random() < 0.5 else "DX"
                    _write_dicom(
                        image,
                        folder / f"{dicom_id}.dcm",
                        view=view,
                        subject_id=subject,
                        study_uid=study_uid,
                        series_uid=f"{series_uid}.{v + 1}",
                        study_date=study_date,
                        study_time=study_time.split(".")[0],
                        monochrome1=bool(image_rng.random() < monochrome1),
                        modality=modality,
                        rng=image_rng,
                    )
                    n_dicom += 1
                procedure, view_meaning, orientation = _PROCEDURES[view]
                metadata_rows.append(
                    {
                        "dicom_id": dicom_id,
                        "subject_id": subject,
                        "study_id": study_id,
                        "PerformedProcedureStepDescription": procedure,
                        "ViewPosition": view,
                        "Rows": size,
                        "Columns": columns,
                        "StudyDate": study_date,
                        "StudyTime": study_time,
                        "ProcedureCodeSequence_CodeMeaning": procedure,
                        "ViewCodeSequence_CodeMeaning": view_meaning,
                        "PatientOrientationCodeSequence_CodeMeaning": orientation,
                    }
                )
                split_rows.append({"dicom_id": dicom_id, "study_id": study_id, "subject_id": subject, "split": split})
            if layout == "mimic":
                root = out if reports == "tree" else out / "mimic-cxr-reports"
                report_path = root / "files" / f"p{str(subject)[:2]}" / f"p{subject}" / f"s{study_id}.txt"
                report_path.parent.mkdir(parents=True, exist_ok=True)
                report_path.write_text(text)

    files = {}
    if layout == "mimic":
        files["metadata"] = _write_csv(out / METADATA_FILE, METADATA_COLUMNS, metadata_rows)
        files["split"] = _write_csv(out / SPLIT_FILE, ("dicom_id", "study_id", "subject_id", "split"), split_rows)
        files["chexpert"] = _write_csv(
            out / CHEXPERT_FILE, ("subject_id", "study_id", *sorted(CHEXPERT_OBSERVATIONS)), label_rows
        )
    else:
        columns = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", *CHEXPERT_CSV_COLUMNS)
        for name, rows in chexpert_rows.items():
            files[name] = _write_csv(out / CHEXPERT_DIR / f"{name}.csv", columns, rows)
    files["ground_truth"] = _write_csv(out / GROUND_TRUTH_FILE, GROUND_TRUTH_COLUMNS, truth_rows)
    return {
        "layout": f"{LAYOUT}/{layout}",
        "out": str(out),
        "n_patients": n,
        "n_studies": n_studies,
        "n_images": n_images,
        "n_dicom": n_dicom,
        "files": {k: str(v) for k, v in files.items()},
        "positives": dict(sorted(positives.items())),
    }


def _chexpert_row(
    relative: str, sex: str, age: int, view: str, findings: Sequence[Finding], valid: bool
) -> dict[str, Any]:
    """A row of CheXpert's train.csv (report labels, 1.0/0.0/-1.0/blank) or valid.csv (the truth, 1.0/0.0)."""
    frontal = view in ("PA", "AP")
    row: dict[str, Any] = {
        "Path": relative,
        "Sex": sex,
        "Age": age,
        "Frontal/Lateral": "Frontal" if frontal else "Lateral",
        "AP/PA": view if frontal else "",
    }
    by_name = {f.observation: f for f in findings}
    for observation in CHEXPERT_CSV_COLUMNS:
        finding = by_name.get(observation)
        if valid:
            truth = finding is not None and finding.present
            if observation == "No Finding":
                truth = not any(f.present for f in findings if f.observation not in ("No Finding", "Support Devices"))
            row[observation] = "1.0" if truth else "0.0"
        else:
            row[observation] = "" if finding is None or finding.label is None else f"{float(finding.label):.1f}"
    return row


def _write_csv(path: Path, columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
    return path
