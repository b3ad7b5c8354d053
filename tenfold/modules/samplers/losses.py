"""Training objectives of diffusion samplers, as functions of trajectory log-probabilities.

Notation (Sendera et al., 2024, arXiv 2402.05098, Sec. 2-3): a trajectory ``x_0 -> ... -> x_T``
has per-step forward and backward log-probabilities ``log p_F(x_{i+1} | x_i)`` and
``log p_B(x_i | x_{i+1})`` (``[B, T]``), the start's log density ``log p_0(x_0)`` (0 for a fixed
start, folded into the forward sum), and terminal log reward ``log R(x_T)`` (``[B]``). With
``Z = integral of R``, every objective below is minimized exactly (at zero, or at ``-log Z`` for the
KL) when ``p_F`` and ``p_B`` describe the same path measure and ``p_F``'s terminal marginal is
``R / Z``.

All losses average over the batch. The official code (GFNOrg/gfn-diffusion, ``gflownet_losses.py``)
multiplies TB, VarGrad and DB by 1/2, sums SubTB over the batch and divides the PIS loss by the
dimension ``D``; the paper's definitions are used here (no factor, batch mean): this rescales
gradients only, to which Adam is (up to its epsilon) invariant.
"""

from __future__ import annotations

import torch
from torch import Tensor


def trajectory_balance(log_pf: Tensor, log_pb: Tensor, log_reward: Tensor, log_z: Tensor) -> Tensor:
    """Trajectory balance (Malkin et al., 2022): ``E[(log Z + sum log p_F - sum log p_B - log R)^2]``.

    Args:
        log_pf, log_pb: summed log-probabilities of each trajectory, ``[B]``.
        log_reward: ``log R(x_T)``, ``[B]``.
        log_z: learned scalar ``log Z``.
    """
    return (log_z + log_pf - log_pb - log_reward).pow(2).mean()


def vargrad(log_pf: Tensor, log_pb: Tensor, log_reward: Tensor) -> Tensor:
    """Log-variance / VarGrad loss (Richter et al., 2020): the batch variance of
    ``log p_F - log p_B - log R``, i.e. TB with ``log Z`` replaced by its batch estimate
    ``mean(log R + log p_B - log p_F)``. Shapes as in :func:`trajectory_balance`; needs two or
    more trajectories (the variance of one is 0, whatever the policy).
    """
    if log_reward.numel() < 2:
        raise ValueError(
            f"vargrad estimates log Z from the batch and needs 2 or more trajectories, got {log_reward.numel()}: "
            "raise the batch size"
        )
    residual = log_pf - log_pb - log_reward
    return (residual - residual.mean()).pow(2).mean()


def detailed_balance(log_pf: Tensor, log_pb: Tensor, log_flow: Tensor) -> Tensor:
    """Detailed balance (Bengio et al., 2023): ``E[sum_i (log F(x_i) + log p_F(x_{i+1}|x_i)
    - log F(x_{i+1}) - log p_B(x_i|x_{i+1}))^2]``.

    Args:
        log_pf, log_pb: per-step log-probabilities, ``[B, T]``.
        log_flow: ``log F(x_i)`` for ``i = 0..T``, ``[B, T + 1]``; ``log F(x_T)`` must be
            ``log R(x_T)`` and ``log F(x_0)`` plays ``log Z``.
    """
    residual = log_flow[:, :-1] + log_pf - log_flow[:, 1:] - log_pb
    return residual.pow(2).sum(-1).mean()


def subtrajectory_weights(num_steps: int, lam: float, device: torch.device | None = None) -> Tensor:
    """Weights ``w_{ij} = lam^(j - i) / sum_{k < l} lam^(l - k)`` for ``0 <= i < j <= T``, zero
    elsewhere; ``[T + 1, T + 1]``, summing to 1 (Madan et al., 2023)."""
    if lam <= 0:
        raise ValueError(f"subtb_lambda must be > 0, got {lam}")
    idx = torch.arange(num_steps + 1, device=device, dtype=torch.float64)
    gap = idx.view(1, -1) - idx.view(-1, 1)
    log_w = torch.where(gap > 0, gap * torch.log(torch.tensor(lam, dtype=torch.float64)), -torch.inf)
    return (log_w - torch.logsumexp(log_w.flatten(), 0)).exp().float()


def subtrajectory_balance(log_pf: Tensor, log_pb: Tensor, log_flow: Tensor, weights: Tensor) -> Tensor:
    """Sub-trajectory balance (Madan et al., 2023): for every sub-trajectory ``x_i -> x_j``,
    ``(log F(x_i) + sum_{i<=k<j} (log p_F - log p_B)_k - log F(x_j))^2``, weighted by
    ``weights[i, j]`` (see :func:`subtrajectory_weights`), summed over pairs, averaged over the batch.

    Shapes as in :func:`detailed_balance`; ``weights`` ``[T + 1, T + 1]``. With the flows of
    forward-looking parametrization this is FL-SubTB (Zhang et al., 2023).
    """
    cumulative = torch.nn.functional.pad((log_pf - log_pb).cumsum(-1), (1, 0))
    potential = log_flow - cumulative
    residual = potential.unsqueeze(-1) - potential.unsqueeze(-2)
    return (residual.pow(2) * weights).sum((-1, -2)).mean()


def reverse_kl(log_pf: Tensor, log_pb: Tensor, log_reward: Tensor) -> Tensor:
    """Reverse KL through the simulation (PIS, DDS): ``E[sum log p_F - sum log p_B - log R]``,
    which equals ``KL(forward path || target path) - log Z``. Its gradient is the
    reparametrization gradient when the trajectories are simulated with gradients attached.
    Shapes as in :func:`trajectory_balance`.
    """
    return (log_pf - log_pb - log_reward).mean()
