"""What an index is made of, shared by its reader (:mod:`.index`) and writer (:mod:`.index_build`).

The manifest's name and format version, the metadata columns, the records an index is
built from, the FAISS index kinds and how each is built, and how teacher ids compare.
Both sides import this module and neither imports the other at module level.

Index kinds: exact ``IndexFlatIP`` up to :data:`EXACT_MAX` vectors (brute force over
100k × 768 floats is ~10 ms per query, exact is affordable and has no tuning), and HNSW
above. HNSW rather than IVF because a photo collection grows by ``--add``: HNSW needs no
training and takes new vectors as they come, whereas IVF's coarse centroids are fitted
to the vectors seen at training time and degrade or need retraining as the collection
drifts. IVF (``faiss-ivf``) is kept as an override for very large indexes, and IVF-PQ
(``faiss-ivfpq``, :mod:`.index_pq`) for collections whose float32 vectors do not fit in RAM:
compressed codes sized to a ``max_memory`` budget, exact vectors read back only to re-rank.
"""

from __future__ import annotations

import os

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import ConfigError

MANIFEST = "index.json"
FORMAT_VERSION = 1
EXACT_MAX = 100_000
KINDS = ("auto", "faiss-flat", "faiss-hnsw", "faiss-ivf", "faiss-ivfpq")
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
    species_from: str = ""  # "file name": a loose photo named Genus_species.jpg (data.generic); not stored


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
            path=os.path.abspath(collection.resolve(item.path)),  # as typed: symlinks kept
            species_id=item.species_id or "",
            scientific_name=sp.scientific_name if sp else "",
            common_name=sp.common_name if sp else "",
            ranks=ranks,
            author=str(ex.get("author", "")),
            license=str(ex.get("license", ex.get("licence", ""))),
            source=str(ex.get("source_url", ex.get("source", ""))),
            dataset=collection.name,
            split=item.split,
            species_from=str(ex.get("species_from", "")),
        ))
    return out


def check_index_dir(root: str | Path) -> Path:
    """``root`` if it holds an index (its manifest), else the one message every verb gives."""
    root = Path(root)
    if not (root / MANIFEST).is_file():
        raise ConfigError(f"{root}: not an image index (no {MANIFEST}); build one with `birdbridge index`")
    return root


def records_from_source(source: str | Path, dataset: str | None = None, splits: Sequence[str] = ()) -> list[ImageRecord]:
    """Images from a folder (per-species subfolders and/or loose files), a CSV, or a dataset kind."""
    from ..data.loaders import load_collection

    source = Path(source)
    if dataset not in (None, "auto"):
        kw = {"kind": "images"} if dataset in ("csv", "folder") else {}
        return records_from_collection(load_collection(dataset, source, **kw), splits)
    if source.is_file() and source.suffix.lower() == ".csv":
        return records_from_collection(load_collection("csv", source, kind="images"), splits)
    if not source.is_dir():
        raise ConfigError(f"not a folder or CSV: {source}")
    # species folders name their photos; loose photos (and those in images/, photos/) have no species
    return records_from_collection(load_collection("folder", source, kind="images"), splits)


def named_by_file_note(records: Sequence[ImageRecord]) -> str:
    """``"3 photos got their species from the file name ..."``, or ``""`` when none did."""
    from ..data.generic import SPECIES_FROM_FILE_NAME

    n = sum(1 for r in records if r.species_from == SPECIES_FROM_FILE_NAME)
    return (f"{n} photo{'s' if n != 1 else ''} got {'their' if n != 1 else 'its'} species from the file name "
            "(Genus_species.jpg)") if n else ""


def unnamed_note(records: Sequence[ImageRecord]) -> str:
    """A warning when photos have no species name (the index could not name what it finds), else ``""``."""
    n = sum(1 for r in records if not r.scientific_name)
    if not n:
        return ""
    which = "none of the" if n == len(records) else f"{n} of the"
    return (f"{which} {len(records)} photos has a species name (loose files, not in species folders): the index "
            "finds photos but cannot say which species they show, and `search --guess-species` needs "
            "--species-list. To name them, put each species' photos in a folder named after it "
            "(Sayornis_nigricans/) or name each photo so (Sayornis_nigricans_1.jpg), or index a CSV with path,scientific_name[,common_name] columns")


