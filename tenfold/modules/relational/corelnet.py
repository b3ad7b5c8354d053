"""CoRelNet, the Compositional Relational Network (Kerg et al., 2022, "On Neural Architecture
Inductive Biases for Relational Tasks", arXiv 2206.05056; official code giancarlok/relationaltasks,
``cognitive_tests/models/CoRelNet*.py``)."""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

from tenfold.modules.nets import ObjectSequenceModel

__all__ = ["CoRelNet", "QueryAttentionReadout", "normalize_similarities"]

Normalization = Literal["none", "softmax", "masked_softmax"]
Entries = Literal["full", "lower"]
Decoder = Literal["mlp", "attention"]
NORMALIZATIONS = ("none", "softmax", "masked_softmax")


def _check_normalization(normalization: str, symmetrize: bool) -> None:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    if symmetrize and normalization != "masked_softmax":
        raise ValueError(
            "symmetrize mirrors the masked softmax's lower triangle: use it with normalization='masked_softmax'"
        )


def normalize_similarities(similarities: Tensor, normalization: Normalization, symmetrize: bool = False) -> Tensor:
    """Turns similarities ``[B, N, N]`` into CoRelNet's relation matrix ``[B, N, N]``.

    - ``"none"``: the similarities themselves (symmetric when they are).
    - ``"softmax"``: a softmax over each row (``R_ij = exp S_ij / sum_k exp S_ik``).
    - ``"masked_softmax"``: the official code's: row ``i`` is a softmax over ``j <= i`` only, the
      entries above the diagonal are 0 (so row 0 is always ``[1, 0, ...]``).

    ``symmetrize`` (``"masked_softmax"`` only) copies the strictly lower triangle above the diagonal,
    ``R + tril(R, -1)^T``: the official code without ``--no_adding`` (its CoRelNet sets
    ``--no_adding``).
    """
    _check_normalization(normalization, symmetrize)
    if normalization == "none":
        return similarities
    if normalization == "softmax":
        return similarities.softmax(dim=-1)
    size = similarities.shape[-1]
    above = torch.ones(size, size, dtype=torch.bool, device=similarities.device).triu(1)
    relations = similarities.masked_fill(above, float("-inf")).softmax(dim=-1)
    if symmetrize:
        relations = relations + relations.tril(-1).transpose(-1, -2)
    return relations


class QueryAttentionReadout(nn.Module):
    """The attention decoder of the official ``CoRelNet_qtsf.py``: a learned query reads the rows
    of the relation matrix, each row embedded as its mixture of learned position vectors.

    ``tokens = R P`` (``P [N, position_dim]`` learned, ``randn`` init): row ``i`` of ``R`` becomes
    ``sum_j R_ij p_j``. A learned query ``q [query_dim]`` (``randn`` init) attends over the
    ``N`` tokens in ``num_heads`` heads (query/key width ``attention_dim``, values
    ``attention_dim``, scores divided by the square root of the head width: the official
    ``--sqrt``), the heads are mapped back to ``query_dim`` and added to the query, then a
    feed-forward block (``query_dim -> feedforward_dim -> query_dim``), each residual with a
    LayerNorm after it (the official ``--residual``, post-norm). The block is applied
    ``num_layers`` times with shared weights (the official loop). Shapes:
    ``relations [B, N, N] -> [B, query_dim]``.
    """

    def __init__(
        self,
        sequence_length: int,
        position_dim: int = 8,
        query_dim: int = 8,
        attention_dim: int = 512,
        num_heads: int = 8,
        feedforward_dim: int = 128,
        num_layers: int = 1,
    ) -> None:
        super().__init__()
        if attention_dim % num_heads:
            raise ValueError(f"attention_dim {attention_dim} is not a multiple of num_heads {num_heads}")
        self.positions = nn.Parameter(torch.randn(sequence_length, position_dim))
        self.query = nn.Parameter(torch.randn(query_dim))
        self.to_query = nn.Linear(query_dim, attention_dim)
        self.to_key = nn.Linear(position_dim, attention_dim)
        self.to_value = nn.Linear(position_dim, attention_dim)
        self.to_output = nn.Linear(attention_dim, query_dim)
        self.feedforward = nn.Sequential(
            nn.Linear(query_dim, feedforward_dim), nn.ReLU(), nn.Linear(feedforward_dim, query_dim)
        )
        self.norm1 = nn.LayerNorm(query_dim)
        self.norm2 = nn.LayerNorm(query_dim)
        self.num_heads = num_heads
        self.num_layers = num_layers

    def forward(self, relations: Tensor) -> Tensor:
        batch = relations.shape[0]
        tokens = relations @ self.positions
        heads, head_dim = self.num_heads, self.to_key.out_features // self.num_heads
        keys = self.to_key(tokens).view(batch, -1, heads, head_dim).transpose(1, 2)
        values = self.to_value(tokens).view(batch, -1, heads, head_dim).transpose(1, 2)
        query = self.query.expand(batch, -1)
        for _ in range(self.num_layers):
            q = self.to_query(query).view(batch, heads, 1, head_dim)
            weights = (q @ keys.transpose(-1, -2) / math.sqrt(head_dim)).softmax(dim=-1)
            attended = (weights @ values).reshape(batch, heads * head_dim)
            query = self.norm1(query + self.to_output(attended))
            query = self.norm2(query + self.feedforward(query))
        return query


