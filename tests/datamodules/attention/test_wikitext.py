"""WikiText language modelling on a generated corpus: vocabulary from the training file only,
``<eos>`` per line, windows that score every token exactly once (with and without a context
window), the token cache, downloads from a local zip, and errors for missing or mismatched data."""

import logging
import os
import zipfile
from pathlib import Path

import pytest
import torch
import lightning as L
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tenfold.datamodules.attention import wikitext
from tenfold.datamodules.attention.wikitext import (
    EOS_ID,
    UNK_ID,
    WikiTextDataModule,
    build_vocabulary,
    count_words,
    encode_file,
    language_model_windows,
)

torch.set_num_threads(1)

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs" / "data" / "attention"

# Lines as in the released files: a leading space, words separated by spaces, blank lines between
# paragraphs. Train word counts: the 4, a 3, = 2, cat 2, <unk> 2, Title 1, sat 1, . 1, dog 1.
TRAIN = " = Title = \n \n the cat sat . \n the a a <unk> \n a the cat dog the <unk> \n"
VALID = " the zebra sat \n \n"
TEST = " dog a moose \n"
# <eos>, <unk>, then by decreasing count, ties in order of first occurrence.
VOCAB = ["<eos>", "<unk>", "the", "a", "=", "cat", "Title", "sat", ".", "dog"]


def write_corpus(root: Path, variant: str = "wikitext-2", train: str = TRAIN) -> Path:
    folder = root / variant
    folder.mkdir(parents=True, exist_ok=True)
    files = {"wiki.train.tokens": train, "wiki.valid.tokens": VALID, "wiki.test.tokens": TEST}
    for name, text in files.items():
        (folder / name).write_text(text, encoding="utf-8")
    return folder


def ids(words: str) -> list[int]:
    return [VOCAB.index(word) for word in words.split()]


def make_dm(root: Path, **kwargs) -> WikiTextDataModule:
    options = dict(variant="wikitext-2", context_length=4, batch_size=2, test_context_window=0)
    options.update(kwargs)
    return WikiTextDataModule(str(root), **options)


def test_vocabulary_and_streams_follow_the_word_level_setup(tmp_path):
    folder = write_corpus(tmp_path)
    vocabulary = build_vocabulary(count_words(folder / "wiki.train.tokens"))
    assert vocabulary == VOCAB
    word_to_id = {word: index for index, word in enumerate(vocabulary)}
    train = encode_file(folder / "wiki.train.tokens", word_to_id)
    expected = ids("= Title = <eos> <eos> the cat sat . <eos> the a a <unk> <eos>")
    expected += ids("a the cat dog the <unk> <eos>")
    assert train.dtype == torch.int32 and train.tolist() == expected
    # Words that the training file lacks are <unk> in the other splits.
    assert encode_file(folder / "wiki.valid.tokens", word_to_id).tolist() == [
        VOCAB.index("the"), UNK_ID, VOCAB.index("sat"), EOS_ID, EOS_ID
    ]
    assert encode_file(folder / "wiki.test.tokens", word_to_id).tolist() == ids("dog a <unk> <eos>")


def test_min_freq_and_max_vocab_size_shrink_the_vocabulary(tmp_path):
    counts = count_words(write_corpus(tmp_path) / "wiki.train.tokens")
    assert build_vocabulary(counts, min_freq=2) == ["<eos>", "<unk>", "the", "a", "=", "cat"]
    assert build_vocabulary(counts, max_vocab_size=4) == ["<eos>", "<unk>", "the", "a"]


@pytest.mark.parametrize(
    ("num_targets", "context_length", "context_window"),
    [(10, 4, 0), (12, 4, 0), (4, 4, 0), (10, 4, 2), (23, 5, 3), (7, 7, 6), (30, 8, 5)],
)
def test_windows_score_every_target_once_with_enough_context(
    num_targets, context_length, context_window
):
    start, first, end = language_model_windows(num_targets, context_length, context_window)
    scored = []
    for window_start, lo, hi in zip(start.tolist(), first.tolist(), end.tolist()):
        assert 0 <= window_start and window_start + context_length <= num_targets  # in the stream
        assert 0 <= lo < hi <= context_length
        for t in range(lo, hi):
            position = window_start + 1 + t
            # the window holds at least min(context_window, position - 1) tokens before the input
            # of this target (stream token position - 1)
            assert (position - 1) - window_start >= min(context_window, position - 1)
            scored.append(position)
    assert sorted(scored) == list(range(1, num_targets + 1))


