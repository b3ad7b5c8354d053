"""DiffusionSampler: exactness of every objective at the known solution, hand-computed
trajectory log-probabilities, gradient signs, seeded determinism, RNG checkpointing, and a short
training run whose metric improves."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from functools import partial
from unittest.mock import PropertyMock, patch

import lightning as L
import pytest
import torch
from torch import Tensor, nn

from tenfold.modules.samplers import LOSSES, DiffusionSampler, SamplerNets
from tenfold.modules.samplers.metrics import rbf_mmd2, wasserstein2
from tenfold.modules.samplers.reference import BrownianReference, OUReference

torch.set_num_threads(1)

GFLOWNET_LOSSES = [name for name in LOSSES if name not in ("pis", "dds")]


class Gaussian(nn.Module):
    """``log R = log N(x; mean, var I) + log_scale`` (so ``log Z = log_scale``)."""

    def __init__(self, dim: int = 2, var: float = 1.0, mean: float = 0.0, log_scale: float = 0.0) -> None:
        super().__init__()
        self.dim, self.var, self.mean, self.log_Z = dim, var, mean, log_scale
        self.modes = None
        self.can_sample = True

    def log_reward(self, x: Tensor) -> Tensor:
        x = x.float()
        return -0.5 * ((x - self.mean) ** 2 / self.var + math.log(2 * math.pi * self.var)).sum(-1) + self.log_Z

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return self.mean + math.sqrt(self.var) * torch.randn(n, self.dim, generator=generator)


def log_normal(x: Tensor, mean: Tensor | float, var: Tensor | float) -> Tensor:
    return -0.5 * ((x - mean) ** 2 / var + math.log(2 * math.pi) + torch.log(torch.as_tensor(var))).sum(-1)


class ExactFlowNets(SamplerNets):
    """Flows of the Brownian reference against the target ``N(0, sigma2 I)``: the exact
    ``log F(x, t) = log N(x; 0, sigma2 t)`` (``log Z = 0`` at ``t = 0``), or for the
    forward-looking parametrization the residual ``t (log N(x; 0, sigma2 t) - log N(x; 0, sigma2))``."""

    def __init__(self, dim: int, sigma2: float, forward_looking: bool) -> None:
        super().__init__(dim, hidden_dim=16, conditional_flow=True)
        self.sigma2, self.forward_looking = sigma2, forward_looking

    def log_flow(self, x: Tensor, t: Tensor) -> Tensor:
        t = t.expand(x.shape[:-1]).unsqueeze(-1).clamp_min(1e-12)
        exact = -0.5 * (x**2 / (self.sigma2 * t) + torch.log(2 * math.pi * self.sigma2 * t)).sum(-1)
        exact = torch.where(t.squeeze(-1) > 1e-9, exact, torch.zeros_like(exact))
        if not self.forward_looking:
            return exact + 0.0 * self.flow(x, t.squeeze(-1)).squeeze(-1)
        target = -0.5 * (x**2 / self.sigma2 + math.log(2 * math.pi * self.sigma2)).sum(-1)
        return t.squeeze(-1) * (exact - target) + 0.0 * self.flow(x, t.squeeze(-1)).squeeze(-1)


def make_sampler(loss: str, dim: int = 2, sigma2: float = 2.0, num_steps: int = 10, **kwargs) -> DiffusionSampler:
    if loss in ("db", "subtb", "fl_subtb"):
        net = ExactFlowNets(dim, sigma2, forward_looking=loss == "fl_subtb")
    else:
        net = SamplerNets(dim, hidden_dim=16, **kwargs.pop("net_kwargs", {}))
    energy = kwargs.pop("energy", Gaussian(dim, var=sigma2))
    return DiffusionSampler(
        net, partial(torch.optim.Adam, lr=1e-3), energy=energy, loss=loss, num_steps=num_steps, sigma2=sigma2, rng_seed=0,
        **kwargs,
    )


@pytest.mark.parametrize("loss", LOSSES)
def test_every_loss_vanishes_at_the_exact_solution(loss: str) -> None:
    """A zero-drift policy is exact for the target that is the reference's own marginal at t = 1
    (Brownian: N(0, sigma2) from x_0 = 0; OU: its stationary law): every loss is 0 (KL: -log Z = 0),
    for forward trajectories and, for GFlowNet losses, backward ones."""
    sampler = make_sampler(loss)
    forward = sampler.simulate(torch.zeros(64, 2), reparametrize=loss in ("pis", "dds"))
    torch.testing.assert_close(forward.log_weights(), torch.zeros(64), atol=2e-5, rtol=0)
    assert abs(sampler.objective(forward).item()) < 1e-8 if loss not in ("pis", "dds") else abs(
        sampler.objective(forward).item()
    ) < 1e-5
    if loss in GFLOWNET_LOSSES:
        backward = sampler.simulate_backward(Gaussian(2, var=2.0).sample(64))
        assert abs(sampler.objective(backward).item()) < 1e-8


def test_learned_variance_and_backward_are_exact_at_initialization() -> None:
    sampler = make_sampler("tb", net_kwargs=dict(learned_variance=True, learned_backward=True))
    trajectories = sampler.simulate(torch.zeros(32, 2))
    torch.testing.assert_close(trajectories.log_weights(), torch.zeros(32), atol=2e-5, rtol=0)


def test_log_probabilities_match_hand_computation_for_two_steps() -> None:
    """T = 2, sigma2 = 1, a constant drift c: x_1 ~ N(dt c, dt), x_2 ~ N(x_1 + dt c, dt);
    p_B(x_1 | x_2) = N(x_2 / 2, dt / 2) and x_0 = 0 deterministically."""
    sampler = make_sampler("tb", sigma2=1.0, num_steps=2)
    drift = torch.tensor([0.7, -1.3])
    with torch.no_grad():
        sampler.net.drift.head[-1][-1].bias.copy_(drift)
    traj = sampler.simulate(torch.zeros(5, 2))
    x0, x1, x2 = traj.states.unbind(1)
    dt = 0.5
    assert torch.equal(x0, torch.zeros(5, 2))
    expected_pf = torch.stack([log_normal(x1, dt * drift, dt), log_normal(x2, x1 + dt * drift, dt)], dim=1)
    expected_pb = torch.stack([torch.zeros(5), log_normal(x1, x2 / 2, dt / 2)], dim=1)
    torch.testing.assert_close(traj.log_pf, expected_pf)
    torch.testing.assert_close(traj.log_pb, expected_pb)
    backward = sampler.simulate_backward(x2)
    y0, y1, y2 = backward.states.unbind(1)
    assert torch.equal(y2, x2) and torch.equal(y0, torch.zeros(5, 2))
    torch.testing.assert_close(
        backward.log_pf, torch.stack([log_normal(y1, dt * drift, dt), log_normal(x2, y1 + dt * drift, dt)], dim=1)
    )
    torch.testing.assert_close(backward.log_pb[:, 1], log_normal(y1, x2 / 2, dt / 2))


def assert_log_probs_of_both_directions(
    sampler: DiffusionSampler, expected_log_probs: Callable[[Tensor], tuple[Tensor, Tensor]]
) -> None:
    """Forward trajectories from 0 and backward ones from their terminal states have the
    ``[B, T]`` log p_F and log p_B that ``expected_log_probs(states)`` computes by hand."""
    forward = sampler.simulate(torch.zeros(6, 2))
    backward = sampler.simulate_backward(forward.terminal)
    for traj in (forward, backward):
        expected_pf, expected_pb = expected_log_probs(traj.states)
        torch.testing.assert_close(traj.log_pf, expected_pf)
        torch.testing.assert_close(traj.log_pb, expected_pb)


def test_learned_variance_and_backward_corrections_match_hand_computation() -> None:
    """T = 3, sigma2 = 1.5, dt = 1/3, with non-zero output biases (output weights stay zero, so
    the networks are constant): the drift network outputs (f, v), the backward network (m, w).

    Forward (nets.py, module.py ``_noise_std``): log_var = 4 tanh(v), x_{i+1} ~ N(x_i + dt f,
    sigma2 dt exp(log_var)). Backward (reference.py Brownian bridge, corrections as in
    nets.py ``backward_corrections`` and the official ``back_mean_correction``: the correction
    scales the shrink towards the origin): for i >= 1,
    p_B(x_i | x_{i+1}) = N(x_{i+1} (1 - (1 + 0.1 tanh m) / (i + 1)), sigma2 dt i / (i + 1) (1 + 0.1 tanh w)),
    and the step to x_0 = 0 is deterministic (log p_B = 0)."""
    sigma2, dt = 1.5, 1 / 3
    sampler = make_sampler(
        "tb", sigma2=sigma2, num_steps=3, net_kwargs=dict(learned_variance=True, learned_backward=True)
    )
    f, v = torch.tensor([0.7, -1.3]), torch.tensor([0.3, -0.2])
    m, w = torch.tensor([1.0, -2.0]), torch.tensor([-0.5, 1.5])
    with torch.no_grad():
        sampler.net.drift.head[-1][-1].bias.copy_(torch.cat([f, v]))
        sampler.net.backward_policy.head[-1][-1].bias.copy_(torch.cat([m, w]))
    forward_var = sigma2 * dt * torch.exp(4.0 * torch.tanh(v))
    mean_correction, var_correction = 1 + 0.1 * torch.tanh(m), 1 + 0.1 * torch.tanh(w)

    def expected_log_probs(states: Tensor) -> tuple[Tensor, Tensor]:
        log_pf = [log_normal(states[:, i + 1], states[:, i] + dt * f, forward_var) for i in range(3)]
        log_pb = [torch.zeros(states.shape[0])] + [
            log_normal(
                states[:, i],
                states[:, i + 1] * (1 - mean_correction / (i + 1)),
                sigma2 * dt * i / (i + 1) * var_correction,
            )
            for i in (1, 2)
        ]
        return torch.stack(log_pf, dim=1), torch.stack(log_pb, dim=1)

    assert_log_probs_of_both_directions(sampler, expected_log_probs)


def test_log_probabilities_take_the_networks_at_the_right_states_and_times() -> None:
    """T = 3, sigma2 = 1.5, with random networks (output weights too), so that where they are
    evaluated matters: log p_F(x_{i+1} | x_i) uses the drift network at (x_i, t_i), log p_B(x_i |
    x_{i+1}) the backward network at (x_{i+1}, t_{i+1}) (formulas as in the test above), for
    forward and backward trajectories alike."""
    sigma2, num_steps = 1.5, 3
    dt = 1 / num_steps
    sampler = make_sampler(
        "tb", sigma2=sigma2, num_steps=num_steps, net_kwargs=dict(learned_variance=True, learned_backward=True)
    )
    with torch.no_grad():
        for head in (sampler.net.drift.head, sampler.net.backward_policy.head):
            head[-1][-1].weight.normal_(0.0, 0.3)
            head[-1][-1].bias.normal_(0.0, 0.3)

    def expected_log_probs(states: Tensor) -> tuple[Tensor, Tensor]:
        log_pf, log_pb = [], [torch.zeros(states.shape[0])]
        for i in range(num_steps):
            drift, log_var = sampler.net(states[:, i], torch.tensor(i * dt))
            log_pf.append(log_normal(states[:, i + 1], states[:, i] + dt * drift, sigma2 * dt * log_var.exp()))
        for i in range(1, num_steps):
            mean_correction, var_correction = sampler.net.backward_corrections(states[:, i + 1], torch.tensor((i + 1) * dt))
            mean = states[:, i + 1] * (1 - mean_correction / (i + 1))
            log_pb.append(log_normal(states[:, i], mean, sigma2 * dt * i / (i + 1) * var_correction))
        return torch.stack(log_pf, dim=1), torch.stack(log_pb, dim=1)

    assert_log_probs_of_both_directions(sampler, expected_log_probs)


def test_backward_sampling_draws_with_the_network_at_the_later_state_and_time() -> None:
    """The states of ``simulate_backward`` replayed by hand from the same generator: for
    i = T-1, ..., 1, x_i = x_{i+1} (1 - m / (i + 1)) + sqrt(sigma2 dt i / (i + 1) v) eps, with
    the backward network's corrections (m, v) at (x_{i+1}, t_{i+1}) and eps ~ N(0, I) drawn
    [B, 1, D] per step; x_0 = 0. Random output layers, so the time the network sees matters."""
    sigma2, num_steps, batch = 1.5, 4, 5
    dt = 1 / num_steps
    sampler = make_sampler("tb", sigma2=sigma2, num_steps=num_steps, net_kwargs=dict(learned_backward=True))
    with torch.no_grad():
        sampler.net.backward_policy.head[-1][-1].weight.normal_(0.0, 1.0)
        sampler.net.backward_policy.head[-1][-1].bias.normal_(0.0, 1.0)
    terminal = torch.randn(batch, 2, generator=torch.Generator().manual_seed(1))
    states = sampler.simulate_backward(terminal, torch.Generator().manual_seed(5)).states

    generator = torch.Generator().manual_seed(5)
    x, expected = terminal, [terminal]
    with torch.no_grad():
        for i in reversed(range(1, num_steps)):
            mean_correction, var_correction = sampler.net.backward_corrections(x, torch.tensor((i + 1) * dt))
            noise = torch.randn(batch, 1, 2, generator=generator).squeeze(1)
            x = x * (1 - mean_correction / (i + 1)) + (sigma2 * dt * i / (i + 1) * var_correction).sqrt() * noise
            expected.append(x)
    expected.append(torch.zeros(batch, 2))
    torch.testing.assert_close(states, torch.stack(expected[::-1], dim=1))


def test_off_policy_states_carry_no_gradient_with_a_learned_variance() -> None:
    # TB trains log p_F of sampled states; the states themselves (mean and noise scale) must be
    # detached, or the gradient would also flow through where the samples landed
    sampler = make_sampler("tb", net_kwargs=dict(learned_variance=True))
    trajectories = sampler.simulate(torch.zeros(4, 2), exploration_std=0.5)
    assert not trajectories.states.requires_grad
    assert trajectories.log_pf.requires_grad
    assert sampler.simulate(torch.zeros(4, 2), reparametrize=True).states.requires_grad


def test_reparametrized_states_follow_the_learned_noise_scale() -> None:
    # PIS and DDS differentiate x_{i+1} = mean + std * noise through std as well as the mean: the
    # gradient of the terminal states with respect to the log-variance output's bias equals the
    # finite difference of a simulation with the noise held fixed
    torch.manual_seed(0)
    sampler = make_sampler("pis", net_kwargs=dict(learned_variance=True), num_steps=4)
    start, log_start = torch.zeros(3, 2), torch.zeros(3)
    noises = torch.randn(4, 3, 2, generator=torch.Generator().manual_seed(1))
    log_var_bias = sampler.net.drift.head[-1][-1].bias

    def terminal_sum() -> Tensor:
        trajectories = sampler._simulate_from(start, log_start, noises, 0.0, reparametrize=True, with_reward=False)
        return trajectories.terminal.sum()

    terminal_sum().backward()
    gradient = log_var_bias.grad[2:].clone()
    assert gradient.abs().min() > 1e-3
    eps = 1e-3
    finite_difference = torch.empty(2)
    with torch.no_grad():
        for k in range(2):
            log_var_bias[2 + k] += eps
            plus = terminal_sum()
            log_var_bias[2 + k] -= 2 * eps
            minus = terminal_sum()
            log_var_bias[2 + k] += eps
            finite_difference[k] = (plus - minus) / (2 * eps)
    torch.testing.assert_close(gradient, finite_difference, rtol=1e-2, atol=1e-4)


def test_optimizer_groups_take_their_own_learning_rates() -> None:
    net = SamplerNets(2, hidden_dim=8, conditional_flow=True, learned_backward=True, langevin=True)
    sampler = DiffusionSampler(
        net, partial(torch.optim.Adam, lr=1e-3), energy=Gaussian(2), loss="db", flow_lr=0.1, backward_lr=7e-4
    )
    groups = sampler.configure_optimizers().param_groups
    assert [group["lr"] for group in groups] == [1e-3, 0.1, 7e-4]
    assert [group["name"] for group in groups] == ["policy", "flows", "backward"]  # the LR monitor's names
    by_group = [{id(p) for p in group["params"]} for group in groups]

    def trainable(*params: nn.Parameter) -> set[int]:
        return {id(p) for p in params if p.requires_grad}

    assert by_group[0] == trainable(*net.drift.parameters(), *net.langevin_scaling.parameters())
    assert by_group[1] == trainable(net.log_z, *net.flow.parameters())
    assert by_group[2] == trainable(*net.backward_policy.parameters())


@pytest.mark.parametrize("learned", [True, False], ids=["learned_variance_and_backward", "fixed"])
def test_networks_over_many_steps_run_in_chunks_of_steps_with_the_same_results(monkeypatch, learned: bool) -> None:
    """Where a network runs over all steps of a batch at once (backward trajectories' drift, the
    learned backward policy, the flows), the CPU splits the call into chunks of consecutive steps
    under a row budget: batch 3 and a budget of 7 rows give chunks of 2, 2 and 1 steps for T = 5,
    with the one-call outputs and gradients; without learned variance or backward policy the
    networks' missing outputs stay None."""
    import tenfold.modules.samplers.module as sampler_module

    def run(budget: int | None) -> tuple[list[Tensor], list[Tensor], dict[str, int]]:
        if budget is None:
            monkeypatch.delitem(sampler_module._ROWS_PER_NETWORK_CALL, "cpu")
        else:
            monkeypatch.setitem(sampler_module._ROWS_PER_NETWORK_CALL, "cpu", budget)
        torch.manual_seed(0)
        net = SamplerNets(2, hidden_dim=16, learned_variance=learned, learned_backward=learned, conditional_flow=True)
        sampler = DiffusionSampler(
            net, partial(torch.optim.Adam), energy=Gaussian(2, var=2.0), loss="fl_subtb", num_steps=5, sigma2=2.0,
            rng_seed=0,
        )
        networks = {"drift": net.drift, "flow": net.flow}
        if learned:
            networks["backward"] = net.backward_policy
        calls = dict.fromkeys(networks, 0)
        with torch.no_grad():
            for name, network in networks.items():
                network.head[-1][-1].weight.normal_(0.0, 0.3)
                network.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
        backward = sampler.simulate_backward(torch.randn(3, 2, generator=torch.Generator().manual_seed(1)))
        outputs = [backward.states, backward.log_pf, backward.log_pb, sampler.log_flows(backward)]
        calls_made = dict(calls)
        loss = sampler.objective(backward)
        grads = torch.autograd.grad(loss, [p for p in net.parameters() if p.requires_grad])
        return outputs, list(grads), calls_made

    chunked, chunked_grads, chunked_calls = run(7)
    whole, whole_grads, whole_calls = run(None)
    expected_chunked, expected_whole = {"drift": 3, "flow": 3}, {"drift": 1, "flow": 1}
    if learned:  # the backward policy also samples the 4 stochastic steps (no grad, one call each; x_0 is fixed)
        expected_chunked["backward"], expected_whole["backward"] = 4 + 3, 4 + 1
    assert chunked_calls == expected_chunked
    assert whole_calls == expected_whole
    torch.testing.assert_close(chunked, whole)
    torch.testing.assert_close(chunked_grads, whole_grads)


