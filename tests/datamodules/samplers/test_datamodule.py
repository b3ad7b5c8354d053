"""Behaviour of ``EnergyDataModule``: batch shapes, zero start states, fixed reproducible evaluation
samples, Hydra construction, a Lightning loop over its loaders, and configuration errors."""

from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tenfold.datamodules.samplers import LGCP, GMM25, GMM40, Energy, EnergyDataModule, Funnel, ManyWell

torch.set_num_threads(1)


def test_energy_and_dim_available_right_after_init():
    energy = Funnel()
    dm = EnergyDataModule(energy, batch_size=4)
    assert dm.energy is energy and dm.dim == 10
    assert dm.hparams["batch_size"] == 4 and "energy" not in dm.hparams


def test_train_batches_are_zero_start_states():
    dm = EnergyDataModule(GMM25(), batch_size=7, steps_per_epoch=5)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 5
    for batch in batches:
        assert batch.shape == (7, 2) and batch.dtype == torch.float32
        assert torch.count_nonzero(batch) == 0
    batches[0].add_(1.0)  # a consumer writing into its batch does not change later batches
    assert torch.count_nonzero(next(iter(dm.train_dataloader()))) == 0


def test_eval_batch_has_fixed_target_samples():
    energy = GMM25()
    dm = EnergyDataModule(energy, eval_batch_size=64, seed=3)
    dm.setup("fit")
    (val,) = list(dm.val_dataloader())
    (val_again,) = list(dm.val_dataloader())
    (test,) = list(dm.test_dataloader())
    assert set(val) == {"x0", "target_samples"}
    assert val["x0"].shape == (64, 2) and torch.count_nonzero(val["x0"]) == 0
    assert val["target_samples"].shape == (64, 2)
    assert torch.equal(val["target_samples"], val_again["target_samples"])
    # validation samples first, then independent test samples, from one generator seeded by seed
    generator = torch.Generator().manual_seed(3)
    expected = energy.sample(64, generator=generator)
    expected_test = energy.sample(64, generator=generator)
    assert torch.equal(val["target_samples"], expected)
    assert torch.equal(test["target_samples"], expected_test)
    assert not torch.equal(val["target_samples"], test["target_samples"])
    dm.setup("test")  # a second setup keeps the same samples
    assert torch.equal(next(iter(dm.val_dataloader()))["target_samples"], expected)
    assert torch.equal(next(iter(dm.test_dataloader()))["target_samples"], expected_test)


def test_target_samples_reproducible_across_instances_and_seeds():
    def samples(seed: int) -> torch.Tensor:
        dm = EnergyDataModule(Funnel(), eval_batch_size=32, seed=seed)
        dm.setup("validate")
        return next(iter(dm.val_dataloader()))["target_samples"]

    assert torch.equal(samples(0), samples(0))
    assert not torch.equal(samples(0), samples(1))


def test_eval_dataloader_without_explicit_setup_draws_samples():
    dm = EnergyDataModule(GMM25(), eval_batch_size=8)
    assert next(iter(dm.val_dataloader()))["target_samples"].shape == (8, 2)


def test_no_target_samples_when_energy_cannot_sample():
    dm = EnergyDataModule(LGCP(grid_size=3), batch_size=2, eval_batch_size=5)
    dm.setup("fit")
    (val,) = list(dm.val_dataloader())
    assert set(val) == {"x0"} and val["x0"].shape == (5, 9)
    assert next(iter(dm.train_dataloader())).shape == (2, 9)


def test_hydra_builds_energy_and_datamodule():
    dm = instantiate(
        {
            "_target_": "tenfold.datamodules.samplers.datamodule.EnergyDataModule",
            "energy": {"_target_": "tenfold.datamodules.samplers.energies.GMM25"},
            "batch_size": 3,
            "steps_per_epoch": 2,
        }
    )
    assert isinstance(dm.energy, GMM25) and dm.dim == 2
    assert next(iter(dm.train_dataloader())).shape == (3, 2)


class _Recorder(L.LightningModule):
    """Consumes the datamodule's batches and records what the loops receive."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(2))
        self.train_shapes: list[tuple[int, ...]] = []
        self.val_targets: list[torch.Tensor] = []

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor:
        self.train_shapes.append(tuple(batch.shape))
        return ((batch + self.weight) ** 2).mean()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.val_targets.append(batch["target_samples"].clone())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_loop_gets_the_batches():
    dm = EnergyDataModule(GMM25(), batch_size=4, steps_per_epoch=3, eval_batch_size=16)
    model = _Recorder()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    assert model.train_shapes == [(4, 2)] * 6
    assert len(model.val_targets) == 2
    assert torch.equal(model.val_targets[0], model.val_targets[1])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"energy": "gmm25"}, TypeError, "must be a tenfold.datamodules.samplers.energies.Energy"),
        ({"batch_size": 0}, ValueError, "batch_size must be a positive int"),
        ({"steps_per_epoch": -1}, ValueError, "steps_per_epoch must be a positive int"),
        ({"eval_batch_size": 2.5}, ValueError, "eval_batch_size must be a positive int"),
        ({"seed": "zero"}, ValueError, "seed must be an int"),
    ],
)
def test_wrong_config_raises(kwargs, error, match):
    arguments = {"energy": GMM25(), **kwargs}
    with pytest.raises(error, match=match):
        EnergyDataModule(**arguments)


def test_declared_dim_is_checked_against_the_energy():
    assert EnergyDataModule(GMM25(), dim=2).dim == 2
    with pytest.raises(ValueError, match="data.dim=3 but the target GMM25 has dimension 2"):
        EnergyDataModule(GMM25(), dim=3)


# ---------------------------------------------------------------- added by mutation review

DATA_CONFIGS = Path(__file__).resolve().parents[3] / "configs" / "data" / "samplers"


def _datamodule_from_config(name: str, **overrides: object) -> EnergyDataModule:
    """Instantiates ``configs/data/samplers/<name>.yaml`` as Hydra does under the ``data`` key."""
    cfg = OmegaConf.create({"data": OmegaConf.load(DATA_CONFIGS / f"{name}.yaml")})
    for key, value in overrides.items():
        OmegaConf.update(cfg, f"data.{key}", value)
    return instantiate(cfg.data)


@pytest.mark.parametrize(
    ("name", "energy_cls", "dim"),
    [("gmm25", GMM25, 2), ("gmm40", GMM40, 2), ("funnel", Funnel, 10), ("manywell", ManyWell, 32), ("lgcp", LGCP, 1600)],
)
def test_data_configs_serve_their_target(name: str, energy_cls: type[Energy], dim: int) -> None:
    # Pins that each data config builds the paper's target (the right class, not just the right
    # dimension: GMM25 and GMM40 are both 2-D) with the paper's batch of 300 trajectories.
    dm = _datamodule_from_config(name)
    assert type(dm.energy) is energy_cls and dm.dim == dim == dm.energy.dim
    assert dm.batch_size == 300 and dm.eval_batch_size == 2000


@pytest.mark.parametrize(("name", "energy_cls"), [("funnel", Funnel), ("manywell", ManyWell)])
def test_data_config_dim_override_reaches_the_energy(name: str, energy_cls: type[Energy]) -> None:
    # Pins that data.dim sizes the dimension-generic targets (the models read ${data.dim} too).
    dm = _datamodule_from_config(name, dim=6)
    assert type(dm.energy) is energy_cls and dm.energy.dim == 6 and dm.dim == 6
    assert next(iter(dm.train_dataloader())).shape == (300, 6)
