"""CheXpert (``train.csv`` / ``valid.csv``) to datalist items, and the CheXpert label policies MIMIC-CXR shares.

CheXpert-v1.0 (and its downsampled ``-small`` copy) ships a folder with ``train.csv`` and ``valid.csv``::

    CheXpert-v1.0-small/train.csv       Path, Sex, Age, Frontal/Lateral, AP/PA, No Finding, Enlarged
                                        Cardiomediastinum, Cardiomegaly, Lung Opacity, Lung Lesion, Edema,
                                        Consolidation, Pneumonia, Atelectasis, Pneumothorax, Pleural Effusion,
                                        Pleural Other, Fracture, Support Devices
    CheXpert-v1.0-small/valid.csv       the same columns; labels by radiologists' consensus (1.0 / 0.0 only)
    CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg

``Path`` starts with the dataset folder's own name (``CheXpert-v1.0-small/train/...``); it is resolved against the
folder's parent, the folder itself, or the folder with that first component dropped, whichever exists. The labels
of ``train.csv`` come from the CheXpert labeller: ``1.0`` positive, ``0.0`` negative, ``-1.0`` uncertain, blank
not mentioned. An optional ``test.csv`` (same columns, e.g. the CheXpert test set's labels) becomes the test split.

Labels in the items (the same for MIMIC-CXR, :mod:`medssl.data.layouts.mimic_cxr`):

- one key per observation, in snake case (``no_finding``, ``enlarged_cardiomediastinum``, ``cardiomegaly``,
  ``lung_opacity``, ``lung_lesion``, ``edema``, ``consolidation``, ``pneumonia``, ``atelectasis``, ``pneumothorax``,
  ``pleural_effusion``, ``pleural_other``, ``fracture``, ``support_devices``), 0.0 or 1.0;
- ``label`` (the 14 values in :data:`medssl.data.reports.CHEXPERT_OBSERVATIONS` order) and ``label_mask`` (1.0 where
  the value is to be used, 0.0 where it is ignored), for multi-label training with a masked loss.

Uncertain (-1) labels follow the CheXpert paper's policies: ``ones`` (U-Ones: -1 -> 1), ``zeros`` (U-Zeros:
-1 -> 0) or ``ignore`` (U-Ignore: value 0, mask 0). Blank labels (not mentioned) are 0 with mask 0 (``blank="ignore"``,
the default) or 0 with mask 1 (``blank="zeros"``, the usual "unmentioned is negative" reading).

Items also carry ``image``, ``view`` (``PA``, ``AP``, ``LL``, ``RL``, or ``FRONTAL``/``LATERAL`` when AP/PA is
blank), ``frontal`` (bool), ``sex``, ``age``, ``case_key`` (salted hash of ``Path``), ``patient_key``
(``patient00001``) and ``study_key`` (``patient00001/study1``), and ``official_split``. Options keep frontal views
only or one image per study (PA before AP before other frontal views before laterals, then by path).
"""

from __future__ import annotations

import argparse
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from medssl.data.keys import Keyer
from medssl.data.reports import CHEXPERT_OBSERVATIONS
from medssl.exceptions import DatalistError
from medssl.log import get_logger

__all__ = [
    "LAYOUT",
    "HELP",
    "CHEXPERT_COLUMNS",
    "UNCERTAINTY_POLICIES",
    "BLANK_POLICIES",
    "OBSERVATION_KEYS",
    "SPLIT_FILES",
    "observation_key",
    "normalise_policy",
    "normalise_cxr_view",
    "add_label_arguments",
    "label_fields",
    "view_rank",
    "one_per_study",
    "official_splits",
    "chexpert_items",
    "chexpert_metadata",
    "add_arguments",
    "build",
]

logger = get_logger(__name__)

LAYOUT = "chexpert"
HELP = "CheXpert(-small) train.csv/valid.csv with 14 observations (U-Ones/U-Zeros/U-Ignore uncertainty policies)"

CHEXPERT_COLUMNS: tuple[str, ...] = ("Path", "Sex", "Age", "Frontal/Lateral", "AP/PA")
"""CheXpert's columns before the 14 observations."""

UNCERTAINTY_POLICIES = ("ones", "zeros", "ignore")
BLANK_POLICIES = ("ignore", "zeros")
SPLIT_FILES = {"train.csv": "training", "valid.csv": "validation", "test.csv": "test"}
_POLICY_ALIASES = {
    "u-ones": "ones",
    "u-zeros": "zeros",
    "u-ignore": "ignore",
    "uones": "ones",
    "uzeros": "zeros",
    "uignore": "ignore",
    "ones": "ones",
    "zeros": "zeros",
    "ignore": "ignore",
}
_VIEW_ORDER = ("PA", "AP", "FRONTAL", "LATERAL", "LL", "RL")


