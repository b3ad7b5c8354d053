"""The ESBN task generators against independent definitions: every trial's answer recomputed from
its object ids, trial spaces compared with brute-force enumerations of all sequences, ESBN's
combinatorics and default sizes, the held-out split, sampling composition, class balance, seeded
determinism and configuration errors."""

import itertools
import math

import numpy as np
import pytest

from tenfold.datamodules.relational.esbn_tasks import (
    TASKS,
    DistributionOfThree,
    IdentityRules,
    RelationalMatchToSample,
    SameDifferent,
    generate_splits,
    make_task,
    resolve_sizes,
)

# ---- independent definitions: the answer of a trial from its object ids [T, N] -------------------


def answer_same_diff(seq: np.ndarray) -> np.ndarray:
    return (seq[:, 0] != seq[:, 1]).astype(np.int64)


def answer_rmts(seq: np.ndarray) -> np.ndarray:
    source, pair0, pair1 = (seq[:, i] == seq[:, i + 1] for i in (0, 2, 4))
    assert np.all(pair0 != pair1), "one choice pair must be same, the other different"
    return np.where(pair0 == source, 0, 1)


def answer_dist3(seq: np.ndarray) -> np.ndarray:
    first_row, second_row_start, choices = seq[:, :3], seq[:, 3:5], seq[:, 5:]
    missing = ~(first_row[:, :, None] == second_row_start[:, None, :]).any(axis=2)
    assert np.all(missing.sum(axis=1) == 1)
    answer = first_row[missing]
    assert np.all((choices == answer[:, None]).sum(axis=1) == 1)
    return np.argmax(choices == answer[:, None], axis=1)


def identity_rule(seq: np.ndarray) -> np.ndarray:
    """0 = AAA, 1 = ABA, 2 = ABB, -1 = none, from the first row."""
    a, b, c = seq[:, 0], seq[:, 1], seq[:, 2]
    return np.select([(a == b) & (b == c), (a == c) & (a != b), (b == c) & (a != b)], [0, 1, 2], -1)


def answer_identity(seq: np.ndarray) -> np.ndarray:
    rule = identity_rule(seq)
    assert np.all(rule >= 0)
    answer = np.where(rule == 2, seq[:, 4], seq[:, 3])
    choices = seq[:, 5:]
    assert np.all((choices == answer[:, None]).sum(axis=1) == 1)
    return np.argmax(choices == answer[:, None], axis=1)


ANSWERS = {
    "same_diff": answer_same_diff,
    "rmts": answer_rmts,
    "dist3": answer_dist3,
    "identity_rules": answer_identity,
}


def distinct_per_row(seq: np.ndarray) -> np.ndarray:
    return (np.diff(np.sort(seq, axis=1), axis=1) != 0).sum(axis=1) + 1


def check_well_formed(name: str, seq: np.ndarray, kind: np.ndarray) -> None:
    """The structure of each trial, as the task's definition states it."""
    if name == "same_diff":
        assert np.array_equal(kind, answer_same_diff(seq))
    elif name == "rmts":
        same_pairs = sum((seq[:, i] == seq[:, i + 1]).astype(int) for i in (0, 2, 4))
        # pairs use disjoint objects: a same pair one object, a different pair two
        assert np.array_equal(distinct_per_row(seq), same_pairs + 2 * (3 - same_pairs))
        assert np.array_equal(kind, (seq[:, 0] != seq[:, 1]).astype(int))
    elif name == "dist3":
        first_row, choices = seq[:, :3], seq[:, 5:]
        assert np.all(distinct_per_row(first_row) == 3) and np.all(distinct_per_row(choices) == 4)
        assert np.all(distinct_per_row(seq[:, 3:5]) == 2)
        assert np.all((seq[:, 3:5, None] == first_row[:, None, :]).any(axis=2))
        assert np.all((first_row[:, :, None] == choices[:, None, :]).any(axis=2))
    else:
        rule = identity_rule(seq)
        assert np.array_equal(kind, rule)
        choices = seq[:, 5:]
        assert np.all(distinct_per_row(choices) == 4)
        aaa = rule == 0
        assert np.all(seq[aaa, 3] == seq[aaa, 4]) and np.all(seq[aaa, 3] != seq[aaa, 0])
        # AAA: the choices hold both shown objects (and two unseen ones)
        for shown in (0, 3):
            assert np.all((choices[aaa] == seq[aaa, shown : shown + 1]).any(axis=1))
        # ABA, ABB: four distinct objects, which are the choices
        row_objects = seq[~aaa][:, [0, 1, 3, 4]]
        assert np.all(distinct_per_row(row_objects) == 4)
        assert np.array_equal(np.sort(row_objects, axis=1), np.sort(choices[~aaa], axis=1))


