#!/bin/bash
# The GPU checks of the open issues in one pass, for a single lent GPU with a short time budget:
# the CUDA tests, the attention benchmark with the per-retrieval rows beside the automatic path,
# the sampler speed benchmark. Each step has its own time limit; results go to $OUT (default
# gpu_results/), logs included.
#
#   bash scripts/gpu_checks.sh                         # needs .venv, plus .official/ for official rows
#   OUT=/tmp/gpu bash scripts/gpu_checks.sh
#
# .official/ holds scratch copies of the official code (GFNOrg/gfn-diffusion's energy_sampling and
# sarthmit/Compositional-Attention's Contextual_Retrieval_Task); without them the official rows
# are left out.
set -u
OUT=${OUT:-gpu_results}
PY=${PY:-.venv/bin/python}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"

attention_official=()
[ -d .official/Contextual_Retrieval_Task ] && attention_official=(--official-dir .official/Contextual_Retrieval_Task)
sampler_official=()
[ -d .official/energy_sampling ] && sampler_official=(--official-dir .official/energy_sampling)

timeout 240 "$PY" -m pytest -q -p no:cacheprovider -m cuda 2>&1 | tail -n 30 | tee "$OUT/pytest_cuda.txt"
timeout 180 "$PY" benchmarks/attention.py --device cuda --in-process --lengths 64 256 1024 4096 \
    --retrievals 8 1 2 --comp-backends auto per_retrieval "${attention_official[@]}" \
    --out "$OUT/attention_cuda.csv" 2>&1 | tee "$OUT/attention_cuda.txt"
timeout 150 "$PY" benchmarks/samplers.py --skip-quality --device cuda "${sampler_official[@]}" \
    --out "$OUT" 2>&1 | tail -n 40 | tee "$OUT/samplers_speed_cuda.txt"
