"""Synthetic chest X-ray report text (MIMIC-CXR style) with known CheXpert-style findings.

:func:`generate_report` writes one report describing given findings; :func:`sample_findings` draws findings with
realistic prevalence; :func:`generate_corpus` does both for a corpus and returns the true labels, so that weak labels
(and later image classifiers trained on them) can be scored. Everything is deterministic given a
``numpy.random.Generator``.

Findings use CheXpert's coding: ``1`` positive, ``0`` explicitly negated, ``-1`` uncertain; an observation absent
from the mapping is not mentioned. ``"No Finding": 1`` asks for a normal report. The truth of a report is what it
says as a whole, the impression taking precedence: a few reports hedge in the findings (``may represent
pneumonia``) and assert in the impression, as radiologists do, and the label is the impression's.

The text varies the way real reports do: several synonyms per observation, severity and laterality words, negation
(``no``, ``without``, ``free of``, ``has resolved``, ``interval removal``), uncertainty (``may represent``,
``cannot be excluded``, ``possible``, ``versus``), pseudo-negations (``no significant change in``), negated lists,
normal templates (``No acute cardiopulmonary process.``), findings-only and impression-only reports, numbered
impressions, typos in headers, wrapped lines, ``___`` de-identification marks and occasional addenda. Chronic
findings (old fractures, devices, pleural plaques) sometimes appear only in the findings of a report whose
impression reads "No acute cardiopulmonary process", as they do in practice.

This is not a layout generator (no ``LAYOUT``): the MIMIC-CXR and CheXpert layout generators call it for their
report text. :func:`write_report_tree` writes reports alone in MIMIC-CXR's ``files/pXX/pSUBJECT/sSTUDY.txt`` tree,
with a label CSV like MIMIC-CXR-JPG's ``mimic-cxr-2.0.0-chexpert.csv``.
"""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from medssl.data.reports import CHEXPERT_OBSERVATIONS

__all__ = [
    "PATHOLOGIES",
    "PREVALENCE",
    "sample_findings",
    "generate_report",
    "generate_corpus",
    "write_report_tree",
]

PATHOLOGIES: tuple[str, ...] = tuple(o for o in CHEXPERT_OBSERVATIONS if o not in ("No Finding", "Support Devices"))
"""Observations that rule out "No Finding" when positive or uncertain (CheXpert: all but No Finding and devices)."""

PREVALENCE: dict[str, tuple[float, float, float]] = {
    # observation: (P(positive), P(uncertain), P(explicitly negated)) in an abnormal study; the rest is unmentioned.
    "Enlarged Cardiomediastinum": (0.04, 0.04, 0.25),
    "Cardiomegaly": (0.20, 0.05, 0.35),
    "Lung Lesion": (0.05, 0.02, 0.05),
    "Lung Opacity": (0.22, 0.04, 0.10),
    "Edema": (0.12, 0.05, 0.30),
    "Consolidation": (0.07, 0.05, 0.40),
    "Pneumonia": (0.06, 0.10, 0.20),
    "Atelectasis": (0.20, 0.08, 0.05),
    "Pneumothorax": (0.06, 0.02, 0.55),
    "Pleural Effusion": (0.25, 0.05, 0.45),
    "Pleural Other": (0.03, 0.01, 0.02),
    "Fracture": (0.05, 0.01, 0.05),
    "Support Devices": (0.25, 0.01, 0.03),
}
"""Label frequencies :func:`sample_findings` draws from (rough orders of magnitude of MIMIC-CXR's)."""

_CHRONIC = ("Fracture", "Support Devices", "Pleural Other", "Lung Lesion")
_SIDES = ("left", "right")
_SEVERITY = ("small", "moderate", "large")
_DEGREE = ("mild", "moderate", "severe")
_LOBES = ("right upper lobe", "right middle lobe", "right lower lobe", "left upper lobe", "left lower lobe", "lingula")

