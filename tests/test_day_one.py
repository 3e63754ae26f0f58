"""Issue 16, points 1-5, what a new user meets on day one: a model and an index agree from any
directory and after their folder moves; a mistyped model path or an unreachable hub fails at
once with a useful line; an absent device is one line, not a traceback; outputs follow the
umask; default output is birdbridge's own (``--verbose`` shows the rest), unwrapped off a
terminal, and ends with where the outputs are.

Everything runs the real console script in a subprocess from a directory other than the
project (``cwd`` is a sibling folder), as a user would. The project is made the way a user
makes one: ``birdbridge train`` and ``birdbridge index`` run *inside* it with relative paths.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import yaml
from PIL import Image

BIN = Path(sys.executable).with_name("birdbridge")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
SPECIES = [("Avis rubra", "Red Bird", 900.0, (200, 40, 40)), ("Avis caerulea", "Blue Bird", 2400.0, (40, 40, 200))]


def run(*args, cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    res = subprocess.run([str(BIN), *map(str, args)], cwd=cwd, env=env or ENV, capture_output=True, text=True,
                         timeout=timeout)
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    return res


def _error_line(res: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.stderr[-2000:]
    return lines[0]


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_clap_dir, tiny_open_clip_dir) -> Path:
    """``proj/``: models, 8 clips, 4 photos, a trained model ``out/model`` and an index ``out/index``,
    made from inside ``proj`` with relative paths only."""
    root = tmp_path_factory.mktemp("identity")
    proj = root / "proj"
    shutil.copytree(tiny_open_clip_dir, proj / "models" / "teacher")
    shutil.copytree(tiny_clap_dir, proj / "models" / "student")
    (proj / "audio").mkdir()
    (proj / "photos").mkdir()
    rows, photos = [], []
    sr = 16000
    t = np.arange(sr) / sr
    for s, (sci, common, f0, rgb) in enumerate(SPECIES):
        for i in range(4):
            wave = 0.3 * np.sin(2 * np.pi * (f0 + 50 * i) * t).astype(np.float32)
            name = f"audio/s{s}_{i}.wav"
            sf.write(proj / name, wave, sr)
            rows.append(f"{name},{sci},{common},train")
        for i in range(2):
            name = f"photos/s{s}_{i}.png"
            Image.new("RGB", (40, 40), rgb).save(proj / name)
            photos.append(f"{name},{sci},{common}")
    (proj / "clips.csv").write_text("path,scientific_name,common_name,split\n" + "\n".join(rows) + "\n")
    (proj / "photos.csv").write_text("path,scientific_name,common_name\n" + "\n".join(photos) + "\n")
    (proj / "train.yaml").write_text(yaml.safe_dump({
        "data": {"kind": "csv", "path": "clips.csv"},
        "train": {"student": "models/student", "teacher": "models/teacher", "cache_dir": "cache", "batch_size": 4,
                  "max_epochs": 1, "num_workers": 0, "progress": False, "accelerator": "cpu", "devices": 1,
                  "prompt_types": ["common"]}}))
    res = run("train", "train.yaml", "--out", "out", cwd=proj)
    assert res.returncode == 0, res.stderr[-3000:]
    (root / "train.stderr").write_text(res.stderr)  # read by the quiet-output test
    res = run("index", "photos.csv", "--teacher", "models/teacher", "--out", "out/index", cwd=proj)
    assert res.returncode == 0, res.stderr[-3000:]
    return proj


def _search(proj: Path, cwd: Path, *extra, model: Path | None = None, index: Path | None = None):
    return run("search", proj / "audio" / "s1_0.wav", "--model", model or proj / "out" / "model",
               "--index", index or proj / "out" / "index", "--format", "json", "-k", "2", *extra, cwd=cwd)


def test_model_and_index_agree_from_another_directory_and_after_a_move(project, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = _search(project, elsewhere)
    assert res.returncode == 0, res.stderr[-2000:]
    assert len(json.loads(res.stdout)[0]["hits"]) == 2

    # What is recorded: the teacher's weights fingerprint and an absolute id, in both.
    cfg = json.loads((project / "out" / "model" / "config.json").read_text())
    manifest = json.loads((project / "out" / "index" / "index.json").read_text())
    assert cfg["teacher_fingerprint"].startswith("w1:")
    assert cfg["teacher_fingerprint"] == manifest["teacher_fingerprint"]
    assert cfg["teacher_id"] == manifest["teacher_id"] == f"local-dir:{(project / 'models' / 'teacher').resolve()}"

    # The whole project moves: model and index still agree, and the species guess finds the
    # teacher again (beside the index) to embed the species names.
    moved = tmp_path / "moved"
    shutil.copytree(project, moved, symlinks=True)
    shutil.rmtree(moved / "cache", ignore_errors=True)
    os.rename(project, tmp_path / "gone")  # the old location no longer exists
    try:
        res = _search(moved, elsewhere, "--guess-species", "--cache-dir", tmp_path / "fresh-cache")
        assert res.returncode == 0, res.stderr[-2000:]
        out = json.loads(res.stdout)[0]
        assert len(out["hits"]) == 2 and {g["scientific_name"] for g in out["species_guess"]} == {s[0] for s in SPECIES}
    finally:
        os.rename(tmp_path / "gone", project)


def test_other_weights_at_the_same_path_are_a_mismatch(project, tmp_path):
    """The fingerprint is compared: a teacher retrained in place is not the index's teacher."""
    copy = tmp_path / "copy"
    shutil.copytree(project, copy, symlinks=True)
    # an index of the same photos built with other teacher weights at the same folder
    weights = copy / "models" / "teacher" / "open_clip_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    res = run("index", "photos.csv", "--teacher", "models/teacher", "--out", "out/index2", cwd=copy)
    assert res.returncode == 0, res.stderr[-2000:]
    res = _search(copy, tmp_path, index=copy / "out" / "index2", model=copy / "out" / "model")
    assert res.returncode == 2
    line = _error_line(res)
    assert "was distilled onto teacher" in line and "--allow-teacher-mismatch" in line
    res = _search(copy, tmp_path, "--allow-teacher-mismatch", index=copy / "out" / "index2", model=copy / "out" / "model")
    assert res.returncode == 0, res.stderr[-2000:]


