"""Training progress, birdbridge's own: one stage of optimiser steps under the one progress policy.

Lightning's bar (its ``v_num``, its per-epoch redraws) shows only with ``--verbose``; without
it this callback reports the run through :func:`birdbridge.progress.make_progress`: a rich bar
on a terminal, plain lines (steps done/total, rate, ETA, epoch and loss) every 10 % or 30 s
in a log. Rank 0 only: under DDP every rank runs the same steps.
"""

from __future__ import annotations

import math

import lightning as L


class StepProgress(L.Callback):
    def __init__(self) -> None:
        self._cm = self._prog = self._task = None

    def on_train_start(self, trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        from ..console import make_console
        from ..progress import make_progress

        per_epoch = trainer.num_training_batches
        total = None if not per_epoch or math.isinf(per_epoch) else int(per_epoch) * int(trainer.max_epochs or 1)
        self._cm = make_progress(make_console(stderr=True), info=True)
        self._prog = self._cm.__enter__()
        # a resumed run starts at its checkpoint's step
        self._task = self._prog.add_task("training steps", total=total, completed=trainer.global_step, info="")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._prog is None:
            return
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        info = f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}"
        if loss is not None:
            info += f", loss {float(loss):.3f}"
        self._prog.update(self._task, advance=1, info=info)

    def _close(self) -> None:
        if self._cm is not None:
            self._cm.__exit__(None, None, None)
        self._cm = self._prog = None

    def on_train_end(self, trainer, pl_module) -> None:
        self._close()

    def on_exception(self, trainer, pl_module, exception) -> None:
        self._close()
