"""Datalists of the medssl bundles, built at run time from a dataset folder in its public layout.

A bundle config calls one of these through an expression, e.g.::

    "train_datalist": "$medssl.bundle.brats_datalist(@dataset_dir, 'training', datalist=@datalist, seed=@seed, ...)"

and gets the items of one split. The same arguments give the same split in the train, evaluate and inference
configs: the split is drawn by patient (:func:`medssl.data.splits.split_by_patient`, or the dataset's official test
split kept and a validation split drawn from its training part) from the seed, and, when ``splits_file`` is given,
saved there as case keys (:func:`medssl.data.splits.save_splits`) and re-applied from there on later runs, so that
evaluation stays on the cases training never saw even if the folder gains cases. A prebuilt medssl datalist
(``medssl datalist ... --out datalist.json``) replaces the folder scan with ``datalist=<path>``; its splits are used
as they are.

The split ``"all"`` returns every item (inference on a new folder, no labels needed).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medssl.data.datalist import SPLITS, load_datalist, read_datalist
from medssl.exceptions import DatalistError
from medssl.log import get_logger

__all__ = [
    "SPLIT_NAMES",
    "MAMMO_LAYOUTS",
    "select_split",
    "brats_datalist",
    "brats_et_label",
    "mammo_datalist",
]

logger = get_logger(__name__)

SPLIT_NAMES = SPLITS + ("all",)
MAMMO_LAYOUTS = ("vindr-mammo", "cbis-ddsm")


def _check_split(split: str) -> None:
    if split not in SPLIT_NAMES:
        raise DatalistError(f"unknown split {split!r}; expected one of {list(SPLIT_NAMES)}")


def _write_json_atomic(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON through a temporary file and a rename, so that concurrent ranks never leave a torn file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "w") as stream:
        json.dump(data, stream, indent=2)
        stream.write("\n")
    os.replace(tmp, path)


def select_split(
    items: Sequence[Mapping[str, Any]],
    split: str,
    draw: Any,
    splits_file: str | os.PathLike | None = None,
    parameters: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The items of one split: from a saved split record when ``splits_file`` exists, else drawn (and saved).

    Args:
        items: every item of the dataset (with ``case_key`` and ``patient_key``).
        split: ``training``, ``validation``, ``test`` or ``all``.
        draw: callable ``items -> {split name: items}`` drawing the split from its seed.
        splits_file: where the split record is kept (None: always draw, save nothing).
        parameters: the parameters of the draw, saved with the record.

    Returns:
        The items of ``split`` (copies), in the input order.

    Raises:
        DatalistError: an unknown split, or a case of the folder that the saved record does not know (the folder
            changed since the split was saved: remove the record to draw a new split, knowingly).
    """
    from medssl.data.splits import apply_splits, load_splits, splits_record

    _check_split(split)
    if split == "all":
        return [dict(item) for item in items]
    path = Path(splits_file) if splits_file else None
    if path is not None and path.is_file():
        record = load_splits(path)
        try:
            splits = apply_splits(items, record)
        except DatalistError as error:
            raise DatalistError(
                f"{error.problem}: the dataset (or $MEDSSL_SALT) changed since this split was saved; remove the "
                "record to draw a new split",
                path,
            ) from error
    else:
        splits = draw(items)
        if path is not None:
            _write_json_atomic(path, splits_record(splits, **dict(parameters or {})))
            logger.info("split saved to %s", path)
    return [dict(item) for item in splits.get(split, [])]


def _from_datalist(path: str | os.PathLike, split: str) -> list[dict[str, Any]]:
    """Items of a prebuilt medssl datalist (paths resolved against its folder); ``all`` joins every split."""
    if split != "all":
        return load_datalist(path, split)
    data = read_datalist(path)
    items: list[dict[str, Any]] = []
    for name in SPLITS:
        if name in data:
            items.extend(load_datalist(path, name))
    return items


