"""Tests of the prioritized replay buffer, MALA local search and the LocalSearchReplay callback."""

import math
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

import tenfold.callbacks.local_search as local_search_module
from tenfold.callbacks.local_search import (
    LocalSearchReplay,
    PrioritizedReplayBuffer,
    mala,
    mala_log_acceptance,
)

torch.set_num_threads(1)

# Expected Lightning warnings: a resumed run writes checkpoints elsewhere, and the toy dataloader
# is not resumable mid-epoch (its batches are ignored by the module).
LIGHTNING_RESUME_WARNINGS = pytest.mark.filterwarnings(
    "ignore:The dirpath has changed", "ignore:You're resuming from a checkpoint"
)


def standard_gaussian_log_reward(x: Tensor) -> Tensor:
    return -0.5 * x.pow(2).sum(-1)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def ids(n: int, start: int = 0) -> tuple[Tensor, Tensor]:
    """Samples [n, 2] whose first coordinate is an id, with log rewards equal to the id."""
    i = torch.arange(start, start + n, dtype=torch.float32)
    return torch.stack([i, -i], dim=1), i.clone()


# ---------------------------------------------------------------------------------- buffer
def test_rank_priorities_by_hand() -> None:
    buffer = PrioritizedReplayBuffer(capacity=10, priority="rank", rank_weight=0.01)
    log_r = torch.tensor([0.5, 2.0, -1.0, 1.0])
    buffer.add(torch.zeros(4, 3), log_r)
    # ranks (0 = best): 0.5 -> 2, 2.0 -> 0, -1.0 -> 3, 1.0 -> 1; weights 1 / (0.01 * 4 + rank)
    w = torch.tensor([1 / 2.04, 1 / 0.04, 1 / 3.04, 1 / 1.04], dtype=torch.float64)
    torch.testing.assert_close(buffer.probabilities(), w / w.sum())


def test_a_nan_log_reward_ranks_last_and_is_never_the_best() -> None:
    # NaN sorts first in a descending argsort: stored as is it would take rank 0, the highest priority
    buffer = PrioritizedReplayBuffer(capacity=10, priority="rank", rank_weight=0.01)
    buffer.add(torch.zeros(3, 2), torch.tensor([0.5, float("nan"), 2.0]))
    # ranks: 2.0 -> 0, 0.5 -> 1, NaN (stored as -inf) -> 2
    w = torch.tensor([1 / 1.03, 1 / 2.03, 1 / 0.03], dtype=torch.float64)
    torch.testing.assert_close(buffer.probabilities(), w / w.sum())
    assert buffer.max_log_reward().item() == 2.0
    assert buffer.contents()[1][1].item() == -math.inf
    reward = PrioritizedReplayBuffer(capacity=10, priority="reward")
    reward.add(torch.zeros(2, 2), torch.tensor([float("nan"), 1.0]))
    torch.testing.assert_close(reward.probabilities(), torch.tensor([0.0, 1.0], dtype=torch.float64))


def test_uniform_and_reward_priorities() -> None:
    log_r = torch.tensor([0.0, 1.0, -2.0, 3.0])
    uniform = PrioritizedReplayBuffer(10, priority="uniform")
    uniform.add(torch.zeros(4, 1), log_r)
    torch.testing.assert_close(uniform.probabilities(), torch.full((4,), 0.25, dtype=torch.float64))
    reward = PrioritizedReplayBuffer(10, priority="reward", beta=0.5)
    reward.add(torch.zeros(4, 1), log_r + 1000.0)  # large values: computed stably
    expected = torch.exp(0.5 * log_r.double()) / torch.exp(0.5 * log_r.double()).sum()
    torch.testing.assert_close(reward.probabilities(), expected)


def test_empirical_frequencies_follow_rank_priority() -> None:
    buffer = PrioritizedReplayBuffer(capacity=10, priority="rank", rank_weight=0.5)
    log_r = torch.tensor([0.0, 3.0, 1.0, 2.0, -1.0])
    buffer.add(torch.zeros(5, 2), log_r)
    n = 200_000
    idx = buffer.sample_indices(n, gen(0))
    freq = torch.bincount(idx, minlength=5).double() / n
    order = torch.argsort(log_r, descending=True)
    assert torch.all(freq[order][:-1] > freq[order][1:])  # strictly ordered by log R
    torch.testing.assert_close(freq, buffer.probabilities(), atol=5e-3, rtol=0)


def test_sampling_without_replacement_is_distinct() -> None:
    buffer = PrioritizedReplayBuffer(capacity=50, priority="rank")
    buffer.add(*ids(20))
    idx = buffer.sample_indices(20, gen(1), replacement=False)
    assert sorted(idx.tolist()) == list(range(20))
    with pytest.raises(ValueError, match="cannot draw 21 distinct samples from a buffer of 20"):
        buffer.sample_indices(21, replacement=False)


