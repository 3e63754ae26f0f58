"""Distillation as one function: collection + config in, checkpoint directory out."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import torch

from ..config import from_dict
from ..data.audio import TRAINING_PAD
from ..data.records import Collection
from ..encoders.clap import load_clap
from ..devices import check_accelerator
from ..encoders import hub
from ..encoders.heads import HeadSpec
from ..encoders.identity import identify
from ..encoders.species_text import ClapTextRecipe, cached_teacher_text, clap_species_text
from ..encoders.student import AudioStudent, DistilledModel
from ..errors import BadInputError, ConfigError, SkipLog
from ..io import atomic_write_json
from ..quiet import lightning_fit, settle_lightning
from .config import TrainConfig
from .items import ValidationData, training_items, validation_data  # noqa: F401 - training_items: the CLI's preflight

TRAINING_NAME = "training.json"  # in OUT/model: the run's length and its model selection


def _precision(cfg: TrainConfig) -> str:
    if cfg.precision != "auto":
        return cfg.precision
    if torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"  # CPU autocast to bf16 is slower than fp32 on most CPUs


def check_padding(padding: str, student_id: str) -> None:
    """Training pads short crops by ``TRAINING_PAD`` before the front end; evaluation pads by the
    extractor's own mode. Both must be the same rule, or short clips differ between the two."""
    if padding != TRAINING_PAD:
        raise ConfigError(f"{student_id}: its feature extractor pads short clips with {padding!r}, but training "
                          f"pads them with {TRAINING_PAD!r} (data.audio.pad_to_length): set \"padding\": "
                          f"\"{TRAINING_PAD}\" in its preprocessor_config.json")


def build_student(cfg: TrainConfig, out_dim: int, species=None, heard_species=None) -> AudioStudent:
    """The student as distillation starts it: CLAP's audio tower and a new head, the head filled
    from text over ``species`` for a zero_shot head or ``head_init: text_map`` (distill/start.py);
    ``heard_species``: those with training audio (default: all of ``species``)."""
    clap, fe = load_clap(cfg.student)
    spec = HeadSpec(kind=cfg.head, out_dim=out_dim, hidden_dim=cfg.head_hidden_dim)
    if cfg.head == "zero_shot":
        from ..encoders.combination import species_records

        spec.species = species_records(species)
    student = AudioStudent.from_clap(clap, fe, spec)
    check_padding(student.frontend.padding, cfg.student)
    if cfg.head == "zero_shot" or cfg.head_init == "text_map":
        from .start import init_head

        init_head(student, cfg, species, heard_species)
    return student


def clap_species_table(cfg: TrainConfig, species) -> tuple[torch.Tensor, float]:
    """The frozen CLAP text rows of ``species`` (captions: ``clap_templates`` x ``clap_prompt_types``) and CLAP's scale."""
    from ..encoders.text import ClapTextEncoder

    enc = ClapTextEncoder.load(cfg.student)
    return torch.from_numpy(clap_species_text(enc, species, cfg.clap_templates, cfg.clap_prompt_types)), enc.logit_scale


def combination_for(cfg: TrainConfig, species, teacher_text=None, heard_species=()):
    """The zero-shot combination over ``species`` a checkpoint carries (``cfg.combination``'s spec).

    ``teacher_text``: the teacher's rows of ``species`` (default: from the text cache, in the
    spec's prompt type and template set)."""
    from ..encoders.combination import CombinationSpec, build_combination

    spec = from_dict(CombinationSpec, cfg.combination or {}, where="combination.")
    if teacher_text is None:
        pt = spec.teacher_prompt_type
        teacher_text = cached_teacher_text(cfg.teacher, species, [pt], spec.teacher_template_set, cfg.cache_dir)[pt].numpy()
    comb = build_combination(cfg.student, species, teacher_text, spec,
                             ClapTextRecipe(list(cfg.clap_templates), list(cfg.clap_prompt_types)),
                             heard_species=heard_species)
    if spec.tower == "original":  # CLAP's posterior from the tower as loaded, before distillation
        from ..encoders.combination import ClapTower

        clap, _ = load_clap(cfg.student)
        comb.with_tower(ClapTower(clap.audio_model, clap.audio_projection))
    return comb


def species_text_embeddings(cfg: TrainConfig, collection: Collection) -> dict[str, torch.Tensor]:
    """The distillation targets: ``{prompt type: [S, D] teacher rows}`` of the collection's species, from the cache."""
    # a cache miss embeds every species prompt: on the GPU when training will use one
    device = "cuda" if cfg.uses_gpu() and torch.cuda.is_available() else "cpu"
    return cached_teacher_text(cfg.teacher, collection.species, cfg.resolved_prompt_types, cfg.template_set,
                               cfg.cache_dir, device=device)


