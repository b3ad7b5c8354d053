"""Every DataModule's saved hyperparameters load with ``torch.load(weights_only=True)``, as resumes
and evaluations load checkpoints, also when a path argument is a ``pathlib.Path``."""

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
from tenfold.datamodules.relational import RelationalGamesDataModule


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