def test_serve_has_allow_teacher_mismatch_and_device(project, tmp_path):
    from birdbridge.errors import ConfigError
    from birdbridge.serve.app import create_app

    res = run("serve", "--help", cwd=tmp_path, env={**ENV, "COLUMNS": "200"})
    assert "--allow-teacher-mismatch" in res.stdout and "--device" in res.stdout
    other = tmp_path / "other-index"
    shutil.copytree(project / "out" / "index", other)
    m = json.loads((other / "index.json").read_text())
    m.update(teacher_id="hf-hub:imageomics/bioclip-2", teacher_fingerprint="w1:" + "0" * 24, teacher_relpath=None)
    (other / "index.json").write_text(json.dumps(m))
    with pytest.raises(ConfigError, match="--allow-teacher-mismatch"):
        create_app(str(project / "out" / "model"), other)
    with pytest.warns(UserWarning, match="distilled onto teacher"):
        app = create_app(str(project / "out" / "model"), other, allow_teacher_mismatch=True)
    assert app.state.index.count == 4
    res = run("serve", "--model", project / "out" / "model", "--index", other, "--port", "1", cwd=tmp_path)
    assert res.returncode == 2 and "--allow-teacher-mismatch" in _error_line(res)


# --------------------------------------------------------------------------- point 2: model ids


