"""Lightning callbacks: generic, each relying on a small documented protocol of the module."""

from tenfold.callbacks.attention_maps import AttentionMaps
from tenfold.callbacks.final_validation import ValidateAtMaxSteps
from tenfold.callbacks.local_search import LocalSearchReplay, PrioritizedReplayBuffer, mala
from tenfold.callbacks.sample_plots import SamplePlots
from tenfold.callbacks.step_seed import StepSeed

__all__ = [
    "AttentionMaps", "LocalSearchReplay", "PrioritizedReplayBuffer", "SamplePlots", "StepSeed", "ValidateAtMaxSteps", "mala",
]
