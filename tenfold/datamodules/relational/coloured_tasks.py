"""CoRelNet's relational tasks over coloured glyphs: the relation is over one feature (shape or
colour), the other feature varies at random.

Kerg et al. (arXiv 2206.05056), official code giancarlok/relationaltasks,
``cognitive_tests/tasks/*_sc_*.py`` and ``same_diff_csep_*.py``. An object has a shape (one of the
100 ESBN glyphs, :mod:`tenfold.datamodules.relational.glyphs`) and a colour (one of 100 RGB colours,
:func:`colour_palette`). A coloured task takes the relational structure of a base task as
CoRelNet's code draws it (:mod:`tenfold.datamodules.relational.corelnet_tasks`) over the *relevant*
feature and draws the *other* feature uniformly with replacement at every position:

- ``same_diff_sc_shapes`` / ``same_diff_sc_colours`` (``same_diff_sc_*.py``): same/different by
  shape / by colour, shown as coloured glyphs (N = 2).
- ``rmts_sc_shapes`` / ``rmts_sc_colours`` (``RMTS_sc_*.py``): relational match-to-sample (N = 6).
- ``dist3_sc_shapes`` / ``dist3_sc_colours`` (``dist3_sc_*.py``): distribution-of-three (N = 9).
- ``identity_rules_sc_shapes`` / ``identity_rules_sc_colours`` (``identity_rules_sc_*.py``):
  identity rules (N = 9).
- ``same_diff_csep_shapes`` / ``same_diff_csep_colours`` (``same_diff_csep_*.py``): same/different
  by shape / by colour with the features shown apart: the sequence is shape 1, colour 1, shape 2,
  colour 2 (N = 4).

Images (official ``main.py`` and the tasks' ``get_sample``): a glyph is the greyscale image
(white background 1.0, black ink 0.0) repeated over 3 channels; a colour is a 32 x 32 patch of
one RGB value; a coloured glyph ("sc") is their product, so the background takes the colour and
the ink stays black. The colours are ``numpy.random.RandomState(0).uniform(size=(100, 3))``, as
``main.py`` draws them. In a trial, ``objects`` holds the glyph id of every position (-1 for a
colour patch alone) and ``colours`` the colour id (-1 for an uncoloured glyph).

Held-out values (``main.py``): ``m_holdout`` of the 100 glyphs and ``c_holdout`` of the 100
colours are held out of training, each split by its own random permutation; test trials use only
the held-out glyphs and colours (all of them where the holdout is 0). A feature needs as many
values in a split as the base task has distinct objects if the relation is over it, one
otherwise. Sampling and sizes are those of :mod:`tenfold.datamodules.relational.corelnet_tasks`
(independent draws; 10,000 training, 1,000 validation, 10,000 test trials).

Not implemented: the official evaluation switches ``--colour_tested`` (colour patches alone),
``--shape_tested`` (uncoloured glyphs) and ``--tricky`` (an irrelevant feature correlated with the
label with weight ``--sampling_weight``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from tenfold.datamodules.relational.corelnet_tasks import (
    IID_TEST,
    IID_TRAIN,
    RMTSIID,
    DistributionOfThreeIID,
    IdentityRulesIID,
    LetterTask,
    SameDifferentIID,
)
from tenfold.datamodules.relational.esbn_tasks import (
    DEFAULT_VAL_SIZE,
    PAPER_NUM_OBJECTS,
    PAPER_SET_SIZE,
    SplitSizes,
    TaskSplits,
    Trials,
)
from tenfold.datamodules.relational.glyphs import GLYPH_SIZE

__all__ = [
    "NUM_COLOURS",
    "SHAPES",
    "COLOURS",
    "colour_palette",
    "ColouredTrials",
    "ColouredSplits",
    "ColouredTask",
    "COLOURED_TASKS",
    "resolve_coloured_sizes",
    "generate_coloured_splits",
]

NUM_COLOURS = 100
"""Number of colours (the official ``--n_colours``)."""
SHAPES = "shapes"
COLOURS = "colours"
_STRUCTURES: dict[str, type[LetterTask]] = {
    "same_diff": SameDifferentIID,
    "rmts": RMTSIID,
    "dist3": DistributionOfThreeIID,
    "identity_rules": IdentityRulesIID,
}


def colour_palette(num_colours: int = NUM_COLOURS) -> np.ndarray:
    """The colours, float64 ``[num_colours, 3]`` RGB in ``[0, 1)``: the official
    ``np.random.RandomState(0).uniform(size=(n_colours, 3, 1, 1))`` (``main.py``), from a
    generator of its own."""
    return np.random.RandomState(0).uniform(size=(num_colours, 3))


@dataclass(frozen=True, eq=False)
class ColouredTrials(Trials):
    """Trials over coloured glyphs.

    Attributes:
        objects: int64 ``[T, N]``, the glyph id of each position (-1: a colour patch alone).
        target: int64 ``[T]``, the answer class.
        kind: int64 ``[T]``, the index of each trial's kind in the base task's kinds.
        colours: int64 ``[T, N]``, the colour id of each position (-1: an uncoloured glyph).
    """

    colours: np.ndarray

    def subset(self, index: np.ndarray | slice) -> ColouredTrials:
        return ColouredTrials(
            self.objects[index], self.target[index], self.kind[index], self.colours[index]
        )


@dataclass(frozen=True, eq=False)
class ColouredSplits(TaskSplits):
    """The trials of one coloured task and held-out setting; ``train_objects``/``test_objects``
    are the glyphs and ``train_colours``/``test_colours`` (int64) the colours of each split."""

    train_colours: np.ndarray
    test_colours: np.ndarray


class ColouredTask:
    """One coloured task (module docstring), built by name.

    Attributes:
        name: the task's name, e.g. ``"rmts_sc_colours"``.
        structure: the base task drawn over the relevant feature.
        relation: ``"shapes"`` or ``"colours"``, the feature the relation is over.
        separated: True when shape and colour are shown as separate positions (``csep``).
        num_classes, sequence_length: of the trials.
        image_shape: ``(3, 32, 32)``.
    """

    image_shape = (3, GLYPH_SIZE, GLYPH_SIZE)

    def __init__(self, name: str) -> None:
        if name not in COLOURED_TASK_NAMES:
            raise ValueError(
                f"unknown coloured task {name!r}: use one of {', '.join(COLOURED_TASK_NAMES)}"
            )
        base, layout, relation = name.rsplit("_", 2)
        self.name = name
        self.structure = _STRUCTURES[base]()
        self.relation = relation
        self.separated = layout == "csep"
        self.num_classes = self.structure.num_classes
        self.sequence_length = self.structure.sequence_length * (2 if self.separated else 1)

    @property
    def context_segments(self) -> tuple[tuple[int, ...], ...]:
        """The base task's groups of positions; the whole sequence when the features are shown
        apart (``same_diff_csep_*.py`` has no ``task_seg``)."""
        if self.separated:
            return (tuple(range(self.sequence_length)),)
        return self.structure.context_segments

    def min_values(self, feature: str) -> int:
        """Distinct values of ``feature`` that a split needs: the base task's objects per trial
        for the relevant feature, 1 for the other."""
        return self.structure.min_objects if feature == self.relation else 1

    def check_holdouts(self, m_holdout: int, c_holdout: int) -> None:
        """Raises ValueError unless each holdout is 0 or leaves both splits enough values."""
        for argument, value, feature, total in (
            ("m_holdout", m_holdout, SHAPES, PAPER_NUM_OBJECTS),
            ("c_holdout", c_holdout, COLOURS, NUM_COLOURS),
        ):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{argument} must be an int, got {value!r}")
            low = self.min_values(feature)
            if value != 0 and not low <= value <= total - low:
                raise ValueError(
                    f"{argument}={value} is not allowed for task '{self.name}': use 0 (none held "
                    f"out) or a value in {low}..{total - low}, so that both splits keep at least "
                    f"{low} of the {total} {feature}"
                )

    def sample(
        self,
        method: str,
        shapes: np.ndarray,
        colours: np.ndarray,
        size: int,
        rng: np.random.Generator,
    ) -> ColouredTrials:
        """``size`` trials (``method``: ``"iid_train"`` or ``"iid_test"``) over the glyph ids
        ``shapes`` and the colour ids ``colours``."""
        relevant, other = (shapes, colours) if self.relation == SHAPES else (colours, shapes)
        trials = self.structure.sample(method, relevant, size, rng)
        drawn = other[rng.integers(len(other), size=trials.objects.shape)].astype(np.int64)
        glyph_ids, colour_ids = (
            (trials.objects, drawn) if self.relation == SHAPES else (drawn, trials.objects)
        )
        if self.separated:
            absent = np.full_like(glyph_ids, -1)
            shape = (len(trials), self.sequence_length)
            glyph_ids = np.stack([glyph_ids, absent], axis=2).reshape(shape)
            colour_ids = np.stack([absent, colour_ids], axis=2).reshape(shape)
        return ColouredTrials(glyph_ids, trials.target, trials.kind, colour_ids)


COLOURED_TASK_NAMES = tuple(
    f"{base}_{layout}_{relation}"
    for base, layouts in (
        ("same_diff", ("sc", "csep")),
        ("rmts", ("sc",)),
        ("dist3", ("sc",)),
        ("identity_rules", ("sc",)),
    )
    for layout in layouts
    for relation in (SHAPES, COLOURS)
)
"""The coloured tasks' names."""

