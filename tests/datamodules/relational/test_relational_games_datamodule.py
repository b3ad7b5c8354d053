"""``RelationalGamesDataModule``: attributes right after construction, generated batches (shapes,
balance, pentominoes only in training, one test loader per held-out set), seeded order, reading
files the tests write (also left_of derived from ``same`` files), the Hydra configs, checkpoint-safe
hyperparameters and configuration errors."""

from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from tenfold.datamodules.relational import RelationalGamesDataModule
from tenfold.datamodules.relational import games_datamodule as games_module
from tenfold.datamodules.relational import relational_games as rg

torch.set_num_threads(1)

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs" / "data" / "relational"
INKED_PIXELS = {"pentos": 45, "hexos": 54, "stripes": 81}


def inked_per_object(images: torch.Tensor) -> set[int]:
    """The numbers of non-black pixels of the occupied cells of ``[B, 3, 36, 36]`` images."""
    cells = images.reshape(-1, 3, 3, 12, 3, 12).any(dim=1).permute(0, 1, 3, 2, 4)
    counts = cells.reshape(len(images), 9, 144).sum(dim=2)
    return set(counts[counts > 0].tolist())


def test_attributes_right_after_construction():
    dm = RelationalGamesDataModule()
    assert dm.task == "left_of" and dm.data_dir is None
    assert (dm.num_classes, dm.image_size, dm.in_channels) == (2, 36, 3)
    assert (dm.grid_size, dm.cell_size) == (3, 12)
    assert (dm.train_size, dm.val_size, dm.test_size) == (250_000, 5_000, 50_000)
    assert dm.test_sets == ("hexos", "stripes") and not dm.datasets
    # plain values only, so checkpoints load with weights_only
    assert dm.hparams["test_sets"] == ["hexos", "stripes"] and dm.hparams["data_dir"] is None


@pytest.mark.parametrize("task", ["left_of", "between"])
def test_generated_batches(task):
    dm = RelationalGamesDataModule(
        task, train_size=64, val_size=32, test_size=64, batch_size=64, seed=1
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"image", "target"}
    assert batch["image"].shape == (64, 3, 36, 36) and batch["image"].dtype == torch.float32
    assert batch["target"].dtype == torch.int64 and batch["target"].sum() == 32
    assert 0.0 <= batch["image"].min() and batch["image"].max() <= 192 / 255
    assert inked_per_object(batch["image"]) == {INKED_PIXELS["pentos"]}
    assert inked_per_object(next(iter(dm.val_dataloader()))["image"]) == {45}
    loaders = dm.test_dataloader()
    assert len(loaders) == 2
    for name, loader in zip(("hexos", "stripes"), loaders, strict=True):
        test_batch = next(iter(loader))
        assert inked_per_object(test_batch["image"]) == {INKED_PIXELS[name]}
        assert test_batch["target"].sum() == 32
    # the images are the scenes rendered, the targets the task's rule
    scenes = dm.datasets["train"].scenes
    pixels = rg.render("pentos", scenes.forms[:3], scenes.colours[:3])
    expected = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(torch.stack([dm.datasets["train"][i]["image"] for i in range(3)]), expected)
    assert np.array_equal(scenes.target, rg.LABEL_RULES[task](scenes.forms, scenes.colours))


def test_seeded_scenes_and_training_order():
    def first_batches(seed: int) -> list[torch.Tensor]:
        dm = RelationalGamesDataModule(
            "same", train_size=40, val_size=8, test_size=8, batch_size=8, seed=seed
        )
        loader = dm.train_dataloader()
        batches = []
        for epoch in (0, 1):
            loader.sampler.set_epoch(epoch)
            batches.append(next(iter(loader))["image"])
        return batches

    epoch0, epoch1 = first_batches(0)
    again = first_batches(0)
    assert torch.equal(epoch0, again[0]) and torch.equal(epoch1, again[1])
    assert not torch.equal(epoch0, epoch1)
    assert not torch.equal(epoch0, first_batches(1)[0])


