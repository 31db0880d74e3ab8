"""Array transforms of medssl (MONAI style; dictionary twins in :mod:`medssl.transforms.dictionary`).

- :class:`LoadVolume`: MONAI's ``LoadImage`` that always reads with :class:`medssl.data.nifti.VolumeReader` (a NIfTI
  file or one DICOM series) and never falls back to another reader, so a rejected series raises a medssl error
  instead of being re-read, mis-stacked, by ``PydicomReader``.
- :class:`StackSequences`: resample MR sequences onto the grid of a reference sequence and stack them as named
  channels (``channel_def``), with a policy for missing sequences.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.data.utils import affine_to_spacing
from monai.transforms import Compose, LoadImage, ResampleToMatch, Transform
from monai.utils import TransformBackends

from medssl.data.nifti import VolumeReader
from medssl.exceptions import MedsslError, MissingSequenceError

__all__ = [
    "MR_SEQUENCES",
    "MISSING_POLICIES",
    "LoadVolume",
    "StackSequences",
    "RaisingCompose",
    "find_medssl_error",
    "same_grid",
]

MR_SEQUENCES = ("T1C", "T1", "T2", "FLAIR")
MISSING_POLICIES = ("error", "zeros")
# Keys of the stacked image's metadata: the same for every case whatever its sources (NIfTI or DICOM), so that
# MONAI's collate can batch cases whose reference sequence came from different formats.
_STACK_META_KEYS = ("filename_or_obj", "space", "original_affine")


def same_grid(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-4) -> bool:
    """Whether two channel-first MetaTensors share spatial shape and affine.

    Args:
        a: first image.
        b: second image.
        atol: tolerance on the affine entries (mm).

    Returns:
        True when no resampling is needed to go from one to the other.
    """
    if tuple(a.shape[1:]) != tuple(b.shape[1:]):
        return False
    affine_a = np.asarray(getattr(a, "affine", np.eye(4)), dtype=float)
    affine_b = np.asarray(getattr(b, "affine", np.eye(4)), dtype=float)
    return bool(np.allclose(affine_a, affine_b, atol=atol))


def find_medssl_error(error: BaseException | None) -> MedsslError | None:
    """The medssl error behind an exception, following ``__cause__``/``__context__`` (MONAI wraps errors).

    MONAI's ``apply_transform`` re-raises every exception of a transform as ``RuntimeError("applying transform
    ...")``; batch code uses this to report the real problem (file, case and reason).

    Args:
        error: an exception, possibly wrapping others.

    Returns:
        The first :class:`MedsslError` in the chain, or None.
    """
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, MedsslError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


class RaisingCompose(Compose):
    """MONAI ``Compose`` that lets medssl errors through as themselves.

    ``Compose`` turns any error of a transform into ``RuntimeError("applying transform ...")``; this subclass
    re-raises the underlying :class:`MedsslError` (missing sequence, unreadable file, broken geometry ...) so that
    callers can catch it by type. Other errors keep MONAI's wrapping. Arguments are ``Compose``'s.
    """

    def __call__(self, input_, *args, **kwargs):
        """Apply the transforms.

        Args:
            input_: the data.
            args: positional arguments of ``Compose.__call__``.
            kwargs: keyword arguments of ``Compose.__call__``.

        Returns:
            The transformed data.
        """
        try:
            return super().__call__(input_, *args, **kwargs)
        except RuntimeError as error:
            cause = find_medssl_error(error)
            if cause is None:
                raise
            raise cause from error


class LoadVolume(LoadImage):
    """Load one volume (a NIfTI file, or one DICOM series: folder, file or list of files) as a MetaTensor.

    ``LoadImage`` with :class:`medssl.data.nifti.VolumeReader` passed at call time: errors (unreadable file, broken
    series geometry) propagate as medssl errors naming the file. A reader given to ``LoadImage``'s constructor instead
    is tried first and, when it raises, ``LoadImage`` silently tries its default readers, among them MONAI's
    ``PydicomReader``, which would return a DICOM series this loader rejected, sorted by InstanceNumber.

    Args:
        ensure_channel_first: add (or move) the channel axis first.
        dtype: dtype of the output (float32 by default, like ``LoadImage``).
        salt: salt of the keys in DICOM metadata (default ``$MEDSSL_SALT``).
        workers: threads reading DICOM files.
        invert_monochrome1: invert MONOCHROME1 DICOM images.
        image_only: return only the image (True) or ``(image, metadata)``.
    """

    def __init__(
        self,
        ensure_channel_first: bool = False,
        dtype: Any = np.float32,
        salt: str | None = None,
        workers: int | None = None,
        invert_monochrome1: bool = True,
        image_only: bool = True,
    ) -> None:
        # LoadImage.__init__ would instantiate every default MONAI reader (a few ms, and warnings about optional GPU
        # decoders), none of which this loader ever uses: set LoadImage's attributes directly instead.
        Transform.__init__(self)
        self.auto_select = False
        self.image_only = image_only
        self.dtype = dtype
        self.ensure_channel_first = ensure_channel_first
        self.simple_keys = False
        self.pattern = None
        self.sep = "."
        self.expanduser = True
        self.volume_reader = VolumeReader(salt=salt, workers=workers, invert_monochrome1=invert_monochrome1)
        self.readers = [self.volume_reader]

    def __call__(self, filename: Sequence[str | os.PathLike] | str | os.PathLike, reader: Any = None):
        """Load a volume.

        Args:
            filename: a NIfTI path, a DICOM folder, or the files of one DICOM series.
            reader: another reader to use instead (call-time, no fallback).

        Returns:
            The MetaTensor (and its metadata when ``image_only`` is False).
        """
        return super().__call__(filename, reader=reader or self.volume_reader)


class StackSequences(Transform):
    """Resample MR sequences onto a reference sequence's grid and stack them as named channels.

    Every present sequence is resampled (MONAI ``ResampleToMatch``) onto the grid (affine and shape) of the
    reference sequence, which is left untouched, and the channels are concatenated in ``channel_def`` order. The
    output keeps the reference's affine and carries ``channel_def`` (``{"0": "T1C", "1": "T1", ...}``), ``presence``
    (float tensor ``(C,)``, 1 for a sequence that was there) and ``reference`` in its metadata; channel names never
    follow from position alone.

    Missing sequences (absent or None): ``missing="error"`` raises :class:`MissingSequenceError` naming the case and
    the sequences; ``missing="zeros"`` fills them with zeros (presence 0). When the reference itself is missing under
    ``zeros``, the first present sequence in ``channel_def`` order gives the grid, recorded as ``reference``.

    Args:
        channel_def: sequence names in channel order.
        reference: the sequence whose grid the stack takes.
        missing: ``error`` or ``zeros``.
        mode: interpolation of ``ResampleToMatch`` (``bilinear``, ``nearest`` or a spline order).
        padding_mode: padding outside a sequence's field of view (``zeros`` by default: no signal there).

    Raises:
        MissingSequenceError: a sequence is missing under ``error``, or none is present.
        MedsslError: a sequence has more than one channel, or an unknown name or policy is configured.
    """

    backend = [TransformBackends.TORCH]

    def __init__(
        self,
        channel_def: Sequence[str] = MR_SEQUENCES,
        reference: str = "T1C",
        missing: str = "error",
        mode: str | int = "bilinear",
        padding_mode: str = "zeros",
    ) -> None:
        self.channel_def = tuple(str(c) for c in channel_def)
        if len(set(self.channel_def)) != len(self.channel_def) or not self.channel_def:
            raise MedsslError(f"channel_def must be distinct names, got {list(self.channel_def)}")
        if reference not in self.channel_def:
            raise MedsslError(f"reference {reference!r} is not one of {list(self.channel_def)}")
        if missing not in MISSING_POLICIES:
            raise MedsslError(f"missing must be one of {list(MISSING_POLICIES)}, got {missing!r}")
        self.reference = reference
        self.missing = missing
        self.resample = ResampleToMatch(mode=mode, padding_mode=padding_mode)

    def __call__(self, images: Mapping[str, torch.Tensor | None], case: str | None = None) -> MetaTensor:
        """Stack the sequences of one case.

        Args:
            images: sequence name to channel-first ``(1, x, y, z)`` MetaTensor (or None / absent when missing).
            case: the case named in errors (a case or study key).

        Returns:
            ``(C, x, y, z)`` float32 MetaTensor on the reference grid.
        """
        present = {name: images.get(name) for name in self.channel_def if images.get(name) is not None}
        absent = [name for name in self.channel_def if name not in present]
        if not present:
            raise MissingSequenceError(f"none of the sequences {list(self.channel_def)} is present", case)
        if absent and self.missing == "error":
            raise MissingSequenceError(
                f"missing sequence(s) {absent} (policy missing='error'; missing='zeros' stacks a zero channel with "
                "presence 0 instead)",
                case,
            )
        for name, image in present.items():
            if not isinstance(image, MetaTensor):
                raise MedsslError(
                    f"sequence {name} is a {type(image).__name__}, expected a MetaTensor with an affine", case
                )
            if image.ndim < 2 or image.shape[0] != 1:
                raise MedsslError(
                    f"sequence {name} has shape {tuple(image.shape)}: expected one channel first (1, x, y, z); "
                    "a 4D file (several volumes) cannot be one sequence",
                    case,
                )
        reference = self.reference if self.reference in present else next(iter(present))
        grid = present[reference]
        channels = []
        for name in self.channel_def:
            image = present.get(name)
            if image is None:
                channels.append(torch.zeros(grid.shape[1:], dtype=torch.float32))
            elif name == reference or same_grid(image, grid):
                channels.append(image.as_tensor()[0].to(torch.float32))
            else:
                channels.append(self.resample(image, img_dst=grid).as_tensor()[0].to(torch.float32))
        data = torch.stack(channels, dim=0)
        meta: dict[str, Any] = {k: grid.meta[k] for k in _STACK_META_KEYS if k in grid.meta}
        meta.update(
            {
                "spacing": affine_to_spacing(np.asarray(grid.affine, dtype=float), r=len(grid.shape) - 1),
                "spatial_shape": np.asarray(grid.shape[1:]),
                "original_channel_dim": 0,
                "channel_def": {str(i): name for i, name in enumerate(self.channel_def)},
                "presence": torch.tensor([float(n in present) for n in self.channel_def], dtype=torch.float32),
                "reference": reference,
            }
        )
        return MetaTensor(data, affine=grid.affine.clone(), meta=meta)