def test_windows_without_context_are_contiguous_chunks():
    start, first, end = language_model_windows(12, 4, 0)
    assert start.tolist() == [0, 4, 8] and first.tolist() == [0, 0, 0] and end.tolist() == [4, 4, 4]
    start, first, end = language_model_windows(10, 4, 0)  # the last window moves back by two
    assert start.tolist() == [0, 4, 6] and first.tolist() == [0, 0, 2] and end.tolist() == [4, 4, 4]


def test_windows_reject_streams_shorter_than_a_window():
    with pytest.raises(ValueError, match="lower context_length"):
        language_model_windows(3, 4)
    with pytest.raises(ValueError, match="context_window"):
        language_model_windows(10, 4, 4)


def test_batches_are_shifted_windows_of_the_stream(tmp_path):
    write_corpus(tmp_path)
    dm = make_dm(tmp_path)
    dm.prepare_data()
    dm.setup("fit")
    assert dm.vocab == VOCAB and dm.vocab_size == 10
    stream = [EOS_ID] + ids("= Title = <eos> <eos> the cat sat . <eos> the a a <unk> <eos>")
    stream += ids("a the cat dog the <unk> <eos>")
    num_targets = len(stream) - 1  # 22 tokens in the file
    windows = [dm.val_set[i] for i in range(len(dm.val_set))]  # stream order
    train_windows = [dm.train_set[i] for i in range(len(dm.train_set))]
    for window in train_windows:
        assert window["tokens"].dtype == torch.long and window["tokens"].shape == (5,)
        assert window["target_mask"].dtype == torch.bool and window["target_mask"].shape == (4,)
    # Windows start every 4 tokens; the last one (targets 21, 22) is moved back to end the stream.
    for k, window in enumerate(train_windows[:-1]):
        assert window["tokens"].tolist() == stream[4 * k : 4 * k + 5]
        assert bool(window["target_mask"].all())
    assert train_windows[-1]["tokens"].tolist() == stream[-5:]
    assert train_windows[-1]["target_mask"].tolist() == [False, False, True, True]
    assert sum(int(w["target_mask"].sum()) for w in train_windows) == num_targets
    assert len(windows) == 2  # the validation file has 5 tokens: windows [0, 5) and [1, 6)

    batches = list(dm.train_dataloader())
    assert [batch["tokens"].shape for batch in batches] == [(2, 5)] * 3
    seen = sorted(row.tolist() for batch in batches for row in batch["tokens"])
    assert seen == sorted(w["tokens"].tolist() for w in train_windows)  # shuffled, all present once
    assert [row.tolist() for batch in batches for row in batch["tokens"]] != [w["tokens"].tolist() for w in train_windows]
    inputs, targets = batches[0]["tokens"][:, :-1], batches[0]["tokens"][:, 1:]
    assert torch.equal(inputs[:, 1:], targets[:, :-1])
    again = list(make_dm(tmp_path).train_dataloader())  # the same seed, the same order
    assert all(torch.equal(a["tokens"], b["tokens"]) for a, b in zip(batches, again))


