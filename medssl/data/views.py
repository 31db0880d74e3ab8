"""View and laterality of planar images (mammography, chest X-ray) from DICOM headers.

The indexer calls :func:`view_and_laterality` for every series; the mammography and chest X-ray modules refine the
normalisation tables. Conflicting tags are reported (third value), never guessed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["PLANAR_MODALITIES", "normalise_laterality", "view_and_laterality"]

PLANAR_MODALITIES = ("MG", "DX", "CR", "DR", "RF")
_LATERALITY = {"L": "L", "LEFT": "L", "R": "R", "RIGHT": "R", "B": "B", "BOTH": "B", "BILATERAL": "B"}


def normalise_laterality(value: Any) -> str:
    """Normalise a laterality value to ``L``, ``R``, ``B`` or ``""``."""
    if value is None:
        return ""
    return _LATERALITY.get(str(value).strip().upper(), "")


def view_and_laterality(fields: Mapping[str, Any]) -> tuple[str, str, str]:
    """View and laterality of a planar image.

    Args:
        fields: DICOM keywords to values (Modality, ViewPosition, ImageLaterality, Laterality ...).

    Returns:
        ``(view, laterality, conflict)``: the normalised view (``ViewPosition`` upper-cased for now), ``L``/``R``/``B``
        or ``""``, and a description of conflicting tags (``""`` when they agree).
    """
    modality = str(fields.get("Modality") or "").upper()
    if modality not in PLANAR_MODALITIES:
        return "", "", ""
    view = str(fields.get("ViewPosition") or "").strip().upper()
    image_laterality = normalise_laterality(fields.get("ImageLaterality"))
    series_laterality = normalise_laterality(fields.get("Laterality"))
    conflict = ""
    if image_laterality and series_laterality and image_laterality != series_laterality:
        conflict = f"ImageLaterality {image_laterality} != Laterality {series_laterality}"
    laterality = "" if conflict else (image_laterality or series_laterality)
    return view, laterality, conflict
