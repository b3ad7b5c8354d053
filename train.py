"""The one entry point of tenfold: fit a method, then test its best checkpoint (or its final
weights, when the checkpoint monitors no metric).

    python train.py experiment=<family>/<task> [key=value ...]
    python train.py experiment=samplers/gmm25_tb trainer=cpu trainer.max_steps=600
    python train.py experiment=samplers/gmm25_tb train=false ckpt_path=PATH   # only test
    python train.py experiment=samplers/gmm25_tb ckpt_path=last hydra.run.dir=RUN_DIR  # resume
    python train.py -m experiment=samplers/gmm25_tb seed=1,2,3                # sweep

Everything is composed by Hydra from ``configs/`` (``configs/train.yaml`` lists the groups) and
instantiated here; this file imports no method. A run writes to
``logs/<task_name>/runs/<SLURM job id or time>/``: the composed config (``.hydra/``), the log
(``train.log``), checkpoints (``checkpoints/``, with ``last.ckpt``), metrics (``csv/``) and the
final metrics (``metrics.json``). A sweep's directory also gets ``summary.csv`` and
``summary_grouped.csv`` (mean and standard deviation over seeds; :mod:`tenfold.sweeps`).

``ckpt_path`` takes ``null`` (start fresh), ``last`` (the newest checkpoint of this run's
directory, fresh when there is none), a ``.ckpt`` file, or a run directory (its newest
checkpoint). A requeued SLURM job (``SLURM_RESTART_COUNT > 0``) resumes as with ``last``.
"""

from __future__ import annotations

import copy
import difflib
import io
import logging
import os
import re
import signal
import sys
import warnings
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.plugins.config_source import ConfigSource
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_only
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict
from omegaconf.errors import InterpolationKeyError, OmegaConfBaseException

from tenfold.checkpoints import ConfigInCheckpoint, is_complete_checkpoint, replaced_atomically
from tenfold.loggers import ResumableLogger, log_tensorboard_hparams, run_id
from tenfold.sweeps import saved_overrides, write_run_metrics

log = logging.getLogger("train")

# `${tenfold.run_id:<run dir>}`: the W&B run id of configs/logger/wandb.yaml.
OmegaConf.register_new_resolver("tenfold.run_id", run_id, replace=True)
# `${tenfold.cwd:}`: the working directory (configs/paths/default.yaml). Hydra's
# `${hydra:runtime.cwd}` is not set yet when a sweep resolves `hydra.sweep.dir`.
OmegaConf.register_new_resolver("tenfold.cwd", os.getcwd, replace=True)

CONFIG_DIR = Path(__file__).resolve().parent / "configs"

# Values of `experiment=` that Hydra expands itself (sweeps), which we do not check.
_SWEEP_SYNTAX = re.compile(r"[()*?\[\]]")


def available_experiments(config_dir: Path = CONFIG_DIR) -> list[str]:
    """Names of all experiments: paths of ``configs/experiment/**/*.yaml`` without the suffix."""
    return available_configs("experiment", config_dir)


def available_configs(group: str, config_dir: Path | Sequence[Path] = CONFIG_DIR) -> list[str]:
    """Names of a config group's options: paths of ``<dir>/<group>/**/*.yaml`` without the suffix,
    over one config directory or several (a search path)."""
    config_dirs = [config_dir] if isinstance(config_dir, Path) else config_dir
    return sorted(
        {p.relative_to(d / group).with_suffix("").as_posix() for d in config_dirs for p in (d / group).rglob("*.yaml")}
    )


def _primary_search_path(config_dir: Path) -> list[str]:
    """The ``hydra.searchpath`` entries of the primary config ``<config_dir>/train.yaml``."""
    primary = config_dir / "train.yaml"
    if not primary.is_file():
        return []
    return [str(entry) for entry in OmegaConf.select(OmegaConf.load(primary), "hydra.searchpath", default=None) or []]


def _command_search_path(argv: list[str]) -> list[str]:
    """The search-path entries a command adds: each ``--config-dir``/``-cd`` (as ``file://``) and
    each entry of a ``hydra.searchpath`` override, as given."""
    entries: list[str] = []
    for index, arg in enumerate(argv):
        option, sep, value = arg.partition("=")
        if option in ("--config-dir", "-cd"):
            if not sep:
                value = argv[index + 1] if index + 1 < len(argv) else ""
            entries.append(f"file://{Path(value).resolve()}")
        elif option.lstrip("+") == "hydra.searchpath":
            parsed = OverridesParser.create().parse_overrides([arg])[0].value()
            entries.extend(str(entry) for entry in (parsed if isinstance(parsed, list) else [parsed]))
    return entries


def config_search_dirs(argv: list[str], config_dir: Path = CONFIG_DIR) -> list[Path] | None:
    """The config directories that Hydra searches for a command: ``config_dir``, each
    ``--config-dir``/``-cd`` of ``argv`` and each ``file://`` (or plain path) entry of
    ``hydra.searchpath``, given in ``argv`` or in the primary config ``<config_dir>/train.yaml``
    (Hydra reads it nowhere else). ``None`` when the search path has an entry that is not a
    directory here (``pkg://...``): then only Hydra knows which configs exist."""
    dirs = [config_dir]
    for entry in _primary_search_path(config_dir) + _command_search_path(argv):
        scheme, sep, path = str(entry).rpartition("://")
        if sep and scheme != "file" or not Path(path).is_dir():
            return None
        dirs.append(Path(path).resolve())
    return dirs


def _group_folder(key: str) -> str:
    """The config group of an override key that may name a package: ``attention@model.net.attention``
    -> ``attention``."""
    return key.partition("@")[0]


def _is_config_group(key: str, config_dir: Path = CONFIG_DIR) -> bool:
    """Whether an override key names one of this project's config groups (``configs/<key>/``),
    also with a package (``attention@model.net.encoder.attention``); Hydra's own groups
    (``hydra/...``) are not."""
    group = _group_folder(key)
    return "." not in group and not group.startswith("hydra") and (config_dir / group).is_dir()


def _group_choices(argv: list[str], config_dir: Path = CONFIG_DIR) -> list[tuple[str, str]]:
    """``(key, name)`` for every choice of one of this project's config groups in ``argv``
    (``experiment=a,b`` gives two; the key keeps a package, ``attention@model.net.attention``);
    Hydra's own groups (``hydra/...``), lists (``[a,b]``), sweep expressions and ``null`` are left
    out."""
    choices = []
    for arg in argv:
        match = re.fullmatch(r"\+{0,2}([A-Za-z_][\w/]*(?:@[\w.]+)?)=(.*)", arg)
        if match is None or not _is_config_group(match.group(1), config_dir):
            continue
        group, value = match.groups()
        if _SWEEP_SYNTAX.search(value) or value.startswith("["):
            continue
        names = (part.strip().removesuffix(".yaml") for part in value.split(","))
        choices.extend((group, name) for name in names if name and name != "null")
    return choices


