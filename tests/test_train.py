"""The entry point and the scaling configs on real experiments: DDP (simulated on CPU), bf16-mixed,
exact resume from a run directory, SLURM detection and requeue, sweeps, and the first errors a
user meets. Runs that go through ``python train.py`` are subprocesses, as a user starts them."""

from __future__ import annotations

import csv
import functools
import json
import logging
import math
import os
import re
import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import OmegaConf, read_write
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from torch.utils.tensorboard import SummaryWriter

import train as train_script
from tenfold.checkpoints import PreemptionCheckpoint
from tenfold.datamodules.samplers import EnergyDataModule
from tests.conftest import fake_scontrol, read_csv_rows, tensorboard_scalars

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"

# Sizes of the samplers family small enough for a few CPU seconds (same method, tiny batches).
TINY = [
    "data.batch_size=16",
    "data.eval_batch_size=64",
    "model.num_steps=8",
    "extras.print_config=false",
]
# GMM25 TB for two steps of the tiny sizes, validated after each epoch of 2 steps.
TINY_TWO_STEPS = [
    "experiment=samplers/gmm25_tb",
    "trainer=cpu",
    *TINY,
    "data.steps_per_epoch=2",
    "trainer.max_steps=2",
    "trainer.check_val_every_n_epoch=1",
]
# One sweep job: the same, not tested.
TINY_SWEEP_JOB = [*TINY_TWO_STEPS, "test=false"]


def _single_run_dir(log_dir: Path, task_name: str) -> Path:
    runs = sorted((log_dir / task_name / "runs").iterdir())
    assert len(runs) == 1, f"expected one run directory, found {runs}"
    return runs[0]


def _load(path: Path) -> dict:
    # weights_only: checkpoints hold tensors and primitives only (torch >= 2.6 default).
    return torch.load(path, map_location="cpu", weights_only=True)


def _rebase(tree: object, old: str, new: str) -> object:
    """``tree`` with ``old`` replaced by ``new`` in every string, dict keys included."""
    if isinstance(tree, str):
        return tree.replace(old, new)
    if isinstance(tree, dict):
        return {_rebase(k, old, new): _rebase(v, old, new) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_rebase(v, old, new) for v in tree)
    return tree


def _assert_same_tree(a: object, b: object, where: str = "", exact: bool = False) -> None:
    """Nested dicts/lists/tensors are equal (tensors and floats to float tolerance, or bit for bit
    with ``exact``)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor), where
        assert a.shape == b.shape and a.dtype == b.dtype, where
        if exact and a.is_floating_point():
            assert torch.equal(a.isnan(), b.isnan()) and torch.equal(a.nan_to_num(), b.nan_to_num()), where
        elif exact:
            assert torch.equal(a, b), where
        else:
            assert torch.allclose(a.float(), b.float(), atol=1e-6, rtol=1e-5, equal_nan=True), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: {set(a) ^ set(b)}"
        for key in a:
            _assert_same_tree(a[key], b[key], f"{where}/{key}", exact)
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same_tree(x, y, f"{where}[{i}]", exact)
    elif isinstance(a, float) and isinstance(b, float):
        close = a == b if exact else math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)
        assert close or (math.isnan(a) and math.isnan(b)), where
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


# Local search every second step, short: the tiny resume runs exercise it.
TINY_LOCAL_SEARCH = [
    "callbacks.local_search.local_search_every=2",
    "callbacks.local_search.local_search_steps=4",
    "callbacks.local_search.burn_in=2",
]


def _train_whole_and_half(train_cli, common: list[str], tmp_path: Path) -> tuple[Path, Path]:
    """Runs ``common`` for 8 steps into ``tmp_path/full`` and for 4 into ``tmp_path/half`` (to be
    resumed); returns both run directories."""
    full, half = tmp_path / "full", tmp_path / "half"
    for steps, run in ((8, full), (4, half)):
        result = train_cli([*common, f"trainer.max_steps={steps}", f"hydra.run.dir={run}"])
        assert result.returncode == 0, result.stdout[-5000:]
    return full, half


def test_ddp_sim_two_processes_log_synchronized_metric_once_per_validation(
    train_cli, tmp_path: Path
) -> None:
    # 4 batches per epoch shared by 2 ranks: 2 steps per epoch, 4 steps = 2 epochs = 2 validations.
    result = train_cli(
        [
            "experiment=samplers/gmm25_tb",
            "trainer=ddp_sim",
            *TINY,
            "data.steps_per_epoch=4",
            "trainer.max_steps=4",
            "trainer.check_val_every_n_epoch=1",
            f"paths.log_dir={tmp_path}",
        ]
    )
    assert result.returncode == 0, result.stdout[-5000:]
    assert "2 device(s), CPUAccelerator, DDPStrategy" in result.stdout
    run_dir = _single_run_dir(tmp_path, "samplers/gmm25_tb")
    rows = read_csv_rows(run_dir / "csv" / "metrics.csv")
    val_rows = [r for r in rows if r.get("val/elbo")]
    assert len(val_rows) == 2, val_rows
    assert [int(r["epoch"]) for r in val_rows] == [0, 1]
    assert all(math.isfinite(float(r["val/elbo"])) for r in val_rows)
    assert sum(1 for r in rows if r.get("test/elbo")) == 1
    assert _load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 4
    # evaluating the run directory on two processes: one evaluation folder for both (each process
    # stamped its own, a second apart, and rank 1's log went to a folder of its own)
    result = train_cli(["--config-path", str(run_dir / ".hydra"), "--config-name", "config", "train=false", "ckpt_path=last"])
    assert result.returncode == 0, result.stdout[-5000:]
    (evaluation,) = (run_dir / "evaluations").iterdir()
    assert (evaluation / "metrics.json").is_file() and (evaluation / "train_ddp_process_1.log").is_file()


# GMM25 TB + Expl. + LS at the tiny sizes with local search every second step, no validation
# within the run: what the SLURM preemption tests train
TINY_SLURM_LOCAL_SEARCH = [
    "experiment=samplers/gmm25_tb_expl_ls", "trainer=slurm", "trainer.accelerator=cpu", *TINY,
    "trainer.check_val_every_n_epoch=100", "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false",
    "callbacks.sample_plots=null", "callbacks.local_search.local_search_every=2",
    "callbacks.local_search.local_search_steps=4", "callbacks.local_search.burn_in=2", "test=false",
]


def _slurm_job_env(tmp_path: Path, tasks: int, stopped_by_requeue: bool = False) -> tuple[dict[str, str], Path]:
    """The environment of an emulated SLURM job of ``tasks`` tasks on this machine (job 5151; add
    SLURM_PROCID and SLURM_LOCALID per task), with an ``scontrol`` on the PATH that records its
    arguments (and, with ``stopped_by_requeue``, sends SIGTERM to its caller, as SLURM does to a
    requeued job); returns the environment and the record's path."""
    bin_dir, record = fake_scontrol(tmp_path, stopped_by_requeue)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    env = {key: value for key, value in os.environ.items() if not key.startswith("SLURM_")}
    env.update(
        SLURM_JOB_ID="5151", SLURM_JOB_NAME="train", SLURM_NTASKS=str(tasks), SLURM_NTASKS_PER_NODE=str(tasks),
        SLURM_NNODES="1", SLURM_NODEID="0", SLURM_NODELIST="localhost", SLURM_PROCID="0", SLURM_LOCALID="0",
        MASTER_PORT=str(port), HYDRA_FULL_ERROR="0", PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        OMP_NUM_THREADS="1",
    )
    env.pop("PYTEST_CURRENT_TEST", None)
    return env, record


def test_a_requeued_local_search_run_continues_as_the_uninterrupted_one(tmp_path: Path) -> None:
    """One SLURM task warned at step 5, stopped by its requeue, then resumed: the same weights and
    local-search state at step 8 as a run that was not stopped. The save comes after every other
    callback's batch end (Lightning runs checkpoint callbacks last): saved before the local-search
    callback's, it held the weights after the batch and the buffer and schedule from before it."""
    def train(run: str, *extra: str, stopped_by_requeue: bool = False) -> subprocess.CompletedProcess[str]:
        env, _ = _slurm_job_env(tmp_path / run, tasks=1, stopped_by_requeue=stopped_by_requeue)
        args = [*TINY_SLURM_LOCAL_SEARCH, "data.steps_per_epoch=4", "trainer.max_steps=8", f"hydra.run.dir={tmp_path / run / 'run'}", *extra]
        return subprocess.run(
            [sys.executable, str(ROOT / "train.py"), *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, timeout=300,
        )

    (tmp_path / "full").mkdir()
    (tmp_path / "half").mkdir()
    assert train("full").returncode == 0
    warned = train(
        "half", "+callbacks.warn._target_=tests.run_helpers.SignalAtStep", "+callbacks.warn.step=5",
        "+callbacks.warn.signal_name=SIGUSR1", stopped_by_requeue=True,
    )
    assert warned.returncode == 143, warned.stdout[-3000:]
    assert _load(tmp_path / "half" / "run" / "hpc_ckpt_1.ckpt")["global_step"] == 5
    resumed = train("half", "ckpt_path=last")
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "hpc_ckpt_1.ckpt" in resumed.stdout
    full, half = (_load(tmp_path / run / "run" / "checkpoints" / "last.ckpt") for run in ("full", "half"))
    assert full["global_step"] == half["global_step"] == 8
    for name, tensor in full["state_dict"].items():
        torch.testing.assert_close(half["state_dict"][name], tensor, rtol=0, atol=0, msg=name)
    (key,) = [key for key in full["callbacks"] if key.startswith("LocalSearchReplay")]
    assert half["callbacks"][key]["step"] == full["callbacks"][key]["step"]
    torch.testing.assert_close(half["callbacks"][key]["buffer"], full["callbacks"][key]["buffer"], rtol=0, atol=0)


def test_two_slurm_tasks_save_and_requeue_together_when_one_is_warned(tmp_path: Path) -> None:
    """``srun -n 2`` emulated on the CPU: SLURM's warning (SIGUSR1) reaches rank 1 at step 3 and
    rank 0 not at all. Lightning's own handler saved inside the handler: the local-search sampler's
    checkpoint gathers both ranks' buffers, which waited for rank 0 in its training step, and the
    job hung without a checkpoint or a requeue. Both ranks save at the same batch end instead."""
    env, record = _slurm_job_env(tmp_path, tasks=2)
    run_dir = tmp_path / "run"
    args = [
        str(ROOT / "train.py"), *TINY_SLURM_LOCAL_SEARCH, "data.steps_per_epoch=12", "trainer.max_steps=6",
        f"hydra.run.dir={run_dir}", "+callbacks.warn._target_=tests.run_helpers.SignalAtStep", "+callbacks.warn.step=3",
        "+callbacks.warn.signal_name=SIGUSR1", "+callbacks.warn.rank=1",
    ]
    tasks = [
        subprocess.Popen(
            [sys.executable, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**env, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank)},
        )
        for rank in (0, 1)
    ]
    try:
        outputs = [task.communicate(timeout=240)[0] for task in tasks]
    finally:
        for task in tasks:
            task.kill()
    assert [task.returncode for task in tasks] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert record.read_text() == "requeue 5151\n"  # by rank 0 only
    # saved at the batch end where rank 1 was signalled, with both ranks' local-search states
    hpc = _load(run_dir / "checkpoints" / "hpc_ckpt_1.ckpt")  # moved there by the finished fit
    assert hpc["global_step"] == 3
    (local_search,) = [state for key, state in hpc["callbacks"].items() if key.startswith("LocalSearchReplay")]
    assert len(local_search["other_ranks"]) == 1


