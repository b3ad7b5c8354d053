"""The graph convolutional network baseline of CoRelNet (Kerg et al., 2022, arXiv 2206.05056;
official code giancarlok/relationaltasks, ``cognitive_tests/models/GCN.py``), a two-layer GCN
(Kipf & Welling, 2017, arXiv 1609.02907) over the objects of a trial as the nodes of a complete
graph."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch_geometric.nn import GCNConv

from tenfold.modules.nets import ObjectSequenceModel

__all__ = ["GCNNet", "complete_graph_edges"]


def complete_graph_edges(num_graphs: int, num_nodes: int, device: torch.device | None = None) -> Tensor:
    """The edges of ``num_graphs`` disjoint complete graphs of ``num_nodes`` nodes each, self-loops
    included (the all-ones adjacency of the official code), in PyG's batched node numbering
    (graph ``g`` owns nodes ``g N, ..., g N + N - 1``): ``edge_index [2, num_graphs N^2]``, long."""
    nodes = torch.arange(num_nodes, device=device)
    sources = nodes.repeat_interleave(num_nodes)
    targets = nodes.repeat(num_nodes)
    offsets = (torch.arange(num_graphs, device=device) * num_nodes).repeat_interleave(num_nodes * num_nodes)
    return torch.stack([sources.repeat(num_graphs) + offsets, targets.repeat(num_graphs) + offsets])


class GCNNet(ObjectSequenceModel):
    """A GCN over the objects: ``batch["images"] [B, N, 1, 32, 32] -> logits [B, num_classes]``.

    The ``N`` embedded objects (:class:`~tenfold.modules.nets.ObjectSequenceModel`: ESBN
    encoder, context norm) are the nodes of a complete graph with self-loops. Two graph
    convolutions ``H' = A H W + b``: ``D -> hidden_dim``, ReLU, dropout, ``hidden_dim ->
    num_classes``; the logits are the nodes' mean.

    As the official ``GCN.py``: hidden 128, dropout 0.5 between the layers, adjacency all ones
    and not normalized (``normalize=False``: each node sums all ``N`` nodes; ``normalize=True``
    is Kipf & Welling's ``D^-1/2 (A + I) D^-1/2``, here the mean over the ``N`` nodes), weights
    and biases drawn from ``U(-1/sqrt(out), 1/sqrt(out))``. On a complete graph every node's
    output is the same, so the official readout (node 0) equals the mean taken here, and the
    logits do not depend on the order of the objects.

    Consequence (measured, and tested): with context norm over the objects (the official
    default) the nodes' sum is ``N beta`` for every input (each feature is centred over the
    sequence, or over each segment, before the norm's shift ``beta``), so both layers see the same
    input for every trial and the logits are a constant: the official GCN baseline is at chance
    on every ESBN task by construction.
    ``context_norm=False`` makes it depend on the objects' sum (a DeepSets-style bag of objects),
    which still does not learn same/different within 300 steps here. Deviations: the official second layer
    has ``N`` outputs (``task_gen.seq_len``, of which the first ``num_classes`` are the answers);
    here it has ``num_classes``. Its ``log_softmax`` output is left out: cross-entropy gives the
    same loss on logits. The official file also defines an unused ``final`` MLP, not built here.

    Args:
        hidden_dim: width of the first graph convolution (official 128).
        dropout: dropout probability between the layers (official 0.5).
        normalize: Kipf & Welling's symmetric normalization (``False``: the official sum).
        Others: see :class:`~tenfold.modules.nets.ObjectSequenceModel`.
    """

    def __init__(
        self,
        num_classes: int,
        sequence_length: int,
        embed_dim: int = 128,
        hidden_dim: int = 128,
        dropout: float = 0.5,
        normalize: bool = False,
        context_norm: bool = True,
        context_segments: list[list[int]] | None = None,
        unbiased_context_norm: bool = False,
        in_channels: int = 1,
        image_size: int = 32,
        images_key: str = "images",
    ) -> None:
        super().__init__(
            num_classes, sequence_length, embed_dim, context_norm, context_segments, unbiased_context_norm,
            in_channels, image_size, images_key,
        )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"GCNNet: dropout must be in [0, 1), got {dropout!r}")
        self.conv1 = GCNConv(embed_dim, hidden_dim, normalize=normalize, add_self_loops=normalize)
        self.conv2 = GCNConv(hidden_dim, num_classes, normalize=normalize, add_self_loops=normalize)
        self.dropout = nn.Dropout(dropout)
        for conv in (self.conv1, self.conv2):
            bound = 1.0 / math.sqrt(conv.out_channels)
            nn.init.uniform_(conv.lin.weight, -bound, bound)
            nn.init.uniform_(conv.bias, -bound, bound)

    def node_outputs(self, z: Tensor) -> Tensor:
        """The second layer's output per node: ``z [B, N, D] -> [B, N, num_classes]``."""
        batch_size, num_nodes, _ = z.shape
        edges = complete_graph_edges(batch_size, num_nodes, z.device)
        hidden = self.dropout(torch.relu(self.conv1(z.reshape(batch_size * num_nodes, -1), edges)))
        return self.conv2(hidden, edges).view(batch_size, num_nodes, -1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.node_outputs(self.embed(batch)).mean(dim=1)
