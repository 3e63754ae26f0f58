"""Front-end speed: birdbridge's torch ClapFrontend vs transformers' ClapFeatureExtractor.

A batch of 32 ten-second clips at 48 kHz (BioLingual's extractor settings): the real
phoebe recordings (``../shared/data/phoebe``, tiled to 10 s) when present -- real song
is what decides how many frames the default float32 path redoes in float64 -- else
Gaussian noise (``frontend_clips`` says which). HF is timed both ways users call it (one
call per clip, and one call with the list) and credited with the faster.

The headline ``frontend_speedup`` is both sides at the machine's default threading (what
a user gets: torch's intra-op threads, numpy's BLAS threads). ``..._one_thread`` pins both
to one thread (torch.set_num_threads + threadpoolctl for numpy's BLAS). Repeats are
interleaved (HF, ours, HF, ...) so load from other processes hits both sides alike,
with a pause before each so one case's spinning thread pool does not slow the next;
medians are reported.

``--device cuda`` runs our side on the GPU (HF's extractor is numpy: it stays on the CPU),
timed with the input already on the card and with the host-to-device copy included, and
checks parity there too: cuFFT rounds differently from MKL, and the float64 redo criterion
was calibrated on MKL. ``--clips-npz`` reads pre-decoded clips (a machine without
``../shared`` or an audio decoder). Run:
``python benchmarks/bench_frontend.py [out.json] [--device cuda] [--clips-npz clips.npz]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch


def _time(fn, device: str = "cpu") -> float:
    t0 = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


PHOEBE = Path(__file__).resolve().parents[2] / "shared" / "data" / "phoebe"
NPZ_INT_SCALE = 2**23  # clips exported as 24-bit integers (benchmarks.frontend_parity export)


def load_npz(npz: str | Path) -> list[np.ndarray]:
    """Clips decoded at 48 kHz elsewhere, in order, as float32 (``frontend_parity export`` stores 24-bit ints)."""
    with np.load(npz) as z:
        arrays = [z[k] for k in z.files]
    return [(a / NPZ_INT_SCALE if np.issubdtype(a.dtype, np.integer) else a).astype(np.float32) for a in arrays]


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    """The parity metric throughout: max|got - ref| / max|ref| (dB features)."""
    got, ref = got.double().cpu(), ref.double()
    return float((got - ref).abs().max() / ref.abs().max())


def _clips(batch: int, n: int, seed: int, npz: str | None = None) -> tuple[list[np.ndarray], str]:
    import csv

    if npz is not None:
        clips = load_npz(npz)[:batch]
        if len(clips) == batch:
            return [np.resize(c, n).astype(np.float32) for c in clips], "phoebe"
    if (PHOEBE / "recordings.csv").is_file():
        from birdbridge.data.audio import load_audio

        with open(PHOEBE / "recordings.csv", newline="") as f:
            paths = [PHOEBE / r["path"] for r in csv.DictReader(f)][:batch]
        if len(paths) == batch:
            return [np.resize(load_audio(p, 48000), n).astype(np.float32) for p in paths], "phoebe"
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(n)).astype(np.float32) for _ in range(batch)], "noise"


def _parity(ours, fe, clips: list[np.ndarray], tensor: torch.Tensor) -> float:
    """max|ours - hf| / max|hf| over the batch (clips are exactly 10 s: no crop)."""
    return rel_err(ours(tensor, crop="start"), fe(clips, sampling_rate=fe.sampling_rate, return_tensors="pt").input_features)


def run(batch: int = 32, seconds: float = 10.0, repeats: int = 7, seed: int = 0, device: str = "cpu",
        clips_npz: str | None = None) -> dict:
    from threadpoolctl import threadpool_limits
    from transformers import ClapFeatureExtractor
    from transformers.utils import logging as hf_logging

    from birdbridge.encoders.frontend import ClapFrontend

    hf_logging.set_verbosity_error()
    fe = ClapFeatureExtractor(truncation="rand_trunc")
    sr = fe.sampling_rate
    ours = ClapFrontend.from_feature_extractor(fe).to(device)
    ours_pure = ClapFrontend.from_feature_extractor(fe, exact_range_db=None).to(device)
    ours64 = ClapFrontend.from_feature_extractor(fe, dtype=torch.float64).to(device)
    clips, source = _clips(batch, int(seconds * sr), seed, clips_npz)
    host = torch.from_numpy(np.stack(clips))
    tensor = host.to(device)
    default_threads = torch.get_num_threads()

    def one_thread(fn):
        def call():
            torch.set_num_threads(1)
            try:
                with threadpool_limits(limits=1):
                    fn()
            finally:
                torch.set_num_threads(default_threads)

        return call

    hf_per_clip = lambda: [fe(c, sampling_rate=sr, return_tensors="pt") for c in clips]  # noqa: E731
    hf_batched = lambda: fe(clips, sampling_rate=sr, return_tensors="pt")  # noqa: E731
    cases = {
        "hf_per_clip": hf_per_clip,
        "hf_batched": hf_batched,
        "ours": lambda: ours(tensor),
        "ours_pure_f32": lambda: ours_pure(tensor),
        "ours_f64": lambda: ours64(tensor),
    }
    if device == "cpu":
        cases.update({
            "hf_per_clip_1t": one_thread(hf_per_clip),
            "hf_batched_1t": one_thread(hf_batched),
            "ours_1t": one_thread(lambda: ours(tensor)),
        })
    else:  # what a training step pays when its batch starts in host memory
        cases["ours_from_host"] = lambda: ours(host)
    for fn in cases.values():  # warm-up: allocator, FFT plans, lazy imports
        fn()
    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(repeats):
        for name, fn in cases.items():
            # let the previous case's thread pools go idle first: OpenBLAS threads spin for
            # a while after numpy's matmul, and whichever torch case ran right after HF
            # measured up to 2.4x slower for it (pure float32: 0.064 s vs 0.151 s)
            time.sleep(0.3)
            times[name].append(_time(fn, device))
    med = {k: statistics.median(v) for k, v in times.items()}
    hf = min(med["hf_per_clip"], med["hf_batched"])  # credit HF with its faster mode
    # what share of frames the default path redid in float64 on these clips
    fixed = ours.fix_length(tensor, crop="start")
    redo = float(ours.mel_power(fixed)[1].float().mean())
    result = {
        "frontend_device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
        "frontend_clips": source,
        "frontend_ours_s": med["ours"],
        "frontend_hf_s": hf,
        "frontend_speedup": hf / med["ours"],
        "frontend_hf_per_clip_s": med["hf_per_clip"],
        "frontend_hf_batched_s": med["hf_batched"],
        "frontend_ours_pure_f32_s": med["ours_pure_f32"],
        "frontend_speedup_pure_f32": hf / med["ours_pure_f32"],
        "frontend_ours_f64_s": med["ours_f64"],
        "frontend_speedup_f64": hf / med["ours_f64"],
        "frontend_redo_fraction": redo,
        "frontend_exact_range_db": ours.exact_range_db,
        "frontend_batch": batch,
        "frontend_clip_s": seconds,
        "frontend_repeats": repeats,
        "frontend_torch_default_threads": default_threads,
    }
    if device == "cpu":
        hf1 = min(med["hf_per_clip_1t"], med["hf_batched_1t"])
        result.update({
            "frontend_ours_one_thread_s": med["ours_1t"],
            "frontend_hf_one_thread_s": hf1,
            "frontend_speedup_one_thread": hf1 / med["ours_1t"],
        })
    else:
        result.update({
            "frontend_ours_from_host_s": med["ours_from_host"],
            "frontend_speedup_from_host": hf / med["ours_from_host"],
            "frontend_parity_default": _parity(ours, fe, clips, tensor),
            "frontend_parity_pure_f32": _parity(ours_pure, fe, clips, tensor),
            "frontend_parity_f64": _parity(ours64, fe, clips, tensor),
        })
    for k, v in result.items():
        print(f"{k:28s} {v:.4g}" if isinstance(v, float) else f"{k:28s} {v}")
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", help="write the results here as JSON")
    ap.add_argument("--device", default="cpu", help="where our front end runs (HF's always runs on the CPU)")
    ap.add_argument("--clips-npz", help="pre-decoded 48 kHz clips instead of ../shared/data/phoebe")
    args = ap.parse_args(argv)
    result = run(device=args.device, clips_npz=args.clips_npz)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