# Noun phrases used in negated lists ("No X, Y or Z."); one list per observation.
_NEG_NOUNS: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": ("mediastinal widening",),
    "Cardiomegaly": ("cardiomegaly",),
    "Lung Lesion": ("suspicious pulmonary nodules", "pulmonary nodules or masses", "lung mass"),
    "Lung Opacity": ("focal opacity", "focal airspace opacity"),
    "Edema": ("pulmonary edema", "edema", "vascular congestion"),
    "Consolidation": ("focal consolidation", "consolidation"),
    "Pneumonia": ("pneumonia", "evidence of pneumonia"),
    "Atelectasis": ("atelectasis",),
    "Pneumothorax": ("pneumothorax",),
    "Pleural Effusion": ("pleural effusion", "effusion", "pleural effusions"),
    "Pleural Other": ("pleural thickening",),
    "Fracture": ("acute fracture", "displaced rib fracture", "fracture"),
    "Support Devices": ("lines or tubes",),
}

# Whole negative sentences (alternatives to the lists).
_NEG_SENTENCES: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": (
        "The cardiomediastinal silhouette is normal.",
        "Mediastinal contours are within normal limits.",
        "The mediastinum is not widened.",
        "Normal cardiomediastinal silhouette.",
    ),
    "Cardiomegaly": (
        "Heart size is normal.",
        "The heart is not enlarged.",
        "Normal heart size.",
        "The cardiac silhouette is within normal limits.",
    ),
    "Lung Lesion": ("No suspicious pulmonary nodule is identified.", "The previously noted nodule is no longer seen."),
    "Lung Opacity": ("The lungs are free of focal opacity.", "Previously seen {side} basilar opacity has resolved."),
    "Edema": ("No evidence of pulmonary edema.", "Pulmonary edema has resolved.", "Interval resolution of edema."),
    "Consolidation": ("The lungs are without focal consolidation.", "No focal consolidation is seen."),
    "Pneumonia": ("No evidence of pneumonia.", "Previously seen {side} lower lobe pneumonia has resolved."),
    "Atelectasis": ("Previously seen {side} basilar atelectasis has resolved.", "No atelectasis."),
    "Pneumothorax": (
        "No pneumothorax is seen.",
        "There is no evidence of pneumothorax.",
        "The {side} pneumothorax has resolved.",
        "No pneumothorax is identified following chest tube removal.",
    ),
    "Pleural Effusion": (
        "The costophrenic angles are sharp.",
        "No pleural effusion is seen.",
        "The {side} pleural effusion has resolved.",
        "There is no pleural effusion.",
    ),
    "Pleural Other": ("No pleural thickening.",),
    "Fracture": ("No acute osseous abnormality or fracture.", "No displaced rib fractures are seen."),
    "Support Devices": (
        "The endotracheal tube has been removed.",
        "Interval removal of the {side} chest tube.",
        "The nasogastric tube has been removed.",
    ),
}

