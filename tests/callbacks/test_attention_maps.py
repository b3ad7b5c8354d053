"""AttentionMaps: the protocol's maps become one PNG per validation epoch and at test end; the
contextual-retrieval net's maps are the search weights, the ground truth and the selection."""

from __future__ import annotations

import functools
from pathlib import Path

import lightning as L
import pytest
import torch

from callbacks import AttentionMaps
from datamodules.attention.contextual_retrieval import ContextualRetrievalDataModule
from modules.attention import CompositionalAttention, ContextualRetrievalNet, SupervisedModule


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
