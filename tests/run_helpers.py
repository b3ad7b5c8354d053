"""Callbacks that tests add to ``train.py`` runs (``+callbacks.<name>._target_=tests.run_helpers...``)."""

from __future__ import annotations

import os
import signal

import lightning as L


class SignalAtStep(L.Callback):
    """Sends ``signal_name`` (e.g. ``SIGTERM``) to this process at the end of training step ``step``:
    what a scheduler's ``scancel`` or a container's stop does to a running job. With ``rank``, only
    the process of that global rank is signalled (the others at no step)."""

    def __init__(self, step: int, signal_name: str = "SIGTERM", rank: int | None = None) -> None:
        self.step = step
        self.signum = getattr(signal, signal_name)
        self.rank = rank

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: object, batch: object, batch_idx: int) -> None:
        if trainer.global_step == self.step and self.rank in (None, trainer.global_rank):
            os.kill(os.getpid(), self.signum)
