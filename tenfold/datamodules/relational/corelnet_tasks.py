"""CoRelNet's variants of the relational psychophysics tasks: held-out relations, longer rows,
four-item rules, over the ESBN glyphs.

Kerg et al., "On Neural Architecture Inductive Biases for Relational Tasks" (arXiv 2206.05056);
every definition below is read from the official code, giancarlok/relationaltasks,
``cognitive_tests/tasks/<file>.py`` (``get_sample`` draws the training batches, ``get_test_sample``
the test batches of the tasks with held-out relations, ``main.py``). A trial is a sequence of N
glyph ids (:mod:`tenfold.datamodules.relational.glyphs`) and an answer class:

- ``same_diff6_hard`` (``same_diff6_hard.py``; N = 6, 2 classes): two triples over the same two
  objects -> 0 if they are the same sequence, 1 if not. Training: AAA|AAA, ABB|ABB, ABA|ABA (each
  twice as often) and AAA|BAA, BAA|AAA, BAA|ABA, ABA|BAA, ABA|AAA, AAA|ABA; test: the unseen
  relation AAB: AAB|AAB (half the trials), AAA|AAB, AAB|AAA, AAB|BAA, BAA|AAB, AAB|ABA, ABA|AAB.
- ``rmts3_hard`` (``RMTS3_hard.py``; N = 9, 2 classes): a source triple and two choice triples ->
  the choice (0, 1) with the source's identity pattern. Training sources AAA, ABA, ABB, matched by
  an AAA-, ABA- or ABB-triple against another pattern (six kinds, 4 to 6 objects); test sources
  AAB (AAB against ABC, 7 objects) and ABC (ABC against AAB, 8 objects).
- ``rmts3_hard_missing`` (``RMTS3_hard_missing.py``): rmts3_hard trained without the kinds whose
  source or match is ABA (AAA|BBB/DCC, ABB|CDD/EEE, ABB|CDD/EFE).
- ``dist10``, ``dist20`` (``dist10.py``, ``dist20.py``; N = 3n, n + 1 classes): row 1 is n distinct
  objects, row 2 the first n - 1 of a permutation of row 1, the choices row 1's objects and one
  more in random order -> the choice completing row 2 (n = 10, 20).
- ``dist10_hard7``, ``dist20_hard17`` (``dist10_hard7.py``, ``dist20_hard17.py``): as distN, but
  row 2 starts with a permutation of row 1's first n - 3 objects in every test trial and in no
  training trial (so the test answer is one of row 1's last three objects).
- ``identity_rules4`` (``identity_rules4_.py``; N = 13, 6 classes): row 1 is 4 objects following a
  rule code (``aabb`` is A A B B), row 2 the code's first 3 letters over new objects, the choices
  the trial's 6 objects in random order -> the choice completing row 2. Training codes aaaa, abaa,
  aaba, baaa, abba, abab, aabb; test codes abca, baca, bcaa.
- ``identity_rules4_flipped`` (``identity_rules4_flipped.py``): training on abca, baca, bcaa, test
  on the other seven.
- ``identity_rules4_missing`` (``identity_rules4_missing.py``): identity_rules4 without abaa and
  abab in training.
- ``identity_rules4_flipped_missing`` (``identity_rules4_flipped_missing.py``): training on baca,
  bcaa, test on the seven codes of identity_rules4's training.

Sampling. The official code draws every batch afresh; here a split is a fixed set of trials drawn
the same way, independently: the kinds of the split (training or test kinds) get their official
shares of the trials (exact counts, the remainder given at random), each trial fills its kind's
letters with a uniformly random injective assignment of the split's objects and draws its
presentation (which choice slot holds the match, the order of the choices, the permutation of
row 2) uniformly, and the split is shuffled. Trials may repeat, as in the official batches. The
held-out objects are ESBN's (``m_holdout`` of the 100 glyphs,
:func:`~tenfold.datamodules.relational.esbn_tasks.generate_splits`); with ``m = 0`` training and test
trials come from all objects, the test trials of the held-out relations from the test kinds.
Sizes: 10,000 training and 10,000 test trials (the official ``--train_set_size`` and
``--test_set_size`` defaults; the official loop instead draws 5,000 fresh training batches and
tests on 1,000 fresh batches), 1,000 validation trials drawn like the training trials.

The official tasks render glyphs as 3 identical channels; here they stay one channel (the same
information). The base tasks as CoRelNet's code draws them (:class:`SameDifferentIID`,
:class:`RMTSIID`, :class:`DistributionOfThreeIID`, :class:`IdentityRulesIID`) are the relational
structure of the coloured variants (:mod:`tenfold.datamodules.relational.coloured_tasks`).

``dist20.py`` defines ``get_sample`` twice, and the second definition, which draws colour patches
instead of glyphs, is the one the official code runs; here dist20 draws glyphs, as dist10 does.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import Sequence

import numpy as np

from tenfold.datamodules.relational.esbn_tasks import (
    PAPER_NUM_OBJECTS,
    PAPER_SET_SIZE,
    RelationalTask,
    Trials,
)

__all__ = [
    "IID_TRAIN",
    "IID_TEST",
    "UNLIMITED",
    "LetterKind",
    "PatternKind",
    "RuleCompletionKind",
    "DistributionKind",
    "LetterTask",
    "SameDifferentIID",
    "RMTSIID",
    "DistributionOfThreeIID",
    "IdentityRulesIID",
    "SameDifferent6Hard",
    "RMTS3Hard",
    "RMTS3HardMissing",
    "Distribution10",
    "Distribution20",
    "Distribution10Hard",
    "Distribution20Hard",
    "IdentityRules4",
    "IdentityRules4Flipped",
    "IdentityRules4Missing",
    "IdentityRules4FlippedMissing",
    "CORELNET_TASKS",
    "distinct_draws",
    "share_counts",
]

IID_TRAIN = "iid_train"
"""Sampling method: independent draws from the training kinds."""
IID_TEST = "iid_test"
"""Sampling method: independent draws from the test kinds."""
UNLIMITED = sys.maxsize
"""Capacity of independent draws (trials may repeat, so any number can be drawn)."""
_ESBN_HOLDOUTS = (0, 50, 85, 95)


def _letter_indices(pattern: str) -> list[int]:
    """``"ABA|CDC"`` -> ``[0, 1, 0, 2, 3, 2]``: letter A is 0; ``|`` only separates rows."""
    return [ord(letter) - ord("A") for letter in pattern if letter != "|"]


def distinct_draws(
    objects: np.ndarray, size: int, count: int, rng: np.random.Generator
) -> np.ndarray:
    """``size`` rows of ``count`` distinct entries of ``objects``, each row a uniformly random
    ordered choice: int64 ``[size, count]``."""
    if count > len(objects):
        raise ValueError(
            f"a trial needs {count} distinct objects, but the split has only {len(objects)}: "
            "hold out fewer objects"
        )
    order = np.argsort(rng.random((size, len(objects))), axis=1)[:, :count]
    return objects[order].astype(np.int64)


def share_counts(shares: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` split into integer counts proportional to ``shares`` (non-negative, not all 0):
    the floor of each exact share, the remainder given to distinct entries drawn with
    probabilities proportional to the fractional parts."""
    exact = size * shares / shares.sum()
    counts = np.floor(exact).astype(np.int64)
    remainder = int(size - counts.sum())
    if remainder:
        fractions = exact - counts
        counts[
            rng.choice(len(shares), size=remainder, replace=False, p=fractions / fractions.sum())
        ] += 1
    return counts


