"""Data loading that resumes exactly: a seeded, resumable batch sampler and per-item seeded augmentation.

Exact resume needs the batches *and* their random augmentations of a resumed run to be those of an uninterrupted
one, whatever the number of workers and wherever the run stopped:

* :class:`ResumableBatchSampler` draws the order of epoch ``e`` from ``(seed, e)`` alone, cuts it into global batches
  of ``batch_size * world_size`` items, gives each rank its contiguous slice of every global batch, and starts an
  epoch at any batch (``set_epoch(e, start_batch)``), so a resumed run skips the batches already seen without loading
  them. It yields ``(epoch, index)`` pairs.
* :class:`SeededDataset` seeds the random transforms of item ``index`` in epoch ``e`` from ``(seed, e, index)``
  before applying them (MONAI's ``set_random_state``), so an item's augmentation does not depend on which worker
  loads it or on what was loaded before.
* the DataLoader gets its own ``torch.Generator``, so creating an iterator (which draws worker seeds) never moves the
  global random state that dropout uses.

An item whose loading fails is reported (its ``case_key`` and the error type, no path) and dropped from its batch by
:func:`collate_dropping_failures`: a batch job reports and goes on.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import Randomizable
from torch.utils.data import DataLoader, Dataset, Sampler

from medssl.exceptions import MedsslError
from medssl.log import get_logger

__all__ = [
    "DataSetupError",
    "ResumableBatchSampler",
    "SeededDataset",
    "FailedItem",
    "collate_dropping_failures",
    "item_seed",
    "build_loader",
]

logger = get_logger(__name__)


class DataSetupError(MedsslError):
    """The training data cannot form batches (too few items for the batch size, an empty datalist ...)."""


def item_seed(seed: int, epoch: int, index: int) -> int:
    """The seed of item ``index``'s random transforms in ``epoch`` (a 32-bit value from NumPy's ``SeedSequence``)."""
    return int(np.random.SeedSequence([int(seed), int(epoch), int(index)]).generate_state(1)[0])


class ResumableBatchSampler(Sampler):
    """Seeded batches of ``(epoch, index)`` pairs, split across ranks, that can start mid-epoch.

    Every epoch has ``len(self)`` batches per rank: the last incomplete global batch is dropped so that every rank
    takes the same number of steps.

    Args:
        num_items: size of the dataset.
        batch_size: items per rank and batch.
        seed: seed of the order (with the epoch).
        rank: this process's rank.
        world_size: number of processes.
        shuffle: draw a new order every epoch (else the dataset order).

    Raises:
        DataSetupError: fewer items than one global batch.
    """

    def __init__(
        self, num_items: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1, shuffle: bool = True
    ) -> None:
        self.num_items = int(num_items)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.rank = int(rank)
        self.world_size = int(world_size)
        self.shuffle = bool(shuffle)
        self.global_batch = self.batch_size * self.world_size
        if self.batch_size < 1:
            raise DataSetupError(f"batch size must be >= 1, got {batch_size}")
        if self.num_items < self.global_batch:
            raise DataSetupError(
                f"{self.num_items} items cannot fill one global batch of {self.global_batch} "
                f"({self.batch_size} per rank x {self.world_size} ranks)"
            )
        self.epoch = 0
        self.start_batch = 0

    def __len__(self) -> int:
        return self.num_items // self.global_batch

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Choose the epoch (its order) and the first batch the next iterator yields.

        Args:
            epoch: 0-based epoch.
            start_batch: batches of the epoch already consumed (0 for a fresh epoch).

        Raises:
            DataSetupError: ``start_batch`` outside the epoch.
        """
        if not 0 <= int(start_batch) <= len(self):
            raise DataSetupError(f"start_batch {start_batch} is outside an epoch of {len(self)} batches")
        self.epoch, self.start_batch = int(epoch), int(start_batch)

    def order(self, epoch: int) -> np.ndarray:
        """The item order of ``epoch``."""
        if not self.shuffle:
            return np.arange(self.num_items)
        return np.random.default_rng([self.seed, int(epoch)]).permutation(self.num_items)

    def batches(self, epoch: int, start_batch: int = 0) -> list[list[tuple[int, int]]]:
        """This rank's batches of ``epoch`` from ``start_batch`` on."""
        order = self.order(epoch)
        out = []
        for b in range(start_batch, len(self)):
            first = b * self.global_batch + self.rank * self.batch_size
            out.append([(epoch, int(i)) for i in order[first : first + self.batch_size]])
        return out

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        # Materialised now: a DataLoader iterator may prefetch before the caller changes the epoch again.
        return iter(self.batches(self.epoch, self.start_batch))


