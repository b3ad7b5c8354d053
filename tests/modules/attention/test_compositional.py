"""CompositionalAttention: MHA equivalence in the fixed pairing, the paper's definition computed by
hand, masks, equivariance, chunking, autocast, determinism and clear errors."""

from __future__ import annotations

import copy
from types import SimpleNamespace
from unittest.mock import patch

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.checkpoint import checkpoint

from tenfold.modules.attention import CompositionalAttention


def mha_with_same_weights(layer: CompositionalAttention) -> nn.MultiheadAttention:
    """An ``nn.MultiheadAttention`` holding the fixed-pairing layer's projections."""
    mha = nn.MultiheadAttention(layer.embed_dim, layer.num_searches, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(torch.cat([layer.q_proj.weight, layer.k_proj.weight, layer.v_proj.weight]))
        mha.in_proj_bias.copy_(torch.cat([layer.q_proj.bias, layer.k_proj.bias, layer.v_proj.bias]))
        mha.out_proj.load_state_dict(layer.out_proj.state_dict())
    return mha


def reference_compositional(layer: CompositionalAttention, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """The paper's equations (Sec. 3) with explicit loops over searches and retrievals; ``mask``
    ``[L, L]`` boolean (``True``: masked) or additive float.

    Returns the output ``[B, L, E]``, search weights ``[B, S, L, L]`` and selection ``[B, L, S, R]``.
    """
    batch, length, _ = x.shape
    num_s, num_r = layer.num_searches, layer.num_retrievals
    d_s, d_v, d_r = layer.search_head_dim, layer.retrieval_head_dim, layer.retrieval_qk_dim
    q = layer.q_proj(x).view(batch, length, num_s, d_s)
    k = layer.k_proj(x).view(batch, length, num_s, d_s)
    v = layer.v_proj(x).view(batch, length, num_r, d_v)
    q_r = layer.retrieval_query_proj(x).view(batch, length, num_s, d_r)
    heads, all_weights, all_selections = [], [], []
    for s in range(num_s):
        logits = q[:, :, s] @ k[:, :, s].transpose(1, 2) / d_s**0.5
        if mask is not None and mask.dtype == torch.bool:
            logits = logits.masked_fill(mask, float("-inf"))
        elif mask is not None:
            logits = logits + mask
        weights = logits.softmax(-1)
        retrieved = [weights @ v[:, :, r] for r in range(num_r)]
        key_maps = layer.retrieval_key_weight
        scores = []
        for r, o in enumerate(retrieved):
            index = r if layer.separate_retrieval_keys else 0
            key = o @ key_maps[index] + layer.retrieval_key_bias[index]
            scores.append((q_r[:, :, s] * key).sum(-1) / d_r**0.5 / layer.temperature)
        selection = torch.stack(scores, -1).softmax(-1)
        heads.append(sum(selection[..., r : r + 1] * retrieved[r] for r in range(num_r)))
        all_weights.append(weights)
        all_selections.append(selection)
    output = layer.out_proj(torch.cat(heads, -1))
    return output, torch.stack(all_weights, 1), torch.stack(all_selections, 2)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize(
    "masks",
    ["none", "key_padding", "causal_bool", "causal_float_hint", "per_head_3d", "float_finite"],
)
@pytest.mark.parametrize("need_weights", [True, False])
def test_fixed_pairing_is_multihead_attention(masks: str, need_weights: bool) -> None:
    embed_dim, heads, batch, length = 24, 3, 2, 6
    layer = CompositionalAttention(embed_dim, heads, heads, retrieval_selection="fixed")
    mha = mha_with_same_weights(layer)
    x = torch.randn(batch, length, embed_dim)
    padding = torch.zeros(batch, length, dtype=torch.bool)
    padding[0, -2:] = True
    causal = nn.Transformer.generate_square_subsequent_mask(length)
    kwargs = {
        "none": {},
        "key_padding": {"key_padding_mask": padding},
        "causal_bool": {"attn_mask": causal.isinf()},
        "causal_float_hint": {"attn_mask": causal, "is_causal": True},
        "per_head_3d": {"attn_mask": torch.rand(batch * heads, length, length) > 0.7},
        "float_finite": {"attn_mask": torch.randn(length, length), "key_padding_mask": -torch.rand(batch, length)},
    }[masks]
    if masks == "per_head_3d":
        kwargs["attn_mask"][..., 0] = False  # every query sees at least one key
    expected, expected_weights = mha(x, x, x, need_weights=need_weights, **kwargs)
    output, weights = layer(x, x, x, need_weights=need_weights, **kwargs)
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-6)
    if need_weights:
        torch.testing.assert_close(weights[0], expected_weights, rtol=1e-5, atol=1e-6)
        assert torch.equal(weights[1], torch.eye(heads).expand(batch, length, heads, heads))


def test_fixed_pairing_matches_mha_on_cross_attention_and_unbatched_and_sequence_first() -> None:
    layer = CompositionalAttention(16, 4, 4, retrieval_selection="fixed", batch_first=False)
    mha = mha_with_same_weights(layer)
    mha.batch_first = False
    query, memory = torch.randn(5, 2, 16), torch.randn(7, 2, 16)
    torch.testing.assert_close(layer(query, memory, memory)[0], mha(query, memory, memory)[0])
    torch.testing.assert_close(layer(query[:, 0], memory[:, 0], memory[:, 0])[0], mha(query[:, 0], memory[:, 0], memory[:, 0])[0])


def test_fixed_pairing_matches_mha_with_other_key_and_value_widths() -> None:
    # kdim and vdim size the key and value projections' inputs, as MHA's separate projections
    layer = CompositionalAttention(16, 4, 4, retrieval_selection="fixed", kdim=10, vdim=6)
    mha = nn.MultiheadAttention(16, 4, kdim=10, vdim=6, batch_first=True)
    with torch.no_grad():
        mha.q_proj_weight.copy_(layer.q_proj.weight)
        mha.k_proj_weight.copy_(layer.k_proj.weight)
        mha.v_proj_weight.copy_(layer.v_proj.weight)
        mha.in_proj_bias.copy_(torch.cat([layer.q_proj.bias, layer.k_proj.bias, layer.v_proj.bias]))
        mha.out_proj.load_state_dict(layer.out_proj.state_dict())
    query, keys, values = torch.randn(2, 5, 16), torch.randn(2, 7, 10), torch.randn(2, 7, 6)
    for need_weights in (True, False):
        output = layer(query, keys, values, need_weights=need_weights)[0]
        torch.testing.assert_close(output, mha(query, keys, values, need_weights=need_weights)[0])
    soft = CompositionalAttention(16, 4, 2, kdim=10, vdim=6)
    soft(query, keys, values, need_weights=False)[0].sum().backward()
    assert soft.k_proj.weight.shape[1] == 10 and soft.v_proj.weight.shape[1] == 6
    assert soft.k_proj.weight.grad.abs().sum() > 0 and soft.v_proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="kdim=10, vdim=6"):
        soft(query, values, keys)


@pytest.mark.parametrize("need_weights", [True, False])
def test_unbatched_and_sequence_first_inputs_give_the_batched_results(need_weights: bool) -> None:
    # The soft selection too: outputs and both weights as for a batch of one, squeezed
    layer = CompositionalAttention(16, 4, 3)
    sequence_first = CompositionalAttention(16, 4, 3, batch_first=False)
    sequence_first.load_state_dict(layer.state_dict())
    x = torch.randn(1, 6, 16)
    output, weights = layer(x, x, x, need_weights=need_weights)
    single, single_weights = layer(x[0], x[0], x[0], need_weights=need_weights)
    torch.testing.assert_close(single, output[0])
    transposed, transposed_weights = sequence_first(x.transpose(0, 1), x.transpose(0, 1), x.transpose(0, 1), need_weights=need_weights)
    torch.testing.assert_close(transposed.transpose(0, 1), output)
    if need_weights:
        assert single_weights[0].shape == (6, 6) and single_weights[1].shape == (6, 4, 3)
        torch.testing.assert_close(single_weights[0], weights[0][0])
        torch.testing.assert_close(single_weights[1], weights[1][0])
        torch.testing.assert_close(transposed_weights[1], weights[1])
    else:
        assert single_weights is None and transposed_weights is None


@pytest.mark.parametrize("backend", ["explicit", "sdpa", "batched", "per_retrieval"])
def test_is_causal_in_cross_attention_aligns_query_and_key_positions_at_the_start(backend: str) -> None:
    # L_q != L_k: query i sees keys 0..i (top-left alignment, as scaled_dot_product_attention)
    layer = CompositionalAttention(16, 4, 2, search_backend=backend)
    query, memory = torch.randn(2, 4, 16), torch.randn(2, 7, 16)
    top_left = torch.ones(4, 7, dtype=torch.bool).triu(1)
    expected = layer(query, memory, memory, attn_mask=top_left, need_weights=False)[0]
    torch.testing.assert_close(layer(query, memory, memory, is_causal=True, need_weights=False)[0], expected)
    bottom_right = torch.ones(4, 7, dtype=torch.bool).triu(4)
    assert not torch.allclose(layer(query, memory, memory, attn_mask=bottom_right, need_weights=False)[0], expected)


