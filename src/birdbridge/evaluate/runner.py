"""One evaluation: one config → every method × protocol → results.json, report.md, plots.

The config (:mod:`~birdbridge.evaluate.eval_config`) names the data (or ``synthetic:`` for
the offline world), the distillation hyper-parameters, the methods, the prompt-type
ablation and the unseen-species split. :func:`run_eval` prepares the setting
(:mod:`~birdbridge.evaluate.setting`) and the spaces: every method becomes a *space*,
teacher-space unit rows for each audio set (test clips, reference clips, soundscape
windows), row-aligned with the items, and the protocols score all spaces through one code
path (:mod:`~birdbridge.evaluate.spaces`). Its phases (:mod:`~birdbridge.evaluate.phases`:
main table, prompt-type ablation, unseen species) each return their section, and
:mod:`~birdbridge.evaluate.write` writes the files once. Distilled models are given in the
config or trained here, on one device (:mod:`~birdbridge.evaluate.models`).

A sweep (:mod:`~birdbridge.evaluate.sweep`) calls :func:`run_eval` once per run;
:func:`~birdbridge.evaluate.pipeline.evaluate` picks one or the other for ``birdbridge eval``.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import time
from pathlib import Path

from ..config import to_dict
from ..errors import ConfigError
from .eval_config import GIVEN_MODEL_HINT, EvalConfig, load_eval_config
from .models import trained_models
from .phases import Run, held_out_rows, hold_out, main_table, prompt_ablation, unseen_species
from .write import write_species_csv

HELD_OUT_LIST = "unseen_species.csv"  # what --exclude-species / data.exclude_species read
from .setting import prepare_setting


def refuse_multi_process() -> None:
    """An evaluation launched once per process (torchrun, srun) would run whole once per rank.

    torchrun announces the processes in WORLD_SIZE; ``srun -n N`` in SLURM_NTASKS (which srun
    sets to the step's task count, so ``srun -n 1`` inside a bigger allocation passes). Lightning
    would also read SLURM_NTASKS as the world size of a training started here."""
    for var, how in (("WORLD_SIZE", "torchrun"), ("SLURM_NTASKS", "srun")):
        n = os.environ.get(var, "1").strip()
        if n.isdigit() and int(n) > 1:
            raise ConfigError(f"birdbridge eval runs as one process, but it was launched as {n} ({var}, {how}): "
                              f"run it without torchrun/srun (or `srun -n 1`); for multi-GPU distillation, {GIVEN_MODEL_HINT}")


def run_eval(config: EvalConfig | str | Path, out: str | Path, *, root: str | Path | None = None, log=print) -> dict:
    """Run every configured method and protocol once; write results.json, report.md and plots to ``out``.

    ``root`` is where ``birdbridge data download`` put the datasets: the config's relative
    data paths are read below it.
    """
    import torch

    from . import report
    from .spaces import Evaluator
    from .write import write_outputs

    cfg = config.with_root(root) if isinstance(config, EvalConfig) else load_eval_config(config, root)
    refuse_multi_process()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(cfg.work_dir).expanduser() if cfg.work_dir else out / "work"
    timings: dict[str, float] = {}
    t_start = time.time()
    torch.manual_seed(cfg.seed)

    setting = prepare_setting(cfg, work, log)
    timings["setup_s"] = time.time() - t_start
    train_cfg = cfg.train_config(**setting.train_overrides)
    held = hold_out(cfg, setting) if cfg.unseen is not None else None  # before any embedding or training
    if held is not None:  # now, so the unseen model can be trained elsewhere (DDP) while this runs or after
        write_species_csv(out / HELD_OUT_LIST, held_out_rows(held, setting),
                          "held-out species of this evaluation's unseen split, as the training data names them;\n"
                          "train the unseen model without them: `birdbridge data prepare ... --exclude-species FILE`\n"
                          "or `data: {exclude_species: FILE}` in a `birdbridge train` config, then give it as "
                          "`unseen.distilled_model:`")
    ev = Evaluator(cfg, setting, train_cfg, log)
    timings["embed_shared_s"] = ev.timings.get("shared_s", 0.0)
    run = Run(cfg, setting, train_cfg, ev, work, log)

    t0 = time.time()
    main_view = ev.view(None)
    if "zero_shot_combination" in cfg.methods:  # one space for the main table and the unseen split
        ev.add_zero_shot_combination("zero_shot_combination")
    main = main_table(run, main_view)
    timings["main_s"] = time.time() - t0
    ablation: dict = {}
    if cfg.prompt_ablation and cfg.main_table:
        t0 = time.time()
        ablation = prompt_ablation(run, main_view)
        timings["ablation_s"] = time.time() - t0
    unseen: dict = {}
    if held is not None:
        t0 = time.time()
        unseen = unseen_species(run, held)
        timings["unseen_s"] = time.time() - t0
    ev.score_windows(work)  # every space's soundscape numbers, from one decoding pass (spaces.py)
    if "soundscape_s" in ev.timings:
        timings["soundscape_s"] = ev.timings["soundscape_s"]

    timings["total_s"] = time.time() - t_start
    results = {
        "name": cfg.name,
        "seed": cfg.seed,
        "config": to_dict(cfg),
        "train_config": dataclasses.asdict(train_cfg),
        "training_recipe": {"encoder_mode": "eval (frozen)" if train_cfg.freeze_encoder else train_cfg.encoder_mode,
                            "prompt_types": list(train_cfg.resolved_prompt_types)},
        "versions": _versions(),
        "setting": setting.describe(),
        "embedding": ev.describe(),
        "models": run.models,
        "trained_models": trained_models(run.models),  # what this run trained; [] when all was given
        "main": main,
        "prompt_ablation": ablation,
        "unseen": unseen,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    figures = (lambda r: report.figures(r, ev.plot_data(main_view))) if cfg.plots and cfg.main_table else None
    write_outputs(out, results, report.render_markdown, figures=figures, skips=ev.skips_summary(),
                  seconds=timings["total_s"], log=log)
    return results


def _versions() -> dict:
    import importlib.metadata as md

    from .. import __version__

    out = {"birdbridge": __version__, "python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("torch", "transformers", "open_clip_torch", "lightning", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out
