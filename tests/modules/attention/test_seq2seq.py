"""Seq2SeqTransformer and Seq2SeqModule: shapes, causality, padding invariance (multi-head and
compositional attention), greedy decoding against a brute-force decoder, the SCAN exact-match
metric on hand-made cases, epoch metrics across batches, the experiment configs, and a short
training run on generated SCAN whose loss must fall."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torch import Tensor, nn
from torch.utils.data import DataLoader

from tenfold.datamodules.attention.scan import (
    ACTIONS,
    COMMAND_WORDS,
    SCANDataset,
    SCANVocabulary,
    collate_scan,
    generate_scan_pairs,
    scan_split,
)
from tenfold.modules.attention.compositional import CompositionalAttention
from tenfold.modules.attention.seq2seq import Seq2SeqModule, Seq2SeqTransformer, sequence_exact_match
from tests.conftest import CONFIG_DIR

PAD, BOS, EOS = 0, 1, 2
SRC_VOCAB, TGT_VOCAB = 16, 9

ATTENTIONS = {
    "multihead": functools.partial(nn.MultiheadAttention, num_heads=4, batch_first=True),
    "compositional": functools.partial(CompositionalAttention, num_searches=4, num_retrievals=2),
}


def make_net(attention: str = "multihead", **kwargs) -> Seq2SeqTransformer:
    options = dict(
        src_vocab_size=SRC_VOCAB,
        tgt_vocab_size=TGT_VOCAB,
        embed_dim=16,
        attention=ATTENTIONS[attention],
        num_encoder_layers=2,
        num_decoder_layers=2,
        feedforward_dim=32,
        dropout=0.1,
        source_bos_id=BOS,
        source_eos_id=EOS,
    )
    options.update(kwargs)
    return Seq2SeqTransformer(**options).eval()


def random_tokens(generator: torch.Generator, batch: int, length: int, vocab: int) -> Tensor:
    """Ids in ``[3, vocab)``: no pad, BOS or EOS."""
    return torch.randint(3, vocab, (batch, length), generator=generator)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_shapes_and_source_markers() -> None:
    net = make_net()
    generator = torch.Generator().manual_seed(1)
    src = random_tokens(generator, 3, 5, SRC_VOCAB)
    src_mask = torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] * 4 + [True]])
    tgt = random_tokens(generator, 3, 7, TGT_VOCAB)
    assert net(src, tgt, src_mask).shape == (3, 7, TGT_VOCAB)

    marked, marked_mask = net._add_source_markers(src, src_mask)
    assert marked.shape == (3, 7)
    assert marked[:, 0].tolist() == [BOS] * 3
    assert marked[1, 1:4].tolist() == src[1, :3].tolist()
    # EOS right after each row's last real token; the mask grows by the two markers
    assert [int(marked[row, length + 1]) for row, length in enumerate((5, 3, 4))] == [EOS] * 3
    assert (~marked_mask).sum(1).tolist() == [7, 5, 6]
    memory, memory_mask = net.encode(src, src_mask)
    assert memory.shape == (3, 7, 16) and torch.equal(memory_mask, marked_mask)


def test_source_markers_need_both_ids() -> None:
    with pytest.raises(ValueError, match="both source_bos_id and source_eos_id"):
        make_net(source_eos_id=None)


@pytest.mark.parametrize("attention", list(ATTENTIONS))
def test_decoder_is_causal(attention: str) -> None:
    net = make_net(attention)
    generator = torch.Generator().manual_seed(2)
    src = random_tokens(generator, 2, 6, SRC_VOCAB)
    tgt = random_tokens(generator, 2, 8, TGT_VOCAB)
    changed = tgt.clone()
    changed[:, 5] = torch.where(tgt[:, 5] == 3, 4, 3)
    with torch.no_grad():
        before, after = net(src, tgt), net(src, changed)
    torch.testing.assert_close(before[:, :5], after[:, :5], rtol=0, atol=1e-6)
    assert (before[:, 5:] - after[:, 5:]).abs().amax() > 1e-3


@pytest.mark.parametrize("attention", list(ATTENTIONS))
def test_padding_does_not_change_real_positions(attention: str) -> None:
    """Each example alone (no padding) and inside a padded batch give the same logits."""
    net = make_net(attention)
    generator = torch.Generator().manual_seed(3)
    lengths_src, lengths_tgt = (6, 3), (4, 7)
    sources = [random_tokens(generator, 1, n, SRC_VOCAB)[0] for n in lengths_src]
    targets = [random_tokens(generator, 1, n, TGT_VOCAB)[0] for n in lengths_tgt]
    # padding ids other than 0 must not matter either
    src = torch.full((2, 6), 7)
    tgt = torch.full((2, 7), 5)
    for row in range(2):
        src[row, : lengths_src[row]] = sources[row]
        tgt[row, : lengths_tgt[row]] = targets[row]
    src_mask = torch.arange(6) >= torch.tensor(lengths_src)[:, None]
    tgt_mask = torch.arange(7) >= torch.tensor(lengths_tgt)[:, None]
    with torch.no_grad():
        batched = net(src, tgt, src_mask, tgt_mask)
        for row in range(2):
            alone = net(sources[row][None], targets[row][None])
            torch.testing.assert_close(batched[row, : lengths_tgt[row]], alone[0], rtol=1e-5, atol=1e-5)


def brute_force_greedy(net: Seq2SeqTransformer, src: Tensor, src_mask: Tensor, max_length: int) -> list[list[int]]:
    """Feeds the growing prefix to ``forward`` and appends the argmax of the last logits, one row at
    a time, until EOS or ``max_length`` tokens."""
    decoded = []
    for row in range(src.shape[0]):
        length = int((~src_mask[row]).sum())
        tokens = [BOS]
        while len(tokens) - 1 < max_length and tokens[-1] != EOS:
            logits = net(src[row : row + 1, :length], torch.tensor([tokens]))
            tokens.append(int(logits[0, -1].argmax()))
        decoded.append(tokens[1:])
    return decoded


@pytest.mark.parametrize(
    ("attention", "norm_first", "share_layers"),
    [("multihead", False, True), ("multihead", True, False), ("compositional", False, False)],
)
def test_greedy_decoding_matches_brute_force(attention: str, norm_first: bool, share_layers: bool) -> None:
    net = make_net(attention, norm_first=norm_first, share_layers=share_layers)
    generator = torch.Generator().manual_seed(4)
    src = random_tokens(generator, 6, 5, SRC_VOCAB)
    src_mask = torch.arange(5) >= torch.tensor([5, 2, 4, 1, 3, 5])[:, None]
    with torch.no_grad():
        # raise EOS so that about half the rows stop at the first step and the others go on
        first = net(src, torch.full((6, 1), BOS), src_mask)[:, 0]
        margin = first.clone().index_fill_(1, torch.tensor([EOS]), float("-inf")).amax(1) - first[:, EOS]
        net.output_projection.bias[EOS] += margin.median() + 1e-3
        expected = brute_force_greedy(net, src, src_mask, max_length=6)
    decoded = net.greedy_decode(src, src_mask, max_length=6, bos_id=BOS, eos_id=EOS, pad_id=PAD)
    assert decoded.shape == (6, max(len(row) for row in expected))
    for row, tokens in enumerate(expected):
        padded = tokens + [PAD] * (decoded.shape[1] - len(tokens))
        assert decoded[row].tolist() == padded
    lengths = {len(row) for row in expected}
    assert len(lengths) > 1, "the test needs rows that stop at different steps"


def test_greedy_decoding_stops_once_every_row_has_ended() -> None:
    net = make_net()
    with torch.no_grad():
        net.output_projection.bias[EOS] += 1000.0
    src = torch.randint(3, SRC_VOCAB, (4, 5))
    decoded = net.greedy_decode(src, None, max_length=10, bos_id=BOS, eos_id=EOS)
    assert decoded.tolist() == [[EOS]] * 4


def test_sequence_exact_match_on_hand_made_cases() -> None:
    # references: actions 5 6, 7, 5 5 5 (then EOS, then padding)
    targets = torch.tensor([[5, 6, EOS, PAD], [7, EOS, PAD, PAD], [5, 5, 5, EOS]] * 2)
    predictions = torch.tensor(
        [
            [5, 6, EOS, PAD, PAD],  # right
            [7, EOS, 3, 3, 3],  # right: what follows the EOS is ignored
            [5, 5, 5, EOS, PAD],  # right
            [5, 6, 6, EOS, PAD],  # too long
            [7, 7, EOS, PAD, PAD],  # wrong token where the reference ends
            [5, 5, EOS, PAD, PAD],  # too short
        ]
    )
    expected = [True, True, True, False, False, False]
    assert sequence_exact_match(predictions, targets, EOS).tolist() == expected
    # a prediction cut before the reference's EOS is wrong, and shorter predictions are padded
    assert sequence_exact_match(torch.tensor([[5, 5, 5]]), targets[2:3], EOS).tolist() == [False]
    assert sequence_exact_match(torch.tensor([[7, EOS]]), targets[1:2], EOS).tolist() == [True]
    with pytest.raises(ValueError, match="eos_id"):
        sequence_exact_match(predictions[:1], torch.tensor([[5, 6, 7, PAD]]), EOS)


def scan_batch(pairs: list[tuple[str, str]]) -> dict[str, Tensor]:
    dataset = SCANDataset(pairs, SCANVocabulary(COMMAND_WORDS), SCANVocabulary(ACTIONS))
    return collate_scan([dataset[i] for i in range(len(dataset))])


def trainer(**kwargs) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kwargs,
    )


def make_module(net: Seq2SeqTransformer, lr: float = 1e-3) -> Seq2SeqModule:
    optimizer = functools.partial(torch.optim.Adam, lr=lr)
    return Seq2SeqModule(net, optimizer, pad_id=PAD, bos_id=BOS, eos_id=EOS, max_decode_length=50)


class BigramNet(nn.Module):
    """A stand-in network whose next-token logits depend on the current decoder input only:
    ``logits[b, t] = table[tgt_in[b, t]]``; greedy decoding follows the table's argmax chain."""

    def __init__(self, table: Tensor) -> None:
        super().__init__()
        self.table = nn.Parameter(table)

    def forward(self, src: Tensor, tgt_in: Tensor, src_padding_mask=None, tgt_padding_mask=None) -> Tensor:
        return self.table[tgt_in]

    def greedy_decode(self, src, src_padding_mask, max_length, bos_id, eos_id, pad_id=0) -> Tensor:
        rows = []
        for _ in range(src.shape[0]):
            tokens = [bos_id]
            while len(tokens) - 1 < max_length and tokens[-1] != eos_id:
                tokens.append(int(self.table[tokens[-1]].argmax()))
            rows.append(tokens[1:] + [pad_id] * (max_length - len(tokens) + 1))
        return torch.tensor(rows)


