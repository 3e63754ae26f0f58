"""Issue 16, point 6: no silent no-ops or misleading summaries on day one.

Every check runs the real console script in a subprocess from a directory other than the
repository, as a user would, on tiny replicas of the real models (random weights: the
answers mean nothing here, only what the commands do with them).
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

BIN = Path(sys.executable).with_name("birdbridge")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
SPECIES = ["Sayornis nigricans", "Spinus psaltria", "Poecile rufescens"]


def bb(*args, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    res = subprocess.run([str(BIN), *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr[-3000:]
    return res


def one_line(text: str) -> str:
    return " ".join(text.split())


def tone(path: Path, seconds: float, freq: float, sr: int = 16000) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t) * np.sin(np.pi * t / seconds)).astype(np.float32), sr)
    return path


def photo(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def field(tmp_path_factory) -> Path:
    """Recordings, photos in species folders, loose photos, and a CSV of the photos."""
    d = tmp_path_factory.mktemp("field")
    (d / "rec").mkdir()
    for i, f in enumerate((900, 2100, 3300)):
        tone(d / "rec" / f"r{i}.wav", 2.5, f)
    for i, sp in enumerate(SPECIES):
        (d / "photos" / sp.replace(" ", "_")).mkdir(parents=True)
        for j in range(2):
            photo(d / "photos" / sp.replace(" ", "_") / f"{j}.png", 10 * i + j)
    (d / "loose").mkdir()
    for j in range(3):
        photo(d / "loose" / f"p{j}.png", 100 + j)
    with open(d / "photos.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "scientific_name", "common_name"])
        for sp in SPECIES:
            for j in range(2):
                w.writerow([f"photos/{sp.replace(' ', '_')}/{j}.png", sp, ""])
    return d


@pytest.fixture(scope="module")
def index_dir(field, tiny_open_clip_dir, tmp_path_factory) -> Path:
    from birdbridge.encoders.teacher import Teacher
    from birdbridge.retrieval.index import ImageIndex, records_from_source

    root = tmp_path_factory.mktemp("idx") / "index"
    ImageIndex.build(root, Teacher.load(str(tiny_open_clip_dir)), records_from_source(field / "photos"))
    return root


def test_search_table_out_writes_the_file(field, index_dir, tiny_distilled_dir, tmp_path):
    res = bb("search", field / "rec" / "r0.wav", field / "rec" / "r1.wav", "--model", tiny_distilled_dir,
             "--index", index_dir, "-k", "3", "--format", "table", "--out", "hits.txt", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    text = (tmp_path / "hits.txt").read_text()
    assert "r0.wav" in text and "r1.wav" in text and "score" in text
    assert text.count("Sayornis") + text.count("Spinus") + text.count("Poecile") >= 6  # 3 hits x 2 recordings
    assert "r0.wav" not in res.stdout, "with --out the table goes to the file, not the terminal"


def test_a_missing_input_fails_before_the_model_loads_and_writes_nothing(field, index_dir, tiny_clap_dir,
                                                                          tiny_distilled_dir, tiny_open_clip_dir, tmp_path):
    (tmp_path / "rec").mkdir()
    tone(tmp_path / "rec" / "dawn01.wav", 1.0, 1000)
    # a model that cannot load: had it been loaded first, its error would be the one shown
    res = bb("embed-audio", "rec/dawn01.wav", "rec/dawn10.wav", "--model", tmp_path / "no-model-here",
             "--out", "emb.npy", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    err = one_line(res.stderr)
    assert "no such file: rec/dawn10.wav" in err and "did you mean rec/dawn01.wav" in err, err
    assert not list(tmp_path.glob("emb*")), "nothing may be written"
    res = bb("embed-audio", "rec/dawn10.wav", "--model", tiny_clap_dir, "--out", "emb.npy", cwd=tmp_path)
    assert res.returncode == 2 and not list(tmp_path.glob("emb*"))
    res = bb("embed-images", "nowhere.png", "--teacher", tiny_open_clip_dir, "--out", "img.npy", cwd=tmp_path)
    assert res.returncode == 2 and "no such file: nowhere.png" in one_line(res.stderr) and not list(tmp_path.glob("img*"))
    res = bb("search", "rec/dawn10.wav", "--model", tiny_distilled_dir, "--index", index_dir, "--format", "json",
             "--out", "hits.json", cwd=tmp_path)
    assert res.returncode == 2 and "no such file" in res.stderr and not (tmp_path / "hits.json").exists()
    # a CSV of photos none of which exists (wrong folder): one line, no index directory
    (tmp_path / "moved.csv").write_text("path,scientific_name\nphotos/a.png,Sayornis nigricans\nphotos/b.png,Spinus psaltria\n")
    res = bb("index", "moved.csv", "--teacher", tiny_open_clip_dir, "--out", "idx", cwd=tmp_path)
    assert res.returncode == 2 and "none of the 2 image files listed exists" in one_line(res.stderr), res.stderr
    assert not (tmp_path / "idx").exists()
