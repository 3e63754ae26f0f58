"""Recordings → LitData shards (``birdbridge data prepare``), and shards → training crops.

Training decodes every clip of every epoch. From the original files that means opening a
WAV/MP3/FLAC, decoding and resampling to 48 kHz on every step; from shards it means
slicing an int16 array out of a memory-mapped chunk (``benchmarks/bench_loader.py``
measures both; ``docs/DATA.md`` says why the encoding is what it is).

Layout of a shard directory (``OUT``)::

    index.json          LitData's chunk index (StreamingDataset reads it)
    chunk-P-C.bin       LitData chunks; sample = {"audio": int16[n] | FLAC bytes, "label": int, "sr": int}
    samples.parquet     one row per sample, in sample order: path, species_id, split,
                        start_s, end_s, sample_rate, frames, duration_s, extra (JSON)
    skipped.json        inputs that were not written, with reasons (SkipLog format)
    birdbridge.json     the manifest (format, encoding, rate, species, counts); written last

Chunks are written with LitData's own :class:`~litdata.streaming.writer.BinaryWriter`, in
*parts* of ``part_size`` recordings: a part's chunks, then its record in ``.parts/`` (the
commit point). An interrupted prepare resumes at the first uncommitted part, after
removing that part's orphan chunks; the final ``index.json`` lists every part's chunks in
order, so sample ``i`` is row ``i`` of ``samples.parquet``. Decoding runs in a process
pool; the writer, in this process, keeps input order.

Reading: :class:`ShardReader` opens a :class:`litdata.StreamingDataset` lazily in each
process (loader workers included) and reads samples by index -- from a local directory by
memory map, from any URL LitData reads (``s3://``, ``gs://``, ``azure://``, ``hf://``,
``local:``) by fetching that sample's bytes. Which samples a rank reads, in which order,
is the training sampler's business (``distill/data.py``), so resume stays exact.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import multiprocessing as mp
import os
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from ..errors import BadInputError, ConfigError, SkipLog
from ..io import atomic_write_bytes, atomic_write_json
from ..taxonomy import Species
from .audio import audio_info, crop_offset, load_audio, pad_to_length
from .crop import crop_frames
from .records import AudioItem, Collection

FORMAT = "birdbridge-audio-shards"
FORMAT_VERSION = 1
MANIFEST = "birdbridge.json"
SAMPLES = "samples.parquet"
SKIPPED = "skipped.json"
PARTS = ".parts"
ENCODINGS = ("pcm16", "flac")
REMOTE_PREFIXES = ("s3://", "gs://", "azure://", "hf://", "r2://", "local:")
_SCALE = 32768.0  # libsndfile reads 16-bit PCM as int / 32768: the inverse keeps 16-bit sources exact


def is_remote(path: str | Path) -> bool:
    return str(path).startswith(REMOTE_PREFIXES)


# --------------------------------------------------------------------------- encoding


def to_pcm16(wave: np.ndarray) -> np.ndarray:
    return np.clip(np.round(wave * _SCALE), -32768, 32767).astype(np.int16)


def _encode(job: tuple) -> tuple[int, object, dict]:
    """Decode one recording and encode it (runs in the prepare pool)."""
    i, path, start_s, end_s, rate, encoding = job
    try:
        sr = rate or audio_info(path)["samplerate"]
        pcm = to_pcm16(load_audio(path, sr, start_s=start_s, end_s=end_s))
    except BadInputError as err:
        return i, None, {"reason": err.reason, "detail": err.detail}
    if encoding == "flac":
        import soundfile as sf

        buf = io.BytesIO()
        sf.write(buf, pcm, sr, format="FLAC", subtype="PCM_16")
        return i, buf.getvalue(), {"sr": sr, "frames": len(pcm)}
    return i, pcm, {"sr": sr, "frames": len(pcm)}


def decode_sample(audio, sr: int):
    """``(frames, read(a, b))`` for a stored sample: int16 array or FLAC bytes, read as float32."""
    if isinstance(audio, (bytes, bytearray, memoryview)):
        import soundfile as sf

        f = sf.SoundFile(io.BytesIO(bytes(audio)))

        def read_flac(a: int, b: int) -> np.ndarray:
            f.seek(a)
            return f.read(b - a, dtype="float32")

        return f.frames, read_flac
    arr = np.asarray(audio)
    return len(arr), lambda a, b: arr[a:b].astype(np.float32) * np.float32(1.0 / _SCALE)


# --------------------------------------------------------------------------- prepare


def _job_key(kind, path, options, rate, encoding, splits, part_size, chunk_bytes, items) -> str:
    h = hashlib.sha256(json.dumps([kind, str(path), options, rate, encoding, splits, part_size, chunk_bytes],
                                  sort_keys=True, default=str).encode())
    for it in items:
        h.update(f"{it.path}\t{it.species_id}\t{it.split}\t{it.start_s}\t{it.end_s}\n".encode())
    return h.hexdigest()[:20]


@contextlib.contextmanager
def _writer_rank(rank: int):
    # BinaryWriter names its chunks and index by this variable (LitData's optimize sets it per worker)
    old = os.environ.get("DATA_OPTIMIZER_GLOBAL_RANK")
    os.environ["DATA_OPTIMIZER_GLOBAL_RANK"] = str(rank)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("DATA_OPTIMIZER_GLOBAL_RANK", None)
        else:
            os.environ["DATA_OPTIMIZER_GLOBAL_RANK"] = old


def _drop_orphans(out: Path, part: int) -> None:
    for f in out.glob(f"chunk-{part}-*.bin"):
        f.unlink()
    (out / f"{part}.index.json").unlink(missing_ok=True)


def _imap(fn, jobs: list, workers: int) -> Iterable:
    if workers <= 1:
        yield from map(fn, jobs)
        return
    # spawn: the caller may hold threads (a progress bar), which fork would copy mid-lock
    with mp.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(fn, jobs, chunksize=4)


def _write_part(out: Path, part: int, items: list[AudioItem], coll: Collection, label: dict, rate, encoding: str,
                chunk_bytes: str, workers: int, progress) -> dict:
    from litdata.streaming.writer import BinaryWriter

    _drop_orphans(out, part)
    jobs = [(k, str(coll.resolve(it.path)), it.start_s, it.end_s, rate, encoding) for k, it in enumerate(items)]
    samples, skips, n = [], SkipLog(), 0
    with _writer_rank(part), contextlib.redirect_stdout(io.StringIO()):  # the writer prints its inferred format
        writer = BinaryWriter(str(out), chunk_bytes=chunk_bytes)
        assert writer.rank == part
        for k, audio, info in _imap(_encode, jobs, workers):
            it = items[k]
            if audio is None:
                skips.add(it.path, info["reason"], info["detail"])
            else:
                writer.add_item(n, {"audio": audio, "label": label[it.species_id], "sr": info["sr"]})
                n += 1
                samples.append({"path": it.path, "species_id": it.species_id, "split": it.split, "start_s": it.start_s,
                                "end_s": it.end_s, "sample_rate": info["sr"], "frames": info["frames"],
                                "duration_s": info["frames"] / info["sr"], "extra": json.dumps(it.extra, default=str)})
            if progress:
                progress(1)
        writer.done()
    index_file = out / f"{part}.index.json"
    index = json.loads(index_file.read_text()) if index_file.is_file() else {"chunks": [], "config": None}
    record = {"part": part, "chunks": index["chunks"], "config": index["config"], "samples": samples,
              "skipped": skips.to_list()}
    atomic_write_json(out / PARTS / f"part-{part:05d}.json", record)  # the part's commit point
    index_file.unlink(missing_ok=True)
    return record


def prepare_shards(
    kind: str,
    path: str | Path,
    out: str | Path,
    *,
    sample_rate: int | None = 48000,
    encoding: str = "pcm16",
    splits: Iterable[str] | None = None,
    options: dict | None = None,
    num_workers: int | None = None,
    part_size: int = 1000,
    chunk_bytes: str = "64MB",
    progress: Callable[[int], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
) -> dict:
    """Write the audio of ``load_collection(kind, path, **options)`` as shards in ``out``.

    ``sample_rate=None`` keeps each file's own rate (lossless for 16-bit sources; the
    loader then resamples every crop). ``splits`` keeps those splits only. Bad files are
    skipped and listed in ``skipped.json``; an interrupted run resumes; a finished one is
    not redone. Returns the manifest. ``on_start(n_inputs, n_done)`` is called once the
    work is known; ``progress(n)`` as recordings are done.
    """
    from .loaders import load_collection

    if encoding not in ENCODINGS:
        raise ConfigError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    if sample_rate is not None and sample_rate <= 0:
        raise ConfigError(f"sample rate must be positive, got {sample_rate}")
    if part_size < 1:
        raise ConfigError("part_size must be positive")
    out = Path(out)
    options = dict(options or {})
    coll = load_collection(kind, path, **options)
    keep = set(splits) if splits else None
    items = [a for a in coll.audio if keep is None or a.split in keep]
    if not items:
        raise ConfigError(f"{path}: no recordings to prepare" + (f" in split(s) {sorted(keep)}" if keep else ""))
    key = _job_key(kind, Path(path).resolve(), options, sample_rate, encoding, sorted(keep or []), part_size,
                   chunk_bytes, items)
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        m = json.loads(manifest_path.read_text())
        if m.get("job") == key:
            if on_start:
                on_start(len(items), len(items))
            return {**m, "already_complete": True}
        raise ConfigError(f"{out} holds shards of another dataset or options; use a new --out")
    job_file = out / PARTS / "job.json"
    if job_file.is_file() and json.loads(job_file.read_text()).get("job") != key:
        raise ConfigError(f"{out} holds an unfinished prepare of another dataset or options; use a new --out "
                          f"(or delete it)")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(job_file, {"job": key, "kind": kind, "path": str(path)})

    t0 = time.time()
    parts = [items[s : s + part_size] for s in range(0, len(items), part_size)]
    done = {p: json.loads(f.read_text()) for p in range(len(parts)) if (f := out / PARTS / f"part-{p:05d}.json").is_file()}
    if on_start:
        on_start(len(items), sum(len(parts[p]) for p in done))
    label = {sp.id: j for j, sp in enumerate(coll.species)}
    workers = max(1, num_workers if num_workers is not None else (os.cpu_count() or 1))
    resumed = len(done)
    for p, part_items in enumerate(parts):
        if p not in done:
            done[p] = _write_part(out, p, part_items, coll, label, sample_rate, encoding, chunk_bytes, workers, progress)
    manifest = _finish(out, key, kind, path, options, sample_rate, encoding, coll, [done[p] for p in range(len(parts))],
                       len(items), time.time() - t0)
    return {**manifest, "resumed_parts": resumed}


def _finish(out: Path, key, kind, path, options, rate, encoding, coll: Collection, records: list[dict], n_inputs: int,
            seconds: float) -> dict:
    import litdata
    import pyarrow as pa
    import pyarrow.parquet as pq

    chunks = [c for r in records for c in r["chunks"]]
    config = next((r["config"] for r in records if r["config"]), None)
    samples = [s for r in records for s in r["samples"]]
    skips = SkipLog()
    for r in records:
        for s in r["skipped"]:
            skips.add(s["input"], s["reason"], s.get("detail", ""))
    skips.skips.extend(coll.skips.skips)  # rows the loader could not use
    if not samples:
        raise BadInputError("no_usable_audio", out, f"every recording was skipped: {skips.summary()}")
    cols = ["path", "species_id", "split", "start_s", "end_s", "sample_rate", "frames", "duration_s", "extra"]
    schema = pa.schema([("path", pa.string()), ("species_id", pa.string()), ("split", pa.string()),
                        ("start_s", pa.float64()), ("end_s", pa.float64()), ("sample_rate", pa.int64()),
                        ("frames", pa.int64()), ("duration_s", pa.float64()), ("extra", pa.string())])
    sink = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist([{c: s[c] for c in cols} for s in samples], schema=schema), sink)
    atomic_write_bytes(out / SAMPLES, sink.getvalue().to_pybytes())
    atomic_write_json(out / "index.json", {"chunks": chunks, "config": config, "updated_at": str(time.time())})
    atomic_write_json(out / SKIPPED, {"n_skipped": len(skips), "counts": skips.counts(), "skipped": skips.to_list()})
    from .. import __version__

    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "job": key, "kind": kind, "source": str(path),
        "options": options, "encoding": encoding, "sample_rate": rate or "native", "n_inputs": n_inputs,
        "n_samples": len(samples), "n_skipped": len(skips), "skip_counts": skips.counts(),
        "hours": round(sum(s["duration_s"] for s in samples) / 3600, 3),
        "bytes": int(sum(c["chunk_bytes"] for c in chunks)), "n_chunks": len(chunks), "seconds": round(seconds, 1),
        "species": [asdict(sp) for sp in coll.species], "collection": {"name": coll.name, "meta": coll.meta},
        "splits": sorted({s["split"] for s in samples}), "litdata": litdata.__version__, "birdbridge": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    atomic_write_json(out / MANIFEST, manifest)  # the commit point: a reader trusts a directory with this file
    umask = os.umask(0)
    os.umask(umask)
    for f in (out / "index.json", out / SAMPLES, out / SKIPPED, out / MANIFEST):
        os.chmod(f, 0o666 & ~umask)  # atomic writes create owner-only files; shards are for sharing
    shutil.rmtree(out / PARTS, ignore_errors=True)
    return manifest


# --------------------------------------------------------------------------- reading


def _fetch(path: str, cache_dir: str | None, name: str) -> Path:
    """A shard directory's small file: local, or fetched through LitData's downloader for a URL.

    The manifest is fetched on every call; when it differs from the cached one (the shards
    were prepared again), everything cached for that URL is dropped first."""
    if not is_remote(path):
        return Path(path) / name
    from litdata.streaming.downloader import get_downloader

    cache = Path(cache_dir or Path.home() / ".cache" / "birdbridge" / "shards") / hashlib.sha256(path.encode()).hexdigest()[:16]
    cache.mkdir(parents=True, exist_ok=True)
    local = cache / name
    if local.is_file() and name != MANIFEST:
        return local
    fresh = cache / f".{name}.{os.getpid()}"
    try:
        get_downloader(path, str(cache), []).download_file(f"{path.rstrip('/')}/{name}", str(fresh))
    except Exception as err:  # noqa: BLE001 - every backend raises its own error types
        raise ConfigError(f"cannot read {path.rstrip('/')}/{name}: {type(err).__name__}: {err}") from None
    if name == MANIFEST and local.is_file() and local.read_bytes() != fresh.read_bytes():
        for f in cache.iterdir():  # other shards now live at this URL
            if f != fresh:
                shutil.rmtree(f) if f.is_dir() else f.unlink()
    os.replace(fresh, local)
    return local


def read_manifest(path: str | Path, cache_dir: str | None = None) -> dict:
    f = _fetch(str(path), cache_dir, MANIFEST)
    if not f.is_file():
        hint = " (an interrupted `data prepare`: run it again to finish)" if (Path(path) / PARTS).is_dir() else ""
        raise ConfigError(f"{path}: not a finished shard directory, {MANIFEST} missing{hint}")
    m = json.loads(f.read_text())
    if m.get("format") != FORMAT or m.get("format_version", 0) > FORMAT_VERSION:
        raise ConfigError(f"{path}: {MANIFEST} is not a birdbridge shard manifest this version reads")
    return m


def load_shards(path: str | Path, *, cache_dir: str | None = None, split: str | Iterable[str] | None = None) -> Collection:
    """The :class:`Collection` of a shard directory; each item's ``extra["shard_index"]`` is its sample."""
    import pyarrow.parquet as pq

    path = str(path)
    m = read_manifest(path, cache_dir)
    rows = pq.read_table(_fetch(path, cache_dir, SAMPLES)).to_pylist()
    keep = {split} if isinstance(split, str) else (set(split) if split is not None else None)
    items = [AudioItem(r["path"], r["species_id"], r["split"], r["start_s"], r["end_s"],
                       {**json.loads(r["extra"] or "{}"), "shard_index": i, "duration_s": r["duration_s"],
                        "sample_rate": r["sample_rate"]})
             for i, r in enumerate(rows) if keep is None or r["split"] in keep]
    species = [Species(**sp) for sp in m["species"]]
    return Collection(name=f"shards:{m['collection']['name']}", species=species, audio=items, root=path,
                      meta={"format": "shards", "shards": path, "cache_dir": cache_dir, "encoding": m["encoding"],
                            "sample_rate": m["sample_rate"], "source": m["source"], "n_samples": m["n_samples"]})