def check_trials(name: str, trials) -> None:
    assert trials.objects.dtype == np.int64 and trials.target.dtype == np.int64
    check_well_formed(name, trials.objects, trials.kind)
    assert np.array_equal(trials.target, ANSWERS[name](trials.objects))


# ---- trial spaces: ESBN's counts and brute-force enumeration of all sequences --------------------


def all_sequences(num_objects: int, length: int) -> np.ndarray:
    return np.array(list(itertools.product(range(num_objects), repeat=length)), dtype=np.int64)


def brute_force_space(name: str, num_objects: int) -> dict[int, set[tuple[int, ...]]]:
    """Every sequence over ``num_objects`` objects that is a trial, by kind, by the definitions."""
    if name == "same_diff":
        seq = all_sequences(num_objects, 2)
        kind = answer_same_diff(seq)
    elif name == "rmts":
        seq = all_sequences(num_objects, 6)
        source, pair0, pair1 = (seq[:, i] == seq[:, i + 1] for i in (0, 2, 4))
        same_pairs = source.astype(int) + pair0 + pair1
        keep = (pair0 != pair1) & (distinct_per_row(seq) == same_pairs + 2 * (3 - same_pairs))
        seq, kind = seq[keep], (~source[keep]).astype(int)
    elif name == "dist3":  # the problem: two rows, the second a permutation of the first
        seq = all_sequences(num_objects, 6)
        keep = (distinct_per_row(seq[:, :3]) == 3) & np.all(
            np.sort(seq[:, :3], axis=1) == np.sort(seq[:, 3:], axis=1), axis=1
        )
        seq, kind = seq[keep], np.zeros(int(keep.sum()), dtype=int)
    else:
        seq = all_sequences(num_objects, 9)
        rule = identity_rule(seq)
        four = distinct_per_row(seq[:, 5:]) == 4
        aaa = (rule == 0) & (seq[:, 3] == seq[:, 4]) & (seq[:, 3] != seq[:, 0])
        aaa &= (seq[:, 5:] == seq[:, [0]]).any(1) & (seq[:, 5:] == seq[:, [3]]).any(1)
        row_objects = seq[:, [0, 1, 3, 4]]
        other = (rule > 0) & (distinct_per_row(row_objects) == 4)
        other &= np.all(np.sort(row_objects, axis=1) == np.sort(seq[:, 5:], axis=1), axis=1)
        keep = four & (aaa | other)
        seq, kind = seq[keep], rule[keep]
    return {k: {tuple(row) for row in seq[kind == k]} for k in np.unique(kind)}


@pytest.mark.parametrize(
    ("name", "num_objects", "expected_counts"),
    [
        # tasks/same_diff.py: n same, n (n - 1) different
        ("same_diff", 4, [4, 12]),
        # tasks/RMTS.py: nC4 * 4C1 * 3C1 * 2C2 * 2 * 2 and nC5 * 5C2 * 2 * 3C2 * 2 * 1C1 * 2
        ("rmts", 5, [240, 240]),
        # tasks/dist3.py: (3!)^2 * nC3
        ("dist3", 4, [144]),
        # tasks/identity_rules.py: nC4 * 4C1 * 3C1 * 4! and nC4 * 4C1 * 3C1 * 2C1 * 1C1 * 4!
        ("identity_rules", 4, [288, 576, 576]),
    ],
)
def test_trial_kinds_are_exactly_the_defined_trials(name, num_objects, expected_counts):
    task = make_task(name)
    objects = np.arange(num_objects, dtype=np.int64)
    space = brute_force_space(name, num_objects)
    rng = np.random.default_rng(0)
    for index, kind in enumerate(task.kinds):
        picks = kind.all_picks(num_objects)
        assert len(picks) == kind.count(num_objects) == expected_counts[index]
        cores = kind.cores(objects, picks)
        assert {tuple(row) for row in cores} == space[index]
        trials = task.present(index, picks, objects, rng)
        check_trials(name, trials)


