"""Issue 16, point 10: start-up for users -- sample train configs, the README's verbs, what serve serves."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).with_name("birdbridge")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "200"}
TRAIN_CONFIGS = sorted((ROOT / "configs" / "train").glob("*.yaml"))


def help_verbs(cwd: Path) -> list[str]:
    res = subprocess.run([str(BIN), "--help"], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    commands = res.stdout[res.stdout.index("Commands"):]
    return re.findall(r"^\W*([a-z][a-z-]+)\s{2,}\S", commands, re.M)


def test_readme_lists_every_verb(tmp_path):
    verbs = help_verbs(tmp_path)
    assert len(verbs) >= 14 and "detect" in verbs and "embed-audio" in verbs
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| verb | what it does |"):]
    table = table[: table.index("\n\n")]
    listed = re.findall(r"^\| `birdbridge ([a-z][a-z-]+)", table, re.M)
    # a verb group (`data download`, `data prepare`) has a row per sub-command
    assert sorted(set(listed)) == sorted(verbs), f"README lists {sorted(set(listed))}, --help {sorted(verbs)}"
    assert "multipart field `audio`" in readme  # the upload field, named where the server is described


@pytest.mark.parametrize("config", TRAIN_CONFIGS, ids=lambda p: p.name)
def test_sample_train_configs_load_with_the_strict_loader(config):
    from birdbridge.config import load_yaml
    from birdbridge.data.loaders import loader_kinds
    from birdbridge.distill.train import TrainConfig

    doc = load_yaml(config)
    assert set(doc) == {"data", "train"}
    assert doc["data"]["kind"] in loader_kinds() and doc["data"]["path"]
    cfg = TrainConfig.from_dict(doc["train"])  # unknown keys and wrong types raise here
    cfg.validate()


def test_the_csv_sample_config_trains_on_tiny_replicas(tiny_clap_dir, tiny_open_clip_dir, tmp_path):
    sample = ROOT / "configs" / "train" / "csv_recordings.yaml"
    doc = yaml.safe_load(sample.read_text())
    sr = 16000
    lines = ["path,scientific_name,common_name,split"]
    for i in range(8):
        t = np.arange(int(1.2 * sr)) / sr
        sf.write(tmp_path / f"r{i}.wav", (0.3 * np.sin(2 * np.pi * (800 + 600 * (i % 2)) * t)).astype(np.float32), sr)
        lines.append(f"r{i}.wav,{['Sayornis nigricans', 'Spinus psaltria'][i % 2]},,{'val' if i >= 6 else 'train'}")
    (tmp_path / "my-recordings.csv").write_text("\n".join(lines) + "\n")
    # the sample as shipped, with the tiny replicas for the real models and a short run
    doc["train"].update(student=str(tiny_clap_dir), teacher=str(tiny_open_clip_dir), cache_dir=str(tmp_path / "cache"),
                        batch_size=2, max_epochs=1, num_workers=0, accelerator="cpu", devices=1, warmup_steps=1,
                        progress=False)
    assert doc["data"]["path"] == "my-recordings.csv"
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(doc))
    res = subprocess.run([str(BIN), "train", "train.yaml", "--out", "run"], cwd=tmp_path, env=ENV, capture_output=True,
                         text=True, timeout=600)
    assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-3000:]
    assert (tmp_path / "run" / "model" / "config.json").is_file()


def test_serve_says_what_it_serves(tiny_distilled_dir, tiny_open_clip_dir, tmp_path):
    from PIL import Image

    from birdbridge.encoders.teacher import Teacher
    from birdbridge.retrieval.index import ImageIndex, records_from_source

    rng = np.random.default_rng(0)
    for sp in ("Sayornis_nigricans", "Spinus_psaltria"):
        (tmp_path / "photos" / sp).mkdir(parents=True)
        for j in range(3):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "photos" / sp / f"{j}.png")
    ImageIndex.build(tmp_path / "index", Teacher.load(str(tiny_open_clip_dir)), records_from_source(tmp_path / "photos"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = open(tmp_path / "serve.log", "w+")
    proc = subprocess.Popen([str(BIN), "serve", "--model", str(tiny_distilled_dir), "--index", "index", "--port", str(port),
                             "--cache-dir", "cache"], cwd=tmp_path, env=ENV, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 240
        while "Uvicorn running" not in (tmp_path / "serve.log").read_text():
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-2000:]
            assert time.time() < deadline, "serve printed nothing in time"
            time.sleep(0.5)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
    text = " ".join((tmp_path / "serve.log").read_text().split())
    assert f"serving http://127.0.0.1:{port}/" in text
    assert f"{tmp_path / 'index'}: 6 images of 2 species" in text and str(tiny_open_clip_dir) in text  # the teacher
    assert f"model {tiny_distilled_dir}" in text and "species guess on, over 2 species" in text
    assert "multipart field 'audio'" in text and f"curl -F audio=@clip.wav -F k=12 http://127.0.0.1:{port}/search" in text
