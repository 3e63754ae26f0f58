"""Front-end speed: birdbridge's torch ClapFrontend vs transformers' ClapFeatureExtractor.

A batch of 32 random 10 s clips at 48 kHz (BioLingual's extractor settings). HF is
timed both ways users call it (one call per clip, and one call with the list); it loops
over clips and frames in numpy either way, on one core. Ours is timed on one torch
thread (the headline figure: same core count as HF) and with torch's default thread
count. On a shared, oversubscribed machine torch's multi-threaded kernels can be many
times slower than one thread, so the default-thread figure is only informative.
Repeats are interleaved (HF, ours, HF, ...) so load from other processes hits both
sides alike; medians are reported. Run: ``python benchmarks/bench_frontend.py [out.json]``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch


def _time(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def run(batch: int = 32, seconds: float = 10.0, repeats: int = 5, seed: int = 0) -> dict:
    from transformers import ClapFeatureExtractor
    from transformers.utils import logging as hf_logging

    from birdbridge.encoders.frontend import ClapFrontend

    hf_logging.set_verbosity_error()
    fe = ClapFeatureExtractor(truncation="rand_trunc")
    sr = fe.sampling_rate
    ours32 = ClapFrontend.from_feature_extractor(fe)
    ours64 = ClapFrontend.from_feature_extractor(fe, dtype=torch.float64)
    rng = np.random.default_rng(seed)
    clips = [(0.1 * rng.standard_normal(int(seconds * sr))).astype(np.float32) for _ in range(batch)]
    tensor = torch.from_numpy(np.stack(clips))

    default_threads = torch.get_num_threads()

    def one_thread(fn):
        def call():
            torch.set_num_threads(1)
            try:
                fn()
            finally:
                torch.set_num_threads(default_threads)

        return call

    cases = {
        "hf_per_clip": lambda: [fe(c, sampling_rate=sr, return_tensors="pt") for c in clips],
        "hf_batched": lambda: fe(clips, sampling_rate=sr, return_tensors="pt"),
        "ours": one_thread(lambda: ours32(tensor)),
        "ours_f64": one_thread(lambda: ours64(tensor)),
        "ours_default_threads": lambda: ours32(tensor),
    }
    for fn in cases.values():  # warm-up: allocator, FFT plans, lazy imports
        fn()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            times[name].append(_time(fn))
    med = {k: statistics.median(v) for k, v in times.items()}
    hf = min(med["hf_per_clip"], med["hf_batched"])  # credit HF with its faster mode
    result = {
        "frontend_ours_s": med["ours"],
        "frontend_hf_s": hf,
        "frontend_speedup": hf / med["ours"],
        "frontend_hf_per_clip_s": med["hf_per_clip"],
        "frontend_hf_batched_s": med["hf_batched"],
        "frontend_ours_f64_s": med["ours_f64"],
        "frontend_speedup_f64": hf / med["ours_f64"],
        "frontend_ours_default_threads_s": med["ours_default_threads"],
        "frontend_speedup_default_threads": hf / med["ours_default_threads"],
        "frontend_batch": batch,
        "frontend_clip_s": seconds,
        "frontend_repeats": repeats,
        "frontend_torch_default_threads": default_threads,
    }
    for k, v in result.items():
        print(f"{k:28s} {v:.4g}" if isinstance(v, float) else f"{k:28s} {v}")
    return result


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    result = run()
    if argv:
        out = Path(argv[0])
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
