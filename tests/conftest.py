"""Shared test set-up: one torch thread; fixtures ``compose_cfg`` (Hydra composition as
``train.py`` does it, for in-process runs), ``train_and_resume`` and
``train_and_resume_within_epoch`` (exact-resume checks through ``train.train``), ``fit_and_test``
(a short real training run of a module on its data, tested before and after), ``train_cli``
(``python train.py`` in a subprocess) and ``load_benchmark`` (a script of ``benchmarks/`` as a
module); helpers :func:`read_csv_rows` and :func:`tensorboard_scalars` read what loggers wrote."""

from __future__ import annotations

import csv
import functools
import importlib.util
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from types import ModuleType

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

# Two threads on a two-core machine oversubscribe; subprocesses inherit these variables.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
torch.set_num_threads(1)

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"


# what a test may change for the rest of the session: environment variables Lightning's
# seed_everything sets, and the levels of loggers that train.py and the benchmarks quieten
_SEED_VARIABLES = ("PL_GLOBAL_SEED", "PL_SEED_WORKERS")
_QUIETENED_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "train")


@pytest.fixture(autouse=True)
def _isolated_global_state() -> Iterator[None]:
    """Leaves no process-wide state to the next test: Hydra's global config (which
    ``train.save_run_config`` and ``train.in_sweep`` read: a stale one made later runs write their
    ``.hydra`` files into an earlier test's directory, or run as sweep jobs), Lightning's seed
    variables and logger levels."""
    environment = {name: os.environ.get(name) for name in _SEED_VARIABLES}
    levels = {name: logging.getLogger(name).level for name in _QUIETENED_LOGGERS}
    yield
    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None
    for name, value in environment.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture(autouse=True, scope="session")
