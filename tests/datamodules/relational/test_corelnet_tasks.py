"""CoRelNet's glyph variants against independent definitions: every answer recomputed from the
object ids, the held-out relations present only in test trials, the official kinds and shares,
uniform filling of the letters, the held-out objects, class balance, seeded determinism and
configuration errors."""

import itertools
import math
from collections import Counter

import numpy as np
import pytest

from tenfold.datamodules.relational.corelnet_tasks import (
    CORELNET_TASKS,
    IID_TEST,
    IID_TRAIN,
    RMTSIID,
    DistributionKind,
    IdentityRulesIID,
    PatternKind,
    SameDifferent6Hard,
    identity4_kind,
    share_counts,
)
from tenfold.datamodules.relational.esbn_tasks import generate_splits, resolve_sizes
from tenfold.datamodules.relational.registry import RELATIONAL_TASKS, make_relational_task

# ---- independent definitions ------------------------------------------------------------------


def signature(items) -> tuple[int, ...]:
    """The identity pattern of a sequence: each item replaced by the rank of its first
    occurrence (A B A -> 0 1 0)."""
    first: dict[int, int] = {}
    return tuple(first.setdefault(item, len(first)) for item in items)


AAA, AAB, ABA, ABB, ABC = (0, 0, 0), (0, 0, 1), (0, 1, 0), (0, 1, 1), (0, 1, 2)


def check_same_diff6(seq: np.ndarray, target: np.ndarray, test: bool) -> None:
    for row, answer in zip(seq.tolist(), target.tolist(), strict=True):
        first, second = row[:3], row[3:]
        assert answer == int(first != second)
        assert len(set(row)) <= 2  # both triples over the same one or two objects
        patterns = {signature(first), signature(second)}
        # the relation AAB: in every test trial, in no training trial
        assert (AAB in patterns) == test
        assert patterns <= ({AAA, ABA, ABB, AAB} if test else {AAA, ABA, ABB})


def check_rmts3(seq: np.ndarray, target: np.ndarray, test: bool, missing: bool) -> None:
    for row, answer in zip(seq.tolist(), target.tolist(), strict=True):
        source, choice0, choice1 = row[:3], row[3:6], row[6:]
        matches = [signature(choice) == signature(source) for choice in (choice0, choice1)]
        assert sum(matches) == 1 and matches[answer]
        # the triples use disjoint objects
        assert len(set(row)) == sum(len(set(triple)) for triple in (source, choice0, choice1))
        assert signature(source) in ({AAB, ABC} if test else {AAA, ABA, ABB})
        if missing and not test:
            assert (
                signature(source) != ABA and signature(row[3:6] if answer == 0 else row[6:]) != ABA
            )


def check_distribution(seq: np.ndarray, target: np.ndarray, n: int, hard_test: bool | None) -> None:
    row1, row2, choices = seq[:, :n], seq[:, n : 2 * n - 1], seq[:, 2 * n - 1 :]
    assert choices.shape[1] == n + 1
    for first, second, options, answer in zip(row1, row2, choices, target, strict=True):
        assert len(set(first)) == n and len(set(second)) == n - 1 and len(set(options)) == n + 1
        (missing,) = set(first) - set(second)
        assert set(first) <= set(options)
        assert options[answer] == missing
        if hard_test is not None:
            prefix = n - 3
            kept = set(second[:prefix]) == set(first[:prefix])
            assert kept == hard_test


def check_identity4(seq: np.ndarray, target: np.ndarray, codes: set[tuple[int, ...]]) -> None:
    for row, answer in zip(seq.tolist(), target.tolist(), strict=True):
        row1, row2, choices = row[:4], row[4:7], row[7:]
        assert signature(row1) in codes
        assert not set(row1) & set(row2) and len(set(choices)) == 6
        assert set(row1) | set(row2) <= set(choices)
        assert signature(row1[:3]) == signature(row2)
        completion = row2[row1[:3].index(row1[3])]
        assert choices[answer] == completion


def code_signatures(codes) -> set[tuple[int, ...]]:
    return {signature(code) for code in codes}


