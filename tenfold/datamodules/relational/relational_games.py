"""Relational Games: 3 x 3 grids of objects with binary relational labels, and object sets held
out of training (Shanahan et al., "An Explicitly Relational Neural Network Architecture",
ICML 2020, arXiv 1905.10307), as CoRelNet (arXiv 2206.05056, official code
giancarlok/relationaltasks, ``relational_games/``) uses them.

Released files (google-deepmind/deepmind-research ``PrediNet/README.md`` and ``PrediNet.ipynb``;
the full data sets are in the bucket https://console.cloud.google.com/storage/browser/relations-game-datasets):
``<task>_<set>.npz`` with ``images`` ``[N, 36, 36, 3]`` RGB pixel values 0..255 (black
background), ``labels`` ``[N, 1]`` class ids (the README says ``[N, 2]``; one-hot rows are read as
class ids too) and ``tasks`` ``[N, 1]`` task ids. Sets: ``pentos`` (training, 250,000 images),
``hexos`` and ``stripes`` (held-out tests, 50,000 each). :func:`read_relational_games` reads one;
:func:`write_relational_games` writes arrays in that format.

Scenes (measured on the released ``mini_between_hexos.npz`` and ``mini_between_stripes.npz``):
cell ``k`` of the grid (row ``k // 3``, column ``k % 3``) is the 12 x 12 pixel square at
``12 * row, 12 * column``; an object fills pixels 1..9 of its cell, on a 3 x 3 grid of 3 x 3
pixel blocks. Pentominoes and hexominoes are the 4-connected sets of 5 and 6 blocks of that grid
(49 and 48), one colour each; a stripe object is the full 9 x 9 square, its middle three pixel
columns of one colour and the rest of another. Colours are the 25 RGB triples with channel
values in {64, 144, 192} other than (64, 64, 64) and (192, 192, 192). An object is a *form* (a
polyomino; for stripes, the middle colour) and a *colour* (for stripes, the outer colour); two
objects are identical when both agree (the ``between`` labels of the released files count
objects of the same shape and another colour as different).

Tasks (labels computed from a scene by the rules :data:`LABEL_RULES`; ``between`` as the PrediNet
notebook describes it, ``same``, ``occurs`` and ``match_patt`` as example images of the released
files show them, Awni00/relational-convolutions
``experiments/relational_games/relational_games_task_demos.ipynb``; ``left_of`` from CoRelNet's
script):

- ``same``: two objects -> 1 if they are identical.
- ``between``: three objects -> 1 if they lie on a line of the grid (row, column or diagonal)
  with the two outer objects identical (checked against every scene of the released
  ``mini_between_*.npz`` files).
- ``occurs``: one object in the top row, three in the bottom row -> 1 if the top object occurs in
  the bottom row.
- ``match_patt`` (files ``1task_match_patt_*``): three objects in the top and in the bottom row ->
  1 if both rows have the same identity pattern (AAA, AAB, ABA, ABB or ABC).
- ``left_of`` (CoRelNet, ``relational_games/tasks/generate_leftof.py``): two objects of different
  luminance (0.2126 R + 0.7152 G + 0.0722 B of the object's first non-black pixel in row-major
  order: the outer colour of a stripe object) -> 1 if the darker one is left of the brighter, or
  in the same column and below it. CoRelNet derives it from the ``same`` files: every image and
  its 180-degree rotation (which flips the label), keeping those whose two objects differ in
  luminance (:func:`derive_left_of`).
- ``xoccurs`` (files ``xoccurs_*``): read from the released files only; this module does not
  generate it (its definition could not be checked). Nor the multi-task files
  (``3task_col_patts``, ``5task_row_patts``, ``colour_and_or_shape``), whose task ids are read but
  not used.

The generator (:func:`generate_scenes`) draws scenes for the five tasks with exactly half
positive labels: a scene's objects are uniformly random or *near misses* of another object
(another form, another colour, or both, a third each, as the negatives of the released
``between`` files), and the label is recomputed from the scene by the task's rule. What differs
from the released files: their exact object distributions are not published (e.g. the released
hexomino frequencies are not uniform, here every form is equally likely), ``between`` negatives
here are collinear four times in five (about 78 % in the released files), and ``left_of`` scenes
here are drawn directly (two objects of different colours, the same form half the time) instead
of being filtered from ``same`` scenes; in CoRelNet's derived ``left_of`` data the rotated copies
show rotated objects one pixel lower and further right in their cells, the generated scenes
only the released placement. The renderer was checked against the released mini files: every
object of ``mini_between_hexos.npz`` and ``mini_between_stripes.npz`` is one of the sprites
here, the images re-render pixel for pixel, and the ``between`` rule gives all 10,000 labels.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tenfold.datamodules.npz import load_npz

__all__ = [
    "GRID_SIZE",
    "CELL_SIZE",
    "IMAGE_SIZE",
    "NUM_CELLS",
    "PALETTE",
    "OBJECT_SETS",
    "TRAIN_SET",
    "TEST_SETS",
    "GENERATED_TASKS",
    "READ_TASKS",
    "RELEASED_FILE_PREFIXES",
    "DOWNLOAD_URL",
    "LINES",
    "ObjectSet",
    "Scenes",
    "RelationalGamesArrays",
    "polyomino_masks",
    "object_set",
    "luminance",
    "render",
    "LABEL_RULES",
    "generate_scenes",
    "read_relational_games",
    "write_relational_games",
    "released_file",
    "require_released",
    "load_released",
    "derive_left_of",
]

GRID_SIZE = 3
"""Cells per row and per column."""
CELL_SIZE = 12
"""Pixels per cell side."""
IMAGE_SIZE = GRID_SIZE * CELL_SIZE
"""Pixels per image side (36)."""
NUM_CELLS = GRID_SIZE * GRID_SIZE
_BLOCK = 3
"""Pixels per side of a polyomino block."""
_SPRITE = slice(1, 1 + GRID_SIZE * _BLOCK)
"""The pixels of a cell that an object covers (1..9)."""
PALETTE = np.array(
    [
        rgb
        for rgb in itertools.product((64, 144, 192), repeat=3)
        if rgb not in ((64, 64, 64), (192, 192, 192))
    ],
    dtype=np.uint8,
)
"""The 25 object colours, uint8 ``[25, 3]``."""
OBJECT_SETS = ("pentos", "hexos", "stripes")
TRAIN_SET = "pentos"
"""The object set of training (and validation) scenes."""
TEST_SETS = ("hexos", "stripes")
"""The held-out object sets."""
GENERATED_TASKS = ("same", "between", "occurs", "match_patt", "left_of")
RELEASED_FILE_PREFIXES = {
    "same": "same",
    "between": "1task_between",
    "occurs": "occurs",
    "xoccurs": "xoccurs",
    "match_patt": "1task_match_patt",
}
"""The file name prefix of each released task (``<prefix>_<set>.npz``)."""
READ_TASKS = (*RELEASED_FILE_PREFIXES, "left_of")
DOWNLOAD_URL = "https://console.cloud.google.com/storage/browser/relations-game-datasets"
LINES = np.array(
    [[0, 1, 2], [3, 4, 5], [6, 7, 8], [0, 3, 6], [1, 4, 7], [2, 5, 8], [0, 4, 8], [2, 4, 6]],
    dtype=np.int64,
)
"""The 8 lines of the grid (rows, columns, diagonals) as cell indices, the middle cell second."""
_MATCH_PATTERNS = np.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [0, 1, 1], [0, 1, 2]], dtype=np.int64)
"""The identity patterns of a row of three: AAA, AAB, ABA, ABB, ABC."""
_NON_LINE_NEGATIVES = 0.2
"""Share of ``between`` negatives whose objects are not on a line."""


def polyomino_masks(blocks: int) -> np.ndarray:
    """Every 4-connected set of ``blocks`` cells of the 3 x 3 grid: bool ``[M, 3, 3]``, in the
    lexicographic order of their sorted cell indices (49 for 5 blocks, 48 for 6)."""
    masks = []
    for cells in itertools.combinations(range(NUM_CELLS), blocks):
        chosen = set(cells)
        reached, frontier = {cells[0]}, [cells[0]]
        while frontier:
            row, column = divmod(frontier.pop(), GRID_SIZE)
            for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0)):
                r, c = row + dr, column + dc
                neighbour = r * GRID_SIZE + c
                if 0 <= r < GRID_SIZE and 0 <= c < GRID_SIZE and neighbour in chosen:
                    if neighbour not in reached:
                        reached.add(neighbour)
                        frontier.append(neighbour)
        if reached == chosen:
            mask = np.zeros(NUM_CELLS, dtype=bool)
            mask[list(cells)] = True
            masks.append(mask.reshape(GRID_SIZE, GRID_SIZE))
    return np.stack(masks)


@dataclass(frozen=True, eq=False)
class ObjectSet:
    """The objects of one set: every form in every palette colour.

    Attributes:
        name: ``"pentos"``, ``"hexos"`` or ``"stripes"``.
        sprites: uint8 ``[num_forms, 25, 12, 12, 3]``, each object drawn in its cell on black.
    """

    name: str
    sprites: np.ndarray

    @property
    def num_forms(self) -> int:
        return len(self.sprites)


@functools.cache
def object_set(name: str) -> ObjectSet:
    """The object set ``name`` (module docstring); raises ValueError for another name."""
    if name not in OBJECT_SETS:
        raise ValueError(f"unknown object set {name!r}: use one of {', '.join(OBJECT_SETS)}")
    colours = len(PALETTE)
    if name == "stripes":
        sprites = np.zeros((colours, colours, CELL_SIZE, CELL_SIZE, 3), dtype=np.uint8)
        middle = slice(_SPRITE.start + _BLOCK, _SPRITE.start + 2 * _BLOCK)
        sprites[:, :, _SPRITE, _SPRITE] = PALETTE[None, :, None, None]
        sprites[:, :, _SPRITE, middle] = PALETTE[:, None, None, None]
        return ObjectSet(name, sprites)
    masks = polyomino_masks(5 if name == "pentos" else 6)
    pixels = np.kron(masks, np.ones((_BLOCK, _BLOCK), dtype=bool)).astype(bool)
    sprites = np.zeros((len(masks), colours, CELL_SIZE, CELL_SIZE, 3), dtype=np.uint8)
    sprites[:, :, _SPRITE, _SPRITE] = np.where(
        pixels[:, None, :, :, None], PALETTE[None, :, None, None, :], 0
    )
    return ObjectSet(name, sprites)


@functools.cache
def _sprite_bank(name: str) -> np.ndarray:
    """uint8 ``[1 + num_forms * 25, 12, 12, 3]``: an empty cell, then every object."""
    sprites = object_set(name).sprites
    blank = np.zeros((1, CELL_SIZE, CELL_SIZE, 3), dtype=np.uint8)
    return np.concatenate([blank, sprites.reshape(-1, CELL_SIZE, CELL_SIZE, 3)])


def luminance(rgb: np.ndarray) -> np.ndarray:
    """``0.2126 R + 0.7152 G + 0.0722 B`` over the last axis (``generate_leftof.py``)."""
    return np.asarray(rgb, dtype=np.float64) @ np.array([0.2126, 0.7152, 0.0722])


@dataclass(frozen=True, eq=False)
class Scenes:
    """Scenes of one object set.

    Attributes:
        object_set: the set of their objects.
        forms: int64 ``[N, 9]``, the form in each cell (-1: empty); cell ``k`` is row ``k // 3``,
            column ``k % 3``.
        colours: int64 ``[N, 9]``, the palette index of each cell's colour (-1: empty).
        target: int64 ``[N]``, the label.
    """

    object_set: str
    forms: np.ndarray
    colours: np.ndarray
    target: np.ndarray

    def __len__(self) -> int:
        return len(self.target)


def render(object_set_name: str, forms: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """The images of scenes given by ``forms`` and ``colours`` ``[..., 9]`` (as :class:`Scenes`):
    uint8 ``[..., 36, 36, 3]``."""
    forms, colours = np.asarray(forms), np.asarray(colours)
    index = np.where(forms >= 0, 1 + forms * len(PALETTE) + colours, 0)
    cells = _sprite_bank(object_set_name)[index]
    lead = forms.shape[:-1]
    grid = cells.reshape(*lead, GRID_SIZE, GRID_SIZE, CELL_SIZE, CELL_SIZE, 3)
    return grid.swapaxes(-4, -3).reshape(*lead, IMAGE_SIZE, IMAGE_SIZE, 3)


def _identical(forms: np.ndarray, colours: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Whether cells ``a`` and ``b`` (int64 ``[N]`` or scalars) hold identical objects."""
    rows = np.arange(len(forms))
    form_a, form_b = forms[rows, a], forms[rows, b]
    return (form_a >= 0) & (form_a == form_b) & (colours[rows, a] == colours[rows, b])


