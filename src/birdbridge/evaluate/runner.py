"""``birdbridge eval CONFIG --out DIR``: one config → every method × protocol → results.

The config names the data (or ``synthetic:`` for the offline world), the distillation
hyper-parameters, the methods, the prompt-type ablation and the unseen-species split.
Every method becomes a *space*: teacher-space unit rows for each audio set (test clips,
reference clips, soundscape windows), row-aligned with the items; the protocols then
score all spaces through one code path. Distilled models are cached under
``work_dir/models/<key>`` (key = training recipe + training species), so a re-run, or an
ablation arm equal to the main model, does not train again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import platform
import random
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path


from ..config import from_dict, load_yaml, to_dict
from ..errors import ConfigError
from ..taxonomy import MIXED, PROMPT_TYPES, TEMPLATE_SETS
from . import protocols
from .setting import Setting, prepare_setting

METHODS = ("random_projection", "text_mapping", "zero_shot_combination", "distilled")
# TrainConfig keys that change how training runs, not what it learns: ignored in model keys.
RUNTIME_KEYS = ("cache_dir", "progress", "num_workers", "accelerator", "devices", "num_nodes", "strategy",
                "precision", "log_every_n_steps")


@dataclass
class DataSpec:
    kind: str = ""  # a birdbridge.data.generic.load_collection kind: inat_sounds, ssw60, csv, folder, synthetic
    path: str = ""
    media_root: str | None = None  # inat_sounds: folder the JSON's file_name paths are relative to
    options: dict = field(default_factory=dict)  # passed to the loader (e.g. image_sources for ssw60)

    def validate(self) -> None:
        if not self.kind or not self.path:
            raise ConfigError("a data entry needs 'kind' and 'path'")


@dataclass
class SoundscapeSpec:
    annotations: str = ""  # Cornell/Zenodo annotations.csv or a BirdSet-style segment CSV
    taxonomy: str | None = None  # eBird code -> species CSV (default: taxonomy.csv beside annotations)
    audio_root: str | None = None
    window_s: float = 5.0
    hop_s: float | None = None  # default: window_s (non-overlapping, as BirdSet)
    max_files: int | None = None


@dataclass
class SyntheticSoundscapes:
    n_files: int = 4
    duration_s: float = 30.0
    window_s: float | None = None  # default: the student's own window (1 s on the tiny CLAP)


@dataclass
class SyntheticSpec:
    seed: int = 0
    teacher_steps: int = 150  # as `birdbridge demo`
    clap_steps: int = 400
    reuse: str | None = None  # a `birdbridge demo --out` folder: reuse its world/teacher/student (+ model)
    soundscapes: SyntheticSoundscapes | None = field(default_factory=SyntheticSoundscapes)

    def validate(self) -> None:
        # The one-cycle schedules of the pretraining loops need room for warm-up and decay.
        for key in ("teacher_steps", "clap_steps"):
            if getattr(self, key) < 20:
                raise ConfigError(f"config key 'synthetic.{key}' must be at least 20, got {getattr(self, key)}")


@dataclass
class TextSpec:
    """Teacher text queries (text→audio/image, zero-shot): one embedding per species."""

    prompt_type: str = "taxonomic_common"
    template_set: str = "single"

    def validate(self) -> None:
        if self.prompt_type not in PROMPT_TYPES:
            raise ConfigError(f"config key 'text.prompt_type' must be one of {PROMPT_TYPES}, got {self.prompt_type!r}")
        if self.template_set not in TEMPLATE_SETS:
            raise ConfigError(f"config key 'text.template_set' must be one of {TEMPLATE_SETS}, got {self.template_set!r}")


@dataclass
class ClapTextSpec:
    """The student's own species prompts (zero_shot_combination, CLAP zero-shot)."""

    templates: list[str] = field(default_factory=lambda: ["{}"])
    prompt_types: list[str] = field(default_factory=lambda: ["common", "scientific"])

    def validate(self) -> None:
        bad = [p for p in self.prompt_types if p not in PROMPT_TYPES]
        if bad or not self.prompt_types:
            raise ConfigError(f"config key 'clap_text.prompt_types' must be a non-empty list from {PROMPT_TYPES}, got {self.prompt_types}")
        if not self.templates or any("{}" not in t for t in self.templates):
            raise ConfigError("config key 'clap_text.templates' must be a non-empty list of strings containing '{}'")


