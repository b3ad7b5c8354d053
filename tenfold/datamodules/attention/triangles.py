"""Equilateral triangle detection, an image classification task of Compositional Attention
(Mittal et al., ICLR 2022, arXiv 2110.09419, Sec. 4), generated as the official
``Equilateral-Detection/dataset.py`` of github sarthmit/Compositional-Attention.

An image (64 x 64, one channel, black background) shows three clusters of dots; the label says
whether the cluster centres (the vertices) form an equilateral triangle. Facts of the official
generator, kept here:

- Vertices are integer pixels ``(x, y)`` (``x`` the column, ``y`` the row) in
  ``[r, 64 - r]`` with the cluster radius ``r = 1``.
- Equilateral: ``p1``, ``p2`` uniform; ``p3`` is ``p2`` rotated by 60 degrees about ``p1``
  (``x3 = x1 + cos(a) dx + sin(a) dy``, ``y3 = y1 - sin(a) dx + cos(a) dy``, ``a = pi / 3``,
  ``(dx, dy) = p2 - p1``), truncated to integers; drawn again until ``p3`` is in range.
  Truncation moves ``p3`` by less than ``sqrt(2)``; over every ``(p1, p2)`` of the 64 x 64 grid
  the spread of the side lengths (largest minus smallest) stays below ``sqrt(2)`` (largest:
  1.4056, checked exhaustively). ``p1 = p2`` (1 in 3,969) gives three coinciding vertices.
- Not equilateral: three uniform vertices.
- Each vertex becomes a cluster of 8 dots: 4 offsets uniform in ``{-r, ..., r}^2`` and their
  mirror images through the vertex; each dot a filled disc of radius 2, clipped to the image:
  the 13 pixels with ``dx^2 + dy^2 <= 4``, OpenCV's raster of ``cv2.circle(radius=2, thickness=-1)``
  that the official code draws (the same dots as :func:`~tenfold.datamodules.attention.multitask_images.draw_dots`).
- Official sizes: 50,000 training and 10,000 test images per epoch, drawn anew at every read
  (``TriangleDataset``: Python ``random`` in each ``__getitem__``), batch size 64, 200 epochs
  (``run.sh``).

Differences, each deliberate:

- Labels: here ``1`` = equilateral. The official label is the branch index ``n`` with ``n = 0``
  drawing the equilateral triangle, i.e. ``0`` = equilateral (its BCE loss and accuracy are
  symmetric in the two classes).
- Balance: each batch holds ``floor(B / 2)`` or ``ceil(B / 2)`` equilateral images in random
  order; the official draws each label with probability 1/2.
- Label noise: three uniform vertices form a near-equilateral triangle now and then, and the
  official code labels it "not equilateral". Here (``reject_near_equilateral=True``) such negatives
  are drawn again (0.2% of them at the defaults), so that the label is exactly
  :func:`is_equilateral` of ``"points"``: largest minus smallest side at most ``tolerance``
  (default ``sqrt(2)``, above the spread of every official equilateral triangle; positives beyond
  ``tolerance``, possible with other sizes or tolerances, are drawn again too). ``False`` keeps the
  official negatives.
- Pixel values are ``0`` / ``1``; the official images hold ``0`` / ``255`` (its model does not
  rescale them).
- Validation and test are fixed seeded sets; training images are drawn anew every epoch.
"""

from __future__ import annotations

import math
from functools import partial

import numpy as np
import torch
from torch import Tensor

from tenfold.datamodules.attention.generated import (
    GeneratedBatches,
    GeneratedTaskDataModule,
    check_loader_args,
    check_positive_int,
)
from tenfold.datamodules.attention.multitask_images import DOT_RADIUS

__all__ = [
    "DEFAULT_TOLERANCE",
    "TriangleDataModule",
    "equilateral_vertices",
    "generate_triangles",
    "is_equilateral",
    "random_vertices",
    "render_clusters",
    "side_lengths",
]

