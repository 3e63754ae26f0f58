"""Retrieval, classification and soundscape metrics: numpy in, plain Python out.

A root module (layer 0): ``evaluate/`` and ``demo/`` score with them, and ``distill/``
validates with them while training (``distill/validation.py``).

Every number here is pinned to a reference implementation in the tests (scikit-learn,
torchmetrics, brute force or Monte Carlo), because published comparisons are only
meaningful if "mAP" means the same thing. Conventions that matter:

* **Average precision** is scikit-learn's step-wise AP: one threshold per *distinct*
  score, ``AP = sum_n (R_n - R_{n-1}) P_n``. Tied items are retrieved together, so a
  relevant item tied with irrelevant ones gets the precision at the end of its tie
  group (not the optimistic "rank-order" AP).
* **Retrieval** rows are queries, columns gallery items. Queries without any relevant
  gallery item are left out of mAP and R@k and counted in ``n_queries_without_relevant``.
  Missing labels (``None``, ``""``, NaN) never match anything, not even each other.
* Big score matrices are processed in row blocks of ~4M cells (one stable sort per
  block, shared by all relevance definitions), so Q = G = 10k runs in bounded memory.
"""

from __future__ import annotations

import math
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

# Cells per row block: keeps the int64/float64 temporaries of a block near 150 MB.
_BLOCK_CELLS = 1 << 22
DEFAULT_KS: tuple[int, ...] = (1, 5, 10)
DEFAULT_RANKS: tuple[str, ...] = ("species", "genus", "family", "order")


# --------------------------------------------------------------------------- helpers
def _blocks(n_rows: int, n_cols: int) -> Iterator[tuple[int, int]]:
    step = max(1, _BLOCK_CELLS // max(n_cols, 1))
    for lo in range(0, n_rows, step):
        yield lo, min(n_rows, lo + step)


def _as_scores(scores: Any, ndim: int, name: str = "scores") -> np.ndarray:
    a = np.asarray(scores)
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if not np.issubdtype(a.dtype, np.floating):
        # Negating unsigned ints wraps around; floats sort correctly.
        a = a.astype(np.float64)
    if np.isnan(a).any():
        raise ValueError(f"{name} contain NaN")
    return a


def _sort_block(s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Descending stable order of each row, the sorted scores, and the index of the
    last item of each item's tie group (where sklearn's threshold for it lies)."""
    order = np.argsort(-s, axis=1, kind="stable")  # ties keep gallery order
    s_sorted = np.take_along_axis(s, order, axis=1)
    c, g = s.shape
    idx = np.broadcast_to(np.arange(g), (c, g))
    if g == 0:
        return order, s_sorted, idx
    last = np.empty((c, g), dtype=bool)
    last[:, -1] = True
    np.not_equal(s_sorted[:, :-1], s_sorted[:, 1:], out=last[:, :-1])
    if last.all():  # no ties: every item is its own threshold
        return order, s_sorted, idx
    end = np.where(last, idx, g)
    return order, s_sorted, np.minimum.accumulate(end[:, ::-1], axis=1)[:, ::-1]


def _ap_rows(rel: np.ndarray, end: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row AP (NaN without relevant items), first relevant position, #relevant."""
    tp = np.cumsum(rel, axis=1, dtype=np.int64)
    n_rel = tp[:, -1] if rel.shape[1] else np.zeros(rel.shape[0], np.int64)
    prec = np.take_along_axis(tp, end, axis=1) / (end + 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.where(rel, prec, 0.0).sum(axis=1) / n_rel
    first = np.argmax(rel, axis=1) if rel.shape[1] else n_rel.copy()
    return ap, first, n_rel


def _is_missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x)) or (isinstance(x, str) and not x.strip())


def _encode(query_labels: Sequence, gallery_labels: Sequence) -> tuple[np.ndarray, np.ndarray, list]:
    """Integer codes over a shared vocabulary; missing labels get sentinels that differ
    between the two sides (-1 / -2), so they never count as a match."""
    vocab: dict = {}

    def enc(labels: Sequence, missing: int) -> np.ndarray:
        codes = np.empty(len(labels), dtype=np.int64)
        for i, lab in enumerate(labels):
            lab = lab.item() if isinstance(lab, np.generic) else lab  # JSON-safe keys
            codes[i] = missing if _is_missing(lab) else vocab.setdefault(lab, len(vocab))
        return codes

    return enc(query_labels, -1), enc(gallery_labels, -2), list(vocab)