def test_draws_without_replacement_follow_the_priorities() -> None:
    # One draw without replacement picks an entry with its priority probability (Gumbel-top-1):
    # 10 entries, rank weight 0.01, the best one has probability 0.788 (uniform: 0.1)
    buffer = PrioritizedReplayBuffer(capacity=10, priority="rank", rank_weight=0.01)
    buffer.add(*ids(10))
    best_probability = buffer.probabilities()[9].item()
    assert best_probability == pytest.approx(0.788, abs=1e-3)
    generator, draws = gen(0), 4000
    picks = torch.cat([buffer.sample_indices(1, generator, replacement=False) for _ in range(draws)])
    frequency = (picks == 9).float().mean().item()
    assert abs(frequency - best_probability) < 4 * math.sqrt(best_probability * (1 - best_probability) / draws)


def test_fifo_eviction_at_capacity() -> None:
    buffer = PrioritizedReplayBuffer(capacity=5)
    buffer.add(*ids(3))
    buffer.add(*ids(4, start=3))
    x, log_r = buffer.contents()
    assert len(buffer) == 5
    assert x[:, 0].tolist() == [2, 3, 4, 5, 6]
    assert log_r.tolist() == [2, 3, 4, 5, 6]
    buffer.add(*ids(8, start=7))  # more than the capacity at once: keeps the last 5
    x, _ = buffer.contents()
    assert x[:, 0].tolist() == [10, 11, 12, 13, 14]
    buffer.add(*ids(2, start=15))
    assert buffer.contents()[0][:, 0].tolist() == [12, 13, 14, 15, 16]


def test_replace_keeps_fifo_position() -> None:
    buffer = PrioritizedReplayBuffer(capacity=4)
    buffer.add(*ids(4))
    x, _ = buffer.get(torch.tensor([1]))
    buffer.replace(torch.tensor([1]), x + 100, torch.tensor([100.0]))
    buffer.add(*ids(1, start=4))  # evicts id 0, not the replaced entry
    assert buffer.contents()[0][:, 0].tolist() == [101, 2, 3, 4]
    assert buffer.max_log_reward().item() == 100.0


def test_buffer_state_dict_round_trip(tmp_path: Path) -> None:
    buffer = PrioritizedReplayBuffer(capacity=7)
    buffer.add(*ids(5))
    buffer.add(*ids(5, start=5))  # wrapped ring
    path = tmp_path / "buffer.pt"
    torch.save(buffer.state_dict(), path)
    restored = PrioritizedReplayBuffer(capacity=7)
    restored.load_state_dict(torch.load(path, weights_only=True))
    for a, b in zip(buffer.contents(), restored.contents(), strict=True):
        torch.testing.assert_close(a, b)
    buffer.add(*ids(3, start=10))
    restored.add(*ids(3, start=10))
    torch.testing.assert_close(buffer.contents()[0], restored.contents()[0])
    g1, g2 = gen(3), gen(3)
    torch.testing.assert_close(buffer.sample(16, g1)[0], restored.sample(16, g2)[0])


def test_epoch_draws_serve_one_snapshot_until_it_runs_out() -> None:
    buffer = PrioritizedReplayBuffer(capacity=100, priority="uniform")
    buffer.add(*ids(10))
    generator = gen(0)
    first = torch.cat([buffer.next_epoch_indices(3, generator) for _ in range(3)])
    # one epoch: 10 - 10 % 3 = 9 positions drawn at once, as the priority sampler draws them
    torch.testing.assert_close(first, buffer.sample_indices(9, gen(0)))
    buffer.add(*ids(10, start=10))
    assert buffer._epoch_position == 9
    second = buffer.next_epoch_indices(3, gen(1))  # the snapshot is used up: a new epoch of 18 draws
    assert buffer._epoch.numel() == 18 and bool((buffer._epoch >= 10).any())
    torch.testing.assert_close(second, buffer._epoch[:3])


def test_epoch_draws_ignore_new_samples_and_survive_a_state_round_trip() -> None:
    buffer = PrioritizedReplayBuffer(capacity=100, priority="rank")
    buffer.add(*ids(12))
    generator = gen(2)
    served = [buffer.next_epoch_indices(4, generator)]
    buffer.add(*ids(12, start=12))
    restored = PrioritizedReplayBuffer(capacity=100, priority="rank")
    restored.load_state_dict(buffer.state_dict())
    for _ in range(2):
        served.append(buffer.next_epoch_indices(4, generator))
        torch.testing.assert_close(restored.next_epoch_indices(4, gen(99)), served[-1])
    assert int(torch.cat(served).max()) < 12  # the 12 newer samples wait for the next epoch