@pytest.mark.parametrize("need_weights", [True, False])
def test_is_causal_with_a_mask_is_only_a_hint(need_weights: bool) -> None:
    # With attn_mask given, is_causal does not replace it (the documented hint semantics): a
    # mask that is not causal keeps its meaning
    layer = CompositionalAttention(16, 4, 2)
    x = torch.randn(2, 6, 16)
    not_causal = torch.zeros(6, 6, dtype=torch.bool)
    not_causal[:, 0] = True
    expected = layer(x, x, x, attn_mask=not_causal, need_weights=need_weights)[0]
    torch.testing.assert_close(layer(x, x, x, attn_mask=not_causal, is_causal=True, need_weights=need_weights)[0], expected)
    assert not torch.allclose(layer(x, x, x, is_causal=True, need_weights=need_weights)[0], expected)


@pytest.mark.parametrize("float_mask", [False, True], ids=["bool_mask", "float_mask"])
@pytest.mark.parametrize("separate_keys", [False, True])
@pytest.mark.parametrize("temperature", [1.0, 0.5])
def test_soft_selection_matches_the_papers_equations(separate_keys: bool, temperature: float, float_mask: bool) -> None:
    layer = CompositionalAttention(
        24, num_searches=3, num_retrievals=4, retrieval_dim=32, retrieval_qk_dim=5,
        separate_retrieval_keys=separate_keys, temperature=temperature,
    )
    with torch.no_grad():
        layer.retrieval_key_bias.normal_()
    x = torch.randn(2, 7, 24)
    mask = torch.rand(7, 7) > 0.6
    mask.fill_diagonal_(False)
    if float_mask:  # finite additive biases besides the -inf entries
        mask = torch.randn(7, 7).masked_fill(mask, float("-inf"))
    output, (search_weights, selection) = layer(x, x, x, attn_mask=mask, average_attn_weights=False)
    expected, expected_weights, expected_selection = reference_compositional(layer, x, mask)
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(search_weights, expected_weights, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(selection, expected_selection, rtol=1e-5, atol=1e-6)
    assert selection.shape == (2, 7, 3, 4)
    torch.testing.assert_close(selection.sum(-1), torch.ones(2, 7, 3))
    masked = mask.isinf() if float_mask else mask
    assert search_weights.masked_select(masked.expand_as(search_weights)).abs().max() == 0


@pytest.mark.parametrize("backend", ["explicit", "sdpa", "batched", "per_retrieval"])
def test_linear_retrieval_scoring_matches_the_official_scan_layer_by_hand(backend: str) -> None:
    # Official SCAN layer without dot: pi = softmax_r(score([Q^r_s, O_{s,r}])), score a
    # Linear(d_r + d_v, 1), no scaling; here also divided by the temperature.
    layer = CompositionalAttention(
        24, num_searches=3, num_retrievals=4, retrieval_dim=32, retrieval_qk_dim=5,
        retrieval_scoring="linear", temperature=0.7, search_backend=backend,
    )
    x = torch.randn(2, 7, 24)
    batch, length = 2, 7
    q = layer.q_proj(x).view(batch, length, 3, 8)
    k = layer.k_proj(x).view(batch, length, 3, 8)
    v = layer.v_proj(x).view(batch, length, 4, 8)
    q_r = layer.retrieval_query_proj(x).view(batch, length, 3, 5)
    heads, selections = [], []
    for s in range(3):
        weights = (q[:, :, s] @ k[:, :, s].transpose(1, 2) / 8**0.5).softmax(-1)
        retrieved = torch.stack([weights @ v[:, :, r] for r in range(4)], dim=2)  # [B, L, R, d_v]
        scored = torch.cat([q_r[:, :, s, None].expand(-1, -1, 4, -1), retrieved], dim=-1)
        selection = (layer.retrieval_score(scored).squeeze(-1) / 0.7).softmax(-1)
        heads.append((selection.unsqueeze(-1) * retrieved).sum(2))
        selections.append(selection)
    expected = layer.out_proj(torch.cat(heads, -1))
    output, _ = layer(x, x, x, need_weights=False)
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-5)
    _, (_, selection) = layer(x, x, x)
    torch.testing.assert_close(selection, torch.stack(selections, 2), rtol=1e-5, atol=1e-6)
    # the query term cancels under the softmax: the retrieval query gets no gradient
    output.square().sum().backward()
    assert layer.retrieval_query_proj.weight.grad.abs().max() < 1e-6
    assert layer.retrieval_score.weight.grad[0, 5:].abs().max() > 0


def test_one_retrieval_makes_the_selection_trivial() -> None:
    layer = CompositionalAttention(16, num_searches=4, num_retrievals=1)
    assert layer.retrieval_head_dim == 4
    x = torch.randn(3, 5, 16)
    _, (_, selection) = layer(x, x, x)
    assert torch.equal(selection, torch.ones(3, 5, 4, 1))


@pytest.mark.parametrize(("chunk", "chunks"), [(1, 40), (7, 6), (None, 3)])
def test_query_chunks_and_recomputation_change_nothing(chunk: int | None, chunks: int) -> None:
    # 40 queries: chunks of 1 or 7, or the automatic 16 (S (L + R d_v) = 192 entries per query
    # against 2 L E = 1280, at least 16); each chunk is recomputed in the backward.
    layer = CompositionalAttention(16, 4, 2, search_backend="explicit", query_chunk_size=chunk)
    reference = CompositionalAttention(16, 4, 2, query_chunk_size=10_000, search_backend="explicit")
    reference.load_state_dict(layer.state_dict())
    x = torch.randn(2, 40, 16, requires_grad=True)
    padding = torch.zeros(2, 40, dtype=torch.bool)
    padding[1, -3:] = True
    with patch("tenfold.modules.attention.compositional.checkpoint", wraps=checkpoint) as checkpointed:
        expected, grad_expected = _output_and_input_grad(reference, x, key_padding_mask=padding)
        assert checkpointed.call_count == 0
        output, grad = _output_and_input_grad(layer, x, key_padding_mask=padding)
        assert checkpointed.call_count == chunks
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, grad_expected, rtol=1e-5, atol=1e-5)


def _mask_kwargs(mask_kind: str, batch: int, heads: int, length: int) -> dict:
    """Keyword arguments of one of MHA's masks for self-attention over ``length`` tokens: none,
    the last 3 keys of the first sequence padded, causal, or a random per-head boolean mask that
    leaves every query its first key."""
    if mask_kind == "padding":
        padding = torch.zeros(batch, length, dtype=torch.bool)
        padding[0, -3:] = True
        return {"key_padding_mask": padding}
    if mask_kind == "per_head":
        per_head = torch.rand(batch * heads, length, length) > 0.6
        per_head[..., 0] = False
        return {"attn_mask": per_head}
    return {"is_causal": True} if mask_kind == "causal" else {}


def _explicit_twin(layer: CompositionalAttention) -> CompositionalAttention:
    """A copy of ``layer`` (same weights) whose searches run explicitly, in chunks of 3 queries."""
    twin = copy.deepcopy(layer)
    twin.search_backend, twin.query_chunk_size = "explicit", 3
    return twin


def _output_and_input_grad(layer: nn.Module, x: Tensor, **mask_kwargs) -> tuple[Tensor, Tensor]:
    """Self-attention output (``need_weights=False``) and the gradient of ``sum(output^2)`` in ``x``."""
    output = layer(x, x, x, need_weights=False, **mask_kwargs)[0]
    (grad,) = torch.autograd.grad(output.square().sum(), x)
    return output, grad


@pytest.mark.parametrize("mask_kind", ["none", "padding", "causal", "per_head"])
@pytest.mark.parametrize(
    ("num_retrievals", "retrieval_dim", "recomputed"),
    [(2, None, False), (4, 64, True)],
    ids=["kept", "recomputed"],
)
def test_sdpa_searches_one_at_a_time_agree_with_explicit_searches(
    mask_kind: str, num_retrievals: int, retrieval_dim: int | None, recomputed: bool
) -> None:
    # S R d_v = 4 * 2 * 4 = 32 <= 8 E keeps every search's retrievals; 4 * 4 * 16 = 256 > 8 E = 128
    # recomputes each search in the backward.
    sdpa = CompositionalAttention(16, 4, num_retrievals, retrieval_dim=retrieval_dim, search_backend="sdpa")
    explicit = _explicit_twin(sdpa)
    x = torch.randn(2, 7, 16, requires_grad=True)
    mask_kwargs = _mask_kwargs(mask_kind, batch=2, heads=4, length=7)
    expected, grad_expected = _output_and_input_grad(explicit, x, **mask_kwargs)
    with patch("tenfold.modules.attention.compositional.checkpoint", wraps=checkpoint) as checkpointed:
        output, grad = _output_and_input_grad(sdpa, x, **mask_kwargs)
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, grad_expected, rtol=1e-5, atol=1e-5)
    assert checkpointed.call_count == (4 if recomputed else 0)


