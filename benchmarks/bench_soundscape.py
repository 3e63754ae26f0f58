"""Soundscape evaluation at the real size: windows/s per core and memory against the number of windows.

The audio: the phoebe MP3s of the commonest native rate, mixed to mono, tiled and written as
FLAC files at 32 kHz (the Sapsucker Woods soundscapes' format, so every window is decoded
and resampled to the student's 48 kHz, as on the real set), cut into BirdSet's 5 s windows.
The student: real size (``ClapConfig()`` + a linear head to 768, random weights;
:func:`benchmarks.bench_detect.make_model`). The path timed is the evaluation's
(:class:`birdbridge.evaluate.windows.SoundscapeWindows`): decode each file once, every
model space embeds the same windows (fp32, batches of 64, as ``birdbridge eval``), rows
streamed to disk, scored from there against 20 classes.

* ``student``: one model space (the distilled student): decode + embed + score;
* ``student_and_clap``: two model spaces (the student in teacher space and in its CLAP
  space, two forward passes per window) plus a derived space: the marginal cost of a space;
* ``decode_only``: a trivial embedder: decoding, resampling, disk and scoring alone, one core.

From these, per window: ``t_decode`` and ``t_space`` (one real-size forward pass), and the
projection of the real evaluation (205k windows, 6 model spaces in configs/paper/ssw60_table.yaml:
CLAP, random projection, distilled, 3 prompt arms) on this CPU and on one H200.

Memory: a fresh process per size runs the pass with a 768-d stand-in embedder over N and
4N windows and reports its peak RSS growth (VmHWM minus the RSS before the pass).

    python -m benchmarks.bench_soundscape [--minutes 10] [--out soundscape.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

THREADS = 2
RATE = 32000  # Sapsucker Woods soundscapes: 32 kHz FLAC
WINDOW_S = 5.0
REAL_WINDOWS = 205_000  # 285 h of Sapsucker Woods in 5 s windows
REAL_MODEL_SPACES = 6  # CLAP, random_projection, distilled, distilled[common|scientific|taxonomic]


def make_audio(folder: Path, minutes: float, file_minutes: float = 5.0) -> list[Path]:
    """Phoebe audio (the MP3s of the commonest native rate, mono) tiled to ``minutes``, as 32 kHz FLAC files."""
    from collections import Counter

    from birdbridge.data.audio_file import resample

    from .bench_detect import PHOEBE

    mp3 = sorted((PHOEBE / "audio").glob("*.mp3"))
    rate = Counter(sf.info(p).samplerate for p in mp3).most_common(1)[0][0]
    one = np.concatenate([sf.read(p, dtype="float32", always_2d=True)[0].mean(1) for p in mp3 if sf.info(p).samplerate == rate])
    one = resample(one, rate, RATE)
    per, total = int(file_minutes * 60 * RATE), int(minutes * 60 * RATE)
    tiled = np.tile(one, -(-total // len(one)))[:total]
    out = []
    for k in range(0, total, per):
        out.append(folder / f"soundscape_{k // per:03d}.flac")
        sf.write(out[-1], tiled[k : k + per], RATE, format="FLAC")
    return out


def windows_of(files: list[Path]) -> tuple[list[tuple[str, float, float]], np.ndarray]:
    from birdbridge.data.soundscapes import segment_grid

    inputs = [(str(p), a, b) for p in files for a, b in segment_grid(sf.info(p).duration, WINDOW_S, WINDOW_S)]
    targets = (np.random.default_rng(0).random((len(inputs), 20)) < 0.05).astype(np.uint8)
    return inputs, targets


class Trivial:
    """Decoding alone: a 768-d row per window from a few of its samples (no model)."""

    def __init__(self, sample_rate: int = 48000, window_samples: int = 480000, dim: int = 768):
        self.sample_rate, self.window_samples, self.dim = sample_rate, window_samples, dim
        self.proj = np.random.default_rng(0).standard_normal((64, dim)).astype(np.float32)

    def embed_windows(self, waves):
        return np.stack([np.asarray(w[:64], np.float32) for w in waves]) @ self.proj


def _pass(inputs, targets, spaces: dict, derived: dict, work: Path, workers: int) -> tuple[float, dict]:
    from birdbridge.evaluate.windows import SoundscapeWindows

    win = SoundscapeWindows(inputs, targets, log=lambda m: None)
    for name, emb in spaces.items():
        win.add_model(name, emb)
    for name, (src, fn) in derived.items():
        win.add_derived(name, src, fn)
    res = {n: {} for n in [*spaces, *derived]}
    text = np.random.default_rng(1).standard_normal((targets.shape[1], 768)).astype(np.float32)
    for n, r in res.items():
        emb = spaces.get(n) or spaces[derived[n][0]]
        win.request(n, text[:, : emb.dim] if emb.dim <= 768 else np.tile(text, (1, 2))[:, : emb.dim], r)
    t0 = time.perf_counter()
    stats = win.run(work, workers=workers)
    wall = time.perf_counter() - t0
    assert all("cmap" in r["zero_shot_soundscape"] for r in res.values())
    return wall, stats


RSS_WORKER = r"""
import json, sys
from pathlib import Path
import numpy as np
from benchmarks.bench_soundscape import Trivial, windows_of
from birdbridge.evaluate.windows import SoundscapeWindows
files = [Path(p) for p in json.loads(sys.argv[1])]
inputs, targets = windows_of(files)
def status(key):
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key)) / 1024
win = SoundscapeWindows(inputs, targets, log=lambda m: None)
win.add_model("stand-in", Trivial())
res = {}
win.request("stand-in", np.random.default_rng(1).standard_normal((targets.shape[1], 768)).astype(np.float32), res)
before = status("VmRSS:")
win.run(sys.argv[2], workers=0)
print(json.dumps({"windows": len(inputs), "rss_before_mib": round(before, 1),
                  "peak_growth_mib": round(status("VmHWM:") - before, 1), "rows_mib": round(len(inputs) * 768 * 4 / 2**20, 1)}))
