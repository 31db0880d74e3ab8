"""Augmentations for image self-supervised learning, chosen per modality (presets), built from MONAI transforms.

ImageNet's SimCLR recipe (crops down to 8 % of the image, colour jitter, random grayscale, flips in every direction)
does not fit medical images: colour transforms mean nothing on grey levels, a small crop loses the finding the
representation should keep, and a flip can turn anatomy into a different anatomy. The presets here keep what
medical SSL papers use (Azizi et al. 2021, ConVIRT, MONAI's self-supervised tutorial) and say why:

=============  ===============================================================================================
preset         what it does (and what it leaves out)
=============  ===============================================================================================
``cxr``        2D chest X-ray. Crop 60-100 % per axis (a finding in a lung zone survives), **no flips** (a
               left-right flip moves the heart to the right: dextrocardia, and swaps the side a report names),
               rotation up to 10 degrees, translation 5 %, zoom 10 %, brightness 20 %, gamma 0.7-1.4 (exposure),
               Gaussian blur and noise (detectors differ).
``mammo``      2D mammogram **after** orientation (the load step, :class:`medssl.transforms.mammo.OrientBreastd`,
               puts every chest wall on the left first). A left-right flip then turns a breast into a plausible
               contralateral one (mirror anatomy), so it is allowed; flipping *before* orientation would fool
               the tag-based orientation. **No up-down flip** (the pectoral muscle of an MLO view belongs at
               the top). Crop 70-100 % (calcifications and small masses are a few mm), rotation 5 degrees,
               zoom 5 %, brightness 10 %, gamma 0.8-1.25, mild blur and noise.
``mr3d``       3D brain MR in RAS orientation (the load step reorients). **Left-right flips are fine** (the brain
               is nearly symmetric; the flip is along RAS axis 0 only, never head-feet or front-back), crop
               70-100 % per axis, rotation 10 degrees, zoom 10 %, intensity scale and shift (MR has no absolute
               units), gamma, blur, noise, and MONAI's self-supervised tutorial's coarse dropout and coarse
               shuffle (local patches removed or scrambled: the network must use context).
=============  ===============================================================================================

None of them uses colour jitter or random grayscale: the images are grey-level already.

A preset is plain JSON-serialisable data (:data:`SSL_PRESETS`): select one by name, override any field, or pass a
whole dictionary. The transforms are MONAI's (``RandScaleCrop``, ``Resize``, ``RandFlip``, ``RandAffine``,
``RandScaleIntensity``, ``RandShiftIntensity``, ``RandAdjustContrast``, ``RandGaussianSmooth``,
``RandGaussianNoise``, ``RandCoarseDropout``, ``RandCoarseShuffle``); :class:`RandSSLAugment` and its dictionary
twin :class:`RandSSLAugmentd` wrap them, so a bundle config builds one with ``_target_``::

    {"_target_": "medssl.ssl.augment.RandSSLAugmentd", "keys": ["image"], "preset": "cxr", "spatial_size": 224,
     "noise_std": 0.03}

Each key of :class:`RandSSLAugmentd` gets its own draws (two views of one image differ), and
``set_random_state(seed)`` seeds everything, so the engine's per-item seeding makes augmentation reproducible.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import (
    Compose,
    EnsureType,
    MapTransform,
    RandAdjustContrast,
    RandAffine,
    RandCoarseDropout,
    RandCoarseShuffle,
    RandFlip,
    RandGaussianNoise,
    RandGaussianSmooth,
    Randomizable,
    RandScaleCrop,
    RandScaleIntensity,
    RandShiftIntensity,
    Resize,
    Transform,
)

from medssl.exceptions import MedsslError

__all__ = [
    "AugmentConfigError",
    "SSL_PRESETS",
    "available_presets",
    "resolve_preset",
    "ssl_augmentations",
    "RandSSLAugment",
    "RandSSLAugmentd",
    "RandSSLAugmentD",
    "RandSSLAugmentDict",
]


class AugmentConfigError(MedsslError):
    """An unknown preset, an unknown preset field, or a value outside what the transform accepts."""


#: The modality presets: plain data (JSON), see the module docstring for the reasons behind each choice.
SSL_PRESETS: dict[str, dict[str, Any]] = {
    "cxr": {
        "modality": "cxr",
        "spatial_dims": 2,
        "crop_scale": [0.6, 1.0],
        "flip_axes": [],
        "flip_prob": 0.0,
        "rotate_degrees": 10.0,
        "translate": 0.05,
        "scale": 0.1,
        "affine_prob": 0.8,
        "intensity_scale": 0.2,
        "intensity_shift": 0.0,
        "intensity_prob": 0.8,
        "gamma": [0.7, 1.4],
        "gamma_prob": 0.5,
        "blur_sigma": [0.2, 1.0],
        "blur_prob": 0.3,
        "noise_std": 0.02,
        "noise_prob": 0.3,
        "coarse_dropout": None,
        "coarse_shuffle": None,
        "rationale": (
            "no left-right flip: it moves the heart to the right and swaps the side a report names; crops keep "
            ">= 60 % per axis so a finding in a lung zone survives; gamma and brightness mimic exposure"
        ),
    },
    "mammo": {
        "modality": "mammo",
        "spatial_dims": 2,
        "crop_scale": [0.7, 1.0],
        "flip_axes": [1],
        "flip_prob": 0.5,
        "rotate_degrees": 5.0,
        "translate": 0.03,
        "scale": 0.05,
        "affine_prob": 0.5,
        "intensity_scale": 0.1,
        "intensity_shift": 0.0,
        "intensity_prob": 0.5,
        "gamma": [0.8, 1.25],
        "gamma_prob": 0.5,
        "blur_sigma": [0.2, 0.6],
        "blur_prob": 0.2,
        "noise_std": 0.01,
        "noise_prob": 0.3,
        "coarse_dropout": None,
        "coarse_shuffle": None,
        "rationale": (
            "breasts are oriented (chest wall left) before augmenting; a left-right flip then gives a plausible "
            "contralateral breast; no up-down flip (the MLO pectoral muscle stays on top); crops keep >= 70 % "
            "per axis because calcifications and small masses are a few millimetres"
        ),
    },
    "mr3d": {
        "modality": "mr",
        "spatial_dims": 3,
        "crop_scale": [0.7, 1.0],
        "flip_axes": [0],
        "flip_prob": 0.5,
        "rotate_degrees": 10.0,
        "translate": 0.05,
        "scale": 0.1,
        "affine_prob": 0.5,
        "intensity_scale": 0.1,
        "intensity_shift": 0.1,
        "intensity_prob": 0.8,
        "gamma": [0.7, 1.5],
        "gamma_prob": 0.5,
        "blur_sigma": [0.2, 1.0],
        "blur_prob": 0.2,
        "noise_std": 0.02,
        "noise_prob": 0.3,
        "coarse_dropout": {"holes": 4, "size": [0.05, 0.2], "prob": 0.5},
        "coarse_shuffle": {"holes": 6, "size": [0.05, 0.1], "prob": 0.5},
        "rationale": (
            "RAS orientation first; left-right flips only (the brain is nearly symmetric; head-feet and "
            "front-back flips are not anatomy); intensity scale/shift because MR has no absolute units; coarse "
            "dropout and shuffle as in MONAI's self-supervised tutorial"
        ),
    },
}

_NUMBER_FIELDS = (
    "flip_prob",
    "rotate_degrees",
    "translate",
    "scale",
    "affine_prob",
    "intensity_scale",
    "intensity_shift",
    "intensity_prob",
    "gamma_prob",
    "blur_prob",
    "noise_std",
    "noise_prob",
)
_PROBABILITIES = ("flip_prob", "affine_prob", "intensity_prob", "gamma_prob", "blur_prob", "noise_prob")
_PRESET_FIELDS = frozenset(SSL_PRESETS["cxr"])
_COARSE_FIELDS = frozenset({"holes", "size", "prob", "max_holes"})


def available_presets() -> list[str]:
    """Names of the built-in presets."""
    return sorted(SSL_PRESETS)


def _range(value: Any, name: str, low_bound: float = 0.0) -> list[float]:
    if isinstance(value, (int, float)):
        value = [value, value]
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError) as error:
        raise AugmentConfigError(f"{name} must be a [low, high] pair, got {value!r}") from error
    if not low_bound <= low <= high:
        raise AugmentConfigError(f"{name} must satisfy {low_bound:g} <= low <= high, got {value!r}")
    return [low, high]


def _check_coarse(value: Any, name: str) -> dict[str, Any] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise AugmentConfigError(f"{name} must be null or an object with holes, size, prob, got {value!r}")
    unknown = sorted(set(value) - _COARSE_FIELDS)
    if unknown:
        raise AugmentConfigError(f"unknown {name} field(s) {unknown}; known: {sorted(_COARSE_FIELDS)}")
    out = {"holes": int(value.get("holes", 4)), "size": _range(value.get("size", [0.05, 0.2]), f"{name}.size")}
    out["prob"] = float(value.get("prob", 0.5))
    if value.get("max_holes") is not None:
        out["max_holes"] = int(value["max_holes"])
    if out["holes"] < 1 or out["size"][1] > 1.0 or not 0.0 <= out["prob"] <= 1.0:
        raise AugmentConfigError(f"{name} needs holes >= 1, sizes <= 1 (fractions of the image), prob in [0, 1]")
    return out


def resolve_preset(preset: str | Mapping[str, Any] = "cxr", **overrides: Any) -> dict[str, Any]:
    """A preset's full settings with ``overrides`` applied and every value checked.

    Args:
        preset: a name of :data:`SSL_PRESETS` or a whole preset dictionary (missing fields come from ``cxr`` for
            2D and ``mr3d`` for 3D).
        overrides: preset fields to change (``noise_std=0.05``, ``flip_axes=[]`` ...).

    Returns:
        A new dictionary (JSON-serialisable).

    Raises:
        AugmentConfigError: unknown preset name or field, or an invalid value.
    """
    if isinstance(preset, str):
        if preset not in SSL_PRESETS:
            raise AugmentConfigError(f"unknown augmentation preset {preset!r}; known: {available_presets()}")
        settings = copy.deepcopy(SSL_PRESETS[preset])
    elif isinstance(preset, Mapping):
        base = "mr3d" if int(preset.get("spatial_dims", 2)) == 3 else "cxr"
        settings = {**copy.deepcopy(SSL_PRESETS[base]), **copy.deepcopy(dict(preset))}
    else:
        raise AugmentConfigError(f"preset must be a name or a dictionary, got {type(preset).__name__}")
    settings.update(copy.deepcopy(overrides))
    unknown = sorted(set(settings) - _PRESET_FIELDS)
    if unknown:
        raise AugmentConfigError(f"unknown augmentation field(s) {unknown}; known: {sorted(_PRESET_FIELDS)}")
    dims = int(settings["spatial_dims"])
    if dims not in (2, 3):
        raise AugmentConfigError(f"spatial_dims must be 2 or 3, got {dims}")
    settings["spatial_dims"] = dims
    for name in _NUMBER_FIELDS:
        settings[name] = float(settings[name])
        if settings[name] < 0:
            raise AugmentConfigError(f"{name} must be >= 0, got {settings[name]}")
    for name in _PROBABILITIES:
        if settings[name] > 1:
            raise AugmentConfigError(f"{name} is a probability, got {settings[name]}")
    settings["crop_scale"] = _range(settings["crop_scale"], "crop_scale")
    if not (settings["crop_scale"][0] > 0 and settings["crop_scale"][1] <= 1.0):
        raise AugmentConfigError(f"crop_scale must lie in (0, 1], got {settings['crop_scale']}")
    settings["gamma"] = _range(settings["gamma"], "gamma", low_bound=1e-3)
    settings["blur_sigma"] = _range(settings["blur_sigma"], "blur_sigma")
    axes = [int(a) for a in settings["flip_axes"]]
    if any(not 0 <= a < dims for a in axes):
        raise AugmentConfigError(f"flip_axes {axes} must be spatial axes in [0, {dims})")
    settings["flip_axes"] = sorted(set(axes))
    settings["coarse_dropout"] = _check_coarse(settings["coarse_dropout"], "coarse_dropout")
    settings["coarse_shuffle"] = _check_coarse(settings["coarse_shuffle"], "coarse_shuffle")
    return settings


def _sizes(size: Sequence[int], fractions: Sequence[float]) -> tuple[tuple[int, ...], tuple[int, ...]]:
    low = tuple(max(1, round(s * fractions[0])) for s in size)
    high = tuple(max(lo, round(s * fractions[1])) for lo, s in zip(low, size))
    return low, high


def ssl_augmentations(
    preset: str | Mapping[str, Any] = "cxr", spatial_size: int | Sequence[int] = 224, **overrides: Any
) -> list[Transform]:
    """The MONAI array transforms of a preset, for one channel-first image, in order.

    Random crop (relative size per axis) -> resize to ``spatial_size`` -> flips (one ``RandFlip`` per allowed axis)
    -> affine (rotation, translation, zoom) -> intensity scale and shift -> gamma -> blur -> noise -> coarse dropout
    -> coarse shuffle -> float32 tensor. Steps with probability 0 (or a zero range) are left out.

    Args:
        preset: a preset name or dictionary (see :func:`resolve_preset`).
        spatial_size: output size (an int for a square or cube).
        overrides: preset fields to change.

    Returns:
        The transforms, to be put in a ``Compose``.

    Raises:
        AugmentConfigError: see :func:`resolve_preset`, or a ``spatial_size`` of the wrong dimension.
    """
    p = resolve_preset(preset, **overrides)
    dims = p["spatial_dims"]
    size = (int(spatial_size),) * dims if isinstance(spatial_size, (int, np.integer)) else tuple(map(int, spatial_size))
    if len(size) != dims or min(size) < 1:
        raise AugmentConfigError(f"spatial_size {spatial_size} does not fit a {dims}D preset")
    low, high = p["crop_scale"]
    steps: list[Transform] = []
    if low < 1.0:
        steps.append(RandScaleCrop(roi_scale=low, max_roi_scale=high, random_size=True, random_center=True))
    steps.append(Resize(spatial_size=size, mode="bilinear" if dims == 2 else "trilinear", anti_aliasing=False))
    if p["flip_prob"] > 0:
        steps += [RandFlip(prob=p["flip_prob"], spatial_axis=axis) for axis in p["flip_axes"]]
    angle = math.radians(p["rotate_degrees"])
    if p["affine_prob"] > 0 and (angle > 0 or p["translate"] > 0 or p["scale"] > 0):
        steps.append(
            RandAffine(
                prob=p["affine_prob"],
                rotate_range=angle if dims == 2 else (angle,) * 3,
                translate_range=tuple(p["translate"] * s for s in size),
                scale_range=(p["scale"],) * dims,
                spatial_size=size,
                cache_grid=True,
                padding_mode="zeros",
            )
        )
    if p["intensity_prob"] > 0 and p["intensity_scale"] > 0:
        steps.append(RandScaleIntensity(factors=p["intensity_scale"], prob=p["intensity_prob"]))
    if p["intensity_prob"] > 0 and p["intensity_shift"] > 0:
        steps.append(RandShiftIntensity(offsets=p["intensity_shift"], prob=p["intensity_prob"]))
    if p["gamma_prob"] > 0 and p["gamma"] != [1.0, 1.0]:
        steps.append(RandAdjustContrast(prob=p["gamma_prob"], gamma=tuple(p["gamma"])))
    if p["blur_prob"] > 0 and p["blur_sigma"][1] > 0:
        sigma = tuple(p["blur_sigma"])
        steps.append(RandGaussianSmooth(sigma_x=sigma, sigma_y=sigma, sigma_z=sigma, prob=p["blur_prob"]))
    if p["noise_prob"] > 0 and p["noise_std"] > 0:
        steps.append(RandGaussianNoise(prob=p["noise_prob"], mean=0.0, std=p["noise_std"]))
    if p["coarse_dropout"]:
        c = p["coarse_dropout"]
        hole, max_hole = _sizes(size, c["size"])
        steps.append(
            RandCoarseDropout(
                holes=c["holes"],
                spatial_size=hole,
                max_spatial_size=max_hole,
                max_holes=c.get("max_holes"),
                dropout_holes=True,
                fill_value=0.0,
                prob=c["prob"],
            )
        )
    if p["coarse_shuffle"]:
        c = p["coarse_shuffle"]
        hole, max_hole = _sizes(size, c["size"])
        steps.append(
            RandCoarseShuffle(
                holes=c["holes"],
                spatial_size=hole,
                max_spatial_size=max_hole,
                max_holes=c.get("max_holes"),
                prob=c["prob"],
            )
        )
    steps.append(EnsureType(data_type="tensor", dtype=torch.float32, track_meta=False))
    return steps


class RandSSLAugment(Randomizable, Transform):
    """One random view of a channel-first image under a modality preset (see the module docstring).

    Args:
        preset: a preset name (``cxr``, ``mammo``, ``mr3d``) or a preset dictionary.
        spatial_size: output size.
        overrides: preset fields to change (plain values, so JSON configs can give them).

    Example:
        >>> import torch
        >>> augment = RandSSLAugment("cxr", spatial_size=32).set_random_state(seed=0)
        >>> augment(torch.rand(1, 40, 44)).shape
        torch.Size([1, 32, 32])
    """

    backend = ["torch", "numpy"]

    def __init__(
        self, preset: str | Mapping[str, Any] = "cxr", spatial_size: int | Sequence[int] = 224, **overrides: Any
    ) -> None:
        self.settings = resolve_preset(preset, **overrides)
        self.pipeline = Compose(ssl_augmentations(self.settings, spatial_size))

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandSSLAugment:
        """Seed every inner transform."""
        super().set_random_state(seed, state)
        self.pipeline.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        """Draws happen inside the inner transforms."""

    def __call__(self, image: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Augment ``(C, *spatial)`` into a ``(C, *spatial_size)`` float32 tensor (the input is never changed)."""
        # A copy first: MONAI's coarse dropout writes into its input, which may be a cached image when every
        # earlier step happens to be an identity (no crop, same size, no flip drawn).
        image = image.clone() if torch.is_tensor(image) else np.array(image, copy=True)
        return self.pipeline(image)


class RandSSLAugmentd(Randomizable, MapTransform):
    """Dictionary twin of :class:`RandSSLAugment`; each key gets its own draws (two keys = two different views).

    Args:
        keys: image keys.
        preset: a preset name or dictionary.
        spatial_size: output size.
        allow_missing_keys: do not raise when a key is absent.
        overrides: preset fields to change.
    """

    backend = RandSSLAugment.backend

    def __init__(
        self,
        keys: KeysCollection,
        preset: str | Mapping[str, Any] = "cxr",
        spatial_size: int | Sequence[int] = 224,
        allow_missing_keys: bool = False,
        **overrides: Any,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.augment = RandSSLAugment(preset, spatial_size, **overrides)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandSSLAugmentd:
        """Seed this transform and its array transform."""
        super().set_random_state(seed, state)
        self.augment.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        """Draws happen per key in :meth:`__call__`."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Augment each key's image (a copy of the item is returned)."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.augment(d[key])
        return d


RandSSLAugmentD = RandSSLAugmentDict = RandSSLAugmentd
