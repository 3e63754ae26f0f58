"""Audio in, pictures out: search an :class:`~birdbridge.retrieval.index.ImageIndex` with recordings.

A recording is cut into search windows (default: the model's own window, hop half a
window, the last window aligned to the end) and streamed window by window from disk, so
an hours-long file is never decoded whole. A search window longer than the model's
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
Results follow the shared schema of :mod:`.results` (docs/SEARCH_SCHEMA.md).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import numpy as np

from ..encoders.identity import recorded, same_teacher
from ..errors import BadInputError, ConfigError
from .confidence import DEFAULT_LOGIT_SCALE, by_key, model_logit_scale, softmax
from .index import ImageIndex
from .results import Detection, Hit, SearchResult, Window

AGGREGATES = ("max", "mean")


# --------------------------------------------------------------------------- model checks


def load_search_model(model, index: ImageIndex, *, allow_teacher_mismatch: bool = False, device: str = "cpu"):
    """Resolve ``model`` (id, directory or embedder) and check it searches ``index``'s space.

    The model and the index must record the same teacher: the same weights (fingerprint),
    wherever either was made or moved (:mod:`birdbridge.encoders.identity`).
    """
    if isinstance(model, (str, Path)):
        from ..encoders.factory import load_audio_embedder

        model = load_audio_embedder(str(model), device=device)
    if getattr(model, "space", None) != "teacher":
        raise ConfigError(
            f"model {getattr(model, 'name', model)!r} embeds audio in its own {getattr(model, 'space', '?')!r} space, "
            f"but the index holds teacher ({index.teacher_id}) image embeddings: only a distilled birdbridge "
            "checkpoint maps sound into that space (make one with `birdbridge train`)")
    if model.dim != index.dim:
        raise ConfigError(f"model gives {model.dim}-d vectors but the index holds {index.dim}-d vectors "
                          f"(teacher {index.teacher_id})")
    model_teacher = model_teacher_record(model)
    if model_teacher is None:
        warnings.warn(f"model {model.name!r} does not record its teacher; assuming {index.teacher_id!r}", stacklevel=2)
    elif not same_teacher(model_teacher, index.teacher):
        msg = (f"model {model.name!r} was distilled onto teacher {_describe(model_teacher)} but the index was built "
               f"with {_describe(index.teacher)}: their spaces differ, results would be meaningless")
        if not allow_teacher_mismatch:
            raise ConfigError(msg + " (override with allow_teacher_mismatch / --allow-teacher-mismatch)")
        warnings.warn(msg, stacklevel=2)
    return model


def model_teacher_record(model):
    """The teacher a loaded distilled model records (None when it records none)."""
    inner = getattr(model, "model", None)
    return recorded(_model_meta(model), getattr(inner, "source_dir", None))


def _describe(teacher) -> str:
    return f"{teacher.id!r}" + (f" (weights {teacher.fingerprint})" if teacher is not None and teacher.fingerprint else "")


def _model_meta(model) -> dict:
    return dict(getattr(getattr(model, "model", None), "meta", None) or {})


# --------------------------------------------------------------------------- windows


def embed_windows(model, wave: np.ndarray, window_s: float | None = None, hop_s: float | None = None,
                  batch_size: int = 32) -> tuple[np.ndarray, list[Window]]:
    """Unit vectors ``[W, D]`` for the search windows of a decoded ``wave`` and the windows."""
    from ..data.audio import window_starts

    win, hop = _window_samples(model, window_s, hop_s)
    sr = model.sample_rate
    segments = ((s / sr, min(len(wave), s + win) / sr, wave[s : s + win]) for s in window_starts(len(wave), win, hop))
    return embed_segments(model, segments, batch_size)


def stream_windows(model, path: str | Path, window_s: float | None = None, hop_s: float | None = None, *,
                   max_duration_s: float | None = None):
    """``(start_s, end_s, samples)`` of the search windows of a file, decoded block by block.

    The windows :func:`embed_windows` cuts from the decoded file (same starts, the last
    aligned to the end); a silent, empty or too short recording raises
    :class:`~birdbridge.errors.BadInputError` as :func:`~birdbridge.data.audio.load_audio` does.
    """
    from ..data.stream import iter_spans

    return iter_spans(path, **window_span_args(model, window_s, hop_s, max_duration_s=max_duration_s))


def window_span_args(model, window_s: float | None = None, hop_s: float | None = None, *,
                     max_duration_s: float | None = None) -> dict:
    """The :func:`~birdbridge.data.stream.iter_spans` arguments of :func:`stream_windows` (picklable)."""
    from ..data.audio import MIN_DURATION_S

    win, hop = _window_samples(model, window_s, hop_s)
    sr = model.sample_rate
    return dict(sr=sr, window_s=win / sr, hop_s=hop / sr, last="end", end_s=max_duration_s, reject_silent=True,
                min_duration_s=MIN_DURATION_S)


def embed_segments(model, segments: Iterable[tuple[float, float, np.ndarray]],
                   batch_size: int = 32) -> tuple[np.ndarray, list[Window]]:
    """``[W, D]`` unit vectors and the windows of all ``segments`` (see :func:`iter_window_vectors`)."""
    pairs = list(iter_window_vectors(model, segments, batch_size))
    if not pairs:
        return np.zeros((0, model.dim), np.float32), []
    return np.stack([v for _, v in pairs]), [w for w, _ in pairs]


def iter_window_vectors(model, segments: Iterable[tuple[float, float, np.ndarray]],
                        batch_size: int = 32) -> Iterator[tuple[Window, np.ndarray]]:
    """Yield ``(window, unit vector)`` as soon as each search window is embedded.

    A window is the renormalised mean of the model windows inside it; model windows are
    batched across search windows, and only the windows of the batch in flight are held,
    so an hours-long recording streams through in bounded memory.
    """
    from collections import deque

    from ..data.audio import window_starts

    n_model = model.window_samples
    open_windows: deque = deque()  # [Window, sum, n embedded, n pieces], in time order
    pieces: list[np.ndarray] = []
    owner: list[list] = []

    def flush() -> None:
        if pieces:
            for slot, v in zip(owner, model.embed_windows(pieces)):
                slot[1] += v
                slot[2] += 1
            pieces.clear()
            owner.clear()

    def done() -> Iterator[tuple[Window, np.ndarray]]:
        while open_windows and open_windows[0][2] == open_windows[0][3]:
            w, total, n, _ = open_windows.popleft()
            yield w, _unit(total / n)

    for index, (t0, t1, seg) in enumerate(segments):
        starts = window_starts(len(seg), n_model, max(1, n_model // 2))
        slot = [Window(index, round(t0, 3), round(t1, 3)), np.zeros(model.dim, np.float64), 0, len(starts)]
        open_windows.append(slot)
        for t in starts:
            pieces.append(seg[t : t + n_model])
            owner.append(slot)
            if len(pieces) >= batch_size:
                flush()
                yield from done()
    flush()
    yield from done()


def _window_samples(model, window_s: float | None, hop_s: float | None) -> tuple[int, int]:
    sr = model.sample_rate
    win = int(round(window_s * sr)) if window_s else model.window_samples
    hop = int(round(hop_s * sr)) if hop_s else max(1, win // 2)
    if win <= 0 or hop <= 0:
        raise ConfigError("window_s and hop_s must be positive")
    return win, hop


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
    """``(species list, [S, D] teacher text embeddings)`` of ``species`` (default: the index's).

    The text comes from the teacher the index was built with, found where it is now, in the
    prompts the model was trained with (:func:`model_prompt_recipe`).
    """
    from ..encoders.species_text import recipe_species_text

    species = list(species) if species is not None else index.species()
    if not species:
        raise ConfigError(f"no species to guess from: the index {index.root} has no species names (its photos were "
                          "indexed without them); pass --species-list FILE, a CSV with a scientific_name column "
                          "(species=load_species_list(FILE) in Python)")
    tid, fingerprint = index_teacher(index)
    return species, recipe_species_text(model_prompt_recipe(model), species, tid, cache_dir, fingerprint)


def index_teacher(index: ImageIndex) -> tuple[str, str | None]:
    """An id that loads the index's teacher from here, and its weights fingerprint (None if unknown)."""
    teacher = index.teacher
    return index.teacher_model_id(), teacher.fingerprint if teacher is not None else None


def model_prompt_recipe(model) -> dict:
    """The prompt recipe a distilled model was trained with (``{}`` when it records none):
    species lists are scored with the same prompts (:func:`~birdbridge.encoders.species_text.recipe_species_text`)."""
    return _model_meta(model).get("prompt_recipe") or {}


def model_teacher(model) -> tuple[str | None, str | None]:
    """The teacher a distilled model records, as ``(id that loads it from here, fingerprint)``;
    ``(None, None)`` when the model records none."""
    rec = model_teacher_record(model)
    if rec is None:
        return None, None
    return (str(rec.path) if rec.path is not None else _model_meta(model)["teacher_id"]), rec.fingerprint


def guess_species(query_vec: np.ndarray, species, text: np.ndarray, top: int = 5,
                  scale: float = DEFAULT_LOGIT_SCALE) -> list[dict]:
    sims = text @ _unit(query_vec)
    conf = softmax(sims, scale)  # over every species of the list
    order = np.argsort(-sims)[:top]
    return [{"species_id": species[i].id, "scientific_name": species[i].scientific_name,
             "common_name": species[i].common_name, "score": round(float(sims[i]), 4),
             "confidence": round(float(conf[i]), 4)} for i in order]


# --------------------------------------------------------------------------- per-window species


def window_species(index: ImageIndex, vecs: np.ndarray, windows: Sequence[Window], k: int,
                   scale: float = DEFAULT_LOGIT_SCALE) -> list[Detection]:
    """The ``k`` species whose photos each window is nearest to, with that window's best photo of each.

    A species' score in a window is its best photo's cosine; photos without a species are
    rows of their own. Candidates are each window's nearest ``max(50, 10k)`` photos; a row's
    confidence is its species' softmax share among the candidates' species (:mod:`.confidence`).
    """
    if index.count == 0 or not len(vecs):
        return []
    scores, ids = index.search(vecs, min(index.count, max(50, 10 * k)))
    metas = {m["id"]: m for m in index.metadata(np.unique(ids[ids >= 0]))}
    out = []
    for w, win in enumerate(windows):
        keys = [metas[int(i)]["species_id"] or f"image:{i}" for i in ids[w] if i >= 0]
        conf = by_key(keys, [float(x) for x, i in zip(scores[w], ids[w]) if i >= 0], scale)
        seen: set[str] = set()
        for score, i in zip(scores[w], ids[w]):  # best first
            if i < 0:
                continue
            m = metas[int(i)]
            key = m["species_id"] or f"image:{i}"
            if key in seen:
                continue
            seen.add(key)
            out.append(Detection(start_s=win.start_s, end_s=win.end_s, rank=len(seen), score=round(float(score), 5),
                                 species_id=m["species_id"], scientific_name=m["scientific_name"],
                                 common_name=m["common_name"], image=m["path"], confidence=round(conf[key], 5)))
            if len(seen) == k:
                break
    return out


# --------------------------------------------------------------------------- search


def search_wave(model, index: ImageIndex, wave: np.ndarray, k: int = 10, *, path: str = "", window_s: float | None = None,
                hop_s: float | None = None, aggregate: str = "max", species_text=None, per_window_k: int = 0,
                scale: float = DEFAULT_LOGIT_SCALE) -> SearchResult:
    """Search with one decoded recording (mono float32 at ``model.sample_rate``).

    ``model`` must already be checked (:func:`load_search_model`); ``species_text`` is a
    ``(species, matrix)`` pair from :func:`species_text_matrix` for a zero-shot guess;
    ``per_window_k`` > 0 adds that many species per window (:func:`window_species`); ``scale``: the
    logit scale confidences are computed at (:func:`~.confidence.model_logit_scale`).
    """
    vecs, windows = embed_windows(model, wave, window_s, hop_s)
    return _result(index, vecs, windows, k, path=path, duration_s=round(len(wave) / model.sample_rate, 3),
                   aggregate=aggregate, species_text=species_text, per_window_k=per_window_k, scale=scale)


def search_file(model, index: ImageIndex, path: str | Path, k: int = 10, *, window_s: float | None = None,
                hop_s: float | None = None, aggregate: str = "max", species_text=None, per_window_k: int = 0,
                max_duration_s: float | None = None, batch_size: int = 32,
                scale: float = DEFAULT_LOGIT_SCALE) -> SearchResult:
    """Search with one recording on disk, streamed window by window (see :func:`search_wave`)."""
    segments = stream_windows(model, path, window_s, hop_s, max_duration_s=max_duration_s)
    vecs, windows = embed_segments(model, segments, batch_size)
    duration = windows[-1].end_s if windows else 0.0  # the last window ends where the recording does
    return _result(index, vecs, windows, k, path=str(path), duration_s=duration, aggregate=aggregate,
                   species_text=species_text, per_window_k=per_window_k, scale=scale)


def _result(index, vecs, windows, k, *, path, duration_s, aggregate, species_text, per_window_k,
            scale=DEFAULT_LOGIT_SCALE) -> SearchResult:
    res = SearchResult(path=path, duration_s=duration_s, aggregate=aggregate, k=k, windows=list(windows))
    # candidates beyond k: a hit's confidence is its species' share among the species FAISS found near
    ranked = rank_images(index, vecs, max(k, 50), aggregate)
    metas = index.metadata([i for i, _, _ in ranked])
    conf = by_key([m["species_id"] or f"image:{i}" for (i, _, _), m in zip(ranked, metas)],
                  [sc for _, sc, _ in ranked], scale)
    ranked, metas = ranked[:k], metas[:k]
    for r, ((id_, score, w), meta) in enumerate(zip(ranked, metas), start=1):
        res.hits.append(Hit(rank=r, id=id_, score=round(score, 5), path=meta["path"], name=Path(meta["path"]).name,
                            confidence=round(conf[meta["species_id"] or f"image:{id_}"], 5),
                            species_id=meta["species_id"], scientific_name=meta["scientific_name"],
                            common_name=meta["common_name"], author=meta["author"], license=meta["license"],
                            source=meta["source"], best_window=windows[w]))
    if species_text is not None:
        res.species_guess = guess_species(vecs.mean(axis=0), species_text[0], species_text[1], scale=scale)
    if per_window_k > 0:
        res.detections = window_species(index, vecs, windows, per_window_k, scale)
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
    device: str = "cpu",
    per_window_k: int = 0,
    progress: Callable[[int], None] | None = None,
    min_confidence: float | None = None,
    rerank: bool | None = None,
) -> list[SearchResult]:
    """Search ``index`` with each recording in ``paths``; one :class:`SearchResult` per path, in order.

    ``model`` is a distilled checkpoint (directory or id) or an already loaded embedder.
    Recordings are streamed from disk window by window. A recording that cannot be decoded
    gives a result with ``error`` set (and no hits) instead of stopping the batch.
    ``guess=True`` (or a ``species`` list) adds a zero-shot species guess over ``species``
    (default: the species named in the index metadata). ``max_duration_s`` reads at most
    that much of each recording; ``per_window_k`` adds per-window species rows
    (``result.detections``, the table ``search --format csv|raven`` writes); ``device`` runs
    the model (check it first with :func:`birdbridge.devices.resolve_device`). ``min_confidence``
    leaves out hits and per-window rows whose confidence (:mod:`.confidence`) is below it.
    ``rerank`` overrides the index's default (:meth:`ImageIndex.search`).
    """
    if isinstance(index, (str, Path)):
        index = ImageIndex.open(index)
    if rerank is not None:
        index.rerank = rerank
    if k < 1:
        raise ConfigError(f"k must be at least 1, got {k}")
    if aggregate not in AGGREGATES:
        raise ConfigError(f"aggregate must be one of {AGGREGATES}, not {aggregate!r}")
    model = load_search_model(model, index, allow_teacher_mismatch=allow_teacher_mismatch, device=device)
    text = species_text_matrix(index, model, species, cache_dir) if guess or species is not None else None
    scale = model_logit_scale(model)[0]
    results = []
    for p in paths:
        try:
            res = search_file(model, index, p, k, window_s=window_s, hop_s=hop_s, aggregate=aggregate,
                              species_text=text, per_window_k=per_window_k, max_duration_s=max_duration_s, scale=scale)
        except BadInputError as err:
            res = SearchResult(path=str(p), aggregate=aggregate, k=k, error=err.reason, error_detail=err.detail)
        if min_confidence is not None:
            res.hits = [h for h in res.hits if h.confidence is None or h.confidence >= min_confidence]
            res.detections = [d for d in res.detections if d.confidence is None or d.confidence >= min_confidence]
        results.append(res)
        if progress:
            progress(1)
    return results


__all__ = ["search_audio", "search_file", "search_wave", "load_search_model", "species_text_matrix", "model_prompt_recipe",
           "window_species", "guess_species", "rank_images", "embed_windows", "stream_windows",
           "embed_segments", "iter_window_vectors", "SearchResult", "Hit", "Window", "Detection", "AGGREGATES"]
