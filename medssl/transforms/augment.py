"""ConVIRT's image augmentations as a MONAI transform (array and dictionary forms), built from MONAI's own transforms.

ConVIRT (Zhang et al. 2020) augments each radiograph with, in order:

==========================  ========================================================  ==================================
augmentation                paper                                                     MONAI transform
==========================  ========================================================  ==================================
random resized crop         crop of 60-100 % of the image, resized to 224 x 224       ``RandScaleCrop`` + ``Resize``
horizontal flip             probability 0.5                                           ``RandFlip``
affine                      rotation in [-20, 20] degrees, translation up to 10 %,    ``RandAffine``
                            scaling in [0.95, 1.05]
brightness                  factor in [0.6, 1.4]                                      ``RandScaleIntensity``
contrast                    factor in [0.6, 1.4] around the image mean                ``RandScaleIntensityFixedMean``
Gaussian blur               sigma in [0.1, 3.0]                                       ``RandGaussianSmooth``
==========================  ========================================================  ==================================

The crop draws its relative size per axis (MONAI's ``RandScaleCrop``) rather than an area and an aspect ratio
(torchvision's ``RandomResizedCrop``), and the blur draws one sigma per axis; both are documented departures that keep
the pipeline inside MONAI. Note that a horizontal flip swaps the sides a report names ("left pleural effusion"):
ConVIRT flips anyway, GLoRIA's word-region alignment is better served by ``flip_prob=0``.

Seeding: ``set_random_state(seed)`` seeds every inner transform (MONAI ``Compose`` draws one seed per transform), so
``SeededDataset`` in :mod:`medssl.engines.data` makes the augmentation of an item a function of (seed, epoch, index).
"""

from __future__ import annotations

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
    RandAffine,
    RandFlip,
    RandGaussianSmooth,
    Randomizable,
    RandScaleCrop,
    RandScaleIntensity,
    RandScaleIntensityFixedMean,
    Resize,
    Transform,
)

__all__ = [
    "RandConVIRTAugment",
    "RandConVIRTAugmentd",
    "RandConVIRTAugmentD",
    "RandConVIRTAugmentDict",
    "convirt_augmentations",
]


def _pair(value: float | Sequence[float], name: str) -> tuple[float, float]:
    if isinstance(value, (int, float)):
        return float(value), float(value)
    values = tuple(float(v) for v in value)
    if len(values) != 2 or values[0] > values[1]:
        raise ValueError(f"{name} must be a number or a (low, high) pair, got {value!r}")
    return values  # type: ignore[return-value]