# --------------------------------------------------------------------------- FAISS


def choose_kind(requested: str, count: int) -> str:
    if requested not in KINDS:
        raise ConfigError(f"index kind must be one of {KINDS}, not {requested!r}")
    if requested != "auto":
        return requested
    return "faiss-flat" if count <= EXACT_MAX else "faiss-hnsw"


def build_faiss(kind: str, vectors: np.ndarray | Sequence[np.ndarray], max_memory: int | str | None = None):
    """The FAISS index of ``kind`` over ``vectors`` (one array, or a list of memory-mapped parts for IVF-PQ)."""
    import faiss

    if kind == "faiss-ivfpq":  # built from the parts as they are, never concatenated
        from .index_pq import DEFAULT_MAX_MEMORY, build_pq

        sources = [vectors] if isinstance(vectors, np.ndarray) else [v for v in vectors if len(v)]
        return build_pq(sources, max_memory or DEFAULT_MAX_MEMORY)[0]
    if not isinstance(vectors, np.ndarray):
        vectors = np.concatenate([np.asarray(v, np.float32) for v in vectors])
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


def tune_search(index, kind: str) -> None:
    # Search-time parameters are not all serialised; set them after every load.
    if kind == "faiss-hnsw":
        index.hnsw.efSearch = HNSW_EF_SEARCH
    elif kind == "faiss-ivf":
        index.nprobe = min(IVF_NPROBE, index.nlist)
    elif kind == "faiss-ivfpq":
        from .index_pq import tune

        tune(index)


class ShardRows(Sequence):
    """The metadata rows of an index's shards, read a shard at a time when first asked for.

    An index of parts can hold tens of millions of rows: only the shards a search touches
    are read. Rows of embedding parts (``input`` + the source's columns) get the ``id`` and
    ``path`` an index row has.
    """

    def __init__(self, root: Path, shards: list[dict]):
        import pyarrow.parquet as pq

        self._files = [root / s["metadata"] for s in shards]
        self._offsets = np.cumsum([0] + [pq.ParquetFile(f).metadata.num_rows for f in self._files])
        self._cache: dict[int, list[dict]] = {}

    def _shard(self, s: int) -> list[dict]:
        if s not in self._cache:
            import pyarrow.parquet as pq

            first = int(self._offsets[s])
            rows = pq.read_table(self._files[s]).to_pylist()
            for i, r in enumerate(rows):
                if "path" not in r:
                    r["path"] = r.get("input", "")
                r.setdefault("id", first + i)
            self._cache[s] = rows
        return self._cache[s]

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(i)
        s = int(np.searchsorted(self._offsets, i, side="right")) - 1
        return self._shard(s)[i - int(self._offsets[s])]

    def __iter__(self):
        for s in range(len(self._files)):
            yield from self._shard(s)


def teachers_match(a: str | None, b: str | None) -> bool:
    """Two teacher *ids* name the same folder or hub repo (``local-dir:/x/t``, ``/x/t/``, ``./t``).
    Artefacts compare what their teachers are instead: :func:`birdbridge.encoders.identity.same_teacher`."""
    from ..encoders.hub import normalise_model_id

    return normalise_model_id(a) == normalise_model_id(b)


def indexed_paths(root: str | Path) -> set[str]:
    """The paths the index at ``root`` holds in its committed shards (none when there is no index yet);
    only their metadata files are read (``index --engine ray`` embeds the others)."""
    import json

    import pyarrow.parquet as pq

    manifest = Path(root) / MANIFEST
    if not manifest.is_file():
        return set()
    shards = json.loads(manifest.read_text()).get("shards", [])
    return {p for s in shards for p in pq.read_table(Path(root) / s["metadata"], columns=["path"]).column("path").to_pylist()}