def _occupied_cells(forms: np.ndarray, count: int, task: str) -> np.ndarray:
    """The indices ``[N, count]`` of the occupied cells, in cell order; raises ValueError unless
    every scene has ``count`` objects."""
    occupied = forms >= 0
    if not np.all(occupied.sum(axis=1) == count):
        raise ValueError(f"task '{task}' needs {count} objects in every scene")
    return np.argsort(~occupied, axis=1, kind="stable")[:, :count]


def _label_same(forms: np.ndarray, colours: np.ndarray) -> np.ndarray:
    cells = _occupied_cells(forms, 2, "same")
    return _identical(forms, colours, cells[:, 0], cells[:, 1])


def _label_between(forms: np.ndarray, colours: np.ndarray) -> np.ndarray:
    found = np.zeros(len(forms), dtype=bool)
    for first, middle, last in LINES:
        on_line = (forms[:, [first, middle, last]] >= 0).all(axis=1)
        found |= on_line & _identical(forms, colours, first, last)
    return found


def _label_occurs(forms: np.ndarray, colours: np.ndarray) -> np.ndarray:
    top = forms[:, :GRID_SIZE] >= 0
    if not np.all(top.sum(axis=1) == 1):
        raise ValueError("task 'occurs' needs one object in the top row of every scene")
    source = np.argmax(top, axis=1)
    bottom = range(NUM_CELLS - GRID_SIZE, NUM_CELLS)
    return np.any([_identical(forms, colours, source, cell) for cell in bottom], axis=0)