# Positive sentences; slots: {side} {Side} {sev} {Sev} {deg} {Deg} {lobe} {size}.
_POS_SENTENCES: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": (
        "The mediastinum is widened.",
        "Widened mediastinum.",
        "Mediastinal widening is again noted.",
        "The cardiomediastinal silhouette is enlarged.",
    ),
    "Cardiomegaly": (
        "{Deg} cardiomegaly.",
        "The heart is {deg}ly enlarged.",
        "Heart size is enlarged.",
        "There is {deg} cardiomegaly.",
        "Enlarged cardiac silhouette.",
        "{Deg} enlargement of the cardiac silhouette is unchanged.",
    ),
    "Lung Lesion": (
        "A {size} cm nodule is seen in the {lobe}.",
        "There is a {size} cm mass in the {lobe}.",
        "{Side} pulmonary nodule is again noted.",
        "Stable {size} cm nodule in the {lobe}.",
    ),
    "Lung Opacity": (
        "There is a {side} basilar opacity.",
        "Patchy opacity in the {lobe}.",
        "{Side} lower lung opacities are present.",
        "Hazy opacity at the {side} base.",
        "Increased opacity in the {lobe}.",
    ),
    "Edema": (
        "There is {deg} pulmonary edema.",
        "{Deg} interstitial edema.",
        "{Deg} pulmonary edema has worsened.",
        "Pulmonary vascular congestion with {deg} interstitial edema.",
    ),
    "Consolidation": (
        "There is consolidation in the {lobe}.",
        "{Lobe} consolidation.",
        "Dense consolidation in the {lobe} with air bronchograms.",
        "Focal consolidation is present in the {lobe}.",
    ),
    "Pneumonia": (
        "Findings are consistent with {lobe} pneumonia.",
        "{Lobe} pneumonia.",
        "Pneumonia in the {lobe}.",
    ),
    "Atelectasis": (
        "{Side} basilar atelectasis.",
        "There is {deg} {side} basilar atelectasis.",
        "Plate-like atelectasis at the {side} base.",
        "Bibasilar atelectasis.",
    ),
    "Pneumothorax": (
        "There is a {sev} {side} pneumothorax.",
        "{Sev} {side} apical pneumothorax.",
        "A {side} pneumothorax is present.",
    ),
    "Pleural Effusion": (
        "There is a {sev} {side} pleural effusion.",
        "{Sev} {side} pleural effusion.",
        "{Sev} bilateral pleural effusions.",
        "A {sev} {side} effusion is present.",
    ),
    "Pleural Other": (
        "{Side} apical pleural thickening.",
        "Calcified pleural plaques are noted.",
        "{Side} pleural thickening is unchanged.",
    ),
    "Fracture": (
        "Acute fracture of the {side} seventh rib.",
        "Old healed {side} rib fractures.",
        "There is a nondisplaced fracture of the {side} sixth rib.",
        "Mild compression fracture of a lower thoracic vertebral body.",
    ),
    "Support Devices": (
        "Endotracheal tube terminates {size} cm above the carina.",
        "{Side} internal jugular central venous catheter tip is in the mid SVC.",
        "{Side} PICC line terminates in the lower SVC.",
        "Nasogastric tube courses below the diaphragm.",
        "Dual-lead pacemaker leads are in standard position.",
        "Median sternotomy wires are intact.",
    ),
}

# Positive phrasings that only specific rules recognise (no generic mention word).
_POS_SPECIFIC: dict[str, tuple[str, ...]] = {
    "Pleural Effusion": ("Blunting of the {side} costophrenic angle.",),
    "Edema": ("Cephalization and Kerley B lines.",),
    "Pneumothorax": ("A {side} deep sulcus sign is present.",),
    "Atelectasis": ("{Side} basilar volume loss.",),
}

# Pseudo-negated positives ("no change in X" means X is there).
_POS_PSEUDO: dict[str, tuple[str, ...]] = {
    "Pleural Effusion": ("No significant change in the {sev} {side} pleural effusion.",),
    "Cardiomegaly": ("No change in {deg} cardiomegaly.",),
    "Edema": ("No interval change in {deg} pulmonary edema.",),
    "Atelectasis": ("No significant change in {side} basilar atelectasis.",),
    "Pneumothorax": ("No significant change in the {sev} {side} pneumothorax.",),
}

# Uncertain sentences.
_UNC_SENTENCES: dict[str, tuple[str, ...]] = {
    "Enlarged Cardiomediastinum": (
        "The mediastinum may be widened.",
        "Possible mediastinal widening, likely due to technique.",
    ),
    "Cardiomegaly": (
        "Borderline cardiomegaly.",
        "Cardiomegaly cannot be excluded on this AP view.",
        "Possible mild cardiomegaly.",
    ),
    "Lung Lesion": (
        "Possible nodule in the {lobe}.",
        "A nodular density in the {lobe} may represent a nipple shadow versus a pulmonary nodule.",
    ),
    "Lung Opacity": ("Possible {side} basilar opacity.", "Questionable opacity in the {lobe}."),
    "Edema": ("Possible mild pulmonary edema.", "Mild edema is not excluded.", "Edema may be present."),
    "Consolidation": ("Consolidation cannot be excluded.", "Possible consolidation in the {lobe}."),
    "Pneumonia": (
        "Pneumonia in the {lobe} cannot be excluded.",
        "Possible {lobe} pneumonia.",
        "Pneumonia cannot be excluded.",
        "Findings may represent pneumonia.",
        "Opacities are concerning for pneumonia.",
        "Possible early pneumonia.",
    ),
    "Atelectasis": ("Likely {side} basilar atelectasis.", "Possible {side} basilar atelectasis."),
    "Pneumothorax": ("Possible tiny {side} apical pneumothorax.", "Questionable small {side} pneumothorax."),
    "Pleural Effusion": ("Possible small {side} pleural effusion.", "A trace {side} effusion cannot be excluded."),
    "Pleural Other": ("Possible {side} pleural thickening.",),
    "Fracture": ("Possible nondisplaced fracture of the {side} sixth rib.", "Questionable rib fracture."),
    "Support Devices": (
        "A linear density may represent a retained pacing wire.",
        "Possible {side} PICC line.",
        "Possible {side} internal jugular line.",
        "The endotracheal tube may terminate in the right main bronchus.",
        "Possible nasogastric tube.",
    ),
}

