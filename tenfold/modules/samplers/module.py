"""``DiffusionSampler``: a diffusion-structured sampler of an unnormalized density, trained with
any of the objectives benchmarked by Sendera et al., "Improved off-policy training of diffusion
samplers" (2024, arXiv 2402.05098).

A sampler is a learned SDE discretized in ``T`` steps on ``[0, 1]`` (see
:mod:`tenfold.modules.samplers.reference`); its terminal state ``x_T`` should be distributed as
``R(x) / Z`` for the target's reward ``R = exp(log_reward)``. Objectives (``loss=``):

- ``pis``: reverse KL through the simulation with the Brownian reference (Zhang & Chen, 2022).
- ``dds``: the same with the Ornstein-Uhlenbeck reference (Vargas et al., 2023), here on the
  other objectives' grid: ``T`` equal steps of a constant-rate OU (``ou_beta``) whose invariant
  law is ``N(0, sigma2 I)``. DDS's own code (franciscovargas/denoising_diffusion_samplers,
  ``dds/configs/``) tunes the invariant std per target and uses a cosine step schedule over its
  own time horizon, so its published figures need those settings, not this class's defaults.
- ``tb``: trajectory balance with a learned ``log Z`` (Malkin et al., 2022; Lahlou et al., 2023).
- ``vargrad``: log-variance loss, TB with the batch estimate of ``log Z`` (Richter et al., 2020).
- ``db``: detailed balance with a learned state flow ``log F(x, t)``.
- ``subtb``: sub-trajectory balance with lambda-weighted sub-trajectories (Madan et al., 2023).
- ``fl_subtb``: SubTB with forward-looking flows ``log F(x, t) = log F~(x, t)
  + (1 - t) log p_ref(x; t) + t log R(x)``, ``p_ref(.; t) = N(0, sigma^2 t)`` the reference's
  marginal (Zhang et al., 2023).

GFlowNet objectives (all but ``pis``/``dds``) are off-policy: the forward trajectories can be
sampled with extra exploration noise (``exploration_std``, decaying linearly to 0 over
``exploration_decay_steps``), and a callback may hand the module terminal states to train on
backward trajectories from them (``backward_batch``; :class:`tenfold.callbacks.LocalSearchReplay`).

Differences from the official code (GFNOrg/gfn-diffusion, commit 255b499), all following the paper:
- losses are batch means without the factor 1/2 (PIS: without the factor 1/D; gradient scale only);
- DB and SubTB always use a flow network (the official DB without ``--conditional_flow_model``
  uses one scalar for all states);
- the flow of the start state ``x_0`` is the flow network at ``(x_0, 0)`` without the
  forward-looking term (it plays ``log Z``);
- on backward (replay) trajectories the forward-looking term of ``x_i`` is taken at ``x_i``;
  the official ``gfn.py`` takes it at the state one step later there (on forward trajectories
  both take it at ``x_i``), which only FL-SubTB trained from a replay buffer would see;
- one random stream per module and DDP rank, saved in the checkpoint; evaluation (validation,
  test, plots) draws from streams of its own, the same noise at every evaluation, so that how
  often a run evaluates does not change its training trajectories (the official code shares one
  global stream).
"""

from __future__ import annotations

import math

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch import Tensor, nn

from tenfold.modules.base import ConfiguredOptimizerModule, OptimizerFactory, SchedulerFactory
from tenfold.modules.samplers import losses
from tenfold.modules.samplers.metrics import (
    delta_log_z,
    elbo,
    eubo,
    log_z_importance,
    modes_hit,
    rbf_mmd2,
    wasserstein1,
    wasserstein2,
)
from tenfold.modules.samplers.nets import SamplerNets
from tenfold.modules.samplers.reference import BrownianReference, OUReference, ReferenceProcess, gaussian_log_prob

LOSSES = ("pis", "dds", "tb", "vargrad", "db", "subtb", "fl_subtb")
# reverse KL through the simulation: on-policy, reparametrized trajectories
KL_LOSSES = ("pis", "dds")
# losses that train the flow network (at flow_lr 0.01 by default) and need the Brownian reference
FLOW_LOSSES = ("db", "subtb", "fl_subtb")
# losses that train the scalar log Z (at flow_lr 0.1 by default)
LOG_Z_LOSSES = ("tb",)
_EVALUATION_STAGES = ("val", "test")
# Rows per network call when a network runs over many steps of a trajectory batch at once
# (backward-trajectory scoring, learned backward policy, flows), by device type: on the CPU the
# call is split into chunks of consecutive steps so that its matmuls and elementwise passes stay
# in cache. GMM25, batch 300, T = 100, width 256, one core: a backward (replay) training step took
# 0.34-0.37 s in chunks against 0.43 s in one call (fp32), 0.19 against 0.24 s (bf16-mixed).
# Devices not listed make one call.
_ROWS_PER_NETWORK_CALL = {"cpu": 4096}


@dataclass
class Trajectories:
    """A batch of trajectories ``x_0 -> ... -> x_T`` with their log-probabilities.

    Attributes:
        states: ``[B, T + 1, D]``.
        log_pf: per-step forward log-probabilities ``log p_F(x_{i+1} | x_i)``, ``[B, T]``.
        log_pb: per-step backward log-probabilities ``log p_B(x_i | x_{i+1})``, ``[B, T]``
            (0 for the deterministic last backward step of a fixed-start reference).
        log_start: ``log p_0(x_0)``, ``[B]`` (0 for a fixed start).
        log_reward: ``log R(x_T)``, ``[B]``.
    """

    states: Tensor
    log_pf: Tensor
    log_pb: Tensor
    log_start: Tensor
    log_reward: Tensor

    @property
    def terminal(self) -> Tensor:
        """``x_T``, ``[B, D]``."""
        return self.states[:, -1]

    def log_weights(self) -> Tensor:
        """``log R(x_T) + log P_B(tau | x_T) - log P_F(tau)``, ``[B]`` (float32)."""
        return (self.log_reward + self.log_pb.sum(-1) - self.log_pf.sum(-1) - self.log_start).float()


# the rank whose evaluation noise every rank draws
_EVALUATION_RANK = 0