def test_counts_match_esbn_formulas_at_paper_sizes():
    comb = math.comb
    for n in (5, 15, 50, 100):
        same_diff, rmts, dist3, identity = (make_task(name) for name in TASKS)
        assert [k.count(n) for k in same_diff.kinds] == [n, n * (n - 1)]
        assert [k.count(n) for k in rmts.kinds] == [
            comb(n, 4) * 4 * 3 * 1 * 2 * 2,
            comb(n, 5) * comb(5, 2) * 2 * comb(3, 2) * 2 * 1 * 2,
        ]
        assert dist3.kinds[0].count(n) == 36 * comb(n, 3)
        assert [k.count(n) for k in identity.kinds] == [
            comb(n, 4) * 4 * 3 * 24,
            comb(n, 4) * 4 * 3 * 2 * 24,
            comb(n, 4) * 4 * 3 * 2 * 24,
        ]


# ---- ESBN's default sizes and the held-out split -----------------------------------------------

# (train, test) of train_and_eval.py with its defaults (10,000 / 10,000, proportion 0.95) and the
# sampling methods of scripts/*.sh, worked out by hand from tasks/*.py
PAPER_SIZES = {
    ("same_diff", 0): (18810, 990),  # 2 * 9900 trials, split 95/5
    ("same_diff", 50): (4900, 4900),  # 2 * 50 * 49
    ("same_diff", 85): (420, 10000),  # 2 * 15 * 14; 2 * 85 * 84 = 14280 > 10000
    ("same_diff", 95): (40, 10000),
    ("same_diff", 98): (4, 10000),
    ("rmts", 0): (10000, 10000),
    ("rmts", 50): (10000, 10000),
    ("rmts", 85): (10000, 10000),
    ("rmts", 95): (480, 10000),  # 2 * max(240, 240)
    ("dist3", 0): (10000, 10000),
    ("dist3", 50): (10000, 10000),
    ("dist3", 85): (10000, 10000),  # 36 * C(15, 3) = 16380
    ("dist3", 95): (360, 10000),  # 36 * C(5, 3)
    ("identity_rules", 0): (10000, 10000),
    ("identity_rules", 50): (10000, 10000),
    ("identity_rules", 85): (10000, 10000),
    ("identity_rules", 95): (8640, 10000),  # 3 * 576 * C(5, 4)
}


def test_default_sizes_are_esbn_sizes():
    for (name, m), (train, test) in PAPER_SIZES.items():
        sizes = resolve_sizes(make_task(name), m)
        assert (sizes.train, sizes.val, sizes.test) == (train, min(1000, train), test), (name, m)
    assert {(name, m) for name in TASKS for m in make_task(name).paper_holdouts} == set(PAPER_SIZES)


@pytest.mark.parametrize(("name", "m"), sorted(PAPER_SIZES))
def test_paper_splits(name, m):
    splits = generate_splits(name, m, seed=1)
    train, test = PAPER_SIZES[(name, m)]
    assert (len(splits.train), len(splits.test)) == (train, test)
    assert len(splits.val) == min(1000, train)
    for trials in (splits.train, splits.val, splits.test):
        check_trials(name, trials)
    train_objects, test_objects = set(splits.train_objects), set(splits.test_objects)
    if m:
        assert len(test_objects) == m and len(train_objects) == 100 - m
        assert not train_objects & test_objects
    else:
        assert train_objects == test_objects == set(range(100))
    assert set(np.unique(splits.train.objects)) <= train_objects
    assert set(np.unique(splits.val.objects)) <= train_objects
    assert set(np.unique(splits.test.objects)) <= test_objects
    if m:  # held-out objects: training uses all its objects, test only the held-out ones
        assert set(np.unique(splits.train.objects)) == train_objects
        assert not set(np.unique(splits.test.objects)) & train_objects


def rows(array: np.ndarray) -> set[tuple[int, ...]]:
    return {tuple(row) for row in array}


@pytest.mark.parametrize("name", list(TASKS))
def test_without_holdout_test_trials_are_not_training_trials(name):
    splits = generate_splits(name, 0, seed=2)
    columns = slice(0, 5) if name == "dist3" else slice(None)  # dist3: the two rows
    assert not rows(splits.train.objects[:, columns]) & rows(splits.test.objects[:, columns])


