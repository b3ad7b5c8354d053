"""Compositional Attention (Mittal et al., 2022, arXiv 2110.09419): the layer, the networks of
the paper's tasks and their LightningModules."""

from tenfold.modules.attention.compositional import CompositionalAttention, merge_masks
from tenfold.modules.attention.language_model import LanguageModelModule, TransformerLM, inverse_sqrt_schedule, masked_token_nll
from tenfold.modules.attention.nets import ContextualRetrievalNet, ObjectSequenceNet, VisionTransformerNet
from tenfold.modules.attention.seq2seq import Seq2SeqModule, Seq2SeqTransformer, sequence_exact_match

__all__ = [
    "CompositionalAttention",
    "ContextualRetrievalNet",
    "LanguageModelModule",
    "ObjectSequenceNet",
    "Seq2SeqModule",
    "Seq2SeqTransformer",
    "TransformerLM",
    "VisionTransformerNet",
    "inverse_sqrt_schedule",
    "masked_token_nll",
    "merge_masks",
    "sequence_exact_match",
]