class ShardReader:
    """Random access to shard samples; picklable (each process opens its own StreamingDataset)."""

    def __init__(self, path: str, cache_dir: str | None = None):
        self.path, self.cache_dir = str(path), cache_dir
        self._ds = None

    def __getstate__(self) -> dict:
        return {"path": self.path, "cache_dir": self.cache_dir, "_ds": None}

    def _dataset(self):
        if self._ds is None:
            from litdata import StreamingDataset

            cache = None
            if is_remote(self.path):
                cache = str(_fetch(self.path, self.cache_dir, "index.json").parent / "chunks")
            self._ds = StreamingDataset(self.path, cache_dir=cache)
        return self._ds

    def sample(self, index: int) -> dict:
        return self._dataset()[int(index)]

    def crop(self, index: int, sr: int, n: int, policy="random", rng=None, *, pad="repeatpad") -> np.ndarray:
        """An ``n``-sample crop at ``sr`` of sample ``index`` (the crop rule of ``data.crop``)."""
        s = self.sample(index)
        frames, read = decode_sample(s["audio"], int(s["sr"]))
        return crop_frames(read, frames, int(s["sr"]), sr, n, policy, rng, pad=pad)

    def crop_into_pcm16(self, out: np.ndarray, index: int, sr: int, policy="random", rng=None) -> bool:
        """:meth:`crop` as the stored 16-bit integers, written into the int16 ``out``, when that is exact:
        a pcm16 sample stored at ``sr`` (the crop's values are the stored ones, or repeat-padded copies).
        False (``out`` untouched, ``rng`` unused) for any other sample: resampled or FLAC crops go by
        :meth:`crop_into`."""
        s = self.sample(index)
        audio, n = s["audio"], len(out)
        if not isinstance(audio, np.ndarray) or audio.dtype != np.int16 or int(s["sr"]) != sr:
            return False
        if len(audio) > n:
            off = crop_offset(len(audio), n, policy, rng)
            out[:] = audio[off : off + n]
        else:  # crop_frames' short-clip rule (crop_or_pad with repeatpad), on the integers
            out[:] = pad_to_length(audio, n)
        return True

    def crop_into(self, out: np.ndarray, index: int, sr: int, policy="random", rng=None, *, pad="repeatpad") -> None:
        """:meth:`crop` written into ``out`` (float32, its length the crop's): the common case -- an int16
        sample at ``sr``, longer than the crop -- converts the crop in one pass, with no copy."""
        s = self.sample(index)
        audio, n = s["audio"], len(out)
        if isinstance(audio, np.ndarray) and int(s["sr"]) == sr and len(audio) > n:
            off = crop_offset(len(audio), n, policy, rng)
            np.multiply(audio[off : off + n], np.float32(1.0 / _SCALE), out=out)
            return
        frames, read = decode_sample(audio, int(s["sr"]))
        out[:] = crop_frames(read, frames, int(s["sr"]), sr, n, policy, rng, pad=pad)