def test_mistyped_model_folder_fails_at_once_with_close_matches(project):
    env = {k: v for k, v in ENV.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env["HF_ENDPOINT"] = "http://hub.invalid"  # were it sent to the hub: ~70 s of retries before
    t0 = time.perf_counter()
    res = run("search", "audio/s1_0.wav", "--model", "out/modl", "--index", "out/index", cwd=project, env=env)
    took = time.perf_counter() - t0
    assert res.returncode == 2
    line = _error_line(res)
    assert "no such model folder: out/modl" in line and "did you mean out/model?" in line
    assert "hf download" not in line
    assert took < 25, f"{took:.1f} s"  # interpreter + torch start-up; no network waits
    res = run("embed-audio", "audio/s1_0.wav", "--model", "birdnett", "--out", "x.npy", cwd=project, env=env)
    assert res.returncode == 2 and "did you mean birdnet?" in _error_line(res)
    res = run("index", "photos.csv", "--teacher", "models/teachr", "--out", "out/index3", cwd=project, env=env)
    assert res.returncode == 2 and "no such teacher folder" in _error_line(res)
    assert "did you mean models/teacher?" in _error_line(res)


def test_unreachable_hub_fails_fast_and_says_so(tmp_path):
    env = {k: v for k, v in ENV.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    env.update(HF_ENDPOINT="http://hub.invalid", HF_HOME=str(tmp_path / "hf"))
    # a real recording: inputs are checked before any model loads, so a missing one would answer first
    sf.write(tmp_path / "x.wav", np.zeros(16000, np.float32) + 0.1, 16000)
    t0 = time.perf_counter()
    res = run("embed-audio", "x.wav", "--model", "someorg/somemodel", "--out", "x.npy", cwd=tmp_path, env=env)
    took = time.perf_counter() - t0
    assert res.returncode == 2
    line = _error_line(res)
    assert "'someorg/somemodel' is not available" in line and "cannot be reached" in line and "hub.invalid" in line
    assert "hf download someorg/somemodel" in line
    assert took < 25, f"{took:.1f} s (huggingface_hub's retry loop takes ~30 s and more)"


def test_model_id_resolution_rules(tmp_path, monkeypatch):
    from birdbridge.encoders import hub

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "model").mkdir(parents=True)
    assert hub.split_model_id("runs/model") == ("local", str(tmp_path / "runs" / "model"))
    assert hub.split_model_id("runs/modl")[0] == "local"  # "runs" is a folder here: a path, not a hub id
    assert hub.split_model_id("someorg/model")[0] == "hub"
    assert hub.split_model_id("hf-hub:runs/model") == ("hub", "runs/model")
    assert hub.split_model_id("BirdNET") == ("builtin", "birdnet")
    assert hub.normalise_model_id("./runs/../runs/model/") == f"local-dir:{tmp_path / 'runs' / 'model'}"
    assert hub.close_matches("runs/modle", tmp_path / "runs" / "modle") == ["runs/model"]
    assert hub.close_matches("rns/model", tmp_path / "rns" / "model") == ["runs/model"]


# --------------------------------------------------------------------------- point 3: devices


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_absent_device_is_one_line_for_every_verb(project, tmp_path):
    audio, model, index = project / "audio" / "s1_0.wav", project / "out" / "model", project / "out" / "index"
    cases = [
        ("embed-audio", audio, "--model", model, "--out", tmp_path / "a.npy", "--device", "cuda"),
        ("embed-images", project / "photos", "--teacher", project / "models" / "teacher", "--out", tmp_path / "i.npy",
         "--device", "cuda:0"),
        ("index", project / "photos.csv", "--teacher", project / "models" / "teacher", "--out", tmp_path / "ix",
         "--device", "cuda"),
        ("search", audio, "--model", model, "--index", index, "--device", "cuda"),
        ("serve", "--model", model, "--index", index, "--device", "cuda"),
        ("train", project / "train.yaml", "--out", tmp_path / "t", "--accelerator", "gpu"),
    ]
    for args in cases:
        t0 = time.perf_counter()
        res = run(*args, cwd=tmp_path)
        assert res.returncode == 2, (args[0], res.stderr[-1500:])
        line = _error_line(res)
        assert "is not available" in line and ("use cpu" in line or "accelerator cpu" in line), (args[0], line)
        assert len(res.stderr.strip().splitlines()) == 1, (args[0], res.stderr)
        assert time.perf_counter() - t0 < 60
    assert not (tmp_path / "a.npy").exists() and not (tmp_path / "ix").exists() and not (tmp_path / "t").exists()
    res = run("embed-audio", audio, "--model", model, "--out", tmp_path / "a.npy", "--device", "tpu", cwd=tmp_path)
    assert res.returncode == 2 and "cpu, cuda, cuda:N, mps or auto" in _error_line(res)


# --------------------------------------------------------------------------- point 4: umask


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_outputs_follow_the_umask(project, tmp_path, umask):
    """Files 0666 and folders 0777 less the umask, like any other file (mkstemp/mkdtemp give 0600/0700)."""
    def with_umask():
        os.umask(umask)

    out = tmp_path / "o"
    res = subprocess.run([str(BIN), "embed-audio", project / "audio", "--model", project / "out" / "model",
                          "--out", out / "emb.npy"], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                         preexec_fn=with_umask, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    script = ("import sys; from pathlib import Path; from birdbridge.io import atomic_dir, atomic_write_json\n"
              "from birdbridge.evaluate.write import write_json\n"
              "with atomic_dir(Path(sys.argv[1]) / 'model') as d: (d / 'config.json').write_text('{}')\n"
              "write_json({'x': 1}, Path(sys.argv[1]) / 'results.json')\n")
    subprocess.run([sys.executable, "-c", script, str(out)], check=True, env=ENV, preexec_fn=with_umask, timeout=120)
    files = [out / "emb.npy", out / "emb.parquet", out / "emb.json", out / "model" / "config.json", out / "results.json"]
    for f in files:
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, (f.name, oct(f.stat().st_mode))
    assert (out / "model").stat().st_mode & 0o777 == 0o777 & ~umask


# --------------------------------------------------------------------------- point 5: output

NOISE = {
    "Lightning INFO": "GPU available:",
    "litlogger advert": "litlogger",
    "pytree deprecation": "isinstance(treespec, LeafSpec)",
    "transformers loading bar": "Loading weights",
    "TFLite delegate": "Created TensorFlow Lite",
    "mpg123 resync": "Note: Illegal Audio-MPEG-Header",
}


def _noise_in(text: str) -> list[str]:
    return [name for name, marker in NOISE.items() if marker in text]


def _bad_mp3s(folder: Path) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    text = folder / "field_notes.mp3"
    text.write_text("Dawn chorus at the pond, 5:40, two phoebes calling.\n" * 50)
    junk = folder / "broken.mp3"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 20000, dtype=np.uint8).tobytes())
    return text, junk