@pytest.mark.parametrize("num_retrievals", [1, 2])
def test_cpu_auto_backend_fuses_one_or_two_retrievals_and_agrees_with_explicit_chunks(num_retrievals: int) -> None:
    # R <= 2 retrievals as wide as the search heads: "auto" takes one batched call of PyTorch's
    # fused CPU kernel (no chunks, no recomputation; with R = 2 the queries and keys zero-padded to
    # the values' width, which that kernel needs: restricted to it, the call would fail otherwise);
    # with dropout, weights asked for, or R = 4, the explicit chunks.
    fused = CompositionalAttention(16, 4, num_retrievals)
    explicit = _explicit_twin(fused)
    x = torch.randn(2, 7, 16, requires_grad=True)
    padding = torch.zeros(2, 7, dtype=torch.bool)
    padding[1, -2:] = True
    assert fused._search_path(x.unsqueeze(1), x.unsqueeze(1), need_weights=False, dropout_p=0.0) == "batched"
    assert fused._search_path(x.unsqueeze(1), x.unsqueeze(1), need_weights=False, dropout_p=0.1) == "explicit"
    assert fused._search_path(x.unsqueeze(1), x.unsqueeze(1), need_weights=True, dropout_p=0.0) == "explicit"
    expected, grad_expected = _output_and_input_grad(explicit, x, key_padding_mask=padding)
    with sdpa_kernel([SDPBackend.FLASH_ATTENTION]):
        output, grad = _output_and_input_grad(fused, x, key_padding_mask=padding)
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, grad_expected, rtol=1e-5, atol=1e-5)
    assert CompositionalAttention(16, 4, 4)._search_path(x.unsqueeze(1), x.unsqueeze(1), need_weights=False, dropout_p=0.0) == "explicit"


@pytest.mark.parametrize(
    ("num_retrievals", "key_length", "expected"),
    [(1, 1200, "batched"), (4, 300, "batched"), (4, 301, "per_search"), (8, 150, "batched"), (8, 151, "explicit"),
     (8, 256, "explicit"), (8, 257, "per_search")],
)
def test_cuda_automatic_choice_counts_the_expanded_values_against_four_layer_inputs(
    num_retrievals: int, key_length: int, expected: str
) -> None:
    # The rule itself, without a GPU (it reads only the device flag and the lengths): the batched
    # call while S R d_v L_k <= 4 E L_q, here 8 * R * 8 * L_k <= 4 * 64 * 300; beyond that the
    # explicit chunks up to 256 keys, one call per search for longer keys
    layer = CompositionalAttention(64, 8, num_retrievals)
    queries = SimpleNamespace(is_cuda=True, shape=(2, 1, 300, 8))
    keys = SimpleNamespace(is_cuda=True, shape=(2, 1, key_length, 8))
    assert layer._search_path(queries, keys, need_weights=False, dropout_p=0.1) == expected
    assert layer._search_path(queries, keys, need_weights=True, dropout_p=0.1) == "explicit"


@pytest.mark.parametrize(("key_length", "cpu_chunk", "cuda_chunk"), [(32, 16, 16), (64, 16, 25), (256, 32, 64), (512, 42, 85)])
def test_automatic_query_chunks_hold_two_layer_inputs_on_the_cpu_and_four_on_cuda(
    key_length: int, cpu_chunk: int, cuda_chunk: int
) -> None:
    # E = 256, S = R = 8, d_v = 32: a chunk of n queries holds S n (L_k + R d_v) entries of
    # attention matrix and retrievals against L_k E of a layer input; at least 16 positions
    layer = CompositionalAttention(256, 8, 8)
    assert layer._auto_chunk(key_length, key_length) == cpu_chunk
    assert layer._auto_chunk(key_length, key_length, cuda=True) == cuda_chunk
    assert layer._auto_chunk(20, key_length, cuda=True) == min(20, cuda_chunk)


