"""Encoder-decoder Transformer for SCAN-style sequence-to-sequence tasks, and its LightningModule.

The Compositional Attention paper (Mittal et al., 2022, arXiv 2110.09419) tests systematic
generalization on SCAN with the Transformer set-up of Csordás et al. (2021, "The Devil is in the
Detail", github RobertCsordas/transformer_generalization), on which the official SCAN code is built
(github sarthmit/Compositional-Attention, ``SCAN/``). :class:`Seq2SeqTransformer` follows that
framework's encoder-decoder (``SCAN/models/transformer_enc_dec.py``):

- the encoder reads ``BOS + command + EOS`` (the framework's ``encoder_sos`` and ``add_eos``) when
  ``source_bos_id`` / ``source_eos_id`` are given;
- token embeddings keep PyTorch's ``N(0, 1)`` initialization and are *not* scaled by
  ``sqrt(E)`` (its ``noscale`` variants, the ones of the paper's SCAN table;
  ``scale_embeddings=True`` is its ``opennmt`` variant); sinusoidal positions are added, then
  dropout (``embedding_dropout``; the framework's ``PositionalEncoding`` uses 0.1);
- the output projection is tied to the target embedding, with a bias (``TiedEmbedding``);
- ``share_layers=True`` is its Universal Transformer (one encoder block and one decoder block,
  each applied ``num_layers`` times), the baseline and the compositional model of the paper's
  SCAN table (``SCAN/layers/transformer/compositional_transformer.py`` shares its layers too).

Differences: target sequences start with a BOS token of their own (the framework reuses the EOS id
as start token); attention layers come from a factory (any ``nn.MultiheadAttention``-like module,
see :mod:`tenfold.modules.nets.transformer`) and receive the model's dropout on their weights (the official
compositional layer applies none there, its multi-head baseline does: ``attention_weight_dropout=0`` for
the former). The official SCAN compositional layer
(``SCAN/layers/transformer/compositional_attention.py``, built without ``dot``) scores the
retrievals with one linear layer on ``[retrieval query, retrieved value]``; under the softmax over
retrievals the query term cancels, so its selection does not depend on the query. The
configs use the paper's dot-product selection (the fairseq language-model runs' ``--qk-rule``);
``model.net.attention.retrieval_scoring=linear`` is the official SCAN layer's.

Greedy decoding is incremental: each step runs the decoder blocks on the new position only, its
self-attention reading the stored block inputs of the earlier positions (the framework's
``one_step_forward`` does the same), so a step costs one position instead of the whole prefix.

Sequence accuracy (:func:`sequence_exact_match`) is the SCAN metric of the framework
(``SCAN/dataset/sequence.py``): a greedy decoding is correct when its tokens up to its first EOS
equal the reference, EOS included.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from tenfold.modules.base import ConfiguredOptimizerModule, OptimizerFactory, SchedulerFactory
from tenfold.modules.nets.transformer import (
    Activation,
    AttentionFactory,
    LearnedPositionalEncoding,
    SinusoidalPositionalEncoding,
    TransformerDecoder,
    TransformerEncoder,
)

__all__ = [
    "PositionalEncodingKind",
    "Seq2SeqModule",
    "Seq2SeqTransformer",
    "build_positional_encoding",
    "sequence_exact_match",
]

PositionalEncodingKind = Literal["sinusoidal", "learned"]


def build_positional_encoding(
    kind: PositionalEncodingKind, embed_dim: int, max_length: int, dropout: float
) -> nn.Module:
    """A :class:`SinusoidalPositionalEncoding` or :class:`LearnedPositionalEncoding` (with dropout
    after the sum), ``[B, L, E] -> [B, L, E]``."""
    if kind == "sinusoidal":
        return SinusoidalPositionalEncoding(embed_dim, max_length, dropout)
    if kind == "learned":
        return LearnedPositionalEncoding(embed_dim, max_length, dropout)
    raise ValueError(f"positional_encoding must be 'sinusoidal' or 'learned', got {kind!r}")


class Seq2SeqTransformer(nn.Module):
    """Transformer encoder-decoder over token ids with greedy decoding.

    Args:
        src_vocab_size: source token ids are in ``[0, src_vocab_size)``.
        tgt_vocab_size: target token ids (and output classes) are in ``[0, tgt_vocab_size)``.
        embed_dim: model width ``E``.
        attention: attention factory ``factory(embed_dim, dropout=...)`` of every self-attention
            (and of the cross-attention unless ``cross_attention`` is given).
        cross_attention: factory of the decoder's cross-attention (default: ``attention``).
        num_encoder_layers, num_decoder_layers: depth of the two stacks.
        feedforward_dim: hidden width of the feed-forward blocks (default ``4 E``).
        dropout: dropout in the blocks and (unless ``attention_weight_dropout`` is given) on the
            attention weights.
        embedding_dropout: dropout after adding the positions to the embeddings.
        activation: ``"relu"`` or ``"gelu"``.
        norm_first: pre-norm blocks (default post-norm, as the official SCAN framework).
        share_layers: one block per stack applied ``num_*_layers`` times (Universal Transformer).
        scale_embeddings: multiply token embeddings by ``sqrt(E)`` before adding positions.
        tie_output_embedding: the output projection is the target embedding matrix (plus a bias).
        positional_encoding: ``"sinusoidal"`` or ``"learned"``.
        max_length: longest sequence the positional encoding covers (source with its markers,
            decoder input).
        source_bos_id, source_eos_id: when given, the encoder reads ``BOS + src + EOS`` (both
            must be given or neither).
        attention_weight_dropout: dropout on the attention weights of every attention layer
            (default ``dropout``; 0 as the official SCAN compositional layer).

    Shapes: ``src [B, S]``, ``tgt_in [B, T]`` (long; right-padded), padding masks ``[B, S]`` /
    ``[B, T]`` bool, True at padding (``None``: no padding). Logits ``[B, T, tgt_vocab_size]``.
    """

    def __init__(
        self,
        src_vocab_size: int,
        tgt_vocab_size: int,
        embed_dim: int,
        attention: AttentionFactory,
        cross_attention: AttentionFactory | None = None,
        num_encoder_layers: int = 3,
        num_decoder_layers: int = 3,
        feedforward_dim: int | None = None,
        dropout: float = 0.1,
        embedding_dropout: float = 0.1,
        activation: Activation = "relu",
        norm_first: bool = False,
        share_layers: bool = False,
        scale_embeddings: bool = False,
        tie_output_embedding: bool = True,
        positional_encoding: PositionalEncodingKind = "sinusoidal",
        max_length: int = 512,
        source_bos_id: int | None = None,
        source_eos_id: int | None = None,
        attention_weight_dropout: float | None = None,
    ) -> None:
        super().__init__()
        if (source_bos_id is None) != (source_eos_id is None):
            raise ValueError(
                "give both source_bos_id and source_eos_id (the encoder reads BOS + src + EOS), or neither"
            )
        self.embed_dim = embed_dim
        self.tgt_vocab_size = tgt_vocab_size
        self.source_bos_id = source_bos_id
        self.source_eos_id = source_eos_id
        self.embedding_scale = math.sqrt(embed_dim) if scale_embeddings else 1.0
        self.src_embedding = nn.Embedding(src_vocab_size, embed_dim)
        self.tgt_embedding = nn.Embedding(tgt_vocab_size, embed_dim)
        self.src_positions = build_positional_encoding(positional_encoding, embed_dim, max_length, embedding_dropout)
        self.tgt_positions = build_positional_encoding(positional_encoding, embed_dim, max_length, embedding_dropout)
        self.encoder = TransformerEncoder(
            embed_dim,
            num_encoder_layers,
            attention,
            feedforward_dim,
            dropout,
            activation,
            norm_first,
            share_layers,
            attention_weight_dropout=attention_weight_dropout,
        )
        self.decoder = TransformerDecoder(
            embed_dim,
            num_decoder_layers,
            attention,
            cross_attention,
            feedforward_dim,
            dropout,
            activation,
            norm_first,
            share_layers,
            attention_weight_dropout=attention_weight_dropout,
        )
        self.output_projection = nn.Linear(embed_dim, tgt_vocab_size)
        if tie_output_embedding:
            self.output_projection.weight = self.tgt_embedding.weight
        else:
            nn.init.xavier_uniform_(self.output_projection.weight)
        nn.init.zeros_(self.output_projection.bias)

    def _add_source_markers(self, src: Tensor, src_padding_mask: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """``BOS + src + EOS`` for right-padded rows: ``[B, S] -> [B, S + 2]`` and the new mask."""
        if self.source_bos_id is None:
            return src, src_padding_mask
        batch, length = src.shape
        lengths = (
            torch.full((batch,), length, device=src.device)
            if src_padding_mask is None
            else (~src_padding_mask).sum(dim=1)
        )
        marked = torch.cat([src.new_full((batch, 1), self.source_bos_id), src, src.new_zeros(batch, 1)], dim=1)
        marked.scatter_(1, (lengths + 1).unsqueeze(1), self.source_eos_id)
        if src_padding_mask is None:
            return marked, None
        positions = torch.arange(length + 2, device=src.device)
        return marked, positions.unsqueeze(0) >= (lengths + 2).unsqueeze(1)

    def encode(self, src: Tensor, src_padding_mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        """Encodes ``src [B, S]``. Returns the memory ``[B, S', E]`` and its padding mask
        ``[B, S']`` (``S' = S + 2`` with source markers)."""
        src, src_padding_mask = self._add_source_markers(src, src_padding_mask)
        x = self.src_positions(self.src_embedding(src) * self.embedding_scale)
        return self.encoder(x, key_padding_mask=src_padding_mask), src_padding_mask

    def decode(
        self,
        tgt_in: Tensor,
        memory: Tensor,
        memory_padding_mask: Tensor | None = None,
        tgt_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Causal decoding of ``tgt_in [B, T]`` against ``memory [B, S', E]`` -> logits ``[B, T, V]``."""
        x = self.tgt_positions(self.tgt_embedding(tgt_in) * self.embedding_scale)
        hidden = self.decoder(
            x, memory, self_padding_mask=tgt_padding_mask, memory_padding_mask=memory_padding_mask, causal=True
        )
        return self.output_projection(hidden)

    def forward(
        self,
        src: Tensor,
        tgt_in: Tensor,
        src_padding_mask: Tensor | None = None,
        tgt_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Teacher-forced logits ``[B, T, V]``: position ``t`` predicts the token after ``tgt_in[:, t]``."""
        memory, memory_padding_mask = self.encode(src, src_padding_mask)
        return self.decode(tgt_in, memory, memory_padding_mask, tgt_padding_mask)

    @torch.no_grad()
    def greedy_decode(
        self,
        src: Tensor,
        src_padding_mask: Tensor | None,
        max_length: int,
        bos_id: int,
        eos_id: int,
        pad_id: int = 0,
    ) -> Tensor:
        """Greedy decoding from ``BOS``: each step appends the most likely next token.

        Stops after ``max_length`` tokens or once every sequence has produced ``eos_id``.
        Decoding is incremental (each step runs the decoder on the new position only, attending to
        the stored layer inputs of the earlier ones), with the same result as feeding the growing
        prefix to :meth:`forward` and taking the argmax of its last logits.

        Returns:
            The generated tokens ``[B, T']`` (``T' <= max_length``, BOS not included), each row
            ending with its first EOS and padded with ``pad_id`` after it.
        """
        if max_length < 1:
            raise ValueError(f"max_length must be at least 1, got {max_length}")
        memory, memory_padding_mask = self.encode(src, src_padding_mask)
        batch = src.shape[0]
        past_inputs: list[Tensor | None] = [None] * self.decoder.num_layers
        token = src.new_full((batch,), bos_id)
        finished = torch.zeros(batch, dtype=torch.bool, device=src.device)
        generated = []
        for position in range(max_length):
            logits = self._decode_next(token, position, memory, memory_padding_mask, past_inputs)
            token = logits.argmax(dim=-1).masked_fill(finished, pad_id)
            generated.append(token)
            finished |= token == eos_id
            if bool(finished.all()):
                break
        return torch.stack(generated, dim=1)

    def _decode_next(
        self,
        token: Tensor,
        position: int,
        memory: Tensor,
        memory_padding_mask: Tensor | None,
        past_inputs: list[Tensor | None],
    ) -> Tensor:
        """Logits ``[B, V]`` that follow ``token [B]`` at decoder position ``position``.

        ``past_inputs[i]`` holds, for every earlier position, the self-attention input of the
        ``i``-th layer application (``[B, position, E]``); this step appends its own.
        """
        x = self.tgt_positions(self.tgt_embedding(token.unsqueeze(1)) * self.embedding_scale, offset=position)
        layers = self.decoder.layers
        for index in range(self.decoder.num_layers):
            layer = layers[index % len(layers)]
            x, past_inputs[index] = layer.step(x, memory, past_inputs[index], memory_padding_mask)
        return self.output_projection(self.decoder.norm(x)).squeeze(1)


def sequence_exact_match(predictions: Tensor, targets: Tensor, eos_id: int) -> Tensor:
    """Whether each prediction equals its reference up to and including the reference's EOS.

    The SCAN accuracy of the official framework (``SCAN/dataset/sequence.py``,
    ``SequenceTestState.compare_direct``): tokens and length must both match. Tokens after the
    reference's EOS are ignored, so a prediction is right exactly when its first EOS is where the
    reference's is and every token before it agrees.

    Args:
        predictions: ``[B, T_p]`` generated tokens (no BOS), e.g. :meth:`Seq2SeqTransformer.greedy_decode`.
        targets: ``[B, T_r]`` references (no BOS), each containing ``eos_id``.
        eos_id: the end-of-sequence token id.

    Returns:
        bool ``[B]``.
    """
    if predictions.shape[0] != targets.shape[0]:
        raise ValueError(f"batch sizes differ: predictions {tuple(predictions.shape)}, targets {tuple(targets.shape)}")
    is_eos = targets == eos_id
    if not bool(is_eos.any(dim=1).all()):
        raise ValueError("every reference row must contain eos_id (targets are the actions followed by EOS)")
    reference_length = is_eos.int().argmax(dim=1) + 1
    width = max(predictions.shape[1], targets.shape[1])
    # a prediction shorter than its reference fails: pad it with a value that is no token id
    predictions = F.pad(predictions, (0, width - predictions.shape[1]), value=-1)
    targets = F.pad(targets, (0, width - targets.shape[1]), value=-1)
    scored = torch.arange(width, device=targets.device).unsqueeze(0) < reference_length.unsqueeze(1)
    return ((predictions == targets) | ~scored).all(dim=1)


class Seq2SeqModule(ConfiguredOptimizerModule):
    """Trains a :class:`Seq2SeqTransformer` with teacher-forced cross-entropy; evaluates greedy
    decoding.

    Batches (``tenfold.datamodules.attention.SCANDataModule``): ``"src"`` long ``[B, S]``, ``"tgt"`` long
    ``[B, T]`` (``BOS + tokens + EOS``, right-padded), ``"src_padding_mask"`` / ``"tgt_padding_mask"``
    bool, True at padding. The decoder reads ``tgt[:, :-1]`` and predicts ``tgt[:, 1:]``.

    Logged: ``train/loss`` (per step); for ``val`` and ``test``, accumulated over the epoch with
    torchmetrics (exact under DDP): ``loss`` (mean cross-entropy per target token),
    ``token_acc`` (teacher-forced argmax accuracy per target token), ``seq_acc`` (exact match of the
    greedy decoding, :func:`sequence_exact_match`; the SCAN accuracy).

    Args:
        net: the :class:`Seq2SeqTransformer`.
        optimizer, scheduler, scheduler_interval, scheduler_monitor: see
            :class:`ConfiguredOptimizerModule`.
        pad_id, bos_id, eos_id: the target vocabulary's special ids.
        max_decode_length: most tokens a greedy decoding generates (EOS included). Evaluation
            decodes at most as many tokens as the batch's longest reference, which gives the same
            exact-match result (the official framework decodes that many too).
        label_smoothing: label smoothing of the training loss (official default 0).
    """

    def __init__(
        self,
        net: Seq2SeqTransformer,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: str = "step",
        pad_id: int = 0,
        bos_id: int = 1,
        eos_id: int = 2,
        max_decode_length: int = 50,
        label_smoothing: float = 0.0,
        scheduler_monitor: str | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval, scheduler_monitor=scheduler_monitor)
        if len({pad_id, bos_id, eos_id}) != 3:
            raise ValueError(f"pad_id, bos_id and eos_id must differ, got {pad_id}, {bos_id}, {eos_id}")
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.net = net
        self.pad_id = pad_id
        self.bos_id = bos_id
        self.eos_id = eos_id
        self.max_decode_length = max_decode_length
        self.label_smoothing = label_smoothing
        self.eval_metrics = nn.ModuleDict(
            {
                stage: nn.ModuleDict({name: MeanMetric() for name in ("loss", "token_acc", "seq_acc")})
                for stage in ("val", "test")
            }
        )

    def forward(
        self,
        src: Tensor,
        tgt_in: Tensor,
        src_padding_mask: Tensor | None = None,
        tgt_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """Teacher-forced logits ``[B, T, V]`` (see :meth:`Seq2SeqTransformer.forward`)."""
        return self.net(src, tgt_in, src_padding_mask, tgt_padding_mask)

    def _teacher_forced(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Logits ``[B, T - 1, V]`` and their targets ``tgt[:, 1:]``."""
        tgt = batch["tgt"]
        tgt_padding_mask = batch.get("tgt_padding_mask")
        logits = self.net(
            batch["src"],
            tgt[:, :-1],
            batch.get("src_padding_mask"),
            None if tgt_padding_mask is None else tgt_padding_mask[:, :-1],
        )
        return logits, tgt[:, 1:]

    def _cross_entropy(self, logits: Tensor, targets: Tensor, label_smoothing: float = 0.0) -> Tensor:
        """Mean cross-entropy over the non-pad targets (float32)."""
        return F.cross_entropy(
            logits.float().flatten(0, 1),
            targets.flatten(),
            ignore_index=self.pad_id,
            label_smoothing=label_smoothing,
        )

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        logits, targets = self._teacher_forced(batch)
        loss = self._cross_entropy(logits, targets, self.label_smoothing)
        self.log("train/loss", loss, prog_bar=True, batch_size=targets.shape[0])
        return loss

    def _evaluate(self, batch: dict[str, Tensor], stage: str) -> None:
        logits, targets = self._teacher_forced(batch)
        scored = targets != self.pad_id
        num_tokens = scored.sum()
        metrics = self.eval_metrics[stage]
        metrics["loss"].update(self._cross_entropy(logits, targets), weight=num_tokens)
        metrics["token_acc"].update((logits.argmax(dim=-1) == targets)[scored].float())
        decode_length = min(self.max_decode_length, targets.shape[1])
        predictions = self.net.greedy_decode(
            batch["src"], batch.get("src_padding_mask"), decode_length, self.bos_id, self.eos_id, self.pad_id
        )
        metrics["seq_acc"].update(sequence_exact_match(predictions, targets, self.eos_id).float())
        for name, metric in metrics.items():
            self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, prog_bar=name == "seq_acc")

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> Any:
        """Greedy decodings ``[B, T']`` of ``batch["src"]`` (see :meth:`Seq2SeqTransformer.greedy_decode`)."""
        return self.net.greedy_decode(
            batch["src"], batch.get("src_padding_mask"), self.max_decode_length, self.bos_id, self.eos_id, self.pad_id
        )
