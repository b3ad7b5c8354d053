"""CoRelNet: the relation matrix by hand, symmetry, invariance to rotations of the embedding space,
equivariance to permutations of the objects, what the decoder reads (also for CoRelNet-Asym and
the lower-triangle attention readout), the attention readout by hand, the decoder's default width,
the variants' configs."""

from __future__ import annotations

import math
from pathlib import Path

import hydra
import pytest
import torch
from torch import Tensor

from tenfold.modules.relational import CoRelNet, QueryAttentionReadout, normalize_similarities


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def images(batch: int, length: int) -> dict[str, Tensor]:
    return {"images": torch.rand(batch, length, 1, 32, 32)}


def random_orthogonal(dim: int, seed: int) -> Tensor:
    generator = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator))
    return q


def test_normalizations_by_hand() -> None:
    s = torch.tensor([[[0.0, 1.0, 2.0], [1.0, 0.0, 3.0], [2.0, 3.0, 0.0]]])
    torch.testing.assert_close(normalize_similarities(s, "none"), s)

    e = math.exp
    row1 = [e(1) / (e(1) + e(0) + e(3)), e(0) / (e(1) + e(0) + e(3)), e(3) / (e(1) + e(0) + e(3))]
    torch.testing.assert_close(normalize_similarities(s, "softmax")[0, 1], torch.tensor(row1))

    masked = normalize_similarities(s, "masked_softmax")[0]
    expected = torch.tensor(
        [
            [1.0, 0.0, 0.0],
            [e(1) / (e(1) + e(0)), e(0) / (e(1) + e(0)), 0.0],
            [e(2) / (e(2) + e(3) + e(0)), e(3) / (e(2) + e(3) + e(0)), e(0) / (e(2) + e(3) + e(0))],
        ]
    )
    torch.testing.assert_close(masked, expected)
    mirrored = normalize_similarities(s, "masked_softmax", symmetrize=True)[0]
    torch.testing.assert_close(mirrored, expected + expected.tril(-1).T)
    torch.testing.assert_close(mirrored, mirrored.T)

    with pytest.raises(ValueError, match="normalization must be one of"):
        normalize_similarities(s, "sigmoid")
    with pytest.raises(ValueError, match="use it with normalization='masked_softmax'"):
        normalize_similarities(s, "softmax", symmetrize=True)


@pytest.mark.parametrize("context_norm", [True, False])
def test_similarities_are_symmetric_inner_products(context_norm: bool) -> None:
    net = CoRelNet(4, 9, normalization="none", context_norm=context_norm)
    batch = images(3, 9)
    with torch.no_grad():
        z = net.embed(batch)
        similarities = net.similarities(batch)
        relations = net.relation_matrix(batch)
    torch.testing.assert_close(similarities, z @ z.transpose(1, 2))
    torch.testing.assert_close(similarities, similarities.transpose(1, 2))
    torch.testing.assert_close(relations, similarities)
    rows = CoRelNet(4, 9).relations(similarities)
    torch.testing.assert_close(rows.sum(-1), torch.ones(3, 9))


@pytest.mark.parametrize(
    ("options", "hooked"),
    [
        ({}, "context_norm"),
        ({"context_norm": False}, "encoder"),
        ({"normalization": "masked_softmax", "readout_entries": "lower"}, "context_norm"),
        ({"decoder": "attention"}, "context_norm"),
    ],
    ids=["paper", "no_context_norm", "official", "attention_readout"],
)
def test_output_is_invariant_to_rotations_of_the_embeddings(options: dict, hooked: str) -> None:
    net = CoRelNet(2, 6, **options).eval()
    batch = images(4, 6)
    rotation = random_orthogonal(128, seed=1)
    with torch.no_grad():
        plain = net(batch)
        handle = getattr(net, hooked).register_forward_hook(lambda module, args, out: out @ rotation)
        rotated = net(batch)
        handle.remove()
    torch.testing.assert_close(rotated, plain, rtol=1e-4, atol=1e-4)


def test_sensory_features_or_asymmetry_break_the_rotation_invariance() -> None:
    """The contrast: CoRelNet-Cat hands the embeddings to the decoder, CoRelNet-Asym maps them by
    learned matrices; a rotation then changes the output."""
    batch = images(4, 6)
    rotation = random_orthogonal(128, seed=2)
    cases = ((CoRelNet(2, 6, concat_embeddings=True), "context_norm"), (CoRelNet(2, 6, asymmetric=True), "encoder"))
    for net, hooked in cases:
        with torch.no_grad():
            plain = net(batch)
            handle = getattr(net, hooked).register_forward_hook(lambda module, args, out: out @ rotation)
            rotated = net(batch)
            handle.remove()
        assert (rotated - plain).abs().max() > 1e-3


