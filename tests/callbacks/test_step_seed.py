"""callbacks.step_seed: per-batch seeds from (seed, batch index, rank), restored from checkpoints."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np
import torch

from tenfold.callbacks.step_seed import StepSeed, step_seed


def _trainer(batch_index: int, rank: int = 0) -> SimpleNamespace:
    return SimpleNamespace(fit_loop=SimpleNamespace(total_batch_idx=batch_index), global_rank=rank)


def _draw() -> tuple[float, float, float]:
    return torch.rand(()).item(), float(np.random.rand()), random.random()


def test_step_seed_is_deterministic_distinct_and_in_range() -> None:
    seeds = {step_seed(s, i, r) for s in (0, 1, -5) for i in range(50) for r in range(4)}
    assert len(seeds) == 3 * 50 * 4
    assert all(0 <= s < 2**63 for s in seeds)
    # 63 bits, not 32: with 32-bit seeds a 100k-step run would repeat a batch's stream about once
    assert max(step_seed(7, i, 0) for i in range(200)) >= 2**32
    assert step_seed(7, 3, 1) == step_seed(7, 3, 1)
    # another stream of the same triple (the local-search reseed) differs; stream 0 is the plain triple
    assert step_seed(7, 3, 1, stream=1) not in seeds | {step_seed(7, 3, 1)}
    assert step_seed(7, 3, 1, stream=0) == step_seed(7, 3, 1)


def test_batches_draw_by_index_and_rank_whatever_came_before() -> None:
    callback = StepSeed(seed=11)
    callback.on_train_batch_start(_trainer(5), None, None, 0)
    expected = _draw()
    torch.rand(100), np.random.rand(7), random.random()  # e.g. a validation in between
    callback.on_train_batch_start(_trainer(5), None, None, 0)
    assert _draw() == expected
    callback.on_train_batch_start(_trainer(5, rank=1), None, None, 0)
    assert _draw() != expected
    callback.on_train_batch_start(_trainer(6), None, None, 0)
    assert _draw() != expected


def test_state_dict_restores_the_base_seed() -> None:
    original = StepSeed(seed=None)
    restored = StepSeed(seed=3)
    restored.load_state_dict(original.state_dict())
    assert restored.seed == original.seed
    original.on_train_batch_start(_trainer(2), None, None, 0)
    expected = _draw()
    restored.on_train_batch_start(_trainer(2), None, None, 0)
    assert _draw() == expected


def test_a_drawn_seed_is_rank_zeros_on_every_rank() -> None:
    """With seed=None every process draws its own; setup gives all ranks rank 0's, because a
    checkpoint keeps rank 0's state only and a resumed rank 1 would otherwise change streams."""
    rank_zero, rank_one = StepSeed(seed=None), StepSeed(seed=None)
    assert rank_zero.seed != rank_one.seed

    def trainer_broadcasting(value: int) -> SimpleNamespace:  # what DDP's broadcast from rank 0 returns
        return SimpleNamespace(strategy=SimpleNamespace(broadcast=lambda obj, src: value if src == 0 else obj))

    rank_one.setup(trainer_broadcasting(rank_zero.seed), None, "fit")
    assert rank_one.seed == rank_zero.seed
    given = StepSeed(seed=5)
    given.setup(trainer_broadcasting(rank_zero.seed), None, "fit")  # a given seed is every rank's already
    assert given.seed == 5
