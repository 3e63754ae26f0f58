"""Recordings → LitData shards: ``birdbridge data prepare``.

Any dataset :func:`~birdbridge.data.loaders.load_collection` reads is decoded once
(:func:`~birdbridge.data.audio.load_audio`, at one rate) and written in the format
:mod:`.shards` describes and reads.

Chunks are written with LitData's own :class:`~litdata.streaming.writer.BinaryWriter`, in
*parts* of ``part_size`` recordings: a part's chunks, then its record in ``.parts/`` (the
commit point). An interrupted prepare resumes at the first uncommitted part, after
removing that part's orphan chunks; the final ``index.json`` lists every part's chunks in
order, so sample ``i`` is row ``i`` of ``samples.parquet``. Decoding runs in a process
pool; the writer, in this process, keeps input order.
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
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path

from ..errors import BadInputError, ConfigError, SkipLog
from ..io import atomic_write_bytes, atomic_write_json
from .audio import audio_info, load_audio
from .loaders import load_collection
from .records import AudioItem, Collection
from .shards import ENCODINGS, FORMAT, FORMAT_VERSION, MANIFEST, PARTS, SAMPLES, SKIPPED, to_pcm16


def stored_rate(native: int, rate: int | None) -> int:
    """The rate a recording is stored at: its own, capped at ``rate`` (None: always its own).

    Never above the source's rate: upsampled 16-bit audio would carry requantisation noise in the
    band the source never had (above 11.025 kHz for iNatSounds' 22.05 kHz), where a file decoded
    to float for evaluation is near-silent, and the mel bins there would differ by ~12 dB between
    training and evaluation. Stored at the source rate, a crop is resampled when it is read, by
    the soxr path file decoding uses (``data.crop.crop_frames``), so both give the same signal."""
    return native if rate is None else min(native, rate)


def _encode(job: tuple) -> tuple[int, object, dict]:
    """Decode one recording and encode it (runs in the prepare pool)."""
    i, path, start_s, end_s, rate, encoding = job
    try:
        sr = stored_rate(audio_info(path)["samplerate"], rate)
        pcm = to_pcm16(load_audio(path, sr, start_s=start_s, end_s=end_s))
    except BadInputError as err:
        return i, None, {"reason": err.reason, "detail": err.detail}
    if encoding == "flac":
        import soundfile as sf

        buf = io.BytesIO()
        sf.write(buf, pcm, sr, format="FLAC", subtype="PCM_16")
        return i, buf.getvalue(), {"sr": sr, "frames": len(pcm)}
    return i, pcm, {"sr": sr, "frames": len(pcm)}


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
    exclude_species: str | Path | None = None,
) -> dict:
    """Write the audio of ``load_collection(kind, path, **options)`` as shards in ``out``.

    ``sample_rate`` is the highest rate stored: a recording at a lower rate keeps its own
    (:func:`stored_rate`; the reader resamples its crops to the model's rate), a higher one is
    resampled down to it. ``sample_rate=None`` keeps every file's own rate. ``splits`` keeps those splits only. Bad files are
    skipped and listed in ``skipped.json``; an interrupted run resumes; a finished one is
    not redone. Returns the manifest. ``on_start(n_inputs, n_done)`` is called once the
    work is known; ``progress(n)`` as recordings are done. ``exclude_species``: a species
    list file whose species are left out (:func:`~birdbridge.data.species_list.exclude_species`,
    e.g. the held-out list ``birdbridge eval`` writes); the manifest's ``excluded`` says what.
    """
    if encoding not in ENCODINGS:
        raise ConfigError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
    if sample_rate is not None and sample_rate <= 0:
        raise ConfigError(f"sample rate must be positive, got {sample_rate}")
    if part_size < 1:
        raise ConfigError("part_size must be positive")
    out = Path(out)
    options = dict(options or {})
    coll = load_collection(kind, path, **options)
    excluded = None
    if exclude_species is not None:
        from . import species_list

        coll, excluded = species_list.exclude_species(coll, exclude_species)
    keep = set(splits) if splits else None
    items = [a for a in coll.audio if keep is None or a.split in keep]
    if not items:
        raise ConfigError(f"{path}: no recordings to prepare" + (f" in split(s) {sorted(keep)}" if keep else ""))
    key = _job_key(kind, Path(path).resolve(), {**options, **({"exclude_species": excluded["excluded_species"]}
                                                            if excluded else {})},
                   sample_rate, encoding, sorted(keep or []), part_size, chunk_bytes, items)
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
                       len(items), time.time() - t0, excluded=excluded)
    return {**manifest, "resumed_parts": resumed}


def _finish(out: Path, key, kind, path, options, rate, encoding, coll: Collection, records: list[dict], n_inputs: int,
            seconds: float, excluded: dict | None = None) -> dict:
    import litdata
    import pyarrow as pa
    import pyarrow.parquet as pq

    chunks = [c for r in records for c in r["chunks"]]
    config = next((r["config"] for r in records if r["config"]), None)
    samples = [s for r in records for s in r["samples"]]
    skips = SkipLog.from_list(s for r in records for s in r["skipped"])
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
    skips.write_json(out / SKIPPED)
    from .. import __version__

    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "job": key, "kind": kind, "source": str(path),
        "options": options, "encoding": encoding, "sample_rate": rate or "native",
        # per sample: the rate it is stored at (samples.parquet `sample_rate`, each chunk item's `sr`)
        "rate_rule": "min(source, sample_rate)" if rate else "source",
        "sample_rates": sorted({s["sample_rate"] for s in samples}), "n_inputs": n_inputs,
        "n_samples": len(samples), "n_skipped": len(skips), "skip_counts": skips.counts(),
        "hours": round(sum(s["duration_s"] for s in samples) / 3600, 3),
        "bytes": int(sum(c["chunk_bytes"] for c in chunks)), "n_chunks": len(chunks), "seconds": round(seconds, 1),
        "species": [asdict(sp) for sp in coll.species], "collection": {"name": coll.name, "meta": coll.meta},
        "splits": sorted({s["split"] for s in samples}), "litdata": litdata.__version__, "birdbridge": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "excluded": excluded,  # species left out by --exclude-species (their recordings are not here)
    }
    atomic_write_json(out / MANIFEST, manifest)  # the commit point: a reader trusts a directory with this file
    shutil.rmtree(out / PARTS, ignore_errors=True)
    return manifest


