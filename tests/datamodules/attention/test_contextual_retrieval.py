"""Behaviour of the contextual retrieval task: targets and searches against a brute-force
recomputation, the search excludes the token itself, the coefficient variant, the OoD split of
joint retrieval choices, seeded determinism, fresh training data per epoch, shapes and errors."""

from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from lightning.fabric.utilities.distributed import DistributedSamplerWrapper
from omegaconf import OmegaConf

from tenfold.datamodules.attention.contextual_retrieval import (
    COEFFICIENTS,
    ContextualRetrievalDataModule,
    generate_contextual_retrieval,
    nearest_other_tokens,
    split_task_combinations,
    task_combinations,
)
from tenfold.datamodules.attention.generated import EpochBatchSampler

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs" / "data" / "attention"


def _brute_force(inputs: np.ndarray, num_searches: int, num_retrievals: int, coefficients):
    """Targets and searches recomputed from the inputs alone, with plain Python loops."""
    num_examples, length, _ = inputs.shape
    targets = np.zeros((num_examples, length))
    searches = np.zeros((num_examples, length, num_searches), dtype=np.int64)
    for n in range(num_examples):
        for i in range(length):
            total = 0.0
            for s in range(num_searches):
                best, best_distance = None, float("inf")
                for j in range(length):
                    if j == i:
                        continue
                    distance = abs(float(inputs[n, j, s]) - float(inputs[n, i, s]))
                    if distance < best_distance:
                        best, best_distance = j, distance
                one_hot = inputs[n, i, num_searches + num_retrievals + s * num_retrievals :][
                    :num_retrievals
                ]
                assert sorted(one_hot.tolist()) == [0.0] * (num_retrievals - 1) + [1.0]
                chosen = int(np.argmax(one_hot))
                searches[n, i, s] = best
                total += coefficients[s] * float(inputs[n, best, num_searches + chosen])
            targets[n, i] = total
    return targets, searches


@pytest.mark.parametrize("use_coefficients", [True, False])
@pytest.mark.parametrize(("num_searches", "num_retrievals", "length"), [(2, 2, 10), (3, 4, 5)])
def test_targets_and_searches_match_brute_force(
    use_coefficients, num_searches, num_retrievals, length
):
    data = generate_contextual_retrieval(
        np.random.default_rng(7),
        6,
        seq_len=length,
        num_searches=num_searches,
        num_retrievals=num_retrievals,
        use_coefficients=use_coefficients,
    )
    coefficients = COEFFICIENTS if use_coefficients else [1.0] * num_searches
    targets, searches = _brute_force(data["inputs"], num_searches, num_retrievals, coefficients)
    np.testing.assert_array_equal(data["searches"], searches)
    np.testing.assert_allclose(data["target"], targets, rtol=1e-6, atol=1e-6)
    one_hot = data["inputs"][..., num_searches + num_retrievals :]
    one_hot = one_hot.reshape(6, length, num_searches, num_retrievals)
    np.testing.assert_array_equal(one_hot.argmax(-1), data["retrievals"])


def test_coefficients_are_the_official_ones_and_change_the_target():
    # data.py of sarthmit/Compositional-Attention: coeffs[0:3] and coeffs[24]
    assert COEFFICIENTS[:3] == (-0.71347752, -0.6062312, 0.66062073)
    assert COEFFICIENTS[24] == -0.27825577 and len(COEFFICIENTS) == 25
    weighted = generate_contextual_retrieval(np.random.default_rng(3), 4, use_coefficients=True)
    plain = generate_contextual_retrieval(np.random.default_rng(3), 4, use_coefficients=False)
    np.testing.assert_array_equal(weighted["inputs"], plain["inputs"])
    features = weighted["inputs"].astype(np.float64)
    example, token = np.ogrid[:4, :10]
    first = features[example, weighted["searches"][..., 0], 2 + weighted["retrievals"][..., 0]]
    second = features[example, weighted["searches"][..., 1], 2 + weighted["retrievals"][..., 1]]
    np.testing.assert_allclose(plain["target"], first + second, rtol=1e-6, atol=1e-6)
    expected = -0.71347752 * first - 0.6062312 * second
    np.testing.assert_allclose(weighted["target"], expected, rtol=1e-6, atol=1e-6)