_NORMAL_IMPRESSIONS = (
    "No acute cardiopulmonary process.",
    "No acute intrathoracic process.",
    "Normal chest radiograph.",
    "No acute cardiopulmonary abnormality.",
    "No radiographic evidence of acute cardiopulmonary disease.",
)
_NORMAL_FINDINGS = ("The lungs are clear.", "Lungs are well expanded and clear.", "The lungs are clear bilaterally.")
_INDICATIONS = (
    "___-year-old {sex} with shortness of breath.",
    "___-year-old {sex} with cough and fever. Evaluate for pneumonia.",
    "___ with chest pain.",
    "History: ___ {sex} status post line placement. Assess position.",
    "___-year-old {sex} with hypoxia // ?edema",
    "Preoperative evaluation.",
    "___ {sex} with fall, rule out fracture.",
    "Evaluate for pneumothorax after procedure.",
)
_EXAMINATIONS = ("CHEST (PA AND LAT)", "CHEST (PORTABLE AP)", "Chest radiograph, two views.", "CHEST (SINGLE VIEW)")
_COMPARISONS = (
    "None.",
    "___.",
    "Chest radiograph from ___.",
    "Radiographs dated ___ and ___.",
    "___ chest radiograph.",
)
_ADDENDA = (
    "Findings were discussed with Dr. ___ by telephone at ___ on ___.",
    "The above findings were communicated to the referring team at ___.",
    "Correction: the comparison study is dated ___.",
)
_HEADER_TYPOS = {"IMPRESSION": ("IMPRESSON", "IMPRESION"), "FINDINGS": ("FINDNGS", "FINDING")}


_SLOT = re.compile(r"\{(\w+)\}")
_DEVICE_NOUNS = {
    "endotracheal": "endotracheal tube",
    "internal jugular": "internal jugular line",
    "picc": "PICC line",
    "nasogastric": "nasogastric tube",
    "pacemaker": "pacemaker",
    "sternotomy": "sternotomy wires",
}
_NOUNS = {
    "Enlarged Cardiomediastinum": "mediastinal widening",
    "Cardiomegaly": "cardiomegaly",
    "Lung Lesion": "nodule",
    "Lung Opacity": "opacity",
    "Edema": "pulmonary edema",
    "Consolidation": "consolidation",
    "Pneumonia": "pneumonia",
    "Atelectasis": "atelectasis",
    "Pneumothorax": "pneumothorax",
    "Pleural Effusion": "pleural effusion",
    "Pleural Other": "pleural thickening",
    "Fracture": "rib fracture",
    "Support Devices": "support device",
}


def _pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _compatible(templates: Sequence[str], attributes: Mapping[str, str] | None) -> list[str]:
    """Templates that can state the attributes: the lobe (or else the side) slot, the device keyword."""
    if not attributes:
        return list(templates)
    required = {"lobe"} if attributes.get("lobe") else {"side"} if attributes.get("side") else set()
    keyword = attributes.get("keyword", "").lower()
    out = []
    for template in templates:
        slots = {slot.lower() for slot in _SLOT.findall(template)}
        if required <= slots and keyword in template.lower():
            out.append(template)
    return out


