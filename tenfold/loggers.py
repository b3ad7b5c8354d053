"""A CSV logger that survives resuming.

Lightning's ``CSVLogger`` deletes an existing ``metrics.csv`` when it starts, so a run resumed in
its own directory (``ckpt_path=last``, a requeued SLURM job) would lose the metrics logged before
the interruption. :class:`ResumableCSVLogger` appends to the file instead.
"""

from __future__ import annotations

import csv

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter
from lightning.pytorch.loggers.logger import rank_zero_experiment

__all__ = ["ResumableCSVLogger"]


class _AppendingExperimentWriter(ExperimentWriter):
    """Keeps an existing ``metrics.csv`` and its columns; new rows are appended (new columns
    rewrite the header, keeping the old rows, as Lightning's writer already does)."""

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                header = next(csv.reader(file), [])
            self.metrics_keys = sorted(header)


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
