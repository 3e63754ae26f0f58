"""Teacher text embeddings of every species prompt, computed once and kept on disk.

The teacher is frozen, so the embedding of "a photo of Setophaga coronata." never
changes: the training loop reads rows from this cache and never runs the teacher's
text tower. The key covers everything the rows depend on: the teacher's identity (a
fingerprint of its weights, :mod:`birdbridge.encoders.identity`, not its path), prompt
type, template set and the species list with every name field that enters a prompt.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..io import atomic_write_bytes
from ..taxonomy import Species, prompt_body

RECIPE_VERSION = 1  # bump when prompt formatting changes, so old caches are not reused


def teacher_key(teacher_id: str, fingerprint: str | None = None) -> str:
    """What the rows depend on about the teacher: its weights' fingerprint (so a moved or
    renamed folder keeps its cache), or for a teacher that cannot be fingerprinted here
    (a hub id not cached yet) its normalised id."""
    from ..encoders.identity import identify

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
        emb = teacher.embed_species(list(species), prompt_type, template_set, progress=progress).float().contiguous()
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
