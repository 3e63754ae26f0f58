"""The sweep's report.md (mean ± sd tables, targets) and its plot (unseen.png); :mod:`.write` writes them."""

from __future__ import annotations

import math

from .sweep_table import CLAP_SPACE, SIDES

COLUMNS = (("map", "A→I mAP"), ("recall@1", "R@1"), ("knn@1", "kNN@1"), ("zs_top1", "ZS top-1"))


def _ms(stat: dict | None) -> str:
    if not stat or stat.get("n", 0) == 0 or math.isnan(stat.get("mean", float("nan"))):
        return "–"
    return f"{stat['mean']:.3f} ± {stat['sd']:.3f}"


def _chance(methods: dict, key: str) -> str:
    first = next(iter(methods.values()), {})
    return _ms(first.get(key))


def render_sweep(results: dict) -> str:
    seeds, fracs = results["seeds"], results["clap_known_fractions"]
    lines = [f"# {results['name']}: seen and unseen species, by how many species names the CLAP knows", "",
             f"Every number is the mean ± sd over seeds {', '.join(map(str, seeds))} (world, unseen split and "
             "distillation all seeded by the run's seed). *Seen*: the species distillation heard; *unseen*: the species "
             "held out of distillation (split `one_per_genus` unless configured otherwise). Each method is trained on the "
             "seen species only and scored on both. `zero_shot_combination` and ZS top-1 choose among the scored side's "
             "species only; `distilled_combined`/`distilled_ensemble` carry CLAP's posterior over *every* species of the world (the list "
             "their checkpoints hold), as the heads of `distilled_wise`/`distilled_zscl` choose among every species, and are embedded through their own forward pass, as `search` would; "
             "`zero_shot_combination (all species)` is the baseline choosing among every species too. "
             f"`{CLAP_SPACE}`: the student before distillation (kNN and CLAP zero-shot only).", ""]
    for frac in fracs:
        key = f"{frac:g}"
        counts = [c for k, c in (results.get("species_counts") or {}).items() if k.startswith(f"known{key}-") and c]
        c0 = counts[0] if counts else {}
        known = ", ".join(f"{c.get('n_seen_clap_known', '?')}/{c.get('n_unseen_clap_known', '?')}" for c in counts)
        lines += [f"## CLAP knows {frac:g} of the species names", "",
                  f"{c0.get('n_seen', '?')} seen and {c0.get('n_unseen', '?')} unseen species per seed; of them, named in "
                  f"the CLAP's captions (seen/unseen, per seed): {known or '–'}.", ""]
        for side in SIDES:
            methods = results["table"][key][side]
            header = ["method", *[c for _, c in COLUMNS]]
            rows = [[m, *[_ms(v.get(k)) for k, _ in COLUMNS]] for m, v in methods.items()]
            rows.append(["*chance*", _chance(methods, "chance_map"), "", "", _chance(methods, "chance_top1")])
            lines += [f"**{side} species**", "", "| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
            lines += ["| " + " | ".join(r) + " |" for r in rows] + [""]
    lines += ["## Targets", "",
              "Margins (positive = met): seen A→I mAP minus (plain distilled's mean − its sd); unseen A→I mAP minus 0.9 × "
              "the zero-shot combination's (only a target where the combination beats chance); kNN@1 minus the student's "
              "own CLAP space's.", ""]
    rows = []
    for t in results.get("targets", []):
        f = lambda k: "–" if k not in t else f"{t[k]:+.3f}"  # noqa: E731
        zsc = "" if "zsc_beats_chance" not in t else ("" if t["zsc_beats_chance"] else " (ZSC at chance: no target)")
        rows.append(f"| {t['clap_known_fraction']:g} | {t['method']} | {f('seen_map_vs_distilled')} | "
                    f"{f('unseen_map_vs_0.9_zsc')}{zsc} | {f('seen_knn1_vs_clap')} | {f('unseen_knn1_vs_clap')} | "
                    f"{'yes' if t['met'] else 'no'} |")
    lines += ["| known | method | seen mAP | unseen mAP | seen kNN@1 | unseen kNN@1 | all met |",
              "|---|---|---:|---:|---:|---:|---|", *rows, ""]
    lines += _curve_lines(results)
    lines += ["Runs: " + ", ".join(f"{r['dir'].split('/')[-1]} {r['total_s']} s" for r in results.get("runs", [])),
              "", f"Total: {results.get('total_s')} s.", ""]
    return "\n".join(lines)


def _curve_lines(results: dict) -> list[str]:
    curves = results.get("curves") or {}
    if not any(curves.values()):
        return []
    lines = ["## WiSE-FT: seen and unseen A→I mAP along the interpolation", "",
             "θ_α = (1 − α)·θ₀ + α·θ_ft: α = 0 is the start (the zero-shot model in the teacher's space), α = 1 the "
             "fine-tuned model. hmean: harmonic mean of seen and unseen mAP (per run, then mean ± sd). The configured "
             "α was chosen on a seed that is not reported; what these seeds alone would choose is shown below.", ""]
    for frac, per in curves.items():
        for m, pts in per.items():
            lines += [f"**{m}, CLAP knows {frac}**", "", "| α | seen | unseen | hmean | seen kNN@1 | unseen kNN@1 |",
                      "|---:|---:|---:|---:|---:|---:|"]
            lines += [f"| {a} | {_ms(r['seen'])} | {_ms(r['unseen'])} | {_ms(r['hmean'])} | {_ms(r['seen_knn@1'])} | "
                      f"{_ms(r['unseen_knn@1'])} |" for a, r in pts.items()] + [""]
    for m, c in (results.get("alpha_choice") or {}).items():
        lines += [f"{m}: these seeds' best α by harmonic mean (averaged over fractions) is {c['alpha']:g} "
                  f"({c['hmean']:.3f}).", ""]
    return lines


def plot_curves(results: dict):
    """Seen and unseen mAP against α, one panel per CLAP-known fraction (distilled_wise)."""
    from matplotlib.figure import Figure

    curves = {f: per for f, per in (results.get("curves") or {}).items() if per}
    fig = Figure(figsize=(5 * max(1, len(curves)), 4))
    axes = fig.subplots(1, max(1, len(curves)), sharey=True, squeeze=False)[0]
    for ax, (frac, per) in zip(axes, curves.items()):
        for m, pts in per.items():
            alphas = [float(a) for a in pts]
            for side, style in (("seen", "o-"), ("unseen", "s--"), ("hmean", "^:")):
                mean = [pts[a][side]["mean"] for a in pts]
                sd = [pts[a][side]["sd"] for a in pts]
                ax.errorbar(alphas, mean, yerr=sd, fmt=style, capsize=3, label=f"{m} {side}")
        ax.set_title(f"CLAP knows {frac} of the names")
        ax.set_xlabel("α (0: start, 1: fine-tuned)")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("audio → image mAP (species)")
    axes[-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def plot_sweep(results: dict):
    """A→I mAP (mean ± sd) against the CLAP-known fraction, seen and unseen species side by side."""
    from matplotlib.figure import Figure

    fracs = results["clap_known_fractions"]
    fig = Figure(figsize=(10, 4))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, side in zip(axes, SIDES):
        methods = [m for m in results["table"][f"{fracs[0]:g}"][side] if m != CLAP_SPACE]
        for m in methods:
            mean = [results["table"][f"{f:g}"][side].get(m, {}).get("map", {}).get("mean", float("nan")) for f in fracs]
            sd = [results["table"][f"{f:g}"][side].get(m, {}).get("map", {}).get("sd", 0.0) for f in fracs]
            ax.errorbar(fracs, mean, yerr=sd, marker="o", capsize=3, label=m)
        chance = [next(iter(results["table"][f"{f:g}"][side].values()), {}).get("chance_map", {}).get("mean") for f in fracs]
        ax.plot(fracs, chance, "k--", lw=1, label="chance")
        ax.set_title(f"{side} species")
        ax.set_xlabel("share of species names the CLAP knows")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("audio → image mAP (species)")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def figures(results: dict) -> dict:
    """The sweep's plot by file name."""
    out = {"unseen.png": plot_sweep(results)}
    if any((results.get("curves") or {}).values()):
        out["wise.png"] = plot_curves(results)
    return out