@pytest.mark.parametrize("mask_kind", ["none", "padding", "causal", "per_head"])
@pytest.mark.parametrize(("num_retrievals", "retrieval_dim"), [(4, None), (3, 24)], ids=["R4", "R3_wide"])
@pytest.mark.parametrize("backend", ["per_retrieval", "batched"])
def test_fused_backends_agree_with_explicit_searches(
    backend: str, mask_kind: str, num_retrievals: int, retrieval_dim: int | None
) -> None:
    # Chosen explicitly they run for any R, also with retrievals wider than the search heads
    # (d_v = 8 against d_s = 4), and with every mask of MHA: per retrieval R SDPA calls over all
    # searches; batched one call, the values [B, L, R d_v] expanded over the searches.
    fused_layer = CompositionalAttention(16, 4, num_retrievals, retrieval_dim=retrieval_dim, search_backend=backend)
    explicit = _explicit_twin(fused_layer)
    x = torch.randn(2, 7, 16, requires_grad=True)
    mask_kwargs = _mask_kwargs(mask_kind, batch=2, heads=4, length=7)
    assert fused_layer._search_path(x.unsqueeze(1), x.unsqueeze(1), need_weights=False, dropout_p=0.0) == backend
    expected, grad_expected = _output_and_input_grad(explicit, x, **mask_kwargs)
    sdpa = F.scaled_dot_product_attention
    with patch("tenfold.modules.attention.compositional.F.scaled_dot_product_attention", wraps=sdpa) as fused:
        output, grad = _output_and_input_grad(fused_layer, x, **mask_kwargs)
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, grad_expected, rtol=1e-5, atol=1e-5)
    if backend == "per_retrieval":
        assert fused.call_count == num_retrievals
    else:
        assert fused.call_count == 1
        value_width = fused_layer.num_retrievals * fused_layer.retrieval_head_dim
        # on the CPU queries and keys are zero-padded to the values' width (the fused kernel's condition)
        queries, keys, values = fused.call_args.args
        d_s = fused_layer.search_head_dim
        assert queries.shape == keys.shape == values.shape == (2, 4, 7, value_width)
        assert not queries[..., d_s:].any() and not keys[..., d_s:].any()
        assert values.stride(1) == 0 and fused.call_args.kwargs["scale"] == d_s**-0.5
    # weights asked for: computed explicitly, the same numbers
    output_with_weights, (search_weights, retrieval_weights) = fused_layer(x, x, x, **mask_kwargs)
    expected_weights = explicit(x, x, x, **mask_kwargs)[1]
    torch.testing.assert_close(output_with_weights, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(search_weights, expected_weights[0])
    torch.testing.assert_close(retrieval_weights, expected_weights[1])


def test_batched_backend_draws_one_dropout_mask_per_search_shared_by_its_retrievals() -> None:
    # Two retrievals with the same value projection: under dropout their retrieved values are
    # equal exactly when both read the same dropped-out search weights (the paper's one mask per
    # search); independent masks would make them differ.
    layer = CompositionalAttention(16, 4, 2, dropout=0.5, search_backend="batched")
    with torch.no_grad():
        by_retrieval = layer.v_proj.weight.view(2, 4, 16)  # value feature r * d_v + j
        by_retrieval[1] = by_retrieval[0]
        layer.v_proj.bias.zero_()
    x = torch.randn(2, 9, 16)
    captured = []
    select = layer._select

    def capture(retrieved: Tensor, *args: Tensor) -> tuple[Tensor, Tensor]:
        captured.append(retrieved)
        return select(retrieved, *args)

    with patch.object(layer, "_select", side_effect=capture):
        layer.train()
        dropped = layer(x, x, x, need_weights=False)[0]
        layer.eval()
        clean = layer(x, x, x, need_weights=False)[0]
    assert not torch.allclose(dropped, clean)
    assert len(captured) == 2
    dropped_retrieved, clean_retrieved = captured
    torch.testing.assert_close(dropped_retrieved[..., 0, :], dropped_retrieved[..., 1, :], rtol=0, atol=0)
    # without dropout the CPU runs the fused kernel on padded queries, whose blocked products may
    # round the two value halves differently
    torch.testing.assert_close(clean_retrieved[..., 0, :], clean_retrieved[..., 1, :], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("case", "padded"),
    [("eval", True), ("dropout", False), ("mask_with_grad", False), ("one_wide_retrieval", True)],
)
def test_cpu_pads_queries_and_keys_only_where_the_fused_kernel_can_then_run(case: str, padded: bool) -> None:
    # The fused CPU kernel takes neither dropout nor a mask that requires grad: there the math
    # kernel runs and padding would only add work. One retrieval wider than the search heads
    # (d_v = 8 against d_s = 4) is padded too.
    num_retrievals, retrieval_dim = (1, 8) if case == "one_wide_retrieval" else (2, None)
    layer = CompositionalAttention(16, 4, num_retrievals, retrieval_dim=retrieval_dim, dropout=0.1, search_backend="batched")
    layer.train(case == "dropout")
    x = torch.randn(2, 7, 16)
    mask = torch.zeros(7, 7, requires_grad=case == "mask_with_grad")
    with patch("tenfold.modules.attention.compositional.F.scaled_dot_product_attention", wraps=F.scaled_dot_product_attention) as sdpa:
        layer(x, x, x, attn_mask=mask, need_weights=False)
    queries, keys, values = sdpa.call_args.args
    assert queries.shape[-1] == keys.shape[-1] == (values.shape[-1] if padded else 4)
    assert sdpa.call_args.kwargs["scale"] == 4**-0.5


@pytest.mark.parametrize("retrieval_scoring", ["dot", "linear"])
def test_one_retrieval_skips_the_selection_and_gives_its_parameters_exact_zero_gradients(retrieval_scoring: str) -> None:
    # With R = 1 the selection softmax is identically 1 and its gradient identically 0: the fused
    # path skips it (the retrieval query projection is never called) and hands its parameters
    # zero gradients, the explicit path computes it; outputs and every gradient agree, and every
    # parameter has a gradient (as DDP without find_unused_parameters requires).
    fused = CompositionalAttention(16, 4, 1, retrieval_scoring=retrieval_scoring)
    explicit = _explicit_twin(fused)
    x = torch.randn(2, 7, 16)
    padding = torch.zeros(2, 7, dtype=torch.bool)
    padding[0, -2:] = True
    gradients = {}
    for name, layer in (("fused", fused), ("explicit", explicit)):
        with patch.object(layer.retrieval_query_proj, "forward", wraps=layer.retrieval_query_proj.forward) as projected:
            output = layer(x, x, x, need_weights=False, key_padding_mask=padding)[0]
        assert projected.call_count == (0 if name == "fused" else 1)
        output.square().sum().backward()
        gradients[name] = {key: parameter.grad for key, parameter in layer.named_parameters()}
    assert set(gradients["fused"]) == {name for name, _ in fused.named_parameters()}
    for key, grad in gradients["fused"].items():
        assert grad is not None, key
        torch.testing.assert_close(grad, gradients["explicit"][key], rtol=1e-5, atol=1e-5, msg=key)
        if key.startswith(("retrieval_query_proj", "retrieval_key_", "retrieval_score")):
            assert torch.count_nonzero(grad) == 0, key
    _, (_, selection) = fused(x, x, x)
    assert torch.equal(selection, torch.ones(2, 7, 4, 1))


@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
def test_one_retrieval_works_with_torch_func_gradients() -> None:
    # torch.func (functional_call + grad, and per-sample gradients with vmap) through the
    # one-retrieval shortcut and its zero-gradient function: the same gradients as autograd.
    layer = CompositionalAttention(16, 4, 1)
    x = torch.randn(3, 5, 16)
    parameters = dict(layer.named_parameters())

    def loss(params: dict[str, Tensor], inputs: Tensor) -> Tensor:
        output = torch.func.functional_call(layer, params, (inputs, inputs, inputs), {"need_weights": False})[0]
        return output.square().sum()

    gradients = torch.func.grad(loss)(parameters, x)
    loss(parameters, x).backward()
    for name, parameter in layer.named_parameters():
        torch.testing.assert_close(gradients[name], parameter.grad, msg=name)
    per_sample = torch.func.vmap(torch.func.grad(loss), in_dims=(None, 0))(parameters, x.unsqueeze(1))
    torch.testing.assert_close(per_sample["q_proj.weight"].sum(0), layer.q_proj.weight.grad, rtol=1e-5, atol=1e-5)
    assert torch.count_nonzero(per_sample["retrieval_query_proj.weight"]) == 0


def test_gradients_reach_every_parameter() -> None:
    layer = CompositionalAttention(16, 4, 2, separate_retrieval_keys=True)
    x = torch.randn(2, 40, 16)
    layer(x, x, x, need_weights=False)[0].sum().backward()
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("backend", ["explicit", "sdpa", "batched", "per_retrieval"])
@pytest.mark.parametrize(
    "options",
    [{}, {"separate_retrieval_keys": True}, {"retrieval_scoring": "linear"}, {"num_retrievals": 1}],
    ids=["shared_keys", "separate_keys", "linear", "R1"],
)
def test_gradients_are_laid_out_as_their_parameters(backend: str, options: dict) -> None:
    """DDP's gradient buckets expect each gradient with its parameter's strides ("Grad strides do
    not match bucket view strides" otherwise, and a copy per step): the shared retrieval key's
    bias [1, d_r] once came back transposed from an einsum."""
    layer = CompositionalAttention(16, 4, **{"num_retrievals": 2, **options}, search_backend=backend)
    x = torch.randn(2, 9, 16)
    layer(x, x, x, need_weights=False)[0].square().sum().backward()
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None, name
        assert parameter.grad.stride() == parameter.stride(), name


@pytest.mark.parametrize(
    ("backend", "need_weights"),
    [("explicit", True), ("explicit", False), ("sdpa", False), ("batched", False), ("per_retrieval", False)],
    ids=["weights", "explicit", "sdpa", "batched", "per_retrieval"],
)
def test_masked_keys_do_not_influence_the_output(backend: str, need_weights: bool) -> None:
    layer = CompositionalAttention(16, 4, 2, search_backend=backend)

    def attend(inputs: Tensor, **kwargs) -> Tensor:
        return layer(inputs, inputs, inputs, need_weights=need_weights, **kwargs)[0]

    x = torch.randn(2, 6, 16)
    padding = torch.zeros(2, 6, dtype=torch.bool)
    padding[:, 4:] = True
    changed = x.clone()
    changed[:, 4:] = torch.randn(2, 2, 16)
    torch.testing.assert_close(attend(changed, key_padding_mask=padding)[:, :4], attend(x, key_padding_mask=padding)[:, :4])
    changed_future = x.clone()
    changed_future[:, 3:] = torch.randn(2, 3, 16)
    torch.testing.assert_close(attend(changed_future, is_causal=True)[:, :3], attend(x, is_causal=True)[:, :3])
    assert not torch.allclose(attend(changed_future)[:, :3], attend(x)[:, :3])


def _left_padded_causal_masks() -> tuple[Tensor, Tensor]:
    """A key padding mask ``[2, 6]`` hiding the first two keys of sequence 0, and a causal mask:
    together they leave query rows 0 and 1 of sequence 0 without any key."""
    padding = torch.zeros(2, 6, dtype=torch.bool)
    padding[0, :2] = True
    return padding, torch.ones(6, 6, dtype=torch.bool).triu(1)


@pytest.mark.parametrize("num_retrievals", [2, 4])
@pytest.mark.parametrize("need_weights", [False, True])
def test_queries_without_any_key_return_zeros_with_finite_gradients_on_every_backend(
    num_retrievals: int, need_weights: bool
) -> None:
    # SDPA gives a fully masked query row 0 (and zero gradients); the explicit softmax would give
    # NaN and spread it through every gradient. All backends must agree.
    padding, causal = _left_padded_causal_masks()
    x = torch.randn(2, 6, 16, requires_grad=True)
    layer = CompositionalAttention(16, 4, num_retrievals)
    nn.init.normal_(layer.out_proj.bias)
    results = {}
    for backend in ("explicit", "sdpa", "batched", "per_retrieval"):
        layer.search_backend = backend
        layer.zero_grad(set_to_none=True)
        x.grad = None
        output, weights = layer(x, x, x, key_padding_mask=padding, attn_mask=causal, need_weights=need_weights)
        output.square().sum().backward()
        grads = [x.grad, *(p.grad for p in layer.parameters())]
        assert all(torch.isfinite(g).all() for g in grads), backend
        # the empty rows hold the output projection's bias only
        torch.testing.assert_close(output[0, :2], layer.out_proj.bias.detach().expand(2, 16))
        if need_weights:
            assert torch.equal(weights[0][0, :2], torch.zeros(2, 6))
            torch.testing.assert_close(weights[0][1].sum(-1), torch.ones(6))
        results[backend] = (output.detach(), [g.clone() for g in grads])
    for backend, (output, grads) in results.items():
        torch.testing.assert_close(output, results["explicit"][0], msg=backend)
        for grad, expected in zip(grads, results["explicit"][1]):
            torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-6, msg=backend)


