"""The distilled embedding and CLAP's zero-shot combination, weighted by CLAP's confidence.

A distilled model is good on the species it heard in distillation; CLAP's zero-shot
combination (its softmax over species captions weighting the teacher's species texts) is
good on every species whose *name* CLAP learned, heard in distillation or not. This module
mixes the two per clip, from one forward pass of the student's CLAP tower:

    p  = softmax(s · a_clap @ C̃ᵀ)                  CLAP's posterior over the species list
    gate "confidence":
      z  = normalise(p @ T)                         the zero-shot combination (teacher space)
      w  = confidence(p) ** power                   max posterior or 1 - normalised entropy
    gate "heard":
      u  = p ⊙ (1 - heard)                          posterior mass of the species distillation never heard
      z  = normalise(u @ T),  w = (Σ u) ** power
    out = normalise((1 - w) · d + w · z)            d: the distilled embedding (unit)

The "heard" gate is a mixture of experts (Jacobs et al. 1991) whose gate is CLAP's own
posterior: the distilled vector answers for the species it was trained on, CLAP's
zero-shot combination for the rest of the list.

``C̃`` are the CLAP text embeddings and ``T`` the teacher text embeddings of one species list,
``s`` CLAP's own logit scale. Weighting an ensemble member by its confidence is the oldest
form of calibrated ensembling (e.g. Jacobs et al. 1991's mixtures of experts with a gating
function; here the gate is the zero-shot expert's own calibrated-by-pretraining posterior).
The tensors live in the checkpoint (``combination.*`` in model.safetensors, the spec in
config.json), so search, detect and serve use the combination with no flags.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .species_text import ClapTextRecipe, clap_species_text
from .text import ClapTextEncoder

CONFIDENCES = ("max_prob", "entropy")
GATES = ("confidence", "heard")


@dataclass
class CombinationSpec:
    """How the two embeddings are mixed (config key ``combination``)."""

    # confidence: w = confidence(p) ** power, z over every species of the list;
    # heard: w = CLAP's posterior mass on the species distillation never heard, z over those
    # species only (the distilled vector is the expert for the heard ones, CLAP's for the rest)
    gate: str = "confidence"
    confidence: str = "max_prob"  # max_prob: (p_max - 1/S) / (1 - 1/S); entropy: 1 - H(p) / log S
    power: float = 1.0  # weight = confidence ** power (> 1 trusts CLAP only when it is very sure)
    # where CLAP's posterior comes from: the distilled model's own tower (one pass) or a frozen
    # copy of the tower as loaded, carried in the checkpoint (two passes; `birdbridge train` only:
    # in `birdbridge eval` the method decides, distilled_combined vs distilled_ensemble)
    tower: str = "student"
    # the teacher's species texts that CLAP's posterior weights (as the zero_shot_combination baseline's `text`)
    teacher_prompt_type: str = "taxonomic_common"
    teacher_template_set: str = "single"

    def validate(self) -> None:
        if self.gate not in GATES:
            raise ConfigError(f"config key 'combination.gate' must be one of {GATES}, got {self.gate!r}")
        if self.tower not in ("student", "original"):
            raise ConfigError(f"config key 'combination.tower' must be 'student' or 'original', got {self.tower!r}")
        if self.confidence not in CONFIDENCES:
            raise ConfigError(f"config key 'combination.confidence' must be one of {CONFIDENCES}, got {self.confidence!r}")
        if not self.power > 0:
            raise ConfigError(f"config key 'combination.power' must be > 0, got {self.power}")

    def to_dict(self) -> dict:
        return asdict(self)


def confidence(posterior: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-row confidence in [0, 1] of a posterior over ``S`` classes (0: uniform, 1: one-hot)."""
    s = posterior.shape[1]
    if s < 2:
        return torch.ones(posterior.shape[0], dtype=posterior.dtype, device=posterior.device)
    if kind == "max_prob":
        return ((posterior.max(dim=1).values - 1.0 / s) / (1.0 - 1.0 / s)).clamp(0.0, 1.0)
    if kind == "entropy":
        h = -(posterior * posterior.clamp_min(1e-12).log()).sum(dim=1)
        return (1.0 - h / math.log(s)).clamp(0.0, 1.0)
    raise ValueError(f"unknown confidence {kind!r}; expected one of {CONFIDENCES}")


class ClapTower(nn.Module):
    """A frozen CLAP audio tower (audio model + projection) giving unit CLAP embeddings, always in eval mode."""

    def __init__(self, audio_model: nn.Module, audio_projection: nn.Module):
        super().__init__()
        self.audio_model = audio_model.requires_grad_(False).eval()
        self.audio_projection = audio_projection.requires_grad_(False).eval()

    @classmethod
    def copy_of(cls, model) -> "ClapTower":
        import copy

        return cls(copy.deepcopy(model.audio_model), copy.deepcopy(model.audio_projection))

    def train(self, mode: bool = True) -> "ClapTower":
        return super().train(False)  # never: its BatchNorm statistics and dropout stay as loaded

    @torch.no_grad()
    def forward(self, input_features: torch.Tensor) -> torch.Tensor:
        pooled = self.audio_model(input_features=input_features).pooler_output
        return F.normalize(self.audio_projection(pooled), dim=-1)


