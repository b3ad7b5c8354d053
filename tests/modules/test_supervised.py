"""SupervisedModule and ConfiguredOptimizerModule, shared by the families: metrics computed by hand,
argument errors, the optimizer and scheduler factories and the parameter-group hook."""

from __future__ import annotations

import functools
import math
from typing import Any

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from tenfold.modules.base import ConfiguredOptimizerModule
from tenfold.modules.supervised import SupervisedModule


class FixedLogits(nn.Module):
    """Returns ``batch["logits"]`` (plus a zero-weighted parameter, so there is something to train)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(()))

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return batch["logits"] + 0 * self.weight


def test_supervised_module_loss_and_group_accuracy_by_hand() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    target = torch.tensor([0, 0, 1, 1, 0])  # correct: yes, no, no, yes, yes
    group = torch.tensor([0, 0, 1, 1, 1])
    batches = [
        {"logits": logits[:3], "target": target[:3], "relational": group[:3].bool()},
        {"logits": logits[3:], "target": target[3:], "relational": group[3:].bool()},
    ]
    module = SupervisedModule(
        FixedLogits(), functools.partial(torch.optim.SGD, lr=0.1), group_key="relational", group_names=["flat", "relational"]
    )
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (metrics,) = trainer.validate(module, DataLoader(batches, batch_size=None))
    assert metrics["val/acc"] == pytest.approx(3 / 5)
    assert metrics["val/acc_flat"] == pytest.approx(1 / 2)
    assert metrics["val/acc_relational"] == pytest.approx(2 / 3)
    expected_loss = (F.cross_entropy(logits[:3], target[:3]) * 3 + F.cross_entropy(logits[3:], target[3:]) * 2) / 5
    assert metrics["val/loss"] == pytest.approx(expected_loss.item(), rel=1e-5)
    # a group without examples in the split is NaN, not 0
    three = SupervisedModule(FixedLogits(), group_key="relational", group_names=["flat", "relational", "none"])
    batches = [{**batch, "relational": batch["relational"].long()} for batch in batches]
    (metrics,) = trainer.validate(three, DataLoader(batches, batch_size=None))
    assert metrics["val/acc_relational"] == pytest.approx(2 / 3)
    assert math.isnan(metrics["val/acc_none"])


def test_supervised_module_l1_metric_and_errors() -> None:
    module = SupervisedModule(FixedLogits(), functools.partial(torch.optim.SGD, lr=0.1), loss="l1")
    batch = {"logits": torch.tensor([[1.0, 2.0], [0.0, 0.0]]), "target": torch.tensor([[1.5, 2.0], [1.0, -1.0]])}
    loss, scores = module.loss_and_scores(batch)
    assert loss.item() == pytest.approx((0.5 + 0 + 1 + 1) / 4)
    torch.testing.assert_close(scores, torch.tensor([0.25, 1.0]))
    with pytest.raises(ValueError, match="differ in shape"):
        module.loss_and_scores({"logits": torch.zeros(2, 3), "target": torch.zeros(2)})
    # mse trains on squared errors; the per-example metric stays the L1 error
    mse = SupervisedModule(FixedLogits(), functools.partial(torch.optim.SGD, lr=0.1), loss="mse")
    loss, scores = mse.loss_and_scores(batch)
    assert loss.item() == pytest.approx((0.25 + 0 + 1 + 1) / 4)
    torch.testing.assert_close(scores, torch.tensor([0.25, 1.0]))
    # one value per example: predictions and targets [B]
    regression = SupervisedModule(FixedLogits(), functools.partial(torch.optim.SGD, lr=0.1), loss="l1")
    loss, scores = regression.loss_and_scores({"logits": torch.tensor([1.0, 0.0, 2.0]), "target": torch.tensor([0.5, 0.0, -1.0])})
    assert loss.item() == pytest.approx((0.5 + 0 + 3) / 3)
    torch.testing.assert_close(scores, torch.tensor([0.5, 0.0, 3.0]))
    with pytest.raises(ValueError, match="group_key and group_names go together"):
        SupervisedModule(FixedLogits(), functools.partial(torch.optim.SGD, lr=0.1), group_key="task")
    with pytest.raises(ValueError, match="loss must be"):
        SupervisedModule(FixedLogits(), functools.partial(torch.optim.SGD, lr=0.1), loss="hinge")


def test_group_metrics_under_ddp_when_each_rank_sees_one_group() -> None:
    """Two processes (gloo): the distributed sampler gives rank 0 the batches of group 0 and rank
    1 those of group 1. Every rank logs every group, so the ranks synchronize the same metric at
    a time; before, each logged only its own group and the two were averaged into each other."""
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    batches = [  # predictions [0, 1]; rank 0 gets items 0, 2 (group 0: 1 of 4 correct), rank 1 items 1, 3 (4 of 4)
        {"logits": logits, "target": torch.tensor([0, 0]), "group": torch.tensor([0, 0])},
        {"logits": logits, "target": torch.tensor([0, 1]), "group": torch.tensor([1, 1])},
        {"logits": logits, "target": torch.tensor([1, 0]), "group": torch.tensor([0, 0])},
        {"logits": logits, "target": torch.tensor([0, 1]), "group": torch.tensor([1, 1])},
    ]
    module = SupervisedModule(FixedLogits(), group_key="group", group_names=["a", "b"])
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False, enable_progress_bar=False,
        enable_model_summary=False,
    )
    (metrics,) = trainer.validate(module, DataLoader(batches, batch_size=None))
    assert metrics["val/acc_a"] == pytest.approx(1 / 4)
    assert metrics["val/acc_b"] == pytest.approx(4 / 4)
    assert metrics["val/acc"] == pytest.approx(5 / 8)


@pytest.mark.timeout(180)
def test_group_metrics_of_a_ddp_training_epoch_with_a_progress_bar() -> None:
    """Two processes (gloo) train one epoch with rank 0's progress bar on. The bar reduces the
    epoch's train/loss over the ranks in its on_train_epoch_end, which runs on rank 0 only and
    before the module's hook: a collective of the module's own there (the group metrics were
    computed in on_train_epoch_end) met rank 0's reduction and hung both processes."""
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    batches = [  # as above: rank 0 trains on group 0 (1 of 4 correct), rank 1 on group 1 (4 of 4)
        {"logits": logits, "target": torch.tensor([0, 0]), "group": torch.tensor([0, 0])},
        {"logits": logits, "target": torch.tensor([0, 1]), "group": torch.tensor([1, 1])},
        {"logits": logits, "target": torch.tensor([1, 0]), "group": torch.tensor([0, 0])},
        {"logits": logits, "target": torch.tensor([0, 1]), "group": torch.tensor([1, 1])},
    ]
    module = SupervisedModule(
        FixedLogits(), functools.partial(torch.optim.SGD, lr=0.1), group_key="group", group_names=["a", "b"]
    )
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False, enable_checkpointing=False,
        enable_model_summary=False, max_epochs=1, limit_val_batches=0,
    )
    trainer.fit(module, DataLoader(batches, batch_size=None))
    assert trainer.callback_metrics["train/acc_a"].item() == pytest.approx(1 / 4)
    assert trainer.callback_metrics["train/acc_b"].item() == pytest.approx(4 / 4)
    assert trainer.callback_metrics["train/acc"].item() == pytest.approx(5 / 8)