DEFAULT_TOLERANCE = math.sqrt(2)
"""Largest spread (max minus min) of the side lengths of an "equilateral" triangle: the most that
truncating the third vertex may move it, above the spread of every official equilateral triangle
on the 64 x 64 grid (1.4056)."""
_ROTATION = 60.0 / 180 * math.pi
_COS, _SIN = math.cos(_ROTATION), math.sin(_ROTATION)
_SPLIT_CODES = {"train": 0, "val": 1, "test": 2}


def side_lengths(points: np.ndarray) -> np.ndarray:
    """Side lengths ``[..., 3]`` of triangles ``points`` ``[..., 3, 2]``: ``|p1 p2|``,
    ``|p2 p3|``, ``|p3 p1|``."""
    points = np.asarray(points, dtype=np.float64)
    return np.linalg.norm(points - np.roll(points, -1, axis=-2), axis=-1)


def is_equilateral(points: np.ndarray, tolerance: float = DEFAULT_TOLERANCE) -> np.ndarray:
    """Whether the largest minus the smallest side is at most ``tolerance``; bool ``[...]``."""
    sides = side_lengths(points)
    return sides.max(axis=-1) - sides.min(axis=-1) <= tolerance


def _uniform_vertex(
    rng: np.random.Generator, count: int, image_size: int, cluster_radius: int
) -> np.ndarray:
    return rng.integers(cluster_radius, image_size - cluster_radius + 1, size=(count, 2))


# Redraw rounds after which the rejection samplers give up: at the defaults a round accepts most
# draws; a size or tolerance that makes the wanted triangles (nearly) impossible would loop forever
_MAX_DRAW_ROUNDS = 1000


def _too_rare(kind: str, image_size: int, tolerance: float) -> ValueError:
    """The error of a rejection sampler that ran out of rounds, with the fix."""
    return ValueError(
        f"could not draw {kind} triangles in {_MAX_DRAW_ROUNDS} rounds of redraws at image_size={image_size}, "
        f"tolerance={tolerance}: they are (nearly) impossible there; use a larger image_size (the paper: 64) "
        f"or a tolerance nearer the default {DEFAULT_TOLERANCE:.3f}"
    )


def equilateral_vertices(
    rng: np.random.Generator,
    count: int,
    image_size: int = 64,
    cluster_radius: int = 1,
    tolerance: float = DEFAULT_TOLERANCE,
) -> np.ndarray:
    """``count`` official equilateral triangles (module docstring), int64 ``[count, 3, 2]``;
    those with a side spread above ``tolerance`` (none at the defaults) are drawn again."""
    vertices = np.zeros((count, 3, 2), dtype=np.int64)
    pending = np.arange(count)
    for _ in range(_MAX_DRAW_ROUNDS):
        if not pending.size:
            return vertices
        first = _uniform_vertex(rng, pending.size, image_size, cluster_radius)
        second = _uniform_vertex(rng, pending.size, image_size, cluster_radius)
        dx, dy = second[:, 0] - first[:, 0], second[:, 1] - first[:, 1]
        third_x = np.trunc(first[:, 0] + _COS * dx + _SIN * dy)
        third_y = np.trunc(first[:, 1] - _SIN * dx + _COS * dy)
        third = np.stack([third_x, third_y], axis=-1).astype(np.int64)
        drawn = np.stack([first, second, third], axis=1)
        inside = ((third >= cluster_radius) & (third <= image_size - cluster_radius)).all(axis=-1)
        accepted = inside & is_equilateral(drawn, tolerance)
        vertices[pending[accepted]] = drawn[accepted]
        pending = pending[~accepted]
    if pending.size:
        raise _too_rare("equilateral", image_size, tolerance)
    return vertices


def random_vertices(
    rng: np.random.Generator,
    count: int,
    image_size: int = 64,
    cluster_radius: int = 1,
    reject_equilateral_within: float | None = DEFAULT_TOLERANCE,
) -> np.ndarray:
    """``count`` triangles of three uniform vertices, int64 ``[count, 3, 2]``; with
    ``reject_equilateral_within`` those that :func:`is_equilateral` accepts at that tolerance are
    drawn again."""
    vertices = np.zeros((count, 3, 2), dtype=np.int64)
    pending = np.arange(count)
    for _ in range(_MAX_DRAW_ROUNDS):
        if not pending.size:
            return vertices
        drawn = _uniform_vertex(rng, 3 * pending.size, image_size, cluster_radius).reshape(-1, 3, 2)
        if reject_equilateral_within is None:
            accepted = np.ones(pending.size, dtype=bool)
        else:
            accepted = ~is_equilateral(drawn, reject_equilateral_within)
        vertices[pending[accepted]] = drawn[accepted]
        pending = pending[~accepted]
    if pending.size:
        raise _too_rare("non-equilateral", image_size, float(reject_equilateral_within or 0.0))
    return vertices


