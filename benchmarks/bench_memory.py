"""Peak memory of one student training step, per batch size, with and without activation
checkpointing and bf16 autocast (real-size HTSAT-tiny, random weights, 10 s clips at 48 kHz).

Each configuration runs in a fresh subprocess (the allocator keeps freed memory). A thread
samples the resident set every 2 ms during the step; reported: its peak minus the RSS once
the model and the batch exist, i.e. what the forward + backward + AdamW step added (activations,
gradients, optimiser state).

Activation checkpointing: transformers marks CLAP ``supports_gradient_checkpointing =
False`` (so ``gradient_checkpointing_enable()`` refuses), but each HTSAT stage is a
``GradientCheckpointingLayer``; setting its flag and checkpoint function, as
``gradient_checkpointing_enable`` would, recomputes each stage in the backward pass.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

WORKER = r"""
import functools, json, sys, threading, time
import numpy as np, torch
from torch.utils.checkpoint import checkpoint
from transformers import ClapConfig, ClapFeatureExtractor
from transformers.models.clap.modeling_clap import ClapAudioModel, ClapAudioStage, ClapProjectionLayer
from birdbridge.encoders.heads import HeadSpec, ProjectionHead
from birdbridge.encoders.student import AudioStudent
batch, mode = int(sys.argv[1]), sys.argv[2]
torch.manual_seed(0)
audio_cfg = ClapConfig().audio_config  # only the audio side: the text tower would dominate peak RSS
student = AudioStudent(ClapAudioModel(audio_cfg), ClapProjectionLayer(audio_cfg), ProjectionHead(HeadSpec(in_dim=audio_cfg.projection_dim, out_dim=768)),
                       ClapFeatureExtractor(truncation="rand_trunc")).train()
n_ckpt = 0
if "ckpt" in mode:
    for m in student.audio_model.modules():
        if isinstance(m, ClapAudioStage):
            m.gradient_checkpointing = True
            m._gradient_checkpointing_func = functools.partial(checkpoint, use_reentrant=False)
            n_ckpt += 1
opt = torch.optim.AdamW(student.parameters(), lr=1e-5)
waves = torch.from_numpy((0.1 * np.random.default_rng(0).standard_normal((batch, 480000))).astype(np.float32))
feats = student.features(waves)
def rss():  # current resident set, MiB
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
peak, done = [0.0], threading.Event()
def sample():  # ru_maxrss cannot be reset, so sample the current RSS while the step runs
    while not done.is_set():
        peak[0] = max(peak[0], rss()); time.sleep(0.002)
base = rss()
watcher = threading.Thread(target=sample, daemon=True); watcher.start()
t0 = time.perf_counter()
with torch.autocast("cpu", dtype=torch.bfloat16, enabled="bf16" in mode):
    out = student.embed_features(feats)
loss = (out.float() ** 2).sum()
loss.backward(); opt.step()
dt = time.perf_counter() - t0
done.set(); watcher.join()
print(json.dumps({"batch": batch, "mode": mode, "base_rss_mib": base, "peak_rss_mib": peak[0],
                  "step_mib": peak[0] - base, "step_s": dt, "checkpointed_stages": n_ckpt}))
"""


def measure(batch: int, mode: str, timeout_s: float = 300) -> dict:
    proc = subprocess.run([sys.executable, "-c", WORKER, str(batch), mode], capture_output=True, text=True, timeout=timeout_s)
    if proc.returncode != 0:
        return {"batch": batch, "mode": mode, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(batches: tuple[int, ...] = (2, 4), modes: tuple[str, ...] = ("fp32", "ckpt", "bf16", "ckpt+bf16"),
        budget_s: float = 240) -> dict:
    t_start = time.perf_counter()
    runs, skipped = [], []
    for b in batches:
        for m in modes:
            if time.perf_counter() - t_start > budget_s:
                skipped.append({"batch": b, "mode": m, "reason": "time budget"})
                continue
            r = measure(b, m)
            runs.append(r)
            print(f"memory: batch {b} {m:10s} " + (f"+{r['step_mib']:.0f} MiB, {r['step_s']:.1f} s" if "step_mib" in r else r["error"]))
    return {"memory_runs": runs, "memory_skipped": skipped, "memory_clip_s": 10.0}


if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
