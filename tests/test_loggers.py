"""tenfold.loggers: ResumableCSVLogger keeps the metrics of earlier starts of a run, and it and
ResumableTensorBoardLogger show the steps a resumed run logs again once; run_id names a run
directory."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from tenfold.loggers import ResumableCSVLogger, ResumableLogger, ResumableTensorBoardLogger, run_id
from tests.conftest import read_csv_rows, tensorboard_scalars


def test_second_start_appends_and_merges_columns(tmp_path: Path) -> None:
    first = ResumableCSVLogger(save_dir=tmp_path, name="csv", version="")
    first.log_metrics({"a": 1.0, "b": 2.0}, step=0)
    first.save()
    metrics = Path(first.log_dir) / "metrics.csv"

    second = ResumableCSVLogger(save_dir=tmp_path, name="csv", version="")
    second.log_metrics({"a": 3.0}, step=1)
    second.log_metrics({"c": 4.0}, step=2)
    second.save()

    rows = read_csv_rows(metrics)
    assert [r["step"] for r in rows] == ["0", "1", "2"]
    assert [r["a"] for r in rows] == ["1.0", "3.0", ""]
    assert [r["b"] for r in rows] == ["2.0", "", ""]
    assert [r["c"] for r in rows] == ["", "", "4.0"]


def test_second_start_with_known_columns_only_appends_under_the_file_header(tmp_path: Path) -> None:
    # no new column, so no rewrite: the appended row must follow the header already in the file
    first = ResumableCSVLogger(save_dir=tmp_path, name="csv", version="")
    first.log_metrics({"a": 1.0, "b": 2.0}, step=0)
    first.save()
    second = ResumableCSVLogger(save_dir=tmp_path, name="csv", version="")
    second.log_metrics({"b": 5.0}, step=1)
    second.save()
    rows = read_csv_rows(Path(second.log_dir) / "metrics.csv")
    assert [r["step"] for r in rows] == ["0", "1"]
    assert [r["a"] for r in rows] == ["1.0", ""]
    assert [r["b"] for r in rows] == ["2.0", "5.0"]
    # a file whose columns are not in Lightning's sorted order (written by other code)
    other = tmp_path / "other"
    (other / "csv").mkdir(parents=True)
    (other / "csv" / "metrics.csv").write_text("step,b,a\n0,2.0,1.0\n")
    third = ResumableCSVLogger(save_dir=other, name="csv", version="")
    third.log_metrics({"a": 3.0, "b": 4.0}, step=1)
    third.save()
    rows = read_csv_rows(other / "csv" / "metrics.csv")
    assert [(r["step"], r["a"], r["b"]) for r in rows] == [("0", "1.0", "2.0"), ("1", "3.0", "4.0")]


def test_rows_logged_after_the_resumed_checkpoint_are_dropped(tmp_path: Path) -> None:
    # a run checkpointed after 4 steps logged steps 4 and 5 before it was killed: the resumed run
    # logs them again; the validation row of step 3 (before the checkpoint) stays
    first = ResumableCSVLogger(save_dir=tmp_path, name="csv", version="")
    for step in range(6):
        first.log_metrics({"loss": float(step)}, step=step)
    first.log_metrics({"val": 9.0}, step=3)
    first.save()
    second = ResumableCSVLogger(save_dir=tmp_path, name="csv", version="")
    second.discard_steps_from(4)
    second.log_metrics({"loss": 40.0}, step=4)
    second.save()
    rows = read_csv_rows(Path(second.log_dir) / "metrics.csv")
    assert [(r["step"], r["loss"], r["val"]) for r in rows] == [
        ("0", "0.0", ""), ("1", "1.0", ""), ("2", "2.0", ""), ("3", "3.0", ""), ("3", "", "9.0"), ("4", "40.0", "")
    ]
    assert sorted(p.name for p in Path(second.log_dir).iterdir()) == ["metrics.csv"]


def test_a_last_row_cut_short_by_a_kill_is_dropped(tmp_path: Path) -> None:
    metrics = tmp_path / "csv" / "metrics.csv"
    metrics.parent.mkdir()
    metrics.write_text("loss,step\n0.5,0\n0.25,1\n0.1")  # killed while appending step 2
    logger = ResumableCSVLogger(save_dir=tmp_path, name="csv", version="")
    logger.log_metrics({"loss": 0.125}, step=2)
    logger.log_metrics({"acc": 1.0}, step=2)  # a new column rewrites the header, keeping the rows
    logger.save()
    assert [(r["step"], r["loss"], r["acc"]) for r in read_csv_rows(metrics)] == [
        ("0", "0.5", ""), ("1", "0.25", ""), ("2", "0.125", ""), ("2", "", "1.0")
    ]


def test_lightning_csv_logger_would_have_deleted_them(tmp_path: Path) -> None:
    # The reason for ResumableCSVLogger: if Lightning changes this, the subclass can go.
    first = CSVLogger(save_dir=tmp_path, name="csv", version="")
    first.log_metrics({"a": 1.0}, step=0)
    first.save()
    second = CSVLogger(save_dir=tmp_path, name="csv", version="")
    second.log_metrics({"a": 2.0}, step=1)
    second.save()
    assert [r["step"] for r in read_csv_rows(Path(second.log_dir) / "metrics.csv")] == ["1"]


def test_run_id_is_one_per_run_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "runs" / "4242"
    run.mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    # the same directory however it is written: 16 hex digits of the SHA-1 of its resolved path
    assert run_id(run) == run_id("runs/4242") == run_id(f"{run}/../4242")
    assert run_id(run) == hashlib.sha1(str(run.resolve()).encode()).hexdigest()[:16]
    assert run_id(run) != run_id(run / "0") != run_id(run / "1")


def _log_two_starts(logger_class: type[TensorBoardLogger], tmp_path: Path) -> list[tuple[int, float]]:
    """A run that logged steps 0-5, killed after its checkpoint at step 4 and resumed: the second
    start logs steps 4 and 5 again, with other values."""
    first = logger_class(save_dir=tmp_path, name="tb", version="")
    for step in range(6):
        first.log_metrics({"loss": float(step)}, step=step)
    first.finalize("failed")
    time.sleep(1.1)  # event files are named (and read) in order of their start second
    second = logger_class(save_dir=tmp_path, name="tb", version="")
    if isinstance(second, ResumableLogger):
        second.discard_steps_from(4)
    for step in (4, 5):
        second.log_metrics({"loss": 10.0 * step}, step=step)
    second.finalize("success")
    return tensorboard_scalars(second.log_dir, "loss")


def test_tensorboard_shows_the_resumed_runs_values_of_the_repeated_steps(tmp_path: Path) -> None:
    shown = _log_two_starts(ResumableTensorBoardLogger, tmp_path)
    assert shown == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0)]


def test_lightning_tensorboard_logger_would_have_shown_both(tmp_path: Path) -> None:
    # The reason for ResumableTensorBoardLogger: if TensorBoard drops repeated steps by itself,
    # the subclass can go.
    shown = _log_two_starts(TensorBoardLogger, tmp_path)
    assert shown == [(0, 0.0), (1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0), (5, 5.0), (4, 40.0), (5, 50.0)]


def test_tensorboard_steps_are_discarded_only_before_its_writer_exists(tmp_path: Path) -> None:
    logger = ResumableTensorBoardLogger(save_dir=tmp_path, name="tb", version="")
    logger.log_metrics({"loss": 1.0}, step=0)
    with pytest.raises(RuntimeError, match="before anything is logged"):
        logger.discard_steps_from(0)
