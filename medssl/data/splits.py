"""Patient-level train/validation/test splits and grouped K-fold cross-validation that never leak a patient.

Items (datalist dicts) are grouped by ``patient_key``: every item of a patient (several studies, BraTS time points)
lands in the same split and the same fold. Splits are drawn by scikit-learn (``GroupShuffleSplit``, or
``StratifiedShuffleSplit`` over patients when stratifying; ``GroupKFold`` / ``StratifiedGroupKFold`` for folds), so they
are deterministic given the seed and the set of patients. Fractions count patients, not items.

Stratification uses one label per patient, the most frequent value of ``stratify_key`` among the patient's items (ties
go to the smallest value). When a class has too few patients to be stratified, the split falls back to an unstratified
grouped split and logs a warning; folds use ``StratifiedGroupKFold``, which stratifies as well as the groups allow.

A split is saved with the results as the case keys of each split plus the parameters that drew it
(:func:`save_splits`), and re-applied to a datalist with :func:`apply_splits`.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from medssl.data.datalist import SPLITS, check_no_patient_leak
from medssl.exceptions import DatalistError
from medssl.log import get_logger

__all__ = [
    "patient_groups",
    "split_by_patient",
    "grouped_folds",
    "assign_folds",
    "splits_record",
    "save_splits",
    "load_splits",
    "apply_splits",
]

logger = get_logger(__name__)


def patient_groups(items: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """The ``patient_key`` of each item.

    Args:
        items: datalist items.

    Returns:
        An array of patient keys, one per item.

    Raises:
        DatalistError: an item has no ``patient_key``.
    """
    keys = []
    for index, item in enumerate(items):
        key = item.get("patient_key")
        if not key:
            raise DatalistError(
                f"item {index} ({item.get('case_key', 'no case_key')}) has no patient_key: cannot split " "by patient"
            )
        keys.append(str(key))
    return np.asarray(keys, dtype=object)


def _patient_labels(items: Sequence[Mapping[str, Any]], groups: np.ndarray, stratify_key: str) -> dict[str, str]:
    """One label per patient: the most frequent value of ``stratify_key`` among its items."""
    values: dict[str, Counter] = {}
    for index, (item, group) in enumerate(zip(items, groups, strict=True)):
        if stratify_key not in item or item[stratify_key] is None:
            raise DatalistError(f"item {index} ({item.get('case_key')}) has no {stratify_key!r} to stratify on")
        values.setdefault(group, Counter())[str(item[stratify_key])] += 1
    return {g: sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[0][0] for g, c in values.items()}


def _draw_patients(
    patients: np.ndarray, labels: np.ndarray | None, n_draw: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split an array of patients into (kept, drawn) with ``n_draw`` drawn, stratified when labels allow."""
    from sklearn.model_selection import GroupShuffleSplit, StratifiedShuffleSplit

    if n_draw <= 0:
        return patients, patients[:0]
    index = np.arange(len(patients))
    if labels is not None:
        try:
            splitter = StratifiedShuffleSplit(n_splits=1, test_size=n_draw, random_state=seed)
            kept, drawn = next(splitter.split(index, labels))
            return patients[kept], patients[drawn]
        except ValueError as error:  # a class with a single patient, or fewer draws than classes
            logger.warning("cannot stratify this split (%s): drawing patients without stratification", error)
    splitter = GroupShuffleSplit(n_splits=1, test_size=n_draw, random_state=seed)
    kept, drawn = next(splitter.split(index, groups=patients))
    return patients[kept], patients[drawn]


def _n_draw(n: int, fraction: float) -> int:
    return 0 if fraction <= 0 else max(1, int(round(fraction * n)))


