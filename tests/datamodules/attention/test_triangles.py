"""Behaviour of equilateral triangle detection: labels against a brute-force side-length check of
the returned vertices, the official construction of equilateral triangles, rendering, class balance,
seeded determinism, fresh training data per epoch, the Hydra config and errors."""

import math

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from tenfold.datamodules.attention.multitask_images import draw_dots
from tenfold.datamodules.attention.triangles import (
    DEFAULT_TOLERANCE,
    TriangleDataModule,
    equilateral_vertices,
    generate_triangles,
    is_equilateral,
    random_vertices,
    render_clusters,
    side_lengths,
)


def _brute_force_equilateral(points, tolerance):
    (x1, y1), (x2, y2), (x3, y3) = points
    sides = [
        math.dist((x1, y1), (x2, y2)),
        math.dist((x2, y2), (x3, y3)),
        math.dist((x3, y3), (x1, y1)),
    ]
    return max(sides) - min(sides) <= tolerance


def test_labels_agree_with_brute_force_side_check():
    batch = generate_triangles(np.random.default_rng(0), 500)
    points, labels = batch["points"].tolist(), batch["target"].tolist()
    assert all(
        _brute_force_equilateral(p, math.sqrt(2)) == bool(y)
        for p, y in zip(points, labels, strict=True)
    )
    assert sum(labels) == 250
    loose = generate_triangles(np.random.default_rng(1), 300, tolerance=6.0)
    assert all(
        _brute_force_equilateral(p, 6.0) == bool(y)
        for p, y in zip(loose["points"].tolist(), loose["target"].tolist(), strict=True)
    )


def test_side_lengths_and_check_by_hand():
    points = np.array([[[0, 0], [3, 0], [0, 4]], [[0, 0], [2, 0], [1, 2]]])
    np.testing.assert_allclose(side_lengths(points), [[3, 5, 4], [2, math.sqrt(5), math.sqrt(5)]])
    assert is_equilateral(points).tolist() == [False, True]  # spreads 2 and 0.236
    assert is_equilateral(points, tolerance=2.0).tolist() == [True, True]
    assert DEFAULT_TOLERANCE == pytest.approx(1.41421356)


def test_equilateral_triangles_follow_the_official_rotation():
    vertices = equilateral_vertices(np.random.default_rng(2), 300)
    assert vertices.min() >= 1 and vertices.max() <= 63
    angle = 60.0 / 180 * math.pi
    for (x1, y1), (x2, y2), (x3, y3) in vertices.tolist():
        dx, dy = x2 - x1, y2 - y1
        assert x3 == int(x1 + math.cos(angle) * dx + math.sin(angle) * dy)
        assert y3 == int(y1 + math.sin(-angle) * dx + math.cos(angle) * dy)
    sides = side_lengths(vertices)
    assert (sides.max(-1) - sides.min(-1)).max() < math.sqrt(2)
    large = sides.min(-1) > 20
    np.testing.assert_allclose(sides[large] / sides[large].mean(-1, keepdims=True), 1.0, atol=0.05)


def test_official_negatives_may_be_near_equilateral_and_are_redrawn_here():
    official = random_vertices(np.random.default_rng(3), 10000, reject_equilateral_within=None)
    redrawn = random_vertices(np.random.default_rng(3), 10000)
    assert official.min() >= 1 and official.max() <= 63
    assert is_equilateral(official).sum() > 0
    assert is_equilateral(redrawn).sum() == 0
    batch = generate_triangles(np.random.default_rng(4), 10000, reject_near_equilateral=False)
    negatives = batch["points"][batch["target"] == 0].numpy()
    assert is_equilateral(negatives).sum() > 0


def test_rendering_without_jitter_draws_opencv_discs():
    # draw_dots is pinned to cv2.circle(radius=2, thickness=-1) in test_multitask_images: a
    # 13-pixel disc per dot, clipped at the border
    vertices = np.array([[[0, 0], [10, 5], [63, 62]], [[30, 30], [31, 31], [5, 60]]])
    images = render_clusters(np.random.default_rng(0), vertices, image_size=64, cluster_radius=0)
    assert images.shape == (2, 1, 64, 64) and images.dtype == np.float32
    for n in range(2):
        assert np.array_equal(images[n, 0], draw_dots(vertices[n], 64) / 255)
    assert images[0, 0, 3:8, 8:13].sum() == 13  # the disc around (x, y) = (10, 5)


def test_rendered_clusters_surround_their_vertices():
    batch = generate_triangles(np.random.default_rng(5), 64)
    images, points = batch["image"][:, 0], batch["points"]
    assert set(torch.unique(images).tolist()) == {0.0, 1.0}
    rows, columns = torch.meshgrid(torch.arange(64), torch.arange(64), indexing="ij")
    for image, vertices in zip(images, points, strict=True):
        assert all(image[y, x] == 1.0 for x, y in vertices.tolist())
        chebyshev = torch.stack(
            [torch.maximum((columns - x).abs(), (rows - y).abs()) for x, y in vertices.tolist()]
        ).amin(0)
        assert image[chebyshev > 3].sum() == 0  # offsets up to 1, discs of radius 2


def test_batches_are_balanced():
    dm = TriangleDataModule(train_size=7 * 33, batch_size=33, val_size=64, test_size=64)
    counts = [int(batch["target"].sum()) for batch in dm.train_dataloader()]
    assert all(count in (16, 17) for count in counts) and len(set(counts)) == 2
    assert all(int(batch["target"].sum()) in (16, 17) for batch in dm.val_dataloader())
    assert int(generate_triangles(np.random.default_rng(0), 64)["target"].sum()) == 32


