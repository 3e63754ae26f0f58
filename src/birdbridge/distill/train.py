"""Distillation as one function: collection + config in, checkpoint directory out."""

from __future__ import annotations

import json
import logging
import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..config import from_dict
from ..data.records import Collection
from ..encoders.clap import DEFAULT_STUDENT, load_clap
from ..encoders.heads import HeadSpec
from ..encoders.student import AudioStudent, DistilledModel
from ..encoders.teacher import DEFAULT_TEACHER, load_teacher
from ..errors import BadInputError, ConfigError
from ..io import atomic_write_json
from ..taxonomy import MIXED, PROMPT_TYPES, TEMPLATE_SETS, resolve_prompt_types
from .text_cache import TextEmbeddingCache


@dataclass
class TrainConfig:
    student: str = DEFAULT_STUDENT
    teacher: str = DEFAULT_TEACHER
    prompt_type: str = MIXED
    template_set: str = "single"
    head: str = "linear"
    head_hidden_dim: int = 1024
    loss: str = "infonce"
    positives: str = "multi"
    batch_size: int = 64
    max_epochs: int = 10
    lr_encoder: float = 1e-5
    lr_head: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    freeze_encoder: bool = False
    init_temperature: float = 0.07
    learn_temperature: bool = True
    seed: int = 0
    num_workers: int = 2
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "auto"
    cache_dir: str = "~/.cache/birdbridge/text"
    train_split: str = "train"
    val_split: str = "val"
    cache_decoded_audio: bool = False
    log_every_n_steps: int = 10
    progress: bool = True

    def validate(self) -> None:
        if self.prompt_type not in PROMPT_TYPES + (MIXED,):
            raise ConfigError(f"config key 'prompt_type' must be one of {PROMPT_TYPES + (MIXED,)}, got {self.prompt_type!r}")
        if self.template_set not in TEMPLATE_SETS:
            raise ConfigError(f"config key 'template_set' must be one of {TEMPLATE_SETS}, got {self.template_set!r}")
        if self.head not in ("linear", "mlp"):
            raise ConfigError(f"config key 'head' must be 'linear' or 'mlp', got {self.head!r}")
        if self.loss not in ("infonce", "species_softmax"):
            raise ConfigError(f"config key 'loss' must be 'infonce' or 'species_softmax', got {self.loss!r}")
        if self.batch_size < 2:
            raise ConfigError("config key 'batch_size' must be at least 2 for a contrastive loss")
        if self.max_epochs < 1:
            raise ConfigError("config key 'max_epochs' must be >= 1")

    @classmethod
    def from_dict(cls, d: dict | None) -> "TrainConfig":
        return from_dict(cls, d)


def _precision(cfg: TrainConfig) -> str:
    if cfg.precision != "auto":
        return cfg.precision
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"  # CPU autocast to bf16 is slower than fp32 on most CPUs


def build_student(cfg: TrainConfig, out_dim: int) -> AudioStudent:
    clap, fe = load_clap(cfg.student)
    spec = HeadSpec(kind=cfg.head, out_dim=out_dim, hidden_dim=cfg.head_hidden_dim)
    return AudioStudent.from_clap(clap, fe, spec)


def species_text_embeddings(cfg: TrainConfig, collection: Collection) -> dict[str, torch.Tensor]:
    cache = TextEmbeddingCache(Path(cfg.cache_dir).expanduser())
    return cache.get_many(cfg.teacher, collection.species, resolve_prompt_types(cfg.prompt_type), cfg.template_set,
                          lambda: load_teacher(cfg.teacher))


def _good_batch_counter():
    """A callback counting training batches with at least one usable clip.

    Lightning advances ``global_step`` even for batches whose ``training_step`` returned
    None (all clips bad), so the step count cannot tell a run that trained from one that
    saw only bad files.
    """
    from lightning.pytorch.callbacks import Callback

    class GoodBatchCounter(Callback):
        n = 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if batch["waves"] is not None:
                self.n += 1

    return GoodBatchCounter()