class TwoLayers(ConfiguredOptimizerModule):
    """Two linear layers; the second trains at a tenth of the first's learning rate when grouped."""

    def __init__(self, grouped: bool, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.first = nn.Linear(2, 2)
        self.second = nn.Linear(2, 2)
        self.grouped = grouped

    def optimizer_parameters(self) -> Any:
        if not self.grouped:
            return super().optimizer_parameters()
        return [{"params": self.first.parameters()}, {"params": self.second.parameters(), "lr": 0.01}]


def test_configured_optimizer_takes_all_parameters_or_the_groups_of_the_hook() -> None:
    plain = TwoLayers(grouped=False, optimizer=functools.partial(torch.optim.SGD, lr=0.1)).configure_optimizers()
    assert [group["lr"] for group in plain.param_groups] == [0.1]
    assert len(plain.param_groups[0]["params"]) == 4
    grouped = TwoLayers(grouped=True, optimizer=functools.partial(torch.optim.SGD, lr=0.1)).configure_optimizers()
    assert [group["lr"] for group in grouped.param_groups] == [0.1, 0.01]
    assert [len(group["params"]) for group in grouped.param_groups] == [2, 2]


def test_configured_scheduler_steps_at_the_interval_given() -> None:
    module = TwoLayers(
        grouped=False,
        optimizer=functools.partial(torch.optim.SGD, lr=0.1),
        scheduler=functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1),
        scheduler_interval="epoch",
    )
    config = module.configure_optimizers()
    assert isinstance(config["lr_scheduler"]["scheduler"], torch.optim.lr_scheduler.StepLR)
    assert config["lr_scheduler"]["scheduler"].optimizer is config["optimizer"]
    assert config["lr_scheduler"]["interval"] == "epoch"
    plateau = TwoLayers(
        grouped=False,
        optimizer=functools.partial(torch.optim.SGD, lr=0.1),
        scheduler=torch.optim.lr_scheduler.ReduceLROnPlateau,
        scheduler_interval="epoch",
        scheduler_monitor="val/loss",
    ).configure_optimizers()
    assert plateau["lr_scheduler"]["monitor"] == "val/loss"
    with pytest.raises(ValueError, match=r"TwoLayers: ReduceLROnPlateau steps on a logged metric: pass scheduler_monitor="):
        TwoLayers(
            grouped=False, optimizer=functools.partial(torch.optim.SGD, lr=0.1),
            scheduler=torch.optim.lr_scheduler.ReduceLROnPlateau,
        ).configure_optimizers()
    with pytest.raises(ValueError, match="scheduler_interval must be 'step' or 'epoch'"):
        TwoLayers(grouped=False, scheduler_interval="batch")
    with pytest.raises(ValueError, match="TwoLayers was built without an optimizer: pass optimizer="):
        TwoLayers(grouped=False).configure_optimizers()