def test_batch_shapes_and_attributes():
    dm = TriangleDataModule(train_size=100, val_size=40, test_size=30, batch_size=32)
    assert (dm.num_classes, dm.image_size, dm.in_channels) == (2, 64, 1)
    batches = list(dm.train_dataloader())
    assert [len(b["target"]) for b in batches] == [32, 32, 32, 4]
    batch = batches[0]
    assert batch["image"].shape == (32, 1, 64, 64) and batch["image"].dtype == torch.float32
    assert batch["target"].shape == (32,) and batch["target"].dtype == torch.int64
    assert batch["points"].shape == (32, 3, 2) and batch["points"].dtype == torch.int64
    assert sum(len(b["target"]) for b in dm.test_dataloader()) == 30
    small = TriangleDataModule(image_size=16, train_size=8, batch_size=8)
    assert next(iter(small.train_dataloader()))["image"].shape == (8, 1, 16, 16)


def test_validation_and_test_sets_are_different_draws():
    dm = TriangleDataModule(train_size=64, val_size=64, test_size=64, batch_size=32)
    val, test = next(iter(dm.val_dataloader())), next(iter(dm.test_dataloader()))
    assert not torch.equal(val["points"], test["points"])


def test_seeded_determinism_and_fresh_training_epochs():
    def make(seed: int) -> TriangleDataModule:
        return TriangleDataModule(
            train_size=64, val_size=64, test_size=64, batch_size=32, seed=seed
        )

    first, again, other = make(0), make(0), make(1)
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        a, b = next(iter(getattr(first, loader)())), next(iter(getattr(again, loader)()))
        assert all(torch.equal(a[key], b[key]) for key in a)
        assert not torch.equal(a["points"], next(iter(getattr(other, loader)()))["points"])
    train = first.train_dataloader()
    epoch0 = next(iter(train))["points"]
    train.sampler.set_epoch(1)
    assert not torch.equal(epoch0, next(iter(train))["points"])
    val = first.val_dataloader()
    assert torch.equal(next(iter(val))["points"], next(iter(val))["points"])


def test_hydra_config_builds_the_paper_setting(compose_cfg, tmp_path):
    cfg = compose_cfg(["data=attention/triangles", "data.train_size=64"], tmp_path)
    dm = instantiate(cfg.data)
    assert isinstance(dm, TriangleDataModule)
    assert dm.sizes == {"train": 64, "val": 10000, "test": 10000} and dm.batch_size == 64
    assert dm.task["tolerance"] == DEFAULT_TOLERANCE and dm.task["points_per_cluster"] == 8
    assert next(iter(dm.train_dataloader()))["image"].shape == (64, 1, 64, 64)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 3}, "data.num_classes=3 but the task has num_classes = 2"),
        ({"in_channels": 3}, "set data.in_channels=1"),
        ({"points_per_cluster": 7}, "points_per_cluster must be even"),
        ({"cluster_radius": -1}, "cluster_radius must be an int >= 0"),
        ({"image_size": 2}, "image_size must exceed 2 \\* cluster_radius"),
        ({"tolerance": -0.5}, "tolerance must be a number > 0"),
        ({"tolerance": 0.0}, "at 0 only triangles whose vertices coincide"),
        ({"tolerance": "x"}, "tolerance must be a number > 0 .*got 'x'"),
        ({"batch_size": 0}, "batch_size must be a positive int"),
    ],
)
def test_wrong_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TriangleDataModule(**kwargs)


def test_clusters_are_point_symmetric_about_their_vertex():
    # 4 random offsets and their mirror images through the vertex, and a symmetric dot stencil:
    # every cluster image is unchanged by the point reflection through its vertex
    vertices = np.full((5, 3, 2), 32, dtype=np.int64)
    images = render_clusters(np.random.default_rng(0), vertices, cluster_radius=3)[:, 0]
    window = images[:, 26:39, 26:39]  # centred on (32, 32)
    assert window.sum() > 0
    np.testing.assert_array_equal(window, window[:, ::-1, ::-1])


def test_batch_labels_are_balanced_in_random_order():
    targets = generate_triangles(np.random.default_rng(3), 64)["target"]
    assert int(targets.sum()) == 32
    alternating = torch.arange(64) % 2
    assert not torch.equal(targets, alternating) and not torch.equal(targets, 1 - alternating)


def test_vertices_cover_the_official_range_inclusive():
    # [r, 64 - r] with r = 1, both ends included (the official randint): over 3,000 vertices per
    # coordinate each end appears (probability of missing one: (62/63)^3000 < 1e-20)
    for vertices in (random_vertices(np.random.default_rng(5), 1000), equilateral_vertices(np.random.default_rng(6), 1000)):
        assert vertices.min() == 1 and vertices.max() == 63


@pytest.mark.parametrize(
    ("kwargs", "kind"),
    [({"image_size": 3, "cluster_radius": 1}, "(non-)?equilateral"), ({"tolerance": 200.0}, "non-equilateral")],
)
def test_impossible_triangles_stop_with_the_fix_instead_of_redrawing_forever(kwargs: dict, kind: str) -> None:
    """At image_size 3 (vertices in 1..2) every triangle is within the tolerance, so no negative
    is ever accepted; at tolerance 200 neither is one in a 64-pixel image."""
    dm = TriangleDataModule(train_size=4, val_size=4, test_size=4, batch_size=4, **kwargs)
    dm.setup("fit")
    with pytest.raises(ValueError, match=f"could not draw {kind} triangles in 1000 rounds .*use a larger image_size"):
        next(iter(dm.train_dataloader()))
