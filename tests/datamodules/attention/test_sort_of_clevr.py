"""Behaviour of Sort-of-CLEVR: answers of every question type against a brute-force recomputation
from the scene and against a hand-made scene, the official oddities, rendering, the question
encoding, balance of what the generator draws uniformly, determinism, the cache file, batches and
errors."""

import math

import numpy as np
import pytest
import torch
from hydra.utils import instantiate

from tenfold.datamodules.attention.sort_of_clevr import (
    ANSWERS,
    COLORS_RGB,
    SortOfCLEVRDataModule,
    answer_questions,
    draw_questions,
    encode_questions,
    generate_scenes,
    generate_sort_of_clevr,
    render_scenes,
)

RECTANGLE, CIRCLE = 0, 1


def _brute_force_answer(centers, shapes, question_type, subtype, color, second_color, quirks):
    """One answer from the scene with plain Python, following the definitions (module docstring);
    ``quirks`` follows the official generator's code."""
    objects = [(int(x), int(y)) for x, y in centers]
    shape = [int(s) for s in shapes]
    ax, ay = objects[color]
    if question_type == 0:
        if subtype == 0:
            return 2 + shape[color]
        coordinate = ax if subtype == 1 else ay
        return 0 if coordinate < 37.5 else 1
    if question_type == 1:
        squared = [(x - ax) ** 2 + (y - ay) ** 2 for x, y in objects]
        if subtype == 0:
            candidates = [
                (999 if quirks else math.inf) if k == color else d for k, d in enumerate(squared)
            ]
            return 2 + shape[candidates.index(min(candidates))]
        if subtype == 1:
            return 2 + shape[squared.index(max(squared))]
        return 3 + sum(s == shape[color] for s in shape)
    bx, by = objects[second_color]
    others = [objects[k] for k in range(6) if k not in (color, second_color)]
    if subtype == 0:
        inside = [
            min(ax, bx) <= x <= max(ax, bx) and min(ay, by) <= y <= max(ay, by) for x, y in others
        ]
        return 4 + sum(inside)
    if subtype == 1:
        slope = (by - ay) / ((bx - ax) + 1e-10)
        intercept = ay - slope * ax
        near = [slope * x + intercept - 12 <= y <= slope * x + intercept + 12 for x, y in others]
        return 0 if any(near) else 1
    count = 0
    for cx, cy in others:
        if quirks:
            a = float(np.linalg.norm(np.array([bx - cx, by - cy])))
            b = float(np.linalg.norm(np.array([cx - ax, cy - ay])))
            c = float(np.linalg.norm(np.array([ax - bx, ay - by])))
            with np.errstate(invalid="ignore", divide="ignore"):
                alpha = np.rad2deg(np.arccos((b**2 + c**2 - a**2) / (2 * b * c)))
                beta = np.rad2deg(np.arccos((a**2 + c**2 - b**2) / (2 * a * c)))
                gamma = np.rad2deg(np.arccos((a**2 + b**2 - c**2) / (2 * a * b)))
            largest = max(alpha, beta, gamma)
            count += bool(90 <= largest < 180)
        else:
            sides = sorted(
                [
                    (bx - cx) ** 2 + (by - cy) ** 2,
                    (cx - ax) ** 2 + (cy - ay) ** 2,
                    (ax - bx) ** 2 + (ay - by) ** 2,
                ]
            )
            collinear = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax) == 0
            count += bool(not collinear and sides[2] >= sides[0] + sides[1])
    return 4 + count


@pytest.mark.parametrize("quirks", [False, True])
def test_every_answer_matches_brute_force(quirks):
    data = generate_sort_of_clevr(
        np.random.default_rng(5), 60, questions_per_type=10, official_quirks=quirks
    )
    assert len(data["answer"]) == 60 * 30
    seen = set()
    for q in range(len(data["answer"])):
        image = data["question_image"][q]
        kind, subtype = int(data["question_type"][q]), int(data["question_subtype"][q])
        seen.add((kind, subtype))
        expected = _brute_force_answer(
            data["centers"][image],
            data["shapes"][image],
            kind,
            subtype,
            int(data["question_color"][q]),
            int(data["question_second_color"][q]),
            quirks,
        )
        assert data["answer"][q] == expected, (q, kind, subtype)
    assert seen == {(t, s) for t in range(3) for s in range(3)}


