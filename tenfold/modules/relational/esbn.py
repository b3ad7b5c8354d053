"""The Emergent Symbol Binding Network (Webb, Sinha & Cohen, 2021, "Emergent Symbols through
Binding in External Memory", arXiv 2012.14601; official code taylorwwebb/emergent_symbols,
``models/ESBN.py``), the baseline CoRelNet (arXiv 2206.05056) compares against."""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from tenfold.modules.nets import ObjectSequenceModel
from tenfold.modules.relational.embedding import init_lstm_

__all__ = ["ESBN", "ESBNRollout", "esbn_memory_read"]


def esbn_memory_read(
    query: Tensor, keys: Tensor, values: Tensor, confidence_gain: Tensor, confidence_bias: Tensor
) -> Tensor:
    """Reads ESBN's key-value memory by the similarity of ``query`` with the stored values.

    With ``s_t = z . M_v[t]`` (dot products with the ``T`` stored values):
    ``w = softmax_t(s)``, confidence ``c_t = sigmoid(gain s_t + bias)``, and the read is
    ``sum_t w_t [M_k[t], c_t]`` (Webb et al. 2021; ``models/ESBN.py``). When one value is
    much more similar to the query than the others, the read is that value's key (and its
    confidence).

    Shapes: ``query [B, D]``, ``keys [B, T, K]``, ``values [B, T, D]``, gain and bias scalars
    (``[1]``) -> ``[B, K + 1]``.
    """
    scores = (values * query.unsqueeze(1)).sum(dim=-1)
    weights = scores.softmax(dim=1)
    confidence = torch.sigmoid(scores * confidence_gain + confidence_bias)
    keyed = torch.cat([keys, confidence.unsqueeze(-1)], dim=-1)
    return (weights.unsqueeze(-1) * keyed).sum(dim=1)


class ESBNRollout(NamedTuple):
    """One pass of the ESBN controller over a sequence of ``N`` objects.

    Attributes:
        logits: ``[B, K]``, from the controller's last (``N + 1``-th) step.
        keys: ``[B, N, key_dim]``, the keys written to memory (step ``t`` writes key ``t``).
        values: ``[B, N, D]``, the values written: the object embeddings ``z``.
        gates: ``[B, N]``, the read gate ``g_t`` of each step.
        reads: ``[B, N, key_dim + 1]``, the gated reads (``0`` at ``t = 0``, memory empty), the
            controller's input at the next step.
    """

    logits: Tensor
    keys: Tensor
    values: Tensor
    gates: Tensor
    reads: Tensor


class ESBN(ObjectSequenceModel):
    """ESBN: ``batch["images"] [B, N, 1, 32, 32] -> logits [B, num_classes]``.

    The objects are embedded (:class:`~tenfold.modules.nets.ObjectSequenceModel`: shared
    convolutional encoder, context norm). An LSTM controller never sees the embeddings; it runs
    ``N + 1`` steps (Webb et al. 2021; ``models/ESBN.py``). At step ``t``, from its
    input ``k_r(t-1)`` (the previous gated read with its confidence, ``key_dim + 1``; zeros at
    ``t = 0``), the LSTM gives ``h_t``, and

    - the key to write ``k_w(t) = ReLU(W_k h_t)`` and the read gate ``g_t = sigmoid(W_g h_t)``;
    - the read ``k_r(t) = g_t * read(z_t, M_k, M_v)`` (:func:`esbn_memory_read`; memory holds the
      steps before ``t``; zero at ``t = 0``);
    - the write ``M_k <- [M_k; k_w(t)]``, ``M_v <- [M_v; z_t]``.

    The output is ``y = W_y h_N`` at the extra step ``N`` (whose input is the read of the last
    object). Sizes as the official code: key 256, LSTM hidden 512; the confidence gain and bias
    are learned scalars (init 1 and 0). Initialization as ``models/ESBN.py``: LSTM per
    :func:`~tenfold.modules.relational.embedding.init_lstm_`, ``W_k`` Kaiming-normal (ReLU), ``W_g`` and
    ``W_y`` Xavier-normal, biases zero.

    Args:
        key_dim: size of the keys (official 256).
        hidden_dim: LSTM hidden size (official 512).
        Others: see :class:`~tenfold.modules.nets.ObjectSequenceModel`.
    """

    def __init__(
        self,
        num_classes: int,
        sequence_length: int,
        embed_dim: int = 128,
        key_dim: int = 256,
        hidden_dim: int = 512,
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
        self.key_dim = key_dim
        self.hidden_dim = hidden_dim
        self.controller = nn.LSTMCell(key_dim + 1, hidden_dim)
        self.key_out = nn.Linear(hidden_dim, key_dim)
        self.gate_out = nn.Linear(hidden_dim, 1)
        self.output = nn.Linear(hidden_dim, num_classes)
        self.confidence_gain = nn.Parameter(torch.ones(1))
        self.confidence_bias = nn.Parameter(torch.zeros(1))
        init_lstm_(
            self.controller.weight_ih, self.controller.weight_hh,
            [self.controller.bias_ih, self.controller.bias_hh], hidden_dim,
        )
        nn.init.kaiming_normal_(self.key_out.weight, nonlinearity="relu")
        nn.init.xavier_normal_(self.gate_out.weight)
        nn.init.xavier_normal_(self.output.weight)
        for layer in (self.key_out, self.gate_out, self.output):
            nn.init.zeros_(layer.bias)

    def rollout(self, z: Tensor) -> ESBNRollout:
        """Runs the controller over embeddings ``z [B, N, D]`` (see the class docstring)."""
        batch, length, _ = z.shape
        hidden = z.new_zeros(batch, self.hidden_dim)
        cell = z.new_zeros(batch, self.hidden_dim)
        read = z.new_zeros(batch, self.key_dim + 1)
        keys: list[Tensor] = []
        gates: list[Tensor] = []
        reads: list[Tensor] = []
        for step in range(length + 1):
            hidden, cell = self.controller(read, (hidden, cell))
            if step == length:
                break
            key = torch.relu(self.key_out(hidden))
            gate = torch.sigmoid(self.gate_out(hidden))
            if step > 0:
                read = gate * esbn_memory_read(
                    z[:, step], torch.stack(keys, dim=1), z[:, :step], self.confidence_gain, self.confidence_bias
                )
            keys.append(key)
            gates.append(gate.squeeze(-1))
            reads.append(read)
        return ESBNRollout(
            logits=self.output(hidden),
            keys=torch.stack(keys, dim=1),
            values=z,
            gates=torch.stack(gates, dim=1),
            reads=torch.stack(reads, dim=1),
        )

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.rollout(self.embed(batch)).logits
