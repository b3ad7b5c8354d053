"""Replay buffer with MALA local search for off-policy training of diffusion samplers.

Implements the exploration strategy of Sendera et al., "Improved off-policy training of diffusion
samplers" (arXiv 2402.05098, NeurIPS 2024): terminal states of on-policy (forward) trajectories are
stored in a rank-prioritized replay buffer; every other training step trains on backward
trajectories started from buffer samples; periodically a batch of buffer samples is improved by a
Metropolis-adjusted Langevin (MALA) local search on the target log-reward, and the results go back
into the buffer.

Defaults are those of the official code (GFNOrg/gfn-diffusion, ``energy_sampling/train.py``) and of
its README command for "GFlowNet TB + Expl. + LS": buffer size 600,000, rank prioritization with
weight 0.01, Langevin step 0.1 adapted toward the acceptance rate 0.574, 200 MALA iterations with
a burn-in of 100, local search every 100 iterations, forward and backward steps alternating.

The module imports nothing from ``tenfold/modules/`` or ``tenfold/datamodules/``; see :class:`LocalSearchReplay`
for the protocol a LightningModule implements to use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Literal

import lightning as L
import torch
from lightning.fabric.utilities.apply_func import move_data_to_device
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor

from tenfold.callbacks.step_seed import step_seed

# reseeds draw step_seed(seed, step, rank, stream=LOCAL_SEARCH_STREAM): StepSeed seeds the global
# stream with step_seed(seed, step, rank) and both default to the run's seed
LOCAL_SEARCH_STREAM = 1

Priority = Literal["rank", "uniform", "reward"]
LocalSearchMode = Literal["paper", "official"]
BatchDraws = Literal["fresh", "epoch"]

_PRIORITIES = ("rank", "uniform", "reward")
_MODES = ("paper", "official")
_DRAWS = ("fresh", "epoch")


def _float_dtype(device: torch.device) -> torch.dtype:
    """Widest float dtype for priority arithmetic on ``device`` (MPS has no float64)."""
    return torch.float32 if device.type == "mps" else torch.float64


class PrioritizedReplayBuffer:
    """Fixed-capacity FIFO ring of terminal samples with prioritized sampling.

    Stores samples ``x`` [N, D] (float32) and their log rewards [N] on ``device``. When full, each
    new sample overwrites the oldest one. Storage grows lazily (doubling) up to ``capacity``, so a
    large capacity costs memory only once it is used.

    Priorities (sampling weights, normalized over the N stored samples):

    - ``"rank"``: the sample with the r-th highest log reward (r = 0 for the best; ties broken by
      storage position) has weight ``1 / (rank_weight * N + r)`` (rank-based prioritization of
      Tripp et al. 2020, as in the paper and the official ``buffer.py``; default 0.01).
    - ``"uniform"``: equal weights.
    - ``"reward"``: weight proportional to ``exp(beta * log R)``, computed as a softmax.

    NaN log rewards are stored as ``-inf`` (lowest rank, zero weight under ``"reward"``).

    Args:
        capacity: maximum number of stored samples.
        priority: ``"rank"``, ``"uniform"`` or ``"reward"``.
        rank_weight: ``k`` of the rank-based weights ``1 / (k N + r)``; must be positive.
        beta: inverse temperature of the ``"reward"`` priority.
        device: where the tensors live.
    """

    def __init__(
        self,
        capacity: int,
        priority: Priority = "rank",
        rank_weight: float = 0.01,
        beta: float = 1.0,
        device: torch.device | str = "cpu",
    ) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        if priority not in _PRIORITIES:
            raise ValueError(f"priority must be one of {_PRIORITIES}, got {priority!r}")
        if priority == "rank" and rank_weight <= 0:
            raise ValueError(f"rank_weight must be positive, got {rank_weight}")
        self.capacity = int(capacity)
        self.priority = priority
        self.rank_weight = float(rank_weight)
        self.beta = float(beta)
        self.device = torch.device(device)
        self._x: Tensor | None = None  # [allocated, D]
        self._log_r: Tensor | None = None  # [allocated]
        self._size = 0
        self._ptr = 0  # storage position of the next write (== size until the buffer is full)
        self._cdf: Tensor | None = None  # cached cumulative priorities [size]
        self._epoch: Tensor | None = None  # storage positions of the current epoch of draws
        self._epoch_position = 0  # how many of them were served

    def __len__(self) -> int:
        return self._size

    @property
    def dim(self) -> int | None:
        """Sample dimension D, or None while nothing was ever added."""
        return None if self._x is None else int(self._x.shape[1])

    def to(self, device: torch.device | str) -> PrioritizedReplayBuffer:
        """Move the contents to ``device`` (in place); returns self."""
        device = torch.device(device)
        if self._x is not None and self._log_r is not None:
            self._x = self._x.to(device)
            self._log_r = self._log_r.to(device)
        if self._epoch is not None:
            self._epoch = self._epoch.to(device)
        self.device = device
        self._cdf = None
        return self

    def _reserve(self, n: int, dim: int) -> None:
        """Make room for ``n`` stored samples of dimension ``dim`` (keeping the contents)."""
        if self._x is None or self._log_r is None:
            self._x = torch.empty(n, dim, device=self.device)
            self._log_r = torch.empty(n, device=self.device)
            return
        allocated = self._x.shape[0]
        if n <= allocated:
            return
        new = min(self.capacity, max(n, 2 * allocated))
        x = torch.empty(new, dim, device=self.device)
        log_r = torch.empty(new, device=self.device)
        x[: self._size] = self._x[: self._size]
        log_r[: self._size] = self._log_r[: self._size]
        self._x, self._log_r = x, log_r

    def _prepare(self, x: Tensor, log_r: Tensor) -> tuple[Tensor, Tensor]:
        """Validate shapes; detach, cast to float32 on the buffer's device; NaN log R -> -inf."""
        if x.dim() != 2 or log_r.shape != x.shape[:1]:
            raise ValueError(
                f"expected x [B, D] and log_r [B], got {tuple(x.shape)} and {tuple(log_r.shape)}"
            )
        if self.dim is not None and x.shape[1] != self.dim:
            raise ValueError(f"buffer holds samples of dimension {self.dim}, got {x.shape[1]}")
        x = x.detach().to(self.device, torch.float32)
        log_r = log_r.detach().to(self.device, torch.float32)
        log_r = torch.where(torch.isnan(log_r), torch.full_like(log_r, -math.inf), log_r)
        return x, log_r

    def add(self, x: Tensor, log_r: Tensor) -> None:
        """Insert samples ``x`` [B, D] with log rewards ``log_r`` [B]; the oldest are evicted."""
        x, log_r = self._prepare(x, log_r)
        n = x.shape[0]
        if n == 0:
            return
        if n >= self.capacity:
            self._reserve(self.capacity, x.shape[1])
            assert self._x is not None and self._log_r is not None
            self._x[: self.capacity] = x[-self.capacity :]
            self._log_r[: self.capacity] = log_r[-self.capacity :]
            self._size, self._ptr = self.capacity, 0
        else:
            self._reserve(min(self._size + n, self.capacity), x.shape[1])
            assert self._x is not None and self._log_r is not None
            idx = (self._ptr + torch.arange(n, device=self.device)) % self.capacity
            self._x[idx] = x
            self._log_r[idx] = log_r
            self._size = min(self._size + n, self.capacity)
            self._ptr = (self._ptr + n) % self.capacity
        self._cdf = None

    def contents(self) -> tuple[Tensor, Tensor]:
        """All stored samples, oldest first: ``x`` [N, D] and ``log_r`` [N] (copies)."""
        if self._x is None or self._log_r is None:
            return torch.empty(0, 0, device=self.device), torch.empty(0, device=self.device)
        # Before the buffer is full the write position equals the size, so this is 0..N-1.
        order = (self._ptr + torch.arange(self._size, device=self.device)) % self._size
        return self._x[order], self._log_r[order]

    def get(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """Samples at storage positions ``idx`` [n]: ``x`` [n, D] and ``log_r`` [n] (copies)."""
        if self._x is None or self._log_r is None:
            raise ValueError("the replay buffer is empty")
        return self._x[idx], self._log_r[idx]

    def replace(self, idx: Tensor, x: Tensor, log_r: Tensor) -> None:
        """Overwrite the samples at storage positions ``idx`` [n] with ``x`` [n, D], ``log_r`` [n].

        The replaced entries keep their place in the FIFO order. ``idx`` should hold distinct
        positions (as returned by ``sample_indices(..., replacement=False)``).
        """
        x, log_r = self._prepare(x, log_r)
        if self._x is None or self._log_r is None:
            raise ValueError("the replay buffer is empty")
        self._x[idx] = x
        self._log_r[idx] = log_r
        self._cdf = None

    def log_priorities(self) -> Tensor:
        """Unnormalized log sampling weights of the stored samples [N] (float64 if supported)."""
        if self._log_r is None or self._size == 0:
            raise ValueError("the replay buffer is empty")
        dtype = _float_dtype(self.device)
        log_r = self._log_r[: self._size].to(dtype)
        if self.priority == "uniform":
            return torch.zeros_like(log_r)
        if self.priority == "reward":
            return self.beta * log_r
        order = torch.argsort(log_r, descending=True, stable=True)
        ranks = torch.empty_like(order)
        ranks[order] = torch.arange(self._size, device=self.device)
        return -torch.log(self.rank_weight * self._size + ranks.to(dtype))

    def probabilities(self) -> Tensor:
        """Normalized sampling probabilities of the stored samples [N] (float64 if supported)."""
        log_w = self.log_priorities()
        if not torch.isfinite(log_w.max()):
            return torch.full_like(log_w, 1.0 / self._size)
        return torch.softmax(log_w, dim=0)

    def sample_indices(
        self, n: int, generator: torch.Generator | None = None, replacement: bool = True
    ) -> Tensor:
        """Draw ``n`` storage positions [n] (int64) according to the priorities.

        With replacement: inverse-CDF sampling. Without replacement (``n <= len(self)``):
        Gumbel-top-k, i.e. successive draws proportional to the priorities among the samples not
        drawn yet.
        """
        if self._size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        dtype = _float_dtype(self.device)
        if not replacement:
            if n > self._size:
                raise ValueError(f"cannot draw {n} distinct samples from a buffer of {self._size}")
            u = torch.rand(self._size, generator=generator, device=self.device, dtype=dtype)
            tiny = torch.finfo(dtype).tiny
            gumbel = -torch.log(-torch.log(u.clamp(min=tiny, max=1.0 - 1e-12)))
            return torch.topk(self.probabilities().log() + gumbel, n).indices
        if self._cdf is None:
            self._cdf = torch.cumsum(self.probabilities(), dim=0)
        u = torch.rand(n, generator=generator, device=self.device, dtype=dtype)
        idx = torch.searchsorted(self._cdf, u * self._cdf[-1], right=True)
        return idx.clamp_(max=self._size - 1)

    def next_epoch_indices(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """The next ``n`` storage positions [n] of the current epoch of draws.

        An epoch is ``N - N % n`` positions (at least ``n``) drawn at once by priority with
        replacement from the ``N`` samples stored when it starts, and served ``n`` at a time; a
        new epoch is drawn from the then current contents when the last one runs out. Samples
        added meanwhile are not drawn until then. This is how the official code's buffer is read
        (``buffer.py``: ``sample`` pulls the next batch from a ``DataLoader`` iterator over a
        ``WeightedRandomSampler`` of ``N`` draws, ``drop_last=True``; ``add`` rebuilds the loader
        but not the running iterator). After evictions a drawn position may hold a newer sample
        (in the official code as well, shifted by the evicted count).
        """
        if self._size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        if self._epoch is None or self._epoch_position + n > self._epoch.numel():
            self._epoch = self.sample_indices(max(n, self._size - self._size % n), generator, replacement=True)
            self._epoch_position = 0
        idx = self._epoch[self._epoch_position : self._epoch_position + n]
        self._epoch_position += n
        return idx

    def sample(self, n: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw ``n`` samples with replacement: ``x`` [n, D] and ``log_r`` [n]."""
        return self.get(self.sample_indices(n, generator, replacement=True))

    def max_log_reward(self) -> Tensor:
        """Largest stored log reward (0-dim tensor; ``-inf`` when empty)."""
        if self._log_r is None or self._size == 0:
            return torch.tensor(-math.inf, device=self.device)
        return self._log_r[: self._size].max()

    def state_dict(self) -> dict[str, Any]:
        """Contents on CPU in storage order, the write position and the current epoch of draws
        (weights_only-loadable)."""
        if self._x is None or self._log_r is None:
            x, log_r = torch.empty(0, 0), torch.empty(0)
        else:
            x = self._x[: self._size].to("cpu", copy=True)
            log_r = self._log_r[: self._size].to("cpu", copy=True)
        epoch = torch.empty(0, dtype=torch.long) if self._epoch is None else self._epoch.to("cpu", copy=True)
        return {
            "x": x, "log_r": log_r, "ptr": self._ptr, "capacity": self.capacity,
            "epoch": epoch, "epoch_position": self._epoch_position,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` saved (exactly)."""
        epoch = state.get("epoch")
        self._epoch = epoch.to(self.device, copy=True) if epoch is not None and epoch.numel() else None
        self._epoch_position = int(state.get("epoch_position", 0))
        x, log_r, ptr = state["x"], state["log_r"], int(state["ptr"])
        size = int(x.shape[0])
        if size > self.capacity:
            raise ValueError(f"state holds {size} samples, more than the capacity {self.capacity}")
        if size == 0:
            self._x = self._log_r = None
            self._size = self._ptr = 0
        else:
            self._x = x.to(self.device, torch.float32, copy=True)
            self._log_r = log_r.to(self.device, torch.float32, copy=True)
            self._size, self._ptr = size, ptr % self.capacity
        self._cdf = None


def mala_log_acceptance(
    x: Tensor,
    y: Tensor,
    log_r_x: Tensor,
    log_r_y: Tensor,
    grad_x: Tensor,
    grad_y: Tensor,
    step_size: float,
) -> Tensor:
    """Log Metropolis-Hastings acceptance ratio of a MALA move from ``x`` to ``y``, [B].

    With the Langevin proposal ``q(y | x) = N(y; x + eta * grad log R(x), 2 eta I)``:
    ``log alpha = log R(y) - log R(x) + log q(x | y) - log q(y | x)``, where
    ``log q(y | x) = -||y - x - eta grad log R(x)||^2 / (4 eta)`` up to a constant that cancels.
    The move is accepted with probability ``min(1, exp(log alpha))``.

    Args:
        x, y: current states and proposals [B, D].
        log_r_x, log_r_y: their log rewards [B].
        grad_x, grad_y: gradients of the log reward at ``x`` and ``y`` [B, D].
        step_size: Langevin step ``eta``.
    """
    log_q_forward = -(y - x - step_size * grad_x).flatten(1).pow(2).sum(1) / (4 * step_size)
    log_q_backward = -(x - y - step_size * grad_y).flatten(1).pow(2).sum(1) / (4 * step_size)
    return log_r_y - log_r_x + log_q_backward - log_q_forward


def _log_reward_and_grad(
    log_reward: Callable[[Tensor], Tensor], x: Tensor
) -> tuple[Tensor, Tensor]:
    """``log_reward(x)`` [B] and its gradient with respect to ``x`` [B, D], detached float32."""
    x = x.detach().requires_grad_(True)
    log_r = log_reward(x)
    if log_r.shape != x.shape[:1]:
        raise ValueError(
            f"log_reward must return shape {tuple(x.shape[:1])}, got {tuple(log_r.shape)}"
        )
    if not log_r.requires_grad:
        raise RuntimeError(
            "log_reward is not differentiable (its output has no gradient to x), and MALA's proposals need "
            "its gradient: compute it with torch operations on x (no .detach(), .item(), numpy or torch.no_grad)"
        )
    (grad,) = torch.autograd.grad(log_r.sum(), x)
    return log_r.detach().float(), grad.detach().float()


def mala(
    x: Tensor,
    log_reward: Callable[[Tensor], Tensor],
    num_steps: int,
    step_size: float,
    target_acceptance: float = 0.574,
    adapt: bool = True,
    burn_in: int = 0,
    generator: torch.Generator | None = None,
    return_accepted: bool = False,
    adapt_every: int = 5,
    adapt_factor: float = 0.01,
) -> tuple[Tensor, Tensor, float, float]:
    """Metropolis-adjusted Langevin local search on ``log_reward`` from ``x`` [B, D].

    Each of ``num_steps`` iterations proposes ``y = x + eta * grad log R(x) + sqrt(2 eta) * xi``,
    ``xi ~ N(0, I)``, for all B chains and accepts with probability ``min(1, exp(log alpha))``
    (:func:`mala_log_acceptance`, both proposal densities). Computation is in float32 with
    autograd on, also when called under ``torch.no_grad``/``torch.inference_mode``/autocast;
    the input is not modified.

    Step-size adaptation (``adapt=True``), as the official ``langevin.py`` (``--ld_schedule``):
    the acceptance rate is measured over windows of ``adapt_every`` iterations (the first window
    is iteration 0 alone), and before every iteration after the first, ``eta`` is multiplied by
    ``1 + adapt_factor`` if the last measured rate exceeds ``target_acceptance``, else by
    ``1 - adapt_factor``. Adaptation continues after burn-in, as in the official code.

    Outputs:

    - ``return_accepted=False`` (default; the paper's local search, which replaces buffer samples
      by their locally searched versions): the final state of each chain, ``[B, D]`` and ``[B]``.
    - ``return_accepted=True`` (official ``langevin_dynamics``): every proposal accepted at an
      iteration ``i >= burn_in``, concatenated in iteration order, ``[M, D]`` and ``[M]`` with
      ``M <= B * (num_steps - burn_in)``; consecutive entries of a chain are strongly correlated.
      (The official code keeps iterations ``i > burn_in``, one fewer.)

    Args:
        x: start states [B, D].
        log_reward: differentiable map [B, D] -> [B].
        num_steps: number of MALA iterations.
        step_size: initial Langevin step ``eta`` (> 0).
        target_acceptance: acceptance rate aimed at (0.574, optimal for MALA, Roberts & Rosenthal
            1998).
        adapt: adapt ``eta`` as described above.
        burn_in: iterations excluded from the returned acceptance rate and, with
            ``return_accepted``, from the collected samples.
        generator: random stream on ``x``'s device (global stream when None).
        return_accepted: return accepted proposals after burn-in instead of the final states.
        adapt_every: window length of the acceptance-rate measurement.
        adapt_factor: relative change of ``eta`` per iteration.

    Returns:
        ``(samples, log_r, step_size, acceptance_rate)``: samples float32 (see above), their log
        rewards, the adapted step size, and the acceptance rate over iterations ``>= burn_in``
        (over all iterations if ``burn_in >= num_steps``; NaN if ``num_steps == 0``).
    """
    if step_size <= 0:
        raise ValueError(f"step_size must be positive, got {step_size}")
    eta = float(step_size)
    device = x.device
    with (
        torch.inference_mode(False),
        torch.enable_grad(),
        torch.autocast(device_type=device.type, enabled=False),
    ):
        x = x.detach().clone().float()
        batch = x.shape[0]
        log_r, grad = _log_reward_and_grad(log_reward, x)
        collected_x: list[Tensor] = []
        collected_log_r: list[Tensor] = []
        accepted_total = torch.zeros((), device=device)
        accepted_after = torch.zeros((), device=device)
        proposals_after = 0
        accepted_window = torch.zeros((), device=device)
        proposals_window = 0
        window_rate: float | None = None
        for i in range(num_steps):
            if adapt and window_rate is not None:
                eta *= (1 + adapt_factor) if window_rate > target_acceptance else (1 - adapt_factor)
            noise = torch.randn(x.shape, generator=generator, device=device)
            y = x + eta * grad + math.sqrt(2 * eta) * noise
            log_r_y, grad_y = _log_reward_and_grad(log_reward, y)
            log_alpha = mala_log_acceptance(x, y, log_r, log_r_y, grad, grad_y, eta)
            u = torch.rand(batch, generator=generator, device=device)
            accept = torch.log(u) < log_alpha
            mask = accept.view(-1, *([1] * (x.dim() - 1)))
            x = torch.where(mask, y, x)
            log_r = torch.where(accept, log_r_y, log_r)
            grad = torch.where(mask, grad_y, grad)
            n_accepted = accept.sum()
            accepted_total += n_accepted
            if i >= burn_in:
                accepted_after += n_accepted
                proposals_after += batch
                if return_accepted:
                    collected_x.append(y[accept])
                    collected_log_r.append(log_r_y[accept])
            if adapt:
                accepted_window += n_accepted
                proposals_window += batch
                if i % adapt_every == 0:
                    window_rate = (accepted_window / proposals_window).item()
                    accepted_window.zero_()
                    proposals_window = 0
        if proposals_after > 0:
            rate = (accepted_after / proposals_after).item()
        elif num_steps > 0:
            rate = (accepted_total / (batch * num_steps)).item()
        else:
            rate = math.nan
        if return_accepted:
            if collected_x:
                return torch.cat(collected_x), torch.cat(collected_log_r), eta, rate
            return x[:0], log_r[:0], eta, rate
        return x, log_r, eta, rate


def _rank_and_world_size() -> tuple[int, int]:
    """This process's rank and the number of processes of the default process group ((0, 1)
    without one)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def _capacity_below_batch(capacity: int, batch_size: int) -> str:
    """The error for a buffer that can never hold one backward batch."""
    return (
        f"LocalSearchReplay: the buffer's capacity {capacity} is below the backward batch size {batch_size} "
        "(by default the training batch size), so no backward batch or local search would ever run: raise "
        "capacity or lower batch_size"
    )


class LocalSearchReplay(L.Callback):
    """Prioritized replay buffer, backward-trajectory training and MALA local search.

    Protocol (what a LightningModule provides; nothing else of the module is used):

    - ``log_reward(x: Tensor[B, D]) -> Tensor[B]``: differentiable target log reward.
    - ``training_step`` returns a dict with ``"samples"`` [B, D] and ``"log_reward"`` [B]
      (detached terminal states of on-policy trajectories and their log rewards) on forward
      steps; the callback inserts them into the buffer in ``on_train_batch_end``.
    - an attribute ``backward_batch`` (initially None). Before a backward step the callback sets it
      (in ``on_train_batch_start``) to buffer samples, Tensor [B, D] float32 on the module's
      device; that training step then trains on backward trajectories from them and sets it back
      to None. When it is None the step is an ordinary forward step. The callback clears it after
      every step in case the module did not.
    - optionally ``accepts_backward_batches: bool``: when False (a configuration that trains
      on-policy only, e.g. a reverse-KL loss), the callback refuses to start.

    Schedule, counted in training batches ``s = 0, 1, 2, ...`` (the callback's own counter, saved
    with its state): step ``s`` is a backward step when ``s % backward_every ==
    backward_every - 1`` (official: even iterations forward, odd backward). A backward step is
    skipped (the module trains forward) while the buffer holds fewer than one batch. Local search
    runs on the first backward step of every window of ``local_search_every`` batches (with the
    defaults at s = 1, 101, 201, ..., as the official ``it % ls_cycle < 2`` on odd iterations),
    before the backward batch is drawn. It draws ``batch_size`` samples from the buffer, runs
    :func:`mala` for ``local_search_steps`` iterations on ``pl_module.log_reward`` and puts the
    results back:

    - ``local_search_mode="paper"`` (default): the local search replaces buffer samples by their
      locally searched versions. The batch is drawn by priority *without* replacement and the final
      MALA states overwrite the drawn entries (which keep their FIFO position); the adapted step
      size carries over to the next local search. One buffer; backward batches come from it.
    - ``local_search_mode="official"`` (GFNOrg/gfn-diffusion ``train.py``, ``langevin.py``): a
      second buffer of the same capacity and priority receives every proposal accepted after
      burn-in (about ``B * (steps - burn_in) * acceptance`` correlated samples per local search),
      backward batches are drawn from that second buffer (from the first one only while it is
      empty), the local-search batch is drawn with replacement, and every local search restarts
      from ``step_size``. Use it to reproduce the published numbers.

    ``batch_draws`` says how the local-search and backward batches are drawn: ``"fresh"``
    (default, the paper's description) from the buffer's current contents every time; ``"epoch"``
    (official mode only) as the official code reads its buffers, an epoch of draws at a time that
    new samples join only when it runs out (:meth:`PrioritizedReplayBuffer.next_epoch_indices`),
    so that backward steps train on an older snapshot of the local-search buffer (at first, for
    about 200 iterations at the defaults, on the first local search's results only), and each
    buffer stores the first batch it receives twice, as the official buffer does (its first
    ``add`` concatenates the batch to itself; with epoch draws this doubles the first epoch, so
    that the second local search also restarts from the first forward batch). Measured with the
    official code on 25GMM after 600 iterations (3 seeds, 2000 samples;
    ``benchmarks/samplers.py --official-quality``): as released (epoch draws) Delta log Z (ELBO)
    1.66 +- 0.18, Delta log Z^RW 0.47 +- 0.11, 11.7 of 25 modes; the same code drawing fresh
    batches 2.12 +- 0.25, 0.21 +- 0.29, 18.0 modes, close to this callback in official mode with
    fresh draws, as the ``*_ls`` experiments run it (2.04 +- 0.14, 0.15 +- 0.13, 20.0 modes;
    ``benchmarks/results/samplers_quality.csv``); this callback in official mode with epoch draws 1.62 +- 0.11,
    0.36 +- 0.12, 14.3 modes (``benchmarks/results/samplers_quality_epoch_draws_runs.csv``).

    Logged with ``pl_module.log`` (on_step): ``local_search/acceptance_rate``,
    ``local_search/step_size`` (logged at each local search; Lightning repeats a value logged
    on_step at every later step of that epoch until it is logged again, so the rows between two
    local searches show the last one's), ``buffer/size``, ``buffer/max_log_reward`` (after each
    step). A forward step whose ``training_step`` output lacks ``"samples"`` or ``"log_reward"``
    warns once: the buffer would stay empty.

    State (``state_dict``, saved in Lightning checkpoints, loadable with
    ``torch.load(weights_only=True)``): buffer contents, random stream, current step size, step
    counter and last local-search window. The random stream is a ``torch.Generator`` on the
    module's device, seeded with ``seed + 1_000_003 * global_rank``, so that the ranks of a run
    differ from one another and from those of a run with a nearby seed; each rank keeps its
    own buffer and step size. Lightning writes rank 0's callback state only, so under DDP
    ``state_dict`` gathers the other ranks' states into it (``"other_ranks"``; the checkpoint
    grows with the number of processes) and each rank resumes its own. Resumed with another
    number of processes, every rank takes rank 0's buffer and the other ranks reseed their stream
    from (seed, rank, step).
    A stream saved on another device type (CPU vs CUDA) cannot be restored and is reseeded the
    same way, with a warning. Lightning keys the state by the callback's ``capacity``,
    ``priority`` and ``local_search_mode``: resumed with another of these, the callback starts
    empty (Lightning warns that the checkpoint holds no state for it).

    Args:
        capacity: buffer size (official 600,000).
        priority: ``"rank"`` (official), ``"uniform"`` or ``"reward"``.
        rank_weight: rank-priority constant k (official 0.01).
        beta: inverse temperature of the ``"reward"`` priority.
        backward_every: every ``backward_every``-th batch is a backward step (official 2).
        local_search_every: local-search period in batches (official ``ls_cycle`` 100); 0 disables
            local search.
        local_search_steps: MALA iterations per local search (official ``max_iter_ls`` 200).
        burn_in: MALA burn-in iterations (official 100). In ``"official"`` mode proposals accepted
            before it are discarded; in ``"paper"`` mode (final states kept) it only excludes the
            first iterations from the logged acceptance rate.
        step_size: initial Langevin step (official README command ``--ld_step 0.1``).
        adapt_step_size: adapt the step toward ``target_acceptance`` (official ``--ld_schedule``).
        target_acceptance: official 0.574.
        batch_size: backward / local-search batch size; None uses the size of the first forward
            batch inserted.
        seed: seed of the callback's random stream (plus ``1_000_003`` times the global rank).
        local_search_mode: ``"paper"`` or ``"official"``, see above.
        batch_draws: ``"fresh"`` or ``"epoch"`` (needs ``local_search_mode="official"``), see above.
    """

    def __init__(
        self,
        capacity: int = 600_000,
        priority: Priority = "rank",
        rank_weight: float = 0.01,
        beta: float = 1.0,
        backward_every: int = 2,
        local_search_every: int = 100,
        local_search_steps: int = 200,
        burn_in: int = 100,
        step_size: float = 0.1,
        adapt_step_size: bool = True,
        target_acceptance: float = 0.574,
        batch_size: int | None = None,
        seed: int = 0,
        local_search_mode: LocalSearchMode = "paper",
        batch_draws: BatchDraws = "fresh",
    ) -> None:
        if backward_every < 1:
            raise ValueError(f"backward_every must be >= 1, got {backward_every}")
        if local_search_every < 0:
            raise ValueError(f"local_search_every must be >= 0, got {local_search_every}")
        if local_search_mode not in _MODES:
            raise ValueError(
                f"local_search_mode must be one of {_MODES}, got {local_search_mode!r}"
            )
        if batch_draws not in _DRAWS:
            raise ValueError(f"batch_draws must be one of {_DRAWS}, got {batch_draws!r}")
        if batch_draws == "epoch" and local_search_mode != "official":
            raise ValueError(
                "batch_draws='epoch' reads the buffers as the official code does and needs "
                "local_search_mode='official'; use batch_draws='fresh' with the paper's mode"
            )
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
        if batch_size is not None and batch_size > capacity:
            raise ValueError(_capacity_below_batch(capacity, batch_size))
        self.capacity = capacity
        self.priority = priority
        self.backward_every = backward_every
        self.local_search_every = local_search_every
        self.local_search_steps = local_search_steps
        self.burn_in = burn_in
        self.initial_step_size = float(step_size)
        self.adapt_step_size = adapt_step_size
        self.target_acceptance = target_acceptance
        self.seed = seed
        self.local_search_mode = local_search_mode
        self.batch_draws = batch_draws
        self.buffer = PrioritizedReplayBuffer(capacity, priority, rank_weight, beta)
        self.ls_buffer = (
            PrioritizedReplayBuffer(capacity, priority, rank_weight, beta)
            if local_search_mode == "official"
            else None
        )
        self.step_size = float(step_size)
        self.step = 0
        self.batch_size = batch_size or 0
        self._last_ls_window = -1
        self._warned_no_samples = False
        self._gave_backward_batch = False
        self._rank = 0
        self._generator: torch.Generator | None = None
        self._pending_generator: tuple[Tensor, str, int] | None = None

    @property
    def state_key(self) -> str:
        return self._generate_state_key(
            capacity=self.capacity, priority=self.priority, mode=self.local_search_mode
        )

    # ------------------------------------------------------------------ devices and streams
    def _reseed(self, device: torch.device) -> torch.Generator:
        generator = torch.Generator(device=device)
        generator.manual_seed(self.seed + 1_000_003 * self._rank)
        return generator

    def _ensure_device(self, device: torch.device) -> None:
        """Put buffers and random stream on ``device``, applying a pending restored stream."""
        for buffer in (self.buffer, self.ls_buffer):
            if buffer is not None and buffer.device != device:
                buffer.to(device)
        if self._pending_generator is not None:
            state, device_type, saved_rank = self._pending_generator
            self._pending_generator = None
            generator = torch.Generator(device=device)
            if device_type == device.type and saved_rank == self._rank:
                generator.set_state(state)
            else:
                if device_type != device.type:
                    rank_zero_warn(
                        f"LocalSearchReplay: random stream saved on {device_type} cannot be "
                        f"restored on {device.type}; reseeding it."
                    )
                generator.manual_seed(step_seed(self.seed, self.step + 1, self._rank, stream=LOCAL_SEARCH_STREAM))
            self._generator = generator
        elif self._generator is None:
            self._generator = self._reseed(device)
        elif self._generator.device != device:
            rank_zero_warn(
                "LocalSearchReplay: the module changed device; reseeding the random stream."
            )
            self._generator = torch.Generator(device=device)
            self._generator.manual_seed(step_seed(self.seed, self.step + 1, self._rank, stream=LOCAL_SEARCH_STREAM))

    @property
    def generator(self) -> torch.Generator:
        """The callback's random stream (created on CPU if no device was seen yet)."""
        if self._generator is None or self._pending_generator is not None:
            self._ensure_device(self.buffer.device)
        assert self._generator is not None
        return self._generator

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._rank = trainer.global_rank

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        for name in ("log_reward", "backward_batch"):
            if not hasattr(pl_module, name):
                raise AttributeError(
                    f"LocalSearchReplay needs the module to define `{name}` (see the callback's "
                    "docstring for the protocol)"
                )
        if not getattr(pl_module, "accepts_backward_batches", True):
            raise ValueError(
                f"LocalSearchReplay trains on backward (replay) batches, which this {type(pl_module).__name__} "
                "cannot use in its configuration (it trains on-policy only, e.g. with a reverse-KL loss): "
                "remove the callback or choose an off-policy loss"
            )
        self._ensure_device(pl_module.device)

    def _is_backward_step(self) -> bool:
        return self.step % self.backward_every == self.backward_every - 1

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._ensure_device(pl_module.device)
        self._gave_backward_batch = False
        enough = self.batch_size > 0 and len(self.buffer) >= self.batch_size
        if not (self._is_backward_step() and enough):
            return
        window = self.step // self.local_search_every if self.local_search_every else -1
        if self.local_search_every and window != self._last_ls_window:
            self._last_ls_window = window
            self.local_search(pl_module)
        source = self.buffer
        if self.ls_buffer is not None and len(self.ls_buffer) > 0:
            source = self.ls_buffer
        x, _ = source.get(self._draw(source, self.batch_size))
        pl_module.backward_batch = x
        self._gave_backward_batch = True

    def _draw(self, buffer: PrioritizedReplayBuffer, n: int) -> Tensor:
        """``n`` storage positions of ``buffer`` drawn with replacement as ``batch_draws`` says."""
        if self.batch_draws == "epoch":
            return buffer.next_epoch_indices(n, self.generator)
        return buffer.sample_indices(n, self.generator, replacement=True)

    def _insert(self, buffer: PrioritizedReplayBuffer, x: Tensor, log_r: Tensor) -> None:
        """Add samples to ``buffer``; with epoch draws the first batch a buffer receives is stored
        twice, as the official buffer's first ``add`` does."""
        if self.batch_draws == "epoch" and len(buffer) == 0:
            buffer.add(x, log_r)
        buffer.add(x, log_r)

    def local_search(self, pl_module: L.LightningModule) -> None:
        """Run one MALA local search on a buffer batch and store the results (see class doc)."""
        log_reward: Callable[[Tensor], Tensor] = pl_module.log_reward  # type: ignore[assignment]
        official = self.ls_buffer is not None
        n = min(self.batch_size, len(self.buffer))
        idx = self._draw(self.buffer, n) if official else self.buffer.sample_indices(n, self.generator, replacement=False)
        x, _ = self.buffer.get(idx)
        start_step = self.initial_step_size if official else self.step_size
        samples, log_r, self.step_size, acceptance = mala(
            x,
            log_reward,
            num_steps=self.local_search_steps,
            step_size=start_step,
            target_acceptance=self.target_acceptance,
            adapt=self.adapt_step_size,
            burn_in=self.burn_in,
            generator=self.generator,
            return_accepted=official,
        )
        if self.ls_buffer is not None:
            self._insert(self.ls_buffer, samples, log_r)
        else:
            self.buffer.replace(idx, samples, log_r)
        pl_module.log("local_search/acceptance_rate", acceptance, on_step=True, on_epoch=False)
        pl_module.log("local_search/step_size", self.step_size, on_step=True, on_epoch=False)

    def on_train_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
    ) -> None:
        pl_module.backward_batch = None
        fills_the_buffer = isinstance(outputs, Mapping) and "samples" in outputs and "log_reward" in outputs
        if not self._gave_backward_batch and not fills_the_buffer and not self._warned_no_samples:
            self._warned_no_samples = True
            returned = f"a dict with keys {sorted(outputs)}" if isinstance(outputs, Mapping) else type(outputs).__name__
            rank_zero_warn(
                f"LocalSearchReplay: {type(pl_module).__name__}.training_step returned {returned} on a forward step, "
                "without 'samples' and 'log_reward': the buffer stays empty, so no backward step or local search "
                "runs. Return a dict with the loss, 'samples' [B, D] and 'log_reward' [B] (the callback's protocol)"
            )
        if fills_the_buffer:
            self._ensure_device(pl_module.device)
            samples, log_r = outputs["samples"], outputs["log_reward"]
            self._insert(self.buffer, samples, log_r)
            if self.batch_size == 0:
                if samples.shape[0] > self.capacity:
                    raise ValueError(_capacity_below_batch(self.capacity, int(samples.shape[0])))
                self.batch_size = int(samples.shape[0])
        self.step += 1
        pl_module.log("buffer/size", float(len(self.buffer)), on_step=True, on_epoch=False)
        if len(self.buffer) > 0:
            pl_module.log(
                "buffer/max_log_reward", self.buffer.max_log_reward(), on_step=True, on_epoch=False
            )

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """This rank's state; under DDP, rank 0's with every other rank's in ``"other_ranks"``
        (a collective call: every rank must call it, as Lightning's checkpointing does)."""
        state = self._own_state()
        _, world_size = _rank_and_world_size()
        if world_size > 1:
            gathered: list[Any] = [None] * world_size
            torch.distributed.all_gather_object(gathered, move_data_to_device(state, "cpu"))
            state["other_ranks"] = gathered[1:]
        return state

    def _own_state(self) -> dict[str, Any]:
        generator = self.generator
        state: dict[str, Any] = {
            "buffer": self.buffer.state_dict(),
            "generator_state": generator.get_state(),
            "generator_device": generator.device.type,
            "global_rank": self._rank,
            "step_size": self.step_size,
            "step": self.step,
            "last_local_search_window": self._last_ls_window,
            "batch_size": self.batch_size,
        }
        if self.ls_buffer is not None:
            state["ls_buffer"] = self.ls_buffer.state_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        other_ranks = state_dict.get("other_ranks", [])
        rank, world_size = _rank_and_world_size()
        if rank > 0 and len(other_ranks) + 1 == world_size:
            state_dict = other_ranks[rank - 1]
        self.buffer.load_state_dict(state_dict["buffer"])
        if self.ls_buffer is not None and "ls_buffer" in state_dict:
            self.ls_buffer.load_state_dict(state_dict["ls_buffer"])
        self.step_size = float(state_dict["step_size"])
        self.step = int(state_dict["step"])
        self._last_ls_window = int(state_dict["last_local_search_window"])
        self.batch_size = int(state_dict["batch_size"])
        self._pending_generator = (
            state_dict["generator_state"],
            str(state_dict["generator_device"]),
            int(state_dict["global_rank"]),
        )
        self._generator = None
