"""The phases of one evaluation; each returns its section of ``results.json``.

* :func:`main_table` — every method on every evaluation species (``main``);
* :func:`prompt_ablation` — the distilled model once per training prompt type
  (``prompt_ablation``);
* :func:`unseen_species` — the methods distilled without the held-out species, scored on
  them and on the seen ones (``unseen``); :func:`hold_out` draws and reconciles that split
  before anything is embedded or trained.

The phases share one :class:`Run` and record each distilled model they train or load in
``run.models`` (``results.json``'s ``models``). None of them writes a file:
:func:`~birdbridge.evaluate.runner.run_eval` gathers the sections and
:mod:`~birdbridge.evaluate.write` writes them, once.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..config import to_dict
from ..errors import ConfigError
from .candidates import add_candidates
from .eval_config import EvalConfig, UnseenSpec
from .models import distilled_model, given_model, model_key


@dataclass
class Run:
    """What the phases of one evaluation share."""

    cfg: EvalConfig
    setting: object  # .setting.Setting
    train_cfg: object  # the main distilled model's TrainConfig
    ev: object  # .spaces.Evaluator: every method's space, scored through one code path
    work: Path  # model cache etc.
    log: Callable[[str], None]
    models: dict = field(default_factory=dict)  # space name -> how its distilled model came to be

    @property
    def all_train(self) -> list[str]:
        return [sp.id for sp in self.setting.train_collection.species]


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


@dataclass
class HeldOut:
    """The unseen split: evaluation species seen and held out, and the training species they match."""

    seen: list[str]
    unseen: list[str]
    reconciliation: object  # .reconcile.Reconciliation


def hold_out(cfg: EvalConfig, setting) -> HeldOut:
    """Draw the unseen split and find its species in the training data (a leaking split is refused here)."""
    seen, held = unseen_split(setting.eval_collection.species, cfg.unseen)
    rec = setting.reconcile_held_out(held, cfg.unseen.ebird_taxonomy)
    if rec.unmatched and not cfg.unseen.allow_unmatched:
        by_id = setting.eval_collection.species_by_id
        names = [f"{h} ({by_id[h].scientific_name})" for h in rec.unmatched]
        raise ConfigError(f"{len(names)} held-out species match no training species by taxon id, eBird code, scientific "
                          f"or common name, so they may be in the training data under another name: "
                          f"{', '.join(names[:8])}{' ...' if len(names) > 8 else ''}; give `unseen.ebird_taxonomy` to "
                          "bridge renamed species, or set `unseen.allow_unmatched: true` if they are truly absent")
    return HeldOut(seen, held, rec)


def held_out_rows(held: HeldOut, setting) -> list[dict]:
    """The held-out list as species-list rows (``species_id``, ``scientific_name``, ``common_name``):
    the training species removed, under the training data's ids and names, then any held-out
    species found in no training species, under the evaluation's names (without an id, which
    is another dataset's). ``--exclude-species`` and ``data.exclude_species`` read it."""
    train = setting.train_collection.species_by_id
    evals = setting.eval_collection.species_by_id
    rows = [{"species_id": t, "scientific_name": train[t].scientific_name, "common_name": train[t].common_name or ""}
            for t in sorted(held.reconciliation.removed_train_ids)]
    rows += [{"species_id": "", "scientific_name": evals[h].scientific_name, "common_name": evals[h].common_name or ""}
             for h in held.reconciliation.unmatched]
    return rows


# --------------------------------------------------------------------------- phases
def main_table(run: Run, view) -> dict:
    """Every configured method on ``view`` (all evaluation species), plus CLAP's own and the teacher's spaces."""
    cfg, ev, models = run.cfg, run.ev, run.models
    main: dict = {"methods": {}, "n_species": len(view.species)}
    if not cfg.main_table:
        return main
    if "random_projection" in cfg.methods:
        ev.add_model_space("random_projection", ev.random_projection())
    if "text_mapping" in cfg.methods:
        ev.add_text_mapping("text_mapping", run.all_train)
    if "distilled" in cfg.methods:
        given = cfg.given_main_model(run.train_cfg.resolved_prompt_types)
        if given is not None:  # never train a model the config names
            model, models["distilled"] = given_model(given[0], given[1], ev.teacher.dim)
        else:
            model, models["distilled"] = distilled_model(run.setting, run.train_cfg, run.all_train, run.work, run.log)
        ev.add_model_space("distilled", model)
    plain = (model, models["distilled"]) if "distilled" in cfg.methods else None
    spaces = {m: m for m in cfg.methods} | add_candidates(ev, cfg, run.setting, run.all_train, "", run.work, run.log,
                                                          models, plain)
    for m in cfg.methods:
        main["methods"][m] = ev.score(spaces[m], view)
    main["clap_space"] = ev.score_clap(view)
    main["teacher"] = ev.score_teacher(view)
    main["pr_curves"] = {m: ev.pr_curve(spaces[m], view) for m in cfg.methods}
    return main