def test_test_windows_with_context_window(tmp_path):
    write_corpus(tmp_path, train=TRAIN, variant="wikitext-2")
    test_file = tmp_path / "wikitext-2" / "wiki.test.tokens"
    test_file.write_text(" p q r s t u v \n w \n", encoding="utf-8")
    dm = make_dm(tmp_path, context_length=4, test_context_window=2)
    dm.setup("test")
    stream = [EOS_ID] + [UNK_ID] * 7 + [EOS_ID, UNK_ID, EOS_ID]  # 10 targets
    assert len(stream) == 11
    rows = list(dm.test_dataloader())
    masks = torch.cat([batch["target_mask"] for batch in rows]).tolist()
    tokens = torch.cat([batch["tokens"] for batch in rows]).tolist()
    assert masks == [[True, True, False, False]] + [[False, False, True, True]] * 4
    assert tokens == [stream[s : s + 5] for s in (0, 0, 2, 4, 6)]


def test_validation_and_test_windows_take_their_own_context_windows(tmp_path):
    # the same text in both files, context 2 for validation and none for test
    write_corpus(tmp_path, train=TRAIN, variant="wikitext-2")
    for name in ("wiki.valid.tokens", "wiki.test.tokens"):
        (tmp_path / "wikitext-2" / name).write_text(" p q r s t u v \n w \n", encoding="utf-8")
    dm = make_dm(tmp_path, context_length=4, val_context_window=2, test_context_window=0)
    dm.setup("fit")
    dm.setup("test")
    val_masks = torch.cat([batch["target_mask"] for batch in dm.val_dataloader()]).tolist()
    test_masks = torch.cat([batch["target_mask"] for batch in dm.test_dataloader()]).tolist()
    assert val_masks == [[True, True, False, False]] + [[False, False, True, True]] * 4
    assert test_masks == [[True] * 4, [True] * 4, [False, False, True, True]]


