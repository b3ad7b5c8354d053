"""Benchmark of the diffusion samplers (Sendera et al., 2024, arXiv 2402.05098): sample quality
beside the paper's Table 1, and training speed beside the official code, measured in one run.

Quality: each chosen experiment (``configs/experiment/samplers/<name>.yaml``) is composed with
Hydra, trained for ``--steps`` optimizer steps through ``train.train`` (CPU trainer, no logger,
checkpoints, plots or validation), then evaluated with :meth:`DiffusionSampler.evaluate` on a
fresh batch of ``--eval-size`` trajectories and exact target samples. Printed per experiment:
mean +- std over ``--seeds`` of |Delta log Z| (``|log Z - ELBO|``), |Delta log Z^RW|
(``|log Z - logmeanexp(log w)|``), W2, EUBO, ELBO, modes hit and wall time, beside

- the paper's values (Table 1 and Table C.1, 25,000 iterations, 10,000 with LP; 5 runs), and
- the official code (GFNOrg/gfn-diffusion, commit 255b499) after 600 iterations, as measured in
  the project's issue 4 (one run, 2000 evaluation samples).

Speed: training iterations per second at batch 300, T = 100, widths 256 (PIS architecture: 2
hidden layers, 64 Fourier frequencies), sigma^2 = 5 on GMM25, for TB and for TB + exploration +
local search, measured interleaved in the same process for

- ours through a real ``lightning.Trainer`` fit (``32-true`` and ``bf16-mixed``): the time
  between consecutive training batches, i.e. everything Lightning does per optimizer step,
  including the local-search callback's hooks;
- ours in a plain loop (``training_step`` + backward + Adam step, the callback's hooks called by
  hand), in fp32 and under ``torch.autocast(..., dtype=torch.bfloat16)`` (as bf16-mixed does);
- the floor of any eager implementation (TB only, row ``network alone (floor)``): our drift
  network's ``T`` sequential forward calls and one backward, with nothing else of the sampler;
- the floor of any implementation of this network that runs its products at the step's shapes,
  compiled or fused (TB only, row ``matmuls alone (floor)``): the matrix products of one TB step
  and nothing else, in the row's precision;
- the official code, imported from ``--official-dir`` (its ``energy_sampling`` folder), stepped as
  its ``train.py`` steps with the README's TB and TB + Expl. + LS arguments plus
  ``--pis_architectures --zero_init --clipping --t_scale 5 --hidden_dim 256 --s_emb_dim 256
  --t_emb_dim 256 --harmonics_dim 64``.

Each configuration runs ``--speed-rounds`` fresh blocks of ``--speed-warmup`` warm-up and
``speed-iters / speed-rounds`` timed iterations; the blocks of all configurations alternate (the
order reversed every other round), so load from other processes hits them alike. Reported:
median seconds per iteration (over consecutive pairs, since forward and backward steps alternate
with local search), the cost of one local search (timed separately; it runs once every 100
iterations in both codes) and the iterations per second including it, amortized.
The official buffer re-ranks its whole content (``argsort``) on every insertion, so its cost per
iteration grows with the buffer; timed near the start of training, as here, it is flattered.
With ``--compile``, ours also runs with ``model.compile_networks=true`` (rows ``ours (Trainer)
compiled`` and ``ours (loop) compiled``: the per-step policy call under ``torch.compile``; the
warm-up iterations absorb the compilation). With ``--cuda-graph`` (``--device cuda``), ours also
runs with ``model.cuda_graph=true`` in fp32 (rows ``... cuda graph``: the on-policy step captured
as CUDA graphs at its first iteration, a warm-up one).

Benchmark-only requirement: ``einops`` (imported by the official code's ``architectures.py``):
``.venv/bin/pip install einops``. The official code is read from a scratch copy outside the
repository and never copied into it.

Usage (from the repository root)::

    python benchmarks/samplers.py --quick --official-dir PATH/energy_sampling   # ~6 min, one core
    python benchmarks/samplers.py --experiments gmm25_tb gmm25_tb_expl_ls gmm25_pis \\
        --steps 600 --seeds 0 1 2 --eval-size 2000 --official-dir PATH/energy_sampling
    python benchmarks/samplers.py --skip-quality --device cuda --official-dir PATH
    python benchmarks/samplers.py --skip-quality --skip-speed --official-quality --official-dir PATH

``--official-quality`` also trains the official code itself (``--official-methods``: TB and
TB + Expl. + LS by default, also PIS, on 25GMM, ``--steps`` iterations, ``--seeds``) and
evaluates it as ours (``samplers_official_quality_runs.csv``): with its buffers as released,
and drawing every batch from the current buffer (``fresh``; the released buffer keeps a running
``DataLoader`` iterator over an old snapshot, see ``tenfold.callbacks.LocalSearchReplay``'s
``batch_draws``).

Results go to ``--out`` (default ``benchmarks/results/``): ``samplers_quality.csv`` (summary),
``samplers_quality_runs.csv`` (one row per experiment and seed, written as runs finish) and
``samplers_speed.csv``.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import types
import warnings
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# ------------------------------------------------------------------------------------------------
# Reference values.

# Sendera et al., "Improved off-policy training of diffusion samplers", NeurIPS 2024
# (arXiv 2402.05098), Table 1 (|Delta log Z|, |Delta log Z^RW|) and Table C.1 (W2, the square root
# of the exact optimal-transport cost with squared Euclidean ground cost), mean and std over 5
# runs, 25,000 training iterations (10,000 with LP). LGCP entries are the estimates log Z and
# log Z^RW themselves (no ground truth), without W2. Keys: (target, method suffix of the
# experiment name); each value maps a metric to (mean, std).
PAPER: dict[tuple[str, str], dict[str, tuple[float, float]]] = {}


def _paper(target: str, rows: dict[str, tuple[float, ...]]) -> None:
    for method, values in rows.items():
        names = ("delta_log_z", "delta_log_z_rw", "w2") if target != "lgcp" else ("log_z", "log_z_rw")
        PAPER[(target, method)] = {n: (values[2 * i], values[2 * i + 1]) for i, n in enumerate(names)}


_paper("gmm25", {
    "dds": (1.760, 0.08, 0.746, 0.389, 7.18, 0.044),
    "pis": (1.769, 0.104, 1.274, 0.218, 6.37, 0.65),
    "pis_lp": (1.799, 0.051, 0.225, 0.583, 7.16, 0.11),
    "tb": (1.176, 0.109, 1.071, 0.112, 4.83, 0.45),
    "tb_expl": (0.560, 0.302, 0.422, 0.320, 3.61, 1.41),
    "vargrad_expl": (0.615, 0.241, 0.487, 0.250, 3.89, 0.85),
    "fl_subtb": (1.127, 0.010, 1.020, 0.010, 4.64, 0.09),
    "fl_subtb_lp": (0.209, 0.025, 0.011, 0.024, 1.45, 0.29),
    "tb_expl_ls": (0.171, 0.013, 0.004, 0.011, 1.25, 0.18),
    "tb_expl_lp": (0.206, 0.018, 0.011, 0.010, 1.29, 0.07),
    "tb_expl_lp_ls": (0.190, 0.013, 0.007, 0.011, 1.31, 0.07),
})
_paper("funnel", {
    "dds": (0.424, 0.049, 0.206, 0.033, 29.3, 9.5),
    "pis": (0.534, 0.008, 0.262, 0.008, 22.0, 4.0),
    "pis_lp": (0.587, 0.012, 0.285, 0.044, 22.1, 4.0),
    "tb": (0.690, 0.018, 0.239, 0.192, 22.4, 4.0),
    "tb_expl": (0.749, 0.015, 0.226, 0.138, 21.3, 4.0),
    "vargrad_expl": (0.642, 0.010, 0.250, 0.112, 22.1, 4.0),
    "fl_subtb": (0.527, 0.011, 0.182, 0.142, 22.1, 4.0),
    "fl_subtb_lp": (0.563, 0.021, 0.155, 0.317, 22.2, 4.0),
    "tb_expl_ls": (0.653, 0.025, 0.285, 0.099, 21.9, 4.0),
    "tb_expl_lp": (0.666, 0.615, 0.051, 0.616, 22.3, 3.9),
    "tb_expl_lp_ls": (0.768, 0.052, 0.264, 0.063, 21.8, 3.9),
})
_paper("manywell", {
    "dds": (7.36, 2.43, 0.23, 0.05, 5.71, 0.16),
    "pis": (3.85, 0.03, 2.69, 0.04, 6.15, 0.02),
    "pis_lp": (13.19, 0.82, 0.07, 0.85, 6.55, 0.34),
    "tb": (4.01, 0.04, 2.67, 0.02, 6.14, 0.02),
    "tb_expl": (4.01, 0.05, 2.68, 0.06, 6.15, 0.02),
    "vargrad_expl": (4.01, 0.05, 2.69, 0.06, 6.15, 0.02),
    "fl_subtb": (3.98, 0.07, 2.72, 0.05, 6.15, 0.01),
    "fl_subtb_lp": (4.23, 0.12, 2.66, 0.22, 6.10, 0.02),
    "tb_expl_ls": (4.57, 2.13, 0.19, 0.29, 5.66, 0.05),
    "tb_expl_lp": (7.46, 1.74, 1.06, 1.11, 5.73, 0.31),
    "tb_expl_lp_ls": (4.68, 0.49, 0.07, 0.17, 5.33, 0.03),
})
_paper("lgcp", {
    "dds": (471.64, 1.20, 489.30, 0.62),
    "pis": (381.14, 1.42, 414.42, 2.06),
    "pis_lp": (471.45, 0.18, 487.82, 2.26),
    "tb": (336.70, 56.22, 379.50, 49.99),
    "tb_expl": (346.10, 55.54, 389.21, 44.13),
    "vargrad_expl": (370.37, 0.26, 410.37, 6.70),
    "fl_subtb": (365.20, 6.08, 402.65, 8.36),
    "fl_subtb_lp": (465.44, 1.26, 483.90, 1.95),
    "tb_expl_ls": (384.90, 0.83, 419.55, 2.14),
    "tb_expl_lp": (452.82, 1.50, 477.62, 1.79),
    "tb_expl_lp_ls": (471.14, 0.25, 489.03, 1.38),
})

# The official code (GFNOrg/gfn-diffusion, commit 255b499) after 600 iterations on GMM25 with the
# README's arguments (t_scale 5, widths 256), one CPU thread, 2000 evaluation samples: measured
# for the project's issue 4 (one run). There, "|Delta log Z|" is the importance-weighted error,
# i.e. |Delta log Z^RW| here; |Delta log Z| is |ELBO| since log Z = 0.
OFFICIAL_600: dict[str, dict[str, float]] = {
    "gmm25_tb": {"delta_log_z": 1.60, "delta_log_z_rw": 1.43, "elbo": -1.60, "w2": 6.55, "modes_hit": 6},
    "gmm25_tb_expl_ls": {"delta_log_z": 1.55, "delta_log_z_rw": 0.55, "elbo": -1.55, "w2": 4.91, "modes_hit": 9},
}
# Same source: official iterations per second (CPU, one thread, batch 300, T = 100).
OFFICIAL_ISSUE_IT_S = {"tb": 2.23, "tb_expl_ls": 2.15}

QUALITY_METRICS = (
    "delta_log_z", "delta_log_z_rw", "w2", "w1", "mmd2", "eubo", "elbo", "log_z_is", "log_z_learned", "modes_hit",
)

# The speed setting (issue 4): batch 300, T = 100, PIS networks of width 256, sigma^2 = 5, GMM25.
SPEED_OVERRIDES = [
    "data.batch_size=300",
    "model.num_steps=100",
    "model.sigma2=5.0",
    "model.net.hidden_dim=256",
    "model.net.num_hidden_layers=2",
    "model.net.num_frequencies=64",
]
SPEED_EXPERIMENTS = {"tb": "gmm25_tb", "tb_expl_ls": "gmm25_tb_expl_ls"}


def split_name(name: str) -> tuple[str, str]:
    """``"gmm25_tb_expl_ls"`` -> ``("gmm25", "tb_expl_ls")``."""
    target, _, method = name.partition("_")
    return target, method


# ------------------------------------------------------------------------------------------------
# Hydra composition.

CODE = ""  # code_fingerprint(), set by main()


def compose_experiment(
    name: str,
    overrides: list[str],
    device: str,
    output_dir: str,
    seed: int,
) -> Any:
    """The composed (and resolved) config of ``experiment=samplers/<name>`` for a quiet run:
    no logger, checkpoints, progress bar, plots, validation or test; the local-search callback
    (when there is one) seeded with ``seed``."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    base = [
        f"experiment=samplers/{name}",
        "trainer=gpu" if device == "cuda" else "trainer=cpu",
        "~logger",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        "++trainer.enable_checkpointing=false",
        "trainer.num_sanity_val_steps=0",
        "trainer.limit_val_batches=0",
        "trainer.max_epochs=-1",
        "test=false",
        f"seed={seed}",
        "extras.print_config=false",
        f"paths.root_dir={ROOT}",
        f"paths.work_dir={ROOT}",
        f"paths.output_dir={output_dir}",
    ]
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("train", overrides=base + list(overrides))
    OmegaConf.resolve(cfg)
    with open_dict(cfg):
        callbacks = cfg.get("callbacks") or {}
        for key in [k for k, v in callbacks.items() if v is None or _dropped_callback(v)]:
            callbacks.pop(key)
        for entry in callbacks.values():
            if str(entry.get("_target_", "")).endswith("LocalSearchReplay"):
                entry.seed = seed
    return cfg


