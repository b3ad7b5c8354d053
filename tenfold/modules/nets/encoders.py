"""Object and image encoders shared by the families that read small images (relational tasks,
Compositional Attention's image tasks).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

__all__ = ["ContextNorm", "ConvGlyphEncoder", "ObjectSequenceModel", "PatchEmbedding", "conv_output_side"]


def conv_output_side(side: int, num_convs: int = 3) -> int:
    """Side of the map after ``num_convs`` ``Conv2d(kernel 4, stride 2, padding 1)``:
    ``s -> (s - 2) // 2 + 1`` each (32 -> 4, 12 -> 1)."""
    for _ in range(num_convs):
        side = (side - 2) // 2 + 1
    return side


class ConvGlyphEncoder(nn.Module):
    """The ESBN image encoder (Webb et al., 2021, arXiv 2012.14601; taylorwwebb/emergent_symbols,
    ``models/modules.py``, ``Encoder_conv``): three 4x4 stride-2 convolutions with 32 channels,
    then two ReLU layers ``32 m^2 -> hidden_dim -> out_dim`` where ``m`` is the side of the last
    map (4 for the 32 x 32 glyphs: 512 inputs; 1 for the 12 x 12 cells of Relational Games, as
    CoRelNet's ``relational_games/models/modules_mini.py``); Kaiming-normal weights, zero biases.

    Shapes: ``[..., in_channels, image_size, image_size] -> [..., out_dim]`` (any leading
    dimensions, e.g. a sequence of objects ``[B, N, 1, 32, 32]``).
    """

    def __init__(self, in_channels: int = 1, image_size: int = 32, out_dim: int = 128, hidden_dim: int = 256) -> None:
        super().__init__()
        if image_size < 2:
            raise ValueError(f"image_size must be at least 2 (three stride-2 convolutions), got {image_size}")
        self.in_channels = in_channels
        self.image_size = image_size
        self.convs = nn.Sequential(
            nn.Conv2d(in_channels, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 32, 4, stride=2, padding=1), nn.ReLU(),
        )
        flat = 32 * conv_output_side(image_size) ** 2
        self.fc = nn.Sequential(nn.Linear(flat, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, out_dim), nn.ReLU())
        for name, parameter in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(parameter)
            else:
                nn.init.kaiming_normal_(parameter, nonlinearity="relu")

    def forward(self, images: Tensor) -> Tensor:
        expected = (self.in_channels, self.image_size, self.image_size)
        if images.dim() < 4 or tuple(images.shape[-3:]) != expected:
            raise ValueError(f"expected images [..., {expected[0]}, {expected[1]}, {expected[2]}], got {tuple(images.shape)}")
        leading = images.shape[:-3]
        features = self.convs(images.reshape(-1, *expected)).flatten(1)
        return self.fc(features).view(*leading, -1)


class ContextNorm(nn.Module):
    """Context normalization (Webb et al., 2020, arXiv 2012.14601, Sec. 2.2): every feature is
    standardized over the objects of one context (a segment of the sequence), then scaled and
    shifted by learned ``gamma`` and ``beta``.

    Args:
        dim: feature size.
        segments: lists of sequence positions normalized together (ESBN's "task-segmented"
            context norm, e.g. RMTS ``[[0, 1], [2, 3], [4, 5]]``); ``None``: the whole sequence.
        eps: added to the variance.
        unbiased: divide the variance by ``n - 1`` as the official ESBN code does
            (``torch.var``'s default); the paper divides by ``n``. Needs two or more positions
            per segment (one gives 0 / 0).

    Shapes: ``[B, N, dim] -> [B, N, dim]``.
    """

    def __init__(
        self, dim: int, segments: list[list[int]] | None = None, eps: float = 1e-8, unbiased: bool = False
    ) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))
        self.segments = [list(segment) for segment in segments] if segments else None
        self.eps = eps
        self.unbiased = unbiased
        if unbiased and self.segments and min(map(len, self.segments)) < 2:
            raise ValueError(self._single_position_message(self.segments))

    def _single_position_message(self, segments: list[list[int]]) -> str:
        return (
            f"ContextNorm(unbiased=True) divides the variance by n - 1, which is 0 for a context of one "
            f"position; segments {segments}: give every segment two or more positions, or use unbiased=False"
        )

    def forward(self, z: Tensor) -> Tensor:
        segments = self.segments or [list(range(z.shape[1]))]
        covered = sorted(position for segment in segments for position in segment)
        if covered != list(range(z.shape[1])):
            raise ValueError(f"context segments {segments} do not cover the {z.shape[1]} sequence positions exactly once")
        if self.unbiased and z.shape[1] == 1:
            raise ValueError(self._single_position_message(segments))
        normalized = torch.empty_like(z)
        for segment in segments:
            part = z[:, segment]
            mean = part.mean(dim=1, keepdim=True)
            variance = part.var(dim=1, keepdim=True, unbiased=self.unbiased)
            normalized[:, segment] = (part - mean) / torch.sqrt(variance + self.eps)
        return normalized * self.gamma + self.beta


