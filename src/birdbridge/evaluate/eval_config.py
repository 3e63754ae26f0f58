"""The evaluation config: what ``birdbridge eval CONFIG`` reads (strict dataclasses).

It names the data (or ``synthetic:`` for the offline world), the distillation
hyper-parameters, the methods, the prompt-type ablation and the unseen-species split, and
optionally already distilled checkpoints. Training inside an evaluation runs in this one
process on one device: a multi-device request is refused (Lightning's launcher would re-run
the whole evaluation once per process); train with ``birdbridge train`` under
torchrun/SLURM instead and give the checkpoints here.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

from ..config import from_dict, load_yaml
from ..errors import ConfigError
from ..taxonomy import MIXED, PROMPT_TYPES, TEMPLATE_SETS, resolve_prompt_types

METHODS = ("random_projection", "text_mapping", "zero_shot_combination", "distilled")  # the paper's
# methods for species distillation never heard (issue 17; evaluate/candidates.py)
ALL_METHODS = METHODS + ("distilled_aligned", "distilled_combined", "distilled_ensemble", "distilled_wise",
                         "distilled_zscl")
TRAINED_CANDIDATES = ("distilled_aligned", "distilled_combined", "distilled_wise", "distilled_zscl")
# TrainConfig keys that change how training runs, not what it learns: ignored in model keys.
RUNTIME_KEYS = ("cache_dir", "progress", "num_workers", "accelerator", "devices", "num_nodes", "strategy",
                "precision", "log_every_n_steps", "checkpoint_every_n_steps")
GIVEN_MODEL_HINT = ("train it with `birdbridge train CONFIG --devices N` (torchrun/SLURM) and give the checkpoint as "
                    "`distilled_model:` (`unseen.distilled_model:`, `ablation_models:` for the other arms)")


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
    # the label space (zero-shot candidates, target columns): eBird codes, one per line or a
    # CSV column, as BirdSet's class lists; default: the species annotated in the dataset
    class_list: str | None = None


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
    # share of species whose names the stand-in CLAP hears in its caption pretraining (the
    # others are captioned by family/order only); drawn from `seed`, independent of the unseen split
    clap_known_fraction: float = 1.0
    soundscapes: SyntheticSoundscapes | None = field(default_factory=SyntheticSoundscapes)

    def validate(self) -> None:
        # The one-cycle schedules of the pretraining loops need room for warm-up and decay.
        for key in ("teacher_steps", "clap_steps"):
            if getattr(self, key) < 20:
                raise ConfigError(f"config key 'synthetic.{key}' must be at least 20, got {getattr(self, key)}")
        if not 0.0 <= self.clap_known_fraction <= 1.0:
            raise ConfigError(f"config key 'synthetic.clap_known_fraction' must lie in [0, 1], got {self.clap_known_fraction}")


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
    # an eBird taxonomy CSV bridging names across taxonomies when reconciling the held-out
    # species with the training data (default: the soundscapes' taxonomy, if any)
    ebird_taxonomy: str | None = None
    distilled_model: str | None = None  # already distilled on the seen species (checked: it must not know the others)
    # a held-out species found in no training species (by taxon id, eBird code, scientific or
    # common name) may be there under a name no bridge knows: refused unless this is true
    allow_unmatched: bool = False

    def validate(self) -> None:
        if self.split not in ("one_per_genus", "random"):
            raise ConfigError(f"config key 'unseen.split' must be 'one_per_genus' or 'random', got {self.split!r}")
        if not 0 < self.fraction < 1:
            raise ConfigError("config key 'unseen.fraction' must lie strictly between 0 and 1")


@dataclass
class SweepSpec:
    """Repeat the whole evaluation per seed and CLAP-known fraction; report mean ± sd (synthetic only)."""

    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    clap_known_fractions: list[float] = field(default_factory=lambda: [1.0])

    def validate(self) -> None:
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"config key 'sweep.seeds' must be a non-empty list of distinct seeds, got {self.seeds}")
        if not self.clap_known_fractions or any(not 0 <= f <= 1 for f in self.clap_known_fractions):
            raise ConfigError(f"config key 'sweep.clap_known_fractions' must be a non-empty list in [0, 1], got {self.clap_known_fractions}")


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
    train_preset: str | None = None  # "demo": start from birdbridge.distill.presets.DEMO_TRAIN
    train: dict = field(default_factory=dict)  # TrainConfig fields (birdbridge.distill.config)
    methods: list[str] = field(default_factory=lambda: list(METHODS))
    # distilled_aligned / distilled_combined (evaluate/candidates.py): TrainConfig keys over
    # `train` (default clap_alignment_weight 1, clap_feature_weight 1), CombinationSpec keys
    aligned: dict = field(default_factory=dict)
    combination: dict = field(default_factory=dict)
    # distilled_wise / distilled_zscl (evaluate/candidates.py, distill/start.py): TrainConfig keys over
    # `train` (defaults: head zero_shot with wise_alpha 0.5 / zscl_weight 1); the alphas of
    # distilled_wise's curve, traced from its two end points without training again ([]: none)
    wise: dict = field(default_factory=dict)
    zscl: dict = field(default_factory=dict)
    wise_curve: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 0.75, 1.0])
    main_table: bool = True  # false: only the unseen split (seen and unseen species) is scored
    sweep: SweepSpec | None = None
    prompt_ablation: list[str] = field(default_factory=list)
    unseen: UnseenSpec | None = None
    distilled_model: str | None = None  # an already distilled checkpoint for `distilled` (not trained here)
    ablation_models: dict = field(default_factory=dict)  # prompt_ablation arm -> distilled checkpoint
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
        bad = [m for m in self.methods if m not in ALL_METHODS]
        if bad:
            raise ConfigError(f"config key 'methods' has unknown method {bad[0]!r}; expected some of {ALL_METHODS}")
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
        bad = [k for k in self.ablation_models if k not in self.prompt_ablation]
        if bad:
            raise ConfigError(f"config key 'ablation_models' names {bad[0]!r}, which is not in 'prompt_ablation'")
        if "distilled_ensemble" in self.methods and "distilled" not in self.methods:
            raise ConfigError("config key 'methods': distilled_ensemble extends the plain distilled model; add 'distilled'")
        if self.sweep is not None and self.synthetic is None:
            raise ConfigError("config key 'sweep' repeats the synthetic world per seed and CLAP-known fraction: it needs 'synthetic'")
        if not self.main_table and self.unseen is None:
            raise ConfigError("config key 'main_table: false' leaves nothing to score without 'unseen'")
        try:
            tc = self.train_config()  # fail now, naming the key, not after an hour of setup
            self.train_config(**self.aligned)
            self.train_config(**{"head": "zero_shot", **self.wise})
            self.train_config(**{"head": "zero_shot", **self.zscl})
            bad = [a for a in self.wise_curve if not 0.0 <= float(a) <= 1.0]
            if bad:
                raise ConfigError(f"config key 'wise_curve' holds alphas in [0, 1], got {bad[0]}")
            if self.combination:
                from ..encoders.combination import CombinationSpec

                from_dict(CombinationSpec, self.combination, where="combination.")
        except ConfigError as err:
            if "'train." in str(err) or "wise_curve" in str(err):
                raise
            raise ConfigError(f"in 'train': {err}") from None
        if self.trains_here():
            check_one_device(tc)

    def given_main_model(self, train_prompt_types) -> tuple[str, str] | None:
        """``(checkpoint, config key)`` of the main distilled model when the config names one.

        ``distilled_model:``, else an ``ablation_models:`` arm trained on the main recipe's
        prompt types (``train_prompt_types``, resolved): the config already names that model."""
        if self.distilled_model:
            return self.distilled_model, "distilled_model"
        want = sorted(train_prompt_types)
        for pt, path in self.ablation_models.items():
            if sorted(resolve_prompt_types([pt])) == want:
                return path, f"ablation_models.{pt}"
        return None

    def given_arm_model(self, pt: str, main_prompt_types=None) -> tuple[str, str] | None:
        """``(checkpoint, config key)`` of prompt-ablation arm ``pt`` when the config names it.

        ``ablation_models.<pt>``, else ``distilled_model:`` when its recorded prompt types are
        the arm's (a model distilled with the paper's three is the ``mixed`` arm).
        ``main_prompt_types``: the given model's, when already loaded (else read from its
        ``config.json``; a hub id that is not on disk is not read here)."""
        if pt in self.ablation_models:
            return self.ablation_models[pt], f"ablation_models.{pt}"
        if self.distilled_model:
            have = main_prompt_types if main_prompt_types is not None else recorded_prompt_types(self.distilled_model)
            if have and sorted(have) == sorted(resolve_prompt_types([pt])):
                return self.distilled_model, "distilled_model"
        return None

    def trains_here(self) -> bool:
        """Whether some distilled model of this evaluation is trained in this process."""
        main_types = self.train_config().resolved_prompt_types
        main_given = self.given_main_model(main_types) is not None

        def arm_trains(pt: str) -> bool:  # an arm on the main recipe is the main model
            if self.given_arm_model(pt) is not None:
                return False
            return not (main_given and sorted(resolve_prompt_types([pt])) == sorted(main_types))

        return (("distilled" in self.methods and not main_given)
                or any(m in TRAINED_CANDIDATES for m in self.methods)
                or any(arm_trains(pt) for pt in self.prompt_ablation)
                or (self.unseen is not None and not self.unseen.distilled_model))

    def train_config(self, **overrides):
        """The :class:`TrainConfig` of the main distilled model (``overrides`` for arms)."""
        from ..distill.config import TrainConfig

        base: dict = {}
        if self.train_preset == "demo":
            from ..distill.presets import DEMO_TRAIN

            base.update(DEMO_TRAIN)
        base.setdefault("seed", self.seed)
        merged = {**base, **self.train, **overrides}
        if merged.get("devices", "auto") == "auto":
            merged["devices"] = 1  # "auto" would take every GPU: one device unless told otherwise
        return from_dict(TrainConfig, merged, where="train.")


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
                                                  audio_root=rooted(sc.audio_root), class_list=rooted(sc.class_list))
        return cfg


def recorded_prompt_types(path: str) -> list[str] | None:
    """The training prompt types a local distilled checkpoint records (``config.json``), else None."""
    import json

    cfg = Path(path).expanduser() / "config.json"
    try:
        recipe = json.loads(cfg.read_text()).get("prompt_recipe") or {}
    except (OSError, ValueError):
        return None
    types = recipe.get("prompt_types") or ([recipe["prompt_type"]] if recipe.get("prompt_type") else None)
    try:
        return list(resolve_prompt_types(types)) if types else None
    except ValueError:
        return None


def _n_devices(devices) -> int:
    """Devices a Lightning ``devices`` value asks for (-1 or "-1": all of them, counted as 2)."""
    if isinstance(devices, int):
        return 2 if devices == -1 else devices
    text = str(devices).strip()
    if text.lstrip("-").isdigit():
        return _n_devices(int(text))
    return len([d for d in text.strip("[]").split(",") if d.strip()])  # "0,1" or "[0, 1]": device indices


def check_one_device(tc) -> None:
    """Refuse training setups that would start more than one process inside ``birdbridge eval``."""
    multi = _n_devices(tc.devices) > 1 or tc.num_nodes > 1 or tc.strategy.startswith(("ddp", "fsdp", "deepspeed"))
    if multi:
        raise ConfigError(f"birdbridge eval trains on one device, but train.devices={tc.devices!r}, "
                          f"num_nodes={tc.num_nodes}, strategy={tc.strategy!r} ask for more (each process would run "
                          f"the whole evaluation): set train.devices: 1, or {GIVEN_MODEL_HINT}")


def load_eval_config(path: str | Path, root: str | Path | None = None) -> EvalConfig:
    """The config at ``path``, its relative data paths joined to ``root`` (or its own ``root:``)."""
    return from_dict(EvalConfig, load_yaml(path)).with_root(root)