# Callbacks that only report or save (checkpoints, plots, progress, summaries, LR logging): left out
# of benchmark runs, which need no files and whose time should be the training's.
_DROPPED_CALLBACKS = (
    "ModelCheckpoint", "LastCheckpoint", "PreemptionCheckpoint", "LearningRateMonitor", "RichProgressBar", "StepAwareProgressBar",
    "TQDMProgressBar",
    "RichModelSummary", "ModelSummary", "SamplePlots",
)


def _dropped_callback(entry: Any) -> bool:
    target = str(entry.get("_target_", "")) if hasattr(entry, "get") else ""
    return target.rpartition(".")[2] in _DROPPED_CALLBACKS


# ------------------------------------------------------------------------------------------------
# Quality.


@dataclass
class QualityRun:
    experiment: str
    seed: int
    steps: int
    precision: str
    metrics: dict[str, float] = field(default_factory=dict)
    train_s: float = math.nan
    eval_s: float = math.nan
    error: str = ""


def run_quality(
    name: str, steps: int, seed: int, eval_size: int, device: str, precision: str, overrides: list[str]
) -> QualityRun:
    """Train ``name`` for ``steps`` optimizer steps through ``train.train`` (with the extra Hydra
    ``overrides``), then evaluate on a fresh batch."""
    from train import train

    run = QualityRun(name, seed, steps, precision)
    with tempfile.TemporaryDirectory(prefix="bench_samplers_") as output_dir:
        cfg = compose_experiment(
            name,
            [f"trainer.max_steps={steps}", f"trainer.precision={precision}", *overrides],
            device,
            output_dir,
            seed,
        )
        start = time.perf_counter()
        _, objects = train(cfg)
        run.train_s = time.perf_counter() - start
    module = objects["model"]
    energy = module.energy
    start = time.perf_counter()
    batch = {"x0": torch.zeros(eval_size, energy.dim, device=module.device)}
    if energy.can_sample:
        generator = torch.Generator().manual_seed(1_000_000 + seed)
        batch["target_samples"] = energy.sample(eval_size, generator).to(module.device)
    module.eval()
    metrics = module.evaluate(batch)
    run.eval_s = time.perf_counter() - start
    run.metrics = {k: float(v) for k, v in metrics.items()}
    return run


