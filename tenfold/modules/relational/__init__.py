"""CoRelNet and its baselines on the relational psychophysics tasks (Kerg et al., 2022,
arXiv 2206.05056; tasks of Webb et al., 2021, arXiv 2012.14601).

Every network maps a batch of the relational datamodule (``batch["images"] [B, N, 1, 32, 32]``)
to logits ``[B, num_classes]`` and trains with :class:`tenfold.modules.supervised.SupervisedModule`. The
Transformer baseline is :class:`tenfold.modules.attention.ObjectSequenceNet`. On Relational Games
(``batch["image"] [B, 3, 36, 36]``) :class:`GridObjectNet` runs any of them on the 9 grid cells and
:class:`RelationalGamesModule` reports each held-out test set apart.
"""

from tenfold.modules.relational.baselines import LSTMNet, PrediNet, RelationNet, append_positions
from tenfold.modules.relational.corelnet import CoRelNet, QueryAttentionReadout, normalize_similarities
from tenfold.modules.nets import ObjectSequenceModel
from tenfold.modules.relational.embedding import init_lstm_
from tenfold.modules.relational.esbn import ESBN, ESBNRollout, esbn_memory_read
from tenfold.modules.relational.gcn import GCNNet, complete_graph_edges
from tenfold.modules.relational.memory_baselines import (
    MetaLossSupervisedModule,
    MNMNet,
    MNMRollout,
    NTMAddressing,
    NTMNet,
    NTMRollout,
    mnm_memory_forward,
    mnm_memory_update,
    ntm_address,
    ntm_content_weights,
    ntm_read,
    ntm_write,
)
from tenfold.modules.relational.games import GridObjectNet, GridObjects, RelationalGamesModule

__all__ = [
    "CoRelNet",
    "ESBN",
    "ESBNRollout",
    "GCNNet",
    "GridObjectNet",
    "GridObjects",
    "LSTMNet",
    "MNMNet",
    "MNMRollout",
    "MetaLossSupervisedModule",
    "NTMAddressing",
    "NTMNet",
    "NTMRollout",
    "ObjectSequenceModel",
    "PrediNet",
    "QueryAttentionReadout",
    "RelationNet",
    "RelationalGamesModule",
    "append_positions",
    "complete_graph_edges",
    "esbn_memory_read",
    "init_lstm_",
    "mnm_memory_forward",
    "mnm_memory_update",
    "normalize_similarities",
    "ntm_address",
    "ntm_content_weights",
    "ntm_read",
    "ntm_write",
]
