"""Behaviour of the target densities of the ``samplers`` family (reference values, normalization,
gradients, exact samplers, dtypes, errors)."""

import math
from functools import partial

import numpy as np
import pytest
import torch
from scipy import integrate, stats
from torch import distributions as D

from tenfold.datamodules.samplers.energies import (
    DEFAULT_PINES_PATH,
    GMM25,
    GMM40,
    LGCP,
    Energy,
    Funnel,
    ManyWell,
    pines_bin_counts,
    read_pines,
)

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def lgcp() -> LGCP:
    return LGCP()


def _grid_points(low: float, high: float, step: float) -> tuple[torch.Tensor, float]:
    """``[G*G, 2]`` float64 centres of a square grid and the cell area."""
    axis = torch.arange(low + step / 2, high, step, dtype=torch.float64)
    return torch.cartesian_prod(axis, axis), step * step


def _mixture(means: torch.Tensor, std: float) -> D.MixtureSameFamily:
    means = means.double()
    scale_tril = torch.diag_embed(torch.full_like(means, std))
    return D.MixtureSameFamily(
        D.Categorical(torch.ones(means.shape[0], dtype=torch.float64)),
        D.MultivariateNormal(means, scale_tril=scale_tril),
    )


# ---------------------------------------------------------------- reference values


def test_gmm25_reference_value_and_modes():
    energy = GMM25()
    assert energy.dim == 2 and energy.log_Z == 0.0 and energy.can_sample
    assert energy.log_reward(torch.zeros(1, 2)).item() == pytest.approx(-3.852780, abs=1e-5)
    axis = (-10.0, -5.0, 0.0, 5.0, 10.0)
    expected = {(a, b) for a in axis for b in axis}
    assert energy.modes.shape == (25, 2)
    assert {tuple(m) for m in energy.modes.tolist()} == expected


def test_gmm25_matches_torch_mixture():
    energy = GMM25()
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 7
    reference = _mixture(energy.modes, math.sqrt(0.3)).log_prob(x)
    torch.testing.assert_close(energy.log_reward(x), reference, rtol=1e-10, atol=1e-10)


def test_gmm40_means_follow_fab_recipe_without_touching_global_rng():
    # FAB experiments/gmm/run.py: torch.manual_seed(0); GMM(dim=2, n_mixes=40, loc_scaling=40,
    # log_var_scaling=1.0) with mean = (torch.rand((n_mixes, dim)) - 0.5) * 2 * loc_scaling.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        fab_means = (torch.rand((40, 2)) - 0.5) * 2 * 40
    state = torch.get_rng_state()
    energy = GMM40()
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(energy.modes, fab_means)
    assert energy.modes.abs().max() <= 40.0
    assert energy.plot_bounds == (-56.0, 56.0)


def test_gmm40_matches_fab_distribution():
    # FAB: scale_tril = diag(softplus(log_var_scaling)), equal mixture weights.
    energy = GMM40()
    std = torch.nn.functional.softplus(torch.tensor(1.0, dtype=torch.float64)).item()
    assert std == pytest.approx(1.3132616875)
    gen = torch.Generator().manual_seed(2)
    x = (torch.rand(64, 2, generator=gen, dtype=torch.float64) - 0.5) * 90
    x[:40] = energy.modes.double() + 0.5  # near the modes, where the value is informative
    reference = _mixture(energy.modes, std).log_prob(x)
    torch.testing.assert_close(energy.log_reward(x), reference, rtol=1e-10, atol=1e-10)


