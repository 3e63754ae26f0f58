"""Species as text: the recipes that turn species into rows, and the teacher's rows kept on disk.

Teacher side: each species' BioCLIP prompts (:func:`~birdbridge.taxonomy.prompts`) through
the teacher's text tower, templates averaged (:func:`teacher_species_text`); the rows are
computed once and kept in the text-embedding cache (:class:`TextEmbeddingCache`), so the
training loop, search and detect never run the teacher's text tower for a list seen before.
A distilled checkpoint's prompt recipe (its ``prompt_recipe`` meta) picks the prompt types
a species list is scored with (:func:`recipe_species_text`).

CLAP side: each species' CLAP captions (templates x prompt types, :class:`ClapTextRecipe`)
through a CLAP's own text tower, averaged (:func:`clap_species_text`): the alignment loss
and the zero-shot combination read these.

The teacher is frozen, so the embedding of "a photo of Setophaga coronata." never
changes. The cache key covers everything the rows depend on: the teacher's identity (a
fingerprint of its weights, :mod:`birdbridge.encoders.identity`, not its path), prompt
type, template set and the species list with every name field that enters a prompt.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..io import atomic_write_bytes
from ..taxonomy import PROMPT_TYPES, Species, prompt_body, prompts, resolve_prompt_types
from .teacher import load_teacher
from .text import TEXT_BATCH, text_progress, unit_rows

RECIPE_VERSION = 1  # bump when prompt formatting changes, so old caches are not reused
DEFAULT_CACHE_DIR = "~/.cache/birdbridge/text"


# --------------------------------------------------------------------------- teacher side
@torch.no_grad()
def teacher_species_text(teacher, species: Sequence[Species], prompt_type: str, template_set: str = "single",
                         *, batch_size: int = TEXT_BATCH, progress: bool = False) -> torch.Tensor:
    """One row per species: each template embedded and normalised, averaged, renormalised
    (the TreeOfLife recipe; with one template it is just that template's embedding).

    Species go through in groups of about ``batch_size`` prompts, each group averaged
    before the next, so memory holds one group's prompt embeddings, not every species'
    (17k eBird species x 80 templates would be 1.4M rows)."""
    n_t = len(prompts(species[0], prompt_type, template_set)) if species else 1
    per_group = max(1, batch_size // n_t)
    rows = []
    with text_progress(f"teacher text: {len(species)} species ({prompt_type})", len(species), progress) as advance:
        for i in range(0, len(species), per_group):
            group = species[i : i + per_group]
            flat = [p for sp in group for p in prompts(sp, prompt_type, template_set)]
            emb = teacher.encode_text(flat, batch_size=batch_size).view(len(group), n_t, -1)
            rows.append(F.normalize(emb.mean(dim=1), dim=-1))
            advance(len(group))
    return torch.cat(rows) if rows else torch.zeros(0, teacher.dim)


def teacher_key(teacher_id: str, fingerprint: str | None = None) -> str:
    """What the rows depend on about the teacher: its weights' fingerprint (so a moved or
    renamed folder keeps its cache), or for a teacher that cannot be fingerprinted here
    (a hub id not cached yet) its normalised id."""
    from .identity import identify

    if fingerprint:
        return fingerprint
    record = identify(teacher_id)
    return record.fingerprint or record.id


def cache_key(teacher_id: str, species: Sequence[Species], prompt_type: str, template_set: str,
              fingerprint: str | None = None) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([RECIPE_VERSION, teacher_key(teacher_id, fingerprint), prompt_type, template_set]).encode())
    for sp in species:
        h.update(f"{sp.id}\x00{prompt_body(sp, prompt_type)}\x01".encode())
    return h.hexdigest()[:24]


class TextEmbeddingCache:
    """``get(...)`` returns ``[n_species, D]`` unit rows, computing them only on a miss."""

    def __init__(self, cache_dir: str | Path):
        self.cache_dir = Path(cache_dir)
        self.hits = 0
        self.misses = 0

    def path_for(self, key: str) -> Path:
        return self.cache_dir / f"text-{key}.safetensors"

    def get(
        self,
        teacher_id: str,
        species: Sequence[Species],
        prompt_type: str,
        template_set: str,
        load_teacher: Callable[[], object],
        fingerprint: str | None = None,
        *,
        progress: bool = False,
    ) -> torch.Tensor:
        """``load_teacher`` is called only on a miss, so a warm cache never builds the teacher.
        ``fingerprint``: the teacher's recorded fingerprint, when the caller has one."""
        from safetensors.torch import load_file, save

        key = cache_key(teacher_id, species, prompt_type, template_set, fingerprint)
        path = self.path_for(key)
        if path.exists():
            self.hits += 1
            return load_file(str(path))["embeddings"]
        self.misses += 1
        teacher = load_teacher()
        emb = teacher_species_text(teacher, list(species), prompt_type, template_set, progress=progress).float().contiguous()
        meta = {
            "teacher_id": teacher_id,
            "prompt_type": prompt_type,
            "template_set": template_set,
            "recipe_version": str(RECIPE_VERSION),
            "species_ids": json.dumps([s.id for s in species]),
        }
        atomic_write_bytes(path, save({"embeddings": emb}, metadata=meta))
        return emb

    def get_many(self, teacher_id, species, prompt_types, template_set, load_teacher,
                 fingerprint: str | None = None, *, progress: bool = False) -> dict[str, torch.Tensor]:
        teacher_box: list = []

        def lazy():
            if not teacher_box:
                teacher_box.append(load_teacher())
            return teacher_box[0]

        return {pt: self.get(teacher_id, species, pt, template_set, lazy, fingerprint, progress=progress)
                for pt in prompt_types}


