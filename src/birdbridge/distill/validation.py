"""Validation during training, and model selection by it ("validate periodically", as the method says).

:class:`Validation` is a Lightning callback. Every ``val_every_n_epochs`` epochs (and after the
last one) it embeds the validation recordings with the student in eval mode -- one centre crop of
the model's window per recording, the crop the training data's validation dataset takes -- and
scores retrieval mAP (:mod:`birdbridge.metrics`, the evaluation's own):

* **audio->image** against the teacher's image embeddings of the validation photos, when there
  are photos (``validation.images``, or the validation data's own labelled photos);
* **audio->text** otherwise, against the teacher's species prompts the run distils onto (each
  species' rows averaged over the run's prompt types): one relevant item per query.

One row per validation goes to ``OUT/metrics.csv`` (rewritten whole and atomically, so it can be
read mid-run and a resumed run never duplicates a row), and the weights of the best validation
by ``val_map`` are kept (on the CPU, and in ``last.ckpt`` through the callback's state, so a
resumed run still knows them); :func:`distill` exports those, not the last epoch's.

Under DDP every rank embeds its share of the recordings (and of the photos, once, at fit start),
the shares are gathered to every rank and put back in order: every rank then computes the same
numbers and takes the same best-model decision without any broadcast; rank 0 writes the file.
Modes: the student's modules are put back exactly as they were after validating, and the module
sets its training modes again before every step anyway (``DistillModule.set_train_modes``).
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch

from ..io import atomic_write_text
from ..metrics import retrieval_metrics, topk_accuracy
from .data import SkippedItem, waves_as_float
from .items import ValidationData

COLUMNS = ("epoch", "step", "train_loss", "val_map", "val_recall_at_1", "val_text_top1", "val_kind", "val_n",
           "val_gallery", "val_skipped", "is_best", "wall_s")
METRICS_NAME = "metrics.csv"


def _gather(obj, trainer) -> list:
    """``obj`` from every rank, in rank order (``[obj]`` without a process group)."""
    import torch.distributed as dist

    if trainer.world_size == 1 or not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def _in_order(parts: list[tuple[list[int], np.ndarray]], dim: int) -> tuple[list[int], np.ndarray]:
    """Every rank's ``(indices, rows)`` as one matrix in index order."""
    idx = [i for p, _ in parts for i in p]
    rows = [r for _, r in parts if len(r)]
    mat = np.concatenate(rows).astype(np.float32) if rows else np.zeros((0, dim), np.float32)
    order = np.argsort(np.asarray(idx, dtype=np.int64), kind="stable")
    return [idx[i] for i in order], mat[order]


def _cuda_devices(pl_module) -> list[int]:
    dev = pl_module.device
    return [dev.index or 0] if dev.type == "cuda" else []


class _Keyed(torch.utils.data.Dataset):
    """``(index, clip or skip record)``: one recording a row, none repeated (unlike the training
    collate, which refills a batch's bad slots)."""

    def __init__(self, ds, indices: list[int]):
        self.ds, self.indices = ds, indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int):
        i = self.indices[j]
        return i, self.ds[i]