def test_funnel_reference_value_and_definition():
    energy = Funnel()
    assert energy.dim == 10 and energy.log_Z == 0.0 and energy.modes is None
    assert energy.log_reward(torch.zeros(1, 10)).item() == pytest.approx(-10.287998, abs=1e-5)
    x = torch.randn(32, 10, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 3
    reference = D.Normal(0.0, 3.0).log_prob(x[:, 0]) + D.Normal(
        0.0, torch.exp(0.5 * x[:, :1])
    ).log_prob(x[:, 1:]).sum(dim=1)
    torch.testing.assert_close(energy.log_reward(x), reference, rtol=1e-9, atol=1e-8)


def test_many_well_reference_values():
    energy = ManyWell()
    assert energy.dim == 32 and energy.modes is None
    torch.testing.assert_close(energy.log_reward(torch.zeros(2, 32)), torch.zeros(2))
    torch.testing.assert_close(energy.log_reward(torch.ones(2, 32)), torch.full((2,), 80.0))
    # One well at (a, b) = (2, 3), the others at 0: -16 + 24 + 1 - 4.5 = 4.5.
    x = torch.zeros(1, 32)
    x[0, 6], x[0, 7] = 2.0, 3.0
    assert energy.log_reward(x).item() == pytest.approx(4.5)


def test_many_well_log_z_matches_quadrature():
    z_well, _ = integrate.quad(
        lambda a: math.exp(-(a**4) + 6 * a**2 + 0.5 * a), -np.inf, np.inf, epsabs=0, epsrel=1e-13
    )
    assert z_well == pytest.approx(11784.50927, rel=1e-9)  # the official code's constant
    log_z = 16 * (math.log(z_well) + 0.5 * math.log(2 * math.pi))
    assert ManyWell().log_Z == pytest.approx(log_z, abs=1e-8)
    assert ManyWell().log_Z == pytest.approx(164.69568, abs=1e-5)
    assert ManyWell(dim=4).log_Z == pytest.approx(log_z / 8, abs=1e-9)


# ---------------------------------------------------------------- normalization


@pytest.mark.parametrize(
    ("energy_cls", "low", "high", "step"), [(GMM25, -14.0, 14.0, 0.05), (GMM40, -48.0, 48.0, 0.2)]
)
def test_gmm_normalized_on_grid(energy_cls, low, high, step):
    energy = energy_cls()
    points, cell = _grid_points(low, high, step)
    mass = sum(torch.exp(energy.log_reward(chunk)).sum().item() for chunk in points.split(100_000))
    assert mass * cell == pytest.approx(1.0, abs=1e-4)


def test_funnel_2d_normalized_by_quadrature():
    # int R(x0, x1) dx1 dx0 with x1 = exp(x0 / 2) z, dx1 = exp(x0 / 2) dz.
    energy = Funnel(dim=2)
    x0 = torch.arange(-20.0, 20.0, 0.02, dtype=torch.float64)
    z = torch.arange(-9.0, 9.0, 0.02, dtype=torch.float64)
    grid = torch.cartesian_prod(x0, z)
    x = torch.stack([grid[:, 0], torch.exp(0.5 * grid[:, 0]) * grid[:, 1]], dim=1)
    mass = (torch.exp(energy.log_reward(x) + 0.5 * grid[:, 0]).sum() * 0.02 * 0.02).item()
    assert mass == pytest.approx(1.0, abs=1e-4)


# ---------------------------------------------------------------- gradients


@pytest.mark.parametrize("energy", [GMM25(), GMM40(), Funnel(), Funnel(dim=3)], ids=repr)
def test_gradcheck_float64(energy: Energy):
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(3, energy.dim, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(energy.log_reward, (x,))


def test_gmm25_and_funnel_values_and_gradients_at_fixed_points():
    """Hand values. GMM25 at (1, 0.5): the mode at the origin dominates (the next one, (5, 0), has
    relative weight exp(-(16.25 - 1.25) / 0.6) = 1.4e-11), so log R = -log 25 - log(2 pi 0.3)
    - 1.25 / 0.6 and grad = -(1, 0.5) / 0.3. Funnel at x = (1, ..., 1): d/dx0 = -x0 / 9
    + sum_i (x_i^2 e^-x0 - 1) / 2 = -1/9 + 9 (e^-1 - 1) / 2 and d/dx_i = -x_i e^-x0 = -e^-1."""
    x = torch.tensor([[1.0, 0.5]], dtype=torch.float64, requires_grad=True)
    log_r = GMM25().log_reward(x)
    assert log_r.item() == pytest.approx(-math.log(25) - math.log(2 * math.pi * 0.3) - 1.25 / 0.6, abs=1e-9)
    (grad,) = torch.autograd.grad(log_r.sum(), x)
    torch.testing.assert_close(grad, torch.tensor([[-1 / 0.3, -0.5 / 0.3]], dtype=torch.float64), rtol=0, atol=1e-9)
    x = torch.ones(1, 10, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(Funnel().log_reward(x).sum(), x)
    expected = torch.full((1, 10), -math.exp(-1.0), dtype=torch.float64)
    expected[0, 0] = -1 / 9 + 9 * (math.exp(-1.0) - 1) / 2
    torch.testing.assert_close(grad, expected, rtol=0, atol=1e-9)


def test_many_well_gradient_closed_form():
    energy = ManyWell()
    x = torch.randn(5, 32, generator=torch.Generator().manual_seed(5), requires_grad=True)
    (grad,) = torch.autograd.grad(energy.log_reward(x).sum(), x)
    a, b = x.detach()[:, 0::2], x.detach()[:, 1::2]
    torch.testing.assert_close(grad[:, 0::2], -4 * a**3 + 12 * a + 0.5)
    torch.testing.assert_close(grad[:, 1::2], -b)


@pytest.mark.parametrize("whitened", [False, True])
def test_lgcp_gradcheck_small_grid(whitened: bool):
    energy = LGCP(grid_size=3, whitened=whitened)
    x = 3.0 + torch.randn(2, 9, generator=torch.Generator().manual_seed(6), dtype=torch.float64)
    assert torch.autograd.gradcheck(energy.log_reward, (x.requires_grad_(),))


# ---------------------------------------------------------------- LGCP


def _lgcp_reference(x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """log R ``[B]`` of the 40x40 pines LGCP from the definition (float64, dense covariance),
    with K ``[D, D]``, counts y ``[D]`` and prior mean ``[D]``."""
    points = np.loadtxt(DEFAULT_PINES_PATH, delimiter=",", skiprows=1)
    counts, _, _ = np.histogram2d(points[:, 0], points[:, 1], bins=40, range=[[0, 1], [0, 1]])
    counts = torch.tensor(counts.reshape(-1))
    i, j = np.meshgrid(np.arange(40), np.arange(40), indexing="ij")
    coords = np.stack([i.reshape(-1), j.reshape(-1)], axis=1).astype(np.float64)
    dist = np.sqrt(((coords[:, None, :] - coords[None, :, :]) ** 2).sum(-1))
    cov = torch.tensor(1.91 * np.exp(-dist / (40 * (1 / 33))))
    mean = torch.full((1600,), math.log(126) - 1.91 / 2, dtype=torch.float64)
    prior = D.MultivariateNormal(mean, covariance_matrix=cov).log_prob(x)
    return prior + (x * counts - torch.exp(x) / 1600).sum(dim=1), cov, counts, mean


def test_pines_data_has_126_points_in_unit_square(lgcp: LGCP):
    points = read_pines()
    assert points.shape == (126, 2)
    assert points.min() >= 0.0 and points.max() <= 1.0
    assert lgcp.num_points == 126 and lgcp.counts.sum().item() == 126
    assert lgcp.dim == 1600 and lgcp.log_Z is None and not lgcp.can_sample


def test_lgcp_matches_dense_float64_reference(lgcp: LGCP):
    gen = torch.Generator().manual_seed(7)
    mean = math.log(126) - 1.91 / 2
    x = mean + torch.randn(3, 1600, generator=gen, dtype=torch.float64) * 0.7
    x[0] = mean
    reference, _, counts, _ = _lgcp_reference(x)
    torch.testing.assert_close(lgcp.counts.double(), counts)
    torch.testing.assert_close(lgcp.log_reward(x.float()).double(), reference, rtol=1e-6, atol=0.0)
    torch.testing.assert_close(lgcp.log_reward(x), reference, rtol=1e-12, atol=0.0)


def test_lgcp_gradient_closed_form(lgcp: LGCP):
    # d/dx log R = y - a exp(x) - K^{-1} (x - mu)
    gen = torch.Generator().manual_seed(8)
    _, cov, counts, mean = _lgcp_reference(torch.zeros(1, 1600, dtype=torch.float64))
    x = (mean + 0.5 * torch.randn(2, 1600, generator=gen, dtype=torch.float64)).requires_grad_()
    (grad,) = torch.autograd.grad(lgcp.log_reward(x).sum(), x)
    x = x.detach()
    expected = counts - torch.exp(x) / 1600 - torch.linalg.solve(cov, (x - mean).T).T
    torch.testing.assert_close(grad, expected, rtol=1e-6, atol=1e-6)


def test_lgcp_whitened_is_reparametrization(lgcp: LGCP):
    white = LGCP(whitened=True)
    e = torch.randn(2, 1600, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    chol = torch.linalg.inv(lgcp._factor)  # L from the stored L^{-1} (float64)
    x = e @ chol.T + lgcp.prior_mean
    torch.testing.assert_close(
        white.log_reward(e), lgcp.log_reward(x) + lgcp.half_log_det, rtol=1e-12, atol=0.0
    )
    assert white.plot_bounds == (-3.0, 3.0)


def test_lgcp_cannot_sample(lgcp: LGCP):
    with pytest.raises(NotImplementedError, match="no exact sampler"):
        lgcp.sample(3)


def test_lgcp_missing_data_file_says_where(tmp_path):
    with pytest.raises(FileNotFoundError, match="finpines.csv"):
        LGCP(data_path=tmp_path / "nope.csv")


# ---------------------------------------------------------------- exact samplers


def test_gmm25_sampler_statistics():
    energy = GMM25()
    x = energy.sample(20_000, generator=torch.Generator().manual_seed(10))
    assert x.shape == (20_000, 2) and x.dtype == torch.float32
    assert x.mean(dim=0).abs().max() < 0.25  # coordinate std sqrt(50.3) / sqrt(n) = 0.05
    nearest = torch.cdist(x, energy.modes).argmin(dim=1)
    freq = torch.bincount(nearest, minlength=25) / 20_000
    assert (freq - 1 / 25).abs().max() < 0.01  # 7 standard errors
    residual = x - energy.modes[nearest]
    assert residual.std(dim=0).sub(math.sqrt(0.3)).abs().max() < 0.02


def test_gmm40_sampler_moments_and_component_residuals():
    energy = GMM40()
    x = energy.sample(40_000, generator=torch.Generator().manual_seed(11)).double()
    means = energy.modes.double()
    std = torch.nn.functional.softplus(torch.tensor(1.0)).item()
    expected_cov = torch.cov(means.T, correction=0) + std**2 * torch.eye(2, dtype=torch.float64)
    torch.testing.assert_close(x.mean(dim=0), means.mean(dim=0), atol=0.4, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), expected_cov, rtol=0.03, atol=5.0)
    # The covariance is dominated by the spread of the means (~500 per coordinate against
    # std^2 = 1.72), so the components are checked through their residuals. GMM40's modes overlap
    # (the closest pairs are 1.18 apart, under one std), so residuals to the nearest mode (the
    # GMM25 test's check) would be biased; instead, the residual to every mode is weighted by its
    # posterior responsibility r_m(x) = P(component m | x). By the tower rule, for x drawn from the
    # mixture (n = 40000 draws),
    # E[r_m(x)] = 1/40, E[sum_m r_m(x) (x - mu_m)] = 0 and
    # E[sum_m r_m(x) (x - mu_m)_k^2] = std^2 for each coordinate k.
    residual = x.unsqueeze(1) - means.unsqueeze(0)  # [n, 40, 2]
    resp = torch.softmax(-0.5 * residual.pow(2).sum(-1) / std**2, dim=1)  # [n, 40]
    assert (resp.mean(dim=0) - 1 / 40).abs().max() < 0.004  # standard error <= 0.0008
    weighted = resp.unsqueeze(-1) * residual  # [n, 40, 2]
    assert weighted.sum(dim=1).mean(dim=0).abs().max() < 0.04  # standard error <= std / sqrt(n) = 0.0066
    second_moment = (weighted * residual).sum(dim=1).mean(dim=0)  # [2]
    assert (second_moment - std**2).abs().max() < 0.06  # standard error <= sqrt(2) std^2 / sqrt(n) = 0.012


def test_funnel_sampler_statistics():
    x = Funnel().sample(20_000, generator=torch.Generator().manual_seed(12))
    assert x.shape == (20_000, 10)
    assert abs(x[:, 0].mean().item()) < 0.1 and x[:, 0].std().item() == pytest.approx(3.0, abs=0.06)
    z = x[:, 1:] * torch.exp(-0.5 * x[:, :1])  # standard normal given x0
    assert z.mean(dim=0).abs().max() < 0.04
    assert z.std(dim=0).sub(1.0).abs().max() < 0.03


def test_many_well_sampler_marginal_histogram():
    n = 20_000
    x = ManyWell().sample(n, generator=torch.Generator().manual_seed(13)).double()
    a, b = x[:, 0::2].reshape(-1), x[:, 1::2].reshape(-1)  # 16 independent wells per sample
    edges = np.linspace(-3.0, 3.0, 61)
    fine = np.linspace(-3.0, 3.0, 60 * 200 + 1)
    density = np.exp(-(fine**4) + 6 * fine**2 + 0.5 * fine)
    cdf = integrate.cumulative_trapezoid(density, fine, initial=0.0)
    expected = np.diff(cdf[::200]) / cdf[-1]
    observed = np.histogram(a.numpy(), bins=edges)[0] / a.numel()
    tolerance = 5 * np.sqrt(expected / a.numel()) + 1e-5
    assert np.all(np.abs(observed - expected) < tolerance)
    assert (a > 0).double().mean().item() == pytest.approx(expected[30:].sum(), abs=0.005)
    assert abs(b.mean().item()) < 0.01 and b.std().item() == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("energy_cls", [GMM25, GMM40, Funnel, ManyWell])
def test_sampler_seeded_determinism(energy_cls):
    energy = energy_cls()
    first = energy.sample(50, generator=torch.Generator().manual_seed(0))
    again = energy.sample(50, generator=torch.Generator().manual_seed(0))
    other = energy.sample(50, generator=torch.Generator().manual_seed(1))
    assert torch.equal(first, again) and not torch.equal(first, other)
    state = torch.get_rng_state()
    energy.sample(5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.get_rng_state(), state)
    assert energy.sample(0).shape == (0, energy.dim)
    with pytest.raises(ValueError, match="n must be >= 0"):
        energy.sample(-1)


# ---------------------------------------------------------------- dtypes, shapes, buffers


@pytest.mark.parametrize("energy", [GMM25(), GMM40(), Funnel(), ManyWell()], ids=repr)
def test_low_precision_inputs_give_float32(energy: Energy):
    x = torch.randn(4, energy.dim, generator=torch.Generator().manual_seed(14))
    bf16 = x.bfloat16()
    out = energy.log_reward(bf16)
    assert out.dtype == torch.float32 and out.shape == (4,)
    torch.testing.assert_close(out, energy.log_reward(bf16.float()))
    assert energy.log_reward(x.double()).dtype == torch.float64
    assert energy.log_reward(x.half()).dtype == torch.float32


def test_lgcp_under_bf16_autocast_stays_float32(lgcp: LGCP):
    x = lgcp.prior_mean + torch.randn(2, 1600, generator=torch.Generator().manual_seed(15))
    expected = lgcp.log_reward(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = lgcp(x)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected)


@pytest.mark.parametrize("energy", [GMM25(), Funnel(), ManyWell()], ids=repr)
def test_wrong_shapes_and_dtypes_raise(energy: Energy):
    message = rf"expected x of shape \[batch, {energy.dim}\], got \[4, 3\]"
    with pytest.raises(ValueError, match=message):
        energy.log_reward(torch.zeros(4, 3))
    with pytest.raises(ValueError, match="expected x of shape"):
        energy.log_reward(torch.zeros(energy.dim))
    with pytest.raises(TypeError, match="floating"):
        energy.log_reward(torch.zeros(2, energy.dim, dtype=torch.long))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="even dim"):
        ManyWell(dim=3)
    with pytest.raises(ValueError, match="dim >= 2"):
        Funnel(dim=1)


@pytest.mark.parametrize("energy_cls", [GMM25, GMM40, Funnel, ManyWell, partial(LGCP, grid_size=4)])
def test_buffers_not_checkpointed_and_immune_to_dtype_casts(energy_cls):
    energy = energy_cls()
    assert energy.state_dict() == {}
    x = torch.randn(3, energy.dim, generator=torch.Generator().manual_seed(16))
    before = energy.log_reward(x)
    buffers = {name: buf.clone() for name, buf in energy.named_buffers()}
    energy.bfloat16()  # e.g. Lightning's "bf16-true" precision casting the whole model
    for name, buf in energy.named_buffers():
        assert buf.dtype == buffers[name].dtype and torch.equal(buf, buffers[name])
    assert torch.equal(energy.log_reward(x), before)
    energy.to(torch.float64)
    assert torch.equal(energy.log_reward(x), before) and energy.device == torch.device("cpu")


# ---------------------------------------------------------------- added by mutation review


def _max_offdiag_corr(x: torch.Tensor) -> float:
    """Largest |correlation| between two different columns of ``x`` ``[n, k]``."""
    corr = torch.corrcoef(x.double().T)
    return (corr - torch.diag(torch.diag(corr))).abs().max().item()


def test_samplers_draw_independent_coordinates() -> None:
    # Pins independence across coordinates: the per-coordinate noise of GMM25 components, the
    # Funnel's x_i | x0 and ManyWell's wells (a_k and b_k across k) are independent draws, so
    # off-diagonal correlations are 0 (standard error 1/sqrt(n) = 0.007; tolerance 0.05). Also
    # ManyWell's a_k interpolate the CDF inside grid cells (they are almost never grid points).
    n = 20_000
    gmm = GMM25()
    x = gmm.sample(n, generator=torch.Generator().manual_seed(21))
    residual = x - gmm.modes[torch.cdist(x, gmm.modes).argmin(dim=1)]
    assert _max_offdiag_corr(residual) < 0.05
    x = Funnel().sample(n, generator=torch.Generator().manual_seed(22)).double()
    z = x[:, 1:] * torch.exp(-0.5 * x[:, :1])  # i.i.d. N(0, 1) given x0
    assert _max_offdiag_corr(z) < 0.05
    x = ManyWell().sample(n, generator=torch.Generator().manual_seed(23))
    assert _max_offdiag_corr(x[:, 0::2]) < 0.05 and _max_offdiag_corr(x[:, 1::2]) < 0.05
    assert _max_offdiag_corr(x) < 0.05  # a_k and b_k independent as well
    grid = torch.tensor(np.linspace(-4.0, 4.0, 40001), dtype=torch.float32)
    on_grid = torch.isin(x[:, 0::2].reshape(-1), grid).double().mean().item()
    assert on_grid < 0.01


def test_many_well_other_even_dimension() -> None:
    # Pins that dim sets the number of wells everywhere (values, log Z, sampler shape/marginals).
    energy = ManyWell(dim=4)
    assert energy.dim == 4 and energy.log_reward(torch.ones(3, 4)).tolist() == [10.0] * 3
    x = energy.sample(4000, generator=torch.Generator().manual_seed(24))
    assert x.shape == (4000, 4)
    b = x[:, 1::2].reshape(-1)
    assert abs(b.mean().item()) < 0.06 and b.std().item() == pytest.approx(1.0, abs=0.04)
    a = x[:, 0::2].reshape(-1)
    # the heavier well is a > 0: P(a > 0) = 0.7311 (quadrature of exp(-a^4 + 6a^2 + a/2))
    pos, _ = integrate.quad(lambda s: math.exp(-(s**4) + 6 * s**2 + 0.5 * s), 0, np.inf)
    tot, _ = integrate.quad(lambda s: math.exp(-(s**4) + 6 * s**2 + 0.5 * s), -np.inf, np.inf)
    assert (a > 0).double().mean().item() == pytest.approx(pos / tot, abs=0.03)


def test_pines_bin_counts_cells_layout_and_upper_edge() -> None:
    # Pins the binning: cell (i, j) = (floor(M x), floor(M y)), flattened i * M + j, and points on
    # the upper edge x = 1 or y = 1 go to the last cell (M = 4, hand-computed indices).
    points = np.array([[0.0, 0.0], [0.999, 0.1], [1.0, 1.0], [0.5, 0.25], [0.26, 1.0], [0.51, 0.26]])
    expected = np.zeros(16)
    for index in (0, 12, 15, 9, 7, 9):
        expected[index] += 1
    counts = pines_bin_counts(points, 4)
    assert counts.shape == (16,)
    np.testing.assert_array_equal(counts, expected)


def test_lgcp_follows_its_arguments_and_data_file(tmp_path) -> None:
    # Pins that data_path (point count N and bins), grid_size, signal_variance and beta all enter
    # log R = sum(x y - exp(x) / M^2) + log N(x; (log N - s2/2) 1, s2 exp(-|u - v| / (M beta))),
    # against a dense scipy reference built here (M = 3, N = 10, s2 = 0.7, beta = 0.2).
    rng = np.random.default_rng(0)
    points = rng.uniform(size=(10, 2))
    path = tmp_path / "pts.csv"
    np.savetxt(path, points, delimiter=",", header="x,y", comments="")
    energy = LGCP(data_path=path, grid_size=3, signal_variance=0.7, beta=0.2)
    mean = math.log(10) - 0.35
    assert energy.num_points == 10 and energy.prior_mean == pytest.approx(mean)
    assert energy.plot_bounds == pytest.approx((mean - 3 * math.sqrt(0.7), mean + 3 * math.sqrt(0.7)))
    counts, _, _ = np.histogram2d(points[:, 0], points[:, 1], bins=3, range=[[0, 1], [0, 1]])
    counts = counts.reshape(-1)
    i, j = np.meshgrid(np.arange(3), np.arange(3), indexing="ij")
    coords = np.stack([i.reshape(-1), j.reshape(-1)], axis=1).astype(np.float64)
    dist = np.sqrt(((coords[:, None] - coords[None]) ** 2).sum(-1))
    cov = 0.7 * np.exp(-dist / (3 * 0.2))
    x = mean + rng.normal(size=(4, 9))
    expected = stats.multivariate_normal(np.full(9, mean), cov).logpdf(x) + (x * counts - np.exp(x) / 9).sum(1)
    np.testing.assert_allclose(energy.log_reward(torch.tensor(x)).numpy(), expected, rtol=1e-12)


def test_documented_plot_bounds() -> None:
    # Pins the documented plotting ranges: GMM25 as the official plots, LGCP's prior mean +- 3 std.
    assert GMM25().plot_bounds == (-13.0, 13.0)
    lgcp = LGCP(grid_size=2)
    mean, std = math.log(126) - 1.91 / 2, math.sqrt(1.91)
    assert lgcp.plot_bounds == pytest.approx((mean - 3 * std, mean + 3 * std))


@pytest.mark.parametrize("grid_points", [1, 0, 2.5])
def test_many_well_refuses_a_grid_without_cells(grid_points: object) -> None:
    with pytest.raises(ValueError, match=r"ManyWell needs an int grid_points >= 2"):
        ManyWell(4, grid_points=grid_points)  # type: ignore[arg-type]
