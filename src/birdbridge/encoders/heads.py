"""The new projection head that maps the student's audio embedding into the teacher's space.

Three kinds (``head:`` in the train config):

* ``linear`` — ``W·c + b`` (the paper's); randomly initialised, or (``head_init: text_map``) the
  ridge map from CLAP text space to teacher text space fitted on species texts alone
  (:mod:`.text_map`), so distillation starts from a zero-shot model (LP-FT, Kumar et al. 2022).
* ``mlp`` — two layers with a GELU.
* ``zero_shot`` — CLAP's zero-shot classifier composed with the teacher's species texts:
  ``softmax(s · normalise(c) @ normalise(C̃)ᵀ) @ T`` over a species list, ``C̃`` the CLAP caption
  rows of the species (trainable, initialised from CLAP's text tower: the classifier head of
  WiSE-FT, Wortsman et al. CVPR 2022, which starts from the zero-shot text weights), ``s`` CLAP's
  own logit scale (trainable, kept as its log), ``T`` the teacher's species text rows (frozen:
  the space the paper distils onto). At initialisation it computes exactly the
  ``zero_shot_combination`` baseline over that list. The species list (ids and names) is part of
  the spec, so a checkpoint says what its head chooses among.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

HEAD_KINDS = ("linear", "mlp", "zero_shot")


@dataclass
class HeadSpec:
    kind: str = "linear"  # one of HEAD_KINDS
    in_dim: int = 512
    out_dim: int = 768
    hidden_dim: int = 1024
    dropout: float = 0.0
    # zero_shot: the species its rows stand for, in row order ({id, scientific_name, common_name})
    species: list = field(default_factory=list)

    def to_dict(self) -> dict:
        d = asdict(self)
        if not d["species"]:  # only a zero_shot head has a species list; other heads' configs stay as they were
            d.pop("species")
        return d


class ZeroShotHead(nn.Module):
    """``softmax(s · ĉ @ Ĉᵀ) @ T``: CLAP's posterior over the species list weighting the teacher's rows."""

    def __init__(self, in_dim: int, out_dim: int, n_species: int):
        super().__init__()
        self.clap_text = nn.Parameter(torch.zeros(n_species, in_dim))
        self.log_scale = nn.Parameter(torch.zeros(()))
        self.register_buffer("teacher_text", torch.zeros(n_species, out_dim))  # frozen; saved with the model
        # 1 for the species distillation heard (their rows learn from the clips); the others' rows can be
        # held where text put them (freeze_unheard): they would only ever be pushed away as negatives
        self.register_buffer("heard", torch.ones(n_species))

    def freeze_unheard(self) -> None:
        """Zero the gradient of the rows of species distillation never heard (a hook: not saved, set at every start)."""
        self.clap_text.register_hook(lambda g: g * self.heard.to(g.dtype).unsqueeze(1))

    @torch.no_grad()
    def init_from_text(self, clap_text: torch.Tensor, teacher_text: torch.Tensor, logit_scale: float) -> None:
        if clap_text.shape != self.clap_text.shape or teacher_text.shape != self.teacher_text.shape:
            raise ValueError(f"zero-shot head of {tuple(self.clap_text.shape)} / {tuple(self.teacher_text.shape)} "
                             f"got {tuple(clap_text.shape)} / {tuple(teacher_text.shape)}")
        self.clap_text.copy_(F.normalize(clap_text.float(), dim=-1))
        self.teacher_text.copy_(F.normalize(teacher_text.float(), dim=-1))
        self.log_scale.fill_(math.log(float(logit_scale)))

    def unheard_mass(self, x: torch.Tensor) -> torch.Tensor:
        """The posterior mass on the species distillation never heard, per row."""
        return self.posterior(x) @ (1.0 - self.heard.to(x.dtype))

    def unheard_top(self, x: torch.Tensor) -> torch.Tensor:
        """The largest posterior of one species distillation never heard, per row (0 when all were heard)."""
        return (self.posterior(x) * (1.0 - self.heard.to(x.dtype))).max(dim=-1).values

    def posterior(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.log_scale.exp() * F.normalize(x, dim=-1) @ F.normalize(self.clap_text, dim=-1).T
        return torch.softmax(logits, dim=-1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.posterior(x) @ self.teacher_text.to(x.dtype)


class ProjectionHead(nn.Module):
    def __init__(self, spec: HeadSpec):
        super().__init__()
        self.spec = spec
        if spec.kind == "linear":
            self.net = nn.Linear(spec.in_dim, spec.out_dim)
        elif spec.kind == "mlp":
            self.net = nn.Sequential(
                nn.Linear(spec.in_dim, spec.hidden_dim),
                nn.GELU(),
                nn.Dropout(spec.dropout),
                nn.Linear(spec.hidden_dim, spec.out_dim),
            )
        elif spec.kind == "zero_shot":
            if not spec.species:
                raise ValueError("a zero_shot head needs its species list (HeadSpec.species)")
            self.net = ZeroShotHead(spec.in_dim, spec.out_dim, len(spec.species))
        else:
            raise ValueError(f"unknown head kind {spec.kind!r}; expected one of {HEAD_KINDS}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