class Validation(L.Callback):
    """``data``: the validation set (:func:`~birdbridge.distill.items.validation_data`); ``dataset``
    its clips (centre crops, ``DistillData.val_ds``); ``species_ids``: the training species in label
    order (the rows of the module's text table); ``teacher``: the teacher id (photos only)."""

    def __init__(self, data: ValidationData, dataset, species_ids: list[str], *, out_dir: str | Path,
                 every_n_epochs: int = 1, batch_size: int = 64, num_workers: int = 0, teacher: str = ""):
        self.data, self.dataset, self.species_ids = data, dataset, list(species_ids)
        self.out_dir, self.every = Path(out_dir), max(1, int(every_n_epochs))
        self.batch_size, self.num_workers, self.teacher = max(1, batch_size), num_workers, teacher
        self.labels = [it.species_id for it in data.audio]
        self.rows: list[dict] = []
        self.best_epoch: int | None = None
        self.best_val_map: float | None = None
        self.best_state: dict | None = None
        self._loss = {"epoch": -1, "sum": 0.0, "n": 0}
        self._trained = 0
        self._t0 = time.monotonic()
        self._wall0 = 0.0
        self._seen_skips: set[str] = set()
        self.gallery: np.ndarray | None = None
        self.gallery_labels: list[str] = []

    @property
    def metrics_path(self) -> Path:
        return self.out_dir / METRICS_NAME

    # ------------------------------------------------------------------ galleries
    def on_fit_start(self, trainer, pl_module) -> None:
        self._t0 = time.monotonic()
        self._trained = pl_module.trained_batches
        if self.data.images and self.gallery is None:
            self.gallery, self.gallery_labels = self._embed_images(trainer, pl_module)

    def _embed_images(self, trainer, pl_module) -> tuple[np.ndarray, list[str]]:
        """The teacher's unit image rows of this rank's share of the photos, gathered to every rank."""
        from ..data.images import load_image
        from ..encoders.teacher import Teacher
        from ..errors import BadInputError

        with torch.random.fork_rng(devices=_cuda_devices(pl_module)):  # loading initialises modules: RNG draws
            teacher = Teacher.load(self.teacher, device=str(pl_module.device))
        mine = list(range(trainer.global_rank, len(self.data.images), trainer.world_size))
        kept, imgs, vecs = [], [], []
        for i in mine + [None]:
            if i is not None:
                path = self.data.images[i][0]
                try:
                    imgs.append(load_image(path))
                    kept.append(i)
                except BadInputError as err:  # counted in skipped.json, like a bad training clip
                    pl_module.skips.add(path, err.reason, err.detail)
            if imgs and (i is None or len(imgs) == self.batch_size):
                vecs.append(teacher.encode_images(imgs, batch_size=len(imgs)).numpy())
                imgs = []
        dim = teacher.dim
        del teacher
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        local = np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32)
        idx, mat = _in_order(_gather((kept, local), trainer), dim)
        return mat, [self.data.images[i][1] for i in idx]

    def _text_gallery(self, pl_module) -> np.ndarray:
        rows = torch.nn.functional.normalize(pl_module.text_table.float().mean(0), dim=-1)
        return rows.detach().cpu().numpy()

    # ------------------------------------------------------------------ training loss
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if pl_module.trained_batches == self._trained:  # a step skipped for want of clips
            return
        self._trained = pl_module.trained_batches
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if loss is None:
            return
        if self._loss["epoch"] != trainer.current_epoch:
            self._loss = {"epoch": trainer.current_epoch, "sum": 0.0, "n": 0}
        self._loss["sum"] += float(loss.detach())
        self._loss["n"] += 1

    # ------------------------------------------------------------------ validation
    def due(self, epoch: int, max_epochs: int) -> bool:
        return (epoch + 1) % self.every == 0 or epoch + 1 == max_epochs

    def on_train_start(self, trainer, pl_module) -> None:
        """A run resumed from the checkpoint of an epoch's last step, saved before that epoch's
        validation ran (checkpoints come at step ends, validation at the epoch's end): the weights
        now are that epoch's last, so its validation runs here instead of being lost."""
        epoch = trainer.current_epoch - 1
        if epoch >= 0 and self.due(epoch, int(trainer.max_epochs or 1)) and all(r["epoch"] != epoch for r in self.rows):
            self.validate(trainer, pl_module, epoch)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.due(trainer.current_epoch, int(trainer.max_epochs or 1)):
            self.validate(trainer, pl_module, trainer.current_epoch)

    def validate(self, trainer, pl_module, epoch: int) -> None:
        """One validation of the weights as they are after ``epoch``: a row, and the best kept."""
        idx, audio, skipped = self._embed_audio(trainer, pl_module)
        mine = self._loss if self._loss["epoch"] == epoch else {"sum": 0.0, "n": 0}
        losses = _gather((mine["sum"], mine["n"]), trainer)
        n_loss = sum(n for _, n in losses)
        row = {"epoch": epoch, "step": int(trainer.global_step),
               "train_loss": sum(s for s, _ in losses) / n_loss if n_loss else float("nan"),
               **self.score(audio, [self.labels[i] for i in idx], pl_module),
               "val_skipped": skipped, "wall_s": round(self._wall0 + time.monotonic() - self._t0, 3)}
        better = not math.isnan(row["val_map"]) and (self.best_val_map is None or row["val_map"] > self.best_val_map)
        row["is_best"] = better
        if better:
            self.best_epoch, self.best_val_map = epoch, row["val_map"]
            self.best_state = {k: v.detach().cpu().clone() for k, v in pl_module.state_dict().items()
                               if k.startswith(("student.", "logit_scale."))}
        self.rows = [r for r in self.rows if r["epoch"] < epoch] + [row]
        if trainer.is_global_zero:
            self.write_csv()

    def score(self, audio: np.ndarray, labels: list[str], pl_module) -> dict:
        """The figures of one validation: ``val_map`` (audio->image or audio->text) and the others."""
        text = self._text_gallery(pl_module)
        text_scores = audio @ text.T
        index = {s: i for i, s in enumerate(self.species_ids)}
        top1 = topk_accuracy(text_scores, [index[s] for s in labels], 1) if len(labels) else float("nan")
        if self.data.images:
            gallery, glabels, kind = self.gallery, self.gallery_labels, "audio_image"
            scores = audio @ gallery.T
        else:
            gallery, glabels, kind, scores = text, self.species_ids, "audio_text", text_scores
        m = retrieval_metrics(scores, labels, glabels, ks=(1,)) if len(labels) and len(glabels) else {}
        return {"val_map": float(m.get("map", float("nan"))), "val_recall_at_1": float(m.get("recall@1", float("nan"))),
                "val_text_top1": float(top1), "val_kind": kind, "val_n": int(m.get("n_queries_scored", 0)),
                "val_gallery": len(glabels)}

    def _forward_context(self, trainer):
        plugin = getattr(trainer, "precision_plugin", None)
        return plugin.forward_context() if plugin is not None and hasattr(plugin, "forward_context") else contextlib.nullcontext()

    def embed_batch(self, pl_module, waves: torch.Tensor) -> np.ndarray:
        """The student's unit rows of one batch of clips (already cropped to its window)."""
        return pl_module.student(waves_as_float(waves), crop="start").float().cpu().numpy()

    def _embed_audio(self, trainer, pl_module) -> tuple[list[int], np.ndarray, int]:
        """The student's unit rows of every validation recording (this rank's share, gathered),
        in eval mode; the modes are put back as they were."""
        mine = list(range(trainer.global_rank, len(self.dataset), trainer.world_size))
        loader = torch.utils.data.DataLoader(_Keyed(self.dataset, mine), batch_size=self.batch_size,
                                             num_workers=self.num_workers, collate_fn=list,
                                             generator=torch.Generator().manual_seed(0))
        modes = {m: m.training for m in pl_module.modules()}
        kept, vecs, skips = [], [], []
        pl_module.eval()
        try:
            # the global RNGs (dropout's, next epoch) as if no validation had run, so a resumed run matches
            with torch.random.fork_rng(devices=_cuda_devices(pl_module)), torch.no_grad(), self._forward_context(trainer):
                for batch in loader:
                    good = [(i, x) for i, x in batch if not isinstance(x, SkippedItem)]
                    skips += [x for _, x in batch if isinstance(x, SkippedItem)]
                    if not good:
                        continue
                    waves = torch.stack([x[0] for _, x in good]).to(pl_module.device)
                    vecs.append(self.embed_batch(pl_module, waves))
                    kept += [i for i, _ in good]
        finally:
            for m, was in modes.items():
                m.train(was)
        for s in skips:  # each bad recording counted once in skipped.json, not once a validation
            if s.path not in self._seen_skips:
                self._seen_skips.add(s.path)
                pl_module.skips.add(s.path, s.reason, s.detail)
        dim = int(pl_module.text_table.shape[-1])
        local = np.concatenate(vecs) if vecs else np.zeros((0, dim), np.float32)
        parts = _gather((kept, local, len(skips)), trainer)
        idx, mat = _in_order([(k, v) for k, v, _ in parts], dim)
        return idx, mat, sum(n for _, _, n in parts)

    # ------------------------------------------------------------------ outputs
    def write_csv(self) -> None:
        buf = io.StringIO(newline="")
        w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
        w.writeheader()
        for r in self.rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
        self.out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.metrics_path, buf.getvalue())

    def restore_best(self, pl_module) -> None:
        """Put the best validation's weights (and temperature) back into ``pl_module``."""
        if self.best_state is not None:
            pl_module.load_state_dict(self.best_state, strict=False)

    def summary(self) -> dict:
        """What ``OUT/model/training.json`` records of validation."""
        return {"best_epoch": self.best_epoch, "best_val_map": self.best_val_map,
                "validation": {"source": self.data.source, "kind": self.data.kind, "n_audio": len(self.data.audio),
                               "n_images": len(self.data.images), "unmatched": self.data.unmatched,
                               "every_n_epochs": self.every, "n_validations": len(self.rows),
                               "metrics": METRICS_NAME}}

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        return {"rows": [dict(r) for r in self.rows], "best_epoch": self.best_epoch, "best_val_map": self.best_val_map,
                "best_state": self.best_state, "loss": dict(self._loss), "wall_s": self._wall0 + time.monotonic() - self._t0}

    def load_state_dict(self, state: dict) -> None:
        self.rows = [dict(r) for r in state.get("rows", [])]
        self.best_epoch, self.best_val_map = state.get("best_epoch"), state.get("best_val_map")
        self.best_state = state.get("best_state")
        self._loss = dict(state.get("loss") or self._loss)
        self._wall0 = float(state.get("wall_s", 0.0))
        self._t0 = time.monotonic()
