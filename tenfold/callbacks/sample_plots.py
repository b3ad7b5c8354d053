"""Periodic plots of a sampler's samples against its target density.

Works with any LightningModule that follows this protocol (nothing is imported from the module):

- ``pl_module.sample(n: int, generator: torch.Generator) -> Tensor``: ``[n, D]`` samples from the
  current model with noise drawn from ``generator`` (a generator on ``pl_module.device``; called
  under ``torch.no_grad()``; it must not run collective operations, since only rank 0 calls it).
- ``pl_module.energy``: the target, with
    - ``dim: int`` (``D``),
    - ``log_reward(x: Tensor[B, D]) -> Tensor[B]``: unnormalized log density,
    - ``plot_bounds: tuple[float, float]``: square plotting range ``(low, high)``,
    - ``can_sample: bool`` and ``sample(n: int) -> Tensor[n, D]``: ground-truth samples.

Figures follow the official visualizations (GFNOrg/gfn-diffusion ``energy_sampling/plot_utils.py``
and ``train.py::plot_step``: 2000 samples over contours of ``log_reward``, clamped to the bounds).
Figures are ``matplotlib.figure.Figure`` objects built without pyplot (no global backend or
figure registry); PNGs are rendered by the Agg canvas that ``Figure.savefig`` picks for them.
"""

import inspect
import math
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from torch import Tensor

from tenfold.callbacks.figures import save_and_log_figure

__all__ = ["SamplePlots"]

_MODEL_COLOR = "tab:red"
_TARGET_COLOR = "tab:blue"


def _energy_device(energy: Any, fallback: torch.device) -> torch.device:
    """Device of the energy's first buffer or parameter, else ``fallback``."""
    if isinstance(energy, torch.nn.Module):
        for tensor in (*energy.buffers(), *energy.parameters()):
            return tensor.device
    return fallback


