"""The attention family's task networks trained by SupervisedModule: shapes, invariances, per-task
heads, parameter-matched baselines, a short real run, bf16, exact resume."""

from __future__ import annotations

import csv
import functools
import math
from pathlib import Path

import hydra
import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tenfold.datamodules.attention.contextual_retrieval import ContextualRetrievalDataModule
from tenfold.modules.attention import (
    CompositionalAttention,
    ContextualRetrievalNet,
    ObjectSequenceNet,
    VisionTransformerNet,
)
from tenfold.modules.supervised import SupervisedModule
from tenfold.modules.nets import ContextNorm, ConvGlyphEncoder, TransformerEncoder

COMPOSITIONAL = functools.partial(CompositionalAttention, num_searches=2, num_retrievals=2)
MHA = functools.partial(nn.MultiheadAttention, num_heads=2, batch_first=True)
CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def small_encoder(width: int = 16, attention=COMPOSITIONAL, **kwargs) -> TransformerEncoder:
    return TransformerEncoder(width, 2, attention, feedforward_dim=2 * width, dropout=0.0, **kwargs)


@pytest.mark.parametrize("attention", [COMPOSITIONAL, MHA], ids=["compositional", "multihead"])
def test_contextual_retrieval_net_is_permutation_equivariant_and_masks_itself(attention) -> None:
    net = ContextualRetrievalNet(input_dim=8, embed_dim=16, attention=attention, input_skip_dim=4)
    inputs = torch.randn(3, 10, 8)
    output = net({"inputs": inputs})
    assert output.shape == (3, 10)
    permutation = torch.randperm(10)
    torch.testing.assert_close(net({"inputs": inputs[:, permutation]}), output[:, permutation], rtol=1e-5, atol=1e-6)

    seen: list[Tensor] = []
    net.attention.register_forward_hook(
        lambda module, args, kwargs, out: seen.append(kwargs["attn_mask"]), with_kwargs=True
    )
    net({"inputs": inputs})
    assert torch.equal(seen[0], torch.eye(10, dtype=torch.bool))


def test_contextual_retrieval_net_refuses_an_attention_returning_a_bare_tensor() -> None:
    def bare(embed_dim: int, dropout: float) -> nn.Module:
        mha = nn.MultiheadAttention(embed_dim, 2, dropout=dropout, batch_first=True)
        mha.register_forward_hook(lambda module, args, out: out[0])
        return mha

    net = ContextualRetrievalNet(input_dim=8, embed_dim=16, attention=bare)
    with pytest.raises(TypeError, match="must return"):
        net({"inputs": torch.randn(3, 10, 8)})
    # the net builds its attention as the stacks do: the same checks
    with pytest.raises(TypeError, match="not a callable"):
        ContextualRetrievalNet(input_dim=8, embed_dim=16, attention="multihead")
    # a factory's own dropout is the net's attention dropout (none otherwise)
    assert ContextualRetrievalNet(input_dim=8, embed_dim=16, attention=functools.partial(MHA, dropout=0.1)).attention.dropout == 0.1
    assert ContextualRetrievalNet(input_dim=8, embed_dim=16, attention=MHA).attention.dropout == 0.0


def test_vision_transformer_heads_per_task_read_their_own_class_token() -> None:
    net = VisionTransformerNet(
        image_size=8, in_channels=3, patch_size=4, encoder=small_encoder(), num_classes=[3, 2, 4]
    ).eval()
    images = torch.randn(6, 3, 8, 8)
    task = torch.tensor([0, 1, 2, 0, 1, 2])
    logits = net({"image": images, "task": task})
    assert logits.shape == (6, 4)
    assert torch.isinf(logits[1, 2:]).all() and torch.isinf(logits[0, 3:]).all() and torch.isfinite(logits[2]).all()
    with torch.no_grad():
        tokens = net.positions(net.patches(images))
        tokens = torch.cat([net.class_tokens.expand(6, -1, -1), tokens], dim=1)
        summaries = net.encoder(tokens)
        for row in range(6):
            index = int(task[row])
            expected = net.heads[index](summaries[row, index])
            torch.testing.assert_close(logits[row, : net.num_classes[index]], expected)
    assert torch.isfinite(F.cross_entropy(logits, torch.tensor([2, 1, 3, 0, 0, 1])))


