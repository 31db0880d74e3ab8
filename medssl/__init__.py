"""medssl: multimodal medical imaging on MONAI.

A PACS/DICOM/NIfTI data layer, early/joint/late fusion networks, ConVIRT/GLoRIA image-report pretraining, image-only
self-supervision, weak labels from reports, and MONAI bundles for all of it. See ``docs/`` for a tour.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
