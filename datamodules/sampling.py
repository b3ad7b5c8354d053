"""Samplers shared by the datamodules of every family."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler

__all__ = ["EpochShuffleSampler"]


class EpochShuffleSampler(Sampler[int]):
    """A random permutation of ``range(num_items)`` per epoch, seeded by ``(seed, epoch)``.

    Lightning calls :meth:`set_epoch` before every training epoch (through its distributed
    wrapper too, which then shards the permutation across ranks), so the order of an epoch depends
    only on the seed and the epoch number: a run resumed from a checkpoint reads the same batches
    as the uninterrupted run, unlike a ``DataLoader(shuffle=True, generator=...)`` whose generator
    restarts with the process.
    """

    def __init__(self, num_items: int, seed: int) -> None:
        self.num_items = num_items
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Selects the permutation of ``epoch``."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        # a generator: the epoch is read at the first index, after Lightning's set_epoch (a
        # resumed run creates the loader's iterator before it)
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        yield from torch.randperm(self.num_items, generator=generator).tolist()

    def __len__(self) -> int:
        return self.num_items
