"""WikiText word-level language modelling, the language-modelling task of Compositional Attention
(arXiv 2110.09419), which trains on WikiText-103.

The official code trains with fairseq (github sarthmit/Compositional-Attention,
``fairseq/run_wiki.sh``): ``--task language_modeling --tokens-per-sample 512
--sample-break-mode none --max-tokens 2048 --update-freq 16`` on the binarized ``wikitext-103-v1.zip`` (``fairseq/examples/language_model/``:
``prepare-wikitext-103.sh`` downloads it, ``fairseq-preprocess --only-source`` builds the
dictionary from the training file), and evaluates the test set with ``fairseq-eval-lm
--tokens-per-sample 512 --context-window 400`` (``fairseq/eval_wiki.sh``). This module reads the
same files and reproduces that data pipeline:

- Tokens: each line is split on whitespace and ends with ``<eos>``; empty lines give a lone
  ``<eos>``, as fairseq's binarizer does. WikiText is released with ``<unk>`` already applied.
- Vocabulary: ``<eos>`` (id 0), ``<unk>`` (id 1), then every word of the training file by
  decreasing count, ties in order of first occurrence (``min_freq`` / ``max_vocab_size`` can
  shrink it). Words of the validation and test files that are not in it map to ``<unk>``. For
  WikiText-103 this is 267,735 types, for WikiText-2 33,278 (Merity et al. 2016, arXiv 1609.07843).
- Each split is one stream of token ids with one ``<eos>`` prepended, so the first target is the
  first token of the file with ``<eos>`` as its input, as in fairseq's first block.

Every sample is a window of ``context_length + 1`` consecutive stream tokens: the model reads
``tokens[:-1]`` and predicts ``tokens[1:]``; ``target_mask`` marks the targets that count towards
the loss, so that every token of a split is scored exactly once:

- Training and validation (fairseq ``--sample-break-mode none``): windows start every
  ``context_length`` tokens, so consecutive windows share only their boundary token and their
  targets tile the stream; the last window is moved back to end at the stream's end and scores
  only the targets that no earlier window scored.
- Test with ``test_context_window = C`` (fairseq-eval-lm ``--context-window C``): windows advance
  by ``context_length - C`` tokens and score only their last ``context_length - C`` targets, so
  every scored token sees at least ``C`` tokens of context (all earlier tokens near the start).

Under DDP, Lightning's distributed sampler pads a split whose windows the processes do not divide
evenly by repeating windows, whose tokens are then scored twice: evaluate on one device for the
exact perplexity.

Token streams are built once and cached (``torch.save``) under ``<data_dir>/<variant>/``; the cache
is rebuilt when a source file's size or modification time changes, and, with a warning, when it is
damaged (a file cut short, a vocabulary of another size than the streams').
"""

from __future__ import annotations

import logging
import pickle
import math
import os
import shutil
import urllib.request
import zipfile
from array import array
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from tenfold.datamodules.sampling import EpochShuffleSampler, ResumableDataLoader

__all__ = [
    "EOS",
    "EOS_ID",
    "UNK",
    "UNK_ID",
    "WIKITEXT_FILES",
    "WIKITEXT_URLS",
    "LanguageModelWindows",
    "WikiTextDataModule",
    "build_vocabulary",
    "count_words",
    "download_wikitext",
    "encode_file",
    "language_model_windows",
]

log = logging.getLogger(__name__)

EOS = "<eos>"
UNK = "<unk>"
EOS_ID = 0
UNK_ID = 1

WIKITEXT_FILES = {
    "train": "wiki.train.tokens",
    "valid": "wiki.valid.tokens",
    "test": "wiki.test.tokens",
}
"""The files of each split, inside ``<data_dir>/<variant>/`` (the layout of the official zips)."""

