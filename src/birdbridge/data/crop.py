"""Training crops decoded from files: seek to the crop, decode it, then resample.

A training step needs 10 s of a recording; iNatSounds recordings average 18.5 s and some
run past 20 minutes. Decoding and resampling the whole file to cut 10 s out of it spends
most of the loader's time on audio that is thrown away. :func:`load_crop` picks the crop
on the *output* sample grid exactly as :func:`~birdbridge.data.audio.crop_or_pad` would on
the whole resampled file (same offset from the same generator), then decodes only the
native frames that crop needs, plus a margin for the resampling filter, starting on a
frame whose output position is a whole sample. The result equals the crop of the whole
resampled file to float rounding (~1e-7, ``tests/test_shards.py``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .audio import SILENCE_PEAK, CropPolicy, PadMode, crop_offset, crop_or_pad, load_audio
from .audio_file import DEFAULT_QUALITY, AudioFile, mix, resample


def resampled_length(frames: int, sr_in: int, sr_out: int) -> int:
    """Samples :func:`~birdbridge.data.audio_file.resample` returns for ``frames`` input frames: soxr rounds to nearest."""
    return frames if sr_in == sr_out else (2 * frames * sr_out + sr_in) // (2 * sr_in)


# soxr's HQ filter spans a few ms of input; 50 ms of context either side keeps its edges
# (where the filter meets the segment's implied zeros) out of the crop.
_MARGIN_S = 0.05


def native_span(off: int, n: int, sr_in: int, sr_out: int, frames: int) -> tuple[int, int, int]:
    """Native frames ``[a, b)`` whose resampling holds output samples ``[off, off + n)``, and
    the index of ``off`` in that resampled span.

    ``a`` is a multiple of ``sr_in / gcd(sr_in, sr_out)``, so the span's output grid is the
    whole file's grid: no fractional-sample shift.
    """
    if sr_in == sr_out:
        return off, off + n, 0
    step = sr_in // math.gcd(sr_in, sr_out)
    margin = int(_MARGIN_S * sr_in)
    a = max(0, (off * sr_in // sr_out - margin) // step * step)
    b = min(frames, -(-(off + n) * sr_in // sr_out) + margin)
    return a, b, off - a * sr_out // sr_in


def crop_frames(read, frames: int, sr_in: int, sr_out: int, n: int, policy: CropPolicy = "random",
                rng: np.random.Generator | None = None, *, pad: PadMode = "repeatpad",
                quality: str = DEFAULT_QUALITY) -> np.ndarray:
    """An ``n``-sample crop at ``sr_out`` of a ``frames``-frame mono source at ``sr_in``.

    ``read(a, b)`` returns native frames ``[a, b)`` as float32; only the crop's span (plus
    the filter margin) is read and resampled. The in-memory twin of :func:`load_crop`, used
    for shard samples (an int16 array, or FLAC bytes decoded from a seek).
    """
    length = resampled_length(frames, sr_in, sr_out)
    if length <= n:
        return crop_or_pad(resample(read(0, frames), sr_in, sr_out, quality), n, policy, rng, pad=pad)
    off = crop_offset(length, n, policy, rng)
    a, b, skip = native_span(off, n, sr_in, sr_out, frames)
    seg = resample(read(a, b), sr_in, sr_out, quality)[skip : skip + n]
    if len(seg) < n:
        seg = np.concatenate([seg, np.zeros(n - len(seg), np.float32)])
    return np.ascontiguousarray(seg, dtype=np.float32)


def load_crop(
    path: str | Path,
    sr: int,
    n: int,
    policy: CropPolicy = "random",
    rng: np.random.Generator | None = None,
    *,
    start_s: float | None = None,
    end_s: float | None = None,
    pad: PadMode = "repeatpad",
    quality: str = DEFAULT_QUALITY,
    silence_peak: float = SILENCE_PEAK,
) -> np.ndarray:
    """Exactly ``n`` mono float32 samples at ``sr`` Hz of ``[start_s, end_s)`` of ``path``.

    Clips no longer than ``n`` (after resampling) are decoded whole and go through
    :func:`~birdbridge.data.audio.crop_or_pad` (``pad`` as there). Longer ones are cropped at
    the offset ``crop_or_pad`` would draw, and only that part is decoded and resampled.
    Raises :class:`BadInputError` like :func:`~birdbridge.data.audio.load_audio`; a crop of
    digital silence is ``silent`` (the whole file is checked by ``inspect --deep`` and
    ``data prepare``, which decode everything).
    """
    p = Path(path)
    with AudioFile(p) as f:
        native = f.samplerate
        start, stop = f.segment(start_s, end_s)
        length = resampled_length(stop - start, native, sr)
        if length > n:
            off = crop_offset(length, n, policy, rng)
            a, b, skip = native_span(off, n, native, sr, stop - start)
            f.check_end(start + b)
            # read without holding back mpg123's notes, as crops always were: the hold-back
            # costs a temporary file per call, and this runs for every clip of every epoch
            raw = f.read(b - a, start=start + a, hush=False)
    if length <= n:  # short: decoded whole, with every check load_audio makes
        wave = load_audio(p, sr, start_s=start_s, end_s=end_s, silence_peak=silence_peak, quality=quality)
        return crop_or_pad(wave, n, policy, rng, pad=pad)
    f.check_decoded(len(raw), b - a, f" at frame {start + a}")
    f.check_finite(raw)
    seg = resample(mix(raw, True), native, sr, quality)
    crop = seg[skip : skip + n]
    if len(crop) < n:  # an MP3 a few frames shorter than its header said
        crop = np.concatenate([crop, np.zeros(n - len(crop), np.float32)])
    f.check_peak(float(np.max(np.abs(crop))), silence_peak,
                 f"the {n / sr:g} s crop at {off / sr:.2f} s is digitally silent")
    return np.ascontiguousarray(crop)
