"""Fuzzing the decoders: random and mutated bytes give a result or a BadInputError, nothing else.

A crash here (any other exception, a hang, a NaN in the output) would reach a long job as
a dead worker or a poisoned batch. Bounded: 50 examples per property, no deadline (decoders
on a shared 2-core machine vary in speed), and the Hypothesis database is off so a run
never depends on earlier ones.
"""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from badcorpus import _photo, tone
from birdbridge.data.audio import load_audio
from birdbridge.data.stream import iter_windows
from birdbridge.data.images import load_image
from birdbridge.errors import BadInputError

FUZZ = settings(max_examples=50, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def _encode_audio(fmt: str, subtype: str | None, sr: int = 16000) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, tone(sr, 0.6, channels=2 if fmt == "MP3" else 1), sr, format=fmt, subtype=subtype)
    return buf.getvalue()


AUDIO_SEEDS = [_encode_audio("WAV", "PCM_16"), _encode_audio("WAV", "FLOAT"), _encode_audio("FLAC", "PCM_16"),
               _encode_audio("OGG", "VORBIS"), _encode_audio("MP3", "MPEG_LAYER_III", 44100)]


def _encode_image(fmt: str, mode: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_photo(24)).convert(mode).save(buf, fmt)
    return buf.getvalue()


IMAGE_SEEDS = [_encode_image("PNG", "RGB"), _encode_image("JPEG", "RGB"), _encode_image("GIF", "P"),
               _encode_image("PNG", "RGBA"), _encode_image("JPEG", "CMYK"), _encode_image("WEBP", "RGB"),
               _encode_image("BMP", "RGB"), _encode_image("TIFF", "RGB")]


@st.composite
def mutated(draw, seeds: list[bytes]) -> bytes:
    """A valid file with bytes flipped, a piece cut out or duplicated, or cut short."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "truncate", "dup", "zero_run"]))
        if not data:
            break
        i = draw(st.integers(0, len(data) - 1))
        if op == "flip":
            data[i] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[i : i + draw(st.integers(1, 64))]
        elif op == "truncate":
            del data[i:]
        elif op == "dup":
            data[i:i] = data[i : i + draw(st.integers(1, 256))]
        else:
            data[i : i + 16] = bytes(min(16, len(data) - i))
    return bytes(data)


def _write(data: bytes, suffix: str) -> Path:
    fh = tempfile.NamedTemporaryFile(suffix=suffix, delete=False)
    fh.write(data)
    fh.close()
    return Path(fh.name)


def _decode_audio(data: bytes) -> None:
    path = _write(data, ".wav")  # the name lies on purpose: decoding goes by content
    try:
        try:
            wave = load_audio(path, 16000)
        except BadInputError as err:
            assert err.reason in {"unreadable", "empty", "too_short", "non_finite", "silent", "decode_error"}
        else:
            assert wave.dtype == np.float32 and wave.ndim == 1 and len(wave) > 0 and np.isfinite(wave).all()
        try:  # the streaming reader long files go through must hold up as well
            for _, w in iter_windows(path, 16000, 0.25):
                assert np.isfinite(w).all() and len(w) == 4000
        except BadInputError:
            pass
    finally:
        path.unlink()


@FUZZ
@given(st.binary(min_size=0, max_size=4096))
def test_load_audio_on_random_bytes(data):
    _decode_audio(data)


@FUZZ
@given(mutated(AUDIO_SEEDS))
def test_load_audio_on_mutated_files(data):
    _decode_audio(data)


def _decode_image(data: bytes) -> None:
    path = _write(data, ".jpg")
    try:
        try:
            im = load_image(path)
        except BadInputError as err:
            assert err.reason in {"unreadable", "truncated", "too_large", "too_small"}
        else:
            assert im.mode == "RGB" and min(im.size) >= 8
            assert np.asarray(im).dtype == np.uint8
    finally:
        path.unlink()


@FUZZ
@given(st.binary(min_size=0, max_size=4096))
def test_load_image_on_random_bytes(data):
    _decode_image(data)


@FUZZ
@given(mutated(IMAGE_SEEDS))
def test_load_image_on_mutated_files(data):
    _decode_image(data)
