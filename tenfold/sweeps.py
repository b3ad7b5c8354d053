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

and prints the grouped test metrics. The two files are also rewritten after every job, so they
stay when a failed job ends the sweep (Hydra's sweepers stop there); a failed job's
``metrics.json`` records its overrides and error. A job without metrics (failed, killed or still
running) is listed with its status and left out of the means; a job resumed later records the
overrides that made it and those of the resume (``.hydra/overrides.yaml``), and its setting
leaves out where it ran (``ckpt_path=last``, ``paths.*``, ``hydra.*``, ``extras.*``). For a sweep whose launching process
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

from hydra.core.utils import JobReturn, JobStatus
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from lightning.fabric.utilities.rank_zero import rank_zero_only
from omegaconf import DictConfig, OmegaConf
from rich.console import Console
from rich.table import Table

from tenfold.checkpoints import replaced_atomically

__all__ = [
    "METRICS_FILE",
    "JobResult",
    "SweepSummary",
    "group_jobs",
    "job_setting",
    "read_sweep",
    "saved_overrides",
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
    status: str = "ok",
) -> Path:
    """Writes ``<output_dir>/metrics.json`` whole or not at all (a run killed while writing leaves
    the previous file): the run's final ``metrics`` (name -> float), its overrides (Hydra's
    ``key=value`` strings, those of the command that made the run first, then a resume's), the
    value it returned to the sweeper, and its ``status`` (``"ok"``, or ``"failed: <error>"`` with
    no metrics, which :class:`SweepSummary` writes for a sweep's failed job).

    Returns:
        The path written.
    """
    path = Path(output_dir) / METRICS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    content = {
        "status": status,
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


def _job_order(name: str) -> list[tuple[int, int, str]]:
    """Job folders (relative paths) by their parts, numbered parts by number (``2`` before ``10``)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in name.split("/")]


def _job_dirs(sweep_dir: Path) -> list[Path]:
    """The folders under ``sweep_dir`` that hold a job: ``metrics.json``, a ``.hydra`` folder or a
    ``train.log``, at any depth (``hydra.sweep.subdir`` may nest them), but not an evaluation's
    folder inside a job (``<job>/evaluations/<time>``)."""
    found = {
        marker.parent
        for pattern in (METRICS_FILE, ".hydra", "train.log")
        for marker in sweep_dir.rglob(pattern)
        if marker.parent != sweep_dir
    }
    return [job for job in found if "evaluations" not in job.relative_to(sweep_dir).parts]


def saved_overrides(run_dir: str | Path) -> list[str]:
    """The overrides in ``<run_dir>/.hydra/overrides.yaml`` (``train.py`` writes them when a run
    starts, a resume's after the run's own), else none."""
    path = Path(run_dir) / ".hydra" / "overrides.yaml"
    if not path.is_file():
        return []
    return [str(item) for item in OmegaConf.load(path)]


def read_sweep(sweep_dir: str | Path) -> list[JobResult]:
    """The jobs of a sweep directory, in job order: every folder holding ``metrics.json``, a
    ``.hydra`` folder or a ``train.log`` (a job that started), named by its path relative to
    ``sweep_dir``. A job without ``metrics.json`` has status ``"no metrics.json"`` (it is running,
    or was killed; its ``train.log`` says which) and its saved overrides.

    Raises:
        FileNotFoundError: ``sweep_dir`` does not exist or holds no job.
    """
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(
            f"{sweep_dir} is not a directory: give a sweep's directory, logs/<task_name>/multiruns/<time>"
        )
    jobs: list[JobResult] = []
    for job_dir in _job_dirs(sweep_dir):
        name = job_dir.relative_to(sweep_dir).as_posix()
        metrics_path = job_dir / METRICS_FILE
        if metrics_path.is_file():
            content = json.loads(metrics_path.read_text())
            metrics = {metric: float(value) for metric, value in content["metrics"].items()}
            jobs.append(JobResult(name, list(content["overrides"]), metrics, content.get("status", "ok")))
        else:
            jobs.append(JobResult(name, saved_overrides(job_dir), status="no metrics.json"))
    jobs.sort(key=lambda job: _job_order(job.job))
    if not jobs:
        raise FileNotFoundError(
            f"{sweep_dir} holds no job folder with {METRICS_FILE} or .hydra/: is it a sweep's directory "
            "(logs/<task_name>/multiruns/<time>), and did its jobs start?"
        )
    return jobs


def _override_key(override: str) -> str:
    """The key of a ``key=value`` override, without Hydra's ``+``, ``++`` or ``~`` prefix."""
    return override.split("=", 1)[0].lstrip("+~")


# Overrides that say where and how a job ran, not what it trained: left out of its setting (and
# `ckpt_path=last`, a resume; another checkpoint is part of an evaluation's setting).
RUN_KEYS = ("hydra", "paths", "extras")


def _setting_by_key(overrides: Sequence[str], average_over: Sequence[str]) -> dict[str, str]:
    """:func:`job_setting`'s overrides by key: the last one of each key (a resume's wins) in the
    key's first place."""
    by_key: dict[str, str] = {}
    for override in overrides:
        by_key[_override_key(override)] = override
    return {
        key: override
        for key, override in by_key.items()
        if key not in set(average_over)
        and override.lstrip("+") != "ckpt_path=last"
        and not any(key == run or key.startswith(f"{run}.") for run in RUN_KEYS)
    }


def job_setting(overrides: Sequence[str], average_over: Sequence[str] = ("seed",)) -> str:
    """What a job trained: its overrides, the last one of each key (a resume's win), without the
    ``average_over`` keys, :data:`RUN_KEYS` (and keys under them) and ``ckpt_path=last``, joined
    by spaces."""
    return " ".join(_setting_by_key(overrides, average_over).values())


def group_jobs(jobs: Sequence[JobResult], average_over: Sequence[str] = ("seed",)) -> dict[str, list[JobResult]]:
    """The jobs by setting (:func:`job_setting`; ``""`` when nothing else was overridden), in the
    order of first appearance."""
    groups: dict[str, list[JobResult]] = {}
    for job in jobs:
        groups.setdefault(job_setting(job.overrides, average_over), []).append(job)
    return groups


# Up to this many settings, the printed summary has a column per setting (else a row per setting).
MAX_SETTING_COLUMNS = 4


def _distinguishing_labels(groups: dict[str, list[JobResult]], average_over: Sequence[str]) -> dict[str, str]:
    """A short label per setting for the printed table: its overrides whose key is not overridden
    alike by every setting (what the sweep varies), else ``"(all jobs)"`` (``"(no overrides)"``
    for the setting without any)."""
    parsed = {setting: _setting_by_key(members[0].overrides, average_over) for setting, members in groups.items()}
    keys = {key for overrides in parsed.values() for key in overrides}
    varying = {key for key in keys if len({overrides.get(key) for overrides in parsed.values()}) > 1}
    return {
        setting: " ".join(o for key, o in overrides.items() if key in varying) or ("(all jobs)" if setting else "(no overrides)")
        for setting, overrides in parsed.items()
    }


def _with_metrics(members: Sequence[JobResult]) -> int:
    """How many of ``members`` wrote metrics."""
    return sum(1 for job in members if job.metrics)


def _mean_std(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (``None`` for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def _cell(value: float | None) -> str:
    return "" if value is None else repr(value)


def summarize_sweep(
    sweep_dir: str | Path, average_over: Sequence[str] = ("seed",), console: Console | None = None, show: bool = True
) -> tuple[Path, Path]:
    """Writes ``summary.csv`` and ``summary_grouped.csv`` into ``sweep_dir`` (see the module's
    docstring) and, with ``show``, prints the grouped ``test/*`` metrics (all metrics when none is
    a test metric) and names the jobs without metrics.

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
    statistics_by_group: dict[str, dict[str, tuple[float, float | None]]] = {}
    with replaced_atomically(grouped) as partial, partial.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["setting", "jobs", "jobs_with_metrics", *(f"{n}_{s}" for n in names for s in ("mean", "std"))])
        for setting, members in groups.items():
            row: list[Any] = [setting, len(members), _with_metrics(members)]
            statistics_by_group[setting] = {}
            for name in names:
                values = [job.metrics[name] for job in members if name in job.metrics]
                if values:
                    mean, std = _mean_std(values)
                    statistics_by_group[setting][name] = (mean, std)
                    row += [repr(mean), _cell(std)]
                else:
                    row += ["", ""]
            writer.writerow(row)

    if not show:
        return per_job, grouped
    shown = [n for n in names if n.startswith("test/")] or names
    labels = _distinguishing_labels(groups, average_over)
    table = Table(title=f"Sweep summary (mean ± std over {', '.join(average_over)})", caption=str(sweep_dir))

    def cell(setting: str, name: str) -> str:
        if name not in statistics_by_group[setting]:
            return ""
        mean, std = statistics_by_group[setting][name]
        return f"{mean:.4g}" if std is None else f"{mean:.4g} ± {std:.2g}"

    def jobs_cell(members: list[JobResult]) -> str:
        return f"{_with_metrics(members)}/{len(members)}"

    if len(groups) <= MAX_SETTING_COLUMNS:
        # few settings: one column each, a row per metric (many metrics stay readable)
        table.add_column("metric")
        for setting in groups:
            table.add_column(labels[setting], justify="right")
        table.add_row("jobs with metrics", *(jobs_cell(members) for members in groups.values()))
        for name in shown:
            table.add_row(name, *(cell(setting, name) for setting in groups))
    else:
        table.add_column("setting")
        table.add_column("jobs", justify="right")
        for name in shown:
            table.add_column(name, justify="right")
        for setting, members in groups.items():
            table.add_row(labels[setting], jobs_cell(members), *(cell(setting, name) for name in shown))
    (console or Console()).print(table)
    failed = [f"{job.job} ({job.status})" for job in jobs if not job.metrics]
    if failed:
        log.warning("Jobs without metrics: %s", ", ".join(failed))
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

    def on_job_end(self, config: DictConfig, job_return: JobReturn, **kwargs: Any) -> None:
        """After each job of a sweep: a failed job's ``metrics.json`` (its overrides and error),
        then the summary so far, which stays when a failed job ends the sweep (Hydra's sweepers
        re-raise the error before ``on_multirun_end``)."""
        # every process of a multi-process job ends it: the first one records it
        if config.hydra.mode != RunMode.MULTIRUN or rank_zero_only.rank != 0:
            return
        job_dir = Path(str(config.hydra.runtime.output_dir))
        try:
            if job_return.status == JobStatus.FAILED:
                try:
                    job_return.return_value  # noqa: B018 (re-raises the job's error)
                except Exception as error:  # noqa: BLE001 (any error of the job is recorded, not raised here)
                    # metrics of an earlier start of the job (resumed, then failed) are not its result
                    status = f"failed: {type(error).__name__}: {error}"
                    write_run_metrics(job_dir, {}, list(job_return.overrides or []), status=status)
            summarize_sweep(Path(str(config.hydra.sweep.dir)), self.average_over, show=False)
        except Exception as error:  # noqa: BLE001 (the summary never fails the job; the sweep's end writes it again)
            log.warning("Sweep summary not updated after job %s: %s", job_dir.name, error)

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
