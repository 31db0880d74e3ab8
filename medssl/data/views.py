"""View and laterality of planar images (mammography, chest and other radiographs) from DICOM headers.

The indexer calls :func:`view_and_laterality` for every planar series; the display pipeline, the mammography exams
and the layouts use the same rules, so a view means the same thing everywhere.

Where the view comes from, in order:

1. ``ViewPosition`` (0018,5101), free text in practice: ``CC``, ``MLO``, ``RCC``, ``L-MLO``, ``XCCL``, ``MLO ID``,
   ``PA``, ``LL``, ``AP AXIAL`` ...;
2. ``ViewCodeSequence`` (0054,0220), its CodeMeaning (or CodeValue), matched against DICOM's context groups
   CID 4014 "View for Mammography" and CID 4010 "X-Ray Radiographic Projection" as pydicom ships them
   (:mod:`pydicom.sr.codedict`), plus ``ViewModifierCodeSequence`` (CID 4015: spot compression, magnification,
   implant displaced, cleavage, axillary tail ...);
3. ``SeriesDescription`` as a last resort (``R CC``, ``LMLO SPOT``, ``Left craniocaudal``, ``CHEST PA``).

A ViewPosition and a ViewCodeSequence that name different views are a **conflict**: the view is left empty and the
third return value says why (the indexer reports it as ``tag_conflict``); nothing is guessed. The description is only
a fallback and never overrides or contradicts the tags.

Laterality comes from ``ImageLaterality`` (0020,0062), ``Laterality`` (0020,0060) and a laterality prefix of a
mammography ViewPosition (``RCC``); when two of them disagree it is a conflict and the laterality is left empty. The
SeriesDescription is used only when none of them is set.

Vocabularies (:data:`MAMMO_VIEWS`, :data:`RADIOGRAPHY_VIEWS`): mammography views follow the ACR MQCM abbreviations
(CC, MLO, ML, LM, LMO, XCCL, XCCM, FB, SIO, ISO, CV, AT); radiography views are PA, AP, FRONTAL (AP or PA not
known), LATERAL (side not known), LL, RL, the decubitus LLD, RLD and the obliques. :func:`view_group` says whether a
view is ``frontal``, ``lateral``, ``decubitus`` or ``oblique`` (radiographs) or ``craniocaudal`` / ``mediolateral``
(mammograms). A mammography view with modifiers is written ``CC+SPOT``, ``MLO+ID``, ``CC+MAG+SPOT`` (modifiers in
:data:`MAMMO_MODIFIERS`, sorted): the ``view`` column of a manifest then tells a screening CC from a spot
compression CC, which :mod:`medssl.data.mammo` leaves out of exams.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

__all__ = [
    "PLANAR_MODALITIES",
    "MAMMO_VIEWS",
    "MAMMO_MODIFIERS",
    "RADIOGRAPHY_VIEWS",
    "VIEW_GROUPS",
    "STANDARD_MAMMO_VIEWS",
    "normalise_laterality",
    "normalise_view",
    "view_from_code",
    "modifier_from_code",
    "split_view",
    "join_view",
    "view_group",
    "view_key",
    "parse_view_key",
    "is_mammography",
    "fields_from_dataset",
    "chest_wall_side",
    "view_and_laterality",
]

PLANAR_MODALITIES = ("MG", "DX", "CR", "DR", "RF")

MAMMO_VIEWS = ("CC", "MLO", "ML", "LM", "LMO", "XCCL", "XCCM", "FB", "SIO", "ISO", "CV", "AT")
MAMMO_MODIFIERS = ("SPOT", "MAG", "ID", "RL", "RM", "RS", "RI", "TAN", "NP", "AC", "IMF", "AX")
RADIOGRAPHY_VIEWS = (
    "PA",
    "AP",
    "FRONTAL",
    "LATERAL",
    "LL",
    "RL",
    "LLD",
    "RLD",
    "LAO",
    "RAO",
    "LPO",
    "RPO",
    "LLO",
    "RLO",
    "OBLIQUE",
)
STANDARD_MAMMO_VIEWS = ("CC", "MLO")
VIEW_GROUPS: dict[str, str] = {
    **{v: "craniocaudal" for v in ("CC", "XCCL", "XCCM", "FB", "CV")},
    **{v: "mediolateral" for v in ("MLO", "ML", "LM", "LMO", "SIO", "ISO", "AT")},
    **{v: "frontal" for v in ("PA", "AP", "FRONTAL")},
    **{v: "lateral" for v in ("LATERAL", "LL", "RL")},
    **{v: "decubitus" for v in ("LLD", "RLD")},
    **{v: "oblique" for v in ("LAO", "RAO", "LPO", "RPO", "LLO", "RLO", "OBLIQUE")},
}

_LATERALITY = {
    "L": "L",
    "LEFT": "L",
    "LT": "L",
    "R": "R",
    "RIGHT": "R",
    "RT": "R",
    "B": "B",
    "BOTH": "B",
    "BILATERAL": "B",
}

# Spelled-out names (ViewPosition free text, code meanings of CID 4014/4015/4010, descriptions) -> abbreviations.
# Longest phrases are replaced first, so "medio-lateral oblique" never becomes "ML" + "oblique".
_MAMMO_PHRASES = {
    "CRANIO CAUDAL EXAGGERATED LATERALLY": "XCCL",
    "CRANIO CAUDAL EXAGGERATED MEDIALLY": "XCCM",
    "EXAGGERATED CRANIO CAUDAL": "XCCL",
    "MEDIO LATERAL OBLIQUE": "MLO",
    "MEDIAL LATERAL OBLIQUE": "MLO",
    "LATERO MEDIAL OBLIQUE": "LMO",
    "LATERAL MEDIAL OBLIQUE": "LMO",
    "SUPEROLATERAL TO INFEROMEDIAL OBLIQUE": "SIO",
    "INFEROMEDIAL TO SUPEROLATERAL OBLIQUE": "ISO",
    "CRANIO CAUDAL": "CC",
    "CAUDO CRANIAL": "FB",
    "FROM BELOW": "FB",
    "MEDIO LATERAL": "ML",
    "MEDIAL LATERAL": "ML",
    "LATERO MEDIAL": "LM",
    "LATERAL MEDIAL": "LM",
    "AXILLARY TAIL": "AT",
    "SPOT COMPRESSION": "SPOT",
    "IMPLANT DISPLACED": "ID",
    "ROLLED LATERAL": "RL",
    "ROLLED MEDIAL": "RM",
    "ROLLED SUPERIOR": "RS",
    "ROLLED INFERIOR": "RI",
    "NIPPLE IN PROFILE": "NP",
    "ANTERIOR COMPRESSION": "AC",
    "INFRA MAMMARY FOLD": "IMF",
    "INFRAMAMMARY FOLD": "IMF",
    "AXILLARY TISSUE": "AX",
    "MEDIOLATERAL OBLIQUE": "MLO",
    "CRANIOCAUDAL": "CC",
    "CAUDOCRANIAL": "FB",
    "MEDIOLATERAL": "ML",
    "LATEROMEDIAL": "LM",
    "CLEAVAGE": "CV",
    "MAGNIFICATION": "MAG",
    "MAGNIFIED": "MAG",
    "TANGENTIAL": "TAN",
    "OBLIQUE": "MLO",  # a mammogram's "oblique" is the MLO
}
_MAMMO_WORDS = {v: v for v in MAMMO_VIEWS} | {"XCC": "XCCL"}
_MAMMO_MODIFIER_WORDS = {m: m for m in MAMMO_MODIFIERS if m not in ("RL", "RM", "RS", "RI", "AC", "AX")} | {
    "SPOTCOMP": "SPOT",
    "SPOT": "SPOT",
    "MAG": "MAG",
    "MAGN": "MAG",
}
# A compact mammography token: optional laterality, view, optional implant-displaced suffix (RCC, LMLOID, RXCCL).
_MAMMO_COMPACT = re.compile(r"^(?P<lat>[LR])?(?P<view>XCCL|XCCM|XCC|MLO|LMO|SIO|ISO|CC|ML|LM|FB|CV|AT)(?P<id>ID)?$")

_RADIOGRAPHY_PHRASES = {
    "LEFT LATERAL DECUBITUS": "LLD",
    "RIGHT LATERAL DECUBITUS": "RLD",
    "LEFT ANTERIOR OBLIQUE": "LAO",
    "RIGHT ANTERIOR OBLIQUE": "RAO",
    "LEFT POSTERIOR OBLIQUE": "LPO",
    "RIGHT POSTERIOR OBLIQUE": "RPO",
    "LEFT LATERAL OBLIQUE": "LLO",
    "RIGHT LATERAL OBLIQUE": "RLO",
    "POSTERO ANTERIOR": "PA",
    "POSTERIOR ANTERIOR": "PA",
    "POSTEROANTERIOR": "PA",
    "ANTERO POSTERIOR": "AP",
    "ANTERIOR POSTERIOR": "AP",
    "ANTEROPOSTERIOR": "AP",
    "LEFT LATERAL": "LL",
    "RIGHT LATERAL": "RL",
    "CROSS TABLE LATERAL": "LATERAL",
    "XTABLE LATERAL": "LATERAL",
}
_RADIOGRAPHY_WORDS = {v: v for v in RADIOGRAPHY_VIEWS} | {
    "LAT": "LATERAL",
    "LATERAL": "LATERAL",
    "PAL": "PA",
    "SWIMMERS": "LATERAL",
    "FRONTAL": "FRONTAL",
    "OBLIQUE": "OBLIQUE",
    "OBL": "OBLIQUE",
}


def _code_tables() -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    """View and modifier abbreviations of the coded views pydicom ships (CID 4014, 4015, 4010), by code value.

    The code values and meanings come from :mod:`pydicom.sr.codedict`; only the mapping of DICOM's names to the
    ACR abbreviations used here is written out.
    """
    from pydicom.sr.codedict import codes

    mammo_names = {
        "CranioCaudal": "CC",
        "MedioLateralObliqueProjection": "MLO",
        "MedioLateralProjection": "ML",
        "LateroMedial": "LM",
        "LateroMedialOblique": "LMO",
        "CranioCaudalExaggeratedLaterally": "XCCL",
        "CranioCaudalExaggeratedMedially": "XCCM",
        "CaudoCranial": "FB",
        "SuperolateralToInferomedialOblique": "SIO",
        "InferomedialToSuperolateralOblique": "ISO",
    }
    modifier_names = {
        "SpotCompression": "SPOT",
        "Magnification": "MAG",
        "ImplantDisplaced": "ID",
        "RolledLateral": "RL",
        "RolledMedial": "RM",
        "RolledSuperior": "RS",
        "RolledInferior": "RI",
        "Tangential": "TAN",
        "NippleInProfile": "NP",
        "AnteriorCompression": "AC",
        "InfraMammaryFold": "IMF",
        "AxillaryTissue": "AX",
        "Cleavage": "CV",
        "AxillaryTail": "AT",
    }
    radiography_names = {
        "PosteroAnterior": "PA",
        "AnteroPosterior": "AP",
        "Frontal": "FRONTAL",
        "LateralProjection": "LATERAL",
        "LeftLateral": "LL",
        "RightLateral": "RL",
        "LeftAnteriorOblique": "LAO",
        "RightAnteriorOblique": "RAO",
        "LeftPosteriorOblique": "LPO",
        "RightPosteriorOblique": "RPO",
        "ObliqueProjection": "OBLIQUE",
    }

    def table(cid, names: Mapping[str, str]) -> dict[str, str]:
        found = {}
        for name, abbreviation in names.items():
            code = getattr(cid, name, None)
            if code is not None:
                found[str(code.value)] = abbreviation
                found[_words(str(code.meaning))] = abbreviation
        return found

    return (
        table(codes.cid4014, mammo_names),
        table(codes.cid4015, modifier_names),
        table(codes.cid4010, radiography_names),
    )


def _words(value: Any) -> str:
    """Upper case, separators (``-_/,.()+``) as single spaces."""
    return " ".join(re.sub(r"[-_/,.;:()+\\^]", " ", str(value or "")).upper().split())


_MAMMO_CODES, _MODIFIER_CODES, _RADIOGRAPHY_CODES = _code_tables()


def normalise_laterality(value: Any) -> str:
    """Normalise a laterality value to ``L``, ``R``, ``B`` or ``""`` (``U``, unpaired, and unknown values: ``""``).

    Args:
        value: ``L``, ``Left``, ``R``, ``RIGHT``, ``B`` ...

    Returns:
        ``L``, ``R``, ``B`` or ``""``.
    """
    if value is None:
        return ""
    return _LATERALITY.get(str(value).strip().upper(), "")


def _longest_first(phrases: Mapping[str, str]) -> tuple[tuple[str, str], ...]:
    return tuple((f" {p} ", f" {phrases[p]} ") for p in sorted(phrases, key=len, reverse=True))


_MAMMO_PHRASE_ORDER = _longest_first(_MAMMO_PHRASES)
_RADIOGRAPHY_PHRASE_ORDER = _longest_first(_RADIOGRAPHY_PHRASES)


def _replace_phrases(text: str, phrases: tuple[tuple[str, str], ...]) -> str:
    padded = f" {text} "
    for phrase, abbreviation in phrases:
        if phrase in padded:
            padded = padded.replace(phrase, abbreviation)
    return padded.strip()


def normalise_view(value: Any, mammography: bool = True) -> tuple[str, tuple[str, ...], str]:
    """Parse free text (a ViewPosition or a description) into a view, its modifiers and a laterality.

    Args:
        value: e.g. ``"RCC"``, ``"L MLO ID"``, ``"Left craniocaudal spot"``, ``"CHEST PA"``, ``"LL"``.
        mammography: use the mammography vocabulary (else radiography: PA, AP, LATERAL ...).

    Returns:
        ``(view, modifiers, laterality)``: ``""`` when no view is named, or ``"?"`` when the text names two different
        views (``"PA and LAT"``); modifiers sorted (mammography only); the laterality the text names (mammography
        only; a radiograph's ``LL`` is a projection, not a laterality).
    """
    return _normalise_view(_words(value), bool(mammography))


@lru_cache(maxsize=4096)
def _normalise_view(text: str, mammography: bool) -> tuple[str, tuple[str, ...], str]:
    """:func:`normalise_view` of already normalised text (cached: an export repeats a few dozen values)."""
    if not text:
        return "", (), ""
    views: set[str] = set()
    modifiers: set[str] = set()
    lateralities: set[str] = set()
    if mammography:
        for token in _replace_phrases(text, _MAMMO_PHRASE_ORDER).split():
            compact = _MAMMO_COMPACT.match(token)
            if token in _MAMMO_WORDS:
                views.add(_MAMMO_WORDS[token])
            elif token in _MAMMO_MODIFIER_WORDS or token in MAMMO_MODIFIERS:
                modifiers.add(_MAMMO_MODIFIER_WORDS.get(token, token))
            elif token in _LATERALITY and _LATERALITY[token] != "B":
                lateralities.add(_LATERALITY[token])
            elif compact:
                views.add(_MAMMO_WORDS[compact["view"]])
                if compact["lat"]:
                    lateralities.add(compact["lat"])
                if compact["id"]:
                    modifiers.add("ID")
        if "CV" in views and len(views) > 1:  # "CC cleavage": the cleavage view is a CC variant
            views.discard("CC")
        if "AT" in views and len(views) > 1:
            views -= {"MLO", "XCCL"}
    else:
        for token in _replace_phrases(text, _RADIOGRAPHY_PHRASE_ORDER).split():
            if token in _RADIOGRAPHY_WORDS:
                views.add(_RADIOGRAPHY_WORDS[token])
        if {"LLD", "RLD"} & views:  # "AP LLD": a decubitus frontal film
            views -= {"AP", "PA", "FRONTAL"}
        if "OBLIQUE" in views and len(views) > 1 and views & {"LAO", "RAO", "LPO", "RPO", "LLO", "RLO"}:
            views.discard("OBLIQUE")
        if "LATERAL" in views and views & {"LL", "RL"}:
            views.discard("LATERAL")
    if len(views) > 1:
        return "?", tuple(sorted(modifiers)), ""
    laterality = lateralities.pop() if len(lateralities) == 1 else ""
    return (views.pop() if views else ""), tuple(sorted(modifiers)), laterality


def view_from_code(value: Any, mammography: bool = True) -> str:
    """The view named by a ViewCodeSequence item (its CodeMeaning or CodeValue).

    Args:
        value: ``"cranio-caudal"``, ``"399162004"``, ``"postero-anterior"`` ...
        mammography: look in CID 4014 first (else CID 4010 first).

    Returns:
        The view abbreviation, or ``""`` when the code is not a known view.
    """
    return _view_from_code(str(value or "").strip(), bool(mammography))


@lru_cache(maxsize=1024)
def _view_from_code(key: str, mammography: bool) -> str:
    tables = (_MAMMO_CODES, _RADIOGRAPHY_CODES) if mammography else (_RADIOGRAPHY_CODES, _MAMMO_CODES)
    for table in tables:
        found = table.get(key) or table.get(_words(key))
        if found:
            return found
    view, _, _ = normalise_view(key, mammography)
    return "" if view == "?" else view


def modifier_from_code(value: Any) -> str:
    """The modifier (``SPOT``, ``MAG``, ``ID``, ``CV``, ``AT`` ...) of a ViewModifierCodeSequence item.

    Args:
        value: CodeMeaning or CodeValue.

    Returns:
        The abbreviation, or ``""``.
    """
    return _modifier_from_code(str(value or "").strip())


@lru_cache(maxsize=1024)
def _modifier_from_code(key: str) -> str:
    found = _MODIFIER_CODES.get(key) or _MODIFIER_CODES.get(_words(key))
    if found:
        return found
    _, modifiers, _ = normalise_view(key, True)
    return modifiers[0] if len(modifiers) == 1 else ""


def join_view(view: str, modifiers: Iterable[str] = ()) -> str:
    """``"CC"`` + ``("SPOT",)`` -> ``"CC+SPOT"`` (modifiers sorted, duplicates dropped)."""
    extra = sorted({m for m in modifiers if m})
    return "+".join([view] + extra) if view else ""


def split_view(view: Any) -> tuple[str, tuple[str, ...]]:
    """``"CC+MAG+SPOT"`` -> ``("CC", ("MAG", "SPOT"))``; empty or missing values give ``("", ())``."""
    text = str(view or "").strip().upper()
    if not text or text == "NAN":
        return "", ()
    base, *modifiers = text.split("+")
    return base, tuple(modifiers)


def view_group(view: Any) -> str:
    """``frontal``, ``lateral``, ``decubitus``, ``oblique``, ``craniocaudal``, ``mediolateral`` or ``""``.

    Args:
        view: a normalised view (modifiers allowed: ``CC+SPOT`` is craniocaudal).

    Returns:
        The group name.
    """
    return VIEW_GROUPS.get(split_view(view)[0], "")


def view_key(laterality: str, view: str) -> str:
    """The key of a mammography view in an exam: ``("L", "CC")`` -> ``"L-CC"``."""
    return f"{laterality}-{view}"


def parse_view_key(key: str) -> tuple[str, str]:
    """``"L-CC"`` -> ``("L", "CC")``.

    Raises:
        ValueError: not of the form ``<L|R>-<view>``.
    """
    laterality, sep, view = str(key).partition("-")
    if not sep or laterality not in ("L", "R") or not view:
        raise ValueError(f"{key!r} is not a view key such as 'L-CC' or 'R-MLO'")
    return laterality, view


def is_mammography(fields: Mapping[str, Any]) -> bool:
    """Whether an image is a mammogram: Modality MG, a mammography SOP class, or BodyPartExamined BREAST."""
    modality = str(fields.get("Modality") or "").strip().upper()
    sop = str(fields.get("SOPClass") or fields.get("SOPClassUID") or "")
    body = str(fields.get("BodyPartExamined") or "").strip().upper()
    return modality == "MG" or "Mammography" in sop or sop.startswith("1.2.840.10008.5.1.4.1.1.1.2") or body == "BREAST"


def _first_code(sequence: Any) -> str:
    try:
        item = sequence[0]
    except (IndexError, TypeError, KeyError):
        return ""
    return str(item.get("CodeMeaning") or item.get("CodeValue") or "")


def fields_from_dataset(ds: Any) -> dict[str, Any]:
    """The fields :func:`view_and_laterality` reads, from a pydicom dataset (as the indexer records them).

    Args:
        ds: a ``pydicom.Dataset``.

    Returns:
        ``Modality``, ``ViewPosition``, ``ImageLaterality``, ``Laterality``, ``ViewCode`` (CodeMeaning of the first
        ViewCodeSequence item), ``ViewModifierCode`` (of its first ViewModifierCodeSequence item, or of the
        top-level sequence some writers use), ``SeriesDescription``, ``BodyPartExamined``, ``SOPClassUID``,
        ``PatientOrientation``.
    """
    view_code, modifier = "", ""
    sequence = ds.get("ViewCodeSequence")
    if sequence:
        view_code = _first_code(sequence)
        modifier = _first_code(sequence[0].get("ViewModifierCodeSequence"))
    if not modifier and ds.get("ViewModifierCodeSequence"):
        modifier = _first_code(ds.get("ViewModifierCodeSequence"))
    orientation = ds.get("PatientOrientation")
    return {
        "Modality": str(ds.get("Modality") or ""),
        "ViewPosition": str(ds.get("ViewPosition") or ""),
        "ImageLaterality": str(ds.get("ImageLaterality") or ""),
        "Laterality": str(ds.get("Laterality") or ""),
        "ViewCode": view_code,
        "ViewModifierCode": modifier,
        "SeriesDescription": str(ds.get("SeriesDescription") or ""),
        "BodyPartExamined": str(ds.get("BodyPartExamined") or ""),
        "SOPClassUID": str(ds.get("SOPClassUID") or ""),
        "PatientOrientation": [str(v) for v in orientation] if orientation else [],
    }


def chest_wall_side(patient_orientation: Any) -> str:
    r"""The image side of a mammogram's chest wall, from PatientOrientation (0020,0020).

    PatientOrientation's first value is the patient direction along a row (left to right). A row running towards
    the nipple (``A``, anterior: ``A\R`` for a standard left CC, ``A\FR`` for a left MLO) starts at the chest
    wall, which is then on the image's left; a row running posterior (``P\L`` right CC, ``P\FL`` right MLO) ends
    at it, on the right.

    Args:
        patient_orientation: the two values (a list, or ``"A\R"``).

    Returns:
        ``"left"``, ``"right"`` or ``""`` (absent, or a row direction without A/P).
    """
    if not patient_orientation:
        return ""
    values = str(patient_orientation).split("\\") if isinstance(patient_orientation, str) else list(patient_orientation)
    row = str(values[0]).strip().upper() if values else ""
    if "A" in row and "P" not in row:
        return "left"
    if "P" in row and "A" not in row:
        return "right"
    return ""


def _as_view(view: str, modifier: str) -> str:
    """A CC with the cleavage modifier is the CV view; an MLO/XCCL with the axillary-tail modifier the AT view."""
    if modifier == "CV" and view in ("CC", ""):
        return "CV"
    if modifier == "AT" and view in ("MLO", "XCCL", ""):
        return "AT"
    return view


def view_and_laterality(fields: Mapping[str, Any]) -> tuple[str, str, str]:
    """View and laterality of a planar image, and a description of contradicting tags.

    Args:
        fields: DICOM keywords to values: ``Modality``, ``ViewPosition``, ``ImageLaterality``, ``Laterality``,
            ``ViewCode`` (CodeMeaning of ViewCodeSequence), ``ViewModifierCode``, ``SeriesDescription``, and
            optionally ``BodyPartExamined`` and ``SOPClass`` (see :func:`fields_from_dataset`).

    Returns:
        ``(view, laterality, conflict)``: the normalised view (``CC``, ``MLO``, ``CC+SPOT`` ... for mammograms;
        ``PA``, ``AP``, ``LATERAL``, ``LL`` ... for radiographs; ``""`` when unknown or contradicted), ``L``/``R``/
        ``B`` or ``""``, and ``""`` when the tags agree, else what contradicts what. Non-planar modalities give
        ``("", "", "")``.
    """
    modality = str(fields.get("Modality") or "").strip().upper()
    if modality not in PLANAR_MODALITIES:
        return "", "", ""
    mammo = is_mammography(fields)
    conflicts: list[str] = []

    position_text = fields.get("ViewPosition")
    position_view, position_modifiers, position_laterality = normalise_view(position_text, mammo)
    if position_view == "?":
        conflicts.append(f"ViewPosition {str(position_text).strip()!r} names several views")
        position_view = ""
    code_view = view_from_code(fields.get("ViewCode"), mammo)
    code_modifier = modifier_from_code(fields.get("ViewModifierCode")) if mammo else ""
    if code_view and _as_view(code_view, code_modifier) != code_view:
        code_view, code_modifier = code_modifier, ""  # cleavage / axillary tail: views in ACR MQCM terms
    description_view, description_modifiers, description_laterality = normalise_view(
        fields.get("SeriesDescription"), mammo
    )
    if position_view and code_view and position_view != code_view:
        conflicts.append(f"ViewPosition {position_view} != ViewCodeSequence {code_view}")
        view = ""
    else:
        view = position_view or code_view or ("" if description_view == "?" else description_view)
    modifiers = set(position_modifiers) | {code_modifier} | (set(description_modifiers) if mammo else set())
    modifiers.discard("")
    for modifier in ("CV", "AT"):
        if modifier in modifiers and _as_view(view, modifier) == modifier:
            view = modifier
    modifiers.discard(view)

    named = {
        "ImageLaterality": normalise_laterality(fields.get("ImageLaterality")),
        "Laterality": normalise_laterality(fields.get("Laterality")),
        "ViewPosition": position_laterality,
    }
    named = {k: v for k, v in named.items() if v}
    laterality = ""
    if len(set(named.values())) > 1:
        conflicts.append(" != ".join(f"{k} {v}" for k, v in named.items()))
    elif named:
        laterality = next(iter(named.values()))
    elif mammo:
        laterality = description_laterality
    return (join_view(view, modifiers) if mammo else view), laterality, "; ".join(conflicts)
