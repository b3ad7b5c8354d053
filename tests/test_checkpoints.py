"""tenfold.checkpoints: last.ckpt holds the newest state whatever the trigger, and a checkpoint is
written whole or not at all."""

from __future__ import annotations

import os
import shutil
import signal
from datetime import timedelta
from types import SimpleNamespace
from pathlib import Path

import lightning as L
import pytest
from omegaconf import OmegaConf
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.demos.boring_classes import BoringModel
from lightning.pytorch.loggers import CSVLogger

import tenfold.checkpoints as checkpoints_module
from tenfold.checkpoints import (
    AtomicCheckpointIO,
    ConfigInCheckpoint,
    LastCheckpoint,
    PreemptionCheckpoint,
    is_complete_checkpoint,
    replaced_atomically,
)
from tests.conftest import fake_scontrol, read_csv_rows


def _record_saved_steps(checkpoint: ModelCheckpoint) -> list[int]:
    """The list to which every save of ``checkpoint`` appends the trainer's step."""
    saved: list[int] = []
    save = checkpoint._save_checkpoint

    def recording_save(trainer: L.Trainer, path: str) -> None:
        saved.append(trainer.global_step)
        save(trainer, path)

    checkpoint._save_checkpoint = recording_save
    return saved


# 3 steps per epoch: with every_n_train_steps=3 both triggers fire at steps 3 and 6, which are
# written once
@pytest.mark.parametrize(("every_n_train_steps", "saved_steps"), [(None, [3, 6]), (4, [3, 4, 6]), (3, [3, 6])])
def test_last_checkpoint_saves_every_epoch_end_also_with_a_step_trigger(
    tmp_path: Path, every_n_train_steps: int | None, saved_steps: list[int]
) -> None:
    # Lightning's ModelCheckpoint with every_n_train_steps=4 alone would end 6 steps with step 4
    torch.set_num_threads(1)
    checkpoint = LastCheckpoint(dirpath=tmp_path, filename="last", every_n_train_steps=every_n_train_steps)
    saved = _record_saved_steps(checkpoint)
    trainer = L.Trainer(
        max_epochs=2, limit_train_batches=3, limit_val_batches=0, callbacks=[checkpoint], logger=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )
    trainer.fit(BoringModel())
    assert saved == saved_steps
    assert torch.load(tmp_path / "last.ckpt", weights_only=True)["global_step"] == 6


def test_atomic_save_replaces_the_file_whole_and_leaves_nothing_beside_it(tmp_path: Path) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "checkpoints" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "weight": torch.ones(3)}, path)
    io.save_checkpoint({"global_step": 2, "weight": torch.full((3,), 2.0)}, path)
    assert io.load_checkpoint(path)["global_step"] == 2
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
    assert is_complete_checkpoint(path)