@pytest.mark.parametrize("normalization", ["none", "softmax"])
def test_permuting_the_objects_permutes_the_relation_matrix(normalization: str) -> None:
    net = CoRelNet(4, 9, normalization=normalization).eval()
    batch = images(2, 9)
    permutation = torch.randperm(9)
    with torch.no_grad():
        relations = net.relation_matrix(batch)
        permuted = net.relation_matrix({"images": batch["images"][:, permutation]})
    matrix = torch.eye(9)[permutation]
    torch.testing.assert_close(permuted, matrix @ relations @ matrix.T, rtol=1e-4, atol=1e-5)


def _decoder_input(net: CoRelNet, batch: dict[str, Tensor]) -> Tensor:
    seen: list[Tensor] = []
    handle = net.decoder.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        net(batch)
    handle.remove()
    return seen[0]


def test_decoder_reads_the_entries_row_by_row() -> None:
    batch = images(2, 4)
    full = CoRelNet(2, 4)
    relations = full.relation_matrix(batch).detach()
    torch.testing.assert_close(_decoder_input(full, batch), relations.reshape(2, 16))

    lower = CoRelNet(2, 4, normalization="masked_softmax", readout_entries="lower")
    relations = lower.relation_matrix(batch).detach()
    expected = torch.stack([relations[:, i, j] for i in range(4) for j in range(i + 1)], dim=1)
    assert expected.shape == (2, 10)
    torch.testing.assert_close(_decoder_input(lower, batch), expected)
    assert lower.decoder[0].in_features == 10

    cat = CoRelNet(2, 4, concat_embeddings=True)
    with torch.no_grad():
        z = cat.embed(batch)
        relations = cat.relation_matrix(batch)
    expected = torch.cat([relations.reshape(2, 16), z.reshape(2, 4 * 128)], dim=1)
    torch.testing.assert_close(_decoder_input(cat, batch), expected)


def test_asymmetric_relations_use_two_normalized_maps() -> None:
    net = CoRelNet(2, 3, normalization="none", asymmetric=True)
    batch = images(2, 3)
    with torch.no_grad():
        encoded = net.encoder(batch["images"])
        left = net.context_norm(net.projections[0](encoded))
        right = net.context_norm(net.projections[1](encoded))
        similarities = net.similarities(batch)
    torch.testing.assert_close(similarities, left @ right.transpose(1, 2))
    assert (similarities - similarities.transpose(1, 2)).abs().max() > 1e-3
    # with concat_embeddings as well, the decoder sees the first map's embeddings W_1 z
    both = CoRelNet(2, 3, asymmetric=True, concat_embeddings=True)
    with torch.no_grad():
        left, right = both.embeddings(batch)
        relations = both.relation_matrix(batch)
    assert (left - right).abs().max() > 1e-3
    expected = torch.cat([relations.reshape(2, 9), left.reshape(2, 3 * 128)], dim=1)
    torch.testing.assert_close(_decoder_input(both, batch), expected)


def test_bad_arguments_name_the_fix() -> None:
    with pytest.raises(ValueError, match="readout_entries must be"):
        CoRelNet(2, 2, readout_entries="upper")
    with pytest.raises(ValueError, match="decoder must be"):
        CoRelNet(2, 2, decoder="transformer")
    with pytest.raises(ValueError, match="use it with decoder='mlp'"):
        CoRelNet(2, 2, decoder="attention", concat_embeddings=True)
    with pytest.raises(ValueError, match=r"sequence_length=2.*\$\{data.sequence_length\}"):
        CoRelNet(2, 2)(images(1, 6))
    with pytest.raises(TypeError, match=r"takes the batch dict of its datamodule, e.g. net\(\{'images': images\}\)"):
        CoRelNet(2, 2)(images(1, 2)["images"])
    with pytest.raises(KeyError, match=r"reads the batch's 'images' \(images_key\).*it has \['image'\]\).*images_key="):
        CoRelNet(2, 2)({"image": images(1, 2)["images"]})


CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs"


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("corelnet", {"normalization": "softmax", "readout_entries": "full", "projections": None, "readout": None}),
        ("corelnet_official", {"normalization": "masked_softmax", "readout_entries": "lower", "projections": None}),
        ("corelnet_asym", {"normalization": "softmax", "concat_embeddings": False}),
        ("corelnet_cat", {"concat_embeddings": True, "projections": None}),
        ("corelnet_attention", {"normalization": "softmax", "concat_embeddings": False}),
    ],
)
def test_corelnet_model_configs(model: str, expected: dict, compose_cfg, tmp_path: Path) -> None:
    cfg = compose_cfg(["experiment=relational/rmts_corelnet", f"model=relational/{model}"], tmp_path)
    net = hydra.utils.instantiate(cfg.model).net
    for name, value in expected.items():
        assert getattr(net, name) == value, (model, name)
    assert net.context_norm.segments == [[0, 1], [2, 3], [4, 5]]
    assert net.context_norm.unbiased == (model == "corelnet_official")
    assert (net.projections is not None) == (model == "corelnet_asym")
    assert (net.readout is not None) == (model == "corelnet_attention")