def cached_teacher_text(teacher_id: str, species: Sequence[Species], prompt_types: Sequence[str], template_set: str,
                        cache_dir: str | Path, *, device: str = "cpu",
                        fingerprint: str | None = None) -> dict[str, torch.Tensor]:
    """``{prompt type: [S, D] rows}`` of ``species`` through the cache in ``cache_dir``;
    on a miss the teacher ``teacher_id`` loads (once) on ``device`` and embeds them."""
    cache = TextEmbeddingCache(Path(cache_dir).expanduser())
    return cache.get_many(teacher_id, list(species), prompt_types, template_set,
                          lambda: load_teacher(teacher_id, device=device), fingerprint=fingerprint)


def recipe_prompt_types(prompt_recipe: dict | None) -> tuple[tuple[str, ...], str]:
    """``(prompt types, template set)`` of a distilled checkpoint's ``prompt_recipe`` meta."""
    recipe = prompt_recipe or {}
    if recipe.get("prompt_types"):
        types = resolve_prompt_types(recipe["prompt_types"])
    else:  # checkpoints before prompt_types: one type, or "mixed", which then meant all five
        legacy = recipe.get("prompt_type") or "taxonomic_common"
        types = PROMPT_TYPES if legacy == "mixed" else resolve_prompt_types(legacy)
    return types, recipe.get("template_set") or "single"


def recipe_species_text(prompt_recipe: dict | None, species: Sequence[Species], teacher_id: str,
                        cache_dir: str | Path | None = None, fingerprint: str | None = None) -> np.ndarray:
    """``[S, D]`` unit rows: each species' prompt(s) through ``teacher_id``'s text tower, via the on-disk cache.

    Prompts follow a distilled model's training recipe (``prompt_recipe``, stored in its
    checkpoint); a recipe of several prompt types is answered with the mean of every type's
    embedding, renormalised. Any species list works, including species never trained on:
    only the teacher's text tower sees their names. ``cache_dir`` defaults to
    ``$BIRDBRIDGE_CACHE``, else :data:`DEFAULT_CACHE_DIR`.
    """
    types, template_set = recipe_prompt_types(prompt_recipe)
    # Keyed by the teacher's weights fingerprint (when known), so the distillation run's entries
    # are reused wherever the teacher folder is now; the teacher itself loads only on a miss.
    per_type = cached_teacher_text(teacher_id, species, types, template_set,
                                   cache_dir or os.environ.get("BIRDBRIDGE_CACHE", DEFAULT_CACHE_DIR),
                                   fingerprint=fingerprint)
    return unit_rows(np.mean([per_type[t].numpy() for t in types], axis=0))


# --------------------------------------------------------------------------- CLAP side
@dataclass
class ClapTextRecipe:
    """How species become CLAP captions (shared by the alignment loss and the combination)."""

    templates: list[str] = field(default_factory=lambda: ["{}"])
    prompt_types: list[str] = field(default_factory=lambda: ["common", "scientific"])


def clap_species_text(clap_text_encoder, species, templates: Sequence[str], prompt_types: Sequence[str],
                      progress: bool = False) -> np.ndarray:
    """One CLAP text embedding per species: every (template, prompt type) string embedded,
    normalised, averaged, renormalised (the same recipe the teacher's prompts use).
    ``clap_text_encoder``: a :class:`~.text.ClapTextEncoder`."""
    if not templates or not prompt_types:
        raise ValueError("need at least one CLAP template and one prompt type")
    texts = [[t.format(prompt_body(sp, pt)) for t in templates for pt in prompt_types] for sp in species]
    flat = [s for row in texts for s in row]
    emb = clap_text_encoder.encode_text(flat, progress=progress).numpy().reshape(len(species), len(texts[0]), -1)
    mean = emb.astype(np.float64).mean(axis=1)
    return (mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)).astype(np.float32)

