"""Multi-sequence MR: the early-fusion input of a study, from its T1/T1C/T2/FLAIR as DICOM series or NIfTI files.

:func:`mr_stack_transforms` builds the whole chain, usable from a MONAI bundle config::

    {"_target_": "medssl.transforms.mr_stack_transforms", "sequences": ["T1C", "T1", "T2", "FLAIR"],
     "reference": "T1C", "missing": "zeros"}
"""

from __future__ import annotations

from collections.abc import Sequence

from monai.transforms import Orientationd

from medssl.transforms.array import MR_SEQUENCES, RaisingCompose
from medssl.transforms.dictionary import LoadVolumed, StackSequencesd

__all__ = ["mr_stack_transforms"]


def mr_stack_transforms(
    sequences: Sequence[str] = MR_SEQUENCES,
    reference: str | None = None,
    missing: str = "error",
    *,
    image_key: str = "image",
    presence_key: str | None = "presence",
    label_key: str | None = "label",
    orientation: str | None = None,
    mode: str | int = "bilinear",
    padding_mode: str = "zeros",
    salt: str | None = None,
    workers: int | None = None,
) -> RaisingCompose:
    """Load a study's sequences (DICOM series or NIfTI) and stack them on a reference grid as named channels.

    The chain: :class:`LoadVolumed` (every sequence and the label, channel first, missing entries allowed) ->
    :class:`StackSequencesd` (resample onto ``reference``'s grid, stack in ``sequences`` order, ``channel_def`` and
    ``presence`` in the metadata, label resampled with nearest neighbour when needed) -> optionally ``Orientationd``
    of image and label to ``orientation`` (e.g. ``"RAS"``). Without ``orientation`` the stacked image has exactly the
    reference sequence's affine and shape, so predictions can be saved on the reference's original grid.

    Args:
        sequences: the keys of the datalist items holding each sequence, in channel order.
        reference: the sequence whose grid is used (default: the first of ``sequences``).
        missing: ``error`` or ``zeros`` (see :class:`StackSequencesd`).
        image_key: where the stacked image goes.
        presence_key: where the presence mask goes (None: metadata only).
        label_key: segmentation key kept aligned (None for no label).
        orientation: axis codes to reorient image and label to after stacking (None: keep the reference's).
        mode: interpolation of the non-reference sequences.
        padding_mode: padding outside a sequence's field of view.
        salt: salt of the keys in DICOM metadata (default ``$MEDSSL_SALT``).
        workers: threads reading DICOM files.

    Returns:
        The ``Compose`` (a :class:`RaisingCompose`: medssl errors come out as themselves, not wrapped in MONAI's
        ``RuntimeError``); apply it to an item ``{"case_key", "T1C": ..., "T1": ..., ..., "label": ...}``.
    """
    sequences = [str(s) for s in sequences]
    reference = reference or sequences[0]
    load_keys = sequences + ([label_key] if label_key else [])
    transforms = [
        LoadVolumed(keys=load_keys, ensure_channel_first=True, salt=salt, workers=workers, allow_missing_keys=True),
        StackSequencesd(
            keys=sequences,
            reference=reference,
            output_key=image_key,
            missing=missing,
            presence_key=presence_key,
            label_key=label_key,
            mode=mode,
            padding_mode=padding_mode,
        ),
    ]
    if orientation:
        keys = [image_key] + ([label_key] if label_key else [])
        transforms.append(Orientationd(keys=keys, axcodes=orientation, allow_missing_keys=True))
    return RaisingCompose(transforms)
