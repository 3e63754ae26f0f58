"""Writing an image index: resumable shard commits, in one process or sharded over ranks.

One process: the records not indexed yet (the *to-do* list) are cut into chunks of
``shard_size``; each chunk is embedded and committed as one shard (vectors, then metadata,
then the manifest, each written atomically), so an interrupted build resumes at the first
uncommitted chunk. The FAISS index is written last (:meth:`IndexWriter.finalize`).

Several processes (``world`` ranks, as torchrun or srun start them): every rank reads the
manifest and computes the same to-do list and chunks. The chunks are taken ``world`` at a
time (a *round*): :func:`~birdbridge.distributed.run_sharded` gives each rank one
contiguous block of the round's records (a full round: exactly one chunk per rank), and
rank 0 -- the only rank that holds the writer lock and writes into the index -- gets the
merged embeddings in record order and commits the round's chunks one shard each, exactly
as one process would: same shard files, ids, vectors, skips and manifest. A round is the
resume granularity; a rank that fails makes rank 0 raise
:class:`~birdbridge.distributed.ShardError` before it commits anything of that round, so
the manifest still describes the previous (loadable) index. Each rank embeds a chunk's
records in batches from the chunk's start, as one process does; only where a rank's block
starts inside a chunk (the last, partial round) can batches differ from one process, and
with them the last bit of a vector (``batch_size=1`` is bit-exact everywhere).
Parts go to ``ROOT/.parts/round-NNNNN.rank{r}.*`` and are removed after each round.

From embedding parts (:func:`.index_parts.build_from_parts`): nothing is embedded; each complete part of
the parts directory becomes a shard by reference (absolute paths to its ``.npy`` and
``.parquet``), and the FAISS index is built over them as over shards. IVF-PQ
(:mod:`.index_pq`) trains on a sample and adds part by part, so the collection is never
in memory; ``add`` encodes new shards with the trained quantisers instead of retraining.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import time
from collections import Counter
from pathlib import Path
from typing import Iterator

import numpy as np

from .. import __version__
from ..encoders.identity import identify, recorded, same_teacher
from ..errors import ConfigError, SkipLog
from ..io import atomic_write_bytes, atomic_write_json
from .index_format import FORMAT_VERSION, MANIFEST, META_COLUMNS, ImageRecord, Progress, ShardRows, build_faiss, choose_kind

PARTS_DIR = ".parts"


def build_index(root: Path, teacher, records: list[ImageRecord], *, kind: str = "auto", add: bool = False,
                shard_size: int = 1024, batch_size: int = 64, progress: Progress | None = None,
                rank: int = 0, world: int = 1, timeout_s: float = 24 * 3600.0,
                embedded=None, max_memory: int | str | None = None, rerank: bool | None = None) -> dict:
    """Embed ``records`` into the index at ``root`` (see :meth:`ImageIndex.build`); rank 0 writes.

    ``embedded``: the records' vectors computed already (an :class:`~birdbridge.embeddings.Embeddings`
    with one row per path, e.g. from ``--engine ray``), committed instead of embedding them here.

    Returns rank 0's counts of this run: ``already_indexed`` records, ``metadata_updated`` images.
    """
    writer = IndexWriter(root, teacher, kind, add, shard_size, batch_size, progress, rank, world, timeout_s)
    writer.embedded = embedded
    writer.max_memory, writer.rerank = max_memory, rerank
    if world == 1:
        with writer_lock(root):
            writer.run(records)
        return writer.counts()
    from ..distributed import agree, shared_group

    # Join the group before anything that can fail on one rank only (rank 0's writer lock, the
    # plan): a rank 0 that stopped before joining would leave the others waiting in the
    # rendezvous until the timeout, and one that stopped after, in the first round's barrier.
    with shared_group(rank, world, timeout_s), contextlib.ExitStack() as stack:
        error = None
        try:
            if rank == 0:  # the only rank that writes into the index
                stack.enter_context(writer_lock(root))
            plan = writer.plan(records)
        except Exception as err:  # noqa: BLE001 - every rank must hear of it, whatever it is
            error = err
        agree(rank, world, error, " before the first round")
        writer.run(records, plan)
    return writer.counts() if rank == 0 else {}


@contextlib.contextmanager
def writer_lock(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ConfigError(f"{root}: another process is writing this index") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class IndexWriter:
    def __init__(self, root: Path, teacher, kind: str, add: bool, shard_size: int, batch_size: int, progress,
                 rank: int = 0, world: int = 1, timeout_s: float = 24 * 3600.0):
        if shard_size < 1 or batch_size < 1:
            raise ConfigError("shard_size and batch_size must be positive")
        if world < 1 or not 0 <= rank < world:
            raise ConfigError(f"need 0 <= rank < world, got rank={rank}, world={world}")
        choose_kind(kind, 0)  # validates the name early
        self.root, self.kind_requested, self.add = root, kind, add
        self.shard_size, self.batch_size, self.progress = shard_size, batch_size, progress
        self.rank, self.world, self.timeout_s = rank, world, timeout_s
        self._teacher_arg = teacher
        self._teacher = None if isinstance(teacher, str) else teacher
        self.n_already = self.n_updated = 0
        self.meta_updates: dict[int, dict] = {}
        self.embedded = None  # precomputed vectors (build_index's ``embedded``)
        self.max_memory: int | str | None = None  # IVF-PQ budget (None: the manifest's, else the default)
        self.rerank: bool | None = None  # search's default, recorded in the manifest (None: keep)

    def counts(self) -> dict:
        """This run's counts (rank 0's): records ``already_indexed``, images whose ``metadata_updated``."""
        return {"already_indexed": self.n_already, "metadata_updated": self.n_updated}

    @property
    def teacher(self):
        if self._teacher is None:  # loaded only when something must be embedded
            from ..encoders.teacher import Teacher

            self._teacher = Teacher.load(self._teacher_arg)
        return self._teacher

    def load_manifest(self) -> dict | None:
        p = self.root / MANIFEST
        return json.loads(p.read_text()) if p.is_file() else None

    def plan(self, records: list[ImageRecord]) -> tuple[dict, list[ImageRecord]]:
        return self._plan(records)

    def run(self, records: list[ImageRecord], plan: tuple[dict, list[ImageRecord]] | None = None) -> None:
        m, todo = plan if plan is not None else self._plan(records)
        chunks = [todo[start : start + self.shard_size] for start in range(0, len(todo), self.shard_size)]
        if self.world > 1:
            self._run_sharded(m, chunks)
        else:
            for chunk in chunks:
                self._commit_shard(m, chunk, self._embed(chunk, self.progress))
        if self.rank == 0:
            self._update_metadata(m)
            self.finalize(m)

    def _plan(self, records: list[ImageRecord]) -> tuple[dict, list[ImageRecord]]:
        """The manifest to extend and the records still to embed (the same on every rank)."""
        m = self.load_manifest()
        tid = _teacher_id(self._teacher_arg)
        teacher = identify(tid)  # what the teacher is: weights fingerprint + absolute id
        if m is None:
            m = {"format_version": FORMAT_VERSION, "birdbridge": __version__, **teacher.to_meta(self.root),
                 "dim": None, "count": 0,
                 "kind": None, "kind_requested": self.kind_requested, "state": "building", "shards": [],
                 "faiss_file": None, "faiss_count": 0, "skipped": [], "n_skipped": 0, "skip_counts": {},
                 "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "updated": None}
        else:
            built = recorded(m, self.root)
            if not same_teacher(built, teacher):
                if built is not None and built.id == teacher.id:
                    # Same folder, other weights (a local teacher retrained in place): old and
                    # new vectors would live in different spaces.
                    raise ConfigError(f"the weights of teacher {tid!r} changed since {self.root} was built; "
                                      "rebuild the index in a new directory")
                raise ConfigError(f"{self.root} was built with teacher {m['teacher_id']!r}, not {tid!r}; "
                                  "use a new index directory for another teacher")
            m.update(teacher.to_meta(self.root))  # the same teacher, maybe moved: record where it is now
        stored = _all_rows(self.root, m)  # read once: every shard's metadata
        indexed = {r["path"] for r in stored}
        self.meta_updates = _changed_metadata(stored, records)
        if m.get("state") == "complete" and not self.add:
            # inputs skipped last time count as known: re-running the same build is not an --add
            known = indexed | {s["input"] for s in m.get("skipped", [])}
            if any(r.path not in known for r in records):
                raise ConfigError(f"{self.root} already holds a complete index of {m['count']} images; "
                                  "pass --add (add=True) to append new images, or use a new directory")
        self.keep_pq(m)
        m["kind_requested"] = self.kind_requested
        self.record_options(m)
        seen: set[str] = set()
        todo = []
        for r in records:
            if r.path not in indexed and r.path not in seen:
                seen.add(r.path)
                todo.append(r)
        self.n_already = len(records) - len(todo)
        retried = {r.path for r in todo}
        # Earlier skips are retried (the file may have been fixed) and replaced by this run's outcome.
        m["skipped"] = [s for s in m.get("skipped", []) if s["input"] not in retried]
        if self.progress and self.n_already and self.rank == 0:
            self.progress(self.n_already)
        m["state"] = "building"
        return m, todo

    def keep_pq(self, m: dict) -> None:
        """An IVF-PQ index stays one when more is added with ``kind="auto"`` (its codes are trained, not rebuilt)."""
        if self.kind_requested == "auto" and m.get("kind") == "faiss-ivfpq":
            self.kind_requested = "faiss-ivfpq"

    def record_options(self, m: dict) -> None:
        if self.max_memory is not None:
            from .index_pq import parse_memory

            m["max_index_memory"] = parse_memory(self.max_memory)
        if self.rerank is not None:
            m["rerank"] = bool(self.rerank)

    def _embed(self, chunk: list[ImageRecord], progress: Progress | None = None):
        from .embed import embed_images

        if self.embedded is not None:
            if progress:
                progress(len(chunk))
            return _precomputed(self.embedded, chunk)

        return embed_images(self.teacher, [r.path for r in chunk], batch_size=self.batch_size, progress=progress)

    def _run_sharded(self, m: dict, chunks: list[list[ImageRecord]]) -> None:
        """Rounds of ``world`` chunks: every rank embeds a block of each round, rank 0 commits it."""
        from ..distributed import run_sharded, shared_group

        # names the job, so parts of another job (other teacher, index state, batching) never merge
        key = f"index {_teacher_id(self._teacher_arg)} count={m['count']} shards={len(m['shards'])} batch={self.batch_size}"
        with shared_group(self.rank, self.world, self.timeout_s):
            for r, first in enumerate(range(0, len(chunks), self.world)):
                group = chunks[first : first + self.world]
                # (chunk number, path): a rank embeds each chunk's records apart, batched from
                # the chunk's start as in one process
                items = [(c, rec.path) for c, chunk in enumerate(group) for rec in chunk]
                merged = run_sharded(self._embed_block, items, self.root / PARTS_DIR / f"round-{r:05d}.npy",
                                     rank=self.rank, world=self.world, key=key, timeout_s=self.timeout_s, save=False)
                if self.rank != 0:
                    continue
                for chunk in group:
                    self._commit_shard(m, chunk, _select(merged, {rec.path for rec in chunk}))
                if self.progress:
                    self.progress(len(items))
        if self.rank == 0:
            with contextlib.suppress(OSError):  # parts of a crashed earlier job may still lie there
                (self.root / PARTS_DIR).rmdir()

    def _embed_block(self, items: list[tuple[int, str]]):
        from ..distributed import merge_embeddings
        from .embed import embed_images

        groups: dict[int, list[str]] = {}
        for c, path in items:
            groups.setdefault(c, []).append(path)
        parts = [embed_images(self.teacher, paths, batch_size=self.batch_size) for paths in groups.values()]
        return merge_embeddings(parts) if parts else embed_images(self.teacher, [], batch_size=self.batch_size)

    def _commit_shard(self, m: dict, chunk: list[ImageRecord], emb) -> None:
        by_path = {r.path: r for r in chunk}
        if m["dim"] is None:
            m["dim"] = int(emb.vectors.shape[1]) if self.embedded is not None else int(self.teacher.dim)
        if len(emb.vectors):
            if emb.vectors.shape[1] != m["dim"]:
                raise ConfigError(f"teacher gives {emb.vectors.shape[1]}-d vectors but the index holds {m['dim']}-d")
            rows = [_row(by_path[row["input"]], m["count"] + i) for i, row in enumerate(emb.rows)]
            n = len(m["shards"])
            name = f"shards/shard-{n:05d}"
            # A shard name is used once: a re-run after a crash writes the same name again,
            # which only replaces an orphan the manifest never listed.
            atomic_write_bytes(self.root / f"{name}.npy", _npy_bytes(emb.vectors))
            atomic_write_bytes(self.root / f"{name}.parquet", _parquet_bytes(rows))
            m["shards"].append({"vectors": f"{name}.npy", "metadata": f"{name}.parquet", "count": len(rows),
                                "first_id": m["count"]})
            m["count"] += len(rows)
        m["skipped"].extend(emb.skips.to_list())
        self.write_manifest(m)

    def _update_metadata(self, m: dict) -> None:
        """Rewrite the metadata of images indexed before whose source rows changed (species, credits, ...).

        Vectors stay; each touched shard gets a new metadata file under a new name, listed
        by the manifest written next (the commit point), so a reader sees the old or the
        new metadata, never a mix. The replaced file is removed after that commit.
        """
        self.n_updated = len(self.meta_updates)
        if not self.meta_updates:
            return
        import pyarrow.parquet as pq

        replaced = []
        for shard in m["shards"]:
            first, count = shard["first_id"], shard["count"]
            touched = {i: row for i, row in self.meta_updates.items() if first <= i < first + count}
            if not touched:
                continue
            rows = pq.read_table(self.root / shard["metadata"]).to_pylist()
            for i, row in touched.items():
                rows[i - first] = row
            version = shard.get("metadata_version", 0) + 1
            name = shard["vectors"].removesuffix(".npy") + f".meta{version}.parquet"
            atomic_write_bytes(self.root / name, _parquet_bytes(rows))
            if shard.get("metadata_previous"):
                replaced.append(shard["metadata_previous"])
            shard.update(metadata=name, metadata_version=version, metadata_previous=shard["metadata"])
        self.write_manifest(m)
        # the version just replaced stays for readers that read the old manifest a moment ago
        for old in replaced:
            (self.root / old).unlink(missing_ok=True)

    def finalize(self, m: dict) -> None:
        import faiss

        if m["dim"] is None:
            if not self.add and m["count"] == 0 and not m["skipped"]:
                raise ConfigError("no images to index")
            m["dim"] = int(self.embedded.vectors.shape[1]) if self.embedded is not None else int(self.teacher.dim)
        kind = choose_kind(self.kind_requested, m["count"])
        if m["faiss_file"] and m["faiss_count"] == m["count"] and kind == m["kind"] and (self.root / m["faiss_file"]).is_file():
            m["state"] = "complete"
            self.write_manifest(m)
            return
        # memory-mapped: IVF-PQ reads them part by part; the other kinds concatenate them
        shards = [np.load(self.root / s["vectors"], mmap_mode="r") for s in m["shards"]]
        index = None
        old = self.root / m["faiss_file"] if m["faiss_file"] else None
        if kind == m["kind"] and kind != "faiss-ivf" and old is not None and old.is_file():
            # Flat, HNSW and IVF-PQ take new vectors incrementally (IVF-PQ encodes them with its
            # trained quantisers); IVF is rebuilt so its lists fit the data.
            index = faiss.read_index(str(old))
            if index.ntotal <= m["count"]:
                from .index_pq import add_chunks

                first = np.searchsorted(np.cumsum([len(v) for v in shards]), index.ntotal, side="right")
                done = int(sum(len(v) for v in shards[:first]))
                add_chunks(index, [shards[first][index.ntotal - done :]] + shards[first + 1 :] if first < len(shards) else [])
            else:
                index = None
        if index is None:
            if kind == "faiss-ivfpq":
                index = build_faiss(kind, shards, m.get("max_index_memory"))
            else:
                index = build_faiss(kind, np.asarray(np.concatenate(shards) if shards else np.zeros((0, m["dim"]), np.float32),
                                                     np.float32))
        if kind == "faiss-ivfpq":
            from .index_pq import describe

            m["pq"] = describe(index)
        name = f"faiss-{m['count']}-{kind.removeprefix('faiss-')}.index"
        atomic_write_bytes(self.root / name, faiss.serialize_index(index).tobytes())
        previous = m["faiss_file"]
        m.update(kind=kind, faiss_file=name, faiss_count=int(index.ntotal), state="complete")
        self.write_manifest(m)
        # Drop index files no manifest refers to any more (keep the previous one for readers
        # that read the old manifest a moment ago).
        for f in self.root.glob("faiss-*.index"):
            if f.name not in (name, previous):
                f.unlink(missing_ok=True)

    def write_manifest(self, m: dict) -> None:
        m["n_skipped"] = len(m["skipped"])
        m["skip_counts"] = dict(Counter(s["reason"] for s in m["skipped"]))  # as SkipLog.counts()
        m["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S")
        m["birdbridge"] = __version__
        atomic_write_json(self.root / MANIFEST, m)  # the commit point


def _select(emb, paths: set[str]):
    """The rows and skips of ``emb`` whose input is in ``paths`` (order kept)."""
    from ..embeddings import Embeddings

    keep = [i for i, row in enumerate(emb.rows) if row["input"] in paths]
    skips = SkipLog([s for s in emb.skips.skips if s.input in paths])
    return Embeddings(emb.vectors[keep], [emb.rows[i] for i in keep], skips, emb.meta)


def _precomputed(emb, chunk: list[ImageRecord]):
    """The rows and skips of precomputed ``emb`` for ``chunk``, in the chunk's order (as :func:`embed_images` gives)."""
    from ..embeddings import Embeddings

    at = {row["input"]: i for i, row in enumerate(emb.rows)}
    skipped = {s.input: s for s in emb.skips.skips}
    keep = [at[r.path] for r in chunk if r.path in at]
    skips = SkipLog([skipped[r.path] for r in chunk if r.path not in at and r.path in skipped])
    return Embeddings(emb.vectors[keep], [emb.rows[i] for i in keep], skips, emb.meta)