def convirt_augmentations(
    spatial_size: int | Sequence[int] = 224,
    spatial_dims: int = 2,
    crop_scale: float | Sequence[float] = (0.6, 1.0),
    flip_prob: float = 0.5,
    flip_axis: int = -1,
    rotate_degrees: float = 20.0,
    translate: float = 0.1,
    scale: float = 0.05,
    affine_prob: float = 1.0,
    brightness: float = 0.4,
    contrast: float = 0.4,
    intensity_prob: float = 1.0,
    blur_sigma: float | Sequence[float] = (0.1, 3.0),
    blur_prob: float = 1.0,
) -> list[Transform]:
    """The list of MONAI array transforms making ConVIRT's augmentation (for a channel-first image).

    Args:
        spatial_size: output size (an int for a square/cube).
        spatial_dims: 2 or 3.
        crop_scale: range of the crop's size relative to the image, per axis.
        flip_prob: probability of a flip along ``flip_axis``.
        flip_axis: spatial axis of the flip (-1: the last, the horizontal axis of an ``(H, W)`` image).
        rotate_degrees: largest rotation (in-plane for 2D; about each axis for 3D).
        translate: largest translation as a fraction of the output size.
        scale: largest relative zoom of the affine (``1 +/- scale``).
        affine_prob: probability of the affine transform.
        brightness: largest relative brightness change (``1 +/- brightness``).
        contrast: largest relative contrast change around the mean.
        intensity_prob: probability of each intensity change.
        blur_sigma: range of the Gaussian blur's sigma (pixels).
        blur_prob: probability of the blur.

    Returns:
        The transforms, to be put in a ``Compose`` (or used through :class:`RandConVIRTAugment`).
    """
    size = (int(spatial_size),) * spatial_dims if isinstance(spatial_size, (int, np.integer)) else tuple(spatial_size)
    if len(size) != spatial_dims:
        raise ValueError(f"spatial_size {spatial_size} does not have {spatial_dims} dimensions")
    low, high = _pair(crop_scale, "crop_scale")
    sigma = _pair(blur_sigma, "blur_sigma")
    angle = math.radians(float(rotate_degrees))
    rotate = angle if spatial_dims == 2 else (angle,) * 3
    transforms: list[Transform] = [
        RandScaleCrop(roi_scale=low, max_roi_scale=high, random_size=True, random_center=True),
        Resize(spatial_size=size, mode="bilinear" if spatial_dims == 2 else "trilinear", anti_aliasing=False),
        RandFlip(prob=flip_prob, spatial_axis=flip_axis % spatial_dims),
        RandAffine(
            prob=affine_prob,
            rotate_range=rotate,
            translate_range=tuple(translate * s for s in size),
            scale_range=(scale,) * spatial_dims,
            spatial_size=size,
            cache_grid=True,
            padding_mode="zeros",
        ),
        RandScaleIntensity(factors=brightness, prob=intensity_prob),
        RandScaleIntensityFixedMean(factors=contrast, prob=intensity_prob, fixed_mean=True),
        RandGaussianSmooth(sigma_x=sigma, sigma_y=sigma, sigma_z=sigma, prob=blur_prob),
        EnsureType(data_type="tensor", dtype=torch.float32, track_meta=False),
    ]
    return transforms


class RandConVIRTAugment(Randomizable, Transform):
    """ConVIRT's image augmentation of one channel-first image (see the module docstring).

    Args:
        spatial_size: output size.
        spatial_dims: 2 or 3.
        kwargs: the other arguments of :func:`convirt_augmentations`.

    Example:
        >>> import torch
        >>> augment = RandConVIRTAugment(spatial_size=64).set_random_state(seed=0)
        >>> augment(torch.rand(1, 80, 96)).shape
        torch.Size([1, 64, 64])
    """

    backend = ["torch", "numpy"]

    def __init__(self, spatial_size: int | Sequence[int] = 224, spatial_dims: int = 2, **kwargs: Any) -> None:
        self.pipeline = Compose(convirt_augmentations(spatial_size, spatial_dims, **kwargs))

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> RandConVIRTAugment:
        """Seed every inner transform."""
        super().set_random_state(seed, state)
        self.pipeline.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        """Draws happen inside the inner transforms."""

    def __call__(self, image: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Augment ``(C, *spatial)`` into ``(C, *spatial_size)`` float32."""
        return self.pipeline(image)


class RandConVIRTAugmentd(Randomizable, MapTransform):
    """Dictionary version of :class:`RandConVIRTAugment`; each key gets its own draws.

    Args:
        keys: image keys (usually ``"image"``).
        spatial_size: output size.
        spatial_dims: 2 or 3.
        allow_missing_keys: do not raise when a key is absent.
        kwargs: the other arguments of :func:`convirt_augmentations`.
    """

    backend = RandConVIRTAugment.backend

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: int | Sequence[int] = 224,
        spatial_dims: int = 2,
        allow_missing_keys: bool = False,
        **kwargs: Any,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.augment = RandConVIRTAugment(spatial_size, spatial_dims, **kwargs)

    def set_random_state(
        self, seed: int | None = None, state: np.random.RandomState | None = None
    ) -> RandConVIRTAugmentd:
        """Seed this transform and its array transform."""
        super().set_random_state(seed, state)
        self.augment.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        """Draws happen per key in :meth:`__call__`."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Augment each key's image."""
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.augment(d[key])
        return d


RandConVIRTAugmentD = RandConVIRTAugmentDict = RandConVIRTAugmentd
