"""``birdbridge eval CONFIG --out DIR``: the evaluation, top to bottom.

::

    evaluate                     this module: the config's sweep, or one evaluation
    └─ run_sweep                 sweep.py: one run_eval per seed × CLAP-known fraction,
       │                         then mean ± sd (sweep_table.py)
       └─ run_eval               runner.py: setting (setting.py) → spaces (spaces.py) → phases
          ├─ phases              phases.py: main table, prompt-type ablation, unseen species,
          │                      each returning its section of results.json
          └─ write_outputs       write.py: the one writer of results.json, report.md
                                 (report.py, sweep_report.py render), plots, skipped.json

Each layer imports only those below it: ``run_eval`` knows nothing of sweeps.
"""

from __future__ import annotations

from pathlib import Path

from .eval_config import EvalConfig, load_eval_config
from .runner import run_eval
from .sweep import run_sweep


def evaluate(config: EvalConfig | str | Path, out: str | Path, *, root: str | Path | None = None, log=print) -> dict:
    """What ``birdbridge eval`` runs: a config with ``sweep:`` as a sweep, any other as one evaluation.

    ``root`` is where ``birdbridge data download`` put the datasets (see :func:`run_eval`).
    """
    cfg = config.with_root(root) if isinstance(config, EvalConfig) else load_eval_config(config, root)
    if cfg.sweep is not None:
        return run_sweep(cfg, out, log=log)
    # run_eval takes the config as given: a config already joined to its root would be joined twice
    return run_eval(config, out, root=root, log=log)