def split_by_patient(
    items: Sequence[Mapping[str, Any]],
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    stratify_key: str | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Split items into training, validation and test sets by patient.

    Args:
        items: datalist items, each with a ``patient_key``.
        val_fraction: share of patients in ``validation`` (0 for none).
        test_fraction: share of patients in ``test`` (0 for none).
        seed: random seed; the same seed and patients give the same split.
        stratify_key: item key whose per-patient value is kept in similar proportions across splits.

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}`` (each in the input order; a split with fraction 0
        is empty). At least one patient goes to each split with a positive fraction.

    Raises:
        DatalistError: bad fractions, items without ``patient_key`` (or ``stratify_key``), or too few patients.
    """
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise DatalistError(f"{name} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise DatalistError(f"val_fraction + test_fraction must be below 1, got {val_fraction + test_fraction}")
    groups = patient_groups(items)
    patients = np.asarray(sorted(set(groups)), dtype=object)
    n = len(patients)
    n_test, n_val = _n_draw(n, test_fraction), _n_draw(n, val_fraction)
    if n - n_test - n_val < 1:
        raise DatalistError(f"{n} patients cannot fill training, {n_val} validation and {n_test} test patients")
    label_of = _patient_labels(items, groups, stratify_key) if stratify_key else None

    def labels(subset: np.ndarray) -> np.ndarray | None:
        return None if label_of is None else np.asarray([label_of[p] for p in subset])

    rest, test = _draw_patients(patients, labels(patients), n_test, seed)
    train, val = _draw_patients(rest, labels(rest), n_val, seed + 1)
    owner = {**{p: "training" for p in train}, **{p: "validation" for p in val}, **{p: "test" for p in test}}
    splits: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLITS}
    for item, group in zip(items, groups, strict=True):
        splits[owner[group]].append(dict(item))
    check_no_patient_leak(splits)
    return splits


def grouped_folds(
    items: Sequence[Mapping[str, Any]],
    k: int = 5,
    seed: int = 0,
    stratify_key: str | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """K folds of items grouped by patient (stratified when ``stratify_key`` is given).

    Args:
        items: datalist items, each with a ``patient_key``.
        k: number of folds (at least 2, at most the number of patients).
        seed: random seed (patients are shuffled before being dealt to folds).
        stratify_key: item key to stratify on (``StratifiedGroupKFold``); ``GroupKFold`` when None.

    Returns:
        ``[(train indices, test indices), ...]`` for each fold: every item is in exactly one test fold, and a
        patient's items are all in the same one.

    Raises:
        DatalistError: ``k`` out of range or items without ``patient_key`` (or ``stratify_key``).
    """
    from sklearn.model_selection import GroupKFold, StratifiedGroupKFold

    groups = patient_groups(items)
    n_patients = len(set(groups))
    if not 2 <= k <= n_patients:
        raise DatalistError(f"k must be between 2 and the number of patients ({n_patients}), got {k}")
    index = np.arange(len(items))
    if stratify_key:
        label_of = _patient_labels(items, groups, stratify_key)
        labels = np.asarray([label_of[g] for g in groups])
        splitter = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        folds = list(splitter.split(index, labels, groups))
    else:
        splitter = GroupKFold(n_splits=k, shuffle=True, random_state=seed)
        folds = list(splitter.split(index, groups=groups))
    return [(np.asarray(train), np.asarray(test)) for train, test in folds]


def assign_folds(
    items: Sequence[Mapping[str, Any]],
    k: int = 5,
    seed: int = 0,
    stratify_key: str | None = None,
) -> list[dict[str, Any]]:
    """Copies of the items with a ``fold`` key (0 to k - 1), grouped by patient, as in MONAI Auto3DSeg datalists.

    Args:
        items: datalist items, each with a ``patient_key``.
        k: number of folds.
        seed: random seed.
        stratify_key: item key to stratify on.

    Returns:
        The items (input order) with ``fold`` set.
    """
    result = [dict(item) for item in items]
    for fold, (_, test) in enumerate(grouped_folds(items, k, seed, stratify_key)):
        for index in test:
            result[index]["fold"] = fold
    return result


def splits_record(splits: Mapping[str, Sequence[Mapping[str, Any]]], **parameters: Any) -> dict[str, Any]:
    """What to save of a split: the case keys of each split (and folds) plus the parameters that drew it.

    Args:
        splits: ``{split name: items}``.
        parameters: e.g. ``seed``, ``val_fraction``, ``test_fraction``, ``stratify_key``.

    Returns:
        ``{"parameters": {...}, "splits": {name: [case keys]}, "folds": {case key: fold}}`` (no paths, no PHI).
    """
    import sklearn

    record: dict[str, Any] = {"parameters": {**parameters, "scikit_learn": sklearn.__version__}, "splits": {}}
    folds = {}
    for name, items in splits.items():
        record["splits"][name] = [str(item["case_key"]) for item in items]
        folds.update({str(item["case_key"]): int(item["fold"]) for item in items if "fold" in item})
    if folds:
        record["folds"] = folds
    return record


def save_splits(path: str | os.PathLike, splits: Mapping[str, Sequence[Mapping[str, Any]]], **parameters: Any) -> Path:
    """Write :func:`splits_record` as JSON (next to the results that used the split).

    Args:
        path: output JSON.
        splits: ``{split name: items}``.
        parameters: the split's parameters.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(splits_record(splits, **parameters), indent=2) + "\n")
    return path


def load_splits(path: str | os.PathLike) -> dict[str, Any]:
    """Read a split record written by :func:`save_splits`.

    Args:
        path: the JSON file.

    Returns:
        The record.

    Raises:
        DatalistError: missing or malformed file.
    """
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise DatalistError(f"cannot read the split record: {error}", path) from error
    if not isinstance(record, dict) or not isinstance(record.get("splits"), dict):
        raise DatalistError("not a split record (no 'splits' object)", path)
    return record


def apply_splits(items: Sequence[Mapping[str, Any]], record: Mapping[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Re-create a saved split on a list of items (e.g. a datalist rebuilt later).

    Args:
        items: items with ``case_key``.
        record: a :func:`splits_record`.

    Returns:
        ``{split name: items}``; ``fold`` keys are restored.

    Raises:
        DatalistError: an item's case is in no split of the record, or a split would leak a patient.
    """
    owner = {case: name for name, cases in record["splits"].items() for case in cases}
    folds = record.get("folds", {})
    splits: dict[str, list[dict[str, Any]]] = {name: [] for name in record["splits"]}
    for item in items:
        case = str(item.get("case_key"))
        if case not in owner:
            raise DatalistError(f"case {case} is in no split of the saved record")
        copy = dict(item)
        if case in folds:
            copy["fold"] = folds[case]
        splits[owner[case]].append(copy)
    check_no_patient_leak(splits)
    return splits
