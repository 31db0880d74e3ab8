"""Dictionary transforms of medssl: the twins of :mod:`medssl.transforms.array` (MONAI style).

- :class:`LoadVolumed`: load NIfTI files or DICOM series under several keys; empty entries (None, "", []) count as
  missing so that a datalist can say ``"T2": null`` for a study without T2.
- :class:`StackSequencesd`: stack a study's MR sequences on a reference grid into one named-channel image, with a
  presence mask, and keep the segmentation (``label``) aligned with it.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform, ResampleToMatch

from medssl.exceptions import InputFileError
from medssl.transforms.array import MR_SEQUENCES, LoadVolume, StackSequences, same_grid

__all__ = [
    "LoadVolumed",
    "LoadVolumeD",
    "LoadVolumeDict",
    "StackSequencesd",
    "StackSequencesD",
    "StackSequencesDict",
]


def _is_empty(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, list | tuple):
        return len(value) == 0
    return False


def _case_of(data: Mapping[Hashable, Any]) -> str | None:
    for key in ("case_key", "study_key", "case_id"):
        if data.get(key):
            return str(data[key])
    return None


class LoadVolumed(MapTransform):
    """Dictionary twin of :class:`medssl.transforms.LoadVolume`.

    Each key holds a NIfTI path, a DICOM folder, or the list of a DICOM series' files. An empty entry (None, an
    empty string or list) is missing: with ``allow_missing_keys`` it becomes None (later transforms such as
    :class:`StackSequencesd` apply their missing-input policy), otherwise it raises.

    Args:
        keys: keys to load.
        ensure_channel_first: add (or move) the channel axis first.
        dtype: output dtype.
        salt: salt of the keys in DICOM metadata (default ``$MEDSSL_SALT``).
        workers: threads reading DICOM files.
        invert_monochrome1: invert MONOCHROME1 DICOM images.
        allow_missing_keys: skip absent keys and turn empty entries into None instead of raising.

    Raises:
        InputFileError: an entry is empty and ``allow_missing_keys`` is False.
    """

    def __init__(
        self,
        keys: KeysCollection,
        ensure_channel_first: bool = False,
        dtype: Any = np.float32,
        salt: str | None = None,
        workers: int | None = None,
        invert_monochrome1: bool = True,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.loader = LoadVolume(
            ensure_channel_first=ensure_channel_first,
            dtype=dtype,
            salt=salt,
            workers=workers,
            invert_monochrome1=invert_monochrome1,
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Load every key.

        Args:
            data: an item of a datalist.

        Returns:
            A copy with MetaTensors (or None for empty entries) under the keys.
        """
        d = dict(data)
        for key in self.key_iterator(d):
            if _is_empty(d[key]):
                if not self.allow_missing_keys:
                    raise InputFileError(
                        f"{key!r} is empty (set allow_missing_keys to treat it as missing)", _case_of(d)
                    )
                d[key] = None
                continue
            d[key] = self.loader(d[key])
        return d


class StackSequencesd(MapTransform):
    """Dictionary twin of :class:`medssl.transforms.StackSequences`, keeping the label aligned.

    Reads the sequences under ``keys`` (channel-first MetaTensors, e.g. from
    ``LoadVolumed(ensure_channel_first=True)``), writes the stacked ``(C, x, y, z)`` image under ``output_key`` with
    ``channel_def``, ``presence`` and ``reference`` in its metadata, the presence mask (float tensor ``(C,)``) under
    ``presence_key``, and resamples ``label_key`` with nearest-neighbour interpolation onto the stack's grid when it
    is not on it already (BraTS segmentations usually are). A sequence absent from the item, or None, is missing
    and follows ``missing``.

    Args:
        keys: the sequences, in channel order (the channel order is this order, never the item's).
        reference: the sequence whose grid the stack takes.
        output_key: where the stacked image goes.
        missing: ``error`` (raise :class:`medssl.exceptions.MissingSequenceError` naming the case and the
            sequences) or ``zeros`` (zero channel, presence 0).
        presence_key: where the presence mask goes (None: only in the image's metadata).
        label_key: segmentation to keep aligned (None: none).
        mode: interpolation of the sequences.
        padding_mode: padding outside a sequence's field of view.
        delete_inputs: remove the per-sequence images from the item once stacked (saves memory in caching datasets).
        allow_missing_keys: kept for MONAI compatibility; missing sequences follow ``missing`` whatever its value.
    """

    def __init__(
        self,
        keys: KeysCollection = MR_SEQUENCES,
        reference: str = "T1C",
        output_key: str = "image",
        missing: str = "error",
        presence_key: str | None = "presence",
        label_key: str | None = "label",
        mode: str | int = "bilinear",
        padding_mode: str = "zeros",
        delete_inputs: bool = True,
        allow_missing_keys: bool = True,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.stacker = StackSequences(
            channel_def=[str(k) for k in self.keys],
            reference=reference,
            missing=missing,
            mode=mode,
            padding_mode=padding_mode,
        )
        self.output_key = output_key
        self.presence_key = presence_key
        self.label_key = label_key
        self.delete_inputs = delete_inputs
        self.label_resample = ResampleToMatch(mode="nearest", padding_mode="zeros")

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Stack one item's sequences.

        Args:
            data: an item whose sequence keys hold channel-first MetaTensors (or None / nothing when missing).

        Returns:
            A copy with the stacked image, the presence mask and the aligned label.
        """
        d = dict(data)
        images = {str(k): d.get(k) for k in self.keys}
        stacked = self.stacker(images, case=_case_of(d))
        if self.delete_inputs:
            for key in self.keys:
                if key != self.output_key:
                    d.pop(key, None)
        d[self.output_key] = stacked
        if self.presence_key is not None:
            d[self.presence_key] = stacked.meta["presence"].clone()
        if self.label_key is not None and d.get(self.label_key) is not None:
            d[self.label_key] = self._align_label(d[self.label_key], stacked)
        return d

    def _align_label(self, label: Any, grid: MetaTensor) -> Any:
        if not isinstance(label, MetaTensor) or same_grid(label, grid):
            return label
        dtype = label.dtype
        aligned = self.label_resample(label, img_dst=grid)
        return aligned.to(dtype) if dtype != torch.float32 else aligned


LoadVolumeD = LoadVolumeDict = LoadVolumed
StackSequencesD = StackSequencesDict = StackSequencesd
