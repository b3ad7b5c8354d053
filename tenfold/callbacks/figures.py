"""Writing a callback's figure: a PNG in the run's plot folder, and the same figure in the loggers
that show images (TensorBoard, Weights & Biases)."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from matplotlib.figure import Figure

__all__ = ["save_and_log_figure"]


def save_and_log_figure(trainer: L.Trainer, fig: Figure, path: Path, tag: str) -> None:
    """Saves ``fig`` as the PNG ``path`` (creating its folder) and logs it under ``tag`` at the
    trainer's global step: TensorBoard's ``add_figure`` and W&B's ``log_image`` (of the PNG). Call
    on global rank 0 only; the figure stays open for the caller."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(tag, fig, global_step=trainer.global_step, close=False)
        elif isinstance(logger, WandbLogger):
            logger.log_image(key=tag, images=[str(path)], step=trainer.global_step)
