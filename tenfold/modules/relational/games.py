"""The relational networks on Relational Games (Shanahan et al., 2020, arXiv 1905.10307) as CoRelNet
(Kerg et al., 2022, arXiv 2206.05056) runs them: each ``[3, 36, 36]`` scene is cut into its
3 x 3 grid of ``[3, 12, 12]`` cells, a sequence of 9 objects, and any object-sequence network of
this family (:class:`~tenfold.modules.relational.CoRelNet`, :class:`~tenfold.modules.relational.ESBN`, the
baselines, the Transformer :class:`tenfold.modules.attention.ObjectSequenceNet`) classifies it.

Official code: giancarlok/relationaltasks ``relational_games/tasks/relational.py`` (``get_sample``
reshapes ``[B, 3, 36, 36]`` to ``[B, 3, 3, 12, 3, 12]``, permutes to ``[B, 3, 3, 3, 12, 12]``
(grid row, grid column, channel, pixel row, pixel column) and flattens the grid: cell ``k`` is row
``k // 3``, column ``k % 3``) and ``relational_games/models/modules_mini.py`` (``Encoder_conv``:
the ESBN encoder's layers on a 12 x 12 cell, whose three stride-2 convolutions end in a 1 x 1 map,
so its first dense layer has 32 inputs).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torchmetrics import MeanMetric

from tenfold.modules.supervised import SupervisedModule
from tenfold.modules.base import OptimizerFactory, SchedulerFactory
from tenfold.modules.nets import ConvGlyphEncoder

__all__ = ["GridObjectNet", "GridObjects", "RelationalGamesModule"]

class GridObjects(nn.Module):
    """Cuts a grid image into its cells: ``[B, C, G * S, G * S] -> [B, G * G, C, S, S]``.

    Object ``k`` is the cell in grid row ``k // G`` and grid column ``k % G`` (row-major, the
    official ``get_sample``'s order), i.e. ``objects[:, k] = image[:, :, S r : S (r + 1),
    S c : S (c + 1)]`` with ``r, c = divmod(k, G)``.

    Args:
        grid_size: cells per side ``G`` (Relational Games: 3).
        cell_size: pixels per cell side ``S`` (Relational Games: 12).
    """

    def __init__(self, grid_size: int = 3, cell_size: int = 12) -> None:
        super().__init__()
        for name, value in (("grid_size", grid_size), ("cell_size", cell_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"GridObjects: {name} must be a positive int, got {value!r}")
        self.grid_size = grid_size
        self.cell_size = cell_size

    def forward(self, image: Tensor) -> Tensor:
        side = self.grid_size * self.cell_size
        if image.dim() != 4 or image.shape[-2:] != (side, side):
            raise ValueError(
                f"GridObjects expects images [B, C, {side}, {side}] (grid_size {self.grid_size} x cell_size "
                f"{self.cell_size}), got {tuple(image.shape)}"
            )
        batch, channels = image.shape[:2]
        grid, cell = self.grid_size, self.cell_size
        cells = image.reshape(batch, channels, grid, cell, grid, cell).permute(0, 2, 4, 1, 3, 5)
        return cells.reshape(batch, grid * grid, channels, cell, cell)


class GridObjectNet(nn.Module):
    """Runs an object-sequence network on the cells of a grid image:
    ``batch[image_key] [B, C, G S, G S] -> logits [B, num_classes]``.

    The image is cut by :class:`GridObjects` into ``[B, G * G, C, S, S]``, put in the batch under
    ``images_key`` (the key the wrapped network reads), and ``net(batch)`` is returned. ``net`` is
    configured with ``sequence_length = G * G``, the image's ``in_channels`` and
    ``image_size = cell_size``, so that its :class:`tenfold.modules.nets.ConvGlyphEncoder` reads the cells
    (the official ``modules_mini.Encoder_conv`` on 12 x 12 cells).

    Args:
        net: maps ``batch`` with ``batch[images_key] [B, G * G, C, S, S]`` to logits.
        grid_size, cell_size: see :class:`GridObjects` (Relational Games: 3 and 12).
        image_key: the batch key of the grid image (the datamodule's ``"image"``).
        images_key: the batch key under which ``net`` reads the objects.
    """

    def __init__(
        self,
        net: nn.Module,
        grid_size: int = 3,
        cell_size: int = 12,
        image_key: str = "image",
        images_key: str = "images",
    ) -> None:
        super().__init__()
        self.grid = GridObjects(grid_size, cell_size)
        self.image_key = image_key
        self.images_key = images_key
        self.net = net
        for name, module in net.named_modules():
            if isinstance(module, ConvGlyphEncoder) and module.image_size != cell_size:
                raise ValueError(
                    f"GridObjectNet: the net's encoder {name or type(net).__name__} reads {module.image_size} x "
                    f"{module.image_size} images but the cells are {cell_size} x {cell_size}: build the net with "
                    f"image_size={cell_size}"
                )

    def objects(self, batch: dict[str, Tensor]) -> Tensor:
        """The cells of ``batch[image_key]``, ``[B, G * G, C, S, S]``."""
        return self.grid(batch[self.image_key])

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return self.net({**batch, self.images_key: self.objects(batch)})


class RelationalGamesModule(SupervisedModule):
    """:class:`tenfold.modules.supervised.SupervisedModule` with one test metric per held-out object set.

    Relational Games test on several sets (the datamodule's ``test_dataloader`` returns one loader
    per entry of ``test_sets``, in order; CoRelNet reports hexominoes and stripes apart). Test
    dataloader ``k`` logs ``test/loss_<name>`` and ``test/acc_<name>`` with ``name =
    test_sets[k]`` (no ``/dataloader_idx_k`` suffix); training and validation log as
    :class:`SupervisedModule` does (``train/loss``, ``val/loss``, ``val/acc``).

    Args:
        net, optimizer, scheduler, scheduler_interval, scheduler_monitor, loss, target_key: see
            :class:`SupervisedModule` (classification: ``loss="cross_entropy"``).
        test_sets: names of the test dataloaders, in order (``${data.test_sets}``).
    """

    def __init__(
        self,
        net: nn.Module,
        optimizer: OptimizerFactory | None = None,
        test_sets: Sequence[str] = ("hexos", "stripes"),
        scheduler: SchedulerFactory | None = None,
        scheduler_interval: str = "step",
        loss: str = "cross_entropy",
        target_key: str = "target",
        scheduler_monitor: str | None = None,
    ) -> None:
        test_sets = [str(name) for name in test_sets]
        if not test_sets or len(set(test_sets)) != len(test_sets):
            raise ValueError(f"RelationalGamesModule: test_sets must be distinct names, got {test_sets!r}")
        super().__init__(
            net, optimizer, scheduler, scheduler_interval, loss, target_key, scheduler_monitor=scheduler_monitor
        )
        self.save_hyperparameters(ignore=["net", "optimizer", "scheduler"])
        self.test_sets = test_sets
        self.test_set_scores = nn.ModuleList(MeanMetric() for _ in test_sets)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        if dataloader_idx >= len(self.test_sets):
            raise ValueError(
                f"test dataloader {dataloader_idx} has no name: test_sets={self.test_sets}; set model.test_sets to "
                "the datamodule's (${data.test_sets})"
            )
        name = self.test_sets[dataloader_idx]
        loss, scores = self.loss_and_scores(batch)
        metric = self.test_set_scores[dataloader_idx]
        metric.update(scores)
        log_options = {"on_step": False, "on_epoch": True, "add_dataloader_idx": False}
        self.log(f"test/loss_{name}", loss, sync_dist=True, batch_size=scores.shape[0], **log_options)
        self.log(f"test/{self.metric_name}_{name}", metric, prog_bar=True, **log_options)
