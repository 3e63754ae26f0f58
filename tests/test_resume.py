"""Crash and resume: `birdbridge train --resume` after a SIGKILL finishes with the unbroken run's weights.

What determinism holds (CPU, one process, same thread count, same config and seed):
the final model of a run killed mid-epoch or on an epoch boundary and resumed from its
last checkpoint is **bit-identical** to an unbroken run's, because everything a step
depends on is either in the checkpoint or a function of the config:

* weights, AdamW moments, LR schedule, loop counters: Lightning's checkpoint;
* which clips an epoch trains on, in which order: ``EpochShuffleSampler`` (epoch ``e``'s
  permutation comes from ``(seed, e)`` only), and ``DistillData`` stores how many of the
  interrupted epoch's batches were trained, so the resumed run starts at the next one;
* crops: ``(seed, epoch, index)``, whichever loader worker decodes the clip (a run with 2
  workers, killed and resumed, still equals the 0-worker unbroken run); prompt types: ``(seed, global step, rank)``;
* global RNG streams (dropout, active: the student here has dropout 0.2 and trains in
  train mode): saved by the module and restored before the first resumed step; the
  loaders draw their worker seeds from their own generators, so starting an epoch does
  not advance the stream between a checkpoint and the next step; the logit-scale clamp
  happens inside the optimiser step, so checkpoints hold the clamped value the unbroken
  run goes on with.

The same holds when the clips come from shards (``data: {kind: shards}``, written by
``birdbridge data prepare``): a shard run killed mid-epoch resumes to the unbroken shard
run's weights, and those equal a run on the files themselves (lossless shards at the
files' rate give the very same crops).

Not covered: a different thread count or device (float reductions reorder), a resumed
run with another world size (a warning says the epoch's remaining batches differ).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from birdbridge.data.synthetic import SyntheticWorld, load_world

BIN = Path(sys.executable).with_name("birdbridge")
STEPS_PER_EPOCH = 4  # 8 species x 4 train clips / batch 8
EPOCHS = 3


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("resume_world")
    SyntheticWorld(1, n_orders=1, n_families=2, n_genera=2, n_species=2).write(
        root, audio_per_species={"train": 4, "test": 2}, images_per_species={})
    # a bad clip in the training split: its skip must survive the crash
    (root / "audio" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    lines = (root / "world.csv").read_text().splitlines()
    first = next(ln for ln in lines[1:] if ",train" in ln)
    lines.append(first.replace(first.split(",")[0], "audio/broken.wav", 1))
    (root / "world.csv").write_text("\n".join(lines) + "\n")
    return root


def _config(tmp: Path, world: Path, clap: Path, teacher: Path, cache: Path) -> Path:
    cfg = {"data": {"kind": "csv", "path": str(world / "world.csv")},
           "train": {"student": str(clap), "teacher": str(teacher), "cache_dir": str(cache), "batch_size": 8,
                     "max_epochs": EPOCHS, "num_workers": 0, "progress": False, "accelerator": "cpu", "devices": 1,
                     "warmup_steps": 0, "lr_encoder": 1e-3, "lr_head": 1e-2, "seed": 3, "prompt_types": ["mixed"], "encoder_mode": "train",
                     "val_split": "none", "log_every_n_steps": 1}}
    path = tmp / "train.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env() -> dict:
    # same thread count in every run: float reductions are then reproducible on CPU
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "PYTHONHASHSEED": "0"}


def _train(config: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), "train", str(config), "--out", str(out), *extra], env=_env(),
                          capture_output=True, text=True, timeout=300)


def _ckpt_step(out: Path) -> tuple[int, int]:
    ck = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    return int(ck["global_step"]), int(ck["epoch"])


def _embed(model_dir: Path, clips: list[Path]) -> np.ndarray:
    from birdbridge.encoders.factory import load_audio_embedder
    from birdbridge.retrieval.embed import embed_audio

    return embed_audio(load_audio_embedder(str(model_dir)), clips).vectors


def _zero_shot_accuracy(vectors: np.ndarray, labels: list[str], text: dict[str, np.ndarray]) -> float:
    names = sorted(text)
    mat = np.stack([text[n] for n in names])
    pred = [names[i] for i in (vectors @ mat.T).argmax(1)]
    return float(np.mean([p == t for p, t in zip(pred, labels)]))


@pytest.fixture(scope="module")
def runs(world, tiny_clap_dropout_dir, tiny_open_clip_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("resume_runs")
    config = _config(tmp, world, tiny_clap_dropout_dir, tiny_open_clip_dir, tmp / "cache")
    ref = _train(config, tmp / "ref")  # also fills the text cache, so every run starts alike
    assert ref.returncode == 0, ref.stderr[-2000:]
    assert "Traceback" not in ref.stderr
    assert _ckpt_step(tmp / "ref")[0] == STEPS_PER_EPOCH * EPOCHS
    import json

    saved = json.loads((tmp / "ref" / "model" / "config.json").read_text())
    assert saved["audio_config"]["hidden_dropout_prob"] == 0.2 and saved["training"]["encoder_mode"] == "train"
    coll = load_world(world)
    test = coll.audio_split("test")
    clips = [Path(coll.resolve(a.path)) for a in test]
    from birdbridge.distill.train import TrainConfig, species_text_embeddings

    cfg = TrainConfig.from_dict({"teacher": str(tiny_open_clip_dir), "cache_dir": str(tmp / "cache"),
                                 "prompt_types": ["taxonomic"]})
    mat = species_text_embeddings(cfg, coll)["taxonomic"].numpy()  # [S, D], rows in coll.species order
    text = dict(zip([s.id for s in coll.species], mat))
    return {"tmp": tmp, "config": config, "clips": clips, "labels": [a.species_id for a in test], "text": text,
            "ref": _embed(tmp / "ref" / "model", clips)}


def _kill_at_step(config: Path, out: Path, want_step: int) -> int:
    """Start a run, freeze it (SIGSTOP) at each new checkpoint, SIGKILL it at the first one >= ``want_step``."""
    proc = subprocess.Popen([str(BIN), "train", str(config), "--out", str(out)], env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = out / "checkpoints" / "last.ckpt"
    seen_mtime, deadline = None, time.time() + 240
    try:
        while proc.poll() is None and time.time() < deadline:
            if last.exists() and last.stat().st_mtime_ns != seen_mtime:
                proc.send_signal(signal.SIGSTOP)  # frozen: the checkpoint cannot change under us
                seen_mtime = last.stat().st_mtime_ns
                step = _ckpt_step(out)[0]
                if step >= want_step:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(timeout=30)
                    return step
                proc.send_signal(signal.SIGCONT)
            time.sleep(0.01)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    pytest.fail(f"the run ended (rc {proc.returncode}) before reaching a checkpoint at step {want_step}")


@pytest.mark.parametrize("kill_step,workers", [(2, 0), (STEPS_PER_EPOCH, 0), (STEPS_PER_EPOCH + 2, 2)],
                         ids=["mid_epoch", "epoch_boundary", "mid_epoch_2_loader_workers"])
def test_killed_training_resumes_and_finishes(runs, kill_step, workers):
    config, ref_step = runs["config"], STEPS_PER_EPOCH * EPOCHS
    out = runs["tmp"] / f"crash-{kill_step}-{workers}"
    if workers:  # loader workers prefetch ahead of training; the result must not depend on them
        cfg = yaml.safe_load(config.read_text())
        cfg["train"]["num_workers"] = workers
        config = runs["tmp"] / f"workers{workers}.yaml"
        config.write_text(yaml.safe_dump(cfg))
    killed_step = _kill_at_step(config, out, kill_step)
    assert killed_step == kill_step
    assert not (out / "model").exists(), "killed before the final model was written"

    res = _train(config, out, "--resume")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    step, _ = _ckpt_step(out)
    assert step == ref_step, f"resumed run ended at step {step}, the unbroken one at {ref_step}"
    import csv
    import json

    # the resumed run logged only steps after the checkpoint: it continued, it did not restart
    newest = max((out / "logs").glob("version_*/metrics.csv"), key=lambda f: int(f.parent.name.split("_")[1]))
    logged = sorted({int(r["step"]) for r in csv.DictReader(newest.open()) if r.get("step")})
    assert logged and min(logged) >= killed_step - 1 and max(logged) >= ref_step - 1, logged[:5]
    # the bad clip is skipped (and listed) by the resumed run too
    skipped = json.loads((out / "skipped.json").read_text())
    assert any(s["input"].endswith("broken.wav") for s in skipped["skipped"])

    from safetensors.torch import load_file

    ref_w = load_file(runs["tmp"] / "ref" / "model" / "model.safetensors")
    res_w = load_file(out / "model" / "model.safetensors")
    assert ref_w.keys() == res_w.keys()
    differing = [k for k in ref_w if not torch.equal(ref_w[k], res_w[k])]
    a, b = runs["ref"], _embed(out / "model", runs["clips"])
    acc_ref = _zero_shot_accuracy(a, runs["labels"], runs["text"])
    acc_res = _zero_shot_accuracy(b, runs["labels"], runs["text"])
    print(f"killed at step {killed_step}; zero-shot acc ref {acc_ref:.3f} resumed {acc_res:.3f}; "
          f"max |emb diff| {np.abs(a - b).max():.2e}; tensors differing {len(differing)}/{len(ref_w)}")
    assert not differing, f"resumed weights differ from the unbroken run's in {differing[:5]}"
    assert np.array_equal(a, b) and acc_ref == acc_res


def test_resume_from_a_checkpoint_of_a_different_run_is_not_silently_wrong(runs):
    """The control: the bit-identity above is not vacuous -- another seed gives other weights."""
    from safetensors.torch import load_file

    cfg = yaml.safe_load(runs["config"].read_text())
    cfg["train"]["seed"] = 4
    other = runs["tmp"] / "seed4.yaml"
    other.write_text(yaml.safe_dump(cfg))
    res = _train(other, runs["tmp"] / "seed4")
    assert res.returncode == 0, res.stderr[-2000:]
    ref_w = load_file(runs["tmp"] / "ref" / "model" / "model.safetensors")
    new_w = load_file(runs["tmp"] / "seed4" / "model" / "model.safetensors")
    assert any(not torch.equal(ref_w[k], new_w[k]) for k in ref_w)


def test_starting_an_epoch_leaves_the_global_rng_alone(world):
    """Dropout draws from the global torch RNG, which a resumed run restores at its first
    step. An unbroken run starts each epoch's loader between a checkpoint and the next step,
    so that start must not draw from the global RNG (a DataLoader without its own generator
    draws its workers' base seed there), or resumed dropout masks would differ."""
    from birdbridge.distill.datamodule import DistillData

    coll = load_world(world)
    data = DistillData(coll, coll.audio_split("train"), coll.audio_split("test"), sample_rate=16000, n_samples=16000,
                       batch_size=4, seed=3)
    before = torch.get_rng_state()
    iter(data.train_dataloader())  # validation has no loader of its own: distill/validation.py's callback
    assert torch.equal(torch.get_rng_state(), before)


# --------------------------------------------------------------------------- from shards


@pytest.fixture(scope="module")
def shard_runs(runs, world):
    """Shards of the world (its 16-bit 16 kHz WAVs kept at their rate, so lossless) and two unbroken runs:
    one from those shards, one from the same files."""
    tmp = runs["tmp"]
    clean = world / "clean.csv"  # the same recordings without the broken one, which prepare would skip
    clean.write_text("\n".join(ln for ln in (world / "world.csv").read_text().splitlines() if "broken.wav" not in ln) + "\n")
    prep = subprocess.run([str(BIN), "data", "prepare", "csv", str(clean), "--out", str(tmp / "shards"), "--sample-rate",
                           "native", "--workers", "1"], env=_env(), capture_output=True, text=True, timeout=300)
    assert prep.returncode == 0, prep.stderr
    cfg = yaml.safe_load(runs["config"].read_text())
    cfg["data"] = {"kind": "csv", "path": str(clean)}
    files_cfg = tmp / "clean.yaml"
    files_cfg.write_text(yaml.safe_dump(cfg))
    cfg["data"] = {"kind": "shards", "path": str(tmp / "shards")}
    cfg["train"]["num_workers"] = 2
    shard_cfg = tmp / "shards.yaml"
    shard_cfg.write_text(yaml.safe_dump(cfg))
    for config, out in ((files_cfg, tmp / "clean-ref"), (shard_cfg, tmp / "shards-ref")):
        res = _train(config, out)
        assert res.returncode == 0, res.stderr[-2000:]
    return {"config": shard_cfg, "files_ref": tmp / "clean-ref", "ref": tmp / "shards-ref"}


def _weights(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(out / "model" / "model.safetensors")


def test_training_from_shards_equals_training_from_the_files(shard_runs):
    """Same recordings, same (seed, epoch, index) crops: the shard run's weights are the file run's, bit for bit."""
    a, b = _weights(shard_runs["files_ref"]), _weights(shard_runs["ref"])
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_training_from_shards_killed_mid_epoch_resumes_bit_identically(runs, shard_runs):
    out = runs["tmp"] / "shards-crash"
    killed = _kill_at_step(shard_runs["config"], out, STEPS_PER_EPOCH + 2)
    assert killed == STEPS_PER_EPOCH + 2
    res = _train(shard_runs["config"], out, "--resume")
    assert res.returncode == 0, res.stderr[-2000:]
    assert _ckpt_step(out)[0] == STEPS_PER_EPOCH * EPOCHS
    ref, got = _weights(shard_runs["ref"]), _weights(out)
    differing = [k for k in ref if not torch.equal(ref[k], got[k])]
    assert not differing, f"resumed weights differ from the unbroken shard run's in {differing[:5]}"