def test_same_diff_without_holdout_splits_same_pairs_95_5():
    splits = generate_splits("same_diff", 0, seed=3)
    same_objects = [
        set(trials.objects[trials.kind == 0, 0]) for trials in (splits.train, splits.test)
    ]
    assert len(same_objects[0]) == 95 and len(same_objects[1]) == 5
    assert not same_objects[0] & same_objects[1]
    for trials, different in ((splits.train, 9405), (splits.test, 495)):
        assert np.sum(trials.kind == 0) == np.sum(trials.kind == 1) == different
        assert len(rows(trials.objects[trials.kind == 1])) == different


# ---- sampling: composition, distinctness, class balance ----------------------------------------


def test_full_space_identity_rules_at_m95_is_the_whole_pool():
    task = IdentityRules()
    splits = generate_splits(task, 95, seed=4)
    train = splits.train
    assert np.array_equal(np.bincount(train.kind), [2880, 2880, 2880])
    assert len(rows(train.objects[train.kind == 0])) == 1440  # every AAA trial, half repeated
    for kind in (1, 2):  # every ABA and ABB trial once
        assert len(rows(train.objects[train.kind == kind])) == 2880


def test_full_space_rmts_at_m85_keeps_esbn_imbalance():
    # tasks/RMTS.py full_dset tops a kind up only to half the asked size: 65,520 same-source and
    # 720,720 different-source trials over 15 objects, so 1/12 of a uniform prefix is same-source
    splits = generate_splits(RelationalMatchToSample(), 85, seed=5)
    same = int(np.sum(splits.train.kind == 0))
    assert abs(same - 10000 / 12) < 5 * math.sqrt(10000 / 12 * 11 / 12)
    assert len(rows(splits.train.objects)) == 10000
    assert np.array_equal(np.bincount(splits.test.kind), [5000, 5000])  # subsample: balanced


def test_full_space_same_diff_at_m95_has_every_different_pair():
    splits = generate_splits(SameDifferent(), 95, seed=6)
    train = splits.train
    pairs = rows(train.objects[train.kind == 1])
    assert len(pairs) == 20 and np.sum(train.kind == 0) == 20
    assert pairs == set(itertools.permutations(splits.train_objects.tolist(), 2))


@pytest.mark.parametrize("name", ["rmts", "identity_rules"])
def test_subsample_is_distinct_and_kind_balanced(name):
    splits = generate_splits(name, 50, seed=7)
    for trials in (splits.train, splits.test):
        assert len(rows(trials.objects)) == len(trials) == 10000
        counts = np.bincount(trials.kind)
        assert counts.max() - counts.min() <= len(counts) - 1


@pytest.mark.parametrize("name", list(TASKS))
def test_answers_are_balanced(name):
    task = make_task(name)
    splits = generate_splits(name, 50, seed=8)
    test = splits.test
    expected = len(test) / task.num_classes
    sd = math.sqrt(len(test) * (1 / task.num_classes) * (1 - 1 / task.num_classes))
    counts = np.bincount(test.target, minlength=task.num_classes)
    assert len(counts) == task.num_classes
    assert np.all(np.abs(counts - expected) < 4 * sd), counts


def test_dist3_distractors_are_uniform_over_other_objects():
    splits = generate_splits(DistributionOfThree(), 95, seed=9, test_size=10000)
    seq = splits.test.objects
    distractor = seq[:, 5:][~(seq[:, 5:, None] == seq[:, None, :3]).any(axis=2)]
    counts = np.bincount(distractor, minlength=100)[splits.test_objects]
    assert np.all(counts > 0) and counts.max() < 3 * counts.mean()


# ---- small cases, determinism, errors -----------------------------------------------------------


@pytest.mark.parametrize("name", list(TASKS))
@pytest.mark.parametrize("m", [0, 6])
def test_small_object_sets(name, m):
    default = resolve_sizes(make_task(name), m, num_objects=12)
    train, val, test = (min(size, 500) for size in default)
    splits = generate_splits(name, m, 10, train, val, test, num_objects=12)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (train, val, test)
    for trials in (splits.train, splits.val, splits.test):
        check_trials(name, trials)
    if m:
        assert set(np.unique(splits.test.objects)) <= set(splits.test_objects)
        assert not set(np.unique(splits.train.objects)) & set(splits.test_objects)


