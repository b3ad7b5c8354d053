"""Checkpoint callbacks: the one behind ``checkpoints/last.ckpt``, and the one that keeps the run's
composed config in every checkpoint."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

__all__ = ["ConfigInCheckpoint", "LastCheckpoint"]


class LastCheckpoint(ModelCheckpoint):
    """A ``ModelCheckpoint`` that keeps the newest state (configured in
    ``configs/callbacks/last_checkpoint.yaml``): at the end of every training epoch, and also
    every ``every_n_train_steps`` steps or ``train_time_interval`` when set.

    Lightning's ``ModelCheckpoint`` saves on one trigger only: with ``every_n_train_steps`` or
    ``train_time_interval`` it stops saving at epoch ends, which would leave ``last.ckpt`` up to
    ``N - 1`` steps behind a finished epoch or run; this callback adds the epoch-end save.

    Lightning keys a callback's checkpointed state by its class name and trigger settings; as its
    own class, this callback's key never collides with the run's ``ModelCheckpoint``, whatever
    that one monitors (two plain ``ModelCheckpoint`` callbacks without a monitor and with the same
    ``mode`` make the Trainer refuse to start).
    """

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        saves_on_another_trigger = self._every_n_train_steps > 0 or self._train_time_interval is not None
        if saves_on_another_trigger and not self._should_skip_saving_checkpoint(trainer):
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))


class ConfigInCheckpoint(Callback):
    """Keeps sections of the run's composed config (plain, resolved values) in every checkpoint, so
    that evaluating the checkpoint later can compare them with the evaluation's config.

    A model's saved hyperparameters leave out what it is given as objects (the network of an
    attention or relational model, built from ``model.net``), and evaluating with another
    ``model.net.*`` setting that keeps the shapes loads the weights without complaint. ``train.py``
    adds this callback to every training run; :meth:`saved` reads the config back.

    Args:
        config: e.g. ``{"model": {...}, "data": {...}}``, plain Python values only (the checkpoint
            is read with ``torch.load(weights_only=True)``).
    """

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config

    def state_dict(self) -> dict[str, Any]:
        return {"config": self.config}

    @classmethod
    def saved(cls, checkpoint: dict[str, Any]) -> dict[str, Any] | None:
        """The config this callback put in ``checkpoint`` (a loaded checkpoint dict), else None."""
        state = (checkpoint.get("callbacks") or {}).get(cls.__qualname__)
        return state.get("config") if isinstance(state, dict) else None