_NO_TARGET = (
    "DiffusionSampler has no target: pass energy=... (also to load_from_checkpoint), set `.energy`, or train "
    "with a datamodule that has an `energy` attribute"
)


def _drop_target_state(module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any) -> None:
    """State-dict post-hook: checkpoints do not keep the target (tensors a target registers as
    persistent buffers or parameters)."""
    for key in [key for key in state_dict if key.startswith(prefix + "energy.")]:
        del state_dict[key]


def _keep_the_given_target(module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any) -> None:
    """Load-state-dict pre-hook: loading leaves the module's target as it is (a checkpoint that
    holds target tensors, from before :func:`_drop_target_state`, does not overwrite it)."""
    _drop_target_state(module, state_dict, prefix, None)
    if module.energy is not None:
        for name, tensor in module.energy.state_dict().items():
            state_dict[prefix + "energy." + name] = tensor


class DiffusionSampler(ConfiguredOptimizerModule):
    """Trains :class:`~tenfold.modules.samplers.nets.SamplerNets` to sample from ``exp(log_reward) / Z``.

    Args:
        net: the networks (drift, ``log Z``, optional flow and backward networks).
        optimizer: partial optimizer, called with the parameter groups (policy at its own lr,
            ``log Z`` and flows at ``flow_lr``, the backward network at ``backward_lr``); None for
            a sampler that is only evaluated or sampled from (``load_from_checkpoint(path,
            net=SamplerNets(...))``).
        scheduler: optional partial LR scheduler, stepped every optimizer step.
        energy: the target: an :class:`~tenfold.datamodules.samplers.energies.Energy` subclass
            (which checks shapes and dtypes, and which ``EnergyDataModule`` needs), or any
            ``nn.Module`` with ``dim``, ``log_reward(x [B, D]) -> [B]`` (finite, and
            differentiable in ``x`` for ``pis``, ``dds``, the Langevin parametrization and local
            search), ``log_Z``, ``modes``, ``can_sample``, ``sample(n)``. When None, it is taken
            from the datamodule (``trainer.datamodule.energy``) at ``setup``. Checkpoints do not
            keep it (nor any tensor it registers): loading one leaves the given target as it is.
        loss: one of :data:`LOSSES` (the class attribute ``LOSSES``; see "A loss of one's own").
        num_steps: number of steps ``T``.
        sigma2: diffusion variance per unit time of the reference (the official ``t_scale``).
        reference: ``"brownian"`` or ``"ou"``; defaults to ``"ou"`` for ``dds`` and
            ``"brownian"`` otherwise.
        ou_beta: rate of the OU reference.
        exploration_std: std of the extra Gaussian noise of off-policy exploration (0: off).
        exploration_decay_steps: linear decay of that std to 0 over this many optimizer steps
            (0: constant), counted by the Trainer's ``global_step`` (a loop of one's own without a
            Trainer sees no decay).
        subtb_lambda: the geometric weight ``lambda`` of SubTB.
        flow_lr: learning rate of ``log Z`` and of the flow network; None: the paper's, 0.1 for
            TB's ``log Z`` and 0.01 for the flows of DB, SubTB and FL-SubTB (which diverged at 0.1).
        backward_lr: learning rate of the learned backward network.
        mode_radius: a mode of the target counts as hit when a sample lies within this distance.
        rng_seed: seed of the module's random stream (plus the DDP rank); None: ``torch.initial_seed()``.
        compile_networks: compile the per-step policy call (``SamplerNets.forward``: drift
            network, clipping, Langevin term) with ``torch.compile``, in place
            (``nn.Module.compile``: parameter names and checkpoints are unchanged). The first
            iterations are slower while it compiles (once per batch shape). Measured slower than
            eager so far (``benchmarks/samplers.py --compile``): on one CPU core about 5 %, on an
            NVIDIA H200 (torch 2.11, GMM25 TB, batch 300, T = 100) 12.2 against 15.8 it/s
            (fp32, through the Trainer). Kept as an option for larger networks.
        cuda_graph: on a CUDA device, run the on-policy training step (the ``T``-step
            simulation, the loss and their backward) as two CUDA graphs
            (``torch.cuda.make_graphed_callables``), captured at the first training step and
            replayed afterwards: the step is otherwise bound by kernel launches at the paper's
            sizes. The noise is drawn outside the graphs from the module's stream, in the eager
            order, so both paths see the same trajectories (to rounding). Needs
            ``trainer.precision=32-true``, one process (no DDP) and gradients cleared to None
            between optimizer steps (no ``accumulate_grad_batches``; in a loop of one's own,
            ``zero_grad(set_to_none=True)``: the graphed backward hands out its own gradient
            buffers, which become the parameters' ``.grad``, the silent corruption of
            pytorch/pytorch#181723 that ``on_fit_start`` refuses); a new batch shape or moved
            parameters are captured anew. From torch 2.10 the first graphed backward warns once that
            "the AccumulateGrad node's stream does not match" (the capture runs on a stream of its
            own; the CUDA tests check that gradients and updates still match the eager step).
            Backward (replay) steps and evaluation stay eager. Ignored, with a warning, on a CPU.
            Measured on an NVIDIA H100 (torch 2.11, GMM25 TB, batch 300, T = 100, fp32, through
            the Trainer): 54 it/s against 11.8 eager and 3.4 for the official code.

    Shapes: training batches are start states ``[B, D]`` (zeros); evaluation batches are dicts with
    ``"x0"`` ``[N, D]`` and optionally ``"target_samples"`` ``[N, D]``.

    Logged: per training step ``train/loss`` (``train/loss_backward`` for replay steps),
    ``train/log_reward`` (batch mean), ``train/log_z`` (TB), ``train/exploration_std``: under DDP
    rank 0's values, unsynchronized (no collective per step); per evaluation the metrics of
    :meth:`evaluate` under ``val/`` and ``test/``, the same on every rank.

    A loss of one's own: subclass, add its name to the class attribute ``LOSSES`` (and to
    ``LOG_Z_LOSSES`` when it trains the scalar ``log Z``, ``FLOW_LOSSES`` when it trains the flow
    network, ``KL_LOSSES`` when it is a reverse KL through the simulation), and override
    :meth:`objective`: compute it from the :class:`Trajectories` (``log_pf`` and ``log_pb`` per
    step, ``log_start``, ``log_reward``; :meth:`log_flows` for flows) and return
    ``super().objective(trajectories)`` for the other names. Everything else (the optimizer's
    groups, logging ``log_z``, exploration, replay and local search) follows from those lists::

        class HuberTB(DiffusionSampler):
            LOSSES = (*DiffusionSampler.LOSSES, "huber_tb")
            LOG_Z_LOSSES = (*DiffusionSampler.LOG_Z_LOSSES, "huber_tb")

            def objective(self, trajectories):
                if self.loss_name != "huber_tb":
                    return super().objective(trajectories)
                log_pf = trajectories.log_pf.sum(-1) + trajectories.log_start
                residual = self.net.log_z + log_pf - trajectories.log_pb.sum(-1) - trajectories.log_reward
                return torch.nn.functional.huber_loss(residual, torch.zeros_like(residual))
    """

    LOSSES: tuple[str, ...] = LOSSES
    KL_LOSSES: tuple[str, ...] = KL_LOSSES
    FLOW_LOSSES: tuple[str, ...] = FLOW_LOSSES
    LOG_Z_LOSSES: tuple[str, ...] = LOG_Z_LOSSES

    def __init__(
        self,
        net: SamplerNets,
        optimizer: OptimizerFactory | None = None,
        scheduler: SchedulerFactory | None = None,
        energy: nn.Module | None = None,
        loss: str = "tb",
        num_steps: int = 100,
        sigma2: float = 1.0,
        reference: str | None = None,
        ou_beta: float = 10.0,
        exploration_std: float = 0.0,
        exploration_decay_steps: int = 0,
        subtb_lambda: float = 2.0,
        flow_lr: float | None = None,
        backward_lr: float = 1e-3,
        mode_radius: float = 1.0,
        rng_seed: int | None = None,
        compile_networks: bool = False,
        cuda_graph: bool = False,
    ) -> None:
        super().__init__(optimizer, scheduler, scheduler_interval="step")
        if loss not in self.LOSSES:
            raise ValueError(
                f"unknown loss {loss!r}: choose one of {', '.join(self.LOSSES)}; for a loss of one's own, subclass "
                f"{type(self).__name__}, add its name to LOSSES (and to LOG_Z_LOSSES, FLOW_LOSSES or KL_LOSSES for "
                "what it trains) and compute it in objective()"
            )
        reference = reference or ("ou" if loss == "dds" else "brownian")
        if reference not in ("brownian", "ou"):
            raise ValueError(f"unknown reference {reference!r}: choose 'brownian' or 'ou'")
        if loss == "dds" and reference != "ou":
            raise ValueError("loss=dds is the reverse KL with the OU reference: set reference=ou, or use loss=pis")
        if loss in self.FLOW_LOSSES and reference != "brownian":
            raise ValueError(f"loss={loss} needs the fixed-start Brownian reference: set reference=brownian")
        if loss in self.FLOW_LOSSES and net.flow is None:
            raise ValueError(f"loss={loss} needs a flow network: build the net with conditional_flow=True")
        if exploration_std < 0 or exploration_decay_steps < 0:
            raise ValueError(
                f"exploration_std ({exploration_std}) and exploration_decay_steps ({exploration_decay_steps}) must be "
                ">= 0 (0: no exploration, and no decay)"
            )
        if exploration_std > 0 and loss in self.KL_LOSSES:
            raise ValueError(f"exploration is off-policy: loss={loss} trains on-policy; set exploration_std=0")
        if compile_networks and cuda_graph:
            raise ValueError("choose one of compile_networks and cuda_graph: the CUDA graphs capture the eager networks")
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler", "energy"])
        self.net = net
        if compile_networks:
            self.net.compile(dynamic=False)
        if energy is not None:
            self._check_energy(energy)
        self.energy = energy
        self.loss_name = loss
        self.flow_lr = flow_lr if flow_lr is not None else (0.01 if loss in self.FLOW_LOSSES else 0.1)
        self.reference: ReferenceProcess = (
            OUReference(num_steps, sigma2, ou_beta) if reference == "ou" else BrownianReference(num_steps, sigma2)
        )
        self.register_state_dict_post_hook(_drop_target_state)
        self.register_load_state_dict_pre_hook(_keep_the_given_target)
        self.net.log_z.requires_grad_(self.learns_log_z)
        if self.net.flow is not None:
            self.net.flow.requires_grad_(self.learns_flows)
        self.register_buffer("subtb_weights", losses.subtrajectory_weights(num_steps, subtb_lambda), persistent=False)
        self.backward_batch: Tensor | None = None
        self._generator: torch.Generator | None = None
        self._pending_rng_state: tuple[Tensor, str] | None = None
        self._evaluation_seed: int | None = None
        # (step, batch size, kind, [loss, non-finite rewards]) of the last training step, not yet checked
        self._unchecked_step: tuple[int, int, str, Tensor] | None = None
        # (capture key: batch shape and parameter addresses, graphed objective), built at the
        # first graphed step; not a submodule
        self._graphed_objective: tuple[tuple[Any, ...], nn.Module] | None = None

    def _check_energy(self, energy: nn.Module) -> None:
        if energy.dim != self.net.dim:
            raise ValueError(
                f"the target has dimension {energy.dim} but the sampler's networks were built for "
                f"{self.net.dim}: build SamplerNets(dim={energy.dim}, ...) (in a config: model.net.dim=${{data.dim}})"
            )

    def setup(self, stage: str) -> None:
        precision = str(self.trainer.precision) if self._trainer is not None else "32-true"
        if precision.endswith("-true") and precision != "32-true":
            raise ValueError(
                f"DiffusionSampler keeps its states, log-densities and parameters in float32; trainer.precision="
                f"{precision} would cast the parameters: use trainer.precision=bf16-mixed (or 16-mixed on a GPU) "
                "for reduced-precision matmuls, or 32-true"
            )
        datamodule = self.trainer.datamodule if self._trainer is not None else None
        served = getattr(datamodule, "energy", None)
        if self.energy is None:
            if served is None:
                raise RuntimeError(_NO_TARGET)
            self._check_energy(served)
            self.energy = served
        elif served is not None and served is not self.energy and (
            type(served) is not type(self.energy) or served.dim != self.energy.dim
        ):
            rank_zero_warn(
                f"the sampler keeps its own target, {type(self.energy).__name__}, and ignores the "
                f"datamodule's, {type(served).__name__}; build the sampler with energy=None to take "
                "the datamodule's"
            )

    def on_fit_start(self) -> None:
        super().on_fit_start()
        if not self.hparams.cuda_graph:
            return
        if self.device.type != "cuda":
            rank_zero_warn(f"cuda_graph=True captures CUDA work only: training eagerly on {self.device.type}")
        elif self.trainer.accumulate_grad_batches > 1:
            # the graphed backward hands out its own gradient buffers, which become the parameters'
            # .grad and are overwritten by the next replay before it accumulates into them
            raise ValueError(
                "cuda_graph=True cannot accumulate gradients: set trainer.accumulate_grad_batches=1 "
                "(or a larger data.batch_size), or model.cuda_graph=false"
            )

    def teardown(self, stage: str) -> None:
        self._graphed_objective = None  # frees the graphs' memory; Lightning moves the weights off the GPU

    # ----------------------------------------------------------------------------------------
    # randomness: one stream per module and rank, restored from checkpoints
    def _rng(self) -> torch.Generator:
        if self._generator is None or self._generator.device.type != self.device.type:
            generator = torch.Generator(device=self.device)
            base = self.hparams.rng_seed if self.hparams.rng_seed is not None else torch.initial_seed()
            generator.manual_seed(int(base) + 1_000_003 * self.global_rank)
            if self._pending_rng_state is not None:
                states, saved_device_type = self._pending_rng_state
                self._pending_rng_state = None
                world_size = self.trainer.world_size if self._trainer is not None else 1
                # every rank's stream ([world size, n]) when the checkpoint was saved under DDP
                own_saved = states.dim() == 2 and states.shape[0] == world_size
                state = states[self.global_rank] if own_saved else states.reshape(-1, states.shape[-1])[0]
                if saved_device_type == generator.device.type:
                    generator.set_state(state.clone())  # a row of [world size, n]: its own storage
                else:
                    rank_zero_warn(
                        f"DiffusionSampler: the random stream in the checkpoint was saved on {saved_device_type} "
                        f"and cannot be restored on {generator.device.type}; continuing with a fresh stream "
                        f"(seeded from rng_seed or torch.initial_seed()): the run will not repeat the saved one"
                    )
                if world_size > 1 and not own_saved:
                    # one saved stream for several processes (another world size): each rank derives its own
                    derived = torch.randint(2**62, (1,), generator=generator, device=self.device).item()
                    generator.manual_seed(int(derived) + 1_000_003 * self.global_rank)
            self._generator = generator
        return self._generator

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        generator = self._rng()
        state = generator.get_state()
        if self._trainer is not None and self.trainer.world_size > 1:
            # Lightning writes rank 0's checkpoint: it holds every rank's stream, [world size, n]
            state = self.all_gather(state.to(self.device)).cpu()
        checkpoint["sampler_rng_state"] = state
        checkpoint["sampler_rng_device"] = generator.device.type
        checkpoint["sampler_evaluation_seed"] = self._evaluation_base_seed()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        state = checkpoint.get("sampler_rng_state")
        saved_device_type = checkpoint.get("sampler_rng_device")
        if saved_device_type is None and state is not None:  # checkpoints from before the device was stored
            saved_device_type = "cpu" if state.shape[-1] == torch.default_generator.get_state().numel() else "cuda"
        self._pending_rng_state = None if state is None else (state, saved_device_type)
        self._generator = None
        self._evaluation_seed = checkpoint.get("sampler_evaluation_seed")

    def _randn(self, like: Tensor, generator: torch.Generator) -> Tensor:
        return torch.randn(like.shape, generator=generator, device=like.device, dtype=torch.float32)

    def _evaluation_base_seed(self) -> int:
        """``rng_seed``, else ``torch.initial_seed()`` of rank 0 at the first evaluation (or the first
        checkpoint), the same on every rank and kept in checkpoints."""
        if self.hparams.rng_seed is not None:
            return int(self.hparams.rng_seed)
        if self._evaluation_seed is None:
            seed = torch.initial_seed()
            if self._trainer is not None and self.trainer.world_size > 1:
                # ranks reseed their global streams differently (StepSeed): agree on rank 0's
                seed = self.trainer.strategy.broadcast(seed, src=0)
            self._evaluation_seed = int(seed)
        return self._evaluation_seed

    def evaluation_generator(self, batch_idx: int = 0, stage: str = "val") -> torch.Generator:
        """The random stream of evaluation batch ``batch_idx`` of ``stage`` (``"val"`` or
        ``"test"``): seeded afresh at every evaluation (from the run's evaluation seed, the stage
        and ``batch_idx``), so that every evaluation of a run, resumed or not, uses the same noise,
        tests draw other noise than validations, and evaluating never advances the training
        stream. Every DDP rank draws the same noise (rank 0's): the ranks compute the same
        metrics, which are those of one process, whatever the number of processes (with noise
        per rank, the logged mean of per-rank ``log_z_is``, W2, modes hit, ... depended on it)."""
        if stage not in _EVALUATION_STAGES:
            raise ValueError(f"stage must be one of {', '.join(_EVALUATION_STAGES)}, got {stage!r}")
        stage_code = 1 + _EVALUATION_STAGES.index(stage)
        seed = hash((self._evaluation_base_seed(), stage_code, _EVALUATION_RANK, batch_idx)) & (2**63 - 1)
        return torch.Generator(device=self.device).manual_seed(seed)

    # ----------------------------------------------------------------------------------------
    # the target
    def log_reward(self, x: Tensor) -> Tensor:
        """``log R(x)`` of the target, ``[B, D] -> [B]`` (float32)."""
        if self.energy is None:
            raise RuntimeError(_NO_TARGET)
        log_r = self.energy.log_reward(x)
        if log_r.shape != x.shape[:1]:
            raise ValueError(
                f"{type(self.energy).__name__}.log_reward returned shape {tuple(log_r.shape)} for x of shape "
                f"{tuple(x.shape)}: it must return one value per point, [B] (e.g. .sum(-1) without keepdim)"
            )
        return log_r.float()

    def _differentiable_log_reward(self, x: Tensor, use: str) -> Tensor:
        """:meth:`log_reward` of ``x`` (which requires grad), checked to carry a gradient to ``x``."""
        log_r = self.log_reward(x)
        if not log_r.requires_grad:
            raise RuntimeError(
                f"{type(self.energy).__name__}.log_reward is not differentiable (its output has no gradient "
                f"to x), and {use} needs its gradient: compute it with torch operations on x (no .detach(), "
                ".item(), numpy or torch.no_grad)"
            )
        return log_r

    def _grad_log_reward(self, x: Tensor) -> Tensor:
        """``grad log R(x)``, detached, NaNs zeroed; ``[*, D]``. Works inside Lightning's
        evaluation loops (``torch.inference_mode``) too."""
        with torch.inference_mode(False), torch.enable_grad():
            x = x.detach().float().clone().requires_grad_(True)
            log_r = self._differentiable_log_reward(x.reshape(-1, x.shape[-1]), "the Langevin parametrization")
            (grad,) = torch.autograd.grad(log_r.sum(), x)
        return torch.nan_to_num(grad)

    def _policy(
        self, x: Tensor, t: Tensor | None = None, time_features: tuple[Tensor, Tensor | None] | None = None
    ) -> tuple[Tensor, Tensor | None]:
        grad = self._grad_log_reward(x) if self.net.langevin else None
        drift, log_var = self.net(x, t, grad, time_features)
        return drift.float(), None if log_var is None else log_var.float()

    # ----------------------------------------------------------------------------------------
    # trajectories
    def _backward_log_probs(self, states: Tensor) -> Tensor:
        """Per-step ``log p_B(x_i | x_{i+1})`` of trajectories ``[B, T + 1, D]`` -> ``[B, T]``."""
        times = self.reference.times(states.device)
        steps = torch.arange(self.reference.num_steps, device=states.device)
        x_next = states[:, 1:]
        mean_corr, var_corr = _over_time(self.net.backward_corrections, x_next, times[1:])
        if mean_corr is not None:
            mean_corr, var_corr = mean_corr.float(), var_corr.float()
        mean, var = self.reference.backward_mean_var(x_next, steps, mean_corr, var_corr)
        log_pb = gaussian_log_prob(states[:, :-1], mean, var)
        return torch.where(self.reference.stochastic_steps(states.device), log_pb, torch.zeros_like(log_pb))

    def _noise_std(self, log_var: Tensor | None) -> Tensor | float:
        """Std of the forward step: the reference's ``c`` (a float) scaled by the learned variance."""
        _, _, c = self.reference.forward_coefficients()
        return c if log_var is None else c * (0.5 * log_var).exp()

    def _forward_log_prob(self, x_next: Tensor, mean: Tensor, std: Tensor | float) -> Tensor:
        """``log p_F(x_next | x)`` ``[*]`` for the step's mean and std (see :meth:`_noise_std`)."""
        # torch.full, not new_tensor: no host-to-device copy (allowed inside a CUDA-graph capture)
        variance = torch.full((), std**2, dtype=mean.dtype, device=mean.device) if isinstance(std, float) else std.pow(2)
        return gaussian_log_prob(x_next, mean, variance)

    def _forward_mean(self, x: Tensor, drift: Tensor) -> Tensor:
        a, b, _ = self.reference.forward_coefficients()
        return (x if a == 1.0 else a * x) + b * drift

    def simulate(
        self,
        x0: Tensor,
        exploration_std: float = 0.0,
        reparametrize: bool = False,
        generator: torch.Generator | None = None,
    ) -> Trajectories:
        """Forward trajectories from the start batch ``x0`` ``[B, D]``, with noise from
        ``generator`` (default: the module's training stream).

        With ``reparametrize`` the states keep their graph (reparametrization gradient, for the KL
        objectives); otherwise states are detached and only the log-probabilities carry gradients.
        Exploration widens the sampling noise to ``sqrt(std^2 + exploration_std^2)``; the
        log-probabilities are those of the policy itself.
        """
        x, log_start, noises = self._draw_start_and_noise(x0, generator if generator is not None else self._rng())
        return self._simulate_from(x, log_start, noises, exploration_std, reparametrize)

    def _draw_start_and_noise(self, x0: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """The randomness of a forward simulation from ``x0 [B, D]``, in this order: the start
        states ``[B, D]`` with their log density ``[B]``, then the step noises ``[T, B, D]``."""
        x0 = x0.float()
        start, log_start = self.reference.sample_start(x0, generator)
        return start, log_start, self._randn(x0.new_empty(self.reference.num_steps, *x0.shape), generator)

    def _simulate_from(
        self,
        x: Tensor,
        log_start: Tensor,
        noises: Tensor,
        exploration_std: float | Tensor,
        reparametrize: bool,
        with_reward: bool = True,
    ) -> Trajectories:
        """:meth:`simulate` from drawn start states ``x [B, D]`` (log density ``log_start [B]``)
        with the step noises ``noises [T, B, D]``. A tensor ``exploration_std`` (0-d) is applied
        even when it is 0 (no data-dependent branch: the CUDA-graph path). Without
        ``with_reward`` the target is not evaluated (``log_reward`` is NaN): samples only."""
        times = self.reference.times(x.device)
        embeddings, scalings = self.net.time_features(times[:-1])
        no_scalings = (None,) * self.reference.num_steps
        step_features = zip(embeddings.unbind(0), no_scalings if scalings is None else scalings.unbind(0))
        states, means, stds = [x], [], []
        for features, noise in zip(step_features, noises.unbind(0)):
            drift, log_var = self._policy(x, time_features=features)
            mean = self._forward_mean(x, drift)
            std = self._noise_std(log_var)
            sample_std = std if reparametrize or log_var is None else std.detach()
            if isinstance(exploration_std, Tensor) or exploration_std > 0:
                sample_std = (sample_std**2 + exploration_std**2) ** 0.5
            sample_mean = mean if reparametrize else mean.detach()
            if isinstance(sample_std, float):
                x = torch.add(sample_mean, noise, alpha=sample_std)
            else:
                x = sample_mean + sample_std * noise
            states.append(x)
            means.append(mean)
            stds.append(std)
        trajectory_states = torch.stack(states, dim=1)
        log_pf = self._forward_log_prob(
            trajectory_states[:, 1:], torch.stack(means, dim=1), stds[0] if log_var is None else torch.stack(stds, dim=1)
        )
        terminal = trajectory_states[:, -1]
        if not with_reward:
            log_reward = torch.full(terminal.shape[:1], torch.nan, device=terminal.device)
        elif reparametrize and terminal.requires_grad:
            log_reward = self._differentiable_log_reward(terminal, f"loss={self.loss_name} (through the simulation)")
        else:
            with torch.no_grad():
                log_reward = self.log_reward(terminal)
        return Trajectories(
            states=trajectory_states,
            log_pf=log_pf,
            log_pb=self._backward_log_probs(trajectory_states),
            log_start=log_start,
            log_reward=log_reward,
        )

    def simulate_backward(self, terminal: Tensor, generator: torch.Generator | None = None) -> Trajectories:
        """Backward trajectories from terminal states ``[B, D]`` sampled with ``p_B`` (noise from
        ``generator``, default: the module's training stream); the states carry no gradient, the
        log-probabilities do (one batched network call over all steps)."""
        terminal = terminal.float()
        generator = generator if generator is not None else self._rng()
        times = self.reference.times(terminal.device)
        num_steps = self.reference.num_steps
        with torch.no_grad():
            x = terminal
            states = [x]
            for i in reversed(range(num_steps)):
                if i == 0 and self.reference.fixed_start:
                    x = torch.zeros_like(x)
                else:
                    mean_corr, var_corr = self.net.backward_corrections(x, times[i + 1])
                    if mean_corr is not None:
                        mean_corr, var_corr = mean_corr.float(), var_corr.float()
                    step = torch.tensor([i], device=x.device)
                    mean, var = self.reference.backward_mean_var(
                        x.unsqueeze(1),
                        step,
                        None if mean_corr is None else mean_corr.unsqueeze(1),
                        None if var_corr is None else var_corr.unsqueeze(1),
                    )
                    x = (mean + var.sqrt() * self._randn(mean, generator)).squeeze(1)
                states.append(x)
            trajectory_states = torch.stack(states[::-1], dim=1)
            log_reward = self.log_reward(terminal)
        x_prev = trajectory_states[:, :-1]
        drift, log_var = _over_time(self._policy, x_prev, times[:-1])
        return Trajectories(
            states=trajectory_states,
            log_pf=self._forward_log_prob(
                trajectory_states[:, 1:], self._forward_mean(x_prev, drift), self._noise_std(log_var)
            ),
            log_pb=self._backward_log_probs(trajectory_states),
            log_start=self.reference.start_log_prob(trajectory_states[:, 0]),
            log_reward=log_reward,
        )

    def log_flows(self, trajectories: Trajectories) -> Tensor:
        """``log F(x_i, t_i)`` for ``i = 0..T``, ``[B, T + 1]``: the flow network at the start and
        the intermediate states (plus the forward-looking term for ``fl_subtb``), ``log R`` at ``x_T``."""
        states = trajectories.states
        times = self.reference.times(states.device)
        log_flow = _over_time(self.net.log_flow, states[:, :-1], times[:-1]).float()
        if self.loss_name == "fl_subtb":
            inner, t = states[:, 1:-1], times[1:-1]
            with torch.no_grad():
                log_r = self.log_reward(inner.reshape(-1, inner.shape[-1])).view(inner.shape[:-1])
            ref_var = (self.reference.sigma2 * t).unsqueeze(-1).expand_as(inner)
            log_ref = gaussian_log_prob(inner, torch.zeros_like(inner), ref_var)
            forward_looking = (1.0 - t) * log_ref + t * log_r
            log_flow = torch.cat([log_flow[:, :1], log_flow[:, 1:] + forward_looking], dim=1)
        return torch.cat([log_flow, trajectories.log_reward.unsqueeze(-1)], dim=1)

    # ----------------------------------------------------------------------------------------
    # objectives
    def objective(self, trajectories: Trajectories) -> Tensor:
        """The configured loss of a batch of (forward or backward) trajectories."""
        log_pf = trajectories.log_pf.sum(-1) + trajectories.log_start
        log_pb = trajectories.log_pb.sum(-1)
        log_r = trajectories.log_reward
        name = self.loss_name
        if name in KL_LOSSES:
            return losses.reverse_kl(log_pf, log_pb, log_r)
        if name not in LOSSES:
            raise NotImplementedError(
                f"loss={name} is in {type(self).__name__}.LOSSES but objective() does not compute it: override "
                "objective() for it and call super().objective() for the others"
            )
        if name == "tb":
            return losses.trajectory_balance(log_pf, log_pb, log_r, self.net.log_z)
        if name == "vargrad":
            return losses.vargrad(log_pf, log_pb, log_r)
        log_flow = self.log_flows(trajectories)
        if name == "db":
            return losses.detailed_balance(trajectories.log_pf, trajectories.log_pb, log_flow)
        return losses.subtrajectory_balance(trajectories.log_pf, trajectories.log_pb, log_flow, self.subtb_weights)

    @property
    def trains_on_policy_only(self) -> bool:
        """Whether the loss is a reverse KL through the simulation (``KL_LOSSES``): trained on
        reparametrized on-policy trajectories, without exploration or replay."""
        return self.loss_name in self.KL_LOSSES

    @property
    def learns_log_z(self) -> bool:
        """Whether the loss trains the scalar ``log Z`` (``LOG_Z_LOSSES``; logged as ``log_z``)."""
        return self.loss_name in self.LOG_Z_LOSSES

    @property
    def learns_flows(self) -> bool:
        """Whether the loss trains the flow network (``FLOW_LOSSES``)."""
        return self.loss_name in self.FLOW_LOSSES

    @property
    def accepts_backward_batches(self) -> bool:
        """Whether the loss can train on backward (replay) trajectories, i.e. is not a reverse KL
        (part of :class:`~tenfold.callbacks.LocalSearchReplay`'s protocol)."""
        return not self.trains_on_policy_only

    def exploration_std(self) -> float:
        """Current exploration std: ``exploration_std`` decayed linearly over ``exploration_decay_steps``."""
        std, decay = self.hparams.exploration_std, self.hparams.exploration_decay_steps
        if decay > 0:
            std *= max(0.0, 1.0 - self.global_step / decay)
        return std

    def training_step(self, batch: Tensor, batch_idx: int) -> dict[str, Tensor]:
        if self.backward_batch is not None:
            if self.trains_on_policy_only:
                raise RuntimeError(
                    f"loss={self.loss_name} trains on-policy only; backward (replay) training needs a "
                    f"GFlowNet loss: one of {', '.join(n for n in self.LOSSES if n not in self.KL_LOSSES)}"
                )
            terminal = self.backward_batch.to(self.device)
            self.backward_batch = None
            trajectories = self.simulate_backward(terminal)
            loss = self.objective(trajectories)
            self._check_finite_later(loss, trajectories.log_reward, "backward (replay)")
            self.log("train/loss_backward", loss, prog_bar=True)
            return {"loss": loss}
        exploration = self.exploration_std()
        if self.hparams.cuda_graph and self.device.type == "cuda":
            loss, log_reward, terminal = self._graphed_on_policy_step(batch, exploration)
        else:
            trajectories = self.simulate(
                batch, exploration_std=exploration, reparametrize=self.trains_on_policy_only
            )
            loss = self.objective(trajectories)
            log_reward, terminal = trajectories.log_reward.detach(), trajectories.terminal.detach()
        self._check_finite_later(loss, log_reward, "on-policy")
        self.log("train/loss", loss.detach().clone(), prog_bar=True)
        self.log("train/log_reward", log_reward.mean())
        if exploration > 0:
            self.log("train/exploration_std", exploration)
        if self.learns_log_z:
            self.log("train/log_z", self.net.log_z)
        return {"loss": loss, "samples": terminal, "log_reward": log_reward}

    def _check_finite_later(self, loss: Tensor, log_reward: Tensor, kind: str) -> None:
        """Checks the previous training step and keeps this one's loss and count of non-finite
        rewards for the next check (or :meth:`on_train_end`). Reading the values one step late
        needs no host synchronization within a step, which would stall a GPU step (CUDA graphs)."""
        self._raise_if_not_finite()
        values = torch.stack([loss.detach().float(), (~torch.isfinite(log_reward)).sum().float()])
        self._unchecked_step = (self.global_step, len(log_reward), kind, values)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Adds the gradients' norm to the step's pending check. The check stops on non-finite
        gradients: reduced over the DDP ranks, they are the same on every rank, so that every rank
        stops at the same step. Not under a gradient scaler (``16-mixed``), whose overflowing
        steps are expected and skipped."""
        if self._unchecked_step is None or self._grad_scaler_in_use():
            return
        gradients = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        if not gradients:
            return
        step, batch_size, kind, values = self._unchecked_step
        norm = torch.nn.utils.get_total_norm(gradients).float().to(values.device)
        self._unchecked_step = (step, batch_size, kind, torch.cat([values, norm.reshape(1)]))

    def _grad_scaler_in_use(self) -> bool:
        return self._trainer is not None and getattr(self.trainer.precision_plugin, "scaler", None) is not None

    def _raise_if_not_finite(self) -> None:
        if self._unchecked_step is None:
            return
        step, batch_size, kind, values = self._unchecked_step
        self._unchecked_step = None
        if len(values) < 3:  # no optimizer step (a gradient scaler, or none taken)
            return
        loss, nonfinite_rewards, gradient_norm = values.tolist()
        if math.isfinite(gradient_norm):
            return
        cause = (
            f"{int(nonfinite_rewards)} of the {batch_size} log-rewards of its trajectories are not finite: "
            f"{type(self.energy).__name__}.log_reward must be finite everywhere (a large negative number "
            "rather than -inf outside a support)"
            if nonfinite_rewards
            else "its rewards were finite, so the training diverged: lower the learning rates (the "
            "optimizer's lr, flow_lr) or clip gradients (trainer.gradient_clip_val)"
        )
        raise FloatingPointError(
            f"DiffusionSampler: the {kind} training step {step} has gradient norm {gradient_norm} (loss {loss} on "
            f"this rank); {cause}"
        )

    def on_train_end(self) -> None:
        self._raise_if_not_finite()

    def _graphed_on_policy_step(self, batch: Tensor, exploration: float) -> tuple[Tensor, Tensor, Tensor]:
        """The on-policy step through CUDA graphs (``cuda_graph=True``): the noise drawn as
        :meth:`simulate` draws it, then the captured simulation and loss. Returns the loss (its
        backward replays the backward graph) and copies of ``log R(x_T) [B]`` and ``x_T [B, D]``
        (the graph's outputs are overwritten at the next replay)."""
        if torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
            raise ValueError("cuda_graph=True runs in one process: build the sampler with cuda_graph=False for DDP (model.cuda_graph=false)")
        if torch.is_autocast_enabled("cuda"):
            raise ValueError(
                "cuda_graph=True captures the fp32 step: set trainer.precision=32-true, or model.cuda_graph=false"
            )
        start, log_start, noises = self._draw_start_and_noise(batch, self._rng())
        args = (start, log_start, noises, torch.full((), exploration, device=start.device))
        read = [*self.net.parameters(), *self.energy.buffers()]
        key = (tuple(batch.shape), tuple(t.data_ptr() for t in read))
        if self._graphed_objective is None or self._graphed_objective[0] != key:
            graphed = torch.cuda.make_graphed_callables(
                _OnPolicyObjective(self), tuple(arg.clone() for arg in args), allow_unused_input=True
            )
            self._graphed_objective = (key, graphed)
        loss, log_reward, terminal = self._graphed_objective[1](*args)
        return loss, log_reward.detach().clone(), terminal.detach().clone()

    # ----------------------------------------------------------------------------------------
    # evaluation
    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples ``x_T`` of the current policy (no exploration), ``[n, D]``, with noise
        from ``generator`` (default: the module's training stream). Needs the target only with
        the Langevin parametrization (whose drift reads its gradient)."""
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"sample(n) takes a positive int number of samples, got {n!r}")
        x0 = torch.zeros(n, self.net.dim, device=self.device)
        x, log_start, noises = self._draw_start_and_noise(x0, generator if generator is not None else self._rng())
        return self._simulate_from(x, log_start, noises, 0.0, reparametrize=False, with_reward=False).terminal

    @torch.no_grad()
    def evaluate(self, batch: dict[str, Tensor], generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The paper's metrics on an evaluation batch (Sendera et al., 2024, Sec. 5):

        ``elbo`` and ``log_z_is`` (importance-weighted) estimates of ``log Z`` from forward
        trajectories; ``delta_log_z`` = ``|log Z - elbo|`` and ``delta_log_z_rw`` =
        ``|log Z - log_z_is|`` where ``log Z`` is known; with target samples, ``eubo`` (backward
        trajectories from them), ``w2`` and ``w1`` (2- and 1-Wasserstein distances of the samples)
        and ``mmd2`` (squared RBF MMD with the official code's five bandwidths); for targets with
        known modes, ``modes_hit``. Noise from ``generator`` (default: the module's training
        stream; the validation and test steps pass :meth:`evaluation_generator`).
        """
        trajectories = self.simulate(batch["x0"], generator=generator)
        log_weights = trajectories.log_weights()
        metrics = {"elbo": elbo(log_weights), "log_z_is": log_z_importance(log_weights)}
        if self.learns_log_z:
            metrics["log_z_learned"] = self.net.log_z.detach().float()
        log_z = getattr(self.energy, "log_Z", None)
        if log_z is not None:
            metrics["delta_log_z"] = delta_log_z(metrics["elbo"], log_z)
            metrics["delta_log_z_rw"] = delta_log_z(metrics["log_z_is"], log_z)
        target = batch.get("target_samples")
        if target is not None:
            metrics["eubo"] = eubo(self.simulate_backward(target, generator).log_weights())
            samples, target = trajectories.terminal, target.float()
            metrics["w2"] = torch.tensor(wasserstein2(samples, target))
            metrics["w1"] = torch.tensor(wasserstein1(samples, target))
            metrics["mmd2"] = rbf_mmd2(samples, target).float()
        modes = getattr(self.energy, "modes", None)
        if modes is not None:
            hit = modes_hit(trajectories.terminal, modes, self.hparams.mode_radius)
            metrics["modes_hit"] = torch.tensor(float(hit), device=self.device)
        return {name: value.to(self.device) for name, value in metrics.items()}

    def _log_evaluation(self, batch: dict[str, Tensor], batch_idx: int, prefix: str) -> None:
        metrics = self.evaluate(batch, self.evaluation_generator(batch_idx, prefix))
        self.log_dict(
            {f"{prefix}/{name}": value for name, value in metrics.items()},
            sync_dist=True,
            batch_size=batch["x0"].shape[0],
            prog_bar=False,
        )

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._log_evaluation(batch, batch_idx, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._log_evaluation(batch, batch_idx, "test")

    # ----------------------------------------------------------------------------------------
    def optimizer_parameters(self) -> list[dict[str, Any]]:
        """The optimizer's parameter groups: the policy at the optimizer's lr, ``log Z`` and the
        flows at ``flow_lr``, the learned backward network at ``backward_lr``; named ``policy``,
        ``log_z`` (TB) or ``flows``, and ``backward``, the names of Lightning's learning-rate
        monitor (``lr-Adam/policy``, where it showed ``pg1``, ``pg2``, ...)."""
        def trainable(params: Iterator[nn.Parameter]) -> list[nn.Parameter]:
            return [p for p in params if p.requires_grad]

        policy = trainable(self.net.drift.parameters())
        if self.net.langevin_scaling is not None:
            policy += trainable(self.net.langevin_scaling.parameters())
        groups: list[dict[str, Any]] = [{"params": policy, "name": "policy"}]
        flows = trainable([self.net.log_z])
        if self.net.flow is not None:
            flows += trainable(self.net.flow.parameters())
        if flows:
            groups.append({"params": flows, "lr": self.flow_lr, "name": "log_z" if self.net.flow is None else "flows"})
        if self.net.backward_policy is not None:
            groups.append(
                {"params": list(self.net.backward_policy.parameters()), "lr": self.hparams.backward_lr, "name": "backward"}
            )
        return groups


def _over_time(network: Callable[[Tensor, Tensor], Any], states: Tensor, times: Tensor) -> Any:
    """``network(states, times)`` for the states ``[B, T', D]`` of ``T'`` consecutive steps at
    ``times`` ``[T']``, whose outputs (a tensor or a tuple of tensors or Nones) are ``[B, T', ...]``:
    called on chunks of consecutive steps of at most :data:`_ROWS_PER_NETWORK_CALL` rows for the
    device (at least one step per chunk), the outputs concatenated along the steps."""
    budget = _ROWS_PER_NETWORK_CALL.get(states.device.type)
    batch, num_steps = states.shape[:2]
    if budget is None or batch * num_steps <= budget:
        return network(states, times)
    size = max(1, budget // batch)
    chunks = [network(states[:, i : i + size], times[i : i + size]) for i in range(0, num_steps, size)]
    if isinstance(chunks[0], Tensor):
        return torch.cat(chunks, dim=1)
    return tuple(None if parts[0] is None else torch.cat(parts, dim=1) for parts in zip(*chunks))


class _OnPolicyObjective(nn.Module):
    """A sampler's on-policy training objective as a module whose parameters are the sampler's
    networks, the unit that ``cuda_graph=True`` captures: ``(start [B, D], log_start [B],
    noises [T, B, D], exploration_std []) -> (loss [], log R(x_T) [B], x_T [B, D])``, the last two
    detached. The sampler is held outside the module tree (it owns the networks)."""

    def __init__(self, sampler: DiffusionSampler) -> None:
        super().__init__()
        self.net = sampler.net
        self._sampler = (sampler,)

    def forward(self, start: Tensor, log_start: Tensor, noises: Tensor, exploration_std: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        sampler = self._sampler[0]
        trajectories = sampler._simulate_from(
            start, log_start, noises, exploration_std, reparametrize=sampler.trains_on_policy_only
        )
        return sampler.objective(trajectories), trajectories.log_reward.detach(), trajectories.terminal.detach()
