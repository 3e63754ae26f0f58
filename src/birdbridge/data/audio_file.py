"""Reading an audio file: the one primitive every audio reader in ``data/`` is built on.

:class:`AudioFile` opens a file by content with libsndfile (``soundfile``), which recognises
WAV, FLAC, OGG/Vorbis, Opus and MP3 by content, so a mislabelled extension never matters,
and makes the checks every reader needs; :func:`mix` takes blocks to mono and
:func:`resample` brings them to the wanted rate. Files are opened lazily and only the
requested frames are decoded: iNatSounds has recordings of more than 20 minutes and
soundscapes run for hours. Built on it: :func:`~birdbridge.data.audio.load_audio` (a segment
decoded whole), :func:`~birdbridge.data.stream.iter_spans` (windows streamed block by
block), :func:`~birdbridge.data.crop.load_crop` (a training crop) and, through those, the
shard writer.

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

import contextlib
import os
import struct
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from ..errors import BadInputError
from ..quiet import native_stderr

DEFAULT_QUALITY = "HQ"
# MP3 frame counts come from the Xing header or a bitrate estimate, so a handful of
# samples may be missing at the end of a healthy file; more than this is a truncation.
_SHORTFALL_FRAMES = 2 * 1152


class AudioFile:
    """An audio file opened by content, with the checks every reader makes.

    Opening raises ``missing``, ``unreadable`` (not a file, text, not audio) or ``empty``
    (0 bytes); with ``require_frames`` (the default) a file without frames is ``empty`` too,
    or ``decode_error`` when it is an Ogg stream cut short. The ``check_*`` methods raise
    the reasons of what was decoded; they need only the path, so they may run after the
    file is closed. A context manager: the file is closed on leaving.
    """

    def __init__(self, path: str | Path, *, require_frames: bool = True):
        self.path = Path(path)
        self.sf = _open(self.path)
        if require_frames:
            try:
                _check_frames(self.sf, self.path)
            except BaseException:
                self.sf.close()
                raise

    def __enter__(self) -> AudioFile:
        return self

    def __exit__(self, *exc) -> None:
        self.sf.close()

    @property
    def samplerate(self) -> int:
        return self.sf.samplerate

    @property
    def frames(self) -> int:
        return self.sf.frames

    def segment(self, start_s: float | None, end_s: float | None, max_duration_s: float | None = None) -> tuple[int, int]:
        """Native frames ``[start, stop)`` of ``[start_s, end_s)``, at most ``max_duration_s`` long."""
        if start_s is not None and start_s < 0:
            raise ValueError(f"start_s must be >= 0, got {start_s}")
        if end_s is not None and start_s is not None and end_s <= start_s:
            raise ValueError(f"end_s ({end_s}) must be after start_s ({start_s})")
        rate = self.sf.samplerate
        start = int(round((start_s or 0.0) * rate))
        # Metadata end times are often a little past the real end: clamp instead of failing.
        stop = self.sf.frames if end_s is None else min(self.sf.frames, int(round(end_s * rate)))
        if max_duration_s is not None:
            stop = min(stop, start + int(round(max_duration_s * rate)))
        return start, max(start, stop)

    def check_end(self, stop: int) -> None:
        """A read reaching the end of a WAV whose header promised more data is a truncation.

        Reads that stop earlier succeed, as they do for FLAC and MP3 whose damage is only met
        when decoding reaches it.
        """
        f = self.sf
        if stop >= f.frames and f.format in ("WAV", "WAVEX") and (why := _wav_truncation(self.path)):
            raise BadInputError("decode_error", self.path, f"truncated: {why}")

    def seek(self, frame: int) -> None:
        self.sf.seek(frame)

    def read(self, n: int, *, start: int | None = None, hush: bool = True) -> np.ndarray:
        """Decode ``n`` frames (from ``start`` when given, else from where the file is) as
        float32 ``(frames, channels)``; a decoder failure is ``decode_error``. ``hush`` holds
        back mpg123's notes on damaged frames (:func:`~birdbridge.quiet.native_stderr`)."""
        try:
            with native_stderr() if hush else contextlib.nullcontext():
                if start:
                    self.sf.seek(start)
                return self.sf.read(n, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as err:
            raise BadInputError("decode_error", self.path, _short(err)) from None

    def check_decoded(self, got: int, want: int, where: str = "") -> None:
        """``decode_error`` when decoding gave nothing, or more than a few MP3 frames less than asked."""
        if got < want and (want - got > _SHORTFALL_FRAMES or got == 0):
            raise BadInputError("decode_error", self.path, f"truncated: got {got} of {want} frames{where}")

    def check_finite(self, raw: np.ndarray) -> None:
        # Checked after decode: float WAVs store NaN/inf verbatim and they poison whole batches.
        if not np.isfinite(raw).all():
            raise BadInputError("non_finite", self.path)

    def check_length(self, n: int, sr: int, min_duration_s: float) -> None:
        """``empty`` for no samples, ``too_short`` for fewer than ``min_duration_s`` at ``sr``."""
        if n == 0:
            raise BadInputError("empty", self.path)
        if n < min_duration_s * sr:
            raise BadInputError("too_short", self.path, f"{n / sr:.3f} s < {min_duration_s} s")

    def check_peak(self, peak: float, silence_peak: float, detail: str = "") -> None:
        if peak < silence_peak:
            raise BadInputError("silent", self.path, detail or f"peak below {silence_peak:g}")


def mix(block: np.ndarray, mono: bool) -> np.ndarray:
    """(frames, channels) → (frames,) by channel mean, or unchanged when keeping channels."""
    if not mono:
        return block
    return block[:, 0] if block.shape[1] == 1 else block.mean(axis=1, dtype=np.float32)


def resample(wave: np.ndarray, sr_in: int, sr_out: int, quality: str = DEFAULT_QUALITY) -> np.ndarray:
    """Resample along the first axis (samples, or samples × channels) with soxr."""
    if sr_in == sr_out or len(wave) == 0:
        return np.ascontiguousarray(wave, dtype=np.float32)
    return soxr.resample(np.ascontiguousarray(wave, dtype=np.float32), sr_in, sr_out, quality=quality).astype(
        np.float32, copy=False
    )


# --------------------------------------------------------------------------- opening


def _open(p: Path) -> sf.SoundFile:
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


def _check_frames(f: sf.SoundFile, p: Path) -> None:
    """Raise for files with no usable frames (an Ogg file cut short also reports none)."""
    if f.frames <= 0:
        if f.format == "OGG" and (why := _ogg_truncation(p)):
            raise BadInputError("decode_error", p, f"truncated: {why}")
        raise BadInputError("empty", p)


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
