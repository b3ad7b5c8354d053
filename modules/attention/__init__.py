"""Compositional Attention (Mittal et al., 2022, arXiv 2110.09419)."""

from modules.attention.compositional import CompositionalAttention, merge_masks

__all__ = ["CompositionalAttention", "merge_masks"]
