"""The clip-retrieval parts layout: parts written atomically, read back in order, skips merged."""

import numpy as np

from birdbridge.embedding_parts import EmbeddingParts
from birdbridge.errors import SkipLog


def _unit(n, d, seed):
    v = np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def test_parts_round_trip_in_part_order_with_skips(tmp_path):
    parts = EmbeddingParts(tmp_path / "emb")
    a, b = _unit(3, 8, 0), _unit(2, 8, 1)
    skips = SkipLog()
    skips.add("bad.mp3", "corrupt audio")
    parts.write_part(1, b, [{"input": f"b{i}.mp3"} for i in range(2)], skips)
    parts.write_part(0, a, [{"input": f"a{i}.mp3", "label": "x"} for i in range(3)])
    parts.finish({"model": "tiny"})
    assert parts.complete_parts() == [0, 1]
    assert (tmp_path / "emb" / "emb" / "part-00000.npy").is_file()
    assert (tmp_path / "emb" / "meta" / "part-00001.parquet").is_file()
    emb = parts.load_all()
    np.testing.assert_array_equal(emb.vectors, np.concatenate([a, b]))
    assert [r["input"] for r in emb.rows] == ["a0.mp3", "a1.mp3", "a2.mp3", "b0.mp3", "b1.mp3"]
    assert [s.input for s in emb.skips.skips] == ["bad.mp3"]
    m = parts.manifest()
    assert (m["n_rows"], m["dim"], m["n_parts"], m["n_skipped"], m["model"]) == (5, 8, 2, 1, "tiny")
    assert EmbeddingParts.is_parts_dir(tmp_path / "emb")


def test_a_part_without_its_metadata_is_not_complete(tmp_path):
    """The .parquet is written last: a job killed between the two files left no part."""
    parts = EmbeddingParts(tmp_path)
    parts.write_part(0, _unit(2, 4, 0), [{"input": "a"}, {"input": "b"}])
    parts.write_part(1, _unit(2, 4, 1), [{"input": "c"}, {"input": "d"}])
    parts.meta_path(1).unlink()
    assert parts.complete_parts() == [0]
    assert parts.n_rows() == 2


def test_rows_must_match_vectors(tmp_path):
    import pytest

    with pytest.raises(ValueError):
        EmbeddingParts(tmp_path).write_part(0, _unit(2, 4, 0), [{"input": "a"}])
