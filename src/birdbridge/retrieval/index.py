"""An on-disk image index: teacher image embeddings + metadata + a FAISS index.

Layout of an index directory::

    index.json                  manifest: the commit point (teacher, dim, count, shards, skips)
    shards/shard-00000.npy      float32 unit rows, in id order
    shards/shard-00000.parquet  one metadata row per vector (id, path, species, author, ...)
    faiss-<count>-<kind>.index  FAISS index over all committed rows

Crash safety: every file is written to a temp name and ``os.replace``-d into place, shard
files are never rewritten, and the manifest is replaced *last*. A reader only looks at
what the manifest lists, so it sees either the old or the new index, never half of one;
an interrupted build leaves its completed shards committed and a re-run embeds only what
is missing. Image ids are row numbers and never change once committed (``add`` appends).
Writing (and sharding a build over several processes) lives in :mod:`.index_build`.

Index kinds: exact ``IndexFlatIP`` up to :data:`EXACT_MAX` vectors (brute force over
100k × 768 floats is ~10 ms per query, exact is affordable and has no tuning), and HNSW
above. HNSW rather than IVF because a photo collection grows by ``--add``: HNSW needs no
training and takes new vectors as they come, whereas IVF's coarse centroids are fitted
to the vectors seen at training time and degrade or need retraining as the collection
drifts. IVF (``faiss-ivf``) is kept as an override for very large, memory-tight indexes.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import ConfigError

MANIFEST = "index.json"
FORMAT_VERSION = 1
EXACT_MAX = 100_000
KINDS = ("auto", "faiss-flat", "faiss-hnsw", "faiss-ivf")
HNSW_M = 32
HNSW_EF_CONSTRUCTION = 200
HNSW_EF_SEARCH = 128
IVF_NPROBE = 16
META_COLUMNS = ("id", "path", "species_id", "scientific_name", "common_name", "kingdom", "phylum", "class",
                "order", "family", "genus", "epithet", "author", "license", "source", "dataset", "split")

Progress = Callable[[int], None]


# --------------------------------------------------------------------------- records


@dataclass
class ImageRecord:
    """One image to index; everything but ``path`` is optional metadata."""

    path: str
    species_id: str = ""
    scientific_name: str = ""
    common_name: str = ""
    ranks: dict = field(default_factory=dict)  # kingdom ... epithet, when the source gives them
    author: str = ""
    license: str = ""
    source: str = ""
    dataset: str = ""
    split: str = ""


def records_from_collection(collection, splits: Sequence[str] = ()) -> list[ImageRecord]:
    """Image items of a :class:`~birdbridge.data.records.Collection` as records (absolute paths)."""
    by_id = collection.species_by_id
    out = []
    for item in collection.image_split(*splits):
        sp = by_id.get(item.species_id) if item.species_id else None
        ex = item.extra or {}
        ranks = {} if sp is None else {"kingdom": sp.kingdom, "phylum": sp.phylum, "class": sp.class_, "order": sp.order,
                                       "family": sp.family, "genus": sp.genus, "epithet": sp.epithet}
        out.append(ImageRecord(
            path=str(Path(collection.resolve(item.path)).resolve()),
            species_id=item.species_id or "",
            scientific_name=sp.scientific_name if sp else "",
            common_name=sp.common_name if sp else "",
            ranks=ranks,
            author=str(ex.get("author", "")),
            license=str(ex.get("license", ex.get("licence", ""))),
            source=str(ex.get("source_url", ex.get("source", ""))),
            dataset=collection.name,
            split=item.split,
        ))
    return out


def records_from_source(source: str | Path, dataset: str | None = None, splits: Sequence[str] = ()) -> list[ImageRecord]:
    """Images from a folder (per-species subfolders and/or loose files), a CSV, or a dataset kind."""
    from ..data.generic import IMAGE_EXTS, load_collection

    source = Path(source)
    if dataset not in (None, "auto"):
        kw = {"kind": "images"} if dataset in ("csv", "folder") else {}
        return records_from_collection(load_collection(dataset, source, **kw), splits)
    if source.is_file() and source.suffix.lower() == ".csv":
        return records_from_collection(load_collection("csv", source, kind="images"), splits)
    if not source.is_dir():
        raise ConfigError(f"not a folder or CSV: {source}")
    # Loose photos at the top level have no species; subfolders are species (load_folder).
    loose = [ImageRecord(str(f.resolve()), dataset=source.name) for f in sorted(source.iterdir())
             if f.is_file() and f.suffix.lower() in IMAGE_EXTS and not f.name.startswith(".")]
    has_subdirs = any(d.is_dir() and not d.name.startswith(".") for d in source.iterdir())
    nested = records_from_collection(load_collection("folder", source, kind="images"), splits) if has_subdirs else []
    return loose + nested


# --------------------------------------------------------------------------- FAISS


def choose_kind(requested: str, count: int) -> str:
    if requested not in KINDS:
        raise ConfigError(f"index kind must be one of {KINDS}, not {requested!r}")
    if requested != "auto":
        return requested
    return "faiss-flat" if count <= EXACT_MAX else "faiss-hnsw"


def build_faiss(kind: str, vectors: np.ndarray):
    import faiss

    n, d = vectors.shape
    if kind == "faiss-flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "faiss-hnsw":
        index = faiss.IndexHNSWFlat(d, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        index.hnsw.efSearch = HNSW_EF_SEARCH
    elif kind == "faiss-ivf":
        # ~4·sqrt(n) lists, and at least 39 training points per list (FAISS's own floor).
        nlist = max(1, min(int(4 * math.sqrt(max(n, 1))), n // 39 or 1))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        # spherical k-means: unit-norm centroids, so cells are cones of cosine similarity
        # (benchmarks/bench_search.py: recall@10 0.96 at nprobe 2 on 1M clustered vectors)
        index.cp.spherical = True
        if n:
            rng = np.random.default_rng(0)
            sample = vectors if n <= 256 * nlist else vectors[rng.choice(n, 256 * nlist, replace=False)]
            index.train(np.ascontiguousarray(sample))
        index.nprobe = min(IVF_NPROBE, nlist)
    else:
        raise ConfigError(f"unknown index kind {kind!r}")
    if n:
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def _tune(index, kind: str) -> None:
    # Search-time parameters are not all serialised; set them after every load.
    if kind == "faiss-hnsw":
        index.hnsw.efSearch = HNSW_EF_SEARCH
    elif kind == "faiss-ivf":
        index.nprobe = min(IVF_NPROBE, index.nlist)


# --------------------------------------------------------------------------- the index


class ImageIndex:
    """A committed index, opened read-only: ``search``, ``metadata``, ``vectors_for``."""

    def __init__(self, root: Path, manifest: dict, shards: list[np.ndarray], meta_rows: list[dict], faiss_index):
        self.root = root
        self.manifest = manifest
        self._shards = shards  # memory-mapped, one per shard, in id order
        self._offsets = np.cumsum([0] + [len(s) for s in shards])
        self._rows = meta_rows
        self._faiss = faiss_index

    # -- reading --------------------------------------------------------------------

    @classmethod
    def open(cls, root: str | Path) -> "ImageIndex":
        root = Path(root)
        mpath = root / MANIFEST
        if not mpath.is_file():
            raise ConfigError(f"{root}: not an image index (no {MANIFEST}); build one with `birdbridge index`")
        manifest = json.loads(mpath.read_text())
        if manifest.get("format_version") != FORMAT_VERSION:
            raise ConfigError(f"{root}: index format {manifest.get('format_version')!r} is not supported (expected {FORMAT_VERSION})")
        vecs, rows = [], []
        import pyarrow.parquet as pq

        for shard in manifest["shards"]:
            # mmap: a large index's vectors stay on disk; only the rows a query touches are read.
            vecs.append(np.load(root / shard["vectors"], mmap_mode="r"))
            rows.extend(pq.read_table(root / shard["metadata"]).to_pylist())
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
                _tune(index, manifest["kind"])
                return index
        # A build interrupted before its final FAISS write: the shards are the truth, so the
        # index is rebuilt in memory (the next `birdbridge index` run writes it to disk).
        dim = int(manifest["dim"] or 0)
        vectors = np.concatenate(shards).astype(np.float32) if shards else np.zeros((0, dim), np.float32)
        return build_faiss(manifest["kind"] or choose_kind("auto", len(vectors)), vectors)

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
    def kind(self) -> str:
        return self.manifest["kind"]

    def __len__(self) -> int:
        return self.count

    def search(self, vectors: np.ndarray, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """Inner-product (= cosine on unit rows) top-``k``: ``(scores [Q, k], ids [Q, k])``; ids -1 pad."""
        q = np.ascontiguousarray(np.atleast_2d(vectors), dtype=np.float32)
        if q.shape[1] != self.dim:
            raise ConfigError(f"query vectors are {q.shape[1]}-d but the index holds {self.dim}-d vectors")
        if self.count == 0 or k <= 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        scores, ids = self._faiss.search(q, min(k, self.count))
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
              rank: int = 0, world: int = 1, timeout_s: float = 24 * 3600.0) -> "ImageIndex | None":
        """Embed ``records`` with ``teacher``'s image tower into ``root`` and return the opened index.

        Resumes an interrupted build (shards already committed are not re-embedded). On a
        completed index, new images need ``add=True``; paths already indexed are skipped.
        ``teacher`` is a :class:`~birdbridge.encoders.teacher.Teacher` or a model id.

        Sharded over processes: ``world`` processes call this with the same arguments and
        their ``rank`` (e.g. ``*birdbridge.distributed.rank_world()``); each embeds a part and
        rank 0 writes the same index one process would (see :mod:`.index_build`). Only rank 0
        returns the index; other ranks return ``None``.
        """
        from .index_build import build_index

        root = Path(root)
        records = [r if isinstance(r, ImageRecord) else ImageRecord(str(Path(r).resolve())) for r in records]
        build_index(root, teacher, records, kind=kind, add=add, shard_size=shard_size, batch_size=batch_size,
                    progress=progress, rank=rank, world=world, timeout_s=timeout_s)
        return cls.open(root) if rank == 0 else None

    def add(self, teacher, records: Sequence[ImageRecord | str | Path], **kwargs) -> "ImageIndex":
        """Append ``records`` (paths already indexed are skipped); returns the re-opened index."""
        return ImageIndex.build(self.root, teacher, records, add=True, **{"kind": self.manifest.get("kind_requested", "auto"), **kwargs})


def _norm_model_id(model_id: str | None) -> str:
    """``local-dir:/x/teacher``, ``/x/teacher/`` and ``./teacher`` name the same teacher."""
    if not model_id:
        return ""
    from ..encoders import hub

    kind, ref = hub.split_model_id(model_id)
    if kind == "local":
        return "local:" + str(Path(ref).expanduser().resolve())
    return f"{kind}:{ref}"


def teachers_match(a: str | None, b: str | None) -> bool:
    return _norm_model_id(a) == _norm_model_id(b)


__all__ = ["ImageIndex", "ImageRecord", "records_from_collection", "records_from_source", "choose_kind",
           "teachers_match", "EXACT_MAX", "KINDS"]
