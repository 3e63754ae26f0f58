"""Baselines: shapes and normalisation, and that text_mapping recovers a known linear map."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from birdbridge.encoders.text import ClapTextEncoder
from birdbridge.evaluate import baselines as B
from birdbridge.taxonomy import Species

SPECIES = [
    Species(f"s{i}", f"Genus{i % 3} epithet{i}", f"Bird {i}", order="Ordiformes", family=f"Fam{i % 2}idae")
    for i in range(8)
]


def _norms(x):
    return np.linalg.norm(x, axis=1)


def test_fit_ridge_recovers_known_map():
    rng = np.random.default_rng(0)
    w, b = rng.normal(size=(6, 4)), rng.normal(size=4)
    x = rng.normal(size=(50, 6))
    lin = B.fit_ridge(x, x @ w + b, alpha=0.0)
    np.testing.assert_allclose(lin.weight, w, atol=1e-8)
    np.testing.assert_allclose(lin.bias, b, atol=1e-8)
    # A small ridge penalty barely moves it; a huge one shrinks the map towards 0.
    np.testing.assert_allclose(B.fit_ridge(x, x @ w + b, alpha=1e-6).weight, w, atol=1e-5)
    assert np.linalg.norm(B.fit_ridge(x, x @ w + b, alpha=1e6).weight) < 0.01 * np.linalg.norm(w)


def test_linear_map_apply_is_unit_and_shaped():
    rng = np.random.default_rng(1)
    lin = B.fit_ridge(rng.normal(size=(20, 5)), rng.normal(size=(20, 7)), alpha=0.1)
    y = lin.apply(rng.normal(size=(3, 5)))
    assert y.shape == (3, 7) and y.dtype == np.float32
    np.testing.assert_allclose(_norms(y), 1.0, atol=1e-6)


def test_fit_ridge_rejects_bad_input():
    with pytest.raises(ValueError, match="same number of rows"):
        B.fit_ridge(np.ones((3, 2)), np.ones((4, 2)))
    with pytest.raises(ValueError, match="alpha"):
        B.fit_ridge(np.ones((3, 2)), np.ones((3, 2)), alpha=-1)


CLAP_TEMPLATES = ["the song of a {}", "a recording of {}"]


def test_text_mapping_pairs_clap_captions_with_teacher_prompts_of_the_same_species_and_type():
    pairs = B.text_mapping_pairs(SPECIES, ["common", "taxonomic"], CLAP_TEMPLATES)
    assert len(pairs) == len(SPECIES) * 2 * 2
    assert ("the song of a Bird 3", 3, "common") in pairs
    assert ("a recording of Animalia Chordata Aves Ordiformes Fam1idae Genus0 epithet3", 3, "taxonomic") in pairs
    assert not any(c.startswith("a photo of") for c, _, _ in pairs)  # BioCLIP's wording is for the teacher


# --- text_mapping end to end through embed_texts, with encoders whose spaces are known ---
D_CLAP, D_TEACHER = 6, 9
W_TRUE = np.linalg.qr(np.random.default_rng(2).normal(size=(D_TEACHER, D_CLAP)))[0].T  # [6, 9], orthonormal rows


def _clap_vec(text: str) -> np.ndarray:
    seed = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
    v = np.random.default_rng(seed).normal(size=D_CLAP)
    return v / np.linalg.norm(v)


class _Out:
    def __init__(self, t):
        self.pooler_output = t


class FakeClap:
    """Stands in for ``ClapModel``: it reads a CLAP caption ("the song of a X") as its name X;
    anything else (BioCLIP's "a photo of X.") lands somewhere unrelated, as off-distribution
    text would."""

    name_or_path = "fake-clap"

    def __init__(self):
        self.texts: list[str] = []

    def _vec(self, text: str) -> np.ndarray:
        for t in CLAP_TEMPLATES:
            head = t.split("{}")[0]
            if text.startswith(head):
                return _clap_vec(text[len(head):])
        return _clap_vec("off-distribution: " + text)

    def get_text_features(self, input_ids, **_):
        return _Out(torch.tensor(np.stack([self._vec(self.texts[i]) for i in input_ids.tolist()]), dtype=torch.float32))


class FakeTokenizer:
    def __init__(self, clap):
        self.clap = clap

    def __call__(self, texts, **_):
        start = len(self.clap.texts)
        self.clap.texts.extend(texts)
        return {"input_ids": torch.arange(start, start + len(texts))}


def test_text_mapping_recovers_the_map_and_carries_it_to_new_inputs():
    from birdbridge.taxonomy import prompt_body

    clap = FakeClap()
    types = ["common", "scientific", "taxonomic"]
    # the teacher's species rows: its own space is the CLAP names' space under W_TRUE
    rows = {pt: np.stack([_clap_vec(prompt_body(sp, pt)) @ W_TRUE for sp in SPECIES]) for pt in types}
    lin = B.fit_text_mapping(ClapTextEncoder(clap, FakeTokenizer(clap)), rows, SPECIES, templates=CLAP_TEMPLATES, alpha=1e-6)
    assert lin.n_pairs == len(SPECIES) * len(types) * len(CLAP_TEMPLATES)
    assert all(t.startswith(("the song of a ", "a recording of ")) for t in clap.texts)  # CLAP read CLAP captions
    np.testing.assert_allclose(lin.weight, W_TRUE, atol=1e-3)
    np.testing.assert_allclose(lin.bias, 0.0, atol=1e-3)
    # Applied to vectors it never saw (as CLAP audio embeddings are), it lands on W x.
    x = np.stack([_clap_vec(f"unseen {i}") for i in range(5)])
    np.testing.assert_allclose(lin.apply(x), x @ W_TRUE, atol=1e-3)


def test_zero_shot_combination_shapes_and_limits():
    rng = np.random.default_rng(3)
    clap_text = B.unit_rows(rng.normal(size=(4, 5)))
    teacher_text = B.unit_rows(rng.normal(size=(4, 7)))
    audio = clap_text[[2, 0, 3]] * 3.0  # unnormalised on purpose
    out = B.zero_shot_combination(audio, clap_text, teacher_text, logit_scale=1000.0)
    assert out.shape == (3, 7)
    np.testing.assert_allclose(_norms(out), 1.0, atol=1e-6)
    np.testing.assert_allclose(out, teacher_text[[2, 0, 3]], atol=1e-4)  # confident -> that species' text
    flat = B.zero_shot_combination(audio, clap_text, teacher_text, logit_scale=0.0)
    mean = teacher_text.mean(axis=0)
    np.testing.assert_allclose(flat, np.tile(mean / np.linalg.norm(mean), (3, 1)), atol=1e-6)  # uniform posterior
    with pytest.raises(ValueError, match="teacher species texts"):
        B.zero_shot_combination(audio, clap_text, teacher_text[:3], 10.0)


def test_softmax_rows_sum_to_one():
    p = B.softmax(np.array([[1000.0, 0.0], [1.0, 1.0]]))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p[1], [0.5, 0.5])


def test_random_projection_is_the_distillation_start(tiny_clap_dir):
    from birdbridge.distill.train import TrainConfig

    cfg = TrainConfig(student=str(tiny_clap_dir), seed=7)
    a = B.random_projection_student(cfg, teacher_dim=12)
    b = B.random_projection_student(cfg, teacher_dim=12)
    c = B.random_projection_student(TrainConfig(student=str(tiny_clap_dir), seed=8), teacher_dim=12)
    wa, wb, wc = (m.head.net.weight.detach() for m in (a, b, c))
    assert torch.equal(wa, wb) and not torch.equal(wa, wc)
    with torch.no_grad():
        y = a(torch.randn(3, a.window_samples))
    assert y.shape == (3, 12)
    np.testing.assert_allclose(y.norm(dim=1).numpy(), 1.0, atol=1e-5)


def test_clap_species_text_and_logit_scale(tiny_clap_dir):
    from birdbridge.encoders.species_text import clap_species_text  # its home: checkpoints carry the same text

    enc = ClapTextEncoder.load(str(tiny_clap_dir))
    t = clap_species_text(enc, SPECIES[:3], ["the song of a {}", "{} calling"], ["common", "scientific"])
    assert t.shape == (3, enc.model.config.projection_dim)
    np.testing.assert_allclose(_norms(t), 1.0, atol=1e-5)
    assert 0 < enc.logit_scale <= 100
    with pytest.raises(ValueError):
        clap_species_text(enc, SPECIES[:3], [], ["common"])
