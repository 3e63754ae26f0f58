#!/usr/bin/env bash
# The prepared GPU benchmark (<= 8 min on one H100/H200): steps/s, clips/s, images/s and prompts/s at
# growing batch sizes up to the memory limit, fraction of peak bf16 FLOP/s (torch.utils.flop_counter),
# and the ours-vs-naive distillation-step ratio on the card. With CLIPS_NPZ (made here by
# `python -m benchmarks.frontend_parity export clips.npz`, since the GPU machine has no ../shared), also
# the front end on the card against HF's CPU extractor, and its parity on every phoebe recording.
# Writes gpu_results.json (+ frontend_gpu.json, frontend_gpu_parity.json) to $OUT when set, else benchmarks/.
#   [CLIPS_NPZ=clips.npz] bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true
DIR=${OUT:-benchmarks}
if [ -n "${CLIPS_NPZ:-}" ]; then
  timeout 200 "$PY" -m benchmarks.bench_frontend "$DIR/frontend_gpu.json" --device cuda --clips-npz "$CLIPS_NPZ"
  timeout 200 "$PY" -m benchmarks.frontend_parity run "$CLIPS_NPZ" "$DIR/frontend_gpu_parity.json" --device cuda
fi
timeout 480 "$PY" -m benchmarks.bench_gpu "$DIR/gpu_results.json" --budget-s 420 --device cuda