def write_released(
    directory: Path, task: str, sizes: dict[str, int], prefix: str | None = None
) -> dict[str, np.ndarray]:
    """Writes generated scenes of ``task`` as released files; returns the images by set."""
    images = {}
    for index, (name, size) in enumerate(sizes.items()):
        scenes = rg.generate_scenes(task, name, size, np.random.default_rng(index))
        images[name] = rg.render(name, scenes.forms, scenes.colours)
        path = rg.released_file(directory, task, name, prefix)
        rg.write_relational_games(path, images[name], scenes.target)
    return images


def test_reads_the_released_files(tmp_path):
    images = write_released(tmp_path, "match_patt", {"pentos": 50, "hexos": 20, "stripes": 12})
    dm = RelationalGamesDataModule(
        "match_patt", data_dir=tmp_path, val_size=10, test_size=16, batch_size=100
    )
    assert dm.train_size is None and dm.hparams["data_dir"] == str(tmp_path)
    dm.prepare_data()
    dm.setup()
    assert dm.train_size == 40
    train = next(iter(dm.train_dataloader()))["image"]
    val = next(iter(dm.val_dataloader()))["image"]
    assert train.shape == (40, 3, 36, 36) and val.shape == (10, 3, 36, 36)
    pentos = torch.from_numpy(images["pentos"]).permute(0, 3, 1, 2).float() / 255
    # validation and training are disjoint, and together the whole pentomino file
    rows = [int(torch.nonzero((pentos == image).flatten(1).all(1))[0]) for image in [*train, *val]]
    assert sorted(rows) == list(range(50))
    hexos, stripes = (next(iter(loader)) for loader in dm.test_dataloader())
    assert hexos["image"].shape[0] == 16 and stripes["image"].shape[0] == 12
    expected = torch.from_numpy(images["stripes"]).permute(0, 3, 1, 2).float() / 255
    assert torch.equal(stripes["image"], expected)


def test_files_named_by_a_prefix(tmp_path):
    # the small files of google-deepmind/deepmind-research PrediNet/ are mini_between_<set>.npz
    write_released(tmp_path, "between", {"pentos": 12, "hexos": 6, "stripes": 6}, "mini_between")
    dm = RelationalGamesDataModule(
        "between", data_dir=tmp_path, val_size=2, file_prefix="mini_between", batch_size=20
    )
    dm.setup()
    assert dm.train_size == 10 and len(next(iter(dm.test_dataloader()[1]))["target"]) == 6
    with pytest.raises(FileNotFoundError, match=r"1task_between_pentos\.npz.*data_dir=null to generate"):
        RelationalGamesDataModule("between", data_dir=tmp_path).prepare_data()


def test_left_of_read_from_the_same_files(tmp_path):
    write_released(tmp_path, "same", {"pentos": 40, "hexos": 10, "stripes": 10})
    dm = RelationalGamesDataModule("left_of", data_dir=tmp_path, val_size=4, test_sets=["hexos"])
    dm.setup()
    same_hexos = rg.read_relational_games(tmp_path / "same_hexos.npz")
    _, labels = rg.derive_left_of(same_hexos.images)
    (loader,) = dm.test_dataloader()
    assert torch.equal(next(iter(loader))["target"], torch.from_numpy(labels[:32]))