def _hand_scene():
    centers = np.array([[[10, 10], [22, 10], [60, 60], [10, 60], [60, 10], [35, 35]]])
    shapes = np.array([[RECTANGLE, CIRCLE, RECTANGLE, CIRCLE, RECTANGLE, CIRCLE]])
    return centers, shapes


def _ask(questions, quirks=False):
    centers, shapes = _hand_scene()
    arrays = {
        key: np.array([q[i] for q in questions])
        for i, key in enumerate(["type", "subtype", "color", "second_color"])
    }
    arrays["image"] = np.zeros(len(questions), dtype=np.int64)
    return answer_questions(centers, shapes, arrays, official_quirks=quirks).tolist()


def test_answers_of_a_hand_made_scene():
    # red (10,10) rect, green (22,10) circle, blue (60,60) rect, orange (10,60) circle,
    # gray (60,10) rect, yellow (35,35) circle
    questions = [
        (0, 0, 0, -1),  # shape of red: rectangle
        (0, 1, 0, -1),  # red on the left: yes
        (0, 2, 2, -1),  # blue on top: no
        (1, 0, 0, -1),  # shape closest to red: green, circle
        (1, 1, 0, -1),  # shape furthest from red: blue, rectangle
        (1, 2, 0, -1),  # objects shaped like red: red, blue, gray = 3
        (2, 0, 0, 2),  # objects in the red-blue box: green, orange, gray, yellow = 4
        (2, 1, 0, 2),  # yellow lies on the red-blue diagonal: yes
        (2, 1, 0, 1),  # gray lies on the red-green row: yes
        (2, 1, 1, 3),  # nothing near the steep green-orange line: no
        (
            2,
            2,
            0,
            2,
        ),  # red-blue with green (obtuse), orange and gray (right), not yellow (collinear)
    ]
    expected = ["rectangle", "yes", "no", "circle", "rectangle", "3", "yes", "yes", "no"]
    answers = _ask(questions)
    assert [ANSWERS[a] for a in answers[:6]] == expected[:6]
    assert answers[6] == 4 + 4  # ternary counts: class 4 + count
    assert [ANSWERS[a] for a in answers[7:10]] == expected[6:]
    assert answers[10] == 4 + 3


def test_official_closest_marks_itself_with_999():
    # red alone in a corner: every other object is farther than sqrt(999)
    centers = np.array([[[5, 5], [60, 60], [69, 50], [50, 69], [69, 69], [40, 60]]])
    shapes = np.array([[RECTANGLE, CIRCLE, CIRCLE, CIRCLE, CIRCLE, CIRCLE]])
    question = {
        key: np.array([value])
        for key, value in zip(
            ["image", "type", "subtype", "color", "second_color"], [0, 1, 0, 0, -1], strict=True
        )
    }
    assert ANSWERS[answer_questions(centers, shapes, question)[0]] == "circle"
    assert (
        ANSWERS[answer_questions(centers, shapes, question, official_quirks=True)[0]] == "rectangle"
    )


def test_ternary_colours_distinct_and_official_range():
    intent = draw_questions(np.random.default_rng(0), 400, include_ternary=True)
    quirks = draw_questions(
        np.random.default_rng(0), 400, include_ternary=True, official_quirks=True
    )
    for questions, num_colors in ((intent, 6), (quirks, 5)):
        ternary = questions["type"] == 2
        first, second = questions["color"][ternary], questions["second_color"][ternary]
        assert (first != second).all()
        assert set(first) == set(second) == set(range(num_colors))
        assert (questions["second_color"][~ternary] == -1).all()


def test_generator_balances_what_it_draws_uniformly():
    data = generate_sort_of_clevr(np.random.default_rng(1), 600)
    count = len(data["answer"]) // 3  # questions per type
    for kind in range(3):
        of_kind = data["question_type"] == kind
        assert of_kind.sum() == count
        subtypes = np.bincount(data["question_subtype"][of_kind], minlength=3)
        assert np.all(np.abs(subtypes - count / 3) < 4 * math.sqrt(count / 3))
        colours = np.bincount(data["question_color"][of_kind], minlength=6)
        assert np.all(np.abs(colours - count / 6) < 4 * math.sqrt(count / 6))
    shape_answers = data["answer"][(data["question_type"] == 0) & (data["question_subtype"] == 0)]
    rectangles = (shape_answers == 2).sum()
    assert set(np.unique(shape_answers)) == {2, 3}
    assert abs(rectangles - len(shape_answers) / 2) < 4 * math.sqrt(len(shape_answers) / 4)


