"""The on-disk image index: build, add, resume, atomic commits, skips, FAISS kinds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from birdbridge.errors import ConfigError
from birdbridge.retrieval import index as index_mod
from birdbridge.retrieval import index_build as build_mod
from birdbridge.retrieval.index import ImageIndex, build_faiss, choose_kind, records_from_collection, records_from_source


class CountingTeacher:
    """Wraps a teacher, counts images sent to the image tower, and can crash after N calls."""

    def __init__(self, teacher, fail_after_calls: int | None = None):
        self.teacher = teacher
        self.fail_after_calls = fail_after_calls
        self.calls = 0
        self.images = 0
        self.paths_seen = 0

    model_id = property(lambda self: self.teacher.model_id)
    dim = property(lambda self: self.teacher.dim)

    def encode_images(self, images, batch_size=64):
        images = list(images)
        if self.fail_after_calls is not None and self.calls >= self.fail_after_calls:
            raise RuntimeError("simulated crash while embedding")
        self.calls += 1
        self.images += len(images)
        return self.teacher.encode_images(images, batch_size=batch_size)


@pytest.fixture(scope="module")
def world(demo_run):
    from birdbridge.data.synthetic import load_world

    out, _ = demo_run
    return load_world(out / "world")


@pytest.fixture(scope="module")
def teacher(demo_run):
    from birdbridge.encoders.teacher import Teacher

    return Teacher.load(str(demo_run[0] / "teacher"))


@pytest.fixture(scope="module")
def test_records(world):
    return records_from_collection(world, splits=("test",))


def test_build_stores_manifest_metadata_and_finds_each_image(tmp_path, teacher, test_records):
    idx = ImageIndex.build(tmp_path / "idx", teacher, test_records, shard_size=50)
    m = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert m["count"] == len(test_records) == idx.count
    assert m["state"] == "complete" and m["kind"] == "faiss-flat" and m["dim"] == teacher.dim
    assert m["teacher_id"] == teacher.model_id and m["birdbridge"]
    assert len(m["shards"]) == -(-len(test_records) // 50)
    assert (tmp_path / "idx" / m["faiss_file"]).is_file()
    # every stored vector finds itself first (exact inner product on unit rows)
    vecs = idx.vectors_for(range(idx.count))
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    scores, ids = idx.search(vecs, k=3)
    assert (ids[:, 0] == np.arange(idx.count)).all()
    assert np.allclose(scores[:, 0], 1.0, atol=1e-4)
    meta = idx.metadata([0, idx.count - 1])
    assert meta[0]["id"] == 0 and meta[0]["path"] == test_records[0].path
    assert meta[0]["scientific_name"] and meta[0]["species_id"] == test_records[0].species_id
    assert {s.id for s in idx.species()} == {r.species_id for r in test_records}


def test_add_appends_and_skips_paths_already_indexed(tmp_path, teacher, test_records):
    first, rest = test_records[:60], test_records[60:]
    ImageIndex.build(tmp_path / "idx", teacher, first)
    before = ImageIndex.open(tmp_path / "idx")
    old_vecs = before.vectors_for(range(60))
    counting = CountingTeacher(teacher)
    after = before.add(counting, test_records[:30] + rest + rest[:5])  # overlaps and a repeat
    assert counting.images == len(rest), "only new paths are embedded"
    assert after.count == len(test_records)
    paths = [r["path"] for r in after.metadata(range(after.count))]
    assert len(set(paths)) == len(paths) == len(test_records)
    np.testing.assert_array_equal(after.vectors_for(range(60)), old_vecs)  # ids are stable
    # without --add a complete index refuses new images, but re-running the same build is a no-op
    with pytest.raises(ConfigError, match="--add"):
        ImageIndex.build(tmp_path / "idx2", teacher, first).build(tmp_path / "idx2", teacher, test_records)
    assert ImageIndex.build(tmp_path / "idx2", CountingTeacher(teacher, fail_after_calls=0), first).count == 60


def test_interrupted_build_resumes_without_re_embedding(tmp_path, teacher, test_records):
    crashing = CountingTeacher(teacher, fail_after_calls=3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        ImageIndex.build(tmp_path / "idx", crashing, test_records, shard_size=16, batch_size=16)
    m = json.loads((tmp_path / "idx" / "index.json").read_text())
    assert m["state"] == "building" and m["count"] == 48 and len(m["shards"]) == 3
    partial = ImageIndex.open(tmp_path / "idx")  # readable: the committed shards, FAISS rebuilt in memory
    assert partial.count == 48 and partial.search(partial.vectors_for([5]), 1)[1][0, 0] == 5

    resumed_teacher = CountingTeacher(teacher)
    resumed = ImageIndex.build(tmp_path / "idx", resumed_teacher, test_records, shard_size=16, batch_size=16)
    assert resumed_teacher.images == len(test_records) - 48, "committed shards must not be embedded again"
    clean = ImageIndex.build(tmp_path / "clean", teacher, test_records, shard_size=16, batch_size=16)
    assert resumed.count == clean.count
    assert resumed.metadata(range(resumed.count)) == clean.metadata(range(clean.count))
    np.testing.assert_allclose(resumed.vectors_for(range(resumed.count)), clean.vectors_for(range(clean.count)), atol=1e-5)
    q = clean.vectors_for([0, 40, 100])
    assert (resumed.search(q, 5)[1] == clean.search(q, 5)[1]).all()
    assert json.loads((tmp_path / "idx" / "index.json").read_text())["state"] == "complete"


def test_manifest_is_the_commit_point(tmp_path, teacher, test_records, monkeypatch):
    root = tmp_path / "idx"
    ImageIndex.build(root, teacher, test_records[:40])
    reader = ImageIndex.open(root)  # a reader holding the old index while a writer works

    real_write = build_mod.atomic_write_json

    def crash_on_manifest(path, obj):
        if Path(path).name == "index.json" and obj["count"] > 40:
            raise OSError("disk full (simulated) while committing")
        return real_write(path, obj)

    monkeypatch.setattr(build_mod, "atomic_write_json", crash_on_manifest)
    with pytest.raises(OSError, match="simulated"):
        ImageIndex.build(root, teacher, test_records[40:], add=True)
    assert (root / "shards" / "shard-00001.npy").is_file(), "the new shard's data was written..."
    seen = ImageIndex.open(root)
    assert seen.count == 40, "...but without the manifest it is not part of the index"
    assert seen.search(seen.vectors_for([7]), 1)[1][0, 0] == 7
    assert len(seen.metadata(range(seen.count))) == 40

    monkeypatch.setattr(build_mod, "atomic_write_json", real_write)
    done = ImageIndex.build(root, teacher, test_records[40:], add=True)
    assert done.count == len(test_records)
    # the old reader still answers consistently from the files it opened
    assert reader.count == 40 and reader.search(reader.vectors_for([3]), 1)[1][0, 0] == 3
    assert not list(root.glob(".*.tmp*")) and not list(root.glob("shards/.*"))  # no temp files left


def test_bad_images_are_skipped_with_reasons_and_flat_folders_work(tmp_path, teacher, demo_run):
    src = sorted((demo_run[0] / "world" / "images").glob("*_test_*.png"))[:4]
    folder = tmp_path / "photos"
    folder.mkdir()
    for p in src:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "not_an_image.jpg").write_bytes(b"this is text, not a JPEG")
    (folder / "cut.png").write_bytes(src[0].read_bytes()[:60])
    records = records_from_source(folder)
    assert len(records) == 6 and all(not r.species_id for r in records)
    idx = ImageIndex.build(tmp_path / "idx", teacher, records)
    assert idx.count == 4
    m = idx.manifest
    assert m["n_skipped"] == 2 and sum(m["skip_counts"].values()) == 2
    assert {Path(s["input"]).name for s in m["skipped"]} == {"not_an_image.jpg", "cut.png"}
    assert all(s["reason"] in ("unreadable", "truncated") for s in m["skipped"])
    assert idx.species() == []


def test_teacher_mismatch_is_refused(tmp_path, teacher, test_records):
    ImageIndex.build(tmp_path / "idx", teacher, test_records[:10])

    class Other:
        model_id = "local-dir:/somewhere/else"
        dim = teacher.dim

    with pytest.raises(ConfigError, match="teacher"):
        ImageIndex.build(tmp_path / "idx", Other(), test_records[10:20], add=True)


def test_index_kinds_auto_choice_and_approximate_recall(tmp_path, teacher, test_records):
    assert choose_kind("auto", 1000) == "faiss-flat"
    assert choose_kind("auto", index_mod.EXACT_MAX + 1) == "faiss-hnsw"
    with pytest.raises(ConfigError):
        choose_kind("annoy", 10)
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3000, 32)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    queries = base[:200] + 0.05 * rng.normal(size=(200, 32)).astype(np.float32)
    exact = build_faiss("faiss-flat", base).search(queries, 1)[1][:, 0]
    for kind in ("faiss-hnsw", "faiss-ivf"):
        approx = build_faiss(kind, base)
        index_mod.tune_search(approx, kind)
        recall = float((approx.search(queries, 1)[1][:, 0] == exact).mean())
        assert recall >= 0.9, (kind, recall)
    idx = ImageIndex.build(tmp_path / "hnsw", teacher, test_records[:30], kind="faiss-hnsw")
    assert idx.kind == "faiss-hnsw" and "hnsw" in idx.manifest["faiss_file"]
    assert ImageIndex.open(tmp_path / "hnsw").search(idx.vectors_for([4]), 1)[1][0, 0] == 4


def test_index_cli(tmp_path, demo_run):
    from typer.testing import CliRunner

    from birdbridge.cli import app

    out, _ = demo_run
    runner = CliRunner()
    args = ["index", str(out / "world"), "--dataset", "synthetic", "--split", "test",
            "--teacher", str(out / "teacher"), "--out", str(tmp_path / "idx")]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert ImageIndex.open(tmp_path / "idx").count == 144
    res = runner.invoke(app, args + ["--add"])
    assert res.exit_code == 0 and "(0 new)" in res.output
    bad = runner.invoke(app, ["index", str(tmp_path / "nowhere"), "--teacher", str(out / "teacher"), "--out", str(tmp_path / "x")])
    assert bad.exit_code != 0