def check_group_overrides(argv: list[str], config_dir: Path = CONFIG_DIR) -> str | None:
    """Message naming the unknown choices of config groups in ``argv`` (``experiment=a[,b]``,
    ``model=samplers/x``), with close matches and every option of the group, else ``None``.

    Hydra's own error for a nested choice (``experiment=samplers/x``) does not list what exists,
    so the entry point checks first, over the configs of :func:`config_search_dirs` (none when
    that cannot tell). Hydra's own groups (``hydra/...``), lists (``[a,b]``) and sweep
    expressions are left to Hydra.
    """
    search_dirs = config_search_dirs(argv, config_dir)
    if search_dirs is None:
        return None
    lines = []
    known_by_group: dict[str, list[str]] = {}
    unknown_by_group: dict[str, list[str]] = {}
    for group, name in _group_choices(argv, config_dir):
        if group not in known_by_group:
            known_by_group[group] = available_configs(_group_folder(group), search_dirs)
        if name not in known_by_group[group]:
            unknown_by_group.setdefault(group, []).append(name)
    for group, unknown in unknown_by_group.items():
        known = known_by_group[group]
        folder = _group_folder(group)
        for name in unknown:
            where = f"configs/{folder}/{name}.yaml" if len(search_dirs) == 1 else (
                f"{folder}/{name}.yaml in {', '.join(str(d) for d in search_dirs)}"
            )
            lines.append(f"Unknown {group} '{name}': there is no {where}.")
            close = difflib.get_close_matches(name, known, n=3)
            if close:
                lines.append(f"  Did you mean: {', '.join(close)}?")
        title = "experiments" if group == "experiment" else f"{folder} configs"
        lines.append(f"Available {title} (python train.py {group}=<name>):")
        lines.extend(f"  {name}" for name in known)
    return "\n".join(lines) or None


def _missing_global_package(path: Path | str) -> str:
    """What to do about an experiment file without the ``_global_`` package header."""
    return (
        f"{path} lacks the header `# @package _global_`: without it Hydra nests the "
        "file's keys under `experiment.`, so the run ignores them (and its `override /...` defaults fail). "
        "Make `# @package _global_` the file's first line: Hydra reads the header only up to the first line "
        "that is not a `# @...` directive."
    )


def check_experiment_packages(argv: list[str], config_dir: Path = CONFIG_DIR) -> str | None:
    """Message naming the chosen experiment files (``experiment=<name>`` in ``argv``) whose header
    does not put them in the global package, else ``None``. Hydra's error for such a file names
    an internal key (``Could not override 'data@experiment.data'``), or there is no error at all
    and the default experiment runs with the file's settings under ``experiment.``."""
    problems = []
    search_dirs = config_search_dirs(argv, config_dir) or [config_dir]
    for group, name in _group_choices(argv, config_dir):
        if group != "experiment":
            continue
        paths = (d / group / f"{name}.yaml" for d in search_dirs)
        path = next((path for path in paths if path.is_file()), None)
        if path is None:
            continue
        if ConfigSource._get_header_dict(path.read_text())["package"] != "_global_":
            problems.append(_missing_global_package(path))
    return "\n".join(problems) or None


def _config_keys(node: DictConfig, prefix: str = "") -> list[str]:
    """Dotted paths of every key of ``node``, nested mappings included (values unresolved)."""
    paths = []
    for key in node.keys():
        path = f"{prefix}{key}"
        paths.append(path)
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            paths.extend(_config_keys(child, path + "."))
    return paths


def suggest_override_keys(argv: list[str], config_dir: Path = CONFIG_DIR) -> str | None:
    """Close matches for the overridden keys of ``argv`` that the composed config lacks
    (``trainer.max_step=3``: "did you mean trainer.max_steps?"), else ``None``.

    Hydra refuses such a key with a hint to add it (``+trainer.max_step=3``), which is rarely the
    fix. Called after a failed start: composes the config from the group choices of ``argv``
    (``experiment=``, ``trainer=``, ...) and looks up every plain ``key=value`` override. Not for
    a run's saved config (``--config-path``), whose groups are not choices."""
    if any(arg.startswith(("--config-path", "--config-name", "-cp", "-cn")) for arg in argv):
        return None
    groups, values = [], []
    for arg in argv:
        key, sep, _ = arg.partition("=")
        if not sep or arg.startswith(("-", "+", "~")) or key.startswith("hydra"):
            continue
        (groups if _is_config_group(key, config_dir) else values).append((key, arg))
    if not values:
        return None
    added = _command_search_path(argv)
    entries = _primary_search_path(config_dir) + added
    search_path = [f"hydra.searchpath=[{','.join(entries)}]"] if added else []
    try:
        with hydra.initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            cfg = hydra.compose("train", overrides=[*search_path, *(arg for _, arg in groups)])
    except Exception:  # a bad group choice: Hydra's own message says which
        return None
    known = _config_keys(cfg)
    lines = []
    for key, arg in values:
        if key in known:
            continue
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.75)
        value = arg.partition("=")[2]
        if close:
            lines.append(f"'{key}' is not a key of this config. Did you mean: {', '.join(f'{c}={value}' for c in close)}?")
        else:
            choices = " ".join(arg for _, arg in groups)
            lines.append(f"'{key}' is not a key of this config: python train.py {choices} --cfg job lists its keys.")
    return "\n".join(lines) or None


# Trainer settings that are counts: a string from the command line (trainer.max_steps=abc) reaches
# Lightning as one and fails there with "'<' not supported between 'str' and 'int'".
_TRAINER_COUNTS = (
    "max_steps", "max_epochs", "min_epochs", "min_steps", "check_val_every_n_epoch", "log_every_n_steps",
    "accumulate_grad_batches", "num_sanity_val_steps", "num_nodes",
)


def check_value_types(cfg: DictConfig) -> None:
    """Stops on a ``seed`` or a Trainer count that is not an int (e.g. ``seed=abc``,
    ``trainer.max_steps=1e4``), naming the key.

    Raises:
        TypeError: naming the key, its value and what it takes.
    """
    seed = cfg.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise TypeError(f"seed must be an int (or null), got {seed!r}")
    trainer_cfg = cfg.get("trainer")
    if not isinstance(trainer_cfg, DictConfig):
        return
    for key in _TRAINER_COUNTS:
        value = trainer_cfg.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise TypeError(f"trainer.{key} must be an int (or null), got {value!r}")


