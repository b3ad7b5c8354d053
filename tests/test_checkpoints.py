"""tenfold.checkpoints.LastCheckpoint: last.ckpt holds the newest state whatever the trigger."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.demos.boring_classes import BoringModel

from tenfold.checkpoints import LastCheckpoint


# 3 steps per epoch: with every_n_train_steps=3 both triggers fire at steps 3 and 6, which are
# written once
@pytest.mark.parametrize(("every_n_train_steps", "saved_steps"), [(None, [3, 6]), (4, [3, 4, 6]), (3, [3, 6])])
def test_last_checkpoint_saves_every_epoch_end_also_with_a_step_trigger(
    tmp_path: Path, every_n_train_steps: int | None, saved_steps: list[int]
) -> None:
    # Lightning's ModelCheckpoint with every_n_train_steps=4 alone would end 6 steps with step 4
    torch.set_num_threads(1)
    checkpoint = LastCheckpoint(dirpath=tmp_path, filename="last", every_n_train_steps=every_n_train_steps)
    saved: list[int] = []
    save = checkpoint._save_checkpoint

    def recording_save(trainer: L.Trainer, path: str) -> None:
        saved.append(trainer.global_step)
        save(trainer, path)

    checkpoint._save_checkpoint = recording_save
    trainer = L.Trainer(
        max_epochs=2, limit_train_batches=3, limit_val_batches=0, callbacks=[checkpoint], logger=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )
    trainer.fit(BoringModel())
    assert saved == saved_steps
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 6
