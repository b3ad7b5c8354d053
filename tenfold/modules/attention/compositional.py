"""Compositional Attention (Mittal et al., 2022, arXiv 2110.09419): searches and retrievals
disentangled, paired dynamically by a second attention over retrievals.

Multi-head attention ties the ``h`` query-key *searches* to ``h`` value *retrievals* one to one.
Compositional attention keeps ``S`` searches and ``R`` retrievals apart (paper, Sec. 3):

- search ``s``:  ``A_s = softmax(Q_s K_s^T / sqrt(d_s))``, ``Q_s = X W^q_s``, ``K_s = Y W^k_s``;
- retrieval ``r`` applied to every search: ``O_{s,r} = A_s V_r`` with ``V_r = Y W^v_r``;
- retrieval selection, a softmax over the ``R`` retrievals for every search and query token:
  ``pi_{s,r} = softmax_r( <Q^r_s, O_{s,r} W^{rk}> / sqrt(d_r) / temperature )`` with the
  retrieval query ``Q^r_s = X W^{rq}_s`` (width ``d_r``, ``retrieval_qk_dim``) and the retrieval
  key map ``W^{rk}`` (``d_v -> d_r``, shared by the retrievals, or one per retrieval with
  ``separate_retrieval_keys=True``, the official code's ``--separate``);
- ``output = concat_s( sum_r pi_{s,r} O_{s,r} ) W^o``.

With ``S = R = h`` and ``retrieval_selection="fixed"`` (search ``s`` reads retrieval ``s``) the
layer *is* multi-head attention: the same function and initialization as ``nn.MultiheadAttention``
(which packs the query, key and value projections into one ``in_proj_weight`` where this layer
keeps three; :meth:`CompositionalAttention.from_multihead_attention` copies an MHA's weights in).

Implementation. The retrieval key is linear, so the retrieval logits are
``<Q^r_s W^{rk T}, O_{s,r}> + <Q^r_s, b^{rk}>``: the keys ``O_{s,r} W^{rk}`` are never formed.
Nothing of size ``L x L x R`` is ever formed. The retrievals ``O`` (``[B, S, L_q, R * d_v]``,
``S R d_v / E`` layer inputs large: 8 at ``S = R = 8``, ``d_v = E / S``) are computed in one of four
ways:

- one batched SDPA call (CUDA, up to four retrievals of the default width; CPU, up to two): all
  ``S`` searches in one ``torch.nn.functional.scaled_dot_product_attention`` call, queries and keys
  ``[B, S, L, d_s]``, the values ``[B, L_k, R d_v]`` expanded over the searches without a copy (the
  memory-efficient kernel takes a value width different from the query width). Its backward
  writes the values' gradient once per search before summing, ``S R d_v / E`` layer inputs, so it
  is the automatic choice only while that is at most 4. It does exactly the method's attention
  products (``S L^2 d_s + S R L^2 d_v``), with one dropout mask per search shared by its
  retrievals, as the paper. PyTorch's fused CPU kernel needs queries and keys as wide as the
  values and takes no dropout: on the CPU without dropout they are zero-padded to ``R d_v``
  (logits unchanged), so the query-key products cost ``S L^2 R d_v`` there, and the padded copies
  are kept for the backward; yet at ``R = 2`` one call of width ``2 d_s`` beat two calls of width
  ``d_s`` (the per-retrieval path) from L = 256 on (about equal at L = 64), at about 0.06x MHA's
  memory more.
- SDPA searches one at a time (CUDA, more retrievals, keys longer than 256): one SDPA call per search, its query and key
  ``[B, 1, L, d_s]`` against all retrievals at once, values ``[B, 1, L_k, R * d_v]`` shared by the
  searches. Each search's ``O`` is kept for the backward unless all searches' ``O`` exceed eight
  layer inputs; then each search is recomputed (activation checkpointing).
- explicit searches (CPU; CUDA when the batched call is ruled out and there are at most 256 keys):
  per chunk of query positions, one softmax per search and one batched matmul with the values
  shared by all searches; when the queries come in several chunks, each chunk is recomputed in the
  backward pass. A chunk's attention matrix and retrievals hold about two layer inputs on the CPU,
  four on CUDA (fewer, larger kernels). With ``R <= 2`` retrievals as wide as the search heads
  (and no dropout, which the fused CPU kernel lacks) the CPU runs the batched call instead.
- per-retrieval searches (``search_backend="per_retrieval"``, any device): one SDPA call over all
  ``S`` searches per retrieval, i.e. ``R`` calls shaped exactly like multi-head attention's. It
  repeats each search's query-key product and softmax ``R`` times (``2 R`` attention products per
  search against ``1 + R``) but needs values only as wide as the queries.

With one retrieval the selection is a softmax over one logit: identically 1, with gradient 0.
The fused paths then skip it (no retrieval query projection) and give the selection's parameters
exact zero gradients, so that they still count as used (DDP without ``find_unused_parameters``);
the explicit path computes it. Outputs and gradients are the same either way (tested).

Measured on an NVIDIA H100 (``benchmarks/attention.py --device cuda --cuda-graph``: E = 256,
S = 8, B = 16, fp32, forward + backward of the contextual-retrieval model captured as one CUDA
graph, so that the time is the GPU's work and not the host's launch rate; peak memory of live
tensors), as multiples of ``nn.MultiheadAttention``'s SDPA path at L = 64 / 256 / 1024 / 4096:

- batched (the automatic choice for R <= 4), R = 2: 1.43 / 1.25 / 1.12 / 1.07 time, 1.29-1.34
  memory; R = 4: 1.53 / 1.51 / 1.52 / 1.49, 1.84-1.97;
- R = 1 without the selection: 0.89 / 0.90 / 0.90 / 0.96, 0.78-0.83 (with the selection computed,
  before the layer skipped it: 1.29 / 1.16 / 1.03 / 1.01);
- one call per search, R = 2: 3.00 / 2.45 / 1.34 / 1.14 time, 1.22-1.26 memory; R = 8 (the
  automatic choice there from 257 keys): 3.74 / 3.07 / 2.49 / 2.46, 1.76-1.88;
- explicit chunks, R = 8 (the automatic choice up to 256 keys; L = 32 / 64 / 128 / 256): 2.04 /
  2.40 / 2.66 / 2.51 time, 1.75-1.92 memory, where one call per search took 3.74 / 3.82 / 3.41 /
  3.07 and the official layer 1.80 / 2.05 / 2.40 / 3.01; at L = 512 one call per search stays
  faster (2.44 against 2.62 with the largest chunks that keep the memory under 2x);
- per retrieval, R = 2: 1.60 / 1.58 / 1.72 / 1.90, 1.42-1.49; batched over all searches at R = 8
  (an H200, eager): 2.9-3.3x the memory.

``benchmarks/results/attention_cuda_graph_h100.csv`` holds the layer's rows (at commit 93e280e,
torch 2.11); the per-retrieval rows come from ``attention_cuda_graph_h100_batched_probe.txt``, the
explicit rows and chunk sizes from ``attention_cuda_graph_h100_short_lengths.csv``. The batched
call hands the memory-efficient kernel values with stride 0 over the heads; pytorch/pytorch#191937
reports that kernel wrong in bf16 with a mask and stride-0 keys and values at key lengths of 1 mod
32, so a CUDA test compares this path with the math kernel there (passed on an H100, torch 2.11).

Differences from the official code (sarthmit/Compositional-Attention,
``Contextual_Retrieval_Task/model.py``): the official layer materializes ``[B, S, R, L, L]``;
its ``--concat`` (a projection of the current token joins the output projection, used for
contextual retrieval) adds a low-rank linear map of the input to the output, which models add
around any attention layer (see ``tenfold.modules.attention.nets.ContextualRetrievalNet``); its
``--nonlinear`` output MLP and Gumbel selection are not offered. Its retrieval scores without
``--dot`` (a linear layer on ``[retrieval query, retrieved value]``: the argparse default of the
image tasks, whose run.sh examples pass ``--dot``, and the only scoring that runs in its SCAN code)
are ``retrieval_scoring="linear"``; the default is the paper's dot-product selection.
"""