def _label_match_patt(forms: np.ndarray, colours: np.ndarray) -> np.ndarray:
    rows = (np.arange(GRID_SIZE), np.arange(NUM_CELLS - GRID_SIZE, NUM_CELLS))
    if not np.all(forms[:, np.concatenate(rows)] >= 0):
        raise ValueError("task 'match_patt' needs full top and bottom rows")
    equal = [
        [_identical(forms, colours, row[i], row[j]) for i, j in ((0, 1), (0, 2), (1, 2))]
        for row in rows
    ]
    return np.all(np.array(equal[0]) == np.array(equal[1]), axis=0)


def _label_left_of(forms: np.ndarray, colours: np.ndarray) -> np.ndarray:
    cells = _occupied_cells(forms, 2, "left_of")
    brightness = luminance(PALETTE[np.take_along_axis(colours, cells, axis=1)])
    if np.any(brightness[:, 0] == brightness[:, 1]):
        raise ValueError("task 'left_of' needs two objects of different luminance")
    row, column = np.divmod(cells, GRID_SIZE)
    order = column * GRID_SIZE + (GRID_SIZE - 1 - row)
    darker = np.argmin(brightness, axis=1)
    rows = np.arange(len(forms))
    return order[rows, darker] < order[rows, 1 - darker]


