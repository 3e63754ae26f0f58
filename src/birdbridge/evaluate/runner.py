"""``birdbridge eval CONFIG --out DIR``: one config → every method × protocol → results.

The config (:mod:`~birdbridge.evaluate.eval_config`) names the data (or ``synthetic:`` for
the offline world), the distillation hyper-parameters, the methods, the prompt-type
ablation and the unseen-species split. Every method becomes a *space*: teacher-space unit
rows for each audio set (test clips, reference clips, soundscape windows), row-aligned
with the items; the protocols then score all spaces through one code path. Distilled
models are given in the config or trained here, on one device
(:mod:`~birdbridge.evaluate.models`).
"""

from __future__ import annotations

import dataclasses
import os
import platform
import random
import time
from pathlib import Path

from ..config import to_dict
from ..errors import ConfigError
from . import protocols
from .eval_config import GIVEN_MODEL_HINT, METHODS, EvalConfig, UnseenSpec, load_eval_config
from .candidates import add_candidates
from .models import distilled_model, given_model, model_key
from .setting import prepare_setting


# --------------------------------------------------------------------------- species splits
def unseen_split(species, spec: UnseenSpec) -> tuple[list[str], list[str]]:
    """``(seen_ids, unseen_ids)``; ``one_per_genus`` holds out one species of every genus with >= 2."""
    rng = random.Random(spec.seed)
    if spec.split == "one_per_genus":
        by_genus: dict[str, list[str]] = {}
        for sp in species:
            by_genus.setdefault(sp.genus, []).append(sp.id)
        unseen = sorted(rng.choice(sorted(ids)) for ids in by_genus.values() if len(ids) >= 2)
    else:
        ids = sorted(sp.id for sp in species)
        unseen = sorted(rng.sample(ids, max(1, int(round(spec.fraction * len(ids))))))
    if not unseen or len(unseen) == len(species):
        raise ConfigError(f"unseen split {spec.split!r} leaves no seen or no unseen species ({len(species)} species)")
    return [sp.id for sp in species if sp.id not in set(unseen)], unseen


def species_counts(seen: list[str], unseen: list[str], clap_known: list[str] | None) -> dict:
    """How many species each side of the split has, and how many of them the CLAP knows by name."""
    out = {"n_seen": len(seen), "n_unseen": len(unseen)}
    if clap_known is not None:
        known = set(clap_known)
        out |= {"n_seen_clap_known": len(known & set(seen)), "n_unseen_clap_known": len(known & set(unseen))}
    return out


# --------------------------------------------------------------------------- the run
def refuse_multi_process() -> None:
    """An evaluation launched once per process (torchrun, srun) would run whole once per rank."""
    world = os.environ.get("WORLD_SIZE", "1")
    if world.isdigit() and int(world) > 1:
        raise ConfigError(f"birdbridge eval runs as one process, but it was launched as {world} (WORLD_SIZE): "
                          f"run it without torchrun/srun; for multi-GPU distillation, {GIVEN_MODEL_HINT}")


