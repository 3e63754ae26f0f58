#!/usr/bin/env bash
# The prepared GPU benchmark (<= 8 min on one H100/H200): steps/s, clips/s, images/s at
# growing batch sizes up to the memory limit, fraction of peak bf16 FLOP/s
# (torch.utils.flop_counter), and the ours-vs-naive distillation-step ratio on the card.
# Writes benchmarks/gpu_results.json (or $OUT/gpu_results.json when $OUT is set).
#   bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true
DEST=${OUT:-benchmarks}/gpu_results.json
timeout 480 "$PY" -m benchmarks.bench_gpu "$DEST" --budget-s 420 --device cuda
