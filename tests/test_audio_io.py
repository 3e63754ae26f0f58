"""Audio decoding, resampling, streaming windows and every bad-file reason."""

from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from birdbridge.data.audio import (
    SILENCE_PEAK,
    audio_info,
    crop_or_pad,
    load_audio,
    pad_to_length,
    sliding_windows,
    window_starts,
)
from birdbridge.data.audio_file import resample
from birdbridge.data.stream import iter_windows
from birdbridge.errors import BadInputError

SR = 22050
PHOEBE = Path(__file__).resolve().parents[2] / "shared" / "data" / "phoebe"


def sine(freq: float, dur: float, sr: int, amp: float = 0.5, channels: int = 1) -> np.ndarray:
    t = np.arange(int(round(dur * sr))) / sr
    x = (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    return x if channels == 1 else np.stack([x] * channels, axis=1)


def peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.argmax(spec) * sr / len(x))


def reason(path, **kw) -> str:
    with pytest.raises(BadInputError) as ei:
        load_audio(path, 48000, **kw)
    return ei.value.reason


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    x = sine(1000, 3.0, SR)
    out = {}
    for name, kw in {
        "wav": dict(format="WAV", subtype="PCM_16"),
        "flac": dict(format="FLAC"),
        "ogg": dict(format="OGG", subtype="VORBIS"),
        "mp3": dict(format="MP3"),
    }.items():
        out[name] = d / f"tone.{name}"
        sf.write(out[name], x, SR, **kw)
    # Noise, so windows compare against something richer than a tone.
    rng = np.random.default_rng(0)
    out["noise"] = d / "noise.wav"
    sf.write(out["noise"], (0.3 * rng.standard_normal(int(7.3 * SR))).astype(np.float32), SR, subtype="FLOAT")
    out["flac_as_wav"] = d / "really_flac.wav"
    out["flac_as_wav"].write_bytes(out["flac"].read_bytes())
    return out


# --------------------------------------------------------------------------- decoding


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3"])
def test_formats_decode_and_resample_to_48k(clips, fmt):
    y = load_audio(clips[fmt], 48000)
    assert y.dtype == np.float32 and y.ndim == 1
    assert abs(len(y) - 3.0 * 48000) <= 1
    assert abs(peak_hz(y, 48000) - 1000) < 2
    assert 0.3 < np.max(np.abs(y)) < 0.7


def test_resampled_sine_is_clean(clips):
    y = load_audio(clips["wav"], 48000)
    ref = sine(1000, 3.0, 48000)
    # Compare away from the edges (filter transients) and allow the 16-bit source noise.
    assert np.max(np.abs(y[2000:-2000] - ref[2000 : len(y) - 2000])) < 2e-3


def test_content_not_extension_decides(clips):
    assert audio_info(clips["flac_as_wav"])["format"] == "FLAC"
    assert len(load_audio(clips["flac_as_wav"], SR)) == 3 * SR


def test_audio_info_reads_header(clips):
    info = audio_info(clips["wav"])
    assert info == {"samplerate": SR, "channels": 1, "frames": 3 * SR, "duration_s": 3.0, "format": "WAV", "subtype": "PCM_16"}


@pytest.mark.parametrize("rate", [8000, 192000])
def test_unusual_rates(tmp_path, rate):
    p = tmp_path / f"r{rate}.wav"
    sf.write(p, sine(1000, 1.0, rate), rate)
    y = load_audio(p, 48000)
    assert abs(len(y) - 48000) <= 1 and abs(peak_hz(y, 48000) - 1000) < 2


def test_eight_channels_mix_to_mono_or_stay(tmp_path):
    p = tmp_path / "eight.wav"
    x = sine(1000, 0.5, SR, channels=8) * np.linspace(0.1, 0.8, 8, dtype=np.float32)
    sf.write(p, x, SR, subtype="FLOAT")
    mono = load_audio(p, SR)
    np.testing.assert_allclose(mono, x.mean(axis=1), atol=1e-6)
    multi = load_audio(p, 48000, mono=False)
    assert multi.shape[0] == 8 and abs(multi.shape[1] - 24000) <= 1


def test_segments_seek_and_clamp(clips):
    full = load_audio(clips["noise"], SR)
    np.testing.assert_array_equal(load_audio(clips["noise"], SR, start_s=1.0, end_s=2.5), full[SR : int(2.5 * SR)])
    np.testing.assert_array_equal(load_audio(clips["noise"], SR, start_s=2.0, max_duration_s=1.0), full[2 * SR : 3 * SR])
    assert len(load_audio(clips["noise"], SR, start_s=7.0, end_s=99.0)) == len(full) - 7 * SR  # end clamped
    with pytest.raises(BadInputError) as ei:
        load_audio(clips["noise"], SR, start_s=60.0)
    assert ei.value.reason == "empty"
    with pytest.raises(ValueError):
        load_audio(clips["noise"], SR, start_s=2.0, end_s=1.0)


