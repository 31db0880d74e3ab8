"""A brain-tumour MR phantom defined in patient coordinates, sampled on any voxel grid.

Synthetic BraTS cases (:mod:`medssl.data.synth.brats`) and synthetic PACS exports (:mod:`medssl.data.synth.mr_dicom`)
draw their images from one phantom: a head made of nested ellipsoids (scalp, skull, CSF, grey and white matter,
two lateral ventricles) holding an optional tumour with an enhancing rim, a necrotic core and peritumoral edema of
random position and lobulated shape. The phantom is a *function of patient coordinates* (LPS, mm), not an array, so
series of different orientation, spacing and field of view that sample it show the same anatomy at the same patient
coordinates: resampling them onto one grid realigns them, as it does for real scans of one study.

Each MR sequence sees the tissues through :data:`CONTRAST` (relative signal per tissue), times a smooth multiplicative
bias field that differs per series (coil sensitivity), plus Rician noise. The contrast table is built so that no
single one of T1, T1C, T2 and FLAIR separates the three tumour labels while the four together do:

============  =====  =====  =====  =====
tissue         T1     T1C    T2    FLAIR
============  =====  =====  =====  =====
necrosis       0.30   0.30   0.85   0.45
edema          0.30   0.30   0.85   0.85
enhancing      0.30   0.95   0.65   0.85
============  =====  =====  =====  =====

T1 shows the three alike; T1C and T2 separate the enhancing rim but not necrosis from edema; FLAIR separates
necrosis but not edema from the enhancing rim. T1C (or T2) together with FLAIR separates all three.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

__all__ = [
    "TISSUES",
    "TISSUE_CODES",
    "SEQUENCES",
    "CONTRAST",
    "Tumour",
    "HeadPhantom",
    "BRAIN_SURFACE",
    "grid_points",
    "lps_affine_from_ras",
]

TISSUES: tuple[str, ...] = (
    "background",
    "scalp",
    "skull",
    "csf",
    "grey_matter",
    "white_matter",
    "necrosis",
    "edema",
    "enhancing",
)
TISSUE_CODES: dict[str, int] = {name: code for code, name in enumerate(TISSUES)}
SEQUENCES: tuple[str, ...] = ("T1", "T1C", "T2", "FLAIR", "DWI", "ADC")

# Relative signal of each tissue (in TISSUES order) per sequence; ADC in 10^-3 mm^2/s. Brain tissues follow the usual
# appearance (T1: white matter bright, CSF dark; T2: CSF bright; FLAIR: CSF suppressed; fat in the scalp bright on T1,
# cortical bone dark everywhere); the tumour rows are the table of the module docstring.
CONTRAST: dict[str, tuple[float, ...]] = {
    #         bg    scalp skull  csf   GM    WM    NCR   ED    ET
    "T1": (0.00, 0.90, 0.10, 0.15, 0.55, 0.80, 0.30, 0.30, 0.30),
    "T1C": (0.00, 0.90, 0.10, 0.15, 0.55, 0.80, 0.30, 0.30, 0.95),
    "T2": (0.00, 0.60, 0.08, 0.95, 0.55, 0.40, 0.85, 0.85, 0.65),
    "FLAIR": (0.00, 0.60, 0.08, 0.10, 0.55, 0.40, 0.45, 0.85, 0.85),
    "DWI": (0.00, 0.10, 0.02, 0.10, 0.55, 0.50, 0.20, 0.45, 0.60),
    "ADC": (0.00, 0.30, 0.00, 3.00, 0.80, 0.70, 1.80, 1.40, 0.90),
}

# Shells of the head in normalised head coordinates (1 = skin surface).
_SCALP_INNER = 0.93
_SKULL_INNER = 0.85
BRAIN_SURFACE = 0.80  # brain surface in normalised head coordinates
_WHITE_OUTER = 0.66
_VENTRICLES = (  # centre and semi-axes in normalised head coordinates (x: left, y: posterior, z: superior)
    ((0.11, 0.02, 0.12), (0.07, 0.28, 0.12)),
    ((-0.11, 0.02, 0.12), (0.07, 0.28, 0.12)),
)


def _lobe_factor(directions: np.ndarray, lobes: np.ndarray) -> np.ndarray:
    """Radial modulation ``1 + sum_i a_i cos(k_i * angle(d, v_i) + phi_i)`` of unit directions (N, 3)."""
    factor = np.ones(len(directions))
    for vx, vy, vz, amplitude, frequency, phase in lobes:
        cosine = np.clip(directions @ np.array([vx, vy, vz]), -1.0, 1.0)
        factor += amplitude * np.cos(frequency * np.arccos(cosine) + phase)
    return factor


def _random_lobes(rng: np.random.Generator, n: int, total_amplitude: float) -> np.ndarray:
    axes = rng.normal(size=(n, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    amplitudes = rng.dirichlet(np.ones(n)) * total_amplitude
    frequencies = rng.integers(1, 4, size=n).astype(float)
    phases = rng.uniform(0, 2 * np.pi, size=n)
    return np.column_stack([axes, amplitudes, frequencies, phases])


@dataclass(frozen=True)
class Tumour:
    """A lobulated tumour in head coordinates (mm from the head centre, head frame).

    Attributes:
        centre: tumour centre in the head frame (mm).
        core_radius: mean radius of the tumour core (enhancing rim and necrosis) in mm.
        necrosis_ratio: necrosis radius over core radius (0 for none).
        edema_ratio: edema radius over core radius (> 1).
        enhancing: whether the core has an enhancing rim (high grade); a low-grade core is all label 1.
        lobes: ``(n, 6)`` rows ``(vx, vy, vz, amplitude, frequency, phase)`` shaping the core.
        edema_lobes: the same for the edema.
    """

    centre: np.ndarray
    core_radius: float
    necrosis_ratio: float
    edema_ratio: float
    enhancing: bool
    lobes: np.ndarray
    edema_lobes: np.ndarray

    @classmethod
    def random(cls, rng: np.random.Generator, brain_radii: Sequence[float], enhancing: bool = True) -> Tumour:
        """Draw a tumour inside a brain of the given semi-axes (mm).

        Args:
            rng: random generator.
            brain_radii: semi-axes of the brain (mm), in the head frame.
            enhancing: high grade (enhancing rim around necrosis) or low grade (non-enhancing core).

        Returns:
            The tumour.
        """
        brain_radii = np.asarray(brain_radii, dtype=float)
        side = rng.choice([-1.0, 1.0])
        position = np.array([side * rng.uniform(0.2, 0.4), rng.uniform(-0.35, 0.35), rng.uniform(-0.1, 0.4)])
        return cls(
            centre=position * brain_radii,
            core_radius=float(rng.uniform(0.22, 0.3) * brain_radii.mean()),
            necrosis_ratio=float(rng.uniform(0.5, 0.7)) if enhancing else 0.0,
            edema_ratio=float(rng.uniform(1.5, 1.9)),
            enhancing=bool(enhancing),
            lobes=_random_lobes(rng, 3, 0.25),
            edema_lobes=_random_lobes(rng, 4, 0.3),
        )

    def grown(self, factor: float) -> Tumour:
        """The same tumour, larger by ``factor`` (a later time point)."""
        return replace(self, core_radius=self.core_radius * factor)


@dataclass(frozen=True)
class HeadPhantom:
    """A head with an optional tumour, placed in patient coordinates (LPS, mm).

    Attributes:
        centre: head centre in LPS (mm).
        rotation: 3x3 rotation from the head frame (x left, y posterior, z superior) to LPS.
        radii: semi-axes of the skin surface (mm).
        tumour: the tumour, or None.
        gyri: ``(n, 6)`` lobes modulating the grey/white matter boundary.
    """

    centre: np.ndarray
    rotation: np.ndarray
    radii: np.ndarray
    tumour: Tumour | None
    gyri: np.ndarray

    @classmethod
    def random(
        cls,
        rng: np.random.Generator,
        radii: Sequence[float] = (70.0, 88.0, 75.0),
        centre: Sequence[float] = (0.0, 0.0, 0.0),
        tumour: bool = True,
        enhancing: bool = True,
        max_rotation_degrees: float = 6.0,
    ) -> HeadPhantom:
        """Draw a head of roughly the given size around ``centre``.

        Args:
            rng: random generator.
            radii: semi-axes of the skin surface (mm) before a +/-5 % random change.
            centre: where to put the head centre (LPS, mm).
            tumour: include a tumour.
            enhancing: the tumour has an enhancing rim and necrosis (high grade).
            max_rotation_degrees: largest head tilt about each axis.

        Returns:
            The phantom.
        """
        from scipy.spatial.transform import Rotation

        radii = np.asarray(radii, dtype=float) * rng.uniform(0.95, 1.05, size=3)
        angles = rng.uniform(-max_rotation_degrees, max_rotation_degrees, size=3)
        return cls(
            centre=np.asarray(centre, dtype=float),
            rotation=Rotation.from_euler("xyz", angles, degrees=True).as_matrix(),
            radii=radii,
            tumour=Tumour.random(rng, radii * BRAIN_SURFACE, enhancing=enhancing) if tumour else None,
            gyri=_random_lobes(rng, 6, 0.06),
        )

    def moved(self, rng: np.random.Generator, shift_mm: float = 8.0, max_rotation_degrees: float = 5.0) -> HeadPhantom:
        """The same anatomy repositioned in the scanner (another study of the same patient).

        Args:
            rng: random generator.
            shift_mm: largest shift along each axis.
            max_rotation_degrees: largest extra rotation about each axis.

        Returns:
            The moved phantom.
        """
        from scipy.spatial.transform import Rotation

        extra = Rotation.from_euler("xyz", rng.uniform(-max_rotation_degrees, max_rotation_degrees, 3), degrees=True)
        return replace(
            self,
            centre=self.centre + rng.uniform(-shift_mm, shift_mm, size=3),
            rotation=extra.as_matrix() @ self.rotation,
        )

    def to_head(self, points: np.ndarray) -> np.ndarray:
        """Map LPS points ``(N, 3)`` to the head frame (mm from the head centre)."""
        return (np.asarray(points, dtype=float) - self.centre) @ self.rotation

    def to_patient(self, points: np.ndarray) -> np.ndarray:
        """Map head-frame points ``(N, 3)`` (mm) to LPS."""
        return np.asarray(points, dtype=float) @ self.rotation.T + self.centre

    @property
    def tumour_centre(self) -> np.ndarray | None:
        """The tumour centre in LPS (mm), or None."""
        return None if self.tumour is None else self.to_patient(self.tumour.centre[None])[0]

    def tissue(self, points: np.ndarray) -> np.ndarray:
        """Tissue code (index into :data:`TISSUES`) at each LPS point.

        Args:
            points: ``(N, 3)`` LPS coordinates in mm.

        Returns:
            ``(N,)`` uint8 codes.
        """
        q = self.to_head(points)
        u = q / self.radii
        r = np.linalg.norm(u, axis=1)
        direction = u / np.maximum(r, 1e-9)[:, None]
        codes = np.zeros(len(q), dtype=np.uint8)
        codes[r <= 1.0] = TISSUE_CODES["scalp"]
        codes[r <= _SCALP_INNER] = TISSUE_CODES["skull"]
        codes[r <= _SKULL_INNER] = TISSUE_CODES["csf"]
        brain = r <= BRAIN_SURFACE
        codes[brain] = TISSUE_CODES["grey_matter"]
        white = r <= _WHITE_OUTER * _lobe_factor(direction, self.gyri)
        codes[brain & white] = TISSUE_CODES["white_matter"]
        for centre, semi_axes in _VENTRICLES:
            inside = np.linalg.norm((u - np.array(centre)) / np.array(semi_axes), axis=1) <= 1.0
            codes[inside] = TISSUE_CODES["csf"]
        if self.tumour is not None:
            t = self.tumour
            offset = q - t.centre
            distance = np.linalg.norm(offset, axis=1)
            toward = offset / np.maximum(distance, 1e-9)[:, None]
            core = t.core_radius * _lobe_factor(toward, t.lobes)
            parenchyma = np.isin(codes, (TISSUE_CODES["grey_matter"], TISSUE_CODES["white_matter"]))
            edema = (
                brain & parenchyma & (distance <= t.edema_ratio * t.core_radius * _lobe_factor(toward, t.edema_lobes))
            )
            codes[edema] = TISSUE_CODES["edema"]
            in_core = brain & (distance <= core)
            codes[in_core] = TISSUE_CODES["enhancing"] if t.enhancing else TISSUE_CODES["necrosis"]
            if t.enhancing and t.necrosis_ratio > 0:
                codes[brain & (distance <= t.necrosis_ratio * core)] = TISSUE_CODES["necrosis"]
        return codes

    def image(
        self,
        points: np.ndarray,
        sequence: str,
        rng: np.random.Generator,
        *,
        noise: float = 0.03,
        bias: float = 0.12,
        tissue: np.ndarray | None = None,
    ) -> np.ndarray:
        """Signal of one MR sequence at each LPS point: contrast x bias field, with Rician noise.

        Args:
            points: ``(N, 3)`` LPS coordinates in mm.
            sequence: a key of :data:`CONTRAST`.
            rng: random generator (bias field and noise; one draw per series, like a real acquisition).
            noise: noise standard deviation relative to the brightest tissue.
            bias: strength of the smooth multiplicative bias field (about +/- ``bias`` over the brain).
            tissue: precomputed :meth:`tissue` codes for ``points``.

        Returns:
            ``(N,)`` float32 signal (ADC in 10^-3 mm^2/s, without noise outside the head).

        Raises:
            KeyError: unknown sequence.
        """
        if sequence not in CONTRAST:
            raise KeyError(f"no contrast defined for sequence {sequence!r}; expected one of {list(CONTRAST)}")
        codes = self.tissue(points) if tissue is None else tissue
        signal = np.asarray(CONTRAST[sequence], dtype=float)[codes]
        u = self.to_head(points) / self.radii
        linear = rng.uniform(-1, 1, size=3) * bias / 2
        quadratic = rng.uniform(-1, 1, size=3) * bias / 2
        signal = signal * np.exp(u @ linear + (u**2) @ quadratic)
        sigma = noise * max(CONTRAST[sequence])
        if sequence == "ADC":  # a computed map: Gaussian error inside the head, zero outside like scanners' ADC maps
            signal = np.where(codes > 0, signal + rng.normal(0, sigma, size=signal.shape), 0.0).clip(min=0)
        elif sigma > 0:  # magnitude images: Rician noise, so the background is a noise floor rather than zero
            signal = np.hypot(signal + rng.normal(0, sigma, size=signal.shape), rng.normal(0, sigma, size=signal.shape))
        return signal.astype(np.float32)


def grid_points(affine: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """World coordinates of every voxel centre of a grid, in C order of the voxel indices.

    Args:
        affine: 4x4 voxel-to-world matrix.
        shape: grid shape ``(nx, ny, nz)``.

    Returns:
        ``(nx * ny * nz, 3)`` coordinates, reshapeable to ``shape + (3,)``.
    """
    index = np.indices(tuple(int(s) for s in shape), dtype=float).reshape(3, -1).T
    affine = np.asarray(affine, dtype=float)
    return index @ affine[:3, :3].T + affine[:3, 3]


def lps_affine_from_ras(affine_ras: np.ndarray) -> np.ndarray:
    """Convert a NIfTI (RAS) voxel-to-world affine into the DICOM (LPS) one."""
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine_ras, dtype=float)
