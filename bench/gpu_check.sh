#!/usr/bin/env bash
# The GPU path, end to end, in under 10 minutes on one GPU:
#   1. the smoke study (search_spaces/smoke.yaml) with `resources: {cpu: 1, gpu: 0.25}`, four
#      trials sharing the GPU, then checks every trial ran on cuda and reports how many overlapped;
#   2. bench/bench_gpu.py: training throughput with bf16 autocast for the attention (and other
#      non-recurrent) families, fp32 for recurrences, and MFU against the measured matmul peak
#      and the datasheet's.
# Without a CUDA device it says so and exits 0, having run and written nothing.
# --dry-run (any machine): writes the gpu: 0.25 spec, validates it with `study run --dry-run` and
# runs bench_gpu.py's code path on CPU at toy size: what tests/test_gpu_check.py runs here.
#
#   bench/gpu_check.sh [--dry-run]   # output under a fresh temporary folder (printed), or $GPU_CHECK_OUT
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
STUDY="$(dirname "$PY")/study"
[ -x "$STUDY" ] || STUDY="$PY -m study.cli"

DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
if [ $DRY = 0 ] && ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    echo "gpu_check: no CUDA device visible to torch; skipped (nothing run, nothing written)"
    exit 0
fi

OUT=${GPU_CHECK_OUT:-$(mktemp -d -t memscale-gpu-XXXX)}
mkdir -p "$OUT"
sed -e 's/^study: smoke$/study: smoke_gpu/' -e 's/^resources: .*/resources: {cpu: 1, gpu: 0.25}/' \
    search_spaces/smoke.yaml > "$OUT/smoke_gpu.yaml"
grep -q '^resources: {cpu: 1, gpu: 0.25}' "$OUT/smoke_gpu.yaml" || { echo "gpu_check: could not set gpu: 0.25"; exit 1; }
if [ $DRY = 1 ]; then
    $STUDY run "$OUT/smoke_gpu.yaml" --results "$OUT/results" --dry-run || exit 1
    "$PY" bench/bench_gpu.py --device cpu --tiny --archs transformer lstm || exit 1
    echo "gpu_check: dry run ok"
    exit 0
fi
echo "gpu_check: $("$PY" -c 'import torch; print(torch.cuda.get_device_name(0), "| torch", torch.__version__)'); output in $OUT"
nvidia-smi --query-gpu=name,memory.total,utilization.gpu --format=csv,noheader 2>/dev/null || true
t0=$(date +%s)
fail=0

# 1. the smoke study, four trials per GPU (its own name smoke_gpu, so it never touches ./results/smoke)
if timeout 420 $STUDY run "$OUT/smoke_gpu.yaml" --results "$OUT/results"; then
    $STUDY sql "$OUT/results/smoke_gpu" \
        "SELECT arch, device, dtype, status, count(*) AS trials, round(median(wall_s), 1) AS median_train_s,
                max(peak_mem_bytes) / 2^20 AS max_peak_mib FROM trials GROUP BY ALL ORDER BY ALL"
    # how many trials ran at once: for each trial's start, the trials running at that moment
    $STUDY sql "$OUT/results/smoke_gpu" \
        "SELECT max(n) AS most_trials_at_once FROM (SELECT a.trial_id, count(*) AS n FROM trials a JOIN trials b
           ON b.started_at <= a.started_at AND b.ended_at > a.started_at GROUP BY a.trial_id)"
    bad=$($STUDY sql "$OUT/results/smoke_gpu" "SELECT count(*) AS n FROM trials WHERE device <> 'cuda' OR status <> 'completed'" \
          | grep -Eo '[0-9]+' | tail -1)
    [ "${bad:-1}" = "0" ] || { echo "gpu_check: $bad trial(s) not completed on cuda"; fail=1; }
else
    echo "gpu_check: the smoke study failed or passed 420 s"; fail=1
fi
echo "gpu_check: smoke study $(( $(date +%s) - t0 )) s"

# 2. throughput and MFU (bf16 for attention families)
timeout 150 "$PY" bench/bench_gpu.py || { echo "gpu_check: bench_gpu failed or passed 150 s"; fail=1; }
echo "gpu_check: done in $(( $(date +%s) - t0 )) s, $([ $fail = 0 ] && echo ok || echo FAILED)"
exit $fail