def test_a_save_that_dies_midway_keeps_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1}, path)
    before = path.read_bytes()

    def dying_save(obj: object, file) -> None:
        file.write(b"PK\x03\x04 half an archive")
        raise KeyboardInterrupt  # as a kill would stop it, mid-write

    monkeypatch.setattr(checkpoints_module.torch, "save", dying_save)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_a_copy_cut_short_never_replaces_the_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Lightning's save writes a temporary file in the system's temporary directory and moves it;
    # across filesystems the move is a copy, here killed halfway: the checkpoint must stay whole
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"global_step": 1}, path)
    before = path.read_bytes()

    def move_killed_halfway(source: str, destination: str, *args: object, **kwargs: object) -> None:
        data = Path(source).read_bytes()
        Path(destination).write_bytes(data[: len(data) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "move", move_killed_halfway)
    try:
        io.save_checkpoint({"global_step": 2, "weight": torch.ones(100)}, path)
    except KeyboardInterrupt:
        pass
    assert is_complete_checkpoint(path)
    assert path.read_bytes() == before or io.load_checkpoint(path)["global_step"] == 2


def test_a_truncated_checkpoint_is_not_complete(tmp_path: Path) -> None:
    # torch.save writes a zip archive whose directory comes last: a copy cut short has none
    path = tmp_path / "whole.ckpt"
    torch.save({"weight": torch.zeros(1000)}, path)
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(path.read_bytes()[:2000])
    assert is_complete_checkpoint(path) and not is_complete_checkpoint(truncated)


class _LoggingBoringModel(BoringModel):
    """BoringModel that logs its training loss at every step and a validation metric."""

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> dict[str, torch.Tensor]:
        output = super().training_step(batch, batch_idx)
        self.log("train/loss", output["loss"])
        return output

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.log("val/loss", super().validation_step(batch, batch_idx)["x"])


def _logged_training_steps(
    run_dir: Path, max_epochs: int, max_steps: int, callbacks: list, ckpt_path: str | None = None, val_check_interval: int | None = None
) -> list[int]:
    """Fits with a CSV logger in ``run_dir`` (4 batches per epoch, validation every
    ``val_check_interval`` batches, default: at each epoch's end) and returns the steps of the
    training rows of this fit."""
    torch.set_num_threads(1)
    L.seed_everything(0)
    logger = CSVLogger(run_dir, name="csv", version=f"from_{Path(ckpt_path).stem if ckpt_path else 'start'}")
    trainer = L.Trainer(
        max_epochs=max_epochs, max_steps=max_steps, limit_train_batches=4, limit_val_batches=1, val_check_interval=val_check_interval,
        log_every_n_steps=1, callbacks=callbacks, logger=logger, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0,
    )
    trainer.fit(_LoggingBoringModel(), ckpt_path=ckpt_path)
    return [int(row["step"]) for row in read_csv_rows(Path(logger.log_dir) / "metrics.csv") if row["train/loss"]]


# First fit stopped at the end of epoch 0 (by max_epochs, or by max_steps), or within epoch 1 (a
# step trigger); its checkpoint resumed to step 12, the end of epoch 2. Every resumed row must
# carry the step that the uninterrupted run gave it. Lightning adds one to its step count on some
# restarts and not on others (it was one step late from a max_steps stop, one early after a
# max_epochs stop, when LastCheckpoint corrected the epoch-end save unconditionally; resumed within
# an epoch, the count went back at the next epoch's start, when it was set there only).
@pytest.mark.parametrize(
    "resumed_stop", [{"max_epochs": 10, "max_steps": 12}, {"max_epochs": 3, "max_steps": -1}], ids=["to_step_12", "to_epoch_3"]
)
@pytest.mark.parametrize(
    ("first_stop", "checkpoint_name"),
    [
        ({"max_epochs": 1, "max_steps": -1}, "last"),
        ({"max_epochs": 10, "max_steps": 4}, "last"),
        ({"max_epochs": 10, "max_steps": 4}, "best"),
        ({"max_epochs": 10, "max_steps": 6}, "last"),
        ({"max_epochs": 10, "max_steps": 6, "val_check_interval": 2}, "best"),
    ],
    ids=["max_epochs_last", "max_steps_last", "max_steps_monitored", "within_epoch_last", "within_epoch_validation_monitored"],
)
def test_a_resumed_run_logs_each_step_as_the_uninterrupted_run(
    tmp_path: Path, first_stop: dict[str, int], checkpoint_name: str, resumed_stop: dict[str, int]
) -> None:
    def callbacks() -> list:
        return [
            LastCheckpoint(dirpath=tmp_path / "ckpt", filename="last", every_n_train_steps=3),
            ModelCheckpoint(dirpath=tmp_path / "ckpt", filename="best", monitor="val/loss", enable_version_counter=False),
        ]

    uninterrupted = _logged_training_steps(tmp_path / "full", 10, 12, [])
    assert uninterrupted == list(range(12))
    val_check_interval = first_stop.get("val_check_interval")
    first = _logged_training_steps(
        tmp_path / "half", first_stop["max_epochs"], first_stop["max_steps"], callbacks(), val_check_interval=val_check_interval
    )
    checkpoint = tmp_path / "ckpt" / f"{checkpoint_name}.ckpt"
    resumed_from = torch.load(checkpoint, weights_only=True)["global_step"]
    assert first == list(range(first_stop["max_steps"] if first_stop["max_steps"] > 0 else 4))
    resumed = _logged_training_steps(
        tmp_path / "half", resumed_stop["max_epochs"], resumed_stop["max_steps"], callbacks(), ckpt_path=str(checkpoint),
        val_check_interval=val_check_interval,
    )
    assert resumed == uninterrupted[resumed_from:]


def test_config_in_checkpoint_keeps_plain_values_of_omegaconf_sections(tmp_path: Path) -> None:
    """Hydra's cfg.model is the natural argument: saved as it is, the checkpoint would not load with
    weights_only=True (every resume and evaluation loads it so)."""
    cfg = OmegaConf.create({"model": {"width": 8, "depth": "${model.width}", "pair": [0, 2]}, "data": {"seed": 3}})
    for config in (cfg, {"model": cfg.model, "data": {"seed": 3}}):
        callback = ConfigInCheckpoint(config)
        torch.save({"callbacks": {"ConfigInCheckpoint": callback.state_dict()}}, tmp_path / "c.ckpt")
        loaded = torch.load(tmp_path / "c.ckpt", weights_only=True)
        assert ConfigInCheckpoint.saved(loaded) == {"model": {"width": 8, "depth": 8, "pair": [0, 2]}, "data": {"seed": 3}}
    with pytest.raises(TypeError, match="takes a dict of config sections, got list"):
        ConfigInCheckpoint([cfg])  # type: ignore[arg-type]


class _CrashAtValidation(L.Callback):
    """Stops the fit with an error when the validation after optimizer step ``step`` starts (a kill
    during that validation)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking and trainer.global_step == self.step:
            raise RuntimeError("killed during validation")


def _validated_steps(run_dir: Path, ckpt_dir: Path, callbacks: list, ckpt_path: str | None, val_check_interval: int | None) -> list[int]:
    """Fits 2 epochs of 4 batches (validation every ``val_check_interval`` batches, default: at
    each epoch's end) with a CSV logger in ``run_dir``; the steps of this fit's validation rows."""
    torch.set_num_threads(1)
    L.seed_everything(0)
    logger = CSVLogger(run_dir, name="csv", version=f"from_{Path(ckpt_path).stem if ckpt_path else 'start'}")
    trainer = L.Trainer(
        max_epochs=2, limit_train_batches=4, limit_val_batches=1, val_check_interval=val_check_interval,
        log_every_n_steps=1, callbacks=[LastCheckpoint(dirpath=ckpt_dir, filename="last", every_n_train_steps=2), *callbacks],
        logger=logger, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0,
        default_root_dir=run_dir,
    )
    try:
        trainer.fit(_LoggingBoringModel(), ckpt_path=ckpt_path)
    except RuntimeError as crash:
        assert "killed during validation" in str(crash)
    return [int(row["step"]) for row in read_csv_rows(Path(logger.log_dir) / "metrics.csv") if row.get("val/loss")]


# Killed during the validation that follows a due step save: at an epoch's end (step 4 of 4
# batches), or within the epoch (val_check_interval=2, at step 4). Lightning resumes a save made
# before that validation past it, so the resumed run never validated there; the save must come
# after the validation, and the resumed run must validate where the uninterrupted run did.
@pytest.mark.parametrize("val_check_interval", [None, 2], ids=["epoch_end", "within_epoch"])
def test_a_run_killed_during_validation_resumes_with_that_validation(tmp_path: Path, val_check_interval: int | None) -> None:
    uninterrupted = _validated_steps(tmp_path / "full", tmp_path / "full_ckpt", [], None, val_check_interval)
    assert uninterrupted == ([3, 7] if val_check_interval is None else [1, 3, 5, 7])
    killed = _validated_steps(tmp_path / "half", tmp_path / "ckpt", [_CrashAtValidation(4)], None, val_check_interval)
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 2  # the save before the interrupted validation, not at its step
    resumed = _validated_steps(tmp_path / "half", tmp_path / "ckpt", [], str(tmp_path / "ckpt" / "last.ckpt"), val_check_interval)
    assert killed + resumed == uninterrupted


class _EmptyValidationModel(BoringModel):
    """BoringModel whose validation loader has no batches (validation on, nothing to validate)."""

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.zeros(0, 32)), batch_size=2)


def test_a_save_waiting_for_an_empty_validation_is_made_at_the_next_batch(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    checkpoint = LastCheckpoint(dirpath=tmp_path, filename="last", every_n_train_steps=2)
    saved = _record_saved_steps(checkpoint)
    trainer = L.Trainer(
        max_epochs=2, limit_train_batches=4, val_check_interval=2, callbacks=[checkpoint], logger=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0,
    )
    trainer.fit(_EmptyValidationModel())
    # steps 2 and 6 wait for their validations, which have no batches: saved one batch later; the
    # epoch ends (4, 8) save after theirs
    assert saved == [3, 4, 7, 8]
    # validating after every batch: each due save is made at the next batch's end, not dropped
    saved.clear()
    trainer = L.Trainer(
        max_epochs=1, limit_train_batches=7, val_check_interval=1, callbacks=[checkpoint], logger=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", num_sanity_val_steps=0,
    )
    trainer.fit(_EmptyValidationModel())
    assert saved == [3, 5, 7]


def test_writers_of_one_file_do_not_take_each_others_partial_file(tmp_path: Path) -> None:
    path = tmp_path / "summary.csv"
    with replaced_atomically(path) as first, replaced_atomically(path) as second:
        assert first != second
        first.write_text("first")
        second.write_text("second")
    assert path.read_text() == "first" and [p.name for p in tmp_path.iterdir()] == ["summary.csv"]


class _WarnJobAtStep(L.Callback):
    """Sends SIGUSR1 to this process at the end of training step ``step``: SLURM's warning before
    the time limit (listed before :class:`PreemptionCheckpoint`, so that its hook sees it)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer: L.Trainer, *args: object) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGUSR1)


