"""A real Lightning DDP run: 2 CPU processes (gloo), launched through ``birdbridge train``.

It checks what only a multi-process run shows: Lightning's launcher re-runs the CLI for
rank 1, the DataLoader gets a DistributedSampler (2 ranks x 2 steps cover the 16 clips
once, where one process would take 4 steps), the gathered-with-grad loss trains to a
finite value, and rank 0 alone writes the checkpoint and the model directory.
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

TIMEOUT_S = 150  # well above the ~30-60 s it takes on 2 busy cores; a hang fails, not blocks


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory) -> Path:
    from birdbridge.data.synthetic import SyntheticWorld

    root = tmp_path_factory.mktemp("ddp_world")
    SyntheticWorld(0, n_orders=1, n_families=2, n_genera=2, n_species=2).write(
        root, audio_per_species={"train": 2}, images_per_species={"train": 1}, duration_s=1.2)
    return root


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_process_ddp_training_writes_checkpoint(tmp_path, tiny_world, tiny_clap_dir, tiny_open_clip_dir):
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"kind": "synthetic", "path": str(tiny_world)},
        "train": {"student": str(tiny_clap_dir), "teacher": str(tiny_open_clip_dir), "cache_dir": str(tmp_path / "cache"),
                  "batch_size": 4, "max_epochs": 1, "warmup_steps": 1, "num_workers": 0, "log_every_n_steps": 1,
                  "progress": False, "precision": "32-true", "seed": 0},
    }))
    out = tmp_path / "run"
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}
    # one intra-op thread per rank: two ranks on two cores, no oversubscription
    env.update({"OMP_NUM_THREADS": "1", "MASTER_PORT": str(_free_port()), "PL_DISABLE_FORK": "1"})
    # --verbose: Lightning's own lines (its process banner) are shown only then
    cmd = [sys.executable, "-m", "birdbridge.cli", "--verbose", "train", str(config), "--out", str(out),
           "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # the launcher's rank-1 child is in the same session
        log, _ = proc.communicate()
        pytest.fail(f"DDP training did not finish in {TIMEOUT_S} s:\n{log[-3000:]}")
    assert proc.returncode == 0, log[-4000:]

    assert (out / "model" / "config.json").is_file() and (out / "model" / "model.safetensors").is_file()
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    # 16 clips, batch 4: 2 steps per rank under a DistributedSampler (4 without one)
    assert ckpt["global_step"] == 2, ckpt["global_step"]
    assert "Starting with 2 processes" in log, log[-2000:]
    assert "all_gather is deprecated" in log  # third-party noise: shown with --verbose only

    metrics = next((out / "logs").rglob("metrics.csv"))
    losses = [float(r["train/loss"]) for r in csv.DictReader(metrics.open()) if r.get("train/loss")]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses), losses


def test_train_config_without_data_section_is_a_clear_error(tmp_path):
    from birdbridge.cli import train_cmd
    from birdbridge.errors import ConfigError

    config = tmp_path / "train.yaml"
    config.write_text("train: {batch_size: 4}\nextra: 1\n")
    with pytest.raises(ConfigError, match="needs `data"):
        train_cmd(config, out=tmp_path / "run", devices=None, num_nodes=None, strategy=None, accelerator=None, resume=False)