COLOURED_TASKS = {name: functools.partial(ColouredTask, name) for name in COLOURED_TASK_NAMES}
"""The coloured tasks by name: zero-argument constructors."""


def _checked_size(argument: str, value: int | None, default: int, minimum: int) -> int:
    """``value``, or ``default`` where it is None; raises ValueError unless an int >= minimum."""
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(
            f"{argument} must be an int >= {minimum} or None (the default), got {value!r}"
        )
    return value


def resolve_coloured_sizes(
    task: ColouredTask,
    m_holdout: int,
    c_holdout: int,
    train_size: int | None = None,
    val_size: int | None = None,
    test_size: int | None = None,
) -> SplitSizes:
    """The split sizes, None meaning 10,000 training, 1,000 validation and 10,000 test trials;
    raises ValueError for a bad holdout or size."""
    task.check_holdouts(m_holdout, c_holdout)
    return SplitSizes(
        _checked_size("train_size", train_size, PAPER_SET_SIZE, 1),
        _checked_size("val_size", val_size, DEFAULT_VAL_SIZE, 0),
        _checked_size("test_size", test_size, PAPER_SET_SIZE, 1),
    )


def generate_coloured_splits(
    task: str | ColouredTask,
    m_holdout: int = 0,
    c_holdout: int = 0,
    seed: int = 0,
    train_size: int | None = None,
    val_size: int | None = None,
    test_size: int | None = None,
) -> ColouredSplits:
    """The training, validation and test trials of a coloured task.

    Deterministic in ``seed``: the glyph split, the colour split, the training, the validation and
    the test trials each have their own stream of ``numpy.random.SeedSequence(seed)``.

    Args:
        task: a coloured task or its name.
        m_holdout: glyphs held out of training (0: none).
        c_holdout: colours held out of training (0: none).
        seed: seed of all random choices.
        train_size, val_size, test_size: numbers of trials; None: see
            :func:`resolve_coloured_sizes`.
    """
    task = ColouredTask(task) if isinstance(task, str) else task
    sizes = resolve_coloured_sizes(task, m_holdout, c_holdout, train_size, val_size, test_size)
    shape_rng, colour_rng, train_rng, val_rng, test_rng = (
        np.random.default_rng(stream) for stream in np.random.SeedSequence(seed).spawn(5)
    )
    pools = []
    for rng, total, holdout in (
        (shape_rng, PAPER_NUM_OBJECTS, m_holdout),
        (colour_rng, NUM_COLOURS, c_holdout),
    ):
        order = rng.permutation(total).astype(np.int64)
        pools.append((order[holdout:], order[:holdout]) if holdout else (order, order))
    (train_shapes, test_shapes), (train_colours, test_colours) = pools
    return ColouredSplits(
        task.sample(IID_TRAIN, train_shapes, train_colours, sizes.train, train_rng),
        task.sample(IID_TRAIN, train_shapes, train_colours, sizes.val, val_rng),
        task.sample(IID_TEST, test_shapes, test_colours, sizes.test, test_rng),
        train_shapes,
        test_shapes,
        train_colours,
        test_colours,
    )
