"""Sweep summaries: each job's final metrics and their mean and standard deviation per setting."""

from __future__ import annotations

import io
import json
import statistics
from pathlib import Path

import pytest
from omegaconf import OmegaConf
from rich.console import Console

from tenfold.sweeps import JobResult, SweepSummary, group_jobs, job_setting, main, read_sweep, summarize_sweep, write_run_metrics
from tests.conftest import read_csv_rows

# (job, overrides, test/acc): two settings of lr, three seeds each, written out of order
JOBS = [
    ("0", ["experiment=x", "model.lr=0.1", "seed=1"], 0.50),
    ("1", ["experiment=x", "model.lr=0.1", "seed=2"], 0.70),
    ("2", ["experiment=x", "model.lr=0.1", "seed=3"], 0.90),
    ("3", ["experiment=x", "model.lr=0.01", "seed=1"], 0.25),
    ("10", ["experiment=x", "model.lr=0.01", "seed=3"], 0.75),
]


def _sweep(root: Path) -> Path:
    for job, overrides, accuracy in JOBS:
        write_run_metrics(root / job, {"test/acc": accuracy, "val/loss": 1 - accuracy}, overrides, "val/loss", 1 - accuracy)
    return root


def test_run_metrics_round_trip_and_leave_no_partial_file(tmp_path: Path) -> None:
    path = write_run_metrics(tmp_path, {"b": 2.0, "a": float("nan")}, ["seed=1"], "b", 2.0)
    content = json.loads(path.read_text())
    assert content["overrides"] == ["seed=1"] and content["optimized_value"] == 2.0
    assert list(content["metrics"]) == ["a", "b"] and content["metrics"]["b"] == 2.0
    assert content["metrics"]["a"] != content["metrics"]["a"]  # NaN survives
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_jobs_are_read_in_number_order_and_failed_jobs_are_listed(tmp_path: Path) -> None:
    sweep = _sweep(tmp_path)
    failed = sweep / "4" / ".hydra"
    failed.mkdir(parents=True)
    OmegaConf.save(OmegaConf.create(["experiment=x", "model.lr=0.01", "seed=2"]), failed / "overrides.yaml")
    (sweep / "not_a_job").mkdir()  # neither metrics nor .hydra: ignored
    jobs = read_sweep(sweep)
    assert [job.job for job in jobs] == ["0", "1", "2", "3", "4", "10"]
    assert jobs[4].status == "no metrics.json" and jobs[4].metrics == {}
    assert jobs[4].overrides[-1] == "seed=2"


def test_grouping_drops_only_the_averaged_keys() -> None:
    jobs = [
        JobResult("0", ["+seed=1", "model.lr=0.1"]),
        JobResult("1", ["seed=2", "model.lr=0.1"]),
        JobResult("2", ["seed=1", "model.seed_scale=3"]),  # a key that only starts with "seed"
        JobResult("3", ["data.seed=4", "seed=1"]),
    ]
    groups = group_jobs(jobs)
    assert list(groups) == ["model.lr=0.1", "model.seed_scale=3", "data.seed=4"]
    assert [job.job for job in groups["model.lr=0.1"]] == ["0", "1"]
    assert list(group_jobs(jobs, ["seed", "data.seed"]))[-1] == ""


def test_summary_gives_each_settings_mean_and_sample_std(tmp_path: Path) -> None:
    sweep = _sweep(tmp_path)
    (sweep / "11" / ".hydra").mkdir(parents=True)  # a job that failed before writing metrics
    console = Console(file=io.StringIO(), width=200)
    per_job, grouped = summarize_sweep(sweep, console=console)

    rows = read_csv_rows(per_job)
    assert [row["job"] for row in rows] == ["0", "1", "2", "3", "10", "11"]
    assert rows[1]["overrides"] == "experiment=x model.lr=0.1 seed=2" and float(rows[1]["test/acc"]) == 0.70
    assert rows[-1]["status"] == "no metrics.json" and rows[-1]["test/acc"] == ""

    first, second, failed = read_csv_rows(grouped)
    assert first["setting"] == "experiment=x model.lr=0.1" and first["jobs"] == "3"
    assert float(first["test/acc_mean"]) == pytest.approx(0.70)
    assert float(first["test/acc_std"]) == pytest.approx(0.20)  # sample std of 0.5, 0.7, 0.9
    assert float(second["test/acc_mean"]) == pytest.approx(0.50)
    assert float(second["test/acc_std"]) == pytest.approx(statistics.stdev([0.25, 0.75]))
    assert float(second["val/loss_mean"]) == pytest.approx(0.50)
    # the failed job has no overrides saved: its own setting, with no metrics and no std
    assert failed["jobs"] == "1" and failed["jobs_with_metrics"] == "0" and failed["test/acc_mean"] == ""

    printed = console.file.getvalue()
    assert "0.7 ± 0.2" in printed and "3/3" in printed and "0/1" in printed
    assert "val/loss" not in printed  # test metrics only, when there are any
    # a column per setting, headed by what the sweep varies (here experiment=x too: the failed job
    # saved no overrides)
    header = next(line for line in printed.splitlines() if "metric" in line)
    assert "experiment=x model.lr=0.1" in header and "(no overrides)" in header


def test_many_settings_are_printed_a_row_each(tmp_path: Path) -> None:
    for job in range(6):
        write_run_metrics(tmp_path / str(job), {"test/acc": job / 10}, ["experiment=x", f"model.lr={job}", "seed=1"])
    console = Console(file=io.StringIO(), width=200)
    summarize_sweep(tmp_path, console=console)
    rows = [line for line in console.file.getvalue().splitlines() if "model.lr=" in line]
    assert len(rows) == 6 and "model.lr=5" in rows[-1] and "0.5" in rows[-1] and "experiment=x" not in rows[-1]