def test_backward_trajectories_sample_the_brownian_bridge() -> None:
    """Without a learned backward policy, x_i given x_T is the Brownian bridge's marginal
    N(t_i x_T, sigma2 t_i (1 - t_i)), and x_0 = 0; 20,000 draws from one terminal state, checked
    within 4 standard errors (mean: sqrt(var / N); variance: var sqrt(2 / N))."""
    sigma2, num_steps, n = 2.0, 4, 20_000
    sampler = make_sampler("tb", sigma2=sigma2, num_steps=num_steps)
    terminal = torch.tensor([2.0, -1.0])
    states = sampler.simulate_backward(terminal.expand(n, 2), torch.Generator().manual_seed(0)).states
    assert torch.equal(states[:, 0], torch.zeros(n, 2)) and torch.equal(states[:, -1], terminal.expand(n, 2))
    for i in range(1, num_steps):
        t = i / num_steps
        var = sigma2 * t * (1 - t)
        x = states[:, i]
        assert (x.mean(0) - t * terminal).abs().max() < 4 * math.sqrt(var / n), i
        assert (x.var(0) - var).abs().max() < 4 * var * math.sqrt(2 / n), i


@pytest.mark.parametrize("loss", ["db", "subtb", "fl_subtb"])
def test_flow_losses_use_the_flow_network_inside_and_the_reward_at_the_end(loss: str) -> None:
    """log_flows: the flow network at (x_i, t_i) for i < T (plus the forward-looking term
    (1 - t) log N(x; 0, sigma2 t) + t log R(x) for FL-SubTB inside), and log R(x_T) at the end."""
    energy = Gaussian(2, var=2.0, mean=1.0, log_scale=0.5)
    sampler = DiffusionSampler(
        SamplerNets(2, hidden_dim=16, conditional_flow=True), partial(torch.optim.Adam), energy=energy, loss=loss,
        num_steps=4, sigma2=2.0, rng_seed=0,
    )
    traj = sampler.simulate(torch.zeros(8, 2))
    log_flows = sampler.log_flows(traj)
    times = torch.arange(5) / 4
    network = sampler.net.log_flow(traj.states[:, :-1], times[:-1])
    if loss == "fl_subtb":
        inner, t = traj.states[:, 1:-1], times[1:-1]
        reference = -0.5 * (inner**2 / (2.0 * t[:, None]) + torch.log(2 * math.pi * 2.0 * t[:, None])).sum(-1)
        network[:, 1:] += (1 - t) * reference + t * energy.log_reward(inner)
    torch.testing.assert_close(log_flows[:, :-1], network)
    torch.testing.assert_close(log_flows[:, -1], energy.log_reward(traj.terminal))


