"""GPU throughput at the real model sizes (random weights); run by ``benchmarks/gpu.sh``.

For growing batch sizes until the card runs out of memory (or the time budget ends):

* student training steps/s and clips/s (10 s clips at 48 kHz, torch front end on the GPU,
  forward + backward + AdamW, bf16 autocast), with the achieved fraction of the card's peak
  dense bf16 FLOP/s -- FLOPs per step counted once with ``torch.utils.flop_counter``;
* student inference clips/s, teacher (ViT-L-14) images/s and prompts/s;
* the distillation-step ratio of ``bench_step`` on this card: ours vs naive (HF extractor per
  clip on the CPU + teacher text tower on the GPU every step).

    python -m benchmarks.bench_gpu [out.json] [--budget-s 420] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

# dense bf16 tensor-core peak, FLOP/s (vendor datasheets, without sparsity)
PEAK_BF16 = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12}


def peak_flops(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16.items() if k in name), None)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _timed(fn, device: str, repeats: int) -> float:
    fn()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fn()
    _sync(device)
    return (time.perf_counter() - t0) / repeats


def _oom(err: BaseException) -> bool:
    return isinstance(err, torch.OutOfMemoryError) or "out of memory" in str(err).lower()


def run(device: str = "cuda", budget_s: float = 420, batches=(8, 16, 32, 64, 128, 256, 512), repeats: int = 5,
        step_batch: int = 32) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from birdbridge.distill.loss import LogitScale, build_loss

    from .bench_step import build, prompts_for

    t_start = time.perf_counter()
    name = torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu"
    student, fe, teacher, tokenizer = build()
    student.to(device)
    teacher.to(device)
    loss_fn, scale = build_loss("infonce"), LogitScale(0.07).to(device)
    opt = torch.optim.AdamW([*student.parameters(), *scale.parameters()], lr=1e-5)
    table = torch.nn.functional.normalize(torch.randn(1000, 768, device=device), dim=-1)
    amp = dict(device_type="cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16)
    out: dict = {"device": name, "peak_bf16_flops": peak_flops(name), "train": [], "infer": [], "images": [], "texts": []}

    def train_step(waves, labels):
        opt.zero_grad(set_to_none=True)
        with torch.autocast(**amp):
            loss = loss_fn(student(waves), table[labels], labels, scale())
        loss.backward()
        opt.step()

    for b in batches:
        if time.perf_counter() - t_start > budget_s * 0.5:
            break
        try:
            waves = torch.randn(b, 480_000, device=device) * 0.1
            labels = torch.randint(0, 1000, (b,), device=device)
            with FlopCounterMode(display=False) as fc:
                train_step(waves, labels)
            flops = fc.get_total_flops()
            dt = _timed(lambda: train_step(waves, labels), device, repeats)
            row = {"batch": b, "steps_per_s": 1 / dt, "clips_per_s": b / dt, "flops_per_step": flops,
                   "achieved_flops": flops / dt, "peak_mem_gb": torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None}
            if out["peak_bf16_flops"]:
                row["fraction_of_peak"] = row["achieved_flops"] / out["peak_bf16_flops"]
            out["train"].append(row)
            print("train", json.dumps(row), flush=True)
        except RuntimeError as err:
            if not _oom(err):
                raise
            out["train_oom_at_batch"] = b
            break
        finally:
            opt.zero_grad(set_to_none=True)
            if device.startswith("cuda"):
                torch.cuda.empty_cache()

    student.eval()
    # build() keeps only the teacher's text tower (all the naive step needs); images need the whole model
    import open_clip

    visual = open_clip.create_model("ViT-L-14", pretrained=None).visual.eval().requires_grad_(False).to(device)
    for key, make, fn in (
        ("infer", lambda b: torch.randn(b, 480_000, device=device) * 0.1, lambda x: student(x)),
        ("images", lambda b: torch.randn(b, 3, 224, 224, device=device), lambda x: visual(x)),
        ("texts", lambda b: tokenizer(prompts_for(list(range(b)))).to(device), lambda x: teacher.encode_text(x)),
    ):
        for b in batches:
            if time.perf_counter() - t_start > budget_s * 0.85:
                break
            try:
                x = make(b)
                with torch.no_grad(), torch.autocast(**amp):
                    dt = _timed(lambda: fn(x), device, repeats)
                out[key].append({"batch": b, "items_per_s": b / dt})
                print(key, b, f"{b / dt:.1f}/s", flush=True)
            except RuntimeError as err:
                if not _oom(err):
                    raise
                break
            finally:
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()

    # ours vs naive step on this card
    student.train()
    b = step_batch
    rng = np.random.default_rng(0)
    clips = [(0.1 * rng.standard_normal(480_000)).astype(np.float32) for _ in range(b)]
    waves = torch.from_numpy(np.stack(clips)).to(device)
    labels = torch.randint(0, 1000, (b,), device=device)

    def naive():
        feats = torch.cat([fe(c, sampling_rate=48_000, return_tensors="pt").input_features for c in clips]).to(device)
        with torch.no_grad(), torch.autocast(**amp):
            text = torch.nn.functional.normalize(teacher.encode_text(tokenizer(prompts_for(labels.tolist())).to(device)).float(), dim=-1)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(**amp):
            loss = loss_fn(student.embed_features(feats), text, labels, scale())
        loss.backward()
        opt.step()

    try:
        ours_s = _timed(lambda: train_step(waves, labels), device, 3)
        naive_s = _timed(naive, device, 3)
        out.update({"step_batch": b, "step_ours_s": ours_s, "step_naive_s": naive_s, "step_speedup": naive_s / ours_s})
        print(f"step speedup at batch {b}: {naive_s / ours_s:.1f}x", flush=True)
    except RuntimeError as err:
        if not _oom(err):
            raise
    out["total_s"] = time.perf_counter() - t_start
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", nargs="?", type=Path, default=Path("benchmarks/gpu_results.json"))
    ap.add_argument("--budget-s", type=float, default=420)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--batches", default="8,16,32,64,128,256,512")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--step-batch", type=int, default=32)
    args = ap.parse_args()
    res = run(args.device, args.budget_s, tuple(int(x) for x in args.batches.split(",")), args.repeats, args.step_batch)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
