"""Datalists: MONAI's list-of-dicts JSON (the Medical Segmentation Decathlon format), with patient-level splits.

A datalist is the contract between the data layer and everything that trains or evaluates. It is a JSON object with
metadata keys and one list of items per split (``training``, ``validation``, ``test``), readable with
``monai.data.load_decathlon_datalist`` and with :func:`load_datalist`, which also validates it. Every item carries a
``patient_key`` (and a ``case_key``) so that splits and folds can be checked for patient leakage. Paths are relative
to the datalist's folder (or absolute); see ``data_manifests/README.md`` for the keys each layout uses.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from medssl.exceptions import DatalistError

__all__ = [
    "SPLITS",
    "DATALIST_VERSION",
    "write_datalist",
    "read_datalist",
    "load_datalist",
    "validate_datalist",
    "check_no_patient_leak",
]

SPLITS = ("training", "validation", "test")
DATALIST_VERSION = 1
REQUIRED_ITEM_KEYS = ("patient_key", "case_key")


def check_no_patient_leak(splits: Mapping[str, Iterable[Mapping[str, Any]]], where: str | None = None) -> None:
    """Raise if a patient appears in more than one split.

    Args:
        splits: ``{split name: items}``.
        where: the datalist named in the error.

    Raises:
        DatalistError: a patient key is in two splits.
    """
    owner: dict[str, str] = {}
    for split, items in splits.items():
        for item in items:
            key = item.get("patient_key")
            if key is None:
                continue
            previous = owner.setdefault(key, split)
            if previous != split:
                raise DatalistError(f"patient {key} is in both {previous!r} and {split!r}: the split leaks", where)


def validate_datalist(data: Mapping[str, Any], where: str | os.PathLike | None = None) -> None:
    """Check a datalist object against the medssl datalist schema.

    Args:
        data: the parsed JSON object.
        where: the file named in errors.

    Raises:
        DatalistError: not an object, no split list, an item without ``patient_key``/``case_key``, a case twice, or
            a patient in two splits.
    """
    if not isinstance(data, Mapping):
        raise DatalistError("a datalist must be a JSON object with split lists", where)
    present = [s for s in SPLITS if s in data]
    if not present:
        raise DatalistError(f"no split list: expected at least one of {list(SPLITS)}", where)
    seen: set[str] = set()
    for split in present:
        items = data[split]
        if not isinstance(items, list):
            raise DatalistError(f"{split!r} must be a list of items", where)
        for index, item in enumerate(items):
            if not isinstance(item, Mapping):
                raise DatalistError(f"{split}[{index}] is {type(item).__name__}, expected an object", where)
            absent = [k for k in REQUIRED_ITEM_KEYS if k not in item]
            if absent:
                raise DatalistError(f"{split}[{index}] lacks {absent}", where)
            if item["case_key"] in seen:
                raise DatalistError(f"case {item['case_key']} appears twice", where)
            seen.add(item["case_key"])
    check_no_patient_leak({s: data[s] for s in present}, where=None if where is None else os.fspath(where))


def write_datalist(
    path: str | os.PathLike,
    splits: Mapping[str, list[dict[str, Any]]],
    **metadata: Any,
) -> Path:
    """Validate and write a datalist.

    Args:
        path: the JSON file to write; parent folders are created.
        splits: ``{"training": [...], "validation": [...], "test": [...]}`` (any non-empty subset).
        metadata: top-level keys such as ``name``, ``layout``, ``channel_def``, ``labels``, ``description``.

    Returns:
        The path written.
    """
    path = Path(path)
    data: dict[str, Any] = {"medssl_datalist_version": DATALIST_VERSION, **metadata}
    for split, items in splits.items():
        if split not in SPLITS:
            raise DatalistError(f"unknown split {split!r}; expected one of {list(SPLITS)}", path)
        data[split] = list(items)
        data[f"num{split.capitalize()}"] = len(items)
    validate_datalist(data, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=_json_default) + "\n")
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def read_datalist(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a datalist without resolving paths.

    Args:
        path: the datalist JSON.

    Returns:
        The parsed object.

    Raises:
        DatalistError: missing file, invalid JSON, or schema violation.
    """
    path = Path(path)
    if not path.is_file():
        raise DatalistError("no such file", path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise DatalistError(f"invalid JSON: {error}", path) from error
    validate_datalist(data, path)
    return data


def load_datalist(
    path: str | os.PathLike,
    split: str = "training",
    base_dir: str | os.PathLike | None = None,
    is_segmentation: bool = False,
) -> list[dict[str, Any]]:
    """Validate a datalist and return one split's items with absolute paths (MONAI's loader resolves them).

    Args:
        path: the datalist JSON.
        split: ``training``, ``validation`` or ``test``.
        base_dir: folder relative paths start from (the datalist's folder by default).
        is_segmentation: resolve ``label`` as a path even when the file does not exist yet.

    Returns:
        The split's items.

    Raises:
        DatalistError: invalid datalist or missing split.
    """
    from monai.data import load_decathlon_datalist  # imported here: monai costs seconds to import

    data = read_datalist(path)
    if split not in data:
        raise DatalistError(f"no {split!r} split (has {[s for s in SPLITS if s in data]})", path)
    return load_decathlon_datalist(path, is_segmentation=is_segmentation, data_list_key=split, base_dir=base_dir)
