"""Sort-of-CLEVR (Santoro et al., NeurIPS 2017, arXiv 1706.01427), the relational visual question
answering task of Compositional Attention (Mittal et al., ICLR 2022, arXiv 2110.09419, Sec. 4), with
the unary, binary and ternary questions of the official generator
(``Sort-of-CLEVR/sort_of_clevr_generator.py`` of github sarthmit/Compositional-Attention, itself
from github kimhc6028/relational-networks).

Scene (facts of the official generator): a white 75 x 75 RGB image with 6 objects, one of each
colour red, green, blue, orange (255, 156, 0), gray (128, 128, 128), yellow; each a filled square
of side 11 (centre +- 5 pixels) or a filled disc of radius 5, square or disc with probability 1/2.
Centres ``(x, y)`` (``x`` the column, ``y`` the row) are integers drawn uniformly in ``[5, 70)``,
redrawn until at least 10 pixels (squared distance >= 100) from every earlier object; objects are
drawn in colour order. The official images are drawn with OpenCV; here discs are OpenCV's raster of
``cv2.circle(radius=5, thickness=-1)``: the 81 pixels with ``dx^2 + dy^2 <= 25``. No object covers
another's centre pixel.

Questions: 10 of each type per image (``questions_per_type``), each with a uniformly drawn colour
(two distinct colours for ternary questions) and a uniformly drawn subtype. Encoding (18 floats):
``[0:6]`` one-hot colour of the first object, ``[6:12]`` one-hot colour of the second object
(ternary only), ``[12:15]`` one-hot type (unary, binary, ternary), ``[15:18]`` one-hot subtype.
Answer classes (:data:`ANSWERS`): ``0 yes, 1 no, 2 rectangle, 3 circle, 4..9`` the counts 1..6.
Questions are drawn uniformly but answers are not balanced: they follow the scenes (shapes and
yes/no answers are near 1/2 each, but e.g. about 69% of ``between`` answers are zero objects).

- Unary (non-relational): ``shape`` of the object (rectangle/circle); ``left``: yes if its
  ``x < 37.5``; ``top``: yes if its ``y < 37.5``.
- Binary (relational): ``closest``: the shape of the object nearest to it (other than itself);
  ``furthest``: the shape of the object furthest from it (first on ties); ``count``: the number
  ``k`` of objects with its shape, itself included (class ``3 + k``).
- Ternary, about objects A and B: ``between``: the number ``k`` of other objects in the closed
  axis-aligned box of A and B (class ``4 + k``: the official classes of ternary counts start at
  ``4`` for zero, so their vocabulary strings are off by one); ``band``: yes if another object's
  ``y`` lies within 12 of the line through A and B at its ``x``, with the official line
  ``y = m x + c``, ``m = (B_y - A_y) / (B_x - A_x + 1e-10)`` (a vertical band: for a vertical
  A-B line only objects within 12 rows of A count); ``obtuse``: the number ``k`` of other objects
  C whose triangle A, B, C has a largest angle of at least 90 degrees (class ``4 + k``).

Official oddities, reproduced with ``official_quirks=True`` (default False, the intent):

- ``closest`` marks the object itself with squared distance 999 instead of excluding it, but
  squared distances reach ``2 * 65^2 = 8450``: when every other object is farther than
  ``sqrt(999) = 31.6`` pixels (about 7% of such questions) the answer is the object's own shape.
- Ternary objects are drawn from the first five colours only (``permutation(arange(5))``): yellow
  is never A or B.
- ``obtuse`` computes the angles with ``arccos`` of the law of cosines in floating point and takes
  Python's ``max`` (which keeps an earlier value over a later NaN): collinear triples and right
  angles count or not by rounding. Without quirks the test is exact on the integer centres: a
  triangle counts when it is not degenerate (collinear) and some angle is >= 90 degrees.

Also in the official code but not reproduced: its OoD builder (``build_ood_binary_dataset``, on by
a hard-coded ``ood = True``) draws three overlapping sets of 6 objects per image and writes a
format that ``main.py`` does not read; ``main.py`` reads the in-distribution data. ``main.py``
feeds ``np.swapaxes(image, 0, 2)``, i.e. BGR channels and ``[C, x, y]`` axes; here images are RGB
``[3, y, x]``. The official training takes one batch of each question type per step; here all
questions are shuffled together (``"question_type"`` gives per-type accuracy).

Sizes (official generator): 9,800 training, 200 validation and 200 test images, 10 questions of
each of the 3 types per image (294,000 / 6,000 / 6,000 questions).
"""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from tenfold.datamodules.attention.generated import check_loader_args, check_positive_int
from tenfold.datamodules.npz import load_npz
from tenfold.datamodules.sampling import EpochShuffleSampler, ResumableDataLoader

