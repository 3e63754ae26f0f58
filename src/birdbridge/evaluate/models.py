"""The distilled models an evaluation scores: given, reused, cached or trained here.

A model trained here is cached under ``work_dir/models/<key>`` (key = training recipe +
training species + data), so a re-run, or an ablation arm equal to the main model, does not
train again. Training runs in this process on one device (see
:func:`~birdbridge.evaluate.eval_config.check_one_device`); multi-GPU models come in as
checkpoints (``distilled_model:``), trained with ``birdbridge train`` under torchrun/SLURM.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path

from ..errors import ConfigError
from ..quiet import lightning_logs_quiet
from .eval_config import RUNTIME_KEYS


def model_key(train_cfg, train_species: list[str], setting, extra=None) -> str:
    """``extra``: what else the training reads (the head's species list, the reference audio)."""
    recipe = {k: v for k, v in dataclasses.asdict(train_cfg).items() if k not in RUNTIME_KEYS}
    recipe["prompt_types"] = list(train_cfg.resolved_prompt_types)  # [mixed] trains what its three types train
    parts = [recipe, sorted(train_species), setting.fingerprint] + ([extra] if extra else [])
    h = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def _info_from_meta(model) -> dict:
    training = model.meta.get("training") or {}
    recipe = model.meta.get("prompt_recipe") or {}
    return {"prompt_types": recipe.get("prompt_types") or ([recipe["prompt_type"]] if recipe.get("prompt_type") else None),
            "encoder_mode": training.get("encoder_mode", "eval (trained before encoder_mode existed)")
            if training else None,
            "n_train_species": len(model.meta["train_species"]) if model.meta.get("train_species") else None,
            "student_id": model.meta.get("student_id"), "teacher_id": model.meta.get("teacher_id")}


def given_model(path: str, key: str, teacher_dim: int, *, forbidden: set[str] | None = None) -> tuple[object, dict]:
    """Load a checkpoint named in the config; refuse one that does not fit this evaluation.

    ``forbidden``: training-collection ids the model must not have trained on (the held-out
    species of the unseen split); the checkpoint's recorded training species are checked."""
    from ..encoders.student import DistilledModel, is_distilled_checkpoint

    local = Path(path).expanduser()
    if local.exists() and not is_distilled_checkpoint(local):
        raise ConfigError(f"config key {key!r}: {path} is not a birdbridge distilled checkpoint (config.json + model.safetensors)")
    model = DistilledModel.from_pretrained(str(local) if local.exists() else path)
    if model.dim != teacher_dim:
        raise ConfigError(f"config key {key!r}: {path} maps audio to {model.dim}-d, but this evaluation's teacher "
                          f"space is {teacher_dim}-d (distilled onto another teacher?)")
    if forbidden is not None:
        heard = model.meta.get("train_species")
        if heard is None:
            raise ConfigError(f"config key {key!r}: {path} does not record its training species, so it cannot be "
                              "checked against the held-out species; retrain it with this birdbridge")
        leaked = sorted(forbidden & set(heard))
        if leaked:
            raise ConfigError(f"config key {key!r}: {path} was trained on {len(leaked)} held-out species "
                              f"(training ids {', '.join(leaked[:5])}); train it without them")
    return model.eval(), {**_info_from_meta(model), "source": "given", "path": str(path), "train_s": 0.0}


def distilled_model(setting, train_cfg, train_species: list[str], work: Path, log, *, species=None,
                    reference=None) -> tuple[object, dict]:
    """Train (or reuse) a distilled model on ``train_species`` of the training collection.

    ``species``: the head's species list, ``reference``: ``(collection, items)`` of unlabeled audio
    for ZSCL (:func:`~birdbridge.distill.train.distill`); both are part of the model's key."""
    from ..distill.train import distill
    from ..encoders.student import DistilledModel, is_distilled_checkpoint

    extra = {}
    if species is not None:
        extra["head_species"] = [sp.id for sp in species]
    if reference is not None:
        extra["reference"] = sorted(str(it.path) for it in reference[1])
    key = model_key(train_cfg, train_species, setting, extra)
    ckpt = work / "models" / key / "train" / "model"
    info = {"key": key, "prompt_types": list(train_cfg.resolved_prompt_types), "encoder_mode": train_cfg.encoder_mode
            if not train_cfg.freeze_encoder else "eval (frozen)", "n_train_species": len(train_species)}
    prebuilt = setting.prebuilt_model(train_cfg, train_species, RUNTIME_KEYS)
    for source, path in (("reused", prebuilt), ("cached", ckpt)):
        if path is not None and is_distilled_checkpoint(path):
            log(f"{source} distilled model {path}")
            return DistilledModel.from_pretrained(path), {**info, "source": source, "path": str(path), "train_s": 0.0}
    coll = setting.train_collection
    if len(train_species) < len(coll.species):
        coll = coll.subset_species(train_species)
    # The folder is keyed by the recipe, species and data, so a last.ckpt there is this very
    # training, interrupted (a killed eval): go on from it, as `birdbridge train --resume` does.
    last = ckpt.parent / "checkpoints" / "last.ckpt"
    resumed = last.is_file()
    log(f"distilling ({'+'.join(train_cfg.resolved_prompt_types)}, {len(train_species)} species) -> {ckpt}"
        + (f", resuming from {last}" if resumed else ""))
    t0 = time.time()
    with lightning_logs_quiet():  # once per arm they would bury the run's own lines
        model = distill(coll, train_cfg, ckpt.parent, resume=resumed, species=species, reference=reference)
    return model.eval(), {**info, "source": "trained", "path": str(ckpt), "train_s": round(time.time() - t0, 2),
                          "resumed": resumed}


def trained_models(models: dict) -> list[dict]:
    """What this evaluation trained (``results.json``'s ``trained_models``): one entry per
    training, with the spaces that use it, its output folder and wall time; [] when every
    model was given, reused or cached."""
    out: dict[str, dict] = {}
    for name, info in models.items():
        if info.get("source") != "trained":
            continue
        entry = out.setdefault(info["path"], {
            "name": name, "used_by": [], "output_dir": str(Path(info["path"]).parent), "wall_time_s": info.get("train_s"),
            "prompt_types": info.get("prompt_types"), "n_train_species": info.get("n_train_species"),
            "resumed": bool(info.get("resumed"))})
        entry["used_by"].append(name)
    return list(out.values())
