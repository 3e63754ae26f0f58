"""Failures on one rank that used to leave the other ranks waiting: each run with 2 real gloo processes.

* DDP training where every clip of one rank's batch is unreadable: that rank has no
  features for the loss's all-gather. Both ranks now skip the step (and say so in
  ``skipped.json``) instead of the other rank waiting in the gather for ever.
* ``birdbridge index`` whose rank 0 fails before the first round (another process holds the
  index's writer lock), and an index build whose rank 0 fails inside a round: the other
  rank stops at once naming rank 0's error, instead of waiting in the rendezvous or a
  barrier until the 24-hour timeout.
* ``rank_device`` under ``srun --gpus-per-task=1`` (one visible GPU per task, numbered 0,
  while ``SLURM_LOCALID`` counts on): no GPU here, so the rule is checked with the device
  count given explicitly.
"""

from __future__ import annotations

import csv
import fcntl
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

TIMEOUT_S = 150  # far above what these take on 2 busy cores; a hang fails the test instead of blocking CI


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")}
    env.update({"OMP_NUM_THREADS": "1", "PL_DISABLE_FORK": "1", **extra})
    return env


def _communicate(procs: list[subprocess.Popen], what: str) -> list[str]:
    logs, deadline = [], time.monotonic() + TIMEOUT_S
    for p in procs:
        try:
            logs.append(p.communicate(timeout=max(1.0, deadline - time.monotonic()))[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                os.killpg(q.pid, 9)
            pytest.fail(f"{what} hung: a rank was left waiting")
    return [" ".join(x.split()) for x in logs]  # rich wraps long lines


# --------------------------------------------------------------------------- (a) DDP training


def test_ddp_step_with_all_clips_unreadable_on_one_rank_is_skipped_by_both(tmp_path, tiny_clap_dir, tiny_open_clip_dir):
    from birdbridge.data.synthetic import SyntheticWorld, load_world
    from birdbridge.distill.data import EpochShuffleSampler

    root = tmp_path / "world"
    SyntheticWorld(0, n_orders=1, n_families=2, n_genera=2, n_species=2).write(
        root, audio_per_species={"train": 2}, images_per_species={}, duration_s=1.2)
    items = load_world(root).audio_split("train")
    assert len(items) == 16
    seed, batch = 0, 4
    first_batch_rank1 = EpochShuffleSampler(16, seed=seed, batch_size=batch, rank=1, world_size=2).order(0)[:batch]
    broken = sorted(items[i].path for i in first_batch_rank1)
    for rel in broken:  # unreadable: the whole of rank 1's first batch
        (root / rel).write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")

    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"kind": "csv", "path": str(root / "world.csv")},
        "train": {"student": str(tiny_clap_dir), "teacher": str(tiny_open_clip_dir), "cache_dir": str(tmp_path / "cache"),
                  "batch_size": batch, "max_epochs": 1, "warmup_steps": 1, "num_workers": 0, "log_every_n_steps": 1,
                  "progress": False, "precision": "32-true", "seed": seed, "val_split": "none"},
    }))
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "birdbridge.cli", "train", str(config), "--out", str(out),
                             "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"],
                            env=_env(MASTER_PORT=str(_free_port())), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    log = _communicate([proc], "DDP training with an unreadable batch on rank 1")[0]
    assert proc.returncode == 0, log[-3000:]

    skipped = json.loads((out / "skipped.json").read_text())
    # rank 1 met them, rank 0 writes the file: the ranks' skips are gathered
    assert sorted(Path(s["input"]).name for s in skipped["skipped"]) == sorted(Path(b).name for b in broken)
    assert skipped["steps_without_clips"] == 1
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["global_step"] == 2  # both steps ran on both ranks (the first as a skip)
    rows = list(csv.DictReader(next((out / "logs").rglob("metrics.csv")).open()))
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 1 and np.isfinite(losses[0]), losses  # only the second step trained


# --------------------------------------------------------------------------- (b) index rank 0 failures


def _photos(d: Path, n: int) -> Path:
    from PIL import Image

    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(d / f"p{i}.png")
    return d