@pytest.mark.parametrize("name", list(TASKS))
def test_seeded_determinism(name):
    first = generate_splits(name, 85, seed=11, train_size=200, val_size=20, test_size=200)
    again = generate_splits(name, 85, seed=11, train_size=200, val_size=20, test_size=200)
    other = generate_splits(name, 85, seed=12, train_size=200, val_size=20, test_size=200)
    for split in ("train", "val", "test"):
        a, b, c = (getattr(s, split) for s in (first, again, other))
        assert np.array_equal(a.objects, b.objects) and np.array_equal(a.target, b.target)
        assert not np.array_equal(a.objects, c.objects)
    assert np.array_equal(first.test_objects, again.test_objects)
    assert not np.array_equal(first.test_objects, other.test_objects)
    # the test trials come from their own stream: other training sizes leave them unchanged
    resized = generate_splits(name, 85, seed=11, train_size=50, val_size=5, test_size=200)
    assert np.array_equal(resized.test.objects, first.test.objects)


def test_unknown_task_lists_the_known_ones():
    with pytest.raises(ValueError, match="same_diff, rmts, dist3, identity_rules"):
        make_task("RMTS")


@pytest.mark.parametrize(
    ("name", "m", "message"),
    [
        ("same_diff", 99, r"use 0 \(no held-out objects\) or a value in 2\.\.98"),
        ("rmts", 96, r"5\.\.95.*0, 50, 85, 95"),
        ("dist3", 3, r"4\.\.96"),
        ("identity_rules", -1, r"4\.\.96"),
        ("dist3", 50.0, "must be an int"),
    ],
)
def test_bad_holdout_says_what_is_allowed(name, m, message):
    with pytest.raises(ValueError, match=message):
        generate_splits(name, m)


def test_sizes_beyond_the_trial_space_are_refused():
    with pytest.raises(ValueError, match=r"train_size=41 is more than the 40 trials"):
        resolve_sizes(make_task("same_diff"), 95, train_size=41)
    with pytest.raises(ValueError, match=r"18810 training and 990 test trials"):
        resolve_sizes(make_task("same_diff"), 0, test_size=991)
    with pytest.raises(ValueError, match=r"val_size=481 is more than the 480"):
        resolve_sizes(make_task("rmts"), 95, val_size=481)
    with pytest.raises(ValueError, match=r"test_size must be an int >= 1"):
        resolve_sizes(make_task("dist3"), 50, test_size=0)


# ---- mutation-review gaps: independent streams, exact balance, boundaries, capacities ----------


@pytest.mark.parametrize("name", list(TASKS))
@pytest.mark.parametrize("m", [0, 85])
def test_validation_has_its_own_stream(name: str, m: int) -> None:
    # validation trials come from their own stream: other training or test sizes leave them as
    # they are (with m = 0 too, where one stream makes both training and test)
    sizes = [(200, 20, 200), (50, 20, 200), (200, 20, 60)]
    splits = [generate_splits(name, m, 13, *size) for size in sizes]
    for other in splits[1:]:
        assert np.array_equal(other.val.objects, splits[0].val.objects)
        assert np.array_equal(other.val.target, splits[0].val.target)
        assert np.array_equal(other.val.kind, splits[0].val.kind)


@pytest.mark.parametrize("name", ["rmts", "identity_rules"])
def test_subsample_kinds_exactly_balanced_when_k_divides_the_size(name: str) -> None:
    # "subsample": ceil(size / K) distinct trials of each of the K kinds, cut to size, so a size
    # that K divides gives exactly size / K trials of every kind, at every seed
    k = len(make_task(name).kinds)
    for seed in range(10):
        splits = generate_splits(
            name, 50, seed, train_size=60 * k, val_size=12 * k, test_size=30 * k
        )
        for trials, size in ((splits.train, 60), (splits.val, 12), (splits.test, 30)):
            assert np.bincount(trials.kind, minlength=k).tolist() == [size] * k, (seed, name)
            assert len(rows(trials.objects)) == len(trials)


