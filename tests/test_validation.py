"""Validation during training and model selection by it (issue 20, item 3).

``birdbridge train`` with a validation split (the data's ``val`` rows, or a ``validation:`` block)
scores audio->image mAP against the teacher's image embeddings when there are photos, else
audio->text mAP against the species prompts, every ``val_every_n_epochs``; writes one row per
validation to ``OUT/metrics.csv``; exports the best validation's weights and records
``best_epoch`` / ``best_val_map`` in ``OUT/model/training.json``. Tiny replicas, synthetic world.
"""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from birdbridge.data.synthetic import SyntheticWorld, load_world
from birdbridge.distill.config import ValidationConfig
from birdbridge.distill.train import TrainConfig, distill
from birdbridge.distill.validation import COLUMNS, Validation
from birdbridge.errors import ConfigError

BIN = Path(sys.executable).with_name("birdbridge")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
SR = 48000


@pytest.fixture(scope="module")
def world_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("val_world")
    SyntheticWorld(1, n_orders=1, n_families=2, n_genera=2, n_species=1).write(
        root, audio_per_species={"train": 6, "val": 3}, images_per_species={"val": 2}, duration_s=1.2)
    return root


def _cfg(clap, teacher, tmp, **kw) -> dict:
    return {"student": str(clap), "teacher": str(teacher), "cache_dir": str(tmp / "cache"), "batch_size": 4,
            "max_epochs": 4, "num_workers": 0, "progress": False, "accelerator": "cpu", "devices": 1,
            "warmup_steps": 0, "lr_encoder": 1e-3, "lr_head": 1e-2, "prompt_types": ["common"], **kw}


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _val_map_of(model, world, teacher_dir, images: bool, cache_dir=None) -> float:
    """The exported model scored again from scratch: whole files decoded, centre-cropped by the model's
    own front end, against the teacher's photo embeddings or the species' prompt rows."""
    from birdbridge.data.audio import load_audio
    from birdbridge.data.images import load_image
    from birdbridge.encoders.teacher import Teacher
    from birdbridge.metrics import retrieval_metrics
    from birdbridge.encoders.species_text import recipe_species_text

    audio = world.audio_split("val")
    with torch.no_grad():
        q = torch.cat([model([torch.from_numpy(load_audio(world.resolve(a.path), model.sample_rate))], crop="center")
                       for a in audio]).numpy()
    teacher = Teacher.load(str(teacher_dir))
    if images:
        photos = world.image_split("val")
        g = teacher.encode_images([load_image(world.resolve(i.path)) for i in photos]).numpy()
        g_labels = [i.species_id for i in photos]
    else:
        g = recipe_species_text(model.meta["prompt_recipe"], world.species, str(teacher_dir), cache_dir)
        g_labels = [s.id for s in world.species]
    return retrieval_metrics(q @ g.T, [a.species_id for a in audio], g_labels)["map"]