__all__ = [
    "ANSWERS",
    "COLOR_NAMES",
    "COLORS_RGB",
    "IMAGE_SIZE",
    "NUM_OBJECTS",
    "QUESTION_DIM",
    "QUESTION_SUBTYPES",
    "QUESTION_TYPES",
    "SortOfCLEVRDataModule",
    "SortOfCLEVRDataset",
    "answer_questions",
    "draw_questions",
    "encode_questions",
    "generate_scenes",
    "generate_sort_of_clevr",
    "render_scenes",
]

IMAGE_SIZE = 75
"""Image height and width in pixels."""
NUM_OBJECTS = 6
"""Objects per scene, one per colour."""
OBJECT_HALF_SIZE = 5
"""Half side of a square and radius of a disc (official ``size``)."""
MIN_CENTER_SQUARED_DISTANCE = (2 * OBJECT_HALF_SIZE) ** 2
COLOR_NAMES = ("red", "green", "blue", "orange", "gray", "yellow")
"""Object colours in the order of the official generator (colour id = object index)."""
COLORS_RGB = np.array(
    [[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 156, 0], [128, 128, 128], [255, 255, 0]],
    dtype=np.uint8,
)
"""RGB values of :data:`COLOR_NAMES` (the official BGR tuples reversed)."""
RECTANGLE, CIRCLE = 0, 1
"""Shape codes of ``"object_shapes"``."""
ANSWERS = ("yes", "no", "rectangle", "circle", "1", "2", "3", "4", "5", "6")
"""Answer classes (official ``translator.py``); a shape code ``s`` is class ``2 + s``."""
YES, NO = 0, 1
QUESTION_TYPES = ("unary", "binary", "ternary")
"""Question type ids 0, 1, 2 (``"question_type"``); binary and ternary are relational."""
QUESTION_SUBTYPES = {
    "unary": ("shape", "left", "top"),
    "binary": ("closest", "furthest", "count"),
    "ternary": ("between", "band", "obtuse"),
}
"""Subtype ids 0, 1, 2 of each question type (``"question_subtype"``)."""
QUESTION_DIM = 18
"""Length of the question encoding."""
_TYPE_OFFSET, _SUBTYPE_OFFSET, _SECOND_COLOR_OFFSET = 12, 15, 6
_HALF_IMAGE = IMAGE_SIZE / 2
_BAND_HALF_WIDTH = 12
_BAND_EPSILON = 1e-10
_QUIRK_SELF_SQUARED_DISTANCE = 999
_QUIRK_TERNARY_COLORS = 5
_RENDER_CHUNK = 1024
_DISC_SQUARED_RADIUS = OBJECT_HALF_SIZE**2
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}
_CACHE_VERSION = 2


def generate_scenes(rng: np.random.Generator, num_images: int) -> tuple[np.ndarray, np.ndarray]:
    """Object centres and shapes of ``num_images`` scenes (module docstring).

    Returns:
        ``centers``: int64 ``[N, 6, 2]``, ``(x, y)`` = (column, row) of object ``k`` (colour ``k``);
        ``shapes``: int64 ``[N, 6]``, :data:`RECTANGLE` or :data:`CIRCLE`.
    """
    centers = np.zeros((num_images, NUM_OBJECTS, 2), dtype=np.int64)
    for k in range(NUM_OBJECTS):
        pending = np.arange(num_images)
        while pending.size:
            candidates = rng.integers(
                OBJECT_HALF_SIZE, IMAGE_SIZE - OBJECT_HALF_SIZE, size=(pending.size, 2)
            )
            squared = ((candidates[:, None, :] - centers[pending, :k]) ** 2).sum(-1)
            accepted = (squared >= MIN_CENTER_SQUARED_DISTANCE).all(axis=1)
            centers[pending[accepted], k] = candidates[accepted]
            pending = pending[~accepted]
    shapes = (rng.random((num_images, NUM_OBJECTS)) >= 0.5).astype(np.int64)
    return centers, shapes


