"""The training recipe as one config object (``train:`` in YAML): what a run learns and how it runs.

Its own module so the Lightning module and the training loop both read it without importing each
other; it imports no torch, so ``birdbridge train`` checks a config before torch loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ..config import from_dict
from ..encoders.ids import DEFAULT_STUDENT, DEFAULT_TEACHER
from ..errors import ConfigError
from ..taxonomy import MIXED, PROMPT_TYPES, TEMPLATE_SETS, resolve_prompt_types


ENCODER_MODES = ("train", "eval")
ZSCL_GATES = ("none", "unheard", "unheard_top")


@dataclass
class TrainConfig:
    student: str = DEFAULT_STUDENT
    teacher: str = DEFAULT_TEACHER
    # sampled uniformly per example; `mixed` = the paper's three (common, scientific, taxonomic)
    prompt_types: list[str] = field(default_factory=lambda: [MIXED])
    template_set: str = "single"
    head: str = "linear"  # linear | mlp | zero_shot (encoders/heads.py)
    head_hidden_dim: int = 1024
    # Starting from a zero-shot model and ending between it and the fine-tuned one (distill/start.py):
    # head_init text_map: the linear head starts as the ridge map CLAP text -> teacher text (LP-FT);
    # head_species: the species list (a list file, as `detect --species`) the zero_shot head chooses
    # among, the text map is fitted on and ZSCL's distributions run over; default: the training species
    head_init: str = "random"
    head_species: str | None = None
    head_prompt_type: str = "taxonomic_common"  # the teacher rows the zero_shot head weights (and ZSCL uses)
    head_template_set: str = "single"
    head_ridge_alpha: float = 0.01
    # zero_shot head: the caption rows of species without training audio stay as text put them
    # (frozen) or learn as negatives (trained)
    head_unheard_rows: str = "frozen"
    # WiSE-FT: the saved weights are (1 - wise_alpha) * start + wise_alpha * fine-tuned; 1 = fine-tuned
    wise_alpha: float = 1.0
    # ZSCL: zscl_weight * KL(start || current) over the species' teacher texts, on unlabeled
    # reference_audio (a CSV, folder or iNatSounds JSON), one centre crop of at most
    # reference_max_clips recordings, zscl_batch_size of them a step (default batch_size)
    zscl_weight: float = 0.0
    reference_audio: str | None = None
    reference_max_clips: int = 1024
    zscl_batch_size: int | None = None
    # none: every reference clip held to the start alike; unheard: each clip's term weighted by the
    # start's zero-shot posterior mass on species distillation never heard (zero_shot head only), so
    # clips of heard species are left to the labels and the rest keep the start's behaviour;
    # unheard_top: weighted by the start's largest posterior of one unheard species, so a clip the
    # start is unsure about (a spread posterior: nothing learned to keep) is not held either
    zscl_gate: str = "none"
    zscl_gate_power: float = 1.0  # the gate's weight is mass ** power (> 1 holds only clips the start is sure are unheard)
    # the temperature of ZSCL's similarity distributions (unset: init_temperature)
    zscl_temperature: float | None = None
    loss: str = "infonce"
    positives: str = "multi"
    batch_size: int = 64
    max_epochs: int = 10
    lr_encoder: float = 1e-5
    lr_head: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    freeze_encoder: bool = False
    # train: dropout on and HTSAT's BatchNorm statistics updating while the encoder
    # fine-tunes (ordinary fine-tuning); eval: the mode the pretrained model loads in.
    # A frozen encoder is always in eval mode.
    encoder_mode: str = "train"
    init_temperature: float = 0.07
    learn_temperature: bool = True
    # Keeping the tower's CLAP audio-text alignment (distill/clap_align.py): InfoNCE against
    # the frozen CLAP text of the species captions, and cosine feature distillation against
    # the tower as it was (LwF); 0 = off, the paper's recipe.
    clap_alignment_weight: float = 0.0
    clap_feature_weight: float = 0.0
    # CLAP captions of a species (the alignment term and the combination): templates x prompt types
    clap_templates: list[str] = field(default_factory=lambda: ["{}"])
    clap_prompt_types: list[str] = field(default_factory=lambda: ["common", "scientific"])
    # encoders/combination.py CombinationSpec keys: the saved model then mixes its distilled
    # vector with CLAP's zero-shot combination, by CLAP's confidence, over the species of
    # `combination_species` (a species-list CSV, as `detect --species`; default: the training species)
    combination: dict | None = None
    combination_species: str | None = None
    seed: int = 0
    num_workers: int = 2
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "auto"
    cache_dir: str = "~/.cache/birdbridge/text"
    train_split: str = "train"
    # validation clips: the rows of this split (or the config's `validation:` block, ValidationConfig)
    val_split: str = "val"
    # validate every this many epochs (and after the last); unset: every epoch when there is validation data
    val_every_n_epochs: int | None = None
    cache_decoded_audio: bool = False
    log_every_n_steps: int = 10
    # checkpoints/last.ckpt every this many global optimizer steps (one per step of the global
    # batch, the same count on every DDP rank); unset: twice an epoch at the run's world size
    checkpoint_every_n_steps: int | None = None
    progress: bool = True

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"prompt_type": "prompt_types (a list, e.g. [mixed] or [common])"}

    def validate(self) -> None:
        if isinstance(self.prompt_types, str):
            self.prompt_types = [self.prompt_types]
        try:
            resolve_prompt_types(self.prompt_types)
        except ValueError:
            raise ConfigError(f"config key 'prompt_types' must be a non-empty list from {PROMPT_TYPES + (MIXED,)}, "
                              f"got {self.prompt_types!r}") from None
        if self.encoder_mode not in ENCODER_MODES:
            raise ConfigError(f"config key 'encoder_mode' must be one of {ENCODER_MODES}, got {self.encoder_mode!r}")
        if self.template_set not in TEMPLATE_SETS:
            raise ConfigError(f"config key 'template_set' must be one of {TEMPLATE_SETS}, got {self.template_set!r}")
        if self.head not in ("linear", "mlp", "zero_shot"):
            raise ConfigError(f"config key 'head' must be 'linear', 'mlp' or 'zero_shot', got {self.head!r}")
        if self.head_init not in ("random", "text_map"):
            raise ConfigError(f"config key 'head_init' must be 'random' or 'text_map', got {self.head_init!r}")
        if self.head_init == "text_map" and self.head != "linear":
            raise ConfigError(f"config key 'head_init: text_map' needs 'head: linear' (got {self.head!r}); "
                              "a zero_shot head always starts from text")
        if self.head_prompt_type not in PROMPT_TYPES:
            raise ConfigError(f"config key 'head_prompt_type' must be one of {PROMPT_TYPES}, got {self.head_prompt_type!r}")
        if self.head_template_set not in TEMPLATE_SETS:
            raise ConfigError(f"config key 'head_template_set' must be one of {TEMPLATE_SETS}, got {self.head_template_set!r}")
        if self.head_unheard_rows not in ("frozen", "trained"):
            raise ConfigError(f"config key 'head_unheard_rows' must be 'frozen' or 'trained', got {self.head_unheard_rows!r}")
        if self.zscl_temperature is not None and not self.zscl_temperature > 0:
            raise ConfigError(f"config key 'zscl_temperature' must be > 0, got {self.zscl_temperature}")
        if not self.zscl_gate_power > 0:
            raise ConfigError(f"config key 'zscl_gate_power' must be > 0, got {self.zscl_gate_power}")
        if self.zscl_gate not in ZSCL_GATES:
            raise ConfigError(f"config key 'zscl_gate' must be one of {ZSCL_GATES}, got {self.zscl_gate!r}")
        if self.zscl_gate != "none" and self.head != "zero_shot":
            raise ConfigError(f"config key 'zscl_gate: {self.zscl_gate}' needs 'head: zero_shot' (its posterior is the gate)")
        if not 0.0 <= self.wise_alpha <= 1.0:
            raise ConfigError(f"config key 'wise_alpha' must be in [0, 1], got {self.wise_alpha}")
        if self.zscl_weight < 0:
            raise ConfigError(f"config key 'zscl_weight' must be >= 0, got {self.zscl_weight}")
        if self.reference_max_clips < 1 or (self.zscl_batch_size is not None and self.zscl_batch_size < 1):
            raise ConfigError("config keys 'reference_max_clips' and 'zscl_batch_size' must be >= 1")
        if self.loss not in ("infonce", "species_softmax"):
            raise ConfigError(f"config key 'loss' must be 'infonce' or 'species_softmax', got {self.loss!r}")
        if self.batch_size < 2:
            raise ConfigError("config key 'batch_size' must be at least 2 for a contrastive loss")
        if self.checkpoint_every_n_steps is not None and self.checkpoint_every_n_steps < 1:
            raise ConfigError(f"config key 'checkpoint_every_n_steps' must be >= 1, got {self.checkpoint_every_n_steps}")
        if self.max_epochs < 1:
            raise ConfigError("config key 'max_epochs' must be >= 1")
        if self.val_every_n_epochs is not None and self.val_every_n_epochs < 1:
            raise ConfigError(f"config key 'val_every_n_epochs' must be >= 1, got {self.val_every_n_epochs}")
        for key in ("clap_alignment_weight", "clap_feature_weight"):
            if getattr(self, key) < 0:
                raise ConfigError(f"config key {key!r} must be >= 0, got {getattr(self, key)}")
        if not self.clap_templates or any("{}" not in t for t in self.clap_templates):
            raise ConfigError("config key 'clap_templates' must be a non-empty list of strings containing '{}'")
        bad = [t for t in self.clap_prompt_types if t not in PROMPT_TYPES]
        if bad or not self.clap_prompt_types:
            raise ConfigError(f"config key 'clap_prompt_types' must be a non-empty list from {PROMPT_TYPES}, got {self.clap_prompt_types}")
        if self.combination_species is not None and self.combination is None:
            raise ConfigError("config key 'combination_species' needs 'combination' (e.g. combination: {})")
        if self.combination is not None:
            from ..encoders.combination import CombinationSpec

            from_dict(CombinationSpec, self.combination, where="combination.")

    @classmethod
    def from_dict(cls, d: dict | None) -> "TrainConfig":
        return from_dict(cls, d)

    @property
    def resolved_prompt_types(self) -> tuple[str, ...]:
        return resolve_prompt_types(self.prompt_types)

    def uses_gpu(self) -> bool:
        """Whether Lightning will put this run on CUDA devices."""
        import torch

        return self.accelerator in ("gpu", "cuda") or (self.accelerator == "auto" and torch.cuda.is_available())


VALIDATION_KINDS = ("csv", "folder", "inat_sounds", "ssw60", "synthetic", "shards")


@dataclass
class ValidationConfig:
    """A train config's ``validation:`` block: recordings held out for model selection, apart from the
    training data (instead of its ``val_split`` rows), and optionally photos to validate against.

    ``path``: the recordings (a CSV, a folder of species folders, an iNatSounds ``val.json``, ...);
    ``kind``: its data kind (default: ``inat_sounds`` for ``.json``, ``csv`` for ``.csv``, else
    ``folder``); ``images``: a folder of species folders (or a CSV) of photos: validation then scores
    audio->image mAP against the teacher's image embeddings, else audio->text mAP against the
    species prompts. Species are matched to the training species by id, then scientific name."""

    path: str = ""
    kind: str | None = None
    images: str | None = None

    def validate(self) -> None:
        if not self.path:
            raise ConfigError("config key 'validation.path' is required (the validation recordings)")
        if self.kind is not None and self.kind not in VALIDATION_KINDS:
            raise ConfigError(f"config key 'validation.kind' must be one of {', '.join(VALIDATION_KINDS)}, "
                              f"got {self.kind!r}")

    @property
    def resolved_kind(self) -> str:
        if self.kind:
            return self.kind
        from pathlib import Path

        return {".json": "inat_sounds", ".csv": "csv"}.get(Path(str(self.path)).suffix.lower(), "folder")

    @classmethod
    def from_dict(cls, d) -> "ValidationConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"config key 'validation' must be a mapping like {{path: val.csv, images: photos/}}, "
                              f"got {d!r}")
        return from_dict(cls, d, where="validation.")
