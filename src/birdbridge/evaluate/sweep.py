"""``sweep:`` — the whole synthetic evaluation once per seed and CLAP-known fraction, then mean ± sd.

Each run is an ordinary :func:`~birdbridge.evaluate.runner.run_eval` (its own
``results.json``/``report.md`` under ``OUT/runs/known<f>-seed<s>/``) with the world, the
unseen split and the distillation all seeded by the run's seed, and the stand-in CLAP
pretrained to know ``clap_known_fraction`` of the species names. Runs of one seed share a
work folder, so the world and teacher are built once per seed. The summary (``OUT/results.json``,
``OUT/report.md``, ``OUT/unseen.png``) gives, per fraction, each method's seen- and
unseen-species A→I mAP, R@1, kNN@1 and zero-shot top-1, and checks the issue's targets.
"""

from __future__ import annotations

import dataclasses
import math
import time
from pathlib import Path

import numpy as np

METRICS = ("map", "chance_map", "recall@1", "knn@1", "zs_top1", "chance_top1")
SIDES = ("seen", "unseen")
CLAP_SPACE = "student, own CLAP space"


def _metrics(res: dict) -> dict[str, float]:
    a2i = ((res.get("audio_to_image") or {}).get("all") or {}).get("ranks", {}).get("species", {})
    zs, kn = res.get("zero_shot_focal") or {}, res.get("knn") or {}
    out = {"map": a2i.get("map"), "chance_map": a2i.get("chance_map"), "recall@1": a2i.get("recall@1"),
           "knn@1": kn.get("knn@1"), "zs_top1": zs.get("top1"), "chance_top1": zs.get("chance_top1")}
    return {k: float(v) for k, v in out.items() if v is not None}


def run_metrics(results: dict) -> dict[str, dict[str, dict[str, float]]]:
    """``{side: {method: {metric: value}}}`` of one run's unseen split (seen = the species distillation heard)."""
    un = results.get("unseen") or {}
    out: dict = {}
    for side, key, clap in (("seen", "seen_methods", "seen_clap_space"), ("unseen", "methods", "clap_space")):
        out[side] = {m: _metrics(r) for m, r in (un.get(key) or {}).items() if m != "distilled (heard all species)"}
        if un.get(clap):
            out[side][CLAP_SPACE] = _metrics(un[clap])
    return out


def _stat(values: list[float]) -> dict:
    v = [x for x in values if x is not None and not math.isnan(x)]
    if not v:
        return {"mean": float("nan"), "sd": float("nan"), "n": 0, "values": values}
    return {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "n": len(v), "values": values}


def aggregate(per_run: dict[float, list[dict]]) -> dict:
    """``{fraction: {side: {method: {metric: {mean, sd, n, values}}}}}`` over the seeds."""
    table: dict = {}
    for frac, runs in per_run.items():
        table[frac] = {}
        for side in SIDES:
            methods = list(dict.fromkeys(m for r in runs for m in r.get(side, {})))
            table[frac][side] = {m: {k: _stat([r.get(side, {}).get(m, {}).get(k) for r in runs]) for k in METRICS}
                                 for m in methods}
    return table


def check_targets(table: dict, candidates: list[str]) -> list[dict]:
    """The issue's targets per fraction and candidate, with the margin (positive: met)."""
    rows = []
    for frac, sides in table.items():
        seen, unseen = sides.get("seen", {}), sides.get("unseen", {})
        plain, zsc = seen.get("distilled", {}).get("map"), unseen.get("zero_shot_combination", {}).get("map")
        for c in candidates:
            row: dict = {"clap_known_fraction": frac, "method": c}
            if c in seen and plain:
                row["seen_map_vs_distilled"] = seen[c]["map"]["mean"] - (plain["mean"] - plain["sd"])
            if c in unseen and zsc:
                chance = unseen["zero_shot_combination"]["chance_map"]["mean"]
                row["zsc_beats_chance"] = bool(zsc["mean"] > chance)
                row["unseen_map_vs_0.9_zsc"] = unseen[c]["map"]["mean"] - 0.9 * zsc["mean"]
            for side, s in (("seen", seen), ("unseen", unseen)):
                if c in s and CLAP_SPACE in s:
                    row[f"{side}_knn1_vs_clap"] = s[c]["knn@1"]["mean"] - s[CLAP_SPACE]["knn@1"]["mean"]
            row["met"] = all(v >= 0 for k, v in row.items() if k.endswith(("_distilled", "_clap"))) and (
                not row.get("zsc_beats_chance") or row.get("unseen_map_vs_0.9_zsc", -1) >= 0)
            rows.append(row)
    return rows


def run_sweep(cfg, out: str | Path, run_eval, *, log=print) -> dict:
    from . import sweep_report
    from .write import write_outputs

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(cfg.work_dir).expanduser() if cfg.work_dir else out / "work"
    t0 = time.time()
    per_run: dict[float, list[dict]] = {}
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
            counts[f"known{frac:g}-seed{seed}"] = un.get("species_counts")
            runs.append({"clap_known_fraction": frac, "seed": seed, "dir": str(run_dir), "total_s": round(time.time() - t, 1)})
    table = aggregate(per_run)
    candidates = [m for m in cfg.methods if m.startswith("distilled_")]
    results = {"name": cfg.name, "kind": "sweep", "seeds": list(cfg.sweep.seeds),
               "clap_known_fractions": list(cfg.sweep.clap_known_fractions), "methods": list(cfg.methods),
               "table": {f"{k:g}": v for k, v in table.items()}, "targets": check_targets(table, candidates),
               "species_counts": counts, "runs": runs, "total_s": round(time.time() - t0, 1),
               "config": _config(cfg)}
    write_outputs(out, results, sweep_report.render_sweep, figures=sweep_report.figures if cfg.plots else None,
                  seconds=results["total_s"], log=log)
    return results


def _config(cfg) -> dict:
    from ..config import to_dict

    return to_dict(cfg)
