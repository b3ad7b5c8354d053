"""Heatmaps of what a model attends to, saved during validation and test.

Works with any LightningModule that follows this protocol (nothing is imported from the module):

- ``pl_module.attention_maps(batch) -> dict[str, Tensor]``: named 2-D maps ``[rows, columns]``
  (e.g. attention weights ``[L_q, L_k]`` of the first example, or the retrieval selection of
  compositional attention ``[L, S * R]``), computed under ``torch.no_grad()`` from a batch of the
  validation (or test) loader. Modules without the method are skipped with one warning.

The maps of the first batch of the first loader are drawn side by side, one panel each, with a
colour bar; figures are built without pyplot (no global backend).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_warn
from matplotlib.figure import Figure
from torch import Tensor

from tenfold.callbacks.figures import save_and_log_figure

__all__ = ["AttentionMaps"]


class AttentionMaps(L.Callback):
    """Saves a PNG of ``pl_module.attention_maps(batch)`` at the validations of every
    ``every_n_epochs``-th training epoch and at the end of testing.

    Files go to ``<trainer.log_dir or trainer.default_root_dir>/plots/`` named
    ``attention_{stage}_epoch{E:04d}_step{S:08d}.png`` (``trainer.log_dir`` is the logger's folder:
    ``<run>/csv/`` for the CSV logger, ``<run>/tensorboard/`` for TensorBoard); TensorBoard and
    W&B loggers also get the figure under ``"attention/{stage}"``. Only global rank 0 draws. No
    state to checkpoint.

    Args:
        every_n_epochs: plot after the validations of epochs with ``(epoch + 1) % every_n_epochs
            == 0`` (counted in training epochs, as ``SamplePlots``: with
            ``check_val_every_n_epoch=2`` and ``every_n_epochs=2``, every validation plots).
    """

    def __init__(self, every_n_epochs: int = 1) -> None:
        if every_n_epochs < 1:
            raise ValueError(f"every_n_epochs must be at least 1, got {every_n_epochs}")
        self.every_n_epochs = every_n_epochs
        self._batch: Any = None
        self._warned = False

    def _keep_first_batch(self, batch: Any, batch_idx: int, dataloader_idx: int) -> None:
        if batch_idx == 0 and dataloader_idx == 0:
            self._batch = batch

    def on_validation_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._keep_first_batch(batch, batch_idx, dataloader_idx)

    def on_test_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._keep_first_batch(batch, batch_idx, dataloader_idx)

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs:
            return
        self._plot(trainer, pl_module, "val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._plot(trainer, pl_module, "test")

    def _plot(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> Path | None:
        root = trainer.log_dir or trainer.default_root_dir
        batch, self._batch = self._batch, None
        if batch is None or not trainer.is_global_zero:
            return None
        if not hasattr(pl_module, "attention_maps"):
            if not self._warned:
                rank_zero_warn(f"AttentionMaps: {type(pl_module).__name__} has no attention_maps(batch); no plots")
                self._warned = True
            return None
        with torch.no_grad():
            maps = pl_module.attention_maps(batch)
        if not maps:
            return None
        fig = self.make_figure({name: value.detach().float().cpu() for name, value in maps.items()})
        path = Path(root) / "plots" / f"attention_{stage}_epoch{trainer.current_epoch:04d}_step{trainer.global_step:08d}.png"
        save_and_log_figure(trainer, fig, path, f"attention/{stage}")
        fig.clear()
        return path

    @staticmethod
    def make_figure(maps: dict[str, Tensor]) -> Figure:
        """One heatmap panel per map (``[rows, columns]``), titled by its name."""
        for name, value in maps.items():
            if value.dim() != 2:
                raise ValueError(f"attention map {name!r} must be 2-D [rows, columns], got shape {tuple(value.shape)}")
        fig = Figure(figsize=(4.2 * len(maps), 4.0), layout="constrained")
        axes = fig.subplots(1, len(maps), squeeze=False)[0]
        for ax, (name, value) in zip(axes, maps.items()):
            image = ax.imshow(value.numpy(), cmap="viridis", aspect="auto", interpolation="nearest")
            ax.set_title(name, fontsize=9)
            fig.colorbar(image, ax=ax, shrink=0.8)
        return fig
