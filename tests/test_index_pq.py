"""Issue 23: the memory-bounded IVF-PQ index, built from embedding parts, with --add and re-ranking."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from birdbridge.embedding_parts import EmbeddingParts
from birdbridge.errors import ConfigError
from birdbridge.retrieval import index_pq
from birdbridge.retrieval.index import ImageIndex

BIN = str(Path(sys.executable).with_name("birdbridge"))
D, PER_PART, CLUSTERS = 32, 1000, 40


def _clustered(n: int, seed: int, d: int = D) -> np.ndarray:
    """Unit vectors around CLUSTERS fixed centroids (cosine ~0.7), the shape of an image gallery."""
    cents = np.random.default_rng(0).standard_normal((CLUSTERS, d)).astype(np.float32)
    cents /= np.linalg.norm(cents, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((n, d)).astype(np.float32)
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    x = cents[rng.integers(CLUSTERS, size=n)] + noise
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _write_parts(root: Path, x: np.ndarray, first_part: int = 0, first_row: int = 0) -> None:
    parts = EmbeddingParts(root)
    for j, s in enumerate(range(0, len(x), PER_PART)):
        rows = [{"input": f"/photos/{first_row + s + i:06d}.jpg", "scientific_name": "Sayornis nigricans"}
                for i in range(min(PER_PART, len(x) - s))]
        parts.write_part(first_part + j, x[s : s + PER_PART], rows)
    parts.finish({"model": "synthetic-test", "space": "teacher", "kind": "image"})


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / truth.shape[1] for f, t in zip(found, truth)]))


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    root = tmp_path_factory.mktemp("pq")
    x = _clustered(4 * PER_PART, seed=1)
    _write_parts(root / "parts", x)
    index = ImageIndex.build_from_parts(root / "idx", root / "parts", kind="faiss-ivfpq", max_memory="64MB")
    return root, x, index


def test_memory_budgets_parse():
    assert index_pq.parse_memory("4GB") == 4 * 2**30
    assert index_pq.parse_memory("512MB") == 512 * 2**20
    assert index_pq.parse_memory("1.5G") == int(1.5 * 2**30)
    assert index_pq.parse_memory("2GiB") == 2 * 2**30
    assert index_pq.parse_memory("1000") == 1000
    for bad in ("four gigs", "4XB", "-1GB", "0"):
        with pytest.raises(ConfigError):
            index_pq.parse_memory(bad)


def test_parameters_fit_the_budget_and_grow_with_it():
    small = index_pq.choose_params(1_000_000, 768, "200MB")
    big = index_pq.choose_params(1_000_000, 768, "4GB")
    for p in (small, big):
        assert 768 % p.m == 0 and p.m in index_pq.SUB_QUANTIZERS and p.nbits == 8
        assert p.factory.endswith(f"PQ{p.m}x8") and f"IVF{p.nlist}" in p.factory
        assert p.nlist * 39 <= p.train_n  # FAISS's floor of training points per list
    assert small.estimate_bytes <= 200 * 2**20 < index_pq.estimate_bytes(1_000_000, 768, small.nlist, 2 * small.m, 8, small.opq, small.hnsw_quantizer)
    assert big.m == 96 and big.estimate_bytes <= 4 * 2**30
    # 10M x 768 in 4GB: 96-byte codes, 1/8 of float32 is 384 bytes a vector
    ten_m = index_pq.choose_params(10_000_000, 768, "4GB")
    assert ten_m.m == 96 and ten_m.estimate_bytes < 10_000_000 * 768 * 4 / 8


def test_a_budget_too_small_names_the_minimum():
    nlist = index_pq.choose_params(1_000_000, 768, "4GB").nlist
    least = index_pq.estimate_bytes(1_000_000, 768, nlist, 1, 8, False, nlist > index_pq.HNSW_QUANTIZER_ABOVE)
    assert 9_000_000 < least < 30_000_000  # 9 bytes a vector + the coarse centroids
    with pytest.raises(ConfigError, match=rf"cannot hold 1000000 vectors of 768 dims.* needs at least {index_pq.human_bytes(least)}"):
        index_pq.choose_params(1_000_000, 768, "5MB")
    index_pq.choose_params(1_000_000, 768, least)  # exactly the minimum fits


def test_round_trip_from_parts_finds_planted_queries(gallery):
    root, x, index = gallery
    assert index.kind == "faiss-ivfpq" and index.count == len(x) and index.dim == D
    m = index.manifest
    assert m["pq"]["m"] in index_pq.SUB_QUANTIZERS and m["max_index_memory"] == 64 * 2**20
    assert all(Path(s["vectors"]).is_absolute() and str(root / "parts") in s["vectors"] for s in m["shards"])
    assert m["teacher_id"] and "synthetic-test" in m["teacher_id"]
    # the index file is compressed: codes + ids, far under the float32 vectors
    assert (root / "idx" / m["faiss_file"]).stat().st_size < len(x) * D * 4 / 2
    planted = np.array([3, 999, 1000, 2500, 3999])
    scores, ids = index.search(x[planted], 5, rerank=True)
    assert ids[:, 0].tolist() == planted.tolist()
    assert np.allclose(scores[:, 0], 1.0, atol=1e-5)  # exact cosines after re-ranking
    meta = index.metadata(planted.tolist())
    assert [r["path"] for r in meta] == [f"/photos/{i:06d}.jpg" for i in planted]
    assert [r["id"] for r in meta] == planted.tolist() and meta[0]["scientific_name"] == "Sayornis nigricans"
    # the same index reopened from disk answers the same
    again = ImageIndex.open(root / "idx")
    assert again.search(x[planted], 5, rerank=True)[1].tolist() == ids.tolist()


def test_recall_against_exact_and_rerank_never_hurts(gallery):
    _, x, index = gallery
    q = _clustered(100, seed=7)
    truth = np.argsort(-(q @ x.T), axis=1)[:, :10]
    plain = _recall(index.search(q, 10, rerank=False)[1], truth)
    reranked = _recall(index.search(q, 10, rerank=True)[1], truth)
    assert plain >= 0.5, plain
    assert reranked >= plain and reranked >= 0.9, (plain, reranked)


def test_add_encodes_new_parts_without_retraining(tmp_path):
    import faiss

    x = _clustered(3 * PER_PART, seed=3)
    _write_parts(tmp_path / "parts", x[: 2 * PER_PART])
    idx = ImageIndex.build_from_parts(tmp_path / "idx", tmp_path / "parts", kind="faiss-ivfpq")
    ivf = faiss.extract_index_ivf(idx._faiss)
    trained = faiss.vector_to_array(faiss.downcast_index(ivf).pq.centroids).copy()
    _write_parts(tmp_path / "parts", x[2 * PER_PART :], first_part=2, first_row=2 * PER_PART)
    with pytest.raises(ConfigError, match="--add"):
        ImageIndex.build_from_parts(tmp_path / "idx", tmp_path / "parts", kind="faiss-ivfpq")
    grown = ImageIndex.build_from_parts(tmp_path / "idx", tmp_path / "parts", kind="auto", add=True)
    assert grown.count == len(x) and grown.kind == "faiss-ivfpq"
    ivf2 = faiss.extract_index_ivf(grown._faiss)
    assert np.array_equal(faiss.vector_to_array(faiss.downcast_index(ivf2).pq.centroids), trained)
    new = np.arange(2 * PER_PART, 3 * PER_PART, 97)
    assert grown.search(x[new], 3, rerank=True)[1][:, 0].tolist() == new.tolist()
    assert grown.metadata([int(new[-1])])[0]["path"] == f"/photos/{new[-1]:06d}.jpg"
    # nothing new: a re-run adds nothing
    assert ImageIndex.build_from_parts(tmp_path / "idx", tmp_path / "parts", add=True).count == len(x)


def _run(cwd, *args, env=None):
    return subprocess.run([BIN, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "COLUMNS": "200", **(env or {})})


def test_cli_budget_error_is_one_line(tmp_path):
    _write_parts(tmp_path / "parts", _clustered(PER_PART, seed=5))
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    res = _run(elsewhere, "index", tmp_path / "parts", "--out", tmp_path / "idx", "--kind", "faiss-ivfpq",
               "--max-index-memory", "2KB")
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode != 0 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert "cannot hold 1000 vectors of 32 dims" in lines[0] and "needs at least" in lines[0]
    assert not (tmp_path / "idx" / "index.json").exists()
    bad = _run(elsewhere, "index", tmp_path / "parts", "--out", tmp_path / "idx", "--kind", "faiss-ivfpq",
               "--max-index-memory", "lots")
    assert bad.returncode != 0 and "is not a size like 4GB" in bad.stderr and "Traceback" not in bad.stderr


def test_cli_index_photos_as_ivfpq_add_then_search_with_rerank(tmp_path, phoebe, tiny_open_clip_dir, tiny_distilled_dir):
    """Real photos -> faiss-ivfpq through the console script (tiny replica teacher), --add, then searched
    by a real recording, from another directory."""
    import csv

    rows = list(csv.DictReader((phoebe / "images.csv").open()))
    first = tmp_path / "first.csv"
    with first.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows({**r, "path": str(phoebe / r["path"])} for r in rows[:4])
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    common = ["--teacher", tiny_open_clip_dir, "--out", tmp_path / "idx"]
    res = _run(elsewhere, "index", first, *common, "--kind", "faiss-ivfpq", "--max-index-memory", "16MB", "--rerank")
    assert res.returncode == 0, res.stderr
    assert ImageIndex.open(tmp_path / "idx").count == 4
    res = _run(elsewhere, "index", phoebe / "images.csv", *common, "--add")  # --kind auto: stays IVF-PQ, not retrained
    assert res.returncode == 0, res.stderr
    idx = ImageIndex.open(tmp_path / "idx")
    assert idx.kind == "faiss-ivfpq" and idx.count == len(rows) and idx.rerank and idx.manifest["pq"]["m"] >= 1
    # every photo finds itself through the compressed index once re-ranked
    own = idx.vectors_for(range(idx.count))
    assert idx.search(own, 1, rerank=True)[1][:, 0].tolist() == list(range(idx.count))
    clip = phoebe / next(csv.DictReader((phoebe / "recordings.csv").open()))["path"]
    hits = {}
    for flag in ("--rerank", "--no-rerank"):
        res = _run(elsewhere, "search", clip, "--model", tiny_distilled_dir, "--index", tmp_path / "idx",
                   "-k", "5", "--format", "json", flag)
        assert res.returncode == 0, res.stderr
        hits[flag] = json.loads(res.stdout)[0]["hits"]
        assert len(hits[flag]) == 5 and all(h["path"].startswith(str(phoebe)) for h in hits[flag])
    scores = [h["score"] for h in hits["--rerank"]]
    assert scores == sorted(scores, reverse=True) and all(-1.0 <= x <= 1.0 for x in scores)
