"""Where distillation starts and how it ends, for species distillation never hears (issue 24).

Robust fine-tuning of zero-shot models works from a shared starting point in weight space:

* **start** (LP-FT, Kumar et al. ICLR 2022: fine-tune from a good head, not a random one): the
  head is initialised from text alone over a species list that may include species with no
  training audio (``head_species``; default the training species), so step 0 is a zero-shot model
  in the teacher's space. ``head: zero_shot`` (:class:`~birdbridge.encoders.heads.ZeroShotHead`)
  starts as exactly the ``zero_shot_combination`` baseline; ``head: linear`` with
  ``head_init: text_map`` starts as the ridge map CLAP text → teacher text
  (:mod:`birdbridge.encoders.text_map`, the ``text_mapping`` baseline's fit).
* **keep** (ZSCL, Zheng et al. ICCV 2023): ``zscl_weight · KL(p₀ ‖ p_θ)`` on unlabeled reference
  recordings (``reference_audio``), ``p = softmax(s · a @ Tᵀ)`` the similarity distribution of an
  embedding over every species' teacher text (the head species list), ``p₀`` the starting model's
  (computed once, before the first step, from one centre crop per reference clip), ``s`` =
  1 / ``zscl_temperature`` (default ``init_temperature``). It keeps the start's behaviour where
  labels say nothing. ``zscl_gate: unheard`` weights each clip's term by the start's zero-shot
  posterior mass on the species distillation never heard: a clip the start takes for a heard
  species is left to the labels (holding it would fight them), one it takes for an unheard species
  is held. ``head_unheard_rows: frozen`` keeps the caption rows of unheard species where text put
  them (they would only ever be pushed away, as negatives).
* **end** (WiSE-FT, Wortsman et al. CVPR 2022; PAINT, Ilharco et al. 2022): every weight
  interpolated, ``θ_α = (1 − α) · θ₀ + α · θ_ft`` (``wise_alpha``; 1 = the fine-tuned model). One
  tower pass at inference: the result is an ordinary checkpoint. Both end points are kept in
  ``OUT/wise/`` so an evaluation can trace the α curve without training again.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..data.audio import TRAINING_PAD
from ..data.crop import load_crop
from ..errors import BadInputError, SkipLog

WISE_DIR = "wise"  # OUT/wise/{start,finetuned}.safetensors


# --------------------------------------------------------------------------- start
def head_species(cfg, collection, species=None) -> list:
    """The species list the head starts from: ``species`` (an evaluation's), else the
    ``head_species`` list file, else the training collection's species."""
    if species is not None:
        return list(species)
    if cfg.head_species:
        from ..data.species_list import load_species_list

        return load_species_list(cfg.head_species)
    return list(collection.species)


def needs_species(cfg) -> bool:
    """Whether the run's start or its ZSCL term reads a species list's texts."""
    return cfg.head == "zero_shot" or cfg.head_init == "text_map" or cfg.zscl_weight > 0


def head_teacher_rows(cfg, species) -> torch.Tensor:
    """The teacher's rows the zero-shot head weights and ZSCL's distributions run over."""
    from ..encoders.species_text import cached_teacher_text

    pt = cfg.head_prompt_type
    return cached_teacher_text(cfg.teacher, species, [pt], cfg.head_template_set, cfg.cache_dir)[pt].float()


@torch.no_grad()
def init_head(student, cfg, species, heard_species=None) -> dict:
    """Fill the head of a freshly built ``student`` from text alone; what was done, for the record.

    ``heard_species``: the species with training audio (a zero_shot head marks the others unheard)."""
    from ..encoders.species_text import cached_teacher_text, clap_species_text
    from ..encoders.text import ClapTextEncoder

    enc = ClapTextEncoder.load(cfg.student)
    if cfg.head == "zero_shot":
        clap = torch.from_numpy(clap_species_text(enc, species, cfg.clap_templates, cfg.clap_prompt_types))
        net = student.head.net
        net.init_from_text(clap, head_teacher_rows(cfg, species), enc.logit_scale)
        if heard_species is not None:
            from ..encoders.combination import heard_mask

            net.heard.copy_(heard_mask(species, heard_species))
        if cfg.head_unheard_rows == "frozen":
            net.freeze_unheard()
        return {"head_init": "zero_shot", "n_species": len(species), "logit_scale": float(enc.logit_scale)}
    if cfg.head_init == "text_map":
        from ..encoders.text_map import fit_text_mapping

        rows = cached_teacher_text(cfg.teacher, species, cfg.resolved_prompt_types, cfg.template_set, cfg.cache_dir)
        lin = fit_text_mapping(enc, {pt: r.numpy() for pt, r in rows.items()}, species, templates=cfg.clap_templates,
                               alpha=cfg.head_ridge_alpha)
        student.head.net.weight.copy_(torch.from_numpy(lin.weight.T.astype(np.float32)))
        student.head.net.bias.copy_(torch.from_numpy(lin.bias.astype(np.float32)))
        return {"head_init": "text_map", "n_species": len(species), "n_pairs": lin.n_pairs}
    return {"head_init": "random"}


def state_copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached CPU copy of ``module``'s state (the frozen start θ₀)."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


# --------------------------------------------------------------------------- keep (ZSCL)
def similarity_log_probs(emb: torch.Tensor, text: torch.Tensor, scale: float) -> torch.Tensor:
    return torch.log_softmax(scale * F.normalize(emb, dim=-1) @ F.normalize(text, dim=-1).T, dim=-1)


def zscl_loss(current: torch.Tensor, start: torch.Tensor, text: torch.Tensor, scale: float,
              weight: torch.Tensor | None = None) -> torch.Tensor:
    """``mean_i w_i · KL(p₀_i ‖ p_i)`` over the species' teacher texts (``w`` = 1 by default);
    ``start`` carries no gradient."""
    log_p0 = similarity_log_probs(start.detach(), text, scale)
    log_p = similarity_log_probs(current, text, scale)
    kl = (log_p0.exp() * (log_p0 - log_p)).sum(dim=-1)
    return (kl if weight is None else kl * weight.to(kl.dtype)).mean()


def load_reference(path: str):
    """The ``reference_audio`` recordings (labels, if any, are not used): a CSV, a folder, an iNatSounds JSON."""
    from ..data.loaders import load_collection

    kind = {".json": "inat_sounds", ".csv": "csv"}.get(Path(str(path)).suffix.lower(), "folder")
    return load_collection(kind, path)


def reference_pool(collection, items, sample_rate: int, n_samples: int, *, max_clips: int, seed: int,
                   skips: SkipLog) -> torch.Tensor:
    """One centre crop per reference recording (at most ``max_clips``, a seeded choice), ``[N, n_samples]``;
    unreadable files go to ``skips`` (the run's skipped.json)."""
    items = list(items)
    if len(items) > max_clips:
        keep = np.sort(np.random.default_rng([seed, 24]).choice(len(items), max_clips, replace=False))
        items = [items[i] for i in keep]
    rows = []
    for it in items:
        try:
            rows.append(load_crop(collection.resolve(it.path), sample_rate, n_samples, "center", None,
                                  start_s=it.start_s, end_s=it.end_s, pad=TRAINING_PAD))
        except BadInputError as err:
            skips.add(it.path, err.reason, err.detail)
    if not rows:
        raise BadInputError("no_reference_audio", detail=f"none of the {len(items)} reference recordings could be read")
    return torch.from_numpy(np.stack(rows))


@torch.no_grad()
def start_outputs(student, waves: torch.Tensor, batch_size: int, gate: str = "none",
                  power: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The starting model's teacher-space embeddings of the reference crops and each crop's weight
    (1, or with ``gate: unheard`` the zero-shot head's posterior mass on unheard species to ``power``),
    in eval mode (modes put back)."""
    modes = {m: m.training for m in student.modules()}
    student.eval()
    try:
        outs, weights = [], []
        for i in range(0, len(waves), batch_size):
            clap = student.clap_embed(waves[i:i + batch_size])
            outs.append(F.normalize(student.head(clap), dim=-1))
            if gate == "unheard":
                weights.append(student.head.net.unheard_mass(clap) ** power)
            elif gate == "unheard_top":
                weights.append(student.head.net.unheard_top(clap) ** power)
            else:
                weights.append(torch.ones(len(clap)))
        return torch.cat(outs), torch.cat(weights)
    finally:
        for m, mode in modes.items():
            m.training = mode


class ZsclTerm:
    """The reference pool, its start outputs and the species' teacher texts; :meth:`batch` draws a step's rows."""

    def __init__(self, waves: torch.Tensor, start: torch.Tensor, text: torch.Tensor, *, weight: float, scale: float,
                 batch_size: int, seed: int, clip_weights: torch.Tensor | None = None):
        self.waves, self.start, self.text = waves, start, text
        self.clip_weights = clip_weights if clip_weights is not None else torch.ones(len(waves))
        self.weight, self.scale, self.batch_size, self.seed = float(weight), float(scale), int(batch_size), seed

    def batch(self, step: int, rank: int = 0) -> torch.Tensor:
        """Indices drawn from ``(seed, step, rank)`` alone, so a resumed run draws what the unbroken one drew."""
        g = torch.Generator().manual_seed(hash((self.seed, step, rank, 24)) % (2**63))
        n = len(self.waves)
        return torch.randperm(n, generator=g)[: min(self.batch_size, n)]

    def loss(self, student, step: int, rank: int, device) -> torch.Tensor:
        idx = self.batch(step, rank)
        out = student(self.waves[idx].to(device))
        return zscl_loss(out, self.start[idx].to(device), self.text.to(device), self.scale,
                         self.clip_weights[idx].to(device))


# --------------------------------------------------------------------------- end (WiSE-FT)
def interpolate(start: dict[str, torch.Tensor], finetuned: dict[str, torch.Tensor], alpha: float) -> dict:
    """``(1 − α) · θ₀ + α · θ_ft`` for every floating tensor; integer ones (BatchNorm's batch counts)
    and tensors equal in both are the fine-tuned ones, unchanged."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    missing = sorted(set(finetuned) ^ set(start))
    if missing:
        raise ValueError(f"the two models differ in their tensors: {missing[:3]}")
    out = {}
    for k, ft in finetuned.items():
        s0 = start[k]
        if not ft.is_floating_point() or torch.equal(s0, ft):
            out[k] = ft.clone()
        else:
            out[k] = ((1.0 - alpha) * s0.double() + alpha * ft.double()).to(ft.dtype)
    return out


def save_ends(out_dir: Path, start: dict, finetuned: dict) -> Path:
    from safetensors.torch import save_file

    from ..io import atomic_dir

    target = Path(out_dir) / WISE_DIR
    with atomic_dir(target) as tmp:
        for name, state in (("start", start), ("finetuned", finetuned)):
            save_file({k: v.contiguous() for k, v in state.items()}, str(tmp / f"{name}.safetensors"))
    return target


def load_ends(out_dir: Path) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    d = Path(out_dir) / WISE_DIR
    return load_file(str(d / "start.safetensors")), load_file(str(d / "finetuned.safetensors"))


def wise_model(model, start: dict, finetuned: dict, alpha: float):
    """A copy of distilled ``model`` (its config and meta) with the weights at ``alpha``."""
    import copy

    out = copy.deepcopy(model)
    state = interpolate(start, finetuned, alpha)
    missing, unexpected = out.load_state_dict(state, strict=False)
    if [k for k in missing if not k.startswith(("frontend.", "combination."))] or unexpected:
        raise ValueError(f"WiSE end points do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    out.meta = {**out.meta, "training": {**(out.meta.get("training") or {}), "wise_alpha": float(alpha)}}
    return out.eval()