@pytest.mark.parametrize("name", list(TASKS))
def test_extreme_holdouts_are_allowed(name: str) -> None:
    # check_holdout allows m = 0 and min_objects..n - min_objects (both ends included)
    task = make_task(name)
    low, high = task.min_objects, 100 - task.min_objects
    for m in (0, low, high):
        splits = generate_splits(name, m, 14, train_size=4, val_size=4, test_size=4)
        assert (len(splits.train), len(splits.val), len(splits.test)) == (4, 4, 4)
        for trials in (splits.train, splits.val, splits.test):
            check_trials(name, trials)
        if m:
            assert len(splits.test_objects) == m and len(splits.train_objects) == 100 - m
            assert set(np.unique(splits.test.objects)) <= set(splits.test_objects)
            assert set(np.unique(splits.train.objects)) <= set(splits.train_objects)
    for m in (low - 1, high + 1):
        with pytest.raises(ValueError, match=rf"{low}\.\.{high}"):
            generate_splits(name, m, 14, train_size=4, val_size=4, test_size=4)


def test_subsample_capacity_is_k_times_the_smallest_kind() -> None:
    # identity_rules over 5 objects: AAA 288 C(5, 4) = 1440, ABA = ABB = 576 C(5, 4) = 2880;
    # "subsample" (m < 85, and test) gives at most 3 * 1440 = 4320 trials
    assert tuple(resolve_sizes(IdentityRules(), 5, num_objects=10)) == (4320, 1000, 4320)
    with pytest.raises(ValueError, match=r"test_size=4321 is more than the 4320 trials"):
        resolve_sizes(IdentityRules(), 5, test_size=4321, num_objects=10)
    with pytest.raises(ValueError, match=r"train_size=4321 is more than the 4320 trials"):
        resolve_sizes(IdentityRules(), 5, train_size=4321, num_objects=10)
    # rmts over 6 objects: same 48 C(6, 4) = 720, different 240 C(6, 5) = 1440: 2 * 720
    assert resolve_sizes(RelationalMatchToSample(), 6, num_objects=12).test == 1440
    with pytest.raises(ValueError, match=r"test_size=1441 is more than the 1440 trials"):
        resolve_sizes(RelationalMatchToSample(), 6, test_size=1441, num_objects=12)
    # at capacity the test split is every AAA trial and as many ABA and ABB trials, all distinct
    test = generate_splits(IdentityRules(), 5, 15, 10, 0, 4320, num_objects=10).test
    assert np.bincount(test.kind).tolist() == [1440, 1440, 1440]
    assert len(rows(test.objects)) == 4320
    check_trials("identity_rules", test)


@pytest.mark.parametrize("name", ["rmts", "identity_rules"])
def test_full_space_training_starts_at_m85(name: str) -> None:
    # FULL_SPACE_TRAINING_FROM = 85: "subsample" training up to m = 84, "full_space" from 85 on
    task = make_task(name)
    assert task.sampling_methods(84) == ("subsample", "subsample")
    assert task.sampling_methods(85) == ("full_space", "subsample")
    # the method shows in the default training size over few training objects: "full_space"
    # gives K times the largest kind, "subsample" K times the smallest
    # (rmts over 6: 720 / 1440; identity_rules over 5: 1440 / 2880)
    objects, (smallest, largest) = (6, (720, 1440)) if name == "rmts" else (5, (1440, 2880))
    k = len(task.kinds)
    assert resolve_sizes(task, 84, num_objects=84 + objects).train == k * smallest
    assert resolve_sizes(task, 85, num_objects=85 + objects).train == k * largest


def test_full_space_rmts_tops_up_to_half_the_size() -> None:
    # rmts "full_space": a kind with fewer than size // 2 trials is topped up to size // 2 with
    # repeats. m = 95 (5 objects): 240 + 240 trials, no repeats, all taken
    for seed in (16, 17, 18):
        train = generate_splits(RelationalMatchToSample(), 95, seed, val_size=0).train
        assert len(train) == 480 and len(rows(train.objects)) == 480
        assert np.bincount(train.kind).tolist() == [240, 240]
    # m = 94 (6 objects): 720 same-source trials and 720 repeats of them, 1440 different-source
    train = generate_splits(RelationalMatchToSample(), 94, 19, val_size=0, test_size=10).train
    assert len(train) == 2880 and np.bincount(train.kind).tolist() == [1440, 1440]
    assert len(rows(train.objects[train.kind == 0])) == 720
    assert len(rows(train.objects[train.kind == 1])) == 1440
    check_trials("rmts", train)
