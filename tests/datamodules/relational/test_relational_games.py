"""Relational Games scenes, labels and files: the object sets (counted by hand), rendering at the
released layout, every generated label recomputed by brute force from the scene, exact class
balance, held-out object sets, seeded determinism, CoRelNet's left_of derivation, and the reader
on files the tests write."""

import itertools

import numpy as np
import pytest

from tenfold.datamodules.relational import relational_games as rg

# ---- independent definitions over one scene (forms, colours: 9 ints, -1 empty) -----------------


def objects_of(forms, colours) -> dict[tuple[int, int], tuple[int, int]]:
    """(row, column) -> (form, colour) of every object."""
    return {divmod(k, 3): (forms[k], colours[k]) for k in range(9) if forms[k] >= 0}


def brute_same(forms, colours) -> bool:
    objects = objects_of(forms, colours)
    assert len(objects) == 2
    first, second = objects.values()
    return first == second


def brute_between(forms, colours) -> bool:
    """Some object lies at the midpoint of two identical objects."""
    objects = objects_of(forms, colours)
    for a, b, c in itertools.permutations(objects, 3):
        midpoint = 2 * b[0] == a[0] + c[0] and 2 * b[1] == a[1] + c[1]
        if midpoint and objects[a] == objects[c]:
            return True
    return False


def brute_occurs(forms, colours) -> bool:
    objects = objects_of(forms, colours)
    top = [obj for (row, _), obj in objects.items() if row == 0]
    bottom = [obj for (row, _), obj in objects.items() if row == 2]
    assert len(top) == 1 and len(bottom) == 3 and len(objects) == 4
    return top[0] in bottom


def signature(items) -> tuple[int, ...]:
    first: dict = {}
    return tuple(first.setdefault(item, len(first)) for item in items)


def brute_match_patt(forms, colours) -> bool:
    objects = objects_of(forms, colours)
    assert len(objects) == 6 and all(row != 1 for row, _ in objects)
    top = [objects[(0, column)] for column in range(3)]
    bottom = [objects[(2, column)] for column in range(3)]
    return signature(top) == signature(bottom)


def official_left_of(forms, colours) -> bool:
    """generate_leftof.py: the first two objects in column-major order, then its four cases."""
    cells = [(r, c) for c in range(3) for r in range(3) if forms[3 * r + c] >= 0]
    assert len(cells) == 2
    (r0, c0), (r1, c1) = cells
    l0, l1 = (
        0.2126 * red + 0.7152 * green + 0.0722 * blue
        for red, green, blue in (rg.PALETTE[colours[3 * r + c]].astype(float) for r, c in cells)
    )
    return bool(
        (l1 < l0 and c1 < c0 and r1 <= r0)
        or (l1 < l0 and c1 <= c0 and r0 < r1)
        or (l0 < l1 and c0 < c1 and r0 <= r1)
        or (l0 < l1 and c0 <= c1 and r1 < r0)
    )


BRUTE = {
    "same": brute_same,
    "between": brute_between,
    "occurs": brute_occurs,
    "match_patt": brute_match_patt,
    "left_of": official_left_of,
}


# ---- object sets and rendering ------------------------------------------------------------------


def test_object_sets():
    pentos, hexos, stripes = (rg.object_set(name) for name in rg.OBJECT_SETS)
    # 4-connected sets of 5 and 6 cells of the 3 x 3 grid (the released hexominoes are all 48)
    assert (pentos.num_forms, hexos.num_forms, stripes.num_forms) == (49, 48, 25)
    assert rg.polyomino_masks(5).sum(axis=(1, 2)).tolist() == [5] * 49
    assert len({mask.tobytes() for mask in rg.polyomino_masks(6)}) == 48
    assert len(rg.PALETTE) == 25 and len(set(rg.luminance(rg.PALETTE).tolist())) == 25
    inked = {
        name: object_set.sprites.any(axis=-1).sum(axis=(2, 3))
        for name, object_set in zip(rg.OBJECT_SETS, (pentos, hexos, stripes), strict=True)
    }
    assert np.all(inked["pentos"] == 45) and np.all(inked["hexos"] == 54)
    assert np.all(inked["stripes"] == 81)  # 9 x 9 squares: no held-out object looks like another


def test_render_hand_checked():
    forms = np.full(9, -1)
    colours = np.full(9, -1)
    forms[5], colours[5] = 0, 3  # row 1, column 2; pentomino 0 is cells 0, 1, 2, 3, 4 of its grid
    image = rg.render("pentos", forms, colours)
    assert image.shape == (36, 36, 3) and image.dtype == np.uint8
    mask = np.zeros((36, 36), dtype=bool)
    mask[13:16, 25:34] = True  # blocks 0, 1, 2: top row of the 9 x 9 sprite at (12 + 1, 24 + 1)
    mask[16:19, 25:28] = True  # block 3
    mask[16:19, 28:31] = True  # block 4
    assert np.array_equal(image.any(axis=2), mask)
    assert np.all(image[mask] == rg.PALETTE[3])
    stripe = rg.render("stripes", np.r_[7, [-1] * 8], np.r_[2, [-1] * 8])  # cell 0
    assert np.all(stripe[1:10, 1:4] == rg.PALETTE[2]) and np.all(
        stripe[1:10, 7:10] == rg.PALETTE[2]
    )
    assert np.all(stripe[1:10, 4:7] == rg.PALETTE[7])


