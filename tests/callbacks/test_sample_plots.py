"""Behaviour tests of the SamplePlots callback (tenfold/callbacks/sample_plots.py)."""

from pathlib import Path

import lightning as L
import matplotlib.image
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from torch import Tensor

from tenfold.callbacks import SamplePlots

torch.set_num_threads(1)


class GaussianEnergy(torch.nn.Module):
    """Standard normal target implementing the callback's energy protocol."""

    def __init__(self, dim: int, can_sample: bool = True) -> None:
        super().__init__()
        self.dim = dim
        self.plot_bounds = (-4.0, 4.0)
        self.can_sample = can_sample
        self.log_reward_calls = 0
        self.register_buffer("scale", torch.ones(dim), persistent=False)

    def log_reward(self, x: Tensor) -> Tensor:
        self.log_reward_calls += 1
        return -0.5 * (x / self.scale).square().sum(-1)

    def sample(self, n: int) -> Tensor:
        if not self.can_sample:
            raise NotImplementedError("no ground-truth samples")
        return torch.randn(n, self.dim)


class FakeSampler(L.LightningModule):
    """Tiny module with the callback's protocol: .energy and .sample(n, generator). Its samples
    have std 3, so about a fifth of the coordinates fall outside the plot bounds (-4, 4)."""

    def __init__(self, dim: int, can_sample: bool = True) -> None:
        super().__init__()
        self.energy = GaussianEnergy(dim, can_sample)
        self.shift = torch.nn.Parameter(torch.zeros(dim))

    def sample(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.randn(n, self.energy.dim, device=self.device, generator=generator) * 3.0 + self.shift

    def training_step(self, batch: Tensor, batch_idx: int) -> Tensor:
        return (batch + self.shift).square().mean()

    def validation_step(self, batch: Tensor, batch_idx: int) -> None:
        self.log("val_loss", (batch + self.shift).square().mean())

    def test_step(self, batch: Tensor, batch_idx: int) -> None:
        self.log("test_loss", (batch + self.shift).square().mean())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(torch.zeros(4, self.energy.dim), batch_size=2)

    def val_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(torch.zeros(4, self.energy.dim), batch_size=2)


def _trainer(tmp_path: Path, max_epochs: int, callback: SamplePlots, logger: object = False) -> L.Trainer:
    return L.Trainer(
        max_epochs=max_epochs,
        limit_train_batches=1,
        limit_val_batches=1,
        logger=logger,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        accelerator="cpu",
        default_root_dir=tmp_path,
        callbacks=[callback],
    )


def _scatter_offsets(fig: Figure) -> dict[str, np.ndarray]:
    """The points ``[n, 2]`` of each scatter of the figure's first panel, by label ("model", "target")."""
    scatters = [c for c in fig.axes[0].collections if isinstance(c, PathCollection)]
    return {c.get_label(): np.asarray(c.get_offsets()) for c in scatters}


class RecordingPlots(SamplePlots):
    """SamplePlots that keeps the scatter points of every figure it builds (the callback clears
    each figure once it is saved)."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.scatters: list[dict[str, np.ndarray]] = []

    def make_figure(self, energy: GaussianEnergy, samples: Tensor, target: Tensor | None) -> Figure:
        fig = super().make_figure(energy, samples, target)
        self.scatters.append(_scatter_offsets(fig))
        return fig


def _assert_scatters_show_clamped_draws(callback: RecordingPlots, model: FakeSampler, pair: tuple[int, int]) -> None:
    """The one recorded figure scatters the callback's draws in the coordinates ``pair``, clamped
    onto the bounds (-4, 4): the model's (some of which lie outside the bounds) and, for D > 2,
    the target's where the energy can sample. Redrawing gives the plotted draws: the callback is
    seeded."""
    samples, target = callback._draw(model, model.energy)
    assert (samples[:, list(pair)].abs() > 4.0).any()
    expected = {"model": samples}
    if target is not None and model.energy.dim > 2:
        expected["target"] = target
    (scatters,) = callback.scatters
    assert scatters.keys() == expected.keys()
    for label, draws in expected.items():
        clamped = draws[:, list(pair)].clamp(-4.0, 4.0).numpy()
        np.testing.assert_array_equal(scatters[label], clamped, err_msg=label)


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert image[..., :3].std() > 0.01  # not a blank canvas


@pytest.mark.parametrize(("dim", "can_sample"), [(2, True), (10, True), (10, False)])
def test_one_epoch_writes_one_png_of_the_clamped_samples(tmp_path: Path, dim: int, can_sample: bool) -> None:
    model = FakeSampler(dim, can_sample)
    callback = RecordingPlots(n_samples=200, grid_points=20, seed=0)
    _trainer(tmp_path, 1, callback).fit(model)  # sanity check runs first and must not plot
    pngs = sorted((tmp_path / "plots").glob("*.png"))
    assert [p.name for p in pngs] == ["val_epoch0000_step00000001.png"]
    _assert_png(pngs[0])
    _assert_scatters_show_clamped_draws(callback, model, pair=(0, 1))
    # the 2-D plot evaluates log_reward on the grid; the 10-D plot (no slice contours) does not
    assert (model.energy.log_reward_calls > 0) == (dim == 2)


def test_every_n_epochs_and_test_stage(tmp_path: Path) -> None:
    model = FakeSampler(3)
    trainer = _trainer(tmp_path, 4, SamplePlots(every_n_epochs=2, n_samples=50, grid_points=10))
    trainer.fit(model)
    trainer.test(model, dataloaders=model.val_dataloader())
    names = sorted(p.name for p in (tmp_path / "plots").glob("*.png"))
    assert names == [
        "test_epoch0004_step00000004.png",
        "val_epoch0001_step00000002.png",
        "val_epoch0003_step00000004.png",
    ]


def test_tensorboard_logger_gets_the_figure(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(save_dir=tmp_path, name="tb")
    _trainer(tmp_path, 1, SamplePlots(n_samples=50, grid_points=10), logger=logger).fit(FakeSampler(2))
    log_dir = Path(logger.log_dir)
    assert len(list((log_dir / "plots").glob("*.png"))) == 1
    events = EventAccumulator(str(log_dir))
    events.Reload()
    assert "samples/val" in events.Tags()["images"]


def test_wandb_logger_gets_the_figure(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An offline W&B run holds the plot as an image of the step (before: only TensorBoard got it)."""
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    # wandb-core writes debug logs under the home directory unless told otherwise
    for name in ("WANDB_DIR", "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR"):
        monkeypatch.setenv(name, str(tmp_path / "wandb_home"))
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="tenfold-test")
    _trainer(tmp_path, 1, SamplePlots(n_samples=50, grid_points=10), logger=logger).fit(FakeSampler(2))
    run_dir = Path(logger.experiment.dir)
    logger.experiment.finish()
    images = list((run_dir / "media" / "images" / "samples").glob("val_*.png"))
    assert len(images) == 1
    _assert_png(images[0])


