"""SCAN (Lake & Baroni, ICML 2018, arXiv 1711.00350): commands in a small language mapped to action
sequences, the sequence-to-sequence task on which Compositional Attention (arXiv 2110.09419) is
evaluated.

The whole dataset is generated here from the grammar and its interpretation function, so nothing
needs to be downloaded; the released files (https://github.com/brendenlake/SCAN) can be read
instead with ``data_dir``.

Grammar (Lake & Baroni 2018, appendix), with ``u`` one of walk, look, run, jump and ``d`` one of
left, right::

    C -> S | S and S | S after S
    S -> V | V twice | V thrice
    V -> u | u d | turn d | u opposite d | turn opposite d | u around d | turn around d

34 phrases V, 102 phrases S and 102 + 2 * 102**2 = 20,910 distinct commands C, the number of
lines of the released ``tasks.txt``. Interpretation, with ``[[x]]`` the actions of ``x``,
``[[turn]]`` empty and ``TURN(d)`` the action ``I_TURN_LEFT`` or ``I_TURN_RIGHT``::

    [[walk]] = I_WALK, [[look]] = I_LOOK, [[run]] = I_RUN, [[jump]] = I_JUMP
    [[u d]] = TURN(d) [[u]]
    [[u opposite d]] = TURN(d) TURN(d) [[u]]
    [[u around d]] = (TURN(d) [[u]]) four times
    [[x twice]] = [[x]] [[x]],  [[x thrice]] = [[x]] [[x]] [[x]]
    [[x1 and x2]] = [[x1]] [[x2]],  [[x1 after x2]] = [[x2]] [[x1]]

Splits (the released files, github brendenlake/SCAN, README.md and the files' line counts):

- ``simple``: a random 80/20 split of all commands (16,728 / 4,182). Generated: a seeded
  permutation gives the same sizes (the released membership cannot be reproduced).
- ``length``: train on the commands whose action sequence has at most ``length_cutoff`` actions,
  test on the longer ones. The released split is cutoff 22 (16,990 / 3,920); the paper trains
  with cutoffs 22 to 30 (official code, github sarthmit/Compositional-Attention,
  ``SCAN/dataset/scan_length_resplit.py`` and ``SCAN/paper/plot_big_result_table.py``).
- ``addprim_jump`` / ``addprim_turn_left``: train on every command without the primitive
  ("jump", or the phrase "turn left") plus the primitive alone, repeated so that it makes up 10% of
  the training lines (1,467 copies of "jump" among 14,670 lines; 2,189 copies of "turn left" among
  21,890 lines); test on every other command containing the primitive (7,706 / 1,208).

The generated ``length``, ``addprim_jump`` and ``addprim_turn_left`` splits equal the released
files as multisets of lines, and the generated commands and action sequences equal ``tasks.txt``.

Token ids (:class:`SCANVocabulary`): ``0`` is padding, ``1`` begin-of-sequence, ``2``
end-of-sequence; the words of the grammar follow in sorted order, so ids are the same on every
machine and do not depend on the data.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from tenfold.datamodules.sampling import EpochShuffleSampler, ResumableDataLoader

__all__ = [
    "ACTIONS",
    "BOS_ID",
    "COMMAND_WORDS",
    "EOS_ID",
    "PAD_ID",
    "SCAN_SPLITS",
    "SCANDataModule",
    "SCANDataset",
    "SCANVocabulary",
    "ScanPair",
    "collate_scan",
    "generate_scan_commands",
    "generate_scan_pairs",
    "interpret_scan_command",
    "read_scan_file",
    "read_scan_split",
    "scan_split",
]

ScanPair = tuple[str, str]
"""One SCAN example: (command, actions), each a string of space-separated tokens."""

PAD_ID = 0
BOS_ID = 1
EOS_ID = 2
SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")

_PRIMITIVE_ACTIONS: dict[str, tuple[str, ...]] = {
    "walk": ("I_WALK",),
    "look": ("I_LOOK",),
    "run": ("I_RUN",),
    "jump": ("I_JUMP",),
}
_TURN = "turn"
_TURN_ACTIONS = {"left": "I_TURN_LEFT", "right": "I_TURN_RIGHT"}
_REPEATS = {"twice": 2, "thrice": 3}
_CONJUNCTIONS = ("and", "after")
_AROUND_REPEATS = 4

COMMAND_WORDS: tuple[str, ...] = tuple(
    sorted(
        {
            *_PRIMITIVE_ACTIONS,
            _TURN,
            *_TURN_ACTIONS,
            "opposite",
            "around",
            *_REPEATS,
            *_CONJUNCTIONS,
        }
    )
)
"""The 13 words of SCAN commands, sorted."""
ACTIONS: tuple[str, ...] = tuple(
    sorted({*(a for acts in _PRIMITIVE_ACTIONS.values() for a in acts), *_TURN_ACTIONS.values()})
)
"""The 6 SCAN actions, sorted."""

MAX_COMMAND_WORDS = 9
"""Words of the longest command, e.g. ``walk around left thrice and run around right thrice``."""
MAX_ACTIONS = 48
"""Actions of the longest action sequence (``x around d thrice and y around d thrice``)."""

SCAN_SPLITS = ("simple", "length", "addprim_jump", "addprim_turn_left")
"""The split names of :func:`scan_split`, :func:`read_scan_split` and :class:`SCANDataModule`."""
_ADDED_PRIMITIVES = {"addprim_jump": "jump", "addprim_turn_left": "turn left"}
_SIMPLE_TEST_FRACTION = 0.2
_PRIMITIVE_TRAIN_FRACTION = 0.1
_RELEASED_LENGTH_CUTOFF = 22
_RELEASED_FILES: dict[str, tuple[str, str]] = {
    "simple": ("simple_split/tasks_train_simple.txt", "simple_split/tasks_test_simple.txt"),
    "length": ("length_split/tasks_train_length.txt", "length_split/tasks_test_length.txt"),
    "addprim_jump": (
        "add_prim_split/tasks_train_addprim_jump.txt",
        "add_prim_split/tasks_test_addprim_jump.txt",
    ),
    "addprim_turn_left": (
        "add_prim_split/tasks_train_addprim_turn_left.txt",
        "add_prim_split/tasks_test_addprim_turn_left.txt",
    ),
}
_ALL_COMMANDS_FILE = "tasks.txt"
_GET_FILES_HINT = (
    "get the released SCAN files with `git clone https://github.com/brendenlake/SCAN <data_dir>`, "
    "or leave data_dir unset (null) to generate SCAN from its grammar, which needs no files"
)


def _interpret_verb_phrase(words: Sequence[str], command: str) -> tuple[str, ...]:
    """Actions of a phrase V (``u``, ``u d``, ``u opposite d``, ``u around d``; ``u`` may be turn
    when a direction follows)."""
    primitive = words[0] if words else None
    if primitive == _TURN:
        actions: tuple[str, ...] = ()
    elif primitive in _PRIMITIVE_ACTIONS:
        actions = _PRIMITIVE_ACTIONS[primitive]
    else:
        raise ValueError(
            f"not a SCAN command: {command!r} (expected walk, look, run, jump or turn)"
        )
    if len(words) == 1 and primitive != _TURN:
        return actions
    if len(words) in (2, 3) and words[-1] in _TURN_ACTIONS:
        turn = _TURN_ACTIONS[words[-1]]
        if len(words) == 2:
            return (turn, *actions)
        if words[1] == "opposite":
            return (turn, turn, *actions)
        if words[1] == "around":
            return (turn, *actions) * _AROUND_REPEATS
    raise ValueError(f"not a SCAN command: {command!r} (malformed phrase {' '.join(words)!r})")


def _interpret_repeated_phrase(words: Sequence[str], command: str) -> tuple[str, ...]:
    """Actions of a phrase S (``V``, ``V twice``, ``V thrice``)."""
    if words and words[-1] in _REPEATS:
        return _interpret_verb_phrase(words[:-1], command) * _REPEATS[words[-1]]
    return _interpret_verb_phrase(words, command)


def interpret_scan_command(command: str) -> tuple[str, ...]:
    """The action sequence of a SCAN command (the interpretation function in the module docstring).

    ``interpret_scan_command("jump twice after walk left")`` is
    ``("I_TURN_LEFT", "I_WALK", "I_JUMP", "I_JUMP")``. Raises ``ValueError`` for a string that the
    SCAN grammar does not generate.
    """
    words = command.split()
    conjunctions = [i for i, word in enumerate(words) if word in _CONJUNCTIONS]
    if not conjunctions:
        return _interpret_repeated_phrase(words, command)
    if len(conjunctions) > 1:
        raise ValueError(f"not a SCAN command: {command!r} (at most one 'and' or 'after')")
    (split_at,) = conjunctions
    first = _interpret_repeated_phrase(words[:split_at], command)
    second = _interpret_repeated_phrase(words[split_at + 1 :], command)
    return first + second if words[split_at] == "and" else second + first


def _verb_phrases() -> Iterator[str]:
    """The 34 phrases V in a fixed order."""
    yield from _PRIMITIVE_ACTIONS
    for primitive in (*_PRIMITIVE_ACTIONS, _TURN):
        for direction in _TURN_ACTIONS:
            yield f"{primitive} {direction}"
            yield f"{primitive} opposite {direction}"
            yield f"{primitive} around {direction}"


def generate_scan_commands() -> list[str]:
    """All 20,910 distinct SCAN commands, in a fixed order (grammar enumeration order)."""
    repeated = [
        phrase + suffix for phrase in _verb_phrases() for suffix in ("", " twice", " thrice")
    ]
    commands = list(repeated)
    for conjunction in _CONJUNCTIONS:
        commands += [f"{first} {conjunction} {second}" for first in repeated for second in repeated]
    return commands


def generate_scan_pairs() -> list[ScanPair]:
    """All 20,910 SCAN examples (command, actions), ordered as :func:`generate_scan_commands`."""
    return [
        (command, " ".join(interpret_scan_command(command))) for command in generate_scan_commands()
    ]


def _contains_phrase(command: str, phrase: str) -> bool:
    """Whether ``phrase`` occurs in ``command`` as whole consecutive words."""
    return f" {phrase} " in f" {command} "


def _check_split(split: str) -> None:
    if split not in SCAN_SPLITS:
        raise ValueError(f"unknown SCAN split {split!r}: choose one of {', '.join(SCAN_SPLITS)}")


def _check_length_cutoff(length_cutoff: int) -> None:
    if isinstance(length_cutoff, bool) or not isinstance(length_cutoff, int):
        raise ValueError(f"length_cutoff must be an int, got {length_cutoff!r}")
    if not 1 <= length_cutoff < MAX_ACTIONS:
        raise ValueError(
            f"length_cutoff must be in [1, {MAX_ACTIONS - 1}] so that both train and test sets are "
            f"non-empty (the released length split uses 22), got {length_cutoff}"
        )


def _split_by_length(
    pairs: Sequence[ScanPair], length_cutoff: int
) -> tuple[list[ScanPair], list[ScanPair]]:
    """(pairs with at most ``length_cutoff`` actions, the others)."""
    train = [pair for pair in pairs if len(pair[1].split()) <= length_cutoff]
    test = [pair for pair in pairs if len(pair[1].split()) > length_cutoff]
    return train, test


def scan_split(
    split: str, seed: int = 0, length_cutoff: int = _RELEASED_LENGTH_CUTOFF
) -> tuple[list[ScanPair], list[ScanPair]]:
    """Generates the (train, test) examples of a SCAN split from the grammar (no files needed).

    Args:
        split: one of :data:`SCAN_SPLITS` (definitions in the module docstring).
        seed: seed of the ``numpy.random.Generator`` that permutes the commands of the ``simple``
            split (test = the first 20% of the permutation); unused by the other splits, which are
            deterministic.
        length_cutoff: longest action sequence in the training set of the ``length`` split.

    Returns:
        ``(train, test)``: lists of (command, actions). ``train`` of an ``addprim_*`` split holds
        the primitive command repeatedly (as the released files), at its end.
    """
    _check_split(split)
    pairs = generate_scan_pairs()
    if split == "simple":
        order = np.random.default_rng(seed).permutation(len(pairs))
        num_test = round(_SIMPLE_TEST_FRACTION * len(pairs))
        test = [pairs[i] for i in order[:num_test]]
        train = [pairs[i] for i in order[num_test:]]
        return train, test
    if split == "length":
        _check_length_cutoff(length_cutoff)
        return _split_by_length(pairs, length_cutoff)
    primitive = _ADDED_PRIMITIVES[split]
    train = [pair for pair in pairs if not _contains_phrase(pair[0], primitive)]
    test = [pair for pair in pairs if _contains_phrase(pair[0], primitive) and pair[0] != primitive]
    # copies / (len(train) + copies) = 10%: 13,203 / 9 = 1,467 copies of "jump",
    # 19,701 / 9 = 2,189 of "turn left"
    copies = round(len(train) * _PRIMITIVE_TRAIN_FRACTION / (1 - _PRIMITIVE_TRAIN_FRACTION))
    train += [(primitive, " ".join(interpret_scan_command(primitive)))] * copies
    return train, test


def read_scan_file(path: str | Path) -> list[ScanPair]:
    """Reads a released SCAN file: one ``IN: <command> OUT: <actions>`` example a line.

    Blank lines are skipped; any other line without that form raises ``ValueError`` naming the file
    and line. A missing file raises ``FileNotFoundError`` saying how to get the files.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SCAN file {path} not found: {_GET_FILES_HINT}")
    pairs: list[ScanPair] = []
    with path.open(encoding="utf-8") as lines:
        for line_number, line in enumerate(lines, start=1):
            line = line.strip()
            if not line:
                continue
            command, separator, actions = line.partition(" OUT: ")
            if not separator or not command.startswith("IN: "):
                raise ValueError(
                    f"{path}:{line_number}: expected 'IN: <command> OUT: <actions>', got {line!r}"
                )
            words, action_words = command[len("IN: ") :].split(), actions.split()
            unknown = [w for w in words if w not in COMMAND_WORDS] + [a for a in action_words if a not in ACTIONS]
            if unknown:
                raise ValueError(
                    f"{path}:{line_number}: {', '.join(map(repr, unknown))} not SCAN words or actions in {line!r} "
                    f"(a damaged or cut-short file?): {_GET_FILES_HINT}"
                )
            pairs.append((" ".join(words), " ".join(action_words)))
    return pairs