def _bilateral(text: str) -> str:
    """Grammar of a bilateral finding in a template written for one side."""
    text = re.sub(
        r"\b(?:There is a|A) (\w+ )?bilateral (pleural )?effusion is present",
        r"\1bilateral \2effusions are present",
        text,
    )
    text = re.sub(r"\bThere is a (\w+ )?bilateral (pleural )?effusion\b", r"There are \1bilateral \2effusions", text)
    text = re.sub(r"\bA (\w+ )?bilateral (pleural )?effusion\b", r"\1bilateral \2effusions", text)
    text = re.sub(r"\bbilateral (pleural )?effusion\b(?!s)", r"bilateral \1effusions", text)
    text = text.replace("the bilateral costophrenic angle", "the costophrenic angles bilaterally")
    text = text.replace("at the bilateral base", "at both bases, bilateral")
    return text[0].upper() + text[1:]


def _fill(template: str, rng: np.random.Generator, attributes: Mapping[str, str] | None = None) -> str:
    side = _pick(rng, _SIDES)
    sev = _pick(rng, _SEVERITY)
    deg = _pick(rng, _DEGREE)
    lobe = _pick(rng, _LOBES)
    size = f"{rng.uniform(0.8, 5.0):.1f}"
    attributes = attributes or {}
    side = attributes.get("side") or side
    sev = attributes.get("sev") or sev
    deg = attributes.get("deg") or deg
    lobe = attributes.get("lobe") or lobe
    size = attributes.get("size") or size
    values = {
        "side": side,
        "Side": side.capitalize(),
        "sev": sev,
        "Sev": sev.capitalize(),
        "deg": deg,
        "Deg": deg.capitalize(),
        "lobe": lobe,
        "Lobe": lobe.capitalize(),
        "size": size,
    }
    text = template.format(**values).replace("severely enlarged", "markedly enlarged")
    if side == "bilateral":
        text = _bilateral(text)
    return text[0].upper() + text[1:]


def _fallback(observation: str, value: int, attributes: Mapping[str, str]) -> str:
    """A plain sentence stating the attributes when no template fits them."""
    keyword = attributes.get("keyword", "")
    noun = _DEVICE_NOUNS.get(keyword.lower(), f"{keyword} device" if keyword else _NOUNS[observation])
    if attributes.get("lobe"):
        phrase = f"{noun} in the {attributes['lobe']}"
    elif attributes.get("side"):
        phrase = f"{attributes['side']} {noun}"
    else:
        phrase = noun
    sentence = (
        f"possible {phrase}." if value == -1 else f"{phrase} is present." if observation != "Fracture" else f"{phrase}."
    )
    return sentence[0].upper() + sentence[1:]


def _join_list(nouns: Sequence[str], rng: np.random.Generator) -> str:
    if len(nouns) == 1:
        return nouns[0]
    comma = "," if rng.random() < 0.5 else ""
    return ", ".join(nouns[:-1]) + f"{comma} or {nouns[-1]}"


def _negated_list(observations: Sequence[str], rng: np.random.Generator) -> str:
    nouns = [_pick(rng, _NEG_NOUNS[o]) for o in observations]
    body = _join_list(nouns, rng)
    pattern = _pick(
        rng,
        (
            "No {x}.",
            "There is no {x}.",
            "No evidence of {x}.",
            "No {x} is seen.",
            "The lungs are free of {x}.",
            "Without {x}.",
        ),
    )
    if pattern == "The lungs are free of {x}." and any(
        o in ("Fracture", "Support Devices", "Cardiomegaly") for o in observations
    ):
        pattern = "No {x}."
    sentence = pattern.format(x=body)
    return sentence[0].upper() + sentence[1:]


def sample_findings(rng: np.random.Generator, normal_fraction: float = 0.3) -> dict[str, int]:
    """Draw one report's findings (CheXpert coding, unmentioned observations left out).

    Args:
        rng: the random generator.
        normal_fraction: probability of a normal study (only negations and devices; ``No Finding`` = 1).

    Returns:
        ``{observation: 1 | 0 | -1}``; ``"No Finding": 1`` exactly when no observation other than Support Devices
        is positive or uncertain (CheXpert's rule).
    """
    findings: dict[str, int] = {}
    if rng.random() < normal_fraction:
        for observation in ("Cardiomegaly", "Pleural Effusion", "Pneumothorax", "Consolidation", "Edema"):
            if rng.random() < 0.5:
                findings[observation] = 0
        if rng.random() < 0.1:
            findings["Support Devices"] = 1
    else:
        for observation, (p_pos, p_unc, p_neg) in PREVALENCE.items():
            u = rng.random()
            if u < p_pos:
                findings[observation] = 1
            elif u < p_pos + p_unc:
                findings[observation] = -1
            elif u < p_pos + p_unc + p_neg:
                findings[observation] = 0
    if not any(findings.get(o) in (1, -1) for o in PATHOLOGIES):
        findings["No Finding"] = 1
    return findings


