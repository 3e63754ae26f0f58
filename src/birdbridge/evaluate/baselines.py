"""The paper's baselines: other ways to put CLAP audio into the teacher's space.

All three return teacher-space unit rows, so they are scored by the same protocols as
the distilled model (the text map itself lives in :mod:`birdbridge.encoders.text_map`):

* ``random_projection`` — the same student with its head left at initialisation
  (:func:`random_projection_student`, the seed distillation starts from): what the
  architecture gives before any training.
* ``text_mapping`` — a linear map from the student's own CLAP *text* space to the
  teacher's text space, fitted by ridge least squares on species texts only, then
  applied to CLAP *audio* embeddings. It bets that CLAP's audio and text spaces are
  aligned well enough for a text-fitted map to carry audio too. Each pair is a CLAP-style
  caption (the CLAP templates the zero-shot combination uses, e.g. "the song of a {}")
  and the teacher's embedding of the same species in the same prompt type (its BioCLIP
  prompt), for the prompt types distillation trains on: each tower reads the text it was
  trained on, the strongest honest form of the baseline.
* ``zero_shot_combination`` — CLAP's own zero-shot posterior over species prompts
  (softmax with CLAP's logit scale) weights the teacher's species text embeddings.
  No training at all; it is only as good as CLAP's zero-shot classification.
"""

from __future__ import annotations

import numpy as np

from ..encoders.text_map import LinearMap, fit_ridge, fit_text_mapping, text_mapping_pairs, unit_rows  # noqa: F401 - re-exported


# --------------------------------------------------------------------------- zero-shot combination
def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.asarray(logits, np.float64)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def zero_shot_combination(clap_audio: np.ndarray, clap_species_text: np.ndarray, teacher_species_text: np.ndarray,
                          logit_scale: float) -> np.ndarray:
    """``normalise(softmax(scale · audio @ clap_textᵀ) @ teacher_text)``: [N, D_teacher] unit rows."""
    a, ct, tt = (np.asarray(v, np.float64) for v in (clap_audio, clap_species_text, teacher_species_text))
    if ct.shape[0] != tt.shape[0]:
        raise ValueError(f"{ct.shape[0]} CLAP species texts but {tt.shape[0]} teacher species texts")
    if a.shape[1] != ct.shape[1]:
        raise ValueError(f"CLAP audio dim {a.shape[1]} != CLAP text dim {ct.shape[1]}")
    posterior = softmax(logit_scale * (unit_rows(a).astype(np.float64) @ unit_rows(ct).T.astype(np.float64)))
    return unit_rows(posterior @ tt)


# --------------------------------------------------------------------------- the student's own CLAP
def random_projection_student(train_cfg, teacher_dim: int):
    """The untrained student: CLAP audio tower + a head initialised exactly as distillation's."""
    import torch

    from ..distill.train import build_student

    torch.manual_seed(train_cfg.seed)  # distill() seeds the same way right before build_student
    return build_student(train_cfg, teacher_dim).eval()