from __future__ import annotations

import math
from itertools import repeat
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

__all__ = ["CompositionalAttention", "merge_masks"]

RetrievalSelection = Literal["soft", "fixed"]
RetrievalScoring = Literal["dot", "linear"]
SearchBackend = Literal["auto", "sdpa", "batched", "explicit", "per_retrieval"]
SearchPath = Literal["batched", "per_search", "per_retrieval", "explicit"]
# the constructor arguments that from_multihead_attention takes from the MHA it copies
_FROM_MHA_ARGUMENTS = (
    "embed_dim", "num_searches", "num_retrievals", "dropout", "bias", "batch_first", "retrieval_selection",
    "kdim", "vdim", "device", "dtype",
)
# the search path of each backend other than "auto"
_FORCED_SEARCH_PATHS: dict[str, SearchPath] = {
    "sdpa": "per_search", "batched": "batched", "per_retrieval": "per_retrieval", "explicit": "explicit"
}
# the most layer inputs [B, L, E] that the gradient of the values expanded over the searches may
# hold for the automatic backend to run all searches in one batched call
_BATCHED_MAX_EXPANDED_INPUTS = 4
# on CUDA, when the batched call is ruled out: the explicit chunks up to this key length (one
# batched matmul per chunk beats S fused calls while the attention matrices are small), else
# one SDPA call per search
_CUDA_EXPLICIT_MAX_KEY_LENGTH = 256
# layer inputs [B, L, E] that a chunk's attention matrix and retrievals hold together, by device
_CHUNK_LAYER_INPUTS = {"cpu": 2, "cuda": 4}


def merge_masks(
    key_padding_mask: Tensor | None,
    attn_mask: Tensor | None,
    is_causal: bool,
    batch_size: int,
    num_heads: int,
    query_length: int,
    key_length: int,
    dtype: torch.dtype,
    device: torch.device,
) -> Tensor | None:
    """Combines the masks of ``nn.MultiheadAttention`` into one additive float mask.

    Semantics are MHA's: a boolean ``True`` means *not allowed to attend*; float masks are added to
    the attention logits.

    Args:
        key_padding_mask: ``[B, L_k]`` (bool or float) or ``None``.
        attn_mask: ``[L_q, L_k]`` or ``[B * num_heads, L_q, L_k]`` (bool or float) or ``None``.
        is_causal: without ``attn_mask``, build the causal mask (query ``i`` sees keys ``<= i``).
            With ``attn_mask`` it is a hint only, as in MHA.
        batch_size, num_heads, query_length, key_length: ``B``, the heads (searches) and
            ``L_q``, ``L_k``, to shape the merged mask.
        dtype, device: of the merged float mask (the logits' dtype and device).

    Returns:
        ``None`` when nothing is masked, else a float mask broadcastable to
        ``[B, num_heads, L_q, L_k]`` with ``-inf`` at disallowed positions.
    """
    merged: Tensor | None = None
    if attn_mask is None and is_causal:
        attn_mask = torch.ones(query_length, key_length, dtype=torch.bool, device=device).triu(1)
    if attn_mask is not None:
        if attn_mask.dim() == 2:
            expected = (query_length, key_length)
            shaped = attn_mask.view(1, 1, query_length, key_length) if tuple(attn_mask.shape) == expected else None
        elif attn_mask.dim() == 3:
            expected = (batch_size * num_heads, query_length, key_length)
            fits = tuple(attn_mask.shape) == expected
            shaped = attn_mask.view(batch_size, num_heads, query_length, key_length) if fits else None
        else:
            expected, shaped = (query_length, key_length), None
        if shaped is None:
            raise ValueError(
                f"attn_mask has shape {tuple(attn_mask.shape)}; expected {(query_length, key_length)} or "
                f"{(batch_size * num_heads, query_length, key_length)} (batch x heads first, as nn.MultiheadAttention)"
            )
        merged = _as_additive(shaped, dtype, "attn_mask")
    if key_padding_mask is not None:
        if tuple(key_padding_mask.shape) != (batch_size, key_length):
            raise ValueError(
                f"key_padding_mask has shape {tuple(key_padding_mask.shape)}; expected {(batch_size, key_length)}"
            )
        padding = _as_additive(key_padding_mask.view(batch_size, 1, 1, key_length), dtype, "key_padding_mask")
        merged = padding if merged is None else merged + padding
    return merged


