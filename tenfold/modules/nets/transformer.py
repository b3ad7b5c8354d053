"""Transformer encoder and decoder stacks whose attention layer is a constructor argument.

Any module with the call signature of ``nn.MultiheadAttention`` (batch first) can be the attention:
``nn.MultiheadAttention`` itself, or ``tenfold.modules.attention.CompositionalAttention``. The stacks
take an *attention factory* -- a callable ``factory(embed_dim, dropout=...) -> module`` such as
``functools.partial(nn.MultiheadAttention, num_heads=8, batch_first=True)`` or a Hydra
``_partial_: true`` config -- and call it once per attention layer. This keeps ``tenfold/modules/nets``
free of any family import while every family can choose the attention in its config::

    attention:
      _target_: tenfold.modules.attention.CompositionalAttention
      _partial_: true
      num_searches: 4
      num_retrievals: 2

Blocks are the standard residual ``attention -> feed-forward`` blocks (Vaswani et al., 2017), with
post-norm (``norm_first=False``, the original) or pre-norm (``norm_first=True``; the Compositional
Attention paper's image models). ``share_layers=True`` applies one block ``num_layers`` times (the
official Compositional Attention image models' "iterations", a Universal-Transformer-style stack).
All tensors are batch first: ``[B, L, E]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = [
    "AttentionFactory",
    "LearnedPositionalEncoding",
    "SinusoidalPositionalEncoding",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "attention_output",
    "build_attention",
    "causal_mask",
]

AttentionFactory = Callable[..., nn.Module]
Activation = Literal["relu", "gelu"]


def causal_mask(length: int, device: torch.device | str | None = None) -> Tensor:
    """Boolean ``[length, length]`` mask, ``True`` above the diagonal (MHA's "not allowed")."""
    return torch.ones(length, length, dtype=torch.bool, device=device).triu(1)


def _attention_dropout_rates(
    dropout: float, attention_dropout: float | None, attention_weight_dropout: float | None
) -> tuple[float, float]:
    """The dropout rates of an attention block: after the block (``attention_dropout``, default
    ``dropout``) and on the attention weights (``attention_weight_dropout``, default the block's)."""
    block_rate = dropout if attention_dropout is None else attention_dropout
    return block_rate, block_rate if attention_weight_dropout is None else attention_weight_dropout


def attention_output(result: object) -> Tensor:
    """The output of an attention layer's call: the first item of the ``(output, weights, ...)``
    tuple that ``nn.MultiheadAttention``-like layers return. A layer that returns a bare tensor is
    refused: its first item would be the first example's output, broadcast over the batch without
    an error."""
    if isinstance(result, Tensor) or not isinstance(result, (tuple, list)) or not result:
        raise TypeError(
            f"the attention layer returned {type(result).__name__}; attention layers must return "
            "(output [B, L, E], weights or None) as nn.MultiheadAttention does"
        )
    return result[0]


def build_attention(factory: AttentionFactory, embed_dim: int, dropout: float) -> nn.Module:
    """``factory(embed_dim, dropout=dropout)``, checked: a callable (not a config's name), whose own
    ``dropout`` (a partial's) does not differ from ``dropout``, building a batch-first layer."""
    if not callable(factory):
        raise TypeError(
            f"the attention factory is {factory!r}, not a callable: choose a config of configs/attention/ on the "
            "command line as a group at the factory's key, e.g. attention@model.net.attention=multihead or "
            "attention@model.net.encoder.attention=multihead (the model's config names the key in its defaults)"
        )
    own_rate = getattr(factory, "keywords", {}).get("dropout")
    if own_rate is not None and own_rate != dropout:
        raise ValueError(
            f"the attention factory sets dropout={own_rate}, which the Transformer block would override with "
            f"its own rate ({dropout}): set the Transformer's attention_weight_dropout={own_rate} instead and "
            "drop the attention's dropout"
        )
    attention = factory(embed_dim, dropout=dropout)
    if not getattr(attention, "batch_first", True):
        raise ValueError(
            f"{type(attention).__name__} was built with batch_first=False; the Transformer stacks are batch first: "
            "add batch_first=True to the attention config"
        )
    return attention


class SinusoidalPositionalEncoding(nn.Module):
    """Adds the fixed sine/cosine position code of Vaswani et al. (2017): ``[B, L, E] -> [B, L, E]``.

    Entry ``2i`` of position ``p`` is ``sin(p / 10000^(2i/E))``, entry ``2i+1`` the cosine.
    """

    def __init__(self, embed_dim: int, max_length: int = 4096, dropout: float = 0.0) -> None:
        super().__init__()
        if embed_dim % 2:
            raise ValueError(f"embed_dim must be even for sinusoidal encodings, got {embed_dim}")
        position = torch.arange(max_length, dtype=torch.float32).unsqueeze(1)
        frequency = torch.exp(torch.arange(0, embed_dim, 2, dtype=torch.float32) * (-math.log(10000.0) / embed_dim))
        table = torch.zeros(max_length, embed_dim)
        table[:, 0::2] = torch.sin(position * frequency)
        table[:, 1::2] = torch.cos(position * frequency)
        self.register_buffer("table", table, persistent=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        length = x.shape[1]
        if offset + length > self.table.shape[0]:
            raise ValueError(f"sequence of length {offset + length} exceeds max_length={self.table.shape[0]}")
        return self.dropout(x + self.table[offset : offset + length].to(x.dtype))


class LearnedPositionalEncoding(nn.Module):
    """Adds a learned embedding per position: ``[B, L, E] -> [B, L, E]``."""

    def __init__(self, embed_dim: int, max_length: int = 4096, dropout: float = 0.0) -> None:
        super().__init__()
        self.embedding = nn.Embedding(max_length, embed_dim)
        nn.init.normal_(self.embedding.weight, std=0.02)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, offset: int = 0) -> Tensor:
        length = x.shape[1]
        if offset + length > self.embedding.num_embeddings:
            raise ValueError(f"sequence of length {offset + length} exceeds max_length={self.embedding.num_embeddings}")
        positions = torch.arange(offset, offset + length, device=x.device)
        return self.dropout(x + self.embedding(positions))


class _FeedForward(nn.Sequential):
    def __init__(self, embed_dim: int, hidden_dim: int, dropout: float, activation: Activation) -> None:
        activations = {"relu": nn.ReLU, "gelu": nn.GELU}
        if activation not in activations:
            raise ValueError(f"activation must be one of {', '.join(activations)}, got {activation!r}")
        act = activations[activation]
        super().__init__(nn.Linear(embed_dim, hidden_dim), act(), nn.Dropout(dropout), nn.Linear(hidden_dim, embed_dim))


class TransformerEncoderLayer(nn.Module):
    """Self-attention block + feed-forward block, each residual with LayerNorm and dropout.

    Args:
        embed_dim: ``E``.
        attention: attention factory (see the module docstring).
        feedforward_dim: hidden width of the feed-forward block (default ``4 E``).
        dropout: dropout after attention and in/after the feed-forward block; also passed to the
            attention layer (on its weights).
        activation: ``"relu"`` or ``"gelu"``.
        norm_first: pre-norm (``x + f(LN(x))``) instead of post-norm (``LN(x + f(x))``).
        attention_dropout: dropout on the attention weights and after the attention block
            instead of ``dropout`` (e.g. 0 for blocks that drop out in the feed-forward only).
        attention_weight_dropout: dropout on the attention weights alone (passed to the attention
            factory) instead of the attention block's rate, e.g. 0 for fairseq's
            ``--attention-dropout 0`` or the official SCAN compositional layer, which keep the residual dropout
            but drop no attention weights.

    Forward: ``x [B, L, E]``, ``attn_mask`` / ``key_padding_mask`` as ``nn.MultiheadAttention``;
    ``is_causal`` without ``attn_mask`` builds the causal mask (MHA itself would reject the hint
    without a mask), with ``attn_mask`` it is MHA's hint that the mask is causal -> ``[B, L, E]``.
    """

    def __init__(
        self,
        embed_dim: int,
        attention: AttentionFactory,
        feedforward_dim: int | None = None,
        dropout: float = 0.1,
        activation: Activation = "relu",
        norm_first: bool = False,
        attention_dropout: float | None = None,
        attention_weight_dropout: float | None = None,
    ) -> None:
        super().__init__()
        block_rate, weight_rate = _attention_dropout_rates(dropout, attention_dropout, attention_weight_dropout)
        self.self_attn = build_attention(attention, embed_dim, weight_rate)
        self.feedforward = _FeedForward(embed_dim, feedforward_dim or 4 * embed_dim, dropout, activation)
        self.norm1 = nn.LayerNorm(embed_dim)
        self.norm2 = nn.LayerNorm(embed_dim)
        self.dropout1 = nn.Dropout(block_rate)
        self.dropout2 = nn.Dropout(dropout)
        self.norm_first = norm_first

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        if is_causal and attn_mask is None:
            attn_mask = causal_mask(x.shape[1], x.device)

        def attend(h: Tensor) -> Tensor:
            out = attention_output(
                self.self_attn(
                    h, h, h, key_padding_mask=key_padding_mask, need_weights=False, attn_mask=attn_mask, is_causal=is_causal
                )
            )
            return self.dropout1(out)

        if self.norm_first:
            x = x + attend(self.norm1(x))
            return x + self.dropout2(self.feedforward(self.norm2(x)))
        x = self.norm1(x + attend(x))
        return self.norm2(x + self.dropout2(self.feedforward(x)))


class TransformerDecoderLayer(nn.Module):
    """Causal self-attention, cross-attention to a memory, feed-forward; each residual + LayerNorm.

    Args as :class:`TransformerEncoderLayer` (``attention_dropout`` and
    ``attention_weight_dropout`` act on both attention blocks); ``cross_attention`` is the factory
    of the cross-attention (default: ``attention``).

    Forward: ``x [B, T, E]``, ``memory [B, S, E]``, ``self_mask`` (``[T, T]``, MHA semantics;
    ``None`` with ``causal=True`` builds the causal mask; a given mask is used as given, whatever
    ``causal`` says), ``self_padding_mask [B, T]``, ``memory_padding_mask [B, S]`` -> ``[B, T, E]``.
    """

    def __init__(
        self,
        embed_dim: int,
        attention: AttentionFactory,
        cross_attention: AttentionFactory | None = None,
        feedforward_dim: int | None = None,
        dropout: float = 0.1,
        activation: Activation = "relu",
        norm_first: bool = False,
        attention_dropout: float | None = None,
        attention_weight_dropout: float | None = None,
    ) -> None:
        super().__init__()
        block_rate, weight_rate = _attention_dropout_rates(dropout, attention_dropout, attention_weight_dropout)
        self.self_attn = build_attention(attention, embed_dim, weight_rate)
        self.cross_attn = build_attention(cross_attention or attention, embed_dim, weight_rate)
        self.feedforward = _FeedForward(embed_dim, feedforward_dim or 4 * embed_dim, dropout, activation)
        self.norms = nn.ModuleList(nn.LayerNorm(embed_dim) for _ in range(3))
        self.dropouts = nn.ModuleList(nn.Dropout(rate) for rate in (block_rate, block_rate, dropout))
        self.norm_first = norm_first

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        self_mask: Tensor | None = None,
        self_padding_mask: Tensor | None = None,
        memory_padding_mask: Tensor | None = None,
        causal: bool = True,
    ) -> Tensor:
        # the causal hint only for the mask built here: MHA's fused path would take the hint over a
        # caller's mask
        is_causal = self_mask is None and causal
        if is_causal:
            self_mask = causal_mask(x.shape[1], x.device)

        def self_block(h: Tensor) -> Tensor:
            return attention_output(
                self.self_attn(
                    h, h, h, key_padding_mask=self_padding_mask, need_weights=False, attn_mask=self_mask, is_causal=is_causal
                )
            )

        return self._residual_blocks(x, self_block, memory, memory_padding_mask)

    def step(
        self, x: Tensor, memory: Tensor, past: Tensor | None, memory_padding_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """One new position for incremental (e.g. greedy) decoding.

        ``x [B, 1, E]`` is the new position; its self-attention reads ``past`` (``[B, t, E]``, the
        self-attention inputs of the earlier positions as returned by earlier calls, or ``None``)
        plus itself, which is what the causal forward computes for the last position. Returns the
        output ``[B, 1, E]`` and the extended ``past`` ``[B, t + 1, E]``.
        """
        stored: list[Tensor] = []

        def self_block(h: Tensor) -> Tensor:
            keys = h if past is None else torch.cat([past, h], dim=1)
            stored.append(keys)
            return attention_output(self.self_attn(h, keys, keys, need_weights=False))

        output = self._residual_blocks(x, self_block, memory, memory_padding_mask)
        return output, stored[0]

    def _residual_blocks(
        self, x: Tensor, self_block: Callable[[Tensor], Tensor], memory: Tensor, memory_padding_mask: Tensor | None
    ) -> Tensor:
        """Self-attention (``self_block``), cross-attention and feed-forward, each with dropout and
        a residual connection, pre- or post-norm."""

        def cross_block(h: Tensor) -> Tensor:
            return attention_output(
                self.cross_attn(h, memory, memory, key_padding_mask=memory_padding_mask, need_weights=False)
            )

        for norm, dropout, block in zip(self.norms, self.dropouts, (self_block, cross_block, self.feedforward)):
            x = x + dropout(block(norm(x))) if self.norm_first else norm(x + dropout(block(x)))
        return x


class TransformerEncoder(nn.Module):
    """``num_layers`` :class:`TransformerEncoderLayer` blocks (or one block applied ``num_layers``
    times with ``share_layers=True``), then a final LayerNorm when ``final_norm`` (default:
    ``norm_first``; pre-norm stacks usually need it, post-norm stacks end normalized).
    ``attention_dropout`` and ``attention_weight_dropout`` as :class:`TransformerEncoderLayer`.

    Forward: ``x [B, L, E]`` and the masks of :class:`TransformerEncoderLayer` -> ``[B, L, E]``.
    """

    def __init__(
        self,
        embed_dim: int,
        num_layers: int,
        attention: AttentionFactory,
        feedforward_dim: int | None = None,
        dropout: float = 0.1,
        activation: Activation = "relu",
        norm_first: bool = False,
        share_layers: bool = False,
        attention_dropout: float | None = None,
        final_norm: bool | None = None,
        attention_weight_dropout: float | None = None,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        num_blocks = 1 if share_layers else num_layers
        self.layers = nn.ModuleList(
            TransformerEncoderLayer(
                embed_dim,
                attention,
                feedforward_dim,
                dropout,
                activation,
                norm_first,
                attention_dropout,
                attention_weight_dropout,
            )
            for _ in range(num_blocks)
        )
        self.num_layers = num_layers
        final_norm = norm_first if final_norm is None else final_norm
        self.norm = nn.LayerNorm(embed_dim) if final_norm else nn.Identity()

    def forward(
        self,
        x: Tensor,
        attn_mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        for index in range(self.num_layers):
            x = self.layers[index % len(self.layers)](x, attn_mask, key_padding_mask, is_causal)
        return self.norm(x)


class TransformerDecoder(nn.Module):
    """``num_layers`` :class:`TransformerDecoderLayer` blocks (shared with ``share_layers``), then
    a final LayerNorm when ``norm_first``. ``attention_dropout`` and ``attention_weight_dropout``
    as :class:`TransformerDecoderLayer`.

    Forward: ``x [B, T, E]``, ``memory [B, S, E]`` and the masks of
    :class:`TransformerDecoderLayer` -> ``[B, T, E]``.
    """

    def __init__(
        self,
        embed_dim: int,
        num_layers: int,
        attention: AttentionFactory,
        cross_attention: AttentionFactory | None = None,
        feedforward_dim: int | None = None,
        dropout: float = 0.1,
        activation: Activation = "relu",
        norm_first: bool = False,
        share_layers: bool = False,
        attention_dropout: float | None = None,
        attention_weight_dropout: float | None = None,
    ) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be at least 1, got {num_layers}")
        num_blocks = 1 if share_layers else num_layers
        self.layers = nn.ModuleList(
            TransformerDecoderLayer(
                embed_dim,
                attention,
                cross_attention,
                feedforward_dim,
                dropout,
                activation,
                norm_first,
                attention_dropout,
                attention_weight_dropout,
            )
            for _ in range(num_blocks)
        )
        self.num_layers = num_layers
        self.norm = nn.LayerNorm(embed_dim) if norm_first else nn.Identity()

    def forward(
        self,
        x: Tensor,
        memory: Tensor,
        self_mask: Tensor | None = None,
        self_padding_mask: Tensor | None = None,
        memory_padding_mask: Tensor | None = None,
        causal: bool = True,
    ) -> Tensor:
        for index in range(self.num_layers):
            layer = self.layers[index % len(self.layers)]
            x = layer(x, memory, self_mask, self_padding_mask, memory_padding_mask, causal)
        return self.norm(x)
