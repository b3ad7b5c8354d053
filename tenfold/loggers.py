"""Loggers that survive resuming.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts, so a run resumed in
its own directory (``ckpt_path=last``, a requeued SLURM job) would lose the metrics logged before
the interruption. :class:`ResumableCSVLogger` appends to the file instead, and ``train.py`` drops
the rows that a resumed run logs again (those logged after the checkpoint it resumes from).

:func:`run_id` names a run directory for loggers that keep runs by id (W&B), so that every start
of a run continues one logger run and no two runs share one.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Callable
from pathlib import Path

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment
from lightning.pytorch.utilities import rank_zero_only

__all__ = ["ResumableCSVLogger", "run_id"]


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
    def drop_rows_from(self, step: int) -> None:
        """Removes the rows logged at ``step`` or later: called when a run resumes from a
        checkpoint saved after ``step`` optimizer steps, whose continuation logs them again (a
        run killed after its last checkpoint had logged them once already)."""
        experiment = self.experiment
        if self._fs.isfile(experiment.metrics_file_path):
            experiment.rewrite_rows(lambda row: not row.get("step", "").isdigit() or int(row["step"]) < step)


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