class _StoppedByRequeue(L.Callback):
    """Stops the fit once ``scontrol requeue`` was called (``record`` exists), at the next batch or
    validation start: SLURM ends a job that is requeued."""

    def __init__(self, record: Path) -> None:
        self.record = record

    def _stop_if_requeued(self) -> None:
        if self.record.exists():
            raise RuntimeError("killed during validation (or before the next batch): requeued")

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._stop_if_requeued()

    def on_train_batch_start(self, *args: object) -> None:
        self._stop_if_requeued()


def _slurm_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This process as the one task of SLURM job 77, with an ``scontrol`` on the PATH that records
    its arguments; returns the record's path."""
    bin_dir, record = fake_scontrol(tmp_path)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    for name, value in dict(SLURM_NTASKS="1", SLURM_JOB_ID="77", SLURM_JOB_NAME="train", SLURM_PROCID="0",
                            SLURM_LOCALID="0", SLURM_NODEID="0").items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SLURM_ARRAY_JOB_ID", raising=False)
    return record


def test_a_warned_slurm_job_saves_at_the_batch_end_and_requeues(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    record = _slurm_job(tmp_path, monkeypatch)
    handler_before = signal.getsignal(signal.SIGUSR1)
    trainer = L.Trainer(
        max_steps=4, limit_val_batches=0, callbacks=[_WarnJobAtStep(2), PreemptionCheckpoint()],
        default_root_dir=tmp_path, logger=False, enable_progress_bar=False, enable_model_summary=False,
        accelerator="cpu", devices=1,
    )
    trainer.fit(BoringModel())
    assert [path.name for path in tmp_path.glob("*.ckpt")] == ["hpc_ckpt_1.ckpt"]
    assert torch.load(tmp_path / "hpc_ckpt_1.ckpt", weights_only=True)["global_step"] == 2
    assert record.read_text() == "requeue 77\n"  # once; training goes on until SLURM stops the job
    assert signal.getsignal(signal.SIGUSR1) == handler_before


def test_a_warned_slurm_job_saves_after_the_validation_that_follows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # validation every 2 batches; warned at step 2, whose validation follows: saved after that
    # validation, so the requeued run validates where the uninterrupted run did. Lightning's own
    # handler saved and requeued at once: SLURM stopped the job before that validation, and the
    # requeued run, resumed past it, never ran it.
    uninterrupted = _validated_steps(tmp_path / "full", tmp_path / "full_ckpt", [], None, 2)
    record = _slurm_job(tmp_path, monkeypatch)
    warned = _validated_steps(
        tmp_path / "half", tmp_path / "ckpt", [_WarnJobAtStep(2), PreemptionCheckpoint(), _StoppedByRequeue(record)], None, 2
    )
    assert record.read_text() == "requeue 77\n"
    (hpc,) = (tmp_path / "half").glob("hpc_ckpt_*.ckpt")
    assert torch.load(hpc, weights_only=True)["global_step"] == 2
    monkeypatch.delenv("SLURM_NTASKS")
    resumed = _validated_steps(tmp_path / "half", tmp_path / "ckpt", [], str(hpc), 2)
    assert warned + resumed == uninterrupted


def test_preemption_checkpoint_acts_in_a_slurm_job_only_and_unless_switched_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trainer, model = L.Trainer(logger=False, accelerator="cpu"), BoringModel()
    handler_before = signal.getsignal(signal.SIGUSR1)
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    outside = PreemptionCheckpoint()
    outside.on_train_start(trainer, model)
    assert not outside._active and signal.getsignal(signal.SIGUSR1) == handler_before
    _slurm_job(tmp_path, monkeypatch)
    switched_off = PreemptionCheckpoint(requeue=False)  # the submitit launcher's jobs
    switched_off.on_train_start(trainer, model)
    assert not switched_off._active and signal.getsignal(signal.SIGUSR1) == handler_before
    active = PreemptionCheckpoint()
    active.on_train_start(trainer, model)
    assert signal.getsignal(signal.SIGUSR1) == active._note_signal
    active.teardown(trainer, model, "fit")
    assert signal.getsignal(signal.SIGUSR1) == handler_before
    # listed before a ModelCheckpoint, it would save before that callback's save of a validation
    misplaced = PreemptionCheckpoint()
    trainer = L.Trainer(logger=False, accelerator="cpu", callbacks=[misplaced, ModelCheckpoint(dirpath=tmp_path)])
    with pytest.raises(ValueError, match="list it after the ModelCheckpoint callbacks"):
        misplaced.setup(trainer, model, "fit")


class _ValLossAroundStep(BoringModel):
    """Logs ``val/loss = |global_step - best_step|``: the best validation is the one at ``best_step``."""

    def __init__(self, best_step: int) -> None:
        super().__init__()
        self.best_step = best_step

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self.log("val/loss", float(abs(self.global_step - self.best_step)))


def _fit_with_best_checkpoint(run_dir: Path, callbacks: list, ckpt_path: str | None = None) -> ModelCheckpoint:
    """2 epochs of 6 batches, validating every 2; the best checkpoint (top 1 by val/loss) is step 4's."""
    torch.set_num_threads(1)
    L.seed_everything(0)
    best = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best-{step}", monitor="val/loss", mode="min")
    trainer = L.Trainer(
        max_epochs=2, limit_train_batches=6, limit_val_batches=1, val_check_interval=2, num_sanity_val_steps=0,
        callbacks=[best, *callbacks], default_root_dir=run_dir, logger=False, enable_progress_bar=False,
        enable_model_summary=False, accelerator="cpu",
    )
    try:
        trainer.fit(_ValLossAroundStep(best_step=4), ckpt_path=ckpt_path)
    except RuntimeError as stop:
        assert "requeued" in str(stop)
    return best


def test_a_job_warned_before_its_best_validation_keeps_that_best_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # warned at step 4, whose validation is the best: the save waits for that validation and for
    # ModelCheckpoint's save of it (Lightning runs checkpoint callbacks last, in their order), so the
    # requeued run knows its best checkpoint (before, the state named step 2's, which ModelCheckpoint
    # had deleted: the final test failed to find it)
    assert Path(_fit_with_best_checkpoint(tmp_path / "full", []).best_model_path).name == "best-step=4.ckpt"
    record = _slurm_job(tmp_path, monkeypatch)
    warned_dir = tmp_path / "warned"
    _fit_with_best_checkpoint(warned_dir, [_WarnJobAtStep(4), PreemptionCheckpoint(), _StoppedByRequeue(record)])
    (hpc,) = warned_dir.glob("hpc_ckpt_*.ckpt")
    monkeypatch.delenv("SLURM_NTASKS")
    resumed = _fit_with_best_checkpoint(warned_dir, [], str(hpc))
    assert Path(resumed.best_model_path).name == "best-step=4.ckpt" and Path(resumed.best_model_path).is_file()


def test_a_warned_job_saves_after_an_empty_validation_and_between_accumulations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    record = _slurm_job(tmp_path, monkeypatch)
    # warned at step 2, followed by a validation without batches (its end hooks never run): saved
    # at the next batch's end
    trainer = L.Trainer(
        max_steps=4, limit_train_batches=4, val_check_interval=2, num_sanity_val_steps=0,
        callbacks=[_WarnJobAtStep(2), PreemptionCheckpoint()], default_root_dir=tmp_path / "empty", logger=False,
        enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=True, accelerator="cpu",
    )
    trainer.fit(_EmptyValidationModel())
    (hpc,) = (tmp_path / "empty").glob("hpc_ckpt_*.ckpt")
    assert torch.load(hpc, weights_only=True)["global_step"] == 3
    # accumulating 2 batches per step, warned after the first batch of step 2's window: saved at
    # the window's end, whose gradients are applied, not within it
    class WarnAtBatch(L.Callback):
        def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: object, batch: object, batch_idx: int) -> None:
            if batch_idx == 2:
                os.kill(os.getpid(), signal.SIGUSR1)

    trainer = L.Trainer(
        max_steps=3, accumulate_grad_batches=2, limit_val_batches=0, callbacks=[WarnAtBatch(), PreemptionCheckpoint()],
        default_root_dir=tmp_path / "accumulated", logger=False, enable_progress_bar=False, enable_model_summary=False,
        accelerator="cpu",
    )
    trainer.fit(BoringModel())
    (hpc,) = (tmp_path / "accumulated").glob("hpc_ckpt_*.ckpt")
    saved = torch.load(hpc, weights_only=True)
    assert saved["global_step"] == 2
    assert saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["processed"] == 4
    assert record.read_text() == "requeue 77\n" * 2