def _binary_labels(
    items: list[dict[str, Any]], column: str, where: str, keep_unlabelled: bool = False
) -> list[dict[str, Any]]:
    """Put ``column`` under ``label`` as 0/1 (-1: unknown).

    Items without the column are reported and left out, or kept without ``label`` when ``keep_unlabelled``
    (inference). A value other than 0, 1 or -1 raises: a wrong column must not pass as a label.
    """
    kept = []
    for item in items:
        case = item.get("case_key")
        value = item.get(column)
        if value is None or value == "":
            if keep_unlabelled:
                kept.append({k: v for k, v in item.items() if k != "label"})
                continue
            logger.warning("%s: case %s has no %r: left out", where, case, column)
            continue
        try:
            number = int(value)
        except (TypeError, ValueError):
            number = None
        if number not in (-1, 0, 1):
            raise DatalistError(f"case {case}: {column!r} is {value!r}; a binary label must be 0, 1 or -1", where)
        copy = {k: v for k, v in item.items() if k != "label"}
        copy["label"] = number
        kept.append(copy)
    if keep_unlabelled and any("label" not in item for item in kept):
        # A batch cannot mix items with and without a label: unlabelled inference drops every label.
        logger.info("%s: some cases have no %r: predicting without labels", where, column)
        kept = [{k: v for k, v in item.items() if k != "label"} for item in kept]
    return kept