def _row(rec: ImageRecord, id_: int) -> dict:
    r = {"id": id_, "path": rec.path, "species_id": rec.species_id, "scientific_name": rec.scientific_name,
         "common_name": rec.common_name, "author": rec.author, "license": rec.license, "source": rec.source,
         "dataset": rec.dataset, "split": rec.split}
    for k in ("kingdom", "phylum", "class", "order", "family", "genus", "epithet"):
        r[k] = str(rec.ranks.get(k, "") or "")
    return {c: r[c] for c in META_COLUMNS}


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(a, dtype=np.float32))
    return buf.getvalue()


def _parquet_bytes(rows: list[dict]) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([(c, pa.int64() if c == "id" else pa.string()) for c in META_COLUMNS])
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), sink)
    return sink.getvalue().to_pybytes()


def _teacher_id(teacher) -> str:
    return teacher if isinstance(teacher, str) else teacher.model_id


def _all_rows(root: Path, m: dict) -> list[dict]:
    return list(ShardRows(root, m["shards"]))


def _changed_metadata(stored: list[dict], records: list[ImageRecord]) -> dict[int, dict]:
    """``{image id: new metadata row}`` for indexed paths whose record now says something else.

    A path's first record wins, as for embedding; ``dataset`` is where the record was read
    from this time, so it is compared like any other column.
    """
    by_path = {}
    for r in records:
        by_path.setdefault(r.path, r)
    out = {}
    for row in stored:
        rec = by_path.get(row["path"])
        if rec is not None:
            new = _row(rec, row["id"])
            # `dataset` only says which file or folder the record came from this time
            if any(str(row.get(c) or "") != new[c] for c in META_COLUMNS if c not in ("id", "dataset")):
                out[row["id"]] = new
    return out