def render_scenes(centers: np.ndarray, shapes: np.ndarray) -> np.ndarray:
    """Draws scenes: uint8 ``[N, 3, 75, 75]`` RGB, white background, objects in colour order.

    Args:
        centers: int ``[N, 6, 2]`` ``(x, y)`` centres.
        shapes: int ``[N, 6]`` shape codes.
    """
    num_images = len(centers)
    images = np.full((num_images, 3, IMAGE_SIZE, IMAGE_SIZE), 255, dtype=np.uint8)
    rows = np.arange(IMAGE_SIZE)[None, :, None]
    columns = np.arange(IMAGE_SIZE)[None, None, :]
    for start in range(0, num_images, _RENDER_CHUNK):
        chunk = slice(start, start + _RENDER_CHUNK)
        for k in range(NUM_OBJECTS):
            dx = columns - centers[chunk, k, 0, None, None]
            dy = rows - centers[chunk, k, 1, None, None]
            square = (np.abs(dx) <= OBJECT_HALF_SIZE) & (np.abs(dy) <= OBJECT_HALF_SIZE)
            disc = dx**2 + dy**2 <= _DISC_SQUARED_RADIUS
            mask = np.where(shapes[chunk, k, None, None] == RECTANGLE, square, disc)
            for channel in range(3):
                images[chunk, channel][mask] = COLORS_RGB[k, channel]
    return images


def draw_questions(
    rng: np.random.Generator,
    num_images: int,
    questions_per_type: int = 10,
    include_ternary: bool = True,
    official_quirks: bool = False,
) -> dict[str, np.ndarray]:
    """Draws the questions of ``num_images`` images (``M`` in all), image by image, type by type.

    Returns int64 ``[M]`` arrays: ``"image"`` (index of the image), ``"type"``, ``"subtype"``,
    ``"color"`` (first object) and ``"second_color"`` (ternary; -1 otherwise).
    """
    types = range(3 if include_ternary else 2)
    per_image = questions_per_type * len(types)
    count = num_images * per_image
    image = np.repeat(np.arange(num_images), per_image)
    question_type = np.tile(np.repeat(np.array(list(types)), questions_per_type), num_images)
    subtype = rng.integers(3, size=count)
    ternary = question_type == 2
    num_colors = _QUIRK_TERNARY_COLORS if official_quirks else NUM_OBJECTS
    color = np.where(
        ternary, rng.integers(num_colors, size=count), rng.integers(NUM_OBJECTS, size=count)
    )
    second_color = np.where(
        ternary, (color + rng.integers(1, num_colors, size=count)) % num_colors, -1
    )
    return {
        "image": image,
        "type": question_type,
        "subtype": subtype,
        "color": color,
        "second_color": second_color,
    }


def _count_obtuse_exact(first: np.ndarray, second: np.ndarray, third: np.ndarray) -> np.ndarray:
    """Whether the triangle of integer points (``[..., 2]`` each) is non-degenerate with an angle
    of at least 90 degrees."""

    def dot(u: np.ndarray, v: np.ndarray) -> np.ndarray:
        return (u * v).sum(-1)

    at_first = dot(second - first, third - first)
    at_second = dot(first - second, third - second)
    at_third = dot(first - third, second - third)
    u, v = second - first, third - first
    collinear = u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0] == 0
    return (np.minimum(np.minimum(at_first, at_second), at_third) <= 0) & ~collinear


def _count_obtuse_official(first: np.ndarray, second: np.ndarray, third: np.ndarray) -> np.ndarray:
    """The official floating-point test: law-of-cosines angles in degrees, Python ``max``
    semantics with NaN, counted when the largest is in ``[90, 180)``."""

    def norm(u: np.ndarray) -> np.ndarray:
        return np.sqrt((u**2).sum(-1).astype(np.float64))

    a, b, c = norm(second - third), norm(third - first), norm(first - second)
    with np.errstate(invalid="ignore", divide="ignore"):
        alpha = np.rad2deg(np.arccos((b**2 + c**2 - a**2) / (2 * b * c)))
        beta = np.rad2deg(np.arccos((a**2 + c**2 - b**2) / (2 * a * c)))
        gamma = np.rad2deg(np.arccos((a**2 + b**2 - c**2) / (2 * a * b)))
    largest = np.where(beta > alpha, beta, alpha)
    largest = np.where(gamma > largest, gamma, largest)
    return (largest >= 90) & (largest < 180)


