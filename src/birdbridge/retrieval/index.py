"""An on-disk image index: teacher image embeddings + metadata + a FAISS index.

Layout of an index directory::

    index.json                  manifest: the commit point (teacher, dim, count, shards, skips)
    shards/shard-00000.npy      float32 unit rows, in id order
    shards/shard-00000.parquet  one metadata row per vector (id, path, species, author, ...);
                                ``shard-00000.metaN.parquet`` once a re-run updated it
    faiss-<count>-<kind>.index  FAISS index over all committed rows

An index built from embedding parts (:meth:`ImageIndex.build_from_parts`) lists the parts'
own ``emb/part-*.npy`` and ``meta/part-*.parquet`` as its shards, by absolute path, instead
of copying them: the parts are where re-ranking reads exact vectors from, so they must stay.

Crash safety: every file is written to a temp name and ``os.replace``-d into place, shard
files are never rewritten, and the manifest is replaced *last*. A reader only looks at
what the manifest lists, so it sees either the old or the new index, never half of one;
an interrupted build leaves its completed shards committed and a re-run embeds only what
is missing. Image ids are row numbers and never change once committed (``add`` appends).
Writing (and sharding a build over several processes) lives in :mod:`.index_build`.
Index kinds and the records an index is built from live in :mod:`.index_format`.
"""

from __future__ import annotations

import os

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ConfigError
from .index_format import (EXACT_MAX, ShardRows, check_index_dir, FORMAT_VERSION, KINDS, MANIFEST, ImageRecord, Progress, tune_search, build_faiss,
                           choose_kind, records_from_collection, records_from_source, teachers_match)


# --------------------------------------------------------------------------- the index


