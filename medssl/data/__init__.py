"""Data layer: PACS export indexing, DICOM/NIfTI loading, public layouts, synthetic data, splits."""

from __future__ import annotations

__all__: list[str] = []
