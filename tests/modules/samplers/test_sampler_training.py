"""Short real training runs of DiffusionSampler through Lightning: the metrics must move."""

from __future__ import annotations

import math
from functools import partial

import lightning as L
import pytest
import torch
from torch import Tensor

from tenfold.callbacks import LocalSearchReplay
from tenfold.datamodules.samplers import GMM25, Energy, EnergyDataModule, Funnel
from tenfold.modules.samplers import DiffusionSampler, SamplerNets

torch.set_num_threads(1)


class ScaledGaussian(Energy):
    """``R(x) = Z N(x; 0, variance I)``: a normalized Gaussian times a known constant ``Z``.

    With ``variance`` equal to the Brownian reference's ``sigma2``, the untrained sampler (its
    drift network starts at 0) already samples ``N(0, sigma2 I)``, so every trajectory's log
    weight ``log R(x_T) + log P_B(tau | x_T) - log P_F(tau)`` is exactly ``log Z``: a short run
    only has to learn the normalizing constant (``log Z`` for TB, the start flow for SubTB/DB).
    """

    def __init__(self, dim: int, variance: float, log_Z: float) -> None:
        super().__init__(dim=dim, log_Z=log_Z, plot_bounds=(-5.0, 5.0), can_sample=True)
        self.variance = variance

    def _log_reward(self, x: Tensor) -> Tensor:
        log_normal = -0.5 * (x.pow(2).sum(dim=1) / self.variance + self.dim * math.log(2 * math.pi * self.variance))
        return self.log_Z + log_normal

    def _sample(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        return math.sqrt(self.variance) * torch.randn(n, self.dim, generator=generator, device=device)


def _trainer(steps: int, callbacks: list | None = None) -> L.Trainer:
    """A CPU trainer of ``steps`` optimizer steps without validation, logging or checkpoints."""
    return L.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, callbacks=callbacks or [],
    )


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
    _trainer(steps, callbacks).fit(module, datamodule=datamodule)
    after = {k: v.item() for k, v in module.evaluate(batch).items()}
    return module, before, after


@pytest.mark.parametrize("loss", ["tb", "pis", "subtb"])
def test_short_run_improves_the_elbo_on_the_funnel(loss: str) -> None:
    datamodule = EnergyDataModule(Funnel(), batch_size=64, steps_per_epoch=60, eval_batch_size=512)
    _, before, after = fit(
        datamodule, loss, steps=60, num_steps=10, sigma2=1.0, net_kwargs={"conditional_flow": loss == "subtb"}
    )
    assert after["delta_log_z"] < 0.8 * before["delta_log_z"], (before, after)


def _loss_on_fixed_trajectories(module: DiffusionSampler, batch_size: int = 256) -> float:
    """The module's training objective on forward trajectories drawn with a fixed seed."""
    with torch.no_grad():
        x0 = torch.zeros(batch_size, module.net.dim)
        return module.objective(module.simulate(x0, generator=torch.Generator().manual_seed(1))).item()


def _log_z_estimate(module: DiffusionSampler) -> float:
    """The module's learned log Z: the ``log Z`` parameter for TB, the start flow
    ``log F(x_0 = 0, t = 0)`` for DB and SubTB (which play log Z, see ``losses.detailed_balance``)."""
    if module.net.flow is None:
        return module.net.log_z.item()
    with torch.no_grad():
        return module.net.log_flow(torch.zeros(1, module.net.dim), torch.zeros(1)).item()


@pytest.mark.parametrize(("loss", "steps", "flow_lr"), [("tb", 100, 0.1), ("subtb", 100, 0.03), ("db", 200, 0.01)])
def test_short_run_learns_a_nonzero_log_z(loss: str, steps: int, flow_lr: float) -> None:
    """On a target with log Z = 3 (Funnel and GMM25 have log Z = 0 = ``log_z_init``), the learned
    log Z (TB) or start flow (SubTB, DB) must reach 3, which needs ``log Z`` and the flow network
    in the optimizer, and the loss must fall. The untrained policy is exact (see
    :class:`ScaledGaussian`), so the TB loss starts at (0 - 3)^2 = 9. The flow losses train at a
    lower ``flow_lr`` than TB's 0.1, at which their losses stall (SubTB) or diverge (DB) in runs
    this short; DB passes the terminal log-reward back one step at a time and needs more
    steps than SubTB."""
    log_z = 3.0
    datamodule = EnergyDataModule(ScaledGaussian(2, variance=1.0, log_Z=log_z), batch_size=64, steps_per_epoch=steps)
    L.seed_everything(0)
    module = DiffusionSampler(
        SamplerNets(2, hidden_dim=64, conditional_flow=loss != "tb"),
        partial(torch.optim.Adam, lr=1e-3), loss=loss, num_steps=10, sigma2=1.0, flow_lr=flow_lr,
    )
    module.energy = datamodule.energy
    estimate_before, loss_before = _log_z_estimate(module), _loss_on_fixed_trajectories(module)
    flow = module.net.flow
    flow_before = [p.detach().clone() for p in flow.parameters()] if flow is not None else []
    _trainer(steps).fit(module, datamodule=datamodule)
    estimate_after, loss_after = _log_z_estimate(module), _loss_on_fixed_trajectories(module)
    assert abs(estimate_before - log_z) > 2.5, estimate_before
    assert abs(estimate_after - log_z) < 0.1, (estimate_before, estimate_after)
    assert loss_after < 0.02 * loss_before, (loss_before, loss_after)
    if flow is not None:
        assert all(not torch.equal(p, q) for p, q in zip(flow_before, flow.parameters())), "a flow layer did not train"


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
