"""EpochShuffleSampler: a permutation per epoch that depends only on (seed, epoch).
ResumableDataLoader: a loader whose position within an epoch resumes from its state."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch.utils.data import Dataset, IterableDataset

from tenfold.datamodules.sampling import EpochShuffleSampler, ResumableDataLoader


def test_each_epoch_is_a_permutation_fixed_by_seed_and_epoch() -> None:
    sampler = EpochShuffleSampler(50, seed=4)
    orders = []
    for epoch in (0, 1, 0):
        sampler.set_epoch(epoch)
        orders.append(list(sampler))
    assert sorted(orders[0]) == list(range(50)) and len(sampler) == 50
    assert orders[0] == orders[2] != orders[1]
    fresh = EpochShuffleSampler(50, seed=4)
    fresh.set_epoch(1)
    assert list(fresh) == orders[1], "a resumed run (a new sampler) must read the same epoch order"
    other_seed = EpochShuffleSampler(50, seed=5)
    assert list(other_seed) != orders[0]
    # seeds and epochs do not trade places: seed s at epoch e + 1 is not seed s + 1 at epoch e
    grid = []
    for seed in range(4):
        sampler = EpochShuffleSampler(50, seed=seed)
        for epoch in range(4):
            sampler.set_epoch(epoch)
            grid.append(tuple(sampler))
    assert len(set(grid)) == 16


class _RecordingDataset(Dataset):
    """Items 0..19; records which were loaded (in this process)."""

    def __init__(self) -> None:
        self.loaded: list[int] = []

    def __len__(self) -> int:
        return 20

    def __getitem__(self, index: int) -> int:
        self.loaded.append(index)
        return index


def _loader(dataset: Dataset, num_workers: int = 0) -> ResumableDataLoader:
    # 20 items in batches of 3: 7 batches per epoch, the last one of 2
    return ResumableDataLoader(
        dataset,
        batch_size=3,
        sampler=EpochShuffleSampler(20, seed=1),
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
    )


@pytest.mark.parametrize("num_workers", [0, 2])
def test_resumed_loader_reads_the_rest_of_the_epoch_in_order(num_workers: int) -> None:
    original = _loader(_RecordingDataset(), num_workers)
    original.sampler.set_epoch(2)
    batches = iter(original)
    read = [next(batches).tolist() for _ in range(3)]
    state = original.state_dict()
    assert state == {"epoch": 2, "batches": 3, "batch_size": 3}
    rest = [batch.tolist() for batch in batches]
    assert len(rest) == 4 and sorted(sum(read + rest, [])) == list(range(20))

    dataset = _RecordingDataset()
    resumed = _loader(dataset, num_workers)
    resumed.load_state_dict(state)
    # Lightning's order: the iterator first, then set_epoch, then the first batch
    batches = iter(resumed)
    resumed.sampler.set_epoch(2)
    assert [batch.tolist() for batch in batches] == rest
    if num_workers == 0:
        assert sorted(dataset.loaded) == sorted(sum(rest, [])), "skipped batches must not be loaded"
    assert resumed.state_dict() == {"epoch": 2, "batches": 7, "batch_size": 3}
    # the next epoch is whole (a persistent worker pool reuses the index sampler)
    resumed.sampler.set_epoch(3)
    next_epoch = [batch.tolist() for batch in resumed]
    reference = _loader(_RecordingDataset())
    reference.sampler.set_epoch(3)
    assert next_epoch == [batch.tolist() for batch in reference]


def test_a_state_from_the_end_or_from_another_epoch_skips_nothing() -> None:
    whole = _loader(_RecordingDataset())
    whole.sampler.set_epoch(1)
    expected = [batch.tolist() for batch in whole]
    for state in ({"epoch": 1, "batches": 7}, {"epoch": 0, "batches": 3}, {"epoch": None, "batches": 3}):
        resumed = _loader(_RecordingDataset())
        resumed.load_state_dict(state)
        resumed.sampler.set_epoch(1)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert [batch.tolist() for batch in resumed] == expected, state
        # only a state left within another epoch (Lightning's restart after a max_steps stop) warns
        messages = [str(warning.message) for warning in caught]
        if state == {"epoch": 0, "batches": 3}:
            assert len(messages) == 1 and "had read 3 of the 7 batches of epoch 0, but this run reads epoch 1" in messages[0]
        else:
            assert messages == [], state


def test_bad_states_and_iterable_datasets_are_refused() -> None:
    with pytest.raises(ValueError, match="expected keys 'epoch', 'batches' and 'batch_size'"):
        _loader(_RecordingDataset()).load_state_dict({"_num_yielded": 3})

    class Stream(IterableDataset):
        def __iter__(self):
            return iter(range(10))

    loader = ResumableDataLoader(Stream(), batch_size=2)
    loader.load_state_dict({"epoch": None, "batches": 2})
    with pytest.raises(ValueError, match="map-style dataset"):
        next(iter(loader))
    torch.testing.assert_close(next(iter(loader)), torch.tensor([0, 1]))  # the state is used up


def test_resuming_within_an_epoch_with_another_batch_size_is_refused() -> None:
    # 3 batches of 3 items read; skipping 3 batches of 6 would pass over 9 items never trained on
    bigger = ResumableDataLoader(_RecordingDataset(), batch_size=6, sampler=EpochShuffleSampler(20, seed=1))
    bigger.load_state_dict({"epoch": 2, "batches": 3, "batch_size": 3})
    bigger.sampler.set_epoch(2)
    with pytest.raises(ValueError, match=r"after 3 batches of 3 items; this run's batch size is 6.*data.batch_size=3"):
        next(iter(bigger))
    # at an epoch's end, or from a state saved before batch sizes were part of it, the batch size may change
    for state in ({"epoch": 2, "batches": 7, "batch_size": 3}, {"epoch": 2, "batches": 1}):
        resumed = ResumableDataLoader(_RecordingDataset(), batch_size=6, sampler=EpochShuffleSampler(20, seed=1))
        resumed.load_state_dict(state)
        resumed.sampler.set_epoch(2)
        assert len(list(resumed)) == (4 if state["batches"] == 7 else 3), state


def test_a_batch_samplers_batch_size_is_compared_too() -> None:
    class ChunkSampler(torch.utils.data.Sampler[list[int]]):
        """Batches of ``batch_size`` consecutive items (as a multitask sampler gives them per task)."""

        def __init__(self, batch_size: int) -> None:
            self.batch_size = batch_size

        def __iter__(self):
            return iter([list(range(i, min(i + self.batch_size, 20))) for i in range(0, 20, self.batch_size)])

        def __len__(self) -> int:
            return -(-20 // self.batch_size)

    original = ResumableDataLoader(_RecordingDataset(), batch_sampler=ChunkSampler(4))
    batches = iter(original)
    next(batches), next(batches)
    assert original.state_dict() == {"epoch": None, "batches": 2, "batch_size": 4}
    resumed = ResumableDataLoader(_RecordingDataset(), batch_sampler=ChunkSampler(8))
    resumed.load_state_dict(original.state_dict())
    with pytest.raises(ValueError, match="after 2 batches of 4 items; this run's batch size is 8"):
        next(iter(resumed))
    # a state that recorded no batch size (a batch sampler's, before it was recorded) is taken as this run's
    resumed = ResumableDataLoader(_RecordingDataset(), batch_sampler=ChunkSampler(8))
    resumed.load_state_dict({"epoch": None, "batches": 2, "batch_size": None})
    assert len(list(resumed)) == 1
