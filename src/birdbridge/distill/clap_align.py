"""Keeping the student's CLAP audio–text alignment alive while it distils.

Fine-tuning the CLAP audio tower onto the teacher's space moves its CLAP audio embedding
away from the CLAP text tower, which distillation drops: CLAP's zero-shot ability (the
one thing that reaches species distillation never heard) fades. Two auxiliary terms on
the tower's CLAP embedding ``a_clap`` (before the head) keep it:

``clap_alignment_weight`` — :class:`ClapAlignmentLoss`
    the CLAP's own contrastive objective, continued: symmetric multi-positive InfoNCE
    between ``a_clap`` and the *frozen* CLAP text embeddings of each clip's species
    captions, at CLAP's own (frozen) logit scale.
``clap_feature_weight`` — :func:`feature_distillation_loss`
    learning without forgetting on features (Li & Hoiem, ECCV 2016, there on outputs):
    ``mean(1 - cos(a_clap, a_clap⁰))`` against a frozen copy of the tower as it was
    before distillation, which holds every species' region of the space in place, also
    of the species the CLAP text names but distillation never heard.
"""

from __future__ import annotations

import copy

import torch.nn.functional as F
from torch import Tensor, nn

from ..encoders.combination import ClapTower
from .loss import DistillContrastiveLoss


def feature_distillation_loss(current: Tensor, reference: Tensor) -> Tensor:
    """``mean_i (1 - cos(current_i, reference_i))``; ``reference`` carries no gradient."""
    return (1.0 - F.cosine_similarity(current, reference.detach(), dim=-1)).mean()


class ClapAlignmentLoss(nn.Module):
    """InfoNCE between CLAP audio embeddings and the frozen CLAP species text rows."""

    def __init__(self, clap_text: Tensor, logit_scale: float):
        super().__init__()
        # [n_species, d_clap], unit rows; non-persistent: rebuilt from the CLAP at every start
        self.register_buffer("clap_text", F.normalize(clap_text.float(), dim=-1), persistent=False)
        self.logit_scale = float(logit_scale)
        self.loss = DistillContrastiveLoss("multi")

    def forward(self, clap_audio: Tensor, labels: Tensor) -> Tensor:
        return self.loss(F.normalize(clap_audio, dim=-1), self.clap_text[labels], labels, self.logit_scale)


class FrozenClapTower(ClapTower):
    """A frozen copy of the student's CLAP tower as it was before distillation (the LwF reference)."""

    def __init__(self, student):
        super().__init__(copy.deepcopy(student.audio_model), copy.deepcopy(student.audio_projection))
