"""By-hand values of the diffusion-sampler objectives (tenfold/modules/samplers/losses.py).

At the exact solution every objective is zero whatever its weighting, so these tests evaluate each
loss on small random inputs (``[B, T]`` with ``T = 2`` or ``3``) and compare it with explicit Python
loops written from the definitions of Sendera et al. (2024, arXiv 2402.05098, Sec. 2-3) and the
conventions of the module's docstrings: batch mean, no 1/2 factor, ``log F(x_0)`` playing ``log Z``
and ``log F(x_T) = log R(x_T)``. FL-SubTB is :func:`subtrajectory_balance` applied to
forward-looking flows, so it has no function of its own to check here.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from tenfold.modules.samplers import losses

torch.set_num_threads(1)


def random_trajectories(batch: int, steps: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per-step ``log p_F``, ``log p_B`` (``[B, T]``) and flows ``log F(x_0..x_T)`` (``[B, T + 1]``)."""
    generator = torch.Generator().manual_seed(0)
    return (
        torch.randn(batch, steps, generator=generator),
        torch.randn(batch, steps, generator=generator),
        torch.randn(batch, steps + 1, generator=generator),
    )


def test_trajectory_balance_by_hand() -> None:
    log_pf, log_pb, log_flow = random_trajectories(4, 3)
    log_z, log_reward = 0.7, log_flow[:, -1]
    # mean over b of (log Z + sum_k log p_F - sum_k log p_B - log R)^2
    expected = sum(
        (log_z + sum(pf) - sum(pb) - r) ** 2
        for pf, pb, r in zip(log_pf.tolist(), log_pb.tolist(), log_reward.tolist())
    ) / 4
    loss = losses.trajectory_balance(log_pf.sum(-1), log_pb.sum(-1), log_reward, torch.tensor(log_z))
    torch.testing.assert_close(loss, torch.tensor(expected))


def test_vargrad_is_the_batch_variance_of_the_log_z_free_residual() -> None:
    log_pf, log_pb, log_flow = random_trajectories(5, 2)
    log_reward = log_flow[:, -1]
    # docstring: TB with log Z replaced by its batch estimate mean(log R + sum log p_B - sum log p_F),
    # i.e. the (biased, 1/B) batch variance of sum log p_F - sum log p_B - log R
    residuals = [sum(pf) - sum(pb) - r for pf, pb, r in zip(log_pf.tolist(), log_pb.tolist(), log_reward.tolist())]
    log_z_estimate = -sum(residuals) / 5
    expected = sum((log_z_estimate + residual) ** 2 for residual in residuals) / 5
    loss = losses.vargrad(log_pf.sum(-1), log_pb.sum(-1), log_reward)
    torch.testing.assert_close(loss, torch.tensor(expected))
    # nonzero here, so it is not trivially matched by a loss that vanishes
    assert expected > 0.1


@pytest.mark.parametrize("steps", [2, 3])
def test_detailed_balance_sums_squared_per_transition_residuals(steps: int) -> None:
    log_pf, log_pb, log_flow = random_trajectories(4, steps)
    # mean over b of sum_i (log F(x_i) + log p_F(x_{i+1}|x_i) - log F(x_{i+1}) - log p_B(x_i|x_{i+1}))^2
    expected = 0.0
    for pf, pb, flow in zip(log_pf.tolist(), log_pb.tolist(), log_flow.tolist()):
        expected += sum((flow[i] + pf[i] - flow[i + 1] - pb[i]) ** 2 for i in range(steps))
    loss = losses.detailed_balance(log_pf, log_pb, log_flow)
    torch.testing.assert_close(loss, torch.tensor(expected / 4))


def test_subtrajectory_weights_by_hand_for_three_steps() -> None:
    # lambda = 1/2, T = 3: gaps 1, 2, 3 occur 3, 2, 1 times, so the normalizer is
    # 3/2 + 2/4 + 1/8 = 17/8 and w_ij = 2^-(j-i) / (17/8) = 4/17, 2/17, 1/17 for j - i = 1, 2, 3
    expected = torch.tensor(
        [
            [0, 4, 2, 1],
            [0, 0, 4, 2],
            [0, 0, 0, 4],
            [0, 0, 0, 0],
        ],
        dtype=torch.float32,
    ) / 17
    torch.testing.assert_close(losses.subtrajectory_weights(3, 0.5), expected)
    # lambda = 2 favours long sub-trajectories: gap weights 2, 4, 8, normalizer 3*2 + 2*4 + 8 = 22
    assert losses.subtrajectory_weights(3, 2.0)[0, 3].item() == pytest.approx(8 / 22)
    assert losses.subtrajectory_weights(3, 2.0)[0, 1].item() == pytest.approx(2 / 22)
    with pytest.raises(ValueError, match="subtb_lambda"):
        losses.subtrajectory_weights(3, 0.0)


@pytest.mark.parametrize(("steps", "lam"), [(2, 0.5), (3, 0.5), (3, 2.0)])
def test_subtrajectory_balance_by_hand(steps: int, lam: float) -> None:
    log_pf, log_pb, log_flow = random_trajectories(3, steps)
    pairs = [(i, j) for i in range(steps + 1) for j in range(i + 1, steps + 1)]
    normalizer = sum(lam ** (j - i) for i, j in pairs)
    # mean over b of sum_{i<j} lam^(j-i) (log F(x_i) + sum_{k=i}^{j-1} (log p_F - log p_B)_k - log F(x_j))^2
    # / sum_{i<j} lam^(j-i), with log F(x_0) playing log Z and log F(x_T) = log R (columns of log_flow)
    expected = 0.0
    for pf, pb, flow in zip(log_pf.tolist(), log_pb.tolist(), log_flow.tolist()):
        for i, j in pairs:
            residual = flow[i] + sum(pf[k] - pb[k] for k in range(i, j)) - flow[j]
            expected += lam ** (j - i) * residual**2 / normalizer
    weights = losses.subtrajectory_weights(steps, lam)
    loss = losses.subtrajectory_balance(log_pf, log_pb, log_flow, weights)
    torch.testing.assert_close(loss, torch.tensor(expected / 3))


def test_subtrajectory_balance_of_one_step_is_trajectory_balance() -> None:
    # T = 1 has the single sub-trajectory x_0 -> x_1 (weight 1): TB with log Z = log F(x_0), log R = log F(x_1)
    log_pf, log_pb, log_flow = random_trajectories(4, 1)
    subtb = losses.subtrajectory_balance(log_pf, log_pb, log_flow, losses.subtrajectory_weights(1, 0.9))
    tb = losses.trajectory_balance(log_pf[:, 0], log_pb[:, 0], log_flow[:, 1], log_flow[:, 0])
    torch.testing.assert_close(subtb, tb)