def test_vision_transformer_with_the_official_multitask_embedding_and_head_by_hand() -> None:
    # Official multitask Encoder: each flattened patch (C p^2 values) and each class token (held in
    # patch space) goes through Linear-ReLU-Linear; the heads read a shared Linear-ReLU (out_layer).
    net = VisionTransformerNet(
        image_size=8, in_channels=3, patch_size=4, encoder=small_encoder(), num_classes=[3, 2],
        patch_hidden_dim=20, head_hidden_dim=12,
    ).eval()
    assert net.class_tokens.shape == (1, 2, 48)
    images = torch.randn(4, 3, 8, 8)
    task = torch.tensor([0, 1, 1, 0])
    logits = net({"image": images, "task": task})
    first, second = net.patches.mlp[0], net.patches.mlp[2]

    def mlp(v: torch.Tensor) -> torch.Tensor:
        return F.relu(v @ first.weight.T + first.bias) @ second.weight.T + second.bias

    # patch (i, j) of image b holds images[b, :, 4i:4i+4, 4j:4j+4], channel-major, row by row
    patches = images.reshape(4, 3, 2, 4, 2, 4).permute(0, 2, 4, 1, 3, 5).reshape(4, 4, 48)
    with torch.no_grad():
        tokens = torch.cat([mlp(net.class_tokens).expand(4, -1, -1), net.positions(mlp(patches))], dim=1)
        summaries = F.relu(net.head_hidden[0](net.encoder(tokens)))
        for row in range(4):
            index = int(task[row])
            torch.testing.assert_close(logits[row, : net.num_classes[index]], net.heads[index](summaries[row, index]))


def test_vision_transformer_fuses_the_question_into_every_token() -> None:
    net = VisionTransformerNet(
        image_size=15, in_channels=3, patch_size=5, encoder=small_encoder(), num_classes=10, question_dim=18
    ).eval()
    images = torch.rand(2, 3, 15, 15)
    question = torch.zeros(2, 18)
    other = question.clone()
    other[:, 3] = 1.0
    out = net({"image": images, "question": question})
    assert out.shape == (2, 10)
    assert not torch.allclose(out, net({"image": images, "question": other}))
    with pytest.raises(ValueError, match=r"expected images \[B, 3, 15, 15\]"):
        net({"image": torch.rand(2, 1, 15, 15), "question": question})


def test_context_norm_standardizes_each_segment() -> None:
    norm = ContextNorm(5, segments=[[0, 1], [2, 3, 4]])
    z = torch.randn(4, 5, 5) * 3 + 2
    out = norm(z)
    for segment in ([0, 1], [2, 3, 4]):
        torch.testing.assert_close(out[:, segment].mean(1), torch.zeros(4, 5), atol=1e-5, rtol=0)
        torch.testing.assert_close(out[:, segment].var(1, unbiased=False), torch.ones(4, 5), atol=1e-4, rtol=0)
    # an affine change of one segment's features does not reach the output
    changed = z.clone()
    changed[:, :2] = changed[:, :2] * 7 - 1
    torch.testing.assert_close(norm(changed), out, atol=1e-4, rtol=1e-4)
    unbiased = ContextNorm(5, segments=[[0, 1], [2, 3, 4]], unbiased=True)(z)
    torch.testing.assert_close(unbiased[:, :2], out[:, :2] / math.sqrt(2), atol=1e-5, rtol=1e-4)
    with pytest.raises(ValueError, match="cover the 5 sequence positions"):
        ContextNorm(5, segments=[[0, 1], [2, 3]])(z)
    # n - 1 = 0 for a context of one position: refused rather than NaN; the biased norm gives 0 there
    with pytest.raises(ValueError, match=r"segments \[\[0\], \[1, 2, 3, 4\]\]: give every segment two or more"):
        ContextNorm(5, segments=[[0], [1, 2, 3, 4]], unbiased=True)
    with pytest.raises(ValueError, match="context of one position"):
        ContextNorm(5, unbiased=True)(z[:, :1])
    assert not ContextNorm(5, segments=[[0], [1, 2, 3, 4]])(z)[:, 0].any()


def test_object_sequence_net_and_glyph_encoder_shapes() -> None:
    encoder = ConvGlyphEncoder(out_dim=16)
    assert encoder(torch.rand(2, 6, 1, 32, 32)).shape == (2, 6, 16)
    with pytest.raises(ValueError, match=r"\[\.\.\., 1, 32, 32\]"):
        encoder(torch.rand(2, 1, 28, 28))
    net = ObjectSequenceNet(small_encoder(16), num_classes=4, sequence_length=9)
    assert net({"images": torch.rand(3, 9, 1, 32, 32)}).shape == (3, 4)