def _mention(
    observation: str,
    value: int,
    rng: np.random.Generator,
    attributes: Mapping[str, str] | None = None,
    defaults: Mapping[str, str] | None = None,
) -> str:
    """One sentence stating an observation's value.

    ``attributes`` (positive and uncertain findings) must be stated and restrict the templates; ``defaults`` fill
    the other slots, so that every sentence of a report about one observation agrees (side, size ...).
    """
    attributes = attributes if value in (1, -1) else None
    if value == 1:
        u = rng.random()
        if observation in _POS_SPECIFIC and u < 0.12:
            options = _compatible(_POS_SPECIFIC[observation], attributes)
        elif observation in _POS_PSEUDO and u > 0.85:
            options = _compatible(_POS_PSEUDO[observation], attributes)
        else:
            options = []
        options = options or _compatible(_POS_SENTENCES[observation], attributes)
    elif value == -1:
        options = _compatible(_UNC_SENTENCES[observation], attributes)
    else:
        options = list(_NEG_SENTENCES[observation])
    if not options:
        return _fallback(observation, value, attributes or {})
    return _fill(_pick(rng, options), rng, {**(defaults or {}), **(attributes or {})})


def _wrap(text: str, rng: np.random.Generator, wrap: bool) -> str:
    if not wrap:
        return text
    width = int(rng.integers(66, 80))
    return "\n".join(textwrap.fill(p, width=width, break_on_hyphens=False) for p in text.split("\n"))


