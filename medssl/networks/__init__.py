"""Networks: early, joint and late fusion on MONAI backbones, with profiling (parameters, FLOPs).

See ``docs/fusion_networks.md``.
"""

from __future__ import annotations

from medssl.networks.backbones import (
    ENCODER_NAMES,
    SEGMENTATION_NAMES,
    BackboneConfigError,
    EncoderStateError,
    SegResNetEncoder,
    build_encoder,
    build_segmentation_network,
    load_encoder_state,
    read_state_dict,
    segmentation_encoder,
)
from medssl.networks.fusion import (
    MAMMO_VIEWS,
    MR_SEQUENCES,
    STRATEGIES,
    DictOutput,
    EarlyFusion,
    FusionConfigError,
    FusionInputError,
    GatedAttentionPooling,
    JointFusion,
    LateFusion,
    ModalityDropout,
    SelectOutput,
    ViewBranch,
    build_fusion_model,
    draw_keep_mask,
    fit_width,
    masked_mean_ensemble,
    stack_views,
)
from medssl.networks.profile import count_flops, count_parameters, profile_model

__all__ = [
    "ENCODER_NAMES",
    "SEGMENTATION_NAMES",
    "BackboneConfigError",
    "EncoderStateError",
    "SegResNetEncoder",
    "build_encoder",
    "build_segmentation_network",
    "load_encoder_state",
    "read_state_dict",
    "segmentation_encoder",
    "MAMMO_VIEWS",
    "MR_SEQUENCES",
    "STRATEGIES",
    "DictOutput",
    "EarlyFusion",
    "FusionConfigError",
    "FusionInputError",
    "GatedAttentionPooling",
    "JointFusion",
    "LateFusion",
    "ModalityDropout",
    "SelectOutput",
    "ViewBranch",
    "build_fusion_model",
    "draw_keep_mask",
    "fit_width",
    "masked_mean_ensemble",
    "stack_views",
    "count_flops",
    "count_parameters",
    "profile_model",
]
