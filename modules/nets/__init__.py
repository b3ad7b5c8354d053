"""Plain torch layers shared by several families (no LightningModule, no family imports)."""

from modules.nets.time_mlp import FourierTimeEmbedding, TimeConditionedMLP, TimeMLP, mlp

__all__ = ["FourierTimeEmbedding", "TimeConditionedMLP", "TimeMLP", "mlp"]