class ZeroShotCombination(nn.Module):
    """The combination's parameters: species texts in both spaces, CLAP's scale, the spec."""

    def __init__(self, clap_text: torch.Tensor, teacher_text: torch.Tensor, logit_scale: float,
                 spec: CombinationSpec | dict | None = None, species: Sequence[dict] = (),
                 heard: torch.Tensor | None = None):
        super().__init__()
        if clap_text.shape[0] != teacher_text.shape[0]:
            raise ValueError(f"{clap_text.shape[0]} CLAP species texts but {teacher_text.shape[0]} teacher species texts")
        self.spec = spec if isinstance(spec, CombinationSpec) else CombinationSpec(**(spec or {}))
        self.spec.validate()
        self.register_buffer("clap_text", F.normalize(clap_text.float(), dim=-1))
        self.register_buffer("teacher_text", F.normalize(teacher_text.float(), dim=-1))
        # 1 for the rows whose species the distilled model heard in distillation (gate "heard")
        heard = torch.zeros(clap_text.shape[0]) if heard is None else torch.as_tensor(heard, dtype=torch.float32)
        if heard.shape != (clap_text.shape[0],):
            raise ValueError(f"heard must have one entry per species ({clap_text.shape[0]}), got {tuple(heard.shape)}")
        self.register_buffer("heard", heard.float())
        # optional: CLAP's posterior from its own tower as loaded (an output-space ensemble of the
        # zero-shot and the fine-tuned model, Wortsman et al. CVPR 2022), at the price of a second pass
        self.tower: ClapTower | None = None
        self.logit_scale = float(logit_scale)
        self.species = [dict(s) for s in species]  # id + names, in row order (recorded in config.json)

    def posterior(self, clap_audio: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logit_scale * F.normalize(clap_audio, dim=-1) @ self.clap_text.T, dim=1)

    def _weight_and_zero_shot(self, p: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.spec.gate == "heard":
            p = p * (1.0 - self.heard)  # only the species distillation never heard
            w = p.sum(dim=1)
        else:
            w = confidence(p, self.spec.confidence)
        return w ** self.spec.power, F.normalize(p @ self.teacher_text, dim=-1)

    def weight(self, clap_audio: torch.Tensor) -> torch.Tensor:
        """How much of the zero-shot combination each row takes, in [0, 1]."""
        return self._weight_and_zero_shot(self.posterior(clap_audio))[0]

    def forward(self, clap_audio: torch.Tensor, distilled: torch.Tensor) -> torch.Tensor:
        w, zero_shot = self._weight_and_zero_shot(self.posterior(clap_audio))
        w = w.unsqueeze(1).to(distilled.dtype)
        return F.normalize((1.0 - w) * F.normalize(distilled, dim=-1) + w * zero_shot, dim=-1)

    def config(self) -> dict:
        return {**self.spec.to_dict(), "tower": "original" if self.tower is not None else "student",
                "logit_scale": self.logit_scale, "n_species": int(self.clap_text.shape[0]),
                "n_heard": int(self.heard.sum().item()),
                "clap_dim": int(self.clap_text.shape[1]), "teacher_dim": int(self.teacher_text.shape[1]),
                "species": self.species}

    @classmethod
    def empty(cls, cfg: dict) -> "ZeroShotCombination":
        """Shaped from a checkpoint's config, to receive its saved tensors."""
        spec = {k: cfg[k] for k in CombinationSpec.__dataclass_fields__ if k in cfg}
        return cls(torch.zeros(cfg["n_species"], cfg["clap_dim"]), torch.zeros(cfg["n_species"], cfg["teacher_dim"]),
                   cfg["logit_scale"], spec, cfg.get("species") or ())

    def with_tower(self, tower: "ClapTower | None") -> "ZeroShotCombination":
        self.tower = tower
        self.spec.tower = "student" if tower is None else "original"
        return self


# --------------------------------------------------------------------------- building one
def species_records(species) -> list[dict]:
    return [{"id": sp.id, "scientific_name": sp.scientific_name, "common_name": sp.common_name} for sp in species]


def heard_mask(species, heard_species) -> torch.Tensor:
    """1 where a species of ``species`` is one of ``heard_species`` (same id or same scientific name)."""
    ids = {sp.id for sp in heard_species}
    names = {sp.scientific_name.strip().lower() for sp in heard_species if sp.scientific_name}
    return torch.tensor([float(sp.id in ids or (sp.scientific_name or "").strip().lower() in names) for sp in species])


def build_combination(student_id: str, species, teacher_text: np.ndarray | torch.Tensor, spec: CombinationSpec,
                      recipe: ClapTextRecipe, *, heard_species=(), clap_text_encoder: ClapTextEncoder | None = None,
                      progress: bool = False) -> ZeroShotCombination:
    """The combination for ``species`` from the student's own CLAP text tower (``student_id``);
    ``heard_species``: those the distilled model was trained on."""
    enc = clap_text_encoder if clap_text_encoder is not None else ClapTextEncoder.load(student_id)
    ct = clap_species_text(enc, species, recipe.templates, recipe.prompt_types, progress)
    return ZeroShotCombination(torch.from_numpy(ct), torch.as_tensor(np.asarray(teacher_text, np.float32)),
                               enc.logit_scale, spec, species_records(species),
                               heard=heard_mask(species, heard_species))
