"""``sweep:`` — the whole synthetic evaluation once per seed and CLAP-known fraction, then mean ± sd.

The sweep sits above :func:`~birdbridge.evaluate.runner.run_eval` and calls it once per
run: each has its own ``results.json``/``report.md`` under ``OUT/runs/known<f>-seed<s>/``,
with the world, the unseen split and the distillation all seeded by the run's seed, and the
stand-in CLAP pretrained to know ``clap_known_fraction`` of the species names. Runs of one
seed share a work folder, so the world and teacher are built once per seed. The summary
(``OUT/results.json``, ``OUT/report.md``, ``OUT/unseen.png``; numbers from
:mod:`.sweep_table`, written by :mod:`.write`) gives, per fraction, each method's seen- and
unseen-species A→I mAP, R@1, kNN@1 and zero-shot top-1, and checks the issue's targets.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from ..config import to_dict
from . import sweep_report
from .runner import refuse_multi_process, run_eval
from .sweep_table import aggregate, aggregate_curves, check_targets, choose_alpha, run_metrics
from .write import write_outputs


def run_sweep(cfg, out: str | Path, *, log=print) -> dict:
    """One :func:`run_eval` per CLAP-known fraction and seed of ``cfg.sweep``; the summary in ``out``."""
    refuse_multi_process()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(cfg.work_dir).expanduser() if cfg.work_dir else out / "work"
    t0 = time.time()
    per_run: dict[float, list[dict]] = {}
    per_curves: dict[float, list[dict]] = {}
    runs: list[dict] = []
    counts: dict = {}
    for frac in cfg.sweep.clap_known_fractions:
        for seed in cfg.sweep.seeds:
            sub = dataclasses.replace(
                cfg, seed=seed, sweep=None, plots=False, work_dir=str(work / f"seed{seed}"),
                synthetic=dataclasses.replace(cfg.synthetic, seed=seed, clap_known_fraction=frac),
                unseen=dataclasses.replace(cfg.unseen, seed=seed) if cfg.unseen is not None else None)
            run_dir = out / "runs" / f"known{frac:g}-seed{seed}"
            log(f"sweep: CLAP knows {frac:g} of the species names, seed {seed} -> {run_dir}")
            t = time.time()
            res = run_eval(sub, run_dir, log=log)
            per_run.setdefault(frac, []).append(run_metrics(res))
            un = res.get("unseen") or {}
            per_curves.setdefault(frac, []).append(un.get("curves") or {})
            counts[f"known{frac:g}-seed{seed}"] = un.get("species_counts")
            runs.append({"clap_known_fraction": frac, "seed": seed, "dir": str(run_dir), "total_s": round(time.time() - t, 1)})
    table = aggregate(per_run)
    curves = aggregate_curves(per_curves)
    candidates = [m for m in cfg.methods if m.startswith("distilled_")]
    results = {"name": cfg.name, "kind": "sweep", "seeds": list(cfg.sweep.seeds),
               "clap_known_fractions": list(cfg.sweep.clap_known_fractions), "methods": list(cfg.methods),
               "table": {f"{k:g}": v for k, v in table.items()}, "targets": check_targets(table, candidates),
               # distilled_wise's alpha curve over the seeds, and the alpha these seeds would choose (by the
               # harmonic mean of seen and unseen mAP); the configured alpha is chosen on a seed not reported
               "curves": {f"{k:g}": v for k, v in curves.items()}, "alpha_choice": choose_alpha(curves),
               "species_counts": counts, "runs": runs, "total_s": round(time.time() - t0, 1),
               "config": to_dict(cfg)}
    write_outputs(out, results, sweep_report.render_sweep, figures=sweep_report.figures if cfg.plots else None,
                  seconds=results["total_s"], log=log)
    return results