WIKITEXT_URLS: dict[str, tuple[str, ...]] = {
    "wikitext-103": (
        "https://wikitext.smerity.com/wikitext-103-v1.zip",
        "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-103-v1.zip",
    ),
    "wikitext-2": (
        "https://wikitext.smerity.com/wikitext-2-v1.zip",
        "https://s3.amazonaws.com/research.metamind.io/wikitext/wikitext-2-v1.zip",
    ),
}
"""Where the word-level zips are, tried in order: the author's mirror, then the original S3 bucket
(gone since 2024, kept for machines that mirror it). Each zip extracts to ``<variant>/``."""

_CACHE_FORMAT = 2
_DOWNLOAD_TIMEOUT_S = 60
# The mirror is reported to refuse urllib's default User-Agent.
_USER_AGENT = "Mozilla/5.0 (compatible; tenfold)"


def _lines(path: Path) -> Iterator[list[str]]:
    """The whitespace-separated words of each line of a UTF-8 text file."""
    with path.open(encoding="utf-8") as file:
        for line in file:
            yield line.split()


def count_words(path: str | Path) -> Counter[str]:
    """How often each word occurs in a text file (``<eos>`` not counted); insertion order is the
    order of first occurrence."""
    counts: Counter[str] = Counter()
    for words in _lines(Path(path)):
        counts.update(words)
    return counts


def build_vocabulary(
    counts: Counter[str], min_freq: int = 1, max_vocab_size: int | None = None
) -> list[str]:
    """The id-to-word list: ``<eos>``, ``<unk>``, then the words with count ``>= min_freq`` by
    decreasing count (ties in insertion order of ``counts``), cut to ``max_vocab_size`` entries in
    all (None: no cut). ``<unk>`` and ``<eos>`` in the text are the special entries."""
    words = [word for word, count in counts.items() if count >= min_freq and word not in (EOS, UNK)]
    words.sort(key=lambda word: -counts[word])
    vocabulary = [EOS, UNK, *words]
    if max_vocab_size is not None:
        vocabulary = vocabulary[:max_vocab_size]
    return vocabulary


def encode_file(path: str | Path, word_to_id: dict[str, int]) -> Tensor:
    """The ids of a text file's words, ``<eos>`` after every line, words not in ``word_to_id`` as
    ``<unk>``: int32 ``[num_tokens]``."""
    ids = array("i")
    lookup = word_to_id.get
    for words in _lines(Path(path)):
        ids.extend([lookup(word, UNK_ID) for word in words])
        ids.append(EOS_ID)
    if not ids:
        return torch.zeros(0, dtype=torch.int32)
    return torch.frombuffer(ids, dtype=torch.int32).clone()


def language_model_windows(
    num_targets: int, context_length: int, context_window: int = 0
) -> tuple[Tensor, Tensor, Tensor]:
    """Windows over a stream of ``num_targets + 1`` tokens that score every target exactly once.

    Target ``j`` (``1 <= j <= num_targets``) is stream token ``j``, predicted from tokens ``< j``.
    Window ``i`` is ``stream[start[i] : start[i] + context_length + 1]``; its targets are stream
    positions ``start[i] + 1 + t`` for ``t`` in ``[0, context_length)``, of which it scores
    ``first[i] <= t < end[i]``. Windows score blocks of ``stride = context_length -
    context_window`` consecutive targets; each window ends at its block's last target, so every
    scored target has at least ``context_window`` tokens of context (all earlier ones near the
    start), and windows never reach past the stream (the last is moved back).

    Returns:
        ``start``, ``first``, ``end``: long ``[num_windows]`` each.
    """
    if context_length < 1:
        raise ValueError(f"context_length must be >= 1, got {context_length}")
    if not 0 <= context_window < context_length:
        raise ValueError(
            f"context_window must be in [0, context_length={context_length}), got {context_window}"
        )
    if num_targets < context_length:
        raise ValueError(
            f"a stream of {num_targets} targets is shorter than one window of context_length="
            f"{context_length}: lower context_length or raise max_train_tokens / max_eval_tokens"
        )
    stride = context_length - context_window
    block_first = 1 + stride * torch.arange(math.ceil(num_targets / stride))
    block_end = torch.clamp(block_first + stride, max=num_targets + 1)
    start = torch.clamp(block_first - 1 - context_window, min=0, max=num_targets - context_length)
    return start, block_first - start - 1, block_end - start - 1


