"""Methods for species distillation never heard (issue 17), built as spaces like any other.

* ``distilled_aligned`` — distilled with the auxiliary CLAP-space terms that keep the
  tower's audio–text alignment (config key ``aligned``: TrainConfig keys over ``train``,
  default ``clap_alignment_weight: 1``, ``clap_feature_weight: 1``; see
  :mod:`birdbridge.distill.clap_align`).
* ``distilled_combined`` — the same model carrying the confidence-weighted zero-shot
  combination over the evaluation's species list (config key ``combination``; see
  :mod:`birdbridge.encoders.combination`). It is embedded through the model's own forward
  pass, i.e. exactly what ``search``/``detect``/``serve`` compute with that checkpoint.

* ``distilled_ensemble`` — the plain ``distilled`` model carrying the same combination, but
  with CLAP's posterior from a frozen copy of the CLAP tower as loaded: an output-space
  ensemble of the fine-tuned and the zero-shot model (Wortsman et al., CVPR 2022, compare
  output ensembling with WiSE-FT), two tower passes per window instead of one.

* ``distilled_wise`` — LP-FT then WiSE-FT (:mod:`birdbridge.distill.start`): the head starts
  from text alone over the evaluation's whole species list (seen and unseen names), so step 0 is
  a zero-shot model in the teacher's space (``head: zero_shot``, the default: exactly the
  ``zero_shot_combination``; or ``head: linear`` + ``head_init: text_map``, the text-mapping fit);
  fine-tuned on the seen species as ``distilled``; the saved weights are
  ``(1 − α)·θ₀ + α·θ_ft`` (config key ``wise``: TrainConfig keys over ``train``). The α curve
  (``wise_curve``) is traced from the two end points the training keeps, with no retraining.
* ``distilled_zscl`` — the same start, fine-tuned with ZSCL's term keeping the start's similarity
  distributions over every species' teacher text on unlabeled reference audio (in the synthetic
  world: the training clips of all species, labels dropped; config key ``zscl``).

All use the evaluation's CLAP text recipe (``clap_text``) and, for the combination, its
teacher text recipe (``text``), the ones the ``zero_shot_combination`` baseline uses.
"""

from __future__ import annotations

from pathlib import Path

CANDIDATES = ("distilled_aligned", "distilled_combined", "distilled_ensemble", "distilled_wise", "distilled_zscl")
DEFAULT_ALIGNED = {"clap_alignment_weight": 1.0, "clap_feature_weight": 1.0}
DEFAULT_WISE = {"head": "zero_shot", "wise_alpha": 0.5}
DEFAULT_ZSCL = {"head": "zero_shot", "zscl_weight": 1.0}


def start_train_config(cfg, setting, defaults: dict, over: dict):
    """The TrainConfig of the arms that start from a zero-shot model: ``train`` + ``defaults`` + the
    config's own keys + the evaluation's CLAP caption and teacher text recipes (the combination's)."""
    recipe = {"clap_templates": list(cfg.clap_text.templates), "clap_prompt_types": list(cfg.clap_text.prompt_types),
              "head_prompt_type": cfg.text.prompt_type, "head_template_set": cfg.text.template_set}
    return cfg.train_config(**{**setting.train_overrides, **recipe, **defaults, **over})


