"""Benchmark of Compositional Attention (Mittal et al., 2022, arXiv 2110.09419): forward + backward
time and peak memory beside ``nn.MultiheadAttention``, and beside the official layer.

Model, as the official contextual-retrieval model (``Contextual_Retrieval_Task/model.py``): an MLP
encoder ``E -> E -> E``, one attention layer (self-attention over ``L`` tokens), an MLP decoder
``E -> E -> 1`` and an L1 loss; one forward + backward per measurement, no optimizer step. Rows:

- ``mha``: ``nn.MultiheadAttention(E, h)`` with ``need_weights=True`` (materializes the weights);
- ``mha_sdpa``: the same with ``need_weights=False`` (PyTorch's fused SDPA path), the baseline of
  every ratio;
- ``comp_R{R}``: :class:`tenfold.modules.attention.CompositionalAttention` with ``S = h`` searches and
  ``R`` retrievals, every head of width ``d = E / h`` (``retrieval_dim = R d``;
  ``need_weights=False``; the layer's automatic ``search_backend``);
- ``comp_{backend}_R{R}``: the same with ``search_backend=backend``, one row per name given to
  ``--comp-backends`` besides ``auto`` (``batched``, ``sdpa``, ``per_retrieval``, ``explicit``);
- ``official_R{R}``: the official ``Compositional_dot_Transformer`` (without ``--concat``),
  imported from ``--official-dir`` (a scratch copy of its ``Contextual_Retrieval_Task`` folder),
  up to ``--official-max-length`` (it materializes ``[B, S, R, L, L]``).

Each row runs in a fresh subprocess (``--worker``), or in this process with ``--in-process``. Time: the fastest of ``--repeats`` calls after
one warm-up (the least disturbed by other processes on a shared machine). With ``--cuda-graph``
(CUDA only) the forward + backward is captured as one CUDA graph and the time is per replay, the
fastest of ``--repeats`` blocks of 20 back-to-back replays: the GPU's work alone. A single layer
at short ``L`` launches more kernels than the GPU needs time for, so eager GPU timings there
measure the launch rate of the host (and vary by up to 20 % between runs), not the kernels. Peak memory: the most bytes held at once by live tensors (parameters, gradients, inputs,
activations saved for backward and temporaries) during one forward + backward, counted by
``torch.distributed._tools.mem_tracker.MemTracker`` (exact and the same on CPU and CUDA, unlike
resident-set sizes, which the allocator's caching blurs). FLOP ratio (``flop_ratio`` column): the attention
multiply-adds of compositional attention over MHA's, ``(S L^2 d + S R L^2 d) / (2 h L^2 d)`` with
``d = E / h`` (forward, attention only): the method's own work, the bound of the issue's aim,
whatever a backend computes (the per-retrieval path repeats each search R times, ``2 R S L^2 d``,
a ratio of R; the batched call on the CPU, the automatic choice there for R <= 2, pads the queries
and keys to the values' width at R = 2, ``2 R S L^2 d`` as well, in one call).

Usage (from the repository root)::

    python benchmarks/attention.py                               # CPU, L = 64..1024, one thread
    python benchmarks/attention.py --lengths 64 256 1024 4096 --official-dir PATH/Contextual_Retrieval_Task
    python benchmarks/attention.py --device cuda --in-process --lengths 64 256 1024 4096 --official-dir PATH
    python benchmarks/attention.py --comp-backends auto per_retrieval --retrievals 1 2   # backends side by side
    python benchmarks/attention.py --device cuda --in-process --cuda-graph --lengths 64 256 1024 4096   # GPU work only

Results: ``--out`` (default ``benchmarks/results/attention_<device>.csv``).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.distributed._tools.mem_tracker import MemTracker  # noqa: E402

from tenfold.modules.attention import CompositionalAttention  # noqa: E402


class ContextualRetrievalModel(nn.Module):
    """Encoder MLP, one attention layer, decoder MLP: ``[B, L, E] -> [B, L]``.

    ``attention`` is any module with ``nn.MultiheadAttention``'s call signature, or the official
    layer (called as ``attention(x)`` when ``official`` is true).
    """

    def __init__(self, embed_dim: int, attention: nn.Module, need_weights: bool, official: bool = False) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.ReLU(), nn.Linear(embed_dim, embed_dim))
        self.attention = attention
        self.decoder = nn.Sequential(nn.Linear(embed_dim, embed_dim), nn.ReLU(), nn.Linear(embed_dim, 1))
        self.need_weights = need_weights
        self.official = official

    def forward(self, x: Tensor) -> Tensor:
        h = self.encoder(x)
        if self.official:
            h = self.attention(h)[0]
        else:
            h = self.attention(h, h, h, need_weights=self.need_weights)[0]
        return self.decoder(h).squeeze(-1)


def build_attention(
    row: str, embed_dim: int, heads: int, official_dir: str | None, query_chunk_size: int | None = None
) -> tuple[nn.Module, bool, bool]:
    """The attention layer of a row name (``query_chunk_size``: the compositional layer's, for its
    explicit searches; None: automatic); returns ``(layer, need_weights, official)``."""
    if row == "mha":
        return nn.MultiheadAttention(embed_dim, heads, batch_first=True), True, False
    if row == "mha_sdpa":
        return nn.MultiheadAttention(embed_dim, heads, batch_first=True), False, False
    prefix, retrievals_text = row.rsplit("_R", 1)
    retrievals = int(retrievals_text)
    if row.startswith("comp_"):
        backend = prefix.removeprefix("comp").removeprefix("_") or "auto"
        layer = CompositionalAttention(
            embed_dim, heads, retrievals, search_backend=backend, query_chunk_size=query_chunk_size
        )
        return layer, False, False
    if row.startswith("official_"):
        if official_dir is None:
            raise ValueError("official rows need --official-dir")
        sys.path.insert(0, official_dir)
        from model import Compositional_dot_Transformer  # type: ignore[import-not-found]

        layer = Compositional_dot_Transformer(
            embed_dim, embed_dim, embed_dim, heads, retrievals, False, False, False, False, True
        )
        return layer, False, True
    raise ValueError(f"unknown row {row!r}")


def worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Times one row in this process; returns ``{"ms": ..., "peak_mib": ...}``."""
    torch.set_num_threads(spec["threads"])
    torch.manual_seed(0)
    device = torch.device(spec["device"])
    layer, need_weights, official = build_attention(
        spec["row"], spec["embed_dim"], spec["heads"], spec["official_dir"], spec.get("query_chunk_size")
    )
    model = ContextualRetrievalModel(spec["embed_dim"], layer, need_weights, official).to(device)
    x = torch.randn(spec["batch"], spec["length"], spec["embed_dim"], device=device)
    y = torch.randn(spec["batch"], spec["length"], device=device)

    def step() -> None:
        loss = (model(x) - y).abs().mean()
        loss.backward()
        model.zero_grad(set_to_none=True)

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()
    sync()
    times = time_graph_replays(step, spec["repeats"]) if spec.get("cuda_graph") else time_calls(step, sync, spec["repeats"])
    tracker = MemTracker()
    tracker.track_external(model, x, y)
    with tracker:
        step()
    peak = sum(sum(by_type.values()) for by_type in tracker.get_tracker_snapshot("peak").values())
    return {"ms": 1000 * min(times), "peak_mib": peak / 2**20}


