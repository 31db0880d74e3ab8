"""Image-only self-supervised losses: SimCLR's NT-Xent, SimSiam, BYOL and MAE's masked-patch reconstruction.

* NT-Xent (Chen et al. 2020): for ``2B`` normalised views ``z`` (``z1`` then ``z2``), anchor ``k`` with positive
  ``k'`` (the other view of the same image)::

      l_k = -log( exp(z_k . z_k' / tau) / sum_{m != k} exp(z_k . z_m / tau) ),   L = mean over the 2B anchors

  computed as a cross-entropy over the ``(2B, 2B)`` similarity matrix with the diagonal at ``-inf`` (log-sum-exp
  form: finite at ``tau = 0.001``). MONAI's ``ContrastiveLoss`` computes the same loss with ``exp`` directly (it
  overflows to NaN below ``tau ~ 0.01`` in float32) and builds a ``(2B, 2B, F)`` tensor for the cosines.
* SimSiam (Chen & He 2021): ``D(p, z) = -cos(p, stopgrad(z))``, ``L = D(p1, z2) / 2 + D(p2, z1) / 2``.
* BYOL (Grill et al. 2020): ``l(p, z) = |p/|p| - z/|z||^2 = 2 - 2 cos(p, stopgrad(z))``, symmetrised as in the paper
  by adding both directions: ``L = mean_b [l(p1, z2) + l(p2, z1)]``.
* MAE (He et al. 2022): mean squared error per patch, averaged over the masked patches only; with
  ``norm_pix_loss`` each target patch is first normalised by its own mean and (unbiased) variance.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from medssl.losses._common import ContrastiveLossBase, LossInputError, check_embeddings

__all__ = [
    "nt_xent_loss",
    "simsiam_loss",
    "byol_loss",
    "masked_patch_loss",
    "NTXentLoss",
    "SimSiamLoss",
    "BYOLLoss",
    "MaskedPatchLoss",
]


def _nt_xent_logits(anchors: torch.Tensor, candidates: torch.Tensor, anchor_index: torch.Tensor, scale):
    """Scaled cosine logits of ``anchors`` against ``candidates`` with each anchor's own column at ``-inf``."""
    a = F.normalize(anchors, dim=1)
    c = F.normalize(candidates, dim=1)
    logits = (a @ c.t()) * scale
    own = torch.zeros_like(logits, dtype=torch.bool)
    own[torch.arange(anchors.shape[0], device=anchors.device), anchor_index] = True
    return logits.masked_fill(own, float("-inf"))


def nt_xent_loss(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """SimCLR's normalised temperature-scaled cross-entropy, mean over the ``2B`` anchors.

    Memory is ``O(B^2 + B F)``: the cosines are one matrix product of normalised rows.

    Args:
        z1: ``(B, F)`` projections of the first views.
        z2: ``(B, F)`` projections of the second views (row ``b`` is the positive of ``z1[b]``).
        temperature: ``tau``; stable down to at least 0.001 (log-sum-exp form).

    Returns:
        The scalar loss.

    Raises:
        LossInputError: if the shapes differ or the temperature is not positive.

    Example:
        >>> import torch
        >>> loss = nt_xent_loss(torch.randn(16, 128), torch.randn(16, 128), temperature=0.1)
    """
    check_embeddings("z1", z1, "z2", z2)
    if not float(temperature) > 0:
        raise LossInputError(f"temperature must be positive, got {temperature}")
    batch = z1.shape[0]
    z = torch.cat([z1, z2])
    index = torch.arange(2 * batch, device=z.device)
    logits = _nt_xent_logits(z, z, index, 1.0 / float(temperature))
    positives = (index + batch) % (2 * batch)
    return F.cross_entropy(logits, positives)


def _negative_cosine(p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return -F.cosine_similarity(p, z.detach(), dim=-1).mean()


def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """SimSiam's symmetric negative cosine with stop-gradient on the projections.

    Args:
        p1: ``(B, F)`` predictor output of view 1.
        p2: ``(B, F)`` predictor output of view 2.
        z1: ``(B, F)`` projection of view 1 (no gradient flows into it).
        z2: ``(B, F)`` projection of view 2 (no gradient flows into it).

    Returns:
        ``D(p1, z2) / 2 + D(p2, z1) / 2`` with ``D(p, z) = -mean cos(p, stopgrad(z))``; in ``[-1, 1]``.

    Raises:
        LossInputError: if the shapes differ.
    """
    for name, tensor in (("p2", p2), ("z1", z1), ("z2", z2)):
        check_embeddings("p1", p1, name, tensor)
    return 0.5 * _negative_cosine(p1, z2) + 0.5 * _negative_cosine(p2, z1)


def byol_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """BYOL's normalised mean squared error ``2 - 2 cos``, both directions added, stop-gradient on the targets.

    Args:
        p1: ``(B, F)`` online predictions of view 1.
        p2: ``(B, F)`` online predictions of view 2.
        z1: ``(B, F)`` target projections of view 1 (no gradient flows into them).
        z2: ``(B, F)`` target projections of view 2 (no gradient flows into them).

    Returns:
        ``mean_b [(2 - 2 cos(p1, z2)) + (2 - 2 cos(p2, z1))]``, in ``[0, 8]``.

    Raises:
        LossInputError: if the shapes differ.
    """
    for name, tensor in (("p2", p2), ("z1", z1), ("z2", z2)):
        check_embeddings("p1", p1, name, tensor)
    return 4.0 + 2.0 * _negative_cosine(p1, z2) + 2.0 * _negative_cosine(p2, z1)


def masked_patch_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, norm_pix_loss: bool = False, eps: float = 1e-6
) -> torch.Tensor:
    """MAE's reconstruction loss: mean squared error over the masked patches only.

    Args:
        pred: ``(B, P, K)`` predicted patches (``P`` patches of ``K`` values).
        target: ``(B, P, K)`` true patches.
        mask: ``(B, P)``, true (or 1) for masked patches, the ones the loss looks at; visible patches are ignored.
        norm_pix_loss: normalise every target patch by its mean and unbiased variance first (He et al.).
        eps: added to the variance before the square root.

    Returns:
        The scalar loss.

    Raises:
        LossInputError: if the shapes do not fit or no patch is masked.
    """
    if pred.dim() != 3 or pred.shape != target.shape:
        raise LossInputError(f"pred {tuple(pred.shape)} and target {tuple(target.shape)} must both be (B, P, K)")
    if tuple(mask.shape) != tuple(pred.shape[:2]):
        raise LossInputError(f"mask must be (B, P) = {tuple(pred.shape[:2])}, got {tuple(mask.shape)}")
    if norm_pix_loss:
        if target.shape[-1] < 2:
            raise LossInputError("norm_pix_loss needs patches of at least 2 values")
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + eps).sqrt()
    weights = mask.to(pred.dtype)
    total = weights.sum()
    if not bool(total > 0):
        raise LossInputError("mask selects no patch: the masked-patch loss is undefined")
    per_patch = (pred - target).square().mean(dim=-1)
    return (per_patch * weights).sum() / total


