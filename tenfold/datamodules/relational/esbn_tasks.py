"""Trial generators of the four ESBN relational tasks with held-out objects.

The tasks of Webb, Sinha & Cohen, "Emergent Symbols through Binding in External Memory" (ICLR 2021,
arXiv 2012.14601; official code taylorwwebb/emergent_symbols, ``tasks/*.py`` and
``train_and_eval.py``), which CoRelNet (arXiv 2206.05056) and Compositional Attention
(arXiv 2110.09419, its "logical reasoning tasks of ESBN") use unchanged. A trial is a sequence of
N object ids (glyph images, :mod:`tenfold.datamodules.relational.glyphs`) and an answer class:

==============  ==  =======  ==================================================================
task            N   classes  sequence -> target
==============  ==  =======  ==================================================================
same_diff       2   2        ``[x, y]`` -> 0 if ``x == y`` ("same"), 1 if not ("different")
rmts            6   2        ``[source pair, pair 0, pair 1]`` -> the choice pair (0 or 1) whose
                             relation (same or different) is the source pair's; the other pair has
                             the other relation. Four (same source) or five (different source)
                             distinct objects per trial.
dist3           9   4        ``[row 1 (3), row 2 (first 2), 4 choices]``: row 2 is a permutation
                             of row 1's three distinct objects -> the choice that is row 2's third
                             object. The choices are row 1's objects and one other object of the
                             split, in random order.
identity_rules  9   4        ``[row 1 (3), row 2 (first 2), 4 choices]``: row 1 is AAA, ABA or ABB,
                             row 2 uses new objects -> the choice that completes row 2 by row 1's
                             rule. The choices are the trial's four objects in random order (for
                             AAA: row 1's A, row 2's A and two objects not shown).
==============  ==  =======  ==================================================================

Held-out objects (``train_and_eval.py``): the ``n = 100`` objects are permuted at random; with
``m > 0`` the first ``m`` are the test objects and the other ``n - m`` the training objects, so no
test trial shares an object with a training trial. With ``m = 0`` both splits use all objects and
test trials are distinct from training trials (one pool split in two; same_diff splits its same
and different trials 95/5 before balancing, ``tasks/same_diff.py``).

Trial kinds and sampling. Each task has kinds of trials (same/different; the source relation for
rmts; AAA/ABA/ABB); a kind is every way of filling its templates with distinct objects
(:class:`TrialKind`), so its size is a binomial coefficient times the number of templates, as the
counts in the docstrings of ``tasks/*.py``. A split is sampled by one of two methods of the official
code:

- ``"full_space"``: a uniformly random subset, in random order, of the pool of all trials of every
  kind, where a smaller kind is topped up with repeats drawn with replacement (same_diff: the "same"
  trials are ``n (n - 1)`` draws with replacement from the ``n`` same pairs; rmts: a kind is topped
  up to half the requested size; identity_rules: AAA is topped up to the size of ABA). This equals
  shuffling the whole pool and taking a prefix, which is what the official code does, without
  building pools of millions of trials.
- ``"subsample"``: ``ceil(size / K)`` distinct trials of each of the K kinds, shuffled, cut to
  ``size`` (rmts and identity_rules: train when ``m < 85``, and test).

Sizes (``train_and_eval.py`` defaults ``--train_set_size 10000 --test_set_size 10000
--train_proportion 0.95``): a split gets ``min(10000, capacity)`` trials, capacity being the number
of trials its method can give over its objects (K times the largest kind for ``"full_space"``, K
times the smallest for ``"subsample"``, where the official code also counts K times the largest:
the two agree wherever the kinds are big enough, in every setting of the papers); with ``m = 0``,
when 20,000 exceed the capacity, 95 % and 5 % of it. The official code has no validation set:
here validation trials are drawn like training trials, from the training objects, by an
independent random stream (they may repeat training trials; with ``m > 0`` they never contain a
held-out object, with ``m = 0``, where training and test share every object, they may repeat test
trials too: experiments therefore test the final weights, not the best validated ones).

The CoRelNet variants (more distractors, longer rows, four-item rules, separate features) are new
kinds, templates or presentations: a task's kinds are built in its constructor and
:meth:`RelationalTask.present` turns sampled trials into sequences.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

__all__ = [
    "PAPER_NUM_OBJECTS",
    "PAPER_SET_SIZE",
    "PAPER_TRAIN_PROPORTION",
    "FULL_SPACE_TRAINING_FROM",
    "DEFAULT_VAL_SIZE",
    "FULL_SPACE",
    "SUBSAMPLE",
    "Trials",
    "TaskSplits",
    "SplitSizes",
    "TrialKind",
    "PoolPart",
    "RelationalTask",
    "SameDifferent",
    "RelationalMatchToSample",
    "DistributionOfThree",
    "IdentityRules",
    "TASKS",
    "make_task",
    "resolve_sizes",
    "generate_splits",
]

PAPER_NUM_OBJECTS = 100
"""Number of objects (``--n_shapes``)."""
PAPER_SET_SIZE = 10_000
"""Requested training and test set size (``--train_set_size``, ``--test_set_size``)."""
PAPER_TRAIN_PROPORTION = 0.95
"""Training share of the trials when both splits come from one pool (``--train_proportion``)."""
FULL_SPACE_TRAINING_FROM = 85
"""rmts and identity_rules train on ``"full_space"`` from this m on (``scripts/RMTS.sh``,
``scripts/identity_rules.sh``: ``--train_gen_method full_space`` for m = 85 and 95)."""
DEFAULT_VAL_SIZE = 1_000
"""Validation trials when none are asked for (not in the paper, which has no validation set)."""
FULL_SPACE = "full_space"
SUBSAMPLE = "subsample"
_ENUMERATION_LIMIT = 50_000
"""Kinds up to this size are sampled without replacement by listing them; larger ones by drawing
with replacement and dropping repeats."""


@dataclass(frozen=True, eq=False)
class Trials:
    """A set of trials.

    Attributes:
        objects: int64 ``[T, N]``, the object ids of each trial in sequence order.
        target: int64 ``[T]``, the answer class of each trial.
        kind: int64 ``[T]``, the index of each trial's kind in its task's ``kinds``.
    """

    objects: np.ndarray
    target: np.ndarray
    kind: np.ndarray

    def __len__(self) -> int:
        return len(self.target)

    def subset(self, index: np.ndarray | slice) -> Trials:
        """The trials at ``index`` (an index array or a slice), in that order."""
        return Trials(self.objects[index], self.target[index], self.kind[index])

    def shuffled(self, rng: np.random.Generator) -> Trials:
        """The same trials in a uniformly random order."""
        return self.subset(rng.permutation(len(self)))

    @staticmethod
    def concatenate(parts: list[Trials]) -> Trials:
        """The trials of ``parts`` one after the other (at least one part)."""
        return Trials(
            np.concatenate([part.objects for part in parts]),
            np.concatenate([part.target for part in parts]),
            np.concatenate([part.kind for part in parts]),
        )


@dataclass(frozen=True, eq=False)
class TaskSplits:
    """The trials of one task and held-out setting.

    Attributes:
        train, val, test: the splits; ``val`` is drawn like ``train`` (training objects).
        train_objects: int64 ``[n - m]`` (all ``n`` when ``m = 0``), the objects of training trials.
        test_objects: int64 ``[m]`` (all ``n`` when ``m = 0``), the objects of test trials.
    """

    train: Trials
    val: Trials
    test: Trials
    train_objects: np.ndarray
    test_objects: np.ndarray


class SplitSizes(NamedTuple):
    """Numbers of training, validation and test trials."""

    train: int
    val: int
    test: int


class PoolPart(NamedTuple):
    """One part of a ``"full_space"`` pool: ``distinct`` different trials of kind ``kind`` (0 or
    the whole kind) and ``repeats`` trials drawn from it with replacement."""

    kind: int
    distinct: int
    repeats: int


@dataclass(frozen=True, eq=False)
class TrialKind:
    """Every way of filling ``templates`` with ``objects_per_trial`` distinct objects.

    A trial of the kind is a set of ``objects_per_trial`` distinct objects, listed in the order of
    the split's object array, and a template: a row of positions into that list, so the trial's core
    sequence is ``chosen[template]``. Different (set, template) pairs give different cores, and the
    kind has ``C(n, objects_per_trial) * len(templates)`` trials over n objects.

    Attributes:
        name: e.g. ``"same"``, ``"ABA"``.
        objects_per_trial: distinct objects in a trial.
        templates: int64 ``[T, L]``, positions in ``[0, objects_per_trial)``.
        targets: int64 ``[T]``, the answer of a trial made from each template (-1 where
            :meth:`RelationalTask.present` sets it).
    """

    name: str
    objects_per_trial: int
    templates: np.ndarray = field(repr=False)
    targets: np.ndarray = field(repr=False)

    def count(self, num_objects: int) -> int:
        """Number of distinct trials of this kind over ``num_objects`` objects."""
        return math.comb(num_objects, self.objects_per_trial) * len(self.templates)

    def all_picks(self, num_objects: int) -> np.ndarray:
        """Every trial over ``num_objects`` objects: int64 ``[count, objects_per_trial + 1]``, each
        row the sorted positions of its objects in the object array, then its template index."""
        subsets = np.array(
            list(itertools.combinations(range(num_objects), self.objects_per_trial)), dtype=np.int64
        ).reshape(-1, self.objects_per_trial)
        num_templates = len(self.templates)
        return np.column_stack(
            [
                np.repeat(subsets, num_templates, axis=0),
                np.tile(np.arange(num_templates, dtype=np.int64), len(subsets)),
            ]
        )

    def draw_picks(self, num_objects: int, size: int, rng: np.random.Generator) -> np.ndarray:
        """``size`` trials drawn uniformly with replacement, as rows of :meth:`all_picks`."""
        subsets = np.sort(
            np.argsort(rng.random((size, num_objects)), axis=1)[:, : self.objects_per_trial], axis=1
        )
        template_index = rng.integers(len(self.templates), size=size)
        return np.column_stack([subsets, template_index]).astype(np.int64)

    def sample_distinct_picks(
        self, num_objects: int, size: int, rng: np.random.Generator
    ) -> np.ndarray:
        """``size`` different trials, a uniformly random subset in random order, as rows of
        :meth:`all_picks` (the official code's rejection of repeated trials)."""
        total = self.count(num_objects)
        if size > total:
            raise ValueError(
                f"asked for {size} different '{self.name}' trials, but {num_objects} objects give "
                f"only {total}: ask for fewer trials or use more objects"
            )
        if total <= _ENUMERATION_LIMIT or 2 * size > total:
            return self.all_picks(num_objects)[rng.choice(total, size=size, replace=False)]
        picks = self.draw_picks(num_objects, 0, rng)
        while len(picks) < size:
            picks = np.concatenate([picks, self.draw_picks(num_objects, size - len(picks), rng)])
            _, first = np.unique(picks, axis=0, return_index=True)
            picks = picks[np.sort(first)]
        return picks

    def cores(self, objects: np.ndarray, picks: np.ndarray) -> np.ndarray:
        """The core sequences ``int64 [S, L]`` of ``picks`` over the object ids ``objects``."""
        chosen = objects[picks[:, :-1]]
        return np.take_along_axis(chosen, self.templates[picks[:, -1]], axis=1)


def _kind(name: str, objects_per_trial: int, rows: list[tuple[list[int], int]]) -> TrialKind:
    """A :class:`TrialKind` from ``(template, target)`` rows."""
    templates = np.array([template for template, _ in rows], dtype=np.int64)
    targets = np.array([target for _, target in rows], dtype=np.int64)
    return TrialKind(name, objects_per_trial, templates, targets)


class RelationalTask:
    """A relational task: its trial kinds, how a split is sampled, and ESBN's default sizes.

    Subclasses set ``name``, ``sequence_length``, ``num_classes``, ``kinds``, ``min_objects``
    (the fewest objects for which every kind has trials) and ``paper_holdouts``, and may override
    :meth:`present`, :meth:`sampling_methods`, :meth:`full_space_parts` and the ``m = 0`` split.
    """

    name: str
    sequence_length: int
    num_classes: int
    kinds: tuple[TrialKind, ...]
    min_objects: int
    paper_holdouts: tuple[int, ...] = (0, 50, 85, 95)

    @property
    def context_segments(self) -> tuple[tuple[int, ...], ...]:
        """Groups of sequence positions normalized together by ESBN's context normalization
        (``models/ESBN.py``); one group, the whole sequence, unless the task says otherwise."""
        return (tuple(range(self.sequence_length)),)

    def present(
        self, kind: int, picks: np.ndarray, objects: np.ndarray, rng: np.random.Generator
    ) -> Trials:
        """The trials of kind ``kind`` at ``picks`` (rows of :meth:`TrialKind.all_picks`) over the
        object ids ``objects``: here the core sequence and the template's target."""
        trial_kind = self.kinds[kind]
        return Trials(
            trial_kind.cores(objects, picks),
            trial_kind.targets[picks[:, -1]],
            np.full(len(picks), kind, dtype=np.int64),
        )

    def check_holdout(self, m_holdout: int, num_objects: int = PAPER_NUM_OBJECTS) -> None:
        """Raises ValueError unless ``m_holdout`` is 0 or leaves both splits ``min_objects``."""
        low, high = self.min_objects, num_objects - self.min_objects
        if isinstance(m_holdout, bool) or not isinstance(m_holdout, int):
            raise ValueError(f"m_holdout must be an int, got {m_holdout!r}")
        if m_holdout != 0 and not low <= m_holdout <= high:
            papers = ", ".join(str(m) for m in self.paper_holdouts)
            raise ValueError(
                f"m_holdout={m_holdout} is not allowed for task '{self.name}' with {num_objects} "
                f"objects: use 0 (no held-out objects) or a value in {low}..{high}, so that both "
                f"splits keep at least {self.min_objects} objects (the papers use {papers})"
            )

    def sampling_methods(self, m_holdout: int) -> tuple[str, str]:
        """``(training method, test method)`` at ``m_holdout``; with ``m = 0`` the training
        method makes both splits."""
        return FULL_SPACE, FULL_SPACE

    def full_space_parts(self, num_objects: int, size: int) -> list[PoolPart]:
        """The ``"full_space"`` pool for ``size`` trials: every kind whole, topped up with repeats
        to the size of the largest kind (``tasks/identity_rules.py``, ``full_dset``)."""
        counts = [kind.count(num_objects) for kind in self.kinds]
        return [PoolPart(index, count, max(counts) - count) for index, count in enumerate(counts)]

    def capacity(self, method: str, num_objects: int) -> int:
        """The most trials ``method`` gives over ``num_objects`` objects: K times the largest kind
        for ``"full_space"`` (the official code's ``total_trials``), K times the smallest for
        ``"subsample"``, which draws as many distinct trials of every kind."""
        counts = [kind.count(num_objects) for kind in self.kinds]
        if method == FULL_SPACE:
            return len(counts) * max(counts)
        if method == SUBSAMPLE:
            return len(counts) * min(counts)
        raise ValueError(f"unknown sampling method {method!r}: use '{FULL_SPACE}' or '{SUBSAMPLE}'")

    def default_sizes(self, m_holdout: int, num_objects: int) -> tuple[int, int]:
        """ESBN's ``(train, test)`` sizes (``tasks/*.py``, ``create_task``)."""
        train_method, test_method = self.sampling_methods(m_holdout)
        if m_holdout == 0:
            capacity = self.capacity(train_method, num_objects)
            if 2 * PAPER_SET_SIZE <= capacity:
                return PAPER_SET_SIZE, PAPER_SET_SIZE
            train = round(PAPER_TRAIN_PROPORTION * capacity)
            return train, min(round((1 - PAPER_TRAIN_PROPORTION) * capacity), capacity - train)
        return (
            min(PAPER_SET_SIZE, self.capacity(train_method, num_objects - m_holdout)),
            min(PAPER_SET_SIZE, self.capacity(test_method, m_holdout)),
        )

    def check_shared_sizes(self, num_objects: int, train_size: int, test_size: int) -> None:
        """Raises ValueError unless ``m = 0`` splits of these sizes fit in one pool."""
        capacity = self.capacity(self.sampling_methods(0)[0], num_objects)
        if train_size + test_size > capacity:
            raise ValueError(
                f"task '{self.name}' with m_holdout=0 has {capacity} distinct trials over "
                f"{num_objects} objects, fewer than train_size + test_size = "
                f"{train_size} + {test_size}: lower them"
            )

    def sample(
        self, method: str, objects: np.ndarray, size: int, rng: np.random.Generator
    ) -> Trials:
        """``size`` trials over the object ids ``objects`` by ``method``."""
        if method == FULL_SPACE:
            return self.sample_full_space(objects, size, rng)
        if method == SUBSAMPLE:
            return self.sample_subsample(objects, size, rng)
        raise ValueError(f"unknown sampling method {method!r}: use '{FULL_SPACE}' or '{SUBSAMPLE}'")

    def sample_full_space(self, objects: np.ndarray, size: int, rng: np.random.Generator) -> Trials:
        """A uniformly random ``size``-subset of the :meth:`full_space_parts` pool, shuffled: how
        many trials each part gives is multivariate hypergeometric, then each part gives a
        uniformly random subset (distinct part) or draws with replacement (repeats)."""
        parts = self.full_space_parts(len(objects), size)
        part_sizes = np.array([[part.distinct, part.repeats] for part in parts], dtype=np.int64)
        if size > part_sizes.sum():
            raise ValueError(
                f"task '{self.name}' has {part_sizes.sum()} trials over {len(objects)} objects, "
                f"fewer than the {size} asked for: ask for fewer"
            )
        taken = rng.multivariate_hypergeometric(part_sizes.ravel(), size).reshape(-1, 2)
        pieces = []
        for part, (distinct, repeats) in zip(parts, taken, strict=True):
            trial_kind = self.kinds[part.kind]
            picks = np.concatenate(
                [
                    trial_kind.sample_distinct_picks(len(objects), int(distinct), rng),
                    trial_kind.draw_picks(len(objects), int(repeats), rng),
                ]
            )
            pieces.append(self.present(part.kind, picks, objects, rng))
        return Trials.concatenate(pieces).shuffled(rng)

    def sample_subsample(self, objects: np.ndarray, size: int, rng: np.random.Generator) -> Trials:
        """``ceil(size / K)`` distinct trials of each kind, shuffled, the first ``size`` kept
        (``tasks/RMTS.py``, ``subsampled_dset``)."""
        per_kind = -(-size // len(self.kinds))
        pieces = []
        for index, kind in enumerate(self.kinds):
            picks = kind.sample_distinct_picks(len(objects), per_kind, rng)
            pieces.append(self.present(index, picks, objects, rng))
        return Trials.concatenate(pieces).shuffled(rng).subset(slice(0, size))

    def sample_shared(
        self, objects: np.ndarray, train_size: int, test_size: int, rng: np.random.Generator
    ) -> tuple[Trials, Trials]:
        """The ``m = 0`` splits: one sample of ``train_size + test_size`` trials, cut in two."""
        self.check_shared_sizes(len(objects), train_size, test_size)
        pool = self.sample(self.sampling_methods(0)[0], objects, train_size + test_size, rng)
        return pool.subset(slice(0, train_size)), pool.subset(slice(train_size, None))


class SameDifferent(RelationalTask):
    """Same/different: ``[x, y]``, target 0 if ``x == y`` else 1 (``tasks/same_diff.py``).

    Kinds: ``same`` (n trials) and ``different`` (n (n - 1) ordered pairs). Always
    ``"full_space"``: all different pairs and as many same pairs drawn with replacement. With
    ``m = 0`` the same pairs and the different pairs are each split 95/5 (rounded) into training and
    test before that balancing, so test trials never occur in training: 18,810 / 990 trials.
    """

    name = "same_diff"
    sequence_length = 2
    num_classes = 2
    min_objects = 2
    paper_holdouts = (0, 50, 85, 95, 98)

    def __init__(self) -> None:
        self.kinds = (
            _kind("same", 1, [([0, 0], 0)]),
            _kind("different", 2, [([0, 1], 1), ([1, 0], 1)]),
        )

    def full_space_parts(self, num_objects: int, size: int) -> list[PoolPart]:
        """Every different pair, and as many same pairs drawn with replacement."""
        different = self.kinds[1].count(num_objects)
        return [PoolPart(0, 0, different), PoolPart(1, different, 0)]

    def _shared_counts(self, num_objects: int) -> tuple[int, int, int, int]:
        """``(training same pairs, test same pairs, training different, test different)`` of the
        ``m = 0`` split."""
        same, different = (kind.count(num_objects) for kind in self.kinds)
        same_train = round(PAPER_TRAIN_PROPORTION * same)
        different_train = round(PAPER_TRAIN_PROPORTION * different)
        return same_train, same - same_train, different_train, different - different_train

    def default_sizes(self, m_holdout: int, num_objects: int) -> tuple[int, int]:
        """ESBN's sizes; with ``m = 0`` every trial of both halves (18,810 / 990 for n = 100)."""
        if m_holdout != 0:
            return super().default_sizes(m_holdout, num_objects)
        _, _, different_train, different_test = self._shared_counts(num_objects)
        return 2 * different_train, 2 * different_test

    def check_shared_sizes(self, num_objects: int, train_size: int, test_size: int) -> None:
        same_train, same_test, different_train, different_test = self._shared_counts(num_objects)
        if min(same_train, same_test, different_train, different_test) == 0:
            raise ValueError(
                f"same_diff with m_holdout=0 needs more than {num_objects} objects, so that the "
                "95/5 split of the same pairs leaves some for both training and test"
            )
        if train_size > 2 * different_train or test_size > 2 * different_test:
            raise ValueError(
                f"same_diff with m_holdout=0 over {num_objects} objects has "
                f"{2 * different_train} training and {2 * different_test} test trials, fewer than "
                f"train_size={train_size}, test_size={test_size}: lower them"
            )

    def sample_shared(
        self, objects: np.ndarray, train_size: int, test_size: int, rng: np.random.Generator
    ) -> tuple[Trials, Trials]:
        """Same and different pairs each shuffled and split 95/5; each half balanced by drawing as
        many same pairs (with replacement, from its own same pairs) as it has different pairs."""
        self.check_shared_sizes(len(objects), train_size, test_size)
        same_train, _, different_train, _ = self._shared_counts(len(objects))
        same = self.kinds[0].all_picks(len(objects))
        different = self.kinds[1].all_picks(len(objects))
        same = same[rng.permutation(len(same))]
        different = different[rng.permutation(len(different))]
        halves = []
        for same_half, different_half in (
            (same[:same_train], different[:different_train]),
            (same[same_train:], different[different_train:]),
        ):
            same_draws = same_half[rng.integers(len(same_half), size=len(different_half))]
            halves.append(
                Trials.concatenate(
                    [
                        self.present(0, same_draws, objects, rng),
                        self.present(1, different_half, objects, rng),
                    ]
                ).shuffled(rng)
            )
        return halves[0].subset(slice(0, train_size)), halves[1].subset(slice(0, test_size))


class RelationalMatchToSample(RelationalTask):
    """Relational match-to-sample: ``[s1, s2, a1, a2, b1, b2]``, target 0 if the pair ``(a1, a2)``
    has the source pair's relation (same or different), 1 if ``(b1, b2)`` has it
    (``tasks/RMTS.py``).

    Kinds by the source's relation: ``same`` (``AA BB CD`` or ``AA CD BB``: 4 distinct objects,
    48 C(n, 4) trials) and ``different`` (``AB CD EE`` or ``AB EE CD``: 5 distinct objects,
    240 C(n, 5) trials). ``"subsample"`` for training when ``m < 85`` and always for test;
    ``"full_space"`` training from m = 85 tops a kind up with repeats only to half the asked size,
    so at m = 85 (15 training objects) about 1/12 of training trials have a same source.
    ESBN normalizes each pair separately (``task_seg``).
    """

    name = "rmts"
    sequence_length = 6
    num_classes = 2
    min_objects = 5

    def __init__(self) -> None:
        same_rows: list[tuple[list[int], int]] = []
        for source, match, other1, other2 in itertools.permutations(range(4)):
            same_rows.append(([source, source, match, match, other1, other2], 0))
            same_rows.append(([source, source, other1, other2, match, match], 1))
        different_rows: list[tuple[list[int], int]] = []
        for source1, source2, match1, match2, other in itertools.permutations(range(5)):
            different_rows.append(([source1, source2, match1, match2, other, other], 0))
            different_rows.append(([source1, source2, other, other, match1, match2], 1))
        self.kinds = (_kind("same", 4, same_rows), _kind("different", 5, different_rows))

    @property
    def context_segments(self) -> tuple[tuple[int, ...], ...]:
        """The source pair and the two choice pairs (``tasks/RMTS.py``, ``task_seg``)."""
        return ((0, 1), (2, 3), (4, 5))

    def sampling_methods(self, m_holdout: int) -> tuple[str, str]:
        train = FULL_SPACE if m_holdout >= FULL_SPACE_TRAINING_FROM else SUBSAMPLE
        return train, SUBSAMPLE

    def full_space_parts(self, num_objects: int, size: int) -> list[PoolPart]:
        """Every trial of each kind, a kind with fewer than ``size // 2`` topped up to it with
        repeats (``tasks/RMTS.py``, ``full_dset``)."""
        parts = []
        for index, kind in enumerate(self.kinds):
            count = kind.count(num_objects)
            parts.append(PoolPart(index, count, max(0, size // 2 - count)))
        return parts


class DistributionOfThree(RelationalTask):
    """Distribution-of-three: ``[a, b, c, d, e, x1, x2, x3, x4]`` where ``(a, b, c)`` are three
    distinct objects and ``(d, e, f)`` a permutation of them; target: the position of ``f`` among
    the choices ``x1..x4``, which are ``a, b, c`` and one other object of the split in random order
    (``tasks/dist3.py``).

    One kind, 36 C(n, 3) problems (the two rows); always ``"full_space"``; the distractor and the
    order of the choices are drawn when a problem is presented.
    """

    name = "dist3"
    sequence_length = 9
    num_classes = 4
    min_objects = 4

    def __init__(self) -> None:
        rows = [
            ([*first, *second], -1)
            for first in itertools.permutations(range(3))
            for second in itertools.permutations(range(3))
        ]
        self.kinds = (_kind("dist3", 3, rows),)

    def present(
        self, kind: int, picks: np.ndarray, objects: np.ndarray, rng: np.random.Generator
    ) -> Trials:
        """Adds a distractor, drawn uniformly from the objects not in the first row, to the first
        row's objects and shuffles them into the four choices."""
        rows = self.kinds[kind].cores(objects, picks)
        first_row, answer = rows[:, :3], rows[:, 5]
        distractor = objects[rng.integers(len(objects), size=len(rows))]
        clash = (distractor[:, None] == first_row).any(axis=1)
        while clash.any():
            distractor[clash] = objects[rng.integers(len(objects), size=int(clash.sum()))]
            clash = (distractor[:, None] == first_row).any(axis=1)
        choices = rng.permuted(np.column_stack([first_row, distractor]), axis=1)
        return Trials(
            np.column_stack([rows[:, :5], choices]),
            np.argmax(choices == answer[:, None], axis=1).astype(np.int64),
            np.full(len(rows), kind, dtype=np.int64),
        )


class IdentityRules(RelationalTask):
    """Identity rules: ``[row 1 (3), row 2 (2), 4 choices]``; target: the position of the choice
    that completes row 2 by row 1's rule (``tasks/identity_rules.py``).

    Kinds: ``AAA`` (``A A A B B`` -> B; choices A, B and two objects not shown; 288 C(n, 4)
    trials), ``ABA`` (``A B A C D`` -> C; 576 C(n, 4)) and ``ABB`` (``A B B C D`` -> D;
    576 C(n, 4)); the choices are the trial's four objects in every order. ``"subsample"`` for
    training when ``m < 85`` and always for test; ``"full_space"`` tops AAA up with repeats to the
    size of ABA.
    """

    name = "identity_rules"
    sequence_length = 9
    num_classes = 4
    min_objects = 4

    def __init__(self) -> None:
        orders = list(itertools.permutations(range(4)))
        aaa = [
            ([a, a, a, b, b, *order], order.index(b))
            for a, b in itertools.permutations(range(4), 2)
            for order in orders
        ]
        aba = [
            ([a1, b1, a1, a2, b2, *order], order.index(a2))
            for a1, b1, a2, b2 in itertools.permutations(range(4))
            for order in orders
        ]
        abb = [
            ([a1, b1, b1, a2, b2, *order], order.index(b2))
            for a1, b1, a2, b2 in itertools.permutations(range(4))
            for order in orders
        ]
        self.kinds = (_kind("AAA", 4, aaa), _kind("ABA", 4, aba), _kind("ABB", 4, abb))

    def sampling_methods(self, m_holdout: int) -> tuple[str, str]:
        train = FULL_SPACE if m_holdout >= FULL_SPACE_TRAINING_FROM else SUBSAMPLE
        return train, SUBSAMPLE


TASKS: dict[str, type[RelationalTask]] = {
    "same_diff": SameDifferent,
    "rmts": RelationalMatchToSample,
    "dist3": DistributionOfThree,
    "identity_rules": IdentityRules,
}
"""The tasks by name."""


def make_task(name: str) -> RelationalTask:
    """The task called ``name`` (a key of :data:`TASKS`)."""
    if name not in TASKS:
        raise ValueError(f"unknown relational task {name!r}: use one of {', '.join(TASKS)}")
    return TASKS[name]()


def _check_size(name: str, value: int | None, minimum: int) -> None:
    """Raises ValueError unless ``value`` is None or an int >= ``minimum``."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum} or None (the default), got {value!r}")


def resolve_sizes(
    task: RelationalTask,
    m_holdout: int,
    train_size: int | None = None,
    val_size: int | None = None,
    test_size: int | None = None,
    num_objects: int = PAPER_NUM_OBJECTS,
) -> SplitSizes:
    """The split sizes, None meaning ESBN's default (validation: ``min(1000, capacity)``); raises
    ValueError for a bad ``m_holdout`` or a size the task's trials cannot fill."""
    task.check_holdout(m_holdout, num_objects)
    _check_size("train_size", train_size, 1)
    _check_size("test_size", test_size, 1)
    _check_size("val_size", val_size, 0)
    default_train, default_test = task.default_sizes(m_holdout, num_objects)
    train = default_train if train_size is None else train_size
    test = default_test if test_size is None else test_size
    train_method, test_method = task.sampling_methods(m_holdout)
    train_objects = num_objects - m_holdout if m_holdout else num_objects
    train_capacity = task.capacity(train_method, train_objects)
    val = min(DEFAULT_VAL_SIZE, train_capacity) if val_size is None else val_size
    limits = [("val_size", val, train_capacity, train_objects)]
    if m_holdout == 0:
        task.check_shared_sizes(num_objects, train, test)
    else:
        limits += [
            ("train_size", train, train_capacity, train_objects),
            ("test_size", test, task.capacity(test_method, m_holdout), m_holdout),
        ]
    for name, value, capacity, objects in limits:
        if value > capacity:
            raise ValueError(
                f"{name}={value} is more than the {capacity} trials task '{task.name}' can give "
                f"over {objects} objects at m_holdout={m_holdout}: lower it"
            )
    return SplitSizes(train, val, test)


def generate_splits(
    task: str | RelationalTask,
    m_holdout: int = 0,
    seed: int = 0,
    train_size: int | None = None,
    val_size: int | None = None,
    test_size: int | None = None,
    num_objects: int = PAPER_NUM_OBJECTS,
) -> TaskSplits:
    """The training, validation and test trials of ``task`` with ``m_holdout`` held-out objects.

    Deterministic in ``seed``: the object split, the training (with ``m = 0``: training and test)
    trials, the validation trials and the test trials each have their own stream of
    ``numpy.random.SeedSequence(seed)``, so with ``m > 0`` the test trials do not depend on the
    training or validation sizes.

    Args:
        task: a task or its name (a key of :data:`TASKS`).
        m_holdout: objects held out of training (0: none).
        seed: seed of all random choices.
        train_size, val_size, test_size: numbers of trials; None: see :func:`resolve_sizes`.
        num_objects: objects, ids ``0..num_objects - 1`` (100 glyphs in the papers).
    """
    task = make_task(task) if isinstance(task, str) else task
    sizes = resolve_sizes(task, m_holdout, train_size, val_size, test_size, num_objects)
    split_rng, train_rng, val_rng, test_rng = (
        np.random.default_rng(stream) for stream in np.random.SeedSequence(seed).spawn(4)
    )
    order = split_rng.permutation(num_objects).astype(np.int64)
    train_method, test_method = task.sampling_methods(m_holdout)
    if m_holdout == 0:
        train_objects = test_objects = order
        train, test = task.sample_shared(order, sizes.train, sizes.test, train_rng)
    else:
        train_objects, test_objects = order[m_holdout:], order[:m_holdout]
        train = task.sample(train_method, train_objects, sizes.train, train_rng)
        test = task.sample(test_method, test_objects, sizes.test, test_rng)
    val = task.sample(train_method, train_objects, sizes.val, val_rng)
    return TaskSplits(train, val, test, train_objects, test_objects)
