"""Targets and datamodule of the ``samplers`` family (diffusion samplers, arXiv 2402.05098)."""

from tenfold.datamodules.samplers.datamodule import EnergyDataModule
from tenfold.datamodules.samplers.energies import LGCP, GMM25, GMM40, Energy, Funnel, ManyWell

__all__ = ["Energy", "GMM25", "GMM40", "Funnel", "ManyWell", "LGCP", "EnergyDataModule"]
