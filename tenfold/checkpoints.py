"""The checkpoint callback behind ``checkpoints/last.ckpt``."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = ["LastCheckpoint"]


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
