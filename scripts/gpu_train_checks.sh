#!/bin/bash
# End-to-end train.py runs on one GPU, the way a user scales a CPU command up without touching code:
# one short run per family with `trainer.precision=bf16-mixed`, one with `trainer=ddp` (the DDP
# strategy and its process group on the visible GPU) and one fp32 run to compare against. Each run
# trains for a few hundred steps on the procedural data and tests; the test figures and the wall
# time of each run go to $OUT/train_checks.txt, the logs to $OUT (default gpu_results/). The exit
# status is 1 when any run failed or ran past its limit of LIMIT seconds (default 90).
#
#   bash scripts/gpu_train_checks.sh
#   TRAINER=cpu LIMIT=400 bash scripts/gpu_train_checks.sh   # the same runs on a CPU (SCAN: about 4 min)
#
# Python: scripts/python_env.sh (.venv, else python3 with the wheels in .whl/).
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_results}
TRAINER=${TRAINER:-gpu}
LIMIT=${LIMIT:-90}
mkdir -p "$OUT"
source scripts/python_env.sh
summary="$OUT/train_checks.txt"
: > "$summary"
failed=0

quiet=(callbacks.rich_progress_bar=null trainer.enable_progress_bar=false extras.print_config=false)
# name, then the overrides of one run
run() {
    local name=$1
    shift
    local start=$SECONDS
    timeout -k 10 "$LIMIT" "$PY" train.py "$@" "${quiet[@]}" > "$OUT/train_$name.txt" 2>&1
    local rc=$?
    [ "$rc" -eq 0 ] || failed=1
    {
        echo "$name rc=$rc $((SECONDS - start)) s: $*"
        grep -E "test/|Error|error:" "$OUT/train_$name.txt" | sed 's/│/ /g' | tr -s ' ' | head -n 20
    } | tee -a "$summary"
}

contextual=(experiment=attention/contextual_retrieval_compositional data.train_size=51200
    data.val_size=2560 data.test_size=2560 trainer.max_epochs=1 callbacks.attention_maps=null)
run contextual_fp32 "${contextual[@]}" trainer="$TRAINER"
run contextual_bf16 "${contextual[@]}" trainer="$TRAINER" trainer.precision=bf16-mixed
if [ "$TRAINER" = gpu ]; then
    run contextual_ddp "${contextual[@]}" trainer=ddp trainer.devices=1
fi
run scan_bf16 experiment=attention/scan_simple_compositional trainer="$TRAINER" trainer.precision=bf16-mixed \
    data.batch_size=64 trainer.max_steps=300 trainer.val_check_interval=300 trainer.limit_val_batches=2 \
    trainer.limit_test_batches=2 callbacks.model_checkpoint.every_n_train_steps=300
run corelnet_bf16 experiment=relational/dist3_corelnet trainer="$TRAINER" trainer.precision=bf16-mixed \
    data.train_size=2000 trainer.max_epochs=3
run gmm25_tb_bf16 experiment=samplers/gmm25_tb trainer="$TRAINER" trainer.precision=bf16-mixed \
    trainer.max_epochs=2 trainer.check_val_every_n_epoch=2
exit "$failed"