def test_validation_metrics_accumulate_over_batches() -> None:
    """val/loss and val/token_acc are per target token, val/seq_acc per sequence, over the whole
    epoch (batches of different sizes and lengths)."""
    walk = SCANVocabulary(ACTIONS).token_to_id["I_WALK"]
    table = torch.randn(TGT_VOCAB, TGT_VOCAB, generator=torch.Generator().manual_seed(5))
    table[BOS, walk] = table[walk, EOS] = 10.0  # greedy decoding always says "I_WALK EOS"
    commands = dict(generate_scan_pairs())
    first = ["walk", "walk twice", "jump"]
    second = ["walk", "run left", "look", "walk", "turn right"]
    batches = [scan_batch([(c, commands[c]) for c in first]), scan_batch([(c, commands[c]) for c in second])]
    net = BigramNet(table)
    metrics = trainer().validate(make_module(net), DataLoader(batches, batch_size=None), verbose=False)[0]

    loss_sum, tokens, correct = 0.0, 0, 0
    for batch in batches:
        targets = batch["tgt"][:, 1:]
        scored = targets != PAD
        logits = table[batch["tgt"][:, :-1]]
        loss_sum += F.cross_entropy(logits[scored], targets[scored], reduction="sum").item()
        tokens += int(scored.sum())
        correct += int((logits.argmax(-1) == targets)[scored].sum())
    assert tokens == 7 + 11
    assert metrics["val/loss"] == pytest.approx(loss_sum / tokens, rel=1e-5)
    assert metrics["val/token_acc"] == pytest.approx(correct / tokens, rel=1e-6)
    # exactly the three commands "walk" are right; "walk twice" starts right but is too short
    assert metrics["val/seq_acc"] == pytest.approx(3 / 8)


