"""The networks of a diffusion sampler, in one ``nn.Module`` that the LightningModule takes.

Architecture as in Sendera et al. (2024, arXiv 2402.05098, Appendix B), which follows PIS
(arXiv 2111.15141): every network is a :class:`~tenfold.modules.nets.TimeConditionedMLP` (Fourier time
embedding with learned phase + linear state embedding, GELU MLP, zero-initialized output), the
Langevin scaling is a network of time only whose output starts at 0.01. The official code shares
one state and one time embedding between the drift, flow and backward heads; here each head has
its own embeddings (same function class, a few more parameters).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tenfold.modules.nets import TimeConditionedMLP, TimeMLP


class SamplerNets(nn.Module):
    """Forward drift (with optional Langevin parametrization and learned variance), learned
    ``log Z``, optional state flow ``log F(x, t)`` and optional backward-policy corrections.

    Args:
        dim: dimension ``D`` of the target.
        hidden_dim: width of every network.
        num_hidden_layers: hidden layers after the embeddings.
        num_frequencies: Fourier frequencies of the time embeddings.
        learned_variance: the drift network also outputs a log-variance correction
            ``tanh(v) * log_var_range`` of the noise (else the reference's variance is used).
        log_var_range: range of that correction.
        langevin: Langevin parametrization: ``f(x, t) = NN(x, t) + s(t) * grad log R(x)``
            (Zhang & Chen, 2022), with the learned scaling ``s`` (per dimension or scalar).
        langevin_scaling_per_dimension: ``s(t)`` has ``D`` outputs instead of one.
        langevin_num_hidden_layers: hidden layers of ``s``.
        langevin_grad_clip: clip ``grad log R`` elementwise to this magnitude (None: no clip).
        drift_clip: clip the drift elementwise, Langevin term included, as the official
            ``gfn.py`` (None: no clip). It also clips the raw log-variance output there, which
            changes nothing before the ``tanh``.
        conditional_flow: create the state-flow network ``log F(x, t)`` (DB, SubTB, FL-SubTB).
        learned_backward: create the backward network, whose outputs ``(m, v)`` scale the
            reference's backward step by factors ``1 + tanh(m) r`` and ``1 + tanh(v) r`` with
            ``r = backward_scale_range``: the first multiplies the mean's shrink toward the origin
            (Brownian: ``x_{i+1} - x_{i+1} / (i + 1) * factor``, as the official ``gfn.py``), the
            second the variance.
        log_z_init: initial value of the learned ``log Z``.

    Shapes: states ``[*, D]``, times broadcastable to ``[*]``.
    """

    def __init__(
        self,
        dim: int,
        hidden_dim: int = 256,
        num_hidden_layers: int = 2,
        num_frequencies: int = 64,
        learned_variance: bool = False,
        log_var_range: float = 4.0,
        langevin: bool = False,
        langevin_scaling_per_dimension: bool = True,
        langevin_num_hidden_layers: int = 3,
        langevin_grad_clip: float | None = 1e2,
        drift_clip: float | None = 1e4,
        conditional_flow: bool = False,
        learned_backward: bool = False,
        backward_scale_range: float = 0.1,
        log_z_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.learned_variance = learned_variance
        self.log_var_range = log_var_range
        self.langevin = langevin
        self.langevin_grad_clip = langevin_grad_clip
        self.drift_clip = drift_clip
        self.backward_scale_range = backward_scale_range
        width = dict(hidden_dim=hidden_dim, num_hidden_layers=num_hidden_layers, num_frequencies=num_frequencies)
        self.drift = TimeConditionedMLP(dim, 2 * dim if learned_variance else dim, **width)
        self.langevin_scaling = (
            TimeMLP(
                dim if langevin_scaling_per_dimension else 1,
                hidden_dim,
                langevin_num_hidden_layers,
                num_frequencies,
                init_bias=0.01,
            )
            if langevin
            else None
        )
        self.log_z = nn.Parameter(torch.tensor(float(log_z_init)))
        self.flow = TimeConditionedMLP(dim, 1, zero_init=False, **width) if conditional_flow else None
        self.backward_policy = TimeConditionedMLP(dim, 2 * dim, **width) if learned_backward else None

    def time_features(self, t: Tensor) -> tuple[Tensor, Tensor | None]:
        """The drift's time-dependent parts at times ``t`` ``[*]``: the time embedding
        ``[*, hidden]`` and the Langevin scaling ``[*, D or 1]`` (None without Langevin).

        A sampler on a fixed grid computes them once per trajectory batch and passes row ``i``
        to :meth:`forward` at step ``i``.
        """
        scaling = self.langevin_scaling(t) if self.langevin_scaling is not None else None
        # float32 under bf16 autocast too, as the state embedding's bias it is added to (a bf16
        # embedding added per row made torch 2.9's inductor miscompile the sum's gradient)
        return self.drift.time_embedding(t).float(), scaling

    def forward(
        self,
        x: Tensor,
        t: Tensor | None = None,
        grad_log_reward: Tensor | None = None,
        time_features: tuple[Tensor, Tensor | None] | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Drift ``f(x, t)`` ``[*, D]`` and log-variance correction ``[*, D]`` (None when not learned).

        Give the time ``t`` or its precomputed ``time_features`` (see :meth:`time_features`).
        ``grad_log_reward`` (``[*, D]``) is required with the Langevin parametrization.
        """
        time_embedding, scaling = time_features if time_features is not None else self.time_features(t)
        out = self.drift(x, time_embedding=time_embedding)
        drift, log_var = (out[..., : self.dim], out[..., self.dim :]) if self.learned_variance else (out, None)
        if scaling is not None:
            if grad_log_reward is None:
                raise ValueError("the Langevin parametrization needs grad_log_reward")
            if self.langevin_grad_clip is not None:
                grad_log_reward = grad_log_reward.clamp(-self.langevin_grad_clip, self.langevin_grad_clip)
            drift = drift + scaling * grad_log_reward
        if self.drift_clip is not None:
            drift = drift.clamp(-self.drift_clip, self.drift_clip)
        if log_var is not None:
            log_var = torch.tanh(log_var) * self.log_var_range
        return drift, log_var

    def log_flow(self, x: Tensor, t: Tensor) -> Tensor:
        """Learned ``log F(x, t)`` ``[*]``; requires ``conditional_flow=True``."""
        if self.flow is None:
            raise RuntimeError("this sampler has no flow network: build SamplerNets with conditional_flow=True")
        return self.flow(x, t).squeeze(-1)

    def backward_corrections(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor] | tuple[None, None]:
        """Multiplicative corrections of the backward mean and variance at ``(x_{i+1}, t_{i+1})``."""
        if self.backward_policy is None:
            return None, None
        mean_out, var_out = self.backward_policy(x, t).chunk(2, dim=-1)
        r = self.backward_scale_range
        return 1.0 + torch.tanh(mean_out) * r, 1.0 + torch.tanh(var_out) * r