def test_asymmetric_decoder_reads_the_relation_matrix_row_by_row() -> None:
    """CoRelNet-Asym: ``R = sigma((W_1 z)(W_2 z)^T)`` is not symmetric, and the decoder reads ``R``
    itself (the matrix ``relation_matrix`` returns), not ``sigma`` of its transposed similarities."""
    torch.set_num_threads(1)
    net = CoRelNet(2, 4, asymmetric=True)
    batch = images(2, 4)
    with torch.no_grad():
        similarities = net.similarities(batch)
        relations = net.relation_matrix(batch)
    assert (similarities - similarities.transpose(1, 2)).abs().max() > 1e-2
    torch.testing.assert_close(_decoder_input(net, batch), relations.reshape(2, 16))


def test_attention_decoder_reads_only_the_lower_triangle_with_lower_entries() -> None:
    """``decoder="attention"`` with ``readout_entries="lower"`` (official ``--reduced``): the
    readout gets ``R`` with the entries above the diagonal zeroed, so the row-softmax entries
    there never reach the output."""
    torch.set_num_threads(1)
    net = CoRelNet(2, 4, decoder="attention", readout_entries="lower")
    batch = images(2, 4)
    # shrink the embeddings so that the softmax is spread, not about the identity
    net.context_norm.register_forward_hook(lambda module, args, out: 0.1 * out)
    seen: list[Tensor] = []
    net.readout.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    with torch.no_grad():
        relations = net.relation_matrix(batch)
        net(batch)
    rows, columns = torch.triu_indices(4, 4, offset=1)
    assert relations[:, rows, columns].min() > 0.01  # a row softmax: the upper triangle is not zero
    torch.testing.assert_close(seen[0], relations.tril())


def _layer_norm(x: Tensor, norm: torch.nn.LayerNorm) -> Tensor:
    mean = x.mean()
    variance = ((x - mean) ** 2).mean()
    return (x - mean) / torch.sqrt(variance + norm.eps) * norm.weight + norm.bias


def test_query_attention_readout_by_hand() -> None:
    """The docstring's definition, one example at a time and one head at a time: tokens
    ``t_i = sum_j R_ij p_j``; per head ``softmax_i(q_h . k_hi / sqrt(head_dim))`` over the ``N``
    tokens; ``q <- LN1(q + W_o [heads])``; ``q <- LN2(q + FF(q))``; the block twice, shared weights.
    ``R`` is a row softmax of random logits (not symmetric), LayerNorms get non-trivial affines."""
    torch.set_num_threads(1)
    length, heads, head_dim, layers = 3, 2, 2, 2
    readout = QueryAttentionReadout(
        length, position_dim=3, query_dim=4, attention_dim=heads * head_dim, num_heads=heads,
        feedforward_dim=5, num_layers=layers,
    ).double()
    with torch.no_grad():
        for norm in (readout.norm1, readout.norm2):
            norm.weight.uniform_(0.5, 1.5)
            norm.bias.uniform_(-0.5, 0.5)
    relations = torch.randn(2, length, length, dtype=torch.float64).mul(2).softmax(dim=-1)
    assert (relations - relations.transpose(1, 2)).abs().max() > 0.1
    with torch.no_grad():
        output = readout(relations)
        expected = []
        for r in relations:
            tokens = [sum(r[i, j] * readout.positions[j] for j in range(length)) for i in range(length)]
            query = readout.query.clone()
            for _ in range(layers):
                q = readout.to_query(query)
                attended = []
                for h in range(heads):
                    part = slice(h * head_dim, (h + 1) * head_dim)
                    scores = torch.stack(
                        [q[part] @ readout.to_key(token)[part] / math.sqrt(head_dim) for token in tokens]
                    )
                    weights = scores.softmax(dim=0)
                    attended.append(sum(w * readout.to_value(token)[part] for w, token in zip(weights, tokens)))
                query = _layer_norm(query + readout.to_output(torch.cat(attended)), readout.norm1)
                query = _layer_norm(query + readout.feedforward(query), readout.norm2)
            expected.append(query)
    assert output.shape == (2, 4)
    torch.testing.assert_close(output, torch.stack(expected))


def test_decoder_hidden_width_defaults_to_the_official_256() -> None:
    """Class docstring: decoder ``Linear(N^2, 256)-ReLU-Linear`` (official ``CoRelNet.py``, and
    ``CoRelNet_qtsf.py``'s ``Linear(query_dim, 256)``)."""
    for net in (CoRelNet(3, 4), CoRelNet(3, 4, decoder="attention")):
        assert net.decoder[0].out_features == 256
        assert net.decoder[2].in_features == 256 and net.decoder[2].out_features == 3
