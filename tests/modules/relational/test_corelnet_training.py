"""Short real runs: CoRelNet learns same/different from chance to above 90 % test accuracy, on the
training glyphs (m = 0) and on 85 glyphs it never saw (m = 85), within 150 Adam steps."""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch

from datamodules.relational import RelationalTaskDataModule
from modules.attention import SupervisedModule
from modules.relational import CoRelNet


@pytest.mark.parametrize("m_holdout", [0, 85])
def test_corelnet_learns_same_different(m_holdout: int, fit_and_test) -> None:
    L.seed_everything(0)
    steps = 150
    data = RelationalTaskDataModule(
        "same_diff", m_holdout, train_size=steps * 32 if m_holdout == 0 else None, val_size=64, test_size=512, seed=0
    )
    net = CoRelNet(data.num_classes, data.sequence_length)
    module = SupervisedModule(net, functools.partial(torch.optim.Adam, lr=5e-4))
    (before,), (after,) = fit_and_test(module, data, steps)
    assert before["test/acc"] < 0.75
    assert after["test/acc"] > 0.9, after
