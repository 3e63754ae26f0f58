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


RUNTIMES = ("torch", "onnx")
PRECISIONS = ("auto", "fp32", "bf16")


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU runs bf16 matrix products natively (AMX tiles): bf16 weights are then ~3x faster."""
    try:
        return bool(torch.cpu._is_amx_tile_supported())
    except AttributeError:  # an older torch without the probe: assume not
        return False


def resolve_precision(precision: str, device: str = "cpu") -> str:
    """``auto`` -> ``bf16`` on a CPU with AMX, else ``fp32`` (CUDA keeps fp32 weights)."""
    from ..errors import ConfigError

    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    if precision == "auto":
        return "bf16" if str(device).startswith("cpu") and cpu_has_fast_bf16() else "fp32"
    return precision


class StudentEmbedder:
    """A distilled checkpoint (teacher space) or a plain CLAP (``clap_space=True``).

    ``precision="bf16"``: the tower, projection, head (and combination) hold bf16 weights; the
    mel front end stays fp32 and its features are cast, and the rows come back float32.
    """

    runtime = "torch"

    def __init__(self, model, name: str, clap_space: bool = False, device: str = "cpu", precision: str = "fp32"):
        self.model = model.eval().to(device)
        self.precision = resolve_precision(precision, device)
        self.dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        if self.dtype != torch.float32:
            for child_name, child in self.model.named_children():
                if child_name != "frontend":  # the front end's STFT and mel bank stay fp32
                    child.to(self.dtype)
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
        if self.dtype == torch.float32:
            fn = self.model.clap_embed if self.clap_space else self.model
            return fn(x, crop="start").float().cpu().numpy()
        feats = self.model.features(x, crop="start").to(self.dtype)
        fn = self.model.clap_embed_features if self.clap_space else self.model.embed_features
        # unit rows in float32: the bf16 normalisation leaves norms ~1e-3 off
        return torch.nn.functional.normalize(fn(feats).float(), dim=-1).cpu().numpy()


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


def load_audio_embedder(model_id: str, device: str = "cpu", *, runtime: str = "torch",
                        precision: str = "fp32") -> AudioEmbedder:
    """``model_id`` through the one resolver (:func:`.hub.split_model_id`); ``device`` must exist
    (check it with :func:`birdbridge.devices.resolve_device` first). BirdNET runs on the CPU.

    ``runtime="onnx"`` (distilled checkpoints, CPU): the tower on ONNX Runtime, int8
    (:mod:`.onnx_runtime`); ``precision`` (torch runtime): ``fp32``, ``bf16`` or ``auto``
    (:func:`resolve_precision`)."""
    from ..errors import ConfigError
    from .student import AudioStudent, DistilledModel, is_distilled_checkpoint

    if runtime not in RUNTIMES:
        raise ConfigError(f"runtime must be one of {', '.join(RUNTIMES)}, not {runtime!r}")
    if runtime == "onnx" and not str(device).startswith("cpu"):
        raise ConfigError(f"--runtime onnx runs on the CPU; use --runtime torch on {device}")
    resolve_precision(precision, device)  # a bad value fails before anything loads
    if runtime == "onnx":
        from .onnx_runtime import import_onnxruntime

        import_onnxruntime()  # a missing runtime fails before the weights load

    def distilled(model, name):
        if runtime == "onnx":
            from .onnx_runtime import OnnxEmbedder

            return OnnxEmbedder(model, name)
        return StudentEmbedder(model, name, device=device, precision=precision)

    m = hub.parse(model_id)  # read once; the loaders below take the parsed id
    model_id, ref = m.given, m.ref
    if m.kind == "builtin":
        return BirdNetEmbedder()
    if m.kind == "local":
        hub.local_folder(m)  # a missing folder fails here, with close matches
        if is_distilled_checkpoint(ref):
            return distilled(DistilledModel.from_pretrained(m), model_id)
    if m.kind == "hub":
        hub.prepare_hub(model_id, ref, "config.json")
        if hub.is_cached(ref, "config.json"):
            import json

            from huggingface_hub import try_to_load_from_cache

            cfg = json.loads(open(try_to_load_from_cache(ref, "config.json")).read())
            if cfg.get("model_type") == "birdbridge-distilled-audio":
                return distilled(DistilledModel.from_pretrained(ref), model_id)
    if runtime == "onnx":
        raise ConfigError(f"{model_id}: --runtime onnx runs distilled birdbridge checkpoints only")
    from .clap import load_clap
    from .heads import HeadSpec

    clap, fe = load_clap(m)
    # The head is unused in CLAP space; a 1-unit stub keeps AudioStudent's one code path.
    student = AudioStudent.from_clap(clap, fe, HeadSpec(out_dim=1))
    return StudentEmbedder(student, model_id, clap_space=True, device=device, precision=precision)