def answer_questions(
    centers: np.ndarray,
    shapes: np.ndarray,
    questions: dict[str, np.ndarray],
    official_quirks: bool = False,
) -> np.ndarray:
    """Answer classes (int64 ``[M]``, :data:`ANSWERS`) of ``questions`` (:func:`draw_questions`)
    about the scenes ``centers`` ``[N, 6, 2]`` and ``shapes`` ``[N, 6]`` (module docstring)."""
    image, question_type, subtype = questions["image"], questions["type"], questions["subtype"]
    color, second_color = questions["color"], questions["second_color"]
    scene_centers = centers[image]  # [M, 6, 2]
    scene_shapes = shapes[image]  # [M, 6]
    rows = np.arange(len(image))
    first = scene_centers[rows, color]  # [M, 2]
    first_shape = scene_shapes[rows, color]

    left = np.where(first[:, 0] < _HALF_IMAGE, YES, NO)
    top = np.where(first[:, 1] < _HALF_IMAGE, YES, NO)
    unary = np.choose(subtype, [2 + first_shape, left, top])

    squared = ((scene_centers - first[:, None, :]) ** 2).sum(-1).astype(np.float64)  # [M, 6]
    self_distance = _QUIRK_SELF_SQUARED_DISTANCE if official_quirks else np.inf
    without_self = np.where(np.arange(NUM_OBJECTS) == color[:, None], self_distance, squared)
    closest = 2 + scene_shapes[rows, without_self.argmin(axis=1)]
    furthest = 2 + scene_shapes[rows, squared.argmax(axis=1)]
    same_shape = 3 + (scene_shapes == first_shape[:, None]).sum(axis=1)
    binary = np.choose(subtype, [closest, furthest, same_shape])

    second = scene_centers[rows, np.maximum(second_color, 0)]  # [M, 2]
    objects = np.arange(NUM_OBJECTS)
    others = (objects != color[:, None]) & (objects != second_color[:, None])  # [M, 6]
    low, high = np.minimum(first, second)[:, None, :], np.maximum(first, second)[:, None, :]
    in_box = ((scene_centers >= low) & (scene_centers <= high)).all(axis=-1)
    between = 4 + (in_box & others).sum(axis=1)
    slope = (second[:, 1] - first[:, 1]) / ((second[:, 0] - first[:, 0]) + _BAND_EPSILON)
    intercept = first[:, 1] - slope * first[:, 0]
    line_y = slope[:, None] * scene_centers[..., 0] + intercept[:, None]
    object_y = scene_centers[..., 1]
    on_band = (line_y - _BAND_HALF_WIDTH <= object_y) & (object_y <= line_y + _BAND_HALF_WIDTH)
    band = np.where((on_band & others).any(axis=1), YES, NO)
    obtuse_test = _count_obtuse_official if official_quirks else _count_obtuse_exact
    obtuse = obtuse_test(first[:, None, :], second[:, None, :], scene_centers)
    obtuse = 4 + (obtuse & others).sum(axis=1)
    ternary = np.choose(subtype, [between, band, obtuse])

    return np.choose(question_type, [unary, binary, ternary]).astype(np.int64)


def encode_questions(questions: dict[str, np.ndarray]) -> np.ndarray:
    """The official 18-float encoding (module docstring) of ``questions``, float32 ``[M, 18]``."""
    count = len(questions["type"])
    rows = np.arange(count)
    encoded = np.zeros((count, QUESTION_DIM), dtype=np.float32)
    encoded[rows, questions["color"]] = 1
    ternary = questions["second_color"] >= 0
    encoded[rows[ternary], _SECOND_COLOR_OFFSET + questions["second_color"][ternary]] = 1
    encoded[rows, _TYPE_OFFSET + questions["type"]] = 1
    encoded[rows, _SUBTYPE_OFFSET + questions["subtype"]] = 1
    return encoded