def test_ou_reference_with_a_constant_drift_matches_hand_computation() -> None:
    """DDS, T = 2, sigma2 = 2, beta = 2, a constant drift f. reference.py's OU discretization:
    alpha = 1 - exp(-beta dt) = 1 - e^-1, x_0 ~ N(0, sigma2), x_{i+1} ~ N(a x_i + b f, c^2) with
    a = sqrt(1 - alpha) = e^-1/2, b = 2 sigma2 (1 - a), c^2 = sigma2 alpha; backward
    p_B(x_i | x_{i+1}) = N(a x_{i+1}, sigma2 alpha) at every step (no fixed start)."""
    sigma2 = 2.0
    sampler = make_sampler("dds", sigma2=sigma2, num_steps=2, ou_beta=2.0)
    f = torch.tensor([0.8, -1.6])
    with torch.no_grad():
        sampler.net.drift.head[-1][-1].bias.copy_(f)
    alpha = 1 - math.exp(-1.0)
    a, b, c2 = math.exp(-0.5), 2 * sigma2 * (1 - math.exp(-0.5)), sigma2 * alpha
    traj = sampler.simulate(torch.zeros(4000, 2), generator=torch.Generator().manual_seed(0))
    x0, x1, x2 = traj.states.unbind(1)
    torch.testing.assert_close(traj.log_start, log_normal(x0, 0.0, sigma2))
    expected_pf = torch.stack([log_normal(x1, a * x0 + b * f, c2), log_normal(x2, a * x1 + b * f, c2)], dim=1)
    torch.testing.assert_close(traj.log_pf, expected_pf)
    expected_pb = torch.stack([log_normal(x0, a * x1, c2), log_normal(x1, a * x2, c2)], dim=1)
    torch.testing.assert_close(traj.log_pb, expected_pb)
    # the states are sampled around that mean: x_{i+1} - a x_i has mean b f (standard error c / sqrt(4000))
    for x, x_next in ((x0, x1), (x1, x2)):
        assert ((x_next - a * x).mean(0) - b * f).abs().max() < 4 * math.sqrt(c2 / 4000)


