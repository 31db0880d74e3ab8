"""Public dataset layouts (BraTS, VinDr-Mammo, CBIS-DDSM, MIMIC-CXR-JPG, CheXpert, DICOM exports) to datalists."""

from __future__ import annotations

__all__: list[str] = []