def brats_datalist(
    dataset_dir: str | os.PathLike,
    split: str = "training",
    *,
    datalist: str | os.PathLike | None = None,
    naming: str | None = None,
    case_labels: str | os.PathLike | None = None,
    label_column: str | None = None,
    require_label: bool | None = None,
    missing: str = "skip",
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    stratify_key: str | None = None,
    splits_file: str | os.PathLike | None = None,
    salt: str | None = None,
) -> list[dict[str, Any]]:
    """Items of one split of a BraTS 2021/2023 folder (or of a prebuilt datalist), for segmentation or classification.

    Segmentation items hold ``T1``, ``T1C``, ``T2``, ``FLAIR`` and the segmentation under ``label``. With
    ``label_column`` (classification), ``label`` is that column instead (0/1, joined from ``case_labels.csv`` of the
    folder, e.g. ``tumour`` or ``high_grade`` of the synthetic data, or a column of the prebuilt datalist) and the
    segmentation is not needed.

    Args:
        dataset_dir: the BraTS folder (cases anywhere below it); unused when ``datalist`` is given.
        split: ``training``, ``validation``, ``test`` or ``all``.
        datalist: a prebuilt medssl datalist JSON to use instead of scanning ``dataset_dir`` (its splits as saved).
        naming: ``2021`` or ``2023`` (detected from the file names when None).
        case_labels: per-case CSV with a ``case`` column (``DATASET/case_labels.csv`` when it exists and None).
        label_column: the classification label column (None: segmentation, ``label`` is the segmentation file).
            Cases without it are left out (reported), except in the split ``all``, where they are kept unlabelled.
        require_label: whether a case needs its segmentation to be complete (default: for segmentation, except for
            the split ``all``, which serves inference).
        missing: a case lacking a sequence (or a required segmentation): ``skip`` it, ``include`` it (the missing
            sequence becomes a zero channel with presence 0 in the transforms), or raise (``error``).
        val_fraction: share of patients in ``validation``.
        test_fraction: share of patients in ``test``.
        seed: split seed.
        stratify_key: item key to stratify the split on (e.g. ``label`` for classification; None: none).
        splits_file: the split record to apply (when it exists) or to write (when it does not).
        salt: key salt (default ``$MEDSSL_SALT``).

    Returns:
        The split's items (absolute paths), each with ``case_key`` and ``patient_key``.

    Raises:
        DatalistError: no BraTS files, a bad split or label, or a saved split that no longer fits the folder.
    """
    from medssl.data.layouts.brats import brats_items
    from medssl.data.splits import split_by_patient

    _check_split(split)
    if datalist:
        items = _from_datalist(datalist, split)
        if label_column:
            items = _binary_labels(items, label_column, os.fspath(datalist), keep_unlabelled=split == "all")
        return items
    if require_label is None:
        require_label = label_column is None and split != "all"
    items, _ = brats_items(
        dataset_dir,
        naming=naming,
        salt=salt,
        case_labels=case_labels,
        missing=missing,
        require_label=require_label,
    )
    if not items:
        raise DatalistError("no usable BraTS case", dataset_dir)
    if label_column:
        items = _binary_labels(items, label_column, os.fspath(dataset_dir), keep_unlabelled=split == "all")

    def draw(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        return split_by_patient(rows, val_fraction, test_fraction, seed, stratify_key)

    parameters = {
        "layout": "brats",
        "val_fraction": val_fraction,
        "test_fraction": test_fraction,
        "seed": seed,
        "stratify_key": stratify_key,
        "label_column": label_column,
    }
    return select_split(items, split, draw, splits_file, parameters)


def brats_et_label(dataset_dir: str | os.PathLike, datalist: str | os.PathLike | None = None) -> int:
    """The enhancing-tumour label value of a BraTS dataset: 4 (2018-2021 naming) or 3 (2023 naming).

    Args:
        dataset_dir: the BraTS folder (its file names tell the naming).
        datalist: a prebuilt datalist whose metadata (``et_label`` or ``naming``) says it instead.

    Returns:
        3 or 4, for ``ConvertToMultiChannelBasedOnBratsClassesd(et_label=...)``.

    Raises:
        DatalistError: neither the datalist metadata nor the folder tells the naming.
    """
    from medssl.data.layouts.brats import NAMINGS, detect_naming

    if datalist:
        data = read_datalist(datalist)
        if "et_label" in data:
            return int(data["et_label"])
        if str(data.get("naming")) in NAMINGS:
            return NAMINGS[str(data["naming"])].et_label
        raise DatalistError("no 'et_label' or 'naming' in the datalist metadata: set et_label in the config", datalist)
    return NAMINGS[detect_naming(dataset_dir)].et_label


def _mammo_layout(layout: str) -> Any:
    if layout == "vindr-mammo":
        from medssl.data.layouts import vindr_mammo as module
    elif layout == "cbis-ddsm":
        from medssl.data.layouts import cbis_ddsm as module
    else:
        raise DatalistError(f"unknown mammography layout {layout!r}; expected one of {list(MAMMO_LAYOUTS)}")
    return module


def mammo_datalist(
    dataset_dir: str | os.PathLike,
    split: str = "training",
    *,
    layout: str = "vindr-mammo",
    datalist: str | os.PathLike | None = None,
    missing: str = "zeros",
    birads_threshold: int = 4,
    official_split: bool = True,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    stratify_key: str | None = "label",
    splits_file: str | os.PathLike | None = None,
    salt: str | None = None,
) -> list[dict[str, Any]]:
    """Exam items (four views, breast and exam labels) of one split of a VinDr-Mammo or CBIS-DDSM folder.

    Args:
        dataset_dir: the dataset folder in its public layout; unused when ``datalist`` is given.
        split: ``training``, ``validation``, ``test`` or ``all``.
        layout: ``vindr-mammo`` (BI-RADS labels) or ``cbis-ddsm`` (pathology labels).
        datalist: a prebuilt medssl exam datalist JSON to use instead (its splits as saved).
        missing: missing-view policy of the layout (``zeros``, ``duplicate``, ``drop``, ``error``).
        birads_threshold: VinDr-Mammo: a breast is positive when its BI-RADS is at least this.
        official_split: keep the dataset's official test split and draw only the validation split (False: draw
            training/validation/test by patient).
        val_fraction: share of (training) patients in ``validation``.
        test_fraction: share of patients in ``test`` when ``official_split`` is False.
        seed: split seed.
        stratify_key: item key to stratify the drawn splits on.
        splits_file: the split record to apply (when it exists) or to write (when it does not).
        salt: key salt (default ``$MEDSSL_SALT``).

    Returns:
        The split's items: ``L-CC``, ``R-CC``, ``L-MLO``, ``R-MLO`` (absent or empty when missing), ``label``,
        ``label_L``, ``label_R`` (-1: unknown), ``case_key``, ``patient_key`` ...

    Raises:
        DatalistError: an unknown layout or split, no usable exam, or a saved split that no longer fits the folder.
    """
    from medssl.data.mammo import split_official
    from medssl.data.splits import split_by_patient

    _check_split(split)
    if datalist:
        return _from_datalist(datalist, split)
    module = _mammo_layout(layout)
    options: dict[str, Any] = {"salt": salt, "missing": missing, "birads_threshold": birads_threshold}
    items, _, _ = module.build(dataset_dir, **options)
    if not items:
        raise DatalistError("no usable exam", dataset_dir)

    def draw(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
        if official_split:
            return split_official(rows, val_fraction, seed, stratify_key)
        return split_by_patient(rows, val_fraction, test_fraction, seed, stratify_key)

    parameters = {
        "layout": layout,
        "official_split": official_split,
        "val_fraction": val_fraction,
        "test_fraction": None if official_split else test_fraction,
        "seed": seed,
        "stratify_key": stratify_key,
        "birads_threshold": birads_threshold,
    }
    return select_split(items, split, draw, splits_file, parameters)