def test_ou_reference_keeps_its_stationary_law() -> None:
    """The OU backward kernel composed with the stationary law N(0, sigma2) gives N(0, sigma2)."""
    reference = OUReference(num_steps=4, sigma2=3.0, beta=5.0)
    generator = torch.Generator().manual_seed(0)
    x = math.sqrt(3.0) * torch.randn(200_000, 1, 1, generator=generator)
    mean, var = reference.backward_mean_var(x, torch.tensor([1]), None, None)
    y = mean + var.sqrt() * torch.randn(mean.shape, generator=generator)
    assert abs(y.var().item() - 3.0) < 0.05  # standard error 3 sqrt(2 / 200000) = 0.0095
    a, b, c = reference.forward_coefficients()
    assert abs(a**2 + c**2 / 3.0 - 1.0) < 1e-12


def test_brownian_backward_is_the_bridge() -> None:
    reference = BrownianReference(num_steps=4, sigma2=2.0)
    x_next = torch.ones(1, 4, 1)
    mean, var = reference.backward_mean_var(x_next, torch.arange(4), None, None)
    torch.testing.assert_close(mean.flatten()[1:], torch.tensor([0.5, 2 / 3, 0.75]))  # step 0 is deterministic
    torch.testing.assert_close(var.flatten()[1:], 2.0 * 0.25 * torch.tensor([0.5, 2 / 3, 0.75]))
    assert reference.stochastic_steps().tolist() == [False, True, True, True]


def test_trajectory_balance_gradient_moves_log_z_towards_the_truth() -> None:
    sampler = make_sampler("tb", energy=Gaussian(2, var=2.0, log_scale=3.0))
    sampler.objective(sampler.simulate(torch.zeros(64, 2))).backward()
    assert sampler.net.log_z.grad.item() < 0  # log Z = 0 < 3: gradient descent raises it


@pytest.mark.parametrize("loss", LOSSES)
def test_gradient_pushes_the_drift_towards_a_shifted_target(loss: str) -> None:
    """Target N((1.5, 1.5), sigma2): the descent direction of the drift's output bias points to +."""
    sampler = make_sampler(loss, energy=Gaussian(2, var=2.0, mean=1.5))
    sampler.objective(sampler.simulate(torch.zeros(256, 2), reparametrize=loss in ("pis", "dds"))).backward()
    bias_grad = sampler.net.drift.head[-1][-1].bias.grad
    assert (bias_grad < 0).all(), bias_grad


def test_seeded_determinism_and_rng_checkpoint_roundtrip() -> None:
    first = make_sampler("tb").simulate(torch.zeros(8, 2)).states
    assert torch.equal(first, make_sampler("tb").simulate(torch.zeros(8, 2)).states)
    sampler = make_sampler("tb")
    sampler.simulate(torch.zeros(8, 2))
    checkpoint: dict = {}
    sampler.on_save_checkpoint(checkpoint)
    continuation = sampler.simulate(torch.zeros(8, 2)).states
    restored = make_sampler("tb")
    restored.on_load_checkpoint(checkpoint)
    assert torch.equal(restored.simulate(torch.zeros(8, 2)).states, continuation)


def test_every_rank_evaluates_with_rank_zeros_seed() -> None:
    # Without rng_seed the evaluation seed comes from torch.initial_seed(), which differs between
    # DDP ranks after StepSeed: the sampler takes rank 0's (broadcast) and keeps it.
    from types import SimpleNamespace

    sampler = DiffusionSampler(SamplerNets(2, hidden_dim=8), partial(torch.optim.Adam), energy=Gaussian(2), rng_seed=None)
    broadcasts = []

    def broadcast(value: int, src: int) -> int:
        broadcasts.append((value, src))
        return 4242

    def all_gather(tensor: Tensor, group: object = None, sync_grads: bool = False) -> Tensor:
        return torch.stack([torch.zeros_like(tensor), tensor])  # rank 0's, then this rank's

    sampler._trainer = SimpleNamespace(
        world_size=2, global_rank=1, strategy=SimpleNamespace(broadcast=broadcast, all_gather=all_gather)
    )
    torch.manual_seed(7)
    first = sampler.evaluation_generator(0, "val").initial_seed()
    torch.manual_seed(8)
    assert sampler.evaluation_generator(0, "val").initial_seed() == first
    assert broadcasts == [(7, 0)] and sampler._evaluation_seed == 4242
    checkpoint: dict = {}
    sampler.on_save_checkpoint(checkpoint)
    assert checkpoint["sampler_evaluation_seed"] == 4242
    # every rank's training stream, [world size, state]: this rank resumes its own row
    assert torch.equal(checkpoint["sampler_rng_state"][1], sampler._rng().get_state())


def test_the_evaluation_seed_comes_back_from_the_checkpoint_and_is_every_ranks() -> None:
    # Without rng_seed it is torch.initial_seed() at the first evaluation: a resumed process
    # (another initial seed) must evaluate with the saved one. Every rank draws rank 0's noise, so
    # that the metrics of a checkpoint do not depend on the number of processes.
    from types import SimpleNamespace

    def make(rank: int) -> DiffusionSampler:
        sampler = DiffusionSampler(SamplerNets(2, hidden_dim=8), None, energy=Gaussian(2), rng_seed=None)
        sampler._trainer = SimpleNamespace(
            world_size=2,
            global_rank=rank,
            strategy=SimpleNamespace(
                broadcast=lambda value, src: value,
                all_gather=lambda tensor, group=None, sync_grads=False: torch.stack([tensor, tensor]),
            ),
        )
        return sampler

    torch.manual_seed(7)
    original = make(0)
    checkpoint: dict = {}
    original.on_save_checkpoint(checkpoint)
    torch.manual_seed(8)
    resumed = make(0)
    resumed.on_load_checkpoint(checkpoint)
    assert resumed.evaluation_generator(0, "val").initial_seed() == original.evaluation_generator(0, "val").initial_seed()
    torch.manual_seed(7)
    other_rank = make(1)
    assert other_rank.evaluation_generator(0, "val").initial_seed() == original.evaluation_generator(0, "val").initial_seed()
    batch = {"x0": torch.zeros(64, 2), "target_samples": Gaussian(2).sample(64, torch.Generator().manual_seed(0))}
    other_rank.net.load_state_dict(original.net.state_dict())
    torch.testing.assert_close(
        other_rank.evaluate(batch, other_rank.evaluation_generator(0, "val")),
        original.evaluate(batch, original.evaluation_generator(0, "val")),
    )


