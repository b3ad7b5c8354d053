"""Compositional Attention (Mittal et al., 2022, arXiv 2110.09419): the layer, the networks of
the paper's tasks and their LightningModules."""

from modules.attention.compositional import CompositionalAttention, merge_masks
from modules.attention.module import SupervisedModule
from modules.attention.nets import ContextualRetrievalNet, ObjectSequenceNet, VisionTransformerNet

__all__ = [
    "CompositionalAttention",
    "ContextualRetrievalNet",
    "ObjectSequenceNet",
    "SupervisedModule",
    "VisionTransformerNet",
    "merge_masks",
]