def test_scenes_keep_objects_apart_inside_the_image():
    centers, shapes = generate_scenes(np.random.default_rng(2), 300)
    assert centers.min() >= 5 and centers.max() <= 69
    squared = ((centers[:, :, None, :] - centers[:, None, :, :]) ** 2).sum(-1)
    off_diagonal = ~np.eye(6, dtype=bool)
    assert squared[:, off_diagonal].min() >= 100
    assert set(np.unique(shapes)) == {RECTANGLE, CIRCLE}


def test_rendering_by_hand():
    centers, shapes = _hand_scene()
    image = render_scenes(centers, shapes)[0]
    assert image.shape == (3, 75, 75) and image.dtype == np.uint8
    for k, (x, y) in enumerate(centers[0]):
        assert image[:, y, x].tolist() == COLORS_RGB[k].tolist()
        colour_pixels = (image == COLORS_RGB[k][:, None, None]).all(axis=0).sum()
        # an 11 x 11 square, or OpenCV's disc of radius 5 (cv2.circle, thickness -1): dx^2 + dy^2 <= 25
        assert colour_pixels == (121 if shapes[0, k] == RECTANGLE else 81)
        corner = image[:, y + 5, x + 5].tolist()
        assert (corner == COLORS_RGB[k].tolist()) == (shapes[0, k] == RECTANGLE)
    assert image[:, 40, 70].tolist() == [255, 255, 255]
    assert COLORS_RGB[3].tolist() == [255, 156, 0] and COLORS_RGB[4].tolist() == [128, 128, 128]


def test_rendering_puts_each_colour_at_its_centre():
    data = generate_sort_of_clevr(np.random.default_rng(3), 50)
    rows = np.arange(50)[:, None]
    for channel in range(3):
        centre_values = data["images"][
            rows, channel, data["centers"][..., 1], data["centers"][..., 0]
        ]
        assert (centre_values == COLORS_RGB[None, :, channel]).all()


def test_question_encoding_by_hand():
    questions = {
        "type": np.array([2, 0]),
        "subtype": np.array([1, 2]),
        "color": np.array([2, 5]),
        "second_color": np.array([4, -1]),
    }
    encoded = encode_questions(questions)
    assert encoded.shape == (2, 18) and encoded.dtype == np.float32
    assert np.flatnonzero(encoded[0]).tolist() == [2, 10, 14, 16]
    assert np.flatnonzero(encoded[1]).tolist() == [5, 12, 17]


def test_generation_is_seeded():
    first = generate_sort_of_clevr(np.random.default_rng(9), 20)
    again = generate_sort_of_clevr(np.random.default_rng(9), 20)
    other = generate_sort_of_clevr(np.random.default_rng(10), 20)
    assert all(np.array_equal(first[key], again[key]) for key in first)
    assert not np.array_equal(first["centers"], other["centers"])


def _small(**kwargs) -> SortOfCLEVRDataModule:
    return SortOfCLEVRDataModule(
        **{"train_images": 30, "val_images": 6, "test_images": 4, "batch_size": 16, **kwargs}
    )


def test_batches_keys_shapes_and_consistency():
    dm = _small()
    assert (dm.num_classes, dm.question_dim, dm.image_size) == (10, 18, 75)
    dm.setup("fit")
    assert [len(dm.datasets[s]) for s in ("train", "val", "test")] == [900, 180, 120]
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (16, 3, 75, 75) and batch["image"].dtype == torch.float32
    assert 0.0 <= batch["image"].min() and batch["image"].max() == 1.0
    assert batch["question"].shape == (16, 18) and batch["question"].dtype == torch.float32
    assert batch["target"].shape == (16,) and batch["target"].dtype == torch.int64
    assert batch["relational"].dtype == torch.bool
    assert torch.equal(batch["relational"], batch["question"][:, 13:15].sum(1) == 1)
    assert torch.equal(batch["question_type"], batch["question"][:, 12:15].argmax(1))
    assert torch.equal(batch["question_subtype"], batch["question"][:, 15:18].argmax(1))
    assert batch["object_centers"].shape == (16, 6, 2) and batch["object_shapes"].shape == (16, 6)
    x, y = batch["object_centers"][0, 0]
    assert torch.allclose(batch["image"][0, :, y, x], torch.tensor([1.0, 0.0, 0.0]))  # red
    binary_only = _small(include_ternary=False)
    binary_only.setup()
    assert len(binary_only.datasets["train"]) == 600
    assert not (binary_only.datasets["train"].question_type == 2).any()