# ---------------------------------------------------------------------------------- MALA
def test_mh_acceptance_by_hand() -> None:
    # 1-D standard Gaussian, x = 1, y = 2, eta = 0.5: grad log R = -x.
    # log q(y|x) = -(2 - 1 - 0.5 * (-1))^2 / 2 = -1.125
    # log q(x|y) = -(1 - 2 - 0.5 * (-2))^2 / 2 = 0
    # log R(y) - log R(x) = -2 + 0.5 = -1.5  =>  log alpha = -1.5 + 0 + 1.125 = -0.375
    x, y = torch.tensor([[1.0]]), torch.tensor([[2.0]])
    log_alpha = mala_log_acceptance(
        x, y, torch.tensor([-0.5]), torch.tensor([-2.0]), -x, -y, step_size=0.5
    )
    torch.testing.assert_close(log_alpha, torch.tensor([-0.375]))
    assert math.isclose(min(1.0, math.exp(log_alpha.item())), 0.68728927879, rel_tol=1e-6)


def test_one_mala_step_matches_formula() -> None:
    x0 = torch.tensor([[1.0, -0.5], [3.0, 2.0], [-4.0, 0.0], [0.2, 0.1]])
    eta = 0.3
    out, log_r, _, _ = mala(
        x0, standard_gaussian_log_reward, 1, eta, adapt=False, generator=gen(7)
    )
    # Same draws in the same order as the implementation: proposal noise, then uniforms.
    g = gen(7)
    noise, u = torch.randn(4, 2, generator=g), torch.rand(4, generator=g)
    y = x0 - eta * x0 + math.sqrt(2 * eta) * noise
    log_alpha = (
        standard_gaussian_log_reward(y)
        - standard_gaussian_log_reward(x0)
        - (x0 - y + eta * y).pow(2).sum(-1) / (4 * eta)
        + (y - x0 + eta * x0).pow(2).sum(-1) / (4 * eta)
    )
    accept = u < torch.exp(log_alpha.clamp(max=0))
    torch.testing.assert_close(out, torch.where(accept[:, None], y, x0))
    torch.testing.assert_close(log_r, standard_gaussian_log_reward(out))


def test_mala_adapts_and_samples_standard_gaussian() -> None:
    x0 = torch.full((1000, 2), 5.0)
    x, log_r, step, rate = mala(
        x0, standard_gaussian_log_reward, 600, 0.1, burn_in=400, generator=gen(0)
    )
    assert abs(rate - 0.574) < 0.05
    assert step > 0.1  # the step grew from a too-small start
    assert x.mean(0).abs().max() < 0.1
    assert torch.all((x.var(0) - 1.0).abs() < 0.12)
    torch.testing.assert_close(log_r, standard_gaussian_log_reward(x))
    assert torch.equal(x0, torch.full((1000, 2), 5.0))  # input untouched


