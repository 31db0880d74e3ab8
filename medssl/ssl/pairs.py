"""Patient-aware positive pairs (MICLe, Azizi et al. 2021): two different images of one patient or study.

Contrastive methods usually pair two augmentations of one image. Medical archives hold more: several views of one
exam (CC and MLO, frontal and lateral), several sequences of one MR study, studies of one patient at several time
points. MICLe takes two *different* images of the same patient as a positive pair, so the representation becomes
invariant to what differs between them (view, sequence, time) and keeps what the patient's images share.

The pieces:

* :func:`image_items` turns exam or study items (one key per view or sequence) into one item per image, keeping
  ``patient_key``/``study_key``, so the views of an exam become the candidates of each other;
* :func:`add_positive_candidates` lists, for every item, the images of the **other** items of its group
  (``level="patient"`` or ``"study"``; a study group is also keyed by its patient, so a group never spans two
  patients, even with colliding study keys). A patient with one image gets an empty list;
* :class:`RandPositived` draws one candidate per item with MONAI's per-transform random state (seeded per item and
  epoch by :class:`medssl.engines.data.SeededDataset`), or falls back to the anchor's own image (then the pair is two
  augmentations of one image, as in SimCLR) when the list is empty, and records which it did;
* :func:`positive_pair_dataset` puts them together for use outside the pretraining engine;
  :func:`write_positive_datalist` writes a datalist whose items already carry their candidates.

The pretraining methods of :mod:`medssl.ssl.methods` call :func:`add_positive_candidates` on the training items
themselves (``positives="patient"`` or ``"study"``), through their ``prepare_items`` step.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, Randomizable

from medssl.exceptions import MedsslError

__all__ = [
    "PairingError",
    "LEVELS",
    "CANDIDATES_KEY",
    "FLAG_KEY",
    "group_of",
    "positive_groups",
    "image_items",
    "add_positive_candidates",
    "RandPositived",
    "RandPositiveD",
    "RandPositiveDict",
    "positive_pair_dataset",
    "write_positive_datalist",
]

#: Grouping levels of positive pairs.
LEVELS = ("patient", "study")
#: Item key holding the images a positive may be drawn from.
CANDIDATES_KEY = "positive_candidates"
#: Item key set by :class:`RandPositived`: 1.0 when the positive is another image, 0.0 for the fallback.
FLAG_KEY = "positive_is_other"


class PairingError(MedsslError):
    """Items that cannot be paired: no patient (or study) key, an unknown level, no candidates listed."""


def _case(item: Mapping[str, Any], index: int | None = None) -> str:
    return str(item.get("case_key") or (f"item {index}" if index is not None else "an item"))


def group_of(item: Mapping[str, Any], level: str = "patient", index: int | None = None) -> tuple[str, ...]:
    """The group an item belongs to: ``(patient_key,)`` or ``(patient_key, study_key)``.

    Args:
        item: a datalist item.
        level: ``patient`` or ``study``.
        index: the item's position (for the error message).

    Returns:
        The group key.

    Raises:
        PairingError: unknown level, or the item lacks the keys.
    """
    if level not in LEVELS:
        raise PairingError(f"pairing level must be one of {LEVELS}, got {level!r}")
    patient = item.get("patient_key")
    if not patient:
        raise PairingError("no patient_key: positives cannot be paired by patient", _case(item, index))
    if level == "patient":
        return (str(patient),)
    study = item.get("study_key")
    if not study:
        raise PairingError("no study_key: positives cannot be paired by study", _case(item, index))
    return (str(patient), str(study))


def positive_groups(items: Sequence[Mapping[str, Any]], level: str = "patient") -> list[list[int]]:
    """Indices of the items of each group, groups in order of first appearance.

    Args:
        items: datalist items.
        level: ``patient`` or ``study``.

    Returns:
        One list of item indices per group.
    """
    groups: dict[tuple[str, ...], list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(group_of(item, level, index), []).append(index)
    return list(groups.values())


def _same_image(a: Any, b: Any) -> bool:
    if isinstance(a, (str, os.PathLike)) and isinstance(b, (str, os.PathLike)):
        return os.path.normpath(os.fspath(a)) == os.path.normpath(os.fspath(b))
    return a == b


def image_items(
    items: Sequence[Mapping[str, Any]],
    image_keys: Sequence[str],
    image_key: str = "image",
    source_key: str = "image_source",
    keep_keys: Sequence[str] = ("patient_key", "study_key", "study_rank", "split"),
) -> list[dict[str, Any]]:
    """One item per image from exam or study items holding several images (views, sequences).

    ``{"case_key": "cas-1", "patient_key": "pat-1", "L-CC": a, "L-MLO": b}`` with ``image_keys=["L-CC", "L-MLO"]``
    gives ``{"image": a, "image_source": "L-CC", "case_key": "cas-1/L-CC", "patient_key": "pat-1",
    "study_key": "cas-1"}`` and the same for ``b``. The study defaults to the source item's ``case_key`` (an exam or
    an MR study is a case). Absent or empty entries are skipped.

    Args:
        items: exam or study items.
        image_keys: the keys holding images.
        image_key: the key of the image in the output items.
        source_key: where the source key (the view or sequence name) goes.
        keep_keys: keys copied from the source item when present.

    Returns:
        The image items, in item order then ``image_keys`` order.

    Raises:
        PairingError: an item without ``case_key``.
    """
    out: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        case = item.get("case_key")
        if not case:
            raise PairingError("no case_key: the image items need one to be told apart", f"item {index}")
        for key in image_keys:
            value = item.get(key)
            if value is None or (isinstance(value, (str, list, tuple)) and len(value) == 0):
                continue
            new = {k: item[k] for k in keep_keys if k in item}
            new.setdefault("study_key", str(case))
            new.update({image_key: value, source_key: str(key), "case_key": f"{case}/{key}"})
            out.append(new)
    return out


def add_positive_candidates(
    items: Sequence[Mapping[str, Any]],
    level: str = "patient",
    image_key: str = "image",
    candidates_key: str = CANDIDATES_KEY,
) -> list[dict[str, Any]]:
    """Copies of the items, each listing the images of the other items of its group under ``candidates_key``.

    An item's own image (or another item holding the very same file) is never its candidate, so a drawn positive is
    always a different image; a patient (or study) with one image gets an empty list.

    Args:
        items: image items (one image under ``image_key`` each).
        level: ``patient`` (any two images of a patient: views, sequences, time points) or ``study`` (two images of
            one study: views of one exam, sequences of one MR study).
        image_key: the image key.
        candidates_key: the key of the candidate list.

    Returns:
        New items (the input is not changed).

    Raises:
        PairingError: an unknown level, or an item without the group keys or the image.
    """
    out = [dict(item) for item in items]
    for index, item in enumerate(out):
        if item.get(image_key) in (None, "", []):
            raise PairingError(f"no {image_key!r} to pair", _case(item, index))
    for group in positive_groups(out, level):
        for i in group:
            own = out[i][image_key]
            out[i][candidates_key] = [
                out[j][image_key] for j in group if j != i and not _same_image(out[j][image_key], own)
            ]
    return out


class RandPositived(Randomizable, MapTransform):
    """Draw each item's positive among its candidates, or fall back to the anchor itself.

    For each key ``k``: ``d[k + postfix]`` becomes one of ``d[candidates_key]`` drawn uniformly (another image of the
    patient or study: a path to load), or, when the list is empty, a copy of ``d[k]`` (the anchor, loaded or not:
    the pair is then two augmentations of one image). ``d[flag_key]`` records which (1.0 or 0.0, a float so that it
    collates); the candidate list is removed (lists of different lengths do not collate).

    Args:
        keys: the anchor image key(s).
        candidates_key: where :func:`add_positive_candidates` put the candidates.
        postfix: the positive goes to ``key + postfix``.
        flag_key: where the flag goes (``None``: not written).
        allow_missing_keys: skip absent image keys.

    Raises:
        PairingError: an item without ``candidates_key`` (its candidates were never listed: an unpaired item must
            not silently become a SimCLR pair).
    """

    def __init__(
        self,
        keys: KeysCollection = "image",
        candidates_key: str = CANDIDATES_KEY,
        postfix: str = "_positive",
        flag_key: str | None = FLAG_KEY,
        allow_missing_keys: bool = False,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        self.candidates_key = candidates_key
        self.postfix = postfix
        self.flag_key = flag_key

    def randomize(self, data: Any = None) -> None:
        """Draws happen per key in :meth:`__call__`."""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        """Add the positive (and the flag) to a copy of the item."""
        d = dict(data)
        if self.candidates_key not in d:
            raise PairingError(
                f"no {self.candidates_key!r} list: list the candidates first (medssl.ssl.pairs.add_positive_candidates,"
                " or the method's prepare_items)",
                d.get("case_key"),
            )
        candidates = list(d.pop(self.candidates_key) or [])
        for key in self.key_iterator(d):
            if candidates:
                d[f"{key}{self.postfix}"] = candidates[int(self.R.randint(len(candidates)))]
                other = 1.0
            else:
                anchor = d[key]
                d[f"{key}{self.postfix}"] = anchor.clone() if torch.is_tensor(anchor) else anchor
                other = 0.0
            if self.flag_key is not None:
                d[self.flag_key] = other
        return d


RandPositiveD = RandPositiveDict = RandPositived


def positive_pair_dataset(
    items: Sequence[Mapping[str, Any]],
    transforms: Sequence[Callable] = (),
    level: str = "patient",
    image_key: str = "image",
    seed: int = 0,
) -> Any:
    """A dataset of anchors with their positive, deterministic given ``seed`` (and the epoch).

    ``dataset[(epoch, index)]`` (or ``dataset[index]`` for epoch 0) is item ``index`` with ``image_key + "_positive"``
    drawn by :class:`RandPositived`, then ``transforms`` applied (loading both images, augmenting them ...).

    Args:
        items: image items with ``patient_key`` (and ``study_key`` for ``level="study"``).
        transforms: transforms applied after the draw.
        level: ``patient`` or ``study``.
        image_key: the image key.
        seed: the seed of the draws (with the epoch and the index).

    Returns:
        A :class:`medssl.engines.data.SeededDataset` (items that fail are reported and skipped by its collate).
    """
    from monai.transforms import Compose

    from medssl.engines.data import SeededDataset

    paired = add_positive_candidates(items, level, image_key)
    pipeline = Compose([RandPositived(image_key), *transforms])
    return SeededDataset(paired, pipeline, seed=seed, skip_errors=False)


def write_positive_datalist(
    path: str | os.PathLike,
    items: Sequence[Mapping[str, Any]],
    level: str = "patient",
    image_key: str = "image",
    image_keys: Sequence[str] | None = None,
    split: str = "training",
    **metadata: Any,
) -> Path:
    """Write a datalist whose items are single images with their positive candidates listed.

    For ``medssl pretrain --method micle`` on data whose items hold several images (exams, MR studies) or when the
    pretraining engine does not call the method's ``prepare_items``.

    Args:
        path: the datalist JSON to write.
        items: items (already resolved: absolute paths).
        level: ``patient`` or ``study``.
        image_key: the image key of the written items.
        image_keys: when given, explode each item into one item per key first (:func:`image_items`).
        split: the split name of the written items.
        metadata: other top-level datalist keys.

    Returns:
        The path written.
    """
    from medssl.data.datalist import write_datalist

    if image_keys:
        items = image_items(items, image_keys, image_key)
    paired = add_positive_candidates(items, level, image_key)
    counts = np.array([len(item[CANDIDATES_KEY]) for item in paired])
    metadata.setdefault("positives", {"level": level, "items_with_other_images": int((counts > 0).sum())})
    return write_datalist(path, {split: paired}, **metadata)