class CoRelNet(ObjectSequenceModel):
    """CoRelNet: ``batch["images"] [B, N, 1, 32, 32] -> logits [B, num_classes]``, deciding from the
    similarities of the objects alone.

    Paper (arXiv 2206.05056, the CoRelNet model section): each object is encoded by one shared encoder,
    ``z_i = f(x_i)``; the relation matrix is the matrix of inner products passed through a
    normalization, ``R = sigma(Z Z^T)`` with ``sigma`` a row-wise softmax; ``R`` is flattened and
    a decoder MLP outputs the answer. Only inner products of embeddings reach the decoder, so the
    output is unchanged by any rotation of the embedding space and the decoder never sees the
    objects' sensory features (the paper's "partitioned" relational representation).

    Here (defaults = the paper): the encoder is the ESBN convolutional encoder (128-d) with
    context normalization, as in the official code; ``normalization="softmax"``,
    ``readout_entries="full"`` (all ``N^2`` entries); decoder ``Linear(N^2, 256)-ReLU-Linear``.

    Where the official code (``cognitive_tests/models/CoRelNet.py`` with the flags ``main.py`` sets
    for every CoRelNet: ``--selfattention --reduced --no_adding``) differs, an option gives its
    behaviour: ``normalization="masked_softmax"`` (row ``i`` normalized over ``j <= i``) with
    ``readout_entries="lower"`` (the ``N (N + 1) / 2`` entries on and below the diagonal, row by
    row); ``unbiased_context_norm=True`` (``torch.var``). The official variants:

    - ``asymmetric=True`` (``CoRelNet_asym1.py``, the paper's CoRelNet-Asym): two linear maps
      ``W_1, W_2`` (``D x D``, with bias) of the encoder output, each context-normalized (one shared
      ``gamma, beta``; no normalization before them), ``R = sigma((W_1 z)(W_2 z)^T)``.
    - ``concat_embeddings=True`` (``CoRelNet_cat.py``, CoRelNet-Cat): the decoder also sees the
      flattened normalized embeddings ``[B, N D]`` (sensory information joins the relations);
      with ``asymmetric=True`` too (a combination the official code does not have), those of the
      first map, ``W_1 z``.
    - ``decoder="attention"`` (``CoRelNet_qtsf.py``): :class:`QueryAttentionReadout` of the
      relation matrix (restricted to ``readout_entries``), then ``Linear(query_dim, 256)-ReLU-Linear``.
    - ``decoder_hidden_dim`` (``CoRelNet_nhid.py`` widens it to match other models' parameters).

    Args:
        num_classes, sequence_length, embed_dim, context_norm, context_segments,
            unbiased_context_norm, in_channels, image_size, images_key: see
            :class:`~tenfold.modules.nets.ObjectSequenceModel`.
        normalization: ``"softmax"`` (paper), ``"none"`` or ``"masked_softmax"`` (official), see
            :func:`normalize_similarities`.
        symmetrize: with ``"masked_softmax"``, mirror the lower triangle (official without
            ``--no_adding``).
        readout_entries: ``"full"`` (``N^2`` entries, paper) or ``"lower"`` (on and below the
            diagonal, ``N (N + 1) / 2``: official ``--reduced``; loses nothing when ``R`` is
            symmetric or masked, drops half of a row-softmax matrix).
        asymmetric, concat_embeddings, decoder: the variants above.
        decoder_hidden_dim: hidden width of the decoder MLP (official: 256).
        attention_readout: keyword arguments of :class:`QueryAttentionReadout` (``decoder="attention"``).
    """

    def __init__(
        self,
        num_classes: int,
        sequence_length: int,
        embed_dim: int = 128,
        normalization: Normalization = "softmax",
        symmetrize: bool = False,
        readout_entries: Entries = "full",
        asymmetric: bool = False,
        concat_embeddings: bool = False,
        decoder: Decoder = "mlp",
        decoder_hidden_dim: int = 256,
        attention_readout: dict | None = None,
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
        _check_normalization(normalization, symmetrize)
        if readout_entries not in ("full", "lower"):
            raise ValueError(f"readout_entries must be 'full' or 'lower', got {readout_entries!r}")
        if decoder not in ("mlp", "attention"):
            raise ValueError(f"decoder must be 'mlp' or 'attention', got {decoder!r}")
        if decoder == "attention" and concat_embeddings:
            raise ValueError("concat_embeddings feeds the MLP decoder: use it with decoder='mlp'")
        if attention_readout and decoder != "attention":
            raise ValueError("attention_readout configures the attention decoder: set decoder='attention'")
        self.normalization = normalization
        self.symmetrize = symmetrize
        self.readout_entries = readout_entries
        self.concat_embeddings = concat_embeddings
        self.projections = (
            nn.ModuleList([nn.Linear(embed_dim, embed_dim), nn.Linear(embed_dim, embed_dim)]) if asymmetric else None
        )
        rows, columns = (
            torch.tril_indices(sequence_length, sequence_length)
            if readout_entries == "lower"
            else torch.cartesian_prod(torch.arange(sequence_length), torch.arange(sequence_length)).T
        )
        self.register_buffer("entry_rows", rows, persistent=False)
        self.register_buffer("entry_columns", columns, persistent=False)
        if decoder == "attention":
            self.readout = QueryAttentionReadout(sequence_length, **(attention_readout or {}))
            decoder_in = self.readout.query.numel()
        else:
            self.readout = None
            decoder_in = len(rows) + (sequence_length * embed_dim if concat_embeddings else 0)
        self.decoder = nn.Sequential(
            nn.Linear(decoder_in, decoder_hidden_dim), nn.ReLU(), nn.Linear(decoder_hidden_dim, num_classes)
        )

    def embeddings(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """The two sides of the inner products, each ``[B, N, D]``: the same normalized embeddings
        ``z`` twice, or ``(W_1 z, W_2 z)`` each normalized when ``asymmetric``."""
        if self.projections is None:
            z = self.embed(batch)
            return z, z
        encoded = self.encoder(self.images(batch))
        left, right = (self.normalize(projection(encoded)) for projection in self.projections)
        return left, right

    def similarities(self, batch: dict[str, Tensor]) -> Tensor:
        """Inner products of the embeddings, ``Z Z^T`` (or ``(W_1 z)(W_2 z)^T``): ``[B, N, N]``."""
        left, right = self.embeddings(batch)
        return left @ right.transpose(-1, -2)

    def relations(self, similarities: Tensor) -> Tensor:
        """The relation matrix ``R = sigma(S)`` ``[B, N, N]`` (see :func:`normalize_similarities`)."""
        return normalize_similarities(similarities, self.normalization, self.symmetrize)

    def relation_matrix(self, batch: dict[str, Tensor]) -> Tensor:
        """``R`` of a batch, ``[B, N, N]``."""
        return self.relations(self.similarities(batch))

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        left, right = self.embeddings(batch)
        relations = self.relations(left @ right.transpose(-1, -2))
        if self.readout is not None:
            if self.readout_entries == "lower":
                relations = relations.tril()
            return self.decoder(self.readout(relations))
        features = relations[:, self.entry_rows, self.entry_columns]
        if self.concat_embeddings:
            features = torch.cat([features, left.flatten(1)], dim=1)
        return self.decoder(features)
