"""Datasets and datamodules of the ``attention`` family (Compositional Attention, 2110.09419)."""

from tenfold.datamodules.attention.contextual_retrieval import (
    COEFFICIENTS,
    ContextualRetrievalDataModule,
    generate_contextual_retrieval,
    split_task_combinations,
)
from tenfold.datamodules.attention.multitask_images import MultitaskImageDataModule
from tenfold.datamodules.attention.scan import (
    SCANDataModule,
    SCANDataset,
    SCANVocabulary,
    generate_scan_pairs,
    interpret_scan_command,
    read_scan_file,
    read_scan_split,
    scan_split,
)
from tenfold.datamodules.attention.sort_of_clevr import SortOfCLEVRDataModule, generate_sort_of_clevr
from tenfold.datamodules.attention.triangles import TriangleDataModule, generate_triangles
from tenfold.datamodules.attention.wikitext import WikiTextDataModule

__all__ = [
    "COEFFICIENTS",
    "ContextualRetrievalDataModule",
    "MultitaskImageDataModule",
    "SCANDataModule",
    "SCANDataset",
    "SCANVocabulary",
    "SortOfCLEVRDataModule",
    "TriangleDataModule",
    "WikiTextDataModule",
    "generate_contextual_retrieval",
    "generate_scan_pairs",
    "generate_sort_of_clevr",
    "generate_triangles",
    "interpret_scan_command",
    "read_scan_file",
    "read_scan_split",
    "scan_split",
    "split_task_combinations",
]
