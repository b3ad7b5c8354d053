"""Multi-task image classification, the vision task of Compositional Attention (arXiv 2110.09419):
one model learns CIFAR10, FashionMNIST, SVHN and equilateral-triangle detection at once.

Facts from the official code (github sarthmit/Compositional-Attention, ``Multitask_Classification/``
``main_multi.py``, ``dataset.py``, ``README.md``):

- Tasks: CIFAR10 (10 classes), FashionMNIST (10), SVHN (10) and Equilateral Triangles (2: the
  official model has one logit for it, trained with binary cross-entropy), read with torchvision
  (``download=True``); the triangles are generated on the fly (50,000 per training pass, 10,000
  for testing).
- Images: every task is 32x32 with 3 channels in [-1, 1]: ``(x - 0.5) / 0.5`` of the [0, 1]
  pixels; FashionMNIST is zero-padded by 2 pixels (28 -> 32) and its gray channel repeated three
  times; triangle images (0 or 255) map to -1 / +1 and are repeated likewise.
- Training augmentation, CIFAR10, SVHN and FashionMNIST: a random 32x32 crop of the image
  zero-padded by 4 pixels, then a horizontal flip with probability 1/2. Triangles: none.
- Each training step takes one batch of 32 from every task (separate shuffled loaders) and sums
  the tasks' losses. An epoch is one pass over SVHN, the largest set; the other loaders restart
  (reshuffled) when exhausted, and every loader restarts at each epoch. Each task keeps its last,
  smaller batch of a pass.
- Evaluation runs every epoch on each task's test split (there is no validation split). The
  official test triangles are redrawn at every evaluation; here they are fixed by the seed.

Equilateral triangles (``dataset.py``, 32x32 in this task): two vertices with integer coordinates
uniform in ``[1, 31]``; for an equilateral triangle (label 0) the third is the second rotated by
60 degrees about the first, its coordinates truncated to integers, and the draw is repeated until
it lies in ``[1, 31]``; otherwise (label 1) the third is drawn like the first two. The label is a
fair coin. Each vertex is drawn as 8 dots: 4 offsets ``o`` uniform in ``{-1, 0, 1}^2`` and the
points ``v + o`` and ``v - o``; each dot is a filled disc of radius 2 (the 13 pixels within
distance 2 of its centre, as OpenCV's ``cv2.circle`` draws it).

Batches are dicts: see :class:`MultitaskImageDataModule`. All randomness (order, augmentation,
triangles) comes from ``numpy.random.Generator`` streams keyed by (seed, task, epoch, pass) and
per-sample seeds, so batches do not depend on worker count or global RNG state.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from torch import Tensor
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler

from tenfold.datamodules.sampling import ResumableDataLoader

__all__ = [
    "MULTITASK_DATASETS",
    "NUM_CLASSES",
    "MultitaskBatchSampler",
    "MultitaskImageDataModule",
    "MultitaskTrainBatches",
    "NaturalImages",
    "TriangleImages",
    "draw_dots",
    "load_image_task",
    "make_triangle_image",
    "sample_triangle_vertices",
    "triangle_points",
]

MULTITASK_DATASETS = ("cifar10", "fashion_mnist", "svhn", "triangles")
"""The tasks of the paper, in the order of the official code's output heads."""
NUM_CLASSES = {"cifar10": 10, "fashion_mnist": 10, "svhn": 10, "triangles": 2}
"""Classes of each task (triangles: 0 equilateral, 1 not)."""
TRIANGLES = "triangles"
NATURAL_DATASETS = ("cifar10", "fashion_mnist", "svhn")

IN_CHANNELS = 3
NATIVE_SIZE = 32
"""Side of every official image: CIFAR10 and SVHN natively, FashionMNIST after padding."""
CROP_PADDING_AT_NATIVE_SIZE = 4
VERTEX_MARGIN = 1
POINTS_PER_VERTEX = 8
VERTEX_JITTER = 1
DOT_RADIUS = 2
_EQUILATERAL_ANGLE = math.pi / 3
_MAX_SEED = 2**63 - 1


