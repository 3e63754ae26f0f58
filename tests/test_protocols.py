"""Evaluation protocols on constructed embeddings whose answers are known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from birdbridge.evaluate import protocols as P
from birdbridge.taxonomy import Species

E = np.eye(4, dtype=np.float32)  # four orthogonal directions


def _taxa(sp, genus, family="Fam", order="Ord"):
    return {"species": sp, "genus": genus, "family": family, "order": order}


A, A2, B = _taxa("G1 a", "G1"), _taxa("G1 b", "G1"), _taxa("G2 c", "G2", family="Fam2")


def test_taxa_uses_every_rank():
    sp = Species("x", "Setophaga coronata", "Yellow-rumped Warbler", order="Passeriformes", family="Parulidae")
    t = P.taxa(sp)
    assert t["species"] == "Setophaga coronata" and t["genus"] == "Setophaga" and t["family"] == "Parulidae"
    assert P.taxa_for(["x", "x"], {"x": sp}) == [t, t]


def test_similarity_ignores_scale_and_checks_dims():
    s = P.similarity(np.array([[3.0, 0, 0]]), np.array([[0.0, 5, 0], [2.0, 0, 0]]))
    np.testing.assert_allclose(s, [[0.0, 1.0]], atol=1e-6)
    with pytest.raises(ValueError, match="dims differ"):
        P.similarity(np.ones((1, 3)), np.ones((1, 4)))


def test_retrieval_known_ap_and_ranks():
    # Query 0 (species A) sees gallery order B, A -> species AP 0.5, R@1 0; query 1 (B) is perfect.
    q = np.stack([0.6 * E[0] + 0.8 * E[1], E[1]])
    g = np.stack([E[1], E[0]])
    g_taxa = [B, A]
    res = P.retrieval(q, [A, B], g, g_taxa, ranks=("species", "genus", "family"), ks=(1, 2))
    sp = res["ranks"]["species"]
    assert sp["map"] == pytest.approx((0.5 + 1.0) / 2)
    assert sp["recall@1"] == pytest.approx(0.5) and sp["recall@2"] == pytest.approx(1.0)
    assert sp["per_class_ap"] == {"G1 a": pytest.approx(0.5), "G2 c": pytest.approx(1.0)}
    assert "per_query_ap" not in sp
    # Chance: one relevant of two items -> E[AP] = 0.75 for each query.
    assert sp["chance_map"] == pytest.approx(0.75)
    assert res["n_queries"] == 2 and res["n_gallery"] == 2


def test_retrieval_genus_counts_sister_species_and_leaves_out_unmatched():
    q = np.stack([E[0], E[2]])
    g = np.stack([E[0], E[1]])
    # query 1 is species A2 (same genus as A, no A2 image): species level has no relevant item.
    res = P.retrieval(q, [A, A2], g, [A, B], ranks=("species", "genus"), ks=(1,))
    sp, ge = res["ranks"]["species"], res["ranks"]["genus"]
    assert sp["n_queries_scored"] == 1 and sp["n_queries_without_relevant"] == 1 and sp["map"] == pytest.approx(1.0)
    assert ge["n_queries_scored"] == 2 and ge["n_queries_without_relevant"] == 0
    # query 1 scores both images 0 (tie): relevant A at tie end -> AP 1/2 at genus level.
    assert ge["map"] == pytest.approx((1.0 + 0.5) / 2)


def test_retrieval_empty_sides():
    assert P.retrieval(np.zeros((0, 4)), [], np.eye(2, 4), [A, B])["ranks"] == {}


def test_audio_to_image_per_source():
    q = np.stack([E[0], E[1]])
    g = np.stack([E[0], E[1], E[1], E[0]])
    g_taxa, src = [A, B, A, B], ["nabirds", "nabirds", "inat", "inat"]
    res = P.audio_to_image(q, [A, B], g, g_taxa, src, ranks=("species",), ks=(1,))
    assert res["all"]["n_gallery"] == 4
    assert set(res["by_source"]) == {"inat", "nabirds"}
    assert res["by_source"]["nabirds"]["ranks"]["species"]["map"] == pytest.approx(1.0)
    assert res["by_source"]["inat"]["ranks"]["species"]["map"] == pytest.approx(0.5)  # wrong image first, each
    # One source only: no per-source split.
    assert P.audio_to_image(q, [A, B], g, g_taxa, ["x"] * 4)["by_source"] == {}


def test_knn_known_accuracy_and_missing_reference():
    ref = np.stack([E[0], E[0], E[1], E[1], E[1]])
    ref_lab = ["a", "a", "b", "b", "b"]
    q = np.stack([0.9 * E[0] + 0.1 * E[1], E[1], E[2]])
    res = P.knn(ref, ref_lab, q, ["a", "a", "c"], ks=(1, 5))
    assert res["n_queries"] == 2 and res["n_queries_without_reference"] == 1
    assert res["knn@1"] == pytest.approx(0.5)  # query 2 is really b-like but labelled a
    assert res["knn@5"] == pytest.approx(0.0)  # majority of all five is b
    assert np.isnan(P.knn(ref, ref_lab, q[2:], ["c"])["knn@1"])


def test_zero_shot_focal_class_averaged():
    text = E[:3]
    # class 0: two clips, one right; class 1: one clip, right.
    audio = np.stack([E[0], E[2], E[1]])
    res = P.zero_shot_focal(audio, [0, 0, 1], text, ks=(1, 5))
    assert res["top1"] == pytest.approx((0.5 + 1.0) / 2)
    assert res["top1_micro"] == pytest.approx(2 / 3)
    assert res["top5"] == pytest.approx(1.0)  # k capped at the 3 classes
    assert res["chance_top1"] == pytest.approx(0.5) and res["n_classes"] == 3


def test_zero_shot_soundscape_excludes_no_call_from_top1():
    text = E[:2]
    windows = np.stack([E[0], E[1], E[1], 0.8 * E[1] + 0.2 * E[0]])
    targets = np.array([[1, 0], [0, 1], [1, 0], [0, 0]])  # window 2 wrong, window 3 no call
    res = P.zero_shot_soundscape(windows, targets, text)
    assert res["top1_any_positive"] == pytest.approx(2 / 3)
    assert res["n_windows"] == 4 and res["n_no_call_windows"] == 1 and res["n_species_present"] == 2
    # Class 0 scores [1, 0, 0, .24] with positives 0 and 2: AP = (1 + 2/4) / 2; class 1: positive
    # window 1 ties window 2 at the top -> AP 1/2.
    assert res["cmap"] == pytest.approx(((1 + 0.5) / 2 + 0.5) / 2)
    assert 0.0 <= res["macro_auroc"] <= 1.0
    assert res["chance_cmap"] == pytest.approx((2 / 4 + 1 / 4) / 2)
