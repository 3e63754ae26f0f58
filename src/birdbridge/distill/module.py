"""The LightningModule that distils the student onto cached teacher text embeddings.

Only the student (CLAP audio tower + audio projection), the new head and the
temperature are parameters here; the teacher is not part of the module at all, its
text embeddings are non-persistent buffers read from the cache.
"""

from __future__ import annotations

import math
import random

import lightning as L
import torch

from ..encoders.student import AudioStudent
from ..errors import SkipLog
from ..taxonomy import resolve_prompt_types
from .clap_align import ClapAlignmentLoss, FrozenClapTower, feature_distillation_loss
from .config import TrainConfig
from .data import waves_as_float
from .loss import LogitScale, build_loss


def rng_states() -> dict:
    """Global RNG states (python, numpy, torch CPU and CUDA) for a checkpoint."""
    import numpy as np

    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    # plain lists and tensors only: Lightning loads checkpoints with torch's weights_only default
    states = {"python": random.getstate(), "numpy": [kind, keys.tolist(), pos, has_gauss, gauss],
              "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    import numpy as np

    random.setstate(states["python"])
    kind, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class DistillModule(L.LightningModule):
    """``cfg`` (a :class:`~birdbridge.distill.config.TrainConfig`) gives the recipe: prompt types,
    loss, learning rates and schedule, encoder mode, temperature, seed and the CLAP-space terms.
    ``total_steps`` is the schedule's length outside a Trainer (inside one, Lightning's estimate);
    ``clap_text`` / ``clap_logit_scale`` are the CLAP species captions' embeddings the alignment
    term needs (``cfg.clap_alignment_weight > 0``)."""

    def __init__(
        self,
        student: AudioStudent,
        text_embeddings: dict[str, torch.Tensor],
        cfg: TrainConfig,
        *,
        total_steps: int = 1000,
        clap_text: torch.Tensor | None = None,
        clap_logit_scale: float = 1.0,
        zscl=None,
    ):
        super().__init__()
        self.student = student
        # auxiliary terms keeping the tower's CLAP audio-text alignment (distill/clap_align.py)
        self.clap_alignment_weight, self.clap_feature_weight = float(cfg.clap_alignment_weight), float(cfg.clap_feature_weight)
        self.clap_align = None
        if self.clap_alignment_weight > 0:
            if clap_text is None:
                raise ValueError("clap_alignment_weight > 0 needs the CLAP species text embeddings (clap_text)")
            self.clap_align = ClapAlignmentLoss(clap_text, clap_logit_scale)
        self.clap_reference = FrozenClapTower(student) if self.clap_feature_weight > 0 else None
        # distill/start.py ZsclTerm: keep the starting model's distributions on unlabeled reference clips
        self.zscl = zscl
        self.prompt_types = list(resolve_prompt_types(cfg.prompt_types))
        missing = [p for p in self.prompt_types if p not in text_embeddings]
        if missing:
            raise ValueError(f"text embeddings missing for prompt types {missing}")
        # [n_types, n_species, D]; non-persistent: the cache, not the checkpoint, owns them
        table = torch.stack([text_embeddings[p].float() for p in self.prompt_types])
        self.register_buffer("text_table", table, persistent=False)
        self.logit_scale = LogitScale(cfg.init_temperature, learnable=cfg.learn_temperature)
        self.loss_name = cfg.loss
        self.loss_fn = (build_loss("species_softmax") if cfg.loss == "species_softmax"
                        else build_loss("infonce", positives=cfg.positives))
        self.lr_encoder, self.lr_head, self.weight_decay = cfg.lr_encoder, cfg.lr_head, cfg.weight_decay
        self.warmup_steps, self.total_steps = cfg.warmup_steps, max(1, total_steps)
        if cfg.encoder_mode not in ("train", "eval"):
            raise ValueError(f"encoder_mode must be 'train' or 'eval', got {cfg.encoder_mode!r}")
        self.freeze_encoder = freeze_encoder = cfg.freeze_encoder
        self.encoder_mode = "eval" if freeze_encoder else cfg.encoder_mode
        self.seed = cfg.seed
        self.skips = SkipLog()
        self.trained_batches = 0  # steps this process trained (not restored from a checkpoint)
        self.steps_without_clips = 0  # steps skipped on every rank because one rank's batch had no usable clip
        self._skip_step = False
        if freeze_encoder:
            self.student.audio_model.requires_grad_(False)
            self.student.audio_projection.requires_grad_(False)
        self.set_train_modes()

    # ---------------------------------------------------------------- module modes
    def set_train_modes(self) -> None:
        """Trainable parts in train mode; the CLAP encoder in ``encoder_mode``.

        Pretrained models load in eval mode and Lightning (>= 2.2) keeps each submodule's
        mode at fit start (and validation, distill/validation.py, puts back the modes it found).
        So they are set here, explicitly: at construction (before Lightning's eval-mode check),
        at every epoch start and before every training step (so also after validation). A
        frozen encoder stays in eval mode: dropout off, BatchNorm statistics fixed.
        """
        self.train()
        if self.encoder_mode == "eval":
            self.student.audio_model.eval()
            self.student.audio_projection.eval()

    def on_train_epoch_start(self) -> None:
        self.set_train_modes()

    def setup(self, stage: str) -> None:
        # DDP: gather features across ranks with gradients, so the contrastive batch is
        # the global batch and gradients equal the single-process computation.
        if self.trainer is not None and self.trainer.world_size > 1 and self.loss_name == "infonce":
            for fn in (self.loss_fn,) + ((self.clap_align.loss,) if self.clap_align is not None else ()):
                fn.gather_with_grad = True
                fn.local_loss = True
                fn.rank = self.trainer.global_rank
                fn.world_size = self.trainer.world_size

    def _distributed(self) -> bool:
        return self._trainer is not None and self.trainer.world_size > 1

    def _targets(self, labels: torch.Tensor) -> torch.Tensor:
        """One prompt type per example, drawn from a generator seeded by the step.

        Seeded by (seed, global step, rank) so a resumed run draws what the uninterrupted
        run drew."""
        n_types = self.text_table.shape[0]
        if n_types == 1:
            return self.text_table[0, labels]
        rank = self.trainer.global_rank if self._trainer is not None else 0
        rng = random.Random(f"{self.seed}-{self.global_step}-{rank}")
        types = torch.tensor([rng.randrange(n_types) for _ in range(len(labels))], device=labels.device)
        return self.text_table[types, labels]

    def _all_ranks_have_clips(self, have: bool) -> bool:
        """Under DDP, whether every rank's batch holds a usable clip (one tiny all-gather per step).

        A rank whose clips were all unreadable has nothing to put into the loss's feature
        gather; if it skipped the step alone, the other ranks would wait in that gather
        (and in DDP's gradient all-reduce) for ever. So either every rank trains the step
        or none does."""
        if not self._distributed():
            return have
        flags = self.all_gather(torch.tensor([float(have)], device=self.device))
        return bool(flags.min() > 0)

    def training_step(self, batch, batch_idx):
        for s in batch["skipped"]:
            self.skips.add(s.path, s.reason, s.detail)
        if self._skip_step or batch["waves"] is None:  # every clip of some rank's batch was bad (on_train_batch_start)
            self.steps_without_clips += 1
            if not self._distributed():
                return None  # Lightning skips the step
            # Lightning refuses None under DDP: a zero loss over every trainable parameter keeps
            # DDP's gradient all-reduce the same on every rank; optimizer_step then drops the gradients
            return sum(p.sum() for p in self.parameters() if p.requires_grad) * 0.0
        self.trained_batches += 1
        waves, labels = waves_as_float(batch["waves"]), batch["labels"]
        feats = self.student.features(waves, crop="start")  # the dataset already cropped
        clap = self.student.clap_embed_features(feats)
        audio = torch.nn.functional.normalize(self.student.head(clap), dim=-1)
        scale = self.logit_scale()
        if self.loss_name == "species_softmax":
            table = self.text_table[self.global_step % self.text_table.shape[0]]
            loss = self.loss_fn(audio, labels, scale, species_text=table)
        else:
            loss = self.loss_fn(audio, self._targets(labels), labels, scale)
        loss = loss + self._clap_terms(clap, feats, labels)
        if self.zscl is not None:
            rank = self.trainer.global_rank if self._trainer is not None else 0
            keep = self.zscl.loss(self.student, self.global_step, rank, self.device)
            self.log("train/zscl", keep.detach(), batch_size=len(labels), sync_dist=self._distributed())
            loss = loss + self.zscl.weight * keep
        # sync_dist: under DDP the logged loss is the mean over ranks, not rank 0's share
        self.log("train/loss", loss, prog_bar=True, batch_size=len(labels), sync_dist=self._distributed())
        self.log("train/logit_scale", scale.detach(), batch_size=len(labels))
        return loss

    def _clap_terms(self, clap: torch.Tensor, feats: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | float:
        """The weighted auxiliary CLAP-space terms (0 when none is configured)."""
        total: torch.Tensor | float = 0.0
        if self.clap_align is not None:
            align = self.clap_align(clap, labels)
            self.log("train/clap_alignment", align.detach(), batch_size=len(labels), sync_dist=self._distributed())
            total = total + self.clap_alignment_weight * align
        if self.clap_reference is not None:
            feat = feature_distillation_loss(clap, self.clap_reference(feats))
            self.log("train/clap_feature", feat.detach(), batch_size=len(labels), sync_dist=self._distributed())
            total = total + self.clap_feature_weight * feat
        return total

    def optimizer_step(self, epoch, batch_idx, optimizer, optimizer_closure=None) -> None:
        if self._skip_step and optimizer_closure is not None:
            inner = optimizer_closure

            def optimizer_closure():
                out = inner()
                # no gradients at all: AdamW leaves every parameter and its moments alone, as when
                # one process skips a step by returning None
                optimizer.zero_grad(set_to_none=True)
                return out

        super().optimizer_step(epoch, batch_idx, optimizer, optimizer_closure)
        # Clamp right after the update, not in on_train_batch_end: checkpoint callbacks
        # run before the module's batch-end hook, so a clamp there would leave an
        # unclamped scale in a checkpoint that the unbroken run never trained with.
        self.logit_scale.clamp_()

    # ---------------------------------------------------------------- exact resume
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # Lightning does not checkpoint RNG states; dropout in the student draws from them
        checkpoint["birdbridge_rng"] = rng_states()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self._pending_rng = checkpoint.get("birdbridge_rng")

    def on_train_batch_start(self, batch, batch_idx) -> None:
        self.set_train_modes()
        # Restored here, not at load time, so nothing between loading and the first
        # resumed step (model setup, loader start-up) consumes the restored stream.
        if getattr(self, "_pending_rng", None) is not None:
            set_rng_states(self._pending_rng)
            self._pending_rng = None
        # before the optimiser step starts, which needs to know (optimizer_step)
        self._skip_step = not self._all_ranks_have_clips(batch["waves"] is not None)

    def configure_optimizers(self):
        head = list(self.student.head.parameters())
        enc = [p for n, p in self.student.named_parameters() if not n.startswith("head.") and p.requires_grad]
        groups = [
            {"params": [p for p in head if p.ndim >= 2], "lr": self.lr_head, "weight_decay": self.weight_decay},
            {"params": [p for p in head if p.ndim < 2] + [p for p in self.logit_scale.parameters() if p.requires_grad], "lr": self.lr_head, "weight_decay": 0.0},
        ]
        if enc and not self.freeze_encoder:
            groups.append({"params": [p for p in enc if p.ndim >= 2], "lr": self.lr_encoder, "weight_decay": self.weight_decay})
            groups.append({"params": [p for p in enc if p.ndim < 2], "lr": self.lr_encoder, "weight_decay": 0.0})
        groups = [g for g in groups if g["params"]]
        opt = torch.optim.AdamW(groups)
        warm, total = self.warmup_steps, self.total_steps
        if self._trainer is not None:
            # per-rank steps: under DDP the sampler deals each epoch out across ranks
            total = max(1, int(min(self.trainer.estimated_stepping_batches, 10**9)))

        def schedule(step: int) -> float:  # linear warm-up, then cosine to 0
            if step < warm:
                return (step + 1) / max(1, warm)
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