def _as_additive(mask: Tensor, dtype: torch.dtype, name: str) -> Tensor:
    """A boolean mask (``True`` = masked) as ``0 / -inf``; a float mask as it is, in ``dtype``.
    Other dtypes are refused, as ``nn.MultiheadAttention`` refuses them: an integer 0/1 mask
    added to the logits would mask nothing."""
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(mask, float("-inf"))
    if not mask.is_floating_point():
        raise TypeError(
            f"{name} has dtype {mask.dtype}; give a bool mask (True = not allowed to attend, e.g. "
            f"{name}.bool() for a 0/1 mask whose 1 marks what to hide) or a float mask added to the logits"
        )
    return mask.to(dtype)


def _without_empty_rows(mask: Tensor) -> tuple[Tensor, Tensor]:
    """An additive mask ``[..., L_q, L_k]`` with its fully masked rows (every key ``-inf``) set to
    0, and those rows ``[..., L_q, 1]`` (True where empty).

    A softmax over such a row is NaN, and so is its gradient; the explicit paths attend with the
    row unmasked instead and zero what it retrieves, which is what PyTorch's
    ``scaled_dot_product_attention`` returns for it (0, with zero gradients), so that every search
    backend agrees."""
    empty = torch.isneginf(mask).all(dim=-1, keepdim=True)
    return mask.masked_fill(empty, 0.0), empty


def _padded_for_fused_cpu_kernel(
    q: Tensor, k: Tensor, width: int, mask: Tensor | None, dropout_p: float
) -> tuple[Tensor, Tensor]:
    """Queries and keys ``[B, n, L, d_s]`` zero-padded to the values' ``width`` where that lets
    PyTorch's fused CPU attention kernel run: it needs queries, keys and values of one width and
    takes neither dropout nor a mask that requires grad (then the math kernel runs, unpadded).
    Zero columns leave the logits unchanged; the caller keeps the scale ``d_s^-1/2``.

    The automatic choice pads at most two retrievals' width. A forced ``"batched"`` with more pads
    R-fold, which trades time for memory against the unpadded math kernel (one core, 8 searches
    of width 32, the attention alone, forward + backward): R = 4 took 229 against 182 ms at
    B = 16, L = 256 and 749 against 759 ms at B = 4, L = 1024; R = 8 488 against 307 and 1549
    against 1199 ms; the math kernel's peak memory grows with L^2 (436 against 204 MiB at
    L = 1024, R = 8)."""
    if q.device.type != "cpu" or q.shape[-1] >= width or dropout_p > 0 or (mask is not None and mask.requires_grad):
        return q, k
    padding = (0, width - q.shape[-1])
    return F.pad(q, padding), F.pad(k, padding)


