"""The datamodule of the relational psychophysics tasks: glyph sequences with held-out objects."""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from tenfold.datamodules.relational.coloured_tasks import (
    ColouredTask,
    ColouredTrials,
    colour_palette,
    generate_coloured_splits,
    resolve_coloured_sizes,
)
from tenfold.datamodules.relational.esbn_tasks import (
    RelationalTask,
    TaskSplits,
    Trials,
    generate_splits,
    resolve_sizes,
)
from tenfold.datamodules.relational.glyphs import GLYPH_SIZE, NUM_GLYPHS, load_glyphs
from tenfold.datamodules.relational.registry import make_relational_task
from tenfold.datamodules.sampling import EpochShuffleSampler, ResumableDataLoader

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


class _ColouredTrialDataset(Dataset):
    """Coloured trials as dicts: ``"images"`` ``[N, 3, H, W]``, ``"objects"`` ``[N]`` (glyph ids,
    -1: none), ``"colours"`` ``[N]`` (colour ids, -1: none), ``"target"`` (a scalar).

    An image is the glyph repeated over 3 channels times the colour, an absent feature counting
    as 1 (a colour patch alone, an uncoloured glyph)."""

    def __init__(self, trials: ColouredTrials, glyphs: Tensor, palette: Tensor) -> None:
        self.objects = torch.from_numpy(trials.objects).long()
        self.colours = torch.from_numpy(trials.colours).long()
        self.target = torch.from_numpy(trials.target).long()
        self.glyphs = glyphs.expand(-1, 3, -1, -1)
        self.palette = palette

    def __len__(self) -> int:
        return len(self.target)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        objects, colours = self.objects[index], self.colours[index]
        shapes = torch.where(
            (objects >= 0)[:, None, None, None], self.glyphs[objects.clamp(min=0)], 1.0
        )
        tints = torch.where((colours >= 0)[:, None], self.palette[colours.clamp(min=0)], 1.0)
        return {
            "images": shapes * tints[:, :, None, None],
            "objects": objects,
            "colours": colours,
            "target": self.target[index],
        }