@dataclass
class UnseenSpec:
    split: str = "one_per_genus"  # or "random"
    fraction: float = 0.5  # "random": share of species held out
    seed: int = 0

    def validate(self) -> None:
        if self.split not in ("one_per_genus", "random"):
            raise ConfigError(f"config key 'unseen.split' must be 'one_per_genus' or 'random', got {self.split!r}")
        if not 0 < self.fraction < 1:
            raise ConfigError("config key 'unseen.fraction' must lie strictly between 0 and 1")


@dataclass
class EvalConfig:
    name: str = "eval"
    seed: int = 0
    root: str | None = None  # relative data paths below are relative to this (`eval --root` overrides it)
    synthetic: SyntheticSpec | None = None
    train_data: DataSpec | None = None  # what distillation trains on (iNatSounds train)
    eval_data: DataSpec | None = None  # what is scored (SSW60)
    soundscapes: SoundscapeSpec | None = None
    eval_split: str = "test"
    reference_split: str = "train"  # kNN reference clips
    train_preset: str | None = None  # "demo": start from birdbridge.demo.run.DEMO_TRAIN
    train: dict = field(default_factory=dict)  # TrainConfig fields (birdbridge.distill.train)
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    prompt_ablation: list[str] = field(default_factory=list)
    unseen: UnseenSpec | None = None
    text: TextSpec = field(default_factory=TextSpec)
    clap_text: ClapTextSpec = field(default_factory=ClapTextSpec)
    ridge_alpha: float = 0.01
    retrieval_ks: list[int] = field(default_factory=lambda: [1, 5, 10])
    knn_ks: list[int] = field(default_factory=lambda: [1, 5])
    ranks: list[str] = field(default_factory=lambda: ["species", "genus", "family", "order"])
    max_items_per_species: int | None = None  # cap clips/images per species and split (quick runs)
    device: str = "auto"  # embedding device: auto, cpu, cuda
    plots: bool = True
    work_dir: str | None = None  # model cache etc.; default OUT/work

    def validate(self) -> None:
        if (self.synthetic is None) == (self.eval_data is None):
            raise ConfigError("config needs exactly one of 'synthetic' or 'eval_data'")
        if self.synthetic is not None and (self.train_data is not None or self.soundscapes is not None):
            raise ConfigError("'synthetic' generates its own data: drop 'train_data' / 'soundscapes'")
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ConfigError(f"config key 'methods' has unknown method {bad[0]!r}; expected some of {METHODS}")
        bad = [p for p in self.prompt_ablation if p not in PROMPT_TYPES + (MIXED,)]
        if bad:
            raise ConfigError(f"config key 'prompt_ablation' has unknown prompt type {bad[0]!r}; expected {PROMPT_TYPES + (MIXED,)}")
        if self.train_preset not in (None, "demo"):
            raise ConfigError(f"config key 'train_preset' must be 'demo' or null, got {self.train_preset!r}")
        bad = [r for r in self.ranks if r not in ("species", "genus", "family", "order", "class")]
        if bad or "species" not in self.ranks:
            raise ConfigError(f"config key 'ranks' must include 'species' and only use species/genus/family/order/class, got {self.ranks}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ConfigError(f"config key 'device' must be auto, cpu or cuda, got {self.device!r}")
        try:
            self.train_config()  # fail now, naming the key, not after an hour of setup
        except ConfigError as err:
            if "'train." in str(err):
                raise
            raise ConfigError(f"in 'train': {err}") from None

    def train_config(self, **overrides):
        """The :class:`TrainConfig` of the main distilled model (``overrides`` for arms)."""
        from ..distill.train import TrainConfig

        base: dict = {}
        if self.train_preset == "demo":
            from ..demo.run import DEMO_TRAIN

            base.update(DEMO_TRAIN)
        base.setdefault("seed", self.seed)
        return from_dict(TrainConfig, {**base, **self.train, **overrides}, where="train.")


    def with_root(self, root: str | Path | None = None) -> "EvalConfig":
        """A copy whose relative data paths are joined to ``root`` (default: the config's own ``root``).

        What ``birdbridge data download --root DIR`` fills is then found with ``--root DIR``
        alone. Absolute paths and URLs (shards on ``s3://`` ...) stay as written; without a
        root, relative paths stay relative to the working directory.
        """
        base = root if root is not None else self.root
        if base is None:
            return self
        base = Path(base).expanduser()

        def rooted(p: str | None) -> str | None:
            if not p or "://" in p or p.startswith("local:") or Path(p).expanduser().is_absolute():
                return p
            return str(base / p)

        cfg = dataclasses.replace(self, root=str(base))
        for name in ("train_data", "eval_data"):
            if (spec := getattr(cfg, name)) is not None:
                setattr(cfg, name, dataclasses.replace(spec, path=rooted(spec.path), media_root=rooted(spec.media_root)))
        if (sc := cfg.soundscapes) is not None:
            cfg.soundscapes = dataclasses.replace(sc, annotations=rooted(sc.annotations), taxonomy=rooted(sc.taxonomy),
                                                  audio_root=rooted(sc.audio_root))
        return cfg


def load_eval_config(path: str | Path, root: str | Path | None = None) -> EvalConfig:
    """The config at ``path``, its relative data paths joined to ``root`` (or its own ``root:``)."""
    return from_dict(EvalConfig, load_yaml(path)).with_root(root)


# --------------------------------------------------------------------------- models
def _model_key(train_cfg, train_species: list[str], setting: Setting) -> str:
    recipe = {k: v for k, v in dataclasses.asdict(train_cfg).items() if k not in RUNTIME_KEYS}
    h = hashlib.sha256(json.dumps([recipe, sorted(train_species), setting.fingerprint], sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def distilled_model(setting: Setting, train_cfg, train_species: list[str], work: Path, log) -> tuple[object, dict]:
    """Train (or reuse) a distilled model on ``train_species`` of the training collection."""
    from ..distill.train import distill
    from ..encoders.student import DistilledModel, is_distilled_checkpoint

    key = _model_key(train_cfg, train_species, setting)
    ckpt = work / "models" / key / "train" / "model"
    info = {"key": key, "prompt_type": train_cfg.prompt_type, "n_train_species": len(train_species)}
    prebuilt = setting.prebuilt_model(train_cfg, train_species, RUNTIME_KEYS)
    for source, path in (("reused", prebuilt), ("cached", ckpt)):
        if path is not None and is_distilled_checkpoint(path):
            log(f"{source} distilled model {path}")
            return DistilledModel.from_pretrained(path), {**info, "source": source, "path": str(path), "train_s": 0.0}
    coll = setting.train_collection
    if len(train_species) < len(coll.species):
        coll = coll.subset_species(train_species)
    log(f"distilling ({train_cfg.prompt_type}, {len(train_species)} species) -> {ckpt}")
    t0 = time.time()
    with _quiet_training():
        model = distill(coll, train_cfg, ckpt.parent)
    return model.eval(), {**info, "source": "trained", "path": str(ckpt), "train_s": round(time.time() - t0, 2)}


@contextlib.contextmanager
def _quiet_training():
    """Lightning's INFO banners, once per arm, would bury the run's own progress lines."""
    loggers = [logging.getLogger(n) for n in ("lightning.pytorch", "lightning.fabric", "lightning")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="lightning")
            yield
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.setLevel(lvl)


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


# --------------------------------------------------------------------------- the run
def run_eval(config: EvalConfig | str | Path, out: str | Path, *, root: str | Path | None = None, log=print) -> dict:
    """Run every configured method and protocol; write results.json, report.md and plots to ``out``.

    ``root`` is where ``birdbridge data download`` put the datasets: the config's relative
    data paths are read below it.
    """
    import torch

    from ..io import atomic_write_json, atomic_write_text
    from . import report
    from .spaces import Evaluator

    cfg = config.with_root(root) if isinstance(config, EvalConfig) else load_eval_config(config, root)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(cfg.work_dir).expanduser() if cfg.work_dir else out / "work"
    timings: dict[str, float] = {}
    t_start = time.time()
    torch.manual_seed(cfg.seed)

    setting = prepare_setting(cfg, work, log)
    timings["setup_s"] = time.time() - t_start
    train_cfg = cfg.train_config(**setting.train_overrides)
    ev = Evaluator(cfg, setting, train_cfg, log)
    timings["embed_shared_s"] = ev.timings.get("shared_s", 0.0)
    all_train = [sp.id for sp in setting.train_collection.species]
    models: dict[str, dict] = {}

    t0 = time.time()
    main_view = ev.view(None)
    main: dict = {"methods": {}, "n_species": len(main_view.species)}
    if "random_projection" in cfg.methods:
        ev.add_model_space("random_projection", ev.random_projection())
    if "text_mapping" in cfg.methods:
        ev.add_text_mapping("text_mapping", all_train)
    if "zero_shot_combination" in cfg.methods:
        ev.add_zero_shot_combination("zero_shot_combination")
    if "distilled" in cfg.methods:
        model, models["distilled"] = distilled_model(setting, train_cfg, all_train, work, log)
        ev.add_model_space("distilled", model)
    for m in cfg.methods:
        main["methods"][m] = ev.score(m, main_view)
    main["clap_space"] = ev.score_clap(main_view)
    main["teacher"] = ev.score_teacher(main_view)
    main["pr_curves"] = {m: ev.pr_curve(m, main_view) for m in cfg.methods}
    timings["main_s"] = time.time() - t0

    ablation: dict = {}
    if cfg.prompt_ablation:
        t0 = time.time()
        ablation = {"eval_text_prompt_type": cfg.text.prompt_type, "arms": {}}
        for pt in cfg.prompt_ablation:
            arm_cfg = cfg.train_config(**{**setting.train_overrides, "prompt_type": pt})
            name = f"distilled[{pt}]"
            if "distilled" in models and _model_key(arm_cfg, all_train, setting) == models["distilled"]["key"]:
                name = "distilled"  # this arm is the main model: same recipe, already embedded
            else:
                model, models[name] = distilled_model(setting, arm_cfg, all_train, work, log)
                ev.add_model_space(name, model)
            ablation["arms"][pt] = ev.score(name, main_view)
        timings["ablation_s"] = time.time() - t0

    unseen: dict = {}
    if cfg.unseen is not None:
        t0 = time.time()
        seen, held = unseen_split(main_view.species, cfg.unseen)
        train_ids = setting.train_species_excluding(held)
        model, models["distilled[seen]"] = distilled_model(setting, train_cfg, train_ids, work, log)
        ev.add_model_space("distilled[seen]", model)
        if "text_mapping" in cfg.methods:
            ev.add_text_mapping("text_mapping[seen]", train_ids)
        view = ev.view(held)
        arms = {"random_projection": "random_projection", "text_mapping": "text_mapping[seen]",
                "zero_shot_combination": "zero_shot_combination", "distilled": "distilled[seen]"}
        unseen = {"split": to_dict(cfg.unseen), "seen_species": seen, "unseen_species": held,
                  "n_train_species": len(train_ids), "methods": {}}
        for m, space in arms.items():
            if m in cfg.methods or m == "distilled":
                unseen["methods"][m] = ev.score(space, view)
        if "distilled" in ev.spaces:  # reference: the model that did hear these species
            unseen["methods"]["distilled (heard all species)"] = ev.score("distilled", view)
        unseen["clap_space"] = ev.score_clap(view)
        timings["unseen_s"] = time.time() - t0

    timings["total_s"] = time.time() - t_start
    results = {
        "name": cfg.name,
        "seed": cfg.seed,
        "config": to_dict(cfg),
        "train_config": dataclasses.asdict(train_cfg),
        "versions": _versions(),
        "setting": setting.describe(),
        "embedding": ev.describe(),
        "models": models,
        "main": main,
        "prompt_ablation": ablation,
        "unseen": unseen,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    from .score import write_json

    write_json(results, out / "results.json")
    atomic_write_text(out / "report.md", report.render_markdown(results))
    if cfg.plots:
        report.write_plots(results, ev.plot_data(main_view), out)
    atomic_write_json(out / "skipped.json", ev.skips_summary())
    log(f"wrote {out / 'results.json'}, {out / 'report.md'} ({timings['total_s']:.0f} s)")
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


__all__ = ["EvalConfig", "METHODS", "load_eval_config", "run_eval", "unseen_split", "protocols"]
