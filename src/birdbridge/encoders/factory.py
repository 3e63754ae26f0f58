"""One resolver for every audio model id, like open_clip's factory.

``load_audio_embedder(model_id)`` accepts a distilled birdbridge checkpoint (directory
or hub id: teacher-space vectors), any HF CLAP id or directory (its own audio space),
or ``birdnet`` (BirdNET V2.4's 1024-d embedding). Callers never branch on the kind.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from . import hub


class AudioEmbedder(Protocol):
    name: str
    space: str  # "teacher" | "clap" | "birdnet"
    sample_rate: int
    window_samples: int
    dim: int

    def embed_windows(self, waves: list[np.ndarray]) -> np.ndarray:
        """Unit rows, one per window (each ``window_samples`` long or shorter)."""


class StudentEmbedder:
    """A distilled checkpoint (teacher space) or a plain CLAP (``clap_space=True``)."""

    def __init__(self, model, name: str, clap_space: bool = False, device: str = "cpu"):
        self.model = model.eval().to(device)
        self.name = name
        self.clap_space = clap_space
        self.space = "clap" if clap_space else "teacher"
        self.sample_rate = model.sample_rate
        self.window_samples = model.window_samples
        self.device = device
        self.dim = model.audio_projection.linear2.out_features if clap_space else model.dim
        # Written into embedding sidecars: which student/teacher a distilled space came from.
        meta = getattr(model, "meta", {}) if not clap_space else {}
        self.provenance = {k: meta[k] for k in ("student_id", "teacher_id", "teacher_fingerprint", "prompt_recipe")
                           if meta.get(k) is not None}

    @torch.no_grad()
    def embed_windows(self, waves: list[np.ndarray]) -> np.ndarray:
        x = [torch.from_numpy(np.asarray(w, np.float32)) for w in waves]
        fn = self.model.clap_embed if self.clap_space else self.model
        return fn(x, crop="start").float().cpu().numpy()


class BirdNetEmbedder:
    def __init__(self):
        from .birdnet import BirdNetEncoder

        self.encoder = BirdNetEncoder()
        self.name = "birdnet"
        self.space = "birdnet"
        self.sample_rate = self.encoder.sample_rate
        self.window_samples = self.encoder.window_samples
        self.dim = self.encoder.dim

    def embed_windows(self, waves: list[np.ndarray]) -> np.ndarray:
        emb = np.stack([self.encoder.embed(np.asarray(w, np.float32)) for w in waves])
        return emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)


def load_audio_embedder(model_id: str, device: str = "cpu") -> AudioEmbedder:
    """``model_id`` through the one resolver (:func:`.hub.split_model_id`); ``device`` must exist
    (check it with :func:`birdbridge.devices.resolve_device` first). BirdNET runs on the CPU."""
    from .student import AudioStudent, DistilledModel, is_distilled_checkpoint

    m = hub.parse(model_id)  # read once; the loaders below take the parsed id
    model_id, ref = m.given, m.ref
    if m.kind == "builtin":
        return BirdNetEmbedder()
    if m.kind == "local":
        hub.local_folder(m)  # a missing folder fails here, with close matches
        if is_distilled_checkpoint(ref):
            return StudentEmbedder(DistilledModel.from_pretrained(m), model_id, device=device)
    if m.kind == "hub":
        hub.prepare_hub(model_id, ref, "config.json")
        if hub.is_cached(ref, "config.json"):
            import json

            from huggingface_hub import try_to_load_from_cache

            cfg = json.loads(open(try_to_load_from_cache(ref, "config.json")).read())
            if cfg.get("model_type") == "birdbridge-distilled-audio":
                return StudentEmbedder(DistilledModel.from_pretrained(ref), model_id, device=device)
    from .clap import load_clap
    from .heads import HeadSpec

    clap, fe = load_clap(m)
    # The head is unused in CLAP space; a 1-unit stub keeps AudioStudent's one code path.
    student = AudioStudent.from_clap(clap, fe, HeadSpec(out_dim=1))
    return StudentEmbedder(student, model_id, clap_space=True, device=device)
