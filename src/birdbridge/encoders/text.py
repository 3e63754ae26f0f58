"""Text encoders: texts in, unit rows out, batched, on the encoder's own device.

A text encoder is any object with ``encode_text(texts, batch_size, *, progress)`` returning
``[N, D]`` float32 unit rows on the CPU, plus ``model_id`` and ``space`` (whose space the
rows are in). Two kinds exist: the teacher's text tower (:class:`~.teacher.Teacher`, the
teacher's space) and a CLAP's own text tower (:class:`ClapTextEncoder`, that CLAP's space).
What species become as text (prompts, captions, the cache) is :mod:`.species_text`.

Texts go through the tower :data:`TEXT_BATCH` at a time, so memory holds one batch of
activations plus the result however many texts there are (a soundscape label space with
its prompts runs to tens of thousands).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

TEXT_BATCH = 256  # prompts per forward pass: activations for one batch at a time, whatever the count


class TextEncoder(Protocol):
    model_id: str
    space: str  # "teacher" or "clap"

    def encode_text(self, texts: Sequence[str], batch_size: int = TEXT_BATCH, *,
                    progress: bool = False) -> torch.Tensor: ...


def text_progress(label: str, total: int, enabled: bool):
    """Progress on stderr (:mod:`birdbridge.progress`: a bar, or lines in a log) as a context manager yielding
    ``advance(n)``; silent unless ``enabled``."""
    if not enabled:
        return contextlib.nullcontext(lambda n: None)

    @contextlib.contextmanager
    def bar():
        from ..console import make_console
        from ..progress import make_progress

        with make_progress(make_console(stderr=True), transient=True) as prog:
            task = prog.add_task(label, total=total)
            yield lambda n: prog.advance(task, n)

    return bar()


def encode_in_batches(forward: Callable[[list[str]], np.ndarray], texts: Sequence[str], *, batch_size: int,
                      progress: bool, space: str) -> torch.Tensor:
    """``forward`` (one batch of texts -> its float32 unit rows as a CPU array) over ``texts``, ``batch_size`` at a time."""
    texts = list(texts)
    parts = []
    with text_progress(f"embedding {len(texts)} texts ({space})", len(texts), progress) as advance:
        for i in range(0, len(texts), batch_size):
            parts.append(forward(texts[i : i + batch_size]))
            advance(len(parts[-1]))
    # the batches are kept as numpy arrays and joined once: a tensor per batch held ~5 MB
    # more peak memory at 20k texts (tests/test_text_embedding.py measures it)
    return torch.from_numpy(np.concatenate(parts)) if parts else torch.zeros(0, 0)


def unit_rows(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)).astype(np.float32)


class ClapTextEncoder:
    """A CLAP's own text tower (``ClapModel`` + its tokenizer): captions into that CLAP's space."""

    space = "clap"

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer
        self.model_id = getattr(model, "name_or_path", "clap")

    @classmethod
    def load(cls, model_id: str) -> "ClapTextEncoder":
        """The text tower of the CLAP ``model_id`` (an id or a folder, as :func:`.clap.load_clap` takes)."""
        from .clap import load_clap, load_clap_tokenizer

        model, _ = load_clap(model_id)
        return cls(model, load_clap_tokenizer(model_id))

    @property
    def device(self) -> torch.device:
        # a CLAP moved to the GPU embeds there; fakes without parameters stay on the CPU
        param = next(iter(self.model.parameters()), None) if hasattr(self.model, "parameters") else None
        return param.device if param is not None else torch.device("cpu")

    def to(self, device) -> "ClapTextEncoder":
        self.model = self.model.to(device)
        return self

    @property
    def logit_scale(self) -> float:
        """CLAP's audio→text logit scale (``exp(logit_scale_a)``, capped at 100 as in training)."""
        with torch.no_grad():
            return float(min(100.0, self.model.logit_scale_a.exp().item()))

    def encode_text(self, texts: Sequence[str], batch_size: int = TEXT_BATCH, *, progress: bool = False) -> torch.Tensor:
        device = self.device

        def forward(chunk: list[str]) -> np.ndarray:
            with torch.no_grad():
                enc = self.tokenizer(chunk, padding=True, truncation=True, return_tensors="pt")
                enc = {k: v.to(device) for k, v in enc.items()}
                return unit_rows(self.model.get_text_features(**enc).pooler_output.float().cpu().numpy())

        return encode_in_batches(forward, texts, batch_size=batch_size, progress=progress, space=self.space)