class LanguageModelWindows(Dataset):
    """Windows of a token stream (see :func:`language_model_windows`).

    ``stream``: int token ids ``[num_targets + 1]``, the first one the prepended ``<eos>``.
    Item ``i``: ``{"tokens": long [context_length + 1], "target_mask": bool [context_length]}``.
    """

    def __init__(self, stream: Tensor, context_length: int, context_window: int = 0) -> None:
        self.stream = stream
        self.context_length = context_length
        self.start, self.first, self.end = language_model_windows(
            stream.numel() - 1, context_length, context_window
        )
        self._positions = torch.arange(context_length)

    def __len__(self) -> int:
        return self.start.numel()

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        start = int(self.start[index])
        tokens = self.stream[start : start + self.context_length + 1].long()
        mask = (self._positions >= self.first[index]) & (self._positions < self.end[index])
        return {"tokens": tokens, "target_mask": mask}

    @property
    def num_scored_targets(self) -> int:
        """Targets that the windows score: every token of the stream but the prepended one."""
        return int((self.end - self.first).sum())


def download_wikitext(variant: str, data_dir: str | Path) -> Path:
    """Downloads ``<variant>-v1.zip`` (trying :data:`WIKITEXT_URLS` in order) into ``data_dir``
    and extracts it there; returns ``data_dir / variant``."""
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    archive_path = data_dir / f"{variant}-v1.zip"
    failures = []
    for url in WIKITEXT_URLS[variant]:
        partial_path = archive_path.with_suffix(".zip.part")
        try:
            request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
            with urllib.request.urlopen(request, timeout=_DOWNLOAD_TIMEOUT_S) as response:
                with partial_path.open("wb") as file:
                    shutil.copyfileobj(response, file)
            os.replace(partial_path, archive_path)
            break
        except OSError as error:
            partial_path.unlink(missing_ok=True)
            failures.append(f"{url}: {error}")
    else:
        raise RuntimeError(
            f"could not download {variant}: {'; '.join(failures)}. "
            + _get_files_hint(variant, data_dir)
        )
    with zipfile.ZipFile(archive_path) as archive:
        archive.extractall(data_dir)
    return data_dir / variant


def _get_files_hint(variant: str, data_dir: Path) -> str:
    urls = " or ".join(WIKITEXT_URLS[variant])
    return (
        f"Get {variant}-v1.zip from {urls} and unzip it into {data_dir} (it extracts to "
        f"{data_dir / variant}/), or run once on a machine with internet access with download=True "
        "(data.download=true with train.py). The "
        f'Hugging Face dataset "Salesforce/wikitext" (config "{variant}-v1") holds the same lines, '
        f'one row each: write the "text" rows of its train / validation / test splits to '
        f"{', '.join(WIKITEXT_FILES.values())}, an empty row as an empty line "
        f"(\"\".join(row or \"\\n\" for row in rows))"
    )


