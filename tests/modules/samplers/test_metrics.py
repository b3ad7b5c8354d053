"""Value tests of the sampler evaluation metrics (tenfold/modules/samplers/metrics.py)."""

import math

import pytest
import torch

from tenfold.modules.samplers.metrics import (
    delta_log_z,
    elbo,
    eubo,
    log_z_importance,
    logmeanexp,
    modes_hit,
    rbf_mmd2,
    wasserstein1,
    wasserstein2,
)

torch.set_num_threads(1)


def test_logmeanexp_and_elbo_by_hand() -> None:
    lw = torch.tensor([0.0, math.log(3.0)])
    # log((e^0 + e^log3) / 2) = log 2; mean = log(3) / 2
    assert log_z_importance(lw).item() == pytest.approx(math.log(2.0), abs=1e-7)
    assert logmeanexp(lw).item() == pytest.approx(math.log(2.0), abs=1e-7)
    assert elbo(lw).item() == pytest.approx(0.5 * math.log(3.0), abs=1e-7)
    assert eubo(lw).item() == pytest.approx(0.5 * math.log(3.0), abs=1e-7)


def test_logmeanexp_along_dim() -> None:
    x = torch.tensor([[0.0, 0.0], [math.log(2.0), math.log(4.0)]])
    out = logmeanexp(x, dim=1)
    assert out.shape == (2,)
    assert out.tolist() == pytest.approx([0.0, math.log(3.0)], abs=1e-7)


def test_importance_estimate_at_least_elbo_random() -> None:
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        lw = torch.randn(50, generator=gen) * 5.0 - 3.0
        assert log_z_importance(lw).item() >= elbo(lw).item()


def test_equal_weights_give_exact_log_z() -> None:
    lw = torch.full((7,), 164.69568, dtype=torch.float64)
    assert log_z_importance(lw).item() == pytest.approx(164.69568, abs=1e-12)
    assert elbo(lw).item() == pytest.approx(164.69568, abs=1e-12)


def test_stable_for_large_weights_in_float32_and_half() -> None:
    lw = torch.tensor([1000.0, 1000.0, 1000.0 + math.log(4.0)])
    # log((2 + 4) e^1000 / 3) = 1000 + log 2
    out = log_z_importance(lw)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(1000.0 + math.log(2.0), abs=1e-4)
    half = log_z_importance(torch.tensor([-80.0, -80.0], dtype=torch.float16))
    assert half.dtype == torch.float32 and half.item() == pytest.approx(-80.0)


def test_bounds_on_exact_discrete_toy() -> None:
    """Categorical toy where the samples have exactly the right proportions.

    Target R = [1, 2, 3] (Z = 6, p = R / 6), proposal q = [0.5, 0.3, 0.2], log w(k) = log R_k - log q_k.
    With samples in exact proportions: ELBO = log Z - KL(q || p), EUBO = log Z + KL(p || q),
    and the importance estimate is log sum_k q_k R_k / q_k = log Z exactly.
    """
    r = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    q = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    p = r / 6.0
    log_w = r.log() - q.log()
    from_q = log_w.repeat_interleave(torch.tensor([5, 3, 2]))  # 10 samples ~ q exactly
    from_p = log_w.repeat_interleave(torch.tensor([1, 2, 3]))  # 6 samples ~ p exactly
    kl_qp = (q * (q / p).log()).sum().item()
    kl_pq = (p * (p / q).log()).sum().item()
    log_z = math.log(6.0)
    assert log_z_importance(from_q).item() == pytest.approx(log_z, abs=1e-12)
    assert elbo(from_q).item() == pytest.approx(log_z - kl_qp, abs=1e-12)
    assert eubo(from_p).item() == pytest.approx(log_z + kl_pq, abs=1e-12)
    assert elbo(from_q).item() < log_z < eubo(from_p).item()


def test_delta_log_z() -> None:
    assert delta_log_z(torch.tensor(1.5), 2.0).item() == pytest.approx(0.5)
    assert delta_log_z(2.5, 2.0).item() == pytest.approx(0.5)
    assert delta_log_z(2.5, 2.0).dtype == torch.float64


def test_log_weights_shape_checked() -> None:
    with pytest.raises(ValueError, match=r"log_weights must have shape \[B\] with B >= 1, got \(2, 3\)"):
        elbo(torch.zeros(2, 3))
    # the check's own message, not logmeanexp's over an empty dimension
    with pytest.raises(ValueError, match=r"log_weights must have shape \[B\] with B >= 1, got \(0,\)"):
        log_z_importance(torch.zeros(0))


