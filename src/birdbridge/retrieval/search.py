"""Audio in, pictures out: search an :class:`~birdbridge.retrieval.index.ImageIndex` with recordings.

A recording is cut into search windows (default: the model's own window, hop half a
window, the last window aligned to the end). A search window longer than the model's
window is embedded as the renormalised mean of model windows inside it. Each image's
score for a file aggregates its cosine to every window:

``max`` (default)  the best window wins. A 60 s recording in which the bird sings for 5 s
                   should find that bird; averaging would let silence and other birds
                   dilute the one window that matters.
``mean``           the average over windows, for recordings that are one species throughout.

Candidates come from FAISS: the per-window top-k (which provably contain the top-k by max
for an exact index) plus the top-k of the mean window vector (the mean of cosines *is* the
cosine with the mean vector, so that contains the top-k by mean); every candidate is then
re-scored exactly against the stored vectors, which also gives each hit's best window.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import BadInputError, ConfigError
from .index import ImageIndex, teachers_match

AGGREGATES = ("max", "mean")
DEFAULT_CACHE_DIR = "~/.cache/birdbridge/text"


@dataclass
class Hit:
    rank: int
    id: int
    score: float
    path: str
    species_id: str = ""
    scientific_name: str = ""
    common_name: str = ""
    author: str = ""
    license: str = ""
    source: str = ""
    best_window: int = 0
    window_start_s: float = 0.0
    window_end_s: float = 0.0


@dataclass
class QueryResult:
    path: str
    hits: list[Hit] = field(default_factory=list)
    windows: list[tuple[float, float]] = field(default_factory=list)
    duration_s: float = 0.0
    aggregate: str = "max"
    species_guess: list[dict] | None = None
    error: str | None = None  # a BadInputError reason when the recording could not be used
    error_detail: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict:
        d = asdict(self)
        d["windows"] = [{"start_s": a, "end_s": b} for a, b in self.windows]
        return d


# --------------------------------------------------------------------------- model checks


def load_search_model(model, index: ImageIndex, *, allow_teacher_mismatch: bool = False):
    """Resolve ``model`` (id, directory or embedder) and check it searches ``index``'s space."""
    if isinstance(model, (str, Path)):
        from ..encoders.factory import load_audio_embedder

        model = load_audio_embedder(str(model))
    if getattr(model, "space", None) != "teacher":
        raise ConfigError(
            f"model {getattr(model, 'name', model)!r} embeds audio in its own {getattr(model, 'space', '?')!r} space, "
            f"but the index holds teacher ({index.teacher_id}) image embeddings: only a distilled birdbridge "
            "checkpoint maps sound into that space (make one with `birdbridge train`)")
    if model.dim != index.dim:
        raise ConfigError(f"model gives {model.dim}-d vectors but the index holds {index.dim}-d vectors "
                          f"(teacher {index.teacher_id})")
    model_teacher = _model_meta(model).get("teacher_id")
    if not model_teacher:
        warnings.warn(f"model {model.name!r} does not record its teacher; assuming {index.teacher_id!r}", stacklevel=2)
    elif not teachers_match(model_teacher, index.teacher_id):
        msg = (f"model {model.name!r} was distilled onto teacher {model_teacher!r} but the index was built with "
               f"{index.teacher_id!r}: their spaces differ, results would be meaningless")
        if not allow_teacher_mismatch:
            raise ConfigError(msg + " (override with allow_teacher_mismatch / --allow-teacher-mismatch)")
        warnings.warn(msg, stacklevel=2)
    return model


def _model_meta(model) -> dict:
    return dict(getattr(getattr(model, "model", None), "meta", None) or {})


# --------------------------------------------------------------------------- windows