def _mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def summarize_quality(runs: list[QualityRun]) -> list[dict[str, Any]]:
    """One row per experiment: mean/std of every metric over the successful seeds, with references."""
    rows = []
    for name in dict.fromkeys(r.experiment for r in runs):
        ok = [r for r in runs if r.experiment == name and not r.error]
        row: dict[str, Any] = {
            "code": CODE,
            "experiment": name,
            "steps": runs[0].steps if runs else "",
            "precision": ok[0].precision if ok else "",
            "seeds": " ".join(str(r.seed) for r in ok),
            "failed_seeds": " ".join(str(r.seed) for r in runs if r.experiment == name and r.error),
        }
        for metric in QUALITY_METRICS + ("train_s",):
            values = [r.train_s if metric == "train_s" else r.metrics.get(metric, math.nan) for r in ok]
            row[f"{metric}_mean"], row[f"{metric}_std"] = _mean_std(values)
        row["it_per_s_mean"] = row["steps"] / row["train_s_mean"] if ok else math.nan
        paper = PAPER.get(split_name(name), {})
        for metric in ("delta_log_z", "delta_log_z_rw", "w2", "log_z", "log_z_rw"):
            mean, std = paper.get(metric, (math.nan, math.nan))
            row[f"paper_{metric}_mean"], row[f"paper_{metric}_std"] = mean, std
        official = OFFICIAL_600.get(name, {})
        for metric in ("delta_log_z", "delta_log_z_rw", "elbo", "w2", "modes_hit"):
            row[f"official600_{metric}"] = official.get(metric, math.nan)
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------
# Speed.


def _sync_fn(device: str) -> Callable[[], None]:
    return torch.cuda.synchronize if device == "cuda" else (lambda: None)


def _autocast(device: str, bf16: bool) -> AbstractContextManager[Any]:
    return torch.autocast(device, dtype=torch.bfloat16) if bf16 else nullcontext()


NETWORK_FLOOR = "network alone (floor)"
MATMUL_FLOOR = "matmuls alone (floor)"
# Variants of ours, each a row suffix and its Hydra override (``--compile``, ``--cuda-graph``).
VARIANTS = {"compiled": "model.compile_networks=true", "cuda graph": "model.cuda_graph=true"}