def test_mala_adapts_the_step_from_the_last_window_acceptance_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The rate is measured over iteration 0 alone, then over windows of 5 iterations (1-5,
    6-10, ...); before every iteration after the first, eta is multiplied by 1.01 if the last
    measured rate exceeds the target, else by 0.99 (official ``langevin.py``: ``i % 5 == 0``).

    The acceptance is forced: at iteration i the first ``accepted[i]`` of the 5 chains accept
    (log alpha = +inf) and the others reject (log alpha = -inf). Iteration 0 accepts nothing
    (rate 0 < 0.574): iterations 1-5 shrink eta. Iterations 1-5 accept 5, 5, 5, 0, 0 of 5
    (window rate 15 / 25 = 0.6 > 0.574): iterations 6-10 grow it. A rate measured every
    iteration would instead grow eta already at iteration 2 (iteration 1 accepted all).
    """
    accepted = [0, 5, 5, 5, 0, 0, 0, 0, 0, 0, 0]
    etas: list[float] = []

    def forced_log_acceptance(
        x: Tensor, y: Tensor, log_r_x: Tensor, log_r_y: Tensor,
        grad_x: Tensor, grad_y: Tensor, step_size: float,
    ) -> Tensor:
        k = accepted[len(etas)]
        etas.append(step_size)
        return torch.where(torch.arange(x.shape[0]) < k, math.inf, -math.inf)

    monkeypatch.setattr(local_search_module, "mala_log_acceptance", forced_log_acceptance)
    x0 = torch.randn(5, 2, generator=gen(0))
    _, _, step, rate = mala(
        x0, standard_gaussian_log_reward, len(accepted), 0.1, target_acceptance=0.574,
        generator=gen(1),
    )
    expected = [0.1 * 0.99**i for i in range(6)] + [0.1 * 0.99**5 * 1.01**i for i in range(1, 6)]
    assert etas == pytest.approx(expected, rel=1e-12)
    assert step == pytest.approx(expected[-1], rel=1e-12)  # the step of the last iteration
    assert rate == pytest.approx(15 / 55)  # burn_in=0: all 11 iterations of 5 chains


def test_a_rejected_proposal_keeps_the_gradient_of_the_current_state(monkeypatch: pytest.MonkeyPatch) -> None:
    # step 0 rejects every proposal: step 1 must score its proposals with grad log R(x0) = -x0
    grads_x: list[Tensor] = []

    def reject_first(x: Tensor, y: Tensor, log_r_x: Tensor, log_r_y: Tensor, grad_x: Tensor, grad_y: Tensor, step_size: float) -> Tensor:
        grads_x.append(grad_x.clone())
        return torch.full((x.shape[0],), -math.inf)

    monkeypatch.setattr(local_search_module, "mala_log_acceptance", reject_first)
    x0 = torch.randn(6, 2, generator=gen(0))
    x, _, _, _ = mala(x0, standard_gaussian_log_reward, 2, 0.3, adapt=False, generator=gen(1))
    torch.testing.assert_close(x, x0)
    for grad in grads_x:
        torch.testing.assert_close(grad, -x0)


def test_mala_under_no_grad_and_inference_mode() -> None:
    x0 = torch.randn(8, 3, generator=gen(0))
    ref = mala(x0, standard_gaussian_log_reward, 5, 0.2, generator=gen(1))
    with torch.no_grad():
        a = mala(x0, standard_gaussian_log_reward, 5, 0.2, generator=gen(1))
    with torch.inference_mode():
        x_inf = x0.clone()
        b = mala(x_inf, standard_gaussian_log_reward, 5, 0.2, generator=gen(1))
    for out in (a, b):
        torch.testing.assert_close(out[0], ref[0])
        assert out[2] == ref[2] and out[3] == ref[3]


def test_mala_seeded_determinism_and_accepted_output() -> None:
    x0 = torch.randn(50, 2, generator=gen(0)) + 3
    runs = [
        mala(x0, standard_gaussian_log_reward, 30, 0.5, burn_in=10, generator=gen(4)) for _ in "ab"
    ]
    torch.testing.assert_close(runs[0][0], runs[1][0], rtol=0, atol=0)
    assert runs[0][2:] == runs[1][2:]
    other = mala(x0, standard_gaussian_log_reward, 30, 0.5, burn_in=10, generator=gen(5))
    assert not torch.equal(other[0], runs[0][0])
    acc_x, acc_log_r, _, rate = mala(
        x0,
        standard_gaussian_log_reward,
        30,
        0.5,
        burn_in=10,
        generator=gen(4),
        return_accepted=True,
    )
    # every accepted proposal after burn-in: count = acceptance rate * chains * post-burn-in steps
    assert acc_x.shape == (round(rate * 50 * 20), 2)
    torch.testing.assert_close(acc_log_r, standard_gaussian_log_reward(acc_x))


# ---------------------------------------------------------------------------------- callback
def test_rank_streams_differ_from_those_of_nearby_seeds() -> None:
    def first_draws(seed: int, rank: int) -> Tensor:
        callback = LocalSearchReplay(capacity=4, seed=seed)
        callback._rank = rank
        return torch.rand(3, generator=callback._reseed(torch.device("cpu")))

    # rank 0 keeps the seed itself (single-process runs are unchanged)
    torch.testing.assert_close(first_draws(4, 0), torch.rand(3, generator=torch.Generator().manual_seed(4)))
    draws = {(seed, rank): first_draws(seed, rank) for seed in (3, 4) for rank in (0, 1)}
    for a in draws:
        for b in draws:
            assert a == b or not torch.equal(draws[a], draws[b]), (a, b)


def test_callback_state_dict_round_trip(tmp_path: Path) -> None:
    cb = LocalSearchReplay(capacity=20, seed=3)
    cb.buffer.add(*ids(25))
    cb.buffer.sample(5, cb.generator)  # advance the stream
    cb.step, cb.step_size = 17, 0.37
    path = tmp_path / "cb.pt"
    torch.save(cb.state_dict(), path)
    restored = LocalSearchReplay(capacity=20, seed=99)
    restored.load_state_dict(torch.load(path, weights_only=True))
    assert (restored.step, restored.step_size) == (17, 0.37)
    torch.testing.assert_close(restored.buffer.contents()[0], cb.buffer.contents()[0])
    a = cb.buffer.sample(32, cb.generator)[0]
    b = restored.buffer.sample(32, restored.generator)[0]
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_epoch_draws_need_the_official_mode() -> None:
    with pytest.raises(ValueError, match="needs local_search_mode='official'"):
        LocalSearchReplay(batch_draws="epoch")
    with pytest.raises(ValueError, match="batch_draws must be one of"):
        LocalSearchReplay(local_search_mode="official", batch_draws="stale")


@LIGHTNING_RESUME_WARNINGS
@pytest.mark.parametrize("mode", ["paper", "official"])
def test_a_resume_between_the_forward_and_backward_steps_of_a_window_is_exact(tmp_path: Path, mode: str) -> None:
    # The checkpoint of step 3 (every 3 steps) falls inside local-search window 0 (steps 0-3),
    # whose search ran at step 1, before a backward step: the resumed callback must know the
    # window's search is done and the backward batch size, or it searches again / skips step 3
    torch.manual_seed(0)
    module, cb = GaussianMeanSampler(), make_callback(local_search_mode=mode)
    fit(module, cb, 12, tmp_path / "a", every_n_train_steps=3)
    torch.manual_seed(123)
    resumed_module, resumed = GaussianMeanSampler(), make_callback(local_search_mode=mode)
    fit(resumed_module, resumed, 12, tmp_path / "b", ckpt_path=str(tmp_path / "a" / "step=3.ckpt"), every_n_train_steps=3)
    assert resumed_module.received == [(s, (16, 2)) for s in (3, 5, 7, 9, 11)]
    torch.testing.assert_close(resumed_module.mu, module.mu, rtol=0, atol=0)
    assert resumed.step_size == cb.step_size
    assert torch.equal(resumed.generator.get_state(), cb.generator.get_state())


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_paper_local_search_replaces_drawn_samples_with_better_ones() -> None:
    module = GaussianMeanSampler()
    cb = make_callback(
        capacity=64, batch_size=32, local_search_steps=40, burn_in=20, step_size=0.05
    )
    x = torch.randn(48, 2, generator=gen(0)) * 0.1 + torch.tensor([8.0, 8.0])
    cb.buffer.add(x, module.log_reward(x))
    before_x, before_log_r = cb.buffer.contents()  # storage order: the ring has not wrapped
    # Replay with a copy of the callback's stream: 32 distinct positions by priority, then MALA.
    stream = torch.Generator().set_state(cb.generator.get_state())
    idx = cb.buffer.sample_indices(32, stream, replacement=False)
    expected_x, _, expected_step, _ = mala(
        before_x[idx], module.log_reward, 40, 0.05, burn_in=20, generator=stream
    )
    cb.local_search(module)
    after_x, after_log_r = cb.buffer.contents()
    changed = (after_x != before_x).any(1)
    # exactly the 32 drawn entries are replaced in place, by the final MALA states
    assert len(cb.buffer) == 48 and changed.nonzero().flatten().tolist() == sorted(idx.tolist())
    torch.testing.assert_close(after_x[idx], expected_x, rtol=0, atol=0)
    assert torch.all(after_log_r[changed] > before_log_r[changed])  # moved toward the mode
    torch.testing.assert_close(after_log_r, module.log_reward(after_x))
    assert cb.step_size == expected_step != 0.05  # the adapted step, kept for the next search


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
@pytest.mark.parametrize("mode", ["paper", "official"])
def test_paper_mode_carries_the_step_size_over_and_official_mode_restarts(mode: str) -> None:
    """With ``target_acceptance=1.0`` no rate exceeds the target, so each of the 11 iterations
    after the first of a 12-iteration search multiplies the step by 0.99: a search started at
    eta ends at ``eta * 0.99**11``. The paper mode starts the second search from the first one's
    final step (0.05 * 0.99**22 after it); the official mode restarts from 0.05."""
    module = GaussianMeanSampler()
    cb = make_callback(
        batch_size=8, step_size=0.05, target_acceptance=1.0, local_search_mode=mode
    )
    x = torch.randn(16, 2, generator=gen(0))
    cb.buffer.add(x, module.log_reward(x))
    steps: list[float] = []
    for _ in range(2):
        cb.local_search(module)
        steps.append(cb.step_size)
    second = 0.05 * 0.99**22 if mode == "paper" else 0.05 * 0.99**11
    assert steps == pytest.approx([0.05 * 0.99**11, second], rel=1e-12)


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
def test_paper_local_search_replaces_distinct_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The paper mode draws its batch without replacement: a batch as large as the buffer
    (16 of 16) is a permutation of all storage positions, so every entry is searched once."""
    module = GaussianMeanSampler()
    cb = make_callback(batch_size=16)
    x = torch.randn(16, 2, generator=gen(0))
    cb.buffer.add(x, module.log_reward(x))
    replaced: list[Tensor] = []
    replace = cb.buffer.replace

    def recording_replace(idx: Tensor, x: Tensor, log_r: Tensor) -> None:
        replaced.append(idx.clone())
        replace(idx, x, log_r)

    monkeypatch.setattr(cb.buffer, "replace", recording_replace)
    cb.local_search(module)
    assert len(replaced) == 1 and sorted(replaced[0].tolist()) == list(range(16))


