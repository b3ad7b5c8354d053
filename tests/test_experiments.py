"""Every experiment config composes, instantiates and runs one training and validation step.

The experiments are discovered from ``configs/experiment/**/*.yaml``, so a new experiment file is
covered without editing this test. Each runs through :func:`train.train` (the function behind
``python train.py``) with ``debug=fdr`` (Lightning's ``fast_dev_run`` on the CPU: one training
batch, one validation batch, then the test step). After each backward pass every gradient must
have its parameter's strides, the layout DDP's gradient buckets expect.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningModule
from omegaconf import OmegaConf

import train as train_script
from tenfold.datamodules.relational import relational_games

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"
EXPERIMENTS = train_script.available_experiments(CONFIG_DIR)

# Overrides that shrink sizes (batch, evaluation batch, number of steps, generated set sizes,
# model width), never the method, so that one step takes about a second on a CPU. Keys are
# experiment name prefixes (a family, or a family and task); every matching entry applies, in
# order. An experiment without an entry runs as given.
SMOKE_OVERRIDES: dict[str, list[str]] = {
    "samplers": ["data.batch_size=16", "data.eval_batch_size=64", "model.num_steps=8"],
    "attention/contextual_retrieval": ["data.batch_size=32", "data.train_size=64", "data.val_size=64", "data.test_size=64"],
    "attention/triangles": ["data.batch_size=8", "data.train_size=16", "data.val_size=16", "data.test_size=16"],
    "attention/sort_of_clevr": ["data.batch_size=8", "data.train_images=4", "data.val_images=2", "data.test_images=2"],
    # the triangles task alone needs no downloaded dataset
    "attention/multitask_images": ["data.batch_size=4", "data.eval_batch_size=8", "data.datasets=[triangles]",
                                   "data.num_classes=[2]", "data.triangles_train_size=8", "data.triangles_test_size=8"],
    "attention/esbn": ["data.batch_size=8", "data.train_size=16", "data.val_size=16", "data.test_size=16"],
    "relational": ["data.batch_size=8", "data.train_size=16", "data.val_size=16", "data.test_size=16"],
    "attention/scan": ["data.batch_size=16", "data.eval_batch_size=64"],
    # with the corpus that SMOKE_DATA writes: 10 words + <eos> + <unk>
    "attention/wikitext103": [
        "data.download=false", "data.vocab_size=12", "data.context_length=16", "data.test_context_window=8",
        "model.net.embed_dim=32", "model.net.feedforward_dim=64",
    ],
    "attention/wikitext103_compositional": ["model.net.attention.retrieval_dim=32", "model.net.attention.retrieval_qk_dim=8"],
}


def write_wikitext_corpus(data_dir: Path) -> None:
    """A tiny WikiText-103 layout (``wikitext-103/wiki.{train,valid,test}.tokens``) of 10 words."""
    corpus = data_dir / "wikitext-103"
    corpus.mkdir(parents=True)
    for split in ("train", "valid", "test"):
        (corpus / f"wiki.{split}.tokens").write_text(" a b c d e f g \n h i j \n" * 40)


def write_xoccurs_files(data_dir: Path) -> None:
    """Released-format ``xoccurs_{pentos,hexos,stripes}.npz`` of 40 rendered scenes each (the
    ``occurs`` generator's scenes: only the file format matters here)."""
    folder = data_dir / "relations-game-datasets"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for object_set in ("pentos", "hexos", "stripes"):
        scenes = relational_games.generate_scenes("occurs", object_set, 40, rng)
        images = relational_games.render(object_set, scenes.forms, scenes.colours)
        relational_games.write_relational_games(folder / f"xoccurs_{object_set}.npz", images, scenes.target)


# Experiments whose datasets must be downloaded get small stand-ins, written under the run's
# data_dir before it runs (keys: experiment name prefixes).
SMOKE_DATA: dict[str, Callable[[Path], None]] = {
    "attention/wikitext103": write_wikitext_corpus,
    "relational/games_xoccurs": write_xoccurs_files,
}


def smoke_overrides(experiment: str) -> list[str]:
    """The :data:`SMOKE_OVERRIDES` of every prefix of ``experiment``, in table order."""
    return [override for prefix, overrides in SMOKE_OVERRIDES.items() if experiment.startswith(prefix) for override in overrides]


def test_experiments_are_discovered() -> None:
    assert EXPERIMENTS, "no experiment files under configs/experiment/"
    assert all(not name.endswith(".yaml") for name in EXPERIMENTS)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_runs_one_step(experiment: str, compose_cfg, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Each gradient must have its parameter's strides: DDP's gradient buckets expect that layout
    # and otherwise warn and copy every step.
    misaligned: list[str] = []
    backward_passes = 0

    def record_misaligned_gradients(module: LightningModule) -> None:
        nonlocal backward_passes
        backward_passes += 1
        misaligned.extend(
            f"{name} {tuple(parameter.shape)}: grad strides {parameter.grad.stride()}, parameter {parameter.stride()}"
            for name, parameter in module.named_parameters()
            if parameter.grad is not None and parameter.grad.stride() != parameter.stride()
        )

    monkeypatch.setattr(LightningModule, "on_after_backward", record_misaligned_gradients)
    for prefix, write_data in SMOKE_DATA.items():
        if experiment.startswith(prefix):
            write_data(tmp_path / "data")
    overrides = [
        f"experiment={experiment}",
        "debug=fdr",
        "extras.print_config=false",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.data_dir={tmp_path / 'data'}",
        *smoke_overrides(experiment),
    ]
    cfg = compose_cfg(overrides, tmp_path / "run")
    assert cfg.trainer.fast_dev_run is True
    assert cfg.trainer.accelerator == "cpu"

    metric_dict, object_dict = train_script.train(cfg)

    trainer = object_dict["trainer"]
    assert trainer.global_step >= 1, "no optimizer step was taken"
    assert backward_passes >= 1, "the gradient layout was never checked"
    assert not misaligned, misaligned
    assert metric_dict, "nothing was logged"
    # one batch may hold no example of some group: that group's metric is NaN (no examples)
    groups = OmegaConf.select(cfg, "model.group_names") or []
    for name, value in metric_dict.items():
        group_metric = any(name.endswith(f"_{group}") for group in groups)
        assert torch.isfinite(torch.tensor(value)) or (group_metric and math.isnan(value)), f"{experiment}: {name} = {value}"
    assert trainer.state.finished
    # debug=fdr saves no checkpoint: what a real run's checkpoints need is checked here. The
    # metric the run's checkpoint callback monitors must be logged (Lightning would stop the real
    # run after its first validation) ...
    monitored = OmegaConf.select(cfg, "callbacks.model_checkpoint.monitor")
    if monitored is not None:
        assert monitored in metric_dict, f"{experiment}: callbacks.model_checkpoint.monitor={monitored} is not logged"
    # ... and a checkpoint must load as train.py loads it for a resume or an evaluation
    # (hyperparameters of plain values: save_hyperparameters(ignore=[...]) for modules and partials)
    checkpoint_path = tmp_path / "smoke.ckpt"
    trainer.save_checkpoint(checkpoint_path)
    torch.load(checkpoint_path, map_location="cpu", weights_only=True)