def generate_report(
    findings: Mapping[str, int],
    rng: np.random.Generator,
    attributes: Mapping[str, Mapping[str, str]] | None = None,
) -> str:
    """Write a MIMIC-style report describing the given findings.

    Args:
        findings: ``{observation: 1 | 0 | -1}`` (CheXpert coding); observations not in the mapping are not
            mentioned. ``"No Finding": 1`` with no positive or uncertain pathology gives a normal report.
        rng: the random generator (the same state gives the same report).
        attributes: optional ``{observation: {attribute: value}}`` for positive and uncertain findings, stated in
            every sentence about them (so that a synthetic image and its report agree): ``side`` (``left``,
            ``right``, ``bilateral``), ``sev`` (``small``, ``moderate``, ``large``), ``deg`` (``mild``,
            ``moderate``, ``severe``), ``lobe`` (``right upper lobe`` ... ``lingula``), ``size`` (cm, as text) and,
            for Support Devices, ``keyword`` (``endotracheal``, ``internal jugular``, ``PICC``, ``nasogastric``,
            ``pacemaker``, ``sternotomy``). Without attributes they are drawn at random.

    Returns:
        The report text.

    Raises:
        ValueError: an unknown observation or value.
    """
    for observation, value in findings.items():
        if observation not in CHEXPERT_OBSERVATIONS:
            raise ValueError(f"unknown observation {observation!r}; expected one of {list(CHEXPERT_OBSERVATIONS)}")
        if value not in (1, 0, -1):
            raise ValueError(f"{observation}: value {value!r} is not 1, 0 or -1")
    values = {o: int(v) for o, v in findings.items() if o != "No Finding"}
    attrs = {o: dict(a) for o, a in (attributes or {}).items() if a}
    # One side, size, degree and lobe per observation and report, shared by all its sentences.
    drawn = {
        o: {
            "side": _pick(rng, _SIDES),
            "sev": _pick(rng, _SEVERITY),
            "deg": _pick(rng, _DEGREE),
            "lobe": _pick(rng, _LOBES),
            "size": f"{rng.uniform(0.8, 5.0):.1f}",
        }
        for o in CHEXPERT_OBSERVATIONS
        if o in values
    }
    positives = [o for o, v in values.items() if v == 1]
    uncertain = [o for o, v in values.items() if v == -1]
    negatives = [o for o, v in values.items() if v == 0]
    abnormal = [o for o in positives + uncertain if o in PATHOLOGIES]
    order = rng.permutation(len(CHEXPERT_OBSERVATIONS))
    rank = {CHEXPERT_OBSERVATIONS[i]: int(k) for k, i in enumerate(order)}
    positives.sort(key=rank.get)
    uncertain.sort(key=rank.get)
    negatives.sort(key=rank.get)

    u = rng.random()
    layout = "both" if u < 0.75 else "findings" if u < 0.9 else "impression"
    findings_lines: list[str] = []
    impression_items: list[str] = []

    # Findings: positives, uncertain, then negatives (individually or as a negated list).
    hedged: set[str] = set()
    for observation in positives:
        if layout == "both" and observation in PATHOLOGIES and rng.random() < 0.08:
            findings_lines.append(
                _mention(observation, -1, rng, attrs.get(observation), drawn[observation])
            )  # hedged; impression asserts
            hedged.add(observation)
        else:
            findings_lines.append(_mention(observation, 1, rng, attrs.get(observation), drawn[observation]))
    pair = "Atelectasis" in uncertain and "Pneumonia" in uncertain
    if pair and rng.random() < 0.6 and not (attrs.get("Atelectasis") or attrs.get("Pneumonia")):
        findings_lines.append(
            _fill(
                _pick(
                    rng,
                    (
                        "Atelectasis versus pneumonia at the {side} base.",
                        "Opacities may represent atelectasis versus pneumonia.",
                    ),
                ),
                rng,
            )
        )
        rest_uncertain = [o for o in uncertain if o not in ("Atelectasis", "Pneumonia")]
    else:
        rest_uncertain = list(uncertain)
    findings_lines.extend(_mention(o, -1, rng, attrs.get(o), drawn[o]) for o in rest_uncertain)
    negative_sentences: list[str] = []
    listed = [o for o in negatives if rng.random() < 0.6]
    for observation in negatives:
        if observation not in listed:
            negative_sentences.append(_mention(observation, 0, rng, None, drawn[observation]))
    if listed:
        if positives and rng.random() < 0.4 and positives[0] in PATHOLOGIES and positives[0] not in hedged:
            # "No X, but there is Y." - the negation must not reach Y.
            positive_sentence = findings_lines.pop(0)
            lowered = positive_sentence[0].lower() + positive_sentence[1:]
            negative_sentences.append(f"{_negated_list(listed, rng)[:-1]}, but {lowered}")
        else:
            negative_sentences.append(_negated_list(listed, rng))
    findings_lines.extend(negative_sentences)
    if not abnormal and layout != "impression":
        findings_lines.append(_pick(rng, _NORMAL_FINDINGS))

    # Impression: positives and uncertain, a normal statement when nothing acute is abnormal. Chronic findings are
    # sometimes left to the findings under "No acute cardiopulmonary process", and a few positives are mentioned in
    # the findings only.
    acute = [o for o in abnormal if o not in _CHRONIC]
    kept: list[str] = []
    for observation in positives + uncertain:
        if layout == "both" and observation not in hedged:
            if observation in _CHRONIC and not acute and rng.random() < 0.6:
                continue
            if values[observation] == 1 and rng.random() < 0.15:
                continue
        kept.append(observation)
    if acute and not any(o in acute for o in kept):
        kept.append(acute[0])  # an abnormal study never gets a normal impression
    impression_items.extend(_mention(o, values[o], rng, attrs.get(o), drawn[o]) for o in kept)
    if layout == "impression":
        impression_items.extend(negative_sentences)
    elif negatives and rng.random() < 0.3:
        impression_items.append(_mention(negatives[0], 0, rng, None, drawn[negatives[0]]))
    if not acute:
        impression_items.insert(0, _pick(rng, _NORMAL_IMPRESSIONS))

    def header(name: str) -> str:
        v = rng.random()
        if name in _HEADER_TYPOS and v < 0.04:
            return _pick(rng, _HEADER_TYPOS[name]) + ":"
        if v < 0.12:
            return name.title() + ":"
        return name + ":"

    wrap = rng.random() < 0.6
    sex = _pick(rng, ("man", "woman", "M", "F"))
    parts: list[str] = []
    if rng.random() < 0.7:
        parts.append(" " * 33 + "FINAL REPORT")
    parts.append(f"{header('EXAMINATION')}  {_pick(rng, _EXAMINATIONS)}")
    parts.append(f"{header('INDICATION')}  {_pick(rng, _INDICATIONS).format(sex=sex)}")
    if rng.random() < 0.5:
        parts.append(f"{header('TECHNIQUE')}  {_pick(rng, ('Chest PA and lateral', 'Portable AP chest'))}")
    parts.append(f"{header('COMPARISON')}  {_pick(rng, _COMPARISONS)}")
    if layout in ("both", "findings") and findings_lines:
        parts.append(f"{header('FINDINGS')}\n\n" + _wrap("  ".join(findings_lines), rng, wrap))
    if layout in ("both", "impression") or not findings_lines:
        if len(impression_items) > 1 and rng.random() < 0.4:
            body = "\n".join(f"{i}. {item}" for i, item in enumerate(impression_items, start=1))
        else:
            body = _wrap("  ".join(impression_items), rng, wrap)
        parts.append(f"{header('IMPRESSION')}\n\n{body}")
    if rng.random() < 0.05:
        parts.append(f"ADDENDUM:  {_pick(rng, _ADDENDA)}")
    return "\n \n".join(" " + p if not p.startswith(" ") else p for p in parts) + "\n"