class GaussianMeanSampler(L.LightningModule):
    """Tiny module implementing the LocalSearchReplay protocol: a learnable Gaussian mean.

    Forward steps sample ``x = mu + noise`` (noise seeded by the global step, so a resumed run
    draws the same) and maximize ``log R(x)``; backward steps fit ``mu`` to the buffer batch.
    """

    def __init__(self, dim: int = 2, batch: int = 16) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(dim))
        self.register_buffer("center", torch.tensor([3.0, -1.0]), persistent=False)
        self.batch = batch
        self.backward_batch: Tensor | None = None
        self.received: list[tuple[int, tuple[int, ...]]] = []
        self.backward_batches: list[Tensor] = []

    def log_reward(self, x: Tensor) -> Tensor:
        return -0.5 * (x - self.center).pow(2).sum(-1)

    def training_step(self, batch: Tensor, batch_idx: int) -> dict[str, Tensor]:
        if self.backward_batch is not None:
            x = self.backward_batch
            self.backward_batch = None
            self.received.append((self.global_step, tuple(x.shape)))
            self.backward_batches.append(x.detach().clone())
            return {"loss": 0.5 * (x - self.mu).pow(2).sum(-1).mean()}
        g = gen(1000 + self.global_step)
        x = self.mu + torch.randn(self.batch, self.mu.numel(), generator=g).to(self.device)
        log_r = self.log_reward(x)
        return {"loss": -log_r.mean(), "samples": x.detach(), "log_reward": log_r.detach()}

    def train_dataloader(self) -> DataLoader:
        return DataLoader(TensorDataset(torch.zeros(64, 1)), batch_size=1)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.05)