def check_accelerator(trainer_cfg: DictConfig) -> None:
    """Stop before Lightning does when the trainer asks for a GPU that this machine lacks, or for
    SLURM's cluster environment outside a SLURM job step."""
    accelerator = str(trainer_cfg.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise RuntimeError(
            f"The trainer asks for accelerator={accelerator}, but no CUDA GPU is visible "
            "(torch.cuda.is_available() is False). On a CPU-only machine run with trainer=cpu "
            "(or trainer=default, which picks what is there; trainer=ddp_sim simulates DDP on CPU)."
        )
    plugin_targets = [
        str(plugin.get("_target_", "")) for plugin in trainer_cfg.get("plugins") or [] if isinstance(plugin, DictConfig)
    ]
    wants_slurm = any(target.endswith(".SLURMEnvironment") for target in plugin_targets)
    missing = [name for name in ("SLURM_NTASKS", "SLURM_PROCID", "SLURM_NODEID") if name not in os.environ]
    if wants_slurm and missing:
        raise RuntimeError(
            f"trainer=slurm runs in a SLURM job step, one process per task, but {', '.join(missing)} "
            "is not set: submit it (sbatch scripts/slurm_2x4.sbatch, whose srun starts the tasks, or "
            "hydra/launcher=slurm -m); on this machine use trainer=cpu, trainer=gpu or trainer=ddp."
        )


def _resume_checkpoints(run_dir: Path) -> list[Path]:
    """``<run_dir>/checkpoints/last*.ckpt`` and ``<run_dir>/hpc_ckpt_*.ckpt``, whole or not."""
    return [*run_dir.glob("checkpoints/last*.ckpt"), *run_dir.glob("hpc_ckpt_*.ckpt")]


def newest_checkpoint(run_dir: Path) -> Path | None:
    """Newest of ``<run_dir>/checkpoints/last*.ckpt`` and Lightning's ``<run_dir>/hpc_ckpt_*.ckpt``.

    ``last.ckpt`` is written by ModelCheckpoint(save_last=True); ``hpc_ckpt_<n>.ckpt`` by
    Lightning's SLURM environment when the job is preempted or times out. ``None`` when neither
    exists. A checkpoint cut short (a run killed while a copy wrote it) is passed over, with a
    warning, for the next newest.
    """
    resume_checkpoints = _resume_checkpoints(run_dir)
    for candidate in sorted(resume_checkpoints, key=lambda p: p.stat().st_mtime, reverse=True):
        if is_complete_checkpoint(candidate):
            return candidate
        _warn(f"{candidate} is truncated or not a checkpoint (a run killed while writing it?): passed over")
    # none whole: the run's other checkpoints (its best ones), saved at validations or epoch ends
    others = sorted(set(run_dir.glob("checkpoints/*.ckpt")) - set(resume_checkpoints), key=lambda p: p.stat().st_mtime)
    for candidate in reversed(others):
        if is_complete_checkpoint(candidate):
            _warn(f"{run_dir} has no whole last.ckpt: taking its newest whole checkpoint, {candidate.name}")
            return candidate
    return None


def retire_preemption_checkpoints(trainer: L.Trainer) -> None:
    """Moves Lightning's SLURM preemption checkpoints (``hpc_ckpt_<n>.ckpt`` in the run directory)
    into ``checkpoints/`` once a fit has finished: under SLURM, ``trainer.test(ckpt_path=None)``
    loads the newest of them instead of testing the current weights, and they are older than the
    finished fit. In ``checkpoints/`` they are kept, but no longer resumed from."""
    root = Path(trainer.default_root_dir)
    if trainer.is_global_zero:
        for path in root.glob("hpc_ckpt_*.ckpt"):
            (root / "checkpoints").mkdir(exist_ok=True)
            path.rename(root / "checkpoints" / path.name)
    trainer.strategy.barrier("retire_preemption_checkpoints")


def restore_training_progress(trainer: L.Trainer, checkpoint: dict[str, Any]) -> None:
    """Sets the trainer's step and epoch counters to the (loaded) checkpoint's before an
    evaluation-only test: Lightning's ``test`` restores the weights alone, so the test's metrics
    were logged at step 0 and its plots named epoch 0, step 0, as if the weights were untrained."""
    fit_loop_state = checkpoint.get("loops", {}).get("fit_loop")
    if fit_loop_state is not None:
        trainer.fit_loop.load_state_dict(fit_loop_state)


def _recorded_best(checkpoint_path: Path) -> tuple[int, str | None]:
    """A checkpoint's step and the ``best_model_path`` its monitoring ``ModelCheckpoint`` state
    records (file name only; ``None`` when nothing monitors a metric)."""
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=True, mmap=True)
    for state in checkpoint.get("callbacks", {}).values():
        if isinstance(state, dict) and state.get("monitor") and state.get("best_model_path"):
            return int(checkpoint.get("global_step", -1)), Path(state["best_model_path"]).name
    return int(checkpoint.get("global_step", -1)), None


def best_checkpoint(run_dir: Path, newest: Path) -> Path | None:
    """The best checkpoint of the run by its monitored metric: what the run's own test used, which
    :func:`resolve_ckpt_path` tests for a run directory. Each whole checkpoint records the best
    one at its save (``best_model_path``, looked up in ``run_dir/checkpoints/`` by name, so that a
    moved run directory works); the record of the latest step whose file exists wins, so that a
    ``last.ckpt`` older than the best (a run killed while saving it) does not name a best that
    the run has since replaced and deleted. ``None`` when no checkpoint monitors a metric."""
    candidates = {newest, *(p for p in run_dir.glob("checkpoints/*.ckpt") if is_complete_checkpoint(p))}
    records = sorted((_recorded_best(path) for path in candidates), key=lambda record: record[0], reverse=True)
    named = [name for _, name in records if name is not None]
    for name in named:
        if (run_dir / "checkpoints" / name).is_file():
            if name != named[0]:
                _warn(f"{run_dir}: the best checkpoint recorded last, {named[0]}, is missing: testing {name}, the best recorded before it")
            return run_dir / "checkpoints" / name
    if named:
        _warn(f"{run_dir}: no best checkpoint recorded by the run is there ({', '.join(dict.fromkeys(named))}): testing its newest")
    return None


def slurm_requeued() -> bool:
    """Whether this is a SLURM job started again after a requeue (``SLURM_RESTART_COUNT > 0``)."""
    return int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0


