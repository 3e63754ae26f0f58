"""Evaluation protocols: unit-row embeddings + labels in, metric dicts out.

Each protocol is one experiment of the paper, written over plain numpy arrays so that
every method (distilled model, baselines, ablation arms) goes through exactly the same
code and so that the protocols can be tested on constructed embeddings with known
answers. The numbers themselves come from :mod:`birdbridge.metrics`.

* :func:`retrieval` — queries vs gallery (audio→image, image→audio, text→audio,
  text→image), relevance = same taxon at species/genus/family/order; queries without
  a relevant gallery item are left out of mAP/R@k and counted.
* :func:`audio_to_image` — the headline: all images, and per image source (SSW60 has
  NABirds and iNat photos).
* :func:`knn` — k-NN species accuracy of test audio against train audio.
* :func:`zero_shot_focal` — audio vs one text embedding per species.
* :func:`zero_shot_soundscape` — windows of long recordings vs species texts, BirdSet
  metrics; windows without calls count for cmAP/AUROC and are left out of top-1.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from ..taxonomy import RANKS, Species
from ..metrics import (
    DEFAULT_KS,
    DEFAULT_RANKS,
    chance_map,
    class_averaged_topk,
    cmap,
    knn_accuracy,
    macro_auroc,
    rank_retrieval_metrics,
    top1_any_positive,
    topk_accuracy,
)


def taxa(species: Species) -> dict[str, str]:
    """``{rank: name}`` for every Linnaean rank (``species`` is the binomial)."""
    return {r: species.rank(r) for r in RANKS}


def taxa_for(labels: Sequence[str], species_by_id: Mapping[str, Species]) -> list[dict[str, str]]:
    return [taxa(species_by_id[s]) for s in labels]


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be 2-D, got shape {x.shape}")
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def similarity(queries: np.ndarray, gallery: np.ndarray) -> np.ndarray:
    """Cosine similarity ``[Q, G]`` (rows are renormalised, so any scale is fine)."""
    q, g = _unit(queries), _unit(gallery)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"embedding dims differ: queries {q.shape[1]}, gallery {g.shape[1]}")
    return q @ g.T


def retrieval(
    query_emb: np.ndarray,
    query_taxa: Sequence[Mapping[str, str]],
    gallery_emb: np.ndarray,
    gallery_taxa: Sequence[Mapping[str, str]],
    ranks: Sequence[str] = DEFAULT_RANKS,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict:
    """Cross-modal retrieval at several ranks.

    Returns ``{"n_queries", "n_gallery", "ranks": {rank: {map, recall@k, chance_map,
    n_queries_scored, n_queries_without_relevant, per_class_ap}}}``; per-query APs are
    dropped (they are recomputable and large).
    """
    if len(query_taxa) == 0 or len(gallery_taxa) == 0:
        return {"n_queries": len(query_taxa), "n_gallery": len(gallery_taxa), "ranks": {}}
    scores = similarity(query_emb, gallery_emb)
    per_rank = rank_retrieval_metrics(scores, query_taxa, gallery_taxa, ranks=ranks, ks=ks)
    for r, m in per_rank.items():
        m.pop("per_query_ap", None)
        m["chance_map"] = chance_map([t.get(r) for t in query_taxa], [t.get(r) for t in gallery_taxa])
    return {"n_queries": len(query_taxa), "n_gallery": len(gallery_taxa), "ranks": per_rank}


def audio_to_image(
    audio_emb: np.ndarray,
    audio_taxa: Sequence[Mapping[str, str]],
    image_emb: np.ndarray,
    image_taxa: Sequence[Mapping[str, str]],
    image_sources: Sequence[str | None] | None = None,
    ranks: Sequence[str] = DEFAULT_RANKS,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict:
    """``{"all": retrieval(...), "by_source": {source: retrieval(...)}}``.

    Per-source galleries are only formed when images name at least two sources
    (``ImageItem.extra["source"]``); otherwise ``by_source`` is empty.
    """
    out = {"all": retrieval(audio_emb, audio_taxa, image_emb, image_taxa, ranks, ks), "by_source": {}}
    if image_sources is None:
        return out
    sources = np.asarray([s or "" for s in image_sources], dtype=object)
    names = sorted({s for s in sources if s})
    if len(names) < 2:
        return out
    for src in names:
        keep = np.flatnonzero(sources == src)
        out["by_source"][src] = retrieval(audio_emb, audio_taxa, image_emb[keep], [image_taxa[i] for i in keep], ranks, ks)
    return out


def knn(
    ref_emb: np.ndarray,
    ref_labels: Sequence[str],
    query_emb: np.ndarray,
    query_labels: Sequence[str],
    ks: Sequence[int] = (1, 5),
) -> dict:
    """k-NN species accuracy (cosine, majority vote) for each k.

    Queries whose species has no reference item cannot be right; they are left out and
    counted (``n_queries_without_reference``) instead of deflating the accuracy.
    """
    ref_set = set(ref_labels)
    keep = [i for i, lab in enumerate(query_labels) if lab in ref_set]
    out: dict = {"n_reference": len(ref_labels), "n_queries": len(keep),
                 "n_queries_without_reference": len(query_labels) - len(keep)}
    if not keep or not len(ref_labels):
        return {**out, **{f"knn@{k}": float("nan") for k in ks}}
    q = np.asarray(query_emb)[keep]
    ql = [query_labels[i] for i in keep]
    for k in ks:
        out[f"knn@{k}"] = knn_accuracy(ref_emb, ref_labels, q, ql, k=min(k, len(ref_labels)))
    return out


def zero_shot_focal(audio_emb: np.ndarray, labels: Sequence[int], text_emb: np.ndarray, ks: Sequence[int] = (1, 5)) -> dict:
    """Classify each clip by its most similar species text (``text_emb`` row = class).

    ``top{k}`` is class-averaged (each species weighs the same, as in iNatSounds);
    ``top{k}_micro`` is per clip. ``k`` is capped at the number of classes.
    """
    y = np.asarray(labels, dtype=np.int64)
    n_classes = int(np.asarray(text_emb).shape[0])
    out: dict = {"n_clips": int(len(y)), "n_classes": n_classes,
                 "chance_top1": (1.0 / len(np.unique(y))) if len(y) else float("nan")}
    if not len(y):
        return {**out, **{f"top{k}": float("nan") for k in ks}}
    s = similarity(audio_emb, text_emb)
    for k in ks:
        kk = min(k, n_classes)
        out[f"top{k}"] = class_averaged_topk(s, y, kk)
        out[f"top{k}_micro"] = topk_accuracy(s, y, kk)
    return out


def zero_shot_soundscape(window_emb: np.ndarray, targets: np.ndarray, text_emb: np.ndarray) -> dict:
    """BirdSet-style multi-label metrics of windows scored against species texts.

    ``targets`` is ``[n_windows, n_species]`` 0/1 in ``text_emb`` row order. cmAP is over
    species with at least one positive window; macro AUROC over species with both
    positive and negative windows; top-1 ignores no-call windows.
    """
    t = np.asarray(targets) > 0
    out: dict = {"n_windows": int(t.shape[0]), "n_no_call_windows": int((~t.any(axis=1)).sum()),
                 "n_species_present": int(t.any(axis=0).sum())}
    if not t.shape[0]:
        return {**out, "cmap": float("nan"), "macro_auroc": float("nan"), "top1_any_positive": float("nan")}
    s = similarity(window_emb, text_emb)
    prevalence = t.sum(axis=0)[t.any(axis=0)] / t.shape[0]
    return {**out, "cmap": cmap(s, t), "macro_auroc": macro_auroc(s, t), "top1_any_positive": top1_any_positive(s, t),
            # a random scorer's cmAP is about the mean prevalence of the scored species
            "chance_cmap": float(prevalence.mean()) if len(prevalence) else float("nan")}