@pytest.mark.slow
def test_validation_rows_and_the_best_epochs_weights_are_the_model(world_dir, tiny_clap_dir, tiny_open_clip_dir,
                                                                     tmp_path, monkeypatch):
    world = load_world(world_dir)  # val rows with photos: audio->image
    snapshots: dict[int, dict] = {}
    original = Validation.on_train_epoch_end

    def spy(self, trainer, pl_module):  # the student's weights at every validation, to compare the export with
        original(self, trainer, pl_module)
        snapshots[trainer.current_epoch] = {k: v.detach().clone() for k, v in pl_module.student.state_dict().items()}

    monkeypatch.setattr(Validation, "on_train_epoch_end", spy)
    out = tmp_path / "run"
    model = distill(world, TrainConfig.from_dict(_cfg(tiny_clap_dir, tiny_open_clip_dir, tmp_path)), out)

    rows = _rows(out / "metrics.csv")
    assert list(rows[0]) == list(COLUMNS)
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3], "one row per validation, every epoch by default"
    assert [int(r["step"]) for r in rows] == [6, 12, 18, 24]  # 24 train clips / batch 4 = 6 steps an epoch
    assert {r["val_kind"] for r in rows} == {"audio_image"}
    assert {int(r["val_n"]) for r in rows} == {12} and {int(r["val_gallery"]) for r in rows} == {8}
    assert all(math.isfinite(float(r["train_loss"])) and 0 <= float(r["val_map"]) <= 1 for r in rows)

    maps = [float(r["val_map"]) for r in rows]
    info = json.loads((out / "model" / "training.json").read_text())
    best = int(np.argmax(maps))  # the first of equal maxima: a later tie does not replace the best
    assert info["best_epoch"] == best and info["best_val_map"] == pytest.approx(maps[best], abs=1e-6)
    assert info["selected"] == "best_val_map" and info["validation"]["kind"] == "audio_image"
    assert [r["is_best"] for r in rows].count("True") >= 1 and rows[best]["is_best"] == "True"
    # the case this test is built on (seeded, CPU-deterministic): the last epoch is not the best one
    assert best != len(rows) - 1, maps

    exported = {k: v for k, v in model.state_dict().items() if not k.startswith("frontend.")}
    for k, v in exported.items():
        assert torch.equal(v, snapshots[best][k]), f"{k}: the exported weights are not epoch {best}'s"
    assert any(not torch.equal(snapshots[best][k], snapshots[len(rows) - 1][k]) for k in exported)

    from birdbridge.encoders.student import DistilledModel

    saved = DistilledModel.from_pretrained(out / "model").eval()
    assert _val_map_of(saved, world, tiny_open_clip_dir, images=True) == pytest.approx(info["best_val_map"], abs=1e-4)


