"""CoRelNet's coloured tasks: the official colours, answers recomputed from the relevant feature,
the other feature drawn independently of the answer, the separated layout, held-out glyphs and
colours, seeded determinism and configuration errors."""

import numpy as np
import pytest

from tenfold.datamodules.relational.coloured_tasks import (
    COLOURED_TASKS,
    ColouredTask,
    colour_palette,
    generate_coloured_splits,
)


def answer_same_diff(seq: np.ndarray) -> np.ndarray:
    return (seq[:, 0] != seq[:, 1]).astype(np.int64)


def answer_rmts(seq: np.ndarray) -> np.ndarray:
    source, pair0, pair1 = (seq[:, i] == seq[:, i + 1] for i in (0, 2, 4))
    assert np.all(pair0 != pair1)
    return np.where(pair0 == source, 0, 1)


def answer_dist3(seq: np.ndarray) -> np.ndarray:
    missing = ~(seq[:, :3, None] == seq[:, None, 3:5]).any(axis=2)
    assert np.all(missing.sum(axis=1) == 1) and np.all(np.diff(np.sort(seq[:, 5:]), axis=1) > 0)
    return np.argmax(seq[:, 5:] == seq[:, :3][missing][:, None], axis=1)


def answer_identity(seq: np.ndarray) -> np.ndarray:
    abb = (seq[:, 1] == seq[:, 2]) & (seq[:, 0] != seq[:, 1])
    completion = np.where(abb, seq[:, 4], seq[:, 3])
    assert np.all((seq[:, 5:] == completion[:, None]).sum(axis=1) == 1)
    return np.argmax(seq[:, 5:] == completion[:, None], axis=1)


ANSWERS = {
    "same_diff": answer_same_diff,
    "rmts": answer_rmts,
    "dist3": answer_dist3,
    "identity_rules": answer_identity,
}
LENGTHS = {"same_diff": 2, "rmts": 6, "dist3": 9, "identity_rules": 9}


def test_the_official_colours():
    palette = colour_palette()
    assert palette.shape == (100, 3)
    # numpy.random.RandomState(0).uniform(): 0.5488135039273248, 0.7151893663724195, ...
    assert palette[0].tolist() == pytest.approx(
        [0.5488135039273248, 0.7151893663724195, 0.6027633760716439]
    )
    official = np.random.RandomState(0).uniform(size=(100, 3, 1, 1))  # main.py
    assert np.array_equal(palette, official[:, :, 0, 0])


def test_the_ten_tasks():
    assert sorted(COLOURED_TASKS) == sorted(
        [f"{base}_sc_{feature}" for base in ANSWERS for feature in ("shapes", "colours")]
        + ["same_diff_csep_shapes", "same_diff_csep_colours"]
    )


@pytest.mark.parametrize("name", sorted(COLOURED_TASKS))
def test_answers_follow_the_relevant_feature(name):
    base, layout, relation = name.rsplit("_", 2)
    splits = generate_coloured_splits(
        name, 50, 50, seed=1, train_size=300, val_size=30, test_size=300
    )
    pools = {
        "train": (splits.train_objects, splits.train_colours),
        "val": (splits.train_objects, splits.train_colours),
        "test": (splits.test_objects, splits.test_colours),
    }
    assert not set(splits.train_objects) & set(splits.test_objects)
    assert not set(splits.train_colours) & set(splits.test_colours)
    for split, (shape_pool, colour_pool) in pools.items():
        trials = getattr(splits, split)
        shapes, colours = trials.objects, trials.colours
        if layout == "csep":  # shape 1, colour 1, shape 2, colour 2
            assert np.all(shapes[:, 1::2] == -1) and np.all(colours[:, 0::2] == -1)
            shapes, colours = shapes[:, 0::2], colours[:, 1::2]
        assert shapes.shape == colours.shape == (len(trials), LENGTHS[base])
        assert set(np.unique(shapes)) <= set(shape_pool)
        assert set(np.unique(colours)) <= set(colour_pool)
        relevant = shapes if relation == "shapes" else colours
        assert np.array_equal(trials.target, ANSWERS[base](relevant))


@pytest.mark.parametrize("name", ["same_diff_sc_colours", "same_diff_csep_shapes"])
def test_the_other_feature_is_independent_of_the_answer(name):
    # two values of the irrelevant feature: equal in about half of the trials of either answer
    relation = name.rsplit("_", 1)[1]
    m, c = (98, 0) if relation == "colours" else (0, 98)
    trials = generate_coloured_splits(name, m, c, seed=2, train_size=4000, val_size=0).train
    shapes, colours = trials.objects, trials.colours
    if "csep" in name:
        shapes, colours = shapes[:, 0::2], colours[:, 1::2]
    other = shapes if relation == "colours" else colours
    assert len(np.unique(other)) == 2
    equal = other[:, 0] == other[:, 1]
    for answer in (0, 1):
        assert abs(equal[trials.target == answer].mean() - 0.5) < 0.05


def test_seeded_determinism_and_separate_streams():
    first = generate_coloured_splits(
        "rmts_sc_colours", 50, 85, seed=3, train_size=200, test_size=200
    )
    again = generate_coloured_splits(
        "rmts_sc_colours", 50, 85, seed=3, train_size=200, test_size=200
    )
    other = generate_coloured_splits(
        "rmts_sc_colours", 50, 85, seed=4, train_size=200, test_size=200
    )
    for split in ("train", "val", "test"):
        a, b, c = (getattr(s, split) for s in (first, again, other))
        assert np.array_equal(a.objects, b.objects) and np.array_equal(a.colours, b.colours)
        assert not np.array_equal(a.colours, c.colours)
    resized = generate_coloured_splits(
        "rmts_sc_colours", 50, 85, seed=3, train_size=20, test_size=200
    )
    assert np.array_equal(resized.test.colours, first.test.colours)


def test_attributes():
    task = ColouredTask("rmts_sc_colours")
    assert (task.sequence_length, task.num_classes, task.image_shape) == (6, 2, (3, 32, 32))
    assert task.context_segments == ((0, 1), (2, 3), (4, 5))
    csep = ColouredTask("same_diff_csep_shapes")
    assert csep.sequence_length == 4 and csep.context_segments == ((0, 1, 2, 3),)


def test_configuration_errors():
    with pytest.raises(ValueError, match=r"c_holdout=96 is not allowed.*5\.\.95,.*colours"):
        generate_coloured_splits("rmts_sc_colours", 0, 96)
    # the shapes of rmts_sc_colours are irrelevant: any holdout leaving one glyph is fine
    generate_coloured_splits("rmts_sc_colours", 99, 0, train_size=10, val_size=0, test_size=10)
    with pytest.raises(ValueError, match=r"m_holdout=99 is not allowed.*5\.\.95"):
        generate_coloured_splits("rmts_sc_shapes", 99, 0)
    with pytest.raises(ValueError, match="unknown coloured task 'rmts_sc_size'"):
        ColouredTask("rmts_sc_size")
    with pytest.raises(ValueError, match=r"train_size must be an int >= 1"):
        generate_coloured_splits("dist3_sc_shapes", train_size=0)
