"""Detections over long recordings: which species sing in each window, from any species list.

Each window of a recording (default: the model's window, no overlap, the last window
aligned to the end) is embedded by a distilled checkpoint into the teacher's space and
scored against the teacher's text embedding of every species in the list -- BioCLIP-2's
open vocabulary: the list may hold species the model never heard in training, only the
teacher's text tower reads their names. The prompts follow the recipe stored in the
checkpoint, and the text embeddings come from the on-disk cache
(:mod:`birdbridge.encoders.species_text`), so a list is embedded once.

Recordings are streamed window by window (:func:`~birdbridge.data.stream.iter_spans`):
an all-night recording is never decoded whole, and only a batch of windows is in
memory. A score is the cosine between window and species text; ``min_score`` drops rows
below it. A confidence is the softmax of the window's scores over the whole species list at
the checkpoint's learned temperature (:mod:`.confidence`); ``min_confidence`` drops rows below it.
Tables: :mod:`.tables` (CSV, Raven, Audacity, JSON).
"""

from __future__ import annotations

from collections import deque
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..data.prefetch import prefetch_spans
from ..errors import BadInputError, ConfigError
from .results import Detection, DetectionResult, Window
from .search import iter_window_vectors, load_search_model, model_prompt_recipe, window_span_args


def load_detect_model(model, device: str = "cpu", *, runtime: str = "torch", precision: str = "fp32"):
    """A distilled checkpoint (id, directory or loaded embedder): its space must be the teacher's.

    ``runtime`` (``torch`` or ``onnx``: int8 on ONNX Runtime) and ``precision`` (``fp32``, ``bf16``,
    ``auto``) choose how an id or directory is loaded (:func:`~birdbridge.encoders.factory.load_audio_embedder`);
    an embedder already loaded is used as it is."""
    if isinstance(model, (str, Path)):
        from ..encoders.factory import load_audio_embedder

        model = load_audio_embedder(str(model), device=device, runtime=runtime, precision=precision)
    if getattr(model, "space", None) != "teacher":
        raise ConfigError(f"model {getattr(model, 'name', model)!r} embeds audio in its own "
                          f"{getattr(model, 'space', '?')!r} space, not the teacher's: species names can only be "
                          "scored with a distilled birdbridge checkpoint (make one with `birdbridge train`)")
    return model