def test_queries_without_any_key_stay_finite_with_dropout_and_in_the_fixed_pairing() -> None:
    padding, causal = _left_padded_causal_masks()
    x = torch.randn(2, 6, 16)
    masks = {"key_padding_mask": padding, "attn_mask": causal}
    soft = CompositionalAttention(16, 4, 2, dropout=0.3).train()  # dropout: the explicit chunks on the CPU
    output = soft(x, x, x, need_weights=False, **masks)[0]
    output.sum().backward()
    assert torch.isfinite(output).all() and all(torch.isfinite(p.grad).all() for p in soft.parameters())
    fixed = CompositionalAttention(16, 4, 4, retrieval_selection="fixed")
    mha = mha_with_same_weights(fixed)
    # MHA's own weights path is NaN on these rows; its fused path gives what the layer gives either way
    expected = mha(x, x, x, need_weights=False, **masks)[0]
    for need_weights in (False, True):
        torch.testing.assert_close(fixed(x, x, x, need_weights=need_weights, **masks)[0], expected)


@pytest.mark.parametrize("mask_name", ["key_padding_mask", "attn_mask"])
@pytest.mark.parametrize("dtype", [torch.long, torch.uint8])
def test_integer_masks_are_refused_with_the_fix(mask_name: str, dtype: torch.dtype) -> None:
    # added to the logits, a 0/1 integer mask would mask nothing; MHA refuses them as well
    layer = CompositionalAttention(16, 4, 2)
    x = torch.randn(2, 5, 16)
    mask = torch.zeros(2, 5) if mask_name == "key_padding_mask" else torch.ones(5, 5).triu(1)
    with pytest.raises(TypeError, match=rf"{mask_name} has dtype torch\.{str(dtype).split('.')[-1]}.*\.bool\(\)"):
        layer(x, x, x, **{mask_name: mask.to(dtype)})


@pytest.mark.parametrize(
    "options",
    [{}, {"bias": False}, {"kdim": 10, "vdim": 6}, {"batch_first": False, "dropout": 0.2}],
    ids=["default", "no_bias", "kdim_vdim", "sequence_first_dropout"],
)
def test_from_multihead_attention_is_the_same_function(options: dict) -> None:
    mha = nn.MultiheadAttention(16, 4, **options)
    layer = CompositionalAttention.from_multihead_attention(mha)
    assert layer.retrieval_selection == "fixed" and layer.num_searches == layer.num_retrievals == 4
    assert layer.dropout == mha.dropout and layer.batch_first == mha.batch_first
    assert (layer.num_heads, layer.head_dim) == (mha.num_heads, mha.head_dim)
    mha.eval()
    layer = CompositionalAttention.from_multihead_attention(mha)
    assert not layer.training  # in mha's mode: with dropout, training mode would compute another function
    shape = (2, 5) if mha.batch_first else (5, 2)
    query = torch.randn(*shape, 16)
    key, value = torch.randn(*shape, mha.kdim), torch.randn(*shape, mha.vdim)
    padding = torch.zeros(2, 5, dtype=torch.bool)
    padding[1, 3:] = True
    for need_weights in (False, True):
        expected = mha(query, key, value, key_padding_mask=padding, need_weights=need_weights)
        output = layer(query, key, value, key_padding_mask=padding, need_weights=need_weights)
        torch.testing.assert_close(output[0], expected[0])
        if need_weights:
            torch.testing.assert_close(output[1][0], expected[1])
    with pytest.raises(ValueError, match="add_bias_kv and add_zero_attn"):
        CompositionalAttention.from_multihead_attention(nn.MultiheadAttention(16, 4, add_bias_kv=True))
    with pytest.raises(ValueError, match="batch_first, retrieval_selection come from mha"):
        CompositionalAttention.from_multihead_attention(mha, retrieval_selection="soft", batch_first=True)


@pytest.mark.parametrize("backend", ["auto", "sdpa", "batched", "explicit", "per_retrieval", "fixed"])
@pytest.mark.parametrize("need_weights", [False, True])
def test_an_empty_batch_gives_empty_outputs(backend: str, need_weights: bool) -> None:
    # as nn.MultiheadAttention; views that inferred the key length from the values failed at B = 0
    if backend == "fixed":
        layer = CompositionalAttention(16, 4, 4, retrieval_selection="fixed")
    else:
        layer = CompositionalAttention(16, 4, 2, search_backend=backend, dropout=0.0 if backend == "per_retrieval" else 0.1)
    x = torch.randn(0, 5, 16, requires_grad=True)
    output, weights = layer(x, x, x, need_weights=need_weights)
    assert output.shape == (0, 5, 16)
    if need_weights:
        assert weights[0].shape == (0, 5, 5) and weights[1].shape == (0, 5, 4, 4 if backend == "fixed" else 2)
    output.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize(("kdim", "num_retrievals"), [(None, 4), (None, 2), (10, 4)])
def test_initialization_is_multihead_attentions(kdim: int | None, num_retrievals: int) -> None:
    # MHA draws its packed [q; k; v] projection as one Xavier-uniform matrix (separate ones when
    # the key and value widths differ), zero biases, and keeps nn.Linear's output projection
    embed_dim = 256
    layer = CompositionalAttention(embed_dim, 4, num_retrievals, kdim=kdim, vdim=kdim)
    projections = {"q": layer.q_proj, "k": layer.k_proj, "v": layer.v_proj}
    if kdim is None:
        rows = sum(p.out_features for p in projections.values())
        bounds = dict.fromkeys(projections, (6 / (embed_dim + rows)) ** 0.5)
    else:
        bounds = {name: (6 / (p.in_features + p.out_features)) ** 0.5 for name, p in projections.items()}
    if kdim is None and num_retrievals == 4:  # MHA's shapes: its packed projection's bound
        packed_rows, packed_columns = nn.MultiheadAttention(embed_dim, 4).in_proj_weight.shape
        assert bounds["q"] == pytest.approx((6 / (packed_rows + packed_columns)) ** 0.5)
    for name, projection in projections.items():
        weight, bound = projection.weight.detach(), bounds[name]
        assert weight.abs().max() <= bound and weight.abs().max() > 0.99 * bound, name
        assert weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.03), name
        assert torch.equal(projection.bias, torch.zeros_like(projection.bias)), name
    assert layer.out_proj.weight.abs().max() <= embed_dim**-0.5
    assert torch.equal(layer.out_proj.bias, torch.zeros(embed_dim))


def test_retrieval_selection_widths_and_initialization() -> None:
    # d_s = 32 searches, d_v = 64 retrievals: the retrieval query/key width defaults to d_s (not
    # d_v), and both selection maps are Xavier-uniform: bound sqrt(6 / (fan_in + fan_out))
    layer = CompositionalAttention(128, 4, 4, retrieval_dim=256)
    assert (layer.search_head_dim, layer.retrieval_head_dim, layer.retrieval_qk_dim) == (32, 64, 32)
    assert layer.retrieval_query_proj.out_features == 4 * 32
    assert tuple(layer.retrieval_key_weight.shape) == (1, 64, 32)
    for weight, bound in (
        (layer.retrieval_key_weight, (6 / (64 + 32)) ** 0.5),  # 0.25
        (layer.retrieval_query_proj.weight, (6 / (128 + 4 * 32)) ** 0.5),
    ):
        weight = weight.detach()
        assert 0.99 * bound < weight.abs().max() <= bound
        assert weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.05)
    # one key map per retrieval with separate_retrieval_keys (the official --separate)
    separate = CompositionalAttention(16, 4, 3, separate_retrieval_keys=True)
    assert tuple(separate.retrieval_key_weight.shape) == (3, 4, 4)
    assert tuple(separate.retrieval_key_bias.shape) == (3, 4)