@pytest.mark.parametrize(
    ("experiment", "attention_type"),
    [
        ("attention/scan_length_compositional", CompositionalAttention),
        ("attention/scan_simple_multihead", nn.MultiheadAttention),
    ],
)
def test_experiment_configs_build_the_official_model(
    compose_cfg, tmp_path: Path, experiment: str, attention_type: type
) -> None:
    cfg = compose_cfg([f"experiment={experiment}"], tmp_path)
    module = instantiate(cfg.model, _convert_="partial")
    net = module.net
    assert isinstance(net, Seq2SeqTransformer)
    # Universal Transformer: one encoder and one decoder block, each applied 3 times
    assert len(net.encoder.layers) == 1 and net.encoder.num_layers == 3
    assert len(net.decoder.layers) == 1 and net.decoder.num_layers == 3
    layer = net.decoder.layers[0]
    assert isinstance(layer.self_attn, attention_type) and isinstance(layer.cross_attn, attention_type)
    # feed-forward 256 (official); the MHA baseline's 282 matches the compositional parameter count
    expected_feedforward = 256 if attention_type is CompositionalAttention else 282
    assert layer.feedforward[0].out_features == expected_feedforward and net.embed_dim == 128
    assert net.output_projection.weight is net.tgt_embedding.weight
    if attention_type is CompositionalAttention:
        attention = layer.self_attn
        assert (attention.num_searches, attention.num_retrievals) == (8, 2)
        assert attention.retrieval_head_dim == 16 and attention.retrieval_qk_dim == 16
        # one chunk for SCAN's short sequences: nothing recomputed on the CPU
        assert attention.query_chunk_size == 64
    else:
        assert layer.self_attn.num_heads == 8
    assert layer.self_attn.dropout == 0.1  # what the official runs used (trafo_scan's 0.5 is never passed on)
    assert (module.pad_id, module.bos_id, module.eos_id) == (PAD, BOS, EOS)
    assert cfg.trainer.max_steps == 50000 and cfg.trainer.gradient_clip_val == 5.0


