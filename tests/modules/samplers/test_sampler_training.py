"""Short real training runs of DiffusionSampler through Lightning: the metrics must move."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch

from callbacks import LocalSearchReplay
from datamodules.samplers import GMM25, EnergyDataModule, Funnel
from modules.samplers import DiffusionSampler, SamplerNets

torch.set_num_threads(1)


def fit(
    datamodule: EnergyDataModule, loss: str, steps: int, callbacks: list | None = None, **kwargs
) -> tuple[DiffusionSampler, dict[str, float], dict[str, float]]:
    """Trains for ``steps`` optimizer steps; returns the module and its metrics before and after."""
    L.seed_everything(0)
    net_kwargs = kwargs.pop("net_kwargs", {})
    net = SamplerNets(datamodule.dim, hidden_dim=kwargs.pop("hidden_dim", 64), **net_kwargs)
    module = DiffusionSampler(net, partial(torch.optim.Adam, lr=1e-3), loss=loss, **kwargs)
    datamodule.setup()
    batch = next(iter(datamodule.val_dataloader()))
    module.energy = datamodule.energy
    before = {k: v.item() for k, v in module.evaluate(batch).items()}
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, callbacks=callbacks or [],
    )
    trainer.fit(module, datamodule=datamodule)
    after = {k: v.item() for k, v in module.evaluate(batch).items()}
    return module, before, after


@pytest.mark.parametrize("loss", ["tb", "pis", "subtb"])
def test_short_run_improves_the_elbo_on_the_funnel(loss: str) -> None:
    datamodule = EnergyDataModule(Funnel(), batch_size=64, steps_per_epoch=60, eval_batch_size=512)
    _, before, after = fit(
        datamodule, loss, steps=60, num_steps=10, sigma2=1.0, net_kwargs={"conditional_flow": loss == "subtb"}
    )
    assert after["delta_log_z"] < 0.8 * before["delta_log_z"], (before, after)


@pytest.mark.slow
def test_local_search_beats_plain_tb_on_gmm25() -> None:
    """Sendera et al. (2024), Table 1 ordering at a CPU budget: 600 steps of batch 300, T = 100,
    sigma2 = 5 on 25GMM. TB + exploration + local search reaches more modes with a smaller
    log-partition error than plain TB."""
    results = {}
    for name, kwargs, callbacks in [
        ("tb", {}, []),
        ("tb_expl_ls", {"exploration_std": 0.1}, [LocalSearchReplay(capacity=600_000, seed=0)]),
    ]:
        datamodule = EnergyDataModule(GMM25(), batch_size=300, steps_per_epoch=100, eval_batch_size=2000)
        _, _, results[name] = fit(
            datamodule, "tb", steps=600, callbacks=callbacks, hidden_dim=256, num_steps=100, sigma2=5.0, **kwargs
        )
    assert results["tb_expl_ls"]["modes_hit"] > results["tb"]["modes_hit"], results
    assert results["tb_expl_ls"]["delta_log_z_rw"] < results["tb"]["delta_log_z_rw"], results
