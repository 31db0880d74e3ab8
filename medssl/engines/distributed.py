"""Process-group set-up for one process, one GPU or many processes under ``torchrun``.

``torchrun --nproc_per_node=N`` sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`init_distributed` reads them, initialises the process group (NCCL on GPUs, gloo on CPU) and picks the device
of this rank. Without those variables it returns a one-process context and initialises nothing, so the same code
runs in a notebook, on one GPU and on many.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from medssl.exceptions import MedsslError

__all__ = [
    "DistributedSetupError",
    "DistributedContext",
    "resolve_device",
    "init_distributed",
    "cleanup_distributed",
    "all_gather_objects",
    "broadcast_object",
    "barrier",
]


class DistributedSetupError(MedsslError):
    """The distributed environment or the requested device cannot be used."""


@dataclass
class DistributedContext:
    """Where this process stands in the job.

    Attributes:
        rank: global rank (0 for one process).
        world_size: number of processes.
        local_rank: rank on this node (selects the GPU).
        device: the device this rank computes on.
        backend: ``"nccl"``, ``"gloo"`` or ``None`` (one process).
        initialised_here: :func:`init_distributed` created the process group (and :func:`cleanup_distributed`
            destroys it).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        """True on rank 0, the process that writes files and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1


def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """The device to compute on.

    Args:
        device: ``"auto"`` (this rank's GPU when CUDA is available, else CPU), ``"cpu"``, ``"cuda"`` (this rank's GPU)
            or an explicit ``"cuda:1"``.
        local_rank: this process's rank on the node.

    Returns:
        The device.

    Raises:
        DistributedSetupError: CUDA is asked for but not available.
    """
    name = str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DistributedSetupError(f"device {device!r} was asked for but CUDA is not available")
        return torch.device(name if ":" in name else f"cuda:{local_rank}")
    return torch.device(name)


def init_distributed(
    device: str | torch.device = "auto", backend: str | None = None, timeout_s: float = 1800
) -> DistributedContext:
    """Initialise the process group from ``torchrun``'s environment (or nothing for one process).

    Args:
        device: see :func:`resolve_device`.
        backend: ``"nccl"``, ``"gloo"`` or ``None`` (NCCL for CUDA devices, gloo otherwise).
        timeout_s: collective timeout.

    Returns:
        The context; an already initialised process group is used as it is.

    Raises:
        DistributedSetupError: an inconsistent environment or device.
    """
    if dist.is_available() and dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        return DistributedContext(
            rank, world_size, local_rank, resolve_device(device, local_rank), dist.get_backend(), False
        )
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    torch_device = resolve_device(device, local_rank)
    if world_size <= 1:
        return DistributedContext(0, 1, 0, torch_device, None, False)
    if not 0 <= rank < world_size:
        raise DistributedSetupError(f"RANK={rank} is outside WORLD_SIZE={world_size}")
    if not dist.is_available():
        raise DistributedSetupError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    backend = backend or ("nccl" if torch_device.type == "cuda" else "gloo")
    if torch_device.type == "cuda":
        torch.cuda.set_device(torch_device)
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    return DistributedContext(rank, world_size, local_rank, torch_device, backend, True)


def cleanup_distributed(context: DistributedContext) -> None:
    """Destroy the process group if :func:`init_distributed` created it."""
    if context.initialised_here and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` in rank order (``[obj]`` for one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return [obj]
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (``obj`` itself for one process)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    """Wait for every rank (no-op for one process)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()