def read_scan_split(
    data_dir: str | Path, split: str, length_cutoff: int = _RELEASED_LENGTH_CUTOFF
) -> tuple[list[ScanPair], list[ScanPair]]:
    """Reads the (train, test) examples of a split from a clone of github brendenlake/SCAN.

    ``data_dir`` is the repository's root (it holds ``tasks.txt``, ``simple_split/``, ...). The
    ``length`` split with a cutoff other than the released 22 is made from ``tasks.txt``, as the
    official Compositional Attention code does (``SCAN/dataset/scan_length_resplit.py``).
    """
    _check_split(split)
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"SCAN data_dir {data_dir} does not exist: {_GET_FILES_HINT}")
    if split == "length" and length_cutoff != _RELEASED_LENGTH_CUTOFF:
        _check_length_cutoff(length_cutoff)
        return _split_by_length(read_scan_file(data_dir / _ALL_COMMANDS_FILE), length_cutoff)
    train_file, test_file = _RELEASED_FILES[split]
    return read_scan_file(data_dir / train_file), read_scan_file(data_dir / test_file)


class SCANVocabulary:
    """Token ids of one side of SCAN: ``0`` pad, ``1`` begin-of-sequence (BOS), ``2``
    end-of-sequence (EOS), then ``tokens`` in the given order.

    Args:
        tokens: the words of this side (:data:`COMMAND_WORDS` or :data:`ACTIONS`), distinct.
    """

    def __init__(self, tokens: Sequence[str]) -> None:
        self.tokens: tuple[str, ...] = (*SPECIAL_TOKENS, *tokens)
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError(f"SCANVocabulary: tokens must be distinct, got {list(tokens)}")
        self.token_to_id = {token: index for index, token in enumerate(self.tokens)}

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str) -> list[int]:
        """Ids of the space-separated tokens of ``text`` (no BOS or EOS added)."""
        try:
            return [self.token_to_id[token] for token in text.split()]
        except KeyError as error:
            raise ValueError(
                f"token {error.args[0]!r} of {text!r} is not in the SCAN vocabulary "
                f"{list(self.tokens[len(SPECIAL_TOKENS) :])}"
            ) from None

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """The space-separated tokens of ``ids`` (a list or a 1-D tensor), reading up to the first
        EOS and skipping pad and BOS, so a padded target row or a generated sequence decodes to its
        text."""
        if isinstance(ids, Tensor):
            if ids.dim() != 1:
                raise ValueError(f"decode takes one sequence (1-D), got shape {tuple(ids.shape)}")
            ids = ids.tolist()
        words = []
        for index in ids:
            if index == EOS_ID:
                break
            if index in (PAD_ID, BOS_ID):
                continue
            if not 0 <= index < len(self.tokens):
                raise ValueError(f"id {index} is outside the vocabulary of size {len(self.tokens)}")
            words.append(self.tokens[index])
        return " ".join(words)