def sample_triangle_vertices(
    rng: np.random.Generator, image_size: int, equilateral: bool, margin: int = VERTEX_MARGIN
) -> np.ndarray:
    """Three vertices ``(x, y)`` with integer coordinates in ``[margin, image_size - margin]``.

    ``equilateral``: the third vertex is the second rotated by 60 degrees about the first
    (``x3 = x1 + cos(a) dx + sin(a) dy``, ``y3 = y1 - sin(a) dx + cos(a) dy``, truncated to
    integers), drawn again until it lies in range; else all three are uniform.

    Returns:
        int64 ``[3, 2]``, columns ``(x, y)`` = (column, row) of the image.
    """
    low, high = margin, image_size - margin
    while True:
        first, second = rng.integers(low, high + 1, size=(2, 2))
        if not equilateral:
            third = rng.integers(low, high + 1, size=2)
            return np.stack([first, second, third])
        dx, dy = second - first
        cos, sin = math.cos(_EQUILATERAL_ANGLE), math.sin(_EQUILATERAL_ANGLE)
        third = np.array(
            [math.trunc(first[0] + cos * dx + sin * dy), math.trunc(first[1] - sin * dx + cos * dy)]
        )
        if low <= third.min() and third.max() <= high:
            return np.stack([first, second, third])