def test_official_layer_overrides_of_the_compositional_headers(compose_cfg, tmp_path: Path) -> None:
    # The SCAN compositional experiments' headers name the overrides for the official layer:
    # linear retrieval scoring and no dropout on the attention weights, the blocks' dropout kept.
    header = (CONFIG_DIR / "experiment/attention/scan_simple_compositional.yaml").read_text()
    overrides = ["model.net.attention.retrieval_scoring=linear", "model.net.attention_weight_dropout=0"]
    assert all(override in header.replace("\n# ", " ") for override in overrides)
    cfg = compose_cfg(["experiment=attention/scan_simple_compositional", *overrides], tmp_path)
    net = instantiate(cfg.model, _convert_="partial").net
    for layer in (net.encoder.layers[0], net.decoder.layers[0]):
        attentions = [layer.self_attn] + ([layer.cross_attn] if hasattr(layer, "cross_attn") else [])
        for attention in attentions:
            assert attention.retrieval_scoring == "linear" and attention.dropout == 0.0
    assert net.encoder.layers[0].dropout1.p == 0.1
    assert [dropout.p for dropout in net.decoder.layers[0].dropouts] == [0.1, 0.1, 0.1]


def test_short_training_run_learns_scan() -> None:
    """A tiny compositional-attention model on 256 generated SCAN commands: the teacher-forced
    loss falls well below the uniform guess ``log 9``."""
    train, _ = scan_split("simple", seed=0)
    pairs = [pair for pair in train if len(pair[1].split()) <= 8][:256]
    dataset = SCANDataset(pairs, SCANVocabulary(COMMAND_WORDS), SCANVocabulary(ACTIONS))
    loader = DataLoader(
        dataset, batch_size=32, shuffle=True, collate_fn=collate_scan, generator=torch.Generator().manual_seed(0)
    )
    full_batch = collate_scan([dataset[i] for i in range(len(dataset))])
    net = make_net("compositional", embed_dim=32, feedforward_dim=64, dropout=0.0, embedding_dropout=0.0)
    module = make_module(net, lr=3e-3)

    def loss() -> float:
        module.eval()
        with torch.no_grad():
            logits, targets = module._teacher_forced(full_batch)
            return module._cross_entropy(logits, targets).item()

    before = loss()
    module.train()
    trainer(max_steps=160, limit_val_batches=0).fit(module, loader)
    after = loss()
    assert after < 0.5 * before
    assert after < 0.5 * math.log(TGT_VOCAB)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # training_step outside a Trainer
