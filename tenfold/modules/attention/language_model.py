"""Causal Transformer language model and its LightningModule: the language-modelling experiment of
Compositional Attention (Mittal et al., 2022, arXiv 2110.09419) on WikiText-103.

The official runs use fairseq (github sarthmit/Compositional-Attention, ``fairseq/run_wiki.sh``)
with ``--arch universal_transformer_lm`` (``fairseq/fairseq/models/universal_transformer_lm.py``):
:class:`TransformerLM` follows that decoder-only model:

- token embeddings initialized ``N(0, E^-1/2)`` and multiplied by ``sqrt(E)``, plus sinusoidal
  positions, then dropout;
- pre-norm blocks (fairseq forces ``decoder_normalize_before`` for this architecture) and a final
  LayerNorm;
- one block applied ``num_layers`` times with ``share_layers=True`` (fairseq's ``copy_params``
  shares every layer's parameters with the first one);
- the output projection tied to the embedding, without bias
  (``--share-decoder-input-output-embed``).

Differences: the blocks of :mod:`tenfold.modules.nets.transformer` apply their dropout rate also after the
feed-forward activation (fairseq's ``--activation-dropout`` is 0 in the official runs); fairseq's
``--attention-dropout`` (0 in the official runs) is ``attention_weight_dropout``, which the config
sets to 0 as well; fairseq's sinusoidal table concatenates the
sines and the cosines instead of interleaving them (a fixed permutation of the code's dimensions).

:func:`inverse_sqrt_schedule` is fairseq's ``inverse_sqrt`` learning-rate schedule
(``fairseq/fairseq/optim/lr_scheduler/inverse_square_root_schedule.py``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torchmetrics import MeanMetric

from tenfold.modules.base import ConfiguredOptimizerModule, OptimizerFactory, SchedulerFactory
from tenfold.modules.attention.seq2seq import PositionalEncodingKind, build_positional_encoding
from tenfold.modules.nets.transformer import Activation, AttentionFactory, TransformerEncoder, causal_mask

__all__ = ["LanguageModelModule", "TransformerLM", "inverse_sqrt_schedule", "masked_token_nll"]


class TransformerLM(nn.Module):
    """Decoder-only Transformer: ``tokens [B, L]`` (long) -> next-token logits ``[B, L, V]``.

    Position ``t`` sees tokens ``<= t`` only (a :class:`~tenfold.modules.nets.transformer.TransformerEncoder`
    run with the causal mask).

    Args:
        vocab_size: ``V``.
        embed_dim: model width ``E``.
        num_layers: number of blocks (or of applications of the one shared block).
        attention: attention factory ``factory(embed_dim, dropout=...)``.
        feedforward_dim: hidden width of the feed-forward blocks (default ``4 E``).
        dropout: dropout after the embeddings, in the blocks and (unless
            ``attention_weight_dropout`` is given) on the attention weights.
        activation: ``"relu"`` or ``"gelu"``.
        norm_first: pre-norm blocks with a final LayerNorm (fairseq's LM); else post-norm.
        share_layers: one block applied ``num_layers`` times (Universal Transformer).
        tie_embeddings: the output projection is the embedding matrix.
        scale_embeddings: multiply the embeddings by ``sqrt(E)``.
        positional_encoding: ``"sinusoidal"`` or ``"learned"``.
        max_length: longest input the positional encoding covers.
        attention_weight_dropout: dropout on the attention weights (default ``dropout``; fairseq's
            ``--attention-dropout``, 0 in the official runs).
    """

    def __init__(
        self,
        vocab_size: int,
        embed_dim: int,
        num_layers: int,
        attention: AttentionFactory,
        feedforward_dim: int | None = None,
        dropout: float = 0.1,
        activation: Activation = "relu",
        norm_first: bool = True,
        share_layers: bool = False,
        tie_embeddings: bool = True,
        scale_embeddings: bool = True,
        positional_encoding: PositionalEncodingKind = "sinusoidal",
        max_length: int = 1024,
        attention_weight_dropout: float | None = None,
    ) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.embedding = nn.Embedding(vocab_size, embed_dim)
        nn.init.normal_(self.embedding.weight, std=embed_dim**-0.5)
        self.embedding_scale = math.sqrt(embed_dim) if scale_embeddings else 1.0
        self.positions = build_positional_encoding(positional_encoding, embed_dim, max_length, dropout)
        self.blocks = TransformerEncoder(
            embed_dim,
            num_layers,
            attention,
            feedforward_dim,
            dropout,
            activation,
            norm_first,
            share_layers,
            attention_weight_dropout=attention_weight_dropout,
        )
        self.output_projection = nn.Linear(embed_dim, vocab_size, bias=False)
        if tie_embeddings:
            self.output_projection.weight = self.embedding.weight
        else:
            nn.init.normal_(self.output_projection.weight, std=embed_dim**-0.5)

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.positions(self.embedding(tokens) * self.embedding_scale)
        mask = causal_mask(tokens.shape[1], tokens.device)
        return self.output_projection(self.blocks(x, attn_mask=mask, is_causal=True))


def masked_token_nll(logits: Tensor, targets: Tensor, target_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Summed next-token negative log-likelihood over the targets where ``target_mask`` is True.

    Args:
        logits: ``[B, L, V]``.
        targets: long ``[B, L]``.
        target_mask: bool ``[B, L]``.

    Returns:
        ``(nll_sum, num_targets)``: float32 scalar and long scalar; the loss is their ratio (fairseq
        sums the cross-entropy and divides by the number of scored tokens).
    """
    nll = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), reduction="none")
    mask = target_mask.flatten()
    return (nll * mask).sum(), mask.sum()


