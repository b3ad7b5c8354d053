"""CoRelNet and its baselines on the relational psychophysics tasks (Kerg et al., 2022,
arXiv 2206.05056; tasks of Webb et al., 2021, arXiv 2012.14601).

Every network maps a batch of the relational datamodule (``batch["images"] [B, N, 1, 32, 32]``)
to logits ``[B, num_classes]`` and trains with :class:`modules.attention.SupervisedModule`. The
Transformer baseline is :class:`modules.attention.ObjectSequenceNet`.
"""

from modules.relational.baselines import LSTMNet, PrediNet, RelationNet, append_positions
from modules.relational.corelnet import CoRelNet, QueryAttentionReadout, normalize_similarities
from modules.relational.embedding import ObjectSequenceModel, init_lstm_
from modules.relational.esbn import ESBN, ESBNRollout, esbn_memory_read

__all__ = [
    "CoRelNet",
    "ESBN",
    "ESBNRollout",
    "LSTMNet",
    "ObjectSequenceModel",
    "PrediNet",
    "QueryAttentionReadout",
    "RelationNet",
    "append_positions",
    "esbn_memory_read",
    "init_lstm_",
    "normalize_similarities",
]