def test_cache_is_reused_and_rebuilt_when_a_file_changes(tmp_path, monkeypatch):
    write_corpus(tmp_path)
    first = make_dm(tmp_path)
    with pytest.raises(RuntimeError, match="prepare_data"):
        _ = first.vocab_size  # no cache and nothing declared yet
    first.prepare_data()
    first.setup("fit")
    cache_files = sorted(first.cache_dir.iterdir())
    assert [path.name for path in cache_files] == ["tokens.pt", "vocab.txt"]
    mtimes = [path.stat().st_mtime_ns for path in cache_files]

    def no_tokenizing(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(wikitext, "count_words", no_tokenizing)
    monkeypatch.setattr(wikitext, "encode_file", no_tokenizing)
    second = make_dm(tmp_path)
    assert second.vocab_size == 10  # read from the cached vocabulary, before setup
    second.prepare_data()
    second.setup("fit")
    assert [path.stat().st_mtime_ns for path in cache_files] == mtimes
    assert torch.equal(second.train_set.stream, first.train_set.stream)
    assert second.decode(second.train_set.stream[:6]) == "<eos> = Title = <eos> <eos>"
    monkeypatch.undo()

    train_file = tmp_path / "wikitext-2" / "wiki.train.tokens"
    train_file.write_text(TRAIN + " zebra \n", encoding="utf-8")
    third = make_dm(tmp_path)
    with pytest.raises(RuntimeError, match="prepare_data"):
        _ = third.vocab_size  # the cache is stale: its 10 words would size a model one short
    third.setup("fit")
    assert third.vocab_size == 11 and third.vocab[-1] == "zebra"
    assert third.val_set.stream.tolist() == [EOS_ID] + [2, 10, 7, EOS_ID, EOS_ID]


def test_max_tokens_truncate_the_streams(tmp_path):
    write_corpus(tmp_path)
    (tmp_path / "wikitext-2" / "wiki.valid.tokens").write_text(TRAIN, encoding="utf-8")
    dm = make_dm(tmp_path, max_train_tokens=8, max_eval_tokens=12)
    dm.setup("fit")
    assert dm.vocab_size == 10  # from the whole training file
    assert dm.train_set.stream.tolist() == [EOS_ID] + ids("= Title = <eos> <eos> the cat sat")
    assert dm.train_set.num_scored_targets == 8 and dm.val_set.num_scored_targets == 12


def test_missing_files_name_the_paths_and_the_download(tmp_path):
    dm = make_dm(tmp_path, download=False)
    with pytest.raises(FileNotFoundError) as error:
        dm.prepare_data()
    message = str(error.value)
    assert str(tmp_path / "wikitext-2" / "wiki.train.tokens") in message
    assert "wikitext-2-v1.zip" in message and "download=True" in message and "data.download=true" in message
    with pytest.raises(FileNotFoundError, match="wiki.test.tokens"):
        dm.setup("fit")


@pytest.mark.parametrize("train", ["", " \n \n", " <unk> \n"], ids=["empty", "blank_lines", "only_unk"])
def test_a_training_file_without_words_is_named_with_the_fix(tmp_path, train):
    # a vocabulary of the two specials would otherwise ask for data.vocab_size=2
    write_corpus(tmp_path, train=train)
    dm = make_dm(tmp_path, vocab_size=267735)
    with pytest.raises(ValueError) as error:
        dm.setup("fit")
    message = str(error.value)
    assert f"{tmp_path / 'wikitext-2' / 'wiki.train.tokens'} holds no words" in message
    assert "wikitext-2-v1.zip" in message and "vocab_size" not in message
    assert not dm.cache_dir.exists()  # nothing cached from it


def test_download_extracts_the_zip(tmp_path, monkeypatch):
    source = write_corpus(tmp_path / "source")
    archive = tmp_path / "wikitext-2-v1.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in source.iterdir():
            zipped.write(path, f"wikitext-2/{path.name}")
    missing = (tmp_path / "nowhere.zip").as_uri()
    monkeypatch.setitem(wikitext.WIKITEXT_URLS, "wikitext-2", (missing, archive.as_uri()))
    data_dir = tmp_path / "data"
    dm = make_dm(data_dir)
    dm.prepare_data()  # the first URL fails, the second works
    dm.setup("fit")
    assert dm.vocab == VOCAB
    assert (data_dir / "wikitext-2" / "wiki.valid.tokens").read_text(encoding="utf-8") == VALID

    monkeypatch.setitem(wikitext.WIKITEXT_URLS, "wikitext-2", (missing,))
    with pytest.raises(RuntimeError, match="could not download wikitext-2: file:"):
        make_dm(tmp_path / "other").prepare_data()


def test_declared_vocab_size_is_checked(tmp_path):
    write_corpus(tmp_path)
    dm = make_dm(tmp_path, vocab_size=12)
    assert dm.vocab_size == 12  # the declaration, before any data is read
    with pytest.raises(ValueError, match="set data.vocab_size=10"):
        dm.setup("fit")
    with pytest.raises(ValueError, match="test_context_window"):
        make_dm(tmp_path, test_context_window=4)
    with pytest.raises(ValueError, match="variant"):
        make_dm(tmp_path, variant="wikitext-3")


def test_hydra_config_builds_the_paper_setting(tmp_path):
    config = OmegaConf.load(CONFIG_DIR / "wikitext103.yaml")
    assert config.variant == "wikitext-103" and config.context_length == 512
    assert config.test_context_window == 400 and config.vocab_size == 267735
    write_corpus(tmp_path, variant="wikitext-103")
    config.data_dir = str(tmp_path)
    config.context_length, config.test_context_window, config.vocab_size = 4, 2, 10
    dm = instantiate(config)
    assert isinstance(dm, WikiTextDataModule)
    dm.setup("test")
    (batch,) = list(dm.test_dataloader())  # 4 test tokens, blocks of 2: two windows
    assert batch["tokens"].shape == (2, 5) and batch["target_mask"].shape == (2, 4)


class _Bigram(L.LightningModule):
    """A bigram language model with the masked token-mean loss; counts the scored targets."""

    def __init__(self, vocab_size: int) -> None:
        super().__init__()
        self.logits = torch.nn.Embedding(vocab_size, vocab_size)
        self.scored = {"train": 0, "val": 0, "test": 0}

    def _loss(self, batch, stage: str) -> torch.Tensor:
        inputs, targets = batch["tokens"][:, :-1], batch["tokens"][:, 1:]
        mask = batch["target_mask"]
        self.scored[stage] += int(mask.sum())
        losses = torch.nn.functional.cross_entropy(
            self.logits(inputs).transpose(1, 2), targets, reduction="none"
        )
        return losses[mask].mean()

    def training_step(self, batch, batch_idx):
        return self._loss(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._loss(batch, "val")

    def test_step(self, batch, batch_idx):
        self._loss(batch, "test")

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_loop_scores_every_token_once(tmp_path):
    write_corpus(tmp_path)
    dm = make_dm(tmp_path, context_length=3, test_context_window=1)
    dm.prepare_data()
    model = _Bigram(dm.vocab_size)
    trainer = L.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=dm)
    trainer.test(model, datamodule=dm)
    # tokens of the files: 22 train, 5 valid, 4 test
    assert model.scored == {"train": 22, "val": 5, "test": 4}


def test_cache_is_rebuilt_when_a_file_changes_but_keeps_its_size(tmp_path: Path) -> None:
    # Pins the modification time in the cache fingerprint: a source rewritten with other words of
    # the same byte size must be tokenized again, while untouched sources reuse the cache as is.
    write_corpus(tmp_path)
    first = make_dm(tmp_path)
    first.setup("fit")
    tokens_path = first.cache_dir / "tokens.pt"
    built = tokens_path.stat().st_mtime_ns

    untouched = make_dm(tmp_path)
    untouched.setup("fit")
    assert tokens_path.stat().st_mtime_ns == built  # the cache was read, not written again
    assert untouched.vocab == VOCAB

    train_file = tmp_path / "wikitext-2" / "wiki.train.tokens"
    before = train_file.stat()
    changed = TRAIN.replace("dog", "cow")  # the same number of bytes
    assert changed != TRAIN and len(changed.encode()) == len(TRAIN.encode())
    train_file.write_text(changed, encoding="utf-8")
    # make sure the modification time differs whatever the file system's timestamp resolution
    os.utime(train_file, ns=(before.st_atime_ns, before.st_mtime_ns + 5_000_000_000))
    assert train_file.stat().st_size == before.st_size

    rebuilt = make_dm(tmp_path)
    rebuilt.setup("fit")
    assert tokens_path.stat().st_mtime_ns != built
    assert rebuilt.vocab == [word if word != "dog" else "cow" for word in VOCAB]
    # the training stream: "cow" takes the id "dog" had; the test file's "dog" is now <unk>
    assert rebuilt.train_set.stream.tolist() == first.train_set.stream.tolist()
    assert rebuilt.decode(rebuilt.train_set.stream[-4:]) == "cow the <unk> <eos>"
    assert rebuilt.test_set.stream.tolist() == [EOS_ID, UNK_ID, VOCAB.index("a"), UNK_ID, EOS_ID]
    assert first.test_set.stream.tolist() == [EOS_ID] + ids("dog a <unk> <eos>")


@pytest.mark.parametrize("damage", ["truncated streams", "truncated vocabulary"])
def test_a_damaged_cache_is_tokenized_again(tmp_path: Path, caplog: pytest.LogCaptureFixture, damage: str) -> None:
    """A cache cut short (a copy or disk fault; writes are atomic) failed with a bare zip error,
    and a vocabulary cut short passed silently, shorter than the streams' token ids."""
    write_corpus(tmp_path)
    first = make_dm(tmp_path)
    first.setup("fit")
    tokens_path, vocab_path = first.cache_dir / "tokens.pt", first.cache_dir / "vocab.txt"
    if damage == "truncated streams":
        tokens_path.write_bytes(tokens_path.read_bytes()[:100])
    else:
        vocab_path.write_text("".join(f"{word}\n" for word in VOCAB[:4]), encoding="utf-8")
    again = make_dm(tmp_path)
    with caplog.at_level(logging.WARNING, logger=wikitext.__name__):
        again.setup("fit")
    assert "tokenizing again" in caplog.text
    assert again.vocab == VOCAB and again.vocab_size == len(VOCAB)
    assert torch.equal(again.train_set.stream, first.train_set.stream)
