"""``--engine ray`` (issue 23, item 1): the same vectors as ``--engine local``, resumable per part.

One local Ray of 2 CPUs serves the whole file: the in-process jobs use it directly and the console
scripts join it with ``--ray-address`` (starting a Ray per command would cost 10-20 s each).
Real phoebe clips and photos, tiny replica models (tests/conftest.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from birdbridge.errors import ConfigError

BIN = Path(sys.executable).with_name("birdbridge")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
       "RAY_AUTH_MODE": "disabled"}
ENV.pop("RAY_ADDRESS", None)
N_CLIPS = 7  # of phoebe's 70: enough for 3 parts of 3, quick on 2 shared cores


@pytest.fixture(scope="module")
def ray_address():
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'birdbridge[ray]')")
    import logging

    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def media(phoebe, tmp_path_factory):
    """Real clips and photos, each set with one bad file (text named .mp3 / .jpg)."""
    d = tmp_path_factory.mktemp("bad")
    (d / "broken.mp3").write_text("not audio at all\n")
    (d / "broken.jpg").write_text("not a photo\n")
    clips = sorted(str(p) for p in (phoebe / "audio").glob("*.mp3"))[:N_CLIPS]
    photos = sorted(str(p) for p in (phoebe / "images").glob("*.jpg"))
    # given out of order: the ray engine sorts by path, the local engine keeps the order given
    return clips[::-1] + [str(d / "broken.mp3")], photos[::-1] + [str(d / "broken.jpg")]


def _sorted(emb):
    order = sorted(range(len(emb.rows)), key=lambda i: (emb.rows[i]["input"], emb.rows[i].get("window_start_s", 0)))
    return emb.vectors[order], [emb.rows[i] for i in order]


def _same(ray_emb, local_emb):
    v_ray, rows_ray = ray_emb.vectors, ray_emb.rows
    v_loc, rows_loc = _sorted(local_emb)
    assert [r["input"] for r in rows_ray] == [r["input"] for r in rows_loc]
    assert rows_ray == rows_loc  # windows, counts, labels
    assert v_ray.shape == v_loc.shape and len(v_ray)
    assert float(np.abs(v_ray - v_loc).max()) <= 1e-5
    assert sorted(ray_emb.skips.to_list(), key=str) == sorted(local_emb.skips.to_list(), key=str)


def test_ray_audio_equals_local_on_real_clips(ray_address, media, tiny_clap_dir, tmp_path):
    from birdbridge.encoders.factory import load_audio_embedder
    from birdbridge.retrieval.embed import embed_audio
    from birdbridge.retrieval.ray_engine import RayOptions, audio_spec, run_job

    clips, _ = media
    labels = [{"label": f"sp{i}"} for i in range(len(clips))]
    spec = audio_spec(str(tiny_clap_dir), batch_size=5)  # forward passes grouped unlike the local run's
    parts = run_job(spec, list(zip(clips, labels)), tmp_path / "parts", RayOptions(part_size=3, workers=1))
    local = embed_audio(load_audio_embedder(str(tiny_clap_dir)), clips, labels=labels, batch_size=32)
    emb = parts.load_all()
    _same(emb, local)
    assert [s.reason for s in emb.skips.skips] == ["unreadable"]
    m = parts.manifest()
    assert (m["n_parts"], m["parts_computed"], m["parts_reused"], m["engine"]) == (3, 3, 0, "ray")
    assert (m["model"], m["space"], m["hop_samples"]) == (local.meta["model"], local.meta["space"], local.meta["hop_samples"])
    assert (tmp_path / "parts" / "emb" / "part-00002.npy").is_file()  # clip-retrieval's layout


def test_ray_images_equal_local_on_real_photos(ray_address, media, tiny_open_clip_dir, tmp_path):
    from birdbridge.encoders.teacher import Teacher
    from birdbridge.retrieval.embed import embed_images
    from birdbridge.retrieval.ray_engine import RayOptions, image_spec, run_job

    _, photos = media
    spec = image_spec(str(tiny_open_clip_dir), batch_size=3)
    with pytest.raises(ConfigError, match="--workers 2 needs at least 3 CPUs"):  # nothing left to decode: refused
        run_job(spec, [(p, {}) for p in photos], tmp_path / "refused", RayOptions(part_size=4, workers=2))
    parts = run_job(spec, [(p, {}) for p in photos], tmp_path / "parts", RayOptions(part_size=4, workers=1))
    local = embed_images(Teacher.load(str(tiny_open_clip_dir)), photos)
    emb = parts.load_all()
    _same(emb, local)
    assert len(emb.rows) == 7 and [s.input for s in emb.skips.skips] == [photos[-1]]


def test_killed_ray_job_resumes_only_missing_parts(ray_address, media, tiny_clap_dir, tmp_path):
    from birdbridge.retrieval.ray_engine import RayOptions, audio_spec, run_job

    clips, _ = media
    spec = audio_spec(str(tiny_clap_dir), per_window=True)
    items = [(c, {}) for c in clips]
    opts = RayOptions(part_size=3)
    first = run_job(spec, items, tmp_path / "parts", opts)
    clean = first.load_all()
    # a job killed while writing part 1: its vectors landed, its metadata (the completion mark) did not
    first.meta_path(1).unlink()
    kept = {i: (first.emb_path(i).stat().st_mtime_ns, first.meta_path(i).stat().st_mtime_ns) for i in (0, 2)}
    again = run_job(spec, items, tmp_path / "parts", opts)
    m = again.manifest()
    assert (m["parts_computed"], m["parts_reused"]) == (1, 2)
    assert {i: (again.emb_path(i).stat().st_mtime_ns, again.meta_path(i).stat().st_mtime_ns) for i in (0, 2)} == kept
    resumed = again.load_all()
    assert resumed.rows == clean.rows and len(resumed.rows) > N_CLIPS  # per window
    np.testing.assert_allclose(resumed.vectors, clean.vectors, atol=1e-6)
    # nothing missing: nothing computed, and no Ray needed at all
    m = run_job(spec, items, tmp_path / "parts", opts).manifest()
    assert (m["parts_computed"], m["parts_reused"]) == (0, 3)
    # another job's parts are never mixed in
    with pytest.raises(ConfigError, match="another job"):
        run_job(audio_spec(str(tiny_clap_dir)), items, tmp_path / "parts", opts)


def _cli(*args, cwd, env=None):
    res = subprocess.run([str(BIN), *map(str, args)], cwd=cwd, env=env or ENV, capture_output=True, text=True, timeout=600)
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    return res


def test_cli_embed_audio_ray_matches_local_and_stays_quiet(ray_address, media, tiny_clap_dir, tmp_path):
    clips, _ = media
    common = ["embed-audio", *clips, "--model", tiny_clap_dir]
    local = _cli(*common, "-o", "local.npy", cwd=tmp_path)
    ray = _cli(*common, "-o", "ray.npy", "--engine", "ray", "--ray-address", ray_address, "--part-size", "3", cwd=tmp_path)
    assert local.returncode == 0 and ray.returncode == 0, ray.stderr
    v_loc, v_ray = np.load(tmp_path / "local.npy"), np.load(tmp_path / "ray.npy")
    rows_loc = pq.read_table(tmp_path / "local.parquet").to_pylist()
    rows_ray = pq.read_table(tmp_path / "ray.parquet").to_pylist()
    order = sorted(range(len(rows_loc)), key=lambda i: rows_loc[i]["input"])
    assert [rows_loc[i] for i in order] == rows_ray
    assert float(np.abs(v_loc[order] - v_ray).max()) <= 1e-5
    side = json.loads((tmp_path / "ray.json").read_text())
    assert [s["reason"] for s in side["skipped"]] == ["unreadable"] and side["engine"] == "ray"
    assert not (tmp_path / "ray.npy.parts").exists()  # the staged parts are gone once ray.npy is written
    # Ray's own logs, bars and warnings stay out of the user's output
    for noise in ("INFO", "WARNING", "core_worker", "Running Dataset", "Deprecat"):
        assert noise not in ray.stderr, ray.stderr
    assert "Ray: 3 parts computed" in ray.stderr
    # --out DIR (the parts folder itself, kept and resumed): test_killed_cli_job_resumes_from_its_parts


def test_cli_index_ray_holds_the_local_vectors(ray_address, phoebe, tiny_open_clip_dir, tmp_path):
    from birdbridge.retrieval.index import ImageIndex

    import csv

    common = ["index", phoebe / "images.csv", "--teacher", tiny_open_clip_dir]
    assert _cli(*common, "-o", "local", cwd=tmp_path).returncode == 0
    # on Ray: the first 4 photos, then --add all 7 (Ray embeds only the 3 new ones)
    rows = list(csv.DictReader(open(phoebe / "images.csv")))
    (tmp_path / "first4").mkdir()
    with open(tmp_path / "first4" / "images.csv", "w", newline="") as fh:  # the dataset name is the CSV's
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({**r, "path": str(phoebe / r["path"])} for r in rows[:4])
    ray = ["--teacher", tiny_open_clip_dir, "-o", "ray", "--engine", "ray", "--ray-address", ray_address, "--part-size", "4"]
    assert _cli("index", tmp_path / "first4" / "images.csv", *ray, cwd=tmp_path).returncode == 0
    res = _cli("index", phoebe / "images.csv", *ray, "--add", cwd=tmp_path)
    assert res.returncode == 0 and "Ray: 1 parts computed" in res.stderr and "3 new" in res.stderr, res.stderr
    a, b = ImageIndex.open(tmp_path / "local"), ImageIndex.open(tmp_path / "ray")
    assert a.count == b.count == 7 and a.kind == b.kind
    rows_a, rows_b = a.metadata(range(a.count)), b.metadata(range(b.count))
    assert rows_a == rows_b  # same records in the same order, same ids
    va = np.concatenate([np.load(a.root / s["vectors"]) for s in a.manifest["shards"]])
    vb = np.concatenate([np.load(b.root / s["vectors"]) for s in b.manifest["shards"]])
    assert float(np.abs(va - vb).max()) <= 1e-5
    assert not (tmp_path / "ray" / ".ray-parts").exists()


def test_killed_cli_job_resumes_from_its_parts(ray_address, media, tiny_clap_dir, tmp_path):
    import signal
    import time

    from birdbridge.embedding_parts import EmbeddingParts
    from birdbridge.encoders.factory import load_audio_embedder
    from birdbridge.retrieval.embed import embed_audio

    clips, _ = media
    args = [str(BIN), "embed-audio", *clips, "--model", str(tiny_clap_dir), "-o", "parts", "--engine", "ray",
            "--ray-address", ray_address, "--part-size", "2"]
    # killed after its first part, while it waits (the test hook) before writing the next
    proc = subprocess.Popen(args, cwd=tmp_path, env={**ENV, "BIRDBRIDGE_TEST_PAUSE_S": "30"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = EmbeddingParts(tmp_path / "parts")
    deadline = time.time() + 300
    while not parts.complete_parts() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert parts.complete_parts() == [0] and not (tmp_path / "parts" / "embeddings.json").exists()
    first = (parts.emb_path(0).stat().st_mtime_ns, parts.meta_path(0).stat().st_mtime_ns)
    res = _cli(*args[1:], cwd=tmp_path)
    assert res.returncode == 0 and "3 parts computed, 1 already complete" in res.stderr, res.stderr
    m = parts.manifest()
    assert (m["parts_computed"], m["parts_reused"], m["n_parts"]) == (3, 1, 4)
    assert sorted(p.name for p in (tmp_path / "parts" / "meta").iterdir()) == [f"part-0000{i}.parquet" for i in range(4)]
    assert (parts.emb_path(0).stat().st_mtime_ns, parts.meta_path(0).stat().st_mtime_ns) == first
    emb = parts.load_all()
    _same(emb, embed_audio(load_audio_embedder(str(tiny_clap_dir)), clips))  # = a clean run, within 1e-5


def test_engine_ray_without_ray_is_one_line(tmp_path, media, tiny_clap_dir):
    fake = tmp_path / "fake"
    (fake / "ray").mkdir(parents=True)
    (fake / "ray" / "__init__.py").write_text("raise ImportError('No module named ray (test shadow)')\n")
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(fake), os.environ.get("PYTHONPATH", "")])}
    clips, _ = media
    res = _cli("embed-audio", clips[0], "--model", tiny_clap_dir, "-o", "x.npy", "--engine", "ray", cwd=tmp_path, env=env)
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert res.returncode == 2 and errors == ["error: --engine ray needs Ray: pip install 'birdbridge[ray]'"], res.stderr
    assert not list(tmp_path.glob("x*"))
    # ray not installed at all (an import hook hides it): found missing up front, with every other wrong input
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "sitecustomize.py").write_text(
        "import sys\n"
        "class _NoRay:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'ray' or name.startswith('ray.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, _NoRay())\n")
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(hidden), os.environ.get("PYTHONPATH", "")])}
    res = _cli("index", "no-such-photos", "-o", "idx", "--engine", "ray", cwd=tmp_path, env=env)
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert res.returncode == 2 and len(errors) == 1, res.stderr
    assert "inputs are wrong" in errors[0] and "no-such-photos" in errors[0]
    assert "--engine ray needs Ray: pip install 'birdbridge[ray]'" in errors[0]
    res = _cli("embed-audio", clips[0], "--model", tiny_clap_dir, "-o", "x.npy", "--engine", "spark", cwd=tmp_path)
    assert res.returncode == 2 and "--engine must be one of local, ray" in res.stderr


def test_cli_detect_ray_gives_the_local_tables(ray_address, media, phoebe, tiny_distilled_dir, tmp_path):
    import csv

    clips, _ = media
    species = tmp_path / "species.txt"
    names = sorted({r["scientific_name"] for r in csv.DictReader(open(phoebe / "recordings.csv"))})
    species.write_text("\n".join(names) + "\n")
    common = ["detect", *clips[:4], clips[-1], "--model", tiny_distilled_dir, "--species-list", species,
              "--cache-dir", tmp_path / "cache", "-k", "2", "--hop-s", "0.5"]
    local = _cli(*common, "--format", "csv", "--out", "local.csv", cwd=tmp_path)
    ray = _cli(*common, "--format", "csv", "--out", "ray.csv", "--engine", "ray", "--ray-address", ray_address,
               "--part-size", "2", cwd=tmp_path)
    assert local.returncode == 0 and ray.returncode == 0, ray.stderr
    a = list(csv.DictReader(open(tmp_path / "local.csv")))
    b = list(csv.DictReader(open(tmp_path / "ray.csv")))
    assert len(a) == len(b) > 0
    same = ("recording", "start_s", "end_s", "rank", "species_id")
    assert [tuple(r[c] for c in same) for r in a] == [tuple(r[c] for c in same) for r in b]
    assert max(abs(float(x["score"]) - float(y["score"])) for x, y in zip(a, b)) <= 2e-5
    assert "skipped" in ray.stderr and "broken.mp3" in ray.stderr  # the bad file, with the local reason
    assert not (tmp_path / "ray.csv.parts").exists()
    # a deployment folder: the tables and journal as local, the Ray parts gone once written
    res = _cli(*common, "--out", "deploy", "--engine", "ray", "--ray-address", ray_address, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert (tmp_path / "deploy" / "detect.json").is_file() and not (tmp_path / "deploy" / ".ray-parts").exists()
