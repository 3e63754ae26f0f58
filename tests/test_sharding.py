"""Sharded embedding: N processes with RANK/WORLD_SIZE give the one-process result, row for row.

The workers are real subprocesses (as torchrun starts them), with a random-init tiny CLAP
and a tiny open_clip. Exact equality holds because each clip/image is embedded alone
(``batch_size=1``): with larger batches, which clips share a batch differs between one
and several processes and BLAS may round the last bit differently.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch

from birdbridge.distributed import merge_embeddings, part_path, rank_world, run_sharded, shard_indices

WORKER = textwrap.dedent(
    """
    import json, sys
    import torch
    torch.set_num_threads(1)
    from birdbridge.distributed import run_sharded
    from birdbridge.encoders.factory import load_audio_embedder
    from birdbridge.encoders.teacher import Teacher
    from birdbridge.retrieval.embed import embed_audio, embed_images
    args = json.loads(sys.argv[1])
    clap = load_audio_embedder(args["clap"])
    run_sharded(lambda xs: embed_audio(clap, xs, batch_size=1), args["audio"], args["out_audio"], key=args["clap"], timeout_s=60)
    teacher = Teacher.load(args["teacher"])
    run_sharded(lambda xs: embed_images(teacher, xs, batch_size=1), args["images"], args["out_images"], key=args["teacher"], timeout_s=60)
    """
)


def test_shard_indices_tile_the_input_in_order():
    for n in (0, 1, 5, 7, 64):
        for world in (1, 2, 3, 8):
            blocks = [shard_indices(n, r, world) for r in range(world)]
            assert [i for b in blocks for i in b] == list(range(n))
            assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
    with pytest.raises(ValueError):
        shard_indices(4, 2, 2)


def test_rank_world_reads_torchrun_then_slurm_env(monkeypatch):
    for v in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(v, raising=False)
    assert rank_world() == (0, 1)
    monkeypatch.setenv("SLURM_PROCID", "3")
    monkeypatch.setenv("SLURM_NTASKS", "4")
    assert rank_world() == (3, 4)
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert rank_world() == (1, 2)


def _launch(tmp: Path, world: int, args: dict, extra_env: dict | None = None) -> None:
    script = tmp / "worker.py"
    script.write_text(WORKER)
    procs = []
    for r in range(world):
        env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT")}
        env.update({"RANK": str(r), "WORLD_SIZE": str(world), "LOCAL_RANK": str(r), **(extra_env or {})})
        procs.append(subprocess.Popen([sys.executable, str(script), json.dumps(args)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for p in procs:
        try:
            out, _ = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            for q in procs:
                q.kill()
            pytest.fail("sharded worker hung")
        assert p.returncode == 0, out[-3000:]


@pytest.fixture(scope="module")
def audio_inputs(tmp_path_factory) -> list[str]:
    d = tmp_path_factory.mktemp("shard_audio")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(7):  # lengths from under one window to several windows
        p = d / f"clip{i}.wav"
        sf.write(p, (0.3 * rng.standard_normal(int(16000 * (0.6 + 0.5 * i)))).astype(np.float32), 16000)
        paths.append(str(p))
    bad = d / "broken.wav"
    bad.write_bytes(b"not audio at all")
    paths.insert(3, str(bad))  # a skip in rank 0's block must not shift rank 1's rows
    return paths


def _reference(fn):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn()
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def image_inputs(tmp_path_factory) -> list[str]:
    from PIL import Image

    d = tmp_path_factory.mktemp("shard_images")
    rng = np.random.default_rng(1)
    paths = []
    for i in range(5):
        p = d / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(p)
        paths.append(str(p))
    return paths


@pytest.mark.parametrize("world,rendezvous", [(2, "files"), (2, "gloo")])
def test_sharded_embedding_equals_one_process(tmp_path, tiny_clap_dir, tiny_open_clip_dir, audio_inputs, image_inputs,
                                              world, rendezvous):
    """Audio (with a bad file in an early block) and images, merged by a file barrier or gloo."""
    from birdbridge.encoders.factory import load_audio_embedder
    from birdbridge.encoders.teacher import Teacher
    from birdbridge.retrieval.embed import embed_audio, embed_images

    ref_a = _reference(lambda: embed_audio(load_audio_embedder(str(tiny_clap_dir)), audio_inputs, batch_size=1))
    ref_i = _reference(lambda: embed_images(Teacher.load(str(tiny_open_clip_dir)), image_inputs, batch_size=1))
    out_a, out_i = tmp_path / "audio.npy", tmp_path / "images.npy"
    env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(29500 + os.getpid() % 1000)} if rendezvous == "gloo" else None
    _launch(tmp_path, world, {"clap": str(tiny_clap_dir), "audio": audio_inputs, "out_audio": str(out_a),
                              "teacher": str(tiny_open_clip_dir), "images": image_inputs, "out_images": str(out_i)}, env)

    merged = np.load(out_a)
    assert merged.shape == ref_a.vectors.shape and merged.shape[0] == len(audio_inputs) - 1
    assert np.array_equal(merged, ref_a.vectors)  # same rows, same order, bit for bit
    assert pq.read_table(out_a.with_suffix(".parquet")).to_pylist() == ref_a.rows
    meta = json.loads(out_a.with_suffix(".json").read_text())
    assert meta["n_skipped"] == 1 and meta["skipped"][0]["input"].endswith("broken.wav")
    assert meta["n_shards"] == world

    assert np.array_equal(np.load(out_i), ref_i.vectors)
    assert [r["input"] for r in pq.read_table(out_i.with_suffix(".parquet")).to_pylist()] == image_inputs
    leftovers = sorted(p.name for p in tmp_path.iterdir() if ".rank" in p.name)
    assert leftovers == [], f"parts/markers not cleaned up: {leftovers}"


def test_failed_rank_is_reported_not_merged(tmp_path):
    """Rank 0 of a 2-rank job whose rank 1 failed raises instead of writing a partial output."""
    from birdbridge.distributed import ShardError, _marker, job_token
    from birdbridge.io import atomic_write_text
    from birdbridge.embeddings import Embeddings

    out = tmp_path / "e.npy"
    inputs = ["a", "b", "c"]
    atomic_write_text(_marker(out, 1, "failed"), json.dumps({"token": job_token(inputs, 2, "k"), "message": "boom"}))
    fn = lambda xs: Embeddings(np.ones((len(xs), 2), np.float32), [{"input": x} for x in xs])  # noqa: E731

    with pytest.raises(ShardError, match="rank 1 failed: boom"):
        run_sharded(fn, inputs, out, rank=0, world=2, key="k", timeout_s=5)
    assert not out.exists()
    assert part_path(out, 0).exists()  # rank 0's own part stays for inspection


def test_merge_keeps_rank_order_and_empty_parts():
    from birdbridge.embeddings import Embeddings

    a = Embeddings(np.eye(2, 3, dtype=np.float32), [{"input": "x"}, {"input": "y"}])
    empty = Embeddings(np.zeros((0, 3), np.float32), [])
    b = Embeddings(np.eye(1, 3, k=2, dtype=np.float32), [{"input": "z"}])
    m = merge_embeddings([a, empty, b])
    assert [r["input"] for r in m.rows] == ["x", "y", "z"]
    assert np.array_equal(m.vectors[2], [0, 0, 1])


def test_embed_images_cli_shards_under_torchrun_env(tmp_path, tiny_open_clip_dir, image_inputs):
    """``birdbridge embed-images`` run as 2 ranks writes one merged output, in input order."""
    out = tmp_path / "gallery.npy"
    procs = []
    for r in range(2):
        env = {k: v for k, v in os.environ.items() if k not in ("MASTER_ADDR", "MASTER_PORT")}
        env.update({"RANK": str(r), "WORLD_SIZE": "2", "OMP_NUM_THREADS": "1"})
        procs.append(subprocess.Popen([sys.executable, "-m", "birdbridge.cli", "embed-images", *image_inputs, "--teacher",
                                       str(tiny_open_clip_dir), "--out", str(out), "--device", "cpu"], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    logs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    assert [r["input"] for r in pq.read_table(out.with_suffix(".parquet")).to_pylist()] == image_inputs
    assert json.loads(out.with_suffix(".json").read_text())["n_shards"] == 2
    assert "wrote 5 rows" in logs[0].replace("\n", " ")
