"""Metric parity with scikit-learn / torchmetrics, brute force and Monte Carlo."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, balanced_accuracy_score, roc_auc_score, top_k_accuracy_score

from birdbridge import metrics as M
from birdbridge.taxonomy import Species


def _retrieval_case(rng, q=40, g=60, n_labels=8, tie_levels=4):
    # Integer-valued scores create many ties, the case where AP definitions differ.
    scores = rng.integers(0, tie_levels, size=(q, g)).astype(np.float32)
    gl = [f"sp{i}" for i in rng.integers(0, n_labels, g)]
    ql = [f"sp{i}" for i in rng.integers(0, n_labels + 2, q)]  # some labels absent from the gallery
    return scores, ql, gl


def _brute_recall(scores, ql, gl, k):
    hits = []
    for i, row in enumerate(scores):
        rel = [lab == ql[i] for lab in gl]
        if not any(rel):
            continue
        order = sorted(range(len(row)), key=lambda j: (-row[j], j))
        hits.append(any(rel[j] for j in order[:k]))
    return float(np.mean(hits))


# --------------------------------------------------------------------------- AP / retrieval
def test_ties_use_stepwise_not_rank_order_ap():
    # One relevant tied with one irrelevant: sklearn gives precision 1/2, rank order would give 1.
    assert M.average_precision([1.0, 1.0], [True, False]) == pytest.approx(0.5)
    assert M.average_precision([1.0, 1.0], [False, True]) == pytest.approx(0.5)
    assert math.isnan(M.average_precision([0.3, 0.9, 0.5], [False, False, False]))  # undefined, not 0


def test_average_precision_matches_sklearn_random_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 40))
        scores = rng.integers(0, int(rng.integers(1, 6)), n).astype(float)
        rel = rng.random(n) < rng.uniform(0.05, 0.9)
        if not rel.any():
            rel[rng.integers(n)] = True
        assert M.average_precision(scores, rel) == pytest.approx(average_precision_score(rel, scores), abs=1e-12)


@settings(max_examples=60, deadline=None, database=None)
@given(st.lists(st.tuples(st.integers(0, 4), st.booleans()), min_size=1, max_size=25).filter(lambda xs: any(r for _, r in xs)))
def test_average_precision_property(pairs):
    scores = np.array([s for s, _ in pairs], dtype=float)
    rel = np.array([r for _, r in pairs])
    assert M.average_precision(scores, rel) == pytest.approx(average_precision_score(rel, scores), abs=1e-12)
    # Monotone transforms of the scores cannot change AP (ties are preserved).
    assert M.average_precision(np.exp(scores) * 3 - 1, rel) == pytest.approx(M.average_precision(scores, rel), abs=1e-12)


def test_retrieval_map_matches_sklearn_mean_and_counts_unscored_queries():
    rng = np.random.default_rng(1)
    scores, ql, gl = _retrieval_case(rng)
    ql[0] = "absent"  # guaranteed query without relevant gallery item
    res = M.retrieval_metrics(scores, ql, gl)
    expected, n_missing = [], 0
    for i in range(len(ql)):
        rel = np.array([lab == ql[i] for lab in gl])
        if not rel.any():
            n_missing += 1
            assert math.isnan(res["per_query_ap"][i])
            continue
        ap = average_precision_score(rel, scores[i])
        expected.append(ap)
        assert res["per_query_ap"][i] == pytest.approx(ap, abs=1e-12)
    assert n_missing >= 1
    assert res["map"] == pytest.approx(np.mean(expected), abs=1e-12)
    assert res["n_queries"] == len(ql)
    assert res["n_queries_without_relevant"] == n_missing
    assert res["n_queries_scored"] == len(ql) - n_missing
    assert "absent" not in res["per_class_ap"]
    for lab, v in res["per_class_ap"].items():
        aps = [a for a, q in zip(res["per_query_ap"], ql) if q == lab]
        assert v == pytest.approx(np.mean(aps))


@pytest.mark.parametrize("tie_levels", [3, 1000])
def test_recall_at_k_matches_brute_force(tie_levels):
    rng = np.random.default_rng(2)
    scores, ql, gl = _retrieval_case(rng, tie_levels=tie_levels)
    res = M.retrieval_metrics(scores, ql, gl, ks=(1, 2, 5, 10, 100))
    for k in (1, 2, 5, 10, 100):
        assert res[f"recall@{k}"] == pytest.approx(_brute_recall(scores, ql, gl, k)), k
    assert res["recall@100"] == 1.0  # k beyond the gallery: every scored query hits


def test_recall_ties_broken_by_gallery_index():
    scores = np.array([[1.0, 1.0, 1.0]])
    assert M.retrieval_metrics(scores, ["a"], ["b", "a", "b"], ks=(1, 2))["recall@1"] == 0.0
    assert M.retrieval_metrics(scores, ["a"], ["a", "b", "b"], ks=(1, 2))["recall@1"] == 1.0
    assert M.retrieval_metrics(scores, ["a"], ["b", "a", "b"], ks=(1, 2))["recall@2"] == 1.0


def test_int_labels_missing_labels_and_perfect_ranking():
    scores = np.array([[0.9, 0.1, 0.5], [0.2, 0.8, 0.1], [0.5, 0.5, 0.5]])
    res = M.retrieval_metrics(scores, [1, 2, None], [1, 2, None])
    assert res["map"] == 1.0 and res["recall@1"] == 1.0
    assert res["n_queries_without_relevant"] == 1  # None never matches None
    assert res["per_class_ap"] == {1: 1.0, 2: 1.0}
    none_scored = M.retrieval_metrics(scores[:1], ["x"], [1, 2, 3])
    assert math.isnan(none_scored["map"]) and none_scored["n_queries_scored"] == 0


def test_blocked_computation_equals_single_block(monkeypatch):
    rng = np.random.default_rng(3)
    scores, ql, gl = _retrieval_case(rng)
    whole = M.retrieval_metrics(scores, ql, gl)
    monkeypatch.setattr(M, "_BLOCK_CELLS", 150)  # 2 rows per block
    blocked = M.retrieval_metrics(scores, ql, gl)
    assert np.allclose(whole["per_query_ap"], blocked["per_query_ap"], equal_nan=True)
    assert {k: v for k, v in whole.items() if k != "per_query_ap"} == {k: v for k, v in blocked.items() if k != "per_query_ap"}


def test_rank_retrieval_metrics_equals_per_rank_labels():
    rng = np.random.default_rng(4)
    q, g = 30, 50
    scores = rng.random((q, g))
    sp_q, sp_g = rng.integers(0, 20, q), rng.integers(0, 20, g)
    taxa = lambda s: {"species": f"s{s}", "genus": f"g{s // 4}", "family": f"f{s // 10}", "order": "o"}  # noqa: E731
    qt, gt = [taxa(s) for s in sp_q], [taxa(s) for s in sp_g]
    res = M.rank_retrieval_metrics(scores, qt, gt)
    assert list(res) == ["species", "genus", "family", "order"]
    for rank in res:
        direct = M.retrieval_metrics(scores, [t[rank] for t in qt], [t[rank] for t in gt])
        assert res[rank]["map"] == pytest.approx(direct["map"])
        assert res[rank]["recall@5"] == direct["recall@5"]
    assert res["order"]["map"] == 1.0  # everything shares the order
    assert res["species"]["map"] <= res["genus"]["map"] + 0.2  # sanity, coarse ranks are easier on average
    # Species objects work as taxa too.
    sp = [Species(id=str(i), scientific_name=f"Genus{i % 2} ep{i}", family="F") for i in range(4)]
    res2 = M.rank_retrieval_metrics(np.eye(4), sp, sp, ranks=("species", "genus", "family"))
    assert res2["species"]["map"] == 1.0 and res2["family"]["map"] == 1.0


def test_precision_recall_curve_matches_brute_force():
    rng = np.random.default_rng(5)
    scores, ql, gl = _retrieval_case(rng, q=15, g=30, tie_levels=5)
    levels, prec = M.precision_recall_curve(scores, ql, gl, n_points=11)
    curves = []
    for i, row in enumerate(scores):
        rel = np.array([lab == ql[i] for lab in gl])
        if not rel.any():
            continue
        # Points of sklearn's step curve: one per distinct threshold.
        pts = [(rel[row >= t].sum() / rel.sum(), rel[row >= t].mean()) for t in np.unique(row)]
        curves.append([max(p for r, p in pts if r >= lv - 1e-12) for lv in levels])
    assert np.allclose(prec, np.mean(curves, axis=0))
    assert levels[0] == 0 and levels[-1] == 1
    # R = 10: recall 0.3 is reached exactly at the 3rd relevant item (float 0.3*10 > 3).
    rel = [1, 1, 1, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1]
    _, p = M.precision_recall_curve(-np.arange(15.0)[None], ["a"], ["a" if r else "b" for r in rel], n_points=11)
    assert p[3] == 1.0 and p[4] == pytest.approx(10 / 15)


# --------------------------------------------------------------------------- chance
def test_expected_random_ap_exact_enumeration():
    for n in range(1, 8):
        for r in range(1, n + 1):
            aps = []
            for pos in itertools.combinations(range(n), r):
                rel = np.zeros(n, bool)
                rel[list(pos)] = True
                aps.append(M.average_precision(-np.arange(n, dtype=float), rel))
            assert M.expected_random_ap(r, n) == pytest.approx(np.mean(aps), abs=1e-12), (r, n)


def test_chance_map_and_recall_vs_monte_carlo():
    rng = np.random.default_rng(6)
    gl = list(rng.integers(0, 5, 40)) + [9]
    ql = list(rng.integers(0, 5, 20)) + [9, 77]  # 77: no relevant item, left out like in retrieval
    trials = [M.retrieval_metrics(rng.random((len(ql), len(gl))), ql, gl, ks=(3,)) for _ in range(300)]
    mc_map = np.mean([t["map"] for t in trials])
    mc_r3 = np.mean([t["recall@3"] for t in trials])
    assert M.chance_map(ql, gl) == pytest.approx(mc_map, abs=0.01)
    assert M.chance_recall_at_k(ql, gl, 3) == pytest.approx(mc_r3, abs=0.02)
    # The prevalence approximation R/N is a lower value, and noticeably off for R=1.
    assert M.chance_map([9], gl) > 1 / len(gl) * 2


# --------------------------------------------------------------------------- classification
def test_topk_accuracy_matches_sklearn_with_ties():
    rng = np.random.default_rng(7)
    for levels in (2, 3, 1000):
        scores = rng.integers(0, levels, (200, 7)).astype(float)
        y = rng.integers(0, 7, 200)
        for k in (1, 2, 3, 6):
            ours = M.topk_accuracy(scores, y, k)
            assert ours == pytest.approx(top_k_accuracy_score(y, scores, k=k, labels=np.arange(7))), (levels, k)


def test_class_averaged_topk():
    rng = np.random.default_rng(8)
    scores = rng.random((300, 5))
    y = np.concatenate([rng.integers(0, 4, 290), np.full(10, 4)])  # imbalanced; class 4 rare
    assert M.class_averaged_topk(scores, y, 1) == pytest.approx(balanced_accuracy_score(y, scores.argmax(1)))
    hits = [(np.argsort(-s)[:2] == t).any() for s, t in zip(scores, y)]
    per_class = [np.mean([h for h, t in zip(hits, y) if t == c]) for c in range(5)]
    assert M.class_averaged_topk(scores, y, 2) == pytest.approx(np.mean(per_class))
    with pytest.raises(ValueError):
        M.topk_accuracy(scores, np.full(300, 5), 1)


# --------------------------------------------------------------------------- multi-label
def _torchmetrics_map(scores, targets):
    import torch
    from torchmetrics.classification import MultilabelAveragePrecision

    m = MultilabelAveragePrecision(num_labels=scores.shape[1], average="macro")
    return float(m(torch.tensor(scores, dtype=torch.float64), torch.tensor(targets, dtype=torch.long)))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_cmap_matches_torchmetrics():
    rng = np.random.default_rng(9)
    scores = rng.random((80, 6))
    targets = (rng.random((80, 6)) < 0.2).astype(int)
    targets[0] = 1  # every class has a positive
    assert M.cmap(scores, targets) == pytest.approx(_torchmetrics_map(scores, targets), abs=1e-6)
    # Ties: rounded scores, and a column of all-equal scores (AP = prevalence).
    tied = np.round(scores, 1)
    tied[:, 2] = 0.5
    assert M.cmap(tied, targets) == pytest.approx(_torchmetrics_map(tied, targets), abs=1e-6)
    assert M.class_aps(tied, targets)[2] == pytest.approx(targets[:, 2].mean())
    # A class without positives: torchmetrics counts it as AP 0, our default leaves it out.
    targets[:, 4] = 0
    assert M.cmap(scores, targets, min_positives=0) == pytest.approx(_torchmetrics_map(scores, targets), abs=1e-6)
    keep = [0, 1, 2, 3, 5]
    assert M.cmap(scores, targets) == pytest.approx(_torchmetrics_map(scores[:, keep], targets[:, keep]), abs=1e-6)
    few = targets.sum(0) >= 5
    assert M.cmap(scores, targets, min_positives=5) == pytest.approx(np.nanmean(M.class_aps(scores, targets)[few]))


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_cmap_all_negative_and_all_equal():
    scores = np.full((10, 3), 0.3)
    targets = np.zeros((10, 3), int)
    assert math.isnan(M.cmap(scores, targets))
    assert M.cmap(scores, targets, min_positives=0) == _torchmetrics_map(scores, targets) == 0.0
    targets[:3, 1] = 1
    assert M.cmap(scores, targets) == pytest.approx(0.3)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_macro_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(10)
    scores = rng.integers(0, 4, (60, 5)).astype(float)
    targets = (rng.random((60, 5)) < 0.3).astype(int)
    targets[:2, :] = [[1] * 5, [0] * 5]  # both labels in every column
    assert M.macro_auroc(scores, targets) == pytest.approx(roc_auc_score(targets, scores, average="macro"), abs=1e-12)
    targets[:, 3] = 0  # no positives: undefined, left out
    keep = [0, 1, 2, 4]
    assert M.macro_auroc(scores, targets) == pytest.approx(roc_auc_score(targets[:, keep], scores[:, keep], average="macro"))


def test_top1_any_positive_skips_no_call_windows():
    scores = np.array([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.3, 0.3, 0.3]])
    targets = np.array([[1, 0, 0], [1, 0, 1], [0, 0, 0], [0, 1, 1]])
    # Row 3 is a no-call window; row 4 ties -> argmax picks class 0, a negative.
    assert M.top1_any_positive(scores, targets) == pytest.approx(1 / 3)


def test_nan_scores_rejected():
    with pytest.raises(ValueError, match="NaN"):
        M.retrieval_metrics(np.array([[np.nan, 1.0]]), ["a"], ["a", "b"])
    with pytest.raises(ValueError, match="shape"):
        M.retrieval_metrics(np.zeros((2, 2)), ["a"], ["a", "b"])


# --------------------------------------------------------------------------- k-NN
def test_knn_accuracy_constructed():
    ref = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [0.7, 0.7]])
    ref_labels = ["a", "a", "b", "b", "c"]
    query = np.array([[2.0, 0.1], [0.05, 1.0], [0.6, 0.65]])  # norms differ: cosine ignores them
    assert M.knn_accuracy(ref, ref_labels, query, ["a", "b", "c"], k=1) == 1.0
    # k=3 for the last query: c (nearest), then b and a at distance -> 1:1:1 tie, nearest (c) wins.
    assert M.knn_accuracy(ref, ref_labels, query[2:], ["c"], k=3) == 1.0
    # Majority beats nearest: query near c but two b's among 3 neighbours.
    ref2 = np.array([[0.0, 1.0], [0.1, 1.0], [1.0, 1.0]])
    assert M.knn_accuracy(ref2, ["b", "b", "c"], [[0.9, 1.0]], ["b"], k=3) == 1.0
    assert M.knn_accuracy(ref2, ["b", "b", "c"], [[0.9, 1.0]], ["c"], k=1) == 1.0
    # Leave-one-out: "c" is alone, so its nearest other item is wrong.
    assert M.knn_accuracy(ref, ref_labels, ref, ref_labels, k=1, exclude_self=True) == pytest.approx(4 / 5)
    assert M.knn_accuracy(ref, ref_labels, ref, ref_labels, k=1) == 1.0
    with pytest.raises(ValueError):
        M.knn_accuracy(ref, ref_labels, ref, ref_labels, k=5, exclude_self=True)
