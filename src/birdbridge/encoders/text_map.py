"""A linear map from a CLAP's text space to the teacher's text space, fitted on species texts alone.

Two users: the ``text_mapping`` baseline (evaluate/baselines.py: the map applied to CLAP *audio*
embeddings) and distillation's ``head_init: text_map`` (distill/start.py: the head starts as this
map, so step 0 is a zero-shot model in the teacher's space, LP-FT's "good head first"). Its home is
here, below both, so that distill/ does not import evaluate/.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..taxonomy import Species, prompt_body


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


# --------------------------------------------------------------------------- text mapping
@dataclass
class LinearMap:
    """``y = x @ weight + bias``; :meth:`apply` also renormalises (embeddings are unit rows)."""

    weight: np.ndarray  # [d_in, d_out]
    bias: np.ndarray  # [d_out]
    alpha: float = 0.0
    n_pairs: int = 0

    def raw(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, np.float64) @ self.weight + self.bias

    def apply(self, x: np.ndarray) -> np.ndarray:
        return unit_rows(self.raw(x))


def fit_ridge(x: np.ndarray, y: np.ndarray, alpha: float = 1e-2) -> LinearMap:
    """Ridge regression with an unpenalised intercept: ``argmin |XcW - Yc|² + alpha|W|²``.

    Closed form on centred data, solved in float64; ``alpha = 0`` is ordinary least
    squares (via ``lstsq``, so an underdetermined fit still returns the minimum-norm map).
    """
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y):
        raise ValueError(f"x and y must be 2-D with the same number of rows, got {x.shape} and {y.shape}")
    if len(x) < 2:
        raise ValueError("need at least two pairs to fit a map")
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    mx, my = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - mx, y - my
    if alpha == 0:
        w = np.linalg.lstsq(xc, yc, rcond=None)[0]
    else:
        w = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ yc)
    return LinearMap(w, my - mx @ w, float(alpha), len(x))


def text_mapping_pairs(species: Sequence[Species], prompt_types: Sequence[str], templates: Sequence[str]) -> list[tuple[str, int, str]]:
    """``(CLAP caption, species index, prompt type)`` for every template × prompt type × species."""
    return [(t.format(prompt_body(sp, pt)), i, pt) for i, sp in enumerate(species) for pt in prompt_types for t in templates]


def fit_text_mapping(clap_text_encoder, teacher_rows: Mapping[str, np.ndarray], species: Sequence[Species], *,
                     templates: Sequence[str], alpha: float = 1e-2, progress: bool = False) -> LinearMap:
    """Fit CLAP text space → teacher text space on CLAP captions and the teacher's prompts.

    ``clap_text_encoder``: the student's CLAP text tower (:class:`~birdbridge.encoders.text.ClapTextEncoder`);
    ``teacher_rows[prompt type]``: the teacher's ``[len(species), D]`` species embeddings of
    that prompt type (its prompts, template-averaged: the text cache's rows). One pair per
    caption: ``x`` the CLAP caption ``template.format(name)``, ``y`` the teacher's row for the
    same species and prompt type.
    """
    if not templates or not teacher_rows:
        raise ValueError("need at least one CLAP template and one prompt type")
    pairs = text_mapping_pairs(species, list(teacher_rows), templates)
    x = clap_text_encoder.encode_text([c for c, _, _ in pairs], progress=progress).numpy()
    y = np.stack([np.asarray(teacher_rows[pt][i], np.float32) for _, i, pt in pairs])
    return fit_ridge(x, y, alpha)
