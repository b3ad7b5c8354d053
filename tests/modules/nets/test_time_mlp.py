"""The time-conditioned MLP of the samplers: its definition ``MLP(GELU(W x + b + E(t)))`` by hand,
the same values and gradients whether one time serves the whole batch (the embedding folded into
the state embedding's bias) or every row has its own, and a zero-initialized output."""

from __future__ import annotations

import torch

from modules.nets import TimeConditionedMLP

torch.set_num_threads(1)


def test_output_by_hand_and_zero_initialization() -> None:
    torch.manual_seed(0)
    net = TimeConditionedMLP(3, 2, hidden_dim=8, num_hidden_layers=1, num_frequencies=4, zero_init=False)
    x, t = torch.randn(5, 3), torch.tensor(0.3)
    hidden = torch.nn.functional.gelu(x @ net.state_embedding.weight.T + net.state_embedding.bias + net.time_embedding(t))
    torch.testing.assert_close(net(x, t), net.head[1](hidden))
    assert TimeConditionedMLP(3, 2, hidden_dim=8)(x, t).abs().max() == 0


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