@pytest.mark.parametrize("stored_device", [True, False], ids=["device_stored", "older_checkpoint"])
def test_a_stream_saved_on_another_device_type_is_reseeded_with_a_warning(stored_device: bool) -> None:
    # A CUDA generator state (16 bytes) cannot be set on a CPU generator (torch raises an opaque
    # size error): the sampler warns and continues with its seeded stream instead.
    checkpoint: dict = {"sampler_rng_state": torch.zeros(16, dtype=torch.uint8)}
    if stored_device:
        checkpoint["sampler_rng_device"] = "cuda"
    restored = make_sampler("tb")
    restored.on_load_checkpoint(checkpoint)
    with pytest.warns(UserWarning, match="saved on cuda and cannot be restored on cpu"):
        states = restored.simulate(torch.zeros(8, 2)).states
    assert torch.equal(states, make_sampler("tb").simulate(torch.zeros(8, 2)).states)


@pytest.mark.parametrize(
    ("decay_steps", "step", "expected"),
    [(10, 0, 0.8), (10, 5, 0.4), (10, 8, 0.16), (10, 10, 0.0), (10, 25, 0.0), (0, 1000, 0.8)],
)
def test_exploration_std_decays_linearly_with_the_global_step(decay_steps: int, step: int, expected: float) -> None:
    """Docstring: ``exploration_std`` decays linearly to 0 over ``exploration_decay_steps``
    optimizer steps (0: constant): ``e(step) = e max(0, 1 - step / decay)``, here with e = 0.8."""
    sampler = make_sampler("tb", exploration_std=0.8, exploration_decay_steps=decay_steps)
    with patch.object(type(sampler), "global_step", new_callable=PropertyMock, return_value=step):
        assert sampler.exploration_std() == pytest.approx(expected, abs=1e-12)


def test_exploration_adds_its_variance_to_every_step() -> None:
    """Zero drift, Brownian reference: each step adds independent noise of variance
    sigma2 dt + e^2 (``sqrt(std^2 + e^2)``) = 0.2 + 0.25. The increments have mean exactly 0, so
    each step's variance estimate is the mean of its squared increments over N D = 8000
    independent coordinates, with standard error 0.45 sqrt(2 / 8000) = 0.0071."""
    sampler = make_sampler("tb", sigma2=2.0, num_steps=10)
    generator = torch.Generator().manual_seed(0)
    states = sampler.simulate(torch.zeros(4000, 2), exploration_std=0.5, generator=generator).states
    expected_var = 2.0 / 10 + 0.5**2
    step_vars = states.diff(dim=1).pow(2).mean(dim=(0, 2))
    standard_error = expected_var * math.sqrt(2 / (4000 * 2))
    assert ((step_vars - expected_var).abs() < 4 * standard_error).all(), step_vars


def test_explored_trajectories_are_scored_by_the_policy_itself() -> None:
    """T = 2, sigma2 = 1, constant drift f, exploration e = 1.5: the states are sampled with the
    widened noise, but log p_F is the policy's own N(x_i + dt f, sigma2 dt) and log p_B the
    bridge N(x_2 / 2, dt / 2) (as in the unexplored hand computation above)."""
    sampler = make_sampler("tb", sigma2=1.0, num_steps=2)
    drift = torch.tensor([0.7, -1.3])
    with torch.no_grad():
        sampler.net.drift.head[-1][-1].bias.copy_(drift)
    traj = sampler.simulate(torch.zeros(5, 2), exploration_std=1.5)
    x0, x1, x2 = traj.states.unbind(1)
    dt = 0.5
    expected_pf = torch.stack([log_normal(x1, x0 + dt * drift, dt), log_normal(x2, x1 + dt * drift, dt)], dim=1)
    torch.testing.assert_close(traj.log_pf, expected_pf)
    torch.testing.assert_close(traj.log_pb, torch.stack([torch.zeros(5), log_normal(x1, x2 / 2, dt / 2)], dim=1))


def test_invalid_configurations_are_explained() -> None:
    with pytest.raises(ValueError, match="unknown loss"):
        make_sampler("kl")
    with pytest.raises(ValueError, match="reference=ou"):
        make_sampler("dds", reference="brownian")
    with pytest.raises(ValueError, match="conditional_flow=True"):
        DiffusionSampler(SamplerNets(2, hidden_dim=8), partial(torch.optim.Adam), loss="db")
    with pytest.raises(ValueError, match="dimension 3"):
        make_sampler("tb", energy=Gaussian(3))
    with pytest.raises(ValueError, match="must be >= 0"):
        make_sampler("tb", exploration_std=-0.1)
    with pytest.raises(ValueError, match="must be >= 0"):
        make_sampler("tb", exploration_std=0.1, exploration_decay_steps=-5)
    for n in (-1, 2.5):
        with pytest.raises(ValueError, match=re.escape(f"sample(n) takes a positive int number of samples, got {n!r}")):
            make_sampler("tb").sample(n)
    for num_steps in ("ten", 2.5, 0):  # e.g. model.num_steps=ten
        with pytest.raises(ValueError, match=re.escape(f"num_steps must be an int >= 1 (model.num_steps), got {num_steps!r}")):
            make_sampler("tb", num_steps=num_steps)
    with pytest.raises(ValueError, match="off-policy"):
        make_sampler("pis", exploration_std=0.1)
    # e.g. loaded from a checkpoint without its target: simulating names what to pass
    without_target = DiffusionSampler(SamplerNets(2, hidden_dim=8), partial(torch.optim.Adam), loss="tb")
    with pytest.raises(RuntimeError, match=r"no target: pass energy=\.\.\. \(also to load_from_checkpoint\)"):
        without_target.simulate(torch.zeros(4, 2))


def test_a_sampler_with_its_own_target_warns_about_another_from_the_datamodule() -> None:
    """The module's target wins over the datamodule's; a different one is a warning, not a silent
    mismatch between what trains and what is evaluated against."""
    from tenfold.datamodules.samplers.datamodule import EnergyDataModule
    from tenfold.datamodules.samplers.energies import GMM25, GMM40

    sampler = make_sampler("tb", energy=GMM25())
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_checkpointing=False)
    trainer.datamodule = EnergyDataModule(GMM40(), batch_size=4, steps_per_epoch=1, eval_batch_size=4)
    sampler.trainer = trainer
    with pytest.warns(UserWarning, match="keeps its own target, GMM25, and ignores the datamodule's, GMM40"):
        sampler.setup("fit")
    assert isinstance(sampler.energy, GMM25)


@pytest.mark.parametrize("precision", ["bf16-true", "16-true", "64-true"])
def test_true_reduced_or_double_precision_is_refused_with_the_mixed_alternative(precision: str) -> None:
    # they would cast the parameters, not the float32 states: a dtype error deep in the network
    sampler = make_sampler("tb")
    sampler.trainer = L.Trainer(accelerator="cpu", precision=precision, logger=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match=f"trainer.precision={precision} would cast the parameters: use trainer.precision=bf16-mixed"):
        sampler.setup("fit")
    sampler.trainer = L.Trainer(accelerator="cpu", precision="bf16-mixed", logger=False, enable_progress_bar=False)
    sampler.setup("fit")


