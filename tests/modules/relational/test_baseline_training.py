"""Short real runs of the baselines through their experiment configs: each learns the ESBN
same/different task on the training glyphs (m = 0) from near chance to at least 90 % test accuracy;
and the official GCN, whose context norm zeroes the sum that every node of its complete graph
aggregates, stays at chance because its logits cannot depend on the input."""

from __future__ import annotations

from pathlib import Path

import hydra
import lightning as L
import pytest
import torch

from tenfold.modules.relational import GCNNet

BATCH_SIZE = 32


def train_and_test(cfg, steps: int, fit_and_test) -> tuple[float, float]:
    """Test accuracy before and after ``steps`` optimizer steps of ``cfg``'s model on its data."""
    L.seed_everything(0, verbose=False)
    data = hydra.utils.instantiate(cfg.data)
    module = hydra.utils.instantiate(cfg.model)
    (before,), (after,) = fit_and_test(module, data, steps)
    return before["test/acc"], after["test/acc"]


def same_diff_config(compose_cfg, model: str, steps: int, tmp_path: Path, *overrides: str):
    return compose_cfg(
        [
            f"experiment=relational/same_diff_{model}", "data.m_holdout=0", f"data.train_size={steps * BATCH_SIZE}",
            "data.val_size=64", "data.test_size=512", f"data.batch_size={BATCH_SIZE}", *overrides,
        ],
        tmp_path,
    )


@pytest.mark.parametrize(
    ("model", "steps"),
    [("esbn", 150), ("transformer", 150), ("lstm", 150), ("predinet", 250), ("rn", 150), ("ntm", 150), ("mnm", 150)],
)
def test_baseline_learns_same_different(model: str, steps: int, compose_cfg, fit_and_test, tmp_path: Path) -> None:
    before, after = train_and_test(same_diff_config(compose_cfg, model, steps, tmp_path), steps, fit_and_test)
    assert after >= 0.9, (model, before, after)
    assert after >= before + 0.15, (model, before, after)


def test_official_gcn_ignores_its_input_under_context_norm(compose_cfg, fit_and_test, tmp_path: Path) -> None:
    cfg = same_diff_config(compose_cfg, "gcn", 100, tmp_path)
    net = hydra.utils.instantiate(cfg.model).net.eval()
    assert isinstance(net, GCNNet) and net.context_norm is not None
    torch.manual_seed(0)
    logits = net({"images": torch.rand(8, 2, 1, 32, 32)})
    assert torch.allclose(logits, logits[:1].expand_as(logits), atol=1e-4)
    assert torch.allclose(logits, net({"images": torch.rand(8, 2, 1, 32, 32)}), atol=1e-4)
    net.context_norm = None
    without_norm = net({"images": torch.rand(8, 2, 1, 32, 32)})
    assert (without_norm - without_norm[:1]).abs().max() > 1e-3
    before, after = train_and_test(cfg, 100, fit_and_test)
    # one answer for every trial, before and after training: the share of one class of the test
    # trials (training may move the constant logits to the other class)
    assert before == pytest.approx(0.5, abs=0.06)
    assert after in (before, pytest.approx(1.0 - before, abs=1e-6))
