"""The time-conditioned MLP of the samplers: its Fourier time embedding
``E(t) = MLP([sin(w t + phi), cos(w t + phi)])`` and its definition ``MLP(GELU(W x + b + E(t)))`` by hand,
the same values and gradients whether one time serves the whole batch (the embedding folded into
the state embedding's bias) or every row has its own, and a zero-initialized output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import Tensor
from torch.nn.functional import gelu

from tenfold.modules.nets import FourierTimeEmbedding, TimeConditionedMLP, TimeMLP

torch.set_num_threads(1)


def fourier_embedding_by_hand(embedding: FourierTimeEmbedding, t: Tensor) -> Tensor:
    """``MLP([sin(w t + phi), cos(w t + phi)])`` from the module's phase and weights, with the
    frequencies ``w = linspace(0.1, 100, n)`` of PIS (arXiv 2111.15141) rebuilt here, not read from
    the module; the MLP is ``Linear -> GELU -> Linear`` (one hidden layer)."""
    frequencies = torch.linspace(0.1, 100.0, embedding.phase.numel())
    angles = t.unsqueeze(-1) * frequencies + embedding.phase
    features = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    first, last = embedding.net[0], embedding.net[2]
    return gelu(features @ first.weight.T + first.bias) @ last.weight.T + last.bias


def test_fourier_features_by_hand() -> None:
    torch.manual_seed(0)
    embedding = FourierTimeEmbedding(4, 6, hidden_dim=5, num_hidden_layers=1)
    t = torch.tensor([0.0, 0.25, 0.6, 1.0])
    torch.testing.assert_close(embedding(t), fourier_embedding_by_hand(embedding, t))
    # a scalar time gives one unbatched row
    torch.testing.assert_close(embedding(t[2]), fourier_embedding_by_hand(embedding, t[2]))


@pytest.mark.parametrize("t", [torch.tensor(0.3), torch.tensor([0.0, 0.1, 0.45, 0.8, 1.0])], ids=["scalar", "per_row"])
def test_output_by_hand(t: Tensor) -> None:
    torch.manual_seed(0)
    net = TimeConditionedMLP(3, 2, hidden_dim=8, num_hidden_layers=1, num_frequencies=4, zero_init=False)
    x = torch.randn(5, 3)
    # docstring: f(x, t) = MLP(GELU(W x + b + E(t))), the MLP being Linear -> GELU -> Linear here
    time_embedding = fourier_embedding_by_hand(net.time_embedding, t)
    hidden = gelu(x @ net.state_embedding.weight.T + net.state_embedding.bias + time_embedding)
    first, last = net.head[1][0], net.head[1][2]
    expected = gelu(hidden @ first.weight.T + first.bias) @ last.weight.T + last.bias
    torch.testing.assert_close(net(x, t), expected)


def test_zero_initialization_gives_zero_output() -> None:
    torch.manual_seed(0)
    x = torch.randn(5, 3)
    assert TimeConditionedMLP(3, 2, hidden_dim=8)(x, torch.tensor(0.3)).abs().max() == 0


def test_one_time_per_batch_equals_one_time_per_row_in_values_and_gradients() -> None:
    torch.manual_seed(0)
    net = TimeConditionedMLP(2, 2, hidden_dim=16, num_frequencies=4, zero_init=False)
    x, t = torch.randn(7, 2), torch.tensor(0.6)
    shared = net(x, t)
    shared.square().sum().backward()
    shared_grads = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    per_row = net(x, t.expand(7))
    per_row.square().sum().backward()
    torch.testing.assert_close(shared, per_row)
    for shared_grad, parameter in zip(shared_grads, net.parameters()):
        torch.testing.assert_close(shared_grad, parameter.grad)


def _linear_shapes(module: torch.nn.Module) -> list[tuple[int, int]]:
    """``(in_features, out_features)`` of the module's linear layers in order."""
    return [(m.in_features, m.out_features) for m in module.modules() if isinstance(m, torch.nn.Linear)]


def test_fourier_embedding_honours_its_options() -> None:
    # Pins frequencies = linspace(min_frequency, max_frequency, n) and the MLP's sizes
    # 2n -> hidden (x num_hidden_layers) -> out, and the output by hand with those frequencies.
    torch.manual_seed(0)
    embedding = FourierTimeEmbedding(5, 3, hidden_dim=7, num_hidden_layers=2, min_frequency=1.0, max_frequency=9.0)
    np.testing.assert_allclose(embedding.frequencies.numpy(), [1.0, 3.0, 5.0, 7.0, 9.0], rtol=1e-6)
    assert embedding.phase.shape == (5,)
    assert _linear_shapes(embedding) == [(10, 7), (7, 7), (7, 3)]
    t = torch.tensor([0.0, 0.3, 1.0])
    angles = t[:, None] * torch.tensor([1.0, 3.0, 5.0, 7.0, 9.0]) + embedding.phase
    h = torch.cat([angles.sin(), angles.cos()], dim=-1)
    for layer in embedding.net[:-1]:
        h = layer(h)
    torch.testing.assert_close(embedding(t), embedding.net[-1](h))


def test_time_conditioned_mlp_honours_its_sizes() -> None:
    # Pins num_frequencies (time embedding) and num_hidden_layers (head after the embeddings).
    net = TimeConditionedMLP(3, 2, hidden_dim=8, num_hidden_layers=3, num_frequencies=5)
    assert net.time_embedding.phase.shape == (5,) and net.time_embedding.frequencies.shape == (5,)
    assert _linear_shapes(net.head) == [(8, 8)] * 3 + [(8, 2)]
    assert net(torch.randn(4, 3), torch.rand(4)).shape == (4, 2)


def test_time_mlp_starts_at_init_bias() -> None:
    # Pins TimeMLP(init_bias=c): zero output weight and bias c, so g(t) = c for every t (PIS's
    # Langevin scaling starts at 0.01), and its hidden-layer count.
    torch.manual_seed(0)
    net = TimeMLP(3, hidden_dim=8, num_hidden_layers=2, num_frequencies=4, init_bias=0.01)
    assert _linear_shapes(net) == [(8, 8), (8, 8), (8, 3)]
    out = net(torch.tensor([0.0, 0.2, 0.7, 1.0]))
    torch.testing.assert_close(out, torch.full((4, 3), 0.01), rtol=0, atol=0)