def embed_windows(model, wave: np.ndarray, window_s: float | None = None, hop_s: float | None = None,
                  batch_size: int = 32) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Unit vectors ``[W, D]`` for the search windows of ``wave`` and their ``(start_s, end_s)``."""
    from ..data.audio import window_starts

    sr, n_model = model.sample_rate, model.window_samples
    win = int(round(window_s * sr)) if window_s else n_model
    hop = int(round(hop_s * sr)) if hop_s else max(1, win // 2)
    if win <= 0 or hop <= 0:
        raise ConfigError("window_s and hop_s must be positive")
    pieces, owner, spans = [], [], []
    for w, s in enumerate(window_starts(len(wave), win, hop)):
        seg = wave[s : s + win]
        spans.append((round(s / sr, 3), round(min(len(wave), s + win) / sr, 3)))
        for t in window_starts(len(seg), n_model, max(1, n_model // 2)):
            pieces.append(seg[t : t + n_model])
            owner.append(w)
    vecs = np.concatenate([model.embed_windows(pieces[i : i + batch_size]) for i in range(0, len(pieces), batch_size)])
    owner = np.asarray(owner)
    out = np.stack([vecs[owner == w].mean(axis=0) for w in range(len(spans))])
    return _unit(out), spans


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


def rank_images(index: ImageIndex, window_vecs: np.ndarray, k: int, aggregate: str = "max") -> list[tuple[int, float, int]]:
    """``[(image id, aggregated score, best window), ...]`` best first, at most ``k``."""
    if aggregate not in AGGREGATES:
        raise ConfigError(f"aggregate must be one of {AGGREGATES}, not {aggregate!r}")
    if index.count == 0 or k <= 0:
        return []
    queries = np.concatenate([window_vecs, window_vecs.mean(axis=0, keepdims=True)])
    _, ids = index.search(queries, k)
    cand = np.unique(ids[ids >= 0])
    scores = window_vecs @ index.vectors_for(cand).T  # [W, C], exact cosines
    agg = scores.max(axis=0) if aggregate == "max" else scores.mean(axis=0)
    best = scores.argmax(axis=0)
    order = np.lexsort((cand, -agg))[:k]  # ties broken by id, so results are deterministic
    return [(int(cand[i]), float(agg[i]), int(best[i])) for i in order]


# --------------------------------------------------------------------------- species guess


def species_text_matrix(index: ImageIndex, model, species=None, cache_dir: str | Path | None = None):
    """``(species list, [S, D] teacher text embeddings)`` via the on-disk text cache.

    Prompts follow the model's training recipe; a ``mixed`` recipe (all prompt types) is
    answered with the mean of every type's embedding, renormalised.
    """
    from ..distill.text_cache import TextEmbeddingCache
    from ..encoders.teacher import Teacher
    from ..taxonomy import resolve_prompt_types

    species = list(species) if species is not None else index.species()
    if not species:
        raise ConfigError(f"no species to guess from: the index {index.root} has no species names (its photos were "
                          "indexed without them); pass --species-list FILE, a CSV with a scientific_name column "
                          "(species=load_species_list(FILE) in Python)")
    recipe = _model_meta(model).get("prompt_recipe") or {}
    types = resolve_prompt_types(recipe.get("prompt_type") or "taxonomic_common")
    template_set = recipe.get("template_set") or "single"
    # Reuse the distillation run's cache entries: they are keyed by the id string training used.
    model_teacher = _model_meta(model).get("teacher_id")
    tid = model_teacher if model_teacher and teachers_match(model_teacher, index.teacher_id) else index.teacher_id
    cache = TextEmbeddingCache(Path(cache_dir or os.environ.get("BIRDBRIDGE_CACHE", DEFAULT_CACHE_DIR)).expanduser())
    per_type = cache.get_many(tid, species, types, template_set, lambda: Teacher.load(index.teacher_id))
    mat = np.mean([per_type[t].numpy() for t in types], axis=0)
    return species, _unit(mat)


def guess_species(query_vec: np.ndarray, species, text: np.ndarray, top: int = 5) -> list[dict]:
    sims = text @ _unit(query_vec)
    order = np.argsort(-sims)[:top]
    return [{"species_id": species[i].id, "scientific_name": species[i].scientific_name,
             "common_name": species[i].common_name, "score": round(float(sims[i]), 4)} for i in order]


def load_species_list(csv_path: str | Path):
    """Species from a CSV with ``scientific_name`` (+ optional common_name, species_id, ranks)."""
    from ..data.generic import read_csv_rows, species_from_row

    rows = read_csv_rows(csv_path)
    if not rows or "scientific_name" not in rows[0]:
        raise ConfigError(f"{csv_path}: a species list needs a 'scientific_name' column")
    out, seen = [], set()
    for row in rows:
        if row.get("scientific_name"):
            sp = species_from_row(row)
            if sp.id not in seen:
                seen.add(sp.id)
                out.append(sp)
    return sorted(out, key=lambda s: s.id)


# --------------------------------------------------------------------------- search


def search_wave(model, index: ImageIndex, wave: np.ndarray, k: int = 10, *, path: str = "", window_s: float | None = None,
                hop_s: float | None = None, aggregate: str = "max", species_text=None) -> QueryResult:
    """Search with one decoded recording (mono float32 at ``model.sample_rate``).

    ``model`` must already be checked (:func:`load_search_model`); ``species_text`` is a
    ``(species, matrix)`` pair from :func:`species_text_matrix` for a zero-shot guess.
    """
    res = QueryResult(path=path, aggregate=aggregate, duration_s=round(len(wave) / model.sample_rate, 3))
    vecs, res.windows = embed_windows(model, wave, window_s, hop_s)
    ranked = rank_images(index, vecs, k, aggregate)
    metas = index.metadata([i for i, _, _ in ranked])
    for r, ((id_, score, w), meta) in enumerate(zip(ranked, metas), start=1):
        res.hits.append(Hit(rank=r, id=id_, score=round(score, 5), path=meta["path"], species_id=meta["species_id"],
                            scientific_name=meta["scientific_name"], common_name=meta["common_name"],
                            author=meta["author"], license=meta["license"], source=meta["source"], best_window=w,
                            window_start_s=res.windows[w][0], window_end_s=res.windows[w][1]))
    if species_text is not None:
        res.species_guess = guess_species(vecs.mean(axis=0), species_text[0], species_text[1])
    return res


def search_audio(
    model,
    index: ImageIndex | str | Path,
    paths: Sequence[str | Path],
    k: int = 10,
    *,
    window_s: float | None = None,
    hop_s: float | None = None,
    aggregate: str = "max",
    guess: bool = False,
    species=None,
    cache_dir: str | Path | None = None,
    max_duration_s: float | None = None,
    allow_teacher_mismatch: bool = False,
    progress: Callable[[int], None] | None = None,
) -> list[QueryResult]:
    """Search ``index`` with each recording in ``paths``; one :class:`QueryResult` per path, in order.

    ``model`` is a distilled checkpoint (directory or id) or an already loaded embedder.
    A recording that cannot be decoded gives a result with ``error`` set (and no hits)
    instead of stopping the batch. ``guess=True`` (or a ``species`` list) adds a zero-shot
    species guess over ``species`` (default: the species named in the index metadata).
    ``max_duration_s`` reads at most that much of each recording.
    """
    from ..data.audio import load_audio

    if isinstance(index, (str, Path)):
        index = ImageIndex.open(index)
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    if aggregate not in AGGREGATES:
        raise ConfigError(f"aggregate must be one of {AGGREGATES}, not {aggregate!r}")
    model = load_search_model(model, index, allow_teacher_mismatch=allow_teacher_mismatch)
    text = species_text_matrix(index, model, species, cache_dir) if guess or species is not None else None
    results = []
    for p in paths:
        try:
            wave = load_audio(p, model.sample_rate, max_duration_s=max_duration_s)
            res = search_wave(model, index, wave, k, path=str(p), window_s=window_s, hop_s=hop_s,
                              aggregate=aggregate, species_text=text)
        except BadInputError as err:
            res = QueryResult(path=str(p), aggregate=aggregate, error=err.reason, error_detail=err.detail)
        results.append(res)
        if progress:
            progress(1)
    return results