def _ranked_stats(scores: np.ndarray, pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, ...]]:
    """(ap, first_hit, n_rel) per query for each (query_codes, gallery_codes) pair,
    sorting each block once for all pairs (the sort dominates the cost)."""
    q, g = scores.shape
    out = [(np.full(q, np.nan), np.zeros(q, np.int64), np.zeros(q, np.int64)) for _ in pairs]
    for lo, hi in _blocks(q, g):
        order, _, end = _sort_block(scores[lo:hi])
        for (qc, gc), (ap, first, n_rel) in zip(pairs, out):
            ap[lo:hi], first[lo:hi], n_rel[lo:hi] = _ap_rows(gc[order] == qc[lo:hi, None], end)
    return out


def _summarise(stats: tuple[np.ndarray, ...], qc: np.ndarray, vocab: list, ks: Sequence[int]) -> dict:
    ap, first, n_rel = stats
    scored = n_rel > 0
    n = int(scored.sum())
    res: dict = {"map": float(ap[scored].mean()) if n else float("nan")}
    for k in ks:
        res[f"recall@{k}"] = float((first[scored] < k).mean()) if n else float("nan")
    sums = np.bincount(qc[scored], weights=ap[scored], minlength=len(vocab))
    counts = np.bincount(qc[scored], minlength=len(vocab))
    res.update(
        n_queries=int(len(ap)),
        n_queries_scored=n,
        n_queries_without_relevant=int(len(ap) - n),
        per_query_ap=[float(x) for x in ap],
        per_class_ap={vocab[i]: float(sums[i] / counts[i]) for i in np.flatnonzero(counts)},
    )
    return res


def _check_ks(ks: Sequence[int]) -> tuple[int, ...]:
    ks = tuple(int(k) for k in ks)
    if any(k < 1 for k in ks):
        raise ValueError(f"ks must be positive, got {ks}")
    return ks


def _check_retrieval(scores: Any, nq: int, ng: int) -> np.ndarray:
    s = _as_scores(scores, 2)
    if s.shape != (nq, ng):
        raise ValueError(f"scores have shape {s.shape}, labels give ({nq}, {ng})")
    return s


# --------------------------------------------------------------------------- retrieval
def average_precision(scores: Any, relevant: Any) -> float:
    """AP of one ranking, equal to ``sklearn.metrics.average_precision_score``.

    Without relevant items AP is undefined and this returns NaN (sklearn warns and
    returns 0); retrieval and ``cmap`` handle that case explicitly.
    """
    s = _as_scores(scores, 1)[None]
    rel = np.asarray(relevant, dtype=bool)[None]
    if rel.shape != s.shape:
        raise ValueError(f"relevant has shape {rel.shape[1:]}, scores {s.shape[1:]}")
    order, _, end = _sort_block(s)
    return float(_ap_rows(np.take_along_axis(rel, order, axis=1), end)[0][0])


def retrieval_metrics(scores: Any, query_labels: Sequence, gallery_labels: Sequence, ks: Sequence[int] = DEFAULT_KS) -> dict:
    """mAP and R@k of a [Q, G] score matrix; relevant = same label.

    ``recall@k`` is the fraction of scored queries with at least one relevant item in
    the top k (ties broken by gallery index). Returns ``map``, ``recall@k`` for each k,
    ``n_queries``, ``n_queries_scored``, ``n_queries_without_relevant``,
    ``per_query_ap`` (NaN for left-out queries) and ``per_class_ap`` (label -> mean AP
    of its scored queries, in order of first appearance). Metrics are NaN when no
    query can be scored.
    """
    ks = _check_ks(ks)
    s = _check_retrieval(scores, len(query_labels), len(gallery_labels))
    qc, gc, vocab = _encode(query_labels, gallery_labels)
    return _summarise(_ranked_stats(s, [(qc, gc)])[0], qc, vocab, ks)


def _taxon(t: Any, rank: str) -> Any:
    # Dicts from sidecars/parquet, or anything with Species.rank().
    return t.get(rank) if isinstance(t, Mapping) else t.rank(rank)


def rank_retrieval_metrics(
    scores: Any,
    query_taxa: Sequence,
    gallery_taxa: Sequence,
    ranks: Sequence[str] = DEFAULT_RANKS,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, dict]:
    """``{rank: retrieval_metrics(...)}`` with relevance = same taxon at that rank.

    Taxa are dicts ``rank -> name`` (or :class:`~birdbridge.taxonomy.Species`). A
    missing name at a rank matches nothing, so such queries are counted as
    ``n_queries_without_relevant`` for that rank.
    """
    ks = _check_ks(ks)
    s = _check_retrieval(scores, len(query_taxa), len(gallery_taxa))
    enc = [_encode([_taxon(t, r) for t in query_taxa], [_taxon(t, r) for t in gallery_taxa]) for r in ranks]
    stats = _ranked_stats(s, [(qc, gc) for qc, gc, _ in enc])
    return {r: _summarise(st, qc, vocab, ks) for r, st, (qc, _, vocab) in zip(ranks, stats, enc)}