class LetterKind(ABC):
    """A kind of trial written over letters: each trial is a row of letter indices (into
    ``num_letters`` distinct objects) and a target; :class:`LetterTask` fills the letters.

    Attributes:
        name: e.g. ``"AAA|BAA"``, ``"abca"``.
        num_letters: distinct objects of a trial.
        length: letters per trial (the sequence length).
    """

    name: str
    num_letters: int
    length: int

    @abstractmethod
    def draw_letters(self, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``size`` trials: letters int64 ``[size, length]`` and targets int64 ``[size]``."""


class PatternKind(LetterKind):
    """Trials shown as one of a few letter patterns, each with its own target (e.g. the source
    triple followed by its two choices in either order). A trial draws its pattern uniformly.

    Args:
        name: the kind's name.
        presentations: ``(pattern, target)`` pairs, e.g. ``("AAA|BBB|CDC", 0)``; every pattern
            uses the same letters A, B, ... (all of them) and has the same length.
    """

    def __init__(self, name: str, presentations: Sequence[tuple[str, int]]) -> None:
        letters = [_letter_indices(pattern) for pattern, _ in presentations]
        if len({len(row) for row in letters}) != 1:
            raise ValueError(f"kind {name!r}: its patterns have different lengths")
        num_letters = max(max(row) for row in letters) + 1
        if any(set(row) != set(range(num_letters)) for row in letters):
            raise ValueError(
                f"kind {name!r}: every pattern must use each of its letters A.. once at least"
            )
        self.name = name
        self.patterns = tuple(pattern for pattern, _ in presentations)
        self.letters = np.array(letters, dtype=np.int64)
        self.targets = np.array([target for _, target in presentations], dtype=np.int64)
        self.num_letters = num_letters
        self.length = self.letters.shape[1]

    def draw_letters(self, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        presentation = rng.integers(len(self.patterns), size=size)
        return self.letters[presentation], self.targets[presentation]


class RuleCompletionKind(LetterKind):
    """Rows that follow a rule and a last row one short, then the trial's ``num_letters`` letters
    as choices in uniformly random order; the target is the position of ``answer`` among them.

    Args:
        name: the kind's name.
        rows: the shown letters, e.g. ``"ABA|CD"``.
        answer: the letter completing the last row, e.g. ``"C"``.
        num_letters: letters of the trial; those beyond the shown ones appear only as choices.
    """

    def __init__(self, name: str, rows: str, answer: str, num_letters: int) -> None:
        self.name = name
        self.rows = np.array(_letter_indices(rows), dtype=np.int64)
        self.answer = _letter_indices(answer)[0]
        if max(self.rows.max(), self.answer) >= num_letters:
            raise ValueError(
                f"kind {name!r}: {rows!r} -> {answer!r} uses more than {num_letters} letters"
            )
        self.num_letters = num_letters
        self.length = len(self.rows) + num_letters

    def draw_letters(self, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        choices = rng.permuted(np.tile(np.arange(self.num_letters), (size, 1)), axis=1)
        letters = np.column_stack([np.tile(self.rows, (size, 1)), choices])
        return letters, np.argmax(choices == self.answer, axis=1).astype(np.int64)


class DistributionKind(LetterKind):
    """Distribution of ``n``: row 1 is letters ``0..n-1``, row 2 the first ``n - 1`` letters of a
    permutation of row 1, then the choices ``0..n`` (letter ``n`` the distractor) in uniformly
    random order; the target is the position of the permutation's last letter.

    Args:
        name: the kind's name.
        n: objects per row.
        prefix: 0, or the length of the prefix that constrains the permutation
            (``cutoff_number`` of ``dist*_hard*.py``).
        prefix_kept: with ``prefix > 0``: False draws uniformly among the permutations whose first
            ``prefix`` letters are not a permutation of ``0..prefix-1`` (``get_permutation``,
            training), True draws a permutation of ``0..prefix-1`` followed by one of
            ``prefix..n-1`` (``get_test_permutation``, test).
    """

    def __init__(self, name: str, n: int, prefix: int = 0, prefix_kept: bool = False) -> None:
        if not 0 <= prefix < n:
            raise ValueError(f"kind {name!r}: prefix must be in 0..{n - 1}, got {prefix}")
        self.name = name
        self.n = n
        self.prefix = prefix
        self.prefix_kept = prefix_kept
        self.num_letters = n + 1
        self.length = 3 * n

    def _permutations(self, size: int, rng: np.random.Generator) -> np.ndarray:
        """Row 2's permutations of ``0..n-1``: int64 ``[size, n]``."""
        if self.prefix and self.prefix_kept:
            head = np.argsort(rng.random((size, self.prefix)), axis=1)
            tail = self.prefix + np.argsort(rng.random((size, self.n - self.prefix)), axis=1)
            return np.column_stack([head, tail])
        permutations = np.argsort(rng.random((size, self.n)), axis=1)
        if self.prefix:
            kept = permutations[:, : self.prefix].max(axis=1) < self.prefix
            while kept.any():
                permutations[kept] = np.argsort(rng.random((int(kept.sum()), self.n)), axis=1)
                kept = permutations[:, : self.prefix].max(axis=1) < self.prefix
        return permutations

    def draw_letters(self, size: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        permutations = self._permutations(size, rng)
        choices = rng.permuted(np.tile(np.arange(self.n + 1), (size, 1)), axis=1)
        letters = np.column_stack(
            [np.tile(np.arange(self.n), (size, 1)), permutations[:, :-1], choices]
        )
        return letters, np.argmax(choices == permutations[:, -1:], axis=1).astype(np.int64)


def _check_method(method: str) -> None:
    """Raises ValueError unless ``method`` is ``"iid_train"`` or ``"iid_test"``."""
    if method not in (IID_TRAIN, IID_TEST):
        raise ValueError(f"unknown sampling method {method!r}: use '{IID_TRAIN}' or '{IID_TEST}'")


class LetterTask(RelationalTask):
    """A task of :class:`LetterKind` kinds drawn independently, as CoRelNet's code draws its
    batches (module docstring): training splits from the training kinds, test splits from the
    test kinds, each kind with its share. Its sampling methods are ``"iid_train"`` and
    ``"iid_test"``; ESBN's pools (``"full_space"``, ``"subsample"``, :meth:`present`) do not apply.

    Args:
        kinds: every kind of the task.
        train_shares, test_shares: the share of each kind in training (and validation) and in
            test trials (0: the kind is not in that split).
    """

    name: str
    num_classes: int
    kinds: tuple[LetterKind, ...]

    def __init__(
        self,
        kinds: Sequence[LetterKind],
        train_shares: Sequence[float],
        test_shares: Sequence[float],
    ) -> None:
        if not len(kinds) == len(train_shares) == len(test_shares):
            raise ValueError(f"task {self.name!r}: one training and one test share per kind")
        if len({kind.length for kind in kinds}) != 1:
            raise ValueError(f"task {self.name!r}: its kinds have different sequence lengths")
        self.kinds = tuple(kinds)
        self.train_shares = np.array(train_shares, dtype=np.float64)
        self.test_shares = np.array(test_shares, dtype=np.float64)
        self.sequence_length = kinds[0].length
        self.min_objects = max(kind.num_letters for kind in kinds)
        self.paper_holdouts = tuple(
            m
            for m in _ESBN_HOLDOUTS
            if m == 0 or self.min_objects <= m <= PAPER_NUM_OBJECTS - self.min_objects
        )

    def sampling_methods(self, m_holdout: int) -> tuple[str, str]:
        return IID_TRAIN, IID_TEST

    def capacity(self, method: str, num_objects: int) -> int:
        """Unlimited: independent draws may repeat trials."""
        _check_method(method)
        return UNLIMITED

    def default_sizes(self, m_holdout: int, num_objects: int) -> tuple[int, int]:
        """10,000 training and 10,000 test trials at every m (module docstring)."""
        return PAPER_SET_SIZE, PAPER_SET_SIZE

    def draw(self, kind: int, objects: np.ndarray, size: int, rng: np.random.Generator) -> Trials:
        """``size`` independent trials of kind ``kind`` over the object ids ``objects``."""
        letters, targets = self.kinds[kind].draw_letters(size, rng)
        chosen = distinct_draws(objects, size, self.kinds[kind].num_letters, rng)
        return Trials(
            np.take_along_axis(chosen, letters, axis=1),
            targets,
            np.full(size, kind, dtype=np.int64),
        )

    def sample(
        self, method: str, objects: np.ndarray, size: int, rng: np.random.Generator
    ) -> Trials:
        """``size`` trials over ``objects``: each kind of the split its share, shuffled."""
        _check_method(method)
        shares = self.train_shares if method == IID_TRAIN else self.test_shares
        counts = share_counts(shares, size, rng)
        pieces = [self.draw(kind, objects, int(count), rng) for kind, count in enumerate(counts)]
        return Trials.concatenate(pieces).shuffled(rng)

    def sample_shared(
        self, objects: np.ndarray, train_size: int, test_size: int, rng: np.random.Generator
    ) -> tuple[Trials, Trials]:
        """The ``m = 0`` splits: training and test trials drawn over all objects."""
        train = self.sample(IID_TRAIN, objects, train_size, rng)
        return train, self.sample(IID_TEST, objects, test_size, rng)


def _single(pattern: str, target: int) -> PatternKind:
    """The kind of the one presentation ``pattern``."""
    return PatternKind(pattern, [(pattern, target)])


def _equal_shares(count: int) -> tuple[list[float], list[float]]:
    """Training and test shares of ``count`` kinds, all equal, the same in both splits."""
    return [1.0] * count, [1.0] * count


class SameDifferentIID(LetterTask):
    """Same/different as CoRelNet's code draws it (``same_diff.py``): half ``AA`` -> 0, half
    ``AB`` -> 1."""

    name = "same_diff_iid"
    num_classes = 2

    def __init__(self) -> None:
        super().__init__([_single("AA", 0), _single("AB", 1)], *_equal_shares(2))


class RMTSIID(LetterTask):
    """Relational match-to-sample as CoRelNet's code draws it (``RMTS.py``): half same-source
    (``AA|BB|CD`` -> 0, ``AA|CD|BB`` -> 1), half different-source (``AB|CD|EE`` -> 0,
    ``AB|EE|CD`` -> 1); the target is the choice pair with the source's relation."""

    name = "rmts_iid"
    num_classes = 2

    def __init__(self) -> None:
        same = PatternKind("same", [("AA|BB|CD", 0), ("AA|CD|BB", 1)])
        different = PatternKind("different", [("AB|CD|EE", 0), ("AB|EE|CD", 1)])
        super().__init__([same, different], *_equal_shares(2))

    @property
    def context_segments(self) -> tuple[tuple[int, ...], ...]:
        """The source pair and the two choice pairs (``RMTS.py``, ``task_seg``)."""
        return ((0, 1), (2, 3), (4, 5))


class DistributionOfThreeIID(LetterTask):
    """Distribution-of-three as CoRelNet's code draws it (``dist3.py``): 4 distinct objects, row 1
    the first three, row 2 two of a permutation of them, choices the four in random order."""

    name = "dist3_iid"
    num_classes = 4

    def __init__(self) -> None:
        super().__init__([DistributionKind("dist3", 3)], [1.0], [1.0])


class IdentityRulesIID(LetterTask):
    """Identity rules as CoRelNet's code draws them (``identity_rules.py``): a third each of AAA
    (``AAA|BB`` -> B, choices A, B and two unseen objects), ABA (``ABA|CD`` -> C) and ABB
    (``ABB|CD`` -> D), the four objects as choices in random order."""

    name = "identity_rules_iid"
    num_classes = 4

    def __init__(self) -> None:
        kinds = [
            RuleCompletionKind("AAA", "AAA|BB", "B", 4),
            RuleCompletionKind("ABA", "ABA|CD", "C", 4),
            RuleCompletionKind("ABB", "ABB|CD", "D", 4),
        ]
        super().__init__(kinds, *_equal_shares(3))


class SameDifferent6Hard(LetterTask):
    """Two triples over the same objects -> 0 if equal, 1 if not, with the relation AAB held out
    of training (``same_diff6_hard.py``; table in the module docstring). Shares as the official
    batches: training 2:2:2 for the three equal pairs and 1 for each of the six unequal ones, test
    6 for AAB|AAB and 1 for each of its six unequal pairs, so both splits are half 0, half 1."""

    name = "same_diff6_hard"
    num_classes = 2
    TRAIN = (
        ("AAA|AAA", 0, 2.0),
        ("ABB|ABB", 0, 2.0),
        ("ABA|ABA", 0, 2.0),
        ("AAA|BAA", 1, 1.0),
        ("BAA|AAA", 1, 1.0),
        ("BAA|ABA", 1, 1.0),
        ("ABA|BAA", 1, 1.0),
        ("ABA|AAA", 1, 1.0),
        ("AAA|ABA", 1, 1.0),
    )
    TEST = (
        ("AAB|AAB", 0, 6.0),
        ("AAA|AAB", 1, 1.0),
        ("AAB|AAA", 1, 1.0),
        ("AAB|BAA", 1, 1.0),
        ("BAA|AAB", 1, 1.0),
        ("AAB|ABA", 1, 1.0),
        ("ABA|AAB", 1, 1.0),
    )

    def __init__(self) -> None:
        kinds = [_single(pattern, target) for pattern, target, _ in self.TRAIN + self.TEST]
        train = [share for _, _, share in self.TRAIN] + [0.0] * len(self.TEST)
        test = [0.0] * len(self.TRAIN) + [share for _, _, share in self.TEST]
        super().__init__(kinds, train, test)


def _match_kind(name: str, source: str, match: str, other: str) -> PatternKind:
    """A three-triple kind: the source, then the match and the other choice in either order; the
    target is the match's slot."""
    return PatternKind(name, [(f"{source}|{match}|{other}", 0), (f"{source}|{other}|{match}", 1)])


class RMTS3Hard(LetterTask):
    """Which of two choice triples has the source triple's identity pattern (``RMTS3_hard.py``):
    training sources AAA, ABA, ABB; test sources AAB and ABC, relations never seen in training.
    Kinds as the official ``x_<name>_1``/``_2`` pairs, equal shares."""

    name = "rmts3_hard"
    num_classes = 2
    TRAIN = (
        ("aaa_bcb", "AAA", "BBB", "CDC"),
        ("aaa_cbb", "AAA", "BBB", "DCC"),
        ("aba5", "ABA", "CDC", "EEE"),
        ("abb5", "ABB", "CDD", "EEE"),
        ("aba6", "ABA", "CDC", "EFF"),
        ("abb6", "ABB", "CDD", "EFE"),
    )
    TEST = (
        ("aab_cde", "AAB", "CCD", "EFG"),
        ("abc_dde", "ABC", "FGH", "DDE"),
    )

    def __init__(self) -> None:
        kinds = [_match_kind(*spec) for spec in self.TRAIN + self.TEST]
        train = [1.0] * len(self.TRAIN) + [0.0] * len(self.TEST)
        test = [0.0] * len(self.TRAIN) + [1.0] * len(self.TEST)
        super().__init__(kinds, train, test)

    @property
    def context_segments(self) -> tuple[tuple[int, ...], ...]:
        """The source triple and the two choice triples (``RMTS3_hard.py``, ``task_seg``)."""
        return ((0, 1, 2), (3, 4, 5), (6, 7, 8))


class RMTS3HardMissing(RMTS3Hard):
    """:class:`RMTS3Hard` trained without ABA as source or match (``RMTS3_hard_missing.py``:
    ``aaa_cbb``, ``abb5``, ``abb6``); the same test."""

    name = "rmts3_hard_missing"
    TRAIN = tuple(spec for spec in RMTS3Hard.TRAIN if spec[0] in ("aaa_cbb", "abb5", "abb6"))


class _DistributionOfN(LetterTask):
    """Distribution of ``N`` (``dist10.py``, ``dist20.py``): 3N positions, N + 1 classes; with
    ``HARD`` the permutation's first N - 3 letters are constrained (``dist*_hard*.py``)."""

    N: int
    HARD: bool = False

    def __init__(self) -> None:
        if not self.HARD:
            super().__init__([DistributionKind(self.name, self.N)], [1.0], [1.0])
            return
        prefix = self.N - 3
        kinds = [
            DistributionKind(f"{self.name}_scrambled", self.N, prefix, prefix_kept=False),
            DistributionKind(f"{self.name}_kept", self.N, prefix, prefix_kept=True),
        ]
        super().__init__(kinds, [1.0, 0.0], [0.0, 1.0])


class Distribution10(_DistributionOfN):
    """Distribution of ten (``dist10.py``): 30 positions, 11 classes."""

    name = "dist10"
    num_classes = 11
    N = 10


class Distribution20(_DistributionOfN):
    """Distribution of twenty (``dist20.py``, drawing glyphs: module docstring): 60 positions,
    21 classes."""

    name = "dist20"
    num_classes = 21
    N = 20


class Distribution10Hard(_DistributionOfN):
    """Distribution of ten whose test trials keep row 1's first seven objects first in row 2, a
    kind never seen in training (``dist10_hard7.py``)."""

    name = "dist10_hard7"
    num_classes = 11
    N = 10
    HARD = True


class Distribution20Hard(_DistributionOfN):
    """Distribution of twenty whose test trials keep row 1's first seventeen objects first in
    row 2, a kind never seen in training (``dist20_hard17.py``)."""

    name = "dist20_hard17"
    num_classes = 21
    N = 20
    HARD = True


def identity4_kind(code: str) -> RuleCompletionKind:
    """The four-item rule ``code`` (``identity_rules4_*.py``, ``gen_sample``): row 1 is the code
    over letters a, b, c; row 2 its first three letters shifted by the number of distinct letters
    (new objects); the answer is the shifted last letter; the choices are all 6 letters."""
    shift = len(set(code))
    row1 = code.upper()
    row2 = "".join(chr(ord(letter) + shift) for letter in row1[:3])
    return RuleCompletionKind(code, f"{row1}|{row2}", chr(ord(row1[3]) + shift), 6)


class _IdentityRules4(LetterTask):
    """Four-item identity rules with the codes of ``TRAIN_CODES`` in training and ``TEST_CODES``
    in test, an equal share each (``identity_rules4_*.py``)."""

    num_classes = 6
    TRAIN_CODES: tuple[str, ...]
    TEST_CODES: tuple[str, ...]

    def __init__(self) -> None:
        codes = self.TRAIN_CODES + self.TEST_CODES
        train = [1.0] * len(self.TRAIN_CODES) + [0.0] * len(self.TEST_CODES)
        test = [0.0] * len(self.TRAIN_CODES) + [1.0] * len(self.TEST_CODES)
        super().__init__([identity4_kind(code) for code in codes], train, test)


_TWO_LETTER_CODES = ("aaaa", "abaa", "aaba", "baaa", "abba", "abab", "aabb")
_THREE_LETTER_CODES = ("abca", "baca", "bcaa")


class IdentityRules4(_IdentityRules4):
    """Training on the rules over one or two objects, test on the three-object rules
    (``identity_rules4_.py``)."""

    name = "identity_rules4"
    TRAIN_CODES = _TWO_LETTER_CODES
    TEST_CODES = _THREE_LETTER_CODES


class IdentityRules4Flipped(_IdentityRules4):
    """Training on the three-object rules, test on the others (``identity_rules4_flipped.py``)."""

    name = "identity_rules4_flipped"
    TRAIN_CODES = _THREE_LETTER_CODES
    TEST_CODES = _TWO_LETTER_CODES


class IdentityRules4Missing(_IdentityRules4):
    """:class:`IdentityRules4` without ``abaa`` and ``abab`` in training
    (``identity_rules4_missing.py``)."""

    name = "identity_rules4_missing"
    TRAIN_CODES = tuple(code for code in _TWO_LETTER_CODES if code not in ("abaa", "abab"))
    TEST_CODES = _THREE_LETTER_CODES


class IdentityRules4FlippedMissing(_IdentityRules4):
    """:class:`IdentityRules4Flipped` without ``abca`` in training
    (``identity_rules4_flipped_missing.py``)."""

    name = "identity_rules4_flipped_missing"
    TRAIN_CODES = ("baca", "bcaa")
    TEST_CODES = _TWO_LETTER_CODES


CORELNET_TASKS: dict[str, type[LetterTask]] = {
    task.name: task
    for task in (
        SameDifferent6Hard,
        RMTS3Hard,
        RMTS3HardMissing,
        Distribution10,
        Distribution20,
        Distribution10Hard,
        Distribution20Hard,
        IdentityRules4,
        IdentityRules4Flipped,
        IdentityRules4Missing,
        IdentityRules4FlippedMissing,
    )
}
"""CoRelNet's glyph variants by name (the coloured ones are in
:mod:`tenfold.datamodules.relational.coloured_tasks`)."""
