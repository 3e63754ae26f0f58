"""The training loader (and the validation clips) as a LightningDataModule that resumes exactly.

Lightning restores the model, optimiser, scheduler and loop counters from ``last.ckpt``
but restarts an interrupted epoch's data from its first batch, with whatever shuffle the
loader's generator draws. For a resumed run to train on the same batches as an unbroken
one, three things travel in the checkpoint through this module's ``state_dict``:

* the epoch the sampler was in and how many of its batches had been trained on (read from
  the fit loop's batch progress, which counts *trained* batches, unlike the loader, which
  runs ahead by its prefetch);
* the sampler itself needs no state: epoch ``e``'s order is a function of ``(seed, e)``
  (:class:`~birdbridge.distill.data.EpochShuffleSampler`);
* crops are drawn from ``(seed, epoch, index)`` in the dataset, so they follow.

The loaders are built in ``train_dataloader()``, i.e. after Lightning has set up the
process group, so the sampler knows its rank and world size and shards the epoch itself
(the Trainer runs with ``use_distributed_sampler=False``; a wrapping ``DistributedSampler``
would reshuffle and never pass ``set_epoch`` on to ours).
"""

from __future__ import annotations

import logging

import lightning as L
import torch
from torch.utils.data import DataLoader

from ..data.records import AudioItem, Collection
from .data import EpochShuffleSampler, clip_dataset, collate_clips

log = logging.getLogger(__name__)


class DistillData(L.LightningDataModule):
    def __init__(
        self,
        collection: Collection,
        train_items: list[AudioItem],
        val_items: list[AudioItem],
        *,
        sample_rate: int,
        n_samples: int,
        batch_size: int,
        num_workers: int = 0,
        seed: int = 0,
        cache_decoded: bool = False,
        val_collection: Collection | None = None,
    ):
        super().__init__()
        self.train_ds = clip_dataset(collection, train_items, sample_rate, n_samples, crop="random", seed=seed,
                                     cache_decoded=cache_decoded)
        # the validation clips (centre crops; ``val_collection``: where they live, when not in ``collection``),
        # read by the Validation callback (distill/validation.py), not by a Lightning validation loop
        self.val_ds = (clip_dataset(val_collection or collection, val_items, sample_rate, n_samples, crop="center",
                                    seed=seed) if val_items else None)
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        self.sampler: EpochShuffleSampler | None = None
        self._batches_per_epoch = 0
        self._resume_state: dict | None = None

    def _rank_world(self) -> tuple[int, int]:
        return (self.trainer.global_rank, self.trainer.world_size) if self.trainer is not None else (0, 1)

    def _rank_batch(self, world_size: int) -> tuple[int, int]:
        """(clips per rank per epoch, batch size): a batch is never more than a rank's share."""
        per_rank = -(-len(self.train_ds) // world_size)
        return per_rank, min(self.batch_size, per_rank)

    def steps_per_epoch(self, world_size: int = 1) -> int:
        per_rank, batch = self._rank_batch(world_size)
        return max(1, per_rank // batch)

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank_world()
        _, batch = self._rank_batch(world)
        self.sampler = EpochShuffleSampler(len(self.train_ds), seed=self.seed, batch_size=batch, rank=rank, world_size=world)
        # drop_last keeps every step's contrastive batch (and every rank's gather) full-size
        loader = DataLoader(self.train_ds, batch_size=batch, sampler=self.sampler, drop_last=True,
                            num_workers=self.num_workers, collate_fn=collate_clips, generator=self._generator())
        self._batches_per_epoch = len(loader)
        if self._resume_state:
            self._apply_resume(self._resume_state, world)
            self._resume_state = None
        return loader

    def _generator(self) -> torch.Generator:
        # A loader's own generator: starting an iterator (every epoch, every validation)
        # draws its workers' base seed from it instead of the global torch RNG, which
        # dropout draws from and which a resumed run restores only at its first step.
        return torch.Generator().manual_seed(self.seed)

    # ------------------------------------------------------------------ checkpoint state
    def state_dict(self) -> dict:
        if self.sampler is None or self.trainer is None:
            return {}
        done = int(self.trainer.fit_loop.epoch_loop.batch_progress.current.processed)
        return {"epoch": self.sampler.epoch, "batches_done": done, "batches_per_epoch": self._batches_per_epoch,
                "world_size": self.sampler.world_size, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        # applied when train_dataloader() builds the sampler (after this, before iteration)
        self._resume_state = dict(state) if state else None

    def _apply_resume(self, state: dict, world: int) -> None:
        assert self.sampler is not None
        epoch, done = int(state["epoch"]), int(state["batches_done"])
        if state.get("world_size", world) != world or state.get("seed", self.seed) != self.seed:
            log.warning("resuming with %d process(es) and seed %d, the checkpoint had %s and %s: the interrupted "
                        "epoch's remaining batches are not the ones the original run would have seen", world,
                        self.seed, state.get("world_size"), state.get("seed"))
            done = 0
        if done >= state.get("batches_per_epoch", self._batches_per_epoch):
            self.sampler.resume(epoch + 1, 0)  # saved after an epoch's last batch
        else:
            self.sampler.resume(epoch, done)