def _start_arms(ev, cfg, setting, train_ids, suffix, work, log, models, wanted, species, curves) -> dict[str, str]:
    """``distilled_wise`` (and its α curve into ``curves``) and ``distilled_zscl``."""
    from ..distill.start import load_ends, wise_model
    from .models import distilled_model

    def reference(tc):  # ZSCL's unlabeled audio: every species' training clips, labels dropped
        coll = setting.train_collection
        return (coll, coll.audio_split(tc.train_split)) if tc.zscl_weight > 0 else None

    out: dict[str, str] = {}
    arms = (("distilled_wise", DEFAULT_WISE, cfg.wise), ("distilled_zscl", DEFAULT_ZSCL, cfg.zscl))
    for method, defaults, over in arms:
        if method not in wanted:
            continue
        tc = start_train_config(cfg, setting, defaults, over)
        model, info = distilled_model(setting, tc, train_ids, work, log, species=species, reference=reference(tc))
        name = f"{method}{suffix}"
        models[name] = {**info, "head": tc.head, "wise_alpha": tc.wise_alpha, "zscl_weight": tc.zscl_weight}
        ev.add_model_space(name, model)
        out[method] = name
        ends = Path(info["path"]).parent / "wise"
        if method == "distilled_wise" and cfg.wise_curve and ends.is_dir():  # the curve from the kept end points
            start, finetuned = load_ends(ends.parent)
            curves[method] = {}
            for a in cfg.wise_curve:
                space = f"{method}@{a:g}{suffix}"
                ev.add_model_space(space, wise_model(model, start, finetuned, float(a)))
                curves[method][f"{a:g}"] = space
    return out


def aligned_train_config(cfg, setting):
    """The TrainConfig of the aligned arms: ``train`` + ``aligned`` + the evaluation's CLAP caption recipe."""
    over = {"clap_templates": list(cfg.clap_text.templates), "clap_prompt_types": list(cfg.clap_text.prompt_types),
            **DEFAULT_ALIGNED, **cfg.aligned}
    return cfg.train_config(**{**setting.train_overrides, **over})


def combination_spec(cfg):
    from ..config import from_dict
    from ..encoders.combination import CombinationSpec

    spec = {"teacher_prompt_type": cfg.text.prompt_type, "teacher_template_set": cfg.text.template_set, **cfg.combination}
    return from_dict(CombinationSpec, spec, where="combination.")


def add_candidates(ev, cfg, setting, train_ids: list[str], suffix: str, work: Path, log, models: dict,
                   plain=None, curves: dict | None = None) -> dict[str, str]:
    """Train (or reuse) and embed the configured candidates on ``train_ids``; ``{method: space name}``.

    ``plain``: ``(model, info)`` of the plain distilled model on the same species (``distilled_ensemble``);
    ``curves``: filled with ``{method: {alpha: space name}}`` (``distilled_wise``'s α curve)."""
    from ..encoders.combination import ClapTower, build_combination
    from ..encoders.species_text import ClapTextRecipe
    from .models import distilled_model

    wanted = [m for m in CANDIDATES if m in cfg.methods]
    if not wanted:
        return {}
    species = list(setting.eval_collection.species)  # the label space a user's checkpoint would carry
    by_id = setting.train_collection.species_by_id

    def combination(student_id: str):
        return build_combination(student_id, species, ev.teacher_text(species), combination_spec(cfg),
                                 ClapTextRecipe(list(cfg.clap_text.templates), list(cfg.clap_text.prompt_types)),
                                 heard_species=[by_id[i] for i in train_ids], clap_text_encoder=ev.clap_text)

    out = _start_arms(ev, cfg, setting, train_ids, suffix, work, log, models, wanted, species,
                      curves if curves is not None else {})
    if "distilled_ensemble" in wanted and plain is not None:
        comb = combination(setting.student).with_tower(ClapTower.copy_of(ev.clap_embedder.model))
        name = f"distilled_ensemble{suffix}"
        models[name] = {**plain[1], "combination": {k: v for k, v in comb.config().items() if k != "species"}}
        ev.add_model_space(name, plain[0].with_combination(comb))
        out["distilled_ensemble"] = name
    if not {"distilled_aligned", "distilled_combined"} & set(wanted):
        return out
    train_cfg = aligned_train_config(cfg, setting)
    model, info = distilled_model(setting, train_cfg, train_ids, work, log)
    if "distilled_aligned" in wanted:
        name = f"distilled_aligned{suffix}"
        models[name] = info
        ev.add_model_space(name, model)
        out["distilled_aligned"] = name
    if "distilled_combined" in wanted:
        comb = combination(train_cfg.student)
        name = f"distilled_combined{suffix}"
        models[name] = {**info, "combination": {k: v for k, v in comb.config().items() if k != "species"}}
        ev.add_model_space(name, model.with_combination(comb))
        out["distilled_combined"] = name
    return out
