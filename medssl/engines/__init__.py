"""What the ``medssl`` CLI and the MONAI bundles share to train: methods, engine, checkpoints, tracking, DDP.

* :mod:`medssl.engines.methods`: pretraining methods as pluggable units (``convirt``, ``gloria``; image-only
  methods register theirs) and the registry;
* :mod:`medssl.engines.pretrain`: :class:`Pretraining`, the ignite engine with exact resume, DDP, AMP, gradient
  accumulation, checkpoints, tracking and export;
* :mod:`medssl.engines.data`: the resumable sampler and per-item seeded datasets;
* :mod:`medssl.engines.checkpoint`, :mod:`medssl.engines.tracking`, :mod:`medssl.engines.distributed`.

See ``docs/pretraining.md``.
"""

from __future__ import annotations

from medssl.engines.checkpoint import (
    CHECKPOINT_FORMAT,
    CheckpointError,
    CheckpointManager,
    atomic_torch_save,
    capture_rng_state,
    restore_rng_state,
)
from medssl.engines.data import (
    DataSetupError,
    FailedItem,
    ResumableBatchSampler,
    SeededDataset,
    build_loader,
    collate_dropping_failures,
    item_seed,
)
from medssl.engines.distributed import (
    DistributedContext,
    DistributedSetupError,
    all_gather_objects,
    barrier,
    broadcast_object,
    cleanup_distributed,
    init_distributed,
    resolve_device,
)
from medssl.engines.methods import (
    ConVIRTMethod,
    GLoRIAMethod,
    ImageMethodBase,
    ImageTextMethodBase,
    MethodConfigError,
    PretrainMethod,
    available_methods,
    create_method,
    get_method,
    register_method,
)
from medssl.engines.pretrain import (
    PretrainConfig,
    Pretraining,
    PretrainStep,
    WarmupCosine,
    load_training_items,
    run_pretraining,
)
from medssl.engines.tracking import TRACKING_BACKENDS, Tracker, TrackingError, read_metrics

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "CheckpointManager",
    "atomic_torch_save",
    "capture_rng_state",
    "restore_rng_state",
    "DataSetupError",
    "FailedItem",
    "ResumableBatchSampler",
    "SeededDataset",
    "build_loader",
    "collate_dropping_failures",
    "item_seed",
    "DistributedContext",
    "DistributedSetupError",
    "all_gather_objects",
    "barrier",
    "broadcast_object",
    "cleanup_distributed",
    "init_distributed",
    "resolve_device",
    "ConVIRTMethod",
    "GLoRIAMethod",
    "ImageMethodBase",
    "ImageTextMethodBase",
    "MethodConfigError",
    "PretrainMethod",
    "available_methods",
    "create_method",
    "get_method",
    "register_method",
    "PretrainConfig",
    "Pretraining",
    "PretrainStep",
    "WarmupCosine",
    "load_training_items",
    "run_pretraining",
    "TRACKING_BACKENDS",
    "Tracker",
    "TrackingError",
    "read_metrics",
]
