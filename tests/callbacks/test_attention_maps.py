"""AttentionMaps: the protocol's maps become one PNG per validation epoch and at test end; the
contextual-retrieval net's maps are the search weights, the ground truth and the selection."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from torch import Tensor
from torch.utils.data import DataLoader, TensorDataset

from tenfold.callbacks import AttentionMaps
from tenfold.datamodules.attention.contextual_retrieval import ContextualRetrievalDataModule
from tenfold.modules.attention import CompositionalAttention, ContextualRetrievalNet
from tenfold.modules.supervised import SupervisedModule

torch.set_num_threads(1)


def test_contextual_retrieval_maps_show_search_weights_truth_and_selection() -> None:
    torch.manual_seed(0)
    data = ContextualRetrievalDataModule(num_gt_searches=2, num_gt_retrievals=2, train_size=8, val_size=8, test_size=8, batch_size=8)
    data.setup()
    batch = next(iter(data.val_dataloader()))
    net = ContextualRetrievalNet(data.input_dim, 16, functools.partial(CompositionalAttention, num_searches=2, num_retrievals=3))
    maps = net.attention_maps(batch)
    weights = maps["search weights (mean over searches)"]
    assert weights.shape == (10, 10)
    torch.testing.assert_close(weights.sum(-1), torch.ones(10))
    assert torch.diagonal(weights).abs().max() == 0, "a token never searches itself"
    truth = maps["ground-truth searches"]
    for token in range(10):
        assert set(truth[token].nonzero().flatten().tolist()) == set(batch["searches"][0, token].tolist())
    selection = maps["retrieval selection [token, search x retrieval]"]
    assert selection.shape == (10, 6)
    torch.testing.assert_close(selection.view(10, 2, 3).sum(-1), torch.ones(10, 2))


def test_callback_writes_one_figure_per_validation_epoch_and_at_test(tmp_path: Path) -> None:
    data = ContextualRetrievalDataModule(train_size=16, val_size=8, test_size=8, batch_size=8)
    net = ContextualRetrievalNet(data.input_dim, 16, functools.partial(CompositionalAttention, num_searches=2, num_retrievals=2))
    module = SupervisedModule(net, functools.partial(torch.optim.Adam, lr=1e-3), loss="l1")
    trainer = L.Trainer(
        accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, callbacks=[AttentionMaps(every_n_epochs=1)],
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=data)
    trainer.test(module, datamodule=data, verbose=False)
    names = sorted(path.name for path in (tmp_path / "plots").glob("*.png"))
    assert names == ["attention_test_epoch0002_step00000004.png", "attention_val_epoch0000_step00000002.png",
                     "attention_val_epoch0001_step00000004.png"]


def test_bad_maps_and_arguments_are_named() -> None:
    with pytest.raises(ValueError, match="must be 2-D"):
        AttentionMaps.make_figure({"weights": torch.zeros(2, 3, 4)})
    with pytest.raises(ValueError, match="every_n_epochs must be at least 1"):
        AttentionMaps(every_n_epochs=0)


class RecordingModule(L.LightningModule):
    """Tiny module with the callback's protocol; every batch ``i`` of a loader holds the values
    ``[size * i, size * (i + 1))``, and every batch passed to ``attention_maps`` is recorded."""

    def __init__(self, train_batches: int = 1, val_batches: int = 3, test_batches: int = 2, size: int = 2) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.sizes = {"train": train_batches, "val": val_batches, "test": test_batches}
        self.size = size
        self.mapped: list[Tensor] = []

    def _loader(self, stage: str) -> DataLoader:
        values = torch.arange(float(self.sizes[stage] * self.size)).view(-1, 1)
        return DataLoader(TensorDataset(values), batch_size=self.size, shuffle=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def training_step(self, batch: list[Tensor], batch_idx: int) -> Tensor:
        return (batch[0] * self.weight).square().mean()

    def validation_step(self, batch: list[Tensor], batch_idx: int) -> None:
        pass

    def test_step(self, batch: list[Tensor], batch_idx: int) -> None:
        pass

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def attention_maps(self, batch: list[Tensor]) -> dict[str, Tensor]:
        self.mapped.append(batch[0].detach().clone())
        return {"values": batch[0].view(1, -1).repeat(2, 1)}


def _trainer(tmp_path: Path, callback: AttentionMaps, max_epochs: int, **kwargs: Any) -> L.Trainer:
    return L.Trainer(
        accelerator="cpu", max_epochs=max_epochs, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, callbacks=[callback], num_sanity_val_steps=0, **kwargs,
    )


def _plots(tmp_path: Path) -> list[str]:
    return sorted(path.name for path in (tmp_path / "plots").glob("*.png"))


def test_every_n_epochs_plots_at_the_end_of_every_nth_epoch(tmp_path: Path) -> None:
    # Pins `(trainer.current_epoch + 1) % every_n_epochs`: with 2, the 2nd and 4th validation
    # epochs (0-based 1 and 3) draw, never the first; one training step per epoch.
    module = RecordingModule(train_batches=1)
    _trainer(tmp_path, AttentionMaps(every_n_epochs=2), max_epochs=4).fit(module)
    assert _plots(tmp_path) == ["attention_val_epoch0001_step00000002.png", "attention_val_epoch0003_step00000004.png"]
    assert len(module.mapped) == 2


def test_the_first_validation_batch_is_plotted(tmp_path: Path) -> None:
    # Pins `batch_idx == 0 and dataloader_idx == 0`: of 3 validation batches, the maps are drawn
    # from the first ([0, 1]), not the last one seen.
    module = RecordingModule(val_batches=3)
    _trainer(tmp_path, AttentionMaps(), max_epochs=2).fit(module)
    assert len(module.mapped) == 2
    for batch in module.mapped:
        torch.testing.assert_close(batch, torch.tensor([[0.0], [1.0]]))


def test_the_first_test_batch_is_plotted(tmp_path: Path) -> None:
    # The same for the test stage: the first of 2 test batches, not the last validation batch.
    module = RecordingModule(val_batches=3, test_batches=2, size=3)
    trainer = _trainer(tmp_path, AttentionMaps(), max_epochs=1)
    trainer.fit(module)
    trainer.test(module, verbose=False)
    assert len(module.mapped) == 2
    torch.testing.assert_close(module.mapped[-1], torch.tensor([[0.0], [1.0], [2.0]]))


def test_the_stored_batch_is_released_after_plotting(tmp_path: Path) -> None:
    # Pins `batch, self._batch = self._batch, None`: after a figure the callback holds no batch
    # (no memory kept between epochs), so a test epoch end without a batch draws nothing instead
    # of the last validation batch again. (Lightning 2.6 skips the epoch hooks of a loader
    # without batches, e.g. limit_test_batches=0, so the hook is called directly.)
    module = RecordingModule()
    callback = AttentionMaps()
    trainer = _trainer(tmp_path, callback, max_epochs=1)
    trainer.fit(module)
    assert _plots(tmp_path) == ["attention_val_epoch0000_step00000001.png"]
    assert callback._batch is None
    callback.on_test_epoch_end(trainer, module)
    assert _plots(tmp_path) == ["attention_val_epoch0000_step00000001.png"]
    assert len(module.mapped) == 1