def test_a_warning_outside_training_requeues_at_once_and_a_crash_restores_the_handler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    torch.set_num_threads(1)
    record = _slurm_job(tmp_path, monkeypatch)
    handler_before = signal.getsignal(signal.SIGUSR1)

    class WarnDuringTest(L.Callback):
        def on_test_batch_end(self, *args: object) -> None:
            os.kill(os.getpid(), signal.SIGUSR1)

    trainer = L.Trainer(
        callbacks=[WarnDuringTest(), PreemptionCheckpoint()], default_root_dir=tmp_path, logger=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", limit_test_batches=1,
    )
    trainer.test(BoringModel())  # the process lives on (SIGUSR1's default action ends it)
    assert record.read_text() == "requeue 77\n" and not list(tmp_path.glob("hpc_ckpt_*.ckpt"))
    assert signal.getsignal(signal.SIGUSR1) == handler_before

    class Crash(L.Callback):
        def on_train_batch_end(self, *args: object) -> None:
            raise RuntimeError("crash")

    trainer = L.Trainer(
        max_steps=2, callbacks=[Crash(), PreemptionCheckpoint()], default_root_dir=tmp_path, logger=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )
    with pytest.raises(RuntimeError, match="crash"):
        trainer.fit(BoringModel())
    assert signal.getsignal(signal.SIGUSR1) == handler_before