def test_index_rank0_failing_before_the_first_round_stops_the_other_rank_at_once(tmp_path, tiny_open_clip_dir):
    photos = _photos(tmp_path / "photos", 4)
    out = tmp_path / "idx"
    out.mkdir()
    port = str(_free_port())
    with open(out / ".lock", "w") as held:  # another writer holds the index: rank 0 cannot start
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        procs = [subprocess.Popen([sys.executable, "-m", "birdbridge.cli", "index", str(photos), "--teacher",
                                   str(tiny_open_clip_dir), "--out", str(out), "--device", "cpu", "--shard-size", "2"],
                                  env=_env(RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r), MASTER_ADDR="127.0.0.1",
                                           MASTER_PORT=port),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
                 for r in range(2)]
        t0 = time.monotonic()
        logs = _communicate(procs, "index with rank 0 unable to start")
        took = time.monotonic() - t0
    assert [p.returncode for p in procs] == [2, 2], logs
    assert "another process is writing this index" in logs[0] and "Traceback" not in logs[0]
    assert "rank 0 failed before the first round: ConfigError:" in logs[1], logs[1][-2000:]
    assert "another process is writing this index" in logs[1] and "Traceback" not in logs[1]
    assert took < 90, took
    assert not (out / "index.json").exists()


WORKER = textwrap.dedent(
    """
    import sys
    import torch
    torch.set_num_threads(1)
    from birdbridge.encoders.teacher import Teacher
    from birdbridge.retrieval.index import ImageIndex, records_from_source
    from birdbridge.errors import BirdbridgeError

    rank, teacher_dir, photos, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
    teacher = Teacher.load(teacher_dir)

    class Failing:
        model_id, dim = teacher.model_id, teacher.dim

        def encode_images(self, images, batch_size=64):
            raise RuntimeError("simulated GPU failure on rank 0")

    try:
        ImageIndex.build(out, Failing() if rank == 0 else teacher, records_from_source(photos), shard_size=2,
                         batch_size=1, rank=rank, world=2)
    except (BirdbridgeError, RuntimeError) as err:
        print(f"rank {rank} stopped: {type(err).__name__}: {err}")
        sys.exit(3)
    print(f"rank {rank} finished")
    """
)


def test_index_rank0_failing_inside_a_round_stops_the_other_rank_at_once(tmp_path, tiny_open_clip_dir):
    photos = _photos(tmp_path / "photos", 4)
    out = tmp_path / "idx"
    port = str(_free_port())
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(r), str(tiny_open_clip_dir), str(photos), str(out)],
                              env=_env(MASTER_ADDR="127.0.0.1", MASTER_PORT=port), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True) for r in range(2)]
    logs = _communicate(procs, "index with rank 0 failing in a round")
    assert [p.returncode for p in procs] == [3, 3], logs
    assert "rank 0 stopped: RuntimeError: simulated GPU failure on rank 0" in logs[0]
    assert "rank 1 stopped: ShardError: rank 0 failed: RuntimeError: simulated GPU failure on rank 0" in logs[1], logs[1]
    assert not (out / "index.json").exists()


# --------------------------------------------------------------------------- (c) rank_device


@pytest.mark.parametrize("env,count,want", [
    ({"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "3", "SLURM_NTASKS_PER_NODE": "4",
      "CUDA_VISIBLE_DEVICES": "3"}, 1, "cuda:0"),  # srun --gpus-per-task=1
    ({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_NTASKS_PER_NODE": "4(x2)",
      "CUDA_VISIBLE_DEVICES": "2,3"}, 2, "cuda:0"),  # srun --gpus-per-task=2: the task's first GPU
    ({"SLURM_PROCID": "6", "SLURM_NTASKS": "8", "SLURM_LOCALID": "6", "SLURM_NTASKS_PER_NODE": "8"}, 8, "cuda:6"),  # --gpus-per-node
    ({"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "5", "LOCAL_WORLD_SIZE": "8"}, 8, "cuda:5"),  # torchrun
    ({"SLURM_PROCID": "2", "SLURM_NTASKS": "4", "SLURM_LOCALID": "2"}, 1, "cuda:0"),  # no per-node count, one GPU seen
    ({"RANK": "0", "WORLD_SIZE": "1"}, 8, "cuda"),  # one process: left as asked
])
def test_rank_device_under_torchrun_and_srun(monkeypatch, env, count, want):
    from birdbridge.distributed import rank_device

    for v in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID",
              "SLURM_NTASKS_PER_NODE", "CUDA_VISIBLE_DEVICES"):
        monkeypatch.delenv(v, raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert rank_device("cuda", device_count=count) == want
    assert rank_device("cpu", device_count=count) == "cpu"