def test_a_sampler_without_an_optimizer_samples_and_refuses_to_train() -> None:
    sampler = DiffusionSampler(SamplerNets(2, hidden_dim=8), energy=Gaussian(2), loss="tb", num_steps=4)
    assert sampler.sample(3).shape == (3, 2)
    with pytest.raises(ValueError, match="built without an optimizer: pass optimizer="):
        sampler.configure_optimizers()


def test_evaluation_metrics_are_exact_for_the_exact_sampler() -> None:
    """The exact sampler's log-Z estimates are exact, and its W2, W1 and MMD^2 to target samples
    are of the size of those between two independent target samples (finite-sample noise only)."""
    sampler = make_sampler("tb")
    generator = torch.Generator().manual_seed(0)
    target, other = Gaussian(2, var=2.0).sample(256, generator), Gaussian(2, var=2.0).sample(256, generator)
    metrics = sampler.evaluate({"x0": torch.zeros(256, 2), "target_samples": target})
    for name in ("elbo", "log_z_is", "eubo", "delta_log_z", "delta_log_z_rw"):
        assert abs(metrics[name].item()) < 1e-4, name
    assert 0 < metrics["w2"].item() < 1.5 * wasserstein2(other, target)
    assert 0 < metrics["w1"].item() <= metrics["w2"].item()  # W1 <= W2 (Jensen)
    assert 0 < metrics["mmd2"].item() < 1.5 * rbf_mmd2(other, target).item()
    # far from a distant target sample
    shifted = sampler.evaluate({"x0": torch.zeros(256, 2), "target_samples": target + 3.0})
    assert shifted["w1"] > 2.0 and shifted["mmd2"] > 10 * metrics["mmd2"]


def test_evaluation_metrics_of_an_inexact_sampler_follow_their_definitions() -> None:
    """A sampler with a constant drift against N(0, 2) scaled by e^0.7 (log Z = 0.7), with modes
    at (0, 0) and (50, 50): the metrics are the metrics.py estimators of the same forward and
    backward trajectories (the evaluation's noise replayed from the same seed), |estimate - log Z|
    for the two Delta log Z, the official MMD bandwidths, and one mode hit of two."""
    from tenfold.modules.samplers.metrics import eubo, log_z_importance, wasserstein1

    energy = Gaussian(2, var=2.0, log_scale=0.7)
    energy.modes = torch.tensor([[0.0, 0.0], [50.0, 50.0]])
    sampler = make_sampler("tb", energy=energy)
    with torch.no_grad():
        sampler.net.drift.head[-1][-1].bias.copy_(torch.tensor([0.8, -0.4]))
    target = energy.sample(128, torch.Generator().manual_seed(1))
    batch = {"x0": torch.zeros(128, 2), "target_samples": target}
    metrics = sampler.evaluate(batch, torch.Generator().manual_seed(2))
    replay = torch.Generator().manual_seed(2)
    forward = sampler.simulate(batch["x0"], generator=replay)
    log_weights = forward.log_weights()
    assert log_weights.std() > 0.1  # not exact: the estimators differ
    torch.testing.assert_close(metrics["elbo"], log_weights.mean())
    torch.testing.assert_close(metrics["log_z_is"], log_z_importance(log_weights))
    assert metrics["log_z_is"] > metrics["elbo"]  # Jensen, strictly for unequal weights
    torch.testing.assert_close(metrics["delta_log_z"], (metrics["elbo"] - 0.7).abs())
    torch.testing.assert_close(metrics["delta_log_z_rw"], (metrics["log_z_is"] - 0.7).abs())
    torch.testing.assert_close(metrics["eubo"], eubo(sampler.simulate_backward(target, replay).log_weights()))
    samples = forward.terminal
    assert metrics["w2"].item() == pytest.approx(wasserstein2(samples, target))
    assert metrics["w1"].item() == pytest.approx(wasserstein1(samples, target))
    torch.testing.assert_close(metrics["mmd2"], rbf_mmd2(samples, target, bandwidths=(0.01, 0.1, 1.0, 10.0, 100.0)))
    assert metrics["modes_hit"].item() == 1.0


def test_validation_uses_the_same_noise_every_time_and_not_the_training_stream() -> None:
    """Evaluating twice gives identical metrics (a fixed evaluation batch: the same start states
    and noise), and however often a run validates, its training stream is where it was."""
    from torch.utils.data import DataLoader

    sampler = make_sampler("tb", net_kwargs=dict(langevin=True))
    training_stream = sampler._rng().get_state()
    loader = DataLoader([{"x0": torch.zeros(64, 2)}, {"x0": torch.zeros(64, 2)}], batch_size=None)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    first = trainer.validate(sampler, dataloaders=loader, verbose=False)[0]
    second = trainer.validate(sampler, dataloaders=loader, verbose=False)[0]
    assert first == second and first["val/elbo"] != 0.0
    assert torch.equal(sampler._rng().get_state(), training_stream)
    # each evaluation batch and each stage has a stream of its own
    streams = [sampler.evaluation_generator(i, stage) for i, stage in ((0, "val"), (1, "val"), (0, "test"))]
    elbos = [sampler.evaluate({"x0": torch.zeros(64, 2)}, stream)["elbo"].item() for stream in streams]
    assert len(set(elbos)) == 3
    # the test stage logs the mean over its two batches, each with its test stream
    second_test_batch = sampler.evaluate({"x0": torch.zeros(64, 2)}, sampler.evaluation_generator(1, "test"))
    test_elbo = (elbos[2] + second_test_batch["elbo"].item()) / 2
    assert trainer.test(sampler, dataloaders=loader, verbose=False)[0]["test/elbo"] == pytest.approx(test_elbo, rel=1e-5)
    with pytest.raises(ValueError, match="stage must be"):
        sampler.evaluation_generator(0, "train")


@pytest.mark.parametrize("per_dimension", [True, False])
@pytest.mark.parametrize("grad_clip", [2.0, None])
def test_langevin_drift_is_network_plus_scaled_clipped_gradient(per_dimension: bool, grad_clip: float | None) -> None:
    """nets.py: f(x, t) = NN(x, t) + s(t) * clip(grad log R, -clip, clip) elementwise; at
    initialization NN = 0 (zero output layer) and s = 0.01 (``init_bias``), one scale per
    dimension or one for all. Then with the scaling's output bias set to c (its output weight is
    zero, so s = c) and a random drift output layer, f = NN + c * clip(grad)."""
    dim = 3
    net = SamplerNets(
        dim, hidden_dim=16, langevin=True, langevin_scaling_per_dimension=per_dimension, langevin_grad_clip=grad_clip
    )
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(4, dim, generator=generator)
    t = torch.tensor(0.3)
    grad = torch.tensor([[5.0, -7.0, 0.5], [-1.0, 1.9, -2.5], [0.0, 3.0, -0.1], [10.0, -10.0, 1.0]])
    clipped = grad.clamp(-grad_clip, grad_clip) if grad_clip is not None else grad
    assert net.langevin_scaling(t).shape == (dim if per_dimension else 1,)
    drift, log_var = net(x, t, grad)
    assert log_var is None
    torch.testing.assert_close(drift, 0.01 * clipped)
    c = torch.tensor([0.3, -0.5, 2.0] if per_dimension else [0.7])
    with torch.no_grad():
        net.langevin_scaling.net.net[-1].bias.copy_(c)
        net.drift.head[-1][-1].weight.normal_(generator=generator)
    network_drift = net.drift(x, t)
    assert network_drift.abs().min() > 0
    torch.testing.assert_close(net(x, t, grad)[0], network_drift + c * clipped)