def test_a_warning_after_the_last_save_point_requeues_at_the_fit_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.set_num_threads(1)
    record = _slurm_job(tmp_path, monkeypatch)

    class WarnAtTheLastEpochEnd(L.Callback):
        def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
            if trainer.current_epoch == trainer.max_epochs - 1:
                os.kill(os.getpid(), signal.SIGUSR1)

    trainer = L.Trainer(
        max_epochs=2, limit_train_batches=2, limit_val_batches=0, callbacks=[WarnAtTheLastEpochEnd(), PreemptionCheckpoint()],
        default_root_dir=tmp_path, logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )
    trainer.fit(BoringModel())
    assert record.read_text() == "requeue 77\n" and not list(tmp_path.glob("hpc_ckpt_*.ckpt"))


def test_a_save_waits_for_the_end_of_an_accumulation_window_around_a_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # accumulating 2 batches per step, validating every 3 batches: warned after batch 2 (index 1,
    # a step), the validation after batch 3 falls within the second window; the save waits for
    # the window's end (batch 4)
    torch.set_num_threads(1)
    _slurm_job(tmp_path, monkeypatch)

    class WarnAtBatch(L.Callback):
        def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: object, batch: object, batch_idx: int) -> None:
            if batch_idx == 2:
                os.kill(os.getpid(), signal.SIGUSR1)

    trainer = L.Trainer(
        max_steps=4, accumulate_grad_batches=2, limit_train_batches=8, val_check_interval=3, limit_val_batches=1,
        num_sanity_val_steps=0, callbacks=[WarnAtBatch(), PreemptionCheckpoint()], default_root_dir=tmp_path, logger=False,
        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )
    trainer.fit(BoringModel())
    (hpc,) = tmp_path.glob("hpc_ckpt_*.ckpt")
    saved = torch.load(hpc, weights_only=True)
    assert saved["global_step"] == 2
    assert saved["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["processed"] == 4


def test_preemption_checkpoint_without_scontrol_fast_dev_run_or_a_time_schedule_under_ddp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    torch.set_num_threads(1)
    _slurm_job(tmp_path, monkeypatch)
    # no SLURM client in the container: the save is made, the requeue is left to the user
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    trainer = L.Trainer(
        max_steps=3, limit_val_batches=0, callbacks=[_WarnJobAtStep(2), PreemptionCheckpoint()], default_root_dir=tmp_path,
        logger=False, enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
    )
    with caplog.at_level("WARNING", logger="tenfold.checkpoints"):
        trainer.fit(BoringModel())
    assert trainer.global_step == 3 and len(list(tmp_path.glob("hpc_ckpt_*.ckpt"))) == 1
    assert "scontrol requeue 77 could not run" in caplog.text
    # debug=fdr writes no checkpoint
    callback = PreemptionCheckpoint()
    trainer = L.Trainer(fast_dev_run=True, callbacks=[callback], logger=False, accelerator="cpu")
    callback.setup(trainer, BoringModel(), "fit")
    callback.on_train_start(trainer, BoringModel())
    assert not callback._active
    # DDP with validations every so long: each process would read its own clock
    timed = PreemptionCheckpoint()
    ddp = SimpleNamespace(callbacks=[timed], world_size=2, _val_check_time_interval=timedelta(minutes=5), is_global_zero=True, fast_dev_run=False)
    with pytest.raises(ValueError, match="time-based val_check_interval"):
        timed.setup(ddp, BoringModel(), "fit")
