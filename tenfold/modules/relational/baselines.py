"""Baselines of the relational tasks, as the ESBN code builds them (taylorwwebb/emergent_symbols,
``models/{LSTM,PrediNet,RN}.py``; CoRelNet's code, giancarlok/relationaltasks
``cognitive_tests/models/``, keeps them unchanged): an LSTM, PrediNet (Shanahan et al., 2020) and a
Relation Network (Santoro et al., 2017). The Transformer baseline is
:class:`tenfold.modules.attention.ObjectSequenceNet` (ESBN's ``models/Transformer.py``), the ESBN
:class:`tenfold.modules.relational.ESBN`.

Every net maps ``batch["images"] [B, N, 1, 32, 32]`` to logits ``[B, num_classes]`` through the
shared embedding of :class:`~tenfold.modules.nets.ObjectSequenceModel`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tenfold.modules.nets import ObjectSequenceModel
from tenfold.modules.relational.embedding import init_lstm_

__all__ = ["LSTMNet", "PrediNet", "RelationNet", "append_positions"]


def append_positions(z: Tensor) -> Tensor:
    """Appends each object's position ``0, 1, ..., N-1`` (a float) as a last feature, the ESBN
    code's "temporal tag" of PrediNet and RN: ``[B, N, D] -> [B, N, D + 1]``."""
    positions = torch.arange(z.shape[1], device=z.device, dtype=z.dtype)
    return torch.cat([z, positions.view(1, -1, 1).expand(z.shape[0], -1, 1)], dim=-1)


class LSTMNet(ObjectSequenceModel):
    """An LSTM over the object embeddings; logits from its last output (``models/LSTM.py``: hidden
    512, initialized by :func:`~tenfold.modules.relational.embedding.init_lstm_`, Xavier-normal output
    layer, zero biases).

    Args:
        hidden_dim: LSTM hidden size (official 512).
        Others: see :class:`~tenfold.modules.nets.ObjectSequenceModel`.
    """

    def __init__(
        self,
        num_classes: int,
        sequence_length: int,
        embed_dim: int = 128,
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
        self.lstm = nn.LSTM(embed_dim, hidden_dim, batch_first=True)
        self.output = nn.Linear(hidden_dim, num_classes)
        lstm = self.lstm
        init_lstm_(lstm.weight_ih_l0, lstm.weight_hh_l0, [lstm.bias_ih_l0, lstm.bias_hh_l0], hidden_dim)
        nn.init.xavier_normal_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        outputs, _ = self.lstm(self.embed(batch))
        return self.output(outputs[:, -1])


class PrediNet(ObjectSequenceModel):
    """PrediNet (Shanahan et al., 2020, "An Explicitly Relational Neural Network Architecture",
    arXiv 1905.10307), as ESBN's ``models/PrediNet.py`` applies it to object sequences.

    The embeddings get their position appended (``z'_i = [z_i, i]``, ``D' = D + 1``). Keys
    ``K = z' W_k`` (``[B, N, key_dim]``, shared by all heads); each of ``num_heads`` heads has two
    queries computed from the whole flattened sequence (``Q_1 = flat(z') W_q1``, ``Q_2`` likewise)
    and picks two objects by attention over the sequence, ``E_a = softmax_i(Q_a . K_i) z'``. The
    head's relation vector is ``W_s E_1 - W_s E_2`` (``num_relations`` entries) followed by the
    positions of ``E_1`` and ``E_2``; the heads' vectors are concatenated
    (``num_heads (num_relations + 2)``) and read out by ``Linear(., 8)-ReLU-Linear``. Sizes and
    initialization (Xavier-normal ``W``, Kaiming-normal hidden layer, Xavier-normal output, no
    biases in ``W``, zero biases elsewhere) as the official code: key 16, 32 heads, 16 relations.
    """

    def __init__(
        self,
        num_classes: int,
        sequence_length: int,
        embed_dim: int = 128,
        key_dim: int = 16,
        num_heads: int = 32,
        num_relations: int = 16,
        hidden_dim: int = 8,
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
        tagged = embed_dim + 1
        self.num_heads, self.key_dim = num_heads, key_dim
        self.keys = nn.Linear(tagged, key_dim, bias=False)
        self.queries1 = nn.Linear(sequence_length * tagged, num_heads * key_dim, bias=False)
        self.queries2 = nn.Linear(sequence_length * tagged, num_heads * key_dim, bias=False)
        self.relation = nn.Linear(tagged, num_relations, bias=False)
        self.hidden = nn.Linear(num_heads * (num_relations + 2), hidden_dim)
        self.output = nn.Linear(hidden_dim, num_classes)
        for layer in (self.keys, self.queries1, self.queries2, self.relation, self.output):
            nn.init.xavier_normal_(layer.weight)
        nn.init.kaiming_normal_(self.hidden.weight, nonlinearity="relu")
        nn.init.zeros_(self.hidden.bias)
        nn.init.zeros_(self.output.bias)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        z = append_positions(self.embed(batch))
        keys = self.keys(z)
        flat = z.flatten(1)
        picked = []
        for queries in (self.queries1, self.queries2):
            q = queries(flat).view(-1, self.num_heads, self.key_dim)
            attention = torch.einsum("bhk,bnk->bhn", q, keys).softmax(dim=-1)
            picked.append(attention @ z)
        first, second = picked
        relations = self.relation(first) - self.relation(second)
        heads = torch.cat([relations, first[..., -1:], second[..., -1:]], dim=-1)
        return self.output(torch.relu(self.hidden(heads.flatten(1))))


class RelationNet(ObjectSequenceModel):
    """A Relation Network (Santoro et al., 2017, arXiv 1706.01427), as ESBN's ``models/RN.py``.

    The embeddings get their position appended; every ordered pair ``(i, j)`` (all ``N^2``,
    including ``i = j``) goes through ``g: Linear(2 (D + 1), 512)-ReLU-Linear(512, 256)-ReLU``;
    the sum over pairs goes through ``f: Linear(256, 256)-ReLU-Linear(256, K)``. Initialization:
    Kaiming-normal (ReLU) weights, Xavier-normal output layer, zero biases.
    """

    def __init__(
        self,
        num_classes: int,
        sequence_length: int,
        embed_dim: int = 128,
        pair_hidden_dim: int = 512,
        pair_dim: int = 256,
        output_hidden_dim: int = 256,
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
        self.pair = nn.Sequential(
            nn.Linear(2 * (embed_dim + 1), pair_hidden_dim), nn.ReLU(), nn.Linear(pair_hidden_dim, pair_dim), nn.ReLU()
        )
        self.readout = nn.Sequential(
            nn.Linear(pair_dim, output_hidden_dim), nn.ReLU(), nn.Linear(output_hidden_dim, num_classes)
        )
        for layer in (*self.pair, self.readout[0]):
            if isinstance(layer, nn.Linear):
                nn.init.kaiming_normal_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)
        nn.init.xavier_normal_(self.readout[2].weight)
        nn.init.zeros_(self.readout[2].bias)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        z = append_positions(self.embed(batch))
        length = z.shape[1]
        pairs = torch.cat(
            [z.unsqueeze(2).expand(-1, -1, length, -1), z.unsqueeze(1).expand(-1, length, -1, -1)], dim=-1
        )
        return self.readout(self.pair(pairs).sum(dim=(1, 2)))
