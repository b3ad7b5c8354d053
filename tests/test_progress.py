"""The training bar's label in epoch- and step-bounded runs."""

from __future__ import annotations

import lightning as L
import pytest

from tenfold.progress import StepAwareProgressBar


@pytest.mark.parametrize(
    ("bounds", "label"),
    [
        ({"max_epochs": 5}, "Epoch 3/4"),
        ({"max_steps": 50}, "Epoch 3, step 0/50"),  # Lightning: "Epoch 3/-2"
        ({"max_epochs": -1, "max_steps": 50}, "Epoch 3, step 0/50"),
        ({"max_epochs": -1}, "Epoch 3"),
    ],
)
def test_epoch_label_reads_right_in_step_bounded_runs(bounds: dict, label: str) -> None:
    bar = StepAwareProgressBar()
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, callbacks=[bar], **bounds)
    bar.setup(trainer, L.LightningModule(), "fit")
    assert bar._get_train_description(3).rstrip() == label
