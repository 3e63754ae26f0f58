"""The GPU data benchmark's code paths, run on the CPU with a tiny student (no GPU here).

``benchmarks/bench_gpu_data.py`` is what ``benchmarks/gpu.sh`` runs on a lent GPU: training
from shards (time waiting for data) and compile / channels-last. This checks that it runs
end to end and reports what it should; its numbers mean something only on a GPU.
"""

from __future__ import annotations

import math


def test_gpu_data_benchmark_runs_on_cpu(tmp_path, tiny_clap_dir):
    from benchmarks.bench_gpu_data import run

    res = run(device="cpu", batch=4, workers=1, steps=2, n=8, repeats=1, budget_s=60, student_path=str(tiny_clap_dir),
              workdir=str(tmp_path))
    shards = res["from_shards"]
    assert "error" not in shards, shards
    assert 0.0 <= shards["data_wait_fraction"] <= 1.0 and shards["clips_per_s"] > 0 and shards["workers"] == 1
    assert shards["recordings"] == 8 and shards["resident_batch_clips_per_s"] > 0
    runs = res["compile"]["runs"]
    for key in ("eager", "channels_last"):
        assert "error" not in runs[key], runs[key]
        assert runs[key]["clips_per_s"] > 0 and math.isfinite(runs[key]["step_s"])
    assert "skipped" in runs["compile"]  # torch.compile only on a GPU
    assert res["compile"]["flops_per_step"] > 0