def _count_parameters(compose_cfg, experiment: str, tmp_path: Path, overrides: tuple[str, ...] = ()) -> int:
    """Parameters of an experiment's model outside its embedding tables (a language model's
    vocabulary-sized embedding, identical in both models, would hide any difference)."""
    cfg = compose_cfg([f"experiment={experiment}", *overrides], tmp_path / experiment.replace("/", "_"))
    model = hydra.utils.instantiate(cfg.model)
    embeddings = {id(p) for module in model.modules() if isinstance(module, nn.Embedding) for p in module.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in embeddings)


@pytest.mark.parametrize(
    "task",
    sorted(
        {
            path.stem.rsplit("_", 1)[0]
            for path in (CONFIG_DIR / "experiment" / "attention").glob("*_compositional.yaml")
        }
    ),
)
def test_multihead_baseline_matches_the_parameter_count(task: str, compose_cfg, tmp_path: Path) -> None:
    compositional = _count_parameters(compose_cfg, f"attention/{task}_compositional", tmp_path)
    multihead = _count_parameters(compose_cfg, f"attention/{task}_multihead", tmp_path)
    assert abs(multihead / compositional - 1) < 0.02, (task, compositional, multihead)


def _cpu_sized_model_overrides(experiment: str) -> tuple[str, ...]:
    """The ``model.*`` overrides of an experiment file's ``# CPU-sized:`` header command."""
    text = (CONFIG_DIR / "experiment" / f"{experiment}.yaml").read_text()
    (command,) = [line for line in text.splitlines() if line.startswith("# CPU-sized:")]
    return tuple(word for word in command.split() if word.startswith("model."))


@pytest.mark.parametrize(
    "task",
    sorted(
        {
            path.stem.rsplit("_", 1)[0]
            for path in (CONFIG_DIR / "experiment" / "attention").glob("*_compositional.yaml")
        }
    ),
)
def test_multihead_baseline_matches_the_parameter_count_at_the_cpu_sized_commands(
    task: str, compose_cfg, tmp_path: Path
) -> None:
    # the headers' smaller widths must keep the pair matched (the retrieval query width scales
    # with them: E / 8)
    counts = {
        kind: _count_parameters(
            compose_cfg, f"attention/{task}_{kind}", tmp_path, _cpu_sized_model_overrides(f"attention/{task}_{kind}")
        )
        for kind in ("compositional", "multihead")
    }
    assert abs(counts["multihead"] / counts["compositional"] - 1) < 0.02, (task, counts)


def _tiny_retrieval_run(seed: int, max_steps: int, precision: str = "32-true") -> tuple[float, float]:
    """Trains the contextual-retrieval model (compositional, width 32) for ``max_steps``; returns
    the validation L1 before and after."""
    L.seed_everything(seed)
    data = ContextualRetrievalDataModule(
        num_gt_searches=2, num_gt_retrievals=2, train_size=64 * max_steps, val_size=512, test_size=64, batch_size=64, seed=seed
    )
    net = ContextualRetrievalNet(
        data.input_dim, 32, functools.partial(CompositionalAttention, num_searches=2, num_retrievals=2), input_skip_dim=8
    )
    module = SupervisedModule(net, functools.partial(torch.optim.Adam, lr=3e-3), loss="l1")
    trainer = L.Trainer(
        accelerator="cpu", max_steps=max_steps, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, precision=precision,
    )
    (before,) = trainer.validate(module, datamodule=data, verbose=False)
    trainer.fit(module, datamodule=data)
    (after,) = trainer.validate(module, datamodule=data, verbose=False)
    return before["val/l1"], after["val/l1"]


def test_short_contextual_retrieval_run_reduces_the_l1_error() -> None:
    # 1,500 steps of 64 sets (about 10 s): the L1 error falls from about 0.77 to about 0.34
    before, after = _tiny_retrieval_run(seed=0, max_steps=1500)
    assert after < 0.55 * before, (before, after)


def test_bf16_mixed_contextual_retrieval_trains() -> None:
    before, after = _tiny_retrieval_run(seed=1, max_steps=60, precision="bf16-mixed")
    assert math.isfinite(after) and after < before


# Tiny sizes of the resume tests, one per kind of training loader: 4, 3 and 4 batches per epoch.
ESBN_SIZES = ["data.train_size=32", "data.val_size=16", "data.test_size=16", "data.batch_size=8"]
RETRIEVAL_SIZES = ["data.train_size=96", "data.val_size=32", "data.test_size=32", "data.batch_size=32"]
SORT_OF_CLEVR_SIZES = ["data.train_images=2", "data.val_images=1", "data.test_images=1", "data.batch_size=16"]


def _resume_overrides(experiment: str, sizes: list[str], tmp_path: Path) -> list[str]:
    return [
        f"experiment=attention/{experiment}",
        "trainer=cpu",
        *sizes,
        "test=false",
        "logger=[]",
        "seed=3",
        f"paths.log_dir={tmp_path / 'logs'}",
        f"paths.data_dir={tmp_path / 'data'}",
    ]


