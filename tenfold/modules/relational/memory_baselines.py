"""Memory-augmented baselines of CoRelNet (Kerg et al., 2022, arXiv 2206.05056; official code
giancarlok/relationaltasks, ``cognitive_tests/models/{NTM,MNM}.py``, taken over from ESBN's
taylorwwebb/emergent_symbols): the Neural Turing Machine (Graves, Wayne & Danihelka, 2014, arXiv
1410.5401) and the Metalearned Neural Memory with its learned local update rule (MNM-p;
Munkhdalai, Sordoni, Wang & Trischler, 2019, arXiv 1907.09720).

Both read the embedded objects (:class:`~tenfold.modules.nets.ObjectSequenceModel`) one
per step with an LSTM controller, plus one step with a zero input, and give logits from the last
step. MNM also returns a meta (memory reconstruction) loss that the official code adds to the
cross-entropy: train it with :class:`MetaLossSupervisedModule`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tenfold.modules.supervised import SupervisedModule
from tenfold.modules.nets import ObjectSequenceModel
from tenfold.modules.relational.embedding import init_lstm_

__all__ = [
    "MNMNet",
    "MNMRollout",
    "MetaLossSupervisedModule",
    "NTMAddressing",
    "NTMNet",
    "NTMRollout",
    "mnm_memory_forward",
    "mnm_memory_update",
    "ntm_address",
    "ntm_content_weights",
    "ntm_read",
    "ntm_write",
]


def ntm_content_weights(memory: Tensor, key: Tensor, strength: Tensor) -> Tensor:
    """NTM content addressing (Graves et al. 2014, eq. 5): ``softmax_i(beta cos(k, M_i))``.

    Shapes: ``memory [B, M, W]``, ``key [B, W]``, ``strength [B]`` (``beta > 0``) -> ``[B, M]``.
    """
    similarity = F.cosine_similarity(key.unsqueeze(1), memory, dim=-1, eps=1e-8)
    return (strength.unsqueeze(1) * similarity).softmax(dim=1)


class NTMAddressing(NamedTuple):
    """The parameters one NTM head emits per step (Graves et al. 2014, section 3.3).

    Attributes:
        key: ``[B, W]``, ``k`` (tanh).
        strength: ``[B]``, key strength ``beta >= 0`` (softplus).
        gate: ``[B]``, interpolation gate ``g in (0, 1)`` (sigmoid).
        shift: ``[B, S]``, the weights of the allowed shifts (softmax).
        sharpen: ``[B]``, ``gamma >= 1`` (1 + softplus).
    """

    key: Tensor
    strength: Tensor
    gate: Tensor
    shift: Tensor
    sharpen: Tensor


def ntm_address(
    memory: Tensor, addressing: NTMAddressing, shifts: Sequence[int], previous: Tensor | None
) -> Tensor:
    """One NTM head's weighting ``[B, M]`` over the ``memory [B, M, W]`` rows (Graves et al.
    2014, eqs. 5-9; official ``NTM.py``): content weights; interpolation with the head's
    ``previous [B, M]`` weights by the gate (skipped when ``previous`` is ``None``, the head's
    first step, as the official code does); circular convolution with the shift weights,
    ``w~(i) = sum_k s_k w(i - shifts[k])`` (rows indexed modulo ``M``); sharpening
    ``w^gamma / sum w^gamma``. The sharpened powers are floored at the smallest normal float so
    that a weight that underflowed to 0 has a finite gradient with respect to ``gamma``."""
    weights = ntm_content_weights(memory, addressing.key, addressing.strength)
    if previous is not None:
        gate = addressing.gate.unsqueeze(1)
        weights = gate * weights + (1 - gate) * previous
    shifted = torch.stack([torch.roll(weights, shifts=shift, dims=1) for shift in shifts], dim=1)
    weights = (addressing.shift.unsqueeze(2) * shifted).sum(dim=1)
    powered = weights.clamp_min(torch.finfo(weights.dtype).tiny) ** addressing.sharpen.unsqueeze(1)
    return powered / powered.sum(dim=1, keepdim=True)


def ntm_read(memory: Tensor, weights: Tensor) -> Tensor:
    """The NTM read ``r = sum_i w(i) M_i`` (Graves et al. 2014, eq. 2): ``memory [B, M, W]``,
    ``weights [B, M]`` -> ``[B, W]``."""
    return (weights.unsqueeze(2) * memory).sum(dim=1)


def ntm_write(memory: Tensor, weights: Tensor, erase: Tensor, add: Tensor) -> Tensor:
    """The NTM write (Graves et al. 2014, eqs. 3-4): erase ``M_i (1 - w(i) e)``, then add
    ``w(i) a``. Shapes: ``memory [B, M, W]``, ``weights [B, M]``, ``erase``/``add [B, W]`` ->
    ``[B, M, W]``."""
    weights = weights.unsqueeze(2)
    return memory * (1 - weights * erase.unsqueeze(1)) + weights * add.unsqueeze(1)


class _NTMHead(nn.Module):
    """Maps the controller state ``[B, H]`` to :class:`NTMAddressing` for a memory of width
    ``W`` and ``S`` allowed shifts, initialized as the official ``NTM.py``: Xavier-normal key
    (gain 5/3), gate and shift layers, Kaiming-normal strength and sharpening layers, zero biases."""

    def __init__(self, hidden_dim: int, memory_width: int, num_shifts: int) -> None:
        super().__init__()
        self.key = nn.Linear(hidden_dim, memory_width)
        self.strength = nn.Linear(hidden_dim, 1)
        self.gate = nn.Linear(hidden_dim, 1)
        self.shift = nn.Linear(hidden_dim, num_shifts)
        self.sharpen = nn.Linear(hidden_dim, 1)
        nn.init.xavier_normal_(self.key.weight, gain=5.0 / 3.0)
        nn.init.xavier_normal_(self.gate.weight)
        nn.init.xavier_normal_(self.shift.weight)
        nn.init.kaiming_normal_(self.strength.weight, nonlinearity="relu")
        nn.init.kaiming_normal_(self.sharpen.weight, nonlinearity="relu")
        for layer in (self.key, self.strength, self.gate, self.shift, self.sharpen):
            nn.init.zeros_(layer.bias)

    def forward(self, hidden: Tensor) -> NTMAddressing:
        return NTMAddressing(
            key=torch.tanh(self.key(hidden)),
            strength=F.softplus(self.strength(hidden)).squeeze(1),
            gate=torch.sigmoid(self.gate(hidden)).squeeze(1),
            shift=self.shift(hidden).softmax(dim=1),
            sharpen=1 + F.softplus(self.sharpen(hidden)).squeeze(1),
        )


class NTMRollout(NamedTuple):
    """One pass of the NTM over ``N`` objects (``N + 1`` controller steps).

    Attributes:
        logits: ``[B, K]``, from the controller's last step.
        read_weights: ``[B, N, M]``, the read weights of steps ``1..N`` (step 0 does not read).
        write_weights: ``[B, N + 1, M]``, the write weights of steps ``0..N``.
        memory: ``[B, M, W]``, the memory after the last write.
    """

    logits: Tensor
    read_weights: Tensor
    write_weights: Tensor
    memory: Tensor


class NTMNet(ObjectSequenceModel):
    """Neural Turing Machine: ``batch["images"] [B, N, 1, 32, 32] -> logits [B, num_classes]``.

    As the official ``NTM.py``: an LSTM controller (hidden 512) reads ``[z_t, r_{t-1}]`` (the
    object embedding, zeros at the extra step ``N``, and the previous read, zeros at first);
    logits come from its output by a linear layer. Each step ``t`` the read head (from step 1
    on) addresses the memory as it stands before this step's write (:func:`ntm_address`) and
    reads it (:func:`ntm_read`), then the write head addresses it and writes an erase
    (sigmoid) and an add (tanh) vector (:func:`ntm_write`). The memory (10 rows of width 256)
    starts from a learned Xavier-normal matrix; shifts ``-1, 0, 1``. Initialization as the
    official code (:func:`~tenfold.modules.relational.embedding.init_lstm_`, erase and output layers
    Xavier-normal, add layer Xavier-normal gain 5/3, zero biases).

    Args:
        hidden_dim: controller LSTM size (official 512).
        memory_slots: memory rows ``M`` (official 10).
        memory_width: memory row width ``W`` (official 256).
        shifts: the allowed circular shifts (official ``[-1, 0, 1]``).
        Others: see :class:`~tenfold.modules.nets.ObjectSequenceModel`.
    """

    def __init__(
        self,
        num_classes: int,
        sequence_length: int,
        embed_dim: int = 128,
        hidden_dim: int = 512,
        memory_slots: int = 10,
        memory_width: int = 256,
        shifts: Sequence[int] = (-1, 0, 1),
        context_norm: bool = True,
        context_segments: list[list[int]] | None = None,
        unbiased_context_norm: bool = False,
        in_channels: int = 1,
        image_size: int = 32,
        images_key: str = "images",
    ) -> None:
        super().__init__(
            num_classes, sequence_length, embed_dim, context_norm, context_segments, unbiased_context_norm,
            in_channels, image_size, images_key,
        )
        if len(shifts) == 0:
            raise ValueError("NTMNet: shifts must list at least one allowed shift, e.g. [-1, 0, 1]")
        self.shifts = [int(shift) for shift in shifts]
        self.memory_width = memory_width
        self.controller = nn.LSTMCell(embed_dim + memory_width, hidden_dim)
        self.read_head = _NTMHead(hidden_dim, memory_width, len(self.shifts))
        self.write_head = _NTMHead(hidden_dim, memory_width, len(self.shifts))
        self.erase = nn.Linear(hidden_dim, memory_width)
        self.add = nn.Linear(hidden_dim, memory_width)
        self.output = nn.Linear(hidden_dim, num_classes)
        self.memory_init = nn.Parameter(torch.empty(memory_slots, memory_width))
        cell = self.controller
        init_lstm_(cell.weight_ih, cell.weight_hh, [cell.bias_ih, cell.bias_hh], hidden_dim)
        nn.init.xavier_normal_(self.erase.weight)
        nn.init.xavier_normal_(self.add.weight, gain=5.0 / 3.0)
        nn.init.xavier_normal_(self.output.weight)
        nn.init.xavier_normal_(self.memory_init)
        for layer in (self.erase, self.add, self.output):
            nn.init.zeros_(layer.bias)

    def rollout(self, z: Tensor) -> NTMRollout:
        """Runs the NTM over embeddings ``z [B, N, D]`` (see the class docstring)."""
        batch_size, length, _ = z.shape
        inputs = torch.cat([z, z.new_zeros(batch_size, 1, z.shape[2])], dim=1)
        hidden = z.new_zeros(batch_size, self.controller.hidden_size)
        cell = torch.zeros_like(hidden)
        read = z.new_zeros(batch_size, self.memory_width)
        memory = self.memory_init.unsqueeze(0).expand(batch_size, -1, -1)
        read_weights: list[Tensor] = []
        write_weights: list[Tensor] = []
        for step in range(length + 1):
            hidden, cell = self.controller(torch.cat([inputs[:, step], read], dim=1), (hidden, cell))
            if step > 0:
                previous = read_weights[-1] if read_weights else None
                read_weights.append(ntm_address(memory, self.read_head(hidden), self.shifts, previous))
                read = ntm_read(memory, read_weights[-1])
            previous = write_weights[-1] if write_weights else None
            write_weights.append(ntm_address(memory, self.write_head(hidden), self.shifts, previous))
            erase, add = torch.sigmoid(self.erase(hidden)), torch.tanh(self.add(hidden))
            memory = ntm_write(memory, write_weights[-1], erase, add)
        return NTMRollout(self.output(hidden), torch.stack(read_weights, 1), torch.stack(write_weights, 1), memory)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.rollout(self.embed(batch)).logits


def mnm_memory_forward(weights: Sequence[Tensor], inputs: Tensor) -> list[Tensor]:
    """The MNM memory, a bias-free MLP with per-example (fast) weights: ``tanh`` hidden layers,
    linear output. ``weights``: ``[B, out_l, in_l]`` per layer; ``inputs [B, K, in_1]`` -> the
    activations of every layer, the last being the output ``[B, K, out_L]``."""
    activations = []
    hidden = inputs
    for index, weight in enumerate(weights):
        hidden = hidden @ weight.transpose(1, 2)
        if index < len(weights) - 1:
            hidden = torch.tanh(hidden)
        activations.append(hidden)
    return activations


def mnm_memory_update(
    weights: Sequence[Tensor], keys: Tensor, targets: Sequence[Tensor], rate: Tensor
) -> list[Tensor]:
    """MNM-p's learned local update (Munkhdalai et al. 2019; official ``MNM.py``,
    ``FFMemoryLearned.update``): with the memory's activations ``a_l`` on the write ``keys``
    (``a_0 = keys``) and learned per-layer ``targets`` ``t_l``, every layer moves by
    ``W_l <- W_l - 2 / (K out_l) (a_l - t_l)^T (rate a_{l-1})``, all from the activations before
    the update. Shapes: ``weights`` ``[B, out_l, in_l]``, ``keys [B, K, in_1]``, ``targets``
    ``[B, K, out_l]``, ``rate [B]`` -> the new weights."""
    activations = mnm_memory_forward(weights, keys)
    layer_inputs = [keys, *activations[:-1]]
    scale = rate.view(-1, 1, 1)
    updated = []
    for weight, layer_input, output, target in zip(weights, layer_inputs, activations, targets, strict=True):
        error = (output - target) * (2.0 / (output.shape[1] * output.shape[2]))
        updated.append(weight - error.transpose(1, 2) @ (scale * layer_input))
    return updated


class MNMRollout(NamedTuple):
    """One pass of MNM over ``N`` objects (``N + 1`` controller steps).

    Attributes:
        logits: ``[B, K]``, from the last step's output.
        meta_loss: scalar, the memory's reconstruction error of the written values after each
            update, summed over the ``N + 1`` steps and divided by ``N`` (as the official code).
        reads: ``[B, N + 1, memory_dim]``, the memory reads of every step.
    """

    logits: Tensor
    meta_loss: Tensor
    reads: Tensor


class MNMNet(ObjectSequenceModel):
    """Metalearned Neural Memory (MNM-p): ``batch["images"] [B, N, 1, 32, 32] -> logits``.

    As the official ``MNM.py`` (``Model`` with ``MNMp`` and ``FFMemoryLearned``), each step: an
    LSTM cell (``controller_dim`` 128) reads ``[z_t, r_{t-1}]``; ``u = tanh(Linear(h))`` splits
    into rate features (``memory_dim``, giving the update rate ``beta = sigmoid(Linear(.))``) and
    ``num_writes`` triples of write key, write value and read key; the learned targets of the
    memory's three layers come from the write value, ``Linear(v_w)`` cut in three; the memory
    (a three-layer ``tanh`` MLP of width ``memory_dim``, no biases, see
    :func:`mnm_memory_forward`) is updated by :func:`mnm_memory_update` and read at the read keys
    (mean over the ``num_writes`` reads); the step's output is ``Linear([h, r_t])``. The logits
    are a linear map of the last step's output. The meta loss (:class:`MNMRollout`) is the mean
    squared error of the updated memory's output at the write keys against the write values.
    PyTorch default initialization throughout (the official file sets none).

    The memory's initial weights are fixed random matrices (PyTorch's ``nn.Linear`` draw), not
    trained, as in the official code (it keeps ``Linear(...).weight.data``, plain tensors);
    here they are buffers, so they move with the module and are saved in checkpoints. The last
    call's meta loss is kept in ``last_meta_loss`` for :class:`MetaLossSupervisedModule`.

    Args:
        controller_dim: LSTM cell size and output width (official 128, the embedding size).
        memory_dim: memory input, hidden and output width (official 128 for all three).
        num_writes: key/value/read-key triples per step (official ``n_batch_mem = 1``).
        Others: see :class:`~tenfold.modules.nets.ObjectSequenceModel`.
    """

    def __init__(
        self,
        num_classes: int,
        sequence_length: int,
        embed_dim: int = 128,
        controller_dim: int = 128,
        memory_dim: int = 128,
        num_writes: int = 1,
        context_norm: bool = True,
        context_segments: list[list[int]] | None = None,
        unbiased_context_norm: bool = False,
        in_channels: int = 1,
        image_size: int = 32,
        images_key: str = "images",
    ) -> None:
        super().__init__(
            num_classes, sequence_length, embed_dim, context_norm, context_segments, unbiased_context_norm,
            in_channels, image_size, images_key,
        )
        if num_writes < 1:
            raise ValueError(f"MNMNet: num_writes must be a positive int, got {num_writes!r}")
        self.memory_dim, self.num_writes = memory_dim, num_writes
        self.controller = nn.LSTMCell(embed_dim + memory_dim, controller_dim)
        self.heads = nn.Linear(controller_dim, (3 * num_writes + 1) * memory_dim)
        self.rate = nn.Linear(memory_dim, 1)
        self.targets = nn.Linear(memory_dim, 3 * memory_dim)
        self.read_out = nn.Linear(controller_dim + memory_dim, controller_dim)
        self.output = nn.Linear(controller_dim, num_classes)
        for index in range(3):
            self.register_buffer(f"memory_init_{index}", nn.Linear(memory_dim, memory_dim, bias=False).weight.detach())
        self.last_meta_loss: Tensor | None = None

    def rollout(self, z: Tensor) -> MNMRollout:
        """Runs MNM over embeddings ``z [B, N, D]`` (see the class docstring)."""
        batch_size, length, _ = z.shape
        inputs = torch.cat([z, z.new_zeros(batch_size, 1, z.shape[2])], dim=1)
        hidden = z.new_zeros(batch_size, self.controller.hidden_size)
        cell = torch.zeros_like(hidden)
        read = z.new_zeros(batch_size, self.memory_dim)
        weights = [
            getattr(self, f"memory_init_{index}").unsqueeze(0).expand(batch_size, -1, -1) for index in range(3)
        ]
        meta_loss = z.new_zeros(())
        reads = []
        for step in range(length + 1):
            hidden, cell = self.controller(torch.cat([inputs[:, step], read], dim=1), (hidden, cell))
            rate_features, slots = torch.tanh(self.heads(hidden)).split(
                [self.memory_dim, 3 * self.num_writes * self.memory_dim], dim=1
            )
            rate = torch.sigmoid(self.rate(rate_features)).squeeze(1)
            write_keys, write_values, read_keys = slots.view(batch_size, self.num_writes, 3 * self.memory_dim).chunk(
                3, dim=2
            )
            weights = mnm_memory_update(weights, write_keys, self.targets(write_values).chunk(3, dim=2), rate)
            meta_loss = meta_loss + F.mse_loss(mnm_memory_forward(weights, write_keys)[-1], write_values)
            read = mnm_memory_forward(weights, read_keys)[-1].mean(dim=1)
            reads.append(read)
        step_output = self.read_out(torch.cat([hidden, read], dim=1))
        return MNMRollout(self.output(step_output), meta_loss / length, torch.stack(reads, dim=1))

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        rollout = self.rollout(self.embed(batch))
        self.last_meta_loss = rollout.meta_loss
        return rollout.logits


class MetaLossSupervisedModule(SupervisedModule):
    """:class:`tenfold.modules.supervised.SupervisedModule` whose loss adds the net's ``last_meta_loss``
    (set by each forward call, e.g. by :class:`MNMNet`), as the official ``main.py`` adds MNM's
    meta loss to the cross-entropy (``loss += const_loss``, in training and evaluation).
    Arguments as :class:`~tenfold.modules.supervised.SupervisedModule`; the logged ``<split>/loss`` is
    the sum."""

    def loss_and_scores(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        loss, scores = super().loss_and_scores(batch)
        meta_loss = getattr(self.net, "last_meta_loss", None)
        if meta_loss is None:
            raise ValueError(
                f"MetaLossSupervisedModule needs a net that sets last_meta_loss in forward (e.g. MNMNet); "
                f"{type(self.net).__name__} does not: use tenfold.modules.supervised.SupervisedModule"
            )
        return loss + meta_loss.float(), scores
