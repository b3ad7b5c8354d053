"""Reseed the global random generators before every training batch, for exact resumes.

Lightning checkpoints hold the model, optimizers, schedulers, loops and callback states, but not
the global random state of torch, NumPy and ``random``; ``seed_everything`` at start-up also gives
every DDP rank the same stream. This callback makes the randomness of each training batch a
function of ``(seed, batch index, rank)`` only: a run resumed from a checkpoint draws the same
numbers as the uninterrupted run, whatever happened in between (sanity checks, validation,
a new dataloader iterator), and DDP ranks draw different numbers.

Protocol: none; works with any LightningModule. Methods that keep their own ``torch.Generator``
(in their checkpoint) are not affected.
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch

__all__ = ["StepSeed", "step_seed"]


def step_seed(seed: int, batch_index: int, rank: int, stream: int = 0) -> int:
    """Seed in ``[0, 2**63)`` for one training batch, mixed by NumPy's ``SeedSequence``.

    Distinct ``(seed, batch_index, rank)`` give statistically independent seeds; ``stream`` (0 for
    :class:`StepSeed`'s global seeding) gives another user of the same triple a stream of its own.
    """
    entropy = [seed % 2**64, batch_index, rank] + ([stream] if stream else [])
    words = np.random.SeedSequence(entropy).generate_state(2, dtype=np.uint32)
    return int((int(words[0]) << 31) ^ int(words[1]))


class StepSeed(L.Callback):
    """Seeds torch (CPU and CUDA), NumPy and ``random`` at the start of every training batch.

    The seed of a batch is :func:`step_seed` of ``(seed, trainer.fit_loop.total_batch_idx,
    trainer.global_rank)``; ``total_batch_idx`` counts batches over all epochs and is restored
    from the checkpoint's loop state. ``seed`` itself is saved in the checkpoint, so a resumed
    run continues the same streams even when started with another seed.

    Args:
        seed: base seed; ``None`` draws one from the operating system (on every process, and
            rank 0's goes to all ranks at ``setup``: a checkpoint keeps rank 0's seed only, so
            ranks that kept their own would draw other numbers after a resume).
    """

    def __init__(self, seed: int | None = None) -> None:
        self._drawn = seed is None
        self.seed = int(seed) if seed is not None else random.SystemRandom().randrange(2**63)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Gives every rank rank 0's drawn seed (before a checkpoint's seed is restored)."""
        if self._drawn:
            self.seed = int(trainer.strategy.broadcast(self.seed, src=0))

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        """Seeds all global generators for this batch."""
        value = step_seed(self.seed, trainer.fit_loop.total_batch_idx, trainer.global_rank)
        torch.manual_seed(value)
        np.random.seed(value % 2**32)
        random.seed(value)

    def state_dict(self) -> dict[str, int]:
        """``{"seed": int}``."""
        return {"seed": self.seed}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restores the base seed."""
        self.seed = int(state_dict["seed"])