def test_nearest_other_token_by_hand_and_never_itself():
    features = np.array([[[0.0, 5.0], [0.1, 1.0], [0.35, 1.2], [1.0, 4.9]]])
    expected = np.array([[[1, 3], [0, 2], [1, 1], [2, 0]]])
    np.testing.assert_array_equal(nearest_other_tokens(features), expected)
    duplicates = np.zeros((1, 3, 1))  # all tokens equal: the nearest other one is the lowest index
    np.testing.assert_array_equal(nearest_other_tokens(duplicates)[0, :, 0], [1, 0, 0])
    searches = generate_contextual_retrieval(np.random.default_rng(0), 50, seq_len=3)["searches"]
    assert (searches != np.arange(3)[None, :, None]).all()
    assert set(np.unique(searches)) == {0, 1, 2}


def test_task_combinations_in_product_order():
    np.testing.assert_array_equal(task_combinations(2, 2), [[0, 0], [0, 1], [1, 0], [1, 1]])
    assert task_combinations(3, 4).shape == (64, 3)


def test_official_interleaved_ood_split_by_hand():
    train, test = split_task_combinations(2, 2)
    np.testing.assert_array_equal(train, [[0, 0], [1, 0], [0, 1]])
    np.testing.assert_array_equal(test, [[1, 1]])
    train, test = split_task_combinations(2, 4)
    np.testing.assert_array_equal(test, [[2, 1], [2, 3], [3, 1], [3, 3]])
    assert len(train) == 12
    # the official code cannot run with fewer than 4 combinations; the same rule continues
    train, test = split_task_combinations(1, 3)
    np.testing.assert_array_equal(train, [[0], [2]])
    np.testing.assert_array_equal(test, [[1]])
    with pytest.raises(ValueError, match="at least 2 retrieval combinations"):
        split_task_combinations(3, 1)


@pytest.mark.parametrize("rule", ["interleaved", "random"])
@pytest.mark.parametrize(("num_searches", "num_retrievals"), [(1, 2), (2, 3), (3, 3), (2, 5)])
def test_ood_split_is_disjoint_and_covers_all(rule, num_searches, num_retrievals):
    train, test = split_task_combinations(num_searches, num_retrievals, rule=rule, seed=4)
    count = num_retrievals**num_searches
    train_rows = {tuple(row) for row in train.tolist()}
    test_rows = {tuple(row) for row in test.tolist()}
    assert len(train_rows) == len(train) == max(1, int(0.8 * count))
    assert not train_rows & test_rows
    assert train_rows | test_rows == {
        tuple(row) for row in task_combinations(num_searches, num_retrievals).tolist()
    }


def test_random_ood_split_is_seeded():
    first = split_task_combinations(3, 3, rule="random", seed=1)
    again = split_task_combinations(3, 3, rule="random", seed=1)
    other = split_task_combinations(3, 3, rule="random", seed=2)
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[1], other[1])
    with pytest.raises(ValueError, match="ood_split must be one of"):
        split_task_combinations(2, 2, rule="odd")


def test_ood_datamodule_draws_training_and_held_out_combinations():
    dm = ContextualRetrievalDataModule(
        num_gt_searches=2,
        num_gt_retrievals=3,
        ood=True,
        train_size=300,
        val_size=200,
        test_size=200,
        batch_size=100,
    )
    train_rows = {tuple(row) for row in dm.train_combinations.tolist()}
    test_rows = {tuple(row) for row in dm.test_combinations.tolist()}
    assert len(train_rows) == 7 and len(test_rows) == 2 and not train_rows & test_rows

    def rows(loader):
        return {
            tuple(row) for batch in loader for row in batch["retrievals"].reshape(-1, 2).tolist()
        }

    assert rows(dm.train_dataloader()) == train_rows
    # the tested checkpoint is selected by validation: it must not see the held-out combinations
    assert rows(dm.val_dataloader()) == train_rows
    assert rows(dm.test_dataloader()) == test_rows
    in_distribution = ContextualRetrievalDataModule(
        num_gt_retrievals=3, train_size=300, batch_size=100
    )
    assert in_distribution.train_combinations is None
    assert len(rows(in_distribution.train_dataloader())) == 9