@pytest.mark.parametrize("nested", [False, True])
def test_replaces_the_self_attention_of_torch_transformer_layers(nested: bool) -> None:
    # nn.TransformerEncoderLayer / nn.TransformerEncoder read MHA's packed projection to choose
    # their fused inference path; with the layer in place they take the plain path, and the
    # fixed pairing built from their MHA computes what they computed (in eval: their fused path).
    # An encoder built with nested tensors (torch's default) keeps them after the swap: in eval
    # without gradients its layers get nested tensors of the unpadded sequences.
    torch.manual_seed(0)
    x = torch.randn(2, 6, 16)
    padding = torch.zeros(2, 6, dtype=torch.bool)
    padding[0, 4:] = True
    for norm_first in (False, True):
        encoder_layer = nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True, norm_first=norm_first)
        encoder = nn.TransformerEncoder(encoder_layer, 2, enable_nested_tensor=nested).eval()
        uses_nested = nested and not norm_first  # torch's nested path is post-norm only
        assert encoder.use_nested_tensor == uses_nested
        with torch.no_grad():
            expected = encoder(x, src_key_padding_mask=padding)
        for layer in encoder.layers:
            layer.self_attn = CompositionalAttention.from_multihead_attention(layer.self_attn)
        for training, gradients in ((False, False), (False, True), (True, True)):
            encoder.train(training)
            with torch.set_grad_enabled(gradients):
                output = encoder(x, src_key_padding_mask=padding)
            torch.testing.assert_close(output[~padding], expected[~padding], rtol=1e-5, atol=1e-5)
            if uses_nested and not gradients:
                assert not output[padding].any()  # the encoder pads its nested output with zeros
    decoder_layer = nn.TransformerDecoderLayer(16, 4, 32, dropout=0.0, batch_first=True)
    decoder_layer.self_attn = CompositionalAttention(16, 4, 2)
    decoder_layer.multihead_attn = CompositionalAttention(16, 4, 2)
    memory = torch.randn(2, 3, 16)
    assert decoder_layer(x, memory, tgt_is_causal=True, tgt_mask=nn.Transformer.generate_square_subsequent_mask(6)).shape == x.shape


def test_torch_transformer_with_the_layer_swapped_in_after_it_is_built() -> None:
    # nn.Transformer builds its encoder itself (nested tensors on), so a swap comes afterwards
    torch.manual_seed(0)
    x = torch.randn(2, 6, 16)
    padding = torch.zeros(2, 6, dtype=torch.bool)
    padding[1, 3:] = True
    transformer = nn.Transformer(16, 4, 2, 2, 32, dropout=0.0, batch_first=True).eval()
    with torch.no_grad():
        expected = transformer(x, x, src_key_padding_mask=padding, memory_key_padding_mask=padding)
    for layer in transformer.encoder.layers:
        layer.self_attn = CompositionalAttention.from_multihead_attention(layer.self_attn)
    with torch.no_grad():
        output = transformer(x, x, src_key_padding_mask=padding, memory_key_padding_mask=padding)
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("selection", ["soft", "fixed"])
def test_nested_inputs_equal_padded_inputs_with_their_padding_mask(batch_first: bool, selection: str) -> None:
    torch.manual_seed(0)
    layer = CompositionalAttention(16, 4, 2 if selection == "soft" else 4, batch_first=batch_first, retrieval_selection=selection)
    queries = [torch.randn(length, 16) for length in (3, 5)]
    keys = [torch.randn(length, 16) for length in (4, 2)]
    output, weights = layer(
        torch.nested.nested_tensor(queries), torch.nested.nested_tensor(keys), torch.nested.nested_tensor(keys)
    )
    assert output.is_nested
    padded_query = torch.nested.nested_tensor(queries).to_padded_tensor(0.0)
    padded_key = torch.nested.nested_tensor(keys).to_padded_tensor(0.0)
    padding = torch.tensor([[False] * 4, [False] * 2 + [True] * 2])
    if not batch_first:
        padded_query, padded_key = padded_query.transpose(0, 1), padded_key.transpose(0, 1)
    expected, expected_weights = layer(padded_query, padded_key, padded_key, key_padding_mask=padding)
    if not batch_first:
        expected = expected.transpose(0, 1)
    for sequence, row, length in zip(output.unbind(), expected, (3, 5)):
        torch.testing.assert_close(sequence, row[:length])
    torch.testing.assert_close(weights[0], expected_weights[0])
    with pytest.raises(ValueError, match="pass no key_padding_mask"):
        layer(output, output, output, key_padding_mask=padding)
    with pytest.raises(ValueError, match="all nested tensors or none"):
        layer(output, padded_key, padded_key)


@pytest.mark.parametrize("backend", ["sdpa", "batched", "per_retrieval"])
def test_fused_paths_are_permutation_equivariant(backend: str) -> None:
    layer = CompositionalAttention(16, 4, 3, search_backend=backend)
    x = torch.randn(2, 9, 16)
    permutation = torch.randperm(9)
    output = layer(x, x, x, need_weights=False)[0]
    permuted = layer(x[:, permutation], x[:, permutation], x[:, permutation], need_weights=False)[0]
    torch.testing.assert_close(permuted, output[:, permutation], rtol=1e-5, atol=1e-6)


def test_permutation_equivariance_without_positions() -> None:
    layer = CompositionalAttention(16, 4, 3)
    x = torch.randn(2, 9, 16)
    permutation = torch.randperm(9)
    output, (search_weights, selection) = layer(x, x, x)
    permuted, (permuted_weights, permuted_selection) = layer(x[:, permutation], x[:, permutation], x[:, permutation])
    torch.testing.assert_close(permuted, output[:, permutation], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(permuted_selection, selection[:, permutation], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(permuted_weights, search_weights[:, permutation][:, :, permutation], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("num_retrievals", [2, 4], ids=["fused", "chunked"])
def test_autocast_gives_finite_gradients_close_to_fp32(dtype: torch.dtype, num_retrievals: int) -> None:
    layer = CompositionalAttention(32, 4, num_retrievals)
    x = torch.randn(2, 50, 32)
    padding = torch.zeros(2, 50, dtype=torch.bool)
    padding[0, -9:] = True
    target = torch.randn(2, 50, 32)
    expected = layer(x, x, x, need_weights=False, key_padding_mask=padding)[0]
    (expected * target).sum().backward()
    expected_grads = {name: parameter.grad.clone() for name, parameter in layer.named_parameters()}
    layer.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=dtype):
        output = layer(x, x, x, need_weights=False, key_padding_mask=padding)[0]
    assert output.dtype == dtype
    (output.float() * target).sum().backward()
    torch.testing.assert_close(output.float(), expected, rtol=0.05, atol=0.05)
    for name, parameter in layer.named_parameters():
        assert torch.isfinite(parameter.grad).all(), name
        # within a few per cent of the gradient's own scale (half precision keeps 3 digits); the
        # gradients are of order 1, and those of the biases that shift every logit of a softmax
        # alike (k_proj's, the retrieval keys') are 0 in exact arithmetic
        scale = max(expected_grads[name].abs().max().item(), 1.0)
        torch.testing.assert_close(parameter.grad, expected_grads[name], rtol=0.05, atol=0.05 * scale, msg=name)


def test_same_seed_same_layer_and_output() -> None:
    outputs = []
    for _ in range(2):
        torch.manual_seed(3)
        layer = CompositionalAttention(16, 4, 2, dropout=0.3)
        x = torch.randn(2, 5, 16)
        outputs.append(layer(x, x, x)[0])
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)
    torch.manual_seed(4)
    layer = CompositionalAttention(16, 4, 2, dropout=0.3)
    assert not torch.allclose(layer(x, x, x)[0], outputs[0])


@pytest.mark.parametrize(
    ("backend", "need_weights"),
    [("explicit", True), ("explicit", False), ("sdpa", False), ("batched", False)],
    ids=["weights", "explicit", "sdpa", "batched"],
)
@pytest.mark.parametrize("selection", ["soft", "fixed"])
def test_dropout_acts_in_training_only_on_every_search_path(backend: str, need_weights: bool, selection: str) -> None:
    layer = CompositionalAttention(16, 4, 4, dropout=0.5, search_backend=backend, retrieval_selection=selection)
    if selection == "soft":
        # zero retrieval keys: the selection is a constant 1 / R, so the output stays linear in the
        # dropped-out search weights
        with torch.no_grad():
            layer.retrieval_key_weight.zero_()
            layer.retrieval_key_bias.zero_()
    x = torch.randn(2, 5, 16)
    layer.eval()
    clean, clean_weights = layer(x, x, x, need_weights=need_weights)
    torch.testing.assert_close(layer(x, x, x, need_weights=need_weights)[0], clean)
    layer.train()
    with torch.no_grad():
        draws = torch.stack([layer(x, x, x, need_weights=need_weights)[0] for _ in range(2000)])
    assert not torch.allclose(draws[0], draws[1])
    # the output is linear in the dropped-out weights, and inverted dropout keeps their mean: the
    # mean output is the clean output (standard error about 0.005 here)
    torch.testing.assert_close(draws.mean(0), clean, rtol=0, atol=0.03)
    if need_weights:
        # the weights returned are those before dropout: rows summing to 1, as in eval mode
        torch.testing.assert_close(layer(x, x, x, need_weights=True)[1][0], clean_weights[0])


def test_one_retrieval_runs_per_retrieval_with_dropout_and_keeps_the_mean() -> None:
    # With R = 1 the selection is 1 and the output is linear in the dropped-out search weights:
    # per retrieval, one fused call draws one mask per search, as the paper, and the mean over
    # draws is the clean output. With dropout "auto" fuses on CUDA only: the CPU's fused kernel
    # has no dropout (its fallback would hold the whole attention matrix), so there it stays chunked.
    layer = CompositionalAttention(16, 4, 1, dropout=0.5, search_backend="per_retrieval")
    x = torch.randn(2, 5, 16)
    assert layer._search_path(x.unsqueeze(1), x.unsqueeze(1), need_weights=False, dropout_p=0.5) == "per_retrieval"
    automatic = CompositionalAttention(16, 4, 1, dropout=0.5)
    assert automatic._search_path(x.unsqueeze(1), x.unsqueeze(1), need_weights=False, dropout_p=0.5) == "explicit"
    assert automatic._search_path(x.unsqueeze(1), x.unsqueeze(1), need_weights=False, dropout_p=0.0) == "batched"
    with pytest.raises(ValueError, match="one dropout mask per retrieval"):
        CompositionalAttention(16, 4, 2, dropout=0.5, search_backend="per_retrieval")
    layer.eval()
    clean = layer(x, x, x, need_weights=False)[0]
    layer.train()
    sdpa = F.scaled_dot_product_attention
    with torch.no_grad(), patch("tenfold.modules.attention.compositional.F.scaled_dot_product_attention", wraps=sdpa) as fused:
        draws = torch.stack([layer(x, x, x, need_weights=False)[0] for _ in range(2000)])
    assert fused.call_count == 2000 and fused.call_args.kwargs["dropout_p"] == 0.5
    assert not torch.allclose(draws[0], draws[1])
    torch.testing.assert_close(draws.mean(0), clean, rtol=0, atol=0.03)


@pytest.mark.parametrize("num_retrievals", [1, 2])
def test_traces_under_torch_compile(num_retrievals: int) -> None:
    layer = CompositionalAttention(16, 4, num_retrievals)
    x = torch.randn(2, 5, 16)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(x, x, x, need_weights=False)[0], layer(x, x, x, need_weights=False)[0])


