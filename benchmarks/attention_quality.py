"""Accuracy of Compositional Attention against its parameter-matched multi-head baseline (Mittal et
al., 2022, arXiv 2110.09419), several seeds, through ``train.train``.

For each chosen task (``configs/experiment/attention/<task>_{compositional,multihead}.yaml``) and
seed, the experiment is trained with the given overrides (checkpoints in a temporary directory,
no logger), its best checkpoint (by the experiment's validation metric) is tested, and the test
metric is collected. Printed: mean +- std over seeds per model, the per-seed values, and the
parameter counts; written to ``--out`` (CSV, one row per run).

Usage (from the repository root)::

    python benchmarks/attention_quality.py                       # contextual retrieval, 3 seeds, CPU
    python benchmarks/attention_quality.py --tasks esbn_rmts --seeds 0 1 --overrides data.m_holdout=95
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

DEFAULT_OVERRIDES = {
    # 1,000 steps of 256 sets per epoch, 8 epochs at Adam 1e-3 (the paper: 100,000 steps at 1e-4);
    # fixed validation and test sets of 5,120 sets
    "contextual_retrieval": [
        "data.train_size=256000", "data.val_size=5120", "data.test_size=5120", "trainer.max_epochs=8",
        "model.optimizer.lr=1e-3",
    ],
}


def compose(experiment: str, overrides: list[str], output_dir: str, seed: int, device: str) -> Any:
    """The resolved config of ``experiment=attention/<experiment>`` for a quiet run in ``output_dir``."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf, open_dict

    base = [
        f"experiment=attention/{experiment}",
        "trainer=gpu" if device == "cuda" else "trainer=cpu",
        "~logger",
        "callbacks.rich_progress_bar=null",
        "callbacks.rich_model_summary=null",
        "trainer.enable_progress_bar=false",
        "trainer.enable_model_summary=false",
        f"seed={seed}",
        f"data.seed={seed}",
        "extras.print_config=false",
        f"paths.output_dir={output_dir}",
        f"paths.data_dir={output_dir}/data",
    ]
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        cfg = hydra_compose("train", overrides=base + overrides, return_hydra_config=True)
    from hydra.core.hydra_config import HydraConfig

    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = output_dir
        cfg.hydra.job.num = 0
        cfg.hydra.job.id = "0"
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    OmegaConf.resolve(cfg)
    return cfg


def run(experiment: str, seed: int, overrides: list[str], device: str) -> dict[str, Any]:
    """Trains and tests one experiment; returns its test metrics, parameter count and time."""
    from train import train

    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    with tempfile.TemporaryDirectory(prefix="bench_attention_") as output_dir:
        cfg = compose(experiment, overrides, output_dir, seed, device)
        try:
            start = time.perf_counter()
            metrics, objects = train(cfg)
            seconds = time.perf_counter() - start
        finally:
            # the run's Hydra config names the deleted directory: later train() calls in this
            # process (another run, a caller's own) must not write their .hydra files there
            HydraConfig.instance().cfg = None
            GlobalHydra.instance().clear()
    parameters = sum(p.numel() for p in objects["model"].parameters())
    tested = {k: float(v) for k, v in metrics.items() if k.startswith("test/")}
    return {"experiment": experiment, "seed": seed, "parameters": parameters, "seconds": seconds, **tested}


# the test metric each kind of task is judged by, in order of preference
HEADLINE_METRICS = ("test/l1", "test/acc", "test/seq_acc", "test/perplexity")


def headline_metric(row: dict[str, Any]) -> str:
    """The key of ``row``'s headline test metric: L1 (contextual retrieval), accuracy
    (classification), exact-match accuracy (SCAN) or perplexity (language modelling), else
    ``test/loss``."""
    return next((key for key in HEADLINE_METRICS if key in row), "test/loss")


def write_rows(rows: list[dict[str, Any]], out: Path) -> None:
    """``rows`` as CSV, ``experiment`` and ``seed`` first."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fields = sorted({key for row in rows for key in row}, key=lambda k: (k not in ("experiment", "seed"), k))
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", nargs="+", default=["contextual_retrieval"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--overrides", nargs="*", default=None, help="Hydra overrides (default: per task)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument(
        "--out", type=Path, default=None,
        help="CSV (default: benchmarks/results/attention_quality.csv for contextual retrieval alone, else "
        "attention_quality_<tasks>.csv); rewritten after every run, so finished runs survive a crash",
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    suffix = "" if args.tasks == ["contextual_retrieval"] else "_" + "_".join(args.tasks)
    out = args.out or ROOT / "benchmarks" / "results" / f"attention_quality{suffix}.csv"

    rows: list[dict[str, Any]] = []
    for task in args.tasks:
        overrides = args.overrides if args.overrides is not None else DEFAULT_OVERRIDES.get(task, [])
        for seed in args.seeds:
            for kind in ("compositional", "multihead"):
                row = run(f"{task}_{kind}", seed, overrides, args.device)
                rows.append(row)
                write_rows(rows, out)
                metric = headline_metric(row)
                print(f"{task:24s} {kind:14s} seed {seed}: {metric} {row[metric]:.4f} ({row['seconds']:.0f} s)", flush=True)
    print()
    for task in args.tasks:
        for kind in ("compositional", "multihead"):
            runs = [r for r in rows if r["experiment"] == f"{task}_{kind}"]
            metric = headline_metric(runs[0])
            values = [r[metric] for r in runs]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            print(
                f"{task:24s} {kind:14s} {metric} {statistics.fmean(values):.4f} +- {spread:.4f} "
                f"over seeds {[r['seed'] for r in runs]}: {[round(v, 4) for v in values]}; "
                f"{runs[0]['parameters']} parameters"
            )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
