"""Windows of a recording, streamed block by block: never the whole file in memory.

The file is read in blocks and resampled with a streaming soxr resampler, so memory stays
bounded for hours-long files and block edges are seamless: the windows equal those cut
from a fully decoded file (:func:`~birdbridge.data.audio.window_starts`). Opening,
checks and reasons are :class:`~birdbridge.data.audio_file.AudioFile`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator, Literal

import numpy as np
import soxr

from ..errors import BadInputError
from .audio import MIN_DURATION_S, SILENCE_PEAK, pad_to_length
from .audio_file import DEFAULT_QUALITY, AudioFile, mix

_BLOCK_S = 20.0  # streaming block length: bounded memory, few Python round-trips


def iter_windows(
    path: str | Path,
    sr: int,
    window_s: float,
    hop_s: float | None = None,
    *,
    pad_last: bool = True,
    start_s: float | None = None,
    end_s: float | None = None,
    block_s: float = _BLOCK_S,
    quality: str = DEFAULT_QUALITY,
) -> Iterator[tuple[float, np.ndarray]]:
    """Yield ``(start_s, window)`` mono float32 windows of ``window_s`` every ``hop_s`` seconds.

    The file is read in blocks of ``block_s`` and resampled with a streaming soxr resampler,
    so memory stays bounded for hours-long files and block edges are seamless: windows
    equal those cut from a fully decoded file. Window starts are multiples of the hop
    (in output samples). With ``pad_last`` a final window, padded by :func:`pad_to_length`, covers any tail the
    full windows missed (and a file shorter than one window gives one padded window).

    Silence is not rejected here (soundscapes legitimately contain it). Errors found
    mid-file raise :class:`BadInputError` after the windows before them were yielded.
    """
    for t0, _, window in iter_spans(path, sr, window_s, hop_s, last="pad" if pad_last else "none", start_s=start_s,
                                    end_s=end_s, block_s=block_s, quality=quality):
        yield t0, window


def iter_spans(
    path: str | Path,
    sr: int,
    window_s: float,
    hop_s: float | None = None,
    *,
    last: Literal["pad", "end", "none"] = "end",
    start_s: float | None = None,
    end_s: float | None = None,
    reject_silent: bool = False,
    min_duration_s: float = 0.0,
    silence_peak: float = SILENCE_PEAK,
    block_s: float = _BLOCK_S,
    quality: str = DEFAULT_QUALITY,
) -> Iterator[tuple[float, float, np.ndarray]]:
    """Stream ``(start_s, end_s, window)``: the windows :func:`window_starts` cuts, without decoding the file whole.

    ``last`` says what covers a tail the hop grid misses: ``"end"`` a last window aligned to
    the end of the recording and a recording shorter than a window as one short window (the
    windows :func:`window_starts` gives in memory; the model pads short input its own way);
    ``"pad"`` a window on the grid padded by :func:`pad_to_length` (:func:`iter_windows`); ``"none"`` nothing.
    ``end_s`` of a window is where its audio ends (never past the recording). The last
    ``window_s`` of audio stay buffered for ``"end"``, so memory stays bounded.
    ``reject_silent`` and ``min_duration_s`` apply :func:`load_audio`'s checks to the whole
    stream; the silence check can only fail after the windows were yielded.
    """
    hop_s = window_s if hop_s is None else hop_s
    if window_s <= 0 or hop_s <= 0:
        raise ValueError("window_s and hop_s must be positive")
    if last not in ("pad", "end", "none"):
        raise ValueError(f"last must be pad, end or none, not {last!r}")
    win, hop = int(round(window_s * sr)), int(round(hop_s * sr))
    keep = win if last == "end" else 0  # samples kept behind the next window start
    p = Path(path)
    with AudioFile(p) as f:
        native = f.samplerate
        start, stop = f.segment(start_s, end_s)
        if stop <= start:
            raise BadInputError("empty", p, "segment starts after the end of the file")
        f.check_end(stop)
        offset_s = start / native
        stream = soxr.ResampleStream(native, sr, 1, dtype="float32", quality=quality) if native != sr else None
        block = max(1, int(block_s * native))
        if start:
            f.seek(start)
        buf = np.zeros(0, np.float32)
        buf_start = 0  # output-sample index of buf[0], relative to the segment start
        nxt = 0  # output-sample index of the next window start
        last_end = 0
        emitted = False
        peak = 0.0
        for out in _decoded_blocks(f, stop - start, block, stream):
            if len(out):
                peak = max(peak, float(np.max(np.abs(out))))
            buf = np.concatenate([buf, out]) if len(buf) else np.asarray(out, np.float32)
            while nxt + win <= buf_start + len(buf):
                i = nxt - buf_start
                yield offset_s + nxt / sr, offset_s + (nxt + win) / sr, buf[i : i + win].copy()
                emitted, last_end = True, nxt + win
                nxt += hop
            drop = min(max(0, nxt - buf_start), max(0, len(buf) - keep))
            buf, buf_start = buf[drop:], buf_start + drop
        total = buf_start + len(buf)
        f.check_length(total, sr, min_duration_s)
        end_t = offset_s + total / sr
        if last == "pad" and nxt < total and (not emitted or last_end < total):
            # the model's own padding rule (HF repeatpad), as its front end would pad this tail
            yield offset_s + nxt / sr, end_t, pad_to_length(buf[nxt - buf_start :], win)
        elif last == "end" and not emitted:
            yield offset_s, end_t, buf.copy()  # shorter than a window: the whole recording
        elif last == "end" and last_end < total:
            yield offset_s + (total - win) / sr, end_t, buf[total - win - buf_start :].copy()
        if reject_silent:
            f.check_peak(peak, silence_peak)


def iter_segments(
    path: str | Path,
    sr: int,
    segments: list[tuple[float, float]],
    *,
    min_duration_s: float = MIN_DURATION_S,
    silence_peak: float = SILENCE_PEAK,
    block_s: float = _BLOCK_S,
    quality: str = DEFAULT_QUALITY,
) -> Iterator[tuple[int, np.ndarray | None, tuple[str, str] | None]]:
    """Many ``[start_s, end_s)`` segments of one file, decoded in ONE streamed pass.

    Yields ``(j, wave, None)`` for ``segments[j]`` -- what :func:`load_audio` gives for that
    segment: the same native frames (:meth:`AudioFile.segment`), so sample for sample the same
    audio when the file's rate is ``sr``; resampled files are cut from one continuous
    resampled stream instead of resampling every segment alone (no filter edge at every cut)
    -- or ``(j, None, (reason, detail))`` when that segment alone is unusable (``empty``,
    ``too_short``, ``silent``: :func:`load_audio`'s per-segment checks). Segments may overlap
    and come in any order; they are yielded by start time. Whatever concerns the file
    (``missing``, ``unreadable``, ``decode_error``, ``non_finite``) raises
    :class:`BadInputError`, possibly after some segments were yielded (it is met mid-stream).
    Memory: one block plus the audio from the earliest segment still open.
    """
    p = Path(path)
    with AudioFile(p) as f:
        native = f.samplerate
        spans = sorted(((j, *f.segment(a, b)) for j, (a, b) in enumerate(segments)), key=lambda c: (c[1], c[0]))
        good = [c for c in spans if c[2] > c[1]]
        bad = {c[0] for c in spans if c[2] <= c[1]}
        lo = min((c[1] for c in good), default=0)
        hi = max((c[2] for c in good), default=0)

        def out_index(frame: int) -> int:
            return frame - lo if native == sr else int(round((frame - lo) * sr / native))

        cuts = [(j, out_index(a), out_index(b)) for j, a, b in good]  # output samples from the first frame read
        pending = sorted(bad)  # empty segments go first: they need no audio
        for j in pending:
            yield j, None, ("empty", "segment starts after the end of the file")
        if not cuts:
            return
        f.check_end(hi)
        stream = soxr.ResampleStream(native, sr, 1, dtype="float32", quality=quality) if native != sr else None
        block = max(1, int(block_s * native))
        if lo:
            f.seek(lo)
        buf, buf_start, k = np.zeros(0, np.float32), 0, 0

        def cut(j: int, o0: int, o1: int):
            wave = buf[o0 - buf_start : o1 - buf_start].copy()
            if len(wave) == 0:
                return j, None, ("empty", "segment starts after the end of the file")
            if len(wave) < min_duration_s * sr:
                return j, None, ("too_short", f"{len(wave) / sr:.3f} s < {min_duration_s} s")
            if float(np.max(np.abs(wave))) < silence_peak:
                return j, None, ("silent", f"peak below {silence_peak:g}")
            return j, wave, None

        for out in _decoded_blocks(f, hi - lo, block, stream):
            buf = np.concatenate([buf, out]) if len(buf) else np.asarray(out, np.float32)
            while k < len(cuts) and cuts[k][2] <= buf_start + len(buf):
                yield cut(*cuts[k])
                k += 1
            # keep only what the segments still to come need (they start in order)
            drop = (cuts[k][1] if k < len(cuts) else buf_start + len(buf)) - buf_start
            drop = min(max(0, drop), len(buf))
            buf, buf_start = buf[drop:], buf_start + drop
        for j, o0, o1 in cuts[k:]:  # a resampled end may fall a sample short of the rounded index
            yield cut(j, o0, min(o1, buf_start + len(buf)))


def _decoded_blocks(f, n: int, block: int, stream):
    """The next ``n`` frames of the open file ``f``, ``block`` frames a read, each block checked finite,
    mixed to mono and, with a soxr ``stream``, resampled (the last call flushes it); once the reads end
    (``n`` frames or the file's real end), ``f.check_decoded`` says whether the file was cut short."""
    read, remaining = 0, n
    while remaining > 0:
        raw = f.read(min(block, remaining))
        got = len(raw)
        read += got
        remaining = remaining - got if got else 0
        if got:
            f.check_finite(raw)
        mono = mix(raw, True) if got else np.zeros(0, np.float32)
        yield stream.resample_chunk(mono, last=remaining <= 0) if stream is not None else mono
    f.check_decoded(read, n)