@pytest.mark.slow
@pytest.mark.parametrize("num_retrievals", [2, 4], ids=["fused", "chunked"])
def test_inductor_compiled_layer_matches_eager_with_gradients(num_retrievals: int) -> None:
    # Inductor builds C++ kernels: about 20 s per variant on one CPU core.
    layer = CompositionalAttention(16, 4, num_retrievals)
    x = torch.randn(2, 40, 16, requires_grad=True)
    expected = layer(x, x, x, need_weights=False)[0]
    (grad_expected,) = torch.autograd.grad(expected.sum(), x)
    output = torch.compile(layer)(x, x, x, need_weights=False)[0]
    (grad,) = torch.autograd.grad(output.sum(), x)
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, grad_expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"embed_dim": 16, "num_searches": 3, "num_retrievals": 2}, "search_dim 16 is not divisible by num_searches 3"),
        ({"embed_dim": 16, "num_searches": 4, "num_retrievals": 3, "retrieval_dim": 16}, "retrieval_dim 16 is not divisible"),
        ({"embed_dim": 16, "num_searches": 4, "num_retrievals": 2, "retrieval_selection": "fixed"}, "num_searches == num_retrievals"),
        ({"embed_dim": 16, "num_searches": 4, "num_retrievals": 2, "retrieval_selection": "hard"}, "'soft' or 'fixed'"),
        ({"embed_dim": 16, "num_searches": 4, "num_retrievals": 2, "temperature": 0.0}, "temperature must be positive"),
        ({"embed_dim": 16, "num_searches": 4, "num_retrievals": 2, "retrieval_scoring": "mlp"}, "'dot' or 'linear'"),
        (
            {"embed_dim": 16, "num_searches": 4, "num_retrievals": 2, "retrieval_scoring": "linear", "separate_retrieval_keys": True},
            "no separate_retrieval_keys",
        ),
        (
            {"embed_dim": 16, "num_searches": 4, "num_retrievals": 4, "retrieval_scoring": "linear", "retrieval_selection": "fixed"},
            "the fixed pairing has none",
        ),
        ({"embed_dim": 16, "num_searches": 4, "num_retrievals": 2, "search_backend": "flash"}, "search_backend must be"),
        (
            {"embed_dim": 16, "num_searches": 4, "num_retrievals": 2, "search_backend": "per_retrieval", "dropout": 0.1},
            "one dropout mask per retrieval",
        ),
        # MHA's positional (embed_dim, num_heads, dropout)
        ({"embed_dim": 32, "num_searches": 4, "num_retrievals": 0.1}, r"num_retrievals must be a positive int, got 0\.1"),
        ({"embed_dim": 32, "num_searches": 0, "num_retrievals": 2}, "num_searches must be a positive int, got 0"),
        ({"embed_dim": "16", "num_searches": 4, "num_retrievals": 2}, "embed_dim must be a positive int, got '16'"),
        ({"embed_dim": 16.0, "num_searches": 4, "num_retrievals": 2}, r"embed_dim must be a positive int, got 16\.0"),
        ({"embed_dim": 16, "num_searches": 4, "num_retrievals": 2, "dropout": -0.5}, r"dropout must be in \[0, 1\), got -0\.5"),
        ({"embed_dim": 16, "num_searches": 4, "num_retrievals": 2, "dropout": 1.5}, r"dropout must be in \[0, 1\)"),
        ({"embed_dim": 16, "num_searches": 4, "num_retrievals": 2, "query_chunk_size": 0}, "query_chunk_size must be a positive int"),
    ],
)
def test_bad_configuration_is_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CompositionalAttention(**kwargs)


