"""Checkpoints: the callback behind ``checkpoints/last.ckpt``, the one that keeps the run's composed
config in every checkpoint, the one that saves and requeues a SLURM job when it is warned, and the
plugin that writes each checkpoint whole or not at all."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import time
import uuid
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch
from fsspec.implementations.local import LocalFileSystem
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.callbacks import Callback, Checkpoint, ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from omegaconf import DictConfig, OmegaConf

__all__ = [
    "AtomicCheckpointIO",
    "ConfigInCheckpoint",
    "LastCheckpoint",
    "PreemptionCheckpoint",
    "is_complete_checkpoint",
    "replaced_atomically",
]

log = logging.getLogger(__name__)


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
    """A hidden file ``.<name>.<pid>-<random>.partial`` beside ``path`` to write instead; when the block ends
    without an error it is renamed to ``path`` (one step: readers see the old file or the new
    one), else removed. A process killed while writing leaves ``path`` as it was."""
    # a name of its own per writer: processes writing the same file (a sweep's summary from jobs
    # ending at once) must not rename each other's partial file
    partial = path.with_name(f".{path.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.partial")
    try:
        yield partial
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def is_complete_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` is a whole ``torch.save`` archive (its zip directory, written last, is
    there): ``False`` for a file cut short by a kill during a copy, or not a checkpoint at all."""
    return zipfile.is_zipfile(path)


def validation_follows(trainer: L.Trainer) -> bool:
    """Whether the training batch that just ended is followed by a validation (the last batch of an
    epoch that validates, or a ``val_check_interval`` batch). Lightning resumes a checkpoint saved
    at that batch's end past the validation, which the continuation then never runs."""
    return bool(trainer.fit_loop.epoch_loop._should_check_val_fx(trainer.fit_loop._data_fetcher))