def test_wasserstein_of_shifted_cloud_equals_shift_norm() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 3, generator=gen)
    c = torch.tensor([0.3, -1.2, 2.0])
    norm_c = c.norm().item()
    y = x + c
    assert wasserstein2(x, y) == pytest.approx(norm_c, rel=1e-6)
    assert wasserstein2(x, y, squared=True) == pytest.approx(norm_c**2, rel=1e-6)
    assert wasserstein1(x, y) == pytest.approx(norm_c, rel=1e-6)


def test_wasserstein_of_identical_sets_is_zero_and_permutation_invariant() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(40, 2, generator=gen)
    perm = torch.randperm(40, generator=gen)
    assert wasserstein2(x, x[perm]) == pytest.approx(0.0, abs=1e-9)
    assert wasserstein1(x, x[perm]) == pytest.approx(0.0, abs=1e-9)


def test_wasserstein_unequal_sizes_by_hand() -> None:
    # two points at 0 and 2 vs one point at 1: every unit of mass moves distance 1
    x = torch.tensor([[0.0], [2.0]])
    y = torch.tensor([[1.0]])
    assert wasserstein2(x, y) == pytest.approx(1.0)
    # {0, 1} vs {0, 3}: optimal W2^2 = (0 + 4) / 2 = 2
    x2, y2 = torch.tensor([[0.0], [1.0]]), torch.tensor([[3.0], [0.0]])
    assert wasserstein2(x2, y2, squared=True) == pytest.approx(2.0)
    # where the distances moved differ, W1 (mean distance) and W2 (root mean squared) part:
    # {0, 1} -> {0, 3} moves 0 and 2, so W1 = 1 and W2 = sqrt(2)
    assert wasserstein1(x2, y2) == pytest.approx(1.0)
    assert wasserstein2(x2, y2) == pytest.approx(2.0**0.5)
    # unequal sizes, {0, 2} vs {1, 1, 4}: in 1-D, W1 is the area between the two CDFs,
    # 1/2 on [0, 1) + |1/2 - 2/3| on [1, 2) + |1 - 2/3| on [2, 4) = 1/2 + 1/6 + 2/3 = 4/3
    x3, y3 = torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0], [1.0], [4.0]])
    assert wasserstein1(x3, y3) == pytest.approx(4.0 / 3.0)


def test_rbf_mmd2_by_hand() -> None:
    x = torch.tensor([[0.0]])
    y = torch.tensor([[1.0]])
    expected = 2.0 - 2.0 * math.exp(-0.5)  # k(0,0)=k(1,1)=1, k(0,1)=exp(-1/2), sigma=1
    assert rbf_mmd2(x, y, bandwidths=(1.0,)).item() == pytest.approx(expected, abs=1e-7)
    z = torch.randn(30, 2, generator=torch.Generator().manual_seed(3))
    assert rbf_mmd2(z, z).item() == pytest.approx(0.0, abs=1e-12)
    # distance 2 and bandwidths 0.5, 2 (where s, s^2, d and d^2 all differ): sum over s of
    # exp(-d^2 / (2 s^2)) gives k(0, 2) = exp(-8) + exp(-1/2), k(0, 0) = k(2, 2) = 2
    far = rbf_mmd2(x, torch.tensor([[2.0]]), bandwidths=(0.5, 2.0)).item()
    assert far == pytest.approx(4.0 - 2.0 * (math.exp(-8.0) + math.exp(-0.5)), abs=1e-6)  # 2.786268, float32


def test_modes_hit_by_hand() -> None:
    modes = torch.tensor([[0.0, 0.0], [5.0, 0.0], [0.0, 5.0], [5.0, 5.0]])
    samples = torch.tensor([[0.1, -0.1], [0.2, 0.0], [5.0, 0.9], [4.0, 4.0], [2.5, 2.5]])
    # mode 0: hit (dist 0.14); mode 1: dist 0.9; mode 2: nearest 2.5*sqrt(2)=3.54 (none);
    # mode 3: dist sqrt(2)=1.41
    assert modes_hit(samples, modes, radius=1.0) == 2
    assert modes_hit(samples, modes, radius=1.5) == 3
    assert modes_hit(samples, modes, radius=0.05) == 0
    assert modes_hit(samples[:0], modes, radius=1.0) == 0
    # the radius itself counts (<=)
    assert modes_hit(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 0.0]]), radius=1.0) == 1