class _IdentityWithZeroGradients(torch.autograd.Function):
    """``x`` unchanged; its backward passes ``x``'s gradient through and gives each parameter
    after it an exact zero gradient. For parameters that the output provably does not depend on
    (their true gradient is 0), so that they still receive one without the computation. The
    output is a view of ``x``: modify neither in place."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, *parameters: Tensor) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        ctx.parameter_layouts = [(p.shape, p.dtype, p.device) for p in inputs[1:]]

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, ...]:
        zeros = (torch.zeros(shape, dtype=dtype, device=device) for shape, dtype, device in ctx.parameter_layouts)
        return (grad, *zeros)


class CompositionalAttention(nn.Module):
    """Compositional attention with the call signature and return of ``nn.MultiheadAttention``.

    Args:
        embed_dim: model width ``E`` (query width and output width).
        num_searches: ``S``, query-key searches.
        num_retrievals: ``R``, value retrievals.
        search_dim: total query/key width ``S * d_s`` (default ``embed_dim``).
        retrieval_dim: total value width ``R * d_v`` (default ``R * search_dim / S``: every
            retrieval as wide as a search head, as the official image and ESBN models; the
            official contextual-retrieval model sets it to ``embed_dim``).
        dropout: dropout on the search attention weights (as MHA).
        bias: biases in every projection.
        batch_first: ``[B, L, E]`` inputs and outputs (else ``[L, B, E]``). MHA defaults to
            ``False``: replacing an MHA (or the ``self_attn`` of a PyTorch Transformer layer)
            built without ``batch_first=True`` needs ``batch_first=False`` here, or the layer
            attends across the batch (the shapes agree, so nothing else catches it).
        temperature: temperature of the retrieval selection softmax.
        retrieval_selection: ``"soft"`` (the paper) or ``"fixed"``: search ``s`` reads retrieval
            ``s`` (needs ``S == R``; with ``search_dim == retrieval_dim`` this is multi-head
            attention exactly).
        retrieval_qk_dim: ``d_r``, width of the retrieval query and keys per search (default
            ``search_dim / S``; the official image models' ``--qk-dim``).
        separate_retrieval_keys: one retrieval key map per retrieval (official ``--separate``).
        kdim, vdim: key and value input widths (default ``embed_dim``).
        search_backend: how the soft path runs its searches: ``"batched"`` (one
            ``scaled_dot_product_attention`` call over all searches, the values expanded over
            them), ``"sdpa"`` (one SDPA call per search on all retrievals at once),
            ``"explicit"`` (per chunk of queries, softmax of the logits, then one matmul with the
            values shared by all searches), ``"per_retrieval"`` (one SDPA call over all searches
            per retrieval; with ``R > 1`` it needs ``dropout=0``: it would draw a dropout mask per
            retrieval instead of the paper's one per search) or ``"auto"``: on CUDA batched while
            ``S R d_v <= 4 E`` (up to four retrievals of the default width), else explicit chunks
            up to 256 keys and per search beyond; on
            the CPU without dropout and with retrievals as wide as the search heads batched for
            ``R <= 2``, else explicit chunks. Weights
            (``need_weights``) are always computed explicitly.
        query_chunk_size: query positions per chunk of the explicit searches; ``None`` chooses
            chunks whose attention matrix and retrievals are about two layer inputs large (four
            on CUDA).
        retrieval_scoring: ``"dot"`` (the paper: ``<Q^r_s, O_{s,r} W^{rk}>`` scaled by
            ``d_r^-1/2``) or ``"linear"``: a linear layer on ``[Q^r_s, O_{s,r}]`` scores each
            retrieval, unscaled, as the official SCAN layer (``compositional_attention.py``
            without ``dot``, the layer of the paper's SCAN table). Under the softmax over
            retrievals its query term cancels: the selection then depends on the retrieved values
            only (the retrieval query still exists and gets zero gradients).
        device, dtype: of the parameters, as for ``nn.MultiheadAttention``.

    Forward (batch first): ``query [B, L_q, E]``, ``key [B, L_k, kdim]``, ``value [B, L_k, vdim]``
    (unbatched ``[L, E]`` inputs work too), masks as :func:`merge_masks`. Returns
    ``(output [B, L_q, E], weights)`` where ``weights`` is ``None`` unless ``need_weights``, then a
    pair ``(search_weights, retrieval_weights)``: search weights ``[B, L_q, L_k]`` averaged over
    searches (``[B, S, L_q, L_k]`` with ``average_attn_weights=False``), retrieval weights
    ``[B, L_q, S, R]`` (``pi``; one-hot in the fixed pairing). Search weights are returned before
    attention dropout (``nn.MultiheadAttention`` returns them after it; outputs agree either way).
    """

    def __init__(
        self,
        embed_dim: int,
        num_searches: int,
        num_retrievals: int,
        search_dim: int | None = None,
        retrieval_dim: int | None = None,
        dropout: float = 0.0,
        bias: bool = True,
        batch_first: bool = True,
        temperature: float = 1.0,
        retrieval_selection: RetrievalSelection = "soft",
        retrieval_qk_dim: int | None = None,
        separate_retrieval_keys: bool = False,
        kdim: int | None = None,
        vdim: int | None = None,
        search_backend: SearchBackend = "auto",
        query_chunk_size: int | None = None,
        retrieval_scoring: RetrievalScoring = "dot",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if isinstance(embed_dim, bool) or not isinstance(embed_dim, int) or embed_dim < 1:
            raise ValueError(f"embed_dim must be a positive int, got {embed_dim!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if query_chunk_size is not None and (not isinstance(query_chunk_size, int) or query_chunk_size < 1):
            raise ValueError(f"query_chunk_size must be a positive int or None (automatic), got {query_chunk_size!r}")
        for name, count in (("num_searches", num_searches), ("num_retrievals", num_retrievals)):
            if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                raise ValueError(
                    f"{name} must be a positive int, got {count!r} (the arguments after embed_dim are "
                    "num_searches, num_retrievals, not nn.MultiheadAttention's num_heads, dropout)"
                )
        search_dim = search_dim or embed_dim
        if search_dim % num_searches:
            raise ValueError(f"search_dim {search_dim} is not divisible by num_searches {num_searches}")
        retrieval_dim = retrieval_dim or num_retrievals * (search_dim // num_searches)
        if retrieval_dim % num_retrievals:
            raise ValueError(f"retrieval_dim {retrieval_dim} is not divisible by num_retrievals {num_retrievals}")
        if retrieval_selection not in ("soft", "fixed"):
            raise ValueError(f"retrieval_selection must be 'soft' or 'fixed', got {retrieval_selection!r}")
        if retrieval_selection == "fixed" and num_searches != num_retrievals:
            raise ValueError(
                f"the fixed pairing needs num_searches == num_retrievals, got {num_searches} and {num_retrievals}"
            )
        if search_backend != "auto" and search_backend not in _FORCED_SEARCH_PATHS:
            raise ValueError(
                "search_backend must be 'auto', 'sdpa', 'batched', 'explicit' or 'per_retrieval', "
                f"got {search_backend!r}"
            )
        if search_backend == "per_retrieval" and dropout > 0 and num_retrievals > 1:
            raise ValueError(
                "search_backend='per_retrieval' would draw one dropout mask per retrieval instead of one per "
                "search: set dropout=0 or choose search_backend='auto', 'batched', 'sdpa' or 'explicit'"
            )
        if retrieval_scoring not in ("dot", "linear"):
            raise ValueError(f"retrieval_scoring must be 'dot' or 'linear', got {retrieval_scoring!r}")
        if retrieval_scoring == "linear" and retrieval_selection == "fixed":
            raise ValueError("retrieval_scoring='linear' scores the soft selection; the fixed pairing has none")
        if retrieval_scoring == "linear" and separate_retrieval_keys:
            raise ValueError("retrieval_scoring='linear' has one score layer; it takes no separate_retrieval_keys")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        factory = {"device": device, "dtype": dtype}
        self.embed_dim = embed_dim
        self.kdim = kdim or embed_dim
        self.vdim = vdim or embed_dim
        self.num_searches = num_searches
        self.num_retrievals = num_retrievals
        self.search_head_dim = search_dim // num_searches
        self.retrieval_head_dim = retrieval_dim // num_retrievals
        self.retrieval_qk_dim = retrieval_qk_dim or self.search_head_dim
        self.dropout = dropout
        self.batch_first = batch_first
        self.temperature = temperature
        self.retrieval_selection = retrieval_selection
        self.separate_retrieval_keys = separate_retrieval_keys
        self.retrieval_scoring = retrieval_scoring
        self.search_backend = search_backend
        self.query_chunk_size = query_chunk_size
        # nn.MultiheadAttention's packed input projection, which this layer does not have. PyTorch's
        # nn.TransformerEncoderLayer reads _qkv_same_embed_dim to rule out its fused inference path
        # (as for an MHA with separate q, k and v projections), so that this layer can replace its
        # self_attn. nn.TransformerEncoder reads requires_grad of the packed projection to choose
        # nested tensors for padded inputs (in eval mode, without gradients): empty tensors, which
        # never require gradients, leave that choice to out_proj, and forward takes nested tensors.
        self._qkv_same_embed_dim = False
        self.in_proj_weight = torch.empty(0)
        self.in_proj_bias = torch.empty(0)

        self.q_proj = nn.Linear(embed_dim, search_dim, bias=bias, **factory)
        self.k_proj = nn.Linear(self.kdim, search_dim, bias=bias, **factory)
        self.v_proj = nn.Linear(self.vdim, retrieval_dim, bias=bias, **factory)
        if retrieval_selection == "soft":
            qk_dim = self.retrieval_qk_dim
            self.retrieval_query_proj = nn.Linear(embed_dim, num_searches * qk_dim, bias=bias, **factory)
            if retrieval_scoring == "linear":
                self.retrieval_score = nn.Linear(qk_dim + self.retrieval_head_dim, 1, bias=bias, **factory)
            else:
                num_key_maps = num_retrievals if separate_retrieval_keys else 1
                self.retrieval_key_weight = nn.Parameter(
                    torch.empty(num_key_maps, self.retrieval_head_dim, qk_dim, **factory)
                )
                self.retrieval_key_bias = nn.Parameter(torch.zeros(num_key_maps, qk_dim, **factory)) if bias else None
        self.out_proj = nn.Linear(num_searches * self.retrieval_head_dim, embed_dim, bias=bias, **factory)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Initialization as ``nn.MultiheadAttention``: Xavier-uniform query, key and value
        projections with zero biases, drawn as one stacked ``[q; k; v]`` matrix when key and value
        inputs are ``embed_dim`` wide (MHA's packed ``in_proj_weight``), else one by one (MHA's
        separate ``q/k/v_proj_weight``); the output projection keeps ``nn.Linear``'s weight
        initialization with a zero bias (MHA's ``out_proj``). The retrieval query and keys are
        Xavier-uniform with zero biases; the linear retrieval score keeps ``nn.Linear``'s own
        initialization, as the official layer. (The official code keeps ``nn.Linear``'s for every
        projection.)"""
        projections = (self.q_proj, self.k_proj, self.v_proj)
        if self.kdim == self.vdim == self.embed_dim:
            stacked_rows = sum(linear.out_features for linear in projections)
            bound = math.sqrt(6.0 / (self.embed_dim + stacked_rows))
            for linear in projections:
                nn.init.uniform_(linear.weight, -bound, bound)
        else:
            for linear in projections:
                nn.init.xavier_uniform_(linear.weight)
        for linear in projections:
            if linear.bias is not None:
                nn.init.zeros_(linear.bias)
        if self.out_proj.bias is not None:
            nn.init.zeros_(self.out_proj.bias)
        if self.retrieval_selection == "soft":
            nn.init.xavier_uniform_(self.retrieval_query_proj.weight)
            if self.retrieval_query_proj.bias is not None:
                nn.init.zeros_(self.retrieval_query_proj.bias)
            if self.retrieval_scoring == "linear":
                self.retrieval_score.reset_parameters()
                return
            bound = math.sqrt(6.0 / (self.retrieval_head_dim + self.retrieval_qk_dim))
            nn.init.uniform_(self.retrieval_key_weight, -bound, bound)
            if self.retrieval_key_bias is not None:
                nn.init.zeros_(self.retrieval_key_bias)

    @property
    def num_heads(self) -> int:
        """``nn.MultiheadAttention``'s name for the attention maps, for code that reads it: ``S``."""
        return self.num_searches

    @property
    def head_dim(self) -> int:
        """``nn.MultiheadAttention``'s name for the query/key width per map, for code that reads
        it: ``d_s``."""
        return self.search_head_dim

    @classmethod
    def from_multihead_attention(cls, mha: nn.MultiheadAttention, **kwargs: Any) -> CompositionalAttention:
        """The fixed pairing (``S = R = mha.num_heads``) holding copies of ``mha``'s weights: the
        same function as ``mha``, from which to study or fine-tune it (outputs agree to rounding,
        tested). Width, dropout, bias, ``batch_first``, ``kdim`` and ``vdim`` are ``mha``'s;
        ``kwargs`` go to the constructor (e.g. ``search_backend``). ``mha`` must not use
        ``add_bias_kv`` or ``add_zero_attn``, which this layer does not have. The layer starts in
        ``mha``'s mode (training or eval)."""
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("from_multihead_attention: add_bias_kv and add_zero_attn have no counterpart here")
        taken = sorted(set(kwargs) & set(_FROM_MHA_ARGUMENTS))
        if taken:
            raise ValueError(
                f"from_multihead_attention: {', '.join(taken)} come from mha (the copy is the same function): "
                "build the layer and change it afterwards, or construct CompositionalAttention directly"
            )
        has_bias = mha.in_proj_bias is not None
        weight = next(mha.parameters())
        layer = cls(
            mha.embed_dim,
            mha.num_heads,
            mha.num_heads,
            dropout=mha.dropout,
            bias=has_bias,
            batch_first=mha.batch_first,
            retrieval_selection="fixed",
            kdim=mha.kdim,
            vdim=mha.vdim,
            device=weight.device,
            dtype=weight.dtype,
            **kwargs,
        )
        if mha._qkv_same_embed_dim:
            weights = mha.in_proj_weight.chunk(3)
        else:
            weights = (mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight)
        with torch.no_grad():
            for linear, source_weight in zip((layer.q_proj, layer.k_proj, layer.v_proj), weights):
                linear.weight.copy_(source_weight)
            if has_bias:
                for linear, source_bias in zip((layer.q_proj, layer.k_proj, layer.v_proj), mha.in_proj_bias.chunk(3)):
                    linear.bias.copy_(source_bias)
            layer.out_proj.load_state_dict(mha.out_proj.state_dict())
        return layer.train(mha.training)

    def forward(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None = None,
        need_weights: bool = True,
        attn_mask: Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        if query.is_nested or key.is_nested or value.is_nested:
            return self._forward_nested(
                query, key, value, key_padding_mask, need_weights, attn_mask, average_attn_weights, is_causal
            )
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        elif not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        self._check_shapes(query, key, value)
        batch, query_length, _ = query.shape
        key_length = key.shape[1]
        num_s = self.num_searches
        d_s, d_v = self.search_head_dim, self.retrieval_head_dim

        q = self.q_proj(query).view(batch, query_length, num_s, d_s).transpose(1, 2)
        k = self.k_proj(key).view(batch, key_length, num_s, d_s).transpose(1, 2)
        v = self.v_proj(value)
        mask = merge_masks(
            key_padding_mask, attn_mask, is_causal, batch, num_s, query_length, key_length, q.dtype, q.device
        )
        dropout_p = self.dropout if self.training else 0.0

        if self.retrieval_selection == "fixed":
            heads, search_weights = self._fixed(q, k, v, mask, dropout_p, need_weights)
            retrieval_weights = torch.eye(num_s, device=q.device, dtype=heads.dtype).expand(
                batch, query_length, num_s, num_s
            )
        else:
            heads, search_weights, retrieval_weights = self._soft(query, q, k, v, mask, dropout_p, need_weights)
        output = self.out_proj(heads.transpose(1, 2).reshape(batch, query_length, num_s * d_v))

        if unbatched:
            output = output.squeeze(0)
        elif not self.batch_first:
            output = output.transpose(0, 1)
        if not need_weights:
            return output, None
        assert search_weights is not None
        if average_attn_weights:
            search_weights = search_weights.mean(dim=1)
        if unbatched:
            search_weights, retrieval_weights = search_weights.squeeze(0), retrieval_weights.squeeze(0)
        return output, (search_weights, retrieval_weights)

    def _forward_nested(
        self,
        query: Tensor,
        key: Tensor,
        value: Tensor,
        key_padding_mask: Tensor | None,
        need_weights: bool,
        attn_mask: Tensor | None,
        average_attn_weights: bool,
        is_causal: bool,
    ) -> tuple[Tensor, tuple[Tensor, Tensor] | None]:
        """:meth:`forward` for nested tensors of ``[L_i, E]`` sequences (what ``nn.TransformerEncoder``
        passes its layers for padded inputs in eval mode without gradients): the sequences are
        padded, the padded keys masked, and the output nested again (``[L_i, E]`` each); weights,
        if asked for, stay padded to the longest sequences."""
        if not (query.is_nested and key.is_nested and value.is_nested):
            raise ValueError("query, key and value must be all nested tensors or none")
        if key_padding_mask is not None:
            raise ValueError("nested tensors carry their lengths: pass no key_padding_mask with them")
        query_lengths = [sequence.shape[0] for sequence in query.unbind()]
        key_lengths = [sequence.shape[0] for sequence in key.unbind()]
        if [sequence.shape[0] for sequence in value.unbind()] != key_lengths:
            raise ValueError("key and value must hold sequences of the same lengths")
        padded_query, padded_key, padded_value = (x.to_padded_tensor(0.0) for x in (query, key, value))
        padding = torch.arange(padded_key.shape[1], device=padded_key.device) >= torch.tensor(
            key_lengths, device=padded_key.device
        ).unsqueeze(1)
        if not self.batch_first:
            padded_query, padded_key, padded_value = (x.transpose(0, 1) for x in (padded_query, padded_key, padded_value))
        output, weights = self.forward(
            padded_query, padded_key, padded_value, padding, need_weights, attn_mask, average_attn_weights, is_causal
        )
        if not self.batch_first:
            output = output.transpose(0, 1)
        sequences = [row[:length] for row, length in zip(output, query_lengths)]
        return torch.nested.as_nested_tensor(sequences, layout=query.layout), weights

    def _check_shapes(self, query: Tensor, key: Tensor, value: Tensor) -> None:
        layout = "[B, L, E]" if self.batch_first else "[L, B, E]"
        if query.dim() != 3 or key.dim() != 3 or value.dim() != 3:
            raise ValueError(
                f"query, key and value must all be {layout} (or all unbatched [L, E]); got shapes "
                f"{tuple(query.shape)}, {tuple(key.shape)}, {tuple(value.shape)}"
            )
        if query.shape[-1] != self.embed_dim or key.shape[-1] != self.kdim or value.shape[-1] != self.vdim:
            raise ValueError(
                f"last dimensions must be embed_dim={self.embed_dim}, kdim={self.kdim}, vdim={self.vdim}; got "
                f"{query.shape[-1]}, {key.shape[-1]}, {value.shape[-1]}"
            )
        weight_dtype = self.q_proj.weight.dtype
        if not torch.is_autocast_enabled(query.device.type) and any(
            x.dtype != weight_dtype for x in (query, key, value)
        ):
            raise TypeError(
                f"query, key and value are {query.dtype}, {key.dtype}, {value.dtype} and the layer's parameters "
                f"{weight_dtype}: cast the inputs (x.to({weight_dtype})) or the layer (layer.to(dtype)), or run "
                "under torch.autocast for mixed precision"
            )
        if key.shape[:2] != value.shape[:2] or key.shape[0] != query.shape[0]:
            raise ValueError(
                f"batch sizes must agree and key/value lengths must agree; got shapes {tuple(query.shape)}, "
                f"{tuple(key.shape)}, {tuple(value.shape)} ({layout})"
            )

    def _fixed(
        self, q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float, need_weights: bool
    ) -> tuple[Tensor, Tensor | None]:
        """Search ``s`` reads retrieval ``s``: multi-head attention. Returns ``[B, S, L_q, d_v]``."""
        batch, num_s, _, d_s = q.shape
        v = v.view(batch, k.shape[2], num_s, self.retrieval_head_dim).transpose(1, 2)
        if not need_weights:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p), None
        logits = (q * d_s**-0.5) @ k.transpose(-1, -2)
        empty = None
        if mask is not None:
            mask, empty = _without_empty_rows(mask)
            logits = logits + mask
        weights = logits.softmax(dim=-1)
        if empty is not None:
            weights = weights.masked_fill(empty, 0.0)
        attended = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
        return attended @ v, weights

    def _soft(
        self,
        query: Tensor,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: Tensor | None,
        dropout_p: float,
        need_weights: bool,
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        """Searches, all retrievals per search, soft selection. Returns ``[B, S, L_q, d_v]``,
        the search weights ``[B, S, L_q, L_k]`` (when asked) and ``pi`` ``[B, L_q, S, R]``."""
        batch, num_s, query_length, d_s = q.shape
        key_length = k.shape[2]
        scale = d_s**-0.5
        path = self._search_path(q, k, need_weights, dropout_p)
        if self.num_retrievals == 1 and path in ("batched", "per_retrieval"):
            # One retrieval: the selection is a softmax over one logit, identically 1, and its
            # gradient identically 0, so neither is computed; the selection's parameters get those
            # exact zero gradients (they stay "used" for DDP and optimizers).
            values = v.unsqueeze(1).expand(-1, num_s, -1, -1)
            q, k = _padded_for_fused_cpu_kernel(q, k, values.shape[-1], mask, dropout_p)
            heads = F.scaled_dot_product_attention(q, k, values, attn_mask=mask, dropout_p=dropout_p, scale=scale)
            # a view of the SDPA output: read only (transposed and reshaped) by the caller
            heads = _IdentityWithZeroGradients.apply(heads, *self._selection_parameters())
            return heads, None, heads.new_ones(batch, query_length, num_s, 1)
        folded_query, folded_bias = self._folded_retrieval_query(query, num_s)

        if path == "batched":
            values = v.unsqueeze(1).expand(-1, num_s, -1, -1)
            q, k = _padded_for_fused_cpu_kernel(q, k, values.shape[-1], mask, dropout_p)
            heads, selection = self._search_one(q, k, values, folded_query, folded_bias, mask, dropout_p, scale)
            return heads, None, selection.transpose(1, 2)
        if path == "per_retrieval":
            values = v.view(batch, key_length, self.num_retrievals, self.retrieval_head_dim)
            retrieved = torch.stack(
                [
                    F.scaled_dot_product_attention(
                        q, k, values[:, None, :, r].expand(-1, num_s, -1, -1), attn_mask=mask, dropout_p=dropout_p
                    )
                    for r in range(self.num_retrievals)
                ],
                dim=3,
            )
            heads, selection = self._select(retrieved, folded_query, folded_bias)
            return heads, None, selection.transpose(1, 2)
        if path == "per_search":
            heads, selection = self._per_search(q, k, v, folded_query, folded_bias, mask, dropout_p, scale)
            return heads, None, selection.transpose(1, 2)

        chunk = self.query_chunk_size or self._auto_chunk(query_length, key_length, q.is_cuda)
        # Recompute in the backward only when the queries come in several chunks: a single chunk is
        # small enough to keep.
        use_checkpoint = torch.is_grad_enabled() and not need_weights and chunk < query_length
        # Contiguous once, split (not sliced) per chunk: the backward of a split is one concatenation.
        keys_t = k.transpose(-1, -2).contiguous()
        chunks = zip(
            (q * scale).contiguous().split(chunk, dim=2),
            folded_query.split(chunk, dim=2),
            folded_bias.split(chunk, dim=2),
            mask.split(chunk, dim=-2) if mask is not None and mask.shape[-2] > 1 else repeat(mask),
        )
        heads, all_weights, selections = [], [], []
        for q_chunk, query_chunk, bias_chunk, mask_chunk in chunks:
            args = (q_chunk, keys_t, v, query_chunk, bias_chunk, mask_chunk, dropout_p)
            if use_checkpoint:
                head, weights, selection = checkpoint(self._search_and_select, *args, False, use_reentrant=False)
            else:
                head, weights, selection = self._search_and_select(*args, need_weights)
            heads.append(head)
            selections.append(selection)
            if weights is not None:
                all_weights.append(weights)
        search_weights = torch.cat(all_weights, dim=2) if need_weights else None
        retrieval_weights = torch.cat(selections, dim=2).transpose(1, 2)
        return torch.cat(heads, dim=2), search_weights, retrieval_weights

    def _selection_parameters(self) -> list[nn.Parameter]:
        """The parameters of the soft retrieval selection (retrieval query, keys or score)."""
        prefixes = ("retrieval_query_proj.", "retrieval_score.", "retrieval_key_")
        return [parameter for name, parameter in self.named_parameters() if name.startswith(prefixes)]

    def _folded_retrieval_query(self, query: Tensor, num_s: int) -> tuple[Tensor, Tensor]:
        """The retrieval logits as ``<folded_query, O_{s,r}> + folded_bias``: the folded query
        ``[B, S, L_q, K, d_v]`` and bias ``[B, S, L_q, K]`` (``K``: 1, or R separate key maps)
        from the layer input ``query [B, L_q, E]``, temperature included.

        Dot scoring: ``<Q^r, O W^rk + b^rk> / sqrt(d_r) = <Q^r W^rk^T, O> / sqrt(d_r) + <Q^r, b^rk> /
        sqrt(d_r)``, so the keys ``O W^rk`` are never formed. Linear scoring: ``w_q . Q^r + w_v . O +
        b`` with the score layer's weight ``[w_q, w_v]``."""
        batch, query_length, _ = query.shape
        qk_dim = self.retrieval_qk_dim
        retrieval_query = self.retrieval_query_proj(query).view(batch, query_length, num_s, qk_dim).transpose(1, 2)
        if self.retrieval_scoring == "linear":
            weight = self.retrieval_score.weight[0] / self.temperature
            folded_query = weight[qk_dim:].expand(batch, num_s, query_length, 1, self.retrieval_head_dim)
            folded_bias = (retrieval_query @ weight[:qk_dim]).unsqueeze(-1)
            if self.retrieval_score.bias is not None:
                folded_bias = folded_bias + self.retrieval_score.bias / self.temperature
            return folded_query, folded_bias
        retrieval_query = retrieval_query * (qk_dim**-0.5 / self.temperature)
        folded_query = torch.einsum("bsnd,kvd->bsnkv", retrieval_query, self.retrieval_key_weight)
        if self.retrieval_key_bias is not None:
            # F.linear rather than an einsum: its weight gradient is laid out as the bias, which
            # DDP's gradient buckets expect (the einsum's came back transposed)
            folded_bias = F.linear(retrieval_query, self.retrieval_key_bias)
        else:
            folded_bias = folded_query.new_zeros(folded_query.shape[:-1])
        return folded_query, folded_bias

    def _per_search(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        folded_query: Tensor,
        folded_bias: Tensor,
        mask: Tensor | None,
        dropout_p: float,
        scale: float,
    ) -> tuple[Tensor, Tensor]:
        """SDPA searches one at a time (``q [B, S, L_q, d_s]``, ``k [B, S, L_k, d_s]``), each
        reading all retrievals at once (``v [B, L_k, R * d_v]``, shared, never expanded over
        searches); folded retrieval query and bias, the mask and the logits' ``scale`` as in
        :meth:`_search_one`.
        A search is recomputed in the backward when all searches' retrievals would hold more
        than eight ``[B, L_q, E]`` layer inputs. Returns the selected retrievals
        ``[B, S, L_q, d_v]`` and ``pi`` ``[B, S, L_q, R]``."""
        retrievals_per_position = self.num_searches * self.num_retrievals * self.retrieval_head_dim
        recompute = torch.is_grad_enabled() and retrievals_per_position > 8 * self.embed_dim
        values = v.unsqueeze(1)
        heads, selections = [], []
        for s in range(self.num_searches):
            index = slice(s, s + 1)
            mask_s = mask[:, index] if mask is not None and mask.shape[1] > 1 else mask
            args = (
                q[:, index], k[:, index], values, folded_query[:, index], folded_bias[:, index], mask_s, dropout_p, scale
            )
            if recompute:
                head, selection = checkpoint(self._search_one, *args, use_reentrant=False)
            else:
                head, selection = self._search_one(*args)
            heads.append(head)
            selections.append(selection)
        return torch.cat(heads, dim=1), torch.cat(selections, dim=1)

    def _search_one(
        self,
        q: Tensor,
        k: Tensor,
        values: Tensor,
        folded_query: Tensor,
        folded_bias: Tensor,
        mask: Tensor | None,
        dropout_p: float,
        scale: float,
    ) -> tuple[Tensor, Tensor]:
        """Searches ``q, k [B, n, L, d]`` (one search, or all ``n = S``; ``d = d_s``, or wider with
        zero columns) in one SDPA call over the values ``[B, 1 | n, L_k, R * d_v]`` (one set,
        broadcast or expanded over the searches), logits scaled by ``scale`` (``d_s^-1/2``);
        returns the selected retrievals ``[B, n, L_q, d_v]`` and ``pi`` ``[B, n, L_q, R]``."""
        retrieved = F.scaled_dot_product_attention(q, k, values, attn_mask=mask, dropout_p=dropout_p, scale=scale)
        batch, num_s, length, _ = retrieved.shape
        return self._select(
            retrieved.view(batch, num_s, length, self.num_retrievals, self.retrieval_head_dim), folded_query, folded_bias
        )

    def _search_path(self, q: Tensor, k: Tensor, need_weights: bool, dropout_p: float) -> SearchPath:
        """How the searches run (see the module docstring): the forced ``search_backend``, or the
        automatic choice; with ``need_weights`` always explicitly (the fused kernels return no
        weights).

        Automatic, on CUDA: all searches in one batched call while the gradient of the values
        expanded over the searches (``[B, S, L_k, R d_v]``) holds at most four layer inputs
        ``[B, L_q, E]`` (in self-attention ``S R d_v <= 4 E``: up to four retrievals of the default
        width); else, up to 256 keys, the explicit chunks (one batched matmul per chunk does the
        ``S`` searches in fewer, larger kernels than ``S`` fused calls while the attention matrices
        are small: 1.5-1.9x faster at L = 32-64, 1.2x at 256, on an H100), and one call per search
        for longer keys. On the CPU, without dropout (the fused CPU kernel has
        none; its fallback would hold the whole attention matrix), with retrievals as wide as the
        search heads and ``R <= 2``: the batched call, queries and keys zero-padded to the values'
        width for ``R = 2`` (nothing recomputed, unlike the explicit chunks; 1.28x / 1.38x / 1.45-1.57x
        MHA's time at L = 256 / 1024 / 4096 against 1.43x / 1.61x / 1.87x for one call per
        retrieval, at 1.54-1.56x MHA's memory against 1.47-1.49x: the padded queries and keys are
        kept; ``benchmarks/results/attention_cpu*.csv``); otherwise the explicit chunks.
        """
        if need_weights:
            return "explicit"
        if self.search_backend in _FORCED_SEARCH_PATHS:
            return _FORCED_SEARCH_PATHS[self.search_backend]
        if q.is_cuda:
            expanded_values = self.num_searches * self.num_retrievals * self.retrieval_head_dim * k.shape[2]
            layer_input = self.embed_dim * q.shape[2]
            if expanded_values <= _BATCHED_MAX_EXPANDED_INPUTS * layer_input:
                return "batched"
            return "explicit" if k.shape[2] <= _CUDA_EXPLICIT_MAX_KEY_LENGTH else "per_search"
        if self.retrieval_head_dim == self.search_head_dim and dropout_p == 0.0 and self.num_retrievals <= 2:
            return "batched"
        return "explicit"

    def _select(self, retrieved: Tensor, folded_query: Tensor, folded_bias: Tensor) -> tuple[Tensor, Tensor]:
        """The retrieval selection: ``retrieved [B, S, n, R, d_v]``, the folded retrieval query
        ``[B, S, n, K, d_v]`` and bias ``[B, S, n, K]`` -> the selected retrievals
        ``[B, S, n, d_v]`` and ``pi [B, S, n, R]``."""
        logits = (retrieved * folded_query.to(retrieved.dtype)).sum(-1) + folded_bias.to(retrieved.dtype)
        selection = logits.float().softmax(dim=-1).to(retrieved.dtype)
        return (selection.unsqueeze(-1) * retrieved).sum(dim=3), selection

    def _auto_chunk(self, query_length: int, key_length: int, cuda: bool = False) -> int:
        """Query positions per chunk of the explicit searches so that a chunk's attention matrix
        ``[B, S, chunk, L_k]`` and retrievals ``[B, S, chunk, R * d_v]`` together hold about as
        many entries as two ``[B, L_k, E]`` layer inputs on the CPU, four on CUDA (fewer, larger
        kernels; at least 16 positions)."""
        layer_inputs = _CHUNK_LAYER_INPUTS["cuda" if cuda else "cpu"]
        per_position = self.num_searches * (key_length + self.num_retrievals * self.retrieval_head_dim)
        return max(16, min(query_length, layer_inputs * key_length * self.embed_dim // per_position))

    def _search_and_select(
        self,
        q: Tensor,
        keys_t: Tensor,
        v: Tensor,
        folded_query: Tensor,
        folded_bias: Tensor,
        mask: Tensor | None,
        dropout_p: float,
        need_weights: bool,
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        """One chunk of queries, explicit searches: scaled queries ``q [B, S, n, d_s]``, transposed
        keys ``keys_t [B, S, d_s, L_k]``, values ``v [B, L_k, R * d_v]``, the folded retrieval query
        ``[B, S, n, K, d_v]`` and bias ``[B, S, n, K]`` (``K`` key maps: 1 or R), the mask chunk
        ``[B | 1, S | 1, n, L_k]``.

        Returns the selected retrievals ``[B, S, n, d_v]``, the search weights ``[B, S, n, L_k]``
        (when ``need_weights``) and the selection ``pi`` ``[B, S, n, R]``."""
        batch, num_s, n, _ = q.shape
        num_r, d_v = self.num_retrievals, self.retrieval_head_dim
        logits = q @ keys_t
        empty = None
        if mask is not None:
            mask, empty = _without_empty_rows(mask)
            logits = logits + mask
        weights = logits.softmax(dim=-1)
        attended = F.dropout(weights, p=dropout_p) if dropout_p > 0 else weights
        retrieved = (attended.reshape(batch, num_s * n, keys_t.shape[-1]) @ v.to(attended.dtype)).view(
            batch, num_s, n, num_r * d_v
        )
        if empty is not None:
            # zeroing the retrievals [.., R d_v] rather than the weights [.., L_k]: a smaller pass
            retrieved = retrieved.masked_fill(empty, 0.0)
            if need_weights:
                weights = weights.masked_fill(empty, 0.0)
        selected, selection = self._select(retrieved.view(batch, num_s, n, num_r, d_v), folded_query, folded_bias)
        return selected, (weights if need_weights else None), selection