class NTXentLoss(ContrastiveLossBase):
    """NT-Xent as a module, with an optional learnable temperature and negatives from the global batch under DDP.

    ``local_loss=False``: every rank computes the loss of all ``2 B_global`` anchors (value = single-process loss on
    the global batch); ``local_loss=True``: only this rank's ``2 B_local`` anchors against all ``2 B_global``
    candidates (the mean over ranks is the global loss). Gradients follow :class:`medssl.losses.ConVIRTLoss`.

    Args:
        temperature: initial temperature.
        learnable_temperature: learn the logit scale ``1 / temperature`` (clamped to ``[1, max_logit_scale]``).
        max_logit_scale: upper clamp of the learnable scale.
        local_loss: distributed: compute only this rank's anchors.
        gather_with_grad: distributed: gather with gradients (exact) or without.
        rank: explicit rank (``None``: from ``torch.distributed``).
        world_size: explicit world size (``None``: from ``torch.distributed``).

    Example:
        ``{"_target_": "medssl.losses.NTXentLoss", "temperature": 0.1}``.
    """

    def forward(self, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """Compute the loss of two batches of paired views.

        Args:
            z1: ``(B, F)`` projections of the first views on this rank.
            z2: ``(B, F)`` projections of the second views.

        Returns:
            The scalar loss.
        """
        check_embeddings("z1", z1, "z2", z2)
        scale = self.scale()
        all_z1, offset = self.gather(z1)
        all_z2, _ = self.gather(z2)
        total = all_z1.shape[0]
        candidates = torch.cat([all_z1, all_z2])
        if self.local_loss:
            anchors = torch.cat([z1, z2])
            local = torch.arange(z1.shape[0], device=z1.device) + offset
            anchor_index = torch.cat([local, local + total])
        else:
            anchors = candidates
            anchor_index = torch.arange(2 * total, device=z1.device)
        logits = _nt_xent_logits(anchors, candidates, anchor_index, scale)
        return F.cross_entropy(logits, (anchor_index + total) % (2 * total))


class SimSiamLoss(nn.Module):
    """:func:`simsiam_loss` as a module (no state; per-sample, so nothing to gather under DDP)."""

    def forward(self, p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """Return :func:`simsiam_loss` of the inputs.

        Args:
            p1: predictor output of view 1.
            p2: predictor output of view 2.
            z1: projection of view 1.
            z2: projection of view 2.

        Returns:
            The scalar loss.
        """
        return simsiam_loss(p1, p2, z1, z2)


class BYOLLoss(nn.Module):
    """:func:`byol_loss` as a module (no state; per-sample, so nothing to gather under DDP)."""

    def forward(self, p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
        """Return :func:`byol_loss` of the inputs.

        Args:
            p1: online prediction of view 1.
            p2: online prediction of view 2.
            z1: target projection of view 1.
            z2: target projection of view 2.

        Returns:
            The scalar loss.
        """
        return byol_loss(p1, p2, z1, z2)


class MaskedPatchLoss(nn.Module):
    """:func:`masked_patch_loss` as a module.

    Args:
        norm_pix_loss: normalise each target patch by its mean and variance first.
        eps: added to the variance.
    """

    def __init__(self, norm_pix_loss: bool = False, eps: float = 1e-6) -> None:
        super().__init__()
        self.norm_pix_loss = bool(norm_pix_loss)
        self.eps = float(eps)

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Return :func:`masked_patch_loss` of the inputs.

        Args:
            pred: ``(B, P, K)`` predicted patches.
            target: ``(B, P, K)`` true patches.
            mask: ``(B, P)``, true for masked patches.

        Returns:
            The scalar loss.
        """
        return masked_patch_loss(pred, target, mask, self.norm_pix_loss, self.eps)
