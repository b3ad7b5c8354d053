"""Arguments of the DataModules: their saved hyperparameters load with
``torch.load(weights_only=True)`` (as resumes and evaluations load checkpoints) also when a path
is a ``pathlib.Path``, and seeds numpy cannot take stop at construction."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tenfold.datamodules.attention import (
    MultitaskImageDataModule,
    SCANDataModule,
    SortOfCLEVRDataModule,
    WikiTextDataModule,
)
from tenfold.datamodules.relational import RelationalGamesDataModule, RelationalTaskDataModule


@pytest.mark.parametrize(
    "datamodule_class",
    [SortOfCLEVRDataModule, WikiTextDataModule, SCANDataModule, MultitaskImageDataModule, RelationalGamesDataModule],
)
def test_a_path_as_data_dir_keeps_the_checkpoint_loadable(datamodule_class: type, tmp_path: Path) -> None:
    datamodule = datamodule_class(data_dir=tmp_path / "data")
    torch.save({"datamodule_hyper_parameters": dict(datamodule.hparams)}, tmp_path / "c.ckpt")
    loaded = torch.load(tmp_path / "c.ckpt", weights_only=True)["datamodule_hyper_parameters"]
    assert loaded["data_dir"] == str(tmp_path / "data")
    assert Path(datamodule.data_dir) == tmp_path / "data"


@pytest.mark.parametrize(
    "datamodule_class",
    [RelationalTaskDataModule, RelationalGamesDataModule, SCANDataModule, MultitaskImageDataModule, WikiTextDataModule],
)
@pytest.mark.parametrize("seed", [-1, 1.5, "a"])
def test_seeds_that_numpy_cannot_take_are_refused_by_name(datamodule_class: type, seed: object, tmp_path: Path) -> None:
    """A negative seed passed the constructor and failed in setup with numpy's bare "expected
    non-negative integer"; a string failed at the first batch."""
    arguments = {} if datamodule_class is RelationalTaskDataModule else {"data_dir": tmp_path}
    with pytest.raises(ValueError, match=rf"{datamodule_class.__name__}: seed must be an int >= 0, got {seed!r}"):
        datamodule_class(seed=seed, **arguments)