@dataclass
class SpeedConfig:
    """One timed configuration: implementation, method, precision."""

    impl: str  # "ours (Trainer)" | "ours (loop)", optionally + a key of VARIANTS | "official" | a floor
    method: str  # "tb" | "tb_expl_ls"
    precision: str  # "fp32" | "bf16"
    durations: list[float] = field(default_factory=list)  # seconds per timed iteration
    ls_seconds: list[float] = field(default_factory=list)  # seconds per local search

    @property
    def label(self) -> str:
        return f"{self.impl} {self.method} {self.precision}"

    @property
    def model_overrides(self) -> list[str]:
        """The Hydra overrides of this row's variant of ours (none for the plain rows)."""
        return [override for suffix, override in VARIANTS.items() if self.impl.endswith(f" {suffix}")]


class _OfficialStepper:
    """The official training step (``energy_sampling/train.py``: ``train_step`` with
    ``fwd_train_step``/``bwd_train_step``), driven through the official functions. ``method``:
    ``"tb"``, ``"tb_expl_ls"`` or ``"pis"`` (the official ``gflownet_losses.pis`` called directly:
    the official ``get_gfn_forward_loss`` has no ``pis`` branch and crashes with ``--mode_fwd pis``)."""

    def __init__(self, official: types.SimpleNamespace, method: str, device: torch.device, seed: int) -> None:
        torch.manual_seed(seed)
        self.o = official
        self.device = device
        self.local_search = method == "tb_expl_ls"
        self.pis = method == "pis"
        # The README's arguments (TB; TB + Expl. + LS) with the widths of issue 4.
        self.args = types.SimpleNamespace(
            batch_size=300, T=100, t_scale=5.0, mode_fwd="tb", mode_bwd="tb", sampling="buffer",
            max_iter_ls=200, burn_in=100, ls_cycle=100, ld_step=0.1, ld_schedule=True,
            target_acceptance_rate=0.574, buffer_size=600_000, rank_weight=0.01, beta=1.0,
            prioritized="rank", exploration_factor=0.1, exploration_wd=True,
        )
        self.energy = official.energies.TwentyFiveGaussianMixture(device=device)
        self.model = official.models.GFN(
            self.energy.data_ndim, 256, 256, 64, 256, trajectory_length=100, clipping=True, lgv_clip=1e2,
            gfn_clip=1e4, langevin=False, learned_variance=False, partial_energy=False, log_var_range=4.0,
            pb_scale_range=0.1, t_scale=5.0, langevin_scaling_per_dimension=False, conditional_flow_model=False,
            learn_pb=False, pis_architectures=True, lgv_layers=3, joint_layers=2, zero_init=True, device=device,
        ).to(device)
        self.optimizer = official.utils.get_gfn_optimizer(self.model, 1e-3, 1e-1, 1e-3, False, False, False, 1e-7)
        self.coeff_matrix = official.utils.cal_subtb_coef_matrix(2, 100).to(device)
        a = self.args
        self.buffer = official.buffer.ReplayBuffer(
            a.buffer_size, device, self.energy.log_reward, a.batch_size, data_ndim=self.energy.data_ndim,
            beta=a.beta, rank_weight=a.rank_weight, prioritized=a.prioritized,
        )
        self.buffer_ls = official.buffer.ReplayBuffer(
            a.buffer_size, device, self.energy.log_reward, a.batch_size, data_ndim=self.energy.data_ndim,
            beta=a.beta, rank_weight=a.rank_weight, prioritized=a.prioritized,
        )
        self.it = 0

    def local_search_once(self) -> None:
        samples, _ = self.buffer.sample()
        found, log_r = self.o.langevin.langevin_dynamics(samples, self.energy.log_reward, self.device, self.args)
        self.buffer_ls.add(found, log_r)

    def step(self) -> None:
        o, a, it = self.o, self.args, self.it
        self.model.zero_grad()
        exploration = o.utils.get_exploration_std(it, self.local_search, a.exploration_factor, a.exploration_wd)
        if self.local_search and it % 2 == 1:
            if it % a.ls_cycle < 2:
                self.local_search_once()
            samples, _ = self.buffer_ls.sample()
            loss = o.utils.get_gfn_backward_loss(
                a.mode_bwd, samples, self.model, self.energy.log_reward, exploration_std=exploration
            )
        else:
            init_state = torch.zeros(a.batch_size, self.energy.data_ndim).to(self.device)
            if self.pis:
                out = o.gflownet_losses.pis(init_state, self.model, self.energy.log_reward, exploration_std=None)
            else:
                out = o.utils.get_gfn_forward_loss(
                    a.mode_fwd, init_state, self.model, self.energy.log_reward, self.coeff_matrix,
                    exploration_std=exploration, return_exp=self.local_search,
                )
            if self.local_search:
                loss, states, _, _, log_r = out
                self.buffer.add(states[:, -1], log_r)
            else:
                loss = out
        loss.backward()
        self.optimizer.step()
        loss.item()
        self.it += 1


