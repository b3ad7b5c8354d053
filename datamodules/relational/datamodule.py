"""The datamodule of the ESBN relational tasks: glyph sequences with held-out objects."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from datamodules.relational.esbn_tasks import (
    TaskSplits,
    Trials,
    generate_splits,
    make_task,
    resolve_sizes,
)
from datamodules.relational.glyphs import GLYPH_SIZE, NUM_GLYPHS, load_glyphs
from datamodules.sampling import EpochShuffleSampler

__all__ = ["RelationalTaskDataModule"]


class _TrialDataset(Dataset):
    """Trials as dicts: ``"images"`` ``[N, 1, H, W]``, ``"objects"`` ``[N]``, ``"target"``
    (a scalar)."""

    def __init__(self, trials: Trials, glyphs: Tensor) -> None:
        self.objects = torch.from_numpy(trials.objects).long()
        self.target = torch.from_numpy(trials.target).long()
        self.glyphs = glyphs

    def __len__(self) -> int:
        return len(self.target)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        objects = self.objects[index]
        return {"images": self.glyphs[objects], "objects": objects, "target": self.target[index]}


class RelationalTaskDataModule(L.LightningDataModule):
    """One ESBN relational task (same_diff, rmts, dist3, identity_rules) with ``m_holdout`` of the
    100 glyphs held out of training (:mod:`datamodules.relational.esbn_tasks` defines the tasks,
    the split and ESBN's default sizes).

    Batches are dicts:

    - ``"images"``: float32 ``[B, N, 1, 32, 32]`` in ``[0, 1]`` (white background 1.0), the glyph
      of each object of the sequence.
    - ``"objects"``: int64 ``[B, N]``, the object ids (0..99) of the sequence.
    - ``"target"``: int64 ``[B]``, the answer class in ``[0, num_classes)``.

    ``train_dataloader`` shuffles with a generator seeded by ``seed``; ``val_dataloader`` gives
    trials drawn like the training trials (training objects only: an in-distribution check, the
    paper has none); ``test_dataloader`` gives the test trials (held-out objects when ``m > 0``).

    Attributes available after construction: ``num_classes``, ``sequence_length`` (N),
    ``image_shape`` ``(1, 32, 32)``, ``num_objects`` (100), ``context_segments`` (groups of
    positions ESBN normalizes together), ``train_size``, ``val_size``, ``test_size`` (resolved),
    ``task`` (the :class:`~datamodules.relational.esbn_tasks.RelationalTask`). After ``setup``:
    ``splits`` (the trials, with ``train_objects`` and ``test_objects``) and ``glyphs``
    (``[100, 1, 32, 32]``).

    Args:
        task: ``"same_diff"``, ``"rmts"``, ``"dist3"`` or ``"identity_rules"``.
        m_holdout: glyphs held out of training: 0 (none) or a value leaving both splits enough
            objects (the papers use 0, 50, 85, 95, and 98 for same_diff).
        train_size, val_size, test_size: numbers of trials; None: ESBN's for this task and m
            (validation: 1000, or fewer when the training objects give fewer trials).
        batch_size: trials per batch (ESBN trains with 32).
        num_workers: DataLoader worker processes.
        seed: seed of the object split, the trials and the training order.
        num_classes, sequence_length: what the config declares (models interpolate
            ``${data.num_classes}``, ``${data.sequence_length}``); checked against the task.
            None: not checked.
    """

    def __init__(
        self,
        task: str = "same_diff",
        m_holdout: int = 0,
        train_size: int | None = None,
        val_size: int | None = None,
        test_size: int | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        num_classes: int | None = None,
        sequence_length: int | None = None,
    ) -> None:
        super().__init__()
        self.task = make_task(task)
        for name, value, minimum in (
            ("batch_size", batch_size, 1),
            ("num_workers", num_workers, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(
                    f"RelationalTaskDataModule: {name} must be an int >= {minimum}, got {value!r}"
                )
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"RelationalTaskDataModule: seed must be an int, got {seed!r}")
        for name, declared, actual in (
            ("num_classes", num_classes, self.task.num_classes),
            ("sequence_length", sequence_length, self.task.sequence_length),
        ):
            if declared is not None and declared != actual:
                raise ValueError(
                    f"RelationalTaskDataModule: data.{name}={declared} but task '{task}' has "
                    f"{name} {actual}: set data.{name}={actual}"
                )
        sizes = resolve_sizes(self.task, m_holdout, train_size, val_size, test_size, NUM_GLYPHS)
        self.save_hyperparameters()
        self.m_holdout = m_holdout
        self.train_size, self.val_size, self.test_size = sizes
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.num_classes = self.task.num_classes
        self.sequence_length = self.task.sequence_length
        self.image_shape = (1, GLYPH_SIZE, GLYPH_SIZE)
        self.num_objects = NUM_GLYPHS
        self.context_segments = [list(segment) for segment in self.task.context_segments]
        self.splits: TaskSplits | None = None
        self.glyphs: Tensor | None = None
        self._datasets: dict[str, _TrialDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        """Loads the glyphs and generates the trials (once; later calls keep them)."""
        if self.splits is not None:
            return
        self.glyphs = load_glyphs()
        self.splits = generate_splits(
            self.task,
            self.m_holdout,
            self.seed,
            self.train_size,
            self.val_size,
            self.test_size,
            num_objects=NUM_GLYPHS,
        )
        self._datasets = {
            "train": _TrialDataset(self.splits.train, self.glyphs),
            "val": _TrialDataset(self.splits.val, self.glyphs),
            "test": _TrialDataset(self.splits.test, self.glyphs),
        }

    def train_dataloader(self) -> DataLoader:
        """Training trials in an order reshuffled every epoch (seeded)."""
        if self.splits is None:
            self.setup()
        return self._loader("train", sampler=EpochShuffleSampler(len(self._datasets["train"]), self.seed))

    def val_dataloader(self) -> DataLoader:
        """Validation trials (training objects), in a fixed order."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """Test trials (held-out objects when ``m_holdout > 0``), in a fixed order."""
        return self._loader("test")

    def _loader(self, split: str, sampler: EpochShuffleSampler | None = None) -> DataLoader:
        if self.splits is None:
            self.setup()
        return DataLoader(
            self._datasets[split],
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