def observation_key(observation: str) -> str:
    """The item key of an observation: ``"Pleural Effusion"`` -> ``"pleural_effusion"``."""
    return re.sub(r"[^a-z0-9]+", "_", observation.lower()).strip("_")


OBSERVATION_KEYS: dict[str, str] = {o: observation_key(o) for o in CHEXPERT_OBSERVATIONS}
"""Observation name -> item key."""


def normalise_policy(policy: str) -> str:
    """``"U-Ones"``, ``"ones"`` ... -> ``"ones"``, ``"zeros"`` or ``"ignore"``.

    Raises:
        DatalistError: an unknown policy.
    """
    name = _POLICY_ALIASES.get(str(policy).strip().lower())
    if name is None:
        raise DatalistError(
            f"unknown uncertainty policy {policy!r}; expected one of {UNCERTAINTY_POLICIES} "
            "(or U-Ones, U-Zeros, U-Ignore)"
        )
    return name


def _value(raw: Any) -> float | None:
    """A CSV label cell as 1.0 / 0.0 / -1.0, or None when blank."""
    if raw is None:
        return None
    if isinstance(raw, str):
        raw = raw.strip()
        if not raw:
            return None
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"label value {raw!r} is not 1, 0, -1 or blank") from None
    if math.isnan(value):
        return None
    if value not in (1.0, 0.0, -1.0):
        raise ValueError(f"label value {raw!r} is not 1, 0, -1 or blank")
    return value


def label_fields(
    row: Mapping[str, Any] | None,
    policy: str = "ones",
    blank: str = "ignore",
) -> dict[str, Any]:
    """The label keys of an item from a CSV row's 14 observation cells.

    Args:
        row: ``{observation name: cell}`` (1.0/0.0/-1.0/blank; missing names count as blank); None for an image
            without labels (every value 0, every mask 0).
        policy: uncertainty policy, ``ones``, ``zeros`` or ``ignore`` (or ``U-Ones`` ...).
        blank: ``ignore`` (mask 0) or ``zeros`` (mask 1) for blank cells.

    Returns:
        ``{<observation key>: 0.0 | 1.0, ..., "label": [14 floats], "label_mask": [14 floats]}``.

    Raises:
        DatalistError: unknown policy.
        ValueError: a cell that is not 1, 0, -1 or blank.
    """
    policy = normalise_policy(policy)
    if blank not in BLANK_POLICIES:
        raise DatalistError(f"unknown blank policy {blank!r}; expected one of {BLANK_POLICIES}")
    values, mask = [], []
    for observation in CHEXPERT_OBSERVATIONS:
        value = None if row is None else _value(row.get(observation))
        if value is None:
            values.append(0.0)
            mask.append(1.0 if blank == "zeros" and row is not None else 0.0)
        elif value == -1.0:
            values.append(1.0 if policy == "ones" else 0.0)
            mask.append(0.0 if policy == "ignore" else 1.0)
        else:
            values.append(value)
            mask.append(1.0)
    fields: dict[str, Any] = {OBSERVATION_KEYS[o]: v for o, v in zip(CHEXPERT_OBSERVATIONS, values)}
    fields["label"] = values
    fields["label_mask"] = mask
    return fields


def view_rank(view: str) -> int:
    """Preference of a view for one-image-per-study datalists (smaller first): PA, AP, other frontal, laterals."""
    return _VIEW_ORDER.index(view) if view in _VIEW_ORDER else len(_VIEW_ORDER)


def one_per_study(items: Sequence[dict[str, Any]], order_key: str = "image") -> list[dict[str, Any]]:
    """Keep one item per ``study_key``: the best view (:func:`view_rank`), then the smallest ``order_key``.

    Args:
        items: items with ``study_key`` and ``view``.
        order_key: tie-breaker key.

    Returns:
        The kept items, in input order.
    """
    best: dict[str, tuple[int, str, int]] = {}
    for index, item in enumerate(items):
        rank = (view_rank(str(item.get("view", ""))), str(item.get(order_key, "")), index)
        key = item["study_key"]
        if key not in best or rank < best[key]:
            best[key] = rank
    keep = {rank[2] for rank in best.values()}
    return [item for index, item in enumerate(items) if index in keep]


