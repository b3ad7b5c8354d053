"""The progress bar of ``train.py`` runs."""

from __future__ import annotations

from lightning.pytorch.callbacks import RichProgressBar

__all__ = ["StepAwareProgressBar"]


class StepAwareProgressBar(RichProgressBar):
    """Lightning's rich progress bar, whose epoch label also reads right in step-bounded runs.

    Lightning labels the training bar ``Epoch e/max_epochs - 1``, which reads ``Epoch 3/-2`` in
    runs bounded by ``trainer.max_steps`` with ``max_epochs=-1`` (the relational experiments, the
    sweeps of any family). There the label is ``Epoch e, step s/max_steps`` (the step when the
    epoch started); runs bounded by epochs keep Lightning's label.
    """

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        if trainer.max_epochs is not None and trainer.max_epochs >= 0:
            return super()._get_train_description(current_epoch)
        description = f"Epoch {current_epoch}"
        if trainer.max_steps >= 0:
            description += f", step {trainer.global_step}/{trainer.max_steps}"
        return f"{description:{len(self.validation_description)}}"