def resolve_ckpt_path(ckpt_path: str | None, output_dir: str | Path, train: bool) -> str | None:
    """Turns ``cfg.ckpt_path`` into a checkpoint file, or ``None`` to start from scratch.

    Args:
        ckpt_path: ``None``; ``"last"`` (this run's newest checkpoint); a ``.ckpt`` file; or a run
            directory (its newest checkpoint).
        output_dir: this run's directory.
        train: whether the run fits (a missing ``last`` then only means "start fresh").

    Raises:
        FileNotFoundError: a given path does not exist, or a run directory has no checkpoint.
    """
    if ckpt_path is None and train and slurm_requeued():
        ckpt_path = "last"
        _info("SLURM job was requeued (SLURM_RESTART_COUNT > 0): resuming from ckpt_path=last")
    if ckpt_path is None:
        return None
    if str(ckpt_path) == "last":
        newest = newest_checkpoint(Path(output_dir))
        if newest is None and train and (broken := sorted(Path(output_dir).glob("checkpoints/*.ckpt"))):
            raise FileExistsError(
                f"ckpt_path=last: {output_dir} holds a run whose checkpoints are all truncated ({', '.join(p.name for p in broken)}): "
                "starting over there would mix two runs. Restore a whole checkpoint (e.g. copy it again) and resume, or "
                "start the run in a directory of its own, hydra.run.dir=<dir>"
            )
        if newest is None:
            if train:
                _warn(
                    f"ckpt_path=last: no checkpoint yet in {output_dir}; starting from scratch. To resume "
                    "an earlier run, name its directory: --config-path <run>/.hydra --config-name config "
                    "ckpt_path=last, or hydra.run.dir=<run> ckpt_path=last with the run's overrides"
                )
                return None
            raise FileNotFoundError(
                f"ckpt_path=last: no checkpoint in {output_dir}. With train=false give a "
                "checkpoint file or a run directory: ckpt_path=logs/<task>/runs/<run>"
            )
        _info(f"ckpt_path=last: {'resuming from' if train else 'testing'} {newest}")
        return str(newest)
    path = Path(str(ckpt_path)).expanduser()
    if path.is_dir():
        newest = newest_checkpoint(path)
        if newest is None:
            raise FileNotFoundError(
                f"ckpt_path={path} is a directory without checkpoints "
                "(expected checkpoints/last.ckpt in a run directory)"
            )
        best = None if train else best_checkpoint(path, newest)
        if best is not None:
            _info(
                f"ckpt_path={path}: testing the run's best checkpoint by its monitored metric, {best}, as the "
                f"run's own test did (its newest is {newest.name}; give a .ckpt file to test another)"
            )
            return str(best)
        return str(newest)
    if not path.is_file():
        raise FileNotFoundError(
            f"ckpt_path={path}: no such file. Give a .ckpt file, a run directory, or 'last'."
        )
    if not is_complete_checkpoint(path):
        raise ValueError(
            f"ckpt_path={path} is truncated or not a checkpoint (a run killed while writing it?): give an "
            f"earlier checkpoint (ls {path.parent}) or the run directory, whose newest whole checkpoint is taken"
        )
    return str(path)


def check_sweep_starts_no_processes(trainer: L.Trainer) -> None:
    """Stops a ``-m`` sweep whose trainer would start its DDP processes itself (``trainer=ddp`` or
    ``ddp_sim`` outside SLURM): Lightning starts the other ranks by running this script again with
    the same command line, ``-m`` included, so every rank runs the whole sweep, and an Optuna
    sweep gives the ranks of one job different settings (Lightning-AI/pytorch-lightning#11617).

    Raises:
        ValueError: naming the ways that work.
    """
    if not in_sweep():
        return
    cluster = getattr(trainer.strategy, "cluster_environment", None)
    if (
        trainer.world_size > 1
        and getattr(trainer.strategy, "_start_method", None) == "popen"
        and cluster is not None
        and not cluster.creates_processes_externally
    ):
        raise ValueError(
            "A -m sweep cannot start DDP processes itself: Lightning starts the other ranks by running "
            "this command again, -m included, so each rank would run the whole sweep (with Optuna, "
            "each with its own settings). Submit the sweep with hydra/launcher=slurm trainer=slurm "
            "(srun starts each job's processes), or run one command per point without -m."
        )


def check_interpolations(cfg: DictConfig) -> None:
    """Stops on an interpolation whose key the composed config lacks (e.g. ``model.net.dim:
    ${data.dim}`` with a data config of one's own without ``dim``), naming the key that refers to
    it; OmegaConf's own message, raised deep in ``instantiate``, names only the missing key."""
    try:
        OmegaConf.to_container(cfg, resolve=True)
    except InterpolationKeyError as error:
        referrer = str(error.full_key)
        parent_key, _, leaf = referrer.rpartition(".")
        parent = OmegaConf.select(cfg, parent_key) if parent_key else cfg
        raw = OmegaConf.to_container(parent, resolve=False).get(leaf) if isinstance(parent, DictConfig) else None
        match = re.search(r"Interpolation key '([^']+)' not found", str(error.msg))
        missing = match.group(1) if match else "the key it refers to"
        raise ValueError(
            f"{referrer}: {raw if raw is not None else '<interpolation>'} refers to {missing}, which the composed "
            f"config does not have: set {missing} (e.g. in your own config file), or give {referrer}=<value>"
        ) from None
    except OmegaConfBaseException:  # another resolution error (e.g. an unset environment variable): raised where it is used
        return


def check_groups_are_configs(cfg: DictConfig) -> None:
    """Stops when a config group holds a bare name, which happens when a run is resumed from its
    saved config (``--config-path <run>/.hydra``), where group choices such as ``trainer=ddp``
    are not found and become strings; and when an experiment file without the ``_global_``
    package header left its settings under ``experiment.`` (a composition from Python or a
    sweep; the command line is checked before Hydra runs, by :func:`check_experiment_packages`).

    Raises:
        ValueError: naming the group and the command that takes the override, or the experiment
            file and the header it needs.
    """
    if isinstance(cfg.get("experiment"), DictConfig):
        raise ValueError(_missing_global_package("The experiment file (experiment=<name>: experiment/<name>.yaml)"))
    for group in ("data", "model", "trainer", "callbacks", "logger", "paths", "experiment", "debug"):
        value = cfg.get(group)
        if isinstance(value, str):
            raise ValueError(
                f"{group}={value!r} is a name, not a config: a run's saved config (--config-path "
                "<run>/.hydra) takes value overrides only. To change a config group, repeat the original "
                f"command with ckpt_path=last hydra.run.dir=<run> {group}={value}"
            )


def _round_trips_weights_only(value: Any) -> bool:
    """Whether ``value`` saves with ``torch.save`` and loads back with ``weights_only=True``."""
    buffer = io.BytesIO()
    try:
        torch.save(value, buffer)
        buffer.seek(0)
        torch.load(buffer, weights_only=True)
    except Exception:
        return False
    return True


def check_hparams_load_safely(**objects: Any) -> None:
    """Refuses a module or datamodule (``name=object``) whose saved hyperparameters would not load
    back with ``torch.load(weights_only=True)``, as resuming, testing the fit's checkpoint and
    evaluating load them: found before training rather than after it, with the arguments named."""
    for name, obj in objects.items():
        hparams = dict(getattr(obj, "hparams", None) or {})
        if _round_trips_weights_only(hparams):
            continue
        culprits = [
            f"{name}.{key} ({type(value).__name__})" for key, value in hparams.items() if not _round_trips_weights_only(value)
        ]
        raise TypeError(
            f"{type(obj).__name__} saves {', '.join(culprits) or 'hyperparameters'} into its checkpoints, which "
            "cannot be loaded back with torch.load(weights_only=True) (resuming, testing and evaluating do): "
            f"leave them out with self.save_hyperparameters(ignore=[...]) in {type(obj).__name__}.__init__ "
            "(modules, Hydra partials and other objects are rebuilt from the config, not from the checkpoint)"
        )


