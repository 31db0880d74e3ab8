"""BraTS folders (2021 and 2023 naming) to datalist items.

BraTS ships one folder per case holding four co-registered, skull-stripped 1 mm NIfTI volumes and a segmentation:

=======  ======================================  ==========================================================
naming   file names                              labels
=======  ======================================  ==========================================================
2021     ``BraTS2021_00000_{t1,t1ce,t2,flair,    1 NCR (necrotic tumour core), 2 ED (peritumoral edema),
         seg}.nii.gz`` (also 2018-2020:          4 ET (enhancing tumour)
         ``BraTS20_Training_001_t1.nii.gz``)
2023     ``BraTS-GLI-00000-000-{t1n,t1c,t2w,     1 NCR, 2 SNFH (surrounding FLAIR hyperintensity, i.e.
         t2f,seg}.nii.gz`` (also MEN, MET,       edema), 3 ET
         PED, SSA)
=======  ======================================  ==========================================================

:func:`brats_items` finds the cases anywhere under a folder, detects the naming, and returns one item per case with
the sequences under medssl's channel names (``T1``, ``T1C``, ``T2``, ``FLAIR``), the segmentation as ``label``, a salted
``case_key`` and a ``patient_key``. In the 2021 naming each case is its own patient; in the 2023 naming the last
three digits are the time point, so ``BraTS-GLI-00000-000`` and ``BraTS-GLI-00000-001`` are one patient and always
land in the same split. Per-case columns of a CSV (``case_labels.csv`` written by ``medssl synth brats``, or your own
table with a ``case`` column) are joined onto the items, e.g. a tumour grade for classification.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medssl.data.keys import Keyer
from medssl.exceptions import DatalistError, MissingSequenceError
from medssl.log import get_logger

__all__ = [
    "LAYOUT",
    "HELP",
    "BratsNaming",
    "NAMINGS",
    "CHANNELS",
    "MISSING_POLICIES",
    "CASE_LABELS_FILE",
    "detect_naming",
    "find_cases",
    "brats_items",
    "brats_metadata",
    "read_case_labels",
    "add_arguments",
    "build",
]

logger = get_logger(__name__)

LAYOUT = "brats"
HELP = "BraTS 2021 (_t1, _t1ce, _t2, _flair, _seg) or 2023 (-t1n, -t1c, -t2w, -t2f, -seg) case folders"
CHANNELS: tuple[str, ...] = ("T1", "T1C", "T2", "FLAIR")
MISSING_POLICIES = ("skip", "include", "error")
CASE_LABELS_FILE = "case_labels.csv"


@dataclass(frozen=True)
class BratsNaming:
    """One BraTS file-naming convention.

    Attributes:
        name: ``2021`` or ``2023``.
        separator: between the case name and the file suffix.
        suffixes: medssl key (``T1``, ``T1C``, ``T2``, ``FLAIR``, ``label``) to the file suffix.
        labels: label value to name.
        et_label: the value of the enhancing tumour.
        case_format: how the synthetic generator names case ``index`` at ``timepoint``.
        patient_pattern: regular expression whose ``patient`` group names the patient of a case (None: the case).
    """

    name: str
    separator: str
    suffixes: Mapping[str, str]
    labels: Mapping[int, str]
    et_label: int
    case_format: str
    patient_pattern: str | None = None
    regions: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def file_name(self, case: str, key: str, extension: str = ".nii.gz") -> str:
        """The file name of one key of a case, e.g. ``BraTS2021_00000_t1ce.nii.gz``."""
        return f"{case}{self.separator}{self.suffixes[key]}{extension}"

    def file_pattern(self) -> re.Pattern[str]:
        """A pattern matching this naming's files, with ``case`` and ``suffix`` groups."""
        suffixes = "|".join(sorted(self.suffixes.values(), key=len, reverse=True))
        return re.compile(rf"^(?P<case>.+){re.escape(self.separator)}(?P<suffix>{suffixes})\.nii(?:\.gz)?$")

    def patient_of(self, case: str) -> tuple[str, int | None]:
        """The patient a case belongs to and its time point (None when the naming has none)."""
        if self.patient_pattern:
            match = re.match(self.patient_pattern, case)
            if match:
                return match.group("patient"), int(match.group("timepoint"))
        return case, None


NAMINGS: dict[str, BratsNaming] = {
    "2021": BratsNaming(
        name="2021",
        separator="_",
        suffixes={"T1": "t1", "T1C": "t1ce", "T2": "t2", "FLAIR": "flair", "label": "seg"},
        labels={
            0: "background",
            1: "necrotic tumour core (NCR)",
            2: "peritumoral edema (ED)",
            4: "enhancing tumour (ET)",
        },
        et_label=4,
        case_format="BraTS2021_{index:05d}",
        regions={"TC": (1, 4), "WT": (1, 2, 4), "ET": (4,)},
    ),
    "2023": BratsNaming(
        name="2023",
        separator="-",
        suffixes={"T1": "t1n", "T1C": "t1c", "T2": "t2w", "FLAIR": "t2f", "label": "seg"},
        labels={
            0: "background",
            1: "necrotic tumour core (NCR)",
            2: "surrounding FLAIR hyperintensity (SNFH)",
            3: "enhancing tumour (ET)",
        },
        et_label=3,
        case_format="BraTS-GLI-{index:05d}-{timepoint:03d}",
        patient_pattern=r"^(?P<patient>BraTS-[A-Za-z]+-\d+)-(?P<timepoint>\d+)$",
        regions={"TC": (1, 3), "WT": (1, 2, 3), "ET": (3,)},
    ),
}


