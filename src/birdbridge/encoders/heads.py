"""The new projection head that maps the student's audio embedding into the teacher's space."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass
class HeadSpec:
    kind: str = "linear"  # "linear" | "mlp"
    in_dim: int = 512
    out_dim: int = 768
    hidden_dim: int = 1024
    dropout: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


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
        else:
            raise ValueError(f"unknown head kind {spec.kind!r}; expected 'linear' or 'mlp'")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
