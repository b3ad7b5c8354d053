"""The datamodule of Relational Games (arXiv 1905.10307) as CoRelNet (arXiv 2206.05056) uses
them: train on pentomino scenes, test on the held-out hexomino and stripe scenes."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from tenfold.datamodules.relational.relational_games import (
    CELL_SIZE,
    GENERATED_TASKS,
    GRID_SIZE,
    IMAGE_SIZE,
    READ_TASKS,
    TEST_SETS,
    TRAIN_SET,
    RelationalGamesArrays,
    Scenes,
    generate_scenes,
    load_released,
    released_file,
    render,
    require_released,
)
from tenfold.datamodules.sampling import EpochShuffleSampler, ResumableDataLoader

__all__ = [
    "RelationalGamesDataModule",
    "PAPER_TRAIN_SIZE",
    "PAPER_TEST_SIZE",
    "DEFAULT_VAL_SIZE",
]

PAPER_TRAIN_SIZE = 250_000
"""Pentomino scenes of a released task (``PrediNet/README.md``)."""
PAPER_TEST_SIZE = 50_000
"""Hexomino and stripe scenes of a released task, each (``PrediNet/README.md``)."""
DEFAULT_VAL_SIZE = 5_000
"""Held-in pentomino scenes for validation (not in the papers)."""


def _as_image(pixels: np.ndarray) -> Tensor:
    """uint8 ``[..., 36, 36, 3]`` -> float32 ``[..., 3, 36, 36]`` in ``[0, 1]`` (pixel / 255, as
    CoRelNet's ``relational_games/tasks/relational.py``)."""
    return torch.from_numpy(np.ascontiguousarray(pixels)).movedim(-1, -3).to(torch.float32) / 255.0


class _SceneDataset(Dataset):
    """Generated scenes, rendered when read: ``{"image": [3, 36, 36], "target": scalar}``."""

    def __init__(self, scenes: Scenes) -> None:
        self.scenes = scenes
        self.target = torch.from_numpy(scenes.target).long()

    def __len__(self) -> int:
        return len(self.target)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        pixels = render(
            self.scenes.object_set, self.scenes.forms[index], self.scenes.colours[index]
        )
        return {"image": _as_image(pixels), "target": self.target[index]}


class _ImageDataset(Dataset):
    """The images ``rows`` of a released file (shared, not copied): ``{"image": [3, 36, 36],
    "target": scalar}``."""

    def __init__(self, arrays: RelationalGamesArrays, rows: np.ndarray) -> None:
        self.images = arrays.images
        self.rows = rows
        self.target = torch.from_numpy(arrays.labels[rows]).long()

    def __len__(self) -> int:
        return len(self.target)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"image": _as_image(self.images[self.rows[index]]), "target": self.target[index]}


def _check_int(name: str, value: int | None, minimum: int, optional: bool = False) -> None:
    """Raises ValueError unless ``value`` is an int >= ``minimum`` (or None, if ``optional``)."""
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = f"an int >= {minimum}" + (" or None" if optional else "")
        raise ValueError(f"RelationalGamesDataModule: {name} must be {allowed}, got {value!r}")


