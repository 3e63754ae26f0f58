"""The student trained from shards on the GPU: how long each step waits for data; and compile / channels-last.

Run by ``benchmarks/gpu.sh`` (needs a GPU for the numbers that matter; ``--device cpu`` with a
small student is the smoke test ``tests/test_bench_gpu_data.py`` runs):

1. **from shards** -- iNatSounds-like recordings (``bench_loader.make_dataset``) go through
   ``data prepare`` (pcm16, 48 kHz), then the training loader (``ShardClipDataset``,
   ``EpochShuffleSampler``, ``collate_clips``; ``--workers`` processes, pinned memory) feeds
   bf16 training steps of the real-shape student (random weights). Per step: the time spent
   getting the next batch onto the card (the GPU waits) and the time of the step itself;
   reported as the fraction of step time waiting for data (target <= 10%), and clips/s,
   next to the same steps on a batch already on the card.
2. **compile / channels-last** -- the same step on a resident batch: eager, channels-last
   (the mel input and conv weights NHWC), ``torch.compile``, and both; clips/s and the
   fraction of the card's peak bf16 FLOP/s (FLOPs of one step counted once, eagerly).

    python -m benchmarks.bench_gpu_data [out.json] [--device cuda] [--batch 512] [--budget-s 360]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from itertools import count
from pathlib import Path

import torch

from .bench_gpu import _oom, _sync, peak_flops


def _student(path: str | None, out_dim: int = 768):
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel
    from transformers.utils import logging as hf_logging

    from birdbridge.encoders.heads import HeadSpec
    from birdbridge.encoders.student import AudioStudent

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    if path:
        from birdbridge.encoders.clap import load_clap

        clap, fe = load_clap(path)
    else:  # BioLingual's shape, random weights
        clap, fe = ClapModel(ClapConfig()), ClapFeatureExtractor(truncation="rand_trunc")
    return AudioStudent.from_clap(clap, fe, HeadSpec(kind="linear", out_dim=out_dim)).train()


def _trainer(student, device: str):
    from birdbridge.distill.loss import LogitScale, build_loss

    loss_fn, scale = build_loss("infonce"), LogitScale(0.07).to(device)
    opt = torch.optim.AdamW([*student.parameters(), *scale.parameters()], lr=1e-5)
    table = torch.nn.functional.normalize(torch.randn(1000, 768, device=device), dim=-1)
    amp = dict(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)

    def step(model, waves, labels):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(**amp):
            loss = loss_fn(model(waves), table[labels], labels, scale())
        loss.backward()
        opt.step()

    return step


def from_shards(student, step, device: str, batch: int, workers: int, steps: int, n: int, workdir: str | None) -> dict:
    from torch.utils.data import DataLoader

    from birdbridge.data.shard_writer import prepare_shards
    from birdbridge.data.shards import load_shards
    from birdbridge.distill.data import EpochShuffleSampler, clip_dataset, collate_clips, waves_as_float

    from .bench_loader import make_dataset

    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        d = Path(tmp)
        t0 = time.perf_counter()
        data = make_dataset(d, n, 120.0)
        m = prepare_shards("csv", d / "rec.csv", d / "shards", sample_rate=48000, num_workers=workers)
        prep_s = time.perf_counter() - t0
        coll = load_shards(d / "shards")
        ds = clip_dataset(coll, coll.audio, student.sample_rate, student.window_samples, crop="random", seed=0)
        batch = min(batch, len(ds))
        sampler = EpochShuffleSampler(len(ds), seed=0, batch_size=batch)
        loader = DataLoader(ds, batch_size=batch, sampler=sampler, drop_last=True, collate_fn=collate_clips,
                            num_workers=workers, pin_memory=device.startswith("cuda"), persistent_workers=workers > 0,
                            prefetch_factor=4 if workers > 0 else None)

        def batches():
            for epoch in count():
                sampler.set_epoch(epoch)
                yield from loader

        it = batches()
        wait, work = [], []
        for i in range(steps + 3):  # the first steps start workers and warm the kernels: not counted
            t0 = time.perf_counter()
            b = next(it)
            waves = waves_as_float(b["waves"].to(device, non_blocking=True))  # int16 batches scaled on the card
            labels = b["labels"].to(device, non_blocking=True)
            _sync(device)
            t1 = time.perf_counter()
            step(student, waves, labels)
            _sync(device)
            if i >= 3:
                wait.append(t1 - t0)
                work.append(time.perf_counter() - t1)
        resident = time.perf_counter()
        for _ in range(3):
            step(student, waves, labels)
        _sync(device)
        resident_s = (time.perf_counter() - resident) / 3
    total = sum(wait) + sum(work)
    return {"batch": batch, "workers": workers, "steps": steps, "recordings": data["n_recordings"], "audio_hours": m["hours"],
            "prepare_s": round(prep_s, 1), "data_wait_fraction": sum(wait) / total, "clips_per_s": batch * steps / total,
            "step_s_median": sorted(work)[len(work) // 2], "wait_s_median": sorted(wait)[len(wait) // 2],
            "resident_batch_clips_per_s": batch / resident_s}


def variants(student, step, device: str, batch: int, repeats: int, budget_left) -> dict:
    """Eager vs channels-last vs torch.compile on a resident batch."""
    from torch.utils.flop_counter import FlopCounterMode

    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    peak = peak_flops(name)
    waves = torch.randn(batch, student.window_samples, device=device) * 0.1
    labels = torch.randint(0, 1000, (batch,), device=device)
    with FlopCounterMode(display=False) as fc:
        step(student, waves, labels)
    flops = fc.get_total_flops()
    out = {"device": name, "peak_bf16_flops": peak, "batch": batch, "flops_per_step": flops, "runs": {}}
    for key, cl, comp in (("eager", False, False), ("channels_last", True, False), ("compile", False, True),
                          ("compile+channels_last", True, True)):
        if comp and (not device.startswith("cuda") or budget_left() < 120):
            out["runs"][key] = {"skipped": "needs a GPU and >= 120 s of budget (compilation)"}
            continue
        try:
            model = student.to(memory_format=torch.channels_last if cl else torch.contiguous_format)
            if comp:
                model = torch.compile(model)
            t0 = time.perf_counter()
            step(model, waves, labels)  # warm-up (and compilation)
            _sync(device)
            first = time.perf_counter() - t0
            t0 = time.perf_counter()
            for _ in range(repeats):
                step(model, waves, labels)
            _sync(device)
            dt = (time.perf_counter() - t0) / repeats
            row = {"clips_per_s": batch / dt, "step_s": dt, "first_step_s": first}
            if peak:
                row["fraction_of_peak"] = flops / dt / peak
            out["runs"][key] = row
            print(key, json.dumps(row), flush=True)
        except Exception as err:  # noqa: BLE001 - one failing variant must not lose the others
            out["runs"][key] = {"error": f"{type(err).__name__}: {str(err)[:300]}", "oom": _oom(err)}
        finally:
            student.to(memory_format=torch.contiguous_format)
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
    return out


def run(device: str = "cuda", batch: int = 512, workers: int | None = None, steps: int = 20, n: int = 1024,
        repeats: int = 5, budget_s: float = 360, student_path: str | None = None, workdir: str | None = None) -> dict:
    t_start = time.perf_counter()
    student = _student(student_path).to(device)
    step = _trainer(student, device)
    workers = workers if workers is not None else max(1, (os.cpu_count() or 2) - 2)
    out = {"device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu", "cpu_cores": os.cpu_count()}
    try:
        out["from_shards"] = from_shards(student, step, device, batch, workers, steps, n, workdir)
        print("from_shards", json.dumps(out["from_shards"]), flush=True)
    except Exception as err:  # noqa: BLE001
        out["from_shards"] = {"error": f"{type(err).__name__}: {str(err)[:300]}", "oom": _oom(err)}
    out["compile"] = variants(student, step, device, min(batch, out["from_shards"].get("batch", batch)), repeats,
                              lambda: budget_s - (time.perf_counter() - t_start))
    out["total_s"] = time.perf_counter() - t_start
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", nargs="?", type=Path, default=Path("benchmarks/gpu_data.json"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--workers", type=int, default=None, help="loader processes (default: cores - 2)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--n", type=int, default=1024, help="recordings made and prepared as shards")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--budget-s", type=float, default=360)
    ap.add_argument("--student", default=None, help="a CLAP directory (default: BioLingual's shape, random weights)")
    a = ap.parse_args(argv)
    res = run(a.device, a.batch, a.workers, a.steps, a.n, a.repeats, a.budget_s, a.student)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {a.out}")
    return res


if __name__ == "__main__":
    main()
