"""Benchmark of CoRelNet and its baselines (Kerg et al., 2022, arXiv 2206.05056) on the ESBN
relational tasks (Webb et al., 2021, arXiv 2012.14601): test accuracy on held-out glyphs for
``m = 0, 50, 85, 95`` held out of 100, over seeds, printed as the paper's table (tasks x models,
one column per ``m``) with the paper's numbers beside.

Each run composes the experiment ``relational/<task>_<model>`` (or, for a model config without its
own experiment such as ``corelnet_asym``, ``relational/<task>_corelnet`` with
``model=relational/<model>``), so the nets and the optimizer are the configs'. It sets
``data.m_holdout`` and ``data.seed``, seeds the initialization with the same seed, trains with
``lightning.Trainer`` (no validation, as the official code) and tests the final weights:
``test/acc`` on the test trials (the held-out glyphs when ``m > 0``).

Two training protocols (``--protocol``), which differ on RMTS:

- ``corelnet`` (default), the CoRelNet code's defaults (giancarlok/relationaltasks
  ``cognitive_tests/main.py``, its README's command): context norm over the whole sequence on
  every task (``--norm_type contextnorm``), Adam 5e-4, 5000 iterations of 96 trials: the samplers
  of the four tasks draw three times ``--train_batch_size 32`` per iteration. The official code
  draws fresh training trials every iteration; here the 5000 steps go over the ESBN training set,
  reshuffled every epoch. ``--batch-size 32`` trains on a third of those trials, as the README's
  1000-step CoRelNet-protocol tables were measured.
- ``esbn``, the ESBN scripts (emergent_symbols ``scripts/*.sh``, and the experiment configs'
  default): on RMTS the source pair and each choice pair are context-normalized apart
  (``--norm_type tasksegmented_contextnorm``), which tells every model within each pair whether
  its two objects are the same; 50 epochs, at ``m = 95`` 100 for same_diff, 200 for RMTS, 150
  for dist3.

Measured (README, "relational"): under ``corelnet`` the Transformer falls to chance on RMTS at
``m = 95`` while CoRelNet stays near 100 %; under ``esbn`` the segmented norm lifts the
Transformer to about 70 %.

Length of training: the protocol's, cut at ``--max-steps`` optimizer steps (default 300:
CPU-sized; ``-1`` for the protocol's full length); ``--epochs`` overrides the ESBN epochs.

Paper column: :data:`PAPER_TEST_ACCURACY` is empty, so the column is blank: no numbers of the
paper were available when this script was written (the stored copies of its text reached only the
title and abstract, and the official repository, giancarlok/relationaltasks, holds code but no
result files). Fill it in from the paper to compare.

Usage (from the repository root)::

    python benchmarks/relational.py          # CoRelNet and the Transformer, 4 tasks, 4 m, 3 seeds, <= 300 steps (CPU)
    python benchmarks/relational.py --models corelnet --tasks same_diff --holdouts 85 --seeds 0
    python benchmarks/relational.py --models corelnet esbn transformer lstm predinet rn gcn ntm mnm \\
        --seeds 0 1 2 3 4 5 6 7 8 9 --max-steps -1 --device cuda      # the paper's protocol

Results: ``--out`` (default ``benchmarks/results/relational.csv``), one row per run; ``--plot
PATH.png`` draws test accuracy against ``m`` (one panel per task, one line per model, mean and
standard deviation over seeds). ``--from-csv`` prints the table (and the plot) of earlier runs
without training::

    python benchmarks/relational.py --from-csv benchmarks/results/relational_corelnet_protocol.csv --plot acc.png
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import hydra  # noqa: E402
import lightning as L  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

CONFIG_DIR = ROOT / "configs"
TASKS = ("same_diff", "rmts", "dist3", "identity_rules")
HOLDOUTS = (0, 50, 85, 95)
ESBN_EPOCHS_AT_M95 = {"same_diff": 100, "rmts": 200, "dist3": 150, "identity_rules": 50}
"""Epochs of the ESBN scripts (emergent_symbols ``scripts/*.sh``) at ``m = 95``; 50 at smaller m."""
CORELNET_ITERATIONS = 5000
"""Training iterations of the CoRelNet code (``cognitive_tests/main.py --iterations``)."""
BATCH_SIZE = {"corelnet": 96, "esbn": 32}
"""Trials per optimizer step by protocol: the CoRelNet code's samplers of the four tasks draw
``3 * --train_batch_size`` (``tasks/*.py``, ``get_sample``), the ESBN scripts batch 32."""
PROTOCOLS = ("corelnet", "esbn")
CHANCE = {"same_diff": 50.0, "rmts": 50.0, "dist3": 25.0, "identity_rules": 25.0}
"""Test accuracy (%) of guessing: 2 answers for same/different and RMTS, 4 otherwise."""

PAPER_TEST_ACCURACY: dict[tuple[str, str, int], float] = {}
"""Test accuracy (%) reported by the paper, keyed ``(model, task, m)`` with the names of
``--models``, :data:`TASKS` and :data:`HOLDOUTS`, e.g. ``("corelnet", "rmts", 95)``; each entry
should cite its table or figure of arXiv 2206.05056 in a comment, and numbers the paper shows only
in plots stay out. Empty (see the module docstring), so the paper column is blank."""

FIELDS = [
    "protocol", "model", "task", "m_holdout", "seed", "epochs", "max_steps", "steps", "batch_size", "train_size", "test_size",
    "test_acc", "paper_acc", "seconds", "device",
]


def experiment_overrides(model: str, task: str) -> list[str]:
    """The experiment (and model) overrides that give ``model`` on ``task``."""
    if (CONFIG_DIR / "experiment" / "relational" / f"{task}_{model}.yaml").is_file():
        return [f"experiment=relational/{task}_{model}"]
    if not (CONFIG_DIR / "model" / "relational" / f"{model}.yaml").is_file():
        raise SystemExit(f"unknown model {model!r}: pick a file of configs/model/relational/")
    return [f"experiment=relational/{task}_corelnet", f"model=relational/{model}"]


def compose_run(model: str, task: str, m_holdout: int, seed: int, args: argparse.Namespace) -> DictConfig:
    overrides = [*experiment_overrides(model, task), f"data.m_holdout={m_holdout}", f"data.seed={seed}"]
    if args.protocol == "corelnet":
        overrides.append("model.net.context_segments=null")
    overrides += [f"data.batch_size={args.batch_size or BATCH_SIZE[args.protocol]}"]
    for key in ("train_size", "test_size"):
        if getattr(args, key) is not None:
            overrides.append(f"data.{key}={getattr(args, key)}")
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def run_one(model: str, task: str, m_holdout: int, seed: int, args: argparse.Namespace) -> dict:
    """Trains and tests one (model, task, m, seed); returns the CSV row."""
    cfg = compose_run(model, task, m_holdout, seed, args)
    if args.protocol == "corelnet":
        epochs = args.epochs or -1
        max_steps = CORELNET_ITERATIONS if args.max_steps == -1 else min(args.max_steps, CORELNET_ITERATIONS)
    else:
        epochs = args.epochs or (ESBN_EPOCHS_AT_M95[task] if m_holdout == 95 else 50)
        max_steps = args.max_steps
    L.seed_everything(seed, verbose=False)
    data = hydra.utils.instantiate(cfg.data)
    module = hydra.utils.instantiate(cfg.model)
    trainer = L.Trainer(
        accelerator=args.device, devices=1, max_epochs=epochs, max_steps=max_steps, limit_val_batches=0,
        num_sanity_val_steps=0, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    trainer.fit(module, data)
    (metrics,) = trainer.test(module, data, verbose=False)
    paper = PAPER_TEST_ACCURACY.get((model, task, m_holdout))
    return {
        "protocol": args.protocol, "model": model, "task": task, "m_holdout": m_holdout, "seed": seed,
        "epochs": epochs, "max_steps": max_steps, "steps": trainer.global_step, "batch_size": cfg.data.batch_size,
        "train_size": data.train_size,
        "test_size": data.test_size, "test_acc": round(100 * metrics["test/acc"], 2),
        "paper_acc": "" if paper is None else paper, "seconds": round(time.perf_counter() - start, 1),
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
    }


def accuracies_by_cell(rows: list[dict]) -> dict[tuple[str, str, int], list[float]]:
    """Test accuracies (%) of the runs grouped by ``(task, model, m)``, in the rows' order."""
    cells: dict[tuple[str, str, int], list[float]] = {}
    for row in rows:
        cells.setdefault((row["task"], row["model"], row["m_holdout"]), []).append(row["test_acc"])
    return cells


def format_table(rows: list[dict], holdouts: list[int]) -> str:
    """Tasks x models, one column per m: ``mean +- std`` test accuracy (%) over seeds, then the
    paper's number per m (``-`` where unknown)."""
    header = f"{'task':<15}{'model':<20}" + "".join(f"{f'm={m}':>15}" for m in holdouts)
    header += "".join(f"{f'paper m={m}':>12}" for m in holdouts)
    lines = [header, "-" * len(header)]
    keys = list(dict.fromkeys((row["task"], row["model"]) for row in rows))
    accuracies = accuracies_by_cell(rows)
    for task, model in keys:
        cells = []
        for m in holdouts:
            accs = accuracies.get((task, model, m), [])
            if not accs:
                cells.append(f"{'':>15}")
            elif len(accs) == 1:
                cells.append(f"{accs[0]:>15.1f}")
            else:
                cells.append(f"{f'{statistics.mean(accs):.1f} +- {statistics.stdev(accs):.1f}':>15}")
        paper = [PAPER_TEST_ACCURACY.get((model, task, m)) for m in holdouts]
        lines.append(
            f"{task:<15}{model:<20}" + "".join(cells) + "".join(f"{'-' if p is None else p:>12}" for p in paper)
        )
    return "\n".join(lines)


def read_rows(paths: list[Path]) -> list[dict]:
    """Rows of earlier runs' CSVs, with ``m_holdout`` and ``seed`` as ints, ``test_acc`` a float."""
    rows = []
    for path in paths:
        if not path.is_file():
            raise SystemExit(f"--from-csv: no file {path}")
        with path.open(newline="") as handle:
            for row in csv.DictReader(handle):
                rows.append({**row, "m_holdout": int(row["m_holdout"]), "seed": int(row["seed"]),
                             "test_acc": float(row["test_acc"])})
    return rows


def plot_accuracy(rows: list[dict], path: Path) -> None:
    """Test accuracy (%) against ``m``: one panel per task, one line per model (mean over seeds,
    error bars one standard deviation), chance dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(dict.fromkeys(row["task"] for row in rows))
    models = list(dict.fromkeys(row["model"] for row in rows))
    accuracies = accuracies_by_cell(rows)
    figure, axes = plt.subplots(1, len(tasks), figsize=(3.2 * len(tasks), 3.0), sharey=True, squeeze=False)
    for axis, task in zip(axes[0], tasks):
        for model in models:
            ms = sorted(m for cell_task, cell_model, m in accuracies if (cell_task, cell_model) == (task, model))
            if not ms:
                continue
            cells = [accuracies[(task, model, m)] for m in ms]
            means = [statistics.mean(accs) for accs in cells]
            stds = [statistics.stdev(accs) if len(accs) > 1 else 0.0 for accs in cells]
            axis.errorbar(ms, means, yerr=stds, marker="o", capsize=3, label=model)
        axis.axhline(CHANCE.get(task, 0.0), color="grey", linestyle="--", linewidth=1)
        axis.set_title(task)
        axis.set_xlabel("m (glyphs held out of 100)")
    axes[0][0].set_ylabel("test accuracy (%)")
    handles_by_model: dict[str, object] = {}
    for axis in axes[0]:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            handles_by_model.setdefault(label, handle)
    figure.legend(
        list(handles_by_model.values()), list(handles_by_model), loc="lower center",
        ncol=min(len(handles_by_model), 9), fontsize="small",
    )
    figure.tight_layout(rect=(0, 0.12, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--protocol", default="corelnet", choices=PROTOCOLS, help="see the module docstring")
    parser.add_argument(
        "--models", nargs="+", default=["corelnet", "transformer"], help="configs/model/relational/<name>"
    )
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--holdouts", nargs="+", type=int, default=list(HOLDOUTS), help="m values (of 100 glyphs)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=None, help="esbn protocol: default the scripts' per task and m")
    parser.add_argument("--max-steps", type=int, default=300, help="optimizer steps at most per run; -1: no cap")
    parser.add_argument(
        "--batch-size", type=int, default=None, help="trials per step; default the protocol's (corelnet 96, esbn 32)"
    )
    parser.add_argument("--train-size", type=int, default=None, help="default: ESBN's per task and m")
    parser.add_argument("--test-size", type=int, default=None, help="default: ESBN's per task and m")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=1, help="torch threads on the CPU")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "relational.csv")
    parser.add_argument("--plot", type=Path, default=None, help="PNG of test accuracy against m")
    parser.add_argument("--from-csv", type=Path, nargs="+", default=None, help="report earlier runs, train nothing")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.from_csv:
        rows = read_rows(args.from_csv)
        protocols = ", ".join(sorted({row.get("protocol", "?") for row in rows}))
        print(f"protocol {protocols}, test accuracy (%) on the test trials (held-out glyphs when m > 0)")
        print(format_table(rows, sorted({row["m_holdout"] for row in rows})))
        if args.plot:
            plot_accuracy(rows, args.plot)
            print(f"\nwrote {args.plot}")
        return

    rows = []
    for task in args.tasks:
        for model in args.models:
            for m_holdout in args.holdouts:
                for seed in args.seeds:
                    row = run_one(model, task, m_holdout, seed, args)
                    print(
                        f"{task} {model} m={m_holdout} seed={seed}: test acc {row['test_acc']:.1f} % "
                        f"({row['steps']} steps, {row['seconds']} s)",
                        flush=True,
                    )
                    rows.append(row)
    print(f"\nprotocol {args.protocol}, test accuracy (%) on the test trials (held-out glyphs when m > 0)")
    print(format_table(rows, args.holdouts))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    print(f"\nwrote {args.out}")
    if args.plot:
        plot_accuracy(rows, args.plot)
        print(f"wrote {args.plot}")


if __name__ == "__main__":
    main()
