"""A head trained on frozen-encoder embeddings (BirdNET's 1024-d) maps species onto their text rows."""

from __future__ import annotations

import numpy as np
import pytest

from birdbridge.distill.birdnet_head import HeadTrainConfig, apply_head, train_head_on_embeddings
from birdbridge.errors import ConfigError

N_SPECIES, PER_SPECIES, D_IN, D_TEXT = 8, 30, 1024, 48


def _world(seed: int = 0):
    """Gaussian clusters in a 1024-d 'BirdNET' space, and random unit text rows per species."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((N_SPECIES, D_IN))
    labels = np.repeat(np.arange(N_SPECIES), PER_SPECIES)
    # noise per coordinate equal to the centre scale: clusters overlap a lot coordinate-wise
    x = centres[labels] + 1.0 * rng.standard_normal((len(labels), D_IN))
    text = rng.standard_normal((N_SPECIES, D_TEXT))
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    return x.astype(np.float32), labels, text.astype(np.float32), centres


def _top1(projected: np.ndarray, text: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(projected @ text.T, axis=1) == labels))


def test_head_maps_clusters_near_their_text_rows():
    x, y, text, centres = _world(0)
    held_out_x, held_out_y, _, _ = _world(0)  # same centres and text, new noise draw below
    rng = np.random.default_rng(99)
    held_out_x = (centres[held_out_y] + rng.standard_normal(held_out_x.shape)).astype(np.float32)

    history: list[float] = []
    cfg = HeadTrainConfig(epochs=20, batch_size=80, lr=3e-3, seed=0)
    head = train_head_on_embeddings(x, y, text, cfg, history=history)
    # With one text row per species, ~k clips of a species share a batch and the "multi"
    # InfoNCE cannot go below ~log k (here log 10 = 2.3): check the drop, not a ratio.
    assert len(history) == 20 and history[-1] < history[0] - 0.5

    proj = apply_head(head, held_out_x)
    assert proj.dtype == np.float32 and proj.shape == (len(held_out_y), D_TEXT)
    np.testing.assert_allclose(np.linalg.norm(proj, axis=1), 1.0, atol=1e-5)
    assert _top1(proj, text, held_out_y) >= 0.95
    sims = proj @ text.T
    own = sims[np.arange(len(held_out_y)), held_out_y].mean()
    others = (sims.sum(1) - sims[np.arange(len(held_out_y)), held_out_y]).mean() / (N_SPECIES - 1)
    assert own - others > 0.5

    untrained = train_head_on_embeddings(x, y, text, HeadTrainConfig(epochs=0, seed=0))
    assert _top1(apply_head(untrained, held_out_x), text, held_out_y) < 0.5  # the test can fail


def test_mlp_head_and_determinism():
    x, y, text, _ = _world(1)
    cfg = HeadTrainConfig(kind="mlp", hidden_dim=64, epochs=2, batch_size=80, seed=3)
    a = apply_head(train_head_on_embeddings(x, y, text, cfg), x)
    b = apply_head(train_head_on_embeddings(x, y, text, cfg), x)
    np.testing.assert_array_equal(a, b)


def test_bad_shapes_and_labels_are_config_errors():
    x, y, text, _ = _world(2)
    with pytest.raises(ConfigError, match="labels must index"):
        train_head_on_embeddings(x, y + 1, text, HeadTrainConfig(epochs=1))
    with pytest.raises(ConfigError, match=r"embeddings \[N, d\] and labels \[N\]"):
        train_head_on_embeddings(x, y[:-1], text, HeadTrainConfig(epochs=1))
