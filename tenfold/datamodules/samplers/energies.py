"""Target densities of the ``samplers`` family (diffusion samplers, arXiv 2402.05098).

Each target is an :class:`Energy`: a ``torch.nn.Module`` holding an unnormalized log-density
``log R(x)`` (the "log reward" of the GFlowNet view), its exact log normalizing constant where
known, ground-truth samples where they can be drawn exactly, and what plotting and mode counting
need. All tensors are non-persistent buffers: they follow ``.to(device)`` but are not written to
checkpoints (everything is rebuilt from the constructor arguments), and they keep their dtype
under module-wide dtype casts (a target is fixed; see :meth:`Energy._apply`).

Numerics: :meth:`Energy.log_reward` accepts any floating dtype. float64 inputs are evaluated in
float64 (for gradient checks); every other dtype (float32, bfloat16, float16) is evaluated in
float32 with autocast disabled and the result is float32, so callers under bf16 autocast get
float32 log-rewards back.

Targets:

=============  ====  ========================================================  =============
class          D     definition                                                log Z
=============  ====  ========================================================  =============
``GMM25``      2     25 equal-weight N(mu, 0.3 I), mu in {-10,-5,0,5,10}^2     0
``GMM40``      2     40 equal-weight N(mu, softplus(1)^2 I), FAB's means       0
``Funnel``     10    x0 ~ N(0, 3^2), x_i | x0 ~ N(0, exp(x0))                  0
``ManyWell``   32    16 double wells -x1^4 + 6 x1^2 + x1/2 - x2^2/2            164.69568
``LGCP``       1600  log-Gaussian Cox process posterior on the Finnish pines   unknown
=============  ====  ========================================================  =============
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "Energy",
    "GMM25",
    "GMM40",
    "Funnel",
    "ManyWell",
    "LGCP",
    "DEFAULT_PINES_PATH",
    "read_pines",
    "pines_bin_counts",
]

DEFAULT_PINES_PATH = Path(__file__).resolve().parent / "data" / "finpines.csv"
"""The Finnish pines point pattern shipped with the package (126 points in the unit square)."""

_LOG_2PI = math.log(2.0 * math.pi)


class Energy(torch.nn.Module):
    """Base class of the targets: an unnormalized log-density ``log R`` on ``R^dim``.

    Subclasses implement :meth:`_log_reward` (and :meth:`_sample` when ``can_sample``).

    Attributes:
        dim: dimension D of the sample space.
        log_Z: exact ``log int exp(log R(x)) dx`` where known, else ``None``.
        plot_bounds: square range ``(low, high)`` for plotting 2-D targets or 1-D/2-D marginals.
        modes: ``[M, D]`` mode centres (Gaussian mixtures) for counting modes hit, else ``None``.
        can_sample: whether :meth:`sample` draws exact ground-truth samples.
    """

    modes: Tensor | None

    def __init__(
        self,
        dim: int,
        log_Z: float | None,
        plot_bounds: tuple[float, float],
        can_sample: bool,
        modes: Tensor | None = None,
    ) -> None:
        super().__init__()
        self.dim = int(dim)
        self.log_Z = None if log_Z is None else float(log_Z)
        self.plot_bounds = (float(plot_bounds[0]), float(plot_bounds[1]))
        self.can_sample = bool(can_sample)
        # Follows the module's device even for targets without other buffers.
        self.register_buffer("_device_anchor", torch.zeros(()), persistent=False)
        self.register_buffer("modes", modes, persistent=False)

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> Energy:
        """Move buffers across devices but keep their dtypes.

        A target is fixed: module-wide dtype casts (``.double()``, ``.half()``, Lightning's
        ``"bf16-true"``/``"16-true"`` precision) must not round its means, tables or Cholesky
        factor. Buffers whose dtype a cast would change are instead moved, unrounded, to the
        device the cast puts them on.
        """
        before = {name: buf for name, buf in self._buffers.items() if buf is not None}
        super()._apply(fn, recurse)
        for name, original in before.items():
            moved = self._buffers[name]
            if moved.dtype != original.dtype:
                self._buffers[name] = original.to(device=moved.device)
        return self

    @property
    def device(self) -> torch.device:
        """Device of the buffers (where :meth:`sample` returns its samples)."""
        return self._device_anchor.device

    def extra_repr(self) -> str:
        return f"dim={self.dim}, log_Z={self.log_Z}, can_sample={self.can_sample}"

    def log_reward(self, x: Tensor) -> Tensor:
        """Unnormalized log-density ``log R(x)``.

        Args:
            x: ``[B, D]`` points, any floating dtype, on the energy's device.

        Returns:
            ``[B]`` log-rewards, differentiable with respect to ``x``; float64 for float64 input,
            float32 otherwise.
        """
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(
                f"{type(self).__name__}: expected x of shape [batch, {self.dim}], "
                f"got {list(x.shape)}"
            )
        if not x.is_floating_point():
            raise TypeError(f"{type(self).__name__}: expected a floating x, got {x.dtype}")
        compute_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        with torch.autocast(device_type=x.device.type, enabled=False):
            log_r = self._log_reward(x.to(compute_dtype))
        if log_r.shape != x.shape[:1]:
            raise ValueError(
                f"{type(self).__name__}._log_reward returned shape {tuple(log_r.shape)} for x of shape "
                f"{tuple(x.shape)}: it must return one value per point, [B] (e.g. .sum(-1) without keepdim)"
            )
        return log_r

    def forward(self, x: Tensor) -> Tensor:
        """Same as :meth:`log_reward`: ``[B, D] -> [B]``."""
        return self.log_reward(x)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Exact samples from the normalized target ``exp(log R) / Z``.

        Random numbers are drawn on the generator's device (the buffers' device when no
        generator is given), so a CPU generator gives the same samples whatever the energy's
        device.

        Args:
            n: number of samples (>= 0).
            generator: optional ``torch.Generator`` for reproducible draws.

        Returns:
            ``[n, D]`` float32 samples on the buffers' device.

        Raises:
            NotImplementedError: when the target has no exact sampler (``can_sample`` is False).
        """
        if not self.can_sample:
            raise NotImplementedError(self._no_sampler_reason())
        if n < 0:
            raise ValueError(f"{type(self).__name__}.sample: n must be >= 0, got {n}")
        device = generator.device if generator is not None else self.device
        samples = self._sample(int(n), generator, device)
        return samples.to(device=self.device, dtype=torch.float32)

    def _log_reward(self, x: Tensor) -> Tensor:
        """``[B, D] -> [B]`` in the dtype of ``x`` (float32 or float64); shapes already checked."""
        raise NotImplementedError(f"{type(self).__name__} must implement _log_reward(x: [B, D]) -> [B]")

    def _sample(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        """``[n, D]`` exact samples drawn with ``generator`` on ``device``."""
        raise NotImplementedError(
            f"{type(self).__name__} has can_sample=True but no _sample(n, generator, device) -> [n, D]: "
            "implement it, or pass can_sample=False"
        )

    def _no_sampler_reason(self) -> str:
        return f"{type(self).__name__} has no exact sampler (can_sample is False)."


class _IsotropicGaussianMixture(Energy):
    """Equal-weight mixture of ``N(mean_m, std^2 I)``; normalized (``log_Z = 0``).

    ``log R(x) = logsumexp_m(-|x - mean_m|^2 / (2 std^2)) - log M - D/2 log(2 pi std^2)``.
    """

    def __init__(self, means: Tensor, std: float, plot_bounds: tuple[float, float]) -> None:
        means = means.to(torch.float32)
        super().__init__(
            dim=means.shape[1], log_Z=0.0, plot_bounds=plot_bounds, can_sample=True, modes=means
        )
        self.std = float(std)

    def _log_reward(self, x: Tensor) -> Tensor:
        means = self.modes.to(x.dtype)
        sq_dist = (x.unsqueeze(1) - means.unsqueeze(0)).pow(2).sum(dim=-1)  # [B, M]
        num_modes, dim = means.shape
        log_norm = math.log(num_modes) + 0.5 * dim * (_LOG_2PI + 2.0 * math.log(self.std))
        return torch.logsumexp(-0.5 * sq_dist / self.std**2, dim=1) - log_norm

    def _sample(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        means = self.modes.to(device)
        component = torch.randint(
            0, means.shape[0], (n,), generator=generator, device=device
        )  # [n]
        noise = torch.randn(n, self.dim, generator=generator, device=device)
        return means[component] + self.std * noise


class GMM25(_IsotropicGaussianMixture):
    """25 equal-weight Gaussians with means on ``{-10,-5,0,5,10}^2`` and covariance ``0.3 I``.

    As ``TwentyFiveGaussianMixture`` of the official code of arXiv 2402.05098 (GFNOrg/gfn-diffusion,
    ``energy_sampling/energies/twenty_five_gmm.py``). Normalized: ``log R(0, 0) = -3.852780``.
    ``plot_bounds = (-13, 13)`` as the official plots.
    """

    def __init__(self) -> None:
        grid = torch.tensor([-10.0, -5.0, 0.0, 5.0, 10.0])
        means = torch.cartesian_prod(grid, grid)  # [25, 2]
        super().__init__(means, std=math.sqrt(0.3), plot_bounds=(-13.0, 13.0))


class GMM40(_IsotropicGaussianMixture):
    """The 40-mode mixture of FAB (Midgley et al., 2023) in 2-D.

    FAB (lollcat/fab-torch, ``fab/target_distributions/gmm.py`` and ``experiments/gmm/run.py``,
    config ``experiments/config/gmm.yaml``) builds it under ``torch.manual_seed(0)`` as
    ``GMM(dim=2, n_mixes=40, loc_scaling=40, log_var_scaling=1.0)``: means
    ``(torch.rand(40, 2) - 0.5) * 2 * 40`` (uniform on ``[-40, 40]^2``), equal weights, and
    ``scale_tril = diag(softplus(1.0))``, i.e. standard deviation ``softplus(1) = log(1 + e) =
    1.3133`` per coordinate (evaluated here in float64; FAB's float32 value differs by 5e-8).
    The means come from a local ``torch.Generator`` seeded 0, which yields the same numbers as
    FAB's global-RNG recipe without touching the global RNG.
    ``plot_bounds = (-56, 56)``: FAB plots ``+-1.4 * loc_scaling``.
    """

    def __init__(self) -> None:
        generator = torch.Generator().manual_seed(0)
        means = (torch.rand(40, 2, generator=generator) - 0.5) * 2.0 * 40.0
        super().__init__(means, std=math.log1p(math.e), plot_bounds=(-56.0, 56.0))


class Funnel(Energy):
    """Neal's funnel: ``x0 ~ N(0, 3^2)``, ``x_i | x0 ~ N(0, exp(x0))`` for ``i = 1..dim-1``.

    As ``HardFunnel`` of the official code (``energy_sampling/energies/hard_funnel.py``).
    Normalized: ``log R(0) = -10.287998`` for ``dim = 10``. No ``modes``.

    Args:
        dim: dimension (>= 2), 10 in the paper.
    """

    def __init__(self, dim: int = 10) -> None:
        if dim < 2:
            raise ValueError(f"Funnel needs dim >= 2, got {dim}")
        super().__init__(dim=dim, log_Z=0.0, plot_bounds=(-10.0, 10.0), can_sample=True)
        self.x0_std = 3.0

    def _log_reward(self, x: Tensor) -> Tensor:
        x0, rest = x[:, 0], x[:, 1:]
        other = self.dim - 1
        log_p_x0 = -0.5 * (x0 / self.x0_std).pow(2) - math.log(self.x0_std) - 0.5 * _LOG_2PI
        log_p_rest = -0.5 * (rest.pow(2).sum(dim=1) * torch.exp(-x0) + other * (x0 + _LOG_2PI))
        return log_p_x0 + log_p_rest

    def _sample(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        x0 = self.x0_std * torch.randn(n, 1, generator=generator, device=device)
        noise = torch.randn(n, self.dim - 1, generator=generator, device=device)
        rest = torch.exp(0.5 * x0) * noise
        return torch.cat([x0, rest], dim=1)


class ManyWell(Energy):
    """Product of ``dim / 2`` identical 2-D double wells (Noé et al. 2019; FAB; the paper's 32-D).

    ``log R(x) = sum_k (-a_k^4 + 6 a_k^2 + a_k / 2 - b_k^2 / 2)`` with ``(a_k, b_k) =
    (x_{2k}, x_{2k+1})``; ``log R(0) = 0`` and ``log R(1, ..., 1) = 5 dim / 2`` (80 for D = 32).

    ``log_Z = (dim / 2) * (log Z_a + log(2 pi) / 2)`` with
    ``Z_a = int exp(-a^4 + 6 a^2 + a / 2) da`` computed at construction by trapezoidal quadrature
    in float64 (the integrand is smooth and negligible beyond ``|a| = 4``): ``Z_a = 11784.50927``,
    the official code's constant, and ``log_Z = 164.69568`` for D = 32.

    Exact samples: ``b_k ~ N(0, 1)`` and ``a_k`` by inverse-CDF on a grid of ``grid_points`` over
    ``[-4, 4]`` (linear interpolation of the CDF, i.e. piecewise-uniform within cells of width
    ``8 / (grid_points - 1)``).

    ``modes`` is ``None``: each well has two modes (``a`` near -1.7 and +1.7, the positive one
    heavier), so the target has ``2^(dim/2)`` (65536 for D = 32) modes, too many to list.

    Args:
        dim: even dimension, 32 in the paper.
        grid_points: resolution of the quadrature and inverse-CDF grid.
    """

    _GRID_HALF_WIDTH = 4.0

    def __init__(self, dim: int = 32, grid_points: int = 40001) -> None:
        if dim < 2 or dim % 2 != 0:
            raise ValueError(f"ManyWell needs an even dim >= 2, got {dim}")
        if isinstance(grid_points, bool) or not isinstance(grid_points, int) or grid_points < 2:
            raise ValueError(f"ManyWell needs an int grid_points >= 2 (the inverse-CDF grid), got {grid_points!r}")
        grid = np.linspace(-self._GRID_HALF_WIDTH, self._GRID_HALF_WIDTH, grid_points)
        log_density = self.well_log_density(grid)
        shift = log_density.max()
        density = np.exp(log_density - shift)
        spacing = grid[1] - grid[0]
        cell_mass = 0.5 * (density[1:] + density[:-1]) * spacing  # trapezoid per cell
        cumulative = np.concatenate([[0.0], np.cumsum(cell_mass)])
        log_z_well = math.log(cumulative[-1]) + shift
        cdf = cumulative / cumulative[-1]  # [grid_points], from exactly 0 to exactly 1
        super().__init__(
            dim=dim,
            log_Z=(dim // 2) * (log_z_well + 0.5 * _LOG_2PI),
            plot_bounds=(-3.0, 3.0),
            can_sample=True,
        )
        self.n_wells = dim // 2
        self.log_Z_well = log_z_well
        self.register_buffer("_grid", torch.tensor(grid, dtype=torch.float32), persistent=False)
        self.register_buffer("_cdf", torch.tensor(cdf, dtype=torch.float32), persistent=False)

    @staticmethod
    def well_log_density(a: np.ndarray) -> np.ndarray:
        """Unnormalized log-density of the double-well coordinate: ``-a^4 + 6 a^2 + a / 2``."""
        return -(a**4) + 6.0 * a**2 + 0.5 * a

    def _log_reward(self, x: Tensor) -> Tensor:
        a, b = x[:, 0::2], x[:, 1::2]  # [B, n_wells] each
        return (-a.pow(4) + 6.0 * a.pow(2) + 0.5 * a - 0.5 * b.pow(2)).sum(dim=1)

    def _sample(self, n: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
        grid, cdf = self._grid.to(device), self._cdf.to(device)
        u = torch.rand(n, self.n_wells, generator=generator, device=device)
        # cdf[i - 1] <= u < cdf[i], with cdf[0] = 0 and cdf[-1] = 1.
        upper = torch.searchsorted(cdf, u.reshape(-1), right=True).clamp(1, len(cdf) - 1)
        lower = upper - 1
        frac = (u.reshape(-1) - cdf[lower]) / (cdf[upper] - cdf[lower]).clamp_min(1e-30)
        a = grid[lower] + frac.clamp(0.0, 1.0) * (grid[upper] - grid[lower])
        a = a.reshape(n, self.n_wells)
        b = torch.randn(n, self.n_wells, generator=generator, device=device)
        return torch.stack([a, b], dim=2).reshape(n, self.dim)


def read_pines(path: str | Path = DEFAULT_PINES_PATH) -> np.ndarray:
    """The pines point pattern: ``[N, 2]`` float64 coordinates in the unit square.

    The file is a CSV with a header line and two columns (x, y).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"Finnish pines data not found at {path}. The package ships it as "
            f"{DEFAULT_PINES_PATH} (see the README.md next to it for its source); pass "
            "data_path=... to use another copy."
        )
    points = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64, ndmin=2)
    if points.shape[1] != 2 or np.any(points < 0.0) or np.any(points > 1.0):
        raise ValueError(f"{path}: expected [N, 2] points in [0, 1]^2, got shape {points.shape}")
    return points


def pines_bin_counts(points: np.ndarray, grid_size: int) -> np.ndarray:
    """Counts of points per cell of a ``grid_size x grid_size`` grid on the unit square.

    Cell ``(i, j)`` covers ``[i/M, (i+1)/M) x [j/M, (j+1)/M)`` (points on the upper edge go to
    the last cell); the result is flattened row-major: ``[M * M]`` with index ``i * M + j``.
    """
    cells = np.minimum(np.floor(points * grid_size).astype(np.int64), grid_size - 1)
    flat = cells[:, 0] * grid_size + cells[:, 1]
    return np.bincount(flat, minlength=grid_size * grid_size).astype(np.float64)


class LGCP(Energy):
    """Log-Gaussian Cox process posterior on the Finnish pines (Møller, Syversveen and
    Waagepetersen, 1998), discretized as in Heng et al. (2020) and used by AFT/CRAFT, PIS, DDS and
    arXiv 2402.05098.

    The unit square is cut into an ``M x M`` grid (M = 40, D = 1600); ``y`` are the counts of pines
    per cell (flattened row-major, see :func:`pines_bin_counts`) and ``x`` the log-intensities:

    ``log R(x) = sum_i (x_i y_i - a exp(x_i)) + log N(x; mu 1, K)``

    with cell area ``a = 1 / M^2``, ``K(u, v) = sigma^2 exp(-|u - v| / (M beta))`` on grid indices
    ``u, v in {0..M-1}^2`` (Euclidean distance), ``sigma^2 = 1.91``, ``beta = 1/33`` and
    ``mu = log(N) - sigma^2 / 2`` with N = 126 points. This is the parametrization of
    google-deepmind/annealed_flow_transport (``densities.LogGaussianCoxPines`` with
    ``use_whitened=False`` as in its experiments, ``cox_process_utils.kernel_func``), repeated by
    qsh-zh/pis (``cox_utils.py``) and franciscovargas/denoising_diffusion_samplers; they hard-code
    126 where this class counts the points of the data file (the same for the shipped file).
    The shipped points are those of Heng et al.'s scripts and PIS (``data/README.md``). DDS's
    LGCP config loads another file, ``dds_data/pines.csv``: the same pattern min-max rescaled to
    [0, 1]^2 with its first point twice (127 rows). Its 40 x 40 counts differ from these in 63
    cells, so it is another posterior, with another log Z: ELBOs of LGCP are comparable only
    between codes that read the same file.
    The Gaussian term uses the inverse Cholesky factor of ``K``:
    ``log N = -|L^{-1}(x - mu)|^2 / 2 - sum log diag L - D/2 log(2 pi)``. The factor and this
    ``[B, D] x [D, D]`` product are float64 (the rest follows the input dtype): in float32 the
    product is exposed to TF32 (``torch.set_float32_matmul_precision("high")``, which Lightning
    suggests on recent NVIDIA GPUs), which on an H100 gave errors up to 0.1 in ``log R`` against
    2e-4 in exact float32; float64 costs ~1.5 GFLOP per 300 samples. Hence LGCP does not run on
    devices without float64 (Apple MPS).

    With ``whitened=True`` the variable is instead ``e`` with ``x = L e + mu`` (AFT's
    ``use_whitened=True``): ``log R_w(e) = sum_i (x_i y_i - a exp(x_i)) + log N(e; 0, I)``,
    which equals ``log R(L e + mu) + sum log diag L``.

    ``log_Z`` is unknown (``None``) and there is no exact sampler. ``plot_bounds`` is the prior mean
    +- 3 prior standard deviations of one coordinate (``+-3`` when whitened).

    Args:
        data_path: CSV of the point pattern in the unit square (header line, two columns);
            defaults to the shipped ``data/finpines.csv``.
        grid_size: cells per side M; D = M^2.
        signal_variance: sigma^2.
        beta: length scale of the undiscretized process.
        whitened: parametrize by the whitened variable ``e`` instead of ``x``.
    """

    def __init__(
        self,
        data_path: str | Path | None = None,
        grid_size: int = 40,
        signal_variance: float = 1.91,
        beta: float = 1.0 / 33.0,
        whitened: bool = False,
    ) -> None:
        if grid_size < 1:
            raise ValueError(f"LGCP needs grid_size >= 1, got {grid_size}")
        points = read_pines(DEFAULT_PINES_PATH if data_path is None else data_path)
        dim = grid_size * grid_size
        mean = math.log(points.shape[0]) - 0.5 * signal_variance
        prior_std = math.sqrt(signal_variance)
        plot_bounds = (-3.0, 3.0) if whitened else (mean - 3 * prior_std, mean + 3 * prior_std)
        super().__init__(dim=dim, log_Z=None, plot_bounds=plot_bounds, can_sample=False)
        self.grid_size = grid_size
        self.num_points = points.shape[0]
        self.signal_variance = float(signal_variance)
        self.beta = float(beta)
        self.whitened = bool(whitened)
        self.prior_mean = mean
        self.cell_area = 1.0 / dim

        index = torch.arange(dim)
        coords = torch.stack([index // grid_size, index % grid_size], dim=1).to(torch.float64)
        gram = signal_variance * torch.exp(-torch.cdist(coords, coords) / (grid_size * beta))
        chol = torch.linalg.cholesky(gram)  # [D, D] lower
        self.half_log_det = torch.log(torch.diagonal(chol)).sum().item()
        if self.whitened:
            factor = chol
        else:
            factor = torch.linalg.solve_triangular(
                chol, torch.eye(dim, dtype=torch.float64), upper=False
            )
        # Lower-triangular [D, D] float64: L (whitened) or L^{-1} (unwhitened).
        self.register_buffer("_factor", factor, persistent=False)
        counts = torch.tensor(pines_bin_counts(points, grid_size), dtype=torch.float32)
        self.register_buffer("counts", counts, persistent=False)

    def _log_reward(self, x: Tensor) -> Tensor:
        gauss_norm = -0.5 * self.dim * _LOG_2PI
        x64 = x.to(self._factor.dtype)
        if self.whitened:
            latent = (x64 @ self._factor.T + self.prior_mean).to(x.dtype)
            log_prior = -0.5 * x.pow(2).sum(dim=1) + gauss_norm
        else:
            latent = x
            white = (x64 - self.prior_mean) @ self._factor.T  # [B, D] float64
            quadratic = white.pow(2).sum(dim=1).to(x.dtype)
            log_prior = -0.5 * quadratic + (gauss_norm - self.half_log_det)
        counts = self.counts.to(x.dtype)
        log_lik = (latent * counts - self.cell_area * torch.exp(latent)).sum(dim=1)
        return log_lik + log_prior

    def _no_sampler_reason(self) -> str:
        return (
            "LGCP is a posterior with no exact sampler and no reference samples (its log_Z is "
            "unknown too); evaluate it with log-partition estimates (ELBO, importance-weighted "
            "log Z) instead of sample-based metrics."
        )
