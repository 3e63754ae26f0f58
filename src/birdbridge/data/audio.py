"""Audio decoding, resampling and windowing.

Everything goes through libsndfile (``soundfile``), which recognises WAV, FLAC, OGG/Vorbis,
Opus and MP3 by content, so a mislabelled extension never matters. Files are opened lazily
and only the requested frames are decoded: iNatSounds has recordings of more than 20
minutes and soundscapes run for hours, so nothing here reads a whole file unless asked;
:mod:`.stream` cuts windows from a file block by block without ever decoding it whole.

Resampling uses soxr at "HQ" quality by default: 20-bit precision, linear phase, and a
pass band that ends a few percent below the input Nyquist. "VHQ" (28-bit, a slightly wider
pass band) costs about 40% more CPU (7 vs 10 ms per 10 s clip, 22.05 → 48 kHz, measured
here), and the two differ only in the top ~10% below the input Nyquist (10–11 kHz for a
22.05 kHz source; below 10 kHz the difference is under -79 dB). In a data loader that runs
for every clip of every epoch the cheaper filter wins. Pass ``quality="VHQ"`` if it matters.

Every unusable input raises :class:`~birdbridge.errors.BadInputError` with one of these
stable reasons (jobs count them in a :class:`~birdbridge.errors.SkipLog`):

``missing``       the path does not exist
``unreadable``    not audio, corrupt or cut-off header, unsupported format, a directory
``empty``         a 0-byte file, zero samples, or a segment starting after the end
``too_short``     shorter than ``min_duration_s`` after decoding
``non_finite``    NaN or infinite samples (float WAVs can carry them)
``silent``        peak below ``silence_peak`` (digital silence); optional
``decode_error``  the file breaks or ends early while decoding (truncated download)
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
import soxr

from ..errors import BadInputError
from ..quiet import native_stderr

MIN_DURATION_S = 0.05  # 50 ms: shorter than any bird syllable a model could use
# -120 dBFS: below 16-bit quantisation (3e-5), so only digitally silent files are rejected,
# never quiet-but-real recordings.
SILENCE_PEAK = 1e-6
DEFAULT_QUALITY = "HQ"
_BLOCK_S = 20.0  # streaming block length: bounded memory, few Python round-trips
# MP3 frame counts come from the Xing header or a bitrate estimate, so a handful of
# samples may be missing at the end of a healthy file; more than this is a truncation.
_SHORTFALL_FRAMES = 2 * 1152

CropPolicy = Literal["random", "center", "start"]
PadMode = Literal["zero", "repeatpad"]


# --------------------------------------------------------------------------- opening


def _open(path: str | Path) -> sf.SoundFile:
    p = Path(path)
    if not p.exists():
        raise BadInputError("missing", p)
    if not p.is_file():
        raise BadInputError("unreadable", p, "not a regular file")
    if p.stat().st_size == 0:
        raise BadInputError("empty", p, "0-byte file")
    if _is_text(p):
        # libsndfile would hand a text file named .mp3 to mpg123, which resyncs over it and
        # fails as "File does not exist or is not a regular file"
        raise BadInputError("unreadable", p, "not an audio file (it holds text)")
    try:
        with native_stderr():  # mpg123 writes its resync notes straight to fd 2
            return sf.SoundFile(str(p))
    except (sf.LibsndfileError, RuntimeError, OSError, ValueError, TypeError) as err:
        raise BadInputError("unreadable", p, _short(err)) from None


# Audio formats whose header is plain text (NIST SPHERE): never taken for a text file.
_TEXT_HEADERS = (b"NIST_1A",)


def _is_text(p: Path) -> bool:
    """True when the file's first 4 KiB are UTF-8 text without NUL bytes (no audio format is)."""
    try:
        with open(p, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return False
    if not head or b"\x00" in head or head.startswith(_TEXT_HEADERS):
        return False
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as err:
        if err.start < len(head) - 3:  # not just a character cut at the 4 KiB boundary
            return False
        text = head[: err.start].decode("utf-8")
    return all(c.isprintable() or c in "\t\n\r\f\v" for c in text)


def _short(err: Exception) -> str:
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    # libsndfile repeats the path in its messages; the path is already in the error.
    msg = msg.split(": ", 1)[-1] if msg.startswith("Error opening") else msg
    if msg.startswith("File does not exist or is not a regular file"):
        # what libsndfile says when its MPEG probe gives up on a file that exists
        return "not an audio file libsndfile can decode (format not recognised)"
    return msg


def _wav_truncation(path: Path) -> str | None:
    """A detail string when a RIFF/WAVE ``data`` chunk claims more bytes than the file holds.

    libsndfile silently shortens such files to what is present, so an interrupted download
    would otherwise pass as a valid (shorter) clip.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            head = fh.read(12)
            if len(head) < 12 or head[:4] not in (b"RIFF", b"RIFX") or head[8:12] != b"WAVE":
                return None
            fmt = "<I" if head[:4] == b"RIFF" else ">I"
            pos = 12
            for _ in range(64):  # a real file has a handful of chunks before "data"
                fh.seek(pos)
                chunk = fh.read(8)
                if len(chunk) < 8:
                    return None
                cid, n = chunk[:4], struct.unpack(fmt, chunk[4:])[0]
                if cid == b"data":
                    # 0 and 0xFFFFFFFF mark streamed / RF64-style files with unknown size.
                    if n in (0, 0xFFFFFFFF):
                        return None
                    have = size - (pos + 8)
                    return f"header declares {n} data bytes, file holds {have}" if have < n else None
                pos += 8 + n + (n & 1)
    except OSError:
        return None
    return None


def _ogg_truncation(path: Path) -> str | None:
    """A detail string when an Ogg stream's last page is cut off or lacks the end-of-stream flag.

    libsndfile reports 0 frames for such files (it cannot find the final granule), which
    would otherwise look like a legitimately empty file.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as fh:
            fh.seek(max(0, size - 65536))
            tail = fh.read()
    except OSError:
        return None
    at = tail.rfind(b"OggS")
    if at < 0:
        return None
    if at + 27 > len(tail) or at + 27 + tail[at + 26] > len(tail):
        return "last Ogg page is cut off"
    nseg = tail[at + 26]
    page_end = at + 27 + nseg + sum(tail[at + 27 : at + 27 + nseg])
    if page_end > len(tail):
        return "last Ogg page is cut off"
    return None if tail[at + 5] & 0x04 else "Ogg stream has no end-of-stream page"


def _check_frames(f: sf.SoundFile, p: Path) -> None:
    """Raise for files with no usable frames (an Ogg file cut short also reports none)."""
    if f.frames <= 0:
        if f.format == "OGG" and (why := _ogg_truncation(p)):
            raise BadInputError("decode_error", p, f"truncated: {why}")
        raise BadInputError("empty", p)


def _check_wav_end(f: sf.SoundFile, p: Path, stop: int) -> None:
    """A read reaching the end of a WAV whose header promised more data is a truncation.

    Reads that stop earlier succeed, as they do for FLAC and MP3 whose damage is only met
    when decoding reaches it.
    """
    if stop >= f.frames and f.format in ("WAV", "WAVEX") and (why := _wav_truncation(p)):
        raise BadInputError("decode_error", p, f"truncated: {why}")


def audio_info(path: str | Path) -> dict:
    """Header facts without decoding: samplerate, channels, frames, duration_s, format, subtype."""
    with _open(path) as f:
        return {
            "samplerate": int(f.samplerate),
            "channels": int(f.channels),
            "frames": int(f.frames),
            "duration_s": float(f.frames) / f.samplerate if f.samplerate else 0.0,
            "format": f.format,
            "subtype": f.subtype,
        }


# --------------------------------------------------------------------------- resampling


def resample(wave: np.ndarray, sr_in: int, sr_out: int, quality: str = DEFAULT_QUALITY) -> np.ndarray:
    """Resample along the first axis (samples, or samples × channels) with soxr."""
    if sr_in == sr_out or len(wave) == 0:
        return np.ascontiguousarray(wave, dtype=np.float32)
    return soxr.resample(np.ascontiguousarray(wave, dtype=np.float32), sr_in, sr_out, quality=quality).astype(
        np.float32, copy=False
    )


def _mix(block: np.ndarray, mono: bool) -> np.ndarray:
    """(frames, channels) → (frames,) by channel mean, or unchanged when keeping channels."""
    if not mono:
        return block
    return block[:, 0] if block.shape[1] == 1 else block.mean(axis=1, dtype=np.float32)


def _segment_frames(f: sf.SoundFile, start_s, end_s, max_duration_s) -> tuple[int, int]:
    if start_s is not None and start_s < 0:
        raise ValueError(f"start_s must be >= 0, got {start_s}")
    if end_s is not None and start_s is not None and end_s <= start_s:
        raise ValueError(f"end_s ({end_s}) must be after start_s ({start_s})")
    rate = f.samplerate
    start = int(round((start_s or 0.0) * rate))
    # Metadata end times are often a little past the real end: clamp instead of failing.
    stop = f.frames if end_s is None else min(f.frames, int(round(end_s * rate)))
    if max_duration_s is not None:
        stop = min(stop, start + int(round(max_duration_s * rate)))
    return start, max(start, stop)


def _check_wave(wave: np.ndarray, p: Path, sr: int, min_duration_s: float, reject_silent: bool, silence_peak: float):
    if wave.size == 0:
        raise BadInputError("empty", p)
    n = wave.shape[-1] if wave.ndim == 2 else len(wave)
    if n < min_duration_s * sr:
        raise BadInputError("too_short", p, f"{n / sr:.3f} s < {min_duration_s} s")
    if reject_silent and float(np.max(np.abs(wave))) < silence_peak:
        raise BadInputError("silent", p, f"peak below {silence_peak:g}")


def load_audio(
    path: str | Path,
    sr: int,
    *,
    mono: bool = True,
    start_s: float | None = None,
    end_s: float | None = None,
    max_duration_s: float | None = None,
    min_duration_s: float = MIN_DURATION_S,
    reject_silent: bool = True,
    silence_peak: float = SILENCE_PEAK,
    quality: str = DEFAULT_QUALITY,
) -> np.ndarray:
    """Decode ``[start_s, end_s)`` of ``path`` at ``sr`` Hz as float32.

    Mono (channel mean) gives shape ``(n,)``; ``mono=False`` gives ``(channels, n)``. Only
    the requested frames are decoded (seek, then read). ``end_s`` past the end is clamped;
    ``max_duration_s`` caps the length read from ``start_s``. Raises :class:`BadInputError`
    (see the module docstring for reasons); silence is kept when ``reject_silent=False``.
    """
    if sr <= 0:
        raise ValueError(f"sr must be positive, got {sr}")
    p = Path(path)
    with _open(p) as f:
        _check_frames(f, p)
        native = f.samplerate
        start, stop = _segment_frames(f, start_s, end_s, max_duration_s)
        if stop <= start:
            raise BadInputError("empty", p, f"segment starts at {start / native:.3f} s, file ends at {f.frames / native:.3f} s")
        _check_wav_end(f, p, stop)
        want = stop - start
        try:
            with native_stderr():  # mpg123's notes on damaged frames
                if start:
                    f.seek(start)
                raw = f.read(want, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise BadInputError("decode_error", p, _short(err)) from None
    if len(raw) < want and (want - len(raw) > _SHORTFALL_FRAMES or len(raw) == 0):
        raise BadInputError("decode_error", p, f"truncated: got {len(raw)} of {want} frames")
    # Checked after decode: float WAVs store NaN/inf verbatim and they poison whole batches.
    if not np.isfinite(raw).all():
        raise BadInputError("non_finite", p)
    wave = resample(_mix(raw, mono), native, sr, quality)
    if not mono:
        wave = np.ascontiguousarray(wave.T)
    _check_wave(wave, p, sr, min_duration_s, reject_silent, silence_peak)
    return wave


# --------------------------------------------------------------------------- windows in memory


def pad_to_length(x, n: int, mode: str = "repeatpad"):
    """A clip shorter than ``n`` samples (last axis) brought to ``n``: the one padding rule.

    It is ``ClapFeatureExtractor``'s (transformers ``_get_input_mel``), so training batches,
    the torch front end and HF's own features agree on every short clip. ``repeatpad`` (what
    CLAP checkpoints use): ``n // T`` whole copies of the clip, then zeros up to ``n``;
    ``repeat``: ``n // T + 1`` copies cut at ``n``; any other mode: zeros after the clip.
    Takes a numpy array or a torch tensor and returns the same kind; clips of ``n`` or more
    samples come back unchanged.
    """
    t = x.shape[-1]
    if t >= n:
        return x
    if t == 0:
        raise ValueError("cannot pad an empty clip")
    copies = n // t if mode == "repeatpad" else n // t + 1 if mode == "repeat" else 1
    reps = (1,) * (x.ndim - 1) + (copies,)
    if isinstance(x, np.ndarray):
        x = np.tile(x, reps)[..., :n]
        return np.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, n - x.shape[-1])])
    import torch.nn.functional as F

    x = x.repeat(*reps)[..., :n]
    return F.pad(x, (0, n - x.shape[-1]))