def triangle_points(
    rng: np.random.Generator,
    vertices: np.ndarray,
    points_per_vertex: int = POINTS_PER_VERTEX,
    jitter: int = VERTEX_JITTER,
) -> np.ndarray:
    """Dots around each vertex: ``points_per_vertex // 2`` offsets ``o`` uniform in
    ``{-jitter..jitter}^2`` and the points ``v + o`` and ``v - o`` (so each vertex is the mean of
    its dots).

    Args:
        rng: draws the offsets.
        vertices: int ``[V, 2]`` as ``(x, y)``.
        points_per_vertex: dots per vertex (rounded down to an even number).
        jitter: largest offset along each axis, in pixels.

    Returns:
        int64 ``[V * 2 * (points_per_vertex // 2), 2]``, vertex by vertex.
    """
    offsets = rng.integers(-jitter, jitter + 1, size=(len(vertices), points_per_vertex // 2, 2))
    centres = vertices[:, None, :]
    return np.concatenate([centres + offsets, centres - offsets], axis=1).reshape(-1, 2)


def draw_dots(points: np.ndarray, image_size: int, radius: int = DOT_RADIUS) -> np.ndarray:
    """A black ``image_size x image_size`` image with a white (255) filled disc of the pixels
    within distance ``radius`` of every point ``(x, y)`` (discs are clipped at the border).

    Returns:
        uint8 ``[image_size, image_size]``, indexed ``[y, x]``.
    """
    rows = np.arange(image_size)[:, None]
    columns = np.arange(image_size)[None, :]
    image = np.zeros((image_size, image_size), dtype=np.uint8)
    for x, y in points:
        image[(columns - x) ** 2 + (rows - y) ** 2 <= radius**2] = 255
    return image


def make_triangle_image(
    rng: np.random.Generator, image_size: int = NATIVE_SIZE
) -> tuple[np.ndarray, int]:
    """One example of the triangle task: a fair coin picks the label (0: equilateral, 1: not).

    Returns:
        uint8 ``[image_size, image_size]`` image (0 or 255) and the label.
    """
    label = int(rng.integers(2))
    vertices = sample_triangle_vertices(rng, image_size, equilateral=label == 0)
    return draw_dots(triangle_points(rng, vertices), image_size), label


def load_image_task(
    name: str, root: str | Path, train: bool, download: bool
) -> tuple[Tensor, Tensor]:
    """Reads one split of a torchvision dataset (downloading it when ``download`` is set).

    Files: ``<root>/cifar-10-batches-py/`` (CIFAR10), ``<root>/FashionMNIST/raw/`` (FashionMNIST),
    ``<root>/svhn/{train,test}_32x32.mat`` (SVHN).

    Returns:
        uint8 images ``[N, C, H, W]`` (C = 3 or 1) and long labels ``[N]`` in ``[0, 10)`` (SVHN's
        label 10 of the digit 0 is 0, as torchvision reads it).
    """
    root = Path(root)
    try:
        if name == "cifar10":
            dataset = torchvision.datasets.CIFAR10(root, train=train, download=download)
            images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2)
            labels = torch.tensor(dataset.targets)
        elif name == "fashion_mnist":
            dataset = torchvision.datasets.FashionMNIST(root, train=train, download=download)
            images, labels = dataset.data.unsqueeze(1), dataset.targets
        elif name == "svhn":
            split = "train" if train else "test"
            dataset = torchvision.datasets.SVHN(root / "svhn", split=split, download=download)
            images, labels = torch.from_numpy(dataset.data), torch.from_numpy(dataset.labels)
        else:
            raise ValueError(f"no torchvision reader for {name!r}; readers: {NATURAL_DATASETS}")
    except (RuntimeError, OSError) as error:
        raise RuntimeError(_missing_data_message(name, root, train, download, error)) from error
    return images.contiguous(), labels.long()


def _missing_data_message(
    name: str, root: Path, train: bool, download: bool, error: Exception
) -> str:
    split = "train" if train else "test"
    if name == "cifar10":
        folder = root / torchvision.datasets.CIFAR10.base_folder
        files = "data_batch_1 ... data_batch_5, test_batch, batches.meta"
        source = torchvision.datasets.CIFAR10.url + " (extract it into the data_dir)"
    elif name == "fashion_mnist":
        folder = root / "FashionMNIST" / "raw"
        files = ", ".join(
            f"{split_name}-{kind}-ubyte"
            for split_name in ("train", "t10k")
            for kind in ("images-idx3", "labels-idx1")
        )
        mirror = torchvision.datasets.FashionMNIST.mirrors[0]
        source = f"{mirror} (the same names with .gz, gunzipped)"
    else:
        folder = root / "svhn"
        files = "train_32x32.mat, test_32x32.mat"
        source = torchvision.datasets.SVHN.split_list[split][0].rsplit("/", 1)[0] + "/"
    attempt = "download" if download else "find"
    return (
        f"{name}: could not {attempt} the {split} split under {folder} ({type(error).__name__}: "
        f"{error}). It needs the files {files} there: run once on a machine with internet access "
        "with download=True (torchvision downloads them into data_dir; with train.py: data.download=true, "
        "into data.data_dir, by default paths.data_dir), "
        f"or copy them there from {source}"
    )


def _to_model_range(image: Tensor) -> Tensor:
    """[0, 1] pixels ``[C, H, W]`` -> ``[3, H, W]`` in [-1, 1], gray repeated to three channels."""
    image = image * 2 - 1
    return image.expand(IN_CHANNELS, -1, -1).contiguous() if image.shape[0] == 1 else image


def _random_crop_and_flip(image: Tensor, padding: int, rng: np.random.Generator) -> Tensor:
    """A random crop of ``image`` ``[C, H, W]`` zero-padded by ``padding``, flipped left-right with
    probability 1/2 (torchvision's ``RandomCrop(size, padding)`` + ``RandomHorizontalFlip``)."""
    height, width = image.shape[-2:]
    top, left = rng.integers(0, 2 * padding + 1, size=2)
    padded = F.pad(image, (padding, padding, padding, padding))
    crop = padded[:, top : top + height, left : left + width]
    return crop.flip(-1) if rng.random() < 0.5 else crop


SampleKey = int | tuple[int, int]
"""An index (evaluation: the same image every time) or ``(index, sample_seed)`` (training: the
seed draws the augmentation, or the triangle)."""


class NaturalImages(Dataset):
    """One split of CIFAR10, FashionMNIST or SVHN in the common format.

    Item ``key`` (:data:`SampleKey`): ``(image float [3, image_size, image_size], label long [])``.
    Images smaller than 32 are zero-padded to 32 (FashionMNIST), resized to ``image_size`` when it
    differs from 32 (bilinear, antialiased), augmented for ``(index, seed)`` keys when
    ``augment`` (crop padding ``image_size // 8``, 4 at 32), and mapped to [-1, 1].
    """

    def __init__(self, images: Tensor, labels: Tensor, image_size: int, augment: bool) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or len(images) != len(labels):
            raise ValueError("NaturalImages needs uint8 images [N, C, H, W] and N labels")
        self.images = images
        self.labels = labels
        self.image_size = image_size
        self.augment = augment
        self.crop_padding = image_size * CROP_PADDING_AT_NATIVE_SIZE // NATIVE_SIZE

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, key: SampleKey) -> tuple[Tensor, Tensor]:
        index, sample_seed = (key, None) if isinstance(key, int) else key
        image = self.images[index].float() / 255
        margin = max(NATIVE_SIZE - image.shape[-1], 0) // 2
        if margin:
            image = F.pad(image, (margin, margin, margin, margin))
        if image.shape[-1] != self.image_size:
            size = (self.image_size, self.image_size)
            image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True)[0]
        if self.augment and sample_seed is not None:
            rng = np.random.default_rng(sample_seed)
            image = _random_crop_and_flip(image, self.crop_padding, rng)
        return _to_model_range(image), self.labels[index]


