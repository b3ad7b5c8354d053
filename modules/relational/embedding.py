"""What every network of the relational family shares: the per-object image encoder, context
normalization, the check of the batch, and the LSTM initialization of the ESBN code."""

from __future__ import annotations

from torch import Tensor, nn

from modules.nets import ContextNorm, ConvGlyphEncoder

__all__ = ["ObjectSequenceModel", "init_lstm_"]


class ObjectSequenceModel(nn.Module):
    """Base of the relational networks: ``batch["images"] [B, N, C, H, W] -> z [B, N, embed_dim]``.

    Every object is embedded by one shared :class:`modules.nets.ConvGlyphEncoder` (the ESBN
    convolutional encoder, 128-d in every official model), then optionally context-normalized
    (:class:`modules.nets.ContextNorm`, per segment of the sequence: ESBN's "task-segmented" norm
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
        images = batch[self.images_key]
        if images.dim() != 5 or images.shape[1] != self.sequence_length:
            raise ValueError(
                f"{type(self).__name__} expects {self.images_key!r} [B, {self.sequence_length}, C, H, W] "
                f"(sequence_length={self.sequence_length}), got {tuple(images.shape)}: set sequence_length to the "
                "data's (${data.sequence_length})"
            )
        return images

    def normalize(self, z: Tensor) -> Tensor:
        """Context normalization of ``z [B, N, D]`` (identity when disabled)."""
        return z if self.context_norm is None else self.context_norm(z)

    def embed(self, batch: dict[str, Tensor]) -> Tensor:
        """Encoded, context-normalized objects ``z [B, N, embed_dim]``."""
        return self.normalize(self.encoder(self.images(batch)))


def init_lstm_(weight_ih: Tensor, weight_hh: Tensor, biases: list[Tensor], hidden_size: int) -> None:
    """The ESBN code's LSTM initialization (emergent_symbols, ``models/LSTM.py`` and
    ``models/ESBN.py``): zero biases; Xavier-normal input and forget gates and output gate (rows
    ``[0, 2H)`` and ``[3H, 4H)``, followed by a sigmoid), Xavier-normal with gain 5/3 for the cell
    candidate (rows ``[2H, 3H)``, followed by tanh), for both the input and the recurrent weights."""
    for weight in (weight_ih, weight_hh):
        nn.init.xavier_normal_(weight.data[: 2 * hidden_size])
        nn.init.xavier_normal_(weight.data[3 * hidden_size :])
        nn.init.xavier_normal_(weight.data[2 * hidden_size : 3 * hidden_size], gain=5.0 / 3.0)
    for bias in biases:
        nn.init.zeros_(bias)