def training_items(collection: Collection, cfg: TrainConfig) -> list:
    """The labelled recordings of ``cfg.train_split``, or a :class:`BadInputError` that says how to get some."""
    from collections import Counter

    items = collection.audio_split(cfg.train_split)
    labelled = [a for a in items if a.species_id]
    if labelled:
        return labelled
    where = f"{collection.name} ({collection.meta.get('source') or collection.root})"
    if items:
        raise BadInputError("no_training_audio", detail=f"none of the {len(items)} recordings of split "
                            f"{cfg.train_split!r} in {where} has a species: put them in species folders or "
                            "give a CSV with a scientific_name column")
    splits = Counter(a.split for a in collection.audio)
    if not collection.audio:
        detail = f"{where} has no recordings"
    elif set(splits) == {""}:
        detail = (f"{where} has no split column (no recording has a split) and train_split is {cfg.train_split!r}: "
                  "add a `split` column (train, val, test) or set `train_split` in the config's `train:` section "
                  "(`train_split: \"\"` trains on every recording)")
    else:
        have = ", ".join(f"{s or '(none)'} {n}" for s, n in sorted(splits.items()))
        detail = (f"split {cfg.train_split!r} of {where} is empty (its splits: {have}): "
                  "fix the `split` column or set `train_split` in the config's `train:` section")
    raise BadInputError("no_training_audio", detail=detail)


def distill(collection: Collection, cfg: TrainConfig, out_dir: str | Path, *, resume: bool = False) -> DistilledModel:
    """Train the student + head on ``collection``'s train split and save ``out_dir/model``."""
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger
    from .datamodule import DistillData
    from .module import DistillModule

    out_dir = Path(out_dir)
    train_items = training_items(collection, cfg)  # before any model loads: a data mistake fails at once
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    text = species_text_embeddings(cfg, collection)
    out_dim = next(iter(text.values())).shape[1]
    torch.manual_seed(cfg.seed)  # head init independent of what the teacher load consumed
    student = build_student(cfg, out_dim)
    val_items = [a for a in collection.audio_split(cfg.val_split) if a.species_id]
    data = DistillData(collection, train_items, val_items, sample_rate=student.sample_rate,
                       n_samples=student.window_samples, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                       seed=cfg.seed, cache_decoded=cfg.cache_decoded_audio)
    # one-process count; under DDP the module reads per-rank steps from the trainer
    steps_per_epoch = data.steps_per_epoch()
    module = DistillModule(
        student, text, prompt_type=cfg.prompt_type, loss=cfg.loss, positives=cfg.positives,
        lr_encoder=cfg.lr_encoder, lr_head=cfg.lr_head, weight_decay=cfg.weight_decay,
        warmup_steps=cfg.warmup_steps, total_steps=steps_per_epoch * cfg.max_epochs,
        freeze_encoder=cfg.freeze_encoder, init_temperature=cfg.init_temperature,
        learn_temperature=cfg.learn_temperature, seed=cfg.seed,
    )
    good_batches = _good_batch_counter()
    ckpt = ModelCheckpoint(dirpath=out_dir / "checkpoints", save_last=True, every_n_train_steps=max(1, steps_per_epoch // 2),
                           save_top_k=0)
    trainer = L.Trainer(
        max_epochs=cfg.max_epochs, accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
        strategy=cfg.strategy, precision=_precision(cfg), logger=CSVLogger(out_dir, name="logs"),
        callbacks=[ckpt, good_batches], enable_progress_bar=cfg.progress, enable_model_summary=False,
        log_every_n_steps=min(cfg.log_every_n_steps, steps_per_epoch), deterministic="warn",
        num_sanity_val_steps=0, limit_val_batches=1.0 if data.val_ds is not None else 0,
        use_distributed_sampler=False,  # DistillData's sampler shards each epoch itself
    )
    last = out_dir / "checkpoints" / "last.ckpt"
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", ".*does not have many workers.*")
        warnings.filterwarnings("ignore", ".*deterministic.*")
        # DistillData resumes mid-epoch through its own checkpoint state, which this
        # Lightning check (it looks for a stateful DataLoader) does not see
        warnings.filterwarnings("ignore", ".*dataloader is not resumable.*")
        trainer.fit(module, datamodule=data, ckpt_path=str(last) if resume and last.exists() else None)
    meta = {
        "student_id": cfg.student,
        "teacher_id": cfg.teacher,
        "prompt_recipe": {"prompt_type": cfg.prompt_type, "template_set": cfg.template_set},
        "training": {k: v for k, v in asdict(cfg).items() if k not in ("student", "teacher")},
    }
    model = DistilledModel.from_student(module.student.cpu(), meta).eval()
    if trainer.global_rank == 0:
        atomic_write_json(out_dir / "skipped.json", {"n_skipped": len(module.skips), "counts": module.skips.counts(),
                                                     "skipped": module.skips.to_list()})
    resumed = resume and last.exists()
    if good_batches.n == 0 and not resumed:
        # every batch held only bad clips: an untrained model must not look like a result
        raise BadInputError("no_training_audio", detail=f"no training step ran; {module.skips.summary()} "
                                                        f"(listed in {out_dir / 'skipped.json'})")
    if trainer.global_rank == 0:
        model.save_pretrained(out_dir / "model")
    return model
