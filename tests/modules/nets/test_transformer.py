"""The Transformer stacks: identical to torch's layers when given MHA, any attention plugs in,
weight sharing, positional encodings and clear errors."""

from __future__ import annotations

import functools
import math

import pytest
import torch
from torch import nn

from tenfold.modules.attention import CompositionalAttention
from tenfold.modules.nets import (
    LearnedPositionalEncoding,
    SinusoidalPositionalEncoding,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
    causal_mask,
)

MHA = functools.partial(nn.MultiheadAttention, num_heads=4, batch_first=True)
COMPOSITIONAL = functools.partial(CompositionalAttention, num_searches=4, num_retrievals=2)


def copy_feedforward(ours: nn.Sequential, linear1: nn.Linear, linear2: nn.Linear) -> None:
    ours[0].load_state_dict(linear1.state_dict())
    ours[3].load_state_dict(linear2.state_dict())


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_layer_equals_torch_encoder_layer(norm_first: bool, activation: str) -> None:
    torch_layer = nn.TransformerEncoderLayer(
        32, 4, dim_feedforward=48, dropout=0.0, activation=activation, batch_first=True, norm_first=norm_first
    ).eval()
    ours = TransformerEncoderLayer(32, MHA, feedforward_dim=48, dropout=0.0, activation=activation, norm_first=norm_first)
    ours.self_attn.load_state_dict(torch_layer.self_attn.state_dict())
    copy_feedforward(ours.feedforward, torch_layer.linear1, torch_layer.linear2)
    ours.norm1.load_state_dict(torch_layer.norm1.state_dict())
    ours.norm2.load_state_dict(torch_layer.norm2.state_dict())
    x = torch.randn(3, 7, 32)
    padding = torch.zeros(3, 7, dtype=torch.bool)
    padding[1, -2:] = True
    with torch.no_grad():
        expected = torch_layer(x, src_key_padding_mask=padding)
        torch.testing.assert_close(ours(x, key_padding_mask=padding)[~padding], expected[~padding], rtol=1e-5, atol=1e-5)
        mask = causal_mask(7)
        torch.testing.assert_close(ours(x, attn_mask=mask), torch_layer(x, src_mask=mask), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_layer_equals_torch_decoder_layer(norm_first: bool) -> None:
    torch_layer = nn.TransformerDecoderLayer(
        32, 4, dim_feedforward=40, dropout=0.0, batch_first=True, norm_first=norm_first
    ).eval()
    ours = TransformerDecoderLayer(32, MHA, feedforward_dim=40, dropout=0.0, norm_first=norm_first)
    ours.self_attn.load_state_dict(torch_layer.self_attn.state_dict())
    ours.cross_attn.load_state_dict(torch_layer.multihead_attn.state_dict())
    copy_feedforward(ours.feedforward, torch_layer.linear1, torch_layer.linear2)
    for index, norm in enumerate((torch_layer.norm1, torch_layer.norm2, torch_layer.norm3)):
        ours.norms[index].load_state_dict(norm.state_dict())
    target, memory = torch.randn(2, 5, 32), torch.randn(2, 6, 32)
    memory_padding = torch.zeros(2, 6, dtype=torch.bool)
    memory_padding[0, -1] = True
    with torch.no_grad():
        expected = torch_layer(
            target, memory, tgt_mask=causal_mask(5), memory_key_padding_mask=memory_padding, tgt_is_causal=True
        )
        torch.testing.assert_close(ours(target, memory, memory_padding_mask=memory_padding), expected, rtol=1e-5, atol=1e-5)


def test_decoder_layer_builds_its_cross_attention_from_its_own_factory() -> None:
    # Self-attention with 2 heads, cross-attention with 4: the same parameter shapes, so only the
    # outputs tell whether the cross-attention factory was used (torch's layer with its
    # self-attention swapped for a 2-head one is the reference).
    torch_layer = nn.TransformerDecoderLayer(32, 4, dim_feedforward=40, dropout=0.0, batch_first=True).eval()
    torch_layer.self_attn = nn.MultiheadAttention(32, 2, batch_first=True)
    ours = TransformerDecoderLayer(
        32, functools.partial(nn.MultiheadAttention, num_heads=2, batch_first=True), cross_attention=MHA,
        feedforward_dim=40, dropout=0.0,
    )
    ours.self_attn.load_state_dict(torch_layer.self_attn.state_dict())
    ours.cross_attn.load_state_dict(torch_layer.multihead_attn.state_dict())
    copy_feedforward(ours.feedforward, torch_layer.linear1, torch_layer.linear2)
    for index, norm in enumerate((torch_layer.norm1, torch_layer.norm2, torch_layer.norm3)):
        ours.norms[index].load_state_dict(norm.state_dict())
    assert ours.self_attn.num_heads == 2 and ours.cross_attn.num_heads == 4
    target, memory = torch.randn(2, 5, 32), torch.randn(2, 6, 32)
    with torch.no_grad():
        expected = torch_layer(target, memory, tgt_mask=causal_mask(5), tgt_is_causal=True)
        torch.testing.assert_close(ours(target, memory), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attention", [MHA, COMPOSITIONAL], ids=["multihead", "compositional"])
def test_decoder_is_causal_and_ignores_padded_memory(attention) -> None:
    decoder = TransformerDecoder(32, 2, attention, dropout=0.0).eval()
    target, memory = torch.randn(2, 6, 32), torch.randn(2, 5, 32)
    padding = torch.zeros(2, 5, dtype=torch.bool)
    padding[:, -2:] = True
    output = decoder(target, memory, memory_padding_mask=padding)
    changed_target = target.clone()
    changed_target[:, 4:] = torch.randn(2, 2, 32)
    changed_memory = memory.clone()
    changed_memory[:, -2:] = torch.randn(2, 2, 32)
    torch.testing.assert_close(decoder(changed_target, memory, memory_padding_mask=padding)[:, :4], output[:, :4])
    torch.testing.assert_close(decoder(target, changed_memory, memory_padding_mask=padding), output)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("attention", [MHA, COMPOSITIONAL], ids=["multihead", "compositional"])
def test_masks_mean_the_same_for_every_attention_in_train_and_eval_mode(attention, training: bool) -> None:
    # A decoder given its own self-attention mask uses that mask, not the causal default (MHA's
    # fused training path would follow an is_causal hint over the mask); an encoder asked for
    # is_causal without a mask builds the causal mask (MHA alone would refuse the hint).
    decoder = TransformerDecoderLayer(32, attention, dropout=0.0).train(training)
    target, memory = torch.randn(2, 6, 32), torch.randn(2, 5, 32)
    nothing_masked = torch.zeros(6, 6, dtype=torch.bool)
    with torch.no_grad():
        unmasked = decoder(target, memory, causal=False)
        torch.testing.assert_close(decoder(target, memory, self_mask=nothing_masked), unmasked)
        assert not torch.allclose(decoder(target, memory), unmasked)
    encoder = TransformerEncoderLayer(32, attention, dropout=0.0).train(training)
    x = torch.randn(2, 6, 32)
    with torch.no_grad():
        torch.testing.assert_close(encoder(x, is_causal=True), encoder(x, attn_mask=causal_mask(6)))


@pytest.mark.parametrize("attention", [MHA, COMPOSITIONAL], ids=["multihead", "compositional"])
def test_decoder_self_padding_mask_hides_padded_targets(attention) -> None:
    # Without the causal mask every target position sees every other one, so only the padding
    # mask keeps the padded positions (the last two of the first sequence) out of the real ones.
    decoder = TransformerDecoder(32, 2, attention, dropout=0.0).eval()
    target, memory = torch.randn(2, 6, 32), torch.randn(2, 5, 32)
    padding = torch.zeros(2, 6, dtype=torch.bool)
    padding[0, 4:] = True
    changed = target.clone()
    changed[0, 4:] = torch.randn(2, 32)
    with torch.no_grad():
        output = decoder(target, memory, self_padding_mask=padding, causal=False)
        changed_output = decoder(changed, memory, self_padding_mask=padding, causal=False)
        torch.testing.assert_close(changed_output[0, :4], output[0, :4])
        torch.testing.assert_close(changed_output[1], output[1])
        unmasked = decoder(changed, memory, causal=False)
        assert not torch.allclose(unmasked[0, :4], decoder(target, memory, causal=False)[0, :4])


@pytest.mark.parametrize("attention", [MHA, COMPOSITIONAL], ids=["multihead", "compositional"])
def test_encoder_without_positions_is_permutation_equivariant(attention) -> None:
    encoder = TransformerEncoder(32, 2, attention, dropout=0.0, norm_first=True).eval()
    x = torch.randn(2, 8, 32)
    permutation = torch.randperm(8)
    torch.testing.assert_close(encoder(x[:, permutation]), encoder(x)[:, permutation], rtol=1e-5, atol=1e-5)


def test_shared_layers_apply_one_block_repeatedly() -> None:
    shared = TransformerEncoder(16, 3, COMPOSITIONAL, dropout=0.0, share_layers=True).eval()
    single = TransformerEncoder(16, 1, COMPOSITIONAL, dropout=0.0).eval()
    single.load_state_dict(shared.state_dict())
    assert len(shared.layers) == 1
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(shared(x), single(single(single(x))))
    unshared = TransformerEncoder(16, 3, COMPOSITIONAL)
    assert sum(p.numel() for p in unshared.parameters()) > 2 * sum(p.numel() for p in shared.parameters())


@pytest.mark.parametrize("encoding_class", [SinusoidalPositionalEncoding, LearnedPositionalEncoding])
def test_an_offset_encodes_the_positions_of_a_later_slice(encoding_class: type[nn.Module]) -> None:
    # incremental decoding encodes one new token at position `offset`
    torch.manual_seed(0)
    encoding = encoding_class(8, max_length=10)
    x = torch.randn(2, 6, 8)
    torch.testing.assert_close(encoding(x[:, 3:5], offset=3), encoding(x)[:, 3:5])
    assert not torch.allclose(encoding(x[:, 3:5]), encoding(x)[:, 3:5])


def test_sinusoidal_encoding_values() -> None:
    encoding = SinusoidalPositionalEncoding(4, max_length=10)
    out = encoding(torch.zeros(1, 3, 4))[0]
    for position in range(3):
        for i in range(2):
            angle = position / 10000 ** (2 * i / 4)
            assert out[position, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert out[position, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    torch.testing.assert_close(encoding(torch.zeros(1, 2, 4), offset=1)[0], out[1:3])
    with pytest.raises(ValueError, match="max_length=10"):
        encoding(torch.zeros(1, 11, 4))
    with pytest.raises(ValueError, match="exceeds max_length=4"):
        LearnedPositionalEncoding(8, max_length=4)(torch.zeros(1, 5, 8))


def test_sequence_first_attention_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_first=True"):
        TransformerEncoder(16, 1, functools.partial(nn.MultiheadAttention, num_heads=2))
    with pytest.raises(ValueError, match="num_layers must be at least 1"):
        TransformerEncoder(16, 0, MHA)


@pytest.mark.parametrize("attention", [MHA, COMPOSITIONAL], ids=["multihead", "compositional"])
def test_attention_dropout_and_final_norm_options(attention) -> None:
    # With the feed-forward's output layer zeroed (weight and bias), the only randomness left in training mode is the
    # attention's: none with attention_dropout=0, some with the default (dropout everywhere).
    outputs = {}
    for attention_dropout in (0.0, None):
        encoder = TransformerEncoder(
            32, 2, attention, dropout=0.5, attention_dropout=attention_dropout, norm_first=True, final_norm=False
        ).train()
        for layer in encoder.layers:
            nn.init.zeros_(layer.feedforward[3].weight)
            nn.init.zeros_(layer.feedforward[3].bias)
        x = torch.randn(2, 6, 32)
        outputs[attention_dropout] = (encoder(x), encoder(x))
        assert isinstance(encoder.norm, nn.Identity)
    torch.testing.assert_close(*outputs[0.0])
    assert not torch.allclose(*outputs[None])


@pytest.mark.parametrize("attention", [MHA, COMPOSITIONAL], ids=["multihead", "compositional"])
def test_final_norm_normalizes_the_stacks_output(attention) -> None:
    # Pre-norm stacks end with a LayerNorm by default: the output is the layers' output normalized
    # (the norm's affine parameters randomized so that they count), and without it the layers' own.
    encoder = TransformerEncoder(32, 2, attention, dropout=0.0, norm_first=True).eval()
    with torch.no_grad():
        encoder.norm.weight.normal_()
        encoder.norm.bias.normal_()
    x = torch.randn(2, 6, 32)
    stack_output = x
    for layer in encoder.layers:
        stack_output = layer(stack_output)
    torch.testing.assert_close(encoder(x), encoder.norm(stack_output))
    without = TransformerEncoder(32, 2, attention, dropout=0.0, norm_first=True, final_norm=False).eval()
    without.layers.load_state_dict(encoder.layers.state_dict())
    torch.testing.assert_close(without(x), stack_output)


def test_an_unknown_activation_names_the_choices() -> None:
    with pytest.raises(ValueError, match="activation must be one of relu, gelu, got 'tanh'"):
        TransformerEncoderLayer(32, MHA, feedforward_dim=48, activation="tanh")


def _recording_factory(rates: list[float]):
    """An MHA factory that records the dropout rate each attention layer is built with."""

    def factory(embed_dim: int, dropout: float) -> nn.MultiheadAttention:
        rates.append(dropout)
        return nn.MultiheadAttention(embed_dim, 2, dropout=dropout, batch_first=True)

    return factory


@pytest.mark.parametrize(
    ("attention_dropout", "attention_weight_dropout", "block_rate", "weight_rate"),
    [(None, None, 0.5, 0.5), (0.2, None, 0.2, 0.2), (None, 0.0, 0.5, 0.0), (0.2, 0.3, 0.2, 0.3)],
)
def test_attention_weight_dropout_reaches_the_attention_alone(
    attention_dropout: float | None, attention_weight_dropout: float | None, block_rate: float, weight_rate: float
) -> None:
    # The attention layers get the weight rate; the dropout after the attention blocks keeps the
    # block rate and the feed-forward keeps `dropout`, in both stacks (self- and cross-attention).
    rates: list[float] = []
    options = {"attention_dropout": attention_dropout, "attention_weight_dropout": attention_weight_dropout}
    encoder = TransformerEncoder(16, 2, _recording_factory(rates), dropout=0.5, **options)
    decoder = TransformerDecoder(16, 1, _recording_factory(rates), dropout=0.5, **options)
    assert rates == [weight_rate] * 4
    for layer in encoder.layers:
        assert (layer.dropout1.p, layer.dropout2.p, layer.feedforward[2].p) == (block_rate, 0.5, 0.5)
    assert [dropout.p for dropout in decoder.layers[0].dropouts] == [block_rate, block_rate, 0.5]
    assert decoder.layers[0].feedforward[2].p == 0.5


def test_no_attention_weight_dropout_keeps_the_residual_dropout() -> None:
    # With the feed-forward's output zeroed, training-mode randomness comes from the attention
    # block: its residual dropout stays with attention_weight_dropout=0, and everything is
    # deterministic only when the block's rate is 0 as well.
    x = torch.randn(2, 6, 32)
    outputs = {}
    for name, options in {
        "weights_only": {"attention_weight_dropout": 0.0},
        "block": {"attention_dropout": 0.0},
    }.items():
        encoder = TransformerEncoder(32, 1, MHA, dropout=0.5, norm_first=True, final_norm=False, **options).train()
        nn.init.zeros_(encoder.layers[0].feedforward[3].weight)
        nn.init.zeros_(encoder.layers[0].feedforward[3].bias)
        outputs[name] = (encoder(x), encoder(x))
    assert not torch.allclose(*outputs["weights_only"])
    torch.testing.assert_close(*outputs["block"])


def test_an_attention_factory_with_its_own_dropout_is_refused() -> None:
    # The stack passes its rate at the call, which would silently override the factory's own.
    factory = functools.partial(nn.MultiheadAttention, num_heads=2, batch_first=True, dropout=0.0)
    with pytest.raises(ValueError, match="attention_weight_dropout=0.0 instead"):
        TransformerEncoder(16, 1, factory, dropout=0.1)
    TransformerEncoder(16, 1, factory, dropout=0.1, attention_weight_dropout=0.0)


class _BareTensorAttention(nn.Module):
    """An attention layer that returns its output alone, not MHA's (output, weights) pair."""

    def __init__(self, embed_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.batch_first = True
        self.mha = nn.MultiheadAttention(embed_dim, 2, dropout=dropout, batch_first=True)

    def forward(self, query, key, value, **kwargs) -> torch.Tensor:
        return self.mha(query, key, value, **kwargs)[0]


def test_an_attention_returning_a_bare_tensor_is_refused() -> None:
    # Its [0] would be the first example's output, broadcast over the batch without an error.
    x = torch.randn(4, 7, 16)
    with pytest.raises(TypeError, match=r"must return \(output \[B, L, E\], weights or None\)"):
        TransformerEncoder(16, 1, _BareTensorAttention)(x)
    with pytest.raises(TypeError, match="must return"):
        TransformerDecoder(16, 1, _BareTensorAttention)(x, x)


class _AttentionWithAnAuxiliaryLoss(_BareTensorAttention):
    """Returns ``(output, weights, auxiliary loss)``: a longer tuple whose first item is the output."""

    def forward(self, query, key, value, **kwargs):
        output, weights = self.mha(query, key, value, **kwargs)
        return output, weights, output.pow(2).mean()


def test_an_attention_returning_a_longer_tuple_gives_its_first_item() -> None:
    torch.manual_seed(0)
    encoder = TransformerEncoder(16, 1, _AttentionWithAnAuxiliaryLoss, dropout=0.0).eval()
    plain = TransformerEncoder(16, 1, _BareTensorAttention, dropout=0.0).eval()
    plain.load_state_dict(encoder.state_dict())
    x = torch.randn(4, 7, 16)
    expected = plain.layers[0].norm2(
        (h := plain.layers[0].norm1(x + plain.layers[0].self_attn.mha(x, x, x)[0])) + plain.layers[0].feedforward(h)
    )
    torch.testing.assert_close(encoder(x), expected)


def test_an_attention_choice_given_as_a_string_names_the_group_override() -> None:
    with pytest.raises(TypeError, match="attention@model.net.encoder.attention=multihead"):
        TransformerEncoder(16, 1, "multihead")