"""


def rss_vs_windows(files: list[Path], work: Path, factor: int = 4) -> list[dict]:
    """Peak RSS growth of the pass over the files and over ``factor`` times as many (links to them)."""
    links = []
    for r in range(factor):
        for p in files:
            q = work / "links" / f"{r}_{p.name}"
            q.parent.mkdir(parents=True, exist_ok=True)
            if not q.exists():
                q.symlink_to(p)
            links.append(str(q))
    out = []
    root = Path(__file__).resolve().parents[1]
    for chosen in (links[: len(files)], links):
        proc = subprocess.run([sys.executable, "-c", RSS_WORKER, json.dumps(chosen), str(work / "rss")], cwd=root,
                              capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if proc.returncode:
            raise RuntimeError(proc.stderr[-800:])
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    return out


def run(minutes: float = 10.0) -> dict:
    import torch

    from birdbridge.encoders.factory import StudentEmbedder, load_audio_embedder
    from birdbridge.evaluate.windows import decode_workers

    from .bench_detect import make_model

    torch.set_num_threads(THREADS)
    cores = min(THREADS, os.cpu_count() or THREADS)
    with tempfile.TemporaryDirectory(prefix="bench_soundscape-") as tmp:
        tmp = Path(tmp)
        files = make_audio(tmp, minutes)
        inputs, targets = windows_of(files)
        student = load_audio_embedder(str(make_model(tmp)))  # fp32, as the evaluation embeds
        clap = StudentEmbedder(student.model, "clap", clap_space=True)
        workers = decode_workers("cpu")
        load = [round(os.getloadavg()[0], 2)]
        _pass(inputs[:8], targets[:8], {"student": student}, {}, tmp / "work", workers)  # warm: first-call costs
        walls = {"decode_only": _pass(inputs, targets, {"decode": Trivial()}, {}, tmp / "work", 0)[0],
                 "student": _pass(inputs, targets, {"student": student}, {}, tmp / "work", workers)[0],
                 "student_and_clap": _pass(inputs, targets, {"student": student, "clap": clap},
                                           {"mapped": ("clap", lambda v: v)}, tmp / "work", workers)[0]}
        load.append(round(os.getloadavg()[0], 2))
        n = len(inputs)
        t_space = (walls["student_and_clap"] - walls["student"]) / n  # one more forward pass per window
        t_decode = walls["decode_only"] / n  # one core
        r = {"soundscape_bench_windows": n, "soundscape_bench_files": len(files), "soundscape_bench_audio_min": minutes,
             "soundscape_bench_rate_hz": RATE, "soundscape_bench_threads": THREADS, "soundscape_bench_cores": cores,
             "soundscape_bench_decode_workers": workers, "soundscape_bench_load_avg": load,
             "soundscape_bench_walls_s": {k: round(v, 2) for k, v in walls.items()},
             "soundscape_windows_per_s_per_core": round(n / walls["student"] / cores, 3),
             "soundscape_two_spaces_windows_per_s_per_core": round(n / walls["student_and_clap"] / cores, 3),
             "soundscape_decode_windows_per_s_per_core": round(n / walls["decode_only"], 1),
             "soundscape_space_s_per_window": round(t_space, 4), "soundscape_decode_s_per_window": round(t_decode, 5)}
        # the real evaluation: every window decoded once (one core), then each model space's forward pass
        cpu_s = REAL_WINDOWS * (t_decode + REAL_MODEL_SPACES * max(t_space, 0.0))
        r["soundscape_real_eval_cpu_h"] = round(cpu_s / 3600, 1)
        gpu = _load_json(Path(__file__).with_name("gpu_results.json"))
        infer = max((e.get("items_per_s", 0) for e in gpu.get("infer", [])), default=0)
        if infer:
            # on the card: the forward passes at its inference rate; decoding in 4 worker processes beside it
            gpu_s = max(REAL_WINDOWS * REAL_MODEL_SPACES / infer, REAL_WINDOWS * t_decode / 4)
            r["soundscape_real_eval_gpu_min"] = round(gpu_s / 60, 1)
            r["soundscape_real_eval_gpu_device"] = gpu.get("device")
            r["soundscape_real_eval_gpu_infer_per_s"] = round(infer, 1)
        r["soundscape_rss_vs_windows"] = rss_vs_windows(files, tmp)
    return r


def _load_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def section(r: dict) -> list[str]:
    """The report's section (docs/PERFORMANCE.md), from the keys :func:`run` writes."""
    if "soundscape_bench_windows" not in r:
        return ["Not run in this suite run.", ""]
    w, mem = r["soundscape_bench_walls_s"], r.get("soundscape_rss_vs_windows") or []
    out = [f"`birdbridge eval`'s soundscape pass (`birdbridge/evaluate/windows.py`) on {r['soundscape_bench_audio_min']:g} min "
           f"of phoebe audio tiled into {r['soundscape_bench_files']} FLAC files at {r['soundscape_bench_rate_hz'] / 1000:g} kHz "
           f"(the Sapsucker Woods format), {r['soundscape_bench_windows']} windows of 5 s; real-size student (`ClapConfig()` "
           f"+ head, random weights, fp32, {r['soundscape_bench_threads']} threads, {r['soundscape_bench_decode_workers']} "
           f"decoding workers as eval picks on this CPU). Load average {' -> '.join(map(str, r['soundscape_bench_load_avg']))}: "
           "a shared machine, absolute rates move with other jobs (`benchmarks/bench_soundscape.py`).", "",
           "| pass | wall s | windows/s per core |", "|---|---|---|",
           f"| decoding + resampling + disk + scoring only (one core) | {w['decode_only']:.1f} | "
           f"{r['soundscape_decode_windows_per_s_per_core']:.1f} |",
           f"| **one model space** (decode once, embed, score) | {w['student']:.1f} | "
           f"**{r['soundscape_windows_per_s_per_core']:.3g}** |",
           f"| two model spaces + one derived (the same decoded windows) | {w['student_and_clap']:.1f} | "
           f"{r['soundscape_two_spaces_windows_per_s_per_core']:.3g} |", "",
           f"Per window: decoding {1e3 * r['soundscape_decode_s_per_window']:.1f} ms (once, whatever the number of spaces), "
           f"one real-size forward pass {1e3 * r['soundscape_space_s_per_window']:.0f} ms on {r['soundscape_bench_cores']} cores. "
           f"**The real evaluation** (Sapsucker Woods, 285 h = {REAL_WINDOWS:,} windows, {REAL_MODEL_SPACES} model spaces in "
           f"`configs/paper/ssw60_table.yaml`: CLAP, random projection, distilled, three prompt arms; the text mapping and the "
           f"zero-shot combination come from CLAP's rows): about **{r['soundscape_real_eval_cpu_h']:,.0f} h on this CPU**"]
    if r.get("soundscape_real_eval_gpu_min") is not None:
        out[-1] += (f"; on one {r['soundscape_real_eval_gpu_device']} about **{r['soundscape_real_eval_gpu_min']:.0f} min** "
                    f"({REAL_WINDOWS * REAL_MODEL_SPACES:,} forward passes at its measured "
                    f"{r['soundscape_real_eval_gpu_infer_per_s']:.0f} clips/s, `gpu_results.json`; decoding in 4 worker "
                    "processes keeps up if one core decodes faster than a quarter of that rate per space, which the row "
                    "above shows).")
    else:
        out[-1] += "."
    out += ["", "Before this pass every space decoded every window again, alone (7 decodes per window with the unseen "
            "model, which was embedded on windows it is never scored on), and held its `[N, D]` rows in memory "
            "(205k x 768 x 4 B = 0.6 GB per space, about 5 GB for the table)."]
    if mem:
        out += ["", "Peak RSS growth of the pass against the number of windows (fresh process each, a 768-d stand-in "
                "embedder so that only the pass's own memory shows; rows stream to disk and are scored from there in "
                "blocks):", "", "| windows | peak RSS growth MiB | the rows would take MiB |", "|---|---|---|"]
        out += [f"| {m['windows']} | {m['peak_growth_mib']:.1f} | {m['rows_mib']:.1f} |" for m in mem]
    return out + [""]


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    r = run(a.minutes)
    print(json.dumps(r, indent=1))
    if a.out:
        a.out.write_text(json.dumps(r, indent=1) + "\n")
    return r


if __name__ == "__main__":
    main()