def test_seeded_shuffle_and_data():
    def first_targets(seed: int) -> torch.Tensor:
        return next(iter(_small(seed=seed).train_dataloader()))["question"]

    assert torch.equal(first_targets(0), first_targets(0))
    assert not torch.equal(first_targets(0), first_targets(1))
    dm = _small()
    dm.setup()
    val = next(iter(dm.val_dataloader()))
    assert torch.equal(val["target"], dm.datasets["val"].answers[:16])


def test_splits_differ_and_training_batches_are_shuffled():
    dm = _small()
    dm.setup()
    # no scene (its objects' centres) is in two splits
    scenes = {
        split: {tuple(c.flatten().tolist()) for b in getattr(dm, f"{split}_dataloader")() for c in b["object_centers"]}
        for split in ("train", "val", "test")
    }
    assert [len(scenes[split]) for split in ("train", "val", "test")] == [30, 6, 4]
    assert not scenes["train"] & scenes["val"] and not scenes["train"] & scenes["test"] and not scenes["val"] & scenes["test"]
    # the training loader shuffles (not the dataset's order), and another epoch gives another order
    train = dm.train_dataloader()
    first_epoch = torch.cat([batch["question"] for batch in train])
    train.sampler.set_epoch(1)
    second_epoch = torch.cat([batch["question"] for batch in train])
    in_order = torch.stack([dm.datasets["train"][i]["question"] for i in range(len(dm.datasets["train"]))])
    assert not torch.equal(first_epoch, in_order)
    assert not torch.equal(first_epoch, second_epoch)


def test_cache_name_holds_every_setting_that_changes_the_data(tmp_path):
    names = {
        _small(data_dir=str(tmp_path), **kwargs).cache_path.name
        for kwargs in ({}, {"seed": 1}, {"train_images": 31}, {"include_ternary": False}, {"official_quirks": True})
    }
    assert len(names) == 5


def test_cache_file_written_once_and_equal_to_memory(tmp_path):
    dm = _small(data_dir=str(tmp_path))
    dm.prepare_data()
    path = dm.cache_path
    assert path.parent == tmp_path / "sort_of_clevr" and path.exists()
    written = path.stat().st_mtime_ns
    dm.prepare_data()
    assert path.stat().st_mtime_ns == written
    dm.setup()
    in_memory = _small()
    in_memory.setup()
    for split in ("train", "val", "test"):
        cached, generated = dm.datasets[split], in_memory.datasets[split]
        assert torch.equal(cached.images, generated.images)
        assert torch.equal(cached.questions, generated.questions)
        assert torch.equal(cached.answers, generated.answers)
    assert _small(data_dir=str(tmp_path), official_quirks=True).cache_path != path
    # a cache file cut short (a copy interrupted) names the fix: it is generated again
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ValueError, match="is truncated or not an .npz archive .*: delete it: it is generated again"):
        _small(data_dir=str(tmp_path)).setup()


def test_hydra_config_builds_the_paper_setting(compose_cfg, tmp_path):
    cfg = compose_cfg(["data=attention/sort_of_clevr", f"paths.data_dir={tmp_path}"], tmp_path)
    assert (cfg.data.train_images, cfg.data.val_images, cfg.data.test_images) == (9800, 200, 200)
    cfg.data.train_images, cfg.data.val_images, cfg.data.test_images = 4, 2, 2
    dm = instantiate(cfg.data)
    assert (
        isinstance(dm, SortOfCLEVRDataModule)
        and dm.questions_per_type == 10
        and dm.batch_size == 64
    )
    dm.prepare_data()
    assert dm.cache_path.exists() and str(dm.cache_path).startswith(str(tmp_path))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 11}, "data.num_classes=11 but Sort-of-CLEVR has num_classes = 10"),
        ({"question_dim": 11}, "set data.question_dim=18"),
        ({"train_images": 0}, "train_images must be a positive int"),
        ({"batch_size": -2}, "batch_size must be a positive int"),
        ({"seed": None}, "seed must be an int"),
    ],
)
def test_wrong_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SortOfCLEVRDataModule(**kwargs)
