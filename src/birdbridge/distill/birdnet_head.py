"""Distil a *frozen* encoder (BirdNET) onto the teacher's text space: train only a head.

BirdNET's 1024-d embeddings are computed once (``birdbridge embed-audio --model birdnet``)
and cached; the encoder is never updated, so the whole student is the small
:class:`~birdbridge.encoders.heads.ProjectionHead`. The objective is the same species-aware
InfoNCE as full distillation (:class:`~birdbridge.distill.loss.DistillContrastiveLoss`
against each clip's frozen species text embedding, learnable temperature), run as a
plain torch loop: there is no encoder to shard or checkpoint, so Lightning would add
nothing but start-up time.

BirdNET's model and labels are CC BY-NC-SA 4.0 (non-commercial); a head trained on its
embeddings is a derivative and carries the same terms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..encoders.heads import HeadSpec, ProjectionHead
from ..errors import ConfigError
from .loss import DistillContrastiveLoss, LogitScale


@dataclass
class HeadTrainConfig:
    kind: str = "linear"  # "linear" | "mlp"
    hidden_dim: int = 1024
    dropout: float = 0.0
    epochs: int = 50
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.01
    init_temperature: float = 0.07
    learn_temperature: bool = True
    positives: str = "multi"
    seed: int = 0


def _as_tensor(x, dtype) -> torch.Tensor:
    return x.detach().to(dtype) if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x), dtype=dtype)


def train_head_on_embeddings(
    embeddings,
    labels,
    text_table,
    cfg: HeadTrainConfig | None = None,
    *,
    history: list[float] | None = None,
) -> ProjectionHead:
    """Train a head mapping ``embeddings[N, d_in]`` onto ``text_table[labels]`` (teacher space).

    ``labels[N]`` are integer species indices into ``text_table[S, d_out]`` (the cached
    teacher text embeddings, one row per species). Inputs are L2-normalised first (so raw
    BirdNET vectors and unit rows from ``embed-audio`` train alike). If ``history`` is a
    list, the mean loss of each epoch is appended to it. Returns the head in eval mode;
    apply it with :func:`apply_head`.
    """
    cfg = cfg or HeadTrainConfig()
    x = F.normalize(_as_tensor(embeddings, torch.float32), dim=-1)
    y = _as_tensor(labels, torch.long)
    text = F.normalize(_as_tensor(text_table, torch.float32), dim=-1)
    if x.ndim != 2 or y.shape != x.shape[:1]:
        raise ConfigError(f"need embeddings [N, d] and labels [N]; got {tuple(x.shape)} and {tuple(y.shape)}")
    if text.ndim != 2 or len(x) == 0:
        raise ConfigError(f"need a text table [S, D] and at least one embedding; got {tuple(text.shape)}, N={len(x)}")
    if int(y.min()) < 0 or int(y.max()) >= len(text):
        raise ConfigError(f"labels must index the {len(text)} text rows; got range {int(y.min())}..{int(y.max())}")

    gen = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)  # head initialisation
    head = ProjectionHead(HeadSpec(kind=cfg.kind, in_dim=x.shape[1], out_dim=text.shape[1],
                                   hidden_dim=cfg.hidden_dim, dropout=cfg.dropout))
    scale = LogitScale(cfg.init_temperature, learnable=cfg.learn_temperature)
    loss_fn = DistillContrastiveLoss(cfg.positives)
    # No weight decay on the 0-d temperature (as open_clip excludes ndim < 2 parameters).
    opt = torch.optim.AdamW([{"params": head.parameters(), "weight_decay": cfg.weight_decay},
                             {"params": scale.parameters(), "weight_decay": 0.0}], lr=cfg.lr)
    head.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(x), generator=gen)
        total, steps = 0.0, 0
        for i in range(0, len(x), cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            if len(idx) < 2:  # a contrastive batch of one has no negatives
                continue
            audio = F.normalize(head(x[idx]), dim=-1)
            loss = loss_fn(audio, text[y[idx]], y[idx], scale())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            scale.clamp_()
            total, steps = total + float(loss.detach()), steps + 1
        if history is not None and steps:
            history.append(total / steps)
    return head.eval()


@torch.no_grad()
def apply_head(head: ProjectionHead, embeddings) -> np.ndarray:
    """Teacher-space unit rows (float32) for frozen-encoder embeddings."""
    x = F.normalize(_as_tensor(embeddings, torch.float32), dim=-1)
    return F.normalize(head(x), dim=-1).numpy().astype(np.float32)