LABEL_RULES: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "same": _label_same,
    "between": _label_between,
    "occurs": _label_occurs,
    "match_patt": _label_match_patt,
    "left_of": _label_left_of,
}
"""The label of scenes (``forms``, ``colours`` as :class:`Scenes`) for each generated task, as a
bool ``[N]`` array; ``left_of`` orders cells by column, then bottom to top."""


def _random_objects(
    num_forms: int, shape: tuple[int, ...], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Uniformly random objects: forms and colours, int64 arrays of ``shape``."""
    return rng.integers(num_forms, size=shape), rng.integers(len(PALETTE), size=shape)


def _near_misses(
    forms: np.ndarray, colours: np.ndarray, num_forms: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """For each object, one that differs in its form, its colour or both (a third each),
    the new form or colour uniform among the others."""
    change = rng.integers(3, size=forms.shape)
    other_forms = (forms + rng.integers(1, num_forms, size=forms.shape)) % num_forms
    other_colours = (colours + rng.integers(1, len(PALETTE), size=forms.shape)) % len(PALETTE)
    return np.where(change != 1, other_forms, forms), np.where(change != 0, other_colours, colours)


def _balanced_flags(size: int, rng: np.random.Generator) -> np.ndarray:
    """Bool ``[size]``, ``size // 2`` of them True, in random order."""
    return rng.permutation(size) < size // 2


def _distinct_cells(size: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``[size, count]`` distinct cells per row, uniformly random and in random order."""
    return np.argsort(rng.random((size, NUM_CELLS)), axis=1)[:, :count]


def _place(
    cells: np.ndarray, forms: np.ndarray, colours: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Scenes ``[N, 9]`` with the objects (``forms``, ``colours`` ``[N, k]``) in ``cells``."""
    scene_forms = np.full((len(cells), NUM_CELLS), -1, dtype=np.int64)
    scene_colours = np.full((len(cells), NUM_CELLS), -1, dtype=np.int64)
    np.put_along_axis(scene_forms, cells, forms, axis=1)
    np.put_along_axis(scene_colours, cells, colours, axis=1)
    return scene_forms, scene_colours


def _same_scenes(
    num_forms: int, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Two objects in random cells: identical, or a near miss (half each)."""
    positive = _balanced_flags(size, rng)
    form, colour = _random_objects(num_forms, (size,), rng)
    miss_form, miss_colour = _near_misses(form, colour, num_forms, rng)
    other = np.where(positive, form, miss_form), np.where(positive, colour, miss_colour)
    return _place(
        _distinct_cells(size, 2, rng),
        np.column_stack([form, other[0]]),
        np.column_stack([colour, other[1]]),
    )


def _between_scenes(
    num_forms: int, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Three objects: on a random line with identical (positives) or near-miss ends, the middle
    one random; a fifth of the negatives on three cells that are not a line."""
    positive = _balanced_flags(size, rng)
    on_line = positive | (rng.random(size) >= _NON_LINE_NEGATIVES)
    cells = LINES[rng.integers(len(LINES), size=size)][:, [0, 2, 1]]
    line_masks = (1 << LINES).sum(axis=1)
    redraw = ~on_line
    while redraw.any():
        cells[redraw] = _distinct_cells(int(redraw.sum()), 3, rng)
        redraw &= np.isin((1 << cells).sum(axis=1), line_masks)
    end_form, end_colour = _random_objects(num_forms, (size,), rng)
    miss_form, miss_colour = _near_misses(end_form, end_colour, num_forms, rng)
    middle_form, middle_colour = _random_objects(num_forms, (size,), rng)
    forms = np.column_stack([end_form, np.where(positive, end_form, miss_form), middle_form])
    colours = np.column_stack(
        [end_colour, np.where(positive, end_colour, miss_colour), middle_colour]
    )
    return _place(cells, forms, colours)


def _occurs_scenes(
    num_forms: int, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """One object in a random cell of the top row, three near misses of it in the bottom row,
    one of them replaced by the object itself in the positives."""
    positive = _balanced_flags(size, rng)
    form, colour = _random_objects(num_forms, (size,), rng)
    forms, colours = _near_misses(
        np.repeat(form[:, None], GRID_SIZE, axis=1),
        np.repeat(colour[:, None], GRID_SIZE, axis=1),
        num_forms,
        rng,
    )
    rows = np.flatnonzero(positive)
    copy = rng.integers(GRID_SIZE, size=len(rows))
    forms[rows, copy], colours[rows, copy] = form[rows], colour[rows]
    top = rng.integers(GRID_SIZE, size=size)
    bottom = np.arange(NUM_CELLS - GRID_SIZE, NUM_CELLS)
    return _place(
        np.column_stack([top, np.tile(bottom, (size, 1))]),
        np.column_stack([form, forms]),
        np.column_stack([colour, colours]),
    )


def _pattern_row(
    patterns: np.ndarray, num_forms: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Rows of three objects following ``patterns`` ``[N, 3]`` (letters 0..2): letter 0 a random
    object, letters 1 and 2 two different near misses of it."""
    form, colour = _random_objects(num_forms, (len(patterns),), rng)
    second = _near_misses(form, colour, num_forms, rng)
    third = _near_misses(form, colour, num_forms, rng)
    clash = (third[0] == second[0]) & (third[1] == second[1])
    while clash.any():
        redrawn = _near_misses(form[clash], colour[clash], num_forms, rng)
        third[0][clash], third[1][clash] = redrawn
        clash = (third[0] == second[0]) & (third[1] == second[1])
    letter_forms = np.column_stack([form, second[0], third[0]])
    letter_colours = np.column_stack([colour, second[1], third[1]])
    return (
        np.take_along_axis(letter_forms, patterns, axis=1),
        np.take_along_axis(letter_colours, patterns, axis=1),
    )


def _match_patt_scenes(
    num_forms: int, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Full top and bottom rows following random identity patterns, the same pattern in the
    positives, two different ones in the negatives."""
    positive = _balanced_flags(size, rng)
    top = rng.integers(len(_MATCH_PATTERNS), size=size)
    shift = rng.integers(1, len(_MATCH_PATTERNS), size=size)
    bottom = np.where(positive, top, (top + shift) % len(_MATCH_PATTERNS))
    top_forms, top_colours = _pattern_row(_MATCH_PATTERNS[top], num_forms, rng)
    bottom_forms, bottom_colours = _pattern_row(_MATCH_PATTERNS[bottom], num_forms, rng)
    cells = np.tile(np.r_[0:GRID_SIZE, NUM_CELLS - GRID_SIZE : NUM_CELLS], (size, 1))
    return _place(
        cells,
        np.column_stack([top_forms, bottom_forms]),
        np.column_stack([top_colours, bottom_colours]),
    )


def _left_of_scenes(
    num_forms: int, size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Two objects of different colours (the same form half the time) in random cells, the
    scenes whose label is not the wanted one rotated by 180 degrees (which flips it)."""
    form, colour = _random_objects(num_forms, (size,), rng)
    other_form = (form + rng.integers(1, num_forms, size=size)) % num_forms
    other_form = np.where(rng.random(size) < 0.5, form, other_form)
    other_colour = (colour + rng.integers(1, len(PALETTE), size=size)) % len(PALETTE)
    cells = _distinct_cells(size, 2, rng)
    forms, colours = np.column_stack([form, other_form]), np.column_stack([colour, other_colour])
    wanted = _balanced_flags(size, rng)
    rotate = _label_left_of(*_place(cells, forms, colours)) != wanted
    cells[rotate] = NUM_CELLS - 1 - cells[rotate]
    return _place(cells, forms, colours)


_GENERATORS: dict[str, Callable[[int, int, np.random.Generator], tuple[np.ndarray, np.ndarray]]] = {
    "same": _same_scenes,
    "between": _between_scenes,
    "occurs": _occurs_scenes,
    "match_patt": _match_patt_scenes,
    "left_of": _left_of_scenes,
}


def generate_scenes(task: str, object_set_name: str, size: int, rng: np.random.Generator) -> Scenes:
    """``size`` scenes of ``task`` (one of :data:`GENERATED_TASKS`) over the objects of
    ``object_set_name``, ``size // 2`` of them labelled 1, in random order; the labels are the
    task's rule (:data:`LABEL_RULES`) applied to the scenes."""
    if task not in _GENERATORS:
        raise ValueError(
            f"relational games task {task!r} cannot be generated: use one of "
            f"{', '.join(GENERATED_TASKS)}, or read the released files (data_dir) for "
            f"{', '.join(t for t in READ_TASKS if t not in GENERATED_TASKS)}"
        )
    forms, colours = _GENERATORS[task](object_set(object_set_name).num_forms, size, rng)
    target = LABEL_RULES[task](forms, colours).astype(np.int64)
    return Scenes(object_set_name, forms, colours, target)


@dataclass(frozen=True, eq=False)
class RelationalGamesArrays:
    """The content of a released file.

    Attributes:
        images: uint8 ``[N, 36, 36, 3]`` RGB.
        labels: int64 ``[N]`` class ids.
        tasks: int64 ``[N]`` task ids.
    """

    images: np.ndarray
    labels: np.ndarray
    tasks: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def _class_ids(labels: np.ndarray, path: Path) -> np.ndarray:
    """Labels ``[N]``, ``[N, 1]`` or one-hot ``[N, C]`` as int64 ``[N]`` class ids."""
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    elif labels.ndim == 2:
        if not (np.isin(labels, (0, 1)).all() and np.all(labels.sum(axis=1) == 1)):
            raise ValueError(f"{path}: labels {labels.shape} are neither class ids nor one-hot")
        labels = np.argmax(labels, axis=1)
    if labels.ndim != 1 or not np.all(np.mod(labels, 1) == 0) or labels.min(initial=0) < 0:
        raise ValueError(f"{path}: labels must be non-negative class ids, got {labels.shape}")
    return labels.astype(np.int64)


def _missing_file(paths: Sequence[Path], task: str | None = None) -> FileNotFoundError:
    """The error for missing released files (one folder), saying where to get all of them (and,
    for a ``task`` of :data:`GENERATED_TASKS`, that its scenes can be generated instead)."""
    names = ", ".join(path.name for path in paths)
    bucket = ", ".join(f"gs://relations-game-datasets/{path.name}" for path in paths)
    generate = ", or set data_dir=null to generate the scenes instead" if task in GENERATED_TASKS else ""
    noun = "file" if len(paths) == 1 else "files"
    return FileNotFoundError(
        f"Relational Games {noun} not found in {paths[0].parent}: {names}. Download {'it' if len(paths) == 1 else 'them'} "
        f"from the bucket {DOWNLOAD_URL} ({bucket}) into {paths[0].parent}{generate}"
    )


def read_relational_games(path: str | Path) -> RelationalGamesArrays:
    """Reads a released Relational Games file (module docstring).

    Raises:
        FileNotFoundError: ``path`` does not exist (the message says where to get the files).
        ValueError: the arrays are not images ``[N, 36, 36, 3]`` in 0..255 with one label each.
    """
    path = Path(path)
    if not path.is_file():
        raise _missing_file([path])
    data = load_npz(
        path, f"delete it and download it again from {DOWNLOAD_URL} (gs://relations-game-datasets/{path.name})"
    )
    missing = {"images", "labels"} - set(data)
    if missing:
        raise ValueError(f"{path}: missing arrays {sorted(missing)} (has {sorted(data)})")
    images, labels = data["images"], data["labels"]
    tasks = data["tasks"] if "tasks" in data else np.zeros(len(labels), dtype=np.int64)
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ValueError(f"{path}: images are {images.shape}, expected [N, 36, 36, 3]")
    if images.size and (images.min() < 0 or images.max() > 255):
        raise ValueError(f"{path}: pixel values must be in 0..255")
    if images.size and np.issubdtype(images.dtype, np.floating) and not np.array_equal(images, np.round(images)):
        # float pixels in [0, 1] would all become 0 as uint8
        raise ValueError(
            f"{path}: pixel values must be integers 0..255 (the released files' uint8), got {images.dtype} values "
            f"in [{float(images.min()):g}, {float(images.max()):g}]: scale [0, 1] images by 255 and round"
        )
    labels = _class_ids(np.asarray(labels), path)
    tasks = np.asarray(tasks).reshape(len(tasks), -1)[:, 0].astype(np.int64)
    if not len(images) == len(labels) == len(tasks):
        raise ValueError(
            f"{path}: {len(images)} images, {len(labels)} labels and {len(tasks)} task ids"
        )
    return RelationalGamesArrays(images.astype(np.uint8, copy=False), labels, tasks)


def write_relational_games(
    path: str | Path, images: np.ndarray, labels: np.ndarray, tasks: np.ndarray | None = None
) -> None:
    """Writes images uint8 ``[N, 36, 36, 3]`` and labels ``[N]`` in the released format
    (compressed ``.npz``; ``labels`` and ``tasks`` as ``[N, 1]``; tasks 0 by default)."""
    labels = np.asarray(labels, dtype=np.int64).reshape(-1, 1)
    tasks = np.zeros_like(labels) if tasks is None else np.asarray(tasks).reshape(-1, 1)
    with open(path, "wb") as file:
        np.savez_compressed(
            file, images=np.asarray(images, dtype=np.uint8), labels=labels, tasks=tasks
        )


def released_file(
    data_dir: str | Path, task: str, object_set_name: str, file_prefix: str | None = None
) -> Path:
    """The file ``<prefix>_<set>.npz`` of ``task`` and object set under ``data_dir``; the prefix
    is ``file_prefix`` or the task's released one (:data:`RELEASED_FILE_PREFIXES`; ``left_of``:
    the ``same`` file it is derived from), e.g. ``"mini_between"`` for the files of
    google-deepmind/deepmind-research ``PrediNet/``."""
    if task not in READ_TASKS:
        raise ValueError(
            f"unknown relational games task {task!r}: use one of {', '.join(READ_TASKS)}"
        )
    if object_set_name not in OBJECT_SETS:
        raise ValueError(
            f"unknown object set {object_set_name!r}: use one of {', '.join(OBJECT_SETS)}"
        )
    if file_prefix is None:
        file_prefix = RELEASED_FILE_PREFIXES["same" if task == "left_of" else task]
    return Path(data_dir) / f"{file_prefix}_{object_set_name}.npz"


def require_released(
    data_dir: str | Path,
    task: str,
    object_set_names: Sequence[str],
    file_prefix: str | None = None,
) -> None:
    """Raises FileNotFoundError, saying where to get them, naming every file of ``task`` and
    ``object_set_names`` (named as :func:`released_file`) missing from ``data_dir``."""
    paths = [released_file(data_dir, task, name, file_prefix) for name in object_set_names]
    missing = [path for path in paths if not path.is_file()]
    if missing:
        raise _missing_file(missing, task)


def derive_left_of(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CoRelNet's ``left_of`` data from images of two objects (``generate_leftof.py``): the
    images and their 180-degree rotations, those whose objects differ in luminance, labelled 1
    where the darker object is left of the brighter or in the same column and below it.

    Args:
        images: uint8 ``[N, 36, 36, 3]``, two objects each (a ``same`` file).

    Returns:
        images uint8 ``[M, 36, 36, 3]`` and labels int64 ``[M]``.
    """
    images = np.concatenate([images, images[:, ::-1, ::-1]])
    cells = images.reshape(-1, GRID_SIZE, CELL_SIZE, GRID_SIZE, CELL_SIZE, 3).swapaxes(2, 3)
    pixels = cells.reshape(len(images), NUM_CELLS, CELL_SIZE * CELL_SIZE, 3)
    inked = pixels.any(axis=3)
    if not np.all(inked.any(axis=2).sum(axis=1) == 2):
        raise ValueError("left_of is derived from images of exactly two objects (the same task)")
    occupied = np.argsort(~inked.any(axis=2), axis=1, kind="stable")[:, :2]
    first_ink = np.argmax(inked, axis=2)
    colour = np.take_along_axis(pixels, first_ink[:, :, None, None], axis=2)[:, :, 0]
    brightness = luminance(np.take_along_axis(colour, occupied[:, :, None], axis=1))
    keep = brightness[:, 0] != brightness[:, 1]
    row, column = np.divmod(occupied[keep], GRID_SIZE)
    order = column * GRID_SIZE + (GRID_SIZE - 1 - row)
    darker = np.argmin(brightness[keep], axis=1)
    rows = np.arange(len(order))
    labels = order[rows, darker] < order[rows, 1 - darker]
    return np.ascontiguousarray(images[keep]), labels.astype(np.int64)


def load_released(
    data_dir: str | Path, task: str, object_set_name: str, file_prefix: str | None = None
) -> RelationalGamesArrays:
    """The released data of ``task`` and object set under ``data_dir`` (file name as
    :func:`released_file`; ``left_of``: derived from images of two objects, task ids 0)."""
    arrays = read_relational_games(released_file(data_dir, task, object_set_name, file_prefix))
    if task != "left_of":
        return arrays
    images, labels = derive_left_of(arrays.images)
    return RelationalGamesArrays(images, labels, np.zeros(len(labels), dtype=np.int64))