def test_configs_build_the_datamodule(tmp_path):
    for task in rg.GENERATED_TASKS:
        cfg = OmegaConf.load(CONFIG_DIR / f"games_{task}.yaml")
        assert cfg.task == task and cfg.data_dir is None and cfg.num_classes == 2
        dm = instantiate(cfg)
        assert isinstance(dm, RelationalGamesDataModule) and dm.test_sets == ("hexos", "stripes")
        assert isinstance(dm.hparams["test_sets"], list)
    cfg = OmegaConf.load(CONFIG_DIR / "games_xoccurs.yaml")
    raw = OmegaConf.to_container(cfg, resolve=False)
    assert raw["task"] == "xoccurs" and raw["data_dir"].endswith("/relations-game-datasets")
    cfg.data_dir = str(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"xoccurs_pentos\.npz.*relations-game-datasets") as missing:
        instantiate(cfg).prepare_data()
    assert "generate" not in str(missing.value)
    # every missing file at once, so that all can be fetched in one go
    assert "xoccurs_pentos.npz, xoccurs_hexos.npz, xoccurs_stripes.npz. Download them" in str(missing.value)
    (tmp_path / "xoccurs_hexos.npz").touch()  # present: only the other two are named
    with pytest.raises(FileNotFoundError) as missing:
        instantiate(cfg).prepare_data()
    assert "not found in " + str(tmp_path) + ": xoccurs_pentos.npz, xoccurs_stripes.npz." in str(missing.value)


def test_configuration_errors():
    with pytest.raises(ValueError, match=r"'xoccurs' cannot be generated.*set data_dir"):
        RelationalGamesDataModule("xoccurs")
    with pytest.raises(ValueError, match="test_sets must be a non-empty list from hexos, stripes"):
        RelationalGamesDataModule(test_sets=["pentos"])
    with pytest.raises(ValueError, match=r"test_sets is a list of names, got the string 'hexos': write \[hexos\]"):
        RelationalGamesDataModule(test_sets="hexos")
    with pytest.raises(ValueError, match=r"data.num_classes=4 .* set data.num_classes=2"):
        RelationalGamesDataModule(num_classes=4)
    with pytest.raises(ValueError, match="train_size must be an int >= 1 or None"):
        RelationalGamesDataModule(train_size=0)
    with pytest.raises(ValueError, match=r"batch_size must be an int >= 1, got None"):
        RelationalGamesDataModule(batch_size=None)
    with pytest.raises(ValueError, match=r"file_prefix='mini_between' names released files, but data_dir is None"):
        RelationalGamesDataModule("between", file_prefix="mini_between")


def test_generated_splits_have_their_own_streams() -> None:
    # validation and each test set come from their own streams of the seed: other training (or
    # test) sizes leave the validation scenes, and other training sizes the test scenes, as they are
    def datasets(train_size: int, test_size: int) -> dict:
        dm = RelationalGamesDataModule(
            "same", train_size=train_size, val_size=8, test_size=test_size, seed=3
        )
        dm.setup()
        return dm.datasets

    first, more_train, more_test = datasets(16, 8), datasets(40, 8), datasets(16, 12)
    for other, splits in ((more_train, ("val", "hexos", "stripes")), (more_test, ("val",))):
        for split in splits:
            a, b = first[split].scenes, other[split].scenes
            assert a.object_set == b.object_set
            for field in ("forms", "colours", "target"):
                assert np.array_equal(getattr(a, field), getattr(b, field)), (split, field)
    assert not np.array_equal(first["train"].scenes.forms, more_train["train"].scenes.forms[:16])


def test_training_order_follows_the_seed_with_the_same_scenes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the training sampler is seeded by `seed`: with the scenes held fixed (one generator whatever
    # the seed), seeds 0 and 1 read them in different orders and equal seeds in one
    real = games_module.generate_scenes

    def fixed_scenes(task: str, name: str, size: int, rng: np.random.Generator) -> rg.Scenes:
        return real(task, name, size, np.random.default_rng(5))

    monkeypatch.setattr(games_module, "generate_scenes", fixed_scenes)

    def epoch_images(seed: int) -> tuple[torch.Tensor, np.ndarray]:
        dm = RelationalGamesDataModule(
            "same", train_size=40, val_size=4, test_size=4, batch_size=40, seed=seed
        )
        dm.setup()
        return next(iter(dm.train_dataloader()))["image"], dm.datasets["train"].scenes.forms

    order0, forms0 = epoch_images(0)
    order1, forms1 = epoch_images(1)
    again1, _ = epoch_images(1)
    assert np.array_equal(forms0, forms1)  # the same scenes
    assert torch.equal(order1, again1)
    assert not torch.equal(order0, order1)
