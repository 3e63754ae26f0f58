"""Audio decoding, and the rules for cutting clips and windows from it in memory.

:func:`load_audio` decodes a segment of a file whole; :func:`audio_info` reads a header.
Both are built on :class:`~birdbridge.data.audio_file.AudioFile`, which opens files by
content (libsndfile), decodes only the requested frames and raises
:class:`~birdbridge.errors.BadInputError` with the stable reasons listed there; resampling is
its :func:`~birdbridge.data.audio_file.resample` (soxr). :mod:`.stream` cuts windows from a
file block by block without ever decoding it whole, :mod:`.crop` decodes only a training
crop. The in-memory rules below -- the one crop rule :func:`crop_offset`, the one padding
rule :func:`pad_to_length`, the window grid :func:`window_starts` -- are what those
streaming and cropping readers reproduce.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np

from ..errors import BadInputError
from .audio_file import DEFAULT_QUALITY, AudioFile, mix, resample

MIN_DURATION_S = 0.05  # 50 ms: shorter than any bird syllable a model could use
# -120 dBFS: below 16-bit quantisation (3e-5), so only digitally silent files are rejected,
# never quiet-but-real recordings.
SILENCE_PEAK = 1e-6

CropPolicy = Literal["random", "center", "start"]
PadMode = Literal["zero", "repeatpad"]
# The padding rule of training crops (distill/data.py pads short clips by it before the front end
# sees them): HF CLAP's. A student whose feature extractor pads otherwise would be trained on clips
# padded one way and evaluated on clips padded another, so training refuses it
# (distill.train.check_padding).
TRAINING_PAD: PadMode = "repeatpad"


def audio_info(path: str | Path) -> dict:
    """Header facts without decoding: samplerate, channels, frames, duration_s, format, subtype."""
    with AudioFile(path, require_frames=False) as f:
        h = f.sf
        return {
            "samplerate": int(h.samplerate),
            "channels": int(h.channels),
            "frames": int(h.frames),
            "duration_s": float(h.frames) / h.samplerate if h.samplerate else 0.0,
            "format": h.format,
            "subtype": h.subtype,
        }


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
    (reasons: :mod:`.audio_file`); silence is kept when ``reject_silent=False``.
    """
    if sr <= 0:
        raise ValueError(f"sr must be positive, got {sr}")
    p = Path(path)
    with AudioFile(p) as f:
        native = f.samplerate
        start, stop = f.segment(start_s, end_s, max_duration_s)
        if stop <= start:
            raise BadInputError("empty", p, f"segment starts at {start / native:.3f} s, file ends at {f.frames / native:.3f} s")
        f.check_end(stop)
        want = stop - start
        raw = f.read(want, start=start)
    f.check_decoded(len(raw), want)
    f.check_finite(raw)
    wave = resample(mix(raw, mono), native, sr, quality)
    if not mono:
        wave = np.ascontiguousarray(wave.T)
    f.check_length(wave.shape[-1] if wave.ndim == 2 else len(wave), sr, min_duration_s)
    if reject_silent:
        f.check_peak(float(np.max(np.abs(wave))), silence_peak)
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