def make_callback(**kwargs: object) -> LocalSearchReplay:
    defaults: dict = dict(
        capacity=100, local_search_every=4, local_search_steps=12, burn_in=6, seed=1
    )
    return LocalSearchReplay(**{**defaults, **kwargs})


def fit(
    module: GaussianMeanSampler,
    callback: LocalSearchReplay,
    max_steps: int,
    root: Path,
    ckpt_path: str | None = None,
    every_n_train_steps: int = 4,
    **trainer_kwargs: object,
) -> L.Trainer:
    trainer = L.Trainer(
        max_steps=max_steps,
        **{"accelerator": "cpu", "devices": 1, **trainer_kwargs},
        logger=False,
        enable_checkpointing=True,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        callbacks=[
            callback,
            ModelCheckpoint(dirpath=root, filename="{step}", every_n_train_steps=every_n_train_steps, save_top_k=-1),
        ],
    )
    trainer.fit(module, ckpt_path=ckpt_path)
    return trainer


@LIGHTNING_RESUME_WARNINGS
@pytest.mark.parametrize(("mode", "draws"), [("paper", "fresh"), ("official", "fresh"), ("official", "epoch")])
def test_training_receives_backward_batches_and_resumes_exactly(tmp_path: Path, mode: str, draws: str) -> None:
    torch.manual_seed(0)
    module, cb = GaussianMeanSampler(), make_callback(local_search_mode=mode, batch_draws=draws)
    trainer = fit(module, cb, 12, tmp_path / "a")
    # forward on even steps, backward batches of the forward size on odd steps
    assert module.received == [(s, (16, 2)) for s in (1, 3, 5, 7, 9, 11)]
    assert cb.step == 12 and module.backward_batch is None
    doubled_first_batch = 16 if draws == "epoch" else 0  # as the official buffer's first add
    assert len(cb.buffer) == min(6 * 16 + doubled_first_batch, cb.capacity)
    # backward batches come from the local-search buffer in the official mode (once it holds
    # samples), from the main buffer in the paper's; neither evicted anything in 12 steps
    source = cb.ls_buffer if mode == "official" else cb.buffer
    if mode == "official":
        assert cb.ls_buffer is not None and len(cb.ls_buffer) > 0
    stored = source.contents()[0]
    assert (module.backward_batches[-1][:, None] == stored[None]).all(-1).any(-1).all()
    logged = ("local_search/acceptance_rate", "local_search/step_size", "buffer/size")
    for key in (*logged, "buffer/max_log_reward"):
        assert key in trainer.callback_metrics
    assert trainer.callback_metrics["buffer/size"].item() == len(cb.buffer)

    ckpt = tmp_path / "a" / "step=4.ckpt"
    state = torch.load(ckpt, weights_only=True)["callbacks"][cb.state_key]
    assert len(state["buffer"]["x"]) == 2 * 16 + doubled_first_batch

    torch.manual_seed(123)  # the resumed run must not depend on the global stream
    resumed_module, resumed = GaussianMeanSampler(), make_callback(local_search_mode=mode, batch_draws=draws)
    fit(resumed_module, resumed, 12, tmp_path / "b", ckpt_path=str(ckpt))
    assert resumed_module.received == [(s, (16, 2)) for s in (5, 7, 9, 11)]
    torch.testing.assert_close(resumed_module.mu, module.mu, rtol=0, atol=0)
    for buffers in ((cb.buffer, resumed.buffer), (cb.ls_buffer, resumed.ls_buffer)):
        if buffers[0] is not None:
            for a, b in zip(buffers[0].contents(), buffers[1].contents(), strict=True):
                torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert (resumed.step, resumed.step_size) == (cb.step, cb.step_size)
    assert torch.equal(resumed.generator.get_state(), cb.generator.get_state())