def _fresh_official_sample(buffer: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The official ``ReplayBuffer.sample`` drawing from the buffer's current loader every time
    (the released one keeps a running iterator over the loader it built first)."""
    buffer.data_iter = iter(buffer.loader)
    sample, reward = next(buffer.data_iter)
    return sample.detach(), reward.detach()


def official_quality(
    official: types.SimpleNamespace, method: str, draws: str, steps: int, seed: int, eval_size: int, device: str
) -> dict[str, Any]:
    """Train the official code on 25GMM for ``steps`` iterations (``_OfficialStepper``; ``draws``:
    ``"released"`` buffers or ``"fresh"`` draws from the current buffer) and evaluate it as ours:
    ELBO and importance-weighted log Z of ``eval_size`` forward trajectories, W2 against as many
    exact samples, modes hit within distance 1."""
    from tenfold.datamodules.samplers.energies import GMM25
    from tenfold.modules.samplers import metrics

    stepper = _OfficialStepper(official, method, torch.device(device), seed)
    if draws == "fresh":
        for buffer in (stepper.buffer, stepper.buffer_ls):
            buffer.sample = types.MethodType(_fresh_official_sample, buffer)
    start = time.perf_counter()
    for _ in range(steps):
        stepper.step()
    train_s = time.perf_counter() - start
    torch.manual_seed(1_000_000 + seed)
    with torch.no_grad():
        zeros = torch.zeros(eval_size, stepper.energy.data_ndim, device=device)
        states, log_pf, log_pb, _ = stepper.model.get_trajectory_fwd(zeros, None, stepper.energy.log_reward)
        x = states[:, -1]
        log_weights = stepper.energy.log_reward(x) + log_pb.sum(-1) - log_pf.sum(-1)
    target = GMM25()
    exact = target.sample(eval_size, torch.Generator().manual_seed(1_000_000 + seed))
    elbo, log_z_is = float(metrics.elbo(log_weights)), float(metrics.log_z_importance(log_weights))
    return {
        "code": CODE, "method": method, "draws": draws, "seed": seed, "steps": steps,
        "elbo": elbo, "log_z_is": log_z_is, "delta_log_z": float(metrics.delta_log_z(elbo, target.log_Z)),
        "delta_log_z_rw": float(metrics.delta_log_z(log_z_is, target.log_Z)), "w2": metrics.wasserstein2(x.cpu(), exact),
        "w1": metrics.wasserstein1(x.cpu(), exact), "mmd2": float(metrics.rbf_mmd2(x.cpu(), exact)),
        "modes_hit": metrics.modes_hit(x.cpu(), target.modes, 1.0), "train_s": train_s,
    }


def import_official(official_dir: Path) -> types.SimpleNamespace:
    """The official modules used for timing (``models``, ``utils``, ``energies``, ``buffer``, ``langevin``)."""
    if not (official_dir / "models" / "gfn.py").is_file():
        raise FileNotFoundError(
            f"--official-dir {official_dir} is not the official energy_sampling folder "
            "(GFNOrg/gfn-diffusion, commit 255b499): models/gfn.py is missing"
        )
    sys.path.insert(0, str(official_dir))
    try:
        names = ("models", "utils", "energies", "buffer", "langevin", "gflownet_losses")
        return types.SimpleNamespace(**{n: importlib.import_module(n) for n in names})
    except ImportError as err:
        raise ImportError(f"importing the official code failed ({err}); it needs einops: pip install einops") from err
    finally:
        # the official folder has its own train.py: keep it from shadowing ours
        sys.path.remove(str(official_dir))


class StepTimer(L.Callback):
    """Records the wall clock at the start of every training batch (after a device sync)."""

    def __init__(self, sync: Callable[[], None]) -> None:
        self.sync = sync
        self.starts: list[float] = []

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int) -> None:
        self.sync()
        self.starts.append(time.perf_counter())

    def durations(self) -> list[float]:
        """Seconds between consecutive batch starts: one optimizer step with all its hooks."""
        return [b - a for a, b in zip(self.starts, self.starts[1:])]


def _speed_cfg(
    method: str, device: str, seed: int, steps: int, precision: str, output_dir: str, overrides: list[str]
) -> Any:
    lightning_precision = "bf16-mixed" if precision == "bf16" else "32-true"
    return compose_experiment(
        SPEED_EXPERIMENTS[method],
        SPEED_OVERRIDES
        + [f"trainer.max_steps={steps}", f"trainer.precision={lightning_precision}"]
        + overrides,
        device,
        output_dir,
        seed,
    )


def time_ours_trainer(config: SpeedConfig, device: str, warmup: int, iters: int, seed: int) -> None:
    """A real ``Trainer.fit`` of ``warmup + iters + 1`` steps; the time between batch starts."""
    from hydra.utils import instantiate

    from train import instantiate_group

    torch.manual_seed(seed)
    with tempfile.TemporaryDirectory(prefix="bench_samplers_") as output_dir:
        cfg = _speed_cfg(
            config.method, device, seed, warmup + iters + 1, config.precision, output_dir, config.model_overrides
        )
        L.seed_everything(seed, verbose=False)
        datamodule = instantiate(cfg.data, _convert_="partial")
        model = instantiate(cfg.model, _convert_="partial")
        timer = StepTimer(_sync_fn(device))
        callbacks = [timer, *instantiate_group(cfg.get("callbacks"))]
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=False, _convert_="partial")
        trainer.fit(model, datamodule=datamodule)
    config.durations += timer.durations()[warmup : warmup + iters]


def _ours_parts(
    method: str, device: str, seed: int, precision: str, overrides: list[str]
) -> tuple[Any, Any, Any, Any]:
    from hydra.utils import instantiate

    from train import instantiate_group

    with tempfile.TemporaryDirectory(prefix="bench_samplers_") as output_dir:
        cfg = _speed_cfg(method, device, seed, 1, precision, output_dir, overrides)
    torch.manual_seed(seed)
    datamodule = instantiate(cfg.data, _convert_="partial")
    model = instantiate(cfg.model, _convert_="partial").to(device)
    model.energy = datamodule.energy.to(device)
    callbacks = [c for c in instantiate_group(cfg.get("callbacks")) if type(c).__name__ == "LocalSearchReplay"]
    callback = callbacks[0] if callbacks else None
    if callback is not None:
        callback.on_fit_start(None, model)
    optimizer = model.configure_optimizers()
    batch = torch.zeros(cfg.data.batch_size, datamodule.dim, device=device)
    return model, optimizer, callback, batch


def _timed(device: str, work: Callable[[], None]) -> float:
    """Seconds ``work()`` takes, with the device synchronized before and after."""
    sync = _sync_fn(device)
    sync()
    start = time.perf_counter()
    work()
    sync()
    return time.perf_counter() - start


def _time_iterations(
    config: SpeedConfig, device: str, warmup: int, iters: int, iteration: Callable[[int], None]
) -> None:
    """Runs ``iteration(i)`` for ``i < warmup + iters`` and appends the seconds of the last
    ``iters`` to ``config.durations``."""
    for i in range(warmup + iters):
        seconds = _timed(device, lambda: iteration(i))
        if i >= warmup:
            config.durations.append(seconds)


def time_ours_loop(config: SpeedConfig, device: str, warmup: int, iters: int, seed: int) -> None:
    """The same step in a plain loop: callback hooks, ``training_step`` (under autocast for bf16),
    backward and Adam step; then one separately timed local search."""
    model, optimizer, callback, batch = _ours_parts(config.method, device, seed, config.precision, config.model_overrides)
    model.train()

    def iteration(i: int) -> None:
        if callback is not None:
            callback.on_train_batch_start(None, model, batch, i)
        with _autocast(device, config.precision == "bf16"):
            out = model.training_step(batch, i)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        if callback is not None:
            callback.on_train_batch_end(None, model, out, batch, i)

    _time_iterations(config, device, warmup, iters, iteration)
    if callback is not None:
        config.ls_seconds.append(_timed(device, lambda: callback.local_search(model)))


def time_network_floor(config: SpeedConfig, device: str, warmup: int, iters: int, seed: int) -> None:
    """The floor of any eager implementation of this sampler: our drift network alone, called
    ``T`` times in sequence at batch ``B`` (time embeddings computed once, each state fed from the
    previous output plus fresh noise) and differentiated once; no log-probabilities, loss or
    optimizer step. Under autocast for bf16."""
    model, _, _, batch = _ours_parts("tb", device, seed, config.precision, [])
    net = model.net
    times = model.reference.times(batch.device)[:-1]
    noises = torch.randn(len(times), *batch.shape, device=batch.device).unbind(0)

    def iteration(i: int) -> None:
        with _autocast(device, config.precision == "bf16"):
            embeddings, _ = net.time_features(times)
            x, drifts = batch, []
            for embedding, noise in zip(embeddings.unbind(0), noises):
                drift, _ = net(x, time_features=(embedding, None))
                drifts.append(drift)
                x = x + drift.detach().float() + noise
        net.zero_grad(set_to_none=True)
        torch.stack(drifts).float().square().sum().backward()

    _time_iterations(config, device, warmup, iters, iteration)


def time_matmul_floor(
    config: SpeedConfig, device: str, warmup: int, iters: int, seed: int, overrides: list[str] | None = None
) -> None:
    """The floor of any implementation of this network in the row's precision, compiled or fused,
    that runs its products at the step's shapes: the matrix products of one TB step alone, on
    random operands of the step's shapes and dtype (bf16 for the bf16 row, as autocast runs them).
    For each of the ``T`` steps and each linear layer of the drift network (state embedding,
    hidden layers, output): the forward product with its bias, and in the backward pass the weight
    gradient and, but for the state embedding (whose input, the detached state, needs none), the
    input gradient: the products autograd runs for the step, without the time embedding's (once
    per iteration, not per step), any elementwise work, the loss or the optimizer step. The
    operands are reused at every step, so they stay in cache: the floor is optimistic.
    ``overrides``: extra Hydra overrides of the composed model (tests)."""
    model, _, _, batch = _ours_parts("tb", device, seed, config.precision, overrides or [])
    drift = model.net.drift
    layers = [drift.state_embedding, *(m for m in drift.head.modules() if isinstance(m, torch.nn.Linear))]
    dtype = torch.bfloat16 if config.precision == "bf16" else torch.float32
    generator = torch.Generator(device=device).manual_seed(seed)

    def operand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator, device=device, dtype=dtype)

    rows = batch.shape[0]
    operands = [
        (operand(layer.out_features, layer.in_features), operand(layer.out_features),
         operand(rows, layer.in_features), operand(rows, layer.out_features))
        for layer in layers
    ]

    def iteration(i: int) -> None:
        for _ in range(model.reference.num_steps):
            for weight, bias, layer_input, _ in operands:
                torch.addmm(bias, layer_input, weight.T)
        for _ in range(model.reference.num_steps):
            for index, (weight, _, layer_input, output_grad) in enumerate(operands):
                torch.mm(output_grad.T, layer_input)
                if index > 0:
                    torch.mm(output_grad, weight)

    _time_iterations(config, device, warmup, iters, iteration)


def time_official(config: SpeedConfig, official: types.SimpleNamespace, device: str, warmup: int, iters: int, seed: int) -> None:
    """The official ``train_step``; then one separately timed local search."""
    stepper = _OfficialStepper(official, config.method, torch.device(device), seed)
    _time_iterations(config, device, warmup, iters, lambda i: stepper.step())
    if stepper.local_search:
        config.ls_seconds.append(_timed(device, stepper.local_search_once))


def _pair_median(durations: list[float]) -> float:
    """Median seconds per iteration over consecutive pairs (forward + backward steps alternate)."""
    pairs = [(a + b) / 2 for a, b in zip(durations[::2], durations[1::2])]
    return statistics.median(pairs) if pairs else math.nan


def summarize_speed(configs: list[SpeedConfig], device: str) -> list[dict[str, Any]]:
    rows = []
    for c in configs:
        seconds = _pair_median(c.durations)
        ls = statistics.median(c.ls_seconds) if c.ls_seconds else math.nan
        if c.method == "tb_expl_ls" and math.isnan(ls):
            # The Trainer rows run the same callback code as the loop rows: use their cost.
            same = [
                o for o in configs
                if o.method == c.method and o.impl == c.impl.replace("Trainer", "loop") and o.precision == c.precision
            ]
            ls = statistics.median(same[0].ls_seconds) if same and same[0].ls_seconds else math.nan
        amortized = seconds + (ls / 100 if c.method == "tb_expl_ls" else 0.0)
        rows.append({
            "code": CODE,
            "device": torch.cuda.get_device_name() if device == "cuda" else device,
            "impl": c.impl,
            "method": c.method,
            "precision": c.precision,
            "timed_iters": len(c.durations),
            "median_s_per_it": seconds,
            "it_per_s": 1.0 / seconds,
            "local_search_s": ls,
            "it_per_s_incl_ls": 1.0 / amortized,
        })
    official = {r["method"]: r["it_per_s_incl_ls"] for r in rows if r["impl"] == "official"}
    for row in rows:
        row["ratio_vs_official"] = row["it_per_s_incl_ls"] / official.get(row["method"], math.nan)
        row["official_issue4_it_per_s"] = OFFICIAL_ISSUE_IT_S.get(row["method"], math.nan) if device == "cpu" else math.nan
    return rows


def run_speed(args: argparse.Namespace) -> list[dict[str, Any]]:
    device = args.device
    official = None
    if args.official_dir:
        official = import_official(Path(args.official_dir).expanduser().resolve())
    configs: list[SpeedConfig] = []
    for method in ("tb", "tb_expl_ls"):
        if official is not None:
            configs.append(SpeedConfig("official", method, "fp32"))
        impls = ["ours (Trainer)", "ours (loop)"]
        plain = list(impls)
        if args.compile:
            impls += [f"{impl} compiled" for impl in plain]
        if method == "tb":
            impls += [NETWORK_FLOOR, MATMUL_FLOOR]
        for impl in impls:
            for precision in ("fp32", "bf16"):
                configs.append(SpeedConfig(impl, method, precision))
        if args.cuda_graph:
            configs += [SpeedConfig(f"{impl} cuda graph", method, "fp32") for impl in plain]
    per_block = max(2, math.ceil(args.speed_iters / args.speed_rounds))
    per_block += per_block % 2
    for round_index in range(args.speed_rounds):
        order = configs if round_index % 2 == 0 else configs[::-1]
        for c in order:
            seed = 1000 + round_index
            start = time.perf_counter()
            if c.impl == "official":
                time_official(c, official, device, args.speed_warmup, per_block, seed)
            elif c.impl == NETWORK_FLOOR:
                time_network_floor(c, device, args.speed_warmup, per_block, seed)
            elif c.impl == MATMUL_FLOOR:
                time_matmul_floor(c, device, args.speed_warmup, per_block, seed)
            elif c.impl.startswith("ours (loop)"):
                time_ours_loop(c, device, args.speed_warmup, per_block, seed)
            else:
                time_ours_trainer(c, device, args.speed_warmup, per_block, seed)
            recent = c.durations[-per_block:]
            print(
                f"[speed round {round_index + 1}/{args.speed_rounds}] {c.label:34s} "
                f"{1.0 / _pair_median(recent):6.2f} it/s (block {time.perf_counter() - start:5.1f} s)",
                flush=True,
            )
    return summarize_speed(configs, device)


# ------------------------------------------------------------------------------------------------
# Output.


def _fmt(mean: float, std: float | None = None, digits: int = 3) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return ""
    if std is None or math.isnan(std):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def print_quality(rows: list[dict[str, Any]], console: Any) -> None:
    from rich.table import Table

    table = Table(title="Sample quality (ours: mean ± std over seeds | paper: Table 1 / C.1, 25k its, 5 runs | official: 600 its, issue 4)")
    for header in (
        "experiment", "steps", "seeds",
        "|ΔlogZ| ours", "paper", "off.600",
        "|ΔlogZ^RW| ours", "paper", "off.600",
        "W2 ours", "paper", "off.600",
        "EUBO", "ELBO ours", "off.600",
        "modes ours", "off.600", "train s", "it/s",
    ):
        table.add_column(header, justify="right" if header not in ("experiment", "seeds") else "left", no_wrap=header == "experiment")
    for r in rows:
        target, _ = split_name(r["experiment"])
        table.add_row(
            r["experiment"], str(r["steps"]), r["seeds"] + (f" (failed: {r['failed_seeds']})" if r["failed_seeds"] else ""),
            _fmt(r["delta_log_z_mean"], r["delta_log_z_std"]),
            _fmt(r["paper_delta_log_z_mean"], r["paper_delta_log_z_std"]),
            _fmt(r["official600_delta_log_z"], digits=2),
            _fmt(r["delta_log_z_rw_mean"], r["delta_log_z_rw_std"]),
            _fmt(r["paper_delta_log_z_rw_mean"], r["paper_delta_log_z_rw_std"]),
            _fmt(r["official600_delta_log_z_rw"], digits=2),
            _fmt(r["w2_mean"], r["w2_std"], 2),
            _fmt(r["paper_w2_mean"], r["paper_w2_std"], 2),
            _fmt(r["official600_w2"], digits=2),
            _fmt(r["eubo_mean"], r["eubo_std"]),
            _fmt(r["elbo_mean"], r["elbo_std"]),
            _fmt(r["official600_elbo"], digits=2),
            _fmt(r["modes_hit_mean"], r["modes_hit_std"], 1),
            _fmt(r["official600_modes_hit"], digits=0),
            _fmt(r["train_s_mean"], r["train_s_std"], 0),
            _fmt(r["it_per_s_mean"], digits=2),
        )
    console.print(table)
    if any(split_name(r["experiment"])[0] == "lgcp" for r in rows):
        console.print("LGCP: the paper reports log Z and log Z^RW estimates (columns paper_log_z*, CSV only).")


def print_speed(rows: list[dict[str, Any]], console: Any, args: argparse.Namespace) -> None:
    from rich.table import Table

    table = Table(
        title=f"Training speed on {args.device} (GMM25, batch 300, T=100, width 256, sigma²=5; "
        f"median over {args.speed_iters}+ iterations, interleaved)"
    )
    for header in ("impl", "method", "precision", "iters", "s/it", "it/s", "LS s/call", "it/s incl. LS", "× official", "issue 4 official"):
        table.add_column(header, justify="left" if header in ("impl", "method", "precision") else "right")
    for r in rows:
        table.add_row(
            r["impl"], r["method"], r["precision"], str(r["timed_iters"]),
            _fmt(r["median_s_per_it"], digits=3), _fmt(r["it_per_s"], digits=2),
            _fmt(r["local_search_s"], digits=2), _fmt(r["it_per_s_incl_ls"], digits=2),
            _fmt(r["ratio_vs_official"], digits=2), _fmt(r["official_issue4_it_per_s"], digits=2),
        )
    console.print(table)


def write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fields: list[str] = []
    for row in rows:
        fields += [k for k in row if k not in fields]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _run_row(run: QualityRun) -> dict[str, Any]:
    row: dict[str, Any] = {
        "code": CODE, "experiment": run.experiment, "seed": run.seed, "steps": run.steps, "precision": run.precision,
        "train_s": run.train_s, "eval_s": run.eval_s, "error": run.error,
    }
    row.update({m: run.metrics.get(m, math.nan) for m in QUALITY_METRICS})
    return row


def code_fingerprint() -> str:
    """Short hash of the sampler code measured (module, nets, losses, callback, targets), so that
    results can be matched to the code they came from."""
    import hashlib

    digest = hashlib.sha1()
    for pattern in ("tenfold/modules/samplers/*.py", "tenfold/modules/nets/*.py", "tenfold/datamodules/samplers/*.py", "tenfold/callbacks/local_search.py"):
        for path in sorted(ROOT.glob(pattern)):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


def machine_info(device: str) -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if device == "cuda" and torch.cuda.is_available() else ""
    load = ", load average %.2f %.2f %.2f" % os.getloadavg() if hasattr(os, "getloadavg") else ""
    return (
        f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s), {os.cpu_count()} cores, "
        f"{cpu}{gpu}{load}"
    )


# ------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiments", nargs="+", default=["gmm25_tb", "gmm25_tb_expl_ls", "gmm25_pis"],
                        help="names under configs/experiment/samplers/ (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=600, help="optimizer steps per training run")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--eval-size", type=int, default=2000, help="evaluation trajectories and target samples")
    parser.add_argument("--precision", default="32-true", help="trainer.precision of the quality runs (32-true, bf16-mixed)")
    parser.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                        help="extra Hydra overrides of the quality runs, e.g. "
                        "callbacks.local_search.local_search_mode=official")
    parser.add_argument("--speed-iters", type=int, default=20, help="timed iterations per speed configuration")
    parser.add_argument("--speed-rounds", type=int, default=2, help="interleaved blocks per speed configuration")
    parser.add_argument("--speed-warmup", type=int, default=3, help="untimed iterations at the start of every block")
    parser.add_argument("--official-dir", default=os.environ.get("GFN_DIFFUSION_DIR", ""),
                        help="the official energy_sampling folder (GFNOrg/gfn-diffusion 255b499); "
                        "empty: no official speed rows (env GFN_DIFFUSION_DIR)")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch threads on CPU")
    parser.add_argument("--compile", action="store_true", help="also time ours with model.compile_networks=true")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="also time ours with model.cuda_graph=true (fp32; --device cuda)")
    parser.add_argument("--official-quality", nargs="*", choices=("released", "fresh"), default=None,
                        metavar="DRAWS",
                        help="also train and evaluate the official code (--official-methods on 25GMM, --steps, "
                        "--seeds) with its buffers as released and/or drawing fresh batches (default: both)")
    parser.add_argument("--official-methods", nargs="+", choices=("tb", "tb_expl_ls", "pis"), default=["tb", "tb_expl_ls"],
                        help="methods of --official-quality (default: %(default)s)")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="small setting (~6 min on one core): 100 steps, seed 0, 1000 evaluation samples, one speed round")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.seeds, args.eval_size, args.speed_rounds = 100, [0], 1000, 1
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    if args.cuda_graph and args.device != "cuda":
        parser.error("--cuda-graph times CUDA graphs: add --device cuda")
    return args


def main(argv: list[str] | None = None) -> None:
    global CODE
    args = parse_args(argv)
    CODE = code_fingerprint()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")
    import logging

    from rich.console import Console

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "train"):
        logging.getLogger(name).setLevel(logging.ERROR)
    console = Console(width=240)
    out = Path(args.out)
    console.print(f"samplers benchmark (code {CODE}): {machine_info(args.device)}", markup=False)

    if not args.skip_quality:
        runs: list[QualityRun] = []
        for name in args.experiments:
            for seed in args.seeds:
                try:
                    run = run_quality(
                        name, args.steps, seed, args.eval_size, args.device, args.precision, args.override
                    )
                except Exception as err:  # report and go on with the other runs
                    run = QualityRun(name, seed, args.steps, args.precision, error=f"{type(err).__name__}: {err}")
                runs.append(run)
                m = run.metrics
                console.print(
                    f"[quality] {name} seed {seed}: "
                    + (f"error {run.error}" if run.error else
                       f"|ΔlogZ| {m.get('delta_log_z', math.nan):.3f} |ΔlogZ^RW| {m.get('delta_log_z_rw', math.nan):.3f} "
                       f"W2 {m.get('w2', math.nan):.2f} EUBO {m.get('eubo', math.nan):.3f} "
                       f"modes {m.get('modes_hit', math.nan):.0f} train {run.train_s:.0f} s"),
                    highlight=False,
                    markup=False,
                )
                write_csv(out / "samplers_quality_runs.csv", [_run_row(r) for r in runs])
        rows = summarize_quality(runs)
        write_csv(out / "samplers_quality.csv", rows)
        print_quality(rows, console)

    if args.official_quality is not None:
        if not args.official_dir:
            raise SystemExit("--official-quality needs --official-dir (the official energy_sampling folder)")
        official = import_official(Path(args.official_dir).expanduser().resolve())
        official_rows = []
        for draws in args.official_quality or ["released", "fresh"]:
            for method in args.official_methods:
                if method != "tb_expl_ls" and draws == "fresh":
                    continue  # only the local-search run has buffers
                for seed in args.seeds:
                    row = official_quality(official, method, draws, args.steps, seed, args.eval_size, args.device)
                    official_rows.append(row)
                    console.print(
                        f"[official {method}, {draws}] seed {seed}: ELBO {row['elbo']:.3f} "
                        f"log Z^RW {row['log_z_is']:.3f} W2 {row['w2']:.2f} modes {row['modes_hit']} "
                        f"train {row['train_s']:.0f} s",
                        highlight=False, markup=False,
                    )
                    write_csv(out / "samplers_official_quality_runs.csv", official_rows)

    if not args.skip_speed:
        rows = run_speed(args)
        write_csv(out / "samplers_speed.csv", rows)
        print_speed(rows, console, args)
    console.print(f"done: {machine_info(args.device)}; CSVs in {out}")


if __name__ == "__main__":
    main()