def _nifti_files(root: Path) -> list[Path]:
    found = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(
            Path(folder, f) for f in sorted(files) if f.endswith((".nii.gz", ".nii")) and not f.startswith(".")
        )
    return found


def detect_naming(root: str | os.PathLike) -> str:
    """Tell which BraTS naming a folder uses.

    Args:
        root: the dataset folder (cases anywhere below it).

    Returns:
        ``"2021"`` or ``"2023"``.

    Raises:
        DatalistError: no BraTS file, or files of both namings.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatalistError("not a folder", root)
    counts = {name: 0 for name in NAMINGS}
    patterns = {name: naming.file_pattern() for name, naming in NAMINGS.items()}
    for path in _nifti_files(root):
        for name, pattern in patterns.items():
            if pattern.match(path.name):
                counts[name] += 1
    found = [name for name, count in counts.items() if count]
    if not found:
        raise DatalistError(
            "no BraTS files found: expected CASE_{t1,t1ce,t2,flair,seg}.nii.gz (2021) or "
            "CASE-{t1n,t1c,t2w,t2f,seg}.nii.gz (2023)",
            root,
        )
    if len(found) > 1:
        raise DatalistError(f"files of both namings found ({counts}); pass the naming explicitly", root)
    return found[0]


def find_cases(root: str | os.PathLike, naming: str) -> dict[str, dict[str, Path]]:
    """Group a BraTS folder's files by case.

    Args:
        root: the dataset folder.
        naming: ``2021`` or ``2023``.

    Returns:
        ``{case name: {key: path}}`` with keys among ``T1, T1C, T2, FLAIR, label``, sorted by case name.

    Raises:
        DatalistError: two folders hold the same case.
    """
    spec = NAMINGS[naming]
    pattern = spec.file_pattern()
    key_of = {suffix: key for key, suffix in spec.suffixes.items()}
    cases: dict[str, dict[str, Path]] = {}
    folders: dict[str, Path] = {}
    for path in _nifti_files(Path(root)):
        match = pattern.match(path.name)
        if not match:
            continue
        case = match.group("case")
        previous = folders.setdefault(case, path.parent)
        if previous != path.parent:
            raise DatalistError(f"case {case} found in two folders ({previous} and {path.parent})", root)
        key = key_of[match.group("suffix")]
        if key in cases.setdefault(case, {}):
            raise DatalistError(f"case {case} has two {key} files ({cases[case][key].name}, {path.name})", path.parent)
        cases[case][key] = path
    return dict(sorted(cases.items()))


def read_case_labels(path: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """Read a per-case table (a ``case`` column plus any label columns).

    Args:
        path: CSV file.

    Returns:
        ``{case: {column: value}}``; integer-looking values become ints.

    Raises:
        DatalistError: unreadable file or no ``case`` column.
    """
    import pandas as pd

    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as error:
        raise DatalistError(f"cannot read the case labels: {error}", path) from error
    if "case" not in frame.columns:
        raise DatalistError(f"no 'case' column (columns: {list(frame.columns)})", path)
    table: dict[str, dict[str, Any]] = {}
    for row in frame.to_dict("records"):
        case = row.pop("case")
        table[case] = {k: int(v) if re.fullmatch(r"-?\d+", v) else v for k, v in row.items() if v != ""}
    return table


def _path(path: Path, base_dir: Path | None) -> str:
    return os.path.relpath(path, base_dir) if base_dir is not None else str(path.resolve())


def brats_items(
    root: str | os.PathLike,
    *,
    naming: str | None = None,
    salt: str | None = None,
    base_dir: str | os.PathLike | None = None,
    case_labels: str | os.PathLike | None = None,
    missing: str = "skip",
    require_label: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """One datalist item per BraTS case.

    Args:
        root: the dataset folder (cases anywhere below it).
        naming: ``2021`` or ``2023``; detected from the file names when None.
        salt: key salt (else ``$MEDSSL_SALT``, else the default).
        base_dir: write paths relative to this folder (absolute paths when None).
        case_labels: CSV with a ``case`` column whose other columns are added to the items;
            ``ROOT/case_labels.csv`` is used when it exists and this is None.
        missing: a case lacking a sequence (or its segmentation when ``require_label``): ``skip`` it (and report),
            ``include`` it without that key (listed under ``missing``), or raise (``error``).
        require_label: whether a case without segmentation counts as incomplete.

    Returns:
        ``(items, problems)``: items sorted by case name; problems as ``{"case", "problem", "action"}`` rows.

    Raises:
        DatalistError: no BraTS files, mixed namings, or an unknown policy.
        MissingSequenceError: a case is incomplete and ``missing="error"``.
    """
    if missing not in MISSING_POLICIES:
        raise DatalistError(f"unknown missing policy {missing!r}; expected one of {MISSING_POLICIES}")
    root = Path(root)
    naming = naming or detect_naming(root)
    if naming not in NAMINGS:
        raise DatalistError(f"unknown BraTS naming {naming!r}; expected one of {sorted(NAMINGS)}", root)
    spec = NAMINGS[naming]
    keyer = Keyer(salt)
    base = Path(base_dir).resolve() if base_dir is not None else None
    if case_labels is None and (root / CASE_LABELS_FILE).is_file():
        case_labels = root / CASE_LABELS_FILE
    extra = read_case_labels(case_labels) if case_labels is not None else {}

    required = CHANNELS + (("label",) if require_label else ())
    items, problems = [], []
    for case, files in find_cases(root, naming).items():
        absent = [key for key in required if key not in files]
        if absent:
            wanted = ", ".join(spec.file_name(case, k) for k in absent)
            if missing == "error":
                raise MissingSequenceError(f"case {case} lacks {absent} ({wanted})", root)
            action = "skipped" if missing == "skip" or not any(k in files for k in CHANNELS) else "included"
            problems.append({"case": case, "problem": f"missing {', '.join(absent)} ({wanted})", "action": action})
            if action == "skipped":
                continue
        patient, timepoint = spec.patient_of(case)
        item: dict[str, Any] = {key: _path(files[key], base) for key in CHANNELS + ("label",) if key in files}
        item.update(case_key=keyer.case(case), patient_key=keyer.patient(patient), case=case)
        if timepoint is not None:
            item["timepoint"] = timepoint
        if absent:
            item["missing"] = absent
        if extra:
            if case in extra:
                item.update({k: v for k, v in extra[case].items() if k not in item})
            else:
                problems.append({"case": case, "problem": "not in the case labels table", "action": "included"})
        items.append(item)
    for problem in problems:
        logger.warning("%s: %s (%s)", problem["case"], problem["problem"], problem["action"])
    return items, problems


def brats_metadata(naming: str) -> dict[str, Any]:
    """Datalist metadata of a BraTS naming: channel names, label values and evaluation regions.

    Args:
        naming: ``2021`` or ``2023``.

    Returns:
        ``{"name", "layout", "naming", "channel_def", "image_keys", "labels", "label_regions", "et_label"}``.
    """
    spec = NAMINGS[naming]
    return {
        "name": f"BraTS {naming}",
        "layout": LAYOUT,
        "naming": naming,
        "tensorImageSize": "4D",
        "channel_def": {str(i): c for i, c in enumerate(CHANNELS)},
        "image_keys": list(CHANNELS),
        "labels": {str(v): name for v, name in spec.labels.items()},
        "label_regions": {name: list(values) for name, values in spec.regions.items()},
        "et_label": spec.et_label,
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``medssl datalist brats``."""
    parser.add_argument("--naming", choices=sorted(NAMINGS), help="file naming (detected when omitted)")
    parser.add_argument(
        "--case-labels",
        metavar="CSV",
        help=f"per-case columns to add to the items (a 'case' column); SOURCE/{CASE_LABELS_FILE} when present",
    )
    parser.add_argument(
        "--missing",
        choices=MISSING_POLICIES,
        default="skip",
        help="a case lacking a sequence or its segmentation: skip it (default), include it without that key, or fail",
    )
    parser.add_argument(
        "--no-label-required",
        dest="require_label",
        action="store_false",
        help="cases without segmentation are complete (inference or challenge validation data)",
    )


def build(
    source: str | os.PathLike,
    *,
    salt: str | None = None,
    base_dir: str | os.PathLike | None = None,
    naming: str | None = None,
    case_labels: str | os.PathLike | None = None,
    missing: str = "skip",
    require_label: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, Any], list[dict[str, Any]]]:
    """Build the items, metadata and problems of a BraTS folder (the ``medssl datalist`` protocol).

    Args:
        source: the dataset folder.
        salt: key salt.
        base_dir: write paths relative to this folder.
        naming: ``2021`` or ``2023`` (detected when None).
        case_labels: per-case CSV (see :func:`brats_items`).
        missing: ``skip``, ``include`` or ``error``.
        require_label: whether the segmentation is required.

    Returns:
        ``(items, metadata, problems)``.
    """
    naming = naming or detect_naming(source)
    items, problems = brats_items(
        source,
        naming=naming,
        salt=salt,
        base_dir=base_dir,
        case_labels=case_labels,
        missing=missing,
        require_label=require_label,
    )
    return items, brats_metadata(naming), problems