def official_splits(items: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]] | None:
    """The dataset's own split, from the items' ``official_split`` keys.

    Args:
        items: items of :func:`chexpert_items` or :func:`medssl.data.layouts.mimic_cxr.mimic_cxr_items`.

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}`` (empty splits included), or None when an item
        has no official split.
    """
    splits: dict[str, list[dict[str, Any]]] = {"training": [], "validation": [], "test": []}
    for item in items:
        split = item.get("official_split")
        if split not in splits:
            return None
        splits[split].append(dict(item))
    return splits


def _resolve(root: Path, relative: str) -> Path | None:
    """Find a CheXpert ``Path`` cell on disk (relative to the folder's parent, the folder, or without its prefix)."""
    parts = Path(relative).parts
    candidates = [root.parent / relative, root / relative]
    if len(parts) > 1:
        candidates.append(root.joinpath(*parts[1:]))
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    return None


def _path(path: Path, base_dir: Path | None) -> str:
    return os.path.relpath(path, base_dir) if base_dir is not None else str(path.resolve())


def _read_csv(path: Path) -> list[dict[str, str]]:
    import pandas as pd

    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as error:
        raise DatalistError(f"cannot read the CSV: {error}", path) from error
    absent = [c for c in ("Path", *CHEXPERT_OBSERVATIONS) if c not in frame.columns]
    if absent:
        raise DatalistError(f"not a CheXpert label CSV: no {absent} column(s) (columns: {list(frame.columns)})", path)
    return frame.to_dict("records")


def normalise_cxr_view(value: Any) -> tuple[str, str, bool]:
    """A chest radiograph's view from free text (ViewPosition, CheXpert's AP/PA, a description).

    Args:
        value: ``"PA"``, ``"AP AXIAL"``, ``"LATERAL"``, ``"LL"``, ``"postero-anterior"``, ``"Frontal"`` ...

    Returns:
        ``(view, group, frontal)``: the view in :data:`medssl.data.views.RADIOGRAPHY_VIEWS` (``""`` when unknown or
        ambiguous), its group (``frontal``, ``lateral``, ``decubitus``, ``oblique`` or ``""``, by
        :func:`medssl.data.views.view_group`) and whether it is a frontal view.
    """
    from medssl.data.views import normalise_view, view_group

    view, _, _ = normalise_view(value, mammography=False)
    if view == "?":
        view = ""
    group = view_group(view)
    return view, group, group == "frontal"


def _chexpert_view(frontal_lateral: str, ap_pa: str) -> tuple[str, bool]:
    """View from CheXpert's Frontal/Lateral and AP/PA columns."""
    view, group, frontal = normalise_cxr_view(ap_pa)
    side = frontal_lateral.strip().lower()
    if not view:
        view = "FRONTAL" if side == "frontal" else "LATERAL" if side == "lateral" else ""
        frontal = side == "frontal"
    elif side == "lateral" and frontal:  # a lateral whose AP/PA cell names a frontal projection: trust the column
        view, frontal = "LATERAL", False
    return view, frontal