class RelationalGamesDataModule(L.LightningDataModule):
    """One Relational Games task: training and validation on pentomino scenes, test on each
    held-out object set (:mod:`tenfold.datamodules.relational.relational_games` defines the scenes, the
    tasks and the file format).

    With ``data_dir=None`` the scenes are generated (tasks ``same``, ``between``, ``occurs``,
    ``match_patt``, ``left_of``; seeded, half of each split labelled 1); with a directory they
    are read from the released files ``<prefix>_<set>.npz`` there (also ``xoccurs``; ``left_of``
    is derived from the ``same`` files as CoRelNet does), the pentomino file split at random into
    validation and training images.

    Batches are dicts:

    - ``"image"``: float32 ``[B, 3, 36, 36]`` in ``[0, 1]``, the 3 x 3 grid of 12 x 12 cells
      (CoRelNet cuts it into 9 cells: a sequence of 9 objects of ``[3, 12, 12]``).
    - ``"target"``: int64 ``[B]``, the label (0 or 1).

    ``train_dataloader`` shuffles with a generator seeded by ``seed``; ``val_dataloader`` gives
    held-in pentomino scenes; ``test_dataloader`` gives one loader per entry of ``test_sets``, in
    that order.

    Attributes available after construction: ``num_classes`` (2), ``image_size`` (36),
    ``in_channels`` (3), ``grid_size`` (3), ``cell_size`` (12), ``test_sets``, and the sizes
    ``train_size``, ``val_size``, ``test_size`` (for read files, None means the whole file; the
    training size is resolved in ``setup``). After ``setup``: ``datasets`` (``"train"``,
    ``"val"`` and one per test set).

    Args:
        task: ``"left_of"`` (default), ``"same"``, ``"between"``, ``"occurs"``, ``"match_patt"``;
            with ``data_dir`` also ``"xoccurs"``.
        data_dir: None to generate the scenes, or the directory of the released ``.npz`` files
            (https://console.cloud.google.com/storage/browser/relations-game-datasets).
        train_size: training scenes; None: 250,000 generated, or the rest of the pentomino file.
        val_size: validation scenes; None: 5,000.
        test_size: scenes per test set; None: 50,000 generated, or the whole file.
        test_sets: the held-out object sets to test on, from ``"hexos"``, ``"stripes"``.
        batch_size: scenes per batch (CoRelNet: 32).
        num_workers: DataLoader worker processes.
        seed: seed of the scenes, of the validation split of a read file and of the training order.
        num_classes: what the config declares (models interpolate ``${data.num_classes}``);
            checked to be 2. None: not checked.
        file_prefix: with ``data_dir`` (an error without it), the files are
            ``<file_prefix>_<set>.npz``; None: the
            released name of the task (``1task_between``, ``same``, ...), e.g. ``"mini_between"``
            for the small files of google-deepmind/deepmind-research ``PrediNet/``.
    """

    def __init__(
        self,
        task: str = "left_of",
        data_dir: str | Path | None = None,
        train_size: int | None = None,
        val_size: int | None = None,
        test_size: int | None = None,
        test_sets: Sequence[str] = TEST_SETS,
        batch_size: int = 32,
        num_workers: int = 0,
        seed: int = 0,
        num_classes: int | None = None,
        file_prefix: str | None = None,
    ) -> None:
        super().__init__()
        tasks = GENERATED_TASKS if data_dir is None else READ_TASKS
        if task not in tasks:
            source = "generated (data_dir=null)" if data_dir is None else "read from files"
            raise ValueError(
                f"RelationalGamesDataModule: task {task!r} cannot be {source}: use one of "
                f"{', '.join(tasks)}"
                + (" (xoccurs needs the released files: set data_dir)" if task == "xoccurs" else "")
            )
        if isinstance(test_sets, str):
            raise ValueError(
                f"RelationalGamesDataModule: test_sets is a list of names, got the string {test_sets!r}: write [{test_sets}]"
            )
        test_sets = [str(name) for name in test_sets]
        if not test_sets or any(name not in TEST_SETS for name in test_sets):
            raise ValueError(
                f"RelationalGamesDataModule: test_sets must be a non-empty list from "
                f"{', '.join(TEST_SETS)}, got {test_sets!r}"
            )
        _check_int("train_size", train_size, 1, optional=True)
        _check_int("val_size", val_size, 0, optional=True)
        _check_int("test_size", test_size, 1, optional=True)
        _check_int("batch_size", batch_size, 1)
        _check_int("num_workers", num_workers, 0)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"RelationalGamesDataModule: seed must be an int >= 0, got {seed!r}")
        if num_classes is not None and num_classes != 2:
            raise ValueError(
                f"RelationalGamesDataModule: data.num_classes={num_classes} but relational games "
                "labels are binary: set data.num_classes=2"
            )
        if file_prefix is not None and data_dir is None:
            raise ValueError(
                f"RelationalGamesDataModule: file_prefix={file_prefix!r} names released files, but "
                "data_dir is None (generate the scenes): set data_dir to the files' directory, or "
                "drop file_prefix"
            )
        if data_dir is not None:
            data_dir = str(data_dir)
        self.save_hyperparameters()
        self.task = task
        self.data_dir = None if data_dir is None else Path(data_dir)
        self.file_prefix = file_prefix
        generated = data_dir is None
        self.train_size = PAPER_TRAIN_SIZE if train_size is None and generated else train_size
        self.val_size = DEFAULT_VAL_SIZE if val_size is None else val_size
        self.test_size = PAPER_TEST_SIZE if test_size is None and generated else test_size
        self.test_sets = tuple(test_sets)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.num_classes = 2
        self.image_size = IMAGE_SIZE
        self.in_channels = 3
        self.grid_size = GRID_SIZE
        self.cell_size = CELL_SIZE
        self.datasets: dict[str, Dataset] = {}

    def prepare_data(self) -> None:
        """Checks that the released files are there (nothing to do for generated scenes)."""
        if self.data_dir is not None:
            require_released(
                self.data_dir, self.task, (TRAIN_SET, *self.test_sets), self.file_prefix
            )

    def setup(self, stage: str | None = None) -> None:
        """Generates or reads the splits (once; later calls keep them)."""
        if self.datasets:
            return
        streams = np.random.SeedSequence(self.seed).spawn(2 + len(TEST_SETS))
        train_rng, val_rng, *set_rngs = (np.random.default_rng(stream) for stream in streams)
        test_rngs = dict(zip(TEST_SETS, set_rngs, strict=True))
        if self.data_dir is None:
            self.datasets = {
                "train": _SceneDataset(
                    generate_scenes(self.task, TRAIN_SET, self.train_size, train_rng)
                ),
                "val": _SceneDataset(generate_scenes(self.task, TRAIN_SET, self.val_size, val_rng)),
            }
            for name in self.test_sets:
                scenes = generate_scenes(self.task, name, self.test_size, test_rngs[name])
                self.datasets[name] = _SceneDataset(scenes)
            return
        self.prepare_data()
        self._read_splits(train_rng)

    def _read_splits(self, rng: np.random.Generator) -> None:
        """The released files: a random ``val_size`` of the pentomino images for validation, the
        next ``train_size`` (or all the rest) for training; the first ``test_size`` (or all) of
        each test file."""
        pentos = load_released(self.data_dir, self.task, TRAIN_SET, self.file_prefix)
        available = len(pentos) - self.val_size
        if available < (self.train_size or 1):
            raise ValueError(
                "RelationalGamesDataModule: "
                f"{released_file(self.data_dir, self.task, TRAIN_SET, self.file_prefix)} "
                f"has {len(pentos)} images, fewer than val_size + train_size = {self.val_size} + "
                f"{self.train_size or 1}: lower them"
            )
        order = rng.permutation(len(pentos))
        self.train_size = self.train_size or available
        val_index = order[: self.val_size]
        train_index = order[self.val_size : self.val_size + self.train_size]
        self.datasets = {
            "train": _ImageDataset(pentos, train_index),
            "val": _ImageDataset(pentos, val_index),
        }
        for name in self.test_sets:
            arrays = load_released(self.data_dir, self.task, name, self.file_prefix)
            size = len(arrays) if self.test_size is None else min(self.test_size, len(arrays))
            self.datasets[name] = _ImageDataset(arrays, np.arange(size))

    def train_dataloader(self) -> DataLoader:
        """Training scenes in an order reshuffled every epoch (seeded)."""
        self.setup()
        sampler = EpochShuffleSampler(len(self.datasets["train"]), self.seed)
        return self._loader("train", sampler)

    def val_dataloader(self) -> DataLoader:
        """Held-in pentomino scenes, in a fixed order."""
        self.setup()
        return self._loader("val")

    def test_dataloader(self) -> list[DataLoader]:
        """One loader per held-out object set of ``test_sets``, in a fixed order."""
        self.setup()
        return [self._loader(name) for name in self.test_sets]

    def _loader(self, split: str, sampler: EpochShuffleSampler | None = None) -> DataLoader:
        return ResumableDataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