def generate_sort_of_clevr(
    rng: np.random.Generator,
    num_images: int,
    questions_per_type: int = 10,
    include_ternary: bool = True,
    official_quirks: bool = False,
) -> dict[str, np.ndarray]:
    """Scenes, images, questions and answers of one split.

    Returns: ``"images"`` uint8 ``[N, 3, 75, 75]``, ``"centers"`` int64 ``[N, 6, 2]``,
    ``"shapes"`` int64 ``[N, 6]``, and int64 ``[M]`` arrays ``"question_image"``,
    ``"question_type"``, ``"question_subtype"``, ``"question_color"``,
    ``"question_second_color"`` and ``"answer"``.
    """
    centers, shapes = generate_scenes(rng, num_images)
    questions = draw_questions(
        rng, num_images, questions_per_type, include_ternary, official_quirks
    )
    answers = answer_questions(centers, shapes, questions, official_quirks)
    return {
        "images": render_scenes(centers, shapes),
        "centers": centers,
        "shapes": shapes,
        "question_image": questions["image"],
        "question_type": questions["type"],
        "question_subtype": questions["subtype"],
        "question_color": questions["color"],
        "question_second_color": questions["second_color"],
        "answer": answers,
    }


class SortOfCLEVRDataset(Dataset):
    """The questions of one split, each with its image and scene (see
    :class:`SortOfCLEVRDataModule` for the keys of an item)."""

    def __init__(self, split: dict[str, np.ndarray]) -> None:
        self.images = torch.from_numpy(np.ascontiguousarray(split["images"]))
        self.centers = torch.from_numpy(split["centers"].astype(np.int64))
        self.shapes = torch.from_numpy(split["shapes"].astype(np.int64))
        self.question_image = torch.from_numpy(split["question_image"].astype(np.int64))
        self.question_type = torch.from_numpy(split["question_type"].astype(np.int64))
        self.question_subtype = torch.from_numpy(split["question_subtype"].astype(np.int64))
        self.questions = torch.from_numpy(
            encode_questions(
                {
                    "type": split["question_type"],
                    "subtype": split["question_subtype"],
                    "color": split["question_color"],
                    "second_color": split["question_second_color"],
                }
            )
        )
        self.answers = torch.from_numpy(split["answer"].astype(np.int64))

    def __len__(self) -> int:
        return len(self.answers)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        image = self.question_image[index]
        return {
            "image": self.images[image].float() / 255.0,
            "question": self.questions[index],
            "target": self.answers[index],
            "relational": self.question_type[index] > 0,
            "question_type": self.question_type[index],
            "question_subtype": self.question_subtype[index],
            "object_centers": self.centers[image],
            "object_shapes": self.shapes[image],
        }


