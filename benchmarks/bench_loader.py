"""Training-loader throughput per core: 10 s, 48 kHz crops in batches, from raw files and from shards.

Data: iNatSounds-like recordings -- 22.05 kHz 16-bit WAVs whose lengths are drawn from the
real iNatSounds 2024 ``test.json`` durations (mean 18.5 s; capped at ``max_s``), made by
tiling the phoebe recordings (decoded at 22.05 kHz); tones in noise when ../shared is absent.

Each loader runs in its own process on one core (torch and BLAS at one thread; soxr is
single-threaded), as one DataLoader worker would, through the training code itself
(``AudioClipDataset`` / ``ShardClipDataset``, ``EpochShuffleSampler``, ``collate_clips``):

    raw_whole           decode the whole file, resample to 48 kHz, then crop (the loader before shards)
    raw                 crop first, decode and resample only the crop (``data/crop.py``)
    shards:ENC@RATE     ``data prepare`` shards: pcm16 or flac, stored at (at most) 48 kHz or the native rate;
                        since the source is 22.05 kHz, ``@48000`` keeps it at 22.05 kHz (``stored_rate``: never
                        upsampled, for train/eval parity) and resamples each crop as it is read

Reported per loader: clips/s (median of interleaved repeats), peak RSS of the process (what
one loader worker holds), and for shards the disk bytes per hour of audio. The ratio
``loader_shards_over_raw`` compares the chosen encoding (pcm16 at 48 kHz) with ``raw`` in the
same run. Page cache holds the whole test set, so disk reads are not measured here (the
projection in docs/PERFORMANCE.md works out the bandwidth the real run needs).

Also measured: what storing 48 kHz audio as int16 changes -- the quantisation's SNR and the
largest change of the student's log-mel features (BioLingual's front end).

    python -m benchmarks.bench_loader [out.json] [--n 48] [--seconds 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SR, CLIP_S, NATIVE = 48000, 10.0, 22050
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
CHOSEN = "shards:pcm16@48000"
VARIANTS = ("raw_whole", "raw", "shards:pcm16@48000", "shards:pcm16@native", "shards:flac@48000", "shards:flac@native")


# --------------------------------------------------------------------------- data


def _durations(n: int, max_s: float, seed: int = 0) -> tuple[np.ndarray, str]:
    test_json = SHARED / "inat_sounds" / "test.json"
    rng = np.random.default_rng(seed)
    if test_json.is_file():
        d = np.array([a["duration"] for a in json.loads(test_json.read_text())["audio"] if a.get("duration")], float)
        return np.minimum(rng.choice(d, n), max_s), f"iNatSounds test.json durations (capped at {max_s:g} s)"
    return np.full(n, 18.5), "18.5 s each (no test.json)"


def inat_stats() -> dict | None:
    """Facts of the real iNatSounds test split the projection scales from (None without ../shared)."""
    test_json = SHARED / "inat_sounds" / "test.json"
    if not test_json.is_file():
        return None
    d = json.loads(test_json.read_text())
    cls = {c["id"]: c.get("class") for c in d["categories"]}
    label = {a["audio_id"]: a["category_id"] for a in d["annotations"]}
    dur = np.array([a["duration"] for a in d["audio"]], float)
    aves = np.array([cls.get(label.get(a["id"])) == "Aves" for a in d["audio"]])
    return {"source": "inat_sounds/test.json", "recordings": len(dur), "hours": round(dur.sum() / 3600, 1),
            "mean_s": round(float(dur.mean()), 2), "median_s": round(float(np.median(dur)), 2),
            "aves_recordings_fraction": round(float(aves.mean()), 4), "aves_hours_fraction": round(float(dur[aves].sum() / dur.sum()), 4),
            "aves_mean_s": round(float(dur[aves].mean()), 2), "shorter_than_clip_fraction": round(float((dur < CLIP_S).mean()), 4)}


def _sources() -> tuple[list[np.ndarray], str]:
    from birdbridge.data.audio import load_audio

    mp3s = sorted((SHARED / "phoebe" / "audio").glob("*.mp3"))
    if mp3s:
        return [load_audio(p, NATIVE) for p in mp3s], "phoebe recordings at 22.05 kHz, tiled"
    rng = np.random.default_rng(1)
    t = np.arange(6 * NATIVE) / NATIVE
    return [(0.3 * np.sin(2 * np.pi * (800 + 50 * k) * t) + 0.05 * rng.standard_normal(len(t))).astype(np.float32)
            for k in range(10)], "generated tones in noise"


def make_dataset(d: Path, n: int, max_s: float) -> dict:
    """``n`` WAVs and their CSV; lengths from the real duration distribution."""
    import soundfile as sf

    durs, dur_src = _durations(n, max_s)
    srcs, src = _sources()
    (d / "audio").mkdir(parents=True, exist_ok=True)
    rows = ["path,scientific_name"]
    for i, sec in enumerate(durs):
        base = srcs[i % len(srcs)]
        w = np.tile(base, int(np.ceil(sec * NATIVE / len(base))))[: max(1, int(sec * NATIVE))]
        sf.write(d / "audio" / f"r{i:04d}.wav", w, NATIVE, subtype="PCM_16")
        rows.append(f"audio/r{i:04d}.wav,Species {i % 7}")
    (d / "rec.csv").write_text("\n".join(rows) + "\n")
    return {"n_recordings": n, "hours": round(float(durs.sum()) / 3600, 3), "mean_s": round(float(durs.mean()), 1),
            "max_s": round(float(durs.max()), 1), "durations": dur_src, "audio": src,
            "wav_bytes": sum(p.stat().st_size for p in (d / "audio").glob("*.wav"))}


# --------------------------------------------------------------------------- one loader, one process


def _loader(variant: str, d: Path, batch: int):
    import torch
    from torch.utils.data import DataLoader

    from birdbridge.data.audio import crop_or_pad, load_audio
    from birdbridge.data.loaders import load_collection
    from birdbridge.distill.data import AudioClipDataset, EpochShuffleSampler, clip_dataset, collate_clips

    class WholeFile(AudioClipDataset):  # the loader before shards: whole decode + resample, then crop
        def _crop(self, i, rng):
            it = self.items[i]
            return crop_or_pad(load_audio(self.collection.resolve(it.path), self.sample_rate), self.n_samples,
                               self.crop, rng, pad="repeatpad")

    if variant.startswith("shards:"):
        coll = load_collection("shards", d / variant.split(":", 1)[1].replace("@", "-"))
        ds = clip_dataset(coll, coll.audio, SR, int(CLIP_S * SR), crop="random", seed=0)
    else:
        coll = load_collection("csv", d / "rec.csv")
        ds = (WholeFile if variant == "raw_whole" else AudioClipDataset)(coll, coll.audio, SR, int(CLIP_S * SR), seed=0)
    if len(ds) < batch:
        raise ValueError(f"{len(ds)} recordings make no batch of {batch}")
    sampler = EpochShuffleSampler(len(ds), seed=0, batch_size=batch)
    torch.set_num_threads(1)
    return sampler, DataLoader(ds, batch_size=batch, sampler=sampler, drop_last=True, collate_fn=collate_clips)


def _rss_mb(field: str) -> float:
    """VmRSS / VmHWM of this process: the peak belongs to this address space (ru_maxrss survives exec,
    so a spawned child would report its parent's size)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _measure_loader(variant: str, d: Path, batch: int, seconds: float) -> dict:
    sampler, loader = _loader(variant, d, batch)
    base = _rss_mb("VmRSS")  # interpreter, torch and the dataset object: what a worker holds before reading
    epoch, clips, t0, first = 0, 0, None, None
    while True:
        sampler.set_epoch(epoch)
        for b in loader:
            if t0 is None:  # the first batch opens files and maps chunks: not the steady state
                t0, first = time.perf_counter(), b
                continue
            assert b["waves"] is not None and tuple(b["waves"].shape) == (batch, int(CLIP_S * SR))
            clips += batch
            if time.perf_counter() - t0 >= seconds:
                break
        else:
            epoch += 1
            continue
        break
    dt = time.perf_counter() - t0
    return {"clips": clips, "seconds": round(dt, 2), "clips_per_s": round(clips / dt, 1),
            "peak_rss_mb": _rss_mb("VmHWM"), "base_rss_mb": base, "skipped": len(first["skipped"])}


def _run(variant: str, d: Path, batch: int, seconds: float) -> dict:
    """One loader in a fresh interpreter: its peak RSS is this loader's alone."""
    root = Path(__file__).resolve().parents[1]
    code = ("import json, sys; from benchmarks.bench_loader import _measure_loader; "
            "print('RESULT ' + json.dumps(_measure_loader(sys.argv[1], __import__('pathlib').Path(sys.argv[2]), "
            "int(sys.argv[3]), float(sys.argv[4]))))")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    res = subprocess.run([sys.executable, "-c", code, variant, str(d), str(batch), str(seconds)], cwd=root, env=env,
                         capture_output=True, text=True, timeout=seconds * 20 + 300)
    line = next((ln for ln in res.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if res.returncode != 0 or line is None:
        raise RuntimeError(f"loader {variant} failed (exit {res.returncode}): {res.stderr[-2000:]}")
    return json.loads(line[7:])


# --------------------------------------------------------------------------- where a clip's time goes


def components(d: Path, batch: int, reps: int = 3) -> dict:
    """ms per clip of each part of the two loaders, timed apart in this process (one thread)."""
    import soundfile as sf
    import torch

    from birdbridge.data.audio_file import resample
    from birdbridge.data.shards import ShardReader

    torch.set_num_threads(1)
    n = int(CLIP_S * SR)
    reader = ShardReader(str(d / "pcm16-48000"))
    m = json.loads((d / "pcm16-48000" / "birdbridge.json").read_text())["n_samples"]
    idx = list(range(min(m, batch)))
    wavs = sorted((d / "audio").glob("*.wav"))[: len(idx)]
    reused = np.empty((len(idx), n), np.float32)

    def per_clip(fn) -> float:
        fn()
        best = float("inf")
        for _ in range(reps):  # best of: this measures the work, not the other jobs on the machine
            t0 = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - t0)
        return round(best / len(idx) * 1e3, 3)

    def fill(out):
        for r, i in enumerate(idx):
            reader.crop_into(out[r], i, SR, "random", np.random.default_rng(i))

    def fill_pcm16(out):
        for r, i in enumerate(idx):
            assert reader.crop_into_pcm16(out[r], i, SR, "random", np.random.default_rng(i))

    def decode():
        for w in wavs:
            with sf.SoundFile(w) as f:
                f.seek(max(0, f.frames // 2 - int(5.05 * NATIVE)) if f.frames > 10.1 * NATIVE else 0)
                f.read(int(10.1 * NATIVE), dtype="float32")

    seg = np.random.default_rng(0).standard_normal(int(10.1 * NATIVE)).astype(np.float32)
    def fetch():
        for i in idx:
            reader.sample(i)  # dropped at once, as the loader does: its memory is reused

    return {"shard_sample_fetch_ms": per_clip(fetch),
            "shard_crop_into_reused_buffer_ms": per_clip(lambda: fill(reused)),
            "shard_crop_into_fresh_batch_ms": per_clip(lambda: fill(torch.empty(len(idx), n).numpy())),
            # what the training loader does with pcm16 shards at the student's rate: int16 rows, float on the device
            # (only where samples are stored at the student's rate: 48 kHz sources; `data prepare` keeps these
            # 22.05 kHz ones at their own rate, so their crops are resampled as they are read)
            "shard_pcm16_into_fresh_int16_batch_ms": (
                per_clip(lambda: fill_pcm16(torch.empty(len(idx), n, dtype=torch.int16).numpy()))
                if int(reader.sample(idx[0])["sr"]) == SR else None),
            "file_decode_crop_ms": per_clip(decode),
            "file_resample_crop_ms": per_clip(lambda: [resample(seg, NATIVE, SR) for _ in idx]),
            "note": "best of 3, one thread; a fresh batch pays the first touch of its memory, which both loaders do"}


# --------------------------------------------------------------------------- int16 at 48 kHz: what it costs


def quantisation(d: Path, n: int = 8) -> dict:
    """int16 storage of the 48 kHz resample vs float32: SNR and the largest log-mel change (BioLingual front end)."""
    import torch
    from transformers import ClapFeatureExtractor

    from birdbridge.data.audio import load_audio
    from birdbridge.data.shards import PCM16_SCALE, to_pcm16
    from birdbridge.encoders.frontend import ClapFrontend

    front = ClapFrontend.from_feature_extractor(ClapFeatureExtractor(truncation="rand_trunc"))
    snr, dmax, d99 = [], [], []
    for p in sorted((d / "audio").glob("*.wav"))[:n]:
        w = load_audio(p, SR)[: int(CLIP_S * SR)]
        q = to_pcm16(w).astype(np.float32) / PCM16_SCALE
        snr.append(10 * np.log10(np.sum(w.astype(np.float64) ** 2) / max(np.sum((w - q).astype(np.float64) ** 2), 1e-30)))
        with torch.no_grad():
            a, b = (front(torch.from_numpy(x)[None], crop="start")[0, 0].numpy() for x in (w, q))
        loud = a > a.max() - 60  # the bins that carry the song (60 dB below the loudest)
        diff = np.abs(a - b)[loud]
        dmax.append(float(diff.max()))
        d99.append(float(np.percentile(diff, 99)))
    return {"clips": len(snr), "snr_db_min": round(min(snr), 1), "snr_db_median": round(float(np.median(snr)), 1),
            "logmel_db_max_abs_diff": round(max(dmax), 4), "logmel_db_p99_abs_diff": round(max(d99), 4),
            "note": "log-mel bins within 60 dB of each clip's loudest"}


# --------------------------------------------------------------------------- the benchmark


def run(n: int = 48, max_s: float = 120.0, seconds: float = 8.0, repeats: int = 2, batch: int = 32,
        variants=VARIANTS, workdir: str | Path | None = None) -> dict:
    from birdbridge.data.shard_writer import prepare_shards

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        d = Path(tmp)
        data = make_dataset(d, n, max_s)
        disk, prep_s = {}, {}
        for v in variants:
            if not v.startswith("shards:"):
                continue
            enc, rate = v.split(":", 1)[1].split("@")
            t0 = time.perf_counter()
            m = prepare_shards("csv", d / "rec.csv", d / f"{enc}-{rate}", sample_rate=None if rate == "native" else int(rate),
                               encoding=enc, num_workers=1)
            prep_s[v] = round(time.perf_counter() - t0, 1)
            disk[v] = {"bytes": m["bytes"], "bytes_per_audio_hour": round(m["bytes"] / m["hours"])}
        runs: dict[str, list[dict]] = {v: [] for v in variants}
        for rep in range(repeats):  # interleaved, alternating direction: load drifts hit every loader alike
            for v in (variants if rep % 2 == 0 else tuple(reversed(variants))):
                runs[v].append(_run(v, d, batch, seconds))
                print(f"[loader] {v}: {runs[v][-1]['clips_per_s']:.0f} clips/s, peak RSS {runs[v][-1]['peak_rss_mb']:.0f} MB",
                      flush=True)
        quant = quantisation(d)
        parts = components(d, batch) if "shards:pcm16@48000" in variants else None
    out = {}
    for v in variants:
        rates = [r["clips_per_s"] for r in runs[v]]
        out[v] = {"clips_per_s": round(float(np.median(rates)), 1), "runs": rates,
                  "peak_rss_mb": max(r["peak_rss_mb"] for r in runs[v]), "base_rss_mb": min(r["base_rss_mb"] for r in runs[v]),
                  **disk.get(v, {}), **({"prepare_s": prep_s[v]} if v in prep_s else {})}
    res = {"loader": {"data": {**data, "wav_bytes_per_audio_hour": round(data["wav_bytes"] / data["hours"])},
                      "batch": batch, "clip_s": CLIP_S, "sample_rate": SR, "seconds_per_run": seconds, "repeats": repeats,
                      "chosen": CHOSEN, "variants": out, "int16_at_48k": quant, "inat_test": inat_stats(), "components": parts,
                      "load_avg": list(os.getloadavg())}}
    if CHOSEN in out and "raw" in out:
        res["loader_shards_over_raw"] = round(out[CHOSEN]["clips_per_s"] / out["raw"]["clips_per_s"], 2)
        res["loader_clips_per_s_per_core"] = out[CHOSEN]["clips_per_s"]
    if CHOSEN in out and "raw_whole" in out:
        res["loader_shards_over_raw_whole"] = round(out[CHOSEN]["clips_per_s"] / out["raw_whole"]["clips_per_s"], 2)
    if "raw" in out and "raw_whole" in out:
        res["loader_crop_first_over_whole"] = round(out["raw"]["clips_per_s"] / out["raw_whole"]["clips_per_s"], 2)
    return res


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", type=Path)
    ap.add_argument("--n", type=int, default=48)
    ap.add_argument("--max-s", type=float, default=120.0)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    a = ap.parse_args(argv)
    res = run(a.n, a.max_s, a.seconds, a.repeats, a.batch, tuple(a.variants.split(",")))
    print(json.dumps({k: v for k, v in res.items() if k != "loader"} | {"variants": {k: v["clips_per_s"] for k, v in
                                                                             res["loader"]["variants"].items()}}, indent=1))
    if a.out:
        a.out.write_text(json.dumps(res, indent=2) + "\n")
    return res


if __name__ == "__main__":
    main()