class SamplePlots(L.Callback):
    """Save a PNG of model samples every ``every_n_epochs`` validation epochs (and at test end).

    For ``D == 1``: histograms of the samples (and target samples) over the target density,
    normalized on ``grid_points`` points over ``plot_bounds``. For ``D == 2``: a scatter of the
    samples over filled contours of ``log_reward`` on a
    ``grid_points x grid_points`` grid over ``plot_bounds``. For ``D > 2``: a scatter of the
    coordinates ``pair`` (model samples, and target samples when ``energy.can_sample``), optionally
    over contours of ``log_reward`` on the 2-D slice through the origin spanned by ``pair`` (useful
    for separable targets such as ManyWell, whose official plots use ``(x1, x3)``, i.e.
    ``pair=(0, 2)``), followed by 1-D histograms of the first ``n_marginals`` coordinates (model vs
    target). Samples outside the bounds are clamped onto the border, as in the official plots.

    Files go to ``<trainer.log_dir or trainer.default_root_dir>/plots/`` named
    ``{stage}_epoch{E:04d}_step{S:08d}.png`` (``trainer.log_dir`` is the logger's folder:
    ``<run>/csv/`` for the CSV logger, ``<run>/tensorboard/`` for TensorBoard); TensorBoard and
    W&B loggers also get the figure under the tag ``"samples/{stage}"``.

    DDP: ``trainer.log_dir`` is read on every rank (it broadcasts), then only global rank 0 samples
    and plots. The callback keeps no state; the model samples with a generator of the callback's
    own and the target inside ``torch.random.fork_rng``, so the training random streams are the
    same with and without it.

    Args:
        every_n_epochs: plot after validation epochs with ``(epoch + 1) % every_n_epochs == 0``.
        n_samples: number of model (and target) samples drawn for a plot (official: 2000).
        n_marginals: number of leading coordinates with 1-D histograms (``D > 2``).
        pair: the two coordinates of the scatter panel (``D > 2``).
        slice_contours: for ``D > 2``, draw ``log_reward`` contours on the slice through the origin.
        grid_points: grid resolution per axis for the contours.
        contour_range: contours span ``[max - contour_range, max]`` of ``log_reward`` on the grid.
        chunk_size: grid points per ``log_reward`` call.
        seed: when set, samples are drawn with this seed (same noise at every plot); else with a
            seed drawn from the global stream, which is then restored.
        on_test: also plot once at the end of a test epoch.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        n_samples: int = 2000,
        n_marginals: int = 4,
        pair: tuple[int, int] = (0, 1),
        slice_contours: bool = False,
        grid_points: int = 200,
        contour_range: float = 50.0,
        chunk_size: int = 8192,
        seed: int | None = None,
        on_test: bool = True,
    ) -> None:
        super().__init__()
        if every_n_epochs < 1 or n_samples < 1 or grid_points < 2 or chunk_size < 1:
            raise ValueError("every_n_epochs, n_samples, chunk_size must be >= 1 and grid_points >= 2")
        if pair[0] == pair[1]:
            raise ValueError(f"pair must name two different coordinates, got {pair}")
        self.every_n_epochs = every_n_epochs
        self.n_samples = n_samples
        self.n_marginals = n_marginals
        self.pair = (int(pair[0]), int(pair[1]))
        self.slice_contours = slice_contours
        self.grid_points = grid_points
        self.contour_range = contour_range
        self.chunk_size = chunk_size
        self.seed = seed
        self.on_test = on_test

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check_protocol(pl_module)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.on_test:
            self._check_protocol(pl_module)

    def _check_protocol(self, pl_module: L.LightningModule) -> None:
        """Stops at the start, not after the first epoch, when the module lacks the protocol."""
        sample = getattr(pl_module, "sample", None)
        if not callable(sample) or getattr(pl_module, "energy", None) is None:
            raise AttributeError(
                f"SamplePlots needs {type(pl_module).__name__} to provide sample(n, generator=...) and an `energy` "
                "(the target, with dim, log_reward, plot_bounds, can_sample and sample; see the callback's "
                "docstring), set by the time training or testing starts"
            )
        parameters = inspect.signature(sample).parameters.values()
        takes_generator = any(
            parameter.name == "generator" or parameter.kind is inspect.Parameter.VAR_KEYWORD for parameter in parameters
        )
        if not takes_generator:
            raise TypeError(
                f"SamplePlots calls {type(pl_module).__name__}.sample(n, generator=...): give sample a "
                "`generator` argument (a torch.Generator on the module's device to draw its noise from)"
            )
        energy = pl_module.energy
        missing = [name for name in ("dim", "plot_bounds", "can_sample") if not hasattr(energy, name)]
        missing += [
            f"{name}()"
            for name in ("log_reward", *(("sample",) if getattr(energy, "can_sample", False) else ()))
            if not callable(getattr(energy, name, None))
        ]
        if missing:
            raise AttributeError(
                f"SamplePlots needs the target {type(energy).__name__} to have {', '.join(missing)} (dim, "
                "log_reward(x [B, D]) -> [B], plot_bounds (low, high), can_sample, and sample(n) when it can "
                "sample; tenfold.datamodules.samplers.energies.Energy has them all)"
            )

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or (trainer.current_epoch + 1) % self.every_n_epochs != 0:
            return
        self._plot(trainer, pl_module, stage="val")

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.on_test:
            self._plot(trainer, pl_module, stage="test")

    def _plot(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> Path | None:
        """Draw, save and log one figure on rank 0; returns the PNG path there, None elsewhere."""
        root = trainer.log_dir or trainer.default_root_dir  # collective: read on every rank
        if not trainer.is_global_zero:
            return None
        energy = pl_module.energy
        samples, target = self._draw(pl_module, energy)
        fig = self.make_figure(energy, samples, target)
        fig.suptitle(f"{stage}  epoch {trainer.current_epoch}  step {trainer.global_step}")
        path = Path(root) / "plots" / f"{stage}_epoch{trainer.current_epoch:04d}_step{trainer.global_step:08d}.png"
        save_and_log_figure(trainer, fig, path, f"samples/{stage}")
        fig.clear()
        return path

    def _draw(self, pl_module: L.LightningModule, energy: Any) -> tuple[Tensor, Tensor | None]:
        """Model samples [n, D] and target samples [n, D] (or None), float32 on CPU."""
        self._check_protocol(pl_module)
        device = pl_module.device
        fork_devices: list[int] = []
        if device.type == "cuda":
            fork_devices = [device.index if device.index is not None else torch.cuda.current_device()]
        with torch.random.fork_rng(devices=fork_devices), torch.no_grad():
            if self.seed is not None:
                torch.manual_seed(self.seed)
            generator = torch.Generator(device=device).manual_seed(int(torch.randint(2**62, (1,))))
            samples = pl_module.sample(self.n_samples, generator=generator).detach().float().cpu()
            target = energy.sample(self.n_samples).detach().float().cpu() if energy.can_sample else None
        return samples, target

    def make_figure(self, energy: Any, samples: Tensor, target: Tensor | None) -> Figure:
        """Build the figure (no pyplot) for ``samples`` [n, D] and optional ``target`` [m, D]."""
        dim = int(energy.dim)
        low, high = (float(b) for b in energy.plot_bounds)
        if dim == 1:
            fig = Figure(figsize=(6.0, 4.4), layout="constrained")
            ax = fig.subplots()
            self._density(ax, energy, low, high)
            bins = np.linspace(low, high, 61)
            if target is not None:
                ax.hist(target[:, 0].clamp(low, high).numpy(), bins=bins, density=True,
                        color=_TARGET_COLOR, alpha=0.5, label="target")
            ax.hist(samples[:, 0].clamp(low, high).numpy(), bins=bins, density=True,
                    histtype="step", color=_MODEL_COLOR, label="model")
            ax.set_xlim(low, high)
            ax.set_xlabel("x1")
            ax.legend(loc="upper right", fontsize="small")
            return fig
        if dim == 2:
            fig = Figure(figsize=(6.0, 6.4), layout="constrained")
            ax = fig.subplots()
            self._contours(ax, energy, (0, 1), dim, low, high)
            self._scatter(ax, samples, (0, 1), low, high, _MODEL_COLOR, "model")
            ax.set_xlabel("x1")
            ax.set_ylabel("x2")
            return fig
        pair = (self.pair[0] % dim, self.pair[1] % dim)
        n_marg = max(0, min(self.n_marginals, dim))
        n_panels = 1 + n_marg
        ncols = min(n_panels, 5)
        nrows = math.ceil(n_panels / ncols)
        fig = Figure(figsize=(3.5 * ncols, 3.5 * nrows + 0.4), layout="constrained")
        axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
        ax = axes[0]
        if self.slice_contours:
            self._contours(ax, energy, pair, dim, low, high)
        if target is not None:
            self._scatter(ax, target, pair, low, high, _TARGET_COLOR, "target")
        self._scatter(ax, samples, pair, low, high, _MODEL_COLOR, "model")
        ax.set_xlabel(f"x{pair[0] + 1}")
        ax.set_ylabel(f"x{pair[1] + 1}")
        ax.legend(loc="upper right", fontsize="small")
        bins = np.linspace(low, high, 41)
        for i in range(n_marg):
            hax = axes[1 + i]
            if target is not None:
                hax.hist(target[:, i].clamp(low, high).numpy(), bins=bins, density=True,
                         color=_TARGET_COLOR, alpha=0.5, label="target")
            hax.hist(samples[:, i].clamp(low, high).numpy(), bins=bins, density=True,
                     histtype="step", color=_MODEL_COLOR, label="model")
            hax.set_xlim(low, high)
            hax.set_title(f"x{i + 1}", fontsize="small")
        for extra in axes[n_panels:]:
            extra.set_axis_off()
        return fig

    @staticmethod
    def _scatter(ax: Axes, points: Tensor, pair: tuple[int, int], low: float, high: float,
                 color: str, label: str) -> None:
        pts = points[:, list(pair)].clamp(low, high).numpy()
        ax.scatter(pts[:, 0], pts[:, 1], s=4, alpha=0.5, color=color, label=label, linewidths=0)
        ax.set_xlim(low, high)
        ax.set_ylim(low, high)
        ax.set_aspect("equal")

    def _density(self, ax: Axes, energy: Any, low: float, high: float) -> None:
        """The 1-D target density ``exp(log_reward)``, normalized over ``[low, high]`` on the grid."""
        grid = torch.linspace(low, high, self.grid_points)
        device = _energy_device(energy, torch.device("cpu"))
        with torch.no_grad():
            log_density = torch.cat(
                [energy.log_reward(chunk.unsqueeze(1).to(device)).float().cpu() for chunk in grid.split(self.chunk_size)]
            )
        log_density = torch.nan_to_num(log_density, nan=-torch.inf)
        spacing = (high - low) / (self.grid_points - 1)
        density = (log_density - torch.logsumexp(log_density, dim=0) - math.log(spacing)).exp()
        ax.plot(grid.numpy(), density.numpy(), color="black", linewidth=1.0, label="density")

    def _contours(
        self, ax: Axes, energy: Any, pair: tuple[int, int], dim: int, low: float, high: float
    ) -> None:
        """Filled contours of ``log_reward`` on the slice through the origin spanned by ``pair``."""
        grid_1d = torch.linspace(low, high, self.grid_points)
        gx, gy = torch.meshgrid(grid_1d, grid_1d, indexing="xy")  # [G, G], gx varies along columns
        device = _energy_device(energy, torch.device("cpu"))
        values = torch.empty(gx.numel())
        flat_x, flat_y = gx.reshape(-1), gy.reshape(-1)
        with torch.no_grad():
            for start in range(0, gx.numel(), self.chunk_size):
                stop = min(start + self.chunk_size, gx.numel())
                points = torch.zeros(stop - start, dim, device=device)
                points[:, pair[0]] = flat_x[start:stop].to(device)
                points[:, pair[1]] = flat_y[start:stop].to(device)
                values[start:stop] = energy.log_reward(points).float().cpu()
        finite = torch.isfinite(values)
        top = values[finite].max().item() if bool(finite.any()) else 0.0
        values = torch.nan_to_num(values, nan=top - self.contour_range, neginf=top - self.contour_range)
        values = values.clamp(top - self.contour_range, top).reshape(gx.shape)
        ax.contourf(gx.numpy(), gy.numpy(), values.numpy(), levels=30, cmap="viridis", alpha=0.8)