class SortOfCLEVRDataModule(L.LightningDataModule):
    """Sort-of-CLEVR questions with their images (module docstring).

    Batches (dicts; ``B`` questions):

    - ``"image"``: float32 ``[B, 3, 75, 75]`` RGB in ``[0, 1]``, rows top to bottom.
    - ``"question"``: float32 ``[B, 18]``, the official encoding.
    - ``"target"``: int64 ``[B]``, the answer class (:data:`ANSWERS`).
    - ``"relational"``: bool ``[B]``, binary or ternary question.
    - ``"question_type"`` / ``"question_subtype"``: int64 ``[B]`` (:data:`QUESTION_TYPES`,
      :data:`QUESTION_SUBTYPES`), for per-type accuracy.
    - ``"object_centers"``: int64 ``[B, 6, 2]`` ``(x, y)`` centres, ``"object_shapes"``: int64
      ``[B, 6]`` (0 rectangle, 1 circle): the scene, object ``k`` of colour ``k``.

    Data: split ``s`` is generated with ``numpy.random.default_rng([seed, s])`` (0 train, 1 val,
    2 test). With ``data_dir``, :meth:`prepare_data` writes the three splits once to a compressed
    ``.npz`` under ``data_dir/sort_of_clevr/`` (its name holds every generation argument) and
    :meth:`setup` reads it; without, :meth:`setup` generates them in memory (about 3 s for the
    official sizes on one CPU core; the cache file is about 3 MB). Training questions are shuffled
    with a ``torch.Generator`` seeded by ``seed``.

    Attributes (after construction): ``num_classes`` (10), ``question_dim`` (18), ``image_size``
    (75), ``answers`` (:data:`ANSWERS`).

    Args:
        data_dir: folder of the cache file (config: ``${paths.data_dir}``); None: in memory.
        train_images, val_images, test_images: images per split (official: 9,800 / 200 / 200).
        questions_per_type: questions of each type per image (official: 10).
        include_ternary: ask ternary questions too (the official generator and training do).
        official_quirks: reproduce the official generator's oddities (module docstring).
        batch_size: questions per batch (official: 64).
        num_workers: DataLoader worker processes.
        seed: seed of the data and of the training shuffle.
        num_classes, question_dim, image_size: the values as the config declares them (models
            interpolate ``${data.num_classes}`` and so on); checked. None: not checked.
    """

    def __init__(
        self,
        data_dir: str | Path | None = None,
        train_images: int = 9800,
        val_images: int = 200,
        test_images: int = 200,
        questions_per_type: int = 10,
        include_ternary: bool = True,
        official_quirks: bool = False,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        num_classes: int | None = None,
        question_dim: int | None = None,
        image_size: int | None = None,
    ) -> None:
        super().__init__()
        owner = "SortOfCLEVRDataModule"
        for name, value in (
            ("train_images", train_images),
            ("val_images", val_images),
            ("test_images", test_images),
            ("questions_per_type", questions_per_type),
        ):
            check_positive_int(owner, name, value)
        check_loader_args(owner, batch_size, num_workers, seed)
        if data_dir is not None:
            data_dir = str(data_dir)  # a Path in the hyperparameters would not load with weights_only=True
        self.save_hyperparameters()
        self.data_dir = data_dir
        self.num_images = {"train": train_images, "val": val_images, "test": test_images}
        self.questions_per_type = questions_per_type
        self.include_ternary = include_ternary
        self.official_quirks = official_quirks
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.num_classes = len(ANSWERS)
        self.question_dim = QUESTION_DIM
        self.image_size = IMAGE_SIZE
        self.answers = ANSWERS
        for name, declared in (
            ("num_classes", num_classes),
            ("question_dim", question_dim),
            ("image_size", image_size),
        ):
            if declared is not None and declared != getattr(self, name):
                raise ValueError(
                    f"{owner}: data.{name}={declared} but Sort-of-CLEVR has {name} = "
                    f"{getattr(self, name)}: set data.{name}={getattr(self, name)}"
                )
        self.datasets: dict[str, SortOfCLEVRDataset] = {}

    @property
    def cache_path(self) -> Path | None:
        """The cache file under ``data_dir`` (None without ``data_dir``)."""
        if self.data_dir is None:
            return None
        sizes = "-".join(str(self.num_images[split]) for split in _SPLIT_CODES)
        ternary = "_ternary" if self.include_ternary else ""
        quirks = "_quirks" if self.official_quirks else ""
        name = (
            f"sort_of_clevr_v{_CACHE_VERSION}_seed{self.seed}_images{sizes}"
            f"_q{self.questions_per_type}{ternary}{quirks}.npz"
        )
        return Path(self.data_dir) / "sort_of_clevr" / name

    def _generate(self) -> dict[str, dict[str, np.ndarray]]:
        return {
            split: generate_sort_of_clevr(
                np.random.default_rng([self.seed, code]),
                self.num_images[split],
                self.questions_per_type,
                self.include_ternary,
                self.official_quirks,
            )
            for split, code in _SPLIT_CODES.items()
        }

    def prepare_data(self) -> None:
        """Generates the splits and writes the cache file, when ``data_dir`` is set and the file
        does not exist yet (written to a temporary name, then renamed)."""
        path = self.cache_path
        if path is None or path.exists():
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {
            f"{split}__{key}": value
            for split, data in self._generate().items()
            for key, value in data.items()
        }
        temporary = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        np.savez_compressed(temporary, **arrays)
        os.replace(temporary, path)

    def setup(self, stage: str | None = None) -> None:
        """Reads the cache file (writing it first if missing) or generates in memory (once)."""
        if self.datasets:
            return
        path = self.cache_path
        if path is None:
            splits = self._generate()
        else:
            self.prepare_data()
            stored = load_npz(path, "delete it: it is generated again")
            splits = {split: {} for split in _SPLIT_CODES}
            for key, array in stored.items():
                split, name = key.split("__", 1)
                splits[split][name] = array
        self.datasets = {split: SortOfCLEVRDataset(data) for split, data in splits.items()}

    def train_dataloader(self) -> DataLoader:
        """Shuffled training questions, order seeded by ``seed``."""
        return self._dataloader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation questions in order."""
        return self._dataloader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Test questions in order."""
        return self._dataloader("test", shuffle=False)

    def _dataloader(self, split: str, shuffle: bool) -> DataLoader:
        if not self.datasets:
            self.setup()
        return ResumableDataLoader(
            self.datasets[split],
            batch_size=self.batch_size,
            sampler=EpochShuffleSampler(len(self.datasets[split]), self.seed) if shuffle else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )
