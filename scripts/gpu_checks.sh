#!/bin/bash
# The GPU checks of the open issues in one pass, for a single lent GPU with a short time budget:
# the CUDA tests, the attention benchmark (CUDA graphs) with the search backends side by side, the sampler speed
# benchmark with the CUDA-graph rows, and 600 training steps of GMM25 TB + Expl. + LS through
# train.py, eager and with model.cuda_graph=true. Each step has its own time limit; results and
# logs go to $OUT (default gpu_results/). On an H100 the pass took about 4 minutes with eager attention
# timings; timing the attention rows as CUDA graphs (this version) adds about a minute.
#
#   bash scripts/gpu_checks.sh                 # with the project's .venv (pip install -e '.[dev]')
#   OUT=/tmp/gpu bash scripts/gpu_checks.sh
#
# Python: scripts/python_env.sh (.venv, else python3 with the wheels in .whl/).
#
# .official/ holds scratch copies of the official code (GFNOrg/gfn-diffusion's energy_sampling and
# sarthmit/Compositional-Attention's Contextual_Retrieval_Task); without them the official rows
# are left out.
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_results}
mkdir -p "$OUT"
source scripts/python_env.sh
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
"$PY" -c "import torch, lightning; print('torch', torch.__version__, 'lightning', lightning.__version__)" | tee -a "$OUT/gpu.txt"

attention_official=()
[ -d .official/Contextual_Retrieval_Task ] && attention_official=(--official-dir .official/Contextual_Retrieval_Task)
sampler_official=()
[ -d .official/energy_sampling ] && sampler_official=(--official-dir .official/energy_sampling)
workers=()
"$PY" -c "import xdist" 2> /dev/null && workers=(-n 4)

step() { echo "[$SECONDS s] $*"; }
step CUDA tests
timeout 150 "$PY" -m pytest -q -p no:cacheprovider "${workers[@]}" -m cuda > "$OUT/pytest_cuda.txt" 2>&1
echo "rc=$?"; tail -n 5 "$OUT/pytest_cuda.txt"
step attention benchmark
timeout 200 "$PY" benchmarks/attention.py --device cuda --in-process --cuda-graph --lengths 64 256 512 1024 4096 \
    --retrievals 8 1 2 4 --comp-backends auto sdpa "${attention_official[@]}" \
    --out "$OUT/attention_cuda.csv" > "$OUT/attention_cuda.txt" 2>&1
echo "rc=$?"; grep -E "^B=|failed" "$OUT/attention_cuda.txt" | cut -c1-110
step sampler speed
timeout 150 "$PY" benchmarks/samplers.py --skip-quality --device cuda --cuda-graph "${sampler_official[@]}" \
    --speed-iters 12 --speed-rounds 1 --speed-warmup 3 --out "$OUT" > "$OUT/samplers_speed_cuda.txt" 2>&1
echo "rc=$?"; grep -E "speed round|Error" "$OUT/samplers_speed_cuda.txt" | cut -c1-100
for graph in false true; do
    step "train.py GMM25 TB + Expl. + LS, 600 steps, cuda_graph=$graph"
    timeout 120 "$PY" train.py experiment=samplers/gmm25_tb_expl_ls trainer=gpu trainer.max_epochs=6 \
        trainer.check_val_every_n_epoch=2 model.cuda_graph=$graph callbacks.rich_progress_bar=null \
        trainer.enable_progress_bar=false extras.print_config=false > "$OUT/train_graph_$graph.txt" 2>&1
    echo "rc=$?"; grep -E "test/(elbo|delta_log_z|w2|modes_hit)|Error" "$OUT/train_graph_$graph.txt" | tr -s ' │' ' '
done
step done