def _all_ranks_skips(skips: SkipLog) -> SkipLog:
    """Every rank's skips, in rank order (this process's own when there is no process group)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return skips
    lists: list = [None] * dist.get_world_size()
    dist.all_gather_object(lists, skips.to_list())
    return SkipLog.from_list(s for part in lists for s in part)


def _trainer(cfg: TrainConfig, out_dir: Path, callbacks: list, steps_per_epoch: int):
    import lightning as L
    from lightning.pytorch.loggers import CSVLogger

    from ..quiet import verbose
    from .progress import StepProgress

    # Lightning's own bar (v_num, per-epoch redraws) only with --verbose; else birdbridge's (distill/progress.py)
    lightning_bar = cfg.progress and verbose()
    return L.Trainer(
        max_epochs=cfg.max_epochs, accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes,
        strategy=cfg.strategy, precision=_precision(cfg), logger=CSVLogger(out_dir, name="logs"),
        callbacks=callbacks + ([StepProgress()] if cfg.progress and not lightning_bar else []),
        enable_progress_bar=lightning_bar, enable_model_summary=False,
        log_every_n_steps=min(cfg.log_every_n_steps, steps_per_epoch), deterministic="warn",
        # validation is a callback (distill/validation.py), not Lightning's loop
        num_sanity_val_steps=0, limit_val_batches=0,
        use_distributed_sampler=False,  # DistillData's sampler shards each epoch itself
        # BatchNorm statistics over the global batch under DDP (Lightning applies this only
        # with more than one process). torch's SyncBatchNorm runs on GPUs only: CPU (gloo)
        # runs keep per-rank batch statistics, and DDP broadcasts rank 0's running ones.
        sync_batchnorm=cfg.uses_gpu(),
    )


def distill(collection: Collection, cfg: TrainConfig, out_dir: str | Path, *, resume: bool = False,
            validation: ValidationData | None = None, species=None, reference=None) -> DistilledModel:
    """Train the student + head on ``collection``'s train split and save ``out_dir/model``.

    ``validation``: what to validate on (:func:`~birdbridge.distill.items.validation_data` of a
    ``validation:`` block); default: the labelled rows of ``cfg.val_split``, if any. With validation
    data the run writes ``out_dir/metrics.csv`` and saves the best validation's weights
    (``out_dir/model/training.json`` says which epoch); without, the last epoch's.

    ``species``: the head's species list (``head_species``; distill/start.py), default the
    training species; ``reference``: ``(collection, items)`` of unlabeled audio for the ZSCL term
    (default: ``reference_audio``). With ``wise_alpha < 1`` the saved weights are interpolated
    between the start and the fine-tuned model, both kept in ``out_dir/wise/``."""
    import lightning as L
    from .checkpointing import GlobalStepCheckpoint
    from .datamodule import DistillData
    from .module import DistillModule

    check_accelerator(cfg.accelerator, cfg.devices)  # before any model loads: one line, not a traceback
    settle_lightning()  # its INFO banners only with --verbose
    out_dir = Path(out_dir)
    train_items = training_items(collection, cfg)  # before any model loads: a data mistake fails at once
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    text = species_text_embeddings(cfg, collection)
    out_dim = next(iter(text.values())).shape[1]
    from . import start as st

    species = st.head_species(cfg, collection, species) if st.needs_species(cfg) else None
    if cfg.zscl_weight > 0 and reference is None:
        if not cfg.reference_audio:
            raise ConfigError("config key 'zscl_weight' > 0 needs 'reference_audio' (unlabeled recordings)")
        ref_coll = st.load_reference(cfg.reference_audio)
        reference = (ref_coll, ref_coll.audio)
    torch.manual_seed(cfg.seed)  # head init independent of what the teacher load consumed
    heard = {it.species_id for it in train_items}
    student = build_student(cfg, out_dim, species, [sp for sp in collection.species if sp.id in heard])
    theta0 = st.state_copy(student) if cfg.wise_alpha < 1 else None
    vdata = validation if validation is not None else validation_data(collection, cfg)
    data = DistillData(collection, train_items, vdata.audio if vdata else [], sample_rate=student.sample_rate,
                       n_samples=student.window_samples, batch_size=cfg.batch_size, num_workers=cfg.num_workers,
                       seed=cfg.seed, cache_decoded=cfg.cache_decoded_audio,
                       val_collection=vdata.collection if vdata else None)
    # one-process count; under DDP the module reads per-rank steps from the trainer
    steps_per_epoch = data.steps_per_epoch()
    clap_text, clap_scale = (None, 1.0)
    if cfg.clap_alignment_weight > 0:
        clap_text, clap_scale = clap_species_table(cfg, collection.species)
    zscl = None
    ref_skips = SkipLog()
    if cfg.zscl_weight > 0:
        waves = st.reference_pool(reference[0], reference[1], student.sample_rate, student.window_samples,
                                  max_clips=cfg.reference_max_clips, seed=cfg.seed, skips=ref_skips)
        start_out, clip_weights = st.start_outputs(student, waves, cfg.batch_size, cfg.zscl_gate,
                                                     cfg.zscl_gate_power)
        zscl = st.ZsclTerm(waves, start_out, st.head_teacher_rows(cfg, species), weight=cfg.zscl_weight,
                           scale=1.0 / (cfg.zscl_temperature or cfg.init_temperature), batch_size=cfg.zscl_batch_size or cfg.batch_size,
                           seed=cfg.seed, clip_weights=clip_weights)
    module = DistillModule(student, text, cfg, total_steps=steps_per_epoch * cfg.max_epochs,
                           clap_text=clap_text, clap_logit_scale=clap_scale, zscl=zscl)
    module.skips.skips.extend(ref_skips.skips)  # unreadable reference recordings count like bad clips
    # spaced in global optimizer steps, fixed once the trainer knows its world size (checkpointing.py)
    ckpt = GlobalStepCheckpoint(dirpath=out_dir / "checkpoints", save_last=True, save_top_k=0,
                                every_n_steps=cfg.checkpoint_every_n_steps, steps_per_epoch=data.steps_per_epoch)
    val = None
    if vdata is not None:
        from .validation import Validation

        val = Validation(vdata, data.val_ds, [s.id for s in collection.species], out_dir=out_dir,
                         every_n_epochs=cfg.val_every_n_epochs or 1, batch_size=cfg.batch_size,
                         num_workers=cfg.num_workers, teacher=cfg.teacher)
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    try:
        trainer = _trainer(cfg, out_dir, [ckpt] + ([val] if val is not None else []), steps_per_epoch)
    except MisconfigurationException as err:  # e.g. more devices than the node has, a bad strategy
        raise ConfigError(f"Lightning refused the training setup: {str(err).splitlines()[0]}") from None
    last = out_dir / "checkpoints" / "last.ckpt"
    with lightning_fit(eval_mode_intended=module.encoder_mode == "eval"):
        trainer.fit(module, datamodule=data, ckpt_path=str(last) if resume and last.exists() else None)
    if val is not None:
        val.restore_best(module)  # the best validation's weights and temperature, not the last epoch's
    # the teacher as it is (weights fingerprint + absolute id), so the model and any index
    # built with it agree from any directory and after the folders move (encoders/identity.py)
    meta = {
        "student_id": hub.normalise_model_id(cfg.student),
        **identify(cfg.teacher).to_meta(),
        "prompt_recipe": {"prompt_types": list(cfg.resolved_prompt_types), "template_set": cfg.template_set},
        # lets an evaluation check that a given model never heard its held-out species
        "train_species": sorted({it.species_id for it in train_items}),
        "training": {k: v for k, v in asdict(cfg).items() if k not in ("student", "teacher")},
        # the temperature distillation learned: detect/search softmax cosines at it (retrieval/confidence.py)
        "logit_scale": round(float(module.logit_scale().detach()), 6),
        "trained_on": {"dataset": collection.name, "synthetic": collection.name == "synthetic"},
    }
    model = DistilledModel.from_student(module.student.cpu(), meta).eval()
    if theta0 is not None:  # WiSE-FT: every weight between the start and the fine-tuned model
        finetuned = st.state_copy(model)
        model.load_state_dict(st.interpolate(theta0, finetuned, cfg.wise_alpha))
        if trainer.global_rank == 0:
            st.save_ends(out_dir, theta0, finetuned)
    if cfg.combination is not None:
        species = collection.species
        if cfg.combination_species:
            from ..data.species_list import load_species_list

            species = load_species_list(cfg.combination_species)
        model = model.with_combination(combination_for(cfg, species, heard_species=collection.species))
    skips = _all_ranks_skips(module.skips)  # under DDP each rank met its own bad clips
    if trainer.global_rank == 0:
        skips.write_json(out_dir / "skipped.json", steps_without_clips=module.steps_without_clips)
    resumed = resume and last.exists()
    # Lightning advances global_step even for skipped steps, so it cannot tell a run that
    # trained from one that saw only bad files
    if module.trained_batches == 0 and not resumed:
        # every batch held only bad clips: an untrained model must not look like a result
        raise BadInputError("no_training_audio", detail=f"no training step ran; {skips.summary()} "
                                                        f"(listed in {out_dir / 'skipped.json'})")
    if trainer.global_rank == 0:
        model.save_pretrained(out_dir / "model")
        atomic_write_json(out_dir / "model" / TRAINING_NAME, {
            "epochs": cfg.max_epochs, "global_steps": int(trainer.global_step),
            "selected": "best_val_map" if val is not None and val.best_epoch is not None else "last_epoch",
            **(val.summary() if val is not None else {"best_epoch": None, "best_val_map": None, "validation": None})})
    return model
