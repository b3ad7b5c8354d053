"""The networks of the Compositional Attention paper's tasks (arXiv 2110.09419, Sec. 4), each
mapping a batch dict to predictions, with the attention layer as a constructor argument.

- :class:`ContextualRetrievalNet`: MLP encoder, one attention layer over the set
  (no token attends to itself), MLP decoder; a scalar per token.
- :class:`VisionTransformerNet` (Sort-of-CLEVR, equilateral triangles,
  multitask classification): patch embedding, class token, positions, a Transformer encoder;
  logits from the class token, optionally a question fused into every token and one head per task.
- :class:`ObjectSequenceNet` (the ESBN logical reasoning tasks): each object image is
  encoded by the ESBN convolutional encoder, context-normalized, given positions and passed
  through a Transformer encoder; logits from the mean token.

Shapes are given per class. Where the official code (sarthmit/Compositional-Attention) fixes a
detail the paper leaves open, the docstring cites it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from tenfold.modules.nets import (
    ObjectSequenceModel,
    PatchEmbedding,
    SinusoidalPositionalEncoding,
    TransformerEncoder,
    attention_output,
    build_attention,
)

__all__ = ["ContextualRetrievalNet", "ObjectSequenceNet", "VisionTransformerNet"]


class ContextualRetrievalNet(nn.Module):
    """The contextual-retrieval model: ``inputs [B, L, input_dim] -> predictions [B, L]``.

    As the official ``Contextual_Retrieval_Task/model.py``: encoder ``Linear-ReLU-Linear`` to
    ``embed_dim``, one attention layer (no residual, no normalization; the diagonal is masked so
    each token searches the others), decoder ``Linear-ReLU-Linear`` to a scalar.

    Args:
        input_dim: features per token (the datamodule's ``input_dim``).
        embed_dim: width ``E``.
        attention: factory ``attention(E, dropout=0.0)`` (MHA or compositional attention).
        mask_self: mask each token's attention to itself (the task's searches exclude it).
        input_skip_dim: when set, adds ``Linear(E, k) -> Linear(k, E)`` of the encoded token to
            the attention output: the official ``--concat`` (a width-``k`` projection of the
            token joins the attention's output projection), written as a sum.
    """

    def __init__(
        self,
        input_dim: int,
        embed_dim: int,
        attention: Callable[..., nn.Module],
        mask_self: bool = True,
        input_skip_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(input_dim, embed_dim), nn.ReLU(), nn.Linear(embed_dim, embed_dim))
        # no attention dropout (the official model's), unless the factory sets its own
        self.attention = build_attention(attention, embed_dim, getattr(attention, "keywords", {}).get("dropout", 0.0))
        self.skip = (
            nn.Sequential(nn.Linear(embed_dim, input_skip_dim), nn.Linear(input_skip_dim, embed_dim, bias=False))
            if input_skip_dim
            else None
        )
        self.decoder = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.ReLU(), nn.Linear(embed_dim, 1))
        self.mask_self = mask_self

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        inputs = batch["inputs"]
        h = self.encoder(inputs)
        length = h.shape[1]
        mask = torch.eye(length, dtype=torch.bool, device=h.device) if self.mask_self else None
        attended = attention_output(self.attention(h, h, h, attn_mask=mask, need_weights=False))
        if self.skip is not None:
            attended = attended + self.skip(h)
        return self.decoder(attended).squeeze(-1)

    def attention_maps(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """Maps of the first example, for :class:`tenfold.callbacks.AttentionMaps`: the search weights
        (mean over searches) ``[L, L]``, the ground-truth searches of the data ``[L, L]`` when
        the batch has ``"searches"``, and, for compositional attention, the retrieval selection
        ``[L, S * R]`` (column ``s * R + r``: search ``s`` reading retrieval ``r``)."""
        h = self.encoder(batch["inputs"][:1])
        length = h.shape[1]
        mask = torch.eye(length, dtype=torch.bool, device=h.device) if self.mask_self else None
        weights = self.attention(h, h, h, attn_mask=mask, need_weights=True)[1]
        search_weights, selection = weights if isinstance(weights, tuple) else (weights, None)
        maps = {"search weights (mean over searches)": search_weights[0]}
        if "searches" in batch:
            chosen = batch["searches"][0]
            truth = torch.zeros(length, length, device=h.device)
            truth.scatter_(1, chosen.to(h.device), 1.0)
            maps["ground-truth searches"] = truth
        if selection is not None:
            maps["retrieval selection [token, search x retrieval]"] = selection[0].flatten(1)
        return maps


class VisionTransformerNet(nn.Module):
    """A Vision Transformer for the paper's image tasks: ``image [B, C, H, W] -> logits [B, K]``.

    Tokens: one learned class token per head (the official multitask model reads each task's head
    from its own class token) and one token per ``patch_size`` patch with sinusoidal
    positions (the official ``get_positional`` scales them by ``1 / (1 + e^-1)`` and uses an
    exponent ``2i/E`` on both sine and cosine entries; here the standard table of Vaswani et al.).

    Args:
        image_size, in_channels, patch_size: the images (4x4 patches on 64x64 triangles and
            32x32 multitask images, 15x15 on 75x75 Sort-of-CLEVR in the official code).
        encoder: a :class:`tenfold.modules.nets.TransformerEncoder` of width ``embed_dim`` (pre-norm,
            shared layers: the official models apply one block ``iterations`` times).
        num_classes: classes of the single head, or a list: one head per task (multitask
            classification; ``batch[task_key]`` picks each example's head).
        question_dim: when set, ``batch[question_key]`` (``[B, question_dim]``) is embedded and
            fused into every token as the official Sort-of-CLEVR model does: patches and question
            are each embedded in ``E / 2`` dimensions, concatenated, and mapped by a linear layer.
        patch_hidden_dim: embed patches with an MLP of this hidden width instead of a linear map,
            the class tokens then living in patch space and embedded by the same MLP (the
            official multitask model's ``Encoder``).
        head_hidden_dim: a shared ``Linear-ReLU`` of this width before the heads (the official
            multitask model's ``out_layer``, 128).
        image_key, question_key, task_key: the batch's keys of the images ``[B, C, H, W]``, the
            questions and the task index ``[B]`` of each example.

    Output: ``[B, max(num_classes)]``; with several heads, the logits of classes a task does not
    have are ``-inf`` (so cross-entropy and argmax see only the task's own classes).
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        patch_size: int,
        encoder: TransformerEncoder,
        num_classes: int | Sequence[int],
        question_dim: int | None = None,
        image_key: str = "image",
        question_key: str = "question",
        task_key: str = "task",
        patch_hidden_dim: int | None = None,
        head_hidden_dim: int | None = None,
    ) -> None:
        super().__init__()
        embed_dim = encoder.layers[0].norm1.normalized_shape[0]
        token_dim = embed_dim // 2 if question_dim else embed_dim
        self.patches = PatchEmbedding(image_size, patch_size, in_channels, token_dim, patch_hidden_dim)
        self.positions = SinusoidalPositionalEncoding(token_dim, max_length=self.patches.num_patches)
        self.num_classes = [num_classes] if isinstance(num_classes, int) else [int(k) for k in num_classes]
        class_token_dim = self.patches.patch_dim if patch_hidden_dim else token_dim
        self.class_tokens = nn.Parameter(torch.randn(1, len(self.num_classes), class_token_dim))
        self.question = nn.Linear(question_dim, embed_dim - token_dim) if question_dim else None
        self.fuse = nn.Linear(embed_dim, embed_dim) if question_dim else None
        self.encoder = encoder
        self.head_hidden = (
            nn.Sequential(nn.Linear(embed_dim, head_hidden_dim), nn.ReLU()) if head_hidden_dim else nn.Identity()
        )
        self.heads = nn.ModuleList(nn.Linear(head_hidden_dim or embed_dim, k) for k in self.num_classes)
        self.image_key, self.question_key, self.task_key = image_key, question_key, task_key

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        images = batch[self.image_key]
        tokens = self.positions(self.patches(images))
        class_tokens = self.class_tokens.expand(images.shape[0], -1, -1)
        if hasattr(self.patches, "mlp"):
            class_tokens = self.patches.mlp(class_tokens)
        tokens = torch.cat([class_tokens.to(tokens.dtype), tokens], dim=1)
        if self.question is not None:
            question = self.question(batch[self.question_key]).unsqueeze(1).expand(-1, tokens.shape[1], -1)
            tokens = self.fuse(torch.cat([tokens, question], dim=-1))
        summaries = self.head_hidden(self.encoder(tokens)[:, : len(self.heads)])
        if len(self.heads) == 1:
            return self.heads[0](summaries[:, 0])
        task = batch[self.task_key]
        logits = summaries.new_full((summaries.shape[0], max(self.num_classes)), float("-inf"))
        for index, head in enumerate(self.heads):
            rows = task == index
            logits[rows, : self.num_classes[index]] = head(summaries[rows, index]).to(logits.dtype)
        return logits


class ObjectSequenceNet(ObjectSequenceModel):
    """The ESBN-task Transformer of the official ``emergent_symbols/models/{tsf,comp_tsf}.py``:
    ``images [B, N, C, 32, 32] -> logits [B, num_classes]``.

    Each image is encoded by :class:`tenfold.modules.nets.ConvGlyphEncoder` (to ``embed_dim``), the
    sequence is context-normalized (per segment: the datamodule's ``context_segments``), given
    sinusoidal positions, transformed by ``encoder`` (post-norm in the official models, one layer,
    heads 8, feed-forward 512), averaged over positions and read out by ``Linear-ReLU-Linear``
    (hidden 256).

    Differences from the official models: they add one more LayerNorm after the block (256
    parameters at width 128), normalize the context with the unbiased variance
    (``unbiased_context_norm=True`` gives that) and initialize attention with Xavier-normal
    (gain 1/sqrt 2) and the feed-forward with Kaiming; here the block ends with its own post-norm
    and layers keep torch's initialization.
    """

    def __init__(
        self,
        encoder: TransformerEncoder,
        num_classes: int,
        sequence_length: int,
        context_segments: list[list[int]] | None = None,
        context_norm: bool = True,
        unbiased_context_norm: bool = False,
        in_channels: int = 1,
        image_size: int = 32,
        hidden_dim: int = 256,
        images_key: str = "images",
    ) -> None:
        embed_dim = encoder.layers[0].norm1.normalized_shape[0]
        super().__init__(
            num_classes, sequence_length, embed_dim, context_norm, context_segments, unbiased_context_norm,
            in_channels, image_size, images_key,
        )
        self.positions = SinusoidalPositionalEncoding(embed_dim, max_length=sequence_length)
        self.transformer = encoder
        self.readout = nn.Sequential(nn.Linear(embed_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, num_classes))

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        z = self.embed(batch)
        return self.readout(self.transformer(self.positions(z)).mean(dim=1))
