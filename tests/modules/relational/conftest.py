"""Fixture ``fit_and_test``: the short real training runs of the relational tests, on the CPU and
without validation, logging or checkpoints."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import pytest

Results = list[dict[str, float]]


def fit_and_test(module: L.LightningModule, data: L.LightningDataModule, steps: int) -> tuple[Results, Results]:
    """``trainer.test`` results (one dict per test dataloader) before and after ``steps``
    optimizer steps of ``trainer.fit``."""
    trainer = L.Trainer(
        accelerator="cpu", max_steps=steps, limit_val_batches=0, num_sanity_val_steps=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )
    before = trainer.test(module, data, verbose=False)
    trainer.fit(module, data)
    return before, trainer.test(module, data, verbose=False)


@pytest.fixture(name="fit_and_test")
def fit_and_test_fixture() -> Callable[[L.LightningModule, L.LightningDataModule, int], tuple[Results, Results]]:
    """:func:`fit_and_test`."""
    return fit_and_test
