"""The GCN, NTM and MNM baselines: output shapes and gradient flow; the GCN's complete graph, its
layers by hand and its invariance to the order of the objects; NTM addressing and one write step
by brute force, read weights as distributions; MNM's memory update by brute force, its meta loss
step by step and in the training loss."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from tenfold.modules.relational import (
    GCNNet,
    MetaLossSupervisedModule,
    MNMNet,
    NTMAddressing,
    NTMNet,
    complete_graph_edges,
    mnm_memory_forward,
    mnm_memory_update,
    ntm_address,
    ntm_content_weights,
    ntm_write,
)

NETS = {"gcn": GCNNet, "ntm": NTMNet, "mnm": MNMNet}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _images(batch_size: int, length: int) -> dict[str, Tensor]:
    return {"images": torch.rand(batch_size, length, 1, 32, 32)}


@pytest.mark.parametrize("name", list(NETS))
@pytest.mark.parametrize(("length", "classes"), [(6, 2), (9, 4)], ids=["rmts", "dist3"])
def test_output_shape_and_every_parameter_gets_a_gradient(name: str, length: int, classes: int) -> None:
    net = NETS[name](classes, length)
    logits = net(_images(4, length))
    assert logits.shape == (4, classes)
    nn.functional.cross_entropy(logits, torch.arange(4) % classes).backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"{name}: no gradient reaches {missing}"
    assert all(torch.isfinite(p.grad).all() for p in net.parameters())


def test_complete_graph_edges_of_two_graphs() -> None:
    edges = complete_graph_edges(2, 2)
    pairs = sorted(zip(edges[0].tolist(), edges[1].tolist(), strict=True))
    assert pairs == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 2), (2, 3), (3, 2), (3, 3)]


@pytest.mark.parametrize(("normalize", "scale"), [(False, "sum"), (True, "mean")])
def test_gcn_layers_by_hand(normalize: bool, scale: str) -> None:
    """On the complete graph with self-loops every node receives the sum (official, unnormalized)
    or the mean (Kipf & Welling's normalization) of all nodes."""
    net = GCNNet(3, 4, embed_dim=5, hidden_dim=6, normalize=normalize).eval()
    z = torch.randn(2, 4, 5)
    pool = (lambda x: x.sum(1, keepdim=True)) if scale == "sum" else (lambda x: x.mean(1, keepdim=True))
    w1, b1 = net.conv1.lin.weight, net.conv1.bias
    w2, b2 = net.conv2.lin.weight, net.conv2.bias
    hidden = torch.relu(pool(z) @ w1.T + b1).expand(-1, 4, -1)
    expected = pool(hidden) @ w2.T + b2
    torch.testing.assert_close(net.node_outputs(z), expected.expand(-1, 4, -1), rtol=1e-5, atol=1e-5)


def test_gcn_logits_do_not_depend_on_the_order_of_the_objects() -> None:
    """In float64, so that the check is not blurred by the order of float32 sums."""
    net = GCNNet(4, 9).double().eval()
    images = _images(3, 9)["images"].double()
    order = torch.randperm(9, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(net({"images": images[:, order]}), net({"images": images}))


def test_sharp_content_addressing_picks_the_most_similar_row() -> None:
    memory = torch.randn(2, 6, 8)
    key = memory[torch.arange(2), torch.tensor([4, 1])] + 0.05 * torch.randn(2, 8)
    weights = ntm_content_weights(memory, key, torch.full((2,), 100.0))
    assert weights.argmax(dim=1).tolist() == [4, 1]
    assert (weights.max(dim=1).values > 0.99).all()
    flat = ntm_content_weights(memory, key, torch.zeros(2))
    torch.testing.assert_close(flat, torch.full((2, 6), 1 / 6))


def test_ntm_read_and_write_weights_are_distributions() -> None:
    net = NTMNet(4, 9, hidden_dim=32, memory_slots=5, memory_width=16)
    rollout = net.rollout(torch.randn(3, 9, 128))
    assert rollout.read_weights.shape == (3, 9, 5) and rollout.write_weights.shape == (3, 10, 5)
    for weights in (rollout.read_weights, rollout.write_weights):
        assert (weights >= 0).all()
        torch.testing.assert_close(weights.sum(dim=-1), torch.ones(weights.shape[:2]))


def _address_by_hand(
    memory: list[list[float]], key: list[float], beta: float, gate: float, shift: list[float], gamma: float,
    previous: list[float], shifts: list[int],
) -> list[float]:
    """Graves et al. 2014, eqs. 5-9, one row at a time."""
    slots = len(memory)
    cosines = [
        sum(k * m for k, m in zip(key, row, strict=True)) / (math.hypot(*key) * math.hypot(*row)) for row in memory
    ]
    exps = [math.exp(beta * c) for c in cosines]
    content = [e / sum(exps) for e in exps]
    gated = [gate * c + (1 - gate) * p for c, p in zip(content, previous, strict=True)]
    shifted = [sum(s * gated[(i - d) % slots] for s, d in zip(shift, shifts, strict=True)) for i in range(slots)]
    powered = [w**gamma for w in shifted]
    return [p / sum(powered) for p in powered]


def test_one_ntm_write_step_by_hand() -> None:
    memory = [[1.0, 0.0], [0.5, 0.5], [-1.0, 2.0]]
    key, beta, gate, shift, gamma = [0.8, 0.3], 2.0, 0.7, [0.2, 0.5, 0.3], 1.5
    previous, shifts = [0.1, 0.6, 0.3], [-1, 0, 1]
    erase, add = [0.5, 1.0], [1.0, -2.0]
    weights = _address_by_hand(memory, key, beta, gate, shift, gamma, previous, shifts)
    expected = [
        [memory[i][j] * (1 - weights[i] * erase[j]) + weights[i] * add[j] for j in range(2)] for i in range(3)
    ]
    addressing = NTMAddressing(
        key=torch.tensor([key]),
        strength=torch.tensor([beta]),
        gate=torch.tensor([gate]),
        shift=torch.tensor([shift]),
        sharpen=torch.tensor([gamma]),
    )
    memory_tensor = torch.tensor([memory])
    computed_weights = ntm_address(memory_tensor, addressing, shifts, torch.tensor([previous]))
    torch.testing.assert_close(computed_weights, torch.tensor([weights]))
    written = ntm_write(memory_tensor, computed_weights, torch.tensor([erase]), torch.tensor([add]))
    torch.testing.assert_close(written, torch.tensor([expected]))


def test_ntm_shift_rotates_the_weights() -> None:
    """A one-hot shift of +1 with ``gamma = 1`` and no interpolation moves weight ``i`` to ``i + 1``."""
    memory = torch.randn(1, 4, 3)
    addressing = NTMAddressing(
        key=torch.randn(1, 3), strength=torch.ones(1), gate=torch.ones(1),
        shift=torch.tensor([[0.0, 0.0, 1.0]]), sharpen=torch.ones(1),
    )
    content = ntm_content_weights(memory, addressing.key, addressing.strength)
    torch.testing.assert_close(ntm_address(memory, addressing, [-1, 0, 1], None), content[:, [3, 0, 1, 2]])


def test_mnm_memory_update_by_hand() -> None:
    """One update of a memory with 2-wide layers and one key, entry by entry."""
    weights = [torch.randn(1, 2, 2) for _ in range(3)]
    key = torch.randn(1, 1, 2)
    targets = [torch.randn(1, 1, 2) for _ in range(3)]
    rate = 0.4
    inputs = key[0, 0].tolist()
    expected = []
    for layer, (weight, target) in enumerate(zip(weights, targets, strict=True)):
        pre = [sum(weight[0, o, i].item() * inputs[i] for i in range(2)) for o in range(2)]
        outputs = [math.tanh(p) for p in pre] if layer < 2 else pre
        step = 2 / (1 * 2)  # 2 / (keys x layer outputs)
        new = [
            [weight[0, o, i].item() - step * (outputs[o] - target[0, 0, o].item()) * rate * inputs[i] for i in range(2)]
            for o in range(2)
        ]
        expected.append(torch.tensor([new]))
        inputs = outputs
    updated = mnm_memory_update(weights, key, targets, torch.tensor([rate]))
    for computed, wanted in zip(updated, expected, strict=True):
        torch.testing.assert_close(computed, wanted)
    assert mnm_memory_forward(updated, key)[-1].shape == (1, 1, 2)


def test_mnm_meta_loss_sums_the_step_reconstruction_errors_over_n() -> None:
    """:class:`MNMRollout` (official ``MNM.py``, ``const_loss_all /= x_seq.shape[1]``): the meta
    loss is the mean squared error of the updated memory at the write keys against the write
    values, summed over the ``N + 1`` steps and divided by ``N``. Each step's keys, values, rate and
    targets are taken from the layers that compute them; the memory is updated from its initial
    buffers step by step; the reads are checked on the way."""
    torch.set_num_threads(1)
    length, width, writes = 3, 4, 2
    net = MNMNet(2, length, embed_dim=4, controller_dim=5, memory_dim=width, num_writes=writes, context_norm=False)
    heads: list[Tensor] = []
    rates: list[Tensor] = []
    targets: list[Tensor] = []
    net.heads.register_forward_hook(lambda module, args, out: heads.append(out))
    net.rate.register_forward_hook(lambda module, args, out: rates.append(out))
    net.targets.register_forward_hook(lambda module, args, out: targets.append(out))
    with torch.no_grad():
        rollout = net.rollout(torch.randn(2, length, 4))
        assert len(heads) == len(rates) == len(targets) == length + 1
        weights = [getattr(net, f"memory_init_{index}").expand(2, -1, -1) for index in range(3)]
        errors = []
        for step in range(length + 1):
            slots = torch.tanh(heads[step])[:, width:].view(2, writes, 3 * width)
            keys, values, read_keys = slots[..., :width], slots[..., width : 2 * width], slots[..., 2 * width :]
            rate = torch.sigmoid(rates[step]).squeeze(1)
            weights = mnm_memory_update(weights, keys, targets[step].chunk(3, dim=2), rate)
            reconstruction = mnm_memory_forward(weights, keys)[-1]
            errors.append(((reconstruction - values) ** 2).sum() / reconstruction.numel())
            torch.testing.assert_close(rollout.reads[:, step], mnm_memory_forward(weights, read_keys)[-1].mean(dim=1))
    assert min(errors) > 0
    torch.testing.assert_close(rollout.meta_loss, sum(errors) / length)


def test_meta_loss_module_adds_the_mnm_meta_loss() -> None:
    net = MNMNet(2, 6, controller_dim=16, memory_dim=16)
    module = MetaLossSupervisedModule(net, optimizer=torch.optim.Adam)
    batch = {**_images(4, 6), "target": torch.tensor([0, 1, 1, 0])}
    loss, scores = module.loss_and_scores(batch)
    cross_entropy = nn.functional.cross_entropy(net(batch), batch["target"])
    meta_loss = net.last_meta_loss
    assert meta_loss is not None and meta_loss > 0
    torch.testing.assert_close(loss, cross_entropy + meta_loss)
    assert scores.shape == (4,)


def test_meta_loss_module_refuses_a_net_without_meta_loss() -> None:
    module = MetaLossSupervisedModule(GCNNet(2, 6), optimizer=torch.optim.Adam)
    with pytest.raises(ValueError, match="last_meta_loss"):
        module.loss_and_scores({**_images(2, 6), "target": torch.tensor([0, 1])})