def generate_corpus(n: int, seed: int = 0, normal_fraction: float = 0.3) -> tuple[list[str], pd.DataFrame]:
    """Generate ``n`` reports with their true labels.

    Args:
        n: number of reports.
        seed: seed of the ``numpy`` generator.
        normal_fraction: see :func:`sample_findings`.

    Returns:
        ``(texts, labels)``: labels has one row per report and the 14 :data:`CHEXPERT_OBSERVATIONS` columns in
        CheXpert coding (1.0, 0.0, -1.0, NaN for not mentioned).
    """
    rng = np.random.default_rng(seed)
    texts: list[str] = []
    rows: list[dict[str, float]] = []
    for _ in range(n):
        findings = sample_findings(rng, normal_fraction=normal_fraction)
        texts.append(generate_report(findings, rng))
        rows.append({o: float(findings[o]) if o in findings else np.nan for o in CHEXPERT_OBSERVATIONS})
    labels = pd.DataFrame(rows, columns=list(CHEXPERT_OBSERVATIONS))
    return texts, labels


def write_report_tree(out: str | os.PathLike, n: int, seed: int = 0, normal_fraction: float = 0.3) -> pd.DataFrame:
    """Write ``n`` synthetic reports in MIMIC-CXR's report tree, with their labels.

    Files are ``out/files/pXX/pSUBJECT/sSTUDY.txt`` (subject and study ids are random 8-digit numbers, like
    MIMIC-CXR's de-identified ones) and ``out/labels.csv`` has ``subject_id``, ``study_id`` and the 14 observations
    in CheXpert coding, like MIMIC-CXR-JPG's ``mimic-cxr-2.0.0-chexpert.csv``.

    Args:
        out: the folder to write.
        n: number of reports.
        seed: seed of the generator.
        normal_fraction: see :func:`sample_findings`.

    Returns:
        The label table written to ``labels.csv``.
    """
    out = Path(out)
    texts, labels = generate_corpus(n, seed=seed, normal_fraction=normal_fraction)
    rng = np.random.default_rng([seed, 1])
    subjects = rng.choice(np.arange(10_000_000, 20_000_000), size=n, replace=False)
    studies = rng.choice(np.arange(50_000_000, 60_000_000), size=n, replace=False)
    for text, subject, study in zip(texts, subjects, studies):
        folder = out / "files" / f"p{str(subject)[:2]}" / f"p{subject}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"s{study}.txt").write_text(text)
    labels.insert(0, "study_id", studies)
    labels.insert(0, "subject_id", subjects)
    labels.to_csv(out / "labels.csv", index=False)
    return labels