def test_only_requested_frames_are_read(clips, monkeypatch):
    asked: list[int] = []
    real_read = sf.SoundFile.read

    def spy(self, frames=-1, *a, **kw):
        asked.append(frames)
        return real_read(self, frames, *a, **kw)

    monkeypatch.setattr(sf.SoundFile, "read", spy)
    load_audio(clips["noise"], 48000, start_s=5.0, end_s=5.5)
    assert asked == [SR // 2]
    asked.clear()
    list(iter_windows(clips["noise"], 48000, 1.0, block_s=0.5))
    assert asked and max(asked) <= SR // 2 and sum(asked) == int(7.3 * SR)


def test_segment_before_damage_still_decodes(tmp_path, clips):
    # Only the requested frames are decoded: the cut-off tail of a FLAC is never reached.
    p = tmp_path / "cut.flac"
    b = clips["flac"].read_bytes()
    p.write_bytes(b[: len(b) // 2])
    assert len(load_audio(p, SR, end_s=0.5)) == SR // 2
    assert reason(p) == "decode_error"


# --------------------------------------------------------------------------- bad inputs


def test_missing_empty_and_not_audio(tmp_path):
    assert reason(tmp_path / "nope.wav") == "missing"
    (tmp_path / "zero.wav").write_bytes(b"")
    assert reason(tmp_path / "zero.wav") == "empty"
    (tmp_path / "random.wav").write_bytes(np.random.default_rng(1).bytes(4000))
    assert reason(tmp_path / "random.wav") == "unreadable"
    (tmp_path / "text.wav").write_text("this is not audio\n" * 50)
    assert reason(tmp_path / "text.wav") == "unreadable"
    (tmp_path / "adir.wav").mkdir()
    assert reason(tmp_path / "adir.wav") == "unreadable"
    sf.write(tmp_path / "noframes.wav", np.zeros(0, np.float32), SR)
    assert reason(tmp_path / "noframes.wav") == "empty"


@pytest.mark.parametrize("fmt", ["wav", "flac", "ogg", "mp3"])
@pytest.mark.parametrize("frac", [0.3, 0.7])
def test_truncated_files(tmp_path, clips, fmt, frac):
    b = clips[fmt].read_bytes()
    p = tmp_path / f"trunc.{fmt}"
    p.write_bytes(b[: int(len(b) * frac)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = reason(p)
    # An Ogg cut before its first audio page cannot even be opened; all else fails on decode.
    assert r == "decode_error" or (fmt == "ogg" and r == "unreadable")
    with pytest.raises(BadInputError):
        list(iter_windows(p, SR, 1.0))


def test_too_short_non_finite_and_silent(tmp_path):
    sf.write(tmp_path / "short.wav", sine(1000, 0.01, SR), SR)
    assert reason(tmp_path / "short.wav") == "too_short"
    assert len(load_audio(tmp_path / "short.wav", SR, min_duration_s=0.0)) == int(0.01 * SR)
    for bad in (np.nan, np.inf):
        x = sine(1000, 0.5, SR)
        x[100] = bad
        sf.write(tmp_path / "nf.wav", x, SR, subtype="FLOAT")
        assert reason(tmp_path / "nf.wav") == "non_finite"
    sf.write(tmp_path / "silence.wav", np.zeros(SR, np.float32), SR)
    assert reason(tmp_path / "silence.wav") == "silent"
    kept = load_audio(tmp_path / "silence.wav", SR, reject_silent=False)
    assert len(kept) == SR and not kept.any()
    # Quiet but real (one 16-bit LSB of dither) is not silence.
    sf.write(tmp_path / "quiet.wav", sine(1000, 0.5, SR, amp=4e-5), SR, subtype="PCM_16")
    assert np.max(np.abs(load_audio(tmp_path / "quiet.wav", SR))) > SILENCE_PEAK


def test_error_message_names_file(tmp_path):
    with pytest.raises(BadInputError) as ei:
        load_audio(tmp_path / "gone.flac", SR)
    assert "gone.flac" in str(ei.value) and ei.value.path.endswith("gone.flac")


# --------------------------------------------------------------------------- streaming windows


@pytest.mark.parametrize("block_s", [0.37, 2.0, 30.0])
def test_iter_windows_match_full_decode(clips, block_s):
    sr, win, hop = 48000, 1.0, 0.4
    full = load_audio(clips["noise"], sr)
    got = list(iter_windows(clips["noise"], sr, win, hop, block_s=block_s))
    n, h = int(win * sr), int(hop * sr)
    starts = list(range(0, len(full) - n + 1, h))
    assert [round(s * sr) for s, _ in got[: len(starts)]] == starts
    for (_, w), st in zip(got, starts):
        np.testing.assert_allclose(w, full[st : st + n], atol=1e-5)
    # The tail after the last full window comes as one window padded like a short clip.
    assert len(got) == len(starts) + 1
    s_last, w_last = got[-1]
    tail = full[round(s_last * sr) :]
    np.testing.assert_allclose(w_last, pad_to_length(tail, n), atol=1e-5)


def test_iter_windows_options(clips):
    assert len(list(iter_windows(clips["noise"], SR, 1.0, pad_last=False))) == 7
    assert len(list(iter_windows(clips["noise"], SR, 1.0))) == 8
    short = list(iter_windows(clips["wav"], SR, 10.0))
    assert len(short) == 1 and short[0][1].shape == (10 * SR,)
    assert list(iter_windows(clips["wav"], SR, 10.0, pad_last=False)) == []
    full = load_audio(clips["noise"], SR)
    seg = list(iter_windows(clips["noise"], SR, 1.0, start_s=2.0, end_s=4.0))
    assert [s for s, _ in seg] == [2.0, 3.0]
    np.testing.assert_array_equal(seg[1][1], full[3 * SR : 4 * SR])


def test_iter_windows_mp3_native_rate():
    if not PHOEBE.is_dir():
        pytest.skip("../shared/data/phoebe is absent (real MP3s); see shared/data/README.md")
    p = sorted((PHOEBE / "audio").glob("*.mp3"))[0]
    info = audio_info(p)
    full = load_audio(p, 48000)
    wins = list(iter_windows(p, 48000, 2.0, 2.0, block_s=0.5))
    assert len(wins) == int(np.ceil(info["duration_s"] / 2.0 - 1e-9))
    np.testing.assert_allclose(wins[1][1], full[96000:192000], atol=1e-5)


# --------------------------------------------------------------------------- in-memory windows


def test_crop_or_pad_policies():
    x = np.arange(10, dtype=np.float32)
    np.testing.assert_array_equal(crop_or_pad(x, 4, "start"), [0, 1, 2, 3])
    np.testing.assert_array_equal(crop_or_pad(x, 4, "center"), [3, 4, 5, 6])
    a = crop_or_pad(x, 4, "random", np.random.default_rng(3))
    b = crop_or_pad(x, 4, "random", np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert a[0] in x and np.all(np.diff(a) == 1)
    np.testing.assert_array_equal(crop_or_pad(x[:3], 6, "start"), [0, 1, 2, 0, 0, 0])
    np.testing.assert_array_equal(crop_or_pad(x[:3], 7, "center"), [0, 0, 0, 1, 2, 0, 0])
    np.testing.assert_array_equal(crop_or_pad(x[1:4], 7, "center", pad="repeatpad"), [1, 2, 3, 1, 2, 3, 0])
    r = crop_or_pad(x[:3], 6, "random", np.random.default_rng(0))
    assert len(r) == 6 and sorted(r[r > 0]) == [1, 2]
    assert crop_or_pad(np.zeros((2, 10), np.float32), 4, "start").shape == (2, 4)
    assert crop_or_pad(np.zeros(0, np.float32), 5, "start").shape == (5,)
    with pytest.raises(ValueError):
        crop_or_pad(x, 4, "middle")


def test_sliding_windows_cover_the_clip():
    x = np.arange(23, dtype=np.float32)
    ws = sliding_windows(x, 10, 5)
    assert window_starts(23, 10, 5) == [0, 5, 10, 13]
    np.testing.assert_array_equal(ws[-1], x[-10:])  # last window aligned to the end
    assert all(len(w) == 10 for w in ws)
    assert window_starts(20, 10, 5) == [0, 5, 10]
    short = sliding_windows(x[1:5], 10, 5)
    assert len(short) == 1 and short[0].tolist() == [1, 2, 3, 4, 1, 2, 3, 4, 0, 0]


def test_resample_helper_identity_and_length():
    x = np.random.default_rng(0).standard_normal(1001).astype(np.float32)
    assert resample(x, 16000, 16000) is not None and np.array_equal(resample(x, 16000, 16000), x)
    assert len(resample(x, 22050, 48000)) == round(1001 * 48000 / 22050)


def test_phoebe_mp3s_decode():
    if not PHOEBE.is_dir():
        pytest.skip("../shared/data/phoebe is absent (real MP3s); see shared/data/README.md")
    files = sorted((PHOEBE / "audio").glob("*.mp3"))[:10]
    t0 = time.perf_counter()
    for p in files:
        y = load_audio(p, 48000)
        assert abs(len(y) - 6 * 48000) <= 2 and np.isfinite(y).all()
    assert time.perf_counter() - t0 < 20