def render_clusters(
    rng: np.random.Generator,
    vertices: np.ndarray,
    image_size: int = 64,
    points_per_cluster: int = 8,
    cluster_radius: int = 1,
) -> np.ndarray:
    """Images of the clusters around ``vertices`` ``[N, K, 2]`` (module docstring): float32
    ``[N, 1, image_size, image_size]`` with dots 1 on 0."""
    count, num_vertices, _ = vertices.shape
    pairs = points_per_cluster // 2
    offsets = rng.integers(
        -cluster_radius, cluster_radius + 1, size=(count, num_vertices, pairs, 2)
    )
    offsets = np.concatenate([offsets, -offsets], axis=2)  # the mirror images through the vertex
    dots = (vertices[:, :, None, :] + offsets).reshape(count, -1, 2)  # [N, K * points, 2]
    span = np.arange(-DOT_RADIUS, DOT_RADIUS + 1)
    stencil = np.array([(dx, dy) for dx in span for dy in span if dx * dx + dy * dy <= DOT_RADIUS**2])
    pixels = (dots[:, :, None, :] + stencil).reshape(count, -1, 2)
    inside = ((pixels >= 0) & (pixels < image_size)).all(axis=-1)
    image_index = np.broadcast_to(np.arange(count)[:, None], inside.shape)[inside]
    flat = pixels[..., 1] * image_size + pixels[..., 0]
    images = np.zeros((count, image_size * image_size), dtype=np.float32)
    images[image_index, flat[inside]] = 1.0
    return images.reshape(count, 1, image_size, image_size)


def generate_triangles(
    rng: np.random.Generator,
    count: int,
    image_size: int = 64,
    points_per_cluster: int = 8,
    cluster_radius: int = 1,
    tolerance: float = DEFAULT_TOLERANCE,
    reject_near_equilateral: bool = True,
) -> dict[str, Tensor]:
    """One batch: ``"image"`` float32 ``[count, 1, S, S]``, ``"target"`` int64 ``[count]``
    (1 = equilateral; ``floor(count / 2)`` or ``ceil(count / 2)`` of them, in random order),
    ``"points"`` int64 ``[count, 3, 2]`` (the vertices, ``(x, y)``)."""
    labels = rng.permutation((np.arange(count) + rng.integers(2)) % 2)
    positive = labels == 1
    vertices = np.zeros((count, 3, 2), dtype=np.int64)
    vertices[positive] = equilateral_vertices(
        rng, int(positive.sum()), image_size, cluster_radius, tolerance
    )
    vertices[~positive] = random_vertices(
        rng,
        int((~positive).sum()),
        image_size,
        cluster_radius,
        reject_equilateral_within=tolerance if reject_near_equilateral else None,
    )
    images = render_clusters(rng, vertices, image_size, points_per_cluster, cluster_radius)
    return {
        "image": torch.from_numpy(images),
        "target": torch.from_numpy(labels.astype(np.int64)),
        "points": torch.from_numpy(vertices),
    }


def _triangle_batch(rng: np.random.Generator, size: int, **task: object) -> dict[str, Tensor]:
    return generate_triangles(rng, size, **task)  # type: ignore[arg-type]


