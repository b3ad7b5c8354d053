"""The optimizer set-up that the LightningModules of every family share: the optimizer and the
learning-rate scheduler come from the config as factories (Hydra ``_partial_``), so that a run
changes them with an override and a module built in Python takes ``functools.partial``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import Metric

__all__ = ["OptimizerFactory", "SchedulerFactory", "ConfiguredOptimizerModule"]

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., torch.optim.lr_scheduler.LRScheduler]


class ConfiguredOptimizerModule(L.LightningModule):
    """A LightningModule whose optimizer and learning-rate scheduler are factories from the config.

    The factory receives :meth:`optimizer_parameters` (all parameters unless a subclass groups
    them). It also resets its ``torchmetrics`` metrics when a fit starts: a ``validate``/``test`` call
    before ``fit`` leaves metric states created under inference mode, which the fit loop's
    no-grad validation may not update in place.

    Args:
        optimizer: ``optimizer(params=...) -> Optimizer`` (a Hydra ``_partial_`` such as
            ``{_target_: torch.optim.Adam, _partial_: true, lr: 1e-4}``); ``None`` for a module
            that is only evaluated (e.g. ``load_from_checkpoint(path, net=..., optimizer=None)``).
        scheduler: ``scheduler(optimizer=...) -> LRScheduler`` or ``None``; stepped every
            optimizer step (``scheduler_interval="step"``) or every epoch (``"epoch"``).
        scheduler_monitor: the logged metric that a scheduler stepping on a value
            (``ReduceLROnPlateau``) reads, e.g. ``"val/loss"``; logged once per validation, so
            such a scheduler goes with ``scheduler_interval="epoch"``. None for other schedulers.
    """

    def __init__(
        self,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: str = "step",
        scheduler_monitor: str | None = None,
    ) -> None:
        super().__init__()
        if scheduler_interval not in ("step", "epoch"):
            raise ValueError(f"scheduler_interval must be 'step' or 'epoch', got {scheduler_interval!r}")
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.scheduler_interval = scheduler_interval
        self.scheduler_monitor = scheduler_monitor

    def on_fit_start(self) -> None:
        for metric in self.modules():
            if isinstance(metric, Metric):
                metric.reset()

    def optimizer_parameters(self) -> Iterable[nn.Parameter] | list[dict[str, Any]]:
        """What the optimizer factory receives as ``params``: all parameters; a subclass returns
        parameter groups (e.g. a learning rate of their own) by overriding it."""
        return self.parameters()

    def configure_optimizers(self) -> Any:
        if self.optimizer_factory is None:
            raise ValueError(
                f"{type(self).__name__} was built without an optimizer: pass optimizer=... (e.g. "
                "functools.partial(torch.optim.Adam, lr=1e-4)) to train it"
            )
        optimizer = self.optimizer_factory(params=self.optimizer_parameters())
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer=optimizer)
        scheduler_config = {"scheduler": scheduler, "interval": self.scheduler_interval}
        if self.scheduler_monitor is not None:
            scheduler_config["monitor"] = self.scheduler_monitor
        elif isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            raise ValueError(
                f"{type(self).__name__}: ReduceLROnPlateau steps on a logged metric: pass "
                "scheduler_monitor='val/loss' (or another metric the module logs) and "
                "scheduler_interval='epoch' (train.py: +model.scheduler_monitor=val/loss "
                "+model.scheduler_interval=epoch, without + where the model config has the key)"
            )
        return {"optimizer": optimizer, "lr_scheduler": scheduler_config}
