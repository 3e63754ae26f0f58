"""How far apart training checkpoints are: in global optimizer steps, whatever the world size.

Lightning's ``ModelCheckpoint(every_n_train_steps=n)`` fires when ``trainer.global_step``
(this process's optimizer steps) is a multiple of ``n``. Under DDP every rank takes one
optimizer step per step of the *global* batch, in lockstep, so ``global_step`` already
counts global optimizer steps: the same number on every rank, one per ``batch_size x world
size`` clips. What went wrong before was our default, half an epoch *counted for one
process*: with 8 ranks an epoch has an eighth of those steps, so "twice an epoch" became
"every fourth epoch". The spacing is therefore fixed only once the trainer knows its world
size (:class:`GlobalStepCheckpoint`), from the per-rank epoch length the sampler deals.

``train.checkpoint_every_n_steps`` (docs/DISTRIBUTED.md) is taken as global optimizer
steps as written; unset, it is half an epoch at the run's world size.
"""

from __future__ import annotations

from typing import Callable

from lightning.pytorch.callbacks import ModelCheckpoint


def checkpoint_spacing(every_n_steps: int | None, steps_per_epoch: Callable[[int], int], world_size: int) -> int:
    """Global optimizer steps between checkpoints: ``every_n_steps`` as given, else half an epoch.

    ``steps_per_epoch(world_size)``: optimizer steps per epoch when ``world_size`` ranks share
    it (``DistillData.steps_per_epoch``)."""
    if every_n_steps is not None:
        return max(1, int(every_n_steps))
    return max(1, steps_per_epoch(max(1, int(world_size))) // 2)


class GlobalStepCheckpoint(ModelCheckpoint):
    """A ``ModelCheckpoint`` whose step spacing is set from the trainer's world size at setup."""

    def __init__(self, *, every_n_steps: int | None, steps_per_epoch: Callable[[int], int], **kwargs):
        super().__init__(every_n_train_steps=max(1, every_n_steps or 1), **kwargs)
        self._every_n_steps = every_n_steps
        self._steps_per_epoch = steps_per_epoch

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        # the attribute Lightning's on_train_batch_end reads; there is no public setter
        self._every_n_train_steps = checkpoint_spacing(self._every_n_steps, self._steps_per_epoch, trainer.world_size)
