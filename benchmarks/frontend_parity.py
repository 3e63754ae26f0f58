"""Front-end parity with ``ClapFeatureExtractor`` on every phoebe recording, on any device, per redo threshold.

The float32 path's redo criterion (``EXACT_RANGE_DB``) was calibrated on CPU (MKL) FFT rounding; a GPU's
cuFFT rounds differently, so this re-measures the worst error there. A GPU machine has neither
``../shared`` nor an audio decoder, so the recordings travel as one ``.npz``:

    python -m benchmarks.frontend_parity export clips.npz        # here: decode all recordings at 48 kHz
    python -m benchmarks.frontend_parity run clips.npz --device cuda [out.json]

The export stores 24-bit integers (the float32 decode does not fit the device's 64 MiB transfer);
their quantisation noise sits ~140 dB below full scale, far under the -100 dB floor. Each recording is
measured as its first 10 s and tiled to 10 s, one clip per call, as ``max|ours - hf| / max|hf|``.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import torch

from .bench_frontend import NPZ_INT_SCALE, PHOEBE, load_npz, rel_err

THRESHOLDS = (None, 70.0, 75.0, 78.0, 80.0, 82.0, 85.0)


def export(out: Path) -> int:
    from birdbridge.data.audio import load_audio

    with open(PHOEBE / "recordings.csv", newline="") as f:
        paths = [PHOEBE / r["path"] for r in csv.DictReader(f)]
    ints = [np.round(load_audio(p, 48000).astype(np.float64) * NPZ_INT_SCALE).astype(np.int32) for p in paths]
    np.savez_compressed(out, *ints)
    return len(ints)


def run(clips_npz: Path, device: str = "cpu") -> dict:
    from transformers import ClapFeatureExtractor

    from birdbridge.encoders.frontend import ClapFrontend

    fe = ClapFeatureExtractor(truncation="rand_trunc")
    clips = load_npz(clips_npz)
    fronts = {str(db): ClapFrontend.from_feature_extractor(fe, exact_range_db=db).to(device) for db in THRESHOLDS}
    fronts["f64"] = ClapFrontend.from_feature_extractor(fe, dtype=torch.float64).to(device)
    n = fe.nb_max_samples
    result: dict = {"device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu", "recordings": len(clips)}
    for mode in ("first_10s", "tiled_10s"):
        worst = dict.fromkeys(fronts, 0.0)
        redone = {k: [0, 0] for k in fronts if k not in ("None", "f64")}
        for c in clips:
            a = c[:n] if mode == "first_10s" else np.resize(c, n).astype(np.float32)
            ref = fe(a, sampling_rate=fe.sampling_rate, return_tensors="pt").input_features
            x = torch.from_numpy(a).to(device)
            for k, front in fronts.items():
                worst[k] = max(worst[k], rel_err(front([x], crop="start"), ref))
                if k in redone:
                    at_risk = front.mel_power(front.fix_length([x], crop="start"))[1]
                    redone[k][0] += int(at_risk.sum())
                    redone[k][1] += at_risk.numel()
        result[mode] = {"max_rel_err": worst, "frames_redone": {k: a / b for k, (a, b) in redone.items()}}
        print(mode, json.dumps(result[mode]), flush=True)
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="verb", required=True)
    ex = sub.add_parser("export", help="decode ../shared/data/phoebe into one .npz")
    ex.add_argument("npz", type=Path)
    rn = sub.add_parser("run", help="measure parity on a device")
    rn.add_argument("npz", type=Path)
    rn.add_argument("out", nargs="?", type=Path)
    rn.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    if args.verb == "export":
        print(f"wrote {export(args.npz)} recordings to {args.npz}")
        return
    result = run(args.npz, args.device)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