class TriangleDataModule(GeneratedTaskDataModule):
    """Equilateral triangle detection (module docstring), generated on the fly.

    Batches (dicts; ``B`` images, ``S = image_size``):

    - ``"image"``: float32 ``[B, 1, S, S]``, dots 1 on 0.
    - ``"target"``: int64 ``[B]``, 1 if the vertices form an equilateral triangle (balanced: half
      of each batch, rounded either way).
    - ``"points"``: int64 ``[B, 3, 2]``, the vertices ``(x, y)`` (column, row).

    Training images are drawn anew every epoch (the official dataset draws at every read);
    validation and test are fixed sets. Batch ``k`` of a split comes from
    ``numpy.random.default_rng([seed, split code, epoch, k])``.

    Attributes (after construction): ``num_classes`` (2), ``image_size``, ``in_channels`` (1).

    Args:
        image_size: image height and width (official: 64).
        points_per_cluster: dots per vertex (official: 8; even).
        cluster_radius: largest dot offset from its vertex, per axis (official: 1).
        tolerance: the spread of side lengths up to which a triangle counts as equilateral.
        reject_near_equilateral: redraw negatives within ``tolerance`` (False: the official
            negatives, which may be near-equilateral).
        train_size: training images per epoch (official: 50,000).
        val_size, test_size: images of the fixed validation and test sets (official test: 10,000).
        batch_size: images per batch (official: 64).
        num_workers: DataLoader worker processes.
        seed: seed of all data.
        num_classes, in_channels: the values as the config declares them (checked; None: not
            checked).
    """

    def __init__(
        self,
        image_size: int = 64,
        points_per_cluster: int = 8,
        cluster_radius: int = 1,
        tolerance: float = DEFAULT_TOLERANCE,
        reject_near_equilateral: bool = True,
        train_size: int = 50_000,
        val_size: int = 10_000,
        test_size: int = 10_000,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
        num_classes: int | None = None,
        in_channels: int | None = None,
    ) -> None:
        super().__init__()
        owner = "TriangleDataModule"
        for name, value in (
            ("image_size", image_size),
            ("points_per_cluster", points_per_cluster),
            ("train_size", train_size),
            ("val_size", val_size),
            ("test_size", test_size),
        ):
            check_positive_int(owner, name, value)
        if points_per_cluster % 2:
            raise ValueError(
                f"{owner}: points_per_cluster must be even (dots come in mirrored pairs), "
                f"got {points_per_cluster}"
            )
        if (
            isinstance(cluster_radius, bool)
            or not isinstance(cluster_radius, int)
            or cluster_radius < 0
        ):
            raise ValueError(f"{owner}: cluster_radius must be an int >= 0, got {cluster_radius!r}")
        if image_size <= 2 * cluster_radius:
            raise ValueError(
                f"{owner}: image_size must exceed 2 * cluster_radius, got {image_size} and "
                f"{cluster_radius}"
            )
        if not isinstance(tolerance, (int, float)) or isinstance(tolerance, bool) or not tolerance > 0:
            raise ValueError(
                f"{owner}: tolerance must be a number > 0 (at 0 only triangles whose vertices coincide count "
                f"as equilateral), got {tolerance!r}"
            )
        check_loader_args(owner, batch_size, num_workers, seed)
        self.save_hyperparameters()
        self.image_size = image_size
        self.num_classes = 2
        self.in_channels = 1
        for name, declared in (("num_classes", num_classes), ("in_channels", in_channels)):
            if declared is not None and declared != getattr(self, name):
                raise ValueError(
                    f"{owner}: data.{name}={declared} but the task has {name} = "
                    f"{getattr(self, name)}: set data.{name}={getattr(self, name)}"
                )
        self.task = {
            "image_size": image_size,
            "points_per_cluster": points_per_cluster,
            "cluster_radius": cluster_radius,
            "tolerance": float(tolerance),
            "reject_near_equilateral": reject_near_equilateral,
        }
        self.sizes = {"train": train_size, "val": val_size, "test": test_size}
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.datasets: dict[str, GeneratedBatches] = {}

    def setup(self, stage: str | None = None) -> None:
        """Builds the three generated splits (nothing is drawn until a batch is read)."""
        if self.datasets:
            return
        make_batch = partial(_triangle_batch, **self.task)
        self.datasets = {
            split: GeneratedBatches(
                make_batch, size, self.batch_size, (self.seed, _SPLIT_CODES[split])
            )
            for split, size in self.sizes.items()
        }