class LastCheckpoint(ModelCheckpoint):
    """A ``ModelCheckpoint`` that keeps the newest state (configured in
    ``configs/callbacks/last_checkpoint.yaml``): at the end of every training epoch, and also
    every ``every_n_train_steps`` steps or ``train_time_interval`` when set.

    Lightning's ``ModelCheckpoint`` saves on one trigger only: with ``every_n_train_steps`` or
    ``train_time_interval`` it stops saving at epoch ends, which would leave ``last.ckpt`` up to
    ``N - 1`` steps behind a finished epoch or run; this callback adds the epoch-end save.

    It also makes a resumed run log at the steps the uninterrupted run would have used, from any
    checkpoint saved while it was in the run (also a monitored ``ModelCheckpoint``'s). Lightning
    (2.6) restores the loggers' step count (``_batches_that_stepped``) with one added on some
    restarts and not on others: from a save at a training epoch's end, a run stopped there by
    ``max_steps`` and resumed to a later ``max_steps`` logged every row one step late, and
    resumed to a later ``max_epochs`` it did not. This callback writes the count the continuation
    must start from into its checkpointed state and sets it when training restarts (at the
    first epoch start or, resumed within an epoch, the first batch start).

    A step or time trigger that falls on a batch after which the run validates (the last batch of
    an epoch that validates, or a ``val_check_interval`` batch) does not save there: Lightning
    resumes from such a save past the validation, which the continuation then never runs (another
    best checkpoint, another test figure). The save comes after the validation instead: at the
    epoch's end, or at the end of a validation within the epoch (at the next batch's end when that
    validation had no batches).

    Lightning keys a callback's checkpointed state by its class name and trigger settings; as its
    own class, this callback's key never collides with the run's ``ModelCheckpoint``, whatever
    that one monitors (two plain ``ModelCheckpoint`` callbacks without a monitor and with the same
    ``mode`` make the Trainer refuse to start). Resumed with other trigger settings, its state is
    not restored, and the step count is Lightning's.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._step_count_at_batch_start: int | None = None
        self._restored_step_count: int | None = None
        self._save_after_validation = False

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._save_after_validation:
            # the validation it waited for had no batches (its end hooks never ran): save now
            self._save_after_validation = False
            self._save_newest(trainer)
        epoch_loop = trainer.fit_loop.epoch_loop
        if not validation_follows(trainer):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        # a validation follows this batch: a save now would be resumed past it. At an epoch's last
        # batch the epoch-end save follows the validation; within the epoch, save after it when due
        if not epoch_loop.batch_progress.is_last_batch:
            step_due = self._every_n_train_steps > 0 and trainer.global_step % self._every_n_train_steps == 0
            interval = self._train_time_interval
            time_due = (
                interval is not None
                and self._last_time_checked is not None
                and time.monotonic() - self._last_time_checked >= interval.total_seconds()
            )
            self._save_after_validation = bool(trainer.strategy.broadcast(step_due or time_due))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if self._save_after_validation and not trainer.sanity_checking:
            self._save_after_validation = False
            if self._train_time_interval is not None:
                self._last_time_checked = time.monotonic()
            self._save_newest(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save_after_validation = False  # the epoch-end save below comes after any validation
        super().on_train_epoch_end(trainer, pl_module)
        if self._every_n_train_steps > 0 or self._train_time_interval is not None:
            self._save_newest(trainer)

    def _save_newest(self, trainer: L.Trainer) -> None:
        """Saves the current state, unless it was saved at this step already (or must not be)."""
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_topk_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        # a run resumed within an epoch starts here: Lightning does not call on_train_epoch_start for
        # the epoch it continues
        self._set_restored_step_count(trainer)
        self._step_count_at_batch_start = trainer.fit_loop.epoch_loop._batches_that_stepped

    def _continuation_step_count(self, trainer: L.Trainer) -> int:
        """The loggers' step count at which a run resumed from a checkpoint saved now continues:
        Lightning counts a batch that steps the optimizers after its validation, so a save after
        the batch's training step and before that count (``on_train_batch_end``, validation
        within or at the end of the epoch) adds it; at an epoch's end it is counted already."""
        epoch_loop = trainer.fit_loop.epoch_loop
        count = epoch_loop._batches_that_stepped
        batches = epoch_loop.batch_progress.total
        count_pending = (
            count == self._step_count_at_batch_start
            and batches.ready == batches.started == batches.processed
            and not epoch_loop._should_accumulate()
        )
        return count + 1 if count_pending else count

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("callbacks", {}).get(self.state_key)
        if state is not None:
            state["continuation_step_count"] = self._continuation_step_count(trainer)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored_step_count = state_dict.get("continuation_step_count")
        super().load_state_dict(state_dict)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._set_restored_step_count(trainer)

    def _set_restored_step_count(self, trainer: L.Trainer) -> None:
        """Sets the restored count once, at the first training hook of the resumed run (after
        Lightning's restart has set its own: its loops restore before training starts)."""
        if self._restored_step_count is not None:
            trainer.fit_loop.epoch_loop._batches_that_stepped = self._restored_step_count
            self._restored_step_count = None


