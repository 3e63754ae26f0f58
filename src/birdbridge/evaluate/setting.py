"""What an evaluation runs on: collections, models and soundscapes, real or synthetic.

``prepare_setting`` turns the data part of an :class:`~birdbridge.evaluate.eval_config.EvalConfig`
into a :class:`Setting`. For ``synthetic:`` it builds (or reuses) the demo's world,
teacher and student with the demo's own functions (:mod:`birdbridge.distill.standins`),
and writes synthetic soundscapes; for real data it loads the named collections through
``load_collection`` and the soundscape loader. Everything downstream only sees the
:class:`Setting`.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..data.records import Collection
from ..errors import ConfigError
from ..io import atomic_write_json

SYNTHETIC_RECIPE = 2  # bump when the synthetic generation changes, so stale work dirs are rebuilt


@dataclass
class Setting:
    train_collection: Collection
    eval_collection: Collection
    student: str  # CLAP model id or directory (the student before distillation)
    teacher: str
    cache_dir: str  # teacher text-embedding cache
    fingerprint: str  # identifies the data + models, part of every model cache key
    soundscapes: object | None = None  # birdbridge.data.soundscapes.Soundscapes
    window_s: float | None = None
    hop_s: float | None = None
    max_files: int | None = None
    train_overrides: dict = field(default_factory=dict)
    reuse_model_dir: str | None = None  # a demo's distilled model, usable when its recipe matches
    meta: dict = field(default_factory=dict)

    def prebuilt_model(self, train_cfg, train_species: list[str], runtime_keys) -> Path | None:
        """The reused demo model when it was trained with exactly this recipe on all species."""
        if self.reuse_model_dir is None:
            return None
        cfg_path = Path(self.reuse_model_dir) / "config.json"
        if not cfg_path.is_file() or sorted(train_species) != sorted(sp.id for sp in self.train_collection.species):
            return None
        saved = json.loads(cfg_path.read_text())
        want = {k: v for k, v in dataclasses.asdict(train_cfg).items() if k not in runtime_keys and k not in ("student", "teacher")}
        have = {k: v for k, v in (saved.get("training") or {}).items() if k in want}
        from ..encoders.hub import normalise_model_id
        from ..encoders.identity import identify, recorded, same_teacher

        same_models = (normalise_model_id(saved.get("student_id")) == normalise_model_id(train_cfg.student)
                       and same_teacher(recorded(saved, cfg_path.parent), identify(train_cfg.teacher)))
        return Path(self.reuse_model_dir) if have == want and same_models else None

    def reconcile_held_out(self, held_eval_ids: list[str], ebird_taxonomy: str | None = None):
        """Which training species are the held-out evaluation species (see :mod:`.reconcile`).

        Names are bridged through an eBird taxonomy: ``ebird_taxonomy``, else the soundscapes'."""
        from .reconcile import reconcile

        ebird = None
        if ebird_taxonomy:
            from ..data.soundscapes import load_taxonomy

            ebird = load_taxonomy(ebird_taxonomy)
        elif self.soundscapes is not None:
            ebird = self.soundscapes.taxonomy
        return reconcile(self.eval_collection.species, self.train_collection.species, held_eval_ids,
                         same_collection=self.train_collection is self.eval_collection, ebird=ebird)

    def describe(self) -> dict:
        sc = self.soundscapes
        return {
            "train_collection": {"name": self.train_collection.name, "n_species": len(self.train_collection.species),
                                 "n_audio": len(self.train_collection.audio), "n_skipped_rows": len(self.train_collection.skips)},
            "eval_collection": {"name": self.eval_collection.name, "n_species": len(self.eval_collection.species),
                                "n_audio": len(self.eval_collection.audio), "n_images": len(self.eval_collection.images),
                                "n_skipped_rows": len(self.eval_collection.skips)},
            "student": self.student,
            "teacher": self.teacher,
            "soundscapes": None if sc is None else {"n_files": len(sc.files), "n_events": len(sc.events),
                                                    "n_species": len(sc.collection.species), "label_space": sc.label_space,
                                                    "n_events_outside_label_space": sc.n_events_outside_label_space,
                                                    "unknown_codes": sc.unknown_codes,
                                                    "window_s": self.window_s, "hop_s": self.hop_s},
            **self.meta,
        }