def test_the_tasks_of_one_srun_step_share_an_evaluation_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({}, run / "checkpoints" / "last.ckpt")
    monkeypatch.delenv(train_script.EVALUATION_NAME_VARIABLE, raising=False)
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_STEP_ID", "3")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "8")
    assert train_script.evaluation_output_dir(run) == run / "evaluations" / "slurm-4242.3"
    # one task alone (an interactive allocation): the time, which the next call in the process reuses
    # until train() ends (as the processes that Lightning starts inherit it)
    monkeypatch.delenv(train_script.EVALUATION_NAME_VARIABLE)
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "1")
    first = train_script.evaluation_output_dir(run)
    assert first.name[:4].isdigit() and train_script.evaluation_output_dir(run) == first
    assert train_script.evaluation_output_dir(tmp_path) is None  # no trained run there


def test_a_checkpoint_that_monitors_nothing_tests_the_final_weights(compose_cfg, tmp_path: Path) -> None:
    # 3 epochs of 2 steps, validating (and so saving) every second epoch: the newest checkpoint is
    # from step 4, the final weights from step 6; the test must evaluate the latter.
    cfg = compose_cfg(
        [
            "experiment=samplers/gmm25_tb",
            "trainer=cpu",
            *TINY,
            "data.steps_per_epoch=2",
            "trainer.max_epochs=3",
            "trainer.check_val_every_n_epoch=2",
            "callbacks.sample_plots=null",
            f"paths.log_dir={tmp_path}",
        ],
        tmp_path / "run",
    )
    assert cfg.callbacks.model_checkpoint.monitor is None
    metric_dict, object_dict = train_script.train(cfg)
    model, datamodule = object_dict["model"], object_dict["datamodule"]
    assert object_dict["trainer"].global_step == 6
    newest = object_dict["trainer"].checkpoint_callback.best_model_path
    assert newest.endswith("step_000004.ckpt")
    # testing did not load the step-4 checkpoint: the model still holds the final weights ...
    saved = _load(Path(newest))["state_dict"]
    assert not torch.equal(model.state_dict()["net.drift.head.1.0.weight"], saved["net.drift.head.1.0.weight"])
    # ... and the test metrics are theirs
    batch = next(iter(datamodule.test_dataloader()))
    final = model.evaluate(batch, model.evaluation_generator(0, "test"))
    assert metric_dict["test/elbo"] == pytest.approx(final["elbo"].item(), rel=1e-6)