class RelationalTaskDataModule(L.LightningDataModule):
    """One relational task with ``m_holdout`` of the 100 glyphs held out of training: ESBN's four
    (same_diff, rmts, dist3, identity_rules; :mod:`tenfold.datamodules.relational.esbn_tasks` defines the
    tasks, the split and ESBN's default sizes), CoRelNet's glyph variants (same_diff6_hard,
    rmts3_hard, dist10, identity_rules4, ...; :mod:`tenfold.datamodules.relational.corelnet_tasks`) and
    its coloured variants (same_diff_sc_shapes, rmts_sc_colours, same_diff_csep_colours, ...;
    :mod:`tenfold.datamodules.relational.coloured_tasks`, with ``c_holdout`` of the 100 colours held out
    too). :data:`~tenfold.datamodules.relational.registry.RELATIONAL_TASKS` lists every name.

    Batches are dicts:

    - ``"images"``: float32 ``[B, N, C, 32, 32]`` in ``[0, 1]`` (white background 1.0), the image
      of each object of the sequence: the glyph (C = 1), or for the coloured tasks (C = 3) the
      glyph times its colour, a colour patch or a grey glyph.
    - ``"objects"``: int64 ``[B, N]``, the glyph ids (0..99) of the sequence (coloured tasks: -1
      at a colour patch).
    - ``"colours"`` (coloured tasks only): int64 ``[B, N]``, the colour ids (0..99; -1 at an
      uncoloured glyph).
    - ``"target"``: int64 ``[B]``, the answer class in ``[0, num_classes)``.

    ``train_dataloader`` shuffles with a generator seeded by ``seed``; ``val_dataloader`` gives
    trials drawn like the training trials (training objects only: an in-distribution check, the
    paper has none; most of them are training trials too, all of them where the training objects
    give few distinct trials, e.g. dist3 at m = 95: not a held-out set); ``test_dataloader`` gives
    the test trials (held-out objects when ``m > 0``; the held-out relations of the CoRelNet
    variants).

    Attributes available after construction: ``num_classes``, ``sequence_length`` (N),
    ``image_shape`` ``(C, 32, 32)``, ``in_channels`` (C), ``num_objects`` (100),
    ``context_segments`` (groups of positions ESBN normalizes together), ``train_size``,
    ``val_size``, ``test_size`` (resolved), ``task`` (the task object). After ``setup``:
    ``splits`` (the trials, with ``train_objects`` and ``test_objects``; coloured tasks also
    ``train_colours`` and ``test_colours``), ``glyphs`` (``[100, 1, 32, 32]``) and, for the
    coloured tasks, ``palette`` (``[100, 3]``).

    Args:
        task: a task name, e.g. ``"same_diff"``, ``"rmts3_hard"``, ``"dist3_sc_colours"``, or a
            task object of one's own (a ``RelationalTask`` or ``ColouredTask`` subclass; the
            hyperparameters, and so the checkpoints, keep its ``name``).
        m_holdout: glyphs held out of training: 0 (none) or a value leaving both splits enough
            objects (the papers use 0, 50, 85, 95, and 98 for same_diff).
        c_holdout: colours held out of training (coloured tasks only; 0: none).
        train_size, val_size, test_size: numbers of trials; None: the task's paper sizes
            (validation: 1000, or fewer when the training objects give fewer trials).
        batch_size: trials per batch (ESBN trains with 32).
        num_workers: DataLoader worker processes.
        seed: seed of the object split, the trials and the training order.
        num_classes, sequence_length, in_channels: what the config declares (models interpolate
            ``${data.num_classes}``, ``${data.sequence_length}``, ``${data.in_channels}``);
            checked against the task. None: not checked.
    """

    def __init__(
        self,
        task: str | RelationalTask | ColouredTask = "same_diff",
        m_holdout: int = 0,
        train_size: int | None = None,
        val_size: int | None = None,
        test_size: int | None = None,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        num_classes: int | None = None,
        sequence_length: int | None = None,
        c_holdout: int = 0,
        in_channels: int | None = None,
    ) -> None:
        super().__init__()
        self.task = make_relational_task(task)
        coloured = isinstance(self.task, ColouredTask)
        image_shape = self.task.image_shape if coloured else (1, GLYPH_SIZE, GLYPH_SIZE)
        for name, value, minimum in (
            ("batch_size", batch_size, 1),
            ("num_workers", num_workers, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(
                    f"RelationalTaskDataModule: {name} must be an int >= {minimum}, got {value!r}"
                )
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"RelationalTaskDataModule: seed must be an int >= 0, got {seed!r}")
        for name, declared, actual in (
            ("num_classes", num_classes, self.task.num_classes),
            ("sequence_length", sequence_length, self.task.sequence_length),
            ("in_channels", in_channels, image_shape[0]),
        ):
            if declared is not None and declared != actual:
                raise ValueError(
                    f"RelationalTaskDataModule: data.{name}={declared} but task '{self.task.name}' has "
                    f"{name} {actual}: set data.{name}={actual}"
                )
        if coloured:
            sizes = resolve_coloured_sizes(
                self.task, m_holdout, c_holdout, train_size, val_size, test_size
            )
        elif c_holdout != 0:
            raise ValueError(
                f"RelationalTaskDataModule: c_holdout={c_holdout!r}, but task '{self.task.name}' has no "
                "colours: set c_holdout=0 (colours exist in the *_sc_* and *_csep_* tasks)"
            )
        else:
            sizes = resolve_sizes(self.task, m_holdout, train_size, val_size, test_size, NUM_GLYPHS)
        # a task object is kept by name (checkpoints load with weights_only; loggers show the name),
        # also when a subclass forwards one (its frame's arguments would win over a local name here)
        self.save_hyperparameters(ignore=["task"])
        self.hparams["task"] = self._hparams_initial["task"] = self.task.name
        self.m_holdout = m_holdout
        self.c_holdout = c_holdout
        self.coloured = coloured
        self.train_size, self.val_size, self.test_size = sizes
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.num_classes = self.task.num_classes
        self.sequence_length = self.task.sequence_length
        self.image_shape = image_shape
        self.in_channels = image_shape[0]
        self.num_objects = NUM_GLYPHS
        self.context_segments = [list(segment) for segment in self.task.context_segments]
        self.splits: TaskSplits | None = None
        self.glyphs: Tensor | None = None
        self.palette: Tensor | None = None
        self._datasets: dict[str, Dataset] = {}

    def setup(self, stage: str | None = None) -> None:
        """Loads the glyphs and generates the trials (once; later calls keep them)."""
        if self.splits is not None:
            return
        self.glyphs = load_glyphs()
        if self.coloured:
            self.palette = torch.from_numpy(colour_palette()).to(torch.float32)
            self.splits = generate_coloured_splits(
                self.task,
                self.m_holdout,
                self.c_holdout,
                self.seed,
                self.train_size,
                self.val_size,
                self.test_size,
            )
            self._datasets = {
                split: _ColouredTrialDataset(getattr(self.splits, split), self.glyphs, self.palette)
                for split in ("train", "val", "test")
            }
            return
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
            split: _TrialDataset(getattr(self.splits, split), self.glyphs)
            for split in ("train", "val", "test")
        }

    def train_dataloader(self) -> DataLoader:
        """Training trials in an order reshuffled every epoch (seeded)."""
        if self.splits is None:
            self.setup()
        return self._loader(
            "train", sampler=EpochShuffleSampler(len(self._datasets["train"]), self.seed)
        )

    def val_dataloader(self) -> DataLoader:
        """Validation trials (training objects), in a fixed order."""
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        """Test trials (held-out objects when ``m_holdout > 0``), in a fixed order."""
        return self._loader("test")

    def _loader(self, split: str, sampler: EpochShuffleSampler | None = None) -> DataLoader:
        if self.splits is None:
            self.setup()
        return ResumableDataLoader(
            self._datasets[split],
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