def precision_recall_curve(
    scores: Any, query_labels: Sequence, gallery_labels: Sequence, n_points: int = 101
) -> tuple[np.ndarray, np.ndarray]:
    """Query-averaged interpolated PR curve: ``(recall_levels, mean_precision)``.

    For each scored query, precision at recall r is the best precision at any recall
    >= r (TREC-style interpolation, tie groups as in AP); curves are then averaged over
    queries, so every query weighs the same, as in mAP.
    """
    s = _check_retrieval(scores, len(query_labels), len(gallery_labels))
    qc, gc, _ = _encode(query_labels, gallery_labels)
    levels = np.linspace(0.0, 1.0, n_points)
    total, n = np.zeros(n_points), 0
    for lo, hi in _blocks(*s.shape):
        order, _, end = _sort_block(s[lo:hi])
        rel = gc[order] == qc[lo:hi, None]
        keep = rel.any(axis=1)
        rel, end = rel[keep], end[keep]
        if not len(rel):
            continue
        tp = np.cumsum(rel, axis=1, dtype=np.int64)
        prec = np.where(rel, np.take_along_axis(tp, end, axis=1) / (end + 1.0), 0.0)
        interp = np.maximum.accumulate(prec[:, ::-1], axis=1)[:, ::-1]
        rows, cols = np.nonzero(rel)  # row-major: relevant items in rank order per query
        vals = interp[rows, cols]
        n_rel = tp[:, -1]
        offsets = np.concatenate([[0], np.cumsum(n_rel)[:-1]])
        # Recall >= r is first reached at the ceil(r*R)-th relevant item; the epsilon
        # keeps 0.3*10 = 3.0000000000000004 from rounding up to 4.
        j = np.maximum(np.ceil(levels[None, :] * n_rel[:, None] - 1e-9).astype(np.int64) - 1, 0)
        total += vals[offsets[:, None] + j].sum(axis=0)
        n += len(rel)
    return levels, (total / n if n else np.full(n_points, np.nan))


def expected_random_ap(n_relevant: Any, n_total: int) -> Any:
    """Exact E[AP] of a uniformly random ranking with R relevant among N items.

    A relevant item sits at rank r (uniform on 1..N) with on average (r-1)(R-1)/(N-1)
    other relevant items above it, so E[precision] = (1/N) sum_r [1 + (r-1)(R-1)/(N-1)]/r
    = (R-1)/(N-1) + (N-R) H_N / (N(N-1)), with H_N the N-th harmonic number. This is
    close to, but above, the prevalence R/N often quoted as chance.
    """
    r = np.asarray(n_relevant, dtype=np.float64)
    if n_total <= 1:
        return np.where(r > 0, 1.0, np.nan) if r.ndim else (1.0 if r > 0 else float("nan"))
    h = float(np.sum(1.0 / np.arange(1, n_total + 1)))
    n = float(n_total)
    e = np.where(r > 0, (r - 1) / (n - 1) + (n - r) * h / (n * (n - 1)), np.nan)
    return e if e.ndim else float(e)


def _relevant_counts(query_labels: Sequence, gallery_labels: Sequence) -> np.ndarray:
    qc, gc, vocab = _encode(query_labels, gallery_labels)
    per_label = np.bincount(gc[gc >= 0], minlength=len(vocab))
    return np.where(qc >= 0, per_label[np.maximum(qc, 0)], 0) if len(vocab) else np.zeros(len(qc), np.int64)


def chance_map(query_labels: Sequence, gallery_labels: Sequence) -> float:
    """Expected mAP of random rankings, over the queries ``retrieval_metrics`` scores.

    Exact (no approximation): the mean over scored queries of
    :func:`expected_random_ap` with R = that query's relevant count, N = gallery size.
    """
    r = _relevant_counts(query_labels, gallery_labels)
    r = r[r > 0]
    return float(np.mean(expected_random_ap(r, len(gallery_labels)))) if len(r) else float("nan")