def run_eval(config: EvalConfig | str | Path, out: str | Path, *, root: str | Path | None = None, log=print) -> dict:
    """Run every configured method and protocol; write results.json, report.md and plots to ``out``.

    ``root`` is where ``birdbridge data download`` put the datasets: the config's relative
    data paths are read below it.
    """
    import torch

    from . import report
    from .spaces import Evaluator
    from .write import write_outputs

    cfg = config.with_root(root) if isinstance(config, EvalConfig) else load_eval_config(config, root)
    refuse_multi_process()
    if cfg.sweep is not None:
        from .sweep import run_sweep

        return run_sweep(cfg, out, run_eval, log=log)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(cfg.work_dir).expanduser() if cfg.work_dir else out / "work"
    timings: dict[str, float] = {}
    t_start = time.time()
    torch.manual_seed(cfg.seed)

    setting = prepare_setting(cfg, work, log)
    timings["setup_s"] = time.time() - t_start
    train_cfg = cfg.train_config(**setting.train_overrides)
    if cfg.unseen is not None:  # before any embedding or training: a leaking split is refused
        seen, held = unseen_split(setting.eval_collection.species, cfg.unseen)
        rec = setting.reconcile_held_out(held, cfg.unseen.ebird_taxonomy)
    ev = Evaluator(cfg, setting, train_cfg, log)
    timings["embed_shared_s"] = ev.timings.get("shared_s", 0.0)
    all_train = [sp.id for sp in setting.train_collection.species]
    models: dict[str, dict] = {}

    t0 = time.time()
    main_view = ev.view(None)
    main: dict = {"methods": {}, "n_species": len(main_view.species)}
    if "zero_shot_combination" in cfg.methods:
        ev.add_zero_shot_combination("zero_shot_combination")
    if cfg.main_table:
        if "random_projection" in cfg.methods:
            ev.add_model_space("random_projection", ev.random_projection())
        if "text_mapping" in cfg.methods:
            ev.add_text_mapping("text_mapping", all_train)
        if "distilled" in cfg.methods:
            if cfg.distilled_model:
                model, models["distilled"] = given_model(cfg.distilled_model, "distilled_model", ev.teacher.dim)
            else:
                model, models["distilled"] = distilled_model(setting, train_cfg, all_train, work, log)
            ev.add_model_space("distilled", model)
        plain = (model, models["distilled"]) if "distilled" in cfg.methods else None
        spaces = {m: m for m in cfg.methods} | add_candidates(ev, cfg, setting, all_train, "", work, log, models, plain)
        for m in cfg.methods:
            main["methods"][m] = ev.score(spaces[m], main_view)
        main["clap_space"] = ev.score_clap(main_view)
        main["teacher"] = ev.score_teacher(main_view)
        main["pr_curves"] = {m: ev.pr_curve(spaces[m], main_view) for m in cfg.methods}
    timings["main_s"] = time.time() - t0

    ablation: dict = {}
    if cfg.prompt_ablation and cfg.main_table:
        t0 = time.time()
        ablation = {"eval_text_prompt_type": cfg.text.prompt_type, "arms": {}}
        for pt in cfg.prompt_ablation:
            arm_cfg = cfg.train_config(**{**setting.train_overrides, "prompt_types": [pt]})
            name = f"distilled[{pt}]"
            if pt in cfg.ablation_models:
                model, models[name] = given_model(cfg.ablation_models[pt], f"ablation_models.{pt}", ev.teacher.dim)
                ev.add_model_space(name, model)
            elif models.get("distilled", {}).get("key") == model_key(arm_cfg, all_train, setting):
                name = "distilled"  # this arm is the main model: same recipe, already embedded
            else:
                model, models[name] = distilled_model(setting, arm_cfg, all_train, work, log)
                ev.add_model_space(name, model)
            ablation["arms"][pt] = ev.score(name, main_view)
        timings["ablation_s"] = time.time() - t0

    unseen: dict = {}
    if cfg.unseen is not None:
        t0 = time.time()
        removed = rec.removed_train_ids
        train_ids = [sp.id for sp in setting.train_collection.species if sp.id not in removed]
        s = rec.summary()
        log(f"unseen split: {s['n_matched']} of {s['n_held_out']} held-out species found in the training data "
            f"({', '.join(f'{n} by {m}' for m, n in s['matched_by'].items()) or 'none'}), {s['n_unmatched']} not found; "
            f"{len(removed)} training species removed")
        if cfg.unseen.distilled_model:
            model, models["distilled[seen]"] = given_model(cfg.unseen.distilled_model, "unseen.distilled_model",
                                                           ev.teacher.dim, forbidden=removed)
        else:
            model, models["distilled[seen]"] = distilled_model(setting, train_cfg, train_ids, work, log)
        ev.add_model_space("distilled[seen]", model)
        if "text_mapping" in cfg.methods:
            ev.add_text_mapping("text_mapping[seen]", train_ids)
        if "random_projection" in cfg.methods and "random_projection" not in ev.spaces:
            ev.add_model_space("random_projection", ev.random_projection())
        arms = {"random_projection": "random_projection", "text_mapping": "text_mapping[seen]",
                "zero_shot_combination": "zero_shot_combination", "distilled": "distilled[seen]",
                **add_candidates(ev, cfg, setting, train_ids, "[seen]", work, log, models,
                                 (model, models["distilled[seen]"]))}
        arms = {m: sp for m, sp in arms.items() if m in cfg.methods or m == "distilled"}
        unseen = {"split": to_dict(cfg.unseen), "seen_species": seen, "unseen_species": held,
                  "n_train_species": len(train_ids), "reconciliation": s,
                  "species_counts": species_counts(seen, held, setting.meta.get("clap_known_species")),
                  "methods": {}, "seen_methods": {}}
        view, seen_view = ev.view(held), ev.view(seen)
        for m, space in arms.items():
            unseen["methods"][m] = ev.score(space, view)
            unseen["seen_methods"][m] = ev.score(space, seen_view)
        if "distilled" in ev.spaces:  # reference: the model that did hear these species
            unseen["methods"]["distilled (heard all species)"] = ev.score("distilled", view)
        if "zero_shot_combination" in cfg.methods:  # CLAP choosing among all species, as the combinations do
            ev.add_zero_shot_combination("zero_shot_combination[all]", all_species=True)
            for key, v in (("methods", view), ("seen_methods", seen_view)):
                unseen[key]["zero_shot_combination (all species)"] = ev.score("zero_shot_combination[all]", v)
        unseen["clap_space"] = ev.score_clap(view)
        unseen["seen_clap_space"] = ev.score_clap(seen_view)
        timings["unseen_s"] = time.time() - t0

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
        "models": models,
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


__all__ = ["EvalConfig", "METHODS", "load_eval_config", "run_eval", "unseen_split", "protocols", "UnseenSpec"]