def check_run_dir_is_free(ckpt_path: str | None, output_dir: str | Path) -> None:
    """Stops a fresh run (no ``ckpt_path``) whose run directory already holds another run's
    checkpoints, which it would overwrite and whose metrics it would append to: e.g. a second
    ``train.py`` in one SLURM allocation, whose run directories are keyed by the job id. A
    requeued SLURM job resumes instead (:func:`resolve_ckpt_path`).

    Raises:
        FileExistsError: naming the directory and the two ways on.
    """
    if ckpt_path is not None or slurm_requeued():
        return
    existing = _resume_checkpoints(Path(output_dir)) or sorted(Path(output_dir).glob("checkpoints/*.ckpt"))
    if existing:
        raise FileExistsError(
            f"{output_dir} already holds a run ({existing[0]}): resume it with ckpt_path=last, or give this "
            "run a directory of its own, hydra.run.dir=<dir> (runs in one SLURM allocation share its job id, "
            "which names the default directory)"
        )


@rank_zero_only
def remove_partial_files(run_dir: str | Path) -> None:
    """Removes what a process killed while saving left in ``run_dir``: the hidden
    ``.<name>.partial`` files of :func:`tenfold.checkpoints.replaced_atomically` (checkpoints, the
    saved config, metrics.json), before a training run writes there again."""
    for pattern in (".*.partial", "checkpoints/.*.partial", ".hydra/.*.partial"):
        for partial in Path(run_dir).glob(pattern):
            partial.unlink(missing_ok=True)


def move_log_files(old_dir: str | Path, new_dir: str | Path) -> None:
    """Points the root logger's file handlers in ``old_dir`` (Hydra's ``<run dir>/train.log``) to
    a file of the same name in ``new_dir``: an evaluation of a trained run logs into its own
    directory and leaves the run's log as it was."""
    root = logging.getLogger()
    Path(new_dir).mkdir(parents=True, exist_ok=True)
    for handler in list(root.handlers):
        if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename).parent == Path(old_dir).resolve():
            moved = logging.FileHandler(Path(new_dir) / Path(handler.baseFilename).name, mode="a", encoding=handler.encoding)
            moved.setLevel(handler.level)
            moved.setFormatter(handler.formatter)
            for log_filter in handler.filters:
                moved.addFilter(log_filter)
            root.removeHandler(handler)
            handler.close()
            root.addHandler(moved)


EVALUATION_NAME_VARIABLE = "TENFOLD_EVALUATION_NAME"
"""The environment variable that hands an evaluation's folder name to the processes that
Lightning starts for the other DDP ranks (they inherit the environment)."""


def evaluation_output_dir(output_dir: str | Path) -> Path | None:
    """Where an evaluation (``train=false``) run from a trained run's directory (e.g. with the
    run's saved config) writes its logs and plots: ``<run>/evaluations/<date_time>/``, so that it
    neither overwrites the run's logged hyperparameters nor adds its test rows, at step 0, to the
    run's metrics. ``None`` for a directory without a trained run (the evaluation's own).

    Every process of one evaluation gets the same folder: those that Lightning starts (``trainer=ddp``)
    inherit its name through ``TENFOLD_EVALUATION_NAME``, which :func:`train` sets for the call;
    the tasks that ``srun`` starts together name it ``slurm-<job id>.<step id>``."""
    if not _resume_checkpoints(Path(output_dir)):
        return None
    name = os.environ.get(EVALUATION_NAME_VARIABLE)
    if name is None:
        if int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1 and "SLURM_STEP_ID" in os.environ:
            name = f"slurm-{os.environ['SLURM_JOB_ID']}.{os.environ['SLURM_STEP_ID']}"
        else:
            name = datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
        os.environ[EVALUATION_NAME_VARIABLE] = name
    return Path(output_dir) / "evaluations" / name


def compared_config(cfg: DictConfig) -> dict[str, Any]:
    """The config sections that :func:`check_checkpoint_hparams` compares, as plain values."""
    return {key: OmegaConf.to_container(cfg[key], resolve=True) for key in ("model", "data")}


def _plain(value: Any) -> Any:
    """A hyperparameter as plain Python, for comparison: OmegaConf containers and tuples as lists
    and dicts."""
    if isinstance(value, (DictConfig, ListConfig)):
        value = OmegaConf.to_container(value, resolve=True)
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    return value