class SCANDataset(Dataset):
    """SCAN examples as id tensors: item ``i`` is ``{"src": [S_i], "tgt": [T_i]}`` (int64), the
    command's ids and ``BOS + action ids + EOS``."""

    def __init__(
        self, pairs: Sequence[ScanPair], src_vocab: SCANVocabulary, tgt_vocab: SCANVocabulary
    ) -> None:
        self.pairs = list(pairs)
        self.src = [
            torch.tensor(src_vocab.encode(command), dtype=torch.long) for command, _ in self.pairs
        ]
        self.tgt = [
            torch.tensor([BOS_ID, *tgt_vocab.encode(actions), EOS_ID], dtype=torch.long)
            for _, actions in self.pairs
        ]

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        return {"src": self.src[index], "tgt": self.tgt[index]}


def _pad(sequences: Sequence[Tensor]) -> tuple[Tensor, Tensor]:
    """``[B, L]`` right-padded ids with ``PAD_ID`` and the ``[B, L]`` mask, True at padding."""
    lengths = torch.tensor([len(sequence) for sequence in sequences])
    padded = torch.nn.utils.rnn.pad_sequence(
        list(sequences), batch_first=True, padding_value=PAD_ID
    )
    mask = torch.arange(padded.shape[1]) >= lengths[:, None]
    return padded, mask


