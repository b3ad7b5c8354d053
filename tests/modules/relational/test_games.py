"""The Relational Games nets: the grid is cut into the right cells, the 12 x 12 cell encoder is the
ESBN encoder's layers, every relational net runs on the cells with gradients, the test sets are
reported apart, and CoRelNet learns left_of from generated scenes."""

from __future__ import annotations

import functools

import lightning as L
import numpy as np
import pytest
import torch
from torch import nn

from tenfold.datamodules.relational import RelationalGamesDataModule
from tenfold.datamodules.relational.relational_games import generate_scenes, render
from tenfold.modules.attention import ObjectSequenceNet
from tenfold.modules.nets import ConvGlyphEncoder, TransformerEncoder
from tenfold.modules.relational import (
    ESBN,
    CoRelNet,
    GridObjectNet,
    GridObjects,
    LSTMNet,
    PrediNet,
    RelationalGamesModule,
    RelationNet,
)


def transformer_net(num_classes: int, sequence_length: int, in_channels: int, image_size: int) -> ObjectSequenceNet:
    """The Transformer baseline of ``configs/model/relational/games_transformer.yaml``."""
    attention = functools.partial(nn.MultiheadAttention, num_heads=8, batch_first=True)
    encoder = TransformerEncoder(embed_dim=128, attention=attention, num_layers=1, feedforward_dim=512, dropout=0.0)
    return ObjectSequenceNet(encoder, num_classes, sequence_length, in_channels=in_channels, image_size=image_size)


NETS = {
    "corelnet": CoRelNet,
    "esbn": ESBN,
    "lstm": LSTMNet,
    "predinet": PrediNet,
    "rn": RelationNet,
    "transformer": transformer_net,
}


def scenes_batch(size: int = 4) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {"image": torch.rand(size, 3, 36, 36, generator=generator), "target": torch.arange(size) % 2}


def test_grid_objects_cuts_each_cell_into_its_slot() -> None:
    grid, cell = 3, 12
    image = torch.randn(2, 3, grid * cell, grid * cell, generator=torch.Generator().manual_seed(1))
    objects = GridObjects(grid, cell)(image)
    assert objects.shape == (2, 9, 3, 12, 12)
    for batch in range(2):
        for channel in range(3):
            for y in range(grid * cell):
                for x in range(grid * cell):
                    slot = (y // cell) * grid + x // cell
                    assert objects[batch, slot, channel, y % cell, x % cell] == image[batch, channel, y, x]


def test_grid_objects_of_rendered_scenes_are_the_scene_objects() -> None:
    scenes = generate_scenes("between", "pentos", 8, np.random.default_rng(0))
    pixels = torch.from_numpy(render("pentos", scenes.forms, scenes.colours)).movedim(-1, -3).float()
    occupied = GridObjects()(pixels).flatten(2).amax(dim=2) > 0
    assert torch.equal(occupied, torch.from_numpy(scenes.forms >= 0))


def test_grid_objects_rejects_other_image_sizes() -> None:
    with pytest.raises(ValueError, match="36, 36"):
        GridObjects(3, 12)(torch.zeros(1, 3, 32, 32))


def test_glyph_encoder_on_cells_has_the_official_layers() -> None:
    # CoRelNet's relational_games/models/modules_mini.py: the three convolutions end in a 1 x 1 map
    cell_encoder = ConvGlyphEncoder(in_channels=3, image_size=12)
    assert cell_encoder.fc[0].in_features == 32
    assert cell_encoder(torch.rand(2, 9, 3, 12, 12)).shape == (2, 9, 128)


@pytest.mark.parametrize("name", sorted(NETS))
def test_grid_object_net_outputs_logits_with_gradients(name: str) -> None:
    net = GridObjectNet(NETS[name](2, 9, in_channels=3, image_size=12))
    encoders = [module for module in net.modules() if isinstance(module, ConvGlyphEncoder)]
    assert len(encoders) == 1 and encoders[0].image_size == 12
    batch = scenes_batch()
    logits = net(batch)
    assert logits.shape == (4, 2)
    nn.functional.cross_entropy(logits, batch["target"]).backward()
    assert encoders[0].convs[0].weight.grad is not None
    assert encoders[0].convs[0].weight.grad.abs().sum() > 0


def test_grid_object_net_runs_the_net_on_the_cells() -> None:
    torch.manual_seed(0)
    wrapped = GridObjectNet(CoRelNet(2, 9, in_channels=3, image_size=12))
    batch = scenes_batch()
    cells = GridObjects()(batch["image"])
    torch.testing.assert_close(wrapped(batch), wrapped.net({"images": cells}))


def test_grid_object_net_refuses_a_net_built_for_other_images() -> None:
    with pytest.raises(ValueError, match="build the net with image_size=12"):
        GridObjectNet(CoRelNet(2, 9, in_channels=3))
    wrapped = GridObjectNet(CoRelNet(2, 4, in_channels=3, image_size=16), grid_size=2, cell_size=16)
    assert wrapped({"image": torch.rand(3, 3, 32, 32)}).shape == (3, 2)


def test_games_module_reports_each_test_set_apart() -> None:
    data = RelationalGamesDataModule("same", train_size=32, val_size=8, test_size=16, batch_size=8)
    module = RelationalGamesModule(
        GridObjectNet(CoRelNet(2, 9, in_channels=3, image_size=12)), functools.partial(torch.optim.Adam, lr=5e-4), test_sets=data.test_sets
    )
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    results = trainer.test(module, data, verbose=False)
    assert [sorted(result) for result in results] == [
        ["test/acc_hexos", "test/loss_hexos"],
        ["test/acc_stripes", "test/loss_stripes"],
    ]
    with pytest.raises(ValueError, match="distinct"):
        RelationalGamesModule(module.net, functools.partial(torch.optim.Adam), test_sets=["hexos", "hexos"])


def test_corelnet_learns_left_of_from_generated_scenes(fit_and_test) -> None:
    L.seed_everything(0)
    steps = 300
    data = RelationalGamesDataModule("left_of", train_size=steps * 32, val_size=32, test_size=512, seed=0)
    module = RelationalGamesModule(
        GridObjectNet(CoRelNet(2, 9, in_channels=3, image_size=12)), functools.partial(torch.optim.Adam, lr=5e-4), test_sets=data.test_sets
    )
    (before_hexos, before_stripes), (after_hexos, after_stripes) = fit_and_test(module, data, steps)
    assert before_hexos["test/acc_hexos"] < 0.6 and before_stripes["test/acc_stripes"] < 0.6
    assert after_hexos["test/acc_hexos"] > 0.85, after_hexos
    assert after_stripes["test/acc_stripes"] > 0.75, after_stripes