def test_bad_shapes_are_named() -> None:
    layer = CompositionalAttention(16, 4, 2)
    x = torch.randn(2, 5, 16)
    with pytest.raises(TypeError, match=r"torch.float64, torch.float64, torch.float64 and the layer's parameters torch.float32: cast the inputs"):
        layer(x.double(), x.double(), x.double())
    with pytest.raises(ValueError, match="embed_dim=16"):
        layer(torch.randn(2, 5, 8), x, x)
    with pytest.raises(ValueError, match="key_padding_mask has shape"):
        layer(x, x, x, key_padding_mask=torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="attn_mask has shape"):
        layer(x, x, x, attn_mask=torch.zeros(5, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"\[B, L, E\]"):
        layer(torch.randn(2, 3, 5, 16), x, x)



# ------------------------------------------------------------------------------------------------
# CUDA: skipped without a GPU; on one, `pytest -m cuda` runs only these.

CUDA = torch.device("cuda")


def _output_and_grads(layer: nn.Module, x: Tensor, **kwargs) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Output, input gradient and parameter gradients of ``sum(output^2)``."""
    layer.zero_grad(set_to_none=True)
    if x.grad is not None:
        x.grad = None
    output = layer(x, x, x, need_weights=False, **kwargs)[0]
    output.float().square().sum().backward()
    return output, x.grad, [p.grad for p in layer.parameters()]


def _padding(batch: int, length: int, device: torch.device) -> Tensor:
    padding = torch.zeros(batch, length, dtype=torch.bool, device=device)
    padding[0, -5:] = True
    return padding


@pytest.mark.cuda
@pytest.mark.parametrize("mask_kind", ["none", "padding", "causal"])
@pytest.mark.parametrize("num_retrievals", [1, 2, 4])
def test_cuda_fused_searches_match_explicit_searches_and_the_cpu(num_retrievals: int, mask_kind: str) -> None:
    cpu = CompositionalAttention(32, 4, num_retrievals, query_chunk_size=16)
    sdpa = CompositionalAttention(32, 4, num_retrievals, query_chunk_size=16, search_backend="sdpa").to(CUDA)
    explicit = CompositionalAttention(32, 4, num_retrievals, query_chunk_size=16, search_backend="explicit").to(CUDA)
    per_retrieval = CompositionalAttention(32, 4, num_retrievals, search_backend="per_retrieval").to(CUDA)
    batched = CompositionalAttention(32, 4, num_retrievals, search_backend="batched").to(CUDA)
    for layer in (sdpa, explicit, per_retrieval, batched):
        layer.load_state_dict(cpu.state_dict())
    x = torch.randn(2, 37, 32)
    results = {}
    layers = (
        ("sdpa", sdpa, CUDA), ("per_retrieval", per_retrieval, CUDA), ("batched", batched, CUDA),
        ("explicit", explicit, CUDA), ("cpu", cpu, torch.device("cpu")),
    )
    for name, layer, device in layers:
        kwargs = {"none": {}, "padding": {"key_padding_mask": _padding(2, 37, device)}, "causal": {"is_causal": True}}[mask_kind]
        output, grad, parameter_grads = _output_and_grads(layer, x.to(device).requires_grad_(), **kwargs)
        results[name] = [output.cpu(), grad.cpu(), *(g.cpu() for g in parameter_grads)]
    for fused in ("sdpa", "per_retrieval", "batched"):
        for reference in ("explicit", "cpu"):
            for value, expected in zip(results[fused], results[reference]):
                torch.testing.assert_close(value, expected, rtol=1e-4, atol=1e-4, msg=f"{fused} vs {reference}")


@pytest.mark.cuda
@pytest.mark.parametrize(
    ("num_retrievals", "retrieval_dim"), [(8, None), (8, 512), (2, None)], ids=["kept", "recomputed", "batched"]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_cuda_fused_kernels_take_the_search_shapes(dtype: torch.dtype, num_retrievals: int, retrieval_dim: int | None) -> None:
    # Values R * d_v = 256 (or 512) wide against 32-wide queries, one search per call: without the
    # math fallback a fused kernel (memory-efficient, flash or cuDNN) must run forward and
    # backward, also when each search is recomputed in the backward (S R d_v = 4096 > 8 E); and
    # with R = 2 for all searches in one call, the 64-wide values expanded over them (stride 0).
    layer = CompositionalAttention(256, 8, num_retrievals, retrieval_dim=retrieval_dim).to(CUDA)
    x = torch.randn(4, 300, 256, device=CUDA)
    fused = [SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION]
    with sdpa_kernel(fused), torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        output = layer(x, x, x, need_weights=False, key_padding_mask=_padding(4, 300, CUDA))[0]
    output.float().square().mean().backward()
    assert output.dtype == dtype
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_autocast_gives_finite_gradients_close_to_fp32(dtype: torch.dtype) -> None:
    layer = CompositionalAttention(64, 4, 4).to(CUDA)
    x = torch.randn(2, 120, 64, device=CUDA)
    exact = layer(x, x, x, need_weights=False, is_causal=True)[0]
    with torch.autocast("cuda", dtype=dtype):
        output = layer(x, x, x, need_weights=False, is_causal=True)[0]
    output.float().square().mean().backward()
    assert output.dtype == dtype
    for name, parameter in layer.named_parameters():
        assert parameter.grad is not None and torch.isfinite(parameter.grad).all(), name
    torch.testing.assert_close(output.float(), exact, rtol=0.05, atol=0.05)


@pytest.mark.cuda
@pytest.mark.parametrize("num_retrievals", [2, 8])
def test_cuda_inductor_compiled_layer_matches_eager(num_retrievals: int) -> None:
    layer = CompositionalAttention(64, 8, num_retrievals).to(CUDA)
    x = torch.randn(2, 100, 64, device=CUDA, requires_grad=True)
    expected, grad_expected, _ = _output_and_grads(layer, x)
    expected, grad_expected = expected.detach().clone(), grad_expected.clone()
    output, grad, _ = _output_and_grads(torch.compile(layer), x)
    torch.testing.assert_close(output, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grad, grad_expected, rtol=1e-4, atol=1e-4)


@pytest.mark.cuda
def test_cuda_fixed_pairing_is_multihead_attention() -> None:
    layer = CompositionalAttention(64, 8, 8, retrieval_selection="fixed")
    mha = mha_with_same_weights(layer).to(CUDA)
    layer = layer.to(CUDA)
    x = torch.randn(3, 50, 64, device=CUDA)
    padding = _padding(3, 50, CUDA)
    for kwargs in ({}, {"key_padding_mask": padding}, {"is_causal": True, "attn_mask": nn.Transformer.generate_square_subsequent_mask(50, device=CUDA)}):
        expected = mha(x, x, x, need_weights=False, **kwargs)[0]
        torch.testing.assert_close(layer(x, x, x, need_weights=False, **kwargs)[0], expected, rtol=1e-4, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize(
    ("num_retrievals", "dropout", "key_length", "expected_calls"),
    [(1, 0.0, 300, 1), (1, 0.1, 300, 1), (2, 0.0, 300, 1), (2, 0.1, 300, 1), (4, 0.0, 300, 1), (8, 0.0, 300, 8),
     (4, 0.0, 1200, 8), (8, 0.0, 256, 0), (8, 0.1, 256, 0)],
)
def test_cuda_auto_backend_chooses_one_batched_call_explicit_chunks_or_per_search_calls(
    num_retrievals: int, dropout: float, key_length: int, expected_calls: int
) -> None:
    # S R d_v L_k <= 4 E L_q (R <= 4 at the default width in self-attention): one SDPA call over
    # all searches, with dropout too; R = 8, or R = 4 against keys 4x longer than the queries: one
    # call per search (S = 8 calls), but the explicit chunks (no SDPA call) up to 256 keys. The
    # output agrees with the explicit one (with the per-search one where it is explicit).
    layer = CompositionalAttention(64, 8, num_retrievals, dropout=dropout).to(CUDA)
    x = torch.randn(2, 300, 64, device=CUDA)
    memory = torch.randn(2, key_length, 64, device=CUDA)
    layer.train(dropout > 0)
    sdpa = F.scaled_dot_product_attention
    with patch("tenfold.modules.attention.compositional.F.scaled_dot_product_attention", wraps=sdpa) as fused:
        output = layer(x, memory, memory, need_weights=False)[0]
    assert fused.call_count == expected_calls
    if dropout == 0.0:
        backend = "explicit" if expected_calls else "sdpa"
        reference = CompositionalAttention(64, 8, num_retrievals, search_backend=backend).to(CUDA)
        reference.load_state_dict(layer.state_dict())
        torch.testing.assert_close(output, reference(x, memory, memory, need_weights=False)[0], rtol=1e-4, atol=1e-5)


@pytest.mark.cuda
@pytest.mark.parametrize("key_length", [33, 65, 300])
@pytest.mark.parametrize("num_retrievals", [1, 2, 4])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_cuda_batched_call_matches_the_math_kernel_in_reduced_precision(
    dtype: torch.dtype, num_retrievals: int, key_length: int
) -> None:
    # The batched call gives the fused kernel values with stride 0 over the heads, with a padding
    # mask; pytorch/pytorch#191937 reports the memory-efficient kernel wrong for stride-0 keys and
    # values in bf16 with a mask at key lengths of 1 mod 32. Compared with the math kernel on the
    # same layer and inputs, forward and backward (bf16 rounding is about 0.01 here).
    layer = CompositionalAttention(256, 8, num_retrievals).to(CUDA)
    x = torch.randn(3, 40, 256, device=CUDA)
    memory = torch.randn(3, key_length, 256, device=CUDA)
    padding = torch.zeros(3, key_length, dtype=torch.bool, device=CUDA)
    padding[0, -7:] = True
    padding[2, key_length // 2 :] = True
    target = torch.randn(3, 40, 256, device=CUDA)
    results = []
    for backends in ([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION], [SDPBackend.MATH]):
        layer.zero_grad(set_to_none=True)
        query, keys = x.clone().requires_grad_(), memory.clone().requires_grad_()
        with sdpa_kernel(backends), torch.autocast("cuda", dtype=dtype):
            output = layer(query, keys, keys, need_weights=False, key_padding_mask=padding)[0]
        # a sum against a fixed target: every gradient of order 1, so that a wrong or missing one shows
        (output.float() * target).sum().backward()
        results.append([output.float(), query.grad, keys.grad, layer.v_proj.weight.grad, layer.q_proj.weight.grad])
    for fused, math in zip(*results):
        torch.testing.assert_close(fused, math, rtol=0.05, atol=0.02 * math.abs().max().item())


@pytest.mark.cuda
@pytest.mark.parametrize(("num_retrievals", "key_length"), [(2, 33), (8, 33), (8, 300)], ids=["batched", "explicit", "per_search"])
def test_cuda_queries_without_any_key_return_zeros_with_finite_gradients(num_retrievals: int, key_length: int) -> None:
    # the automatic choice on CUDA: one batched call (R = 2), explicit chunks (R = 8, up to 256
    # keys) or one call per search; every one gives a query without any key 0 and finite gradients
    layer = CompositionalAttention(64, 8, num_retrievals).to(CUDA)
    x = torch.randn(2, key_length, 64, device=CUDA, requires_grad=True)
    padding = torch.zeros(2, key_length, dtype=torch.bool, device=CUDA)
    padding[0, :3] = True
    causal = torch.ones(key_length, key_length, dtype=torch.bool, device=CUDA).triu(1)
    output = layer(x, x, x, key_padding_mask=padding, attn_mask=causal, need_weights=False)[0]
    output.square().sum().backward()
    assert torch.equal(output[0, :3], torch.zeros(3, 64, device=CUDA))  # zero output bias at init
    assert torch.isfinite(output).all() and torch.isfinite(x.grad).all()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