def _override_value(value: Any) -> str:
    """``value`` as it is written on a Hydra command line."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return "[" + ",".join(_override_value(item) for item in value) + "]"
    return str(value)


# Keys (the last part of a dotted name) that say how a run executes, not what it computes: an
# evaluation may set them otherwise than the training run did.
EXECUTION_SETTINGS = frozenset(
    {"batch_size", "eval_batch_size", "num_workers", "pin_memory", "persistent_workers", "data_dir",
     "cuda_graph", "compile_networks", "query_chunk_size", "search_backend"}
)
# Model settings added to the configs after runs were saved, with the value that earlier runs
# had in effect: a checkpoint without the key is compared as if it held that value (a key missing
# from the checkpoint is otherwise not compared, so a new default would change a resumed run
# silently). attention_weight_dropout: null (the blocks' dropout), from 81a14f5 on.
SETTINGS_ADDED_LATER: dict[str, Any] = {"attention_weight_dropout": None, "retrieval_scoring": "dot"}
# Data keys that only shape training (how many batches make an epoch): compared when resuming, not
# when evaluating.
TRAINING_ONLY_SETTINGS = frozenset({"steps_per_epoch"})


def _flatten(prefix: str, tree: Any) -> dict[str, Any]:
    """``{"a": {"b": 1}}`` as ``{"<prefix>.a.b": 1}``; lists stay whole values."""
    if not isinstance(tree, dict):
        return {prefix: tree}
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        flat.update(_flatten(f"{prefix}.{key}" if prefix else str(key), value))
    return flat


def check_checkpoint_hparams(
    model: L.LightningModule,
    ckpt_path: str,
    must_match: bool,
    datamodule: L.LightningDataModule | None = None,
    config: dict[str, Any] | None = None,
    resume: bool = False,
    checkpoint: dict[str, Any] | None = None,
) -> None:
    """Compares the settings saved in the checkpoint to evaluate with this command's, since loading
    the weights keeps the command's: the model's and the datamodule's saved hyperparameters, and
    the ``model`` and ``data`` config sections that :class:`~tenfold.checkpoints.ConfigInCheckpoint`
    saved (which also cover a network given to the model as an object, e.g. ``model.net``).

    A sampler trained with ``model.num_steps=20`` and evaluated with the default 100 loads without
    complaint (same shapes) and reports the metrics of another sampler; a relational model
    evaluated with another ``data.seed`` is tested on objects it was trained on. With
    ``must_match`` a difference in the model stops the run with the overrides that reproduce the
    checkpoint's settings; a difference in the data only warns (an evaluation may take a larger
    test set), as do all differences without ``must_match``. :data:`EXECUTION_SETTINGS` (batch
    sizes, workers, paths, compilation) are not compared, nor, for an evaluation,
    :data:`TRAINING_ONLY_SETTINGS` (``data.steps_per_epoch``).

    The same holds for resuming a training run (``resume``): a resume with ``model.num_steps=20``
    from a run trained with 10 would continue another sampler, one of another experiment fails
    later with a list of mismatched weights.

    Args:
        config: this command's sections as plain values, ``{"model": ..., "data": ...}``.
        resume: the command resumes training from ``ckpt_path`` (the message says how to resume).
        checkpoint: ``ckpt_path`` already loaded (``torch.load(..., weights_only=True)``), else
            it is loaded here.

    Raises:
        ValueError: ``must_match`` and a saved model setting differs from the command's.
    """
    if checkpoint is None:
        checkpoint = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    saved = _flatten("model", _plain(dict(checkpoint.get("hyper_parameters") or {})))
    current = _flatten("model", _plain(dict(model.hparams)))
    if datamodule is not None:
        saved.update(_flatten("data", _plain(dict(checkpoint.get("datamodule_hyper_parameters") or {}))))
        current.update(_flatten("data", _plain(dict(datamodule.hparams))))
    saved_config = ConfigInCheckpoint.saved(checkpoint)
    if saved_config is not None and config is not None:
        saved.update(_flatten("", _plain(saved_config)))
        current.update(_flatten("", _plain(config)))
        for key in current.keys() - saved.keys():
            name = key.rsplit(".", 1)[-1]
            # when resuming: an evaluation in eval mode is unaffected by such training settings
            if resume and key.startswith("model.") and name in SETTINGS_ADDED_LATER:
                saved[key] = SETTINGS_ADDED_LATER[name]
    ignored = EXECUTION_SETTINGS if resume else EXECUTION_SETTINGS | TRAINING_ONLY_SETTINGS
    differing = sorted(
        key for key in saved.keys() & current.keys() if saved[key] != current[key] and key.rsplit(".", 1)[-1] not in ignored
    )
    if not differing:
        return
    lines = "\n".join(f"  {key}: checkpoint {saved[key]!r}, config {current[key]!r}" for key in differing)
    overrides = " ".join(f"{key}={_override_value(saved[key])}" for key in differing)
    run_config = Path(ckpt_path).resolve().parent.parent / ".hydra"
    from_run = ""
    if (run_config / "config.yaml").is_file():
        verb, extra = ("resume", " ckpt_path=last") if resume else ("or evaluate", "")
        from_run = f" {verb} with the run's own config (--config-path {run_config} --config-name config{extra}),"
    if resume:
        advice = (
            f"Repeat the training overrides ({overrides}),{from_run} start a new run without ckpt_path, or set "
            "check_ckpt_hparams=false to continue training with this command's settings."
        )
    else:
        advice = (
            f"Repeat the training overrides ({overrides}),{from_run} or set check_ckpt_hparams=false "
            "to evaluate the weights with this command's settings."
        )
    message = f"{ckpt_path} was trained with other settings than this command gives:\n{lines}\n{advice}"
    if must_match and any(key.startswith("model.") for key in differing):
        raise ValueError(message)
    _warn(message)


def _run_config_dirs() -> list[Path]:
    """The config directories of the running Hydra job (the primary one, then its search path),
    else this project's."""
    if HydraConfig.initialized():
        sources = HydraConfig.get().runtime.config_sources
        dirs = [Path(source.path) for source in sources if source.schema == "file"]
        if dirs:
            return dirs
    return [CONFIG_DIR]


def instantiate_group(group: DictConfig | None, name: str = "callbacks") -> list[Any]:
    """Instantiates every entry of a config group (``callbacks``, ``logger``); ``null`` entries
    are switched off.

    Raises:
        ValueError: an entry without ``_target_``, which is what ``+callbacks.<entry>.<key>=...``
            makes where the group has no such entry: it would be skipped silently.
    """
    if not group:
        return []
    built = []
    for key, entry in group.items():
        if entry is None:
            continue
        if not isinstance(entry, DictConfig) or "_target_" not in entry:
            known = any((config_dir / name / f"{key}.yaml").is_file() for config_dir in _run_config_dirs())
            fix = f"add its config to the defaults: {name}=[default,{key}]" if known else "give it a _target_"
            raise ValueError(
                f"{name}.{key} has no _target_, so nothing would be built from it (a '+' override adds keys to "
                f"an entry that this config does not have): {fix}, then set its keys ({name}.{key}.<key>=...)"
            )
        built.append(instantiate(entry, _convert_="partial"))
    return built


def without_logger_callbacks(callbacks: list[Any]) -> list[Any]:
    """The callbacks less those that only report to a logger (``LearningRateMonitor``, which
    Lightning refuses without one), so that ``~logger`` runs with the default callbacks."""
    kept = [callback for callback in callbacks if not isinstance(callback, LearningRateMonitor)]
    if len(kept) < len(callbacks):
        _info("No logger: the learning-rate monitor is left out")
    return kept


@rank_zero_only
def _info(message: str) -> None:
    log.info(message)


@rank_zero_only
def _warn(message: str) -> None:
    log.warning(message)


@rank_zero_only
def print_config_tree(cfg: DictConfig) -> None:
    """Prints the composed config with rich, one branch per top-level group."""
    import rich
    import rich.syntax
    import rich.tree

    tree = rich.tree.Tree("CONFIG", guide_style="dim")
    first = ["data", "model", "callbacks", "logger", "trainer", "paths", "extras"]
    for key in first + [k for k in cfg if k not in first]:
        if key not in cfg:
            continue
        node = cfg[key]
        try:
            text = OmegaConf.to_yaml(node, resolve=True) if OmegaConf.is_config(node) else str(node)
        except OmegaConfBaseException:  # e.g. a missing environment variable: show it unresolved
            text = OmegaConf.to_yaml(node) if OmegaConf.is_config(node) else str(node)
        tree.add(key).add(rich.syntax.Syntax(text, "yaml"))
    rich.print(tree)


@rank_zero_only
def save_run_config(cfg: DictConfig) -> None:
    """Writes ``<run dir>/.hydra/`` (``config.yaml``, ``hydra.yaml``, ``overrides.yaml``) as Hydra
    would, which ``configs/hydra/default.yaml`` leaves to this function (``output_subdir: null``):
    Hydra writes them before the task starts, so a fresh run refused by
    :func:`check_run_dir_is_free` overwrote the saved config of the run it protects. Nothing to
    write for a :func:`train` call outside a Hydra run (e.g. ``benchmarks/samplers.py``).

    ``config.yaml`` carries a ``hydra`` block (this run directory, ``output_subdir: null``), so that
    a resume from it (``--config-path <run>/.hydra --config-name config``) runs in this directory
    and a refused attempt leaves the files alone. A resume keeps the run's overrides in
    ``overrides.yaml`` and adds its own; an evaluation (``train=false``) in a run directory that
    has them writes nothing."""
    if not HydraConfig.initialized():
        return
    hydra_root = HydraConfig.instance().cfg
    output_dir = Path(hydra_root.hydra.runtime.output_dir)
    directory = output_dir / ".hydra"
    if not cfg.get("train") and (directory / "config.yaml").is_file():
        return  # an evaluation inside the run it evaluates: the saved config stays the training's
    directory.mkdir(parents=True, exist_ok=True)
    overrides = list(hydra_root.hydra.overrides.task)
    if cfg.get("ckpt_path") is not None:
        # a resume: the overrides that made the run, then this command's (later ones win)
        overrides = saved_overrides(output_dir) + overrides
    saved = copy.deepcopy(cfg)
    with open_dict(saved):
        # `--config-path <run>/.hydra --config-name config` runs in this directory and leaves
        # its saved files to this function (Hydra's own defaults would write them first)
        saved.hydra = {"run": {"dir": str(output_dir)}, "output_subdir": None}
    for name, content in (("config.yaml", saved), ("hydra.yaml", hydra_root), ("overrides.yaml", OmegaConf.create(overrides))):
        # whole or not at all: a resume reads these files
        with replaced_atomically(directory / name) as partial:
            OmegaConf.save(content, partial)


