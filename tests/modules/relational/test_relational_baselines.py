"""ESBN's memory by hand and its rollout; every relational net's output shape and gradient flow;
the ESBN code's LSTM initialization; ESBN's N + 1 controller steps, default sizes and confidence
initialization; the position tags of PrediNet and RN; PrediNet's heads by hand."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import Tensor, nn

from tenfold.modules.attention import ObjectSequenceNet
from tenfold.modules.nets import TransformerEncoder
from tenfold.modules.relational import (
    ESBN,
    CoRelNet,
    LSTMNet,
    PrediNet,
    RelationNet,
    append_positions,
    esbn_memory_read,
    init_lstm_,
)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def test_memory_read_by_hand() -> None:
    query = torch.tensor([[1.0, 0.0]])
    values = torch.tensor([[[1.0, 0.0], [0.0, 2.0]]])  # similarities 1 and 0
    keys = torch.tensor([[[3.0, 0.0, 1.0], [0.0, 6.0, 0.0]]])
    gain, bias = torch.tensor([2.0]), torch.tensor([-1.0])
    w0 = math.exp(1) / (math.exp(1) + 1)
    c0, c1 = 1 / (1 + math.exp(-(2 * 1 - 1))), 1 / (1 + math.exp(1))
    expected = w0 * torch.tensor([3.0, 0.0, 1.0, c0]) + (1 - w0) * torch.tensor([0.0, 6.0, 0.0, c1])
    torch.testing.assert_close(esbn_memory_read(query, keys, values, gain, bias), expected.unsqueeze(0))


def test_sharp_similarities_read_the_key_bound_to_the_matching_value() -> None:
    batch, slots, dim, key_dim = 3, 5, 16, 8
    values = 10.0 * torch.linalg.qr(torch.randn(dim, dim))[0][:slots].expand(batch, -1, -1)
    keys = torch.randn(batch, slots, key_dim)
    match = torch.tensor([4, 0, 2])
    query = values[torch.arange(batch), match]
    read = esbn_memory_read(query, keys, values, torch.ones(1), torch.zeros(1))
    assert read.shape == (batch, key_dim + 1)
    torch.testing.assert_close(read[:, :key_dim], keys[torch.arange(batch), match], rtol=0, atol=1e-4)
    torch.testing.assert_close(read[:, -1], torch.ones(batch), rtol=0, atol=1e-4)


def test_esbn_rollout_writes_embeddings_and_reads_by_them() -> None:
    net = ESBN(num_classes=4, sequence_length=5, embed_dim=12, key_dim=6, hidden_dim=10)
    z = torch.randn(3, 5, 12)
    rollout = net.rollout(z)
    assert rollout.logits.shape == (3, 4)
    assert rollout.keys.shape == (3, 5, 6) and (rollout.keys >= 0).all()
    assert rollout.values is z
    assert rollout.gates.shape == (3, 5) and ((rollout.gates > 0) & (rollout.gates < 1)).all()
    assert rollout.reads.shape == (3, 5, 7)
    assert torch.equal(rollout.reads[:, 0], torch.zeros(3, 7))
    for step in (1, 4):
        gain, bias = net.confidence_gain, net.confidence_bias
        read = esbn_memory_read(z[:, step], rollout.keys[:, :step], z[:, :step], gain, bias)
        torch.testing.assert_close(rollout.reads[:, step], rollout.gates[:, step : step + 1] * read)
    batch = {"images": torch.rand(3, 5, 1, 32, 32)}
    torch.testing.assert_close(net(batch), net.rollout(net.embed(batch)).logits)


def test_esbn_controller_sees_only_the_memory() -> None:
    """Object identities reach the controller only through similarities: embeddings rotated by an
    orthogonal matrix give the same logits."""
    net = ESBN(num_classes=2, sequence_length=4, embed_dim=12, key_dim=6, hidden_dim=10)
    z = torch.randn(2, 4, 12)
    rotation = torch.linalg.qr(torch.randn(12, 12))[0]
    with torch.no_grad():
        torch.testing.assert_close(net.rollout(z @ rotation).logits, net.rollout(z).logits, rtol=1e-4, atol=1e-5)


def test_esbn_controller_runs_one_extra_step_on_the_last_read() -> None:
    """Class docstring (Webb et al. 2021, ``models/ESBN.py``): the LSTM runs ``N + 1`` steps; step
    ``t`` reads the previous gated read (zeros at ``t = 0``), and the logits are ``W_y h_N`` of the
    extra step, whose input is the read of the last object."""
    torch.set_num_threads(1)
    net = ESBN(num_classes=3, sequence_length=4, embed_dim=12, key_dim=6, hidden_dim=10)
    z = torch.randn(2, 4, 12)
    inputs: list[Tensor] = []
    states: list[Tensor] = []
    net.controller.register_forward_pre_hook(lambda module, args: inputs.append(args[0]))
    net.controller.register_forward_hook(lambda module, args, out: states.append(out[0]))
    with torch.no_grad():
        rollout = net.rollout(z)
    assert len(inputs) == 4 + 1
    assert torch.equal(inputs[0], torch.zeros(2, 7))
    for step in range(1, 5):
        torch.testing.assert_close(inputs[step], rollout.reads[:, step - 1])
    assert rollout.reads[:, -1].abs().max() > 0
    torch.testing.assert_close(rollout.logits, net.output(states[-1]))


def test_esbn_documented_sizes_and_confidence_initialization() -> None:
    """Class docstring: key 256 and LSTM hidden 512 (the official sizes); the learned confidence
    gain and bias start at 1 and 0 (``c = sigmoid(s)`` at initialization)."""
    net = ESBN(num_classes=2, sequence_length=3)
    assert (net.key_dim, net.hidden_dim) == (256, 512)
    assert (net.controller.input_size, net.controller.hidden_size) == (256 + 1, 512)
    assert net.key_out.out_features == 256 and net.output.in_features == 512
    assert torch.equal(net.confidence_gain.detach(), torch.ones(1))
    assert torch.equal(net.confidence_bias.detach(), torch.zeros(1))


def transformer(num_classes: int, sequence_length: int) -> ObjectSequenceNet:
    attention = functools.partial(nn.MultiheadAttention, num_heads=8, batch_first=True)
    encoder = TransformerEncoder(128, 1, attention, feedforward_dim=512, dropout=0.0)
    return ObjectSequenceNet(encoder, num_classes, sequence_length)


NETS = {
    "corelnet": CoRelNet,
    "corelnet_official": functools.partial(CoRelNet, normalization="masked_softmax", readout_entries="lower"),
    "corelnet_asym": functools.partial(CoRelNet, asymmetric=True),
    "corelnet_cat": functools.partial(CoRelNet, concat_embeddings=True),
    "corelnet_attention": functools.partial(CoRelNet, decoder="attention"),
    "esbn": ESBN,
    "lstm": LSTMNet,
    "predinet": PrediNet,
    "rn": RelationNet,
    "transformer": transformer,
}


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize(("length", "classes"), [(6, 2), (9, 4)], ids=["rmts", "dist3"])
def test_output_shape_and_every_parameter_gets_a_gradient(name: str, length: int, classes: int) -> None:
    """Sequences of 6 and 9 objects: with two, context norm maps each feature to about
    ``beta +- gamma`` whatever the encoder computes, so (nearly) no gradient reaches the encoder."""
    net = NETS[name](classes, length)
    logits = net({"images": torch.rand(4, length, 1, 32, 32)})
    assert logits.shape == (4, classes)
    nn.functional.cross_entropy(logits, torch.arange(4) % classes).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"{name}: no gradient reaches {missing}"


@pytest.mark.parametrize("name", list(NETS))
def test_two_object_output_shape(name: str) -> None:
    assert NETS[name](2, 2)({"images": torch.rand(3, 2, 1, 32, 32)}).shape == (3, 2)


def test_lstm_initialization_of_the_esbn_code() -> None:
    hidden = 64
    lstm = nn.LSTM(32, hidden)
    init_lstm_(lstm.weight_ih_l0, lstm.weight_hh_l0, [lstm.bias_ih_l0, lstm.bias_hh_l0], hidden)
    assert torch.equal(lstm.bias_ih_l0, torch.zeros(4 * hidden))
    assert torch.equal(lstm.bias_hh_l0, torch.zeros(4 * hidden))
    weight = lstm.weight_ih_l0.detach()
    gates_std = math.sqrt(2 / (32 + 2 * hidden))
    candidate_std = 5 / 3 * math.sqrt(2 / (32 + hidden))
    assert weight[: 2 * hidden].std().item() == pytest.approx(gates_std, rel=0.1)
    assert weight[2 * hidden : 3 * hidden].std().item() == pytest.approx(candidate_std, rel=0.1)


def test_position_tags() -> None:
    z = torch.randn(2, 3, 4)
    tagged = append_positions(z)
    assert torch.equal(tagged[..., :4], z)
    assert torch.equal(tagged[..., 4], torch.tensor([[0.0, 1.0, 2.0]] * 2))


def test_predinet_heads_by_hand() -> None:
    """Class docstring (Shanahan et al. 2020; ESBN's ``models/PrediNet.py``), by hand: ``z'_i =
    [z_i, i]``; per head ``E_a = sum_i softmax_i(Q_a . K_i) z'_i`` (a distribution over the ``N``
    objects, not over the heads); the head's vector is ``W_s E_1 - W_s E_2`` then the positions of
    ``E_1`` and ``E_2``, i.e. the attention-weighted mean of ``0..N-1``."""
    torch.set_num_threads(1)
    length, dim, heads, key_dim, relations = 4, 5, 3, 2, 3
    net = PrediNet(
        2, length, embed_dim=dim, key_dim=key_dim, num_heads=heads, num_relations=relations, context_norm=False
    )
    embeddings = torch.randn(2, length, dim)
    net.encoder.register_forward_hook(lambda module, args, out: embeddings)
    seen: list[Tensor] = []
    net.hidden.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        net({"images": torch.rand(2, length, 1, 32, 32)})
        for b in range(2):
            tagged = [torch.cat([embeddings[b, i], torch.tensor([float(i)])]) for i in range(length)]
            keys = [net.keys.weight @ t for t in tagged]
            flat = torch.cat(tagged)
            vectors = []
            for h in range(heads):
                picked = []
                for queries in (net.queries1, net.queries2):
                    q = (queries.weight @ flat)[h * key_dim : (h + 1) * key_dim]
                    attention = torch.stack([q @ k for k in keys]).softmax(dim=0)
                    picked.append(sum(a * t for a, t in zip(attention, tagged)))
                    # the picked position is the attention-weighted object index
                    torch.testing.assert_close(picked[-1][-1], attention @ torch.arange(length, dtype=torch.float32))
                first, second = picked
                difference = net.relation.weight @ first - net.relation.weight @ second
                vectors.append(torch.cat([difference, first[-1:], second[-1:]]))
            torch.testing.assert_close(seen[0][b], torch.cat(vectors))


def test_predinet_attention_picks_the_dominant_object_and_its_position() -> None:
    """Keys that make object 2 far more similar to every query than the others: each head's
    ``E_1`` and ``E_2`` are ``z'_2``, so the relation vector is 0 and both positions read 2."""
    torch.set_num_threads(1)
    length, dim, heads, relations = 4, 5, 3, 3
    net = PrediNet(2, length, embed_dim=dim, key_dim=1, num_heads=heads, num_relations=relations, context_norm=False)
    embeddings = torch.zeros(1, length, dim)
    embeddings[0, 2, 0] = 1.0
    net.encoder.register_forward_hook(lambda module, args, out: embeddings)
    seen: list[Tensor] = []
    net.hidden.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        net.keys.weight.zero_()
        net.keys.weight[0, 0] = 1.0  # K_i = z_i[0]: 1 for object 2, 0 for the others
        for queries in (net.queries1, net.queries2):
            # Q = 100 in every head: read from object 1's position tag (1.0) in flat(z')
            queries.weight.zero_()
            queries.weight[:, (dim + 1) + dim] = 100.0
        net({"images": torch.rand(1, length, 1, 32, 32)})
    vectors = seen[0].view(heads, relations + 2)
    torch.testing.assert_close(vectors[:, :relations], torch.zeros(heads, relations), atol=1e-6, rtol=0)
    torch.testing.assert_close(vectors[:, relations:], torch.full((heads, 2), 2.0))


def test_relation_network_sums_over_all_ordered_pairs() -> None:
    net = RelationNet(2, 3, embed_dim=4, context_norm=False)
    embeddings = torch.randn(1, 3, 4)
    z = append_positions(embeddings)
    expected = sum(net.pair(torch.cat([z[:, i], z[:, j]], dim=-1)) for i in range(3) for j in range(3))
    seen: list[Tensor] = []
    net.encoder.register_forward_hook(lambda module, args, out: embeddings)
    net.readout.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    net({"images": torch.rand(1, 3, 1, 32, 32)})
    torch.testing.assert_close(seen[0], expected)