def test_training_loss_is_the_mean_cross_entropy_over_non_padding_targets() -> None:
    """training_step's loss is the cross-entropy averaged over the real target tokens (EOS
    included), padding excluded; appending padding columns to the batch leaves it unchanged."""
    table = torch.randn(TGT_VOCAB, TGT_VOCAB, generator=torch.Generator().manual_seed(6))
    commands = dict(generate_scan_pairs())
    batch = scan_batch([(c, commands[c]) for c in ["walk", "jump twice", "run around left"]])
    module = make_module(BigramNet(table))
    loss = module.training_step(batch, 0)

    targets = batch["tgt"][:, 1:]
    scored = targets != PAD
    assert int(scored.sum()) == 2 + 3 + 9 and int((~scored).sum()) > 0, "the batch must hold padding"
    expected = F.cross_entropy(table[batch["tgt"][:, :-1]][scored], targets[scored])
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)

    # three more padding columns: more padded targets, same real ones
    padded = dict(batch)
    padded["tgt"] = F.pad(batch["tgt"], (0, 3), value=PAD)
    padded["tgt_padding_mask"] = F.pad(batch["tgt_padding_mask"], (0, 3), value=True)
    assert module.training_step(padded, 0).item() == pytest.approx(loss.item(), rel=1e-6)


class ReferenceOracleNet(nn.Module):
    """A stand-in network whose greedy decoding emits each command's reference (actions + EOS),
    cut to ``max_length`` tokens like a real decoder; teacher-forced logits are uniform."""

    def __init__(self, batch: dict[str, Tensor]) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(()))
        self.references: dict[tuple[int, ...], list[int]] = {}
        for src, src_mask, tgt in zip(batch["src"], batch["src_padding_mask"], batch["tgt"]):
            tokens = tgt[1:].tolist()
            self.references[tuple(src[~src_mask].tolist())] = tokens[: tokens.index(EOS) + 1]

    def forward(
        self, src: Tensor, tgt_in: Tensor, src_padding_mask: Tensor | None = None, tgt_padding_mask: Tensor | None = None
    ) -> Tensor:
        return self.dummy + torch.zeros(*tgt_in.shape, TGT_VOCAB)

    def greedy_decode(
        self, src: Tensor, src_padding_mask: Tensor, max_length: int, bos_id: int, eos_id: int, pad_id: int = 0
    ) -> Tensor:
        rows = [self.references[tuple(s[~m].tolist())][:max_length] for s, m in zip(src, src_padding_mask)]
        width = max(len(row) for row in rows)
        return torch.tensor([row + [pad_id] * (width - len(row)) for row in rows])


def test_evaluation_decodes_long_enough_for_the_longest_reference() -> None:
    """A decoder that emits every reference exactly scores val/seq_acc 1.0: evaluation must let
    it generate as many tokens as the batch's longest reference (its EOS included)."""
    commands = dict(generate_scan_pairs())
    # "run around left" is the longest reference: 8 actions + EOS fill every target column
    batch = scan_batch([(c, commands[c]) for c in ["walk", "jump twice", "run around left"]])
    assert batch["tgt"].shape[1] - 1 == 9 and batch["tgt"][2, -1].item() == EOS
    module = make_module(ReferenceOracleNet(batch))
    metrics = trainer().validate(module, DataLoader([batch], batch_size=None), verbose=False)[0]
    assert metrics["val/seq_acc"] == pytest.approx(1.0)


def record_inputs(module: nn.Module) -> list[Tensor]:
    """The first positional input of every call of ``module`` (a forward pre-hook)."""
    inputs: list[Tensor] = []
    module.register_forward_pre_hook(lambda _, args: inputs.append(args[0].detach().clone()))
    return inputs