def chexpert_items(
    root: str | os.PathLike,
    *,
    salt: str | None = None,
    base_dir: str | os.PathLike | None = None,
    policy: str = "ones",
    blank: str = "ignore",
    frontal_only: bool = False,
    study_level: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One datalist item per CheXpert image listed in ``train.csv`` / ``valid.csv`` (/ ``test.csv``).

    Args:
        root: the dataset folder (holding the CSVs).
        salt: key salt (else ``$MEDSSL_SALT``, else the default).
        base_dir: write paths relative to this folder (absolute when None).
        policy: uncertainty policy (``ones``, ``zeros``, ``ignore``).
        blank: blank-label policy (``ignore``, ``zeros``).
        frontal_only: keep frontal views only.
        study_level: keep one image per study (see :func:`one_per_study`).

    Returns:
        ``(items, problems)``; problems are ``{"case", "problem", "action"}`` rows (images that are missing or have
        bad cells are skipped).

    Raises:
        DatalistError: no CSV in the folder, or a CSV without CheXpert's columns.
    """
    root = Path(root)
    policy = normalise_policy(policy)
    if not root.is_dir():
        raise DatalistError("not a folder", root)
    files = [(root / name, split) for name, split in SPLIT_FILES.items() if (root / name).is_file()]
    if not files:
        raise DatalistError(f"no CheXpert CSV ({', '.join(SPLIT_FILES)}) in the folder", root)
    keyer = Keyer(salt)
    base = Path(base_dir).resolve() if base_dir is not None else None
    items: list[dict[str, Any]] = []
    problems: list[dict[str, Any]] = []
    seen: set[str] = set()
    for csv_path, split in files:
        for line, row in enumerate(_read_csv(csv_path), start=2):
            relative = str(row["Path"]).strip()
            where = f"{csv_path.name}:{line}"
            match = re.search(r"(patient\d+)/(study\d+)/", relative)
            if not match:
                problems.append(
                    {"case": where, "problem": f"Path {relative!r} has no patientN/studyN folders", "action": "skipped"}
                )
                continue
            if relative in seen:
                problems.append({"case": where, "problem": f"{relative} listed twice", "action": "skipped"})
                continue
            image = _resolve(root, relative)
            if image is None:
                problems.append({"case": where, "problem": f"image {relative} not found", "action": "skipped"})
                continue
            try:
                labels = label_fields(row, policy, blank)
            except ValueError as error:
                problems.append({"case": where, "problem": str(error), "action": "skipped"})
                continue
            view, frontal = _chexpert_view(str(row.get("Frontal/Lateral", "")), str(row.get("AP/PA", "")))
            if frontal_only and not frontal:
                continue
            seen.add(relative)
            patient, study = match.group(1), f"{match.group(1)}/{match.group(2)}"
            age = str(row.get("Age", "")).strip()
            item: dict[str, Any] = {
                "image": _path(image, base),
                "view": view,
                "frontal": frontal,
                "sex": str(row.get("Sex", "")).strip(),
                "age": int(float(age)) if re.fullmatch(r"\d+(\.0+)?", age) else -1,
                "case_key": keyer.case(f"chexpert:{relative}"),
                "patient_key": keyer.patient(f"chexpert:{patient}"),
                "study_key": keyer.study(f"chexpert:{study}"),
                "official_split": split,
                **labels,
            }
            items.append(item)
    if study_level:
        items = one_per_study(items)
    for problem in problems:
        logger.warning("%s: %s (%s)", problem["case"], problem["problem"], problem["action"])
    return items, problems


def chexpert_metadata(policy: str = "ones", blank: str = "ignore") -> dict[str, Any]:
    """Datalist metadata of a CheXpert datalist.

    Args:
        policy: the uncertainty policy used.
        blank: the blank policy used.

    Returns:
        ``{"name", "layout", "modality", "observations", "observation_keys", "uncertainty_policy", "blank_policy",
        "labels"}``.
    """
    return {
        "name": "CheXpert",
        "layout": LAYOUT,
        "modality": "CR",
        "image_keys": ["image"],
        "observations": list(CHEXPERT_OBSERVATIONS),
        "observation_keys": [OBSERVATION_KEYS[o] for o in CHEXPERT_OBSERVATIONS],
        "uncertainty_policy": normalise_policy(policy),
        "blank_policy": blank,
        "labels": {str(i): o for i, o in enumerate(CHEXPERT_OBSERVATIONS)},
    }


def add_label_arguments(parser: argparse.ArgumentParser) -> None:
    """The label and selection options CheXpert and MIMIC-CXR share."""
    parser.add_argument(
        "--policy",
        choices=UNCERTAINTY_POLICIES,
        default="ones",
        type=normalise_policy,
        help="uncertain (-1) labels: ones (U-Ones, default), zeros (U-Zeros) or ignore (U-Ignore: masked)",
    )
    parser.add_argument(
        "--blank",
        choices=BLANK_POLICIES,
        default="ignore",
        help="blank (unmentioned) labels: value 0 with mask 0 (ignore, default) or mask 1 (zeros)",
    )
    parser.add_argument("--frontal-only", action="store_true", help="keep frontal (PA/AP) images only")
    parser.add_argument(
        "--study-level", action="store_true", help="one image per study (PA, else AP, else another view)"
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``medssl datalist chexpert``."""
    add_label_arguments(parser)


def build(
    source: str | os.PathLike,
    *,
    salt: str | None = None,
    base_dir: str | os.PathLike | None = None,
    policy: str = "ones",
    blank: str = "ignore",
    frontal_only: bool = False,
    study_level: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """Build the items, metadata and problems of a CheXpert folder (the ``medssl datalist`` protocol).

    Args:
        source: the dataset folder.
        salt: key salt.
        base_dir: write paths relative to this folder.
        policy: uncertainty policy.
        blank: blank-label policy.
        frontal_only: frontal images only.
        study_level: one image per study.

    Returns:
        ``(items, metadata, problems)``; items carry ``official_split`` (see :func:`official_splits`).
    """
    items, problems = chexpert_items(
        source,
        salt=salt,
        base_dir=base_dir,
        policy=policy,
        blank=blank,
        frontal_only=frontal_only,
        study_level=study_level,
    )
    return items, chexpert_metadata(policy, blank), problems
