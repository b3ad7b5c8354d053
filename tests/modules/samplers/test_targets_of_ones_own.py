"""DiffusionSampler with targets written by its users: a wrong output shape, a reward without a
gradient and non-finite rewards stop with the energy's name and the fix; checkpoints keep no
target tensors, and loading leaves the given target as it is; per-loss flow learning rates,
samples without a target, and the errors of an incomplete ``Energy`` subclass."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path

import lightning as L
import pytest
import torch
from torch import Tensor

from tenfold.callbacks.local_search import mala
from tenfold.datamodules.samplers.datamodule import EnergyDataModule
from tenfold.datamodules.samplers.energies import Energy
from tenfold.modules.samplers import DiffusionSampler, SamplerNets
from tenfold.modules.samplers.losses import vargrad

torch.set_num_threads(1)


class ShiftedGaussian(Energy):
    """``N(mean, I)`` in 2-D with its mean as a persistent buffer (what a user's target may hold)."""

    def __init__(self, mean: float = 1.0) -> None:
        super().__init__(dim=2, log_Z=0.0, plot_bounds=(-5.0, 5.0), can_sample=False)
        self.register_buffer("mean", torch.full((2,), mean))

    def _log_reward(self, x: Tensor) -> Tensor:
        return -0.5 * ((x - self.mean) ** 2).sum(-1) - math.log(2 * math.pi)


class ColumnReward(ShiftedGaussian):
    """Returns ``[B, 1]`` (``keepdim=True``), which broadcasts ``[B] - [B, 1]`` into ``[B, B]``."""

    def _log_reward(self, x: Tensor) -> Tensor:
        return super()._log_reward(x).unsqueeze(-1)


class DetachedReward(ShiftedGaussian):
    """A reward computed outside autograd (as through numpy)."""

    def _log_reward(self, x: Tensor) -> Tensor:
        return super()._log_reward(x.detach())


class TruncatedReward(ShiftedGaussian):
    """``-inf`` outside ``x_1 > -1``: a support that the sampler's first steps leave."""

    def _log_reward(self, x: Tensor) -> Tensor:
        return super()._log_reward(x).masked_fill(x[:, 0] <= -1.0, -torch.inf)


def sampler(energy: Energy | None, loss: str = "tb", **kwargs) -> DiffusionSampler:
    net = SamplerNets(2, hidden_dim=16, conditional_flow=loss in ("db", "subtb", "fl_subtb"), **kwargs.pop("net_kwargs", {}))
    return DiffusionSampler(
        net, partial(torch.optim.Adam, lr=1e-3), energy=energy, loss=loss, num_steps=5, rng_seed=0, **kwargs
    )


def fit(module: DiffusionSampler, energy: Energy, steps: int, tmp_path: Path | None = None) -> L.Trainer:
    trainer = L.Trainer(
        accelerator="cpu", max_steps=steps, logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, limit_val_batches=0, default_root_dir=tmp_path,
    )
    trainer.fit(module, datamodule=EnergyDataModule(energy, batch_size=16, steps_per_epoch=steps, eval_batch_size=16))
    return trainer


def test_a_reward_of_the_wrong_shape_names_the_energy() -> None:
    with pytest.raises(ValueError, match=r"ColumnReward._log_reward returned shape \(4, 1\) for x of shape \(4, 2\)"):
        ColumnReward().log_reward(torch.zeros(4, 2))

    class DuckColumn(torch.nn.Module):  # not an Energy: the sampler checks what it returns
        dim, log_Z, modes, can_sample = 2, None, None, False

        def log_reward(self, x: Tensor) -> Tensor:
            return -x.square().sum(-1, keepdim=True)

    with pytest.raises(ValueError, match=r"DuckColumn.log_reward returned shape \(3, 1\) .* one value per point, \[B\]"):
        sampler(DuckColumn()).simulate(torch.zeros(3, 2))


@pytest.mark.parametrize(
    ("loss", "net_kwargs", "use"),
    [("pis", {}, "loss=pis"), ("dds", {}, "loss=dds"), ("tb", {"langevin": True}, "the Langevin parametrization")],
)
def test_a_reward_without_a_gradient_stops_where_its_gradient_is_needed(loss: str, net_kwargs: dict, use: str) -> None:
    # before, pis and dds trained without the reward's gradient (silently), Langevin failed in autograd
    module = sampler(DetachedReward(), loss, net_kwargs=net_kwargs)
    with pytest.raises(RuntimeError, match=rf"DetachedReward.log_reward is not differentiable .* and {use}"):
        module.training_step(torch.zeros(8, 2), 0)
    tb = sampler(DetachedReward(), "tb")  # TB needs no gradient of the reward
    tb.objective(tb.simulate(torch.zeros(8, 2))).backward()
    with pytest.raises(RuntimeError, match="MALA's proposals need its gradient"):
        mala(torch.zeros(4, 2), DetachedReward().log_reward, num_steps=1, step_size=0.1)


def test_non_finite_rewards_stop_the_training_with_their_count(tmp_path: Path) -> None:
    """Before, every parameter turned NaN and the fit ended as if it had succeeded. The check reads
    a step's values at the next step (no host synchronization within a step), so the error names
    the first step whose gradients were not finite."""
    energy = TruncatedReward()
    module = sampler(energy)
    with pytest.raises(FloatingPointError, match=r"training step 0 has gradient norm (nan|inf) .* of the 16 log-rewards") as error:
        fit(module, energy, steps=5, tmp_path=tmp_path)
    assert "TruncatedReward.log_reward must be finite everywhere" in str(error.value)
    finite = ShiftedGaussian()
    fit(sampler(finite), finite, steps=3, tmp_path=tmp_path)  # finite rewards: no error, also at the last step


def test_checkpoints_keep_no_target_and_loading_leaves_the_given_one(tmp_path: Path) -> None:
    energy = ShiftedGaussian(mean=1.0)
    module = sampler(energy)
    assert not [key for key in module.state_dict() if key.startswith("energy.")]
    trainer = fit(module, energy, steps=2, tmp_path=tmp_path)
    path = tmp_path / "sampler.ckpt"
    trainer.save_checkpoint(path)
    net = partial(SamplerNets, 2, hidden_dim=16)
    other = ShiftedGaussian(mean=3.0)
    loaded = DiffusionSampler.load_from_checkpoint(path, net=net(), energy=other, weights_only=True)
    assert loaded.energy is other and torch.equal(other.mean, torch.full((2,), 3.0))
    torch.testing.assert_close(loaded.net.state_dict(), module.net.state_dict())
    without_target = DiffusionSampler.load_from_checkpoint(path, net=net(), weights_only=True)
    assert without_target.energy is None
    # a checkpoint written before targets were left out holds them: they are ignored
    checkpoint = torch.load(path, weights_only=True)
    checkpoint["state_dict"]["energy.mean"] = torch.full((2,), 1.0)
    torch.save(checkpoint, path)
    loaded = DiffusionSampler.load_from_checkpoint(path, net=net(), energy=other, weights_only=True)
    assert torch.equal(loaded.energy.mean, torch.full((2,), 3.0))
    DiffusionSampler.load_from_checkpoint(path, net=net(), weights_only=True)


def test_flow_learning_rates_default_to_the_papers_per_loss() -> None:
    def flow_lr(loss: str, **kwargs) -> float:
        return sampler(ShiftedGaussian(), loss, **kwargs).configure_optimizers().param_groups[1]["lr"]

    assert flow_lr("tb") == 0.1
    groups = sampler(ShiftedGaussian(), "tb").configure_optimizers().param_groups
    assert [group["name"] for group in groups] == ["policy", "log_z"]
    assert flow_lr("db") == flow_lr("subtb") == flow_lr("fl_subtb") == 0.01
    assert flow_lr("db", flow_lr=0.05) == 0.05


def test_samples_need_a_target_only_with_the_langevin_parametrization() -> None:
    assert sampler(None).sample(4).shape == (4, 2)
    with pytest.raises(RuntimeError, match="no target: pass energy="):
        sampler(None, net_kwargs={"langevin": True}).sample(4)
    with pytest.raises(RuntimeError, match="no target: pass energy="):
        sampler(None).simulate(torch.zeros(4, 2))


def test_vargrad_needs_two_trajectories() -> None:
    with pytest.raises(ValueError, match="vargrad estimates log Z from the batch and needs 2 or more trajectories, got 1"):
        vargrad(torch.zeros(1, 3), torch.zeros(1, 3), torch.zeros(1))


def test_an_incomplete_energy_subclass_names_what_to_implement() -> None:
    class NoReward(Energy):
        def __init__(self) -> None:
            super().__init__(dim=2, log_Z=None, plot_bounds=(-1.0, 1.0), can_sample=True)

    with pytest.raises(NotImplementedError, match=r"NoReward must implement _log_reward\(x: \[B, D\]\) -> \[B\]"):
        NoReward().log_reward(torch.zeros(1, 2))
    with pytest.raises(NotImplementedError, match="NoReward has can_sample=True but no _sample"):
        NoReward().sample(3)
    with pytest.raises(TypeError, match="subclass it: implement _log_reward"):
        EnergyDataModule(torch.nn.Module())


class HuberTB(DiffusionSampler):
    """The class docstring's example of a loss of one's own: TB's residual under a Huber loss."""

    LOSSES = (*DiffusionSampler.LOSSES, "huber_tb")
    LOG_Z_LOSSES = (*DiffusionSampler.LOG_Z_LOSSES, "huber_tb")

    def objective(self, trajectories) -> Tensor:
        if self.loss_name != "huber_tb":
            return super().objective(trajectories)
        log_pf = trajectories.log_pf.sum(-1) + trajectories.log_start
        residual = self.net.log_z + log_pf - trajectories.log_pb.sum(-1) - trajectories.log_reward
        return torch.nn.functional.huber_loss(residual, torch.zeros_like(residual))


def test_a_loss_of_ones_own_trains_log_z_as_tb_does(tmp_path: Path) -> None:
    # The class lists decide what the loss trains: log Z gets its group, its gradient and its log.
    module = HuberTB(
        SamplerNets(2, hidden_dim=16), partial(torch.optim.Adam, lr=1e-3), energy=ShiftedGaussian(),
        loss="huber_tb", num_steps=5, rng_seed=0,
    )
    assert module.learns_log_z and module.accepts_backward_batches and module.net.log_z.requires_grad
    assert [group["name"] for group in module.configure_optimizers().param_groups] == ["policy", "log_z"]
    trajectories = module.simulate(torch.zeros(8, 2))
    residual = (
        module.net.log_z + trajectories.log_pf.sum(-1) + trajectories.log_start
        - trajectories.log_pb.sum(-1) - trajectories.log_reward
    )
    assert residual.abs().max() > 1, "the check below needs residuals in Huber's linear part"
    huber = module.objective(trajectories)
    torch.testing.assert_close(huber, torch.where(residual.abs() < 1, 0.5 * residual**2, residual.abs() - 0.5).mean())
    before = module.net.log_z.detach().clone()
    logged: dict[str, Tensor] = {}
    module.log = lambda name, value, **kwargs: logged.__setitem__(name, value)
    fit(module, ShiftedGaussian(), steps=3, tmp_path=tmp_path)
    assert not torch.equal(module.net.log_z.detach(), before)
    assert "train/log_z" in logged
    assert "log_z_learned" in module.evaluate({"x0": torch.zeros(8, 2)})


def test_a_loss_name_outside_the_lists_says_how_to_add_one() -> None:
    with pytest.raises(ValueError, match=r"unknown loss 'huber_tb'.*subclass DiffusionSampler, add its name to LOSSES"):
        sampler(ShiftedGaussian(), "huber_tb")

    class Listed(DiffusionSampler):
        LOSSES = (*DiffusionSampler.LOSSES, "huber_tb")

    module = Listed(SamplerNets(2, hidden_dim=16), energy=ShiftedGaussian(), loss="huber_tb", num_steps=5, rng_seed=0)
    assert not module.learns_log_z and not module.net.log_z.requires_grad
    with pytest.raises(NotImplementedError, match=r"loss=huber_tb is in Listed.LOSSES but objective\(\) does not compute it"):
        module.objective(module.simulate(torch.zeros(4, 2)))