@pytest.mark.slow
def test_without_photos_validation_is_audio_to_text_every_n_epochs(world_dir, tiny_clap_dir, tiny_open_clip_dir, tmp_path):
    from birdbridge.data.records import Collection

    full = load_world(world_dir)
    world = Collection(full.name, full.species, full.audio, [], full.root, meta=full.meta)  # no photos
    out = tmp_path / "run"
    model = distill(world, TrainConfig.from_dict(_cfg(tiny_clap_dir, tiny_open_clip_dir, tmp_path, max_epochs=5,
                                                      val_every_n_epochs=2)), out)
    rows = _rows(out / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [1, 3, 4], "every 2nd epoch, and after the last"
    assert {r["val_kind"] for r in rows} == {"audio_text"} and {int(r["val_gallery"]) for r in rows} == {4}
    info = json.loads((out / "model" / "training.json").read_text())
    maps = [float(r["val_map"]) for r in rows]
    assert info["best_val_map"] == pytest.approx(max(maps), abs=1e-6)
    assert info["best_epoch"] == int(rows[int(np.argmax(maps))]["epoch"])
    assert _val_map_of(model, full, tiny_open_clip_dir, images=False, cache_dir=tmp_path / "cache") == pytest.approx(info["best_val_map"], abs=1e-4)


@pytest.mark.slow
def test_no_validation_data_exports_the_last_epoch(world_dir, tiny_clap_dir, tiny_open_clip_dir, tmp_path):
    out = tmp_path / "run"
    distill(load_world(world_dir), TrainConfig.from_dict(_cfg(tiny_clap_dir, tiny_open_clip_dir, tmp_path, max_epochs=1,
                                                               val_split="none")), out)
    info = json.loads((out / "model" / "training.json").read_text())
    assert info["best_epoch"] is None and info["best_val_map"] is None and info["selected"] == "last_epoch"
    assert not (out / "metrics.csv").exists()


def _sub(*args, cwd: Path) -> subprocess.CompletedProcess:
    res = subprocess.run([str(BIN), *map(str, args)], env=ENV, capture_output=True, text=True, timeout=600, cwd=cwd)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr[-2000:]
    return res


def _validation_folders(world_dir: Path, tmp: Path) -> tuple[Path, Path]:
    """The world's val recordings and photos as species folders named by scientific name (another
    collection: species ids differ from the training CSV's, matched by name)."""
    world = load_world(world_dir)
    names = world.species_by_id
    for kind, items in (("recordings", world.audio_split("val")), ("photos", world.image_split("val"))):
        for it in items:
            d = tmp / kind / names[it.species_id].scientific_name
            d.mkdir(parents=True, exist_ok=True)
            os.symlink(world.resolve(it.path), d / Path(it.path).name)
    return tmp / "recordings", tmp / "photos"


@pytest.mark.slow
def test_train_console_script_with_a_validation_block(world_dir, tiny_clap_dir, tiny_open_clip_dir, tmp_path):
    recordings, photos = _validation_folders(world_dir, tmp_path / "val")
    broken = next(d for d in photos.iterdir() if d.is_dir()) / "broken.png"
    broken.write_bytes(b"\x89PNG not really")  # a bad photo is skipped with its reason, not fatal
    cfg_dir = tmp_path / "cfg"
    cfg_dir.mkdir()
    (cfg_dir / "train.yaml").write_text(yaml.safe_dump({
        "data": {"kind": "csv", "path": str(world_dir / "world.csv")},
        "validation": {"path": os.path.relpath(recordings, cfg_dir), "images": os.path.relpath(photos, cfg_dir)},
        "train": _cfg(tiny_clap_dir, tiny_open_clip_dir, tmp_path, max_epochs=3, val_split="none")}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = _sub("train", cfg_dir / "train.yaml", "--out", "run", cwd=elsewhere)
    assert res.returncode == 0, res.stderr[-2000:]
    out = elsewhere / "run"
    rows = _rows(out / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    assert {r["val_kind"] for r in rows} == {"audio_image"} and {int(r["val_n"]) for r in rows} == {12}
    info = json.loads((out / "model" / "training.json").read_text())
    assert info["best_val_map"] == pytest.approx(max(float(r["val_map"]) for r in rows), abs=1e-6)
    assert info["validation"]["source"] == "validation" and info["validation"]["n_images"] == 9
    assert {int(r["val_gallery"]) for r in rows} == {8}, "the broken photo is not in the gallery"
    skipped = json.loads((out / "skipped.json").read_text())
    assert [(Path(s["input"]).name, s["reason"]) for s in skipped["skipped"]] == [("broken.png", "unreadable")], skipped
    text = " ".join(res.stdout.split())
    assert f"best validation: epoch {info['best_epoch']}, audio->image mAP" in text
    assert str(out / "metrics.csv") in " ".join((res.stdout + res.stderr).split()), "listed among the outputs"


@pytest.mark.parametrize("block, expect", [
    ({"pth": "x.csv"}, "unknown key 'validation.pth'"),
    ("val.csv", "config key 'validation' must be a mapping"),
    ({"path": "nowhere.csv"}, "validation.path not found: nowhere.csv"),
    ({"path": "world.csv", "kind": "mp3"}, "config key 'validation.kind' must be one of"),
    ({"path": "world.csv", "images": "no_photos"}, "validation.images not found: no_photos"),
    ({"path": "other.csv"}, "no_validation_audio"),
])
def test_a_bad_validation_config_is_one_line(world_dir, tiny_clap_dir, tiny_open_clip_dir, tmp_path, block, expect):
    (tmp_path / "world.csv").symlink_to(world_dir / "world.csv")
    (tmp_path / "other.csv").write_text("path,scientific_name,split\n"
                                        f"{world_dir / 'audio' / os.listdir(world_dir / 'audio')[0]},Nullus avis,val\n")
    (tmp_path / "train.yaml").write_text(yaml.safe_dump({
        "data": {"kind": "csv", "path": str(world_dir / "world.csv")}, "validation": block,
        "train": _cfg(tiny_clap_dir, tiny_open_clip_dir, tmp_path)}))
    res = _sub("train", tmp_path / "train.yaml", "--out", tmp_path / "out", cwd=tmp_path.parent)
    err = " ".join(res.stderr.split())
    assert res.returncode == 2 and err.startswith("error:") and expect in err, res.stderr[-1000:]
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "out").exists()


def test_validation_config_and_every_n_epochs_are_checked():
    assert ValidationConfig.from_dict({"path": "v/val.json"}).resolved_kind == "inat_sounds"
    assert ValidationConfig.from_dict({"path": "v.csv"}).resolved_kind == "csv"
    assert ValidationConfig.from_dict({"path": "recordings"}).resolved_kind == "folder"
    with pytest.raises(ConfigError, match="'validation.path' is required"):
        ValidationConfig.from_dict({"images": "photos"})
    with pytest.raises(ConfigError, match="'val_every_n_epochs' must be >= 1"):
        TrainConfig.from_dict({"val_every_n_epochs": 0})


@pytest.mark.slow
def test_resume_keeps_the_rows_and_the_best_weights(world_dir, tiny_clap_dir, tiny_open_clip_dir, tmp_path):
    """The rows and the best weights travel in last.ckpt: a run continued to more epochs keeps the
    earlier rows (none twice) and can still pick an epoch from before the resume."""
    world = load_world(world_dir)
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    distill(world, TrainConfig.from_dict(_cfg(tiny_clap_dir, tiny_open_clip_dir, tmp_path)), whole)
    distill(world, TrainConfig.from_dict(_cfg(tiny_clap_dir, tiny_open_clip_dir, tmp_path, max_epochs=2)), parts)
    assert [int(r["epoch"]) for r in _rows(parts / "metrics.csv")] == [0, 1]
    first = json.loads((parts / "model" / "training.json").read_text())
    first_weights = (parts / "model" / "model.safetensors").read_bytes()
    # the schedule's length differs (cosine over 2 vs 4 epochs), so compare the continued run with itself
    distill(world, TrainConfig.from_dict(_cfg(tiny_clap_dir, tiny_open_clip_dir, tmp_path)), parts, resume=True)
    rows = _rows(parts / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2, 3]
    info = json.loads((parts / "model" / "training.json").read_text())
    maps = [float(r["val_map"]) for r in rows]
    assert info["best_epoch"] == int(np.argmax(maps)) and info["best_val_map"] == pytest.approx(max(maps), abs=1e-6)
    assert len(_rows(whole / "metrics.csv")) == 4
    # the case this test is built on (seeded): the best epoch is one from before the resume, so its
    # weights can only have come through last.ckpt
    assert info["best_epoch"] == first["best_epoch"] < 2, (first, maps)
    assert (parts / "model" / "model.safetensors").read_bytes() == first_weights


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_ddp_validation_scores_every_recording_once(world_dir, tiny_clap_dir, tiny_open_clip_dir, tmp_path):
    """Each rank embeds its share; every rank scores the gathered whole (12 recordings, an odd share
    each: 6 + 6, no padding duplicates); rank 0 alone writes; the export is the best epoch's."""
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({"data": {"kind": "csv", "path": str(world_dir / "world.csv")},
                                      "train": _cfg(tiny_clap_dir, tiny_open_clip_dir, tmp_path, max_epochs=2,
                                                    precision="32-true")}))
    out = tmp_path / "run"
    env = {k: v for k, v in ENV.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR")}
    env.update({"OMP_NUM_THREADS": "1", "MASTER_PORT": str(_free_port()), "PL_DISABLE_FORK": "1"})
    cmd = [sys.executable, "-m", "birdbridge.cli", "train", str(config), "--out", str(out),
           "--accelerator", "cpu", "--devices", "2", "--strategy", "ddp"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        log, _ = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        log, _ = proc.communicate()
        pytest.fail(f"DDP training did not finish:\n{log[-3000:]}")
    assert proc.returncode == 0, log[-4000:]
    rows = _rows(out / "metrics.csv")
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert {int(r["val_n"]) for r in rows} == {12} and {int(r["val_gallery"]) for r in rows} == {8}
    info = json.loads((out / "model" / "training.json").read_text())
    assert info["best_val_map"] == pytest.approx(max(float(r["val_map"]) for r in rows), abs=1e-6)
    from birdbridge.encoders.student import DistilledModel

    saved = DistilledModel.from_pretrained(out / "model").eval()
    assert _val_map_of(saved, load_world(world_dir), tiny_open_clip_dir, images=True) == pytest.approx(
        info["best_val_map"], abs=1e-4)
