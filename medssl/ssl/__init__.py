"""Image-only self-supervised pretraining: SimCLR, MICLe, SimSiam, BYOL, MAE and rotation prediction.

* :mod:`medssl.ssl.methods`: the methods, registered with the pretraining engine (``medssl pretrain --method
  simclr|micle|simsiam|byol|mae|rotation``);
* :mod:`medssl.ssl.networks`: their networks (projection/prediction heads, BYOL's moving-average target, MAE helpers,
  the exported ViT encoder);
* :mod:`medssl.ssl.augment`: modality presets of MONAI augmentations (``cxr``, ``mammo``, ``mr3d``);
* :mod:`medssl.ssl.pairs`: patient-aware positive pairs (MICLe).

See ``docs/ssl.md``.
"""

from __future__ import annotations

from medssl.ssl.augment import (
    SSL_PRESETS,
    AugmentConfigError,
    RandSSLAugment,
    RandSSLAugmentd,
    available_presets,
    resolve_preset,
    ssl_augmentations,
)
from medssl.ssl.methods import (
    BYOLMethod,
    MAEMethod,
    MICLeMethod,
    RotationMethod,
    SimCLRMethod,
    SimSiamMethod,
    SSLMethodBase,
    load_ssl_image_encoder,
)
from medssl.ssl.pairs import (
    PairingError,
    RandPositived,
    add_positive_candidates,
    image_items,
    positive_pair_dataset,
    write_positive_datalist,
)

__all__ = [
    "SSL_PRESETS",
    "AugmentConfigError",
    "RandSSLAugment",
    "RandSSLAugmentd",
    "available_presets",
    "resolve_preset",
    "ssl_augmentations",
    "BYOLMethod",
    "MAEMethod",
    "MICLeMethod",
    "RotationMethod",
    "SimCLRMethod",
    "SimSiamMethod",
    "SSLMethodBase",
    "load_ssl_image_encoder",
    "PairingError",
    "RandPositived",
    "add_positive_candidates",
    "image_items",
    "positive_pair_dataset",
    "write_positive_datalist",
]