@pytest.mark.parametrize("scale_embeddings", [False, True])
def test_token_embeddings_are_scaled_only_with_scale_embeddings(scale_embeddings: bool) -> None:
    """What reaches the positional encodings (encoder, teacher-forced decoder and every greedy
    step) is the embedding row times ``sqrt(E)`` with ``scale_embeddings``, the row itself
    without (the official ``noscale`` variants); the embeddings keep PyTorch's N(0, 1) init."""
    embed_dim = 16
    net = make_net(scale_embeddings=scale_embeddings, embed_dim=embed_dim)
    scale = math.sqrt(embed_dim) if scale_embeddings else 1.0
    source_inputs, target_inputs = record_inputs(net.src_positions), record_inputs(net.tgt_positions)
    generator = torch.Generator().manual_seed(7)
    src = random_tokens(generator, 2, 4, SRC_VOCAB)
    tgt = random_tokens(generator, 2, 3, TGT_VOCAB)
    with torch.no_grad():
        net(src, tgt)
        net.greedy_decode(src, None, max_length=2, bos_id=BOS, eos_id=EOS)
    marked, _ = net._add_source_markers(src, None)
    source_weight, target_weight = net.src_embedding.weight.detach(), net.tgt_embedding.weight.detach()
    torch.testing.assert_close(source_inputs[0], scale * source_weight[marked])  # forward
    torch.testing.assert_close(source_inputs[1], scale * source_weight[marked])  # greedy_decode
    torch.testing.assert_close(target_inputs[0], scale * target_weight[tgt])
    # the first greedy step embeds BOS
    torch.testing.assert_close(target_inputs[1], scale * target_weight[torch.full((2, 1), BOS)])

    fresh = Seq2SeqTransformer(200, 200, 64, ATTENTIONS["multihead"], num_encoder_layers=1, num_decoder_layers=1)
    for embedding in (fresh.src_embedding, fresh.tgt_embedding):
        assert embedding.weight.std().item() == pytest.approx(1.0, rel=0.05)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")  # training_step outside a Trainer
def test_label_smoothing_applies_to_the_training_loss_only() -> None:
    """With label_smoothing = 0.3 the training loss is the smoothed cross-entropy over the real
    target tokens, while val/loss and test/loss stay the plain (unsmoothed) cross-entropy."""
    torch.set_num_threads(1)
    smoothing = 0.3
    table = torch.randn(TGT_VOCAB, TGT_VOCAB, generator=torch.Generator().manual_seed(8))
    commands = dict(generate_scan_pairs())
    batch = scan_batch([(c, commands[c]) for c in ["walk", "jump twice", "run around left"]])
    module = Seq2SeqModule(
        BigramNet(table),
        functools.partial(torch.optim.Adam, lr=1e-3),
        pad_id=PAD,
        bos_id=BOS,
        eos_id=EOS,
        label_smoothing=smoothing,
    )

    targets = batch["tgt"][:, 1:]
    scored = targets != PAD
    assert int((~scored).sum()) > 0, "the batch must hold padding"
    logits = table[batch["tgt"][:, :-1]][scored]
    plain = F.cross_entropy(logits, targets[scored]).item()
    smoothed = F.cross_entropy(logits, targets[scored], label_smoothing=smoothing).item()
    # by hand: (1 - s) * NLL + s * mean over the classes of -log p
    log_probs = logits.log_softmax(-1)
    nll = -log_probs.gather(1, targets[scored][:, None]).mean().item()
    assert smoothed == pytest.approx((1 - smoothing) * nll - smoothing * log_probs.mean().item(), rel=1e-5)
    assert abs(smoothed - plain) > 0.05  # the two losses are told apart

    assert module.training_step(batch, 0).item() == pytest.approx(smoothed, rel=1e-5)
    loader = DataLoader([batch], batch_size=None)
    val = trainer().validate(module, loader, verbose=False)[0]
    test = trainer().test(module, loader, verbose=False)[0]
    assert val["val/loss"] == pytest.approx(plain, rel=1e-5)
    assert test["test/loss"] == pytest.approx(plain, rel=1e-5)


def test_validating_before_fitting_and_an_evaluation_only_module() -> None:
    """A ``validate`` call before ``fit`` leaves metric states made under inference mode; the fit
    must reset them (ConfiguredOptimizerModule.on_fit_start), not fail on an in-place update. A
    module built without an optimizer evaluates and says what training needs."""
    commands = dict(generate_scan_pairs())
    loader = DataLoader([scan_batch([(c, commands[c]) for c in ("walk", "jump twice", "look left")])], batch_size=None)
    module = make_module(make_net().train())
    trainer().validate(module, loader, verbose=False)
    fit = trainer(max_steps=2, limit_val_batches=1, num_sanity_val_steps=0)
    fit.fit(module, loader, loader)
    assert fit.global_step == 2
    evaluation_only = Seq2SeqModule(make_net(), pad_id=PAD, bos_id=BOS, eos_id=EOS, max_decode_length=50)
    assert "val/seq_acc" in trainer().validate(evaluation_only, loader, verbose=False)[0]
    with pytest.raises(ValueError, match="built without an optimizer: pass optimizer="):
        trainer(max_steps=1).fit(evaluation_only, loader)