def test_drift_clip_bounds_the_drift_with_its_langevin_term() -> None:
    """nets.py: ``drift_clip`` clips NN + s(t) * grad log R, not NN alone (official ``gfn.py``
    adds the Langevin term, then clips): with s = 1 and a gradient of 5 the drift stays at 2."""
    net = SamplerNets(2, hidden_dim=8, langevin=True, langevin_grad_clip=None, drift_clip=2.0)
    with torch.no_grad():
        net.langevin_scaling.net.net[-1].bias.fill_(1.0)
    x = torch.zeros(3, 2)
    drift, _ = net(x, torch.tensor(0.5), torch.tensor([[5.0, -5.0], [1.5, 0.0], [-2.5, 1.0]]))
    torch.testing.assert_close(drift, torch.tensor([[2.0, -2.0], [1.5, 0.0], [-2.0, 1.0]]))


def test_langevin_parametrization_evaluates_inside_inference_mode() -> None:
    """Lightning validates under torch.inference_mode; the Langevin term still needs grad log R.
    At initialization the drift is 0.01 grad log R = -0.01 x / sigma2 for the target N(0, sigma2)
    (sigma2 = 2), so the trajectories are no longer exact: the log weights are finite and not 0
    (the exact zero-drift sampler's), and the same as outside inference mode."""
    sampler = make_sampler("tb", net_kwargs=dict(langevin=True))
    x = torch.randn(8, 2, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        drift, _ = sampler._policy(x, torch.tensor(0.5))
        metrics = sampler.evaluate({"x0": torch.zeros(32, 2)}, torch.Generator().manual_seed(1))
    torch.testing.assert_close(drift, -0.01 * x / 2.0)
    assert torch.isfinite(metrics["elbo"]) and metrics["elbo"] != 0
    outside = sampler.evaluate({"x0": torch.zeros(32, 2)}, torch.Generator().manual_seed(1))
    assert torch.equal(outside["elbo"], metrics["elbo"])


def test_compiled_networks_give_the_eager_loss_gradients_and_checkpoint_keys() -> None:
    eager = make_sampler("tb", num_steps=4, net_kwargs={"langevin": True})
    compiled = make_sampler("tb", num_steps=4, net_kwargs={"langevin": True}, compile_networks=True)
    compiled.net.load_state_dict(eager.net.state_dict())
    with torch.no_grad():
        for sampler in (eager, compiled):
            sampler.net.drift.head[-1][-1].weight.normal_(generator=torch.Generator().manual_seed(1))
    assert compiled.state_dict().keys() == eager.state_dict().keys()
    losses = []
    for sampler in (eager, compiled):
        loss = sampler.objective(sampler.simulate(torch.zeros(32, 2)))
        loss.backward()
        losses.append(loss.detach())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-5)
    for (name, p_eager), (_, p_compiled) in zip(eager.net.named_parameters(), compiled.net.named_parameters()):
        if p_eager.grad is not None:
            torch.testing.assert_close(p_compiled.grad, p_eager.grad, rtol=1e-4, atol=1e-6, msg=name)


# ------------------------------------------------------------------------------------------------
# CUDA: skipped without a GPU; on one, `pytest -m cuda` runs only these.


