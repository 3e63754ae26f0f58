"""Embeddings at platform scale: clip-retrieval's layout of parts, written as they stream.

``DIR/emb/part-00000.npy`` (float32 unit rows) + ``DIR/meta/part-00000.parquet`` (one row of
metadata per vector, same order) per part, and ``DIR/embeddings.json`` (provenance and the
inputs skipped, with reasons). This is the layout clip-retrieval writes and autofaiss reads,
so a collection of tens of millions of vectors never has to sit in one array: an index is
built part by part (:mod:`birdbridge.retrieval.index_pq`), a distributed job writes each
part once (:mod:`birdbridge.retrieval.ray_engine`), and a re-run skips the parts whose
``.npy`` and ``.parquet`` are both complete.

A part is *complete* when both files exist: each is written atomically (temporary file +
rename), the ``.parquet`` last, so a killed job leaves either a whole part or none of it.
Part ``i`` holds inputs ``[i * part_size, (i + 1) * part_size)`` of the job's sorted input
list minus those skipped, so part numbers are stable across re-runs of the same job.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np

from .embeddings import Embeddings, package_versions
from .errors import SkipLog

MANIFEST = "embeddings.json"
EMB_DIR = "emb"
META_DIR = "meta"
SKIPS_DIR = "skipped"  # per-part skip logs, merged into the manifest by :meth:`EmbeddingParts.finish`


def part_name(i: int) -> str:
    return f"part-{i:05d}"


class EmbeddingParts:
    """A directory of embedding parts (see the module docstring)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    # ------------------------------------------------------------------ paths
    def emb_path(self, i: int) -> Path:
        return self.root / EMB_DIR / f"{part_name(i)}.npy"

    def meta_path(self, i: int) -> Path:
        return self.root / META_DIR / f"{part_name(i)}.parquet"

    def skips_path(self, i: int) -> Path:
        return self.root / SKIPS_DIR / f"{part_name(i)}.json"

    @staticmethod
    def is_parts_dir(path: str | Path) -> bool:
        p = Path(path)
        return p.is_dir() and ((p / MANIFEST).is_file() or (p / EMB_DIR).is_dir())

    # ------------------------------------------------------------------ writing
    def write_part(self, i: int, vectors: np.ndarray, rows: list[dict], skips: SkipLog | None = None) -> None:
        """Write part ``i`` atomically: vectors, skip log, then metadata (the completion mark)."""
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        from .io import atomic_write_bytes, atomic_write_json

        vectors = np.asarray(vectors, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(rows):
            raise ValueError(f"part {i}: {len(rows)} rows for vectors of shape {vectors.shape}")
        for d in (EMB_DIR, META_DIR, SKIPS_DIR):
            (self.root / d).mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.save(buf, vectors)
        atomic_write_bytes(self.emb_path(i), buf.getvalue())
        atomic_write_json(self.skips_path(i), (skips or SkipLog()).to_list())
        columns = list(dict.fromkeys(k for row in rows for k in row)) or ["input"]
        table = pa.table({c: [row.get(c) for row in rows] for c in columns}) if rows else \
            pa.table({"input": pa.array([], pa.string())})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        atomic_write_bytes(self.meta_path(i), sink.getvalue().to_pybytes())

    def finish(self, meta: dict) -> Path:
        """Write the manifest: provenance, row count, dimension and every part's skips merged."""
        from .io import atomic_write_json

        skips = self.skips()
        n, dim = 0, 0
        for i in self.complete_parts():
            v = np.load(self.emb_path(i), mmap_mode="r")
            n += len(v)
            dim = dim or (int(v.shape[1]) if v.ndim == 2 else 0)
        atomic_write_json(self.root / MANIFEST, {**meta, "layout": "clip-retrieval", "versions": package_versions(),
                                                 "n_parts": len(self.complete_parts()), "n_rows": n, "dim": dim,
                                                 "n_skipped": len(skips), "skipped": skips.to_list()})
        return self.root / MANIFEST

    # ------------------------------------------------------------------ reading
    def complete_parts(self) -> list[int]:
        """Numbers of the parts whose vectors and metadata are both on disk, ascending."""
        meta_dir = self.root / META_DIR
        if not meta_dir.is_dir():
            return []
        done = []
        for p in meta_dir.glob("part-*.parquet"):
            try:
                i = int(p.stem.split("-", 1)[1])
            except ValueError:
                continue
            if self.emb_path(i).is_file():
                done.append(i)
        return sorted(done)

    def manifest(self) -> dict:
        path = self.root / MANIFEST
        return json.loads(path.read_text()) if path.is_file() else {}

    def skips(self) -> SkipLog:
        log = SkipLog()
        for i in self.complete_parts():
            p = self.skips_path(i)
            if p.is_file():
                log.skips.extend(SkipLog.from_list(json.loads(p.read_text())).skips)
        return log

    def n_rows(self) -> int:
        return sum(len(np.load(self.emb_path(i), mmap_mode="r")) for i in self.complete_parts())

    def dim(self) -> int:
        for i in self.complete_parts():
            v = np.load(self.emb_path(i), mmap_mode="r")
            if v.ndim == 2 and len(v):
                return int(v.shape[1])
        return int(self.manifest().get("dim", 0))

    def iter_vectors(self, mmap: bool = True) -> Iterator[tuple[int, np.ndarray]]:
        """(part number, vectors) per complete part; memory-mapped, so a part costs no RAM until read."""
        for i in self.complete_parts():
            yield i, np.load(self.emb_path(i), mmap_mode="r" if mmap else None)

    def read_rows(self, i: int) -> list[dict]:
        import pyarrow.parquet as pq

        return pq.read_table(self.meta_path(i)).to_pylist()

    def load_all(self) -> Embeddings:
        """Every part in one :class:`Embeddings` (for collections that fit in memory)."""
        parts = self.complete_parts()
        vectors = [np.load(self.emb_path(i)) for i in parts]
        rows = [r for i in parts for r in self.read_rows(i)]
        dim = self.dim()
        meta = {k: v for k, v in self.manifest().items() if k not in ("skipped", "n_rows", "dim", "n_skipped")}
        arr = np.concatenate(vectors).astype(np.float32) if vectors else np.zeros((0, dim), np.float32)
        return Embeddings(arr, rows, self.skips(), meta)
