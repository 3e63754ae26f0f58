"""What a shard directory is, and reading it: the ``shards`` loader kind and training crops.

Training decodes every clip of every epoch. From the original files that means opening a
WAV/MP3/FLAC, decoding and resampling to 48 kHz on every step; from shards it means
slicing an int16 array out of a memory-mapped chunk (``benchmarks/bench_loader.py``
measures both; ``docs/DATA.md`` says why the encoding is what it is). Shards are written by
:func:`~birdbridge.data.shard_writer.prepare_shards` (``birdbridge data prepare``).

Layout of a shard directory (``OUT``)::

    index.json          LitData's chunk index (StreamingDataset reads it)
    chunk-P-C.bin       LitData chunks; sample = {"audio": int16[n] | FLAC bytes, "label": int, "sr": int}
    samples.parquet     one row per sample, in sample order: path, species_id, split,
                        start_s, end_s, sample_rate, frames, duration_s, extra (JSON)
    skipped.json        inputs that were not written, with reasons (SkipLog format)
    birdbridge.json     the manifest (format, encoding, rate, species, counts); written last

Reading: :class:`ShardReader` opens a :class:`litdata.StreamingDataset` lazily in each
process (loader workers included) and reads samples by index -- from a local directory by
memory map, from any URL LitData reads (``s3://``, ``gs://``, ``azure://``, ``hf://``,
``local:``) by fetching that sample's bytes. Which samples a rank reads, in which order,
is the training sampler's business (``distill/data.py``), so resume stays exact.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..taxonomy import Species
from .audio import crop_offset, pad_to_length
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
# The one int16 scale: libsndfile reads 16-bit PCM as int / 32768, so its inverse keeps 16-bit
# sources exact (shards store it; training scales int16 batches by 1 / PCM16_SCALE on the device).
PCM16_SCALE = 32768.0


def is_remote(path: str | Path) -> bool:
    return str(path).startswith(REMOTE_PREFIXES)


# --------------------------------------------------------------------------- encoding


def to_pcm16(wave: np.ndarray) -> np.ndarray:
    return np.clip(np.round(wave * PCM16_SCALE), -32768, 32767).astype(np.int16)


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
    return len(arr), lambda a, b: arr[a:b].astype(np.float32) * np.float32(1.0 / PCM16_SCALE)


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
            np.multiply(audio[off : off + n], np.float32(1.0 / PCM16_SCALE), out=out)
            return
        frames, read = decode_sample(audio, int(s["sr"]))
        out[:] = crop_frames(read, frames, int(s["sr"]), sr, n, policy, rng, pad=pad)
