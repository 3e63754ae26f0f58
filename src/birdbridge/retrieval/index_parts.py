"""Indexing embedding parts where they lie: each complete part becomes a shard by reference.

Nothing is embedded: the parts' ``emb/part-*.npy`` and ``meta/part-*.parquet`` are listed in
the index manifest by absolute path (re-ranking reads exact vectors from them, so they must
stay), and the FAISS index is built over them as :class:`~.index_build.IndexWriter` builds it
over shards -- for ``faiss-ivfpq`` (:mod:`.index_pq`) trained on a sample and added part by
part, so the collection is never in memory. ``add`` appends the parts not listed yet (IVF-PQ:
encoded with the trained quantisers, no retraining).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from .. import __version__
from ..encoders.identity import identify, recorded, same_teacher
from ..errors import ConfigError
from .index_build import IndexWriter, writer_lock
from .index_format import FORMAT_VERSION, Progress


def build_from_parts(root: Path, parts_dir: Path, *, kind: str = "faiss-ivfpq", max_memory: int | str | None = None,
                     add: bool = False, teacher: str | None = None, rerank: bool | None = None,
                     progress: Progress | None = None) -> dict:
    """Index the complete parts of ``parts_dir`` into ``root`` by reference (see the module docstring)."""
    from ..embedding_parts import EmbeddingParts

    parts = EmbeddingParts(parts_dir)
    if not EmbeddingParts.is_parts_dir(parts_dir) or not parts.complete_parts():
        raise ConfigError(f"{parts_dir}: no embedding parts (emb/part-*.npy + meta/part-*.parquet) to index")
    pm = parts.manifest()
    tid = pm.get("teacher_id") or pm.get("model") or teacher
    writer = IndexWriter(root, tid or "", kind, add, 1, 1, progress)
    writer.max_memory, writer.rerank = max_memory, rerank
    with writer_lock(root):
        m = writer.load_manifest()
        if m is None:
            m = {"format_version": FORMAT_VERSION, "birdbridge": __version__, **_teacher_meta(tid, root), "dim": None,
                 "count": 0, "kind": None, "kind_requested": kind, "state": "building", "shards": [],
                 "faiss_file": None, "faiss_count": 0, "skipped": [], "n_skipped": 0, "skip_counts": {},
                 "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "updated": None}
        elif tid and m.get("teacher_id") and not same_teacher(recorded(m, root), identify(tid)):
            raise ConfigError(f"{root} was built with teacher {m['teacher_id']!r}, but {parts_dir} holds vectors of "
                              f"{tid!r}; use a new index directory for another teacher")
        listed = {str(Path(s["vectors"]) if Path(s["vectors"]).is_absolute() else root / s["vectors"]) for s in m["shards"]}
        new = [i for i in parts.complete_parts() if str(parts.emb_path(i).resolve()) not in listed]
        if m.get("state") == "complete" and new and not add:
            raise ConfigError(f"{root} already holds a complete index of {m['count']} images; pass --add to append "
                              f"the {len(new)} new parts of {parts_dir}, or use a new directory")
        writer.keep_pq(m)
        m["kind_requested"] = writer.kind_requested
        writer.record_options(m)
        for i in new:
            v = np.load(parts.emb_path(i), mmap_mode="r")
            if v.ndim != 2 or not len(v):
                continue
            if m["dim"] is None:
                m["dim"] = int(v.shape[1])
            elif v.shape[1] != m["dim"]:
                raise ConfigError(f"{parts.emb_path(i)} holds {v.shape[1]}-d vectors but the index holds {m['dim']}-d")
            m["shards"].append({"vectors": str(parts.emb_path(i).resolve()), "metadata": str(parts.meta_path(i).resolve()),
                                "count": len(v), "first_id": m["count"], "part_of": str(parts.root.resolve())})
            m["count"] += len(v)
            if progress:
                progress(len(v))
        known = {s["input"] for s in m["skipped"]}
        m["skipped"].extend(s for s in parts.skips().to_list() if s["input"] not in known)
        m["state"] = "building"
        writer.write_manifest(m)
        if m["dim"] is None:
            raise ConfigError(f"{parts_dir}: its parts hold no vectors")
        writer.finalize(m)
    return writer.counts()


def _teacher_meta(tid: str | None, root: Path) -> dict:
    if not tid:
        return {"teacher_id": None, "teacher_fingerprint": None}
    try:
        return identify(tid).to_meta(root)
    except Exception:  # noqa: BLE001 - a name that is no model (synthetic vectors) is recorded as given
        return {"teacher_id": tid, "teacher_fingerprint": None}