# ---- generated scenes ---------------------------------------------------------------------------


@pytest.mark.parametrize("task", rg.GENERATED_TASKS)
@pytest.mark.parametrize("object_set", rg.OBJECT_SETS)
def test_labels_recomputed_by_brute_force(task, object_set):
    scenes = rg.generate_scenes(task, object_set, 300, np.random.default_rng(0))
    assert scenes.forms.shape == scenes.colours.shape == (300, 9)
    assert np.array_equal(scenes.forms >= 0, scenes.colours >= 0)
    assert scenes.forms.max() < rg.object_set(object_set).num_forms
    expected = [BRUTE[task](f, c) for f, c in zip(scenes.forms, scenes.colours, strict=True)]
    assert scenes.target.tolist() == [int(label) for label in expected]
    assert np.bincount(scenes.target).tolist() == [150, 150]


def test_scene_layouts():
    rng = np.random.default_rng(1)
    counts = {task: (rg.generate_scenes(task, "hexos", 500, rng).forms >= 0) for task in BRUTE}
    assert np.all(counts["same"].sum(axis=1) == 2) and np.all(counts["left_of"].sum(axis=1) == 2)
    assert np.all(counts["between"].sum(axis=1) == 3)
    assert np.all(counts["occurs"][:, :3].sum(axis=1) == 1) and np.all(counts["occurs"][:, 6:])
    assert not counts["occurs"][:, 3:6].any() and not counts["match_patt"][:, 3:6].any()
    # between: positives on a line; negatives on a line about four times in five
    scenes = rg.generate_scenes("between", "pentos", 2000, rng)
    cells = np.argsort(scenes.forms < 0, axis=1, kind="stable")[:, :3]
    lines = {frozenset(line) for line in rg.LINES.tolist()}
    on_line = np.array([frozenset(row) in lines for row in cells.tolist()])
    assert on_line[scenes.target == 1].all()
    assert abs(on_line[scenes.target == 0].mean() - 0.8) < 0.05


def test_near_miss_negatives():
    # the two objects of a negative 'same' scene differ in form, colour or both, a third each
    scenes = rg.generate_scenes("same", "pentos", 3000, np.random.default_rng(2))
    negative = scenes.target == 0
    objects = np.argsort(scenes.forms < 0, axis=1, kind="stable")[:, :2]
    forms = np.take_along_axis(scenes.forms, objects, axis=1)[negative]
    colours = np.take_along_axis(scenes.colours, objects, axis=1)[negative]
    form_differs, colour_differs = forms[:, 0] != forms[:, 1], colours[:, 0] != colours[:, 1]
    assert np.all(form_differs | colour_differs)
    kinds = [np.mean(form_differs & ~colour_differs), np.mean(~form_differs & colour_differs)]
    assert all(abs(share - 1 / 3) < 0.05 for share in kinds)


@pytest.mark.parametrize("task", rg.GENERATED_TASKS)
def test_empty_splits(task):
    scenes = rg.generate_scenes(task, "pentos", 0, np.random.default_rng(0))
    assert scenes.forms.shape == (0, 9) and len(scenes) == 0


def test_seeded_determinism():
    first = rg.generate_scenes("match_patt", "stripes", 100, np.random.default_rng(3))
    again = rg.generate_scenes("match_patt", "stripes", 100, np.random.default_rng(3))
    other = rg.generate_scenes("match_patt", "stripes", 100, np.random.default_rng(4))
    assert np.array_equal(first.forms, again.forms) and np.array_equal(first.colours, again.colours)
    assert not np.array_equal(first.forms, other.forms)


def test_generation_errors():
    with pytest.raises(ValueError, match=r"'xoccurs' cannot be generated.*data_dir"):
        rg.generate_scenes("xoccurs", "pentos", 10, np.random.default_rng(0))
    with pytest.raises(ValueError, match="unknown object set 'heptos'"):
        rg.object_set("heptos")


# ---- left_of from 'same' images (CoRelNet's generate_leftof.py) --------------------------------