class WikiTextDataModule(L.LightningDataModule):
    """WikiText-103 (or WikiText-2) as windows of ``context_length + 1`` tokens.

    Batches (train, validation and test loaders alike):

    - ``"tokens"``: long ``[B, context_length + 1]``, consecutive stream tokens: inputs
      ``tokens[:, :-1]``, targets ``tokens[:, 1:]``.
    - ``"target_mask"``: bool ``[B, context_length]``, the targets that count towards the loss
      (sum the loss over them and divide by their number, as fairseq does). All true except in the
      last window of a split and, for ``test_context_window > 0``, in the context part of each test
      window; see the module docstring.

    Training windows are shuffled (order seeded by ``seed``); validation and test windows are in
    stream order.

    Files: ``<data_dir>/<variant>/wiki.{train,valid,test}.tokens`` (the layout of
    ``<variant>-v1.zip``). :meth:`prepare_data` downloads them when missing and ``download`` is
    true, then tokenizes them once into a cache beside them.

    Args:
        data_dir: the folder holding ``<variant>/``.
        variant: ``"wikitext-103"`` (the paper) or ``"wikitext-2"`` (small, same format).
        context_length: tokens per sample (fairseq ``--tokens-per-sample``; official: 512).
        batch_size: windows per batch (official: 2048 tokens per batch = 4 windows, with gradients
            accumulated over 16 batches).
        num_workers: DataLoader workers.
        seed: seeds the training shuffle.
        min_freq: training-set count below which a word becomes ``<unk>`` (1: keep all, as fairseq).
        max_vocab_size: keep only this many vocabulary entries, specials included (None: all).
        vocab_size: the vocabulary size the config declares (models interpolate
            ``${data.vocab_size}``); checked against the data at :meth:`setup`. None: not checked.
        val_context_window: tokens of context before the scored ones in validation windows
            (official validation: 0).
        test_context_window: the same for test windows (official ``--context-window 400``).
        max_train_tokens: keep only the first this many training tokens (None: all); for small
            runs. The vocabulary still comes from the whole training file.
        max_eval_tokens: the same for the validation and test files.
        download: let :meth:`prepare_data` download missing files.
    """

    def __init__(
        self,
        data_dir: str | Path,
        variant: str = "wikitext-103",
        context_length: int = 512,
        batch_size: int = 4,
        num_workers: int = 0,
        seed: int = 0,
        min_freq: int = 1,
        max_vocab_size: int | None = None,
        vocab_size: int | None = None,
        val_context_window: int = 0,
        test_context_window: int = 400,
        max_train_tokens: int | None = None,
        max_eval_tokens: int | None = None,
        download: bool = True,
    ) -> None:
        super().__init__()
        if variant not in WIKITEXT_URLS:
            raise ValueError(f"variant must be one of {sorted(WIKITEXT_URLS)}, got {variant!r}")
        _check_int("context_length", context_length, minimum=1)
        _check_int("batch_size", batch_size, minimum=1)
        _check_int("min_freq", min_freq, minimum=1)
        _check_int("max_vocab_size", max_vocab_size, minimum=2, optional=True)
        _check_int("max_train_tokens", max_train_tokens, minimum=1, optional=True)
        _check_int("max_eval_tokens", max_eval_tokens, minimum=1, optional=True)
        _check_int("num_workers", num_workers, minimum=0)
        _check_int("seed", seed, minimum=0)
        for name, value in (
            ("val_context_window", val_context_window),
            ("test_context_window", test_context_window),
        ):
            _check_int(name, value, minimum=0)
            if value >= context_length:
                raise ValueError(
                    f"WikiTextDataModule: {name} must be below context_length={context_length}, "
                    f"got {value}"
                )
        data_dir = str(data_dir)  # a Path in the hyperparameters would not load with weights_only=True
        self.save_hyperparameters()
        self.data_dir = Path(data_dir)
        self.variant = variant
        self.context_length = context_length
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.seed = seed
        self.min_freq = min_freq
        self.max_vocab_size = max_vocab_size
        self.declared_vocab_size = vocab_size
        self.val_context_window = val_context_window
        self.test_context_window = test_context_window
        self.max_train_tokens = max_train_tokens
        self.max_eval_tokens = max_eval_tokens
        self.download = download
        self.eos_id = EOS_ID
        self.unk_id = UNK_ID
        self.vocab: list[str] | None = self._current_cached_vocabulary()
        self.train_set: LanguageModelWindows | None = None
        self.val_set: LanguageModelWindows | None = None
        self.test_set: LanguageModelWindows | None = None

    @property
    def text_dir(self) -> Path:
        """``<data_dir>/<variant>``, the folder of the ``wiki.*.tokens`` files."""
        return self.data_dir / self.variant

    @property
    def source_paths(self) -> dict[str, Path]:
        """The text file of each split (``train``, ``valid``, ``test``)."""
        return {split: self.text_dir / name for split, name in WIKITEXT_FILES.items()}

    @property
    def cache_dir(self) -> Path:
        """Where the vocabulary (``vocab.txt``) and token streams (``tokens.pt``) are cached; one
        folder per vocabulary setting."""
        size = "all" if self.max_vocab_size is None else str(self.max_vocab_size)
        return self.text_dir / "tenfold_cache" / f"min_freq{self.min_freq}_max_vocab{size}"

    @property
    def vocab_size(self) -> int:
        """Number of token ids. Known after :meth:`setup`, or right after construction when a
        cache of the current source files exists or the config declares ``vocab_size``."""
        if self.vocab is not None:
            return len(self.vocab)
        if self.declared_vocab_size is not None:
            return self.declared_vocab_size
        raise RuntimeError(
            "WikiTextDataModule.vocab_size is known once the data is tokenized: call "
            "prepare_data() and setup() first, or declare vocab_size in the data config"
        )

    def decode(self, ids: Sequence[int] | Tensor) -> str:
        """The words of token ids, separated by spaces (``<eos>`` included)."""
        if self.vocab is None:
            raise RuntimeError("WikiTextDataModule.decode needs the vocabulary: call setup() first")
        if isinstance(ids, Tensor):
            ids = ids.flatten().tolist()
        return " ".join(self.vocab[i] for i in ids)

    def prepare_data(self) -> None:
        """Downloads missing files when ``download`` is set, then tokenizes them into the cache
        unless a cache of the current files exists."""
        if self._missing_sources() and self.download:
            download_wikitext(self.variant, self.data_dir)
        self._check_sources()
        if self._load_cache() is None:
            _, self.vocab = self._build_cache()

    def setup(self, stage: str | None = None) -> None:
        """Loads the cached token streams (tokenizing first when there is no cache) and builds the
        window datasets (once)."""
        if self.train_set is not None:
            return
        self._check_sources()
        cache, self.vocab = self._load_cache() or self._build_cache()
        if self.declared_vocab_size is not None and self.declared_vocab_size != len(self.vocab):
            raise ValueError(
                f"data.vocab_size={self.declared_vocab_size} but the {self.variant} vocabulary "
                f"(min_freq={self.min_freq}, max_vocab_size={self.max_vocab_size}) has "
                f"{len(self.vocab)} entries: set data.vocab_size={len(self.vocab)}"
            )
        self.train_set = self._windows(cache["train"], self.max_train_tokens, 0)
        self.val_set = self._windows(cache["valid"], self.max_eval_tokens, self.val_context_window)
        self.test_set = self._windows(cache["test"], self.max_eval_tokens, self.test_context_window)

    def train_dataloader(self) -> DataLoader:
        """Shuffled training windows, order seeded by ``seed``."""
        return self._dataloader(self._dataset("train_set"), shuffle=True)

    def val_dataloader(self) -> DataLoader:
        """Validation windows in stream order."""
        return self._dataloader(self._dataset("val_set"), shuffle=False)

    def test_dataloader(self) -> DataLoader:
        """Test windows in stream order."""
        return self._dataloader(self._dataset("test_set"), shuffle=False)

    def _windows(
        self, ids: Tensor, max_tokens: int | None, context_window: int
    ) -> LanguageModelWindows:
        ids = ids[:max_tokens] if max_tokens is not None else ids
        stream = torch.cat([torch.tensor([EOS_ID], dtype=ids.dtype), ids])
        return LanguageModelWindows(stream, self.context_length, context_window)

    def _dataset(self, name: str) -> LanguageModelWindows:
        if getattr(self, name) is None:
            self.setup()
        return getattr(self, name)

    def _dataloader(self, dataset: LanguageModelWindows, shuffle: bool) -> DataLoader:
        return ResumableDataLoader(
            dataset,
            batch_size=self.batch_size,
            sampler=EpochShuffleSampler(len(dataset), self.seed) if shuffle else None,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def _missing_sources(self) -> list[Path]:
        return [path for path in self.source_paths.values() if not path.is_file()]

    def _check_sources(self) -> None:
        missing = self._missing_sources()
        if missing:
            raise FileNotFoundError(
                f"{self.variant} files not found: {', '.join(str(path) for path in missing)}. "
                + _get_files_hint(self.variant, self.data_dir)
            )

    def _fingerprint(self) -> dict[str, list[int]]:
        """Size and modification time (ns) of each source file, to tell a stale cache."""
        stats = {split: path.stat() for split, path in self.source_paths.items()}
        return {split: [stat.st_size, stat.st_mtime_ns] for split, stat in stats.items()}

    def _current_cached_vocabulary(self) -> list[str] | None:
        """The cached vocabulary if the cache is that of the current source files, else None."""
        loaded = None if self._missing_sources() else self._load_cache()
        return loaded[1] if loaded is not None else None

    def _load_cache(self) -> tuple[dict[str, Tensor], list[str]] | None:
        """The cached token streams of the current source files and the vocabulary, or None (no
        cache, stale, or damaged: a file cut short or a vocabulary of another size than the
        streams', which is rebuilt with a warning)."""
        tokens_path, vocabulary_path = self.cache_dir / "tokens.pt", self.cache_dir / "vocab.txt"
        if not (tokens_path.is_file() and vocabulary_path.is_file()):
            return None
        try:
            cache = torch.load(tokens_path, weights_only=True, mmap=True)
        except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as error:
            log.warning("The token cache %s is damaged (%s): tokenizing again", tokens_path, error)
            return None
        if cache.get("format") != _CACHE_FORMAT or cache.get("sources") != self._fingerprint():
            return None
        vocabulary = vocabulary_path.read_text(encoding="utf-8").split("\n")[:-1]
        if len(vocabulary) != cache.get("vocab_size"):
            log.warning(
                "The cached vocabulary %s has %d words, its token streams %s: tokenizing again",
                vocabulary_path, len(vocabulary), cache.get("vocab_size"),
            )
            return None
        return cache, vocabulary

    def _build_cache(self) -> tuple[dict[str, Tensor], list[str]]:
        """Builds the vocabulary from the training file, encodes every split and writes both;
        returns them."""
        log.info("Tokenizing %s once; the cache goes to %s", self.text_dir, self.cache_dir)
        paths = self.source_paths
        counts = count_words(paths["train"])
        if not any(word not in (EOS, UNK) for word in counts):
            raise ValueError(
                f"{paths['train']} holds no words (an empty or damaged copy): replace it. "
                + _get_files_hint(self.variant, self.data_dir)
            )
        vocabulary = build_vocabulary(counts, self.min_freq, self.max_vocab_size)
        word_to_id = {word: index for index, word in enumerate(vocabulary)}
        cache: dict = {"format": _CACHE_FORMAT, "sources": self._fingerprint(), "vocab_size": len(vocabulary)}
        for split, path in paths.items():
            cache[split] = encode_file(path, word_to_id)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        vocabulary_text = "".join(f"{word}\n" for word in vocabulary)
        _write_atomically(
            self.cache_dir / "vocab.txt",
            lambda path: path.write_text(vocabulary_text, encoding="utf-8"),
        )
        _write_atomically(self.cache_dir / "tokens.pt", lambda path: torch.save(cache, path))
        return cache, vocabulary


def _write_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Writes through ``write(temporary_path)`` and renames, so readers never see a partial file."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    write(temporary)
    os.replace(temporary, path)


def _check_int(name: str, value: object, minimum: int, optional: bool = False) -> None:
    """Raises ``ValueError`` unless ``value`` is an int ``>= minimum`` (or None when optional)."""
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        allowed = f"an int >= {minimum}" + (" or null" if optional else "")
        raise ValueError(f"WikiTextDataModule: {name} must be {allowed}, got {value!r}")
