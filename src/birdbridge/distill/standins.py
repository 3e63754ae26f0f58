"""Pretraining the stand-ins for BioCLIP-2 and BioLingual on the synthetic world.

Real users start from published weights; here none can be downloaded, so the demo (and
``birdbridge eval`` on ``synthetic:``) trains a tiny open_clip CLIP on synthetic image-text pairs (the teacher's role:
photos and names in one space) and a tiny ``ClapModel`` on audio-caption pairs (the
student's role: sounds and captions in one space). Both are then saved and loaded
back through the real loaders. No audio-image pair is ever formed.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..data.records import Collection
from ..data.synthetic import SyntheticWorld
from ..distill.loss import DistillContrastiveLoss
from ..taxonomy import PROMPT_TYPES, prompt_body, templates
from ..encoders import tiny

Progress = Callable[[int, int, float], None]


def _caption(sp, rng: random.Random, openai_templates) -> str:
    body = prompt_body(sp, rng.choice(PROMPT_TYPES))
    if rng.random() < 0.7:
        return f"a photo of {body}."
    return rng.choice(openai_templates)(body)


def _contrastive_loop(model, labels_all: list[int], step_loss, *, steps: int, lr: float, progress: Progress | None) -> None:
    """CLIP-style training: each step sees every species twice (so each has a positive);
    ``step_loss(labels)`` returns the two unit embeddings and the log logit scale."""
    loss_fn = DistillContrastiveLoss("multi")
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    model.train()
    for step in range(steps):
        labels = labels_all * 2
        x, y, log_scale = step_loss(labels)
        loss = loss_fn(x, y, torch.tensor(labels), log_scale.exp().clamp(max=100))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if progress:
            progress(step + 1, steps, loss.item())


def _species_key(collection: Collection) -> list:
    return [[sp.id, prompt_body(sp, "taxonomic"), sp.common_name] for sp in collection.species]


def train_teacher(collection: Collection, out_dir: str | Path, *, steps: int = 400, seed: int = 0,
                  progress: Progress | None = None, cache: bool = True) -> Path:
    """Contrastive image-text training of a tiny open_clip CLIP; saved as a ``local-dir:``.

    ``cache``: take the weights from the stand-in cache (:mod:`.standin_cache`) when an
    identical run filled it; ``progress`` then hears ``(steps, steps, None)`` once."""
    if not cache:
        return _train_teacher(collection, out_dir, steps=steps, seed=seed, progress=progress)
    from .standin_cache import cached_build, files_digest

    images = [collection.resolve(it.path) for it in collection.image_split("train")]
    args = {"steps": steps, "seed": seed, "lr": 2e-3, "species": _species_key(collection),
            "labels": [it.species_id for it in collection.image_split("train")], "files": files_digest(images)}
    out, hit = cached_build("teacher", args, out_dir, lambda d: _train_teacher(collection, d, steps=steps, seed=seed,
                                                                              progress=progress))
    if hit and progress:
        progress(steps, steps, None)
    return out


def _train_teacher(collection: Collection, out_dir: str | Path, *, steps: int, seed: int,
                   progress: Progress | None) -> Path:
    from PIL import Image

    model, cfg = tiny.build_tiny_open_clip(seed)
    size = cfg["model_cfg"]["vision_cfg"]["image_size"]
    mean = torch.tensor(tiny.OPENAI_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(tiny.OPENAI_STD).view(1, 3, 1, 1)
    import open_clip

    tokenizer = open_clip.get_tokenizer("ViT-B-32", context_length=cfg["model_cfg"]["text_cfg"]["context_length"])
    by_species: dict[int, list[torch.Tensor]] = {}
    for it in collection.image_split("train"):
        img = Image.open(collection.resolve(it.path)).convert("RGB").resize((size, size), Image.BICUBIC)
        x = torch.from_numpy(np.asarray(img, np.float32) / 255.0).permute(2, 0, 1)
        by_species.setdefault(collection.label_index(it.species_id), []).append(x)
    labels_all = sorted(by_species)
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    openai = templates("openai")

    def step_loss(labels: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        imgs = torch.stack([rng.choice(by_species[l]) for l in labels])
        if torch.rand((), generator=gen) < 0.5:
            imgs = imgs.flip(-1)
        caps = [_caption(collection.species[l], rng, openai) for l in labels]
        img_emb = F.normalize(model.encode_image((imgs - mean) / std), dim=-1)
        txt_emb = F.normalize(model.encode_text(tokenizer(caps)), dim=-1)
        return img_emb, txt_emb, model.logit_scale

    _contrastive_loop(model, labels_all, step_loss, steps=steps, lr=2e-3, progress=progress)
    return tiny.save_open_clip(model.eval(), cfg, out_dir)


def pretrain_clap(collection: Collection, world: SyntheticWorld, out_dir: str | Path, *, steps: int = 400,
                  seed: int = 0, lr: float = 5e-3, progress: Progress | None = None,
                  known: set[str] | None = None, cache: bool = True) -> Path:
    """Audio-caption contrastive pretraining of a tiny ``ClapModel``; saved with ``save_pretrained``.

    ``known``: the species whose names the captions say (default: all); the others are
    captioned without their names (:meth:`SyntheticWorld.captions`). The tokenizer is
    built from every species' named captions either way (plus the unnamed ones in use),
    as a real CLAP's tokenizer reads any name: what it lacks is the name paired with the
    sound. ``cache``: as :func:`train_teacher`."""
    kw = dict(steps=steps, seed=seed, lr=lr, progress=progress, known=known)
    if not cache:
        return _pretrain_clap(collection, world, out_dir, **kw)
    from .standin_cache import cached_build, files_digest

    items = collection.audio_split("train")
    captions = {sp.id: [world.captions(sp.id, known=k) for k in (True, False)] for sp in world.species}
    args = {"steps": steps, "seed": seed, "lr": lr, "known": None if known is None else sorted(known),
            "sample_rate": world.sample_rate, "species": _species_key(collection), "captions": captions,
            "labels": [it.species_id for it in items], "files": files_digest(collection.resolve(it.path) for it in items)}
    out, hit = cached_build("student", args, out_dir, lambda d: _pretrain_clap(collection, world, d, **kw))
    if hit and progress:
        progress(steps, steps, None)
    return out


def _pretrain_clap(collection: Collection, world: SyntheticWorld, out_dir: str | Path, *, steps: int, seed: int,
                   lr: float, progress: Progress | None, known: set[str] | None) -> Path:
    from ..data.audio import load_audio
    from ..encoders.frontend import ClapFrontend

    heard = {sp.id: (known is None or sp.id in known) for sp in world.species}
    # every name (all known: exactly the captions, as before clap_known_fraction existed)
    corpus = [c for sp in world.species for k in sorted({True, heard[sp.id]}) for c in world.captions(sp.id, known=k)]
    model, proc = tiny.build_tiny_clap(corpus, Path(out_dir).with_name(Path(out_dir).name + "-tokenizer"), seed=seed,
                                       sampling_rate=world.sample_rate)
    frontend = ClapFrontend.from_feature_extractor(proc.feature_extractor)
    by_species: dict[int, list[np.ndarray]] = {}
    for it in collection.audio_split("train"):
        wave = load_audio(collection.resolve(it.path), world.sample_rate)
        by_species.setdefault(collection.label_index(it.species_id), []).append(wave)
    labels_all = sorted(by_species)
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)

    def step_loss(labels: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = frontend([torch.from_numpy(rng.choice(by_species[l])) for l in labels], crop="random", generator=gen)
        caps = [rng.choice(world.captions(sid, known=heard[sid])) for sid in (collection.species[l].id for l in labels)]
        tok = proc.tokenizer(caps, padding=True, return_tensors="pt")
        a = model.get_audio_features(input_features=feats).pooler_output
        t = model.get_text_features(**tok).pooler_output
        return a, t, model.logit_scale_a

    _contrastive_loop(model, labels_all, step_loss, steps=steps, lr=lr, progress=progress)
    return tiny.save_clap(model.eval(), proc, out_dir)