@pytest.mark.parametrize(
    ("experiment", "sizes", "steps", "metric"),
    [
        # BatchSampler over EpochShuffleSampler (the ESBN tasks)
        ("esbn_rmts_compositional", ESBN_SIZES, 8, "val/acc"),
        # worker processes fetch their first indices when the loader's iterator is created,
        # which a resumed run does before it sets the epoch
        ("esbn_rmts_compositional", [*ESBN_SIZES, "data.num_workers=2"], 8, "val/acc"),
        # EpochBatchSampler (generated batches)
        ("contextual_retrieval_compositional", RETRIEVAL_SIZES, 6, "val/l1"),
        # EpochShuffleSampler (a shuffled dataset)
        ("sort_of_clevr_compositional", SORT_OF_CLEVR_SIZES, 8, "val/acc"),
    ],
)
def test_resume_continues_exactly(
    experiment: str, sizes: list[str], steps: int, metric: str, train_and_resume, tmp_path: Path
) -> None:
    # 1 + 1 epochs equal 2 bit for bit. The epoch samplers must read their epoch when iterated,
    # after Lightning's set_epoch: a resumed run creates the loader's iterator first, and the
    # generated tasks' batch sampler trained its second epoch on the first epoch's batches again.
    (full, _), (resumed, objects) = train_and_resume(_resume_overrides(experiment, sizes, tmp_path), tmp_path)
    assert objects["trainer"].global_step == steps
    assert resumed[metric] == pytest.approx(full[metric])


@pytest.mark.parametrize(
    ("experiment", "sizes", "steps_per_epoch", "every_n_train_steps"),
    [
        ("esbn_rmts_compositional", ESBN_SIZES, 4, 3),
        ("esbn_rmts_compositional", [*ESBN_SIZES, "data.num_workers=2"], 4, 3),
        ("contextual_retrieval_compositional", RETRIEVAL_SIZES, 3, 2),
        ("sort_of_clevr_compositional", SORT_OF_CLEVR_SIZES, 4, 3),
    ],
    ids=["batch_sampler", "batch_sampler_workers", "generated_batches", "shuffled_dataset"],
)
# the resumed run writes its checkpoints into its own directory
@pytest.mark.filterwarnings("ignore:The dirpath has changed")
def test_resume_within_an_epoch_continues_exactly(
    experiment: str,
    sizes: list[str],
    steps_per_epoch: int,
    every_n_train_steps: int,
    train_and_resume_within_epoch,
    tmp_path: Path,
) -> None:
    # A checkpoint saved within an epoch (every_n_train_steps, a preempted job) resumes reading
    # the rest of that epoch: the training loaders are ResumableDataLoaders, whose position goes
    # into the checkpoint. A plain DataLoader reads the epoch from its first batch again.
    overrides = _resume_overrides(experiment, sizes, tmp_path)
    step, objects = train_and_resume_within_epoch(overrides, tmp_path, every_n_train_steps)
    assert step > steps_per_epoch and step % steps_per_epoch, f"step {step} is not within epoch 1"
    assert objects["trainer"].global_step == 2 * steps_per_epoch


def test_ddp_two_processes_test_accuracy_equals_single_process(train_cli, tmp_path: Path) -> None:
    # Two CPU processes (gloo): each rank tests half of the 16 test trials; the synchronized
    # test/acc must equal a single process testing the same checkpoint.
    common = [
        "experiment=attention/esbn_same_diff_compositional",
        "data.train_size=32",
        "data.val_size=16",
        "data.test_size=16",
        "data.batch_size=4",
        "callbacks.model_checkpoint.monitor=null",
        "callbacks.lr_monitor=null",
        "logger=csv",
    ]
    result = train_cli([*common, "trainer=ddp_sim", "trainer.max_epochs=1", f"hydra.run.dir={tmp_path / 'ddp'}"])
    assert result.returncode == 0, result.stdout[-5000:]
    assert "2 device(s), CPUAccelerator, DDPStrategy" in result.stdout
    # every epoch metric is synchronized (train/loss_epoch was each rank's own)
    assert "when logging on epoch level in distributed setting" not in result.stdout
    rows = list(csv.DictReader(open(tmp_path / "ddp" / "csv" / "metrics.csv")))
    ddp_accuracy = float(next(r["test/acc"] for r in rows if r.get("test/acc")))

    result = train_cli(
        [*common, "trainer=cpu", "train=false", f"ckpt_path={tmp_path / 'ddp'}", f"hydra.run.dir={tmp_path / 'single'}"]
    )
    assert result.returncode == 0, result.stdout[-5000:]
    rows = list(csv.DictReader(open(tmp_path / "single" / "csv" / "metrics.csv")))
    single_accuracy = float(next(r["test/acc"] for r in rows if r.get("test/acc")))
    assert ddp_accuracy == pytest.approx(single_accuracy)


