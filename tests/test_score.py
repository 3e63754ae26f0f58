"""score_files / write_json on generated parquet files."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from birdbridge.errors import BadInputError, ConfigError
from birdbridge import metrics as M
from birdbridge.evaluate.score import score_files
from birdbridge.evaluate.write import write_json


def _write(path, emb, labels, **ranks):
    cols = {"embedding": pa.array([None if e is None else list(map(float, e)) for e in emb], type=pa.list_(pa.float32()))}
    cols["label"] = labels if isinstance(labels, pa.Array) else pa.array(labels)
    cols.update({k: pa.array(v) for k, v in ranks.items()})
    pq.write_table(pa.table(cols), path)
    return path


def _world(rng, n, n_species=6, dim=8):
    sp = rng.integers(0, n_species, n)
    centres = np.random.default_rng(99).normal(size=(n_species, dim))
    emb = centres[sp] + rng.normal(scale=1.2, size=(n, dim))
    return emb.astype(np.float32), [f"sp{s}" for s in sp], [f"g{s // 2}" for s in sp], [f"f{s // 3}" for s in sp]


def _unit(x):
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(0)
    qe, ql, qg, qf = _world(rng, 25)
    ge, gl, gg, gf = _world(rng, 40)
    q = _write(tmp_path / "q.parquet", qe * 5, ql, genus=qg, family=qf)  # scale must not matter
    g = _write(tmp_path / "g.parquet", ge, gl, genus=gg, family=gf)
    return q, g, (qe, ql, qg, qf), (ge, gl, gg, gf)


def test_round_trip_matches_metrics(files, tmp_path):
    q, g, (qe, ql, qg, qf), (ge, gl, gg, gf) = files
    res = score_files(q, g, ranks=["genus", "family"])
    assert (res["n_queries"], res["n_gallery"], res["dim"]) == (25, 40, 8)
    assert res["queries"] == str(q) and res["skipped"] == []
    assert list(res["metrics"]) == ["species", "genus", "family"]
    scores = _unit(qe) @ _unit(ge).T
    for rank, qlab, glab in (("species", ql, gl), ("genus", qg, gg), ("family", qf, gf)):
        ref = M.retrieval_metrics(scores, qlab, glab)
        got = res["metrics"][rank]
        assert "per_query_ap" not in got
        assert got["map"] == pytest.approx(ref["map"], abs=1e-6)
        assert got["recall@1"] == pytest.approx(ref["recall@1"])
        assert got["per_class_ap"].keys() == ref["per_class_ap"].keys()
        assert got["chance_map"] == pytest.approx(M.chance_map(qlab, glab))
    assert res["metrics"]["species"]["map"] > res["metrics"]["species"]["chance_map"]  # signal in the world
    out = write_json(res, tmp_path / "sub" / "r.json")
    back = json.loads(out.read_text())
    assert back["metrics"]["genus"]["map"] == pytest.approx(res["metrics"]["genus"]["map"])
    assert [p.name for p in out.parent.iterdir()] == ["r.json"]  # no temp file left behind


def test_ranks_auto_detected_and_species_implicit(files):
    q, g, *_ = files
    assert list(score_files(q, g)["metrics"]) == ["species", "genus", "family"]
    assert list(score_files(q, g, ranks=["species"])["metrics"]) == ["species"]
    assert list(score_files(q, g, ranks=[])["metrics"]) == ["species"]


def test_missing_rank_column_names_it(files, tmp_path):
    q, g, (qe, ql, qg, _), _ = files
    with pytest.raises(ConfigError, match="'order'"):
        score_files(q, g, ranks=["genus", "order"])
    q2 = _write(tmp_path / "q2.parquet", qe, ql, genus=qg)  # no family column
    with pytest.raises(ConfigError, match=r"'family'.*q2\.parquet|q2\.parquet.*'family'"):
        score_files(q2, g, ranks=["family"])
    assert list(score_files(q2, g)["metrics"]) == ["species", "genus"]  # auto: only shared columns


def test_bad_rows_are_skipped_and_counted(files, tmp_path):
    _, g, (qe, ql, *_), _ = files
    emb = [list(e) for e in qe]
    emb[1][3] = float("nan")
    emb[2] = None
    emb[3] = [0.0] * 8
    labels = list(ql)
    labels[4] = None
    q = _write(tmp_path / "bad.parquet", emb, labels)
    res = score_files(q, g)
    reasons = sorted(s["reason"] for s in res["skipped"])
    assert reasons == ["missing embedding", "missing label", "nan embedding", "zero embedding"]
    assert res["n_queries"] == 21 and res["metrics"]["species"]["n_queries"] == 21
    assert any("row=1" in s["input"] for s in res["skipped"] if s["reason"] == "nan embedding")


def test_file_level_errors(files, tmp_path):
    q, g, (qe, ql, *_), _ = files
    empty = _write(tmp_path / "empty.parquet", [], pa.array([], type=pa.string()))
    with pytest.raises(BadInputError, match="empty file"):
        score_files(empty, g)
    wide = _write(tmp_path / "wide.parquet", np.ones((3, 9)), ["a", "b", "c"])
    with pytest.raises(BadInputError, match="dimension mismatch.*dim 8.*dim 9|dim 9.*dim 8"):
        score_files(q, wide)
    ragged = _write(tmp_path / "ragged.parquet", [[1.0, 2.0], [1.0, 2.0, 3.0]], ["a", "b"])
    with pytest.raises(BadInputError, match="different lengths"):
        score_files(ragged, g)
    all_nan = _write(tmp_path / "nan.parquet", [[float("nan")] * 8] * 2, ["a", "b"])
    with pytest.raises(BadInputError, match="no usable rows"):
        score_files(all_nan, g)
    pq.write_table(pa.table({"emb": pa.array([[1.0]]), "label": ["a"]}), tmp_path / "nocol.parquet")
    with pytest.raises(ConfigError, match="'embedding'"):
        score_files(tmp_path / "nocol.parquet", g)
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(BadInputError, match="not a readable parquet"):
        score_files(tmp_path / "junk.parquet", g)
    with pytest.raises(BadInputError, match="file not found"):
        score_files(tmp_path / "nope.parquet", g)


def test_int_labels_and_fixed_size_lists(tmp_path):
    emb = pa.FixedSizeListArray.from_arrays(pa.array(np.eye(3, dtype=np.float32).ravel()), 3)
    pq.write_table(pa.table({"embedding": emb, "label": [1, 2, 3]}), tmp_path / "x.parquet")
    res = score_files(tmp_path / "x.parquet", tmp_path / "x.parquet")
    assert res["metrics"]["species"]["map"] == 1.0
    assert res["metrics"]["species"]["per_class_ap"] == {1: 1.0, 2: 1.0, 3: 1.0}


def test_write_json_nan_to_null_and_atomic_failure(tmp_path, monkeypatch):
    out = tmp_path / "r.json"
    write_json({"metrics": {"map": float("nan"), "x": np.float32(0.5), "k": {np.int64(3): 1.0}}}, out)
    back = json.loads(out.read_text())
    assert back == {"metrics": {"map": None, "x": 0.5, "k": {"3": 1.0}}}
    from birdbridge.io import current_umask

    assert oct(out.stat().st_mode & 0o777) == oct(0o666 & ~current_umask())  # as any file the user makes

    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr("birdbridge.io.os.replace", crash)  # write_json uses the one atomic writer
    with pytest.raises(OSError, match="disk gone"):
        write_json({"metrics": {"map": 0.9}}, out)
    assert json.loads(out.read_text()) == back  # old file intact
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # temp file cleaned up