def test_batch_shapes_dtypes_and_remainder():
    dm = ContextualRetrievalDataModule(
        seq_len=7,
        num_gt_searches=3,
        num_gt_retrievals=2,
        train_size=50,
        val_size=30,
        test_size=20,
        batch_size=16,
    )
    assert dm.input_dim == 3 + 2 + 6 and dm.num_gt_searches == 3 and dm.num_gt_retrievals == 2
    batches = list(dm.train_dataloader())
    assert [len(batch["target"]) for batch in batches] == [16, 16, 16, 2]
    batch = batches[0]
    assert batch["inputs"].shape == (16, 7, 11) and batch["inputs"].dtype == torch.float32
    assert batch["target"].shape == (16, 7) and batch["target"].dtype == torch.float32
    assert batch["searches"].shape == (16, 7, 3) and batch["searches"].dtype == torch.int64
    assert batch["retrievals"].shape == (16, 7, 3) and batch["retrievals"].dtype == torch.int64
    assert sum(len(b["target"]) for b in dm.val_dataloader()) == 30
    assert sum(len(b["target"]) for b in dm.test_dataloader()) == 20


def _first_batch(loader) -> dict[str, torch.Tensor]:
    return next(iter(loader))


def test_seeded_determinism_and_distinct_splits():
    def make(seed: int) -> ContextualRetrievalDataModule:
        return ContextualRetrievalDataModule(
            train_size=64, val_size=64, test_size=64, batch_size=32, seed=seed
        )

    first, again, other = make(0), make(0), make(1)
    for loader in ("train_dataloader", "val_dataloader", "test_dataloader"):
        a, b = _first_batch(getattr(first, loader)()), _first_batch(getattr(again, loader)())
        assert all(torch.equal(a[key], b[key]) for key in a)
        assert not torch.equal(a["inputs"], _first_batch(getattr(other, loader)())["inputs"])
    train, val = _first_batch(first.train_dataloader()), _first_batch(first.val_dataloader())
    assert not torch.equal(train["inputs"], val["inputs"])


def test_validation_and_test_sets_are_different_draws():
    # one seed, three streams: the evaluation splits must not repeat each other
    dm = ContextualRetrievalDataModule(train_size=64, val_size=64, test_size=64, batch_size=32)
    val, test = _first_batch(dm.val_dataloader()), _first_batch(dm.test_dataloader())
    assert not torch.equal(val["inputs"], test["inputs"])


def test_training_data_are_new_each_epoch_and_evaluation_data_fixed():
    dm = ContextualRetrievalDataModule(train_size=64, val_size=64, test_size=64, batch_size=32)
    train = dm.train_dataloader()
    epoch0 = [batch["inputs"] for batch in train]
    train.sampler.set_epoch(1)
    epoch1 = [batch["inputs"] for batch in train]
    train.sampler.set_epoch(0)
    assert all(
        torch.equal(a, b) for a, b in zip(epoch0, [batch["inputs"] for batch in train], strict=True)
    )
    assert not any(torch.equal(a, b) for a, b in zip(epoch0, epoch1, strict=True))


def test_epoch_sampler_under_lightnings_distributed_wrapper():
    # what Lightning puts around a custom sampler under DDP: shards the indices, forwards set_epoch
    ranks = [
        DistributedSamplerWrapper(EpochBatchSampler(4), num_replicas=2, rank=rank, shuffle=False)
        for rank in (0, 1)
    ]
    assert [list(sampler) for sampler in ranks] == [[0, 2], [1, 3]]
    for sampler in ranks:
        sampler.set_epoch(2)
    assert [list(sampler) for sampler in ranks] == [[8, 10], [9, 11]]