def test_object_sequence_net_pools_the_mean_token_and_adds_sinusoidal_positions() -> None:
    """Encoder, context norm (one segment) and Transformer are permutation-equivariant over the
    objects, so only the positions make the output depend on their order: with positions removed,
    permuting the objects leaves the pooled (mean) output unchanged; with them, it changes it."""
    net = ObjectSequenceNet(small_encoder(16), num_classes=4, sequence_length=5).eval()
    # the positions are the standard table: entry 2i of position p is sin(p / 10000^(2i/E))
    table = net.positions(torch.zeros(1, 5, 16))[0]
    assert table[3, 4].item() == pytest.approx(math.sin(3 / 10000 ** (4 / 16)), rel=1e-5)
    assert table[2, 5].item() == pytest.approx(math.cos(2 / 10000 ** (4 / 16)), rel=1e-5)

    images = torch.rand(3, 5, 1, 32, 32, generator=torch.Generator().manual_seed(8))
    permuted = images[:, [4, 2, 0, 3, 1]]  # moves the first and the last object
    with torch.no_grad():
        ordered, reordered = net({"images": images}), net({"images": permuted})
        assert (ordered - reordered).abs().amax() > 1e-4, "positions must make the order matter"
        net.positions = nn.Identity()
        torch.testing.assert_close(net({"images": permuted}), net({"images": images}), rtol=1e-5, atol=1e-5)

        # readout of the mean over the Transformer's outputs
        hidden = net.transformer(net.embed({"images": images}))
        torch.testing.assert_close(net({"images": images}), net.readout(hidden.mean(dim=1)))


def test_vision_transformer_question_fusion_is_a_linear_map_of_patch_and_question_halves() -> None:
    """Each token's patch half (E/2) and question half (E/2) are concatenated and mapped by the
    fuse layer before the encoder (the official Sort-of-CLEVR model)."""
    net = VisionTransformerNet(
        image_size=15, in_channels=3, patch_size=5, encoder=small_encoder(), num_classes=10, question_dim=18
    ).eval()
    encoder_inputs: list[Tensor] = []
    net.encoder.register_forward_pre_hook(lambda _, args: encoder_inputs.append(args[0]))
    images, question = torch.rand(2, 3, 15, 15), torch.rand(2, 18)
    with torch.no_grad():
        net({"image": images, "question": question})
        tokens = torch.cat([net.class_tokens.expand(2, -1, -1), net.positions(net.patches(images))], dim=1)
        question_half = net.question(question).unsqueeze(1).expand(-1, tokens.shape[1], -1)
        assert tokens.shape == question_half.shape == (2, 10, 8)
        fused = torch.cat([tokens, question_half], dim=-1) @ net.fuse.weight.T + net.fuse.bias
    torch.testing.assert_close(encoder_inputs[0], fused)


@pytest.mark.parametrize("input_skip_dim", [None, 4])
def test_contextual_retrieval_decoder_reads_attention_plus_the_skip_projection(input_skip_dim: int | None) -> None:
    """The decoder's input is the attention output plus, with input_skip_dim (the official
    --concat), Linear(E, k) -> Linear(k, E) of the encoded token; without it, the attention output
    alone."""
    net = ContextualRetrievalNet(input_dim=8, embed_dim=16, attention=MHA, input_skip_dim=input_skip_dim)
    captured: dict[str, Tensor] = {}
    net.encoder.register_forward_hook(lambda _, args, out: captured.__setitem__("h", out))
    net.attention.register_forward_hook(lambda _, args, out: captured.__setitem__("attended", out[0]))
    net.decoder.register_forward_pre_hook(lambda _, args: captured.__setitem__("decoder_input", args[0]))
    with torch.no_grad():
        net({"inputs": torch.randn(3, 6, 8)})
    expected = captured["attended"]
    if input_skip_dim is None:
        assert net.skip is None
    else:
        down, up = net.skip
        assert (down.out_features, up.in_features, up.bias) == (4, 4, None)
        skip = (captured["h"] @ down.weight.T + down.bias) @ up.weight.T
        assert skip.abs().amax() > 1e-3
        expected = expected + skip
    torch.testing.assert_close(captured["decoder_input"], expected)