class TriangleImages(Dataset):
    """Equilateral-triangle detection (module docstring): ``num_examples`` images per pass.

    Item ``key`` (:data:`SampleKey`): ``(image float [3, image_size, image_size] in {-1, 1},
    label long [])``. An index ``i`` always gives the image of the seed ``(seed, i)``; a key
    ``(i, sample_seed)`` gives the image of ``sample_seed`` (fresh triangles every pass, as the
    official generator draws a new one at every access).
    """

    def __init__(self, num_examples: int, image_size: int, seed: int) -> None:
        self.num_examples = num_examples
        self.image_size = image_size
        self.seed = seed

    def __len__(self) -> int:
        return self.num_examples

    def __getitem__(self, key: SampleKey) -> tuple[Tensor, Tensor]:
        if isinstance(key, int):
            if not 0 <= key < self.num_examples:
                raise IndexError(key)
            rng = np.random.default_rng((self.seed, key))
        else:
            rng = np.random.default_rng(key[1])
        pixels, label = make_triangle_image(rng, self.image_size)
        image = torch.from_numpy(pixels).float().div_(255).unsqueeze(0)
        return _to_model_range(image), torch.tensor(label)


TrainKey = tuple[int, int, int]
"""``(task, index, sample_seed)``: one training image."""


class MultitaskBatchSampler(Sampler[list[TrainKey]]):
    """The official training schedule: each step holds one batch of every task.

    Epoch ``e`` has ``max_t ceil(n_t / batch_size)`` steps (one pass over the largest task). Task
    ``t`` goes through passes ``p = 0, 1, ...``: each a permutation of its ``n_t`` indices in
    batches of ``batch_size`` (the last one smaller), restarting when exhausted. Pass ``(e, t, p)``
    draws its permutation and one sample seed per position from
    ``numpy.random.default_rng((seed, t, e, p))``.

    Yields, per step, the keys of every task in task order (:data:`TrainKey`). Lightning calls
    :meth:`set_epoch` at every epoch (also through its distributed wrapper, which then gives each
    rank every ``world_size``-th step); without it, each new iteration is the next epoch.
    """

    def __init__(self, task_sizes: Sequence[int], batch_size: int, seed: int) -> None:
        if not task_sizes or min(task_sizes) < 1:
            raise ValueError(f"every task needs at least one example, got sizes {list(task_sizes)}")
        self.task_sizes = list(task_sizes)
        self.batch_size = batch_size
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return max(math.ceil(size / self.batch_size) for size in self.task_sizes)

    def set_epoch(self, epoch: int) -> None:
        """Makes the next iteration epoch ``epoch``."""
        self.epoch = epoch

    def _pass(self, task: int, epoch: int, pass_index: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng((self.seed, task, epoch, pass_index))
        size = self.task_sizes[task]
        return rng.permutation(size), rng.integers(0, _MAX_SEED, size=size)

    def __iter__(self) -> Iterator[list[TrainKey]]:
        epoch = self.epoch
        self.epoch += 1
        batches_per_pass = [math.ceil(size / self.batch_size) for size in self.task_sizes]
        passes: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for step in range(len(self)):
            keys: list[TrainKey] = []
            for task, per_pass in enumerate(batches_per_pass):
                pass_index, batch = divmod(step, per_pass)
                if batch == 0:
                    passes[task] = self._pass(task, epoch, pass_index)
                order, seeds = passes[task]
                end = min((batch + 1) * self.batch_size, len(order))
                positions = range(batch * self.batch_size, end)
                keys.extend((task, int(order[i]), int(seeds[i])) for i in positions)
            yield keys


class MultitaskTrainBatches(Dataset):
    """Item: a list of :data:`TrainKey` -> one batch ``{"image", "target", "task"}`` (use with
    ``batch_size=None`` and a :class:`MultitaskBatchSampler`)."""

    def __init__(self, tasks: Sequence[Dataset]) -> None:
        self.tasks = list(tasks)

    def __getitem__(self, keys: list[TrainKey]) -> dict[str, Tensor]:
        examples = [self.tasks[task][(index, seed)] for task, index, seed in keys]
        return {
            "image": torch.stack([image for image, _ in examples]),
            "target": torch.stack([target for _, target in examples]),
            "task": torch.tensor([task for task, _, _ in keys]),
        }


class _TaskTagged(Dataset):
    """Item ``i`` of ``dataset`` as ``{"image", "target", "task"}``."""

    def __init__(self, dataset: Dataset, task: int) -> None:
        self.dataset = dataset
        self.task = torch.tensor(task)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        image, target = self.dataset[index]
        return {"image": image, "target": target, "task": self.task}


class MultitaskImageDataModule(L.LightningDataModule):
    """CIFAR10, FashionMNIST, SVHN and equilateral triangles as one multi-task problem.

    Batches are dicts:

    - ``"image"``: float ``[N, 3, image_size, image_size]`` in [-1, 1];
    - ``"target"``: long ``[N]``, the class within the example's task;
    - ``"task"``: long ``[N]``, the task's position in ``datasets``.

    Training batches (:class:`MultitaskBatchSampler`) hold ``batch_size`` images of every task in
    task order, so ``N = num_tasks * batch_size`` except when a task ends a pass with a smaller
    batch; the official step sums the tasks' mean losses over these blocks. Validation and test
    batches (the same data: every task's test split, as the official code evaluates) take
    ``eval_batch_size`` images at a time from the tasks' test sets one after the other;
    per-task metrics group by ``"task"``.

    Files under ``data_dir`` (torchvision's layouts): ``cifar-10-batches-py/``,
    ``FashionMNIST/raw/``, ``svhn/``; :meth:`prepare_data` downloads them when ``download``.

    Args:
        data_dir: root of the torchvision datasets.
        datasets: the tasks, a subset of :data:`MULTITASK_DATASETS` (default: all four).
        image_size: side of the images (official: 32; other sizes resize the natural images and
            draw triangles at that size).
        batch_size: images per task per training step (official: 32).
        eval_batch_size: images per evaluation batch.
        num_workers: DataLoader workers.
        seed: seeds the training order and augmentation, and the triangles.
        download: let :meth:`prepare_data` download missing datasets.
        triangles_train_size: triangles per training pass (official: 50,000).
        triangles_test_size: test triangles (official: 10,000).
        num_classes: the classes per task that the config declares (models interpolate
            ``${data.num_classes}``); checked against ``datasets``. None: not checked.
        in_channels: declared channels; must be 3 (gray images are repeated, as officially).
    """

    def __init__(
        self,
        data_dir: str | Path,
        datasets: Sequence[str] = MULTITASK_DATASETS,
        image_size: int = NATIVE_SIZE,
        batch_size: int = 32,
        eval_batch_size: int = 128,
        num_workers: int = 0,
        seed: int = 0,
        download: bool = True,
        triangles_train_size: int = 50_000,
        triangles_test_size: int = 10_000,
        num_classes: Sequence[int] | None = None,
        in_channels: int = IN_CHANNELS,
    ) -> None:
        super().__init__()
        if isinstance(datasets, str):
            raise ValueError(f"datasets is a list of names, got the string {datasets!r}: write [{datasets}]")
        tasks = tuple(str(name) for name in datasets)
        unknown = [name for name in tasks if name not in NUM_CLASSES]
        if unknown or not tasks or len(set(tasks)) != len(tasks):
            raise ValueError(
                f"datasets must be distinct names among {MULTITASK_DATASETS}, got {list(tasks)}"
            )
        for name, value, minimum in (
            ("image_size", image_size, 8),
            ("batch_size", batch_size, 1),
            ("eval_batch_size", eval_batch_size, 1),
            ("triangles_train_size", triangles_train_size, 1),
            ("triangles_test_size", triangles_test_size, 1),
            ("num_workers", num_workers, 0),
            ("seed", seed, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(
                    f"MultitaskImageDataModule: {name} must be an int >= {minimum}, got {value!r}"
                )
        expected_classes = [NUM_CLASSES[name] for name in tasks]
        if num_classes is not None and list(num_classes) != expected_classes:
            raise ValueError(
                f"data.num_classes={list(num_classes)} but the tasks {list(tasks)} have "
                f"{expected_classes} classes: set data.num_classes={expected_classes}"
            )
        if in_channels != IN_CHANNELS:
            raise ValueError(
                f"in_channels={in_channels}: every task's images have {IN_CHANNELS} channels "
                f"(gray images are repeated), set in_channels={IN_CHANNELS}"
            )
        data_dir = str(data_dir)  # a Path in the hyperparameters would not load with weights_only=True
        self.save_hyperparameters()
        self.data_dir = Path(data_dir)
        self.tasks = tasks
        self.image_size = image_size
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.download = download
        self.triangles_train_size = triangles_train_size
        self.triangles_test_size = triangles_test_size
        self.in_channels = IN_CHANNELS
        self.num_classes = expected_classes
        self.train_tasks: list[Dataset] | None = None
        self.test_tasks: list[Dataset] | None = None

    @property
    def num_tasks(self) -> int:
        """Number of tasks (classification heads)."""
        return len(self.tasks)

    def prepare_data(self) -> None:
        """Downloads (when ``download``) and checks every torchvision dataset among the tasks; one
        error names every dataset that is missing, so that they can all be fetched at once."""
        missing = []
        for name in self.tasks:
            if name == TRIANGLES:
                continue
            try:
                for train in (True, False):
                    load_image_task(name, self.data_dir, train, self.download)
            except RuntimeError as error:
                missing.append(str(error))
        if missing:
            raise RuntimeError("\n".join(missing))

    def setup(self, stage: str | None = None) -> None:
        """Reads the datasets' splits and builds the per-task datasets (once)."""
        if self.train_tasks is not None:
            return
        train_tasks: list[Dataset] = []
        test_tasks: list[Dataset] = []
        for task, name in enumerate(self.tasks):
            if name == TRIANGLES:
                size, seed = self.image_size, self.seed
                train_tasks.append(TriangleImages(self.triangles_train_size, size, seed))
                test_tasks.append(TriangleImages(self.triangles_test_size, size, seed))
                continue
            images, labels = load_image_task(name, self.data_dir, train=True, download=False)
            train_tasks.append(NaturalImages(images, labels, self.image_size, augment=True))
            images, labels = load_image_task(name, self.data_dir, train=False, download=False)
            test_tasks.append(NaturalImages(images, labels, self.image_size, augment=False))
        self.train_tasks, self.test_tasks = train_tasks, test_tasks

    def train_dataloader(self) -> DataLoader:
        """One multi-task batch per step (:class:`MultitaskBatchSampler`)."""
        tasks = self._tasks("train_tasks")
        sampler = MultitaskBatchSampler([len(task) for task in tasks], self.batch_size, self.seed)
        return ResumableDataLoader(
            MultitaskTrainBatches(tasks),
            batch_size=None,
            sampler=sampler,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        """Every task's test split, task after task (the datasets have no other held-out split, and
        the official code logs test accuracy every epoch): progress to watch, not to choose a
        checkpoint by, which is why the experiments test the final weights."""
        return self._eval_dataloader()

    def test_dataloader(self) -> DataLoader:
        """The same as :meth:`val_dataloader`."""
        return self._eval_dataloader()

    def _tasks(self, name: str) -> list[Dataset]:
        if getattr(self, name) is None:
            self.setup()
        return getattr(self, name)

    def _eval_dataloader(self) -> DataLoader:
        test_tasks = self._tasks("test_tasks")
        tagged = [_TaskTagged(dataset, task) for task, dataset in enumerate(test_tasks)]
        return DataLoader(
            ConcatDataset(tagged),
            batch_size=self.eval_batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
