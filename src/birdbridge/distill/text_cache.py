"""Teacher text embeddings of every species prompt, computed once and kept on disk.

The teacher is frozen, so the embedding of "a photo of Setophaga coronata." never
changes: the training loop reads rows from this cache and never runs the teacher's
text tower. The key covers everything the rows depend on: the teacher's identity
(id + a fingerprint of local weight files), prompt type, template set and the species
list with every name field that enters a prompt.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable, Sequence

import torch

from ..encoders import hub
from ..io import atomic_write_bytes
from ..taxonomy import Species, prompt_body

RECIPE_VERSION = 1  # bump when prompt formatting changes, so old caches are not reused


def teacher_fingerprint(model_id: str) -> str:
    """Stable identity of the teacher's weights without loading it."""
    h = hashlib.sha256(model_id.encode())
    kind, ref = hub.split_model_id(model_id)
    if kind == "local":
        for f in sorted(Path(ref).glob("*.safetensors")) + sorted(Path(ref).glob("*.bin")) + sorted(Path(ref).glob("*.json")):
            st = f.stat()
            # small files are hashed; big ones identified by size + mtime (hashing 1.7 GB each run is slow)
            h.update(f.read_bytes() if st.st_size < 256 * 2**20 else f"{f.name}:{st.st_size}:{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def cache_key(teacher_id: str, species: Sequence[Species], prompt_type: str, template_set: str) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([RECIPE_VERSION, teacher_fingerprint(teacher_id), prompt_type, template_set]).encode())
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
        *,
        progress: bool = False,
    ) -> torch.Tensor:
        """``load_teacher`` is called only on a miss, so a warm cache never builds the teacher."""
        from safetensors.torch import load_file, save_file

        key = cache_key(teacher_id, species, prompt_type, template_set)
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
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        import tempfile

        with tempfile.NamedTemporaryFile(dir=self.cache_dir, suffix=".tmp", delete=False) as tmp:
            tmp_path = Path(tmp.name)
        save_file({"embeddings": emb}, str(tmp_path), metadata=meta)
        atomic_write_bytes(path, tmp_path.read_bytes())
        tmp_path.unlink(missing_ok=True)
        return emb

    def get_many(self, teacher_id, species, prompt_types, template_set, load_teacher, *,
                 progress: bool = False) -> dict[str, torch.Tensor]:
        teacher_box: list = []

        def lazy():
            if not teacher_box:
                teacher_box.append(load_teacher())
            return teacher_box[0]

        return {pt: self.get(teacher_id, species, pt, template_set, lazy, progress=progress) for pt in prompt_types}
