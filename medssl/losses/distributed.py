"""Gathering embeddings across processes so that contrastive negatives come from the global batch.

The scheme is open_clip's (``src/open_clip/loss.py``): every rank gathers the embeddings of all ranks and computes its
loss against all of them. :func:`gather_with_grad` keeps the autograd graph: its backward sums, over all ranks, the
gradients that each rank's loss sends to a rank's slice and hands that sum back to the rank that owns the slice. With
the losses of :mod:`medssl.losses`, the gradient a rank then receives for its own inputs is ``world_size`` times the
single-process gradient of that slice (in both ``local_loss`` modes); DDP averages parameter gradients over ranks,
which divides the ``world_size`` back out, so a DDP step equals the single-process step on the global batch.

Unequal local batch sizes (a last incomplete batch) are gathered correctly (padded for the collective, trimmed after).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from medssl.exceptions import MedsslError

__all__ = [
    "DistributedLossError",
    "distributed_world",
    "gather_with_grad",
    "gather_no_grad",
    "gather_batch",
]


class DistributedLossError(MedsslError):
    """Distributed loss settings that cannot work (explicit rank/world size not matching the process group ...)."""


def distributed_world(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """Return ``(rank, world_size)``: the explicit values if given, else those of the initialised process group.

    Args:
        rank: explicit rank, or ``None`` to read it from ``torch.distributed``.
        world_size: explicit world size, or ``None`` to read it from ``torch.distributed``.

    Returns:
        ``(rank, world_size)``; ``(0, 1)`` when ``torch.distributed`` is not initialised and nothing is given.

    Raises:
        DistributedLossError: if a world size above 1 is asked for while no process group is initialised, or the
            explicit values disagree with the process group.
    """
    initialised = dist.is_available() and dist.is_initialized()
    if not initialised:
        if world_size is not None and world_size > 1:
            raise DistributedLossError(
                f"world_size={world_size} was given but torch.distributed is not initialised; "
                "call torch.distributed.init_process_group first (or leave world_size unset)"
            )
        return (rank or 0, 1)
    group_rank, group_size = dist.get_rank(), dist.get_world_size()
    if world_size is not None and world_size != group_size:
        raise DistributedLossError(f"world_size={world_size} was given but the process group has {group_size} ranks")
    if rank is not None and rank != group_rank:
        raise DistributedLossError(f"rank={rank} was given but this process is rank {group_rank} of the process group")
    return group_rank, group_size


def _gather_sizes(tensor: torch.Tensor, world_size: int) -> list[int]:
    """All ranks' first-dimension sizes (one tiny collective)."""
    size = torch.tensor([tensor.shape[0]], dtype=torch.int64, device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(world_size)]
    dist.all_gather(sizes, size)
    return [int(s.item()) for s in sizes]


def _all_gather_padded(tensor: torch.Tensor, sizes: list[int]) -> list[torch.Tensor]:
    """``dist.all_gather`` of tensors whose first dimensions differ across ranks (padded to the largest, trimmed)."""
    largest = max(sizes)
    tensor = tensor.contiguous()
    if tensor.shape[0] < largest:
        pad = tensor.new_zeros((largest - tensor.shape[0], *tensor.shape[1:]))
        tensor = torch.cat([tensor, pad])
    parts = [torch.empty_like(tensor) for _ in sizes]
    dist.all_gather(parts, tensor)
    return [part[:size] for part, size in zip(parts, sizes)]


class _GatherWithGrad(torch.autograd.Function):
    """All-gather along dim 0 whose backward sums the gradients of every rank and returns this rank's slice.

    Written by hand rather than using ``torch.distributed.nn.functional.all_gather`` because that one is deprecated
    in torch 2.13, returns a tuple that must be concatenated, and does not handle unequal sizes across ranks.
    """

    @staticmethod
    def forward(ctx, tensor: torch.Tensor, sizes: list[int]) -> torch.Tensor:  # noqa: D102
        rank = dist.get_rank()
        ctx.start = sum(sizes[:rank])
        ctx.stop = ctx.start + sizes[rank]
        return torch.cat(_all_gather_padded(tensor, sizes))

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):  # noqa: D102
        # all_reduce then slice works on every backend (gloo has no reduce_scatter); the sum over ranks is the
        # reverse of the gather: each rank's loss may depend on every slice.
        grad = grad_output.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad[ctx.start : ctx.stop], None


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from all ranks along dim 0, keeping the autograd graph across ranks.

    Without an initialised process group (or with one rank) the tensor is returned as is.

    Args:
        tensor: this rank's batch, ``(B_local, ...)``; other dimensions must agree across ranks.

    Returns:
        ``(sum of B_local over ranks, ...)``, ranks in order. Backward sends each rank the sum over all ranks of the
        gradients with respect to its slice.
    """
    return gather_batch(tensor, with_grad=True)[0]


def gather_no_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate ``tensor`` from all ranks along dim 0; only this rank's slice carries gradients.

    This is open_clip's ``gather_with_grad=False``: other ranks' slices are constants, so the gradient misses the
    terms that other ranks' losses send to this rank's inputs (less communication, not the single-process gradient).

    Args:
        tensor: this rank's batch, ``(B_local, ...)``.

    Returns:
        ``(sum of B_local over ranks, ...)``.
    """
    return gather_batch(tensor, with_grad=False)[0]


def gather_batch(tensor: torch.Tensor, with_grad: bool = True) -> tuple[torch.Tensor, int]:
    """Gather ``tensor`` from all ranks and tell where this rank's slice starts.

    Args:
        tensor: this rank's batch, ``(B_local, ...)``.
        with_grad: keep gradients through other ranks' slices (:func:`gather_with_grad`) or not
            (:func:`gather_no_grad`).

    Returns:
        ``(gathered, offset)``: the global batch and the index of this rank's first row in it.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor, 0
    rank, world_size = dist.get_rank(), dist.get_world_size()
    sizes = _gather_sizes(tensor, world_size)
    offset = sum(sizes[:rank])
    if with_grad:
        return _GatherWithGrad.apply(tensor, sizes), offset
    with torch.no_grad():
        parts = _all_gather_padded(tensor, sizes)
    parts[rank] = tensor
    return torch.cat(parts), offset
