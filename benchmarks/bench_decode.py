"""Decode + resample throughput (clips/s) through a torch DataLoader with 0, 1 and 2 workers.

Uses the phoebe MP3s (44.1/48 kHz, mono/stereo, ~6 s) when ``../shared/data/phoebe`` exists,
else generated 6 s 22.05 kHz WAVs (the SSW60 / iNatSounds format). Every clip is decoded to
48 kHz mono (the CLAP rate) and cropped/padded to 6 s, as a training loader would.

    .venv/bin/python benchmarks/bench_decode.py [out.json]
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, Dataset

from birdbridge.data.audio import crop_or_pad, load_audio

SR = 48000
CLIP_S = 6.0
PHOEBE = Path(__file__).resolve().parents[2] / "shared" / "data" / "phoebe" / "audio"


class _Clips(Dataset):
    def __init__(self, paths: list[Path], repeats: int):
        self.paths = paths * repeats

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        wave = load_audio(self.paths[i], SR)
        return torch.from_numpy(crop_or_pad(wave, int(CLIP_S * SR), "start"))


def _generated(d: Path, n: int = 40) -> list[Path]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        p = d / f"gen_{i:03d}.wav"
        sf.write(p, (0.2 * rng.standard_normal(int(CLIP_S * 22050))).astype(np.float32), 22050, subtype="PCM_16")
        out.append(p)
    return out


def _run(paths: list[Path], workers: int, repeats: int, batch_size: int = 8) -> dict:
    loader = DataLoader(_Clips(paths, repeats), batch_size=batch_size, num_workers=workers, shuffle=False)
    t0 = time.perf_counter()
    n = 0
    first = None
    for batch in loader:
        if first is None:
            first = time.perf_counter() - t0  # includes worker start-up
        n += len(batch)
    dt = time.perf_counter() - t0
    return {"workers": workers, "clips": n, "seconds": round(dt, 3), "clips_per_s": round(n / dt, 1), "first_batch_s": round(first or 0.0, 3)}


def main(out_json: str | Path | None = None, repeats: int = 3, workers: tuple[int, ...] = (0, 1, 2)) -> dict:
    torch.set_num_threads(1)  # decoding is the work measured, not intra-op threads
    with tempfile.TemporaryDirectory() as tmp:
        if PHOEBE.is_dir():
            paths, source = sorted(PHOEBE.glob("*.mp3")), "phoebe mp3 (44.1/48 kHz)"
        else:
            paths, source = _generated(Path(tmp)), "generated wav (22.05 kHz)"
        results = {"source": source, "n_files": len(paths), "target_sr": SR, "clip_s": CLIP_S, "runs": [_run(paths, w, repeats) for w in workers]}
    for r in results["runs"]:
        print(f"{results['source']}: {r['workers']} workers: {r['clips_per_s']:.1f} clips/s ({r['clips']} clips in {r['seconds']:.2f} s)")
    if out_json:
        Path(out_json).write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else None)