TWO_LETTER = code_signatures(["aaaa", "abaa", "aaba", "baaa", "abba", "abab", "aabb"])
THREE_LETTER = code_signatures(["abca", "baca", "bcaa"])
IDENTITY4_CODES = {  # (training codes, test codes) of identity_rules4*.py
    "identity_rules4": (TWO_LETTER, THREE_LETTER),
    "identity_rules4_flipped": (THREE_LETTER, TWO_LETTER),
    "identity_rules4_missing": (TWO_LETTER - code_signatures(["abaa", "abab"]), THREE_LETTER),
    "identity_rules4_flipped_missing": (code_signatures(["baca", "bcaa"]), TWO_LETTER),
}
DISTRIBUTIONS = {"dist10": (10, False), "dist20": (20, False)}
DISTRIBUTIONS |= {"dist10_hard7": (10, True), "dist20_hard17": (20, True)}


def check_trials(name: str, trials, test: bool) -> None:
    seq, target = trials.objects, trials.target
    task = make_relational_task(name)
    assert seq.dtype == np.int64 and target.dtype == np.int64
    assert seq.shape == (len(trials), task.sequence_length)
    assert target.min() >= 0 and target.max() < task.num_classes
    if name == "same_diff6_hard":
        check_same_diff6(seq, target, test)
    elif name.startswith("rmts3"):
        check_rmts3(seq, target, test, missing=name.endswith("missing"))
    elif name in DISTRIBUTIONS:
        n, hard = DISTRIBUTIONS[name]
        check_distribution(seq, target, n, test if hard else None)
    else:
        train_codes, test_codes = IDENTITY4_CODES[name]
        check_identity4(seq, target, test_codes if test else train_codes)


# ---- the tasks ----------------------------------------------------------------------------------

SHAPES = {  # (sequence length, classes) of the official y_dim / seq_len
    "same_diff6_hard": (6, 2),
    "rmts3_hard": (9, 2),
    "rmts3_hard_missing": (9, 2),
    "dist10": (30, 11),
    "dist20": (60, 21),
    "dist10_hard7": (30, 11),
    "dist20_hard17": (60, 21),
    "identity_rules4": (13, 6),
    "identity_rules4_flipped": (13, 6),
    "identity_rules4_missing": (13, 6),
    "identity_rules4_flipped_missing": (13, 6),
}


def test_registry_holds_every_variant_after_esbn_tasks():
    assert set(CORELNET_TASKS) == set(SHAPES)
    assert list(RELATIONAL_TASKS)[:4] == ["same_diff", "rmts", "dist3", "identity_rules"]
    for name, shape in SHAPES.items():
        task = make_relational_task(name)
        assert (task.sequence_length, task.num_classes) == shape


@pytest.mark.parametrize("name", list(SHAPES))
@pytest.mark.parametrize("m", [0, 50])
def test_splits_follow_the_definitions(name, m):
    splits = generate_splits(
        make_relational_task(name), m, seed=3, train_size=400, val_size=50, test_size=400
    )
    check_trials(name, splits.train, test=False)
    check_trials(name, splits.val, test=False)
    check_trials(name, splits.test, test=True)
    if m:
        train_objects, test_objects = set(splits.train_objects), set(splits.test_objects)
        assert len(test_objects) == m and not train_objects & test_objects
        for trials in (splits.train, splits.val):
            assert set(np.unique(trials.objects)) <= train_objects
        assert set(np.unique(splits.test.objects)) <= test_objects


def test_default_sizes_and_allowed_holdouts():
    for name in SHAPES:
        task = make_relational_task(name)
        assert tuple(resolve_sizes(task, 0)) == (10000, 1000, 10000)
    assert make_relational_task("rmts3_hard").paper_holdouts == (0, 50, 85)  # 8 objects a trial
    assert make_relational_task("dist20").paper_holdouts == (0, 50)  # 21 objects a trial
    assert make_relational_task("same_diff6_hard").paper_holdouts == (0, 50, 85, 95)


