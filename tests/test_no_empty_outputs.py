"""Issue 25, point 8: no empty outputs, no invented certainty.

Each check runs the real console script in a subprocess from a directory other than the
repository, on tiny replicas of the real models (random weights: the answers mean nothing,
only what the commands do with them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from PIL import Image

BIN = Path(sys.executable).with_name("birdbridge")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "COLUMNS": "240"}
SYNTHETIC = "distilled on the synthetic world"


def bb(*args, cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    res = subprocess.run([str(BIN), *map(str, args)], cwd=cwd, env=env or ENV, capture_output=True, text=True,
                         timeout=timeout)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr[-3000:]
    return res


def one_line(text: str) -> str:
    return " ".join(text.split())


def tone(path: Path, seconds: float = 1.5, freq: float = 1200.0, sr: int = 16000) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32), sr)
    return path


def photo(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
    return path


# --------------------------------------------------------------------------- inspect / embed-audio: nothing in


def test_inspect_an_empty_folder_is_one_error_line(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no media here\n")
    for folder in ("empty", "notes"):
        res = bb("inspect", "folder", folder, cwd=tmp_path)
        assert res.returncode == 2, (res.returncode, res.stderr, res.stdout)
        assert one_line(res.stderr) == f"error: no recordings or images found in {folder} (folder)", res.stderr
        assert not res.stdout.strip(), "no report of nothing"
    res = bb("inspect", "folder", "empty", "--media", "images", "--json", cwd=tmp_path)
    assert res.returncode == 2 and "no images found in empty" in res.stderr and not res.stdout.strip()


@pytest.fixture()
def unreadable(tmp_path) -> Path:
    """Two .wav files that hold no audio."""
    d = tmp_path / "bad"
    d.mkdir()
    (d / "a.wav").write_text("not audio at all\n")
    (d / "b.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    return d


def test_embed_audio_with_nothing_readable_writes_nothing(unreadable, tiny_clap_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    res = bb("embed-audio", "bad", "--model", tiny_clap_dir, "--out", "out/a.npy", cwd=tmp_path)
    assert res.returncode == 1, res.stderr
    assert sorted(os.listdir(out)) == [], "no .npy, .parquet or .json of nothing"
    lines = [ln.strip() for ln in res.stderr.splitlines() if ln.strip()]
    err = [ln for ln in lines if ln.startswith("error:")]
    assert len(err) == 1 and "none of the 2 recordings could be embedded: 2 skipped (" in err[0], res.stderr
    assert "nothing written" in err[0]
    # each skip still named, with its reason
    assert any(ln.startswith("skipped bad/a.wav: ") for ln in lines) and any(ln.startswith("skipped bad/b.wav: ")
                                                                            for ln in lines), res.stderr
    assert "outputs:" not in res.stderr

    (tmp_path / "empty").mkdir()
    res = bb("embed-audio", "empty", "--model", tiny_clap_dir, "--out", "out/e.npy", cwd=tmp_path)
    assert res.returncode == 2 and "folder empty holds no audio files" in one_line(res.stderr), res.stderr
    assert sorted(os.listdir(out)) == []


def test_embed_audio_sharded_with_nothing_readable_leaves_no_file(unreadable, tiny_clap_dir, tmp_path):
    """Two ranks (torchrun's environment, file rendezvous): their parts are merged and removed, nothing saved."""
    out = tmp_path / "out"
    out.mkdir()
    procs = []
    for r in range(2):
        env = {k: v for k, v in ENV.items() if k not in ("MASTER_ADDR", "MASTER_PORT")}
        env.update({"RANK": str(r), "WORLD_SIZE": "2", "LOCAL_RANK": str(r), "OMP_NUM_THREADS": "1"})
        procs.append(subprocess.Popen([str(BIN), "embed-audio", "bad", "--model", str(tiny_clap_dir), "--out",
                                       "out/a.npy", "--device", "cpu"], cwd=tmp_path, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=300)[0] for p in procs]
    assert procs[0].returncode == 1, logs
    assert "none of the 2 recordings could be embedded" in one_line(logs[0]), logs
    assert sorted(os.listdir(out)) == [], "neither the merged output nor any rank's part may stay"


def test_embed_audio_one_readable_still_writes(unreadable, tiny_clap_dir, tmp_path):
    tone(unreadable / "good.wav")
    res = bb("embed-audio", "bad", "--model", tiny_clap_dir, "--out", "a.npy", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    side = json.loads((tmp_path / "a.json").read_text())
    assert side["n_rows"] == 1 and len(side["skipped"]) == 2


# --------------------------------------------------------------------------- paths as typed


def test_outputs_keep_symlinked_paths_as_typed(tiny_clap_dir, tiny_open_clip_dir, tiny_distilled_dir, tmp_path):
    real = tmp_path / "store" / "deep"
    (real / "rec").mkdir(parents=True)
    (real / "photos" / "Sayornis_nigricans").mkdir(parents=True)
    tone(real / "rec" / "r0.wav")
    for j in range(2):
        photo(real / "photos" / "Sayornis_nigricans" / f"{j}.png", j)
    (tmp_path / "link").symlink_to(real, target_is_directory=True)
    linked = os.path.abspath(tmp_path / "link")

    res = bb("embed-audio", "link/rec", "--model", tiny_clap_dir, "--out", "a.npy", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert [r["input"] for r in pq.read_table(tmp_path / "a.parquet").to_pylist()] == ["link/rec/r0.wav"]
    res = bb("embed-images", "link/photos", "--teacher", tiny_open_clip_dir, "--out", "i.npy", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert all(r["input"].startswith("link/photos/") for r in pq.read_table(tmp_path / "i.parquet").to_pylist())

    res = bb("index", "link/photos", "--teacher", tiny_open_clip_dir, "--out", "idx", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    from birdbridge.retrieval.index import ImageIndex

    index = ImageIndex.open(tmp_path / "idx")
    paths = [r["path"] for r in index.metadata(range(index.count))]
    assert paths and all(p.startswith(linked + os.sep) for p in paths), paths
    assert not any(str(real) in p for p in paths)

    res = bb("search", "link/rec/r0.wav", "--model", tiny_distilled_dir, "--index", "idx", "--format", "json",
             cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    found = json.loads(res.stdout)
    assert str(real) not in res.stdout and found[0]["hits"][0]["path"].startswith(linked + os.sep), res.stdout[:800]
    assert found[0]["path"] == "link/rec/r0.wav"

    (tmp_path / "species.txt").write_text("Sayornis nigricans\n")
    res = bb("detect", "link/rec", "--model", tiny_distilled_dir, "--species-list", "species.txt", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "link/rec/r0.wav" in res.stdout and str(real) not in res.stdout, res.stdout[:800]


# --------------------------------------------------------------------------- species from file names


@pytest.fixture()
def named_photos(tmp_path) -> Path:
    d = tmp_path / "shots"
    d.mkdir()
    for i, name in enumerate(("Sayornis_nigricans.jpg", "Sayornis_nigricans_12.jpg", "Spinus psaltria 2.jpg",
                              "IMG_1234.jpg", "DSC_0001.jpg", "sunset.jpg")):
        photo(d / name, i)
    return d


def test_photos_named_for_a_species_get_it(named_photos, tiny_open_clip_dir, tmp_path):
    res = bb("inspect", "folder", "shots", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = one_line(res.stdout)
    assert "3 photos got their species from the file name" in out and "species 2 (2 birds)" in out, res.stdout
    report = json.loads(bb("inspect", "folder", "shots", "--json", cwd=tmp_path).stdout)
    assert report["n_species_from_file_name"] == 3 and report["n_without_species"]["images"] == 3

    res = bb("index", "shots", "--teacher", tiny_open_clip_dir, "--out", "idx", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "3 photos got their species from the file name" in one_line(res.stderr), res.stderr
    from birdbridge.retrieval.index import ImageIndex

    index = ImageIndex.open(tmp_path / "idx")
    names = {Path(r["path"]).name: r["scientific_name"] for r in index.metadata(range(index.count))}
    assert names == {"Sayornis_nigricans.jpg": "Sayornis nigricans", "Sayornis_nigricans_12.jpg": "Sayornis nigricans",
                     "Spinus psaltria 2.jpg": "Spinus psaltria", "IMG_1234.jpg": "", "DSC_0001.jpg": "",
                     "sunset.jpg": ""}


def test_the_file_name_rule():
    from birdbridge.data.generic import species_from_file_name as named

    assert named("Sayornis_nigricans.jpg") == named("x/Sayornis nigricans (3).png") == "Sayornis nigricans"
    for name in ("IMG_1234.jpg", "DSC_0001.jpg", "sayornis_nigricans.jpg", "Sayornis.jpg", "Sayornis_2.jpg",
                 "SAYORNIS_NIGRICANS.jpg", "Sayornis_nigricans_male.jpg", "Photo_of.jpg", "Sayornis_12345.jpg"):
        assert named(name) is None, name


# --------------------------------------------------------------------------- a synthetic-world model on real files


@pytest.fixture(scope="module")
def synthetic_model(tiny_distilled_dir, tmp_path_factory) -> Path:
    """The tiny checkpoint, its provenance saying what the demo's model says: distilled on the synthetic world."""
    d = tmp_path_factory.mktemp("synthetic_model") / "model"
    shutil.copytree(tiny_distilled_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["trained_on"] = {"dataset": "synthetic", "synthetic": True}
    (d / "config.json").write_text(json.dumps(cfg))
    return d


def _warnings(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if SYNTHETIC in ln]


def test_a_synthetic_world_model_says_so_once_on_real_files(synthetic_model, tiny_distilled_dir, tiny_open_clip_dir,
                                                              tmp_path):
    (tmp_path / "rec").mkdir()
    tone(tmp_path / "rec" / "r0.wav")
    tone(tmp_path / "rec" / "r1.wav", freq=2400)
    (tmp_path / "species.txt").write_text("Sayornis nigricans\nSpinus psaltria\n")
    res = bb("detect", "rec", "--model", synthetic_model, "--species-list", "species.txt", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert len(_warnings(res.stderr)) == 1 and "2 real recordings" in res.stderr, res.stderr
    res = bb("embed-audio", "rec", "--model", synthetic_model, "--out", "a.npy", cwd=tmp_path)
    assert res.returncode == 0 and len(_warnings(res.stderr)) == 1, res.stderr

    (tmp_path / "photos" / "Sayornis_nigricans").mkdir(parents=True)
    photo(tmp_path / "photos" / "Sayornis_nigricans" / "0.png", 0)
    assert bb("index", "photos", "--teacher", tiny_open_clip_dir, "--out", "idx", cwd=tmp_path).returncode == 0
    res = bb("search", "rec/r0.wav", "--model", synthetic_model, "--index", "idx", cwd=tmp_path)
    assert res.returncode == 0 and len(_warnings(res.stderr)) == 1, res.stderr

    # the same model on the synthetic world's own files, and a model without that provenance: no word
    world = tmp_path / "world"
    (world / "audio").mkdir(parents=True)
    (world / "world.csv").write_text("path,scientific_name\naudio/s0.wav,Sayornis nigricans\n")
    tone(world / "audio" / "s0.wav")
    res = bb("detect", "world/audio", "--model", synthetic_model, "--species-list", "species.txt", cwd=tmp_path)
    assert res.returncode == 0 and not _warnings(res.stderr), res.stderr
    res = bb("detect", "rec", "--model", tiny_distilled_dir, "--species-list", "species.txt", cwd=tmp_path)
    assert res.returncode == 0 and not _warnings(res.stderr), res.stderr


def test_provenance_read_from_the_checkpoint_folder_where_the_model_runs_elsewhere(synthetic_model, tiny_distilled_dir,
                                                                                   tmp_path):
    """`embed-audio --engine ray` loads the model in the Ray actors: its warning comes from config.json."""
    from birdbridge.encoders.provenance import recorded_meta, synthetic_world_note

    real = [str(tmp_path / "r0.wav")]
    assert recorded_meta(str(synthetic_model))["trained_on"]["synthetic"] is True
    assert recorded_meta(f"local-dir:{synthetic_model}") == recorded_meta(str(synthetic_model))
    note = synthetic_world_note(recorded_meta(str(synthetic_model)), real, "m")
    assert note is not None and SYNTHETIC in note and "1 real recording" in note
    assert synthetic_world_note(recorded_meta(str(tiny_distilled_dir)), real, "m") is None
    assert recorded_meta("hf-hub:nobody/nothing") == {} and recorded_meta(str(tmp_path / "missing")) == {}