def test_slice_contours_and_pair_scatter_in_high_dim(tmp_path: Path) -> None:
    model = FakeSampler(5)
    callback = RecordingPlots(n_samples=50, pair=(0, 2), slice_contours=True, grid_points=16, chunk_size=100, seed=0)
    _trainer(tmp_path, 1, callback).fit(model)
    assert model.energy.log_reward_calls == 3  # 16 * 16 = 256 grid points in chunks of 100
    _assert_png(next((tmp_path / "plots").glob("*.png")))
    _assert_scatters_show_clamped_draws(callback, model, pair=(0, 2))


@pytest.mark.parametrize(("dim", "pair"), [(2, (0, 1)), (3, (2, 0))])
def test_scatter_points_are_the_model_samples_clamped_to_the_bounds(dim: int, pair: tuple[int, int]) -> None:
    # pair (2, 0): the x axis shows coordinate 2, the y axis coordinate 0
    samples = torch.tensor([[-9.0, 1.0, 0.5], [2.0, 7.0, -4.5], [0.5, -0.25, 3.0]])[:, :dim]
    expected = {
        (0, 1): [[-4.0, 1.0], [2.0, 4.0], [0.5, -0.25]],
        (2, 0): [[0.5, -4.0], [-4.0, 2.0], [3.0, 0.5]],
    }[pair]
    fig = SamplePlots(pair=pair, grid_points=8).make_figure(GaussianEnergy(dim), samples, target=None)
    scatters = _scatter_offsets(fig)
    assert scatters.keys() == {"model"}
    np.testing.assert_array_equal(scatters["model"], expected)


