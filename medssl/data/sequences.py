"""MR sequence inference: T1, T1C (post-contrast), T2, FLAIR, DWI, ADC or OTHER, from DICOM headers.

Scanners and sites name series freely (``t1_mprage_sag_p2``, ``AX T1 POST GAD``, ``t2_tirm_tra_dark-fluid``,
``ep2d_diff_3scan_trace_ADC``, ``Ax FLAIR T2``), so inference reads the text tags in order of how much sites curate them
(SeriesDescription, then ProtocolName, then SequenceName), then ImageType (``ADC``, ``TRACEW``, ``LOCALIZER``), and
falls back on the acquisition physics (TR, TE, TI) when no text rule fires. Every rule lives in one table,
:data:`SEQUENCE_RULES` (and :data:`PHYSICS_RULES`), checked in order, first match wins; the table is what
``docs/sequences.md`` shows and what the tests exercise row by row. Post-contrast is decided separately (contrast
cues in any text tag, or a ContrastBolusAgent), so a T1 rule yields T1C when contrast is present.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "SEQUENCES",
    "SequenceRule",
    "PhysicsRule",
    "SEQUENCE_RULES",
    "PHYSICS_RULES",
    "CONTRAST_PATTERN",
    "has_contrast",
    "infer_sequence",
    "explain_sequence",
]

SEQUENCES = ("T1", "T1C", "T2", "FLAIR", "DWI", "ADC", "OTHER")


@dataclass(frozen=True)
class SequenceRule:
    """One text rule: if ``pattern`` matches the tag's lower-cased text, the series is ``sequence``.

    Attributes:
        sequence: the result; ``T1`` becomes ``T1C`` when contrast is present.
        pattern: a regular expression (searched, case-insensitive) over the text.
        tags: the tags the rule reads, in order.
        example: a real-world value the rule is meant for (tested).
    """

    sequence: str
    pattern: str
    tags: tuple[str, ...]
    example: str


@dataclass(frozen=True)
class PhysicsRule:
    """A fallback on acquisition parameters (ms); ``None`` bounds are open."""

    sequence: str
    min_tr: float | None = None
    max_tr: float | None = None
    min_te: float | None = None
    max_te: float | None = None
    min_ti: float | None = None
    example: str = ""


_TEXT = ("SeriesDescription", "ProtocolName", "SequenceName")
# Word boundaries: scanners separate words with space, underscore, dash, dot, plus, slash or backslash.
_B = r"(?:^|[\s_\-./+*()\[\]:,\\])"
_E = r"(?:$|[\s_\-./+*()\[\]:,\\0-9])"

SEQUENCE_RULES: tuple[SequenceRule, ...] = (
    SequenceRule(
        "OTHER",
        r"localizer|scout|survey|3[\s_-]?plane[\s_-]?loc|aahead",
        ("ImageType",) + _TEXT,
        "ORIGINAL\\PRIMARY\\LOCALIZER",
    ),
    SequenceRule(
        "ADC",
        _B + r"(adc|d?adc[\s_-]?map|apparent[\s_-]?diffusion)" + _E,
        ("ImageType",) + _TEXT,
        "ep2d_diff_3scan_trace_p2_ADC",
    ),
    SequenceRule(
        "OTHER",
        _B + r"(fa|colfa|tensor[\s_-]?b0|exp|eadc|swi|swan|t2[\s_-]?star|t2\*|gre[\s_-]?t2|pd|"
        r"perfusion|perf|dsc|dce|mra|tof|angio|b0[\s_-]?map|field[\s_-]?map)" + _E,
        _TEXT,
        "AX SWAN",
    ),
    SequenceRule(
        "DWI",
        _B + r"(dwi|diff\w*|trace\w*|ep2d[\s_-]?diff\w*|dti|b[\s_-]?=?[\s_-]?(500|800|1000|1500|2000))" + _E,
        ("ImageType",) + _TEXT,
        "ep2d_diff_3scan_trace_p2",
    ),
    # "T1 FLAIR" (GE) is T1-weighted inversion recovery, not the T2-FLAIR of BraTS: checked before FLAIR.
    SequenceRule("T1", _B + r"t1[\s_-]?(w[\s_-]?)?flair" + _E, _TEXT, "AX T1 FLAIR POST"),
    SequenceRule(
        "FLAIR",
        r"flair|dark[\s_-]?fluid|" + _B + r"(tirm|t2[\s_-]?ir|ir[\s_-]?fse|fl[\s_-]?t2)" + _E,
        _TEXT,
        "t2_tirm_tra_dark-fluid",
    ),
    SequenceRule(
        "T1",
        _B + r"(t1\w*|mprage|mp[\s_-]?rage|spgr|fspgr|bravo|vibe|tfl3d\w*|fl3d\w*|t1ce|t1c|t1gd|"
        r"t1w|tfe|3d[\s_-]?ffe|space[\s_-]?t1|cube[\s_-]?t1)" + _E,
        _TEXT,
        "t1_mprage_sag_p2",
    ),
    SequenceRule(
        "T2", _B + r"(t2\w*|t2w|tse[\s_-]?t2|space[\s_-]?t2|cube[\s_-]?t2|haste)" + _E, _TEXT, "t2_tse_tra_p2"
    ),
)

PHYSICS_RULES: tuple[PhysicsRule, ...] = (
    PhysicsRule("FLAIR", min_tr=4000, min_te=70, min_ti=1500, example="TR 9000, TE 90, TI 2500"),
    PhysicsRule("T1", max_tr=1000, max_te=30, example="TR 500, TE 10 (spin echo) or TR 2000/TI 900 (MPRAGE)"),
    PhysicsRule("T1", max_tr=2500, max_te=10, min_ti=600, example="MPRAGE: TR 2300, TE 3, TI 900"),
    PhysicsRule("T2", min_tr=2000, min_te=70, example="TR 4000, TE 100"),
)

# Post-contrast cues in any text tag; "pre"/"precontrast"/"non-contrast" negate them.
CONTRAST_PATTERN = (
    _B + r"(post|\+c|c\+|gd|gad\w*|contrast|ce|kontrast|mdc|dotarem|gadovist|magnevist|multihance|t1ce|t1c|t1gd|"
    r"enhanced)" + _E
)
_NO_CONTRAST_PATTERN = _B + r"(pre|precontrast|pre[\s_-]?contrast|non[\s_-]?contrast|without[\s_-]?contrast|nc)" + _E
_NONE_VALUES = {"", "none", "no", "n/a", "na", "nil", "0"}


def _text(fields: Mapping[str, Any], tag: str) -> str:
    value = fields.get(tag)
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        value = "\\".join(str(v) for v in value)
    return str(value).strip().lower()


def has_contrast(fields: Mapping[str, Any]) -> bool:
    """Whether a series was acquired after contrast injection.

    A non-empty ContrastBolusAgent (other than "none"), or a post-contrast cue in SeriesDescription, ProtocolName or
    SequenceName that is not negated by a pre-contrast cue.

    Args:
        fields: DICOM keywords to values.

    Returns:
        True when post-contrast.
    """
    agent = _text(fields, "ContrastBolusAgent")
    if agent not in _NONE_VALUES:
        return True
    text = " | ".join(_text(fields, t) for t in _TEXT)
    return bool(re.search(CONTRAST_PATTERN, text)) and not re.search(_NO_CONTRAST_PATTERN, text)


def _float(fields: Mapping[str, Any], tag: str) -> float | None:
    value = fields.get(tag)
    try:
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def explain_sequence(fields: Mapping[str, Any]) -> tuple[str, str]:
    """Infer the sequence and say which rule decided it.

    Args:
        fields: DICOM keywords to values (SeriesDescription, ProtocolName, SequenceName, ImageType, EchoTime,
            RepetitionTime, InversionTime, ContrastBolusAgent, Modality).

    Returns:
        ``(sequence, reason)``, e.g. ``("T1C", "SeriesDescription matches T1 rule 7; contrast")``.
    """
    modality = _text(fields, "Modality")
    if modality and modality != "mr":
        return "", f"modality {modality.upper()} has no MR sequence"
    contrast = has_contrast(fields)
    for tag in ("ImageType",) + _TEXT:
        text = _text(fields, tag)
        if not text:
            continue
        for number, rule in enumerate(SEQUENCE_RULES, start=1):
            if tag in rule.tags and re.search(rule.pattern, text):
                sequence = "T1C" if rule.sequence == "T1" and contrast else rule.sequence
                return sequence, f"{tag} matches rule {number} ({rule.sequence})" + ("; contrast" if contrast else "")
    tr, te, ti = (_float(fields, t) for t in ("RepetitionTime", "EchoTime", "InversionTime"))
    if tr is not None and te is not None:
        for number, rule in enumerate(PHYSICS_RULES, start=1):
            if (
                (rule.min_tr is None or tr >= rule.min_tr)
                and (rule.max_tr is None or tr <= rule.max_tr)
                and (rule.min_te is None or te >= rule.min_te)
                and (rule.max_te is None or te <= rule.max_te)
                and (rule.min_ti is None or (ti is not None and ti >= rule.min_ti))
            ):
                sequence = "T1C" if rule.sequence == "T1" and contrast else rule.sequence
                return sequence, f"physics rule {number} ({rule.sequence}: TR {tr:g}, TE {te:g}, TI {ti})"
    return "OTHER", "no rule matched"


def infer_sequence(fields: Mapping[str, Any]) -> str:
    """Infer the MR sequence of a series from its headers.

    Args:
        fields: DICOM keywords to values (see :func:`explain_sequence`).

    Returns:
        One of :data:`SEQUENCES`, or ``""`` for a non-MR series.

    Example:
        >>> infer_sequence({"Modality": "MR", "SeriesDescription": "AX T1 POST GAD"})
        'T1C'
    """
    return explain_sequence(fields)[0]
