"""Samplers and the training loader shared by the datamodules of every family."""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import DataLoader, IterableDataset, Sampler

__all__ = ["EpochShuffleSampler", "ResumableDataLoader"]


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


class ResumableDataLoader(DataLoader):
    """A :class:`~torch.utils.data.DataLoader` that resumes within an epoch.

    Lightning saves the ``state_dict`` of every training loader that has one in its checkpoints
    and loads it into the new loader when it resumes. The state is the epoch being read (the
    ``epoch`` of the loader's sampler, which Lightning's ``set_epoch`` sets, through its
    distributed sampler wrapper too) and how many batches of it were handed out. A loader resumed
    in that epoch skips those batches at the level of indices, before any item is loaded, so a
    run resumed from a checkpoint saved within an epoch (``every_n_train_steps``,
    ``train_time_interval``, a requeued job) reads the batches the uninterrupted run would have
    read, in the same order, on every DDP rank. A checkpoint saved at the end of an epoch (all its
    batches handed out) or in another epoch than the resumed one skips nothing.

    Iteration starts at the first ``next``: with worker processes, the plain loader fetches its
    first indices when the iterator is created, which a resumed Lightning run does before it sets
    the epoch. Takes exactly the arguments of ``DataLoader``, so Lightning can rebuild it (to
    insert its distributed sampler).

    Torchdata's ``StatefulDataLoader`` does the same for samplers that keep no epoch; here the
    samplers' epoch must be part of the state, which it does not see through Lightning's
    distributed sampler wrapper.
    """

    _batches_read = 0
    _epoch_read: int | None = None
    _resume_state: dict[str, Any] | None = None
    _batches_to_skip = 0

    def __iter__(self) -> Iterator[Any]:
        # a generator: the epoch and the batches to skip are read at the first batch, after
        # Lightning's set_epoch
        self._epoch_read = self._sampler_epoch()
        self._batches_read = self._batches_to_skip = self._batches_to_skip_now()
        iterator = super().__iter__()
        self._batches_to_skip = 0
        for batch in iterator:
            self._batches_read += 1
            yield batch

    @property
    def _index_sampler(self) -> Iterable[Any]:
        # DataLoader iterators take their indices from this property (torch.utils.data) when they
        # are created; the skipped batches' indices are dropped here, so their items are never
        # loaded
        index_sampler = super()._index_sampler
        if self._batches_to_skip:
            return _SkipFirst(index_sampler, self._batches_to_skip)
        return index_sampler

    def state_dict(self) -> dict[str, Any]:
        """``{"epoch": sampler epoch or None, "batches": batches handed out in it, "batch_size":
        items per batch (None with a batch sampler)}``."""
        return {"epoch": self._epoch_read, "batches": self._batches_read, "batch_size": self._items_per_batch()}

    def _items_per_batch(self) -> int | None:
        """The loader's batch size, else its batch sampler's (e.g. a multitask sampler's per task)."""
        return self.batch_size if self.batch_size is not None else getattr(self.batch_sampler, "batch_size", None)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Makes the next iteration skip the batches ``state_dict`` counted, if it reads the same
        epoch (a checkpoint saved within that epoch). States saved before ``batch_size`` was part
        of them are taken as of this loader's batch size."""
        if not {"epoch", "batches"} <= set(state_dict) <= {"epoch", "batches", "batch_size"}:
            raise ValueError(
                f"ResumableDataLoader.load_state_dict: expected keys 'epoch', 'batches' and 'batch_size', got "
                f"{sorted(state_dict)}; was the checkpoint saved with another training loader?"
            )
        self._resume_state = dict(state_dict)

    def _batches_to_skip_now(self) -> int:
        state, self._resume_state = self._resume_state, None
        if state is None:
            return 0
        batches = int(state["batches"])
        if state["epoch"] != self._epoch_read:
            self._warn_if_left_within_an_epoch(state["epoch"], batches)
            return 0
        if batches and isinstance(self.dataset, IterableDataset):
            raise ValueError(
                "ResumableDataLoader resumes within an epoch by skipping indices, which an "
                "IterableDataset does not read: use a map-style dataset, or resume from a "
                "checkpoint saved at the end of an epoch"
            )
        try:
            total = len(self)
        except TypeError:
            total = None
        if total is not None and batches >= total:
            return 0
        batch_size = self._items_per_batch()
        saved_batch_size = state.get("batch_size")
        if batches and saved_batch_size is not None and saved_batch_size != batch_size:
            raise ValueError(
                f"The checkpoint's training loader stopped within epoch {state['epoch']}, after {batches} batches "
                f"of {saved_batch_size} items; this run's batch size is {batch_size}, so skipping {batches} "
                f"batches would pass over items never trained on. Resume with the checkpoint's batch size "
                f"(data.batch_size={saved_batch_size}), or from a checkpoint saved at an epoch's end, after which "
                "the batch size may change."
            )
        return batches

    def _warn_if_left_within_an_epoch(self, saved_epoch: int | None, batches: int) -> None:
        """Warns when the saved state stopped within an epoch that this run does not read: a run
        that ``max_steps`` stopped within an epoch, resumed with a larger ``max_steps``, which
        Lightning 2.6 continues with the samplers' epoch one ahead (README, Resuming)."""
        try:
            total = len(self)
        except TypeError:
            return
        if saved_epoch is None or self._epoch_read is None or not 0 < batches < total:
            return
        rank_zero_warn(
            f"The checkpoint's training loader had read {batches} of the {total} batches of epoch {saved_epoch}, "
            f"but this run reads epoch {self._epoch_read}: Lightning continues a run that trainer.max_steps "
            "stopped within an epoch with the samplers' epoch one ahead, so the run goes on correctly but does "
            f"not repeat the uninterrupted one. To extend runs exactly, stop them at an epoch end (max_steps a "
            f"multiple of the {total} batches per epoch)."
        )

    def _sampler_epoch(self) -> int | None:
        for sampler in (self.sampler, self.batch_sampler, getattr(self.batch_sampler, "sampler", None)):
            epoch = getattr(sampler, "epoch", None)
            if isinstance(epoch, int):
                return epoch
        return None


class _SkipFirst:
    """Iterates ``iterable`` without its first ``count`` elements, once: the iteration that reads
    the first element uses the count up (a DataLoader iterator may create iterators it never
    reads, and a persistent worker pool iterates its index sampler again every epoch)."""

    def __init__(self, iterable: Iterable[Any], count: int) -> None:
        self.iterable = iterable
        self.count = count

    def __iter__(self) -> Iterator[Any]:
        count, self.count = self.count, 0
        yield from itertools.islice(self.iterable, count, None)

    def __len__(self) -> int:
        return len(self.iterable)
