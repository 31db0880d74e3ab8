"""Contrastive and self-supervised losses: ConVIRT, GLoRIA (global + batched local), NT-Xent, SimSiam, BYOL, MAE.

Functions compute a loss of one process's batch; the modules add an optional learnable temperature and, when
``torch.distributed`` is initialised, negatives gathered from the global batch (see :mod:`medssl.losses.distributed`
and ``docs/losses.md``).
"""

from __future__ import annotations

from medssl.losses._common import ContrastiveLossBase, LossInputError, cosine_logits
from medssl.losses.contrastive import ConVIRTLoss, convirt_loss
from medssl.losses.distributed import (
    DistributedLossError,
    distributed_world,
    gather_batch,
    gather_no_grad,
    gather_with_grad,
)
from medssl.losses.gloria import (
    DEFAULT_TILE_ELEMENTS,
    GloriaLoss,
    gloria_attention_maps,
    gloria_global_loss,
    gloria_local_loss,
    gloria_local_similarity,
)
from medssl.losses.ssl import (
    BYOLLoss,
    MaskedPatchLoss,
    NTXentLoss,
    SimSiamLoss,
    byol_loss,
    masked_patch_loss,
    nt_xent_loss,
    simsiam_loss,
)

__all__ = [
    "BYOLLoss",
    "ConVIRTLoss",
    "ContrastiveLossBase",
    "DEFAULT_TILE_ELEMENTS",
    "DistributedLossError",
    "GloriaLoss",
    "LossInputError",
    "MaskedPatchLoss",
    "NTXentLoss",
    "SimSiamLoss",
    "byol_loss",
    "convirt_loss",
    "cosine_logits",
    "distributed_world",
    "gather_batch",
    "gather_no_grad",
    "gather_with_grad",
    "gloria_attention_maps",
    "gloria_global_loss",
    "gloria_local_loss",
    "gloria_local_similarity",
    "masked_patch_loss",
    "nt_xent_loss",
    "simsiam_loss",
]
