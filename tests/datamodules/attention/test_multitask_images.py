"""Multi-task image classification: the triangle generator's geometry and drawing, the official
training schedule (one batch per task per step, cycling passes), image preprocessing and
augmentation checked pixel by pixel, and the datamodule on tiny datasets written in torchvision's
own file formats (CIFAR10 pickles, FashionMNIST idx files, SVHN .mat files)."""

import math
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
import torchvision.datasets.cifar
import torchvision.datasets.svhn
import lightning as L
from hydra.utils import instantiate
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from omegaconf import OmegaConf

from tenfold.datamodules.attention.multitask_images import (
    MULTITASK_DATASETS,
    MultitaskBatchSampler,
    MultitaskImageDataModule,
    NaturalImages,
    TriangleImages,
    draw_dots,
    load_image_task,
    make_triangle_image,
    sample_triangle_vertices,
    triangle_points,
)

torch.set_num_threads(1)

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs" / "data" / "attention"
# train / test sizes of the fake datasets; CIFAR10's training split is five files of two images
SIZES = {"cifar10": (10, 3), "fashion_mnist": (6, 3), "svhn": (9, 4), "triangles": (5, 3)}


def write_cifar10(root: Path, rng: np.random.Generator) -> dict:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    written = {}
    for train, names in ((True, [f"data_batch_{i}" for i in range(1, 6)]), (False, ["test_batch"])):
        size = SIZES["cifar10"][0 if train else 1] // len(names)
        images, labels = [], []
        for name in names:
            batch = rng.integers(0, 256, size=(size, 3, 32, 32), dtype=np.uint8)
            batch_labels = rng.integers(0, 10, size=size).tolist()
            with (folder / name).open("wb") as file:
                pickle.dump({"data": batch.reshape(size, -1), "labels": batch_labels}, file)
            images.append(batch)
            labels += batch_labels
        written[train] = (np.concatenate(images), labels)
    with (folder / "batches.meta").open("wb") as file:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)]}, file)
    return written


def write_fashion_mnist(root: Path, rng: np.random.Generator) -> dict:
    folder = root / "FashionMNIST" / "raw"
    folder.mkdir(parents=True)
    written = {}
    for train, prefix in ((True, "train"), (False, "t10k")):
        size = SIZES["fashion_mnist"][0 if train else 1]
        images = rng.integers(0, 256, size=(size, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=size).astype(np.uint8)
        header = struct.pack(">iiii", 0x0803, size, 28, 28)
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.tobytes())
        header = struct.pack(">ii", 0x0801, size)
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(header + labels.tobytes())
        written[train] = (images, labels)
    return written


def write_svhn(root: Path, rng: np.random.Generator) -> dict:
    folder = root / "svhn"
    folder.mkdir(parents=True)
    written = {}
    for train, name in ((True, "train_32x32.mat"), (False, "test_32x32.mat")):
        size = SIZES["svhn"][0 if train else 1]
        images = rng.integers(0, 256, size=(size, 3, 32, 32), dtype=np.uint8)
        digits = np.arange(size) % 10  # includes the digit 0, stored as label 10
        stored = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]
        scipy.io.savemat(folder / name, {"X": images.transpose(2, 3, 1, 0), "y": stored})
        written[train] = (images, digits)
    return written


@pytest.fixture
def fake_root(tmp_path, monkeypatch):
    """Tiny CIFAR10 / FashionMNIST / SVHN in torchvision's formats (md5 checks bypassed: the real
    files' checksums cannot match generated ones)."""
    monkeypatch.setattr(torchvision.datasets.cifar, "check_integrity", lambda *args, **kwargs: True)
    monkeypatch.setattr(torchvision.datasets.svhn, "check_integrity", lambda *args, **kwargs: True)
    rng = np.random.default_rng(0)
    written = {
        "cifar10": write_cifar10(tmp_path, rng),
        "fashion_mnist": write_fashion_mnist(tmp_path, rng),
        "svhn": write_svhn(tmp_path, rng),
    }
    return tmp_path, written


def make_dm(root: Path, **kwargs) -> MultitaskImageDataModule:
    options = dict(
        batch_size=4,
        eval_batch_size=5,
        download=False,
        triangles_train_size=SIZES["triangles"][0],
        triangles_test_size=SIZES["triangles"][1],
    )
    options.update(kwargs)
    return MultitaskImageDataModule(str(root), **options)