def time_calls(step: Callable[[], None], sync: Callable[[], None], repeats: int) -> list[float]:
    """Seconds of ``repeats`` eager calls of ``step``, each from launch to ``sync``."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    return times


def time_graph_replays(step: Callable[[], None], repeats: int, replays_per_repeat: int = 20) -> list[float]:
    """Seconds per replay of ``step`` captured as one CUDA graph, over ``repeats`` blocks of replays.

    ``step`` (forward and backward) is warmed up on a side stream, as capture requires, then
    captured once; each block times ``replays_per_repeat`` back-to-back replays between two CUDA
    events, so the figure is the GPU's work without Python or kernel-launch overhead.
    """
    side_stream = torch.cuda.Stream()
    side_stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side_stream):
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side_stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(replays_per_repeat):
            graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000 / replays_per_repeat)
    return times


def run_row(spec: dict[str, Any], timeout: float) -> dict[str, Any] | None:
    """Runs :func:`worker` for ``spec`` in a fresh interpreter; ``None`` when it fails or times out."""
    command = [sys.executable, __file__, "--worker", json.dumps(spec)]
    env = {**os.environ, "OMP_NUM_THREADS": str(spec["threads"])}
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return None
    if done.returncode != 0:
        print(f"  {spec['row']} L={spec['length']} B={spec['batch']} failed: {done.stderr.strip()[-300:]}")
        return None
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_in_process(spec: dict[str, Any]) -> dict[str, Any] | None:
    """Runs :func:`worker` for ``spec`` here; ``None`` (with the reason printed) when it fails."""
    try:
        return worker(spec)
    except (RuntimeError, torch.OutOfMemoryError) as err:
        print(f"  {spec['row']} L={spec['length']} B={spec['batch']} failed: {str(err)[:300]}")
        return None
    finally:
        if spec["device"] == "cuda":
            torch.cuda.empty_cache()


def flop_ratio(heads: int, retrievals: int) -> float:
    """Attention multiply-adds of compositional attention over MHA's (forward, same ``E``, ``S = h``)."""
    return (heads + heads * retrievals) / (2 * heads)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[16])
    parser.add_argument("--embed-dim", type=int, default=256)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--retrievals", type=int, nargs="+", default=[8, 1, 2], help="R of the compositional rows")
    parser.add_argument("--comp-backends", nargs="+", default=["auto"],
                        choices=["auto", "sdpa", "batched", "explicit", "per_retrieval"],
                        help="search_backend of the compositional rows (auto: rows comp_R{R}; others: comp_{backend}_R{R})")
    parser.add_argument("--query-chunk-size", type=int, default=None,
                        help="query positions per chunk of the compositional layer's explicit searches "
                             "(default: its automatic size; at least L: one chunk, nothing recomputed)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--official-dir", default=None, help="scratch copy of the official Contextual_Retrieval_Task")
    parser.add_argument("--official-max-length", type=int, default=1024)
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per row before it is skipped")
    parser.add_argument("--in-process", action="store_true",
                        help="time every row in this process (saves an interpreter start per row; on CUDA the timings "
                             "do not depend on it, on a CPU the fresh subprocess per row is the cleaner measurement)")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="on CUDA, time each row's forward + backward captured as one CUDA graph (GPU work "
                             "without launch overhead; eager timings of one layer at short L are launch-bound)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is visible")
    if args.cuda_graph and args.device != "cuda":
        parser.error("--cuda-graph needs --device cuda")
    if args.embed_dim % args.heads:
        parser.error(f"--embed-dim {args.embed_dim} is not divisible by --heads {args.heads}")

    rows = ["mha", "mha_sdpa"]
    for backend in args.comp_backends:
        rows += [f"comp_R{r}" if backend == "auto" else f"comp_{backend}_R{r}" for r in args.retrievals]
    if args.official_dir:
        if not (Path(args.official_dir) / "model.py").is_file():
            parser.error(
                f"--official-dir {args.official_dir} has no model.py: give a scratch copy of the official "
                "Contextual_Retrieval_Task folder (github.com/sarthmit/Compositional-Attention)"
            )
        rows += [f"official_R{r}" for r in args.retrievals if r == args.heads]
    device_name = torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu"
    timing = "one CUDA graph per row, time per replay" if args.cuda_graph else "eager calls"
    print(f"device: {device_name}, threads: {args.threads}, E={args.embed_dim}, h=S={args.heads}, "
          f"torch {torch.__version__}, {timing}")
    results: list[dict[str, Any]] = []
    for batch in args.batch_sizes:
        for length in args.lengths:
            baseline: dict[str, Any] | None = None
            for row in rows:
                if row.startswith("official_") and length > args.official_max_length:
                    continue
                spec = {
                    "row": row, "device": args.device, "length": length, "batch": batch,
                    "embed_dim": args.embed_dim, "heads": args.heads, "repeats": args.repeats,
                    "threads": args.threads, "official_dir": args.official_dir, "cuda_graph": args.cuda_graph,
                    "query_chunk_size": args.query_chunk_size,
                }
                measured = run_in_process(spec) if args.in_process else run_row(spec, args.timeout)
                if measured is None:
                    continue
                if row == "mha_sdpa":
                    baseline = measured
                retrievals = int(row.rsplit("_R", 1)[1]) if "_R" in row else args.heads
                result = {
                    "device": device_name, "row": row, "batch": batch, "length": length,
                    "cuda_graph": args.cuda_graph, "query_chunk_size": args.query_chunk_size, **measured,
                    "time_vs_sdpa": measured["ms"] / baseline["ms"] if baseline else float("nan"),
                    "memory_vs_sdpa": measured["peak_mib"] / baseline["peak_mib"] if baseline and baseline["peak_mib"] else float("nan"),
                    "flop_ratio": flop_ratio(args.heads, retrievals) if "_R" in row else 1.0,
                }
                results.append(result)
                print(
                    f"B={batch:4d} L={length:6d} {row:24s} {measured['ms']:10.1f} ms {measured['peak_mib']:9.1f} MiB"
                    f"  time x{result['time_vs_sdpa']:5.2f}  mem x{result['memory_vs_sdpa']:5.2f}"
                    f"  (FLOP ratio {result['flop_ratio']:.2f})",
                    flush=True,
                )
    out = args.out or ROOT / "benchmarks" / "results" / f"attention_{args.device}.csv"
    if not results:
        sys.exit(f"no row was measured (see the failures above); {out} is left as it was")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(results[0]))
        writer.writeheader()
        writer.writerows(results)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
