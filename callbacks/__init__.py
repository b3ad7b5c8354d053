"""Lightning callbacks: generic, each relying on a small documented protocol of the module."""

from callbacks.attention_maps import AttentionMaps
from callbacks.final_validation import ValidateAtMaxSteps
from callbacks.local_search import LocalSearchReplay, PrioritizedReplayBuffer, mala
from callbacks.sample_plots import SamplePlots
from callbacks.step_seed import StepSeed

__all__ = [
    "AttentionMaps", "LocalSearchReplay", "PrioritizedReplayBuffer", "SamplePlots", "StepSeed", "ValidateAtMaxSteps", "mala",
]