def detect_audio(
    model,
    paths: Sequence[str | Path],
    *,
    species=None,
    index=None,
    k: int = 3,
    min_score: float | None = None,
    min_confidence: float | None = None,
    window_s: float | None = None,
    hop_s: float | None = None,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    allow_teacher_mismatch: bool = False,
    batch_size: int = 32,
    progress: Callable[[int], None] | None = None,
    workers: int = 0,
    runtime: str = "torch",
    precision: str = "fp32",
    embedded=None,
) -> list[DetectionResult]:
    """Per-window top-``k`` species of each recording; one :class:`DetectionResult` per path, in order.

    ``species``: a list of :class:`~birdbridge.taxonomy.Species` (e.g. from
    :func:`~birdbridge.data.species_list.load_species_list`); ``index``: an image index (or
    its directory) whose species are used when ``species`` is None, and whose teacher is
    checked against the model's. Without an index the model's recorded teacher embeds the
    names. ``hop_s`` defaults to the window (no overlap). A recording that cannot be read
    gives a result with ``error`` set instead of stopping the batch.

    Batches of ``batch_size`` model windows fill across files (a batch that one file leaves
    part-empty takes the next file's windows); the results are the same as file by file.
    ``workers`` processes decode the files ahead (:func:`~birdbridge.data.prefetch.prefetch_spans`;
    0: in this process). ``runtime`` / ``precision``: see :func:`load_detect_model`.
    ``embedded``: the windows' vectors computed already (``--engine ray``:
    :class:`~birdbridge.retrieval.ray_engine.WindowVectors`), scored instead of embedding here.
    """
    from ..encoders.species_text import recipe_species_text
    from .index import ImageIndex
    from .search import index_teacher, model_teacher

    if k < 1:
        raise ConfigError(f"k (--top-k) must be at least 1, got {k}")
    model = load_detect_model(model, device, runtime=runtime, precision=precision)
    teacher_id, fingerprint = model_teacher(model)
    if index is not None:
        index = index if isinstance(index, ImageIndex) else ImageIndex.open(index)
        model = load_search_model(model, index, allow_teacher_mismatch=allow_teacher_mismatch)
        teacher_id, fingerprint = index_teacher(index)  # checked against the model's by load_search_model
        if species is None:
            species = index.species()
            if not species:
                raise ConfigError(f"the index {index.root} has no species names to detect: pass --species-list FILE "
                                  "(a CSV with a scientific_name column)")
    elif not teacher_id:
        raise ConfigError(f"model {model.name!r} does not record its teacher, whose text tower must embed the species "
                          "names: pass --index DIR of an index built with that teacher")
    species = list(species or [])
    if not species:
        raise ConfigError("no species to detect: pass --species-list FILE or --index DIR")
    text = recipe_species_text(model_prompt_recipe(model), species, teacher_id, cache_dir, fingerprint)  # [S, D]
    window_s = window_s or model.window_samples / model.sample_rate
    hop_s = hop_s or window_s
    from .confidence import model_logit_scale

    scorer = _Scorer(species, text, k, min_score, model_logit_scale(model)[0], min_confidence)
    results = [DetectionResult(path=str(p)) for p in paths]
    if embedded is not None:
        return _score_embedded(embedded, results, scorer, progress)
    file_of: deque = deque()  # the file of each window handed to the model, in order
    finished = 0  # results[:finished] are complete (and reported to progress)

    def windows():
        for i, spans in prefetch_spans(paths, workers, **window_span_args(model, window_s, hop_s)):
            try:
                for span in spans:
                    file_of.append(i)
                    yield span
            except BadInputError as err:
                results[i] = DetectionResult(path=str(paths[i]), error=err.reason, error_detail=err.detail)

    def finish(upto: int) -> None:
        nonlocal finished
        for r in results[finished:upto]:
            r.duration_s = r.windows[-1].end_s if r.windows else 0.0
            if progress:
                progress(1)
        finished = max(finished, upto)

    for window, vec in iter_window_vectors(model, windows(), batch_size):
        i = file_of.popleft()
        finish(i)
        res = results[i]
        if res.error is None:  # the windows of a file that failed later are dropped with it
            scorer.add(res, Window(len(res.windows), window.start_s, window.end_s), vec)
    finish(len(results))
    return results


def _score_embedded(embedded, results: list[DetectionResult], scorer: "_Scorer", progress) -> list[DetectionResult]:
    """Each recording's precomputed windows scored (the same rows as embedding them here)."""
    for res in results:
        try:
            for start_s, end_s, vec in embedded.windows(res.path):
                scorer.add(res, Window(len(res.windows), start_s, end_s), vec)
        except BadInputError as err:
            res.error, res.error_detail = err.reason, err.detail
        res.duration_s = res.windows[-1].end_s if res.windows else 0.0
        if progress:
            progress(1)
    return results


class _Scorer:
    """Top-``k`` species of a window vector, as detection rows."""

    def __init__(self, species, text: np.ndarray, k: int, min_score: float | None, scale: float,
                 min_confidence: float | None = None):
        self.species, self.text, self.top, self.min_score = species, text, min(k, len(species)), min_score
        self.scale, self.min_confidence = scale, min_confidence

    def add(self, res: DetectionResult, window: Window, vec: np.ndarray) -> None:
        res.windows.append(window)
        from .confidence import softmax

        scores = self.text @ vec
        conf = softmax(scores, self.scale)  # over every species of the list, not just the top k
        order = np.lexsort((np.arange(len(scores)), -scores))[: self.top]  # ties: list order, deterministic
        for rank, i in enumerate(order, start=1):
            if self.min_score is not None and scores[i] < self.min_score:
                break
            if self.min_confidence is not None and conf[i] < self.min_confidence:
                break  # rows come best first: the rest are lower still
            sp = self.species[i]
            res.detections.append(Detection(start_s=window.start_s, end_s=window.end_s, rank=rank,
                                            score=round(float(scores[i]), 5), confidence=round(float(conf[i]), 5),
                                            species_id=sp.id,
                                            scientific_name=sp.scientific_name, common_name=sp.common_name))


__all__ = ["detect_audio", "load_detect_model", "Detection", "DetectionResult", "Window"]
