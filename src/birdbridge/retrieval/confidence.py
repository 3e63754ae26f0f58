"""Confidences a field user can read: cosines turned into a softmax over the species in question.

A score is a cosine, and cosines between a recording and species text sit in a narrow band
(often negative at the top), so a bare score says little. Distillation trained the student
with a contrastive loss whose logits were ``scale · cosine`` (``scale = 1/temperature``,
learned); its softmax over the species is exactly what the model was trained to make a
probability. So ``confidence = softmax(scale · cosines)`` over the species scored, at the
scale the checkpoint records (``logit_scale`` in its ``config.json``, written at the end of
training). A checkpoint trained before it was recorded falls back to
:data:`DEFAULT_LOGIT_SCALE`, the scale every distillation starts from (1 / 0.07, the
``init_temperature`` default); the CLI says so once (:func:`fallback_note`).

What the softmax runs over (docs/SEARCH_SCHEMA.md):

- ``detect``: every species of the list (or the index) scored in that window;
- ``search`` per-window rows and hits: the species of the index, each scored by its best photo
  (per window, or aggregated over the recording for hits) among the photos FAISS returned as
  candidates (species further away have lower scores still, so their share is small); a photo
  without a species counts as a species of its own;
- ``search`` species guess: every species of the list (or the index), by the text cosine.
"""

from __future__ import annotations

from typing import Hashable, Sequence

import numpy as np

DEFAULT_LOGIT_SCALE = 1.0 / 0.07


def model_logit_scale(model) -> tuple[float, bool]:
    """``(scale, recorded)``: the checkpoint's learned logit scale, or the default and False."""
    meta = getattr(getattr(model, "model", None), "meta", None) or {}
    value = meta.get("logit_scale")
    if isinstance(value, (int, float)) and value > 0:
        return float(value), True
    return DEFAULT_LOGIT_SCALE, False


def fallback_note(model) -> str | None:
    """One line for a checkpoint that records no logit scale (None when it does)."""
    if model_logit_scale(model)[1]:
        return None
    return (f"note: {getattr(model, 'name', 'the model')} records no learned temperature (trained before it was "
            f"saved): confidences use the starting scale {DEFAULT_LOGIT_SCALE:.2f} (1/0.07)")


def softmax(scores: np.ndarray, scale: float) -> np.ndarray:
    """Softmax of ``scale · scores`` along the last axis (float64, stable)."""
    z = scale * np.asarray(scores, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def by_key(keys: Sequence[Hashable], scores: Sequence[float], scale: float) -> dict:
    """Each key's confidence: the softmax over keys of each key's best score (keys: species)."""
    best: dict = {}
    for key, s in zip(keys, scores):
        if key not in best or s > best[key]:
            best[key] = float(s)
    if not best:
        return {}
    names = list(best)
    return dict(zip(names, (float(p) for p in softmax(np.array([best[k] for k in names]), scale))))


__all__ = ["DEFAULT_LOGIT_SCALE", "model_logit_scale", "fallback_note", "softmax", "by_key"]