def test_bf16_mixed_runs_on_cpu(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg(
        [*TINY_TWO_STEPS, "trainer.precision=bf16-mixed", f"paths.log_dir={tmp_path}"],
        tmp_path / "run",
    )
    metric_dict, object_dict = train_script.train(cfg)
    trainer = object_dict["trainer"]
    assert trainer.precision == "bf16-mixed"
    assert trainer.global_step == 2
    assert math.isfinite(metric_dict["val/elbo"]) and math.isfinite(metric_dict["test/elbo"])
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_tensorboard_hparams_tab_lists_the_settings_beside_the_final_metrics(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg(
        [*TINY_TWO_STEPS, "logger=tensorboard", "callbacks.sample_plots=null", f"paths.log_dir={tmp_path}"],
        tmp_path / "run",
    )
    metric_dict, _ = train_script.train(cfg)
    events = EventAccumulator(str(tmp_path / "run" / "tensorboard"))
    events.Reload()
    content = events.PluginTagToContent("hparams")
    experiment = HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
    shown = {info.name.tag for info in experiment.metric_infos}
    assert {"test/elbo", "val/elbo", "test/w2"} <= shown <= set(events.Tags()["scalars"])
    # the training metrics never reached the logger (2 steps, logged every 50): no empty columns
    assert "train/loss" in metric_dict and "train/loss" not in shown
    start = HParamsPluginData.FromString(content["_hparams_/session_start_info"]).session_start_info
    assert start.hparams["model/num_steps"].number_value == 8
    assert start.hparams["seed"].number_value == cfg.seed
    assert start.hparams["model/_target_"].string_value.endswith("DiffusionSampler")
    assert start.hparams["task_name"].string_value == cfg.task_name
    # the metrics are not logged a second time (Lightning's log_hyperparams(params, metrics) would
    # add a point at step 0 to every curve)
    assert [step for step, _ in tensorboard_scalars(tmp_path / "run" / "tensorboard", "test/elbo")] == [2]


@pytest.mark.parametrize("local_search_mode", ["official", "paper"])
def test_resume_from_run_directory_equals_uninterrupted_run(train_cli, tmp_path: Path, local_search_mode: str) -> None:
    # TB + exploration + local search: the replay buffers, the MALA step size, the module's and the
    # callback's random streams and the exploration schedule must all come back from last.ckpt.
    # The experiment's official mode keeps two buffers and restarts MALA from the initial step;
    # the paper's mode carries the adapted step over.
    common = [
        "experiment=samplers/gmm25_tb_expl_ls",
        "trainer=cpu",
        f"callbacks.local_search.local_search_mode={local_search_mode}",
        *TINY,
        "data.steps_per_epoch=4",
        "trainer.check_val_every_n_epoch=1",
        *TINY_LOCAL_SEARCH,
        "test=false",
        "seed=7",
        "trainer.log_every_n_steps=1",
        "logger=many_loggers",
    ]
    full, half = _train_whole_and_half(train_cli, common, tmp_path)
    assert _load(half / "checkpoints" / "last.ckpt")["global_step"] == 4
    # what a run killed after its checkpoint leaves in metrics.csv: rows of the steps it will
    # train again, and a row cut short; and in TensorBoard, the events of those steps
    metrics = half / "csv" / "metrics.csv"
    header = metrics.read_text().splitlines()[0].split(",")
    with metrics.open("a", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=header)
        writer.writerows([{"step": step, "epoch": 1, "train/loss": -1.0} for step in (4, 5)])
        file.write("1,0.00")
    with SummaryWriter(half / "tensorboard") as events:
        for step in (4, 5):
            events.add_scalar("train/loss", -1.0, step)

    # Resume from the run directory alone: its saved config, its last.ckpt. An attempt that is
    # refused (a group choice on a saved config) leaves the saved files as they were.
    from_run = ["--config-path", str(half / ".hydra"), "--config-name", "config", "ckpt_path=last"]
    saved = {name: (half / ".hydra" / name).read_bytes() for name in ("config.yaml", "hydra.yaml", "overrides.yaml")}
    result = train_cli([*from_run, "trainer=ddp_sim"])
    assert result.returncode != 0 and "is a name" in result.stdout
    assert {name: (half / ".hydra" / name).read_bytes() for name in saved} == saved
    result = train_cli([*from_run, "+experiment=samplers/gmm25_pis"])  # an experiment is a group choice too
    assert result.returncode != 0 and "experiment='samplers/gmm25_pis' is a name" in result.stdout
    # a resume with other model settings (the same shapes) would continue another sampler: refused,
    # the saved config untouched
    result = train_cli([*from_run, "model.sigma2=1.0"])
    assert result.returncode != 0
    assert "model.sigma2: checkpoint 5.0, config 1.0" in result.stdout
    assert "or set check_ckpt_hparams=false to continue training with this command's settings" in result.stdout
    assert {name: (half / ".hydra" / name).read_bytes() for name in saved} == saved
    # the saved config names its run directory: no hydra.run.dir needed
    result = train_cli([*from_run, "trainer.max_steps=8"])
    assert result.returncode == 0, result.stdout[-5000:]
    assert "ckpt_path=last: resuming from" in result.stdout
    assert "exists and is not empty" not in result.stdout  # Lightning's warning, which reads as a fault here
    overrides = list(OmegaConf.load(half / ".hydra" / "overrides.yaml"))
    assert overrides[0] == "experiment=samplers/gmm25_tb_expl_ls" and overrides[-2:] == ["ckpt_path=last", "trainer.max_steps=8"]
    # evaluating the run with its own config (in its directory) keeps the training's config and log
    saved = {name: (half / ".hydra" / name).read_bytes() for name in saved}
    run_log = (half / "train.log").read_bytes()
    result = train_cli([*from_run, "train=false", "test=true"])
    assert result.returncode == 0, result.stdout[-5000:]
    assert {name: (half / ".hydra" / name).read_bytes() for name in saved} == saved
    assert (half / "train.log").read_bytes() == run_log
    (evaluation,) = (half / "evaluations").iterdir()
    assert "Test: test/delta_log_z = " in (evaluation / "train.log").read_text()
    assert f"Output directory: {evaluation}" in result.stdout and "ckpt_path=last: testing" in result.stdout

    a, b = _load(full / "checkpoints" / "last.ckpt"), _load(half / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 8 and a["epoch"] == b["epoch"] == 1
    # on one CPU thread the continuation is the same computation: bit for bit
    _assert_same_tree(a["state_dict"], b["state_dict"], "state_dict", exact=True)
    _assert_same_tree(a["optimizer_states"], b["optimizer_states"], "optimizer_states", exact=True)
    # ModelCheckpoint states name their own run directory.
    _assert_same_tree(_rebase(a["callbacks"], str(full), str(half)), b["callbacks"], "callbacks", exact=True)

    # The resumed run appended to the same metrics file: one validation per epoch, 2 epochs, with
    # the uninterrupted run's figures.
    rows = [r for r in read_csv_rows(half / "csv" / "metrics.csv") if r.get("val/elbo")]
    full_rows = [r for r in read_csv_rows(full / "csv" / "metrics.csv") if r.get("val/elbo")]
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert [(r["val/elbo"], r["val/w2"]) for r in rows] == [(r["val/elbo"], r["val/w2"]) for r in full_rows]
    # and every training row once, as the uninterrupted run logged it
    def training_rows(run: Path) -> list[tuple[str, str]]:
        return [(r["step"], r["train/loss"]) for r in read_csv_rows(run / "csv" / "metrics.csv") if r.get("train/loss")]

    assert training_rows(half) == training_rows(full) and len(training_rows(full)) == 8
    # TensorBoard shows each step once too
    tensorboard_losses = [tensorboard_scalars(run / "tensorboard", "train/loss") for run in (half, full)]
    assert tensorboard_losses[0] == tensorboard_losses[1] and [step for step, _ in tensorboard_losses[1]] == list(range(8))

    # Evaluate a run directory only (train=false): tests its newest checkpoint.
    result = train_cli(
        [
            "experiment=samplers/gmm25_tb_expl_ls",
            "trainer=cpu",
            *TINY,
            "train=false",
            f"ckpt_path={full}",
            f"hydra.run.dir={tmp_path / 'eval'}",
        ]
    )
    assert result.returncode == 0, result.stdout[-5000:]
    assert "test/elbo" in result.stdout
    # an evaluation saves no checkpoints: Lightning's warning about their state is left out
    assert "The dirpath has changed" not in result.stdout
    # the test figures are in the run's text log too (a resumed run's metrics.csv drops them)
    (test_line,) = [line for line in (tmp_path / "eval" / "train.log").read_text().splitlines() if "- Test: " in line]
    assert "test/elbo = " in test_line and "test/w2 = " in test_line
    # ... and refuses to evaluate it as another sampler (weights of the same shapes, other steps)
    result = train_cli(
        [
            "experiment=samplers/gmm25_tb_expl_ls",
            "trainer=cpu",
            *TINY,
            "model.num_steps=20",
            "train=false",
            f"ckpt_path={full}",
            f"hydra.run.dir={tmp_path / 'eval_other'}",
        ]
    )
    assert result.returncode != 0
    assert "model.num_steps: checkpoint 8, config 20" in result.stdout
    # the training-only data setting (data.steps_per_epoch=4 in training) is not: it cannot change a test
    assert (
        "Repeat the training overrides (model.num_steps=8), or evaluate with the run's own "
        f"config (--config-path {full}/.hydra"
    ) in result.stdout


def test_checkpoint_hyperparameters_are_compared_before_evaluating(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = run / "checkpoints" / "last.ckpt"
    torch.save({"hyper_parameters": {"num_steps": 20, "loss": "tb", "pair": (0, 2), "clip": None}}, ckpt)
    # stand-ins for LightningModules: ``hparams`` as ``save_hyperparameters`` leaves them
    same = SimpleNamespace(hparams={"num_steps": 20, "loss": "tb", "pair": [0, 2], "clip": None, "added_later": 1})
    train_script.check_checkpoint_hparams(same, str(ckpt), must_match=True)  # tuples read as lists
    other = SimpleNamespace(hparams={"num_steps": 100, "loss": "tb", "pair": [0, 1], "clip": None})
    with pytest.raises(ValueError) as error:
        train_script.check_checkpoint_hparams(other, str(ckpt), must_match=True)
    assert (
        "  model.num_steps: checkpoint 20, config 100\n  model.pair: checkpoint [0, 2], config [0, 1]\n"
        "Repeat the training overrides (model.num_steps=20 model.pair=[0,2]), or set check_ckpt_hparams=false"
    ) in str(error.value)
    warned: list[str] = []
    monkeypatch.setattr(train_script, "_warn", warned.append)
    train_script.check_checkpoint_hparams(other, str(ckpt), must_match=False)
    assert len(warned) == 1 and "model.num_steps: checkpoint 20, config 100" in warned[0]
    # a training-only data setting warns when resuming (the epochs change), not when evaluating
    torch.save({"hyper_parameters": {}, "datamodule_hyper_parameters": {"steps_per_epoch": 4, "batch_size": 8}}, ckpt)
    data = SimpleNamespace(hparams={"steps_per_epoch": 100, "batch_size": 300})
    warned.clear()
    train_script.check_checkpoint_hparams(SimpleNamespace(hparams={}), str(ckpt), True, data)
    assert warned == []
    train_script.check_checkpoint_hparams(SimpleNamespace(hparams={}), str(ckpt), True, data, resume=True)
    assert len(warned) == 1 and "  data.steps_per_epoch: checkpoint 4, config 100\nRepeat" in warned[0]


def test_a_setting_added_later_compares_with_what_older_runs_had(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A language-model run saved before attention_weight_dropout existed dropped its attention
    # weights at the blocks' rate (null); the config's 0.0 would change it silently on resume.
    ckpt = tmp_path / "last.ckpt"
    net = {"dropout": 0.1, "attention": {"num_searches": 8, "query_chunk_size": None}}
    torch.save({"hyper_parameters": {}, "callbacks": {"ConfigInCheckpoint": {"config": {"model": {"net": net}}}}}, ckpt)
    model = SimpleNamespace(hparams={})
    current = {"net": {**net, "attention_weight_dropout": 0.0, "attention": {**net["attention"], "retrieval_scoring": "dot"}}}
    with pytest.raises(ValueError, match=r"model.net.attention_weight_dropout: checkpoint None, config 0.0") as error:
        train_script.check_checkpoint_hparams(model, str(ckpt), True, config={"model": current}, resume=True)
    assert "Repeat the training overrides (model.net.attention_weight_dropout=null)" in str(error.value)
    # an evaluation (eval mode: no dropout) of the old run is not refused for it
    train_script.check_checkpoint_hparams(model, str(ckpt), True, config={"model": current})
    # the old behaviour, and an execution setting (query chunks), resume
    current["net"]["attention_weight_dropout"] = None
    current["net"]["attention"]["query_chunk_size"] = 64
    warned: list[str] = []
    monkeypatch.setattr(train_script, "_warn", warned.append)
    train_script.check_checkpoint_hparams(model, str(ckpt), True, config={"model": current}, resume=True)
    assert warned == []


RELATIONAL_TINY = [
    "experiment=relational/same_diff_corelnet",
    "trainer=cpu",
    "extras.print_config=false",
    "data.batch_size=8",
    "data.train_size=16",
    "data.val_size=16",
    "data.test_size=16",
    "trainer.max_epochs=1",
]


def test_evaluation_compares_the_data_and_network_the_checkpoint_was_trained_with(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The network (model.net, not among the module's hyperparameters) and the data (another
    # data.seed holds out other glyphs: a test on training objects) are compared too, through the
    # config that ConfigInCheckpoint saves; batch sizes may differ.
    run = tmp_path / "run"
    train_script.train(compose_cfg([*RELATIONAL_TINY, "seed=3", "test=false"], run))
    evaluate = [*RELATIONAL_TINY, "seed=3", "train=false", f"ckpt_path={run}"]
    with pytest.raises(ValueError) as error:
        train_script.train(compose_cfg([*evaluate, "model.net.normalization=none", "data.seed=1"], tmp_path / "eval"))
    assert (
        "  data.seed: checkpoint 3, config 1\n  model.net.normalization: checkpoint 'softmax', config 'none'\n"
        "Repeat the training overrides (data.seed=3 model.net.normalization=softmax)"
    ) in str(error.value)
    # the data alone: a warning (an evaluation may take another test set); batch sizes: nothing
    warned: list[str] = []
    monkeypatch.setattr(train_script, "_warn", warned.append)
    train_script.train(compose_cfg([*evaluate, "data.seed=1"], tmp_path / "eval_seed"))
    assert len(warned) == 1 and "  data.seed: checkpoint 3, config 1\n" in warned[0]
    metrics, _ = train_script.train(compose_cfg([*evaluate, "data.batch_size=4"], tmp_path / "eval_batch"))
    assert len(warned) == 1 and 0.0 <= metrics["test/acc"] <= 1.0


def test_ddp_resume_restores_every_ranks_streams_and_buffers(train_cli, tmp_path: Path) -> None:
    # Lightning writes rank 0's checkpoint; the sampler's stream and the local-search state of
    # every rank go into it, so that two processes resumed repeat the uninterrupted run exactly
    common = [
        "experiment=samplers/gmm25_tb_expl_ls",
        "trainer=ddp_sim",
        *TINY,
        "data.steps_per_epoch=8",
        "trainer.check_val_every_n_epoch=2",
        *TINY_LOCAL_SEARCH,
        "callbacks.sample_plots=null",
        "test=false",
        "seed=3",
    ]
    full, half = _train_whole_and_half(train_cli, common, tmp_path)
    saved = _load(half / "checkpoints" / "last.ckpt")
    assert saved["sampler_rng_state"].shape[0] == 2  # both ranks' streams
    (local_search,) = [state for key, state in saved["callbacks"].items() if key.startswith("LocalSearchReplay")]
    assert len(local_search["other_ranks"]) == 1 and local_search["other_ranks"][0]["global_rank"] == 1
    assert not torch.equal(local_search["buffer"]["x"], local_search["other_ranks"][0]["buffer"]["x"])
    result = train_cli([*common, "trainer.max_steps=8", "ckpt_path=last", f"hydra.run.dir={half}"])
    assert result.returncode == 0, result.stdout[-5000:]
    a, b = _load(full / "checkpoints" / "last.ckpt"), _load(half / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 8
    _assert_same_tree(a["state_dict"], b["state_dict"], "state_dict", exact=True)
    _assert_same_tree(a["optimizer_states"], b["optimizer_states"], "optimizer_states", exact=True)
    local_search_states = [
        {key: state for key, state in run["callbacks"].items() if key.startswith("LocalSearchReplay")} for run in (a, b)
    ]
    _assert_same_tree(*local_search_states, "local search", exact=True)
    assert torch.equal(a["sampler_rng_state"], b["sampler_rng_state"])


def test_ddp_resume_within_an_epoch_reads_each_ranks_remaining_batches(train_cli, tmp_path: Path) -> None:
    # Two processes, a shuffled dataset under Lightning's distributed sampler wrapper: 32 trials,
    # 4 per rank and step, 4 steps per epoch. Resumed from the checkpoint of step 6 (epoch 1,
    # batch 2), each rank reads its last 2 batches of epoch 1, as the uninterrupted run did.
    common = [
        "experiment=attention/esbn_rmts_compositional",
        "trainer=ddp_sim",
        "data.train_size=32",
        "data.val_size=16",
        "data.test_size=16",
        "data.batch_size=4",
        "trainer.max_epochs=2",
        "callbacks.model_checkpoint.every_n_train_steps=3",
        "callbacks.model_checkpoint.save_top_k=-1",
        "callbacks.model_checkpoint.monitor=null",
        "callbacks.lr_monitor=null",
        "logger=[]",
        "test=false",
        "seed=3",
    ]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    result = train_cli([*common, f"hydra.run.dir={full}"])
    assert result.returncode == 0, result.stdout[-5000:]
    checkpoint = full / "checkpoints" / "epoch_001-step_000006.ckpt"
    assert _load(checkpoint)["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches": 2, "batch_size": 4}]
    result = train_cli([*common, f"ckpt_path={checkpoint}", f"hydra.run.dir={resumed}"])
    assert result.returncode == 0, result.stdout[-5000:]
    a, b = _load(full / "checkpoints" / "last.ckpt"), _load(resumed / "checkpoints" / "last.ckpt")
    assert a["global_step"] == b["global_step"] == 8
    _assert_same_tree(a["state_dict"], b["state_dict"], "state_dict", exact=True)


def test_a_fresh_run_refuses_a_directory_that_holds_another_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # e.g. a second train.py in one SLURM allocation: same job id, same default run directory
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    train_script.check_run_dir_is_free(None, tmp_path)  # empty: fine
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"")
    with pytest.raises(FileExistsError, match=r"already holds a run .*ckpt_path=last, or .*hydra.run.dir=<dir>"):
        train_script.check_run_dir_is_free(None, tmp_path)
    train_script.check_run_dir_is_free("last", tmp_path)  # resuming it: fine
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    train_script.check_run_dir_is_free(None, tmp_path)  # a requeued job resumes by itself


def test_a_group_choice_on_a_saved_config_names_the_command_that_takes_it(compose_cfg, tmp_path: Path) -> None:
    # `--config-path <run>/.hydra` has no config groups: trainer=ddp_sim arrives as a string
    cfg = compose_cfg(["experiment=samplers/gmm25_tb", "trainer=cpu"], tmp_path)
    cfg.trainer = "ddp_sim"
    with pytest.raises(ValueError, match=r"trainer='ddp_sim' is a name.*ckpt_path=last hydra.run.dir=<run> trainer=ddp_sim"):
        train_script.train(cfg)


def _stat(path: Path) -> tuple[int, int] | None:
    """(size, mtime in ns) of ``path``, ``None`` when it does not exist."""
    return (path.stat().st_size, path.stat().st_mtime_ns) if path.exists() else None


SLURM_ENV = {
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "train",
    "SLURM_NTASKS": "1",
    "SLURM_NTASKS_PER_NODE": "1",
    "SLURM_NNODES": "1",
    "SLURM_NODEID": "0",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODELIST": "localhost",
}


def test_slurm_environment_is_detected_and_requeued_job_resumes(
    train_cli, tmp_path: Path
) -> None:
    args = [
        "experiment=samplers/gmm25_tb",
        "trainer=slurm",
        "trainer.accelerator=cpu",
        *TINY,
        "data.steps_per_epoch=2",
        "trainer.check_val_every_n_epoch=1",
        "test=false",
        f"paths.log_dir={tmp_path}",
    ]
    cwd_log = ROOT / "train.log"  # train_cli runs from the repository root
    cwd_log_before = _stat(cwd_log)
    result = train_cli([*args, "trainer.max_steps=2"], env=SLURM_ENV)
    assert result.returncode == 0, result.stdout[-5000:]
    assert "cluster environment SLURMEnvironment" in result.stdout
    run_dir = tmp_path / "samplers" / "gmm25_tb" / "runs" / "4242"
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    # configs/hydra/default.yaml: the run's log and composed config live in the run directory
    # (as train.py's docstring says), not in the directory train.py was started from.
    assert "Output directory: " + str(run_dir) in (run_dir / "train.log").read_text()
    assert _stat(cwd_log) == cwd_log_before
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / ".hydra" / "overrides.yaml").is_file()

    # The same job again after a requeue: same directory, resumes by itself.
    result = train_cli([*args, "trainer.max_steps=4"], env={**SLURM_ENV, "SLURM_RESTART_COUNT": "1"})
    assert result.returncode == 0, result.stdout[-5000:]
    assert "resuming from" in result.stdout
    assert _single_run_dir(tmp_path, "samplers/gmm25_tb") == run_dir
    assert _load(run_dir / "checkpoints" / "last.ckpt")["global_step"] == 4

    # After a preemption (Lightning's hpc_ckpt_<n>.ckpt, here the step-4 checkpoint) the requeued
    # job trains on and tests its final weights: Lightning's test under SLURM would load the
    # newest hpc checkpoint, so the finished fit moves it into checkpoints/.
    shutil.copy(run_dir / "checkpoints" / "last.ckpt", run_dir / "hpc_ckpt_1.ckpt")
    result = train_cli(
        [*args[:-2], "test=true", args[-1], "trainer.max_steps=6"], env={**SLURM_ENV, "SLURM_RESTART_COUNT": "2"}
    )
    assert result.returncode == 0, result.stdout[-5000:]
    assert "hpc_ckpt_1.ckpt" in result.stdout.split("Testing current weights")[0]  # resumed from it
    assert "Restoring states" not in result.stdout.split("Testing current weights")[1]
    assert not (run_dir / "hpc_ckpt_1.ckpt").exists() and (run_dir / "checkpoints" / "hpc_ckpt_1.ckpt").is_file()

    # A second, fresh train.py in the same allocation is refused before anything of the run is
    # touched: its saved config stays the first run's (Hydra's own copy came before the check).
    saved = {name: (run_dir / ".hydra" / name).read_bytes() for name in ("config.yaml", "hydra.yaml", "overrides.yaml")}
    result = train_cli([*args, "seed=5", "trainer.max_steps=2"], env=SLURM_ENV)
    assert result.returncode != 0 and "already holds a run" in result.stdout
    assert {name: (run_dir / ".hydra" / name).read_bytes() for name in saved} == saved


def test_slurm_configs_take_the_allocation_and_submitit_switches_lightning_requeue_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLURM_NNODES", "2")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(
                config_name="train",
                overrides=["experiment=samplers/gmm25_tb", "trainer=slurm", "hydra/launcher=slurm"],
                return_hydra_config=True,
            )
    finally:
        GlobalHydra.instance().clear()
    assert cfg.trainer.strategy == "ddp"
    assert cfg.trainer.num_nodes == 2 and cfg.trainer.devices == 4
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.gpus_per_node == launcher.tasks_per_node
    assert "export TENFOLD_SLURM_AUTO_REQUEUE=false" in launcher.setup

    plugin, checkpoint_io = instantiate(cfg.trainer.plugins)
    assert type(plugin).__name__ == "SLURMEnvironment" and not plugin.auto_requeue
    assert type(checkpoint_io).__name__ == "AtomicCheckpointIO"
    assert instantiate(cfg.callbacks.preemption_checkpoint).requeue
    monkeypatch.setenv("TENFOLD_SLURM_AUTO_REQUEUE", "false")
    assert not instantiate(cfg.callbacks.preemption_checkpoint).requeue


def test_basic_sweep_returns_the_optimized_metric_per_job(train_cli, tmp_path: Path) -> None:
    # No path override: the sweep resolves its directory from paths.root_dir before Hydra sets
    # its runtime (PROJECT_ROOT stands in for the working directory, which is the repository)
    result = train_cli(
        [
            "-m",
            *TINY_SWEEP_JOB,
            "seed=1,2",
        ],
        env={"PROJECT_ROOT": str(tmp_path)},
    )
    assert result.returncode == 0, result.stdout[-5000:]
    assert result.stdout.count("optimized_metric val/elbo = ") == 2
    (sweep,) = (tmp_path / "logs" / "samplers" / "gmm25_tb" / "multiruns").iterdir()
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["0", "1"]
    # each job's final metrics, and their mean and std over the seeds when the sweep ends
    returned = [float(v) for v in re.findall(r"optimized_metric val/elbo = (\S+)", result.stdout)]
    saved = [json.loads((sweep / job / "metrics.json").read_text()) for job in ("0", "1")]
    assert [job["overrides"][-1] for job in saved] == ["seed=1", "seed=2"]
    assert sorted(job["optimized_value"] for job in saved) == sorted(returned)
    elbos = [job["metrics"]["val/elbo"] for job in saved]
    assert elbos[0] != elbos[1]
    (grouped,) = read_csv_rows(sweep / "summary_grouped.csv")
    assert grouped["jobs"] == "2" and "seed" not in grouped["setting"]
    assert float(grouped["val/elbo_mean"]) == pytest.approx(sum(elbos) / 2)
    assert float(grouped["val/elbo_std"]) == pytest.approx(abs(elbos[0] - elbos[1]) / 2**0.5)
    assert [row["job"] for row in read_csv_rows(sweep / "summary.csv")] == ["0", "1"]
    assert "mean ± std over seed" in result.stdout
    # a job resumed later records the overrides that made it, then the resume's
    result = train_cli(["--config-path", str(sweep / "1" / ".hydra"), "--config-name", "config", "ckpt_path=last", "trainer.max_steps=3"])
    assert result.returncode == 0, result.stdout[-5000:]
    overrides = json.loads((sweep / "1" / "metrics.json").read_text())["overrides"]
    assert "seed=2" in overrides and overrides[-2:] == ["ckpt_path=last", "trainer.max_steps=3"]


def test_a_sweep_with_a_failed_job_keeps_its_summary(train_cli, tmp_path: Path) -> None:
    # Hydra's sweeper re-raises a failed job's error before its end-of-sweep callbacks
    result = train_cli(["-m", *TINY_SWEEP_JOB, "seed=1", "data.batch_size=16,-3", f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    assert result.returncode != 0
    rows = read_csv_rows(tmp_path / "sweep" / "summary.csv")
    assert [(row["job"], row["status"][:7]) for row in rows] == [("0", "ok"), ("1", "failed:")]
    assert "data.batch_size=-3" in rows[1]["overrides"] and rows[0]["val/elbo"] != ""


def test_optuna_sweep_as_the_readme_gives_it(train_cli, tmp_path: Path) -> None:
    result = train_cli(
        [
            "-m",
            "hydra/sweeper=optuna",
            "hydra.sweeper.n_trials=2",
            "hydra.sweeper.direction=maximize",
            "model.sigma2=interval(1.0,10.0)",
            *TINY_SWEEP_JOB,
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ]
    )
    assert result.returncode == 0, result.stdout[-5000:]
    assert result.stdout.count("optimized_metric val/elbo = ") == 2
    best = OmegaConf.load(tmp_path / "sweep" / "optimization_results.yaml")
    assert best.name == "optuna" and 1.0 <= best.best_params["model.sigma2"] <= 10.0
    assert "setup plugin alembic" not in result.stdout  # the sweeper's imports, quiet


def test_a_training_run_removes_what_a_kill_while_saving_left(tmp_path: Path) -> None:
    run = tmp_path / "run"
    left = [run / "checkpoints" / ".last.ckpt.partial", run / ".hydra" / ".config.yaml.partial", run / ".metrics.json.partial"]
    kept = [run / "checkpoints" / "last.ckpt", run / "notes.partial"]
    for path in left + kept:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    train_script.remove_partial_files(run)
    assert [path.exists() for path in left + kept] == [False, False, False, True, True]


def test_log_files_move_to_the_evaluation_directory(tmp_path: Path) -> None:
    run, evaluation = tmp_path / "run", tmp_path / "run" / "evaluations" / "now"
    run.mkdir()
    root = logging.getLogger()
    handler = logging.FileHandler(run / "train.log")
    handler.setFormatter(logging.Formatter("[%(name)s] %(message)s"))
    handler.setLevel(logging.INFO)
    root.addHandler(handler)
    level = root.level
    root.setLevel(logging.INFO)
    try:
        logging.getLogger("train").info("training")
        train_script.move_log_files(run, evaluation)
        logging.getLogger("train").info("evaluating")
    finally:
        root.setLevel(level)
        for moved in [h for h in root.handlers if isinstance(h, logging.FileHandler) and "run" in h.baseFilename]:
            root.removeHandler(moved)
            moved.close()
    assert handler not in root.handlers
    assert (run / "train.log").read_text() == "[train] training\n"
    assert (evaluation / "train.log").read_text() == "[train] evaluating\n"


def test_a_run_stopped_by_sigterm_fails_and_says_how_to_resume(train_cli, tmp_path: Path) -> None:
    # Lightning ends a run that receives SIGTERM with a SystemExit without a code: exit status 0,
    # which a job script's `&&` or a scheduler reads as success
    result = train_cli(
        [
            *TINY_SWEEP_JOB,
            "trainer.max_steps=6",
            "+callbacks.sigterm._target_=tests.run_helpers.SignalAtStep",
            "+callbacks.sigterm.step=2",
            f"hydra.run.dir={tmp_path / 'run'}",
        ]
    )
    assert result.returncode == 143, result.stdout[-3000:]
    assert "stopped by SIGTERM: resume the run from its newest checkpoint with ckpt_path=last" in result.stdout
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_unknown_experiment_lists_the_available_ones(train_cli) -> None:
    result = train_cli(["experiment=samplers/gmm25_tbb"])
    assert result.returncode != 0
    assert "Unknown experiment 'samplers/gmm25_tbb'" in result.stdout
    assert "Did you mean: samplers/gmm25_tb" in result.stdout
    for name in train_script.available_experiments(CONFIG_DIR):
        assert f"  {name}\n" in result.stdout


def test_check_group_overrides_handles_sweeps_and_known_names() -> None:
    known = train_script.available_experiments(CONFIG_DIR)[0]
    check = train_script.check_group_overrides
    assert check([f"experiment={known}", "trainer=cpu"], CONFIG_DIR) is None
    assert check(["experiment=null"], CONFIG_DIR) is None
    assert check(["experiment=glob(samplers/*)"], CONFIG_DIR) is None
    message = check([f"experiment={known},nope/nothing"], CONFIG_DIR)
    assert message is not None and "Unknown experiment 'nope/nothing'" in message
    assert known not in message.splitlines()[0]
    # Hydra's append (+) and force (++) forms of the override are checked as well
    for prefix in ("+", "++"):
        message = check([f"{prefix}experiment=nope/x"], CONFIG_DIR)
        assert message is not None and "Unknown experiment 'nope/x'" in message, prefix
        assert "Available experiments" in message and f"  {known}" in message.splitlines()
    # every group: nested choices get what Hydra does not give them, the options
    message = check(["model=samplers/diffusion_samplr", "trainer=cpu", "logger=[csv,tensorboard]"], CONFIG_DIR)
    assert message is not None and message.splitlines()[:3] == [
        "Unknown model 'samplers/diffusion_samplr': there is no configs/model/samplers/diffusion_samplr.yaml.",
        "  Did you mean: samplers/diffusion_sampler?",
        "Available model configs (python train.py model=<name>):",
    ]
    assert "  relational/corelnet" in message.splitlines()
    assert check(["hydra/launcher=slurm", "data=samplers/gmm25", "callbacks=[default,local_search]"], CONFIG_DIR) is None


def test_group_choices_with_a_package_are_checked_as_choices() -> None:
    # attention@model.net.attention=<name> chooses the attention config of that key; a typo got
    # a "Did you mean: model.net.attention=..." that set the factory to a string
    check = train_script.check_group_overrides
    assert check(["experiment=attention/contextual_retrieval_compositional", "attention@model.net.attention=multihead"]) is None
    message = check(["attention@model.net.encoder.attention=multihed"], CONFIG_DIR)
    assert message is not None and message.splitlines() == [
        "Unknown attention@model.net.encoder.attention 'multihed': there is no configs/attention/multihed.yaml.",
        "  Did you mean: multihead?",
        "Available attention configs (python train.py attention@model.net.encoder.attention=<name>):",
        "  compositional",
        "  multihead",
    ]
    assert train_script.suggest_override_keys(["trainer=cpu", "attention@model.net.attention=multihed"]) is None


def _extra_experiments(root: Path) -> Path:
    """A config directory of one's own beside the project's: ``mine/good`` (global package),
    ``mine/late`` (its package line after a comment, which Hydra ignores) and ``mine/none``."""
    experiments = root / "experiment" / "mine"
    experiments.mkdir(parents=True)
    (experiments / "good.yaml").write_text("# @package _global_\n# my run\ntask_name: mine/good\n")
    (experiments / "late.yaml").write_text("# my run\n# @package _global_\ntask_name: mine/late\n")
    (experiments / "none.yaml").write_text("task_name: mine/none\ntrainer:\n  max_steps: 1\n")
    return root


def test_config_dirs_of_ones_own_are_searched_by_the_choice_checks(tmp_path: Path) -> None:
    extra = _extra_experiments(tmp_path / "extra")
    check = train_script.check_group_overrides
    # Hydra's ways of adding a config directory: --config-dir / -cd, hydra.searchpath
    for argv in (
        ["--config-dir", str(extra), "experiment=mine/good"],
        [f"-cd={extra}", "experiment=mine/good"],
        [f"hydra.searchpath=[file://{extra}]", "experiment=mine/good"],
        [f"+hydra.searchpath=[{extra}]", "experiment=mine/good"],
    ):
        assert train_script.config_search_dirs(argv, CONFIG_DIR) == [CONFIG_DIR, extra.resolve()], argv
        assert check(argv, CONFIG_DIR) is None, argv
    message = check(["-cd", str(extra), "experiment=mine/goo"], CONFIG_DIR)
    assert message is not None and message.splitlines()[:2] == [
        f"Unknown experiment 'mine/goo': there is no experiment/mine/goo.yaml in {CONFIG_DIR}, {extra.resolve()}.",
        "  Did you mean: mine/good, mine/none?",
    ]
    assert "  mine/good" in message.splitlines() and "  samplers/gmm25_tb" in message.splitlines()
    # without the directory the choice is unknown; a package search path only Hydra can read
    assert "Unknown experiment 'mine/good'" in (check(["experiment=mine/good"], CONFIG_DIR) or "")
    assert train_script.config_search_dirs(["hydra.searchpath=[pkg://somewhere]"], CONFIG_DIR) is None
    assert check(["hydra.searchpath=[pkg://somewhere]", "experiment=mine/goo"], CONFIG_DIR) is None
    # and so does one in the primary config, the only config file whose search path Hydra reads
    configs = tmp_path / "configs"
    (configs / "experiment").mkdir(parents=True)
    (configs / "train.yaml").write_text(f"hydra:\n  searchpath: [file://{extra}]\n")
    assert train_script.config_search_dirs([], configs) == [configs, extra.resolve()]


def test_experiment_files_need_the_global_package_header(tmp_path: Path, train_cli) -> None:
    extra = _extra_experiments(tmp_path / "extra")
    check = train_script.check_experiment_packages
    assert check(["-cd", str(extra), "experiment=mine/good"], CONFIG_DIR) is None
    for name in ("late", "none"):
        message = check(["-cd", str(extra), f"experiment=mine/{name}"], CONFIG_DIR)
        assert message is not None and message.startswith(f"{extra.resolve()}/experiment/mine/{name}.yaml lacks the header")
        assert "Make `# @package _global_` the file's first line" in message
    # every shipped experiment has it
    assert check([f"experiment={','.join(train_script.available_experiments(CONFIG_DIR))}"], CONFIG_DIR) is None
    # train.py stops before Hydra runs the default experiment with the file's keys under `experiment.`
    result = train_cli(["-cd", str(extra), "experiment=mine/none", "trainer=cpu", f"hydra.run.dir={tmp_path / 'run'}"])
    assert result.returncode != 0 and "mine/none.yaml lacks the header `# @package _global_`" in result.stdout
    assert not (tmp_path / "run").exists()
    # a composition that got past the command-line check (from Python, a sweep) stops in train()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name="train", overrides=[f"hydra.searchpath=[file://{extra}]", "experiment=mine/none"])
    finally:
        GlobalHydra.instance().clear()
    assert cfg.experiment.trainer.max_steps == 1 and cfg.trainer.max_steps != 1
    with pytest.raises(ValueError, match=r"experiment/<name>.yaml\) lacks the header `# @package _global_`"):
        train_script.check_groups_are_configs(cfg)


def test_unknown_override_key_names_the_key_and_the_fix(train_cli) -> None:
    result = train_cli(["experiment=samplers/gmm25_tb", "trainer.max_step=3"])
    assert result.returncode != 0
    assert "Key 'max_step' is not in struct" in result.stdout
    assert "+trainer.max_step=3" in result.stdout
    # and what was probably meant: Hydra's "+key" would add a key that nothing reads
    assert "'trainer.max_step' is not a key of this config. Did you mean: trainer.max_steps=3" in result.stdout


def test_override_key_suggestions_come_from_the_composed_config() -> None:
    args = ["experiment=samplers/gmm25_tb_expl_ls", "trainer=cpu", "model.net.langvin=true", "seed=3"]
    hint = train_script.suggest_override_keys(args)
    # the experiment's own keys count (its local-search callback), seed exists, dim is too far
    assert hint == "'model.net.langvin' is not a key of this config. Did you mean: model.net.langevin=true, model.net.langevin_grad_clip=true?"
    assert train_script.suggest_override_keys([*args[:2], "callbacks.local_search.capacity=9"]) is None
    unknown = train_script.suggest_override_keys(["trainer=cpu", "foo.bar=1"])
    assert unknown == "'foo.bar' is not a key of this config: python train.py trainer=cpu --cfg job lists its keys."
    # a bad group choice is Hydra's to report; a run's saved config has no group choices
    assert train_script.suggest_override_keys(["trainer=nope", "foo.bar=1"]) is None
    assert train_script.suggest_override_keys(["--config-path", "run/.hydra", "foo.bar=1"]) is None


def test_override_key_suggestions_read_the_configs_of_ones_own(tmp_path: Path) -> None:
    # an experiment outside the repository: the config was composed without it, so no hint came
    extra = tmp_path / "extra"
    (extra / "experiment" / "mine").mkdir(parents=True)
    (extra / "experiment" / "mine" / "run.yaml").write_text(
        "# @package _global_\ndefaults:\n  - override /data: samplers/gmm25\n  - override /model: samplers/diffusion_sampler\n"
    )
    expected = "'model.num_step' is not a key of this config. Did you mean: model.num_steps=3?"
    for search in (["-cd", str(extra)], [f"hydra.searchpath=[file://{extra}]"]):
        assert train_script.suggest_override_keys([*search, "experiment=mine/run", "model.num_step=3"]) == expected
    # a package on the search path (an installed package of one's own) keeps the hint too
    args = ["hydra.searchpath=[pkg://tenfold]", "experiment=samplers/gmm25_tb", "model.num_step=3"]
    assert train_script.suggest_override_keys(args) == expected


def test_a_sweep_that_would_start_its_own_ddp_processes_stops(compose_cfg, tmp_path: Path) -> None:
    # Lightning starts the other ranks with this command line, -m included: every rank would run
    # the whole sweep. One process, or processes started by SLURM, are fine.
    def as_sweep_job(overrides: list[str]):
        cfg = compose_cfg(overrides, tmp_path)
        with read_write(HydraConfig.get()):
            HydraConfig.get().mode = RunMode.MULTIRUN
        assert train_script.in_sweep()
        return cfg

    with pytest.raises(ValueError, match="A -m sweep cannot start DDP processes itself.*hydra/launcher=slurm"):
        train_script.train(as_sweep_job(["experiment=samplers/gmm25_tb", "trainer=ddp_sim", *TINY]))
    single = instantiate(as_sweep_job(["trainer=cpu"]).trainer, logger=False)
    train_script.check_sweep_starts_no_processes(single)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without GPU")
def test_gpu_trainer_without_gpu_says_use_cpu(train_cli, tmp_path: Path) -> None:
    result = train_cli(["experiment=samplers/gmm25_tb", "trainer=gpu", f"paths.log_dir={tmp_path}"])
    assert result.returncode != 0
    assert "no CUDA GPU is visible" in result.stdout
    assert "trainer=cpu" in result.stdout


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("seed=abc", "seed must be an int (or null), got 'abc'"),
        ("trainer.max_steps=1e4", "trainer.max_steps must be an int (or null), got 10000.0"),
        ("trainer.check_val_every_n_epoch=two", "trainer.check_val_every_n_epoch must be an int (or null), got 'two'"),
    ],
)
def test_values_of_the_wrong_type_are_named(override: str, message: str, compose_cfg, tmp_path: Path) -> None:
    # Lightning would fail with "'<' not supported between instances of 'str' and 'int'"
    cfg = compose_cfg(["experiment=samplers/gmm25_tb", "trainer=cpu", override], tmp_path / "run")
    with pytest.raises(TypeError, match=re.escape(message)):
        train_script.train(cfg)
    assert not (tmp_path / "run" / ".hydra").exists()


def test_train_false_without_checkpoint_is_refused(compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg(["experiment=samplers/gmm25_tb", "trainer=cpu", "train=false"], tmp_path)
    with pytest.raises(ValueError, match="ckpt_path=PATH"):
        train_script.train(cfg)
    # nor would anything run without the test (a run trained with test=false saves it in its config)
    cfg = compose_cfg(["experiment=samplers/gmm25_tb", "trainer=cpu", "train=false", "test=false", "ckpt_path=last"], tmp_path)
    with pytest.raises(ValueError, match="train=false with test=false runs nothing: add test=true"):
        train_script.train(cfg)


# The fix that the ckpt_path=last error of train=false gives.
TRAIN_FALSE_LAST_FIX = (
    "With train=false give a checkpoint file or a run directory: ckpt_path=logs/<task>/runs/<run>"
)


def test_an_added_key_of_a_missing_callback_is_refused_with_the_defaults_form(compose_cfg, tmp_path: Path) -> None:
    # Hydra's "+key" advice for callbacks.local_search.capacity on an experiment without local
    # search makes an entry without _target_, which would be skipped: no local search, no error
    cfg = compose_cfg(["experiment=samplers/gmm25_tb", "trainer=cpu", "+callbacks.local_search.capacity=10"], tmp_path)
    with pytest.raises(ValueError, match=re.escape("callbacks.local_search has no _target_")) as error:
        train_script.instantiate_group(cfg.callbacks, "callbacks")
    assert "callbacks=[default,local_search]" in str(error.value)
    cfg = compose_cfg(["experiment=samplers/gmm25_tb", "trainer=cpu", "callbacks=[default,local_search]"], tmp_path)
    names = {type(callback).__name__ for callback in train_script.instantiate_group(cfg.callbacks, "callbacks")}
    assert "LocalSearchReplay" in names
    cfg = compose_cfg(["experiment=samplers/gmm25_tb", "trainer=cpu", "+callbacks.extra.every=3"], tmp_path)
    with pytest.raises(ValueError, match=re.escape("callbacks.extra has no _target_") + ".*give it a _target_"):
        train_script.instantiate_group(cfg.callbacks, "callbacks")
    # a callback config of one's own on the search path gets the defaults form too
    extra = tmp_path / "extra"
    (extra / "callbacks").mkdir(parents=True)
    (extra / "callbacks" / "timer.yaml").write_text("timer:\n  _target_: lightning.pytorch.callbacks.Timer\n")
    cfg = compose_cfg(["trainer=cpu", f"hydra.searchpath=[file://{extra}]", "+callbacks.timer.interval=step"], tmp_path)
    with pytest.raises(ValueError, match=re.escape("add its config to the defaults: callbacks=[default,timer]")):
        train_script.instantiate_group(cfg.callbacks, "callbacks")


def test_switching_the_progress_bar_off_drops_the_progress_bar_callback(compose_cfg, tmp_path: Path) -> None:
    # Lightning refuses enable_progress_bar=false beside a progress-bar callback
    overrides = ["experiment=samplers/gmm25_tb", "trainer=cpu", *TINY, "trainer.max_steps=1", "data.steps_per_epoch=1"]
    cfg = compose_cfg([*overrides, "trainer.enable_progress_bar=false", "test=false", "callbacks.sample_plots=null"], tmp_path / "run")
    _, objects = train_script.train(cfg)
    assert objects["trainer"].progress_bar_callback is None and objects["trainer"].global_step == 1


def _checkpoint_recording_best(path: Path, step: int, best: str | None) -> None:
    """A checkpoint file at ``step`` whose monitoring ModelCheckpoint state names ``best`` (as a
    path of the run's original place, which may have moved)."""
    state = {"monitor": "val/l1", "best_model_path": f"/elsewhere/run/checkpoints/{best}"} if best else {}
    torch.save({"global_step": step, "callbacks": {"ModelCheckpoint{'monitor': 'val/l1'}": state}}, path)


def test_a_run_killed_while_saving_is_resumed_and_tested_from_its_whole_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    warnings: list[str] = []
    monkeypatch.setattr(train_script, "_warn", warnings.append)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    # killed while writing last.ckpt at step 16, after the new best (step 16) was saved and the
    # old best (step 8) deleted: the stale last.ckpt of step 8 still names the deleted file
    last, best = run / "checkpoints" / "last.ckpt", run / "checkpoints" / "epoch_001-step_000016.ckpt"
    _checkpoint_recording_best(last, 8, "epoch_000-step_000008.ckpt")
    _checkpoint_recording_best(best, 16, best.name)
    os.utime(best, (1, 1))
    assert train_script.resolve_ckpt_path(str(run), tmp_path, train=False) == str(best)
    assert warnings == []  # the latest record names a file that is there
    # the newer record missing too: the best recorded before it, with a warning
    _checkpoint_recording_best(last, 24, "epoch_002-step_000024.ckpt")
    assert train_script.resolve_ckpt_path(str(run), tmp_path, train=False) == str(best)
    assert warnings and "epoch_002-step_000024.ckpt, is missing: testing epoch_001-step_000016.ckpt" in warnings[-1]
    # a truncated last.ckpt: resume from the newest whole checkpoint, not from scratch in place
    last.write_bytes(last.read_bytes()[:30])
    assert train_script.resolve_ckpt_path("last", run, train=True) == str(best)
    assert "has no whole last.ckpt: taking its newest whole checkpoint, epoch_001-step_000016.ckpt" in warnings[-1]
    # every checkpoint cut short: refused, the run is not started over in its directory
    best.write_bytes(best.read_bytes()[:30])
    with pytest.raises(FileExistsError, match="checkpoints are all truncated .*starting over there would mix two runs"):
        train_script.resolve_ckpt_path("last", run, train=True)
    # and a fresh run refuses a directory that holds a run's top-k checkpoints only
    last.unlink()
    with pytest.raises(FileExistsError, match="already holds a run"):
        train_script.check_run_dir_is_free(None, run)


def test_resolve_ckpt_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    resolve = train_script.resolve_ckpt_path
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    assert resolve(None, run, train=True) is None
    # `last` in a run directory without checkpoints starts from scratch, with a warning: a user who
    # forgot to name the run to resume would otherwise see a fresh run start
    started_fresh: list[str] = []
    monkeypatch.setattr(train_script, "_warn", started_fresh.append)
    assert resolve("last", run, train=True) is None
    assert len(started_fresh) == 1 and f"no checkpoint yet in {run}; starting from scratch" in started_fresh[0]
    assert "--config-path <run>/.hydra --config-name config ckpt_path=last" in started_fresh[0]
    monkeypatch.undo()
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    # each message says what to give instead
    with pytest.raises(FileNotFoundError, match=re.escape(TRAIN_FALSE_LAST_FIX)):
        resolve("last", run, train=False)
    with pytest.raises(
        FileNotFoundError,
        match=re.escape("without checkpoints (expected checkpoints/last.ckpt in a run directory)"),
    ):
        resolve(str(run), tmp_path, train=False)
    with pytest.raises(
        FileNotFoundError,
        match=re.escape("no such file. Give a .ckpt file, a run directory, or 'last'."),
    ):
        resolve(str(run / "missing.ckpt"), run, train=True)

    last = run / "checkpoints" / "last.ckpt"
    torch.save({}, last)
    hpc = run / "hpc_ckpt_1.ckpt"
    torch.save({}, hpc)
    os.utime(last, (1, 1))
    os.utime(hpc, (2, 2))
    assert resolve("last", run, train=True) == str(hpc)
    os.utime(last, (3, 3))
    assert resolve("last", run, train=True) == str(last)
    assert resolve(str(run), tmp_path, train=False) == str(last)
    # a newer top-k checkpoint of the run is not what `last` or a run directory resume from
    topk = run / "checkpoints" / "epoch_000-step_000004.ckpt"
    torch.save({}, topk)
    os.utime(topk, (4, 4))
    assert resolve("last", run, train=True) == str(last)
    assert resolve(str(run), tmp_path, train=False) == str(last)
    assert resolve(str(hpc), tmp_path, train=False) == str(hpc)
    assert resolve(None, run, train=True) is None
    monkeypatch.setenv("SLURM_RESTART_COUNT", "1")
    assert resolve(None, run, train=True) == str(last)
    monkeypatch.delenv("SLURM_RESTART_COUNT")

    # a newest checkpoint cut short (a kill while it was copied) is passed over for the next one;
    # named explicitly, it stops the run with what to give instead
    last.write_bytes(hpc.read_bytes()[:20])
    os.utime(last, (5, 5))
    warnings: list[str] = []
    monkeypatch.setattr(train_script, "_warn", warnings.append)
    assert resolve("last", run, train=True) == str(hpc)
    assert warnings == [f"{last} is truncated or not a checkpoint (a run killed while writing it?): passed over"]
    with pytest.raises(ValueError, match=re.escape(f"ckpt_path={last} is truncated or not a checkpoint")):
        resolve(str(last), run, train=False)
    # every resume checkpoint cut short: the newest whole top-k checkpoint, whatever the names' order
    hpc.write_bytes(last.read_bytes())
    older_topk = run / "checkpoints" / "epoch_009-step_000040.ckpt"
    torch.save({}, older_topk)
    os.utime(older_topk, (3.5, 3.5))
    assert resolve("last", run, train=True) == str(topk)
    os.utime(older_topk, (4.5, 4.5))
    assert resolve("last", run, train=True) == str(older_topk)


def test_train_false_with_last_and_no_checkpoint_raises_with_the_fix(compose_cfg, tmp_path: Path) -> None:
    # train=false ckpt_path=last in a run directory without checkpoints must stop with the fix,
    # not test freshly initialised weights.
    cfg = compose_cfg(
        ["experiment=samplers/gmm25_tb", "trainer=cpu", *TINY, "train=false", "ckpt_path=last"],
        tmp_path / "run",
    )
    with pytest.raises(FileNotFoundError, match=re.escape(TRAIN_FALSE_LAST_FIX)):
        train_script.train(cfg)


def cfg_overrides_of_monitored_run(tmp_path: Path) -> list[str]:
    """A GMM25 TB run of 3 epochs whose checkpoint monitors Lightning's `step` (mode min)."""
    return [
        "experiment=samplers/gmm25_tb",
        "trainer=cpu",
        *TINY,
        "data.steps_per_epoch=2",
        "trainer.max_epochs=3",
        "trainer.check_val_every_n_epoch=1",
        "trainer.num_sanity_val_steps=0",
        "callbacks.sample_plots=null",
        "callbacks.model_checkpoint.monitor=step",
        "callbacks.model_checkpoint.mode=min",
        f"paths.log_dir={tmp_path}",
    ]


def test_a_monitored_checkpoint_tests_the_best_not_the_last(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With a monitored metric the test evaluates checkpoint_callback.best_model_path. Monitoring
    # Lightning's `step` with mode=min makes the first of 3 validations (step 2) the best, while
    # last.ckpt and the final weights are from step 6.
    cfg = compose_cfg(cfg_overrides_of_monitored_run(tmp_path), tmp_path / "run")
    tested: list[Any] = []
    original_test = train_script.L.Trainer.test

    def recording_test(self: Any, *args: Any, **kwargs: Any) -> Any:
        tested.append(kwargs.get("ckpt_path"))
        return original_test(self, *args, **kwargs)

    monkeypatch.setattr(train_script.L.Trainer, "test", recording_test)
    metric_dict, object_dict = train_script.train(cfg)
    trainer, model = object_dict["trainer"], object_dict["model"]
    assert trainer.global_step == 6
    best = trainer.checkpoint_callback.best_model_path
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert best.endswith("step_000002.ckpt") and Path(best) != last
    assert _load(last)["global_step"] == 6
    assert tested == [best]
    # the tested model holds the best checkpoint's weights, not the final ones
    saved = _load(Path(best))["state_dict"]
    _assert_same_tree(saved, {k: v for k, v in model.state_dict().items() if k in saved}, exact=True)
    assert "test/elbo" in metric_dict
    # evaluating the run by its directory tests that checkpoint too (before: last.ckpt), also
    # after the run directory moved
    moved = tmp_path / "moved"
    shutil.copytree(tmp_path / "run", moved)
    evaluation = [*cfg_overrides_of_monitored_run(tmp_path), "train=false", f"ckpt_path={moved}"]
    tested.clear()
    evaluated, _ = train_script.train(compose_cfg(evaluation, tmp_path / "evaluation"))
    assert tested == [str(moved / "checkpoints" / Path(best).name)]
    assert evaluated["test/elbo"] == pytest.approx(metric_dict["test/elbo"])
    # at the tested checkpoint's step (Lightning's test restores weights alone: step 0 before)
    (test_row,) = [row for row in read_csv_rows(tmp_path / "evaluation" / "csv" / "metrics.csv") if row.get("test/elbo")]
    assert int(test_row["step"]) == 2
    # an evaluation from inside the trained run's directory (as with the run's saved config) logs
    # to a folder of its own: before, it overwrote the run's logged hyperparameters and added its
    # test rows, at step 0, to the run's metrics
    run_files = {name: (tmp_path / "run" / "csv" / name).read_bytes() for name in ("hparams.yaml", "metrics.csv")}
    tested.clear()
    train_script.train(compose_cfg([*evaluation[:-1], "ckpt_path=last"], tmp_path / "run"))
    assert tested == [str(tmp_path / "run" / "checkpoints" / "last.ckpt")]
    assert {name: (tmp_path / "run" / "csv" / name).read_bytes() for name in run_files} == run_files
    (evaluation_dir,) = (tmp_path / "run" / "evaluations").iterdir()
    assert [row for row in read_csv_rows(evaluation_dir / "csv" / "metrics.csv") if row.get("test/elbo")]


def test_optimized_value_is_the_best_checkpoint_score_when_it_monitors_that_metric(monkeypatch: pytest.MonkeyPatch) -> None:
    # Sweeps optimize the score of the tested (best) checkpoint, not the last logged value;
    # other metrics come from metric_dict, and an unlogged one gives None.
    cfg = OmegaConf.create({"optimized_metric": "m"})
    metrics = {"m": 0.9}

    def objects(monitor: str | None) -> dict[str, Any]:
        checkpoint = ModelCheckpoint(monitor=monitor)
        checkpoint.best_model_score = torch.tensor(0.1)
        # the preemption callback is a checkpoint callback too, without a score: not the one read
        return {"trainer": SimpleNamespace(checkpoint_callbacks=[PreemptionCheckpoint(), checkpoint])}

    value = train_script.optimized_value
    assert value(cfg, objects("m"), metrics) == pytest.approx(0.1)
    assert value(cfg, objects("other"), metrics) == 0.9
    assert value(cfg, objects(None), metrics) == 0.9
    assert value(cfg, {"trainer": SimpleNamespace(checkpoint_callbacks=[])}, metrics) == 0.9
    warned: list[str] = []
    monkeypatch.setattr(train_script, "_warn", warned.append)
    assert value(cfg, objects("other"), {"test/elbo": 1.0}) is None
    assert "set optimized_metric to one of ['test/elbo'], or validate within the run" in warned[0]
    # outside a sweep (an evaluation, a short run) nothing needs the value: no warning
    assert value(cfg, objects("other"), {"test/elbo": 1.0}, warn_unlogged=False) is None
    assert len(warned) == 1
    assert value(OmegaConf.create({"optimized_metric": None}), objects("m"), metrics) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without GPU")
@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_check_accelerator_refuses_gpu_and_cuda_without_a_gpu(accelerator: str) -> None:
    # Both names Lightning takes for a CUDA device stop with the CPU fix; cpu and auto pass.
    with pytest.raises(RuntimeError, match=r"no CUDA GPU is visible.*trainer=cpu"):
        train_script.check_accelerator(OmegaConf.create({"accelerator": accelerator}))
    train_script.check_accelerator(OmegaConf.create({"accelerator": "cpu"}))
    train_script.check_accelerator(OmegaConf.create({"accelerator": "auto"}))


def test_trainer_slurm_outside_a_slurm_job_step_names_how_to_submit(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # before: "Error in call to target Trainer: KeyError('SLURM_NODEID')"
    for name in list(os.environ):
        if name.startswith("SLURM_"):
            monkeypatch.delenv(name)
    cfg = compose_cfg(["experiment=samplers/gmm25_tb", "trainer=slurm", "trainer.accelerator=cpu"], tmp_path)
    with pytest.raises(RuntimeError, match=r"SLURM_NTASKS, SLURM_PROCID, SLURM_NODEID is not set: submit it \(sbatch"):
        train_script.check_accelerator(cfg.trainer)
    for name, value in SLURM_ENV.items():
        monkeypatch.setenv(name, value)
    train_script.check_accelerator(cfg.trainer)
    train_script.check_accelerator(compose_cfg(["experiment=samplers/gmm25_tb", "trainer=cpu"], tmp_path).trainer)


def test_a_missing_interpolation_key_names_the_key_that_refers_to_it(compose_cfg, tmp_path: Path) -> None:
    # e.g. a data config of one's own without dim; before, OmegaConf named data.dim alone, from
    # inside instantiate
    cfg = compose_cfg(["experiment=samplers/gmm25_tb", "trainer=cpu", "~data.dim"], tmp_path)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "model.net.dim: ${data.dim} refers to data.dim, which the composed config does not have: set data.dim"
        ),
    ):
        train_script.train(cfg)
    assert not (tmp_path / ".hydra").exists()


def test_fast_dev_run_refuses_to_resume_and_leaves_the_saved_config(compose_cfg, tmp_path: Path) -> None:
    # before: the resume trained nothing (max_steps=1) and wrote fast_dev_run into the run's config
    run = tmp_path / "run"
    train_script.train(compose_cfg(TINY_SWEEP_JOB, run))
    saved = (run / ".hydra" / "config.yaml").read_bytes()
    with pytest.raises(ValueError, match=r"trainer.fast_dev_run \(debug=fdr\) runs one step of a fresh run"):
        train_script.train(compose_cfg([*TINY_SWEEP_JOB, "trainer.fast_dev_run=true", "ckpt_path=last"], run))
    assert (run / ".hydra" / "config.yaml").read_bytes() == saved


def test_no_logger_group_runs_without_any_logger(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ~logger (no logger group) means no logger at all: Lightning must not fall back to its default logger,
    # which writes lightning_logs/ to the run directory (default_root_dir). The default callbacks
    # stay, less the learning-rate monitor (Lightning refuses it without a logger).
    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "run"
    cfg = compose_cfg(
        [
            "experiment=samplers/gmm25_tb",
            "trainer=cpu",
            *TINY,
            "~logger",
            "data.steps_per_epoch=2",
            "trainer.max_steps=2",
            "trainer.num_sanity_val_steps=0",
            "callbacks.sample_plots=null",
            "test=false",
            f"paths.log_dir={tmp_path / 'logs'}",
        ],
        run_dir,
    )
    assert cfg.get("logger") is None
    # trainer=cpu's num_threads: 1 reaches torch (set two here to see it)
    assert cfg.num_threads == 1
    torch.set_num_threads(2)
    try:
        _, object_dict = train_script.train(cfg)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(1)
    assert object_dict["trainer"].global_step == 2
    assert object_dict["trainer"].loggers == [] and object_dict["loggers"] == []
    assert cfg.callbacks.lr_monitor is not None
    kinds = {type(callback).__name__ for callback in object_dict["callbacks"]}
    assert "LearningRateMonitor" not in kinds and {"StepSeed", "LastCheckpoint"} <= kinds
    assert not list(tmp_path.rglob("lightning_logs"))
    assert not (run_dir / "csv").exists()


class _Seeded(Exception):
    """Stops train() right after seeding."""


def test_seed_everything_seeds_dataloader_workers_too(
    compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # cfg.seed goes to lightning.seed_everything with workers=True (configs/train.yaml says so).
    calls: list[tuple[Any, dict[str, Any]]] = []

    def fake_seed_everything(*args: Any, **kwargs: Any) -> None:
        calls.append((args, kwargs))
        raise _Seeded

    monkeypatch.setattr(train_script.L, "seed_everything", fake_seed_everything)
    cfg = compose_cfg(["experiment=samplers/gmm25_tb", "trainer=cpu", *TINY, "seed=7"], tmp_path)
    with pytest.raises(_Seeded):
        train_script.train(cfg)
    ((args, kwargs),) = calls
    assert args == (7,) and kwargs == {"workers": True}


class EnergyDataWithAPartial(EnergyDataModule):
    """A user's datamodule whose saved hyperparameters include a Hydra partial."""

    def __init__(self, transform: Any = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters(ignore=["energy"])


def test_hparams_that_would_not_load_back_are_refused_before_the_run(compose_cfg, tmp_path: Path) -> None:
    # Before: the fit ran to its end, then testing its checkpoint failed with torch's "Unsupported
    # global: hydra._internal..."; resuming and evaluating failed the same way.
    overrides = [
        *TINY_SWEEP_JOB,
        f"data._target_={__name__}.EnergyDataWithAPartial",
        "+data.transform._target_=torch.nn.functional.gelu",
        "+data.transform._partial_=true",
    ]
    with pytest.raises(TypeError, match=r"EnergyDataWithAPartial saves data.transform \(\w+\) into its checkpoints"):
        train_script.train(compose_cfg(overrides, tmp_path))
    assert not (tmp_path / ".hydra").exists()
    assert not (tmp_path / "checkpoints").exists()


def test_hparams_check_names_every_argument_that_would_not_load() -> None:
    module = SimpleNamespace(hparams={"lr": 0.1, "act": functools.partial(max), "nested": {"f": functools.partial(min)}})
    with pytest.raises(TypeError, match=r"model.act \(partial\), model.nested \(dict\)"):
        train_script.check_hparams_load_safely(model=module)
    train_script.check_hparams_load_safely(model=SimpleNamespace(hparams={"lr": 0.1, "sizes": [1, 2], "name": "x"}))


def test_warning_filters_of_a_run_hold_for_that_run_only(monkeypatch: pytest.MonkeyPatch) -> None:
    # an evaluation hides Lightning's "dirpath has changed" warning; a later fit in the same
    # process (a notebook, a benchmark) must still see it
    before = list(warnings.filters)

    def run(cfg: Any) -> tuple[dict, dict]:
        warnings.filterwarnings("ignore", message=r"The dirpath has changed from")
        return {}, {}

    monkeypatch.setattr(train_script, "_train", run)
    assert train_script.train(OmegaConf.create({})) == ({}, {})
    assert warnings.filters == before
