"""Pieces shared by the loss modules: input checks, cosine logits, the (learnable) logit scale and cached labels."""

from __future__ import annotations

import math

import torch
from torch import nn

from medssl.exceptions import MedsslError
from medssl.losses.distributed import distributed_world, gather_batch

__all__ = ["LossInputError", "cosine_logits", "check_embeddings", "ContrastiveLossBase"]


class LossInputError(MedsslError):
    """A loss received tensors it cannot use (wrong shapes, batch sizes that differ, empty captions ...)."""


def check_embeddings(name_a: str, a: torch.Tensor, name_b: str, b: torch.Tensor, same_batch: bool = True) -> None:
    """Check that two embedding batches are ``(B, F)`` with the same ``F`` (and the same ``B`` if asked).

    Args:
        name_a: name of the first argument, used in the message.
        a: first batch.
        name_b: name of the second argument.
        b: second batch.
        same_batch: also require equal batch sizes.

    Raises:
        LossInputError: on any mismatch or an empty batch.
    """
    for name, tensor in ((name_a, a), (name_b, b)):
        if tensor.dim() != 2 or tensor.shape[0] == 0:
            raise LossInputError(
                f"{name} must be a non-empty (B, F) batch of embeddings, got shape {tuple(tensor.shape)}"
            )
    if a.shape[1] != b.shape[1] or (same_batch and a.shape[0] != b.shape[0]):
        raise LossInputError(
            f"{name_a} {tuple(a.shape)} and {name_b} {tuple(b.shape)} must have the same "
            + ("shape" if same_batch else "feature size")
        )


def cosine_logits(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Cosine similarities between every row of ``a`` and every row of ``b``.

    The norm product is clamped at ``eps`` as in GLoRIA's ``global_loss`` (``torch.nn.functional.cosine_similarity``
    would broadcast to a ``(Ba, Bb, F)`` tensor).

    Args:
        a: ``(Ba, F)``.
        b: ``(Bb, F)``.
        eps: lower bound of ``|a_i| |b_j|``.

    Returns:
        ``(Ba, Bb)``.
    """
    norms = torch.outer(torch.linalg.vector_norm(a, dim=1), torch.linalg.vector_norm(b, dim=1))
    return (a @ b.t()) / norms.clamp_min(eps)


class ContrastiveLossBase(nn.Module):
    """Logit scale (fixed or learnable, clamped), labels cached per device, and global-batch gathering.

    Args:
        temperature: initial temperature; the logit scale is ``1 / temperature``.
        learnable_temperature: learn ``log(1 / temperature)`` as a parameter named ``logit_scale``.
        max_logit_scale: upper clamp of the learnable scale (CLIP uses 100); its lower clamp is 1.
        local_loss: in a distributed run, compute only this rank's rows against the global batch (the mean of the
            ranks' losses is the global loss) instead of the whole matrix on every rank.
        gather_with_grad: gather other ranks' embeddings with gradients (exact single-process gradients); ``False``
            treats them as constants (open_clip's cheaper approximation).
        rank: explicit rank; ``None`` reads it from ``torch.distributed``.
        world_size: explicit world size; ``None`` reads it from ``torch.distributed`` (1 when not initialised).

    Raises:
        LossInputError: if the temperature is not positive or lies outside the clamp of a learnable scale.
    """

    def __init__(
        self,
        temperature: float = 0.1,
        learnable_temperature: bool = False,
        max_logit_scale: float = 100.0,
        local_loss: bool = False,
        gather_with_grad: bool = True,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        super().__init__()
        self.learnable_temperature = bool(learnable_temperature)
        self.max_logit_scale = float(max_logit_scale)
        self.local_loss = bool(local_loss)
        self.gather_with_grad = bool(gather_with_grad)
        self.rank = rank
        self.world_size = world_size
        self._labels: dict[tuple, torch.Tensor] = {}
        self.temperature = self._check_temperature("temperature", temperature)
        if self.learnable_temperature:
            self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / self.temperature)))

    def _check_temperature(self, name: str, temperature: float) -> float:
        temperature = float(temperature)
        if not temperature > 0:
            raise LossInputError(f"{name} must be positive, got {temperature}")
        if self.learnable_temperature and not 1.0 <= 1.0 / temperature <= self.max_logit_scale:
            raise LossInputError(
                f"{name}={temperature} gives a logit scale of {1.0 / temperature:g}, outside the clamp "
                f"[1, max_logit_scale={self.max_logit_scale:g}] of a learnable temperature; raise max_logit_scale"
            )
        return temperature

    def _clamped_scale(self, parameter: torch.Tensor) -> torch.Tensor:
        return parameter.clamp(0.0, math.log(self.max_logit_scale)).exp()

    def scale(self) -> torch.Tensor | float:
        """Return the current logit scale ``1 / temperature`` (a tensor when learnable, a float otherwise)."""
        if self.learnable_temperature:
            return self._clamped_scale(self.logit_scale)
        return 1.0 / self.temperature

    def labels(self, n: int, offset: int, device: torch.device) -> torch.Tensor:
        """Return ``arange(offset, offset + n)`` on ``device``, cached (open_clip style)."""
        key = (str(device), n, offset)
        if key not in self._labels:
            self._labels = {k: v for k, v in self._labels.items() if k[0] != key[0]}  # one entry per device
            self._labels[key] = torch.arange(offset, offset + n, device=device)
        return self._labels[key]

    def world(self) -> tuple[int, int]:
        """Return ``(rank, world_size)`` of this loss (explicit or read from ``torch.distributed``)."""
        return distributed_world(self.rank, self.world_size)

    def gather(self, tensor: torch.Tensor) -> tuple[torch.Tensor, int]:
        """Gather ``tensor`` from all ranks (no-op for one process); return it with this rank's row offset."""
        _, world_size = self.world()
        if world_size == 1:
            return tensor, 0
        return gather_batch(tensor, with_grad=self.gather_with_grad)

    def extra_repr(self) -> str:  # noqa: D102
        return (
            f"temperature={self.temperature}, learnable_temperature={self.learnable_temperature}, "
            f"local_loss={self.local_loss}, gather_with_grad={self.gather_with_grad}"
        )