def test_kind_shares_are_the_official_batch_proportions():
    # same_diff6_hard.py: 2B each of aaa, abb, aba and B of each unequal kind (training);
    # 6B of aab and B of each unequal kind (test): exact counts of 12,000 trials
    task = SameDifferent6Hard()
    rng = np.random.default_rng(0)
    train = np.bincount(task.sample(IID_TRAIN, np.arange(100), 12000, rng).kind, minlength=16)
    test = np.bincount(task.sample(IID_TEST, np.arange(100), 12000, rng).kind, minlength=16)
    assert train.tolist() == [2000] * 3 + [1000] * 6 + [0] * 7
    assert test.tolist() == [0] * 9 + [6000] + [1000] * 6


def test_share_counts_are_exact_and_sum_to_size():
    rng = np.random.default_rng(1)
    counts = share_counts(np.array([2.0, 1.0, 0.0, 1.0]), 10, rng)
    assert counts.sum() == 10 and counts[2] == 0
    assert counts[0] == 5 and sorted(counts[[1, 3]].tolist()) == [2, 3]
    assert share_counts(np.array([1.0, 1.0, 1.0]), 0, rng).tolist() == [0, 0, 0]


def test_identity4_codes_hand_computed():
    # baaa: row 1 B A A A; 2 distinct letters, so row 2 is letters shifted by 2: D C C, answer C
    kind = identity4_kind("baaa")
    assert kind.rows.tolist() == [1, 0, 0, 0, 3, 2, 2] and kind.answer == 2
    # abca: A B C A | D E F -> D, the six letters shown
    kind = identity4_kind("abca")
    assert kind.rows.tolist() == [0, 1, 2, 0, 3, 4, 5] and kind.answer == 3
    letters, targets = kind.draw_letters(50, np.random.default_rng(0))
    assert np.all(letters[np.arange(50), 7 + targets] == 3)
    assert np.all(np.sort(letters[:, 7:], axis=1) == np.arange(6))


def test_letters_are_filled_uniformly():
    # ABB|ABB over 3 objects: each of the 3 * 2 ordered pairs about equally often
    task = SameDifferent6Hard()
    trials = task.draw(1, np.array([10, 11, 12]), 6000, np.random.default_rng(2))
    pairs = Counter((row[0], row[1]) for row in trials.objects.tolist())
    assert set(pairs) == set(itertools.permutations([10, 11, 12], 2))
    assert all(abs(count - 1000) < 4 * math.sqrt(1000) for count in pairs.values())


def test_distribution_permutations_hard_and_kept():
    rng = np.random.default_rng(3)
    scrambled = DistributionKind("train", 10, prefix=7, prefix_kept=False)
    kept = DistributionKind("test", 10, prefix=7, prefix_kept=True)
    for kind, expected in ((scrambled, False), (kept, True)):
        letters, targets = kind.draw_letters(2000, rng)
        row2 = letters[:, 10:19]
        assert np.all((np.sort(row2[:, :7], axis=1) == np.arange(7)).all(axis=1) == expected)
        answer = letters[np.arange(2000), 19 + targets]
        assert np.all(np.sort(np.column_stack([row2, answer]), axis=1) == np.arange(10))
    # the kept answer is one of the last three of row 1, each about a third of the time
    letters, targets = kept.draw_letters(3000, rng)
    counts = np.bincount(letters[np.arange(3000), 19 + targets], minlength=11)
    assert counts[:7].sum() == 0 and counts[10] == 0
    assert np.all(np.abs(counts[7:10] - 1000) < 4 * math.sqrt(1000))


@pytest.mark.parametrize("name", ["same_diff6_hard", "rmts3_hard", "dist10", "identity_rules4"])
def test_classes_are_balanced(name):
    task = make_relational_task(name)
    splits = generate_splits(
        make_relational_task(name), 50, seed=4, train_size=3600, val_size=0, test_size=3600
    )
    for trials in (splits.train, splits.test):
        counts = np.bincount(trials.target, minlength=task.num_classes)
        expected = len(trials) / task.num_classes
        sd = math.sqrt(len(trials) / task.num_classes * (1 - 1 / task.num_classes))
        assert np.all(np.abs(counts - expected) < 4 * sd), counts
    if name == "same_diff6_hard":  # exact shares (3600 = 300 * 12) give exact balance
        assert np.bincount(splits.train.target).tolist() == [1800, 1800]


