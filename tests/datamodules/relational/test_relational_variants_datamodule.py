"""``RelationalTaskDataModule`` with CoRelNet's variants: attributes right after construction,
batches of the glyph and the coloured tasks (images recomputed from the glyphs and the colours),
held-out glyphs and colours in the loaders, the Hydra configs, a Lightning loop over a coloured
task, and configuration errors."""

from pathlib import Path

import lightning as L
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from tenfold.datamodules.relational import RelationalTaskDataModule, colour_palette, load_glyphs
from tenfold.datamodules.relational.coloured_tasks import COLOURED_TASKS
from tenfold.datamodules.relational.corelnet_tasks import CORELNET_TASKS

torch.set_num_threads(1)

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs" / "data" / "relational"
VARIANTS = sorted(CORELNET_TASKS) + sorted(COLOURED_TASKS)


@pytest.fixture(scope="module")
def glyphs() -> torch.Tensor:
    return load_glyphs()


@pytest.mark.parametrize("name", VARIANTS)
def test_configs_build_the_variant(name):
    cfg = OmegaConf.load(CONFIG_DIR / f"{name}.yaml")
    assert cfg.task == name and cfg.m_holdout == 0 and cfg.train_size is None
    assert OmegaConf.to_container(cfg)["seed"] == "${seed}"  # the run's seed (train.yaml)
    cfg.seed = 7
    dm = instantiate(cfg)
    assert dm.hparams.seed == 7
    coloured = name in COLOURED_TASKS
    assert dm.in_channels == cfg.in_channels == (3 if coloured else 1)
    assert dm.image_shape == (cfg.in_channels, 32, 32)
    assert (dm.num_classes, dm.sequence_length) == (cfg.num_classes, cfg.sequence_length)
    assert (dm.train_size, dm.val_size, dm.test_size) == (10000, 1000, 10000)
    assert dm.splits is None
    assert ("c_holdout" in cfg) == coloured


@pytest.mark.parametrize("name", ["rmts3_hard", "dist20_hard17", "identity_rules4_missing"])
def test_glyph_variant_batches(name, glyphs):
    dm = RelationalTaskDataModule(name, m_holdout=50, train_size=64, val_size=8, test_size=64)
    dm.setup()
    held_out = set(dm.splits.test_objects.tolist())
    for split, loader in (("train", dm.train_dataloader()), ("test", dm.test_dataloader())):
        batch = next(iter(loader))
        assert set(batch) == {"images", "objects", "target"}
        assert batch["images"].shape == (32, dm.sequence_length, 1, 32, 32)
        assert torch.equal(batch["images"], glyphs[batch["objects"]])
        assert batch["target"].max() < dm.num_classes
        seen = set(batch["objects"].flatten().tolist())
        assert seen <= held_out if split == "test" else not seen & held_out


@pytest.mark.parametrize("name", ["rmts_sc_colours", "same_diff_csep_shapes"])
def test_coloured_batches(name, glyphs):
    dm = RelationalTaskDataModule(
        name, m_holdout=50, c_holdout=60, train_size=32, val_size=8, test_size=32
    )
    dm.setup()
    palette = torch.tensor(colour_palette(), dtype=torch.float32)
    assert torch.equal(dm.palette, palette)
    for split, loader in (("train", dm.train_dataloader()), ("test", dm.test_dataloader())):
        batch = next(iter(loader))
        assert set(batch) == {"images", "objects", "colours", "target"}
        images, objects, colours = batch["images"], batch["objects"], batch["colours"]
        assert images.shape == (32, dm.sequence_length, 3, 32, 32)
        assert images.dtype == torch.float32 and 0.0 <= images.min() <= images.max() <= 1.0
        for trial in range(4):
            for position in range(dm.sequence_length):
                glyph, colour = objects[trial, position], colours[trial, position]
                expected = torch.ones(3, 32, 32)
                if glyph >= 0:
                    expected = expected * glyphs[glyph]
                if colour >= 0:
                    expected = expected * palette[colour][:, None, None]
                assert torch.equal(images[trial, position], expected)
        pools = (dm.splits.test_objects, dm.splits.test_colours)
        if split == "train":
            pools = (dm.splits.train_objects, dm.splits.train_colours)
        assert set(objects[objects >= 0].tolist()) <= set(pools[0].tolist())
        assert set(colours[colours >= 0].tolist()) <= set(pools[1].tolist())


class _LinearClassifier(L.LightningModule):
    """Logits from the flattened image sequence."""

    def __init__(self, inputs: int, num_classes: int) -> None:
        super().__init__()
        self.net = nn.Linear(inputs, num_classes)

    def _loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = self.net(batch["images"].flatten(1))
        return nn.functional.cross_entropy(logits, batch["target"])

    def training_step(self, batch, batch_idx):
        return self._loss(batch)

    def validation_step(self, batch, batch_idx):
        self.log("val/loss", self._loss(batch))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_loop_over_a_coloured_task(tmp_path):
    dm = RelationalTaskDataModule("dist3_sc_shapes", train_size=48, val_size=16, batch_size=16)
    model = _LinearClassifier(dm.sequence_length * 3 * 32 * 32, dm.num_classes)
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    before = model.net.weight.detach().clone()
    trainer.fit(model, datamodule=dm)
    assert trainer.global_step == 3 and not torch.equal(before, model.net.weight)
    assert torch.isfinite(trainer.callback_metrics["val/loss"])


def test_configuration_errors():
    with pytest.raises(ValueError, match=r"c_holdout=5, but task 'rmts' has no colours"):
        RelationalTaskDataModule("rmts", c_holdout=5)
    with pytest.raises(ValueError, match=r"data.in_channels=1 but task 'rmts_sc_shapes'"):
        RelationalTaskDataModule("rmts_sc_shapes", in_channels=1)
    with pytest.raises(ValueError, match=r"c_holdout=97 is not allowed.*4\.\.96"):
        RelationalTaskDataModule("identity_rules_sc_colours", c_holdout=97)
    with pytest.raises(ValueError, match=r"m_holdout=90 is not allowed.*11\.\.89"):
        RelationalTaskDataModule("dist10", m_holdout=90)


@pytest.mark.parametrize("name", ["rmts3_hard", "rmts3_hard_missing"])
def test_rmts3_context_segments_are_the_three_triples(name: str) -> None:
    # ESBN normalizes the source triple and each choice triple apart (RMTS3_hard.py, task_seg)
    dm = RelationalTaskDataModule(name)
    assert dm.context_segments == [[0, 1, 2], [3, 4, 5], [6, 7, 8]]