def _loss_and_grads(sampler: DiffusionSampler, precision: torch.dtype | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """TB loss of one forward simulation from ``x_0 = 0`` (32 trajectories) and the network's gradients."""
    sampler.net.zero_grad(set_to_none=True)
    with torch.autocast("cuda", dtype=precision or torch.float32, enabled=precision is not None):
        loss = sampler.objective(sampler.simulate(torch.zeros(32, 2, device=sampler.device), exploration_std=0.1))
    loss.backward()
    return loss.detach(), {n: p.grad for n, p in sampler.net.named_parameters() if p.grad is not None}


def _cuda_pair(**kwargs) -> tuple[DiffusionSampler, DiffusionSampler]:
    """Two TB samplers with the same non-zero Langevin network on the GPU, the second built with ``kwargs``."""
    torch.manual_seed(0)
    first = make_sampler("tb", num_steps=6, net_kwargs={"langevin": True})
    second = make_sampler("tb", num_steps=6, net_kwargs={"langevin": True}, **kwargs)
    with torch.no_grad():
        first.net.drift.head[-1][-1].weight.normal_(generator=torch.Generator().manual_seed(1))
    second.net.load_state_dict(first.net.state_dict())
    return first.to("cuda"), second.to("cuda")


@pytest.mark.cuda
def test_cuda_compiled_networks_give_the_eager_loss_and_gradients() -> None:
    eager, compiled = _cuda_pair(compile_networks=True)
    loss, grads = _loss_and_grads(eager)
    compiled_loss, compiled_grads = _loss_and_grads(compiled)
    torch.testing.assert_close(compiled_loss, loss, rtol=1e-4, atol=1e-4)
    assert compiled_grads.keys() == grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(compiled_grads[name], grad, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.cuda
def test_cuda_stream_is_seeded_and_bf16_autocast_stays_close_to_fp32() -> None:
    fp32, bf16 = _cuda_pair()
    assert fp32._rng().device.type == "cuda"
    loss, grads = _loss_and_grads(fp32)
    bf16_loss, bf16_grads = _loss_and_grads(bf16, torch.bfloat16)
    assert torch.isfinite(bf16_loss) and all(torch.isfinite(g).all() for g in bf16_grads.values())
    torch.testing.assert_close(bf16_loss, loss, rtol=0.1, atol=0.1)
    repeat, _ = _loss_and_grads(_cuda_pair()[0])
    torch.testing.assert_close(repeat, loss, rtol=0, atol=0)


def test_cuda_graph_is_exclusive_with_compile_and_a_no_op_with_a_warning_on_cpu(tmp_path) -> None:
    with pytest.raises(ValueError, match="choose one of compile_networks and cuda_graph"):
        make_sampler("tb", compile_networks=True, cuda_graph=True)
    from tenfold.datamodules.samplers.datamodule import EnergyDataModule
    from tenfold.datamodules.samplers.energies import GMM25

    def fit(cuda_graph: bool) -> dict[str, Tensor]:
        torch.manual_seed(0)
        sampler = DiffusionSampler(
            SamplerNets(2, hidden_dim=8), torch.optim.Adam, loss="tb", num_steps=4, rng_seed=0, cuda_graph=cuda_graph
        )
        data = EnergyDataModule(GMM25(), batch_size=16, steps_per_epoch=3, eval_batch_size=16)
        trainer = L.Trainer(
            max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, limit_val_batches=0, default_root_dir=tmp_path,
        )
        initial.update({name: p.detach().clone() for name, p in sampler.net.named_parameters()})
        trainer.fit(sampler, datamodule=data)
        return {name: p.detach().clone() for name, p in sampler.net.named_parameters()}

    initial: dict[str, Tensor] = {}
    eager = fit(False)
    with pytest.warns(UserWarning, match="cuda_graph=True captures CUDA work only"):
        ignored = fit(True)
    assert any(not torch.equal(p, initial[name]) for name, p in eager.items())  # it trained
    for name, param in eager.items():
        assert torch.equal(ignored[name], param), name


@pytest.mark.parametrize("learned_variance", [False, True])
@pytest.mark.parametrize("exploration", [0.0, 0.3])
def test_tensor_exploration_of_the_graph_path_matches_the_float_path(exploration: float, learned_variance: bool) -> None:
    # The CUDA-graph step feeds exploration as a 0-d tensor, applied even at 0 (no branch in a
    # graph); on the same drawn noise it gives the float path's trajectories and log-probabilities.
    sampler = make_sampler("tb", net_kwargs={"learned_variance": learned_variance})
    with torch.no_grad():
        sampler.net.drift.head[-1][-1].weight.normal_(generator=torch.Generator().manual_seed(1))
    start, log_start, noises = sampler._draw_start_and_noise(torch.zeros(16, 2), torch.Generator().manual_seed(3))
    eager = sampler._simulate_from(start, log_start, noises, exploration, reparametrize=False)
    graphed = sampler._simulate_from(start, log_start, noises, torch.tensor(exploration), reparametrize=False)
    torch.testing.assert_close(graphed.states, eager.states, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(graphed.log_pf, eager.log_pf, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(sampler.objective(graphed), sampler.objective(eager), rtol=1e-5, atol=1e-6)


def _cuda_graph_pair(loss: str, **kwargs) -> tuple[DiffusionSampler, DiffusionSampler]:
    """An eager and a ``cuda_graph=True`` sampler on the GPU with the same non-zero weights and stream."""
    torch.manual_seed(0)
    net_kwargs = kwargs.pop("net_kwargs", None)
    nets = {"net_kwargs": net_kwargs} if net_kwargs else {}
    eager = make_sampler(loss, num_steps=6, **nets, **kwargs)
    graphed = make_sampler(loss, num_steps=6, **nets, cuda_graph=True, **kwargs)
    with torch.no_grad():
        eager.net.drift.head[-1][-1].weight.normal_(generator=torch.Generator().manual_seed(1))
    graphed.net.load_state_dict(eager.net.state_dict())
    return eager.to("cuda"), graphed.to("cuda")


def _train_by_hand(sampler: DiffusionSampler, steps: int) -> list[tuple[float, Tensor, Tensor]]:
    """``steps`` on-policy training steps (training_step, backward, Adam); per step the loss and
    the returned samples and log-rewards."""
    optimizer = torch.optim.Adam([p for p in sampler.parameters() if p.requires_grad], lr=1e-2)
    sampler.train()
    history = []
    for step in range(steps):
        out = sampler.training_step(torch.zeros(32, 2, device="cuda"), step)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        assert not out["samples"].requires_grad and not out["log_reward"].requires_grad
        history.append((out["loss"].item(), out["samples"], out["log_reward"]))
    return history


@pytest.mark.cuda
@pytest.mark.parametrize(
    ("loss", "kwargs"),
    [
        ("tb", {"net_kwargs": {"langevin": True}, "exploration_std": 0.3}),
        ("tb", {"net_kwargs": {"learned_backward": True}}),
        ("vargrad", {"net_kwargs": {"learned_variance": True}}),
        ("subtb", {}),
        ("pis", {}),
        ("dds", {}),
    ],
)
def test_cuda_graph_trains_as_the_eager_step(loss: str, kwargs: dict) -> None:
    # the same trajectories (noise drawn in the same order), losses, updates and returned samples;
    # the samples are copies, not the graph's output buffers, which the next replay overwrites
    eager, graphed = _cuda_graph_pair(loss, **kwargs)
    eager_history = _train_by_hand(eager, 5)
    graphed_history = _train_by_hand(graphed, 5)
    for (loss_e, samples_e, log_r_e), (loss_g, samples_g, log_r_g) in zip(eager_history, graphed_history):
        assert loss_g == pytest.approx(loss_e, rel=1e-4, abs=1e-5)
        torch.testing.assert_close(samples_g, samples_e, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(log_r_g, log_r_e, rtol=1e-4, atol=1e-4)
    assert not torch.equal(graphed_history[0][1], graphed_history[-1][1])
    for (name, p_eager), p_graphed in zip(eager.net.named_parameters(), graphed.net.parameters()):
        torch.testing.assert_close(p_graphed, p_eager, rtol=1e-4, atol=1e-5, msg=name)
    assert torch.equal(graphed._rng().get_state(), eager._rng().get_state())


@pytest.mark.cuda
def test_cuda_graph_refuses_autocast_with_the_fix() -> None:
    _, graphed = _cuda_graph_pair("tb")
    with torch.autocast("cuda", dtype=torch.bfloat16), pytest.raises(ValueError, match="precision=32-true"):
        graphed.training_step(torch.zeros(32, 2, device="cuda"), 0)


@pytest.mark.cuda
def test_cuda_graph_through_the_trainer_with_local_search(tmp_path) -> None:
    # forward steps replay the graphs, backward (replay-buffer) steps run eagerly in between
    from tenfold.callbacks import LocalSearchReplay
    from tenfold.datamodules.samplers.datamodule import EnergyDataModule
    from tenfold.datamodules.samplers.energies import GMM25

    def fit(cuda_graph: bool) -> tuple[DiffusionSampler, LocalSearchReplay]:
        torch.manual_seed(0)
        sampler = DiffusionSampler(
            SamplerNets(2, hidden_dim=16), partial(torch.optim.Adam, lr=1e-2), loss="tb", num_steps=8, sigma2=5.0,
            exploration_std=0.5, rng_seed=0, cuda_graph=cuda_graph,
        )
        callback = LocalSearchReplay(capacity=200, local_search_every=4, local_search_steps=5, burn_in=2, seed=1)
        data = EnergyDataModule(GMM25(), batch_size=32, steps_per_epoch=8, eval_batch_size=32)
        trainer = L.Trainer(
            max_steps=8, accelerator="gpu", devices=1, logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, callbacks=[callback],
            default_root_dir=tmp_path,
        )
        trainer.fit(sampler, datamodule=data)
        return sampler, callback

    eager, eager_buffer = fit(False)
    capture = torch.cuda.make_graphed_callables
    with patch("tenfold.modules.samplers.module.torch.cuda.make_graphed_callables", wraps=capture) as captured:
        graphed, graphed_buffer = fit(True)
    assert captured.call_count == 1 and graphed._graphed_objective is None  # released at teardown
    torch.testing.assert_close(graphed_buffer.buffer.contents()[0], eager_buffer.buffer.contents()[0], rtol=1e-3, atol=1e-4)
    for (name, p_eager), p_graphed in zip(eager.net.named_parameters(), graphed.net.parameters()):
        torch.testing.assert_close(p_graphed, p_eager, rtol=1e-3, atol=1e-5, msg=name)


@pytest.mark.cuda
def test_cuda_graph_refuses_gradient_accumulation_before_the_first_step(tmp_path) -> None:
    from tenfold.datamodules.samplers.datamodule import EnergyDataModule
    from tenfold.datamodules.samplers.energies import GMM25

    sampler = DiffusionSampler(SamplerNets(2, hidden_dim=8), torch.optim.Adam, loss="tb", num_steps=4, cuda_graph=True)
    data = EnergyDataModule(GMM25(), batch_size=16, steps_per_epoch=4, eval_batch_size=16)
    trainer = L.Trainer(
        max_steps=2, accelerator="gpu", devices=1, accumulate_grad_batches=2, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
        default_root_dir=tmp_path,
    )
    with pytest.raises(ValueError, match="accumulate_grad_batches=1"):
        trainer.fit(sampler, datamodule=data)
    assert trainer.global_step == 0