def test_base_tasks_as_corelnet_draws_them():
    rng = np.random.default_rng(5)
    rmts = RMTSIID().sample(IID_TRAIN, np.arange(100), 600, rng)
    for row, answer in zip(rmts.objects.tolist(), rmts.target.tolist(), strict=True):
        source_same = row[0] == row[1]
        pair_same = [row[2] == row[3], row[4] == row[5]]
        assert pair_same[answer] == source_same and pair_same[1 - answer] != source_same
    rules = IdentityRulesIID().sample(IID_TRAIN, np.arange(100), 600, rng)
    assert np.bincount(rules.kind).tolist() == [200, 200, 200]
    seq = rules.objects
    answer = np.where(seq[:, 1] == seq[:, 2], seq[:, 4], seq[:, 3])
    assert np.all(seq[np.arange(600), 5 + rules.target] == answer)


@pytest.mark.parametrize("name", ["rmts3_hard", "dist20_hard17", "identity_rules4_flipped"])
def test_seeded_determinism(name):
    first = generate_splits(
        make_relational_task(name), 50, seed=6, train_size=100, val_size=10, test_size=100
    )
    again = generate_splits(
        make_relational_task(name), 50, seed=6, train_size=100, val_size=10, test_size=100
    )
    other = generate_splits(
        make_relational_task(name), 50, seed=7, train_size=100, val_size=10, test_size=100
    )
    for split in ("train", "val", "test"):
        a, b, c = (getattr(s, split) for s in (first, again, other))
        assert np.array_equal(a.objects, b.objects) and np.array_equal(a.target, b.target)
        assert not np.array_equal(a.objects, c.objects)


def test_configuration_errors():
    with pytest.raises(ValueError, match=r"m_holdout=95 is not allowed.*8\.\.92"):
        generate_splits(make_relational_task("rmts3_hard"), 95)
    with pytest.raises(ValueError, match=r"21\.\.79"):
        generate_splits(make_relational_task("dist20"), 85)
    with pytest.raises(ValueError, match="use one of same_diff, rmts, dist3, identity_rules, "):
        make_relational_task("RMTS3_hard")
    with pytest.raises(ValueError, match="every pattern must use each of its letters"):
        PatternKind("bad", [("AAC", 0)])
    with pytest.raises(ValueError, match="unknown sampling method 'full_space'"):
        SameDifferent6Hard().sample("full_space", np.arange(10), 5, np.random.default_rng(0))


# ---- mutation-review gaps: exact permutation spaces, documented kinds, segments, holdouts ------


def full_permutations(kind: DistributionKind, size: int, seed: int) -> Counter:
    """Row 2's whole permutations (its n - 1 letters and the answer) of ``size`` drawn trials."""
    letters, targets = kind.draw_letters(size, np.random.default_rng(seed))
    n = kind.n
    answer = letters[np.arange(size), 2 * n - 1 + targets]
    return Counter(map(tuple, np.column_stack([letters[:, n : 2 * n - 1], answer]).tolist()))


@pytest.mark.parametrize(("prefix", "kept"), [(1, False), (2, False), (1, True), (2, True)])
def test_distribution_permutations_are_uniform_over_the_allowed_ones(
    prefix: int, kept: bool
) -> None:
    # training (prefix_kept=False): every permutation of 0..3 whose first `prefix` letters are
    # not a permutation of 0..prefix-1 (prefix 1: first letter 1, 2 or 3; 18 of 24), uniformly;
    # test (prefix_kept=True): a permutation of 0..prefix-1, then one of prefix..3
    kind = DistributionKind("t", 4, prefix=prefix, prefix_kept=kept)
    allowed = {
        perm
        for perm in itertools.permutations(range(4))
        if (set(perm[:prefix]) == set(range(prefix))) == kept
    }
    expected_sizes = {(1, False): 18, (2, False): 20, (1, True): 6, (2, True): 4}
    assert len(allowed) == expected_sizes[(prefix, kept)]
    size = 500 * len(allowed)
    counts = full_permutations(kind, size, seed=prefix + 10 * kept)
    assert set(counts) == allowed
    assert all(abs(count - 500) < 5 * math.sqrt(500) for count in counts.values()), counts
    if prefix == 1 and not kept:
        assert {perm[0] for perm in counts} == {1, 2, 3}


