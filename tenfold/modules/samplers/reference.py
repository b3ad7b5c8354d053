"""Reference processes of diffusion samplers: the discretized noising process that fixes the
backward policy, the start distribution and the coefficients of the forward update.

A sampler with ``T`` steps on the time grid ``t_i = i / T`` moves

    x_{i+1} = a x_i + b f(x_i, t_i) + c s(x_i, t_i) * eps,    eps ~ N(0, I),

where ``f`` is the learned drift and ``s`` an optional learned scale of the noise (1 when the
variance is not learned). The backward policy ``p_B(x_i | x_{i+1})`` is Gaussian with the
reference's mean and variance, optionally corrected by a learned backward network.

- :class:`BrownianReference` (PIS, GFlowNets in Sendera et al. 2024, arXiv 2402.05098, Sec. 2):
  start at ``x_0 = 0``; ``a = 1``, ``b = dt``, ``c^2 = sigma^2 dt``; the backward policy is the
  Brownian bridge to the origin, ``p_B(x_i | x_{i+1}) = N(x_{i+1} t_i / t_{i+1},
  sigma^2 dt t_i / t_{i+1})`` and ``x_0 = 0`` deterministically.
- :class:`OUReference` (DDS, Vargas et al. 2023, arXiv 2302.13834): start at
  ``x_0 ~ N(0, sigma^2 I)``; the backward policy is the variance-preserving Ornstein-Uhlenbeck
  step ``N(sqrt(1 - alpha) x_{i+1}, sigma^2 alpha)`` with ``alpha = 1 - exp(-beta dt)``, which
  keeps ``N(0, sigma^2 I)`` invariant; the forward update is DDS's exponential integrator,
  ``a = sqrt(1 - alpha)``, ``b = 2 sigma^2 (1 - sqrt(1 - alpha))``, ``c^2 = sigma^2 alpha``.
  The DDS paper uses a cosine schedule for ``alpha``; here it is constant (``beta`` sets the total
  contraction ``exp(-beta / 2)`` of the reference), which keeps the reference exactly stationary.
  The released DDS code (franciscovargas/denoising_diffusion_samplers, ``dds/configs/config.py``)
  runs an OU rate ``alpha = 0.5`` over ``t in [0, tfinal = 5]`` (64 uniform steps); with its
  exponential parametrization each step keeps ``exp(-alpha dt)`` of the mean, a total
  contraction ``exp(-alpha tfinal)``, which is ``beta = 2 alpha tfinal = 5`` on the unit time grid
  here; its funnel sweep of ``tfinal`` over 0.4-12.8 spans ``beta`` 0.4-12.8. The default
  ``beta = 10`` (``ou_beta`` of the configs) lies in that range (the benchmark's code,
  GFNOrg/gfn-diffusion, has no DDS).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG_2PI = math.log(2 * math.pi)


class ReferenceProcess:
    """Interface of a reference process on ``T`` steps with diffusion variance ``sigma^2``."""

    fixed_start: bool

    def __init__(self, num_steps: int, sigma2: float) -> None:
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
            raise ValueError(f"num_steps must be an int >= 1 (model.num_steps), got {num_steps!r}")
        if sigma2 <= 0:
            raise ValueError(f"the diffusion variance sigma2 must be > 0, got {sigma2}")
        self.num_steps = num_steps
        self.sigma2 = sigma2
        self.dt = 1.0 / num_steps

    def times(self, device: torch.device | None = None) -> Tensor:
        """The grid ``t_0, ..., t_T``, shape ``[T + 1]``."""
        return torch.linspace(0.0, 1.0, self.num_steps + 1, device=device)

    def sample_start(self, x0: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """Start states and their log density, ``[B, D]`` and ``[B]``, given the start batch ``x0``."""
        raise NotImplementedError

    def start_log_prob(self, x0: Tensor) -> Tensor:
        """Log density of the start distribution at ``x0`` ``[B, D]`` -> ``[B]``."""
        raise NotImplementedError

    def forward_coefficients(self) -> tuple[float, float, float]:
        """``(a, b, c)`` of the forward update (the same at every step for these references)."""
        raise NotImplementedError

    def backward_mean_var(
        self, x_next: Tensor, steps: Tensor, mean_correction: Tensor | None, var_correction: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        """Mean and variance of ``p_B(x_i | x_{i+1})`` for the steps ``i`` in ``steps``.

        Args:
            x_next: states ``x_{i+1}``, ``[*, S, D]`` with ``S = len(steps)``.
            steps: step indices ``i``, ``[S]`` (long).
            mean_correction, var_correction: learned multiplicative corrections, shaped like
                ``x_next``, or None.
        Returns mean ``[*, S, D]`` and variance broadcastable to it. Rows with ``i = 0`` of a
        fixed-start reference are meaningless (that step is deterministic; see
        :meth:`stochastic_steps`).
        """
        raise NotImplementedError

    def stochastic_steps(self, device: torch.device | None = None) -> Tensor:
        """Boolean mask ``[T]``: True where ``p_B(x_i | x_{i+1})`` is a proper density."""
        # a comparison, not an item assignment: no host-to-device copy (allowed in CUDA-graph capture)
        return torch.arange(self.num_steps, device=device) >= int(self.fixed_start)


def gaussian_log_prob(x: Tensor, mean: Tensor, var: Tensor) -> Tensor:
    """Diagonal Gaussian log density summed over the last dimension: ``[*, D] -> [*]``."""
    return -0.5 * (((x - mean) ** 2) / var + var.log() + LOG_2PI).sum(-1)


class BrownianReference(ReferenceProcess):
    """Brownian motion from the origin with variance ``sigma^2`` per unit time (PIS / GFlowNets)."""

    fixed_start = True

    def sample_start(self, x0: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        return torch.zeros_like(x0), x0.new_zeros(x0.shape[0])

    def start_log_prob(self, x0: Tensor) -> Tensor:
        return x0.new_zeros(x0.shape[0])

    def forward_coefficients(self) -> tuple[float, float, float]:
        return 1.0, self.dt, math.sqrt(self.sigma2 * self.dt)

    def backward_mean_var(
        self, x_next: Tensor, steps: Tensor, mean_correction: Tensor | None, var_correction: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        i = steps.to(x_next.dtype).clamp_min(1.0).unsqueeze(-1)
        shrink = 1.0 / (i + 1.0)
        if mean_correction is not None:
            shrink = shrink * mean_correction
        mean = x_next * (1.0 - shrink)
        var = self.sigma2 * self.dt * i / (i + 1.0)
        if var_correction is not None:
            var = var * var_correction
        return mean, var


class OUReference(ReferenceProcess):
    """Stationary variance-preserving OU process with invariant law ``N(0, sigma^2 I)`` (DDS)."""

    fixed_start = False

    def __init__(self, num_steps: int, sigma2: float, beta: float = 10.0) -> None:
        super().__init__(num_steps, sigma2)
        if beta <= 0:
            raise ValueError(f"the OU rate beta must be > 0, got {beta}")
        self.beta = beta
        self.alpha = -math.expm1(-beta * self.dt)

    def sample_start(self, x0: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        start = math.sqrt(self.sigma2) * noise
        return start, self.start_log_prob(start)

    def start_log_prob(self, x0: Tensor) -> Tensor:
        var = torch.full_like(x0, self.sigma2)
        return gaussian_log_prob(x0, torch.zeros_like(x0), var)

    def forward_coefficients(self) -> tuple[float, float, float]:
        keep = math.sqrt(1.0 - self.alpha)
        return keep, 2.0 * self.sigma2 * (1.0 - keep), math.sqrt(self.sigma2 * self.alpha)

    def backward_mean_var(
        self, x_next: Tensor, steps: Tensor, mean_correction: Tensor | None, var_correction: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        shrink = 1.0 - math.sqrt(1.0 - self.alpha)
        if mean_correction is not None:
            shrink = shrink * mean_correction
        mean = x_next * (1.0 - shrink)
        var = torch.full_like(x_next, self.sigma2 * self.alpha)
        if var_correction is not None:
            var = var * var_correction
        return mean, var
