"""Diffusion samplers for unnormalized densities (Sendera et al., 2024, arXiv 2402.05098)."""

from tenfold.modules.samplers.module import LOSSES, DiffusionSampler, Trajectories
from tenfold.modules.samplers.nets import SamplerNets
from tenfold.modules.samplers.reference import BrownianReference, OUReference

__all__ = ["LOSSES", "BrownianReference", "DiffusionSampler", "OUReference", "SamplerNets", "Trajectories"]
