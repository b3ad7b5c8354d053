"""The documented values of the composed configs (``configs/train.yaml`` and its groups): seed,
optimized metric, the ``step_seed`` callback, the trainer presets of the README's "Scaling" table,
and where Lightning's own files go; plus an exact resume of a model that draws from the global
random generators (dropout), which only the ``step_seed`` callback makes reproducible."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

import train as train_script
from tenfold.callbacks.step_seed import StepSeed
from tenfold.checkpoints import AtomicCheckpointIO

ComposeCfg = Callable[[Sequence[str], Path], DictConfig]


def _resolved(node: DictConfig) -> dict:
    """A config node as plain Python values, every interpolation resolved."""
    container = OmegaConf.to_container(node, resolve=True)
    assert isinstance(container, dict)
    return container


# --- train.yaml ---------------------------------------------------------------------------------


def test_default_seed_is_the_documented_int(compose_cfg: ComposeCfg, tmp_path: Path) -> None:
    # Pins `seed: 12345` (train.yaml): runs are seeded by default, never from the clock.
    cfg = compose_cfg([], tmp_path)
    assert cfg.seed == 12345
    assert isinstance(cfg.seed, int)


def test_default_callbacks_include_step_seed_with_the_run_seed(compose_cfg: ComposeCfg, tmp_path: Path) -> None:
    # Pins `- step_seed` in configs/callbacks/default.yaml and its `seed: ${seed}`: every run
    # reseeds the global generators per batch (exact resume), from the run's seed.
    for overrides, seed in (([], 12345), (["seed=7"], 7)):
        cfg = compose_cfg(overrides, tmp_path)
        assert "step_seed" in cfg.callbacks, "the default callbacks lost step_seed"
        assert cfg.callbacks.step_seed.seed == cfg.seed == seed
        callbacks = train_script.instantiate_group(cfg.callbacks)
        step_seeds = [cb for cb in callbacks if isinstance(cb, StepSeed)]
        assert len(step_seeds) == 1
        assert step_seeds[0].seed == seed


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        # the default experiment's checkpoint monitors nothing: nothing to optimize
        ([], None),
        # by default the metric that the checkpoint monitors
        (["callbacks.model_checkpoint.monitor=val/loss"], "val/loss"),
        (["experiment=attention/contextual_retrieval_multihead"], "val/l1"),
        (["experiment=attention/contextual_retrieval_compositional"], "val/l1"),
        (["experiment=relational/same_diff_gcn"], "val/acc"),
        # set explicitly by the experiment (its checkpoint monitors nothing)
        (["experiment=attention/esbn_rmts_compositional"], "val/acc"),
    ],
)
def test_optimized_metric_follows_the_checkpoint_monitor(
    overrides: list[str], expected: str | None, compose_cfg: ComposeCfg, tmp_path: Path
) -> None:
    # Pins `optimized_metric: ${oc.select:callbacks.model_checkpoint.monitor,null}` (train.yaml):
    # what train.py returns to Hydra sweeps.
    cfg = compose_cfg(overrides, tmp_path)
    assert cfg.optimized_metric == expected


def test_num_threads_is_unset_by_default(compose_cfg: ComposeCfg, tmp_path: Path) -> None:
    # Pins `num_threads: null` (train.yaml): torch's own thread count unless a trainer sets it.
    assert compose_cfg([], tmp_path).num_threads is None


# --- trainer presets (README "Scaling") ---------------------------------------------------------


@pytest.mark.parametrize("trainer", ["default", "cpu", "gpu", "ddp", "ddp_sim", "slurm"])
def test_lightning_files_go_to_the_run_directory(trainer: str, compose_cfg: ComposeCfg, tmp_path: Path) -> None:
    # Pins `default_root_dir: ${paths.output_dir}` (trainer/default.yaml, inherited by every
    # preset): SLURM's hpc_ckpt_*.ckpt land in the run directory, where ckpt_path=last finds them.
    run_dir = tmp_path / "run"
    cfg = compose_cfg([f"trainer={trainer}"], run_dir)
    assert _resolved(cfg.trainer)["default_root_dir"] == str(run_dir)
    assert cfg.paths.output_dir == str(run_dir)


@pytest.mark.parametrize("trainer", ["default", "cpu"])
def test_instantiated_trainer_writes_to_the_run_directory(trainer: str, compose_cfg: ComposeCfg, tmp_path: Path) -> None:
    # The same, through Lightning: Trainer.default_root_dir is the run directory, not the cwd.
    run_dir = tmp_path / "run"
    cfg = compose_cfg([f"trainer={trainer}"], run_dir)
    built = instantiate(cfg.trainer, logger=False, enable_progress_bar=False, enable_model_summary=False)
    assert Path(built.default_root_dir) == run_dir


def test_trainer_cpu_is_one_cpu_process_with_one_thread(compose_cfg: ComposeCfg, tmp_path: Path) -> None:
    # Pins configs/trainer/cpu.yaml: accelerator cpu, one device, and the top-level
    # `num_threads: 1` that train.py passes to torch.set_num_threads.
    cfg = compose_cfg(["trainer=cpu"], tmp_path)
    trainer = _resolved(cfg.trainer)
    assert trainer["accelerator"] == "cpu"
    assert trainer["devices"] == 1
    assert trainer["num_nodes"] == 1
    assert trainer["strategy"] == "auto"
    assert cfg.num_threads == 1
    assert "num_threads" not in cfg.trainer, "num_threads is train.py's key, not a Trainer argument"


def test_trainer_default_takes_any_accelerator_on_one_device(compose_cfg: ComposeCfg, tmp_path: Path) -> None:
    # Pins configs/trainer/default.yaml: "whatever accelerator is present, on one device".
    trainer = _resolved(compose_cfg([], tmp_path).trainer)
    assert trainer["_target_"] == "lightning.pytorch.trainer.Trainer"
    assert (trainer["accelerator"], trainer["devices"], trainer["num_nodes"], trainer["strategy"]) == ("auto", 1, 1, "auto")
    assert trainer["plugins"] == [{"_target_": "tenfold.checkpoints.AtomicCheckpointIO"}]


@pytest.mark.parametrize("trainer", ["cpu", "ddp_sim"])
def test_trainers_write_checkpoints_atomically(trainer: str, compose_cfg: ComposeCfg, tmp_path: Path) -> None:
    cfg = compose_cfg([f"trainer={trainer}"], tmp_path)
    built = instantiate(cfg.trainer, logger=False)
    assert isinstance(built.strategy.checkpoint_io, AtomicCheckpointIO)


def test_trainer_gpu_is_one_gpu(compose_cfg: ComposeCfg, tmp_path: Path) -> None:
    # Pins configs/trainer/gpu.yaml: accelerator gpu, one device.
    cfg = compose_cfg(["trainer=gpu"], tmp_path)
    trainer = _resolved(cfg.trainer)
    assert (trainer["accelerator"], trainer["devices"], trainer["strategy"]) == ("gpu", 1, "auto")
    assert cfg.num_threads is None


def test_trainer_ddp_uses_every_visible_gpu(compose_cfg: ComposeCfg, tmp_path: Path) -> None:
    # Pins configs/trainer/ddp.yaml: DDP on GPUs, `devices: -1` (every visible GPU), one node.
    trainer = _resolved(compose_cfg(["trainer=ddp"], tmp_path).trainer)
    assert trainer["strategy"] == "ddp"
    assert trainer["accelerator"] == "gpu"
    assert trainer["devices"] == -1
    assert trainer["num_nodes"] == 1
    assert trainer["sync_batchnorm"] is False


def test_trainer_ddp_sim_is_two_cpu_processes(compose_cfg: ComposeCfg, tmp_path: Path) -> None:
    # Pins configs/trainer/ddp_sim.yaml: DDP over 2 CPU processes, one thread each.
    cfg = compose_cfg(["trainer=ddp_sim"], tmp_path)
    trainer = _resolved(cfg.trainer)
    assert (trainer["strategy"], trainer["accelerator"], trainer["devices"], trainer["num_nodes"]) == ("ddp", "cpu", 2, 1)
    assert cfg.num_threads == 1


def test_trainer_slurm_defaults_outside_an_allocation(
    compose_cfg: ComposeCfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pins configs/trainer/slurm.yaml without SLURM variables: DDP on GPUs, 1 node x 1 device,
    # Lightning's SLURMEnvironment with its own requeue off (callbacks.preemption_checkpoint requeues).
    for name in ("SLURM_NNODES", "SLURM_NTASKS_PER_NODE", "TENFOLD_SLURM_AUTO_REQUEUE"):
        monkeypatch.delenv(name, raising=False)
    trainer = _resolved(compose_cfg(["trainer=slurm"], tmp_path).trainer)
    assert (trainer["strategy"], trainer["accelerator"]) == ("ddp", "gpu")
    assert (trainer["num_nodes"], trainer["devices"]) == (1, 1)
    assert trainer["plugins"] == [
        {"_target_": "lightning.pytorch.plugins.environments.SLURMEnvironment", "auto_requeue": False},
        {"_target_": "tenfold.checkpoints.AtomicCheckpointIO"},
    ]


def test_trainer_slurm_takes_nodes_and_devices_from_the_allocation(
    compose_cfg: ComposeCfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pins configs/trainer/slurm.yaml: num_nodes = SLURM_NNODES, devices = SLURM_NTASKS_PER_NODE
    # (as ints); the project's requeue (callbacks.preemption_checkpoint) is on, and switched off by
    # TENFOLD_SLURM_AUTO_REQUEUE=false (the submitit launcher).
    monkeypatch.setenv("SLURM_NNODES", "2")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "4")
    monkeypatch.delenv("TENFOLD_SLURM_AUTO_REQUEUE", raising=False)
    cfg = compose_cfg(["trainer=slurm"], tmp_path)
    trainer = _resolved(cfg.trainer)
    assert (trainer["strategy"], trainer["accelerator"], trainer["num_nodes"], trainer["devices"]) == ("ddp", "gpu", 2, 4)
    assert cfg.callbacks.preemption_checkpoint.requeue is True
    monkeypatch.setenv("TENFOLD_SLURM_AUTO_REQUEUE", "false")
    assert compose_cfg(["trainer=slurm"], tmp_path).callbacks.preemption_checkpoint.requeue is False


def test_wandb_run_id_names_the_run_directory(
    compose_cfg: ComposeCfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # configs/logger/wandb.yaml: the two jobs of a basic-launcher sweep in one SLURM allocation
    # (one SLURM_JOB_ID) get two W&B runs; a second start of one run directory continues its run.
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    loggers = [
        instantiate(compose_cfg(["logger=wandb"], run_dir).logger.wandb)
        for run_dir in (tmp_path / "sweep" / "0", tmp_path / "sweep" / "1", tmp_path / "sweep" / "0")
    ]
    ids = [logger._wandb_init["id"] for logger in loggers]
    assert ids[0] != ids[1] and ids[0] == ids[2]
    assert all(logger._wandb_init["resume"] == "allow" for logger in loggers)


# --- exact resume with dropout (step_seed) ------------------------------------------------------


# the resumed run writes into the half run's non-empty checkpoints/ (expected)
@pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty")
def test_resume_with_dropout_continues_exactly(
    train_and_resume: Callable[[Sequence[str], Path], tuple[tuple, tuple]], tmp_path: Path
) -> None:
    # Pins the step_seed callback in the default callbacks: the GCN baseline draws dropout masks
    # from torch's global generator, so 1 epoch + resume for 1 more (2 steps each) gives the same
    # weights as 2 uninterrupted epochs only when every batch is reseeded from (seed, batch index).
    torch.set_num_threads(1)
    common = [
        "experiment=relational/same_diff_gcn",
        "trainer=cpu",
        "data.train_size=16",
        "data.val_size=8",
        "data.test_size=8",
        "data.batch_size=8",
        "model.net.embed_dim=16",
        "model.net.hidden_dim=16",
        "test=false",
        "logger=[]",
        "callbacks.rich_progress_bar=null",
        "callbacks.rich_model_summary=null",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "extras.print_config=false",
        "seed=3",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.data_dir={tmp_path / 'data'}",
    ]
    (_, full_objects), (_, resumed_objects) = train_and_resume(common, tmp_path)
    assert full_objects["cfg"].model.net.dropout > 0
    assert full_objects["trainer"].global_step == 4
    assert resumed_objects["trainer"].global_step == 4


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [([], "ModelCheckpoint"), (["callbacks.model_checkpoint=null"], "LastCheckpoint")],
    ids=["default", "no_model_checkpoint"],
)
def test_checkpoint_callback_is_the_first_model_checkpoint(
    overrides: list[str], expected: str, compose_cfg: ComposeCfg, tmp_path: Path
) -> None:
    # train() tests the weights that trainer.checkpoint_callback picks (its docstring): the
    # model_checkpoint entry, or the unmonitored last_checkpoint when that entry is null.
    cfg = compose_cfg(["trainer=cpu", *overrides], tmp_path / "run")
    callbacks = train_script.instantiate_group(cfg.callbacks)
    built = instantiate(cfg.trainer, callbacks=callbacks, logger=False)
    assert type(built.checkpoint_callback).__name__ == expected
    if expected == "LastCheckpoint":
        assert built.checkpoint_callback.monitor is None
