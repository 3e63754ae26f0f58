"""``report.md`` (paper-style tables) and the plots of an evaluation's ``results.json``.

The markdown is rendered from the results dict only, so a report can be regenerated
from a saved ``results.json``. Plots are matplotlib ``Figure`` objects (the object API:
no pyplot state, no display needed); :mod:`.write` saves them with the rest.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np


# --------------------------------------------------------------------------- helpers
def _get(d: Any, *path, default=None):
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return default
        d = d[p]
    return d


def _f(x) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|---" + "|---:" * (len(header) - 1) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return out + [""]


def _sp(res: dict, direction: str, rank: str = "species", source: str | None = None) -> dict:
    if direction == "audio_to_image":
        base = _get(res, "audio_to_image", "by_source", source) if source else _get(res, "audio_to_image", "all")
    else:
        base = _get(res, direction)
    return _get(base, "ranks", rank, default={}) or {}


def _sources(results: dict) -> list[str]:
    methods = _get(results, "main", "methods", default={}) or {}
    first = next(iter(methods.values()), {})
    return sorted(_get(first, "audio_to_image", "by_source", default={}) or {})


LABEL_SPACES = {"annotated": "the species annotated in the dataset", "class_list": "the configured class list",
                "taxonomy": "every species of the taxonomy"}


# --------------------------------------------------------------------------- markdown
def _setup_lines(results: dict) -> list[str]:
    recipe = results.get("training_recipe") or {}
    lines = []
    if recipe:
        lines.append(f"Distillation: audio encoder in **{recipe.get('encoder_mode')}** mode while training; training "
                     f"prompt types **{', '.join(recipe.get('prompt_types') or [])}** (one drawn per clip).")
    models = results.get("models") or {}
    if models:
        lines.append("Models: " + "; ".join(
            f"{name} {m.get('source')}" + (f" ({m.get('path')})" if m.get("source") == "given" else "")
            + (f", encoder mode {m.get('encoder_mode')}" if m.get("source") == "given" else "") for name, m in models.items()) + ".")
    if "trained_models" in results:
        trained = results["trained_models"]
        lines.append("Trained by this run: " + ("; ".join(
            f"{t['name']}" + (f" (also {', '.join(t['used_by'][1:])})" if len(t.get("used_by") or []) > 1 else "")
            + f" in {t['output_dir']}, {t['wall_time_s']:.0f} s" + (", resumed" if t.get("resumed") else "")
            for t in trained) if trained else "nothing (every model was given, reused or cached)") + ".")
    return lines + [""] if lines else []


def _reconciliation_lines(rec: dict | None) -> list[str]:
    if not rec:
        return []
    by = ", ".join(f"{n} by {m.replace('_', ' ')}" for m, n in rec.get("matched_by", {}).items()) or "none"
    missing = rec.get("unmatched") or []
    return [f"Held-out species reconciled with the training data: **{rec.get('n_matched')} of {rec.get('n_held_out')} "
            f"found** ({by}), **{rec.get('n_unmatched')} not found**"
            + (f" ({', '.join(missing[:10])}{' …' if len(missing) > 10 else ''})" if missing else "")
            + f"; {rec.get('n_train_species_removed')} training species removed. Of all {rec.get('n_eval_species')} "
            f"evaluation species, {rec.get('n_eval_species_in_training')} are in the training data.", ""]



def _retrieval_table(methods: dict, sources: list[str], chance_from: dict | None) -> list[str]:
    header = ["method", "A→I mAP", *[f"mAP {s}" for s in sources], "R@1", "R@5", "R@10"]
    rows = []
    for name, res in methods.items():
        m = _sp(res, "audio_to_image")
        rows.append([name, _f(m.get("map")), *[_f(_sp(res, "audio_to_image", source=s).get("map")) for s in sources],
                     _f(m.get("recall@1")), _f(m.get("recall@5")), _f(m.get("recall@10"))])
    if chance_from:
        m = _sp(chance_from, "audio_to_image")
        rows.append(["*chance*", _f(m.get("chance_map")),
                     *[_f(_sp(chance_from, "audio_to_image", source=s).get("chance_map")) for s in sources], "", "", ""])
    return _table(header, rows)


def _rank_table(methods: dict, ranks: list[str]) -> list[str]:
    rows = [[name, *[_f(_sp(res, "audio_to_image", r).get("map")) for r in ranks]] for name, res in methods.items()]
    first = next(iter(methods.values()), None)
    if first:
        rows.append(["*chance*", *[_f(_sp(first, "audio_to_image", r).get("chance_map")) for r in ranks]])
    return _table(["method", *[f"{r} mAP" for r in ranks]], rows)


def _classification_table(methods: dict, knn_ks: list[int], clap: dict | None) -> list[str]:
    header = ["method", "I→A mAP", "T→A mAP", *[f"kNN@{k}" for k in knn_ks], "ZS top-1", "ZS top-5",
              "SS cmAP", "SS AUROC", "SS top-1"]
    rows = []
    items = list(methods.items()) + ([("student, own CLAP space (before distillation)", clap)] if clap else [])
    for name, res in items:
        zs, ss, kn = res.get("zero_shot_focal", {}), res.get("zero_shot_soundscape", {}), res.get("knn", {})
        rows.append([name, _f(_sp(res, "image_to_audio").get("map")) if "image_to_audio" in res else "–",
                     _f(_sp(res, "text_to_audio").get("map")) if "text_to_audio" in res else "–",
                     *[_f(kn.get(f"knn@{k}")) for k in knn_ks], _f(zs.get("top1")), _f(zs.get("top5")),
                     _f(ss.get("cmap")), _f(ss.get("macro_auroc")), _f(ss.get("top1_any_positive"))])
    first = next(iter(methods.values()), {})
    zs, ss = first.get("zero_shot_focal", {}), first.get("zero_shot_soundscape", {})
    rows.append(["*chance*", _f(_sp(first, "image_to_audio").get("chance_map")), _f(_sp(first, "text_to_audio").get("chance_map")),
                 *[""] * len(knn_ks), _f(zs.get("chance_top1")), "", _f(ss.get("chance_cmap")), "0.500", ""])
    return _table(header, rows)


def _left_out_lines(methods: dict) -> list[str]:
    lines = []
    for name, res in methods.items():
        m = _sp(res, "audio_to_image")
        n_out = m.get("n_queries_without_relevant", 0)
        lines.append(f"- {name}: {m.get('n_queries_scored', 0)} queries scored, {n_out} left out of mAP/R@k "
                     f"(no relevant image), {res.get('n_queries_skipped', 0)} skipped (unreadable audio)")
    return lines


def render_markdown(results: dict) -> str:
    main = results.get("main", {})
    methods = main.get("methods", {})
    cfg = results.get("config", {})
    st = results.get("setting", {})
    ev, tr = st.get("eval_collection", {}), st.get("train_collection", {})
    first = next(iter(methods.values()), {})
    a2i = _sp(first, "audio_to_image")
    lines = [
        f"# {results.get('name', 'evaluation')}: audio → image retrieval and zero-shot evaluation",
        "",
        f"Seed {results.get('seed')}. Distilled on **{tr.get('name')}** ({tr.get('n_species')} species, "
        f"{tr.get('n_audio')} recordings); evaluated on **{ev.get('name')}** split `{cfg.get('eval_split')}` "
        f"({main.get('n_species')} species, {a2i.get('n_queries', first.get('n_queries', 0))} audio queries, "
        f"{_get(first, 'audio_to_image', 'all', 'n_gallery', default=0)} images). Teacher `{st.get('teacher')}`, "
        f"student `{st.get('student')}`. Text queries and zero-shot use the teacher's "
        f"`{_get(cfg, 'text', 'prompt_type')}` prompts (`{_get(cfg, 'text', 'template_set')}` templates).",
        "",
        *_setup_lines(results),
        "## Audio → image retrieval (relevant = same species)",
        "",
        *_retrieval_table(methods, _sources(results), first or None),
        "## Audio → image retrieval at coarser ranks",
        "",
        *_rank_table(methods, list(cfg.get("ranks", ["species"]))),
        "## Other directions and classification",
        "",
        "I→A: image → audio, T→A: teacher species text → audio (species mAP). kNN: test clips against "
        f"`{cfg.get('reference_split')}` clips in each method's space. ZS: zero-shot against species texts "
        "(class-averaged top-k). SS: soundscape windows, BirdSet metrics (top-1 over windows with a call).",
        "",
        *_classification_table(methods, list(cfg.get("knn_ks", [1])), main.get("clap_space")),
        f"Teacher text → image (species mAP, method-independent): "
        f"{_f(_get(main, 'teacher', 'text_to_image', 'ranks', 'species', 'map'))}.",
        "",
    ]
    sc = st.get("soundscapes")
    if sc:
        ss = first.get("zero_shot_soundscape", {})
        n_unknown = sum((sc.get("unknown_codes") or {}).values())
        lines += [f"Soundscapes: {sc.get('n_files')} files, {sc.get('n_events')} events, {sc.get('window_s')} s windows "
                  f"({ss.get('n_windows', 0)} windows, {ss.get('n_no_call_windows', 0)} without a call). Label space: "
                  f"**{sc.get('n_species')} classes** ({LABEL_SPACES.get(sc.get('label_space'), sc.get('label_space'))}); "
                  f"{sc.get('n_events_outside_label_space', 0)} events outside it, {n_unknown} with a code not in the "
                  "taxonomy's species.", ""]
    abl = results.get("prompt_ablation") or {}
    if abl.get("arms"):
        lines += ["## Prompt-type ablation (distilled, training prompt type varied)", "",
                  f"Evaluation text prompts stay `{abl.get('eval_text_prompt_type')}` for every arm.", ""]
        rows = []
        for pt, res in abl["arms"].items():
            m = _sp(res, "audio_to_image")
            label = "mixed (common, scientific, taxonomic: the paper's)" if pt == "mixed" else pt
            rows.append([label, _f(m.get("map")), _f(m.get("recall@1")), _f(_sp(res, "audio_to_image", "genus").get("map")),
                         _f(res.get("zero_shot_focal", {}).get("top1")), _f(res.get("knn", {}).get("knn@1")),
                         _f(res.get("zero_shot_soundscape", {}).get("cmap"))])
        lines += _table(["training prompts", "A→I mAP", "R@1", "genus mAP", "ZS top-1", "kNN@1", "SS cmAP"], rows)
    un = results.get("unseen") or {}
    if un.get("methods"):
        lines += ["## Unseen species", "",
                  f"Distilled on {un.get('n_train_species')} species; scored on {len(un.get('unseen_species', []))} species "
                  f"never heard in distillation (split `{_get(un, 'split', 'split')}`); zero-shot picks among the unseen "
                  "species only. The text mapping is fitted on the seen species' prompts.", "",
                  *_reconciliation_lines(un.get("reconciliation"))]
        c = un.get("species_counts") or {}
        if "n_seen_clap_known" in c:
            lines += [f"The CLAP knows the names of {c['n_seen_clap_known']} of the {c['n_seen']} seen and "
                      f"{c['n_unseen_clap_known']} of the {c['n_unseen']} unseen species.", ""]
        for title, key, clap in (("unseen species", "methods", "clap_space"), ("seen species", "seen_methods", "seen_clap_space")):
            if not un.get(key):
                continue
            rows = []
            items = list(un[key].items()) + ([("student, own CLAP space", un[clap])] if un.get(clap) else [])
            for name, res in items:
                m = _sp(res, "audio_to_image")
                zs = res.get("zero_shot_focal", {})
                rows.append([name, _f(m.get("map")), _f(m.get("chance_map")), _f(m.get("recall@1")),
                             _f(zs.get("top1")), _f(zs.get("chance_top1")), _f(res.get("knn", {}).get("knn@1"))])
            lines += [f"**{title}**", ""]
            lines += _table(["method", "A→I mAP", "chance mAP", "R@1", "ZS top-1", "chance top-1", "kNN@1"], rows)
    lines += ["## Counts", "", *_left_out_lines(methods), ""]
    t = results.get("timings_s", {})
    if t:
        lines += ["Timings (s): " + ", ".join(f"{k} {v}" for k, v in t.items()), ""]
    v = results.get("versions", {})
    if v:
        lines += ["Versions: " + ", ".join(f"{k} {val}" for k, val in v.items() if k != "platform"), ""]
    return "\n".join(lines)


# --------------------------------------------------------------------------- plots
def plot_per_species_ap(methods: dict):
    from matplotlib.figure import Figure

    per = {m: _sp(r, "audio_to_image").get("per_class_ap", {}) for m, r in methods.items()}
    species = sorted({s for d in per.values() for s in d})
    fig = Figure(figsize=(max(6, 0.35 * len(species) * max(1, len(per)) / 2), 4.5))
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(per))
    x = np.arange(len(species))
    for i, (m, d) in enumerate(per.items()):
        ax.bar(x + i * width, [d.get(s, np.nan) for s in species], width, label=m)
    ax.set_xticks(x + 0.4 - width / 2, species, rotation=75, ha="right", fontsize=7)
    ax.set_ylabel("audio → image AP")
    ax.set_ylim(0, 1)
    ax.set_title("Per-species audio → image average precision")
    ax.legend(fontsize=7)
    return fig


def plot_similarity(sim: dict):
    from matplotlib.figure import Figure

    m = np.asarray(sim["matrix"])
    fig = Figure(figsize=(6.5, 5.5))
    ax = fig.add_subplot()
    im = ax.imshow(m, aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=ax, label="cosine similarity")
    for labels, line in ((sim["query_labels"], ax.axhline), (sim["gallery_labels"], ax.axvline)):
        for i in range(1, len(labels)):
            if labels[i] != labels[i - 1]:
                line(i - 0.5, color="white", lw=0.3, alpha=0.6)
    ax.set_xlabel("gallery images (sorted by species)")
    ax.set_ylabel("audio queries (sorted by species)")
    ax.set_title(f"Query-to-gallery similarity: {sim['method']}")
    return fig


def plot_pr_curves(curves: dict):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.add_subplot()
    for name, c in curves.items():
        ax.plot(c["recall"], c["precision"], label=name)
    ax.set_xlabel("recall")
    ax.set_ylabel("interpolated precision (query-averaged)")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_title("Audio → image precision–recall")
    ax.legend(fontsize=8)
    return fig


def figures(results: dict, plot_data: dict) -> dict:
    """The plots these results can draw, by file name (``plot_data``: the similarity matrix)."""
    main = results.get("main", {})
    out = {}
    if main.get("methods"):
        out["per_species_ap.png"] = plot_per_species_ap(main["methods"])
    if plot_data.get("similarity") is not None:
        out["similarity.png"] = plot_similarity(plot_data["similarity"])
    if main.get("pr_curves"):
        out["pr_curves.png"] = plot_pr_curves(main["pr_curves"])
    return out
