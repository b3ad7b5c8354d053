"""The datamodule of the ``samplers`` family: start states and fixed evaluation samples.

A diffusion sampler has no dataset: every trajectory starts at the fixed state ``x_0 = 0``
(as the official code of arXiv 2402.05098, ``energy_sampling/train.py``), so training batches are
zeros, and evaluation compares the sampler with ground-truth samples of the target where the
target can be sampled exactly.
"""

from __future__ import annotations

import lightning as L
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from tenfold.datamodules.samplers.energies import Energy
from tenfold.datamodules.sampling import ResumableDataLoader

__all__ = ["EnergyDataModule"]


class _RepeatedBatches(Dataset):
    """``length`` items, each a fresh copy of ``batch`` (a whole batch: ``batch_size=None``)."""

    def __init__(self, length: int, batch: Tensor | dict[str, Tensor]) -> None:
        self.length = length
        self.batch = batch

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> Tensor | dict[str, Tensor]:
        if not 0 <= index < self.length:
            raise IndexError(index)
        if isinstance(self.batch, dict):
            return {key: value.clone() for key, value in self.batch.items()}
        return self.batch.clone()


class EnergyDataModule(L.LightningDataModule):
    """Start states for training and fixed evaluation batches for a target :class:`Energy`.

    With Hydra the energy is built by the config and passed in, e.g.::

        data:
          _target_: tenfold.datamodules.samplers.datamodule.EnergyDataModule
          energy: {_target_: tenfold.datamodules.samplers.energies.GMM25}

    Batches:

    - ``train_dataloader()``: ``steps_per_epoch`` batches, each zeros ``[batch_size, dim]``
      (float32). Under DDP Lightning shards these batches across ranks (its distributed sampler),
      so each rank runs ``ceil(steps_per_epoch / world_size)`` steps of ``batch_size`` states.
    - ``val_dataloader()`` / ``test_dataloader()``: one batch, a dict with ``"x0"``: zeros
      ``[eval_batch_size, dim]``, and, when ``energy.can_sample``, ``"target_samples"``:
      ``[eval_batch_size, dim]`` exact samples drawn once in :meth:`setup` with a CPU
      ``torch.Generator`` seeded by ``seed`` (identical every epoch, on every device and rank):
      the validation samples first, then independent test samples from the same generator, so
      that a checkpoint chosen on validation is not tested on the samples it was chosen on.

    Args:
        energy: the target, already built.
        batch_size: trajectories per training step.
        steps_per_epoch: training steps per epoch.
        eval_batch_size: trajectories and target samples per evaluation.
        seed: seed of the generator of the evaluation target samples.
        dim: the target's dimension as the config declares it (models interpolate ``${data.dim}``
            to size their networks, so a data config of one's own sets it); checked against
            ``energy.dim``. None: not checked.
    """

    def __init__(
        self,
        energy: Energy,
        batch_size: int = 300,
        steps_per_epoch: int = 100,
        eval_batch_size: int = 2000,
        seed: int = 0,
        dim: int | None = None,
    ) -> None:
        super().__init__()
        if not isinstance(energy, Energy):
            raise TypeError(
                "EnergyDataModule: energy must be a tenfold.datamodules.samplers.energies.Energy (subclass it: "
                f"implement _log_reward, and _sample when it can sample), got {type(energy).__name__}"
            )
        for name, value in (
            ("batch_size", batch_size),
            ("steps_per_epoch", steps_per_epoch),
            ("eval_batch_size", eval_batch_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"EnergyDataModule: {name} must be a positive int, got {value!r}")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ValueError(f"EnergyDataModule: seed must be an int, got {seed!r}")
        if dim is not None and dim != energy.dim:
            raise ValueError(
                f"EnergyDataModule: data.dim={dim} but the target {type(energy).__name__} has "
                f"dimension {energy.dim}: set data.dim={energy.dim}"
            )
        self.save_hyperparameters(ignore=["energy"])
        self.energy = energy
        self.batch_size = batch_size
        self.steps_per_epoch = steps_per_epoch
        self.eval_batch_size = eval_batch_size
        self.seed = seed
        self.val_target_samples: Tensor | None = None
        self.test_target_samples: Tensor | None = None

    @property
    def dim(self) -> int:
        """Dimension D of the target."""
        return self.energy.dim

    def setup(self, stage: str | None = None) -> None:
        """Draw the fixed validation and test target samples ``[eval_batch_size, dim]`` (once, on CPU)."""
        if self.energy.can_sample and self.val_target_samples is None:
            generator = torch.Generator().manual_seed(self.seed)
            self.val_target_samples = self.energy.sample(self.eval_batch_size, generator=generator).detach().cpu()
            self.test_target_samples = self.energy.sample(self.eval_batch_size, generator=generator).detach().cpu()

    def train_dataloader(self) -> DataLoader:
        """``steps_per_epoch`` batches of zeros ``[batch_size, dim]``."""
        batch = torch.zeros(self.batch_size, self.dim)
        return ResumableDataLoader(_RepeatedBatches(self.steps_per_epoch, batch), batch_size=None)

    def val_dataloader(self) -> DataLoader:
        """One batch: ``{"x0": [eval_batch_size, dim], "target_samples": [eval_batch_size, dim]}``
        (``"target_samples"`` only when the energy can sample)."""
        return self._eval_dataloader("val")

    def test_dataloader(self) -> DataLoader:
        """As :meth:`val_dataloader`, with the test target samples."""
        return self._eval_dataloader("test")

    def _eval_dataloader(self, stage: str) -> DataLoader:
        if self.energy.can_sample and self.val_target_samples is None:
            self.setup()
        batch: dict[str, Tensor] = {"x0": torch.zeros(self.eval_batch_size, self.dim)}
        samples = self.val_target_samples if stage == "val" else self.test_target_samples
        if samples is not None:
            batch["target_samples"] = samples
        return DataLoader(_RepeatedBatches(1, batch), batch_size=None)