class _Recorder(L.LightningModule):
    """Records the first training and validation inputs of every epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.train_inputs: list[torch.Tensor] = []
        self.val_inputs: list[torch.Tensor] = []

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if batch_idx == 0:
            self.train_inputs.append(batch["inputs"].clone())
        return (self.weight * batch["inputs"].mean() - batch["target"].mean()).abs()

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        if batch_idx == 0:
            self.val_inputs.append(batch["inputs"].clone())

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_lightning_sets_the_epoch_of_the_training_data():
    dm = ContextualRetrievalDataModule(train_size=40, val_size=20, test_size=20, batch_size=20)
    model = _Recorder()
    trainer = L.Trainer(
        accelerator="cpu",
        max_epochs=2,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    assert len(model.train_inputs) == 2 and len(model.val_inputs) == 2
    assert not torch.equal(model.train_inputs[0], model.train_inputs[1])
    assert torch.equal(model.val_inputs[0], model.val_inputs[1])


class _ExampleCounter(L.LightningModule):
    """Counts the validation examples of all ranks (a sum over ranks and batches)."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        count = torch.tensor(float(len(batch["inputs"])))
        self.log("examples", count, reduce_fx="sum", sync_dist=True, batch_size=1)


def test_ddp_ranks_split_the_evaluation_batches_without_repeating_one():
    """3 validation batches on 2 ranks: rank 0 reads batches 0 and 2, rank 1 batch 1, and the
    ranks count the 50 examples once (Lightning's padding sampler repeated a whole batch: 70)."""
    dm = ContextualRetrievalDataModule(train_size=40, val_size=50, test_size=20, batch_size=20)
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False, enable_progress_bar=False,
        enable_model_summary=False,
    )
    (metrics,) = trainer.validate(_ExampleCounter(), datamodule=dm)
    assert metrics["examples"] == 50
    from types import SimpleNamespace

    dm.trainer = SimpleNamespace(world_size=2, global_rank=1)
    assert [len(batch["inputs"]) for batch in dm.val_dataloader()] == [20]
    # one test batch for two ranks: Lightning's padding sampler, so that every rank gets one
    assert not isinstance(dm.test_dataloader().sampler, torch.utils.data.DistributedSampler)


@pytest.mark.parametrize(
    ("name", "ood"), [("contextual_retrieval", False), ("contextual_retrieval_ood", True)]
)
def test_hydra_configs_build_the_paper_setting(name, ood, compose_cfg, tmp_path):
    cfg = compose_cfg(
        [f"data=attention/{name}", "data.train_size=64", "data.batch_size=32"], tmp_path
    )
    dm = instantiate(cfg.data)
    assert isinstance(dm, ContextualRetrievalDataModule)
    assert (dm.seq_len, dm.num_gt_searches, dm.num_gt_retrievals, dm.input_dim) == (10, 2, 2, 8)
    assert dm.ood is ood and dm.use_coefficients
    assert dm.sizes == {"train": 64, "val": 25600, "test": 25600}
    assert _first_batch(dm.train_dataloader())["inputs"].shape == (32, 10, 8)
    assert OmegaConf.load(CONFIG_DIR / "contextual_retrieval.yaml").input_dim == 8


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"input_dim": 9}, r"data.input_dim=9 but .* = 8: set data.input_dim=8"),
        ({"num_gt_searches": 26}, "coefficient variant has 25 coefficients"),
        ({"seq_len": 1}, "seq_len must be >= 2"),
        ({"batch_size": 0}, "batch_size must be a positive int"),
        ({"num_workers": -1}, "num_workers must be an int >= 0"),
        ({"seed": 1.5}, "seed must be an int"),
        ({"seed": -1}, "seed must be an int >= 0"),
        ({"ood": True, "num_gt_retrievals": 1}, "at least 2 retrieval combinations"),
        ({"ood": True, "ood_split": "halves"}, "ood_split must be one of"),
        ({"ood": False, "ood_split": "halves"}, "ood_split must be one of"),
    ],
)
def test_wrong_config_raises(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ContextualRetrievalDataModule(**kwargs)
    assert (
        ContextualRetrievalDataModule(num_gt_searches=26, use_coefficients=False).input_dim
        == 26 + 2 + 52
    )