class _StubTrainer:
    """The attributes of Trainer the callback reads; counts reads of the collective log_dir."""

    def __init__(self, root: Path, is_global_zero: bool) -> None:
        self.default_root_dir = str(root)
        self.is_global_zero = is_global_zero
        self.sanity_checking = False
        self.current_epoch = 0
        self.global_step = 7
        self.loggers: list = []
        self.log_dir_reads = 0

    @property
    def log_dir(self) -> str:
        self.log_dir_reads += 1
        return self.default_root_dir


def test_non_zero_rank_joins_log_dir_broadcast_but_does_not_plot(tmp_path: Path) -> None:
    model = FakeSampler(2)
    callback = SamplePlots(n_samples=20, grid_points=8)
    rank1 = _StubTrainer(tmp_path, is_global_zero=False)
    callback.on_validation_epoch_end(rank1, model)
    assert rank1.log_dir_reads == 1
    assert not (tmp_path / "plots").exists()
    rank0 = _StubTrainer(tmp_path, is_global_zero=True)
    callback.on_validation_epoch_end(rank0, model)
    assert rank0.log_dir_reads == 1
    _assert_png(tmp_path / "plots" / "val_epoch0000_step00000007.png")


def test_plotting_leaves_global_rng_untouched(tmp_path: Path) -> None:
    model = FakeSampler(4)
    for seed in (None, 123):
        callback = SamplePlots(n_samples=30, seed=seed)
        torch.manual_seed(0)
        expected = torch.rand(3)
        torch.manual_seed(0)
        callback.on_validation_epoch_end(_StubTrainer(tmp_path, True), model)
        assert torch.equal(torch.rand(3), expected)


def test_seeded_draws_are_identical(tmp_path: Path) -> None:
    model = FakeSampler(3)
    callback = SamplePlots(n_samples=30, seed=5)
    first = callback._draw(model, model.energy)
    second = callback._draw(model, model.energy)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_diffusion_sampler_plots_are_seeded_and_leave_its_training_stream_alone(tmp_path: Path) -> None:
    # DiffusionSampler draws from a generator of its own, not the global one: the callback's seed
    # must still fix the plotted samples, and plotting must not advance the sampler's stream.
    from tenfold.modules.samplers import DiffusionSampler, SamplerNets

    sampler = DiffusionSampler(
        SamplerNets(2, hidden_dim=8), torch.optim.Adam, energy=GaussianEnergy(2), loss="tb", num_steps=4, rng_seed=0
    )
    training_stream = sampler._rng().get_state()
    callback = SamplePlots(n_samples=50, seed=5)
    first, second = callback._draw(sampler, sampler.energy), callback._draw(sampler, sampler.energy)
    assert torch.equal(first[0], second[0])
    assert not torch.equal(first[0], SamplePlots(n_samples=50, seed=6)._draw(sampler, sampler.energy)[0])
    callback.on_validation_epoch_end(_StubTrainer(tmp_path, True), sampler)
    assert torch.equal(sampler._rng().get_state(), training_stream)


