"""Validation at the last training step, wherever the validation schedule puts it."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

__all__ = ["ValidateAtMaxSteps"]


class ValidateAtMaxSteps(Callback):
    """Runs a validation after the optimizer step that reaches ``trainer.max_steps``.

    Lightning validates on its schedule (epoch ends, ``val_check_interval``) and stops at
    ``max_steps`` without validating when the last step falls between two validations, so a
    checkpoint callback that monitors a validation metric never sees the final weights, and the
    test reads an earlier checkpoint. fairseq, whose recipes the language-model experiments
    follow, validates and saves when ``--max-update`` is reached. This callback asks Lightning to
    stop at that step (``trainer.should_stop``), which makes it validate first; at a step where
    Lightning validates anyway, there is one validation. It needs nothing from the module.
    """

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            trainer.should_stop = True