def inverse_sqrt_schedule(
    optimizer: torch.optim.Optimizer, warmup_steps: int, warmup_init_lr: float = 0.0
) -> LambdaLR:
    """fairseq's ``inverse_sqrt`` schedule around the optimizer's learning rate ``lr``.

    Step ``n`` (optimizer updates done): ``warmup_init_lr + n (lr - warmup_init_lr) / warmup_steps``
    while ``n < warmup_steps``, then ``lr * sqrt(warmup_steps / n)``.
    """
    if warmup_steps < 1:
        raise ValueError(f"warmup_steps must be at least 1, got {warmup_steps}")
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    if any(warmup_init_lr > lr for lr in base_lrs):
        raise ValueError(f"warmup_init_lr={warmup_init_lr} exceeds the optimizer's lr {max(base_lrs)}")

    def factor(base_lr: float):
        def at(step: int) -> float:
            if step < warmup_steps:
                return (warmup_init_lr + step * (base_lr - warmup_init_lr) / warmup_steps) / base_lr
            return math.sqrt(warmup_steps / step)

        return at

    return LambdaLR(optimizer, [factor(lr) for lr in base_lrs])


class LanguageModelModule(ConfiguredOptimizerModule):
    """Trains a next-token model (``tokens [B, L] -> logits [B, L, V]``) on windows of a token stream.

    Batches (``tenfold.datamodules.attention.WikiTextDataModule``): ``"tokens"`` long ``[B, C + 1]``, the
    model reads ``tokens[:, :-1]`` and predicts ``tokens[:, 1:]``; ``"target_mask"`` bool
    ``[B, C]``, the targets that count. The loss is the summed cross-entropy over the counted
    targets divided by their number.

    Logged: ``train/loss`` per step; for ``val`` and ``test``, ``loss`` (the mean NLL per counted
    token over the whole epoch, accumulated with token-count weights in a torchmetrics
    ``MeanMetric``, so exact under DDP and for batches of different counts) and ``perplexity``
    (its exponential).

    Args:
        net: e.g. :class:`TransformerLM`.
        optimizer, scheduler, scheduler_interval, scheduler_monitor: see
            :class:`ConfiguredOptimizerModule`.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: str = "step",
        scheduler_monitor: str | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval, scheduler_monitor=scheduler_monitor)
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.net = net
        self.eval_nll = nn.ModuleDict({stage: MeanMetric() for stage in ("val", "test")})

    def forward(self, tokens: Tensor) -> Tensor:
        """Next-token logits ``[B, L, V]`` of ``tokens [B, L]``."""
        return self.net(tokens)

    def _nll(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        tokens = batch["tokens"]
        logits = self.net(tokens[:, :-1])
        return masked_token_nll(logits, tokens[:, 1:], batch["target_mask"])

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        nll_sum, count = self._nll(batch)
        loss = nll_sum / count.clamp(min=1)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["tokens"].shape[0])
        return loss

    def _evaluate(self, batch: dict[str, Tensor], stage: str) -> None:
        nll_sum, count = self._nll(batch)
        # weighted by the count, the metric accumulates nll_sum and count themselves
        self.eval_nll[stage].update(nll_sum / count.clamp(min=1), weight=count)

    def _log_epoch(self, stage: str) -> None:
        metric = self.eval_nll[stage]
        if not metric.update_called:
            return
        nll = metric.compute()
        metric.reset()
        self.log(f"{stage}/loss", nll, sync_dist=True)
        self.log(f"{stage}/perplexity", nll.exp(), sync_dist=True, prog_bar=True)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_epoch("val")

    def on_test_epoch_end(self) -> None:
        self._log_epoch("test")
