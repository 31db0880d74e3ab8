"""What the medssl MONAI bundles (``bundles/<name>``) call through ``_target_`` and expressions.

- datalists built at run time from a dataset folder in its public layout, split by patient with a seed and the split
  saved next to the results (:mod:`medssl.bundle.datalists`);
- post-processing transforms, a masked ROC AUC handler, PHI-free row names
  (:mod:`medssl.bundle.transforms`, :mod:`medssl.bundle.handlers`);
- a harness that checks and runs any bundle on tiny synthetic data (:mod:`medssl.bundle.harness`, imported on its
  own: ``from medssl.bundle import harness``).

Batch preparation and the losses of the fusion networks are :mod:`medssl.engines.supervised`'s
(``FusionPrepareBatch``, ``FusionLoss``), shared with ``medssl compare-fusion``.

See ``docs/bundles.md``.
"""

from __future__ import annotations

from medssl.bundle.datalists import MAMMO_LAYOUTS, SPLIT_NAMES, brats_datalist, brats_et_label, mammo_datalist
from medssl.bundle.handlers import MaskedROCAUC, MaskedROCAUCMetric, case_key_meta
from medssl.bundle.transforms import (
    CaseKeyAsFilenameD,
    CaseKeyAsFilenamed,
    CaseKeyAsFilenameDict,
    FusionOutputsD,
    FusionOutputsd,
    FusionOutputsDict,
)

__all__ = [
    "MAMMO_LAYOUTS",
    "SPLIT_NAMES",
    "brats_datalist",
    "brats_et_label",
    "mammo_datalist",
    "MaskedROCAUC",
    "MaskedROCAUCMetric",
    "case_key_meta",
    "CaseKeyAsFilenamed",
    "CaseKeyAsFilenameD",
    "CaseKeyAsFilenameDict",
    "FusionOutputsd",
    "FusionOutputsD",
    "FusionOutputsDict",
]