def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fits ``cfg.model`` on ``cfg.data`` (when ``cfg.train``), then tests (when ``cfg.test``),
    after checking the run directory and writing the run's config into it (``.hydra/``).

    Testing uses the best checkpoint of the fit when the checkpoint callback monitors a metric
    (the current weights, with a warning, when none was saved, e.g. under ``fast_dev_run``), the
    final weights when it monitors none, or ``cfg.ckpt_path`` when ``train=false``. The checkpoint
    callback is :func:`model_checkpoint`, the first ``ModelCheckpoint`` of the
    callbacks: ``callbacks.model_checkpoint`` by default, the unmonitored ``last_checkpoint`` when
    that is set to null.

    Returns:
        ``(metric_dict, object_dict)``: every metric logged by the fit and the test (floats), and
        the objects built: ``cfg``, ``datamodule``, ``model``, ``callbacks``, ``loggers``,
        ``trainer``.

    The warning filters it sets (``extras.ignore_warnings``, the warnings of a resume or an
    evaluation that would read as faults) hold for this call only.
    """
    inherited_evaluation_name = os.environ.get(EVALUATION_NAME_VARIABLE)
    try:
        with warnings.catch_warnings():
            return _train(cfg)
    finally:
        # the next call in this process (a sweep's next job) names its own evaluation
        if inherited_evaluation_name is None:
            os.environ.pop(EVALUATION_NAME_VARIABLE, None)


def _train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """:func:`train`'s body, inside its scope of warning filters."""
    if cfg.get("extras") and cfg.extras.get("ignore_warnings"):
        warnings.filterwarnings("ignore")
    if cfg.get("num_threads"):
        torch.set_num_threads(int(cfg.num_threads))
    if cfg.get("extras") and cfg.extras.get("print_config"):
        print_config_tree(cfg)
    check_value_types(cfg)
    if cfg.get("seed") is not None:
        L.seed_everything(cfg.seed, workers=True)
    if not cfg.get("train") and not cfg.get("ckpt_path"):
        raise ValueError(
            "train=false only tests a checkpoint: give ckpt_path=PATH (a .ckpt file or a run "
            "directory such as logs/<task>/runs/<run>)"
        )
    if not cfg.get("train") and not cfg.get("test"):
        raise ValueError(
            "train=false with test=false runs nothing: add test=true to evaluate the checkpoint (a run trained "
            "with test=false saves that in its config)"
        )
    check_groups_are_configs(cfg)
    check_interpolations(cfg)
    check_accelerator(cfg.trainer)
    output_dir = cfg.paths.output_dir
    fit_ckpt_path = None
    if not cfg.get("train"):
        # the tested checkpoint's ModelCheckpoint state names the run's directory; an evaluation saves
        # no checkpoints, so Lightning's warning that their bookkeeping is not reloaded would read as a fault
        warnings.filterwarnings("ignore", message=r"The dirpath has changed from")
    if not cfg.get("train") and (evaluation_dir := evaluation_output_dir(output_dir)) is not None:
        with open_dict(cfg):
            cfg.paths.output_dir = str(evaluation_dir)
        move_log_files(output_dir, evaluation_dir)
        _info(f"{output_dir} holds a trained run: this evaluation logs to {evaluation_dir}")
    if cfg.get("train"):
        check_run_dir_is_free(cfg.get("ckpt_path"), output_dir)
        remove_partial_files(output_dir)
        fit_ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir, train=True)
        if fit_ckpt_path is not None and cfg.trainer.get("fast_dev_run"):
            raise ValueError(
                "trainer.fast_dev_run (debug=fdr) runs one step of a fresh run: resuming with it trains "
                "nothing (Lightning sets max_steps=1) and would rewrite the run's saved config. Drop "
                "ckpt_path to check the code path, or drop fast_dev_run and limit the resumed run "
                "(trainer.max_steps, trainer.limit_train_batches)."
            )
        if fit_ckpt_path is not None:
            # a resumed run writes into its own checkpoint directory: Lightning's warning that it is not
            # empty would read as a fault
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")

    _info(f"Instantiating datamodule <{cfg.data._target_}>")
    datamodule: L.LightningDataModule = instantiate(cfg.data, _convert_="partial")
    _info(f"Instantiating model <{cfg.model._target_}>")
    model: L.LightningModule = instantiate(cfg.model, _convert_="partial")
    check_hparams_load_safely(model=model, data=datamodule)
    config_sections = compared_config(cfg)
    fit_checkpoint = None
    if fit_ckpt_path is not None:
        fit_checkpoint = torch.load(fit_ckpt_path, map_location="cpu", weights_only=True, mmap=True)
        check_checkpoint_hparams(
            model,
            fit_ckpt_path,
            cfg.get("check_ckpt_hparams", True),
            datamodule,
            config_sections,
            resume=True,
            checkpoint=fit_checkpoint,
        )
    callbacks = instantiate_group(cfg.get("callbacks"), "callbacks")
    if cfg.trainer.get("enable_progress_bar") is False:
        callbacks = [callback for callback in callbacks if not isinstance(callback, ProgressBar)]
    # written once the run is known to start: a refused command leaves a run's saved config as it was
    save_run_config(cfg)
    # in evaluations too: Lightning warns when a checkpoint holds the state of a missing callback
    callbacks.append(ConfigInCheckpoint(config_sections))
    loggers = instantiate_group(cfg.get("logger"), "logger")
    if not loggers:
        callbacks = without_logger_callbacks(callbacks)
    _info(f"Instantiating trainer <{cfg.trainer._target_}>")
    trainer: L.Trainer = instantiate(
        cfg.trainer, callbacks=callbacks, logger=loggers or False, _convert_="partial"
    )
    check_sweep_starts_no_processes(trainer)
    cluster = getattr(trainer.strategy, "cluster_environment", None)
    environment = type(cluster).__name__ if cluster is not None else "none"
    _info(
        f"Trainer: {trainer.num_nodes} node(s) x {trainer.num_devices} device(s), "
        f"{type(trainer.accelerator).__name__}, {type(trainer.strategy).__name__}, "
        f"precision {trainer.precision}, cluster environment {environment}"
    )
    object_dict: dict[str, Any] = {
        "cfg": cfg,
        "datamodule": datamodule,
        "model": model,
        "callbacks": callbacks,
        "loggers": loggers,
        "trainer": trainer,
    }
    if fit_checkpoint is not None:
        # steps logged after the checkpoint (by a run killed later) are logged again by this run;
        # before the first use of a logger (a TensorBoard writer takes the step when it opens)
        for logger in trainer.loggers:
            if isinstance(logger, ResumableLogger):
                logger.discard_steps_from(int(fit_checkpoint["global_step"]))
    for logger in trainer.loggers:
        logger.log_hyperparams({"config": OmegaConf.to_container(cfg, resolve=True)})
    metric_dict: dict[str, float] = {}
    try:
        if cfg.get("train"):
            trainer.fit(model=model, datamodule=datamodule, ckpt_path=fit_ckpt_path)
            metric_dict.update(_floats(trainer.callback_metrics))
            retire_preemption_checkpoints(trainer)

        if cfg.get("test"):
            if cfg.get("train"):
                checkpoint = model_checkpoint(trainer)
                if checkpoint is not None and checkpoint.monitor is None:
                    # no metric to choose by: the final weights (the newest checkpoint may be older
                    # when the run did not end on a saving epoch)
                    ckpt_path = None
                else:
                    ckpt_path = checkpoint.best_model_path if checkpoint is not None else ""
                if ckpt_path == "":
                    _warn("No best checkpoint was saved: testing the current weights")
                    ckpt_path = None
            else:
                ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir, train=False)
                if ckpt_path is not None:
                    tested = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
                    check_checkpoint_hparams(
                        model,
                        ckpt_path,
                        cfg.get("check_ckpt_hparams", True),
                        datamodule,
                        config_sections,
                        checkpoint=tested,
                    )
                    restore_training_progress(trainer, tested)
            _info(f"Testing {'checkpoint ' + ckpt_path if ckpt_path else 'current weights'}")
            results = trainer.test(model=model, datamodule=datamodule, ckpt_path=ckpt_path)
            metric_dict.update(_floats(trainer.callback_metrics))
            for metrics in results:  # one dict per test dataloader, also kept in train.log
                _info("Test: " + ", ".join(f"{name} = {value:.6g}" for name, value in sorted(_floats(metrics).items())))
    finally:
        if "wandb" in sys.modules and sys.modules["wandb"].run is not None:
            sys.modules["wandb"].finish()
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger) and metric_dict:
            # the final metrics that reached the logger (not those of the progress bar only, nor the
            # plain name of one logged as <name>_step and <name>_epoch): the columns have values
            written = getattr(logger, "logged_metric_names", metric_dict.keys())
            log_tensorboard_hparams(logger, hparams_shown(cfg), [name for name in metric_dict if name in written])
    if trainer.is_global_zero:
        # those that made the run, then a resume's (save_run_config merges them), else the command's
        command = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
        write_run_metrics(
            cfg.paths.output_dir,
            metric_dict,
            saved_overrides(cfg.paths.output_dir) or command,
            cfg.get("optimized_metric"),
            optimized_value(cfg, object_dict, metric_dict, warn_unlogged=False),
        )
    _info(f"Output directory: {cfg.paths.output_dir}")
    return metric_dict, object_dict


