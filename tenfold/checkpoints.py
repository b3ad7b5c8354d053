"""The checkpoint callback behind ``checkpoints/last.ckpt``."""

from __future__ import annotations

from lightning.pytorch.callbacks import ModelCheckpoint

__all__ = ["LastCheckpoint"]


class LastCheckpoint(ModelCheckpoint):
    """A ``ModelCheckpoint`` that keeps the newest state (configured in
    ``configs/callbacks/last_checkpoint.yaml``).

    Lightning keys a callback's checkpointed state by its class name and trigger settings; as its
    own class, this callback's key never collides with the run's ``ModelCheckpoint``, whatever
    that one monitors (two plain ``ModelCheckpoint`` callbacks without a monitor and with the same
    ``mode`` make the Trainer refuse to start).
    """