def test_equilateral_vertices_have_equal_sides_up_to_truncation():
    rng = np.random.default_rng(0)
    for _ in range(300):
        vertices = sample_triangle_vertices(rng, 32, equilateral=True)
        assert vertices.dtype == np.int64 and vertices.shape == (3, 2)
        assert vertices.min() >= 1 and vertices.max() <= 31
        a, b, c = vertices.astype(float)
        side = np.linalg.norm(b - a)
        # only the third vertex is truncated, by less than one pixel per coordinate
        assert abs(np.linalg.norm(c - a) - side) < math.sqrt(2)
        assert abs(np.linalg.norm(c - b) - side) < math.sqrt(2)
        # the official rotation turns b - a by -60 degrees in (x, y) axes: the cross product of
        # b - a and c - a is side^2 sin(-60 deg), up to the truncation of c
        cross = (b - a)[0] * (c - a)[1] - (b - a)[1] * (c - a)[0]
        assert abs(cross + math.sqrt(3) / 2 * side**2) <= math.sqrt(2) * side
    random_sides = []
    for _ in range(300):
        vertices = sample_triangle_vertices(rng, 32, equilateral=False)
        assert vertices.min() >= 1 and vertices.max() <= 31
        a, b, c = vertices.astype(float)
        random_sides.append(abs(np.linalg.norm(c - a) - np.linalg.norm(b - a)))
    assert np.mean(np.array(random_sides) > 2) > 0.5  # random triangles are mostly far from it


def test_vertex_dots_are_symmetric_around_each_vertex():
    rng = np.random.default_rng(1)
    vertices = np.array([[5, 9], [20, 3], [11, 30]])
    points = triangle_points(rng, vertices)
    assert points.shape == (24, 2)
    clusters = points.reshape(3, 8, 2)
    assert np.array_equal(clusters.mean(axis=1), vertices)  # pairs v + o, v - o
    assert np.abs(clusters - vertices[:, None]).max() <= 1


def test_dots_are_opencv_discs_of_radius_two():
    # cv2.circle(np.zeros((9, 9, 1)), (4, 4), radius=2, color=255, thickness=-1)
    disc = np.array(
        [
            [0, 0, 0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 1, 0, 0, 0, 0],
            [0, 0, 0, 1, 1, 1, 0, 0, 0],
            [0, 0, 1, 1, 1, 1, 1, 0, 0],
            [0, 0, 0, 1, 1, 1, 0, 0, 0],
            [0, 0, 0, 0, 1, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0, 0, 0],
            [0, 0, 0, 0, 0, 0, 0, 0, 0],
        ]
    )
    assert np.array_equal(draw_dots(np.array([[4, 4]]), 9), 255 * disc)
    # centres (x, y) = (column, row), clipped at the border: cv2 at (0, 8) and at (9, 3)
    expected = np.zeros((9, 9), dtype=int)
    expected[6, 0] = expected[7, :2] = expected[8, :3] = 1
    expected[2, 8] = expected[3, 7:] = expected[4, 8] = 1
    image = draw_dots(np.array([[0, 8], [9, 3]]), 9)
    assert image.dtype == np.uint8 and np.array_equal(image, 255 * expected)


