"""Training checkpoints: atomic writes, the last K kept, weights-only loading, random states as tensors.

A checkpoint is a plain dictionary of tensors, numbers, strings, lists and dicts, so that it loads with
``torch.load(path, weights_only=True)`` (no pickled code runs). Random states are stored as tensors:

===========  =======================================================================================
key          content
===========  =======================================================================================
``torch``    ``torch.get_rng_state()`` (uint8 tensor)
``cuda``     ``torch.cuda.get_rng_state_all()`` (list of uint8 tensors; empty without CUDA)
``numpy``    the MT19937 key (uint32 values in an int64 tensor), position, Gaussian cache
``python``   ``random.getstate()``: the 625 state words (int64 tensor), version, Gaussian cache
===========  =======================================================================================

A file is written to a temporary name in the same folder, flushed to disk and moved into place with
``os.replace`` (atomic on POSIX and Windows), so a run killed while saving leaves the previous checkpoints intact
and never a half-written one under a checkpoint name.
"""

from __future__ import annotations

import os
import pickle
import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medssl.exceptions import MedsslError
from medssl.log import get_logger

__all__ = [
    "CheckpointError",
    "CHECKPOINT_FORMAT",
    "capture_rng_state",
    "restore_rng_state",
    "atomic_torch_save",
    "CheckpointManager",
]

logger = get_logger(__name__)

#: ``format`` field of a training checkpoint.
CHECKPOINT_FORMAT = "medssl-pretrain-checkpoint"
_NAME = re.compile(r"^(?P<prefix>.+)_(?P<step>\d{8,})\.pt$")


class CheckpointError(MedsslError):
    """A checkpoint cannot be written, read, or does not fit the run that tries to resume from it."""


def capture_rng_state() -> dict[str, Any]:
    """Random states of torch (CPU and CUDA), NumPy's global generator and Python's ``random``, as tensors.

    Returns:
        A dictionary that :func:`restore_rng_state` takes and ``torch.load(..., weights_only=True)`` reads.
    """
    _, keys, position, has_gauss, cached = np.random.get_state()
    version, words, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": [s.clone() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.as_tensor(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "python": {
            "version": int(version),
            "state": torch.tensor(words, dtype=torch.int64),
            "gauss_next": None if gauss_next is None else float(gauss_next),
        },
    }


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Set the random states captured by :func:`capture_rng_state`.

    Args:
        state: the dictionary.

    Raises:
        CheckpointError: a malformed dictionary.
    """
    try:
        torch.set_rng_state(state["torch"].to(torch.uint8))
        cuda = state.get("cuda") or []
        if cuda and torch.cuda.is_available():
            if len(cuda) != torch.cuda.device_count():
                logger.warning(
                    "checkpoint has CUDA random states of %d devices, this machine %d: not restored",
                    len(cuda),
                    torch.cuda.device_count(),
                )
            else:
                torch.cuda.set_rng_state_all([s.to(torch.uint8) for s in cuda])
        numpy_state = state["numpy"]
        np.random.set_state(
            (
                "MT19937",
                numpy_state["keys"].numpy().astype(np.uint32),
                int(numpy_state["position"]),
                int(numpy_state["has_gauss"]),
                float(numpy_state["cached_gaussian"]),
            )
        )
        python_state = state["python"]
        random.setstate(
            (
                int(python_state["version"]),
                tuple(int(w) for w in python_state["state"].tolist()),
                python_state["gauss_next"],
            )
        )
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"malformed random state in the checkpoint: {error}") from error


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, flushed to disk, then ``os.replace`` into ``path``.

    Args:
        obj: what to save.
        path: the destination.

    Returns:
        The destination path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


class CheckpointManager:
    """Numbered checkpoints in one folder: save atomically, keep the last ``keep_last``, find and load the latest.

    Files are named ``{prefix}_{step:08d}.pt``.

    Args:
        directory: the folder (created on the first save).
        keep_last: checkpoints kept (older ones are deleted after each save); 0 or less keeps all.
        prefix: file-name prefix.

    Example:
        >>> manager = CheckpointManager("out/checkpoints", keep_last=3)  # doctest: +SKIP
        >>> manager.save({"model": model.state_dict()}, step=100)  # doctest: +SKIP
        >>> state = manager.load()  # the latest, weights_only=True  # doctest: +SKIP
    """

    def __init__(self, directory: str | os.PathLike, keep_last: int = 3, prefix: str = "checkpoint") -> None:
        self.directory = Path(directory)
        self.keep_last = int(keep_last)
        self.prefix = prefix

    def path_for(self, step: int) -> Path:
        """The file of the checkpoint at ``step``."""
        return self.directory / f"{self.prefix}_{int(step):08d}.pt"

    def checkpoints(self) -> list[Path]:
        """Existing checkpoints, oldest step first (temporary files of interrupted saves are ignored)."""
        if not self.directory.is_dir():
            return []
        found = []
        for path in self.directory.iterdir():
            match = _NAME.match(path.name)
            if match and match["prefix"] == self.prefix:
                found.append((int(match["step"]), path))
        return [p for _, p in sorted(found)]

    def latest(self) -> Path | None:
        """The checkpoint with the highest step, or ``None``."""
        found = self.checkpoints()
        return found[-1] if found else None

    def save(self, state: Mapping[str, Any], step: int) -> Path:
        """Write the checkpoint of ``step`` atomically and delete the oldest beyond ``keep_last``.

        Args:
            state: plain data (tensors, numbers, strings, lists, dicts).
            step: the optimizer step it was taken at.

        Returns:
            The file written.
        """
        path = atomic_torch_save(dict(state), self.path_for(step))
        if self.keep_last > 0:
            for old in self.checkpoints()[: -self.keep_last]:
                old.unlink(missing_ok=True)
        for stale in self.directory.glob(f".{self.prefix}_*.tmp"):  # left by a run killed while saving
            if not stale.name.endswith(f".{os.getpid()}.tmp"):
                stale.unlink(missing_ok=True)
        return path

    def load(self, path: str | os.PathLike | None = None, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """Read a checkpoint with ``weights_only=True``.

        Args:
            path: a file; ``None`` reads the latest.
            map_location: where tensors go.

        Returns:
            The dictionary.

        Raises:
            CheckpointError: no checkpoint, an unreadable file, or not a medssl training checkpoint.
        """
        if path is None:
            path = self.latest()
            if path is None:
                raise CheckpointError("no checkpoint to resume from", self.directory)
        try:
            state = torch.load(path, map_location=map_location, weights_only=True)
        except (OSError, RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as error:
            raise CheckpointError(f"cannot read the checkpoint: {error}", path) from error
        if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError("not a medssl training checkpoint", path)
        return state
