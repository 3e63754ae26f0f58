"""The student: a CLAP audio tower (with its own audio projection) plus a new head.

Only ``audio_model`` and ``audio_projection`` are taken from the ``ClapModel``: the CLAP
text tower never enters the training graph. Waveforms go through the batched torch
front end (:mod:`birdbridge.encoders.frontend`), so mel features are computed on the
model's device inside the step instead of per clip on the CPU.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .. import __version__
from ..errors import ModelNotAvailableError
from . import hub
from .heads import HeadSpec, ProjectionHead

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_TYPE = "birdbridge-distilled-audio"
# What a checkpoint records about its making; teacher_* identify the teacher (encoders/identity.py).
# train_species: ids, so an evaluation can check that a given model never heard its held-out species
# logit_scale: the contrastive loss's learned scale (1/temperature) at the end of training, the
# temperature detect/search turn cosines into confidences with; trained_on: the training data
# ({"dataset": its name, "synthetic": bool}), so a synthetic-world model says so on real files
META_KEYS = ("student_id", "teacher_id", "teacher_fingerprint", "teacher_relpath", "prompt_recipe", "training",
             "train_species", "logit_scale", "trained_on")
LEGACY_META_KEYS = ("student_id", "teacher_id", "prompt_recipe", "training")


class AudioStudent(nn.Module):
    def __init__(self, audio_model: nn.Module, audio_projection: nn.Module, head: ProjectionHead, feature_extractor):
        super().__init__()
        from .frontend import ClapFrontend

        self.audio_model = audio_model
        self.audio_projection = audio_projection
        self.head = head
        self.feature_extractor = feature_extractor
        self.frontend = ClapFrontend.from_feature_extractor(feature_extractor)

    @classmethod
    def from_clap(cls, clap_model, feature_extractor, head: HeadSpec | dict) -> "AudioStudent":
        spec = head if isinstance(head, HeadSpec) else HeadSpec(**head)
        spec.in_dim = clap_model.config.projection_dim
        return cls(clap_model.audio_model, clap_model.audio_projection, ProjectionHead(spec), feature_extractor)

    @property
    def sample_rate(self) -> int:
        return int(self.feature_extractor.sampling_rate)

    @property
    def window_samples(self) -> int:
        return int(self.feature_extractor.nb_max_samples)

    @property
    def dim(self) -> int:
        return self.head.spec.out_dim

    def clap_embed_features(self, input_features: torch.Tensor) -> torch.Tensor:
        """The CLAP audio embedding, exactly ``ClapModel.get_audio_features(...).pooler_output``."""
        pooled = self.audio_model(input_features=input_features).pooler_output
        return F.normalize(self.audio_projection(pooled), dim=-1)

    def embed_features(self, input_features: torch.Tensor) -> torch.Tensor:
        """Teacher-space embedding (unit rows) from mel features."""
        return F.normalize(self.head(self.clap_embed_features(input_features)), dim=-1)

    def features(self, waveforms: torch.Tensor, crop: str = "start", generator: torch.Generator | None = None) -> torch.Tensor:
        return self.frontend(waveforms, crop=crop, generator=generator)

    def forward(self, waveforms: torch.Tensor, crop: str = "start", generator: torch.Generator | None = None) -> torch.Tensor:
        return self.embed_features(self.features(waveforms, crop=crop, generator=generator))

    def clap_embed(self, waveforms: torch.Tensor, crop: str = "start") -> torch.Tensor:
        return self.clap_embed_features(self.features(waveforms, crop=crop))


class DistilledModel(AudioStudent):
    """A distilled student + head, saved as an HF-style directory (``config.json`` + safetensors)."""

    def __init__(self, *args, meta: dict[str, Any] | None = None, combination=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.meta = dict(meta or {})
        self.source_dir: Path | None = None  # set by from_pretrained
        # encoders.combination.ZeroShotCombination: when set, the embedding mixes the distilled
        # vector with CLAP's zero-shot combination by CLAP's confidence (one tower pass)
        self.combination = combination

    def embed_features(self, input_features: torch.Tensor) -> torch.Tensor:
        clap = self.clap_embed_features(input_features)
        distilled = F.normalize(self.head(clap), dim=-1)
        if self.combination is None:
            return distilled
        tower = self.combination.tower  # the CLAP as loaded, when the checkpoint carries it
        return self.combination(clap if tower is None else tower(input_features), distilled)

    def with_combination(self, combination) -> "DistilledModel":
        """This model (same weights) embedding through ``combination`` (None: the plain distilled vector)."""
        out = DistilledModel(self.audio_model, self.audio_projection, self.head, self.feature_extractor, meta=self.meta,
                             combination=combination)
        out.source_dir = self.source_dir
        return out.eval()

    @classmethod
    def from_student(cls, student: AudioStudent, meta: dict[str, Any]) -> "DistilledModel":
        return cls(student.audio_model, student.audio_projection, student.head, student.feature_extractor, meta=meta)

    def config_dict(self) -> dict:
        fe = self.feature_extractor.to_dict()
        fe.pop("mel_filters", None)
        fe.pop("mel_filters_slaney", None)
        return {
            "model_type": MODEL_TYPE,
            "birdbridge_version": __version__,
            "student_id": self.meta.get("student_id"),
            "teacher_id": self.meta.get("teacher_id"),
            "teacher_fingerprint": self.meta.get("teacher_fingerprint"),
            "teacher_relpath": self.meta.get("teacher_relpath"),
            "prompt_recipe": self.meta.get("prompt_recipe"),
            "training": self.meta.get("training"),
            "train_species": self.meta.get("train_species"),  # ids, so an evaluation can check held-out species
            "logit_scale": self.meta.get("logit_scale"),
            "trained_on": self.meta.get("trained_on"),
            "head": self.head.spec.to_dict(),
            "combination": None if self.combination is None else self.combination.config(),
            "audio_config": self.audio_model.config.to_dict(),
            "preprocessing": fe,
        }

    def save_pretrained(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        from ..io import atomic_dir

        directory = Path(directory)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items() if not k.startswith("frontend.")}
        cfg = self.config_dict()
        from .identity import locate

        teacher_dir = locate(self.meta, self.source_dir)
        # beside the absolute id: the teacher found again when the whole folder moves together
        cfg["teacher_relpath"] = os.path.relpath(teacher_dir, directory.resolve()) if teacher_dir is not None else None
        with atomic_dir(directory) as tmp:
            (tmp / CONFIG_NAME).write_text(json.dumps(cfg, indent=2, sort_keys=True, default=str))
            save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
        return directory

    @classmethod
    def from_pretrained(cls, model_id: "str | Path | hub.ModelRef", device: str = "cpu") -> "DistilledModel":
        from safetensors.torch import load_file
        from transformers import ClapAudioConfig, ClapFeatureExtractor
        from transformers.models.clap.modeling_clap import ClapAudioModel, ClapProjectionLayer

        directory = _resolve_checkpoint(hub.parse(model_id))
        cfg = json.loads((directory / CONFIG_NAME).read_text())
        if cfg.get("model_type") != MODEL_TYPE:
            raise ModelNotAvailableError(f"{model_id}: not a birdbridge distilled checkpoint (model_type={cfg.get('model_type')!r})")
        audio_cfg = ClapAudioConfig.from_dict(cfg["audio_config"])
        fe = ClapFeatureExtractor(**{k: v for k, v in cfg["preprocessing"].items() if k not in ("feature_extractor_type", "processor_class")})
        model = cls(
            ClapAudioModel(audio_cfg),
            ClapProjectionLayer(audio_cfg),
            ProjectionHead(HeadSpec(**cfg["head"])),
            fe,
            # older checkpoints lack the teacher_fingerprint/relpath keys; None means "not recorded"
            meta={k: cfg.get(k) for k in META_KEYS if k in LEGACY_META_KEYS or cfg.get(k) is not None},
        )
        if cfg.get("combination"):
            from .combination import ZeroShotCombination

            model.combination = ZeroShotCombination.empty(cfg["combination"])  # its tensors load below
            if cfg["combination"].get("tower") == "original":
                from .combination import ClapTower

                model.combination.with_tower(ClapTower(ClapAudioModel(audio_cfg), ClapProjectionLayer(audio_cfg)))
            else:
                model.combination.with_tower(None)
        model.source_dir = directory  # the anchor for the teacher's relative path
        state = load_file(str(directory / WEIGHTS_NAME))
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("frontend.")]
        if missing or unexpected:
            raise ModelNotAvailableError(f"{model_id}: checkpoint does not match its config (missing {missing[:3]}, unexpected {unexpected[:3]})")
        return model.eval().to(device)

    def push_to_hub(self, repo_id: str, private: bool = True) -> str:
        """Upload the checkpoint directory (needs network and a token)."""
        import tempfile

        from huggingface_hub import HfApi

        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(Path(tmp) / "ckpt")
            api = HfApi()
            api.create_repo(repo_id, exist_ok=True, private=private)
            api.upload_folder(folder_path=str(Path(tmp) / "ckpt"), repo_id=repo_id)
        return repo_id


def is_distilled_checkpoint(path: str | Path) -> bool:
    cfg = Path(path) / CONFIG_NAME
    if not cfg.is_file():
        return False
    try:
        return json.loads(cfg.read_text()).get("model_type") == MODEL_TYPE
    except (OSError, json.JSONDecodeError):
        return False


def _resolve_checkpoint(m: hub.ModelRef) -> Path:
    kind, ref, model_id = m.kind, m.ref, m.given
    if kind == "builtin":
        raise ModelNotAvailableError(f"{model_id!r} is not a distilled birdbridge checkpoint")
    if kind == "local":
        from ..io import recover_dir

        recover_dir(Path(ref))  # a save killed between its two renames left the previous checkpoint aside
        p = hub.local_folder(m)
        if not (p / CONFIG_NAME).is_file() or not (p / WEIGHTS_NAME).is_file():
            raise ModelNotAvailableError(f"{model_id}: expected {CONFIG_NAME} and {WEIGHTS_NAME} in {p}")
        return p
    hub.prepare_hub(model_id, ref, CONFIG_NAME)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(ref, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME]))
    except Exception as err:  # noqa: BLE001 - any hub failure becomes the one clear message
        raise hub.not_available(model_id, ref, err) from err