def test_triangle_images_are_balanced_binary_and_reproducible():
    dataset = TriangleImages(num_examples=400, image_size=32, seed=3)
    examples = [dataset[i] for i in range(400)]
    labels = torch.stack([label for _, label in examples])
    assert set(labels.tolist()) == {0, 1} and 0.4 < labels.float().mean() < 0.6
    image, _ = examples[0]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32
    assert set(image.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(image[0], image[1]) and torch.equal(image[0], image[2])
    assert torch.equal(dataset[0][0], image)  # an index is always the same triangle
    assert not torch.equal(dataset[1][0], image)
    pixels, label = make_triangle_image(np.random.default_rng(12345))
    fresh_image, fresh_label = dataset[(0, 12345)]  # a sample seed draws its own triangle
    assert torch.equal(fresh_image[0], torch.from_numpy(pixels).float() / 127.5 - 1)
    assert int(fresh_label) == label


def test_triangle_label_zero_means_equilateral(monkeypatch):
    # The official convention: label 0 draws the equilateral triangle. The vertices each image
    # is drawn from are recorded; their sides agree to truncation (under 2 pixels) exactly for label 0.
    import tenfold.datamodules.attention.multitask_images as multitask

    drawn: list[np.ndarray] = []

    def recording(*args, **kwargs) -> np.ndarray:
        drawn.append(sample_triangle_vertices(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(multitask, "sample_triangle_vertices", recording)
    labels = [make_triangle_image(np.random.default_rng(seed))[1] for seed in range(60)]
    assert set(labels) == {0, 1}
    for label, vertices in zip(labels, drawn, strict=True):
        sides = np.linalg.norm(vertices - np.roll(vertices, -1, axis=0), axis=1)
        assert (sides.max() - sides.min() < 2.0) == (label == 0), (label, sides)


def test_sampler_follows_the_official_schedule():
    sizes, batch_size = [10, 6, 9, 5], 4
    sampler = MultitaskBatchSampler(sizes, batch_size, seed=0)
    assert len(sampler) == 3  # ceil(10 / 4): one pass over the largest task
    sampler.set_epoch(0)
    steps = list(sampler)
    counts = [[sum(1 for key in step if key[0] == task) for task in range(4)] for step in steps]
    # cifar10 [4, 4, 2]; fashion_mnist passes of [4, 2]; svhn [4, 4, 1]; triangles passes of [4, 1]
    assert counts == [[4, 4, 4, 4], [4, 2, 4, 1], [2, 4, 1, 4]]
    for step in steps:  # tasks in order within a step
        assert [key[0] for key in step] == sorted(key[0] for key in step)
    by_task = {task: [key for step in steps for key in step if key[0] == task] for task in range(4)}
    assert sorted(key[1] for key in by_task[0]) == list(range(10))
    assert sorted(key[1] for key in by_task[1][:6]) == list(range(6))  # the first pass, whole
    assert len({key[1] for key in by_task[1][6:]}) == 4  # the second pass starts afresh
    assert sorted(key[1] for key in by_task[2]) == list(range(9))
    # each pass is a permutation, not the dataset's order
    assert [key[1] for key in by_task[0]] != list(range(10)) and [key[1] for key in by_task[2]] != list(range(9))
    seeds = [key[2] for step in steps for key in step]
    assert len(set(seeds)) == len(seeds)

    sampler.set_epoch(0)
    assert list(sampler) == steps  # the epoch decides everything
    assert list(sampler) != steps  # iterating again without set_epoch is the next epoch
    sampler.set_epoch(1)
    again = MultitaskBatchSampler(sizes, batch_size, seed=0)
    again.set_epoch(1)
    assert list(sampler) == list(again)
    other_seed = MultitaskBatchSampler(sizes, batch_size, seed=1)
    other_seed.set_epoch(0)
    assert list(other_seed) != steps


def test_sampler_under_lightning_distributed_wrapper_splits_steps():
    sampler = MultitaskBatchSampler([10, 6], 4, seed=0)
    sampler.set_epoch(5)
    steps = list(sampler)
    ranks = []
    for rank in range(2):
        wrapper = DistributedSamplerWrapper(
            MultitaskBatchSampler([10, 6], 4, seed=0), num_replicas=2, rank=rank, shuffle=False
        )
        wrapper.set_epoch(5)  # forwarded to the multi-task sampler
        ranks.append(list(wrapper))
    assert ranks[0] == [steps[0], steps[2]] and ranks[1] == [steps[1], steps[0]]  # padded


def test_readers_load_the_torchvision_formats(fake_root):
    root, written = fake_root
    images, labels = load_image_task("cifar10", root, train=True, download=False)
    assert images.shape == (10, 3, 32, 32) and images.dtype == torch.uint8
    assert np.array_equal(images.numpy(), written["cifar10"][True][0])
    assert labels.tolist() == written["cifar10"][True][1]
    images, labels = load_image_task("fashion_mnist", root, train=False, download=False)
    assert images.shape == (3, 1, 28, 28)
    assert np.array_equal(images[:, 0].numpy(), written["fashion_mnist"][False][0])
    assert labels.dtype == torch.long
    assert labels.tolist() == written["fashion_mnist"][False][1].tolist()
    images, labels = load_image_task("svhn", root, train=True, download=False)
    assert images.shape == (9, 3, 32, 32)
    assert np.array_equal(images.numpy(), written["svhn"][True][0])
    assert labels.tolist() == written["svhn"][True][1].tolist()  # label 10 read as digit 0


def test_eval_images_are_padded_normalized_and_three_channel():
    gray = torch.randint(0, 256, (2, 1, 28, 28), dtype=torch.uint8)
    image, label = NaturalImages(gray, torch.tensor([7, 3]), 32, augment=True)[1]
    assert image.shape == (3, 32, 32) and int(label) == 3
    expected = torch.full((32, 32), -1.0)
    expected[2:30, 2:30] = gray[1, 0].float() * 2 / 255 - 1
    for channel in image:
        torch.testing.assert_close(channel, expected)
    color = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    image, _ = NaturalImages(color, torch.tensor([0]), 32, augment=False)[(0, 99)]
    torch.testing.assert_close(image, color[0].float() / 127.5 - 1)  # no augmentation
    small, _ = NaturalImages(color, torch.tensor([0]), 16, augment=False)[0]
    assert small.shape == (3, 16, 16)
    torch.testing.assert_close(small.mean(), image.mean(), atol=0.02, rtol=0)


def test_training_images_are_padded_crops_with_flips():
    images = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    dataset = NaturalImages(images, torch.tensor([5]), 32, augment=True)
    padded = torch.nn.functional.pad(images[0].float() / 127.5 - 1, (4, 4, 4, 4), value=-1.0)
    placements = []
    for sample_seed in range(40):
        image, _ = dataset[(0, sample_seed)]
        assert torch.equal(image, dataset[(0, sample_seed)][0])  # the seed decides
        matches = [
            (top, left, flip)
            for top in range(9)
            for left in range(9)
            for flip in (False, True)
            if torch.allclose(
                image,
                padded[:, top : top + 32, left : left + 32].flip(-1)
                if flip
                else padded[:, top : top + 32, left : left + 32],
            )
        ]
        assert len(matches) == 1
        placements.append(matches[0])
    assert len(set(placements)) > 20 and 5 < sum(flip for _, _, flip in placements) < 35


def test_datamodule_batches(fake_root):
    root, written = fake_root
    dm = make_dm(root)
    assert dm.tasks == MULTITASK_DATASETS and dm.num_tasks == 4
    assert dm.num_classes == [10, 10, 10, 2] and dm.in_channels == 3 and dm.image_size == 32
    dm.prepare_data()
    dm.setup("fit")
    loader = dm.train_dataloader()
    assert len(loader) == 3
    batches = list(loader)
    task_counts = [torch.bincount(batch["task"], minlength=4).tolist() for batch in batches]
    assert task_counts == [[4, 4, 4, 4], [4, 2, 4, 1], [2, 4, 1, 4]]
    for batch in batches:
        n = len(batch["task"])
        assert batch["image"].shape == (n, 3, 32, 32) and batch["image"].dtype == torch.float32
        assert batch["target"].shape == (n,) and batch["target"].dtype == torch.long
        assert batch["image"].min() >= -1 and batch["image"].max() <= 1
        assert batch["target"][batch["task"] == 3].max() <= 1
    # the CIFAR10 targets of an epoch are its labels, each image once
    cifar_targets = torch.cat([batch["target"][batch["task"] == 0] for batch in batches])
    assert sorted(cifar_targets.tolist()) == sorted(written["cifar10"][True][1])

    same_seed = make_dm(root)
    first_again = next(iter(same_seed.train_dataloader()))
    assert all(torch.equal(first_again[key], batches[0][key]) for key in batches[0])
    second_epoch = next(iter(loader))
    assert not torch.equal(second_epoch["image"], batches[0]["image"])

    val = list(dm.val_dataloader())
    tasks = torch.cat([batch["task"] for batch in val])
    targets = torch.cat([batch["target"] for batch in val])
    assert tasks.tolist() == [0] * 3 + [1] * 3 + [2] * 4 + [3] * 3
    assert targets[:3].tolist() == written["cifar10"][False][1]
    assert targets[6:10].tolist() == written["svhn"][False][1].tolist()
    images = torch.cat([batch["image"] for batch in val])
    first_svhn = torch.from_numpy(written["svhn"][False][0][0]).float() / 127.5 - 1
    torch.testing.assert_close(images[6], first_svhn)
    test = torch.cat([batch["image"] for batch in dm.test_dataloader()])
    assert torch.equal(test, images)


def test_task_subset_and_image_size(fake_root):
    root, _ = fake_root
    dm = make_dm(root, datasets=["triangles", "fashion_mnist"], image_size=16, batch_size=3)
    assert dm.num_classes == [2, 10]
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (6, 3, 16, 16) and batch["task"].tolist() == [0, 0, 0, 1, 1, 1]
    only_triangles = make_dm(root / "empty", datasets=["triangles"])  # needs no files
    only_triangles.prepare_data()
    assert len(only_triangles.train_dataloader()) == 2


def test_missing_data_names_the_dataset_folder_and_fix(tmp_path):
    dm = make_dm(tmp_path, datasets=["svhn"])
    with pytest.raises(RuntimeError) as error:
        dm.prepare_data()
    message = str(error.value)
    assert "svhn" in message and str(tmp_path / "svhn") in message
    assert "download=True" in message and "data.download=true" in message
    assert "paths.data_dir" in message and "train_32x32.mat" in message
    with pytest.raises(RuntimeError, match="cifar-10-batches-py"):
        make_dm(tmp_path, datasets=["cifar10"]).setup("fit")
    # every missing dataset in one message, one line each, so that all can be fetched at once
    with pytest.raises(RuntimeError) as error:
        make_dm(tmp_path, datasets=["cifar10", "triangles", "svhn"], num_classes=[10, 2, 10]).prepare_data()
    lines = str(error.value).splitlines()
    assert len(lines) == 2 and lines[0].startswith("cifar10: could not find the train split")
    assert lines[1].startswith("svhn: could not find the train split")
    assert "into data.data_dir, by default paths.data_dir" in lines[0]


def test_configuration_errors(tmp_path):
    with pytest.raises(ValueError, match="distinct names"):
        make_dm(tmp_path, datasets=["cifar10", "mnist"])
    with pytest.raises(ValueError, match="distinct names"):
        make_dm(tmp_path, datasets=["svhn", "svhn"])
    with pytest.raises(ValueError, match=r"datasets is a list of names, got the string 'triangles': write \[triangles\]"):
        make_dm(tmp_path, datasets="triangles")
    with pytest.raises(ValueError, match=r"set data.num_classes=\[10, 2\]"):
        make_dm(tmp_path, datasets=["svhn", "triangles"], num_classes=[10, 10])
    with pytest.raises(ValueError, match="in_channels=3"):
        make_dm(tmp_path, in_channels=1)


def test_hydra_config_is_the_paper_setting(fake_root):
    root, _ = fake_root
    config = OmegaConf.load(CONFIG_DIR / "multitask_images.yaml")
    assert list(config.datasets) == list(MULTITASK_DATASETS) and config.batch_size == 32
    assert config.image_size == 32 and config.triangles_train_size == 50000
    config.data_dir, config.download = str(root), False
    config.triangles_train_size, config.triangles_test_size, config.batch_size = 5, 3, 4
    dm = instantiate(config)
    assert isinstance(dm, MultitaskImageDataModule) and dm.num_classes == list(config.num_classes)
    assert len(dm.train_dataloader()) == 3


class _TaskCounter(L.LightningModule):
    """A linear classifier over all tasks' classes that records each batch's task counts."""

    def __init__(self, num_tasks: int) -> None:
        super().__init__()
        self.head = torch.nn.Linear(3 * 32 * 32, 10)
        self.num_tasks = num_tasks
        self.train_counts: list[list[int]] = []
        self.val_images = 0

    def training_step(self, batch, batch_idx):
        self.train_counts.append(torch.bincount(batch["task"], minlength=self.num_tasks).tolist())
        logits = self.head(batch["image"].flatten(1))
        return torch.nn.functional.cross_entropy(logits, batch["target"])

    def validation_step(self, batch, batch_idx):
        self.val_images += len(batch["task"])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_lightning_fit_runs_the_schedule(fake_root):
    root, _ = fake_root
    dm = make_dm(root)
    model = _TaskCounter(dm.num_tasks)
    trainer = L.Trainer(
        max_epochs=2,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, datamodule=dm)
    assert model.train_counts == [[4, 4, 4, 4], [4, 2, 4, 1], [2, 4, 1, 4]] * 2
    assert model.val_images == 2 * sum(test for _, test in SIZES.values())


def _crop_placement(image: torch.Tensor) -> tuple[int, int, bool]:
    """``(top, left, flipped)`` of a training crop of the coordinate image of
    :func:`test_crop_offsets_cover_zero_to_eight`, read off its centre pixel."""
    pixels = torch.round((image + 1) * 127.5).long()  # back to the uint8 values
    rows, columns = (pixels[1] - 10) // 7, (pixels[0] - 10) // 7
    flipped = bool(columns[16, 17] < columns[16, 16])
    if flipped:
        columns = columns.flip(-1)
    # crop pixel (16, 16) is padded pixel (top + 16, left + 16), image pixel (top + 12, left + 12)
    return int(rows[16, 16]) - 12, int(columns[16, 16]) - 12, flipped


def test_crop_offsets_cover_zero_to_eight() -> None:
    # Pins torchvision's RandomCrop(32, padding=4): the crop's top and left offsets in the padded
    # 40x40 image take every value 0..8 (both extremes, each shifting the image by 4 pixels), and
    # nothing else. The image encodes each pixel's column (channel 0) and row (channel 1) so that
    # each crop's offsets and flip can be read off it.
    coordinates = 10 + 7 * torch.arange(32)
    image = torch.stack(
        [coordinates.expand(32, 32), coordinates[:, None].expand(32, 32), torch.full((32, 32), 255)]
    ).to(torch.uint8)
    dataset = NaturalImages(image[None], torch.tensor([0]), 32, augment=True)
    padded = torch.nn.functional.pad(image.float() / 127.5 - 1, (4, 4, 4, 4), value=-1.0)
    placements = []
    for sample_seed in range(400):
        crop, _ = dataset[(0, sample_seed)]
        top, left, flipped = _crop_placement(crop)
        assert 0 <= top <= 8 and 0 <= left <= 8
        expected = padded[:, top : top + 32, left : left + 32]
        torch.testing.assert_close(crop, expected.flip(-1) if flipped else expected, rtol=0, atol=1e-6)
        placements.append((top, left, flipped))
    assert {top for top, _, _ in placements} == set(range(9))
    assert {left for _, left, _ in placements} == set(range(9))
    for extreme in (0, 8):  # the extremes occur with and without the flip
        assert {flipped for _, left, flipped in placements if left == extreme} == {False, True}


def test_test_triangles_are_fixed_by_the_seed(tmp_path: Path) -> None:
    # Pins the test split of the triangle task (module docstring: "here they are fixed by the
    # seed"; seed "seeds ... the triangles"): test triangle i is the image of
    # default_rng((seed, i)), the same in every instance, loader and epoch for one seed, other
    # triangles for another seed, and not the training triangles. (The triangles need no files.)
    root = tmp_path
    seed, size = 7, SIZES["triangles"][1]

    def test_triangles(dm: MultitaskImageDataModule) -> tuple[torch.Tensor, torch.Tensor]:
        batches = list(dm.test_dataloader())
        task = torch.cat([batch["task"] for batch in batches])
        images = torch.cat([batch["image"] for batch in batches])[task == 0]
        targets = torch.cat([batch["target"] for batch in batches])[task == 0]
        return images, targets

    dm = make_dm(root, datasets=["triangles"], seed=seed)
    images, targets = test_triangles(dm)
    assert images.shape == (size, 3, 32, 32)
    for index in range(size):
        pixels, label = make_triangle_image(np.random.default_rng((seed, index)))
        expected = torch.from_numpy(pixels).float() / 127.5 - 1
        assert torch.equal(images[index], expected.expand(3, 32, 32)) and int(targets[index]) == label
    assert len({tuple(image.flatten().tolist()) for image in images}) == size

    list(dm.train_dataloader())  # an epoch of training draws fresh training triangles only
    val_images = next(iter(dm.val_dataloader()))["image"]
    again_images, again_targets = test_triangles(dm)
    assert torch.equal(val_images, images) and torch.equal(again_images, images)
    assert torch.equal(again_targets, targets)
    other_instance = make_dm(root, datasets=["triangles"], seed=seed)
    assert torch.equal(test_triangles(other_instance)[0], images)
    other_seed = make_dm(root, datasets=["triangles"], seed=seed + 1)
    assert not any(torch.equal(a, b) for a in test_triangles(other_seed)[0] for b in images)

    train_images = torch.cat([batch["image"] for batch in dm.train_dataloader()])
    assert len(train_images) == SIZES["triangles"][0]
    assert not any(torch.equal(a, b) for a in train_images for b in images)
