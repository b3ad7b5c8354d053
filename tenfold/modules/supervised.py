"""One LightningModule for supervised tasks of any family (the Compositional Attention tasks, the
relational tasks, ...): any net that maps a batch dict to predictions, trained with cross-entropy
(classification) or an L1 / squared error (regression), with metrics per split and, optionally,
per group of examples."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

from tenfold.modules.base import ConfiguredOptimizerModule, OptimizerFactory, SchedulerFactory

__all__ = ["SupervisedModule"]

Loss = Literal["cross_entropy", "l1", "mse"]
SPLITS = ("train", "val", "test")


Batch = dict[str, Tensor] | tuple[Any, Tensor] | list[Any]
"""A dict (the net reads it whole) or an ``(inputs, target)`` pair (the net reads the inputs)."""


class SupervisedModule(ConfiguredOptimizerModule):
    """Trains ``net(batch) -> predictions`` against ``batch[target_key]``, or, for batches that
    are ``(inputs, target)`` pairs (what a torchvision dataset gives, in a default DataLoader),
    ``net(inputs)`` against ``target``: any plain ``images -> logits`` network trains as it is.

    Args:
        net: ``net(batch)`` (dict batches) or ``net(inputs)`` (pairs) returns logits ``[B, K]``
            (classification) or predictions shaped like the target (regression).
        optimizer, scheduler, scheduler_interval, scheduler_monitor: see
            :class:`ConfiguredOptimizerModule`.
        loss: ``"cross_entropy"`` (targets ``[B]`` class indices), ``"l1"`` or ``"mse"``.
        target_key: the key of the targets in dict batches.
        group_key: a batch key with a group index per example (``[B]``, long or bool), e.g.
            ``"task"`` for multitask classification or ``"relational"`` for Sort-of-CLEVR; the
            metric is then also logged per group (dict batches only).
        group_names: the names of the groups, in index order, for the metric names
            (``val/acc_<name>``); required with ``group_key``. A group absent from a whole split
            is logged there as NaN (no examples).

    Logged: ``<split>/loss``; classification ``<split>/acc``, regression ``<split>/l1`` (mean
    absolute error per target entry, whatever the loss); per group ``<split>/acc_<name>`` or
    ``<split>/l1_<name>``. Epoch metrics accumulate in torchmetrics and are synchronized across
    DDP ranks; Lightning's distributed sampler pads a split that the ranks do not divide evenly
    by repeating items, so test on one device for exact figures of such a split.
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: str = "step",
        loss: Loss = "cross_entropy",
        target_key: str = "target",
        group_key: str | None = None,
        group_names: Sequence[str] | None = None,
        scheduler_monitor: str | None = None,
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval, scheduler_monitor=scheduler_monitor)
        if loss not in ("cross_entropy", "l1", "mse"):
            raise ValueError(f"loss must be 'cross_entropy', 'l1' or 'mse', got {loss!r}")
        if (group_key is None) != (group_names is None):
            raise ValueError(
                "group_key and group_names go together: the batch key holding each example's group index "
                "and the names of the groups in index order"
            )
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.net = net
        self.loss_name = loss
        self.target_key = target_key
        self.group_key = group_key
        self.group_names = list(group_names) if group_names is not None else None
        self.metric_name = "acc" if loss == "cross_entropy" else "l1"
        # keyed "<split>_scores": nn.ModuleDict refuses keys that are Module attributes ("train")
        self.metrics = nn.ModuleDict({f"{split}_scores": MeanMetric() for split in SPLITS})
        self.group_metrics = nn.ModuleDict(
            {f"{split}_scores": nn.ModuleList(MeanMetric() for _ in self.group_names or []) for split in SPLITS}
        )

    def inputs_and_target(self, batch: Batch) -> tuple[Any, Tensor]:
        """What the net reads and the targets: ``(batch, batch[target_key])`` for a dict,
        ``(inputs, target)`` for a pair.

        Raises:
            TypeError: any other batch.
            ValueError: a pair while ``group_key`` is set (the groups come from a dict key).
        """
        if isinstance(batch, dict):
            return batch, batch[self.target_key]
        if isinstance(batch, (tuple, list)) and len(batch) == 2:
            if self.group_key is not None:
                raise ValueError(
                    f"group_key={self.group_key!r} reads each example's group from a dict batch; the batch is "
                    "an (inputs, target) pair: give dict batches, or set group_key=None"
                )
            return batch[0], batch[1]
        raise TypeError(
            f"SupervisedModule takes a dict batch (the net reads it whole, the targets under {self.target_key!r}) "
            f"or an (inputs, target) pair; got {type(batch).__name__}"
            + (f" of {len(batch)} items" if isinstance(batch, (tuple, list)) else "")
        )

    def forward(self, batch: Batch) -> Tensor:
        return self.net(self.inputs_and_target(batch)[0])

    def loss_and_scores(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """The mean loss and one score per example (correct 0/1, or mean absolute error) of a
        batch; subclasses extend it (e.g. add a net's auxiliary loss) and every step uses it."""
        inputs, target = self.inputs_and_target(batch)
        predictions = self.net(inputs)
        if self.loss_name == "cross_entropy":
            if predictions.dim() != 2 or target.shape != predictions.shape[:1]:
                raise ValueError(
                    f"cross_entropy needs logits [B, K] and class targets [B]; got {tuple(predictions.shape)} "
                    f"and {tuple(target.shape)}"
                )
            loss = F.cross_entropy(predictions.float(), target)
            return loss, (predictions.argmax(dim=-1) == target).float()
        if predictions.shape != target.shape:
            raise ValueError(f"predictions {tuple(predictions.shape)} and targets {tuple(target.shape)} differ in shape")
        error = predictions.float() - target.float()
        loss = error.abs().mean() if self.loss_name == "l1" else error.square().mean()
        return loss, error.abs().reshape(len(error), -1).mean(dim=1)

    def _step(self, batch: Batch, split: str) -> Tensor:
        loss, scores = self.loss_and_scores(batch)
        batch_size = scores.shape[0]
        on_step = split == "train"
        # sync_dist: the epoch mean over every rank's batches (one scalar all-reduce per step in training)
        self.log(f"{split}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, sync_dist=True, batch_size=batch_size)
        metric = self.metrics[f"{split}_scores"]
        metric.update(scores)
        self.log(f"{split}/{self.metric_name}", metric, on_step=False, on_epoch=True, prog_bar=split != "train")
        if self.group_key is not None:
            # every group at every step, also when this batch has none of it: Lightning computes each
            # metric (summed over the DDP ranks) at the epoch's end, in the same order on every rank.
            # Computed in an epoch-end hook of this module, they hung DDP training: rank 0's progress
            # bar reduces the epoch's loss over the ranks before the module's on_train_epoch_end runs.
            groups = batch[self.group_key].long()
            for index, name in enumerate(self.group_names):
                group_metric = self.group_metrics[f"{split}_scores"][index]
                group_metric.update(scores[groups == index])
                self.log(f"{split}/{self.metric_name}_{name}", group_metric, on_step=False, on_epoch=True)
        return loss

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._step(batch, "test")

    @torch.no_grad()
    def predict_step(self, batch: Batch | Tensor, batch_idx: int) -> Tensor:
        """Predictions of a batch: a dict, a pair (its targets unused) or the inputs alone (a tensor,
        or the one-tensor list that a ``TensorDataset(inputs)`` loader gives)."""
        if isinstance(batch, (tuple, list)) and len(batch) == 1:
            batch = batch[0]
        return self.net(batch) if isinstance(batch, Tensor) else self(batch)

    def attention_maps(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The net's ``attention_maps(batch)`` (the protocol of :class:`tenfold.callbacks.AttentionMaps`),
        or nothing when the net has none."""
        if not hasattr(self.net, "attention_maps"):
            return {}
        batch = {key: value.to(self.device) if isinstance(value, Tensor) else value for key, value in batch.items()}
        return self.net.attention_maps(batch)