def _load_data(spec, role: str) -> Collection:
    from ..data.loaders import load_collection

    opts = dict(spec.options)
    if spec.media_root is not None:
        opts["media_root"] = spec.media_root
    try:
        # scoring needs a species per item: a folder's loose files have none
        return load_collection(spec.kind, spec.path, **opts).labelled()
    except TypeError as err:  # an option the loader does not take
        raise ConfigError(f"{role}.options: {err}") from None


def _student_window_s(student: str) -> float:
    from ..encoders.clap import load_clap

    _, fe = load_clap(student)
    return float(fe.nb_max_samples) / float(fe.sampling_rate)


def _real(cfg, work: Path, log) -> Setting:
    train_cfg = cfg.train_config()
    eval_coll = _load_data(cfg.eval_data, "eval_data")
    train_coll = _load_data(cfg.train_data, "train_data") if cfg.train_data is not None else eval_coll
    sc = None
    if cfg.soundscapes is not None:
        from ..data.soundscapes import load_soundscapes_any

        s = cfg.soundscapes
        if not s.annotations:
            raise ConfigError("config key 'soundscapes.annotations' must name an annotations CSV")
        opts: dict = {}  # label space: the annotated species, or the config's class list
        if s.class_list:
            from ..data.soundscapes import read_class_list

            opts["classes"] = read_class_list(s.class_list)
        if s.taxonomy:
            opts["taxonomy_csv"] = s.taxonomy
        if s.audio_root:
            opts["audio_root"] = s.audio_root
        sc = load_soundscapes_any(s.annotations, **opts)
    fp = json.dumps([cfg.train_data and dataclasses.asdict(cfg.train_data), dataclasses.asdict(cfg.eval_data)], default=str)
    return Setting(train_coll, eval_coll, train_cfg.student, train_cfg.teacher, train_cfg.cache_dir, fp, sc,
                   window_s=cfg.soundscapes.window_s if sc else None,
                   hop_s=(cfg.soundscapes.hop_s or cfg.soundscapes.window_s) if sc else None,
                   max_files=cfg.soundscapes.max_files if sc else None)


def _generate_synthetic(spec, base: Path, log) -> Path:
    """The demo's steps 1-3: world, teacher (tiny open_clip), student (tiny CLAP); the student's folder.

    World and teacher do not depend on ``clap_known_fraction``: runs that differ only in
    it share them, each with its own student (``student`` at 1.0, ``student-known<f>``)."""
    from ..data.synthetic import SyntheticWorld, load_world
    from ..distill.standins import pretrain_clap, train_teacher

    import torch

    stamp = {"recipe": SYNTHETIC_RECIPE, "seed": spec.seed, "teacher_steps": spec.teacher_steps}
    stamp_path = base / "stamp.json"
    if stamp_path.is_file() and json.loads(stamp_path.read_text()) == stamp:
        log(f"reusing synthetic world and teacher in {base}")
    else:
        if base.exists():
            shutil.rmtree(base)
        torch.manual_seed(spec.seed)
        log(f"generating synthetic world (seed {spec.seed}) and pretraining the teacher in {base}")
        SyntheticWorld(spec.seed).write(base / "world")
        train_teacher(load_world(base / "world"), base / "teacher", steps=spec.teacher_steps, seed=spec.seed)
        atomic_write_json(stamp_path, stamp)  # last: marks the folder complete
    frac = spec.clap_known_fraction
    student = base / ("student" if frac == 1.0 else f"student-known{frac:g}")
    s_stamp = {**stamp, "clap_steps": spec.clap_steps, "clap_known_fraction": frac}
    s_stamp_path = student.with_name(student.name + ".stamp.json")
    if s_stamp_path.is_file() and json.loads(s_stamp_path.read_text()) == s_stamp:
        log(f"reusing synthetic student {student}")
        return student
    for d in (student, student.with_name(student.name + "-tokenizer")):
        if d.exists():
            shutil.rmtree(d)
    torch.manual_seed(spec.seed)
    world = SyntheticWorld(spec.seed)
    known = world.clap_known_species(frac)
    log(f"pretraining the synthetic CLAP ({len(known)} of {len(world.species)} species named in its captions) -> {student}")
    pretrain_clap(load_world(base / "world"), world, student, steps=spec.clap_steps, seed=spec.seed, known=known)
    atomic_write_json(s_stamp_path, s_stamp)
    return student


