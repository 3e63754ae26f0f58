"""The sweep's numbers: each run's seen/unseen metrics, their mean ± sd over seeds, the targets.

Pure functions over the runs' ``results.json`` dicts: :mod:`.sweep` gathers the runs,
:mod:`.sweep_report` renders what these return.
"""

from __future__ import annotations

import math

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


def harmonic_mean(a: float | None, b: float | None) -> float:
    if a is None or b is None or math.isnan(a) or math.isnan(b) or a + b <= 0:
        return float("nan")
    return 2.0 * a * b / (a + b)


def aggregate_curves(per_run: dict[float, list[dict]]) -> dict:
    """``{fraction: {method: {alpha: {seen, unseen, hmean, seen_knn@1, unseen_knn@1: stat}}}}`` over the seeds
    (each run's ``unseen.curves``); ``hmean``: the harmonic mean of a run's seen and unseen mAP."""
    out: dict = {}
    for frac, runs in per_run.items():
        methods = list(dict.fromkeys(m for r in runs for m in r))
        out[frac] = {}
        for m in methods:
            alphas = list(dict.fromkeys(a for r in runs for a in r.get(m, {})))
            out[frac][m] = {}
            for a in alphas:
                pts = [r.get(m, {}).get(a, {}) for r in runs]
                row = {k: _stat([p.get(k) for p in pts]) for k in ("seen", "unseen", "seen_knn@1", "unseen_knn@1")}
                row["hmean"] = _stat([harmonic_mean(p.get("seen"), p.get("unseen")) for p in pts])
                out[frac][m][a] = row
    return out


def choose_alpha(curves: dict) -> dict:
    """Per method, the alpha with the best harmonic mean of seen and unseen mAP, averaged over the
    fractions (one alpha for every fraction: a user does not know how many names the CLAP knows)."""
    out: dict = {}
    methods = list(dict.fromkeys(m for per in curves.values() for m in per))
    for m in methods:
        scores: dict[str, list[float]] = {}
        for per in curves.values():
            for a, row in per.get(m, {}).items():
                scores.setdefault(a, []).append(row["hmean"]["mean"])
        mean = {a: float(np.nanmean(v)) if any(not math.isnan(x) for x in v) else float("nan") for a, v in scores.items()}
        valid = {a: v for a, v in mean.items() if not math.isnan(v)}
        if valid:
            best = max(valid, key=lambda a: (valid[a], -float(a)))
            out[m] = {"alpha": float(best), "hmean": valid[best], "by_alpha": mean}
    return out