def crop_or_pad(
    wave: np.ndarray,
    n: int,
    policy: CropPolicy = "random",
    rng: np.random.Generator | None = None,
    *,
    pad: PadMode = "zero",
) -> np.ndarray:
    """Exactly ``n`` samples along the last axis.

    Longer clips are cropped at a random offset, the centre or the start. Shorter clips are
    zero-padded (placed by the same policy: start-aligned, centred or at a random offset) or,
    with ``pad="repeatpad"``, padded by :func:`pad_to_length` (HF CLAP's rule; no placement).
    ``rng=None`` with ``policy="random"`` draws from a fresh, unseeded generator; pass one
    for reproducibility.
    """
    if n <= 0:
        raise ValueError("n must be positive")
    if policy not in ("random", "center", "start"):
        raise ValueError(f"unknown policy {policy!r}; expected random, center or start")
    if pad not in ("zero", "repeatpad"):
        raise ValueError(f"unknown pad mode {pad!r}; expected zero or repeatpad")
    wave = np.asarray(wave, dtype=np.float32)
    length = wave.shape[-1]
    if length == 0:
        return np.zeros(wave.shape[:-1] + (n,), np.float32)
    if length < n and pad == "repeatpad":
        return pad_to_length(wave, n, "repeatpad")
    if policy == "random":
        rng = rng if rng is not None else np.random.default_rng()
    if length >= n:
        off = crop_offset(length, n, policy, rng)
        return np.ascontiguousarray(wave[..., off : off + n])
    out = np.zeros(wave.shape[:-1] + (n,), np.float32)
    off = {"start": 0, "center": (n - length) // 2}.get(policy)
    if off is None:
        off = int(rng.integers(0, n - length + 1))
    out[..., off : off + length] = wave
    return out


def crop_offset(length: int, n: int, policy: CropPolicy = "random", rng: np.random.Generator | None = None) -> int:
    """Where :func:`crop_or_pad` starts an ``n``-sample crop of a ``length``-sample clip (``length >= n``).

    The one crop rule: loaders that decode only the cropped part of a file (``data.crop``,
    the shard reader) draw the same offset from the same generator as a crop of the whole clip.
    """
    if policy == "start":
        return 0
    if policy == "center":
        return (length - n) // 2
    rng = rng if rng is not None else np.random.default_rng()
    return int(rng.integers(0, length - n + 1))


def window_starts(length: int, n: int, hop: int) -> list[int]:
    """Start indices of windows of ``n`` every ``hop`` covering ``length``; the last ends at the end."""
    if n <= 0 or hop <= 0:
        raise ValueError("n and hop must be positive")
    if length <= n:
        return [0]
    starts = list(range(0, length - n + 1, hop))
    if starts[-1] + n < length:
        starts.append(length - n)  # align the last window to the end so no tail is lost
    return starts


def sliding_windows(wave: np.ndarray, n: int, hop: int) -> list[np.ndarray]:
    """Deterministic windows of ``n`` samples covering the whole clip (see :func:`window_starts`).

    A clip shorter than ``n`` gives one window padded by :func:`pad_to_length`.
    """
    wave = np.asarray(wave, dtype=np.float32)
    length = wave.shape[-1]
    if length < n:
        return [pad_to_length(wave, n)]
    return [np.ascontiguousarray(wave[..., s : s + n]) for s in window_starts(length, n, hop)]