class PreemptionCheckpoint(Checkpoint):
    """Saves ``hpc_ckpt_<n>.ckpt`` in the run directory and requeues the SLURM job when SLURM warns
    the job (``#SBATCH --signal=SIGUSR1@300``: before its time limit, or on preemption), at a point
    that every process of the job reaches together (configured in ``configs/callbacks/``).

    Lightning's own handler (``SLURMEnvironment(auto_requeue=True)``) saves from inside the signal
    handler, on every process wherever it is: a save that gathers the other ranks' states (the
    samplers' random streams, the local-search buffers) then waited for ranks that were in the
    middle of a training step, and the job hung without a checkpoint or a requeue; a signal during
    a validation saved a checkpoint that resumes past it. Here the handler only notes the signal.
    At the end of every training batch that steps the optimizer (not within a gradient
    accumulation, whose gradients a checkpoint does not hold) the processes agree on whether any
    was signalled (one all-reduce of a flag, under DDP only) and then save together: at once, or
    after the validation that follows the batch (at the next such batch's end when it has no
    batches); a signal during a validation is acted on at its end. The save waits for the running
    training step or validation: give ``--signal`` more seconds than a validation takes. A signal
    after the last such point of the fit requeues the job at the fit's end, without a save (the
    requeued job resumes from the newest checkpoint); outside training (the test after it, an
    evaluation) the signal requeues the job at once. Off under ``fast_dev_run``. Under DDP a
    time-based ``val_check_interval`` is refused: each process would read its own clock to tell
    whether a validation follows, and they could disagree.

    A :class:`~lightning.pytorch.callbacks.Checkpoint`, so that Lightning runs its hooks after
    every other callback's, ``ModelCheckpoint``'s included (those listed before it): the saved
    state is the one they leave at the batch's or validation's end (a replay buffer's new samples,
    the best checkpoint of that validation). Keep it after the ``ModelCheckpoint`` callbacks in
    the list: Lightning's ``trainer.checkpoint_callback`` is the first checkpoint callback. Like any
    checkpoint callback it cannot be used with ``trainer.enable_checkpointing=false``.

    Active only in a SLURM job (Lightning's ``SLURMEnvironment.detect()``) and with ``requeue``;
    ``trainer=slurm`` turns Lightning's handler off. The submitit launcher requeues by itself and
    sets ``TENFOLD_SLURM_AUTO_REQUEUE=false``, which switches this callback off (its default
    config reads that variable).

    Args:
        requeue: save and requeue on the signal (False: do nothing).
        signal_name: the warning signal (``--signal`` of ``sbatch``).
    """

    def __init__(self, requeue: bool = True, signal_name: str = "SIGUSR1") -> None:
        self.requeue = requeue
        self.signum = signal.Signals[signal_name]
        self._signalled = False
        self._pending = False
        self._saved = False
        self._previous_handler: Any = None
        self._active = False
        self._stage: str | None = None
        self._is_global_zero = True

    def _note_signal(self, signum: int, frame: Any) -> None:
        self._signalled = True
        if self._stage != "fit" and self._is_global_zero:
            log.info("SLURM warned the job outside training: requeued without a checkpoint")
            requeue_slurm_job()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        after = trainer.callbacks[trainer.callbacks.index(self) + 1 :]
        later = [callback for callback in after if isinstance(callback, Checkpoint)]
        if later:
            raise ValueError(
                f"PreemptionCheckpoint is listed before {type(later[0]).__name__}, whose state at a validation's end "
                "its save would miss: list it after the ModelCheckpoint callbacks"
            )
        if stage == "fit" and trainer.world_size > 1 and getattr(trainer, "_val_check_time_interval", None) is not None:
            raise ValueError(
                "PreemptionCheckpoint under DDP needs a validation schedule in batches or epochs: with a time-based "
                "val_check_interval each process reads its own clock and they could save at different points"
            )
        self._stage, self._is_global_zero = stage, trainer.is_global_zero

    def _install_handler(self, trainer: L.Trainer) -> None:
        """From the hooks that start a stage's loop: after Lightning registers its signal handlers
        (and takes the current ones as those it restores at its teardown, which would otherwise
        restore this one after a crash)."""
        if self._active or trainer.fast_dev_run or not (self.requeue and SLURMEnvironment.detect()):
            return
        self._active = True
        self._previous_handler = signal.signal(self.signum, self._note_signal)

    def on_sanity_check_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install_handler(trainer)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install_handler(trainer)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install_handler(trainer)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._install_handler(trainer)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._stage == "validate":  # trainer.validate, not a validation within training
            self._install_handler(trainer)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._restore_handler()

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        self._restore_handler()

    def _restore_handler(self) -> None:
        """Puts back the handler this one replaced, unless another was installed since (Lightning's
        teardown, which runs before the callbacks' ``teardown``, restores the handlers it found)."""
        if self._active and signal.getsignal(self.signum) == self._note_signal:
            signal.signal(self.signum, self._previous_handler)
        self._active = False

    def _agreed(self, trainer: L.Trainer) -> bool:
        """Whether some process was signalled (every process calls this at the same point)."""
        if trainer.world_size == 1:
            return self._signalled
        return bool(trainer.strategy.reduce_boolean_decision(self._signalled, all=False))

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not self._active or self._saved or trainer.fit_loop.epoch_loop._should_accumulate():
            return
        if not self._pending:
            self._pending = self._agreed(trainer)
        # a validation that follows is waited for; one without batches (its end hooks never run)
        # leaves the save to the next batch end that steps the optimizer
        if self._pending and not validation_follows(trainer):
            self._save_and_requeue(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._active or self._saved or trainer.sanity_checking or self._stage != "fit":
            return
        if not self._pending:
            self._pending = self._agreed(trainer)  # a signal during the validation
        if self._pending and not trainer.fit_loop.epoch_loop._should_accumulate():
            self._save_and_requeue(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._active and not self._saved and (self._pending or self._agreed(trainer)):
            # signalled after the fit's last point to save at: the job would end within the test
            self._saved = True
            if trainer.is_global_zero:
                requeue_slurm_job()

    def _save_and_requeue(self, trainer: L.Trainer) -> None:
        self._saved = True
        self._pending = False
        for logger in trainer.loggers:
            logger.save()
        trainer.save_checkpoint(trainer._checkpoint_connector.hpc_save_path(trainer.default_root_dir))
        if trainer.is_global_zero:
            requeue_slurm_job()


def requeue_slurm_job() -> None:
    """``scontrol requeue`` of this job (an array job's task: ``<array job id>_<task id>``); SLURM
    then stops the job and queues it again under the same job id."""
    job_id = os.environ["SLURM_JOB_ID"]
    if "SLURM_ARRAY_JOB_ID" in os.environ:
        job_id = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    try:
        result = subprocess.run(["scontrol", "requeue", job_id], check=False)
    except OSError as error:  # no SLURM client in this container
        log.warning(f"scontrol requeue {job_id} could not run ({error}): requeue the job yourself")
        return
    if result.returncode == 0:
        log.info(f"Requeued SLURM job {job_id}")
    else:
        log.warning(f"scontrol requeue {job_id} failed with exit status {result.returncode}")


class ConfigInCheckpoint(Callback):
    """Keeps sections of the run's composed config (plain, resolved values) in every checkpoint, so
    that evaluating the checkpoint later can compare them with the evaluation's config.

    A model's saved hyperparameters leave out what it is given as objects (the network of an
    attention or relational model, built from ``model.net``), and evaluating with another
    ``model.net.*`` setting that keeps the shapes loads the weights without complaint. ``train.py``
    adds this callback to every training run; :meth:`saved` reads the config back.

    Args:
        config: e.g. ``{"model": {...}, "data": {...}}``, plain Python values (the checkpoint is
            read with ``torch.load(weights_only=True)``); an OmegaConf config (e.g. Hydra's
            ``cfg``) is converted, its interpolations resolved.
    """

    def __init__(self, config: dict[str, Any] | DictConfig) -> None:
        if not isinstance(config, (dict, DictConfig)):
            raise TypeError(f"ConfigInCheckpoint takes a dict of config sections, got {type(config).__name__}")
        # plain containers all the way down, also where a section is an OmegaConf node
        self.config: dict[str, Any] = OmegaConf.to_container(OmegaConf.create(config), resolve=True)  # type: ignore[assignment]

    def state_dict(self) -> dict[str, Any]:
        return {"config": self.config}

    @classmethod
    def saved(cls, checkpoint: dict[str, Any]) -> dict[str, Any] | None:
        """The config this callback put in ``checkpoint`` (a loaded checkpoint dict), else None."""
        state = (checkpoint.get("callbacks") or {}).get(cls.__qualname__)
        return state.get("config") if isinstance(state, dict) else None