def _nothing_written_into_the_checkout() -> Iterator[None]:
    """Fails the session when tests left files in the checkout's default data or log directories
    (``paths.data_dir``, ``paths.log_dir``): tests write under ``tmp_path`` only."""

    start = time.time_ns()

    def written_since_start() -> list[Path]:
        """Files there created or rewritten during the session (another process, e.g. a
        ``make train`` beside the tests, may remove files meanwhile)."""
        written = []
        for folder in (ROOT / "data", ROOT / "logs"):
            for path in folder.rglob("*") if folder.is_dir() else ():
                try:
                    if path.is_file() and path.stat().st_mtime_ns >= start:
                        written.append(path)
                except OSError:
                    continue
        return sorted(written)

    yield
    changed = written_since_start()
    if changed:
        pytest.fail(f"tests wrote into the checkout (set paths.data_dir / paths.log_dir under tmp_path): {changed[:5]}")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` skip on a machine without a CUDA device."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


def compose_train_config(overrides: Sequence[str], output_dir: Path) -> DictConfig:
    """Composes ``configs/train.yaml`` as ``python train.py <overrides>`` would, for in-process runs.

    The Hydra config is registered (``HydraConfig``) with ``output_dir`` as the run directory, so
    ``${hydra:...}`` interpolations resolve; the returned config has no ``hydra`` node, like the
    one Hydra hands to the task function.
    """
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides), return_hydra_config=True)
    output_dir.mkdir(parents=True, exist_ok=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(output_dir)
        cfg.hydra.job.num = 0
        cfg.hydra.job.id = "0"
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


@pytest.fixture
def compose_cfg() -> Iterator[Callable[[Sequence[str], Path], DictConfig]]:
    """:func:`compose_train_config`; clears Hydra's global state afterwards."""
    yield compose_train_config
    GlobalHydra.instance().clear()


@pytest.fixture
def train_and_resume(compose_cfg) -> Callable[[Sequence[str], Path], tuple[tuple, tuple]]:
    """Trains ``overrides`` for two epochs in one go (run directory ``tmp_path / "full"``) and for
    one epoch, then resumed from that run directory for the second (``tmp_path / "half"``), and
    checks that both last checkpoints hold bit-identical weights. Returns the two
    ``train.train`` results ``(uninterrupted, resumed)``, each ``(metric_dict, object_dict)``."""
    import train as train_script

    def run(overrides: Sequence[str], tmp_path: Path) -> tuple[tuple, tuple]:
        full = train_script.train(compose_cfg([*overrides, "trainer.max_epochs=2"], tmp_path / "full"))
        train_script.train(compose_cfg([*overrides, "trainer.max_epochs=1"], tmp_path / "half"))
        resumed = train_script.train(
            compose_cfg([*overrides, "trainer.max_epochs=2", f"ckpt_path={tmp_path / 'half'}"], tmp_path / "half")
        )
        assert_same_last_weights(tmp_path / "full", tmp_path / "half")
        return full, resumed

    return run


def assert_same_last_weights(first_run: Path, second_run: Path) -> None:
    """Both runs' ``checkpoints/last.ckpt`` hold bit-identical weights."""
    states = [
        torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
        for run_dir in (first_run, second_run)
    ]
    assert states[0].keys() == states[1].keys()
    for name, value in states[0].items():
        torch.testing.assert_close(states[1][name], value, rtol=0, atol=0, msg=name)


@pytest.fixture
def train_and_resume_within_epoch(compose_cfg) -> Callable[[Sequence[str], Path, int], tuple[int, dict]]:
    """Trains ``overrides`` for two epochs (run directory ``tmp_path / "full"``), saving a
    checkpoint every ``every_n_train_steps`` steps, then resumes a new run
    (``tmp_path / "resumed"``) from the checkpoint of the largest saved step before the end,
    as a crashed or preempted run would, and checks that both runs end with bit-identical weights.
    Returns the step resumed from and the resumed run's ``train.train`` objects."""
    import train as train_script

    def run(overrides: Sequence[str], tmp_path: Path, every_n_train_steps: int) -> tuple[int, dict]:
        saving = [
            "trainer.max_epochs=2",
            f"callbacks.model_checkpoint.every_n_train_steps={every_n_train_steps}",
            "callbacks.model_checkpoint.save_top_k=-1",
            "callbacks.model_checkpoint.monitor=null",
        ]
        _, full_objects = train_script.train(compose_cfg([*overrides, *saving], tmp_path / "full"))
        final_step = full_objects["trainer"].global_step
        checkpoints = (tmp_path / "full" / "checkpoints").glob("epoch_*-step_*.ckpt")
        saved = {int(path.stem.rsplit("_", 1)[1]): path for path in checkpoints}
        mid_run = sorted(step for step in saved if step < final_step)
        assert mid_run, f"no checkpoint before step {final_step}: {sorted(saved)}"
        step = mid_run[-1]
        _, resumed_objects = train_script.train(
            compose_cfg([*overrides, *saving, f"ckpt_path={saved[step]}"], tmp_path / "resumed")
        )
        assert resumed_objects["trainer"].global_step == final_step
        assert_same_last_weights(tmp_path / "full", tmp_path / "resumed")
        return step, resumed_objects

    return run


@functools.cache
def _benchmark_module(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"{name}_benchmark", ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_benchmark() -> Callable[[str], ModuleType]:
    """Imports ``benchmarks/<name>.py`` (scripts, not a package) as a module, once per name."""
    return _benchmark_module


def fake_scontrol(directory: Path, stopped_by_requeue: bool = False) -> tuple[Path, Path]:
    """An ``scontrol`` in ``<directory>/bin`` (put it first on the PATH) that appends its arguments
    to ``<directory>/scontrol_calls.txt`` and, with ``stopped_by_requeue``, sends SIGTERM to its
    caller, as SLURM does to a job it requeues. Returns the bin directory and the record's path."""
    bin_dir, record = directory / "bin", directory / "scontrol_calls.txt"
    bin_dir.mkdir(exist_ok=True)
    stop = "kill -TERM $PPID\n" if stopped_by_requeue else ""
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {record}\n{stop}')
    (bin_dir / "scontrol").chmod(0o755)
    return bin_dir, record


def run_train(
    args: Sequence[str], env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """Runs ``python train.py <args>`` from the repository root; stdout and stderr merged."""
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "0", **(env or {})}
    full_env.pop("PYTEST_CURRENT_TEST", None)
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=ROOT,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def train_cli() -> Callable[..., subprocess.CompletedProcess[str]]:
    """:func:`run_train`."""
    return run_train


FitResults = list[dict[str, float]]


def fit_and_test(module: L.LightningModule, data: L.LightningDataModule, steps: int) -> tuple[FitResults, FitResults]:
    """``trainer.test`` results (one dict per test dataloader) before and after ``steps``
    optimizer steps of ``trainer.fit``, on the CPU and without validation, logging or
    checkpoints: the short real training run whose metric a method's test checks moves."""
    trainer = L.Trainer(
        accelerator="cpu", max_steps=steps, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    before = trainer.test(module, data, verbose=False)
    trainer.fit(module, data)
    return before, trainer.test(module, data, verbose=False)


@pytest.fixture(name="fit_and_test")
def fit_and_test_fixture() -> Callable[[L.LightningModule, L.LightningDataModule, int], tuple[FitResults, FitResults]]:
    """:func:`fit_and_test`."""
    return fit_and_test


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV file with a header (``metrics.csv``, a benchmark's results), as dicts."""
    with path.open(newline="") as file:
        return list(csv.DictReader(file))


def tensorboard_scalars(log_dir: str | Path, tag: str) -> list[tuple[int, float]]:
    """What TensorBoard's reader shows of ``tag`` in ``log_dir``: (step, value) in file order."""
    events = EventAccumulator(str(log_dir))
    events.Reload()
    return [(event.step, event.value) for event in events.Scalars(tag)]