def chance_recall_at_k(query_labels: Sequence, gallery_labels: Sequence, k: int) -> float:
    """Expected R@k of random rankings: mean over scored queries of 1 - C(N-R, k)/C(N, k)."""
    r = _relevant_counts(query_labels, gallery_labels)
    r = r[r > 0].astype(np.float64)
    if not len(r):
        return float("nan")
    n = len(gallery_labels)
    p_miss = np.ones_like(r)
    for i in range(min(k, n)):  # P(first k all irrelevant), one factor per draw
        p_miss *= np.clip((n - r - i) / (n - i), 0.0, None)
    return float(np.mean(1.0 - p_miss))


# --------------------------------------------------------------------------- classification
def _topk_hits(scores: Any, labels: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
    s = _as_scores(scores, 2)
    y = np.asarray(labels)
    if y.shape != (s.shape[0],) or (len(y) and not np.issubdtype(y.dtype, np.integer)):
        raise ValueError(f"labels must be {s.shape[0]} integer class indices")
    if len(y) and (y.min() < 0 or y.max() >= s.shape[1]):
        raise ValueError(f"labels must lie in [0, {s.shape[1]})")
    hits = np.empty(len(y), dtype=bool)
    cols = np.arange(s.shape[1])
    for lo, hi in _blocks(*s.shape):
        blk, yy = s[lo:hi], y[lo:hi]
        true = blk[np.arange(hi - lo), yy][:, None]
        # sklearn ranks with a stable ascending argsort reversed, so among tied scores
        # the higher class index comes first; count what sits ahead of the true class.
        ahead = (blk > true).sum(axis=1) + ((blk == true) & (cols > yy[:, None])).sum(axis=1)
        hits[lo:hi] = ahead < k
    return hits, y


def topk_accuracy(scores: Any, labels: Any, k: int = 1) -> float:
    """Top-k accuracy, equal to ``sklearn.metrics.top_k_accuracy_score(labels=range(C))``
    for C >= 3 classes, ties included (sklearn's binary special case is not copied)."""
    hits, _ = _topk_hits(scores, labels, k)
    return float(hits.mean()) if len(hits) else float("nan")


def class_averaged_topk(scores: Any, labels: Any, k: int = 1) -> float:
    """Mean over classes present in ``labels`` of their top-k accuracy (balanced accuracy for k=1)."""
    hits, y = _topk_hits(scores, labels, k)
    if not len(y):
        return float("nan")
    counts = np.bincount(y)
    present = counts > 0
    return float(np.mean(np.bincount(y, weights=hits)[present] / counts[present]))


# --------------------------------------------------------------------------- multi-label
def _as_targets(targets: Any, shape: tuple[int, ...]) -> np.ndarray:
    t = np.asarray(targets)
    if t.shape != shape:
        raise ValueError(f"targets have shape {t.shape}, scores {shape}")
    return t > 0


def class_aps(scores: Any, targets: Any) -> np.ndarray:
    """AP of each class column ([C]); NaN for classes without positives."""
    s = _as_scores(scores, 2)
    t = _as_targets(targets, s.shape)
    st, tt = np.ascontiguousarray(s.T), np.ascontiguousarray(t.T)
    ap = np.full(s.shape[1], np.nan)
    for lo, hi in _blocks(*st.shape):
        order, _, end = _sort_block(st[lo:hi])
        ap[lo:hi] = _ap_rows(np.take_along_axis(tt[lo:hi], order, axis=1), end)[0]
    return ap


def cmap(scores: Any, targets: Any, min_positives: int = 1) -> float:
    """Class-wise mean AP (BirdSet's cmAP) of [N, C] scores against 0/1 targets.

    Default: the mean over classes with at least ``min_positives`` positives; the
    others are left out. torchmetrics' ``MultilabelAveragePrecision(average="macro")``
    (which BirdSet's ``cmAP`` wraps) instead scores a class without positives as AP 0
    and keeps it in the mean; ``min_positives=0`` reproduces that exactly, and with
    every class present the two agree. (torchmetrics also applies a sigmoid to scores
    outside [0, 1]; that is monotone, so AP only differs if float32 saturation creates
    ties.) ``min_positives=5`` is the "cmAP5" of BirdSet's paper.
    """
    ap = class_aps(scores, targets)
    n_pos = _as_targets(targets, np.shape(scores)).sum(axis=0)
    if min_positives <= 0:
        ap, keep = np.where(n_pos == 0, 0.0, ap), np.ones(len(ap), dtype=bool)
    else:
        keep = n_pos >= min_positives
    return float(ap[keep].mean()) if keep.any() else float("nan")


def macro_auroc(scores: Any, targets: Any) -> float:
    """Mean ROC AUC over classes with both positives and negatives; equals
    ``sklearn.metrics.roc_auc_score(average="macro")`` on those columns (ties count 1/2)."""
    auc = class_aurocs(scores, targets)
    ok = ~np.isnan(auc)
    return float(auc[ok].mean()) if ok.any() else float("nan")


def class_aurocs(scores: Any, targets: Any) -> np.ndarray:
    """ROC AUC of each class column ([C]); NaN for classes lacking positives or negatives (column-wise)."""
    s = _as_scores(scores, 2)
    t = _as_targets(targets, s.shape)
    st, tt = np.ascontiguousarray(s.T), np.ascontiguousarray(t.T)
    auc = np.full(s.shape[1], np.nan)
    for lo, hi in _blocks(*st.shape):
        order, s_sorted, end = _sort_block(st[lo:hi])
        pos = np.take_along_axis(tt[lo:hi], order, axis=1)
        c, n = pos.shape
        if n == 0:
            continue
        neg = ~pos
        fp = np.cumsum(neg, axis=1, dtype=np.int64)
        first = np.ones((c, n), dtype=bool)
        np.not_equal(s_sorted[:, 1:], s_sorted[:, :-1], out=first[:, 1:])
        start = np.maximum.accumulate(np.where(first, np.arange(n), 0), axis=1)
        fp_end = np.take_along_axis(fp, end, axis=1)
        fp_before = np.take_along_axis(fp, start, axis=1) - np.take_along_axis(neg, start, axis=1)
        n_neg, n_pos = fp[:, -1], pos.sum(axis=1)
        # Each positive beats the negatives below its tie group and half-beats those in it.
        wins = np.where(pos, (n_neg[:, None] - fp_end) + 0.5 * (fp_end - fp_before), 0.0).sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            auc[lo:hi] = np.where((n_pos > 0) & (n_neg > 0), wins / (n_pos * n_neg), np.nan)
    return auc


def top1_any_positive(scores: Any, targets: Any) -> float:
    """Fraction of windows with >= 1 positive whose argmax class (first on ties) is a
    positive; no-call windows are excluded, as in BirdSet's T1Accuracy."""
    s = _as_scores(scores, 2)
    t = _as_targets(targets, s.shape)
    has = t.any(axis=1)
    if not has.any():
        return float("nan")
    hit = t[np.arange(len(s)), np.argmax(s, axis=1)] if s.shape[1] else np.zeros(len(s), bool)
    return float(hit[has].mean())


# --------------------------------------------------------------------------- k-NN
def _unit_rows(x: Any, name: str) -> np.ndarray:
    a = _as_scores(x, 2, name)
    norm = np.linalg.norm(a, axis=1, keepdims=True)
    return a / np.where(norm > 0, norm, 1.0)


def knn_accuracy(
    ref_emb: Any,
    ref_labels: Sequence,
    query_emb: Any,
    query_labels: Sequence,
    k: int = 1,
    exclude_self: bool = False,
) -> float:
    """k-NN classification accuracy with cosine similarity and majority vote.

    Among labels with equal votes the one whose nearest neighbour ranks highest wins
    (equal similarities rank by reference index). ``exclude_self``: query row i is
    reference row i (pass the same set twice) and is never its own neighbour, i.e.
    leave-one-out.
    """
    r, q = _unit_rows(ref_emb, "ref_emb"), _unit_rows(query_emb, "query_emb")
    if r.shape[1] != q.shape[1]:
        raise ValueError(f"embedding dims differ: ref {r.shape[1]}, query {q.shape[1]}")
    if len(ref_labels) != len(r) or len(query_labels) != len(q):
        raise ValueError("labels and embeddings differ in length")
    if exclude_self and len(q) != len(r):
        raise ValueError("exclude_self needs the query set to be the reference set")
    available = len(r) - int(exclude_self)
    if not 1 <= k <= available:
        raise ValueError(f"k={k} but only {available} reference items are available")
    qc, rc, _ = _encode(query_labels, ref_labels)
    correct = 0
    for lo, hi in _blocks(len(q), len(r)):
        sim = q[lo:hi] @ r.T
        if exclude_self:
            sim[np.arange(hi - lo), np.arange(lo, hi)] = -np.inf
        lab = rc[np.argsort(-sim, axis=1, kind="stable")[:, :k]]  # (c, k), nearest first
        votes = (lab[:, :, None] == lab[:, None, :]).sum(axis=2)
        pred = lab[np.arange(hi - lo), np.argmax(votes, axis=1)]  # argmax: first = nearest
        correct += int((pred == qc[lo:hi]).sum())
    return correct / len(q) if len(q) else float("nan")
