"""The results of a Hydra sweep in one table: every job's final metrics, and their mean and
standard deviation over seeds.

Every ``train.py`` run writes its final metrics to ``<run dir>/metrics.json``
(:func:`write_run_metrics`). When a sweep (``python train.py -m ... seed=1,2,3``) ends,
:class:`SweepSummary`, a Hydra callback of ``configs/hydra/default.yaml``, reads them and writes

- ``<sweep dir>/summary.csv``: one row per job (its number, overrides, status and every metric);
- ``<sweep dir>/summary_grouped.csv``: one row per setting, the jobs whose overrides differ only in
  the averaged keys (``seed`` by default): the number of jobs with metrics, and each metric's
  mean and sample standard deviation (``ddof = 1``; empty for one job), the "mean ± std over
  seeds" of the papers' tables;

and prints the grouped test metrics. A job without ``metrics.json`` (it failed, or is still
running) is listed with its status and left out of the means. For a sweep whose launching process
is gone (jobs submitted to SLURM, a sweep stopped part-way), the same from the command line::

    python -m tenfold.sweeps logs/<task_name>/multiruns/<time> [--average-over seed data.seed]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from tenfold.checkpoints import replaced_atomically

__all__ = [
    "METRICS_FILE",
    "JobResult",
    "SweepSummary",
    "group_jobs",
    "read_sweep",
    "summarize_sweep",
    "write_run_metrics",
]

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"


def write_run_metrics(
    output_dir: str | Path,
    metrics: dict[str, float],
    overrides: Sequence[str],
    optimized_metric: str | None = None,
    optimized_value: float | None = None,
) -> Path:
    """Writes ``<output_dir>/metrics.json`` whole or not at all (a run killed while writing leaves
    the previous file): the run's final ``metrics`` (name -> float), its command-line
    ``overrides`` (Hydra's ``key=value`` strings) and the value it returned to the sweeper.

    Returns:
        The path written.
    """
    path = Path(output_dir) / METRICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {
        "overrides": list(overrides),
        "optimized_metric": optimized_metric,
        "optimized_value": optimized_value,
        "metrics": dict(sorted(metrics.items())),
    }
    with replaced_atomically(path) as partial:
        # NaN and inf are written as JSON's widely read extensions (Python, pandas and jq take them)
        partial.write_text(json.dumps(content, indent=2) + "\n")
    return path


@dataclass
class JobResult:
    """One job of a sweep: its folder name (Hydra's job number), overrides and final metrics
    (empty when the job wrote none: ``status`` says why)."""

    job: str
    overrides: list[str]
    metrics: dict[str, float] = field(default_factory=dict)
    status: str = "ok"


def _job_order(path: Path) -> tuple[int, int, str]:
    """Numbered job folders first, by number (``2`` before ``10``), then any other by name."""
    return (0, int(path.name), "") if path.name.isdigit() else (1, 0, path.name)


def _saved_overrides(job_dir: Path) -> list[str]:
    """The overrides in ``<job>/.hydra/overrides.yaml`` (written at the job's start), else none."""
    path = job_dir / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    return [str(item) for item in OmegaConf.load(path)]


def read_sweep(sweep_dir: str | Path) -> list[JobResult]:
    """The jobs of a sweep directory, in job order: every sub-folder holding ``metrics.json`` or a
    ``.hydra`` folder (a job that started). A job without metrics has status ``"no metrics.json"``
    (it failed or is running; its ``train.log`` says which) and its saved overrides.

    Raises:
        FileNotFoundError: ``sweep_dir`` does not exist or holds no job.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(
            f"{sweep_dir} is not a directory: give a sweep's directory, logs/<task_name>/multiruns/<time>"
        )
    jobs: list[JobResult] = []
    for job_dir in sorted((p for p in sweep_dir.iterdir() if p.is_dir()), key=_job_order):
        metrics_path = job_dir / METRICS_FILE
        if metrics_path.is_file():
            content = json.loads(metrics_path.read_text())
            metrics = {name: float(value) for name, value in content["metrics"].items()}
            jobs.append(JobResult(job_dir.name, list(content["overrides"]), metrics))
        elif (job_dir / ".hydra").is_dir() or (job_dir / "train.log").is_file():
            jobs.append(JobResult(job_dir.name, _saved_overrides(job_dir), status="no metrics.json"))
    if not jobs:
        raise FileNotFoundError(
            f"{sweep_dir} holds no job folder with {METRICS_FILE} or .hydra/: is it a sweep's directory "
            "(logs/<task_name>/multiruns/<time>), and did its jobs start?"
        )
    return jobs


def _override_key(override: str) -> str:
    """The key of a ``key=value`` override, without Hydra's ``+``, ``++`` or ``~`` prefix."""
    return override.split("=", 1)[0].lstrip("+~")


def group_jobs(jobs: Sequence[JobResult], average_over: Sequence[str] = ("seed",)) -> dict[str, list[JobResult]]:
    """The jobs by setting: their overrides without those of the ``average_over`` keys, joined by
    spaces (``""`` when nothing else was overridden), in the order of first appearance."""
    groups: dict[str, list[JobResult]] = {}
    for job in jobs:
        setting = " ".join(o for o in job.overrides if _override_key(o) not in set(average_over))
        groups.setdefault(setting, []).append(job)
    return groups


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (``None`` for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _cell(value: float | None) -> str:
    return "" if value is None else repr(value)


def summarize_sweep(
    sweep_dir: str | Path, average_over: Sequence[str] = ("seed",), console: Console | None = None
) -> tuple[Path, Path]:
    """Writes ``summary.csv`` and ``summary_grouped.csv`` into ``sweep_dir`` (see the module's
    docstring) and prints the grouped ``test/*`` metrics (all metrics when none is a test metric).

    Returns:
        The paths of the two CSV files.
    """
    sweep_dir = Path(sweep_dir)
    jobs = read_sweep(sweep_dir)
    names = sorted({name for job in jobs for name in job.metrics})
    per_job = sweep_dir / "summary.csv"
    with replaced_atomically(per_job) as partial, partial.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["job", "overrides", "status", *names])
        for job in jobs:
            writer.writerow([job.job, " ".join(job.overrides), job.status, *(_cell(job.metrics.get(n)) for n in names)])

    groups = group_jobs(jobs, average_over)
    grouped = sweep_dir / "summary_grouped.csv"
    statistics_by_group: dict[str, dict[str, tuple[float, float | None, int]]] = {}
    with replaced_atomically(grouped) as partial, partial.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["setting", "jobs", "jobs_with_metrics", *(f"{n}_{s}" for n in names for s in ("mean", "std"))])
        for setting, members in groups.items():
            row: list[Any] = [setting, len(members), sum(1 for job in members if job.metrics)]
            statistics_by_group[setting] = {}
            for name in names:
                values = [job.metrics[name] for job in members if name in job.metrics]
                if values:
                    mean, std = _mean_std(values)
                    statistics_by_group[setting][name] = (mean, std, len(values))
                    row += [repr(mean), _cell(std)]
                else:
                    row += ["", ""]
            writer.writerow(row)

    shown = [n for n in names if n.startswith("test/")] or names
    table = Table(title=f"Sweep summary (mean ± std over {', '.join(average_over)})", caption=str(sweep_dir))
    table.add_column("setting")
    table.add_column("jobs", justify="right")
    for name in shown:
        table.add_column(name, justify="right")
    for setting, members in groups.items():
        cells = []
        for name in shown:
            if name not in statistics_by_group[setting]:
                cells.append("")
                continue
            mean, std, count = statistics_by_group[setting][name]
            cells.append(f"{mean:.4g}" if std is None else f"{mean:.4g} ± {std:.2g}")
        with_metrics = sum(1 for job in members if job.metrics)
        table.add_row(setting or "(no overrides)", f"{with_metrics}/{len(members)}", *cells)
    (console or Console()).print(table)
    failed = [job.job for job in jobs if not job.metrics]
    if failed:
        log.warning("Jobs without %s (failed or still running): %s", METRICS_FILE, ", ".join(failed))
    log.info("Sweep summary: %s, %s", per_job, grouped)
    return per_job, grouped


class SweepSummary(Callback):
    """Hydra callback (``hydra.callbacks.sweep_summary`` in ``configs/hydra/default.yaml``):
    :func:`summarize_sweep` of the sweep's directory when a sweep ends.

    Args:
        average_over: keys whose values a setting's mean and standard deviation are taken over
            (``hydra.callbacks.sweep_summary.average_over=[seed,data.seed]``).
    """

    def __init__(self, average_over: Sequence[str] = ("seed",)) -> None:
        self.average_over = list(average_over)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        try:
            summarize_sweep(sweep_dir, self.average_over)
        except FileNotFoundError as missing:
            log.warning("No sweep summary: %s", missing)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m tenfold.sweeps SWEEP_DIR``: :func:`summarize_sweep` from the command line."""
    parser = argparse.ArgumentParser(prog="python -m tenfold.sweeps", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep_dir", type=Path, help="a sweep's directory, logs/<task_name>/multiruns/<time>")
    parser.add_argument(
        "--average-over", nargs="+", default=["seed"], help="override keys to average over (default: seed)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        summarize_sweep(args.sweep_dir, args.average_over)
    except FileNotFoundError as missing:
        parser.error(str(missing))


if __name__ == "__main__":
    main()