def test_a_single_job_has_no_std(tmp_path: Path) -> None:
    write_run_metrics(tmp_path / "0", {"test/acc": 0.5}, ["seed=1"])
    _, grouped = summarize_sweep(tmp_path, console=Console(file=io.StringIO()))
    (row,) = read_csv_rows(grouped)
    assert row["setting"] == "" and row["test/acc_mean"] == "0.5" and row["test/acc_std"] == ""


def test_hydra_callback_summarizes_the_sweep_directory(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    sweep = _sweep(tmp_path / "sweep")
    config = OmegaConf.create({"hydra": {"sweep": {"dir": str(sweep)}}})
    SweepSummary(average_over=["seed"]).on_multirun_end(config)
    assert (sweep / "summary.csv").is_file() and (sweep / "summary_grouped.csv").is_file()
    # a sweep whose directory holds no job: a warning, not an error at the end of the sweep
    empty = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "missing")}}})
    SweepSummary().on_multirun_end(empty)
    assert "No sweep summary" in caplog.text and "is not a directory" in caplog.text


def test_command_line_averages_over_the_keys_given(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    sweep = _sweep(tmp_path)
    main([str(sweep), "--average-over", "seed", "model.lr"])
    (row,) = read_csv_rows(sweep / "summary_grouped.csv")
    assert row["setting"] == "experiment=x" and row["jobs"] == "5"
    assert float(row["test/acc_mean"]) == pytest.approx(0.62)
    with pytest.raises(SystemExit):
        main([str(tmp_path / "nothing")])
    assert "give a sweep's directory" in capsys.readouterr().err


def test_a_jobs_setting_is_what_it_trained() -> None:
    # a resumed job: the overrides that made it, then the resume's (the later value wins); where it
    # ran and from which checkpoint are not part of the setting
    overrides = [
        "experiment=x", "seed=2", "trainer.max_steps=2", "paths.log_dir=/a", "ckpt_path=last", "trainer.max_steps=4",
        "hydra.run.dir=/a/1", "+extras.print_config=false", "pathsx=1",
    ]
    assert job_setting(overrides) == "experiment=x trainer.max_steps=4 pathsx=1"
    # evaluations of other checkpoints are other settings
    assert job_setting(["train=false", "ckpt_path=/runs/a"]) != job_setting(["train=false", "ckpt_path=/runs/b"])
    assert job_setting(overrides, ["seed", "experiment"]) == "trainer.max_steps=4 pathsx=1"


def test_nested_job_folders_are_found_and_evaluations_inside_jobs_are_not(tmp_path: Path) -> None:
    write_run_metrics(tmp_path / "1" / "0", {"test/acc": 0.5}, ["seed=1"])
    write_run_metrics(tmp_path / "1" / "0" / "evaluations" / "now", {"test/acc": 0.1}, ["seed=1"])
    write_run_metrics(tmp_path / "10" / "1", {"test/acc": 0.7}, ["seed=10"])
    write_run_metrics(tmp_path / "2" / "2", {"test/acc": 0.6}, ["seed=2"])
    assert [job.job for job in read_sweep(tmp_path)] == ["1/0", "2/2", "10/1"]


def test_a_failed_job_is_recorded_and_the_summary_kept(tmp_path: Path) -> None:
    from hydra.core.utils import JobReturn, JobStatus
    from hydra.types import RunMode

    sweep = _sweep(tmp_path / "sweep")
    failed = JobReturn(overrides=["experiment=x", "model.lr=0.01", "seed=2"], status=JobStatus.FAILED)
    failed.return_value = ValueError("batch_size must be positive")
    config = OmegaConf.create(
        {"hydra": {"mode": RunMode.MULTIRUN, "sweep": {"dir": str(sweep)}, "runtime": {"output_dir": str(sweep / "4")}}}
    )
    SweepSummary().on_job_end(config, failed)
    saved = json.loads((sweep / "4" / "metrics.json").read_text())
    # a job that had finished once and fails when run again is a failed job
    config.hydra.runtime.output_dir = str(sweep / "0")
    rerun = JobReturn(overrides=JOBS[0][1], status=JobStatus.FAILED)
    rerun.return_value = ValueError("trained with other settings")
    SweepSummary().on_job_end(config, rerun)
    assert json.loads((sweep / "0" / "metrics.json").read_text())["status"].startswith("failed: ValueError")
    config.hydra.runtime.output_dir = str(sweep / "4")
    assert saved["status"] == "failed: ValueError: batch_size must be positive" and saved["metrics"] == {}
    rows = {row["job"]: row for row in read_csv_rows(sweep / "summary.csv")}
    assert rows["4"]["status"].startswith("failed: ValueError") and rows["4"]["test/acc"] == ""
    first, second = read_csv_rows(sweep / "summary_grouped.csv")
    assert (first["jobs"], first["jobs_with_metrics"]) == ("3", "2")  # job 0 failed on its second run
    assert second["setting"] == "experiment=x model.lr=0.01" and (second["jobs"], second["jobs_with_metrics"]) == ("3", "2")
    # a single run (not a sweep) is left alone
    config.hydra.mode = RunMode.RUN
    config.hydra.runtime.output_dir = str(tmp_path / "single")
    SweepSummary().on_job_end(config, failed)
    assert not (tmp_path / "single").exists()