def _synthetic(cfg, work: Path, log) -> Setting:
    from ..data.soundscapes import load_soundscape_annotations
    from ..data.synthetic import SyntheticWorld, load_world
    from ..data.synthetic_soundscapes import SoundscapeSpec, write_synthetic_soundscapes

    spec = cfg.synthetic
    if spec.reuse:
        base = Path(spec.reuse).expanduser()
        for sub, name in (("world", "world.csv"), ("teacher", "open_clip_config.json"), ("student", "config.json")):
            if not (base / sub / name).is_file():
                raise ConfigError(f"config key 'synthetic.reuse': {base} has no {sub}/{name} (expected a `birdbridge demo --out` folder)")
        res = base / "results.json"
        if res.is_file() and json.loads(res.read_text()).get("seed", spec.seed) != spec.seed:
            raise ConfigError(f"config key 'synthetic.seed' is {spec.seed} but {base} was built with another seed")
        if spec.clap_known_fraction != 1.0:
            raise ConfigError("config key 'synthetic.reuse': a demo's CLAP heard every species name; "
                              "drop 'reuse' to pretrain one with 'clap_known_fraction' below 1")
        student_dir = base / "student"
    else:
        base = work / "synthetic"
        student_dir = _generate_synthetic(spec, base, log)
    cache_dir = str(work / "cache")  # never write into a reused folder
    coll = load_world(base / "world")
    student, teacher = str(student_dir), str(base / "teacher")
    sc, window_s = None, None
    if spec.soundscapes is not None:
        s = spec.soundscapes
        window_s = s.window_s or _student_window_s(student)
        sdir = work / "soundscapes" / f"seed{spec.seed}-n{s.n_files}-d{s.duration_s:g}"
        if not (sdir / "annotations.csv").is_file():
            world = SyntheticWorld(spec.seed)
            write_synthetic_soundscapes(world, [sp.id for sp in world.species], sdir,
                                        SoundscapeSpec(n_files=s.n_files, duration_s=s.duration_s), seed=spec.seed)
        sc = load_soundscape_annotations(sdir / "annotations.csv", sdir / "taxonomy.csv", sdir / "soundscape_data")
    overrides = {"student": student, "teacher": teacher, "cache_dir": cache_dir, "progress": False}
    for k, v in (("accelerator", "cpu"), ("devices", 1), ("num_workers", 0)):
        if k not in cfg.train:
            overrides[k] = v
    model_dir = base / "model"
    fp = json.dumps({"synthetic": dataclasses.asdict(spec), "base": str(base.resolve())}, default=str)
    return Setting(coll, coll, student, teacher, cache_dir, fp, sc, window_s=window_s, hop_s=window_s,
                   train_overrides=overrides, reuse_model_dir=str(model_dir) if spec.reuse and model_dir.is_dir() else None,
                   meta={"synthetic_dir": str(base), "clap_known_fraction": spec.clap_known_fraction,
                         "clap_known_species": sorted(SyntheticWorld(spec.seed).clap_known_species(spec.clap_known_fraction))})


def prepare_setting(cfg, work: Path, log=print) -> Setting:
    work.mkdir(parents=True, exist_ok=True)
    return _synthetic(cfg, work, log) if cfg.synthetic is not None else _real(cfg, work, log)