class FailedItem:
    """Stands for an item that could not be loaded (dropped by :func:`collate_dropping_failures`).

    Args:
        case_key: the item's PHI-free key.
        error: the exception's type name.
    """

    def __init__(self, case_key: str, error: str) -> None:
        self.case_key = case_key
        self.error = error

    def __repr__(self) -> str:
        return f"FailedItem({self.case_key!r}, {self.error!r})"


class SeededDataset(Dataset):
    """Items with their transforms applied, the random ones seeded per ``(seed, epoch, index)``.

    Args:
        data: a sequence of items (datalist dicts), or a dataset whose items already went through the deterministic
            transforms (a MONAI ``CacheDataset``).
        transform: the (random) transforms to apply on each access; a MONAI ``Compose`` or any callable.
        seed: base seed.
        skip_errors: return a :class:`FailedItem` for an item whose transforms raise (reported with its case key),
            instead of raising.

    Indexing with an ``(epoch, index)`` pair seeds the transforms for that epoch; a plain index uses epoch 0.
    """

    def __init__(
        self,
        data: Sequence[Any],
        transform: Callable[[Any], Any] | None = None,
        seed: int = 0,
        skip_errors: bool = True,
    ) -> None:
        self.data = data
        self.transform = transform
        self.seed = int(seed)
        self.skip_errors = bool(skip_errors)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, key: int | tuple[int, int]) -> Any:
        epoch, index = key if isinstance(key, tuple) else (0, key)
        try:
            item = self.data[index]
            if self.transform is None:
                return item
            if isinstance(self.transform, Randomizable):
                self.transform.set_random_state(seed=item_seed(self.seed, epoch, index))
            with _single_thread():
                return self.transform(dict(item) if isinstance(item, Mapping) else item)
        except Exception as error:  # noqa: BLE001 - a batch job reports and skips any unusable item
            if not self.skip_errors:
                raise
            case = _case_key(self.data, index)
            cause = _root_cause(error)
            logger.warning("item %s (index %d) skipped: %s", case, index, type(cause).__name__)
            return FailedItem(case, type(cause).__name__)


@contextlib.contextmanager
def _single_thread():
    """Run per-item transforms on one intra-op thread (restored after).

    The tensors of one item are small: intra-op threads only add synchronisation (5x slower on a busy 2-core
    machine, measured with ConVIRT's augmentation at 64 px). DataLoader workers run on one thread already.
    """
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _case_key(data: Sequence[Any], index: int) -> str:
    source = getattr(data, "data", data)  # MONAI datasets keep the raw items in .data
    try:
        item = source[index]
    except Exception:  # noqa: BLE001
        return f"#{index}"
    if isinstance(item, Mapping):
        return str(item.get("case_key", f"#{index}"))
    return f"#{index}"


def _root_cause(error: BaseException) -> BaseException:
    """MONAI wraps transform errors in RuntimeError; the innermost cause names the real problem."""
    while error.__cause__ is not None:
        error = error.__cause__
    return error


def collate_dropping_failures(batch: Sequence[Any]) -> Any:
    """MONAI's ``list_data_collate`` of the items that loaded (failed ones are dropped; ``None`` if none loaded)."""
    from monai.data import list_data_collate

    good = [item for item in batch if not isinstance(item, FailedItem)]
    if not good:
        return None
    return list_data_collate(good)


def build_loader(
    dataset: Dataset,
    batch_size: int,
    seed: int = 0,
    rank: int = 0,
    world_size: int = 1,
    num_workers: int = 0,
    shuffle: bool = True,
    pin_memory: bool = False,
    collate_fn: Callable[[Sequence[Any]], Any] = collate_dropping_failures,
) -> tuple[DataLoader, ResumableBatchSampler]:
    """A DataLoader over a :class:`SeededDataset` with a :class:`ResumableBatchSampler`.

    Args:
        dataset: the dataset (indexed by ``(epoch, index)``).
        batch_size: items per rank and batch.
        seed: seed of the order and of the loader's own generator.
        rank: this process's rank.
        world_size: number of processes.
        num_workers: loader worker processes.
        shuffle: a new order every epoch.
        pin_memory: pin batches for faster GPU copies.
        collate_fn: batch collation.

    Returns:
        ``(loader, sampler)``: call ``sampler.set_epoch(epoch, start_batch)`` before iterating the loader.
    """
    sampler = ResumableBatchSampler(len(dataset), batch_size, seed, rank, world_size, shuffle)
    generator = torch.Generator().manual_seed(int(seed))
    loader = DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=int(num_workers),
        collate_fn=collate_fn,
        pin_memory=pin_memory,
        generator=generator,
        persistent_workers=False,
    )
    return loader, sampler