class PatchEmbedding(nn.Module):
    """Vision-Transformer patch embedding (Dosovitskiy et al., 2021): a ``patch_size`` stride
    convolution, flattened to tokens; or, with ``hidden_dim``, an MLP ``Linear-ReLU-Linear`` on
    each flattened patch (``C p^2`` values; the official Compositional Attention multitask model).
    Shapes: ``[B, C, H, W] -> [B, (H / p) (W / p), embed_dim]``."""

    def __init__(
        self, image_size: int, patch_size: int, in_channels: int, embed_dim: int, hidden_dim: int | None = None
    ) -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} is not a multiple of patch_size {patch_size}")
        self.image_size = image_size
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.patch_dim = in_channels * patch_size**2
        self.num_patches = (image_size // patch_size) ** 2
        if hidden_dim is None:
            self.proj = nn.Conv2d(in_channels, embed_dim, kernel_size=patch_size, stride=patch_size)
        else:
            self.mlp = nn.Sequential(nn.Linear(self.patch_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, embed_dim))

    def forward(self, images: Tensor) -> Tensor:
        expected = (self.in_channels, self.image_size, self.image_size)
        if images.dim() != 4 or tuple(images.shape[1:]) != expected:
            raise ValueError(f"expected images [B, {expected[0]}, {expected[1]}, {expected[2]}], got {tuple(images.shape)}")
        if hasattr(self, "proj"):
            return self.proj(images).flatten(2).transpose(1, 2)
        patches = nn.functional.unfold(images, kernel_size=self.patch_size, stride=self.patch_size)
        return self.mlp(patches.transpose(1, 2))


class ObjectSequenceModel(nn.Module):
    """Base of the object-sequence networks (the relational family's, and the ESBN-task Transformer of
    the attention family): ``batch["images"] [B, N, C, H, W] -> z [B, N, embed_dim]``.

    Every object is embedded by one shared :class:`tenfold.modules.nets.ConvGlyphEncoder` (the ESBN
    convolutional encoder, 128-d in every official model), then optionally context-normalized
    (:class:`tenfold.modules.nets.ContextNorm`, per segment of the sequence: ESBN's "task-segmented" norm
    for RMTS). Subclasses turn ``z`` into logits ``[B, num_classes]`` in ``forward(batch)``.

    Args:
        num_classes: answer classes ``K`` (the datamodule's ``num_classes``).
        sequence_length: objects per trial ``N`` (the datamodule's ``sequence_length``); a batch
            with another ``N`` raises.
        embed_dim: object embedding size ``D`` (official: 128).
        context_norm: apply context normalization (the official default ``--norm_type
            contextnorm``).
        context_segments: positions normalized together (e.g. RMTS ``[[0, 1], [2, 3], [4, 5]]``);
            ``None``: the whole sequence.
        unbiased_context_norm: divide the variance by ``n - 1`` as the official code
            (``torch.var``) does; the ESBN paper divides by ``n``.
        in_channels, image_size: the images (1 x 32 x 32 glyphs).
        images_key: the batch key of the images.
    """

    def __init__(
        self,
        num_classes: int,
        sequence_length: int,
        embed_dim: int = 128,
        context_norm: bool = True,
        context_segments: list[list[int]] | None = None,
        unbiased_context_norm: bool = False,
        in_channels: int = 1,
        image_size: int = 32,
        images_key: str = "images",
    ) -> None:
        super().__init__()
        sizes = (("num_classes", num_classes), ("sequence_length", sequence_length), ("embed_dim", embed_dim))
        for name, value in sizes:
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{type(self).__name__}: {name} must be a positive int, got {value!r}")
        self.num_classes = num_classes
        self.sequence_length = sequence_length
        self.embed_dim = embed_dim
        self.images_key = images_key
        self.encoder = ConvGlyphEncoder(in_channels, image_size, out_dim=embed_dim)
        self.context_norm = (
            ContextNorm(embed_dim, context_segments, unbiased=unbiased_context_norm) if context_norm else None
        )

    def images(self, batch: dict[str, Tensor]) -> Tensor:
        """``batch[images_key]`` ``[B, N, C, H, W]``, checked against ``sequence_length``."""
        if not isinstance(batch, Mapping):
            raise TypeError(
                f"{type(self).__name__} takes the batch dict of its datamodule, e.g. "
                f"net({{{self.images_key!r}: images}}) with images [B, {self.sequence_length}, C, H, W]; "
                f"got {type(batch).__name__}"
            )
        if self.images_key not in batch:
            raise KeyError(
                f"{type(self).__name__} reads the batch's {self.images_key!r} (images_key), which this batch lacks "
                f"(it has {sorted(batch)}): build it with images_key=<the batch's key>"
            )
        images = batch[self.images_key]
        if images.dim() != 5 or images.shape[1] != self.sequence_length:
            raise ValueError(
                f"{type(self).__name__} expects {self.images_key!r} [B, {self.sequence_length}, C, H, W] "
                f"(sequence_length={self.sequence_length}), got {tuple(images.shape)}: build it with the data's "
                "sequence_length (in a config: ${data.sequence_length})"
            )
        return images

    def normalize(self, z: Tensor) -> Tensor:
        """Context normalization of ``z [B, N, D]`` (identity when disabled)."""
        return z if self.context_norm is None else self.context_norm(z)

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        """Encoded, context-normalized objects ``z [B, N, embed_dim]``."""
        return self.normalize(self.encoder(self.images(batch)))
