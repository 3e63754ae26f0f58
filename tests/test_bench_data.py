"""The data benchmarks' code paths, run small: they must keep working between `make bench` runs.

``benchmarks/bench_loader.py`` (in ``make bench``) and ``benchmarks/bench_gpu_data.py`` (what
``benchmarks/gpu.sh`` runs on a lent GPU: training from shards, compile / channels-last; here
on the CPU with a tiny student). Only that they run and report what they should is checked:
their numbers are for the benchmark runs, never asserted here.
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


def test_loader_benchmark_runs_small(tmp_path):
    from benchmarks.bench_loader import run

    res = run(n=6, max_s=20.0, seconds=0.5, repeats=1, batch=4, variants=("raw", "shards:pcm16@48000"),
              workdir=str(tmp_path))
    v = res["loader"]["variants"]
    assert v["raw"]["clips_per_s"] > 0 and v["shards:pcm16@48000"]["clips_per_s"] > 0
    assert v["shards:pcm16@48000"]["bytes_per_audio_hour"] > 0 and v["raw"]["peak_rss_mb"] >= v["raw"]["base_rss_mb"]
    assert res["loader_shards_over_raw"] > 0 and res["loader_clips_per_s_per_core"] == v["shards:pcm16@48000"]["clips_per_s"]
    q = res["loader"]["int16_at_48k"]
    assert q["snr_db_min"] > 40 and 0 <= q["logmel_db_max_abs_diff"] < 3
    assert res["loader"]["components"]["file_resample_crop_ms"] > 0
