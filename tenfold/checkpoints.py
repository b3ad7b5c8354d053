"""Checkpoints: the callback behind ``checkpoints/last.ckpt``, the one that keeps the run's composed
config in every checkpoint, and the plugin that writes each checkpoint whole or not at all."""

from __future__ import annotations

import os
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import Callback, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

__all__ = ["AtomicCheckpointIO", "ConfigInCheckpoint", "LastCheckpoint", "is_complete_checkpoint", "replaced_atomically"]


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` that writes a local checkpoint to a hidden file beside it
    (``.<name>.partial``), flushes it to disk and renames it into place, so that a process killed
    while saving leaves the previous checkpoint whole (configured in ``configs/trainer/``).

    Lightning's own save writes a temporary file in the system's temporary directory and moves it
    to the checkpoint's path: where that directory lies on another filesystem than the run (a
    node-local ``/tmp``, runs on shared storage), the move is a copy, and a kill during it leaves
    a truncated ``last.ckpt`` in place of the previous one. Remote paths (``s3://``) keep
    Lightning's save."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None) -> None:
        if storage_options is not None or not isinstance(get_filesystem(path), LocalFileSystem):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with replaced_atomically(path) as partial, partial.open("wb") as file:
            torch.save(checkpoint, file)
            file.flush()
            os.fsync(file.fileno())


@contextmanager
def replaced_atomically(path: Path) -> Iterator[Path]:
    """The hidden file ``.<name>.partial`` beside ``path`` to write instead; when the block ends
    without an error it is renamed to ``path`` (one step: readers see the old file or the new
    one), else removed. A process killed while writing leaves ``path`` as it was."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def is_complete_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a whole ``torch.save`` archive (its zip directory, written last, is
    there): ``False`` for a file cut short by a kill during a copy, or not a checkpoint at all."""
    return zipfile.is_zipfile(path)


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
        # Lightning adds one to the loggers' step count (``_batches_that_stepped``) when it restarts
        # from a checkpoint, assuming a save within a batch, before that batch's count; at the end of
        # an epoch the count is complete, and a run resumed from this save would log every later row
        # one step late. The save holds the count less one.
        epoch_loop = trainer.fit_loop.epoch_loop
        epoch_loop._batches_that_stepped -= 1
        try:
            super().on_train_epoch_end(trainer, pl_module)
            saves_on_another_trigger = self._every_n_train_steps > 0 or self._train_time_interval is not None
            if saves_on_another_trigger and not self._should_skip_saving_checkpoint(trainer):
                self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))
        finally:
            epoch_loop._batches_that_stepped += 1


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