def test_default_output_is_birdbridges_own_and_verbose_shows_the_rest(project, tmp_path):
    default = (project.parent / "train.stderr").read_text()
    assert _noise_in(default) == [], default[-3000:]
    assert "outputs:" in default and f"{(project / 'out' / 'model').resolve()}/" in default

    res = run("--verbose", "train", project / "train.yaml", "--out", tmp_path / "v", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    shown = _noise_in(res.stderr)
    assert {"Lightning INFO", "litlogger advert", "transformers loading bar"} <= set(shown), res.stderr[-3000:]
    gpu_lines = [ln for ln in res.stderr.splitlines() if "GPU available:" in ln]
    assert len(gpu_lines) == 1, gpu_lines  # once, not twice (it also went through the root logger)


def test_not_audio_reason_and_native_noise(project, tmp_path):
    text, junk = _bad_mp3s(tmp_path / "in")
    good = project / "audio" / "s0_0.wav"
    res = run("embed-audio", good, text, junk, "--model", project / "out" / "model", "--out", tmp_path / "e.npy",
              cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert _noise_in(res.stderr) == [], res.stderr
    assert "field_notes.mp3: unreadable (not an audio file (it holds text))" in res.stderr
    assert "does not exist" not in res.stderr  # libsndfile's words for "MPEG probe gave up"
    res = run("--verbose", "embed-audio", good, junk, "--model", project / "out" / "model", "--out", tmp_path / "v.npy",
              cwd=tmp_path)
    assert "Note: Illegal Audio-MPEG-Header" in res.stderr or "[src/libmpg123/" in res.stderr, res.stderr


def test_birdnet_delegate_line_only_with_verbose(tmp_path, project):
    from birdbridge.encoders.registry import birdnet_status

    ok, why = birdnet_status()
    if not ok:
        pytest.skip(f"BirdNET not installed: {why}")
    clip = tmp_path / "clip.wav"
    sf.write(clip, 0.3 * np.sin(2 * np.pi * 3000 * np.arange(48000 * 3) / 48000).astype(np.float32), 48000)
    res = run("embed-audio", clip, "--model", "birdnet", "--out", tmp_path / "b.npy", cwd=tmp_path)
    assert res.returncode == 0 and _noise_in(res.stderr) == [], res.stderr
    res = run("--verbose", "embed-audio", clip, "--model", "birdnet", "--out", tmp_path / "bv.npy", cwd=tmp_path)
    assert res.returncode == 0 and "TFLite delegate" in _noise_in(res.stderr), res.stderr


def test_off_a_terminal_nothing_is_wrapped_or_cut(project, tmp_path):
    """Logs and SLURM outputs: full paths in tables, every message on one physical line."""
    deep = tmp_path / ("a-rather-long-folder-name-for-field-recordings-" * 3) / "2026" / "site-07"
    deep.mkdir(parents=True)
    shutil.copytree(project / "photos", deep / "photos")
    res = run("index", deep / "photos", "--teacher", project / "models" / "teacher", "--out", deep / "ix", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    res = run("search", project / "audio" / "s0_0.wav", "--model", project / "out" / "model", "--index", deep / "ix",
              "-k", "4", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    for photo in (deep / "photos").iterdir():
        assert str(photo.resolve()) in res.stdout, res.stdout  # one table cell, whole
    res = run("embed-audio", project / "audio" / "s0_0.wav", "--model", deep / "no-such-model", "--out", "x.npy",
              cwd=tmp_path)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert f"no such model folder: {deep / 'no-such-model'}" in res.stderr


def test_every_verb_ends_with_where_its_outputs_are(project, tmp_path):
    res = run("embed-audio", project / "audio", "--model", project / "out" / "model", "--out", tmp_path / "e", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    tail = res.stderr.strip().splitlines()[-4:]
    assert tail[0] == "outputs:"
    assert [ln.split()[0] for ln in tail[1:]] == [str(tmp_path / f"e.{x}") for x in ("npy", "parquet", "json")]
    res = run("index", project / "photos.csv", "--teacher", project / "models" / "teacher", "--out", tmp_path / "ix",
              cwd=tmp_path)
    assert res.stderr.strip().splitlines()[-2:] == ["outputs:", f"  {tmp_path / 'ix'}/  (index of 4 images; skips listed in index.json)"]
    res = run("search", project / "audio" / "s0_0.wav", "--model", project / "out" / "model", "--index", tmp_path / "ix",
              "--format", "html", "--out", tmp_path / "page.html", cwd=tmp_path)
    assert res.stderr.strip().splitlines()[-2:] == ["outputs:", f"  {tmp_path / 'page.html'}  (search page)"]