class ImageIndex:
    """A committed index, opened read-only: ``search``, ``metadata``, ``vectors_for``."""

    def __init__(self, root: Path, manifest: dict, shards: list[np.ndarray], meta_rows: Sequence[dict], faiss_index):
        self.root = root
        self.manifest = manifest
        self._shards = shards  # memory-mapped, one per shard, in id order
        self._offsets = np.cumsum([0] + [len(s) for s in shards])
        self._rows = meta_rows
        self._faiss = faiss_index
        self.last_build: dict = {}  # set by build(): what that run did
        self.rerank = bool(manifest.get("rerank", False))  # search's default; `search --rerank` overrides

    # -- reading --------------------------------------------------------------------

    @classmethod
    def open(cls, root: str | Path) -> "ImageIndex":
        root = check_index_dir(root)
        mpath = root / MANIFEST
        manifest = json.loads(mpath.read_text())
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ConfigError(f"{root}: index format {manifest.get('format_version')!r} is not supported (expected {FORMAT_VERSION})")
        vecs = []
        for shard in manifest["shards"]:
            # mmap: a large index's vectors stay on disk; only the rows a query touches are read.
            vecs.append(np.load(root / shard["vectors"], mmap_mode="r"))
        rows = ShardRows(root, manifest["shards"])
        n = sum(len(v) for v in vecs)
        if n != manifest["count"] or len(rows) != manifest["count"]:
            raise ConfigError(f"{root}: manifest says {manifest['count']} images but the shards hold {n}")
        return cls(root, manifest, vecs, rows, cls._load_faiss(root, manifest, vecs))

    @staticmethod
    def _load_faiss(root: Path, manifest: dict, shards: list[np.ndarray]):
        import faiss

        name = manifest.get("faiss_file")
        if name and (root / name).is_file():
            index = faiss.read_index(str(root / name))
            if index.ntotal == manifest["count"]:
                tune_search(index, manifest["kind"])
                return index
        # A build interrupted before its final FAISS write: the shards are the truth, so the
        # index is rebuilt in memory (the next `birdbridge index` run writes it to disk).
        dim = int(manifest["dim"] or 0)
        kind = manifest["kind"] or choose_kind("auto", int(manifest["count"]))
        if kind == "faiss-ivfpq":
            return build_faiss(kind, shards, manifest.get("max_index_memory"))
        vectors = np.concatenate(shards).astype(np.float32) if shards else np.zeros((0, dim), np.float32)
        return build_faiss(kind, vectors)

    @property
    def count(self) -> int:
        return int(self.manifest["count"])

    @property
    def dim(self) -> int:
        return int(self.manifest["dim"])

    @property
    def teacher_id(self) -> str:
        return self.manifest["teacher_id"]

    @property
    def teacher(self):
        """What the index's teacher is (:class:`~birdbridge.encoders.identity.TeacherRecord`),
        with its folder where it is now (also after the index and teacher moved together)."""
        from ..encoders.identity import recorded

        return recorded(self.manifest, self.root)

    def teacher_model_id(self) -> str:
        """An id that loads the index's teacher from here: its folder as found now, else the stored id."""
        t = self.teacher
        return str(t.path) if t is not None and t.path is not None else self.teacher_id

    @property
    def kind(self) -> str:
        return self.manifest["kind"]

    def __len__(self) -> int:
        return self.count

    def search(self, vectors: np.ndarray, k: int = 10, rerank: bool | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Inner-product (= cosine on unit rows) top-``k``: ``(scores [Q, k], ids [Q, k])``; ids -1 pad.

        ``rerank`` (default: ``self.rerank``, the index's recorded default) fetches ``k ×``
        :data:`~.index_pq.RERANK_FACTOR` candidates and re-scores them with the exact stored
        vectors: what makes a compressed (``faiss-ivfpq``) index's top-``k`` exact again.
        """
        q = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        if q.shape[1] != self.dim:
            raise ConfigError(f"query vectors are {q.shape[1]}-d but the index holds {self.dim}-d vectors")
        if self.count == 0 or k <= 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        k = min(k, self.count)
        if self.rerank if rerank is None else rerank:
            from .index_pq import RERANK_FACTOR, rerank as rescore

            return rescore(lambda x, kk: self._faiss.search(x, min(kk, self.count)), self.vectors_for, q, k, RERANK_FACTOR)
        scores, ids = self._faiss.search(q, k)
        return scores, ids

    def metadata(self, ids: Sequence[int]) -> list[dict]:
        return [dict(self._rows[int(i)]) for i in ids if 0 <= int(i) < self.count]

    def vectors_for(self, ids: Sequence[int]) -> np.ndarray:
        """Stored unit vectors of ``ids`` (read from the memory-mapped shards)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if len(ids) and (ids.min() < 0 or ids.max() >= self.count):
            raise IndexError(f"image ids must be in [0, {self.count})")
        shard = np.searchsorted(self._offsets, ids, side="right") - 1
        out = np.empty((len(ids), self.dim), np.float32)
        for s in np.unique(shard):
            sel = shard == s
            out[sel] = self._shards[s][ids[sel] - self._offsets[s]]
        return out

    def species(self):
        """The distinct species in the metadata, as :class:`~birdbridge.taxonomy.Species` (sorted by id)."""
        from ..taxonomy import Species

        seen: dict[str, Species] = {}
        for r in self._rows:
            sid = r.get("species_id") or ""
            if sid and sid not in seen and r.get("scientific_name"):
                kw = {k: r[k] for k in ("kingdom", "phylum", "order", "family", "genus", "epithet") if r.get(k)}
                if r.get("class"):
                    kw["class_"] = r["class"]
                seen[sid] = Species(id=sid, scientific_name=r["scientific_name"], common_name=r.get("common_name") or "", **kw)
        return [seen[k] for k in sorted(seen)]

    # -- writing --------------------------------------------------------------------

    @classmethod
    def build(cls, root: str | Path, teacher, records: Sequence[ImageRecord | str | Path], *, kind: str = "auto",
              add: bool = False, shard_size: int = 1024, batch_size: int = 64, progress: Progress | None = None,
              rank: int = 0, world: int = 1, timeout_s: float = 24 * 3600.0,
              embedded=None, max_memory: int | str | None = None, rerank: bool | None = None) -> "ImageIndex | None":
        """Embed ``records`` with ``teacher``'s image tower into ``root`` and return the opened index.

        Resumes an interrupted build (shards already committed are not re-embedded). On a
        completed index, new images need ``add=True``; paths already indexed are not
        embedded again, but when their record changed (a corrected species, new credits)
        their metadata is updated (``index.last_build["metadata_updated"]`` counts them).
        ``teacher`` is a :class:`~birdbridge.encoders.teacher.Teacher` or a model id.
        ``max_memory`` is the ``faiss-ivfpq`` budget (:func:`.index_pq.parse_memory`); ``rerank``
        records search's default (both kept in the manifest for later runs).

        Sharded over processes: ``world`` processes call this with the same arguments and
        their ``rank`` (e.g. ``*birdbridge.distributed.rank_world()``); each embeds a part and
        rank 0 writes the same index one process would (see :mod:`.index_build`). Only rank 0
        returns the index; other ranks return ``None``.

        ``embedded``: the records' vectors computed already (``--engine ray``:
        :mod:`birdbridge.retrieval.ray_engine`); ``teacher`` is then its id, loaded by nobody here.
        """
        from .index_build import build_index

        root = Path(root)
        records = [r if isinstance(r, ImageRecord) else ImageRecord(os.path.abspath(r)) for r in records]
        stats = build_index(root, teacher, records, kind=kind, add=add, shard_size=shard_size, batch_size=batch_size,
                            progress=progress, rank=rank, world=world, timeout_s=timeout_s, embedded=embedded,
                            max_memory=max_memory, rerank=rerank)
        if rank != 0:
            return None
        index = cls.open(root)
        index.last_build = stats  # this run's counts: already_indexed, metadata_updated
        return index

    @classmethod
    def build_from_parts(cls, root: str | Path, parts_dir: str | Path, *, kind: str = "faiss-ivfpq",
                         max_memory: int | str | None = None, add: bool = False, teacher: str | None = None,
                         rerank: bool | None = None, progress: Progress | None = None) -> "ImageIndex":
        """Index the embedding parts in ``parts_dir`` (:mod:`birdbridge.embedding_parts`) without loading them all.

        The parts stay where they are (the index lists them; re-ranking reads them). With
        ``add=True`` the parts not indexed yet are appended (IVF-PQ: encoded with the trained
        quantisers). ``teacher`` names the model that made the vectors when the parts'
        manifest does not. ``rerank`` records search's default.
        """
        from .index_parts import build_from_parts

        build_from_parts(Path(root), Path(parts_dir), kind=kind, max_memory=max_memory, add=add, teacher=teacher,
                         rerank=rerank, progress=progress)
        return cls.open(root)

    def add(self, teacher, records: Sequence[ImageRecord | str | Path], **kwargs) -> "ImageIndex":
        """Append ``records`` (paths already indexed are skipped); returns the re-opened index."""
        return ImageIndex.build(self.root, teacher, records, add=True, **{"kind": self.manifest.get("kind_requested", "auto"), **kwargs})


# the records and FAISS helpers are re-exported: users build an index from this one module
__all__ = ["ImageIndex", "ImageRecord", "records_from_collection", "records_from_source", "choose_kind", "build_faiss",
           "teachers_match", "EXACT_MAX", "KINDS"]