def test_pairs_of_inputs_and_targets_train_a_plain_network() -> None:
    """(inputs, target) batches, as a torchvision or TensorDataset gives them: the net reads the
    inputs alone, so a plain images -> logits network needs no adapter."""
    torch.manual_seed(0)
    net = nn.Linear(3, 2)
    inputs = torch.randn(10, 3)
    target = (inputs[:, 0] > 0).long()
    loader = DataLoader(TensorDataset(inputs, target), batch_size=4)  # batches are [x, y] lists
    module = SupervisedModule(net, functools.partial(torch.optim.SGD, lr=0.5))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (before,) = trainer.validate(module, loader)
    with torch.no_grad():
        logits = net(inputs)
    assert before["val/acc"] == pytest.approx((logits.argmax(-1) == target).float().mean().item())
    assert before["val/loss"] == pytest.approx(F.cross_entropy(logits, target).item(), rel=1e-5)
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=20, logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(module, loader)
    (after,) = trainer.validate(module, loader)
    assert after["val/loss"] < before["val/loss"] and after["val/acc"] >= 0.9
    # predictions of a pair (its target unused) or of the inputs alone
    torch.testing.assert_close(module.predict_step((inputs, target), 0), net(inputs))
    torch.testing.assert_close(module.predict_step(inputs, 0), net(inputs))
    (predictions,) = trainer.predict(module, DataLoader(TensorDataset(inputs), batch_size=10))  # [inputs] lists
    torch.testing.assert_close(predictions, net(inputs))


def test_a_plateau_scheduler_steps_on_the_monitored_validation_loss() -> None:
    """ReduceLROnPlateau through the factories (patience 0, factor 0.5): the validation loss of
    fixed logits never improves after the first epoch, so each later epoch halves the rate."""
    batches = [{"logits": torch.tensor([[1.0, 0.0]]), "target": torch.tensor([1])}] * 2
    module = SupervisedModule(
        FixedLogits(),
        functools.partial(torch.optim.SGD, lr=1.0),
        functools.partial(torch.optim.lr_scheduler.ReduceLROnPlateau, patience=0, factor=0.5),
        scheduler_interval="epoch",
        scheduler_monitor="val/loss",
    )
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=3, logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False,
    )
    trainer.fit(module, DataLoader(batches, batch_size=None), DataLoader(batches, batch_size=None))
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(0.25)


def test_batches_other_than_dicts_and_pairs_are_refused() -> None:
    module = SupervisedModule(nn.Linear(3, 2))
    with pytest.raises(TypeError, match=r"a dict batch .* or an \(inputs, target\) pair; got tuple of 3 items"):
        module.loss_and_scores((torch.zeros(2, 3), torch.zeros(2), torch.zeros(2)))
    with pytest.raises(TypeError, match="got Tensor"):
        module.loss_and_scores(torch.zeros(2, 3))
    grouped = SupervisedModule(nn.Linear(3, 2), group_key="task", group_names=["a", "b"])
    with pytest.raises(ValueError, match="group_key='task' reads each example's group from a dict batch"):
        grouped.loss_and_scores((torch.zeros(2, 3), torch.zeros(2, dtype=torch.long)))