def kind_signature(row: list[int]) -> tuple:
    """(source, match, other) identity patterns of an rmts3 trial and its number of objects."""
    source, first, second = row[:3], row[3:6], row[6:]
    match, other = (first, second) if signature(first) == signature(source) else (second, first)
    return signature(source), signature(match), signature(other), len(set(row))


RMTS3_TRAIN_KINDS = {  # RMTS3_hard.py: x_<name>_1/_2, source|match|other
    "aaa_bcb": (AAA, AAA, ABA, 4),  # AAA|BBB|CDC
    "aaa_cbb": (AAA, AAA, ABB, 4),  # AAA|BBB|DCC
    "aba5": (ABA, ABA, AAA, 5),  # ABA|CDC|EEE
    "abb5": (ABB, ABB, AAA, 5),  # ABB|CDD|EEE
    "aba6": (ABA, ABA, ABB, 6),  # ABA|CDC|EFF
    "abb6": (ABB, ABB, ABA, 6),  # ABB|CDD|EFE
}
RMTS3_TEST_KINDS = {(AAB, AAB, ABC, 7), (ABC, ABC, AAB, 8)}  # AAB|CCD|EFG, ABC|FGH|DDE


@pytest.mark.parametrize("name", ["rmts3_hard", "rmts3_hard_missing"])
def test_rmts3_kinds_are_the_documented_ones_in_equal_shares(name: str) -> None:
    # rmts3_hard trains on six kinds; rmts3_hard_missing only on AAA|BBB/DCC, ABB|CDD/EEE and
    # ABB|CDD/EFE (no ABA source or match: aaa_cbb, not aaa_bcb); each kind an equal share
    names = list(RMTS3_TRAIN_KINDS)
    if name == "rmts3_hard_missing":
        names = ["aaa_cbb", "abb5", "abb6"]
    splits = generate_splits(
        make_relational_task(name), 0, seed=8, train_size=1200, val_size=120, test_size=600
    )
    for trials, size in ((splits.train, 1200), (splits.val, 120)):
        counts = Counter(kind_signature(row) for row in trials.objects.tolist())
        assert counts == {RMTS3_TRAIN_KINDS[kind]: size // len(names) for kind in names}
    counts = Counter(kind_signature(row) for row in splits.test.objects.tolist())
    assert counts == {kind: 300 for kind in RMTS3_TEST_KINDS}


@pytest.mark.parametrize("name", sorted(CORELNET_TASKS))
def test_context_segments(name: str) -> None:
    # ESBN's context normalization groups: the rmts3 tasks normalize the source triple and the two
    # choice triples apart (RMTS3_hard.py task_seg); the others the whole sequence
    task = make_relational_task(name)
    if name.startswith("rmts3"):
        assert task.context_segments == ((0, 1, 2), (3, 4, 5), (6, 7, 8))
    else:
        assert task.context_segments == (tuple(range(task.sequence_length)),)


@pytest.mark.parametrize("name", sorted(CORELNET_TASKS))
def test_extreme_holdouts_are_allowed(name: str) -> None:
    # m = 0 and min_objects..100 - min_objects (both ends) are allowed; one beyond is refused
    task = make_relational_task(name)
    low, high = task.min_objects, 100 - task.min_objects
    for m in (0, low, high):
        splits = generate_splits(task, m, 9, train_size=6, val_size=3, test_size=6)
        check_trials(name, splits.train, test=False)
        check_trials(name, splits.test, test=True)
        if m:
            assert set(np.unique(splits.test.objects)) <= set(splits.test_objects)
            assert len(splits.test_objects) == m
    for m in (low - 1, high + 1):
        with pytest.raises(ValueError, match=rf"{low}\.\.{high}"):
            generate_splits(task, m, 9, train_size=6, val_size=3, test_size=6)
