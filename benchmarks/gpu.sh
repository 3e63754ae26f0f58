#!/usr/bin/env bash
# The prepared GPU benchmark on one H100/H200, in parts (GPU_PARTS, default all):
#   models  (<= 8 min) steps/s, clips/s, images/s and prompts/s at growing batch sizes up to the memory limit,
#           fraction of peak bf16 FLOP/s (torch.utils.flop_counter), ours-vs-naive distillation step
#           -> gpu_results.json; with CLIPS_NPZ (made by `python -m benchmarks.frontend_parity export clips.npz`,
#           since the GPU machine has no ../shared) also the front end on the card and its parity on every
#           phoebe recording -> frontend_gpu.json, frontend_gpu_parity.json
#   data    (<= 6 min) the student trained from shards (data prepare -> ShardClipDataset -> pinned batches):
#           fraction of step time waiting for data; torch.compile / channels-last clips/s and fraction of peak
#           -> gpu_data.json
# Files go to $OUT when set, else benchmarks/.
#   [GPU_PARTS=data] [CLIPS_NPZ=clips.npz] bash benchmarks/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
PARTS=${GPU_PARTS:-all}
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv || true
nproc || true
DIR=${OUT:-benchmarks}
if [[ $PARTS == all || $PARTS == *models* ]]; then
  if [ -n "${CLIPS_NPZ:-}" ]; then
    timeout 200 "$PY" -m benchmarks.bench_frontend "$DIR/frontend_gpu.json" --device cuda --clips-npz "$CLIPS_NPZ"
    timeout 200 "$PY" -m benchmarks.frontend_parity run "$CLIPS_NPZ" "$DIR/frontend_gpu_parity.json" --device cuda
  fi
  timeout 480 "$PY" -m benchmarks.bench_gpu "$DIR/gpu_results.json" --budget-s 420 --device cuda
fi
if [[ $PARTS == all || $PARTS == *data* ]]; then
  timeout 400 "$PY" -m benchmarks.bench_gpu_data "$DIR/gpu_data.json" --device cuda --batch 512 --budget-s 360
fi