def model_checkpoint(trainer: L.Trainer) -> ModelCheckpoint | None:
    """The run's checkpoint callback: the first ``ModelCheckpoint`` of the trainer's callbacks
    (Lightning's ``trainer.checkpoint_callback`` is the first checkpoint callback of any kind, which
    is :class:`~tenfold.checkpoints.PreemptionCheckpoint` when the config drops both
    ``ModelCheckpoint`` callbacks)."""
    return next((callback for callback in trainer.checkpoint_callbacks if isinstance(callback, ModelCheckpoint)), None)


def hparams_shown(cfg: DictConfig) -> dict[str, Any]:
    """The settings that TensorBoard's HPARAMS tab shows beside a run's final metrics: its task
    name, seed, model, data and trainer config (resolved), the sections in which runs differ."""
    return {
        key: OmegaConf.to_container(cfg[key], resolve=True) if isinstance(cfg.get(key), DictConfig) else cfg.get(key)
        for key in ("task_name", "seed", "model", "data", "trainer")
        if key in cfg
    }


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    """Scalar metrics (tensors or numbers) as Python floats."""
    return {k: float(v.item() if isinstance(v, torch.Tensor) else v) for k, v in metrics.items()}


def in_sweep() -> bool:
    """Whether this process runs a job of a Hydra ``-m`` sweep."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def optimized_value(
    cfg: DictConfig, object_dict: dict[str, Any], metric_dict: dict[str, float], warn_unlogged: bool = True
) -> float | None:
    """Value of ``cfg.optimized_metric`` for sweeps (``None`` when not logged, with a warning when
    ``warn_unlogged``: in a sweep, where Optuna stops on it).

    The best value seen by the checkpoint callback when it monitors that metric (the value of the
    checkpoint that was tested), else the last logged value.
    """
    name = cfg.get("optimized_metric")
    if not name:
        return None
    trainer = object_dict.get("trainer")
    checkpoint = model_checkpoint(trainer) if trainer is not None else None
    best = checkpoint.best_model_score if checkpoint is not None else None
    if checkpoint is not None and checkpoint.monitor == name and best is not None:
        return float(best)
    if name not in metric_dict:
        if not warn_unlogged:
            return None
        _warn(
            f"optimized_metric={name} was not logged, so this run returns no value (an Optuna sweep stops on "
            f"that): set optimized_metric to one of {sorted(metric_dict)}, or validate within the run "
            "(e.g. trainer.check_val_every_n_epoch=1)"
        )
        return None
    return metric_dict[name]


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    """Hydra entry point: runs :func:`train` and returns the optimized metric (for sweeps)."""
    metric_dict, object_dict = train(cfg)
    value = optimized_value(cfg, object_dict, metric_dict, warn_unlogged=in_sweep())
    if value is not None:
        _info(f"optimized_metric {cfg.optimized_metric} = {value}")
    return value


if __name__ == "__main__":
    problem = check_group_overrides(sys.argv[1:])
    problem = problem or check_experiment_packages(sys.argv[1:])
    if problem is not None:
        print(problem, file=sys.stderr)
        sys.exit(1)
    try:
        main()
    except SIGTERMException:
        # Lightning's SIGTERMException is a SystemExit without a code: the job would end "successfully"
        print(
            "train.py was stopped by SIGTERM: resume the run from its newest checkpoint with ckpt_path=last "
            "in its run directory (a sweep: each unfinished job's directory)",
            file=sys.stderr,
        )
        sys.exit(128 + signal.SIGTERM)
    except (SystemExit, Exception) as stop:
        if not (isinstance(stop, SystemExit) and not stop.code):
            hint = suggest_override_keys(sys.argv[1:])
            if hint is not None:
                print(hint, file=sys.stderr)
        raise
