"""Loggers that survive resuming.

A run killed after its last checkpoint has logged steps that its resumed continuation
(``ckpt_path=last``, a requeued SLURM job) logs again. ``train.py`` calls
:meth:`ResumableLogger.discard_steps_from` with the checkpoint's step on every logger that has it,
before anything is logged, so each step is shown once, as the continuation logged it:

- :class:`ResumableCSVLogger`: Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it
  starts, so the metrics logged before the interruption would be lost. This one appends to the
  file instead and drops the rows of the steps logged again.
- :class:`ResumableTensorBoardLogger`: TensorBoard would draw both versions of the repeated steps.
  This one opens its event file with ``purge_step`` (``SummaryWriter``'s own mechanism), which
  hides the older events of those steps from TensorBoard.

:func:`run_id` names a run directory for loggers that keep runs by id (W&B), so that every start
of a run continues one logger run and no two runs share one.

:func:`log_tensorboard_hparams` fills TensorBoard's HPARAMS tab at the end of a run: its settings
beside its final metrics, one row per run, to compare the runs of a sweep.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from lightning.fabric.utilities.logger import _flatten_dict, _sanitize_params
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

__all__ = ["ResumableCSVLogger", "ResumableLogger", "ResumableTensorBoardLogger", "log_tensorboard_hparams", "run_id"]


@runtime_checkable
class ResumableLogger(Protocol):
    """A logger that can forget what it logged at a step or later (the protocol ``train.py`` uses
    when a run resumes; a user's own logger class may implement it)."""

    def discard_steps_from(self, step: int) -> None:
        """Hides or removes what was logged at ``step`` or later. Called once, before the resumed
        run logs anything, with the step of the checkpoint it resumes from."""


class _AppendingExperimentWriter(ExperimentWriter):
    """Keeps an existing ``metrics.csv`` and its columns; new rows are appended (new columns
    rewrite the header, keeping the old rows, as Lightning's writer already does). A last line
    cut short (a process killed while appending) is dropped."""

    def _check_log_dir_exists(self) -> None:
        if not self._fs.isfile(self.metrics_file_path):
            return
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            text = file.read()
        header = next(csv.reader(text.splitlines()[:1]), [])
        # Lightning's writer appends rows with its keys sorted: a file written in another column
        # order is rewritten in that order first
        self.metrics_keys = sorted(header)
        if header != self.metrics_keys or (text and not text.endswith("\n")):
            self.rewrite_rows(lambda row: True)

    def rewrite_rows(self, keep: Callable[[dict[str, str]], bool]) -> None:
        """Rewrites ``metrics.csv`` (sorted columns, in a file renamed into place) with the whole
        rows for which ``keep`` is true; a last line without its line end is not a whole row."""
        with self._fs.open(self.metrics_file_path, "r", newline="") as file:
            text = file.read()
        if text and not text.endswith("\n"):
            text = text[: text.rfind("\n") + 1]
        rows = [row for row in csv.DictReader(io.StringIO(text, newline="")) if None not in row and keep(row)]
        partial = f"{self.metrics_file_path}.partial"
        with self._fs.open(partial, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=self.metrics_keys)
            writer.writeheader()
            writer.writerows(rows)
        self._fs.mv(partial, self.metrics_file_path)


class ResumableCSVLogger(CSVLogger):
    """``lightning.pytorch.loggers.CSVLogger`` that appends to an existing ``metrics.csv``.

    Same arguments as ``CSVLogger``. With a fixed ``version`` (the run directory is already
    unique), every restart of a run writes to ``<save_dir>/<name>/<version>/metrics.csv``.
    """

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        """The writer of ``metrics.csv`` and ``hparams.yaml``, created on first use."""
        if self._experiment is not None:
            return self._experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = _AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment

    @rank_zero_only
    def discard_steps_from(self, step: int) -> None:
        """Removes the rows logged at ``step`` or later: called when a run resumes from a
        checkpoint saved after ``step`` optimizer steps, whose continuation logs them again (a
        run killed after its last checkpoint had logged them once already)."""
        experiment = self.experiment
        if self._fs.isfile(experiment.metrics_file_path):
            experiment.rewrite_rows(lambda row: not row.get("step", "").isdigit() or int(row["step"]) < step)


class ResumableTensorBoardLogger(TensorBoardLogger):
    """``lightning.pytorch.loggers.TensorBoardLogger`` whose resumed run hides the events of the
    steps it logs again.

    Same arguments as ``TensorBoardLogger`` (give a fixed ``version``, so that every restart of a
    run writes to the same folder). :meth:`discard_steps_from` must come before the first use of
    :attr:`experiment`: ``purge_step`` is an argument of the ``SummaryWriter`` it creates.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.logged_metric_names: set[str] = set()
        """The names of the metrics this logger has written (the HPARAMS tab's columns)."""

    def log_metrics(self, metrics: dict[str, Any], step: int | None = None) -> None:
        self.logged_metric_names.update(metrics)
        super().log_metrics(metrics, step)

    @rank_zero_only
    def discard_steps_from(self, step: int) -> None:
        """Hides, in TensorBoard, the events logged at ``step`` or later by earlier starts of the
        run: the event file this run writes starts with a session-start marker at ``step``, and
        TensorBoard's reader drops older files' events from there."""
        if self._experiment is not None:
            raise RuntimeError(
                "discard_steps_from() must be called before the logger's SummaryWriter is created "
                "(before anything is logged)"
            )
        self._kwargs["purge_step"] = step


def run_id(output_dir: str | Path) -> str:
    """A logger run id for the run directory ``output_dir``: 16 hex digits of the SHA-1 of its
    absolute, resolved path.

    Every start of one run (a resume with ``ckpt_path=last``, a requeued SLURM job) has the same
    directory and so the same id, and a logger created with ``resume="allow"`` continues the same
    run. Every other run has another directory and so another id: the jobs of a sweep
    (``<sweep dir>/<job number>``), and two runs in one SLURM allocation, which a job id alone
    would merge.
    """
    return hashlib.sha1(str(Path(output_dir).resolve()).encode()).hexdigest()[:16]


@rank_zero_only
def log_tensorboard_hparams(logger: TensorBoardLogger, params: dict[str, Any], metric_names: Iterable[str]) -> None:
    """Writes TensorBoard's hyperparameter summary into ``logger``'s event file: ``params`` (a
    nested dict, flattened to ``section/key`` names; values other than numbers, strings and
    booleans, lists for example, shown as strings) and the names of the metrics to show beside
    them, whose values TensorBoard reads from the scalars the run logged under those names.

    Lightning's ``log_hyperparams(params, metrics)`` does the same but also logs the metrics again
    at step 0 (a second point on every curve), and without metrics (``default_hp_metric: false``,
    this project's setting) it writes no summary, which leaves the HPARAMS tab empty.
    """
    from torch.utils.tensorboard import SummaryWriter
    from torch.utils.tensorboard.summary import hparams

    flat = _sanitize_params(_flatten_dict(params, delimiter="/"))
    flat = {name: value for name, value in flat.items() if value is not None}
    summaries = hparams(flat, dict.fromkeys(sorted(metric_names), 0.0))
    # a writer of its own, a new event file of the same run: the logger's writer is closed when
    # Lightning's fit or test ends
    with SummaryWriter(log_dir=logger.log_dir) as writer:
        for summary in summaries:
            writer.file_writer.add_summary(summary)
