"""ValidateAtMaxSteps: the last step is validated also between two scheduled validations."""

from __future__ import annotations

import lightning as L
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel

from tenfold.callbacks import ValidateAtMaxSteps


class ValidationSteps(L.Callback):
    def __init__(self) -> None:
        self.steps: list[int] = []

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.steps.append(trainer.global_step)


@pytest.mark.parametrize(
    ("max_steps", "accumulate", "with_callback", "expected"),
    [
        (6, 1, False, [4]),  # epochs of 4 batches: Lightning validates at step 4 only
        (6, 1, True, [4, 6]),
        (8, 1, True, [4, 8]),  # the last step ends an epoch: validated once
        (3, 2, True, [2, 3]),  # 2 batches per step: step 3 is batch 6, in the second epoch
    ],
)
def test_the_last_step_is_validated(max_steps: int, accumulate: int, with_callback: bool, expected: list[int]) -> None:
    torch.set_num_threads(1)
    recorder = ValidationSteps()
    callbacks = [recorder, ValidateAtMaxSteps()] if with_callback else [recorder]
    trainer = L.Trainer(
        max_steps=max_steps, limit_train_batches=4, limit_val_batches=1, accumulate_grad_batches=accumulate,
        callbacks=callbacks, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu",
    )
    trainer.fit(BoringModel())
    assert recorder.steps == expected
    assert trainer.global_step == max_steps