@pytest.mark.filterwarnings("ignore:You are trying to `self.log")
@pytest.mark.parametrize("draws", ["fresh", "epoch"])
def test_epoch_draws_store_each_buffers_first_batch_twice(draws: str) -> None:
    module = GaussianMeanSampler()
    cb = make_callback(local_search_mode="official", batch_draws=draws, batch_size=8)
    first, second = torch.randn(8, 2, generator=gen(0)), torch.randn(8, 2, generator=gen(1))
    for x in (first, second):
        cb.on_train_batch_end(None, module, {"samples": x, "log_reward": module.log_reward(x)}, None, 0)
    copies = 2 if draws == "epoch" else 1
    stored, _ = cb.buffer.contents()
    torch.testing.assert_close(stored, torch.cat([first] * copies + [second]))
    cb.local_search(module)
    assert cb.ls_buffer is not None
    found, _ = cb.ls_buffer.contents()
    half = len(found) // 2
    assert (len(found) % 2 == 0 and torch.equal(found[:half], found[half:])) == (draws == "epoch")
    cb.local_search(module)
    later, _ = cb.ls_buffer.contents()
    added = later[len(found) :]
    assert len(added) > 0 and not torch.equal(added[: len(added) // 2], added[len(added) // 2 :])


@pytest.mark.parametrize(
    ("backward_every", "every", "max_steps", "expected"),
    [(2, 4, 12, [1, 5, 9]), (3, 6, 18, [2, 8, 14])],
)
def test_local_search_runs_on_the_first_backward_step_of_each_window(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    backward_every: int,
    every: int,
    max_steps: int,
    expected: list[int],
) -> None:
    """Backward steps are s with ``s % backward_every == backward_every - 1`` (1, 3, 5, ... for
    2; 2, 5, 8, ... for 3); local search runs on the first of them in each window of ``every``
    batches [0, every), [every, 2 every), ...: s = 1, 5, 9 and s = 2, 8, 14. The buffer holds a
    batch from step 0 on, so no backward step is skipped."""
    module = GaussianMeanSampler()
    cb = make_callback(backward_every=backward_every, local_search_every=every)
    searched: list[int] = []
    local_search = cb.local_search

    def recording_local_search(pl_module: L.LightningModule) -> None:
        searched.append(pl_module.global_step)
        local_search(pl_module)

    monkeypatch.setattr(cb, "local_search", recording_local_search)
    fit(module, cb, max_steps, tmp_path)
    assert searched == expected
    backward_steps = [s for s in range(max_steps) if s % backward_every == backward_every - 1]
    assert module.received == [(s, (16, 2)) for s in backward_steps]


@LIGHTNING_RESUME_WARNINGS
def test_backward_step_with_empty_buffer_trains_forward(tmp_path: Path) -> None:
    module, cb = GaussianMeanSampler(), make_callback(backward_every=1, local_search_every=0)
    fit(module, cb, 4, tmp_path)
    # step 0 should be backward but the buffer is empty: the module trains forward and fills it
    assert module.received == [(s, (16, 2)) for s in (1, 2, 3)]
    assert len(cb.buffer) == 16


def test_a_buffer_smaller_than_a_backward_batch_is_refused(tmp_path: Path) -> None:
    # it could never hold a backward batch: training would silently stay on-policy
    with pytest.raises(ValueError, match="capacity 8 is below the backward batch size 16.*raise capacity"):
        LocalSearchReplay(capacity=8, batch_size=16)
    module, cb = GaussianMeanSampler(batch=16), make_callback(capacity=8)
    with pytest.raises(ValueError, match="capacity 8 is below the backward batch size 16"):
        fit(module, cb, 2, tmp_path)


def test_runs_under_bf16_mixed(tmp_path: Path) -> None:
    module, cb = GaussianMeanSampler(), make_callback()
    trainer = fit(module, cb, 6, tmp_path, precision="bf16-mixed")
    assert module.received == [(s, (16, 2)) for s in (1, 3, 5)]
    assert cb.buffer.contents()[0].dtype == torch.float32
    assert 0.0 <= trainer.callback_metrics["local_search/acceptance_rate"].item() <= 1.0


@LIGHTNING_RESUME_WARNINGS
@pytest.mark.cuda
def test_cuda_buffer_generator_and_resume(tmp_path: Path) -> None:
    module, cb = GaussianMeanSampler(), make_callback()
    fit(module, cb, 8, tmp_path / "a", accelerator="gpu")
    assert cb.buffer.contents()[0].device.type == "cuda"
    assert cb.generator.device.type == "cuda"
    assert module.received == [(s, (16, 2)) for s in (1, 3, 5, 7)]
    resumed_module, resumed = GaussianMeanSampler(), make_callback()
    ckpt = str(tmp_path / "a" / "step=4.ckpt")
    fit(resumed_module, resumed, 8, tmp_path / "b", ckpt_path=ckpt, accelerator="gpu")
    a, b = resumed.buffer.contents()[0], cb.buffer.contents()[0]
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert torch.equal(resumed.generator.get_state(), cb.generator.get_state())
    # a CUDA-saved stream cannot be restored on CPU: the callback reseeds instead of failing
    cpu = make_callback()
    checkpoint = torch.load(tmp_path / "a" / "step=8.ckpt", weights_only=True)
    cpu.load_state_dict(checkpoint["callbacks"][cb.state_key])
    with pytest.warns(UserWarning, match="cannot be restored"):
        assert cpu.generator.device.type == "cpu"


@pytest.mark.parametrize("loss", ["pis", "tb"])
def test_diffusion_sampler_takes_backward_batches_unless_its_loss_is_on_policy(loss: str, tmp_path: Path) -> None:
    # The real module through the protocol: a reverse-KL loss (pis) is refused before any
    # optimizer step; TB trains its backward step (step 1) on the buffer's samples.
    from tenfold.datamodules.samplers.datamodule import EnergyDataModule
    from tenfold.datamodules.samplers.energies import GMM25
    from tenfold.modules.samplers import DiffusionSampler, SamplerNets

    sampler = DiffusionSampler(SamplerNets(2, hidden_dim=8), torch.optim.Adam, loss=loss, num_steps=4, rng_seed=0)
    data = EnergyDataModule(GMM25(), batch_size=16, steps_per_epoch=2, eval_batch_size=16)
    callback = make_callback(local_search_every=0)
    trainer = L.Trainer(
        max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=0, callbacks=[callback], default_root_dir=tmp_path,
    )
    if loss == "pis":
        with pytest.raises(ValueError, match="choose an off-policy loss"):
            trainer.fit(sampler, datamodule=data)
        assert trainer.global_step == 0
        return
    received = []
    original = sampler.simulate_backward
    sampler.simulate_backward = lambda terminal, *args: received.append(terminal.clone()) or original(terminal, *args)
    trainer.fit(sampler, datamodule=data)
    assert trainer.global_step == 2 and len(received) == 1
    # the backward batch comes from the buffer, which holds the forward step's terminal states
    stored = set(map(tuple, callback.buffer.contents()[0].tolist()))
    assert received[0].shape == (16, 2) and set(map(tuple, received[0].tolist())) <= stored


@pytest.mark.parametrize("output", ["tensor", "misspelled key"])
def test_a_training_step_that_returns_no_samples_warns_once(tmp_path: Path, output: str) -> None:
    """The protocol's forward-step output fills the buffer; without it nothing ever runs (no
    backward step, no local search), which must not pass silently."""

    class NoSamples(GaussianMeanSampler):
        def training_step(self, batch: Tensor, batch_idx: int) -> Any:
            step = super().training_step(batch, batch_idx)
            if output == "tensor":
                return step["loss"]
            return {"loss": step["loss"], "samples": step["samples"], "log_r": step["log_reward"]}

    callback = make_callback()
    with pytest.warns(UserWarning, match="training_step returned .* without 'samples' and 'log_reward'") as caught:
        fit(NoSamples(), callback, 6, tmp_path)
    assert sum("without 'samples' and 'log_reward'" in str(w.message) for w in caught) == 1
    assert len(callback.buffer) == 0
    with warnings.catch_warnings():  # the protocol's module, backward steps included, does not warn
        warnings.filterwarnings("error", message=".*without 'samples' and 'log_reward'")
        fit(GaussianMeanSampler(), make_callback(), 6, tmp_path / "protocol")