def test_derive_left_of_matches_the_official_rule():
    scenes = rg.generate_scenes("same", "hexos", 200, np.random.default_rng(5))
    images = rg.render("hexos", scenes.forms, scenes.colours)
    derived_images, labels = rg.derive_left_of(images)
    # the images and their 180-degree rotations (objects rotated too), kept where the two colours
    # (so the luminances) differ; a rotated image shows object k of the scene in cell 8 - k
    all_images = np.concatenate([images, images[:, ::-1, ::-1]])
    all_forms = np.concatenate([scenes.forms, scenes.forms[:, ::-1]])
    all_colours = np.concatenate([scenes.colours, scenes.colours[:, ::-1]])
    colour_pairs = np.sort(np.where(all_forms >= 0, all_colours, 99), axis=1)[:, :2]
    keep = colour_pairs[:, 0] != colour_pairs[:, 1]
    assert np.array_equal(derived_images, all_images[keep])
    expected = [
        official_left_of(f, c) for f, c in zip(all_forms[keep], all_colours[keep], strict=True)
    ]
    assert labels.tolist() == [int(label) for label in expected]
    assert labels.sum() * 2 == len(labels)  # a rotation flips the label
    between = rg.generate_scenes("between", "hexos", 4, np.random.default_rng(0))
    with pytest.raises(ValueError, match="exactly two objects"):
        rg.derive_left_of(rg.render("hexos", between.forms, between.colours))


# ---- files --------------------------------------------------------------------------------------


def test_reader_round_trip(tmp_path):
    scenes = rg.generate_scenes("occurs", "stripes", 40, np.random.default_rng(6))
    images = rg.render("stripes", scenes.forms, scenes.colours)
    path = tmp_path / "occurs_stripes.npz"
    rg.write_relational_games(path, images, scenes.target, tasks=np.full(40, 3))
    with np.load(path) as data:  # the released layout
        assert data["images"].shape == (40, 36, 36, 3) and data["labels"].shape == (40, 1)
        assert data["tasks"].shape == (40, 1)
    arrays = rg.read_relational_games(path)
    assert np.array_equal(arrays.images, images) and arrays.images.dtype == np.uint8
    assert np.array_equal(arrays.labels, scenes.target) and np.all(arrays.tasks == 3)
    # labels as one-hot rows (PrediNet/README.md: [N, 2]) and images as int64 (CoRelNet's files)
    one_hot = np.eye(2, dtype=np.int64)[scenes.target]
    np.savez(tmp_path / "one_hot.npz", images=images.astype(np.int64), labels=one_hot)
    arrays = rg.read_relational_games(tmp_path / "one_hot.npz")
    assert np.array_equal(arrays.labels, scenes.target) and np.all(arrays.tasks == 0)
    assert np.array_equal(arrays.images, images)


def test_load_released_left_of_from_same_files(tmp_path):
    scenes = rg.generate_scenes("same", "pentos", 30, np.random.default_rng(7))
    images = rg.render("pentos", scenes.forms, scenes.colours)
    rg.write_relational_games(tmp_path / "same_pentos.npz", images, scenes.target)
    arrays = rg.load_released(tmp_path, "left_of", "pentos")
    expected_images, expected_labels = rg.derive_left_of(images)
    assert np.array_equal(arrays.images, expected_images)
    assert np.array_equal(arrays.labels, expected_labels)
    assert rg.released_file(tmp_path, "match_patt", "hexos").name == "1task_match_patt_hexos.npz"


def test_reader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"same_hexos\.npz.*relations-game-datasets"):
        rg.read_relational_games(tmp_path / "same_hexos.npz")
    np.savez(tmp_path / "small.npz", images=np.zeros((2, 32, 32, 3)), labels=np.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"images are \(2, 32, 32, 3\), expected"):
        rg.read_relational_games(tmp_path / "small.npz")
    # float images in [0, 1] would read as all-black uint8
    np.savez(tmp_path / "unit.npz", images=np.full((2, 36, 36, 3), 0.5, np.float32), labels=np.zeros((2, 1)))
    with pytest.raises(ValueError, match=r"must be integers 0..255 .*float32 values in \[0.5, 0.5\]: scale \[0, 1\] images by 255"):
        rg.read_relational_games(tmp_path / "unit.npz")
    np.savez(tmp_path / "whole.npz", images=np.full((2, 36, 36, 3), 7.0), labels=np.zeros((2, 1)))
    assert rg.read_relational_games(tmp_path / "whole.npz").images.max() == 7  # integral floats are fine
    np.savez(tmp_path / "count.npz", images=np.zeros((2, 36, 36, 3)), labels=np.zeros((3, 1)))
    with pytest.raises(ValueError, match="2 images, 3 labels"):
        rg.read_relational_games(tmp_path / "count.npz")
    np.savez(tmp_path / "labels.npz", images=np.zeros((2, 36, 36, 3)), labels=np.ones((2, 2)))
    with pytest.raises(ValueError, match="neither class ids nor one-hot"):
        rg.read_relational_games(tmp_path / "labels.npz")
    # a download cut short names the file and where to get it again
    (tmp_path / "cut.npz").write_bytes((tmp_path / "labels.npz").read_bytes()[:100])
    with pytest.raises(ValueError, match=r"cut\.npz is truncated or not an \.npz archive.*download it again.*relations-game-datasets"):
        rg.read_relational_games(tmp_path / "cut.npz")
    with pytest.raises(ValueError, match="unknown relational games task 'leftof'"):
        rg.released_file(tmp_path, "leftof", "pentos")