def collate_scan(items: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """Pads :class:`SCANDataset` items into a batch (keys in :class:`SCANDataModule`)."""
    src, src_padding_mask = _pad([item["src"] for item in items])
    tgt, tgt_padding_mask = _pad([item["tgt"] for item in items])
    return {
        "src": src,
        "tgt": tgt,
        "src_padding_mask": src_padding_mask,
        "tgt_padding_mask": tgt_padding_mask,
    }


class SCANDataModule(L.LightningDataModule):
    """SCAN splits as padded id batches for sequence-to-sequence models.

    Batches (dicts; B examples, S the longest command, T the longest target in the batch):

    - ``"src"``: int64 ``[B, S]``, command word ids, right-padded with ``pad_id`` (0).
    - ``"tgt"``: int64 ``[B, T]``, ``bos_id`` (1), the action ids, ``eos_id`` (2), right-padded with
      ``pad_id``; a decoder reads ``tgt[:, :-1]`` and predicts ``tgt[:, 1:]``.
    - ``"src_padding_mask"`` / ``"tgt_padding_mask"``: bool ``[B, S]`` / ``[B, T]``, True at
      padding (the convention of ``nn.MultiheadAttention``'s ``key_padding_mask``).

    Data: generated from the grammar (``data_dir=None``, no files) or read from a clone of
    github brendenlake/SCAN (``data_dir``; see :func:`read_scan_split`). The test set is the
    split's test set. Validation: with ``val_fraction > 0`` a held-out part of the training lines,
    drawn with a ``numpy.random.Generator`` seeded by ``(seed, 1)`` and removed from training (the
    official length resplit holds out 10% of the training commands the same way,
    ``SCAN/dataset/scan_length_resplit.py``); with ``val_fraction = 0`` the test set, as the
    official code does for the released splits (``SCAN/tasks/scan_transformer.py``).

    Attributes (available after construction; they cover every split, so models sized from them
    fit the test set): ``src_vocab_size`` (16), ``tgt_vocab_size`` (9), ``pad_id``, ``bos_id``,
    ``eos_id``, ``max_src_len`` (9 words), ``max_tgt_len`` (50 = 48 actions + BOS + EOS),
    ``src_vocab`` / ``tgt_vocab`` (:class:`SCANVocabulary`).

    Args:
        split: one of :data:`SCAN_SPLITS`.
        data_dir: root of a clone of github brendenlake/SCAN; None generates the data.
        length_cutoff: longest action sequence in training, for ``split="length"`` (released: 22).
        batch_size: training examples per batch (official code: 256).
        eval_batch_size: validation/test examples per batch; None: ``batch_size``.
        num_workers: DataLoader worker processes.
        seed: seed of the ``simple`` split's permutation, the validation hold-out and the training
            shuffle order.
        val_fraction: fraction of the training lines held out for validation, in ``[0, 1)``.
        src_vocab_size, tgt_vocab_size, max_src_len, max_tgt_len: the values as the config declares
            them (model configs interpolate ``${data.src_vocab_size}`` and so on); each is checked
            against the attribute of the same name. None: not checked.
    """

    def __init__(
        self,
        split: str = "simple",
        data_dir: str | Path | None = None,
        length_cutoff: int = _RELEASED_LENGTH_CUTOFF,
        batch_size: int = 256,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
        val_fraction: float = 0.1,
        src_vocab_size: int | None = None,
        tgt_vocab_size: int | None = None,
        max_src_len: int | None = None,
        max_tgt_len: int | None = None,
    ) -> None:
        super().__init__()
        _check_split(split)
        if split == "length":
            _check_length_cutoff(length_cutoff)
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(f"SCANDataModule: {name} must be a positive int, got {value!r}")
        if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
            raise ValueError(
                f"SCANDataModule: num_workers must be an int >= 0, got {num_workers!r}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"SCANDataModule: seed must be an int >= 0, got {seed!r}")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(
                f"SCANDataModule: val_fraction must be in [0, 1), got {val_fraction!r}"
            )
        if data_dir is not None:
            data_dir = str(data_dir)  # a Path in the hyperparameters would not load with weights_only=True
        self.save_hyperparameters()
        self.split = split
        self.data_dir = data_dir
        self.length_cutoff = length_cutoff
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.val_fraction = val_fraction
        self.src_vocab = SCANVocabulary(COMMAND_WORDS)
        self.tgt_vocab = SCANVocabulary(ACTIONS)
        self.src_vocab_size = len(self.src_vocab)
        self.tgt_vocab_size = len(self.tgt_vocab)
        self.pad_id = PAD_ID
        self.bos_id = BOS_ID
        self.eos_id = EOS_ID
        self.max_src_len = MAX_COMMAND_WORDS
        self.max_tgt_len = MAX_ACTIONS + 2
        for name, declared in (
            ("src_vocab_size", src_vocab_size),
            ("tgt_vocab_size", tgt_vocab_size),
            ("max_src_len", max_src_len),
            ("max_tgt_len", max_tgt_len),
        ):
            if declared is not None and declared != getattr(self, name):
                raise ValueError(
                    f"SCANDataModule: data.{name}={declared} but SCAN has {name} = "
                    f"{getattr(self, name)}: set data.{name}={getattr(self, name)}"
                )
        self.train_set: SCANDataset | None = None
        self.val_set: SCANDataset | None = None
        self.test_set: SCANDataset | None = None

    def prepare_data(self) -> None:
        """Checks that ``data_dir`` exists when given (generated data needs nothing)."""
        if self.data_dir is not None and not Path(self.data_dir).is_dir():
            raise FileNotFoundError(
                f"SCAN data_dir {self.data_dir} does not exist: {_GET_FILES_HINT}"
            )

    def setup(self, stage: str | None = None) -> None:
        """Builds the train, validation and test sets (once)."""
        if self.train_set is not None:
            return
        if self.data_dir is None:
            train, test = scan_split(self.split, seed=self.seed, length_cutoff=self.length_cutoff)
        else:
            train, test = read_scan_split(
                self.data_dir, self.split, length_cutoff=self.length_cutoff
            )
        if self.val_fraction > 0:
            order = np.random.default_rng((self.seed, 1)).permutation(len(train))
            num_val = math.floor(self.val_fraction * len(train))
            if num_val == 0:
                raise ValueError(
                    f"SCANDataModule: val_fraction={self.val_fraction} of {len(train)} training lines holds out "
                    f"none; raise val_fraction to at least {1 / len(train):.3g}, or set val_fraction=0 to "
                    "validate on the test set"
                )
            val = [train[i] for i in sorted(order[:num_val])]
            train = [train[i] for i in sorted(order[num_val:])]
        else:
            val = test
        self.train_set = SCANDataset(train, self.src_vocab, self.tgt_vocab)
        self.val_set = SCANDataset(val, self.src_vocab, self.tgt_vocab)
        self.test_set = SCANDataset(test, self.src_vocab, self.tgt_vocab)

    def decode_src(self, ids: Sequence[int] | Tensor) -> str:
        """The command text of one row of ``"src"`` (padding dropped)."""
        return self.src_vocab.decode(ids)

    def decode_tgt(self, ids: Sequence[int] | Tensor) -> str:
        """The action text of one row of ``"tgt"`` or of generated ids (up to the first EOS)."""
        return self.tgt_vocab.decode(ids)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training batches, the order of each epoch seeded by ``(seed, epoch)``."""
        dataset = self._dataset("train_set")
        return self._dataloader(dataset, self.batch_size, EpochShuffleSampler(len(dataset), self.seed))

    def val_dataloader(self) -> DataLoader:
        """Validation batches in a fixed order."""
        return self._dataloader(self._dataset("val_set"), self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        """Test batches in a fixed order."""
        return self._dataloader(self._dataset("test_set"), self.eval_batch_size)

    def _dataset(self, name: str) -> SCANDataset:
        if getattr(self, name) is None:
            self.setup()
        return getattr(self, name)

    def _dataloader(
        self,
        dataset: SCANDataset,
        batch_size: int,
        sampler: EpochShuffleSampler | None = None,
    ) -> DataLoader:
        return ResumableDataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate_scan,
            persistent_workers=self.num_workers > 0,
        )
