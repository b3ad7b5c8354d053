"""Plain torch layers shared by several families (no LightningModule, no family imports)."""

from tenfold.modules.nets.encoders import ContextNorm, ConvGlyphEncoder, ObjectSequenceModel, PatchEmbedding
from tenfold.modules.nets.time_mlp import FourierTimeEmbedding, TimeConditionedMLP, TimeMLP, mlp
from tenfold.modules.nets.transformer import (
    LearnedPositionalEncoding,
    SinusoidalPositionalEncoding,
    TransformerDecoder,
    TransformerDecoderLayer,
    TransformerEncoder,
    TransformerEncoderLayer,
    attention_output,
    build_attention,
    causal_mask,
)

__all__ = [
    "ContextNorm",
    "ConvGlyphEncoder",
    "PatchEmbedding",
    "FourierTimeEmbedding",
    "LearnedPositionalEncoding",
    "ObjectSequenceModel",
    "SinusoidalPositionalEncoding",
    "TimeConditionedMLP",
    "TimeMLP",
    "TransformerDecoder",
    "TransformerDecoderLayer",
    "TransformerEncoder",
    "TransformerEncoderLayer",
    "attention_output",
    "build_attention",
    "causal_mask",
    "mlp",
]