def test_a_sample_method_without_generator_is_refused_by_name(tmp_path: Path) -> None:
    class OldProtocol(FakeSampler):
        def sample(self, n: int) -> Tensor:  # type: ignore[override]
            return torch.zeros(n, self.energy.dim)

    with pytest.raises(TypeError, match="give sample a `generator` argument"):
        SamplePlots(n_samples=10).on_validation_epoch_end(_StubTrainer(tmp_path, True), OldProtocol(2))

    class KeywordArguments(FakeSampler):
        def sample(self, n: int, **kwargs: object) -> Tensor:  # type: ignore[override]
            return super().sample(n, kwargs["generator"])  # type: ignore[arg-type]

    SamplePlots(n_samples=10).on_validation_epoch_end(_StubTrainer(tmp_path, True), KeywordArguments(2))
    assert len(list((tmp_path / "plots").glob("val_*.png"))) == 1


def test_a_module_without_the_protocol_stops_before_training(tmp_path: Path) -> None:
    class NoEnergy(FakeSampler):
        def __init__(self) -> None:
            super().__init__(2)
            del self.energy

    module = NoEnergy()
    module.training_step = lambda batch, batch_idx: pytest.fail("trained before the protocol check")  # type: ignore[method-assign]
    with pytest.raises(AttributeError, match=r"SamplePlots needs NoEnergy to provide sample\(n, generator=...\) and an `energy`"):
        _trainer(tmp_path, 1, SamplePlots(n_samples=10)).fit(module)


def test_a_target_without_the_protocol_stops_before_training(tmp_path: Path) -> None:
    module = FakeSampler(2)
    del module.energy.plot_bounds
    module.training_step = lambda batch, batch_idx: pytest.fail("trained before the protocol check")  # type: ignore[method-assign]
    with pytest.raises(AttributeError, match=r"the target GaussianEnergy to have plot_bounds \(dim"):
        _trainer(tmp_path, 1, SamplePlots(n_samples=10)).fit(module)
    module = FakeSampler(2)
    module.energy.sample = None  # can_sample, but nothing to call
    with pytest.raises(AttributeError, match=r"to have sample\(\) \(dim"):
        _trainer(tmp_path, 1, SamplePlots(n_samples=10)).fit(module)


def test_one_dimensional_targets_get_histograms_over_the_normalized_density() -> None:
    """D = 1: no scatter (before, a coordinate against itself); the density curve integrates to 1
    over wide bounds and peaks at N(0, 1)'s 1 / sqrt(2 pi), beside the histograms."""
    energy = GaussianEnergy(1)
    energy.plot_bounds = (-8.0, 8.0)
    samples = torch.tensor([[0.1], [0.2], [-0.3], [9.0]])
    fig = SamplePlots(grid_points=401).make_figure(energy, samples, target=torch.randn(50, 1))
    (ax,) = fig.axes
    assert not [c for c in ax.collections if isinstance(c, PathCollection)]
    (curve,) = ax.get_lines()
    x, density = curve.get_xdata(), curve.get_ydata()
    assert np.trapezoid(density, x) == pytest.approx(1.0, abs=1e-3)
    assert density.max() == pytest.approx(1 / np.sqrt(2 * np.pi), rel=1e-3)
    assert [text.get_text() for text in ax.get_legend().get_texts()] == ["density", "target", "model"]


def test_sanity_check_stub_skips(tmp_path: Path) -> None:
    stub = _StubTrainer(tmp_path, True)
    stub.sanity_checking = True
    SamplePlots().on_validation_epoch_end(stub, FakeSampler(2))
    assert not (tmp_path / "plots").exists()


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="every_n_epochs, n_samples, chunk_size must be >= 1"):
        SamplePlots(every_n_epochs=0)
    with pytest.raises(ValueError, match=r"pair must name two different coordinates, got \(1, 1\)"):
        SamplePlots(pair=(1, 1))