def prompt_ablation(run: Run, view) -> dict:
    """The distilled model once per training prompt type, scored on ``view`` with the same evaluation text."""
    cfg, ev, setting, models = run.cfg, run.ev, run.setting, run.models
    ablation: dict = {"eval_text_prompt_type": cfg.text.prompt_type, "arms": {}}
    main = models.get("distilled", {}) if "distilled" in ev.spaces else {}
    for pt in cfg.prompt_ablation:
        arm_cfg = cfg.train_config(**{**setting.train_overrides, "prompt_types": [pt]})
        name = f"distilled[{pt}]"
        # a given main model is the arm of the prompt types it records (the paper's three: `mixed`)
        given = cfg.given_arm_model(pt, main.get("prompt_types") if main.get("source") == "given" else None)
        if given is not None and main.get("source") == "given" and main.get("path") == given[0]:
            name = "distilled"  # the given main model, already embedded
        elif given is not None:
            model, models[name] = given_model(given[0], given[1], ev.teacher.dim)
            ev.add_model_space(name, model)
        elif main.get("key") is not None and main.get("key") == model_key(arm_cfg, run.all_train, setting):
            name = "distilled"  # this arm is the main model: same recipe, already embedded
        else:
            model, models[name] = distilled_model(setting, arm_cfg, run.all_train, run.work, run.log)
            ev.add_model_space(name, model)
        ablation["arms"][pt] = ev.score(name, view)
    return ablation


def curve_point(seen: dict, unseen: dict) -> dict:
    """One point of an alpha curve: A->I mAP and kNN@1 on each side."""
    def pick(res: dict, key: str):
        if key == "map":
            return ((res.get("audio_to_image") or {}).get("all") or {}).get("ranks", {}).get("species", {}).get("map")
        return (res.get("knn") or {}).get(key)

    return {"seen": pick(seen, "map"), "unseen": pick(unseen, "map"),
            "seen_knn@1": pick(seen, "knn@1"), "unseen_knn@1": pick(unseen, "knn@1")}


def unseen_species(run: Run, held: HeldOut) -> dict:
    """The methods distilled on the seen species only, scored on the held-out and on the seen species."""
    cfg, ev, setting, models, log = run.cfg, run.ev, run.setting, run.models, run.log
    rec = held.reconciliation
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
        model, models["distilled[seen]"] = distilled_model(setting, run.train_cfg, train_ids, run.work, log)
    ev.add_model_space("distilled[seen]", model)
    if "text_mapping" in cfg.methods:
        ev.add_text_mapping("text_mapping[seen]", train_ids)
    if "random_projection" in cfg.methods and "random_projection" not in ev.spaces:
        ev.add_model_space("random_projection", ev.random_projection())
    curves: dict = {}
    arms = {"random_projection": "random_projection", "text_mapping": "text_mapping[seen]",
            "zero_shot_combination": "zero_shot_combination", "distilled": "distilled[seen]",
            **add_candidates(ev, cfg, setting, train_ids, "[seen]", run.work, log, models,
                             (model, models["distilled[seen]"]), curves)}
    arms = {m: sp for m, sp in arms.items() if m in cfg.methods or m == "distilled"}
    seen, unseen_ids = held.seen, held.unseen
    unseen = {"split": to_dict(cfg.unseen), "seen_species": seen, "unseen_species": unseen_ids, "held_out_list": "unseen_species.csv",
              "n_train_species": len(train_ids), "reconciliation": s,
              "species_counts": species_counts(seen, unseen_ids, setting.meta.get("clap_known_species")),
              "methods": {}, "seen_methods": {}}
    view, seen_view = ev.view(unseen_ids), ev.view(seen)
    for m, space in arms.items():
        unseen["methods"][m] = ev.score(space, view)
        unseen["seen_methods"][m] = ev.score(space, seen_view)
    # distilled_wise's alpha curve: {alpha: {seen, unseen: A->I mAP, seen_knn@1, unseen_knn@1}}
    unseen["curves"] = {m: {a: curve_point(ev.score(sp, seen_view), ev.score(sp, view)) for a, sp in pts.items()}
                        for m, pts in curves.items()}
    if "distilled" in ev.spaces:  # reference: the model that did hear these species
        unseen["methods"]["distilled (heard all species)"] = ev.score("distilled", view)
    if "zero_shot_combination" in cfg.methods:  # CLAP choosing among all species, as the combinations do
        ev.add_zero_shot_combination("zero_shot_combination[all]", all_species=True)
        for key, v in (("methods", view), ("seen_methods", seen_view)):
            unseen[key]["zero_shot_combination (all species)"] = ev.score("zero_shot_combination[all]", v)
    unseen["clap_space"] = ev.score_clap(view)
    unseen["seen_clap_space"] = ev.score_clap(seen_view)
    return unseen
