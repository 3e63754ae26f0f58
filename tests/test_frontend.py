"""Parity of birdbridge's torch CLAP front end with transformers' ClapFeatureExtractor.

Relative error throughout: ``max|ours - hf| / max|hf|`` over the whole feature tensor
(dB values; max|hf| is ~100 because of the -100 dB floor, so 1e-4 is 0.01 dB).

Both the float64 path and the float32 default must meet 1e-4 on every cell. The default
gets there by redoing in float64 the frames whose float32 cells cannot be trusted (a cell
far below its frame's energy); with that turned off (``exact_range_db=None``) pure float32
STFT rounding moves cells near the -100 dB floor by up to ~0.1 dB, which the tests also
show, so the redo is doing something.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

transformers = pytest.importorskip("transformers")
from transformers import ClapFeatureExtractor  # noqa: E402

from birdbridge.encoders.frontend import ClapFrontend, check_truncation  # noqa: E402
from birdbridge.errors import ConfigError  # noqa: E402

PHOEBE = Path(__file__).resolve().parents[2] / "shared" / "data" / "phoebe"
LOUD_DB = -80.0  # cells above this meet 1e-4 even in pure float32


def rel_err(ours: torch.Tensor, ref: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    d = (ours.double() - ref.double()).abs()
    if mask is not None:
        d = d[mask]
    return float(d.max() / ref.double().abs().max())


def hf_features(fe, clips) -> torch.Tensor:
    return fe([np.asarray(c) for c in clips], sampling_rate=fe.sampling_rate, return_tensors="pt").input_features


def assert_parity(fe, clips, ours32: torch.Tensor | None = None, ours64: torch.Tensor | None = None, **kw) -> dict:
    ref = hf_features(fe, clips)
    clips_t = [torch.as_tensor(np.asarray(c)) for c in clips]
    if ours32 is None:
        ours32 = ClapFrontend.from_feature_extractor(fe)(clips_t, **kw)
    if ours64 is None:
        ours64 = ClapFrontend.from_feature_extractor(fe, dtype=torch.float64)(clips_t, **kw)
    assert ours32.shape == ref.shape and ours64.shape == ref.shape
    assert ours32.dtype == torch.float32
    pure32 = ClapFrontend.from_feature_extractor(fe, exact_range_db=None)(clips_t, **kw)
    errs = {
        "f64": rel_err(ours64, ref),
        "f32": rel_err(ours32, ref),
        "f32_pure": rel_err(pure32, ref),
        "f32_pure_loud": rel_err(pure32, ref, ref > LOUD_DB),
    }
    assert errs["f64"] <= 1e-4, errs
    assert errs["f32"] <= 1e-4, errs
    assert errs["f32_pure_loud"] <= 1e-4, errs
    assert errs["f32_pure"] <= 2e-3, errs
    return errs


# ---------------------------------------------------------------- real recordings
def _decode_48k(path: Path) -> np.ndarray:
    """Mono float32 at 48 kHz through the project's own decoder (soundfile + soxr)."""
    from birdbridge.data.audio import load_audio

    return load_audio(path, 48000)


@pytest.fixture(scope="module")
def phoebe_clips() -> list[np.ndarray]:
    if not (PHOEBE / "recordings.csv").is_file():
        pytest.skip(f"real recordings not found at {PHOEBE} (see shared/data/README.md)")
    with open(PHOEBE / "recordings.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    picked, seen = [], set()
    for r in rows:  # one clip per species keeps the test fast
        if r["scientific_name"] not in seen:
            seen.add(r["scientific_name"])
            picked.append(_decode_48k(PHOEBE / r["path"]))
    return picked


@pytest.fixture(scope="module")
def fe48() -> ClapFeatureExtractor:
    return ClapFeatureExtractor(truncation="rand_trunc")


def test_real_clips_up_to_10s(fe48, phoebe_clips):
    clips = [c[: fe48.nb_max_samples] for c in phoebe_clips]  # <= 10 s: no random crop
    errs = assert_parity(fe48, clips)
    print(f"phoebe parity (rel err): {errs}")
    assert hf_features(fe48, clips[:1]).shape == (1, 1, 1001, 64)


def test_every_phoebe_recording_default_path(fe48):
    """All 70 real recordings through the default (float32 + float64 redo) path, as training uses it."""
    if not (PHOEBE / "recordings.csv").is_file():
        pytest.skip(f"real recordings not found at {PHOEBE} (see shared/data/README.md)")
    with open(PHOEBE / "recordings.csv", newline="") as f:
        paths = [PHOEBE / r["path"] for r in csv.DictReader(f)]
    front = ClapFrontend.from_feature_extractor(fe48)
    worst = 0.0
    for i in range(0, len(paths), 10):
        clips = [_decode_48k(p)[: fe48.nb_max_samples] for p in paths[i : i + 10]]
        ours = front([torch.from_numpy(c) for c in clips], crop="start")
        worst = max(worst, rel_err(ours, hf_features(fe48, clips)))
    print(f"{len(paths)} phoebe recordings, default path: max rel err {worst:.2e}")
    assert len(paths) == 70 and worst <= 1e-4


def test_frames_at_risk_follow_the_weighted_criterion(fe48, phoebe_clips):
    """A frame is redone when a floored mel cell, scaled by (tallest filter's peak / its filter's peak), lies more
    than exact_range_db below the frame's windowed energy; recomputed here from float64 frames."""
    front = ClapFrontend.from_feature_extractor(fe48)
    x = front.fix_length([torch.from_numpy(c) for c in phoebe_clips[:3]], crop="start")
    mel, at_risk = front.mel_power(x)
    n, hop = front.n_fft, front.hop_length
    padded = torch.nn.functional.pad(x.double()[:, None], (n // 2, n // 2), mode="reflect")[:, 0]
    energy = (padded.unfold(1, n, hop) * front.window).square().sum(-1)
    peak = torch.as_tensor(np.asarray(fe48.mel_filters_slaney)).amax(0)
    headroom = lambda scale: (mel.double() * scale).amin(-1) * 10 ** (front.exact_range_db / 10)  # noqa: E731
    expected = headroom(peak.max() / peak) < energy
    assert 0.001 < expected.double().mean() < 0.5  # the clips exercise both sides
    assert (at_risk != expected).double().mean() < 1e-3  # float32 vs float64 energy may flip a borderline frame
    assert (headroom(1.0) < energy).sum() > expected.sum()  # unweighted would redo more


def test_loud_tone_above_the_mel_band_is_caught():
    """Energy above frequency_max never reaches a mel cell but its float32 rounding does."""
    fe = ClapFeatureExtractor(truncation="rand_trunc")  # mel bank stops at 14 kHz
    t = np.arange(fe.nb_max_samples) / fe.sampling_rate
    rng = np.random.default_rng(0)
    clip = (0.9 * np.sin(2 * np.pi * 20000 * t) + 1e-5 * rng.standard_normal(t.size)).astype(np.float32)
    ref = hf_features(fe, [clip])
    ours = ClapFrontend.from_feature_extractor(fe)([torch.from_numpy(clip)])
    pure = ClapFrontend.from_feature_extractor(fe, exact_range_db=None)([torch.from_numpy(clip)])
    print(f"20 kHz tone: default {rel_err(ours, ref):.2e}, pure float32 {rel_err(pure, ref):.2e}")
    assert rel_err(ours, ref) <= 1e-4


def test_real_long_clip_start_and_center(fe48, phoebe_clips):
    long = np.concatenate(phoebe_clips[:2])  # two ~6 s clips -> ~12 s
    n = fe48.nb_max_samples
    assert long.shape[0] > n
    overflow = long.shape[0] - n
    front = ClapFrontend.from_feature_extractor(fe48, dtype=torch.float64)
    for crop, start in (("start", 0), ("center", overflow // 2)):
        ours64 = front([torch.from_numpy(long)], crop=crop)
        ref = hf_features(fe48, [long[start : start + n]])
        assert rel_err(ours64, ref) <= 1e-4, crop


def test_real_random_crop_uses_generator(fe48, phoebe_clips):
    long = np.concatenate(phoebe_clips[:2])
    n = fe48.nb_max_samples
    front = ClapFrontend.from_feature_extractor(fe48, dtype=torch.float64)
    (start,) = front.crop_starts([long.shape[0]], "random", torch.Generator().manual_seed(3))
    ours = front([torch.from_numpy(long)], generator=torch.Generator().manual_seed(3))
    assert rel_err(ours, hf_features(fe48, [long[start : start + n]])) <= 1e-4


# ---------------------------------------------------------------- tiny config, synthetic
def tiny_fe(**kw) -> ClapFeatureExtractor:
    args = dict(feature_size=32, sampling_rate=16000, hop_length=160, fft_window_size=256, max_length_s=1)
    args.update(frequency_max=8000, truncation="rand_trunc")
    args.update(kw)
    return ClapFeatureExtractor(**args)


def synthetic(n: int, kind: str, seed: int = 0, sr: int = 16000) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    if kind == "noise":
        x = 0.3 * rng.standard_normal(n)
    elif kind == "chirp":
        x = 0.5 * np.sin(2 * np.pi * (300 * t + 2500 * t**2))
    elif kind == "tones":
        x = 0.4 * np.sin(2 * np.pi * 1200 * t) + 0.05 * np.sin(2 * np.pi * 4100 * t)
    else:  # bursts: song-like notes with silence between
        x = np.sin(2 * np.pi * 2500 * t) * (np.sin(2 * np.pi * 6 * t) > 0.3) + 0.01 * rng.standard_normal(n)
    return x.astype(np.float32)


@pytest.mark.parametrize("fmin", [0.0, 50.0])
def test_tiny_config_synthetic(fmin):
    fe = tiny_fe(frequency_min=fmin)
    front = ClapFrontend.from_feature_extractor(fe)
    assert (front.n_mels, front.n_fft, front.hop_length, front.max_samples) == (32, 256, 160, 16000)
    clips = [synthetic(16000, k, seed=i) for i, k in enumerate(["noise", "chirp", "tones", "bursts"])]
    errs = assert_parity(fe, clips)
    print(f"tiny config fmin={fmin} parity: {errs}")


def test_band_blocks_skip_only_zero_weights():
    """The mel matmul runs as a few dense blocks of the band-shaped bank; exact only if every skipped weight is 0."""
    dense_macs = None
    # the last bank has more filters than its 65 FFT bins can feed: some columns are all zero
    for fe in (ClapFeatureExtractor(truncation="rand_trunc"), tiny_fe(), tiny_fe(feature_size=64, fft_window_size=128)):
        front = ClapFrontend.from_feature_extractor(fe)
        pairs, cols, macs = front._mel_pairs, [], 0
        for m0, m1, r0, r1 in front._bands:
            cols += range(m0, m1)
            assert not torch.cat([pairs[:r0, m0:m1], pairs[r1:, m0:m1]]).any()
            macs += (r1 - r0) * (m1 - m0)
        assert cols == list(range(front.n_mels)) and len(front._bands) <= 4
        dense_macs = dense_macs or (pairs.numel(), macs)  # BioLingual's bank, first in the loop
    assert dense_macs[1] * 4 < dense_macs[0], dense_macs


def test_bank_with_empty_filters_and_hop_not_dividing_the_clip():
    """Zero columns in the bank, and a hop that does not divide max_samples (no flat strided frame view)."""
    for fe in (tiny_fe(feature_size=64, fft_window_size=128), tiny_fe(hop_length=170)):
        clips = [synthetic(16000, k, seed=i) for i, k in enumerate(["bursts", "tones", "noise"])]
        assert_parity(fe, clips)


def test_frame_gather_fast_path_matches_general_path():
    front = ClapFrontend.from_feature_extractor(tiny_fe())
    n, hop = front.n_fft, front.hop_length
    x = torch.randn(3, front.max_samples)
    first, last = front._inner_frames(front.max_samples)
    ci, fi = torch.tensor([0, 2, 1, 2]), torch.tensor([first, last, 40, 7])
    fast = front._raw_frames(x, ci, fi, out=torch.full((4, n), float("nan")))  # contiguous, hop divides the clip
    general = front._raw_frames(x.t().contiguous().t(), ci, fi, out=torch.full((4, n), float("nan")))  # not contiguous
    assert torch.equal(fast, general)
    assert torch.equal(fast[1], x[2, last * hop - n // 2 : last * hop + n // 2])


@pytest.mark.parametrize("padding", ["repeatpad", "repeat", "pad"])
def test_short_clips_padding(padding):
    fe = tiny_fe(padding=padding)
    lengths = [1, 7, 100, 3001, 5333, 8000, 15999, 16000]
    clips = [synthetic(n, "noise" if i % 2 else "chirp", seed=i) for i, n in enumerate(lengths)]
    assert_parity(fe, clips)


def test_mixed_lengths_long_clips_start_crop():
    fe = tiny_fe()
    clips = [synthetic(n, "bursts", seed=n) for n in (40000, 16001, 9000)]
    front = ClapFrontend.from_feature_extractor(fe, dtype=torch.float64)
    ours = front([torch.from_numpy(c) for c in clips], crop="start")
    ref = hf_features(fe, [c[:16000] for c in clips])
    assert rel_err(ours, ref) <= 1e-4


def test_tensor_and_list_inputs_agree_and_chunking_is_exact():
    fe = tiny_fe()
    x = torch.from_numpy(np.stack([synthetic(24000, "noise", seed=i) for i in range(5)]))
    front = ClapFrontend.from_feature_extractor(fe)
    a = front(x, generator=torch.Generator().manual_seed(0))
    b = front(list(x), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    whole = ClapFrontend.from_feature_extractor(fe, chunk_size=64)(x, crop="center")
    one = ClapFrontend.from_feature_extractor(fe, chunk_size=1)(x, crop="center")
    torch.testing.assert_close(whole, one, rtol=0, atol=1e-4)
    c = front(x, generator=torch.Generator().manual_seed(1))
    assert not torch.equal(a, c)  # a different seed crops elsewhere


def test_random_crop_is_uniform_over_all_starts():
    front = ClapFrontend.from_feature_extractor(tiny_fe())
    g = torch.Generator().manual_seed(0)
    starts = front.crop_starts([16002] * 300, "random", g)
    assert set(starts) == {0, 1, 2}  # both ends of [0, overflow] reachable
    assert front.crop_starts([16000, 900], "random", g) == [0, 0]
    assert front.crop_starts([16010], "center") == [5]
    with pytest.raises(ValueError, match="crop"):
        front.crop_starts([20000], "middle")


# ---------------------------------------------------------------- refusals
def test_fusion_is_refused():
    fused = ClapFeatureExtractor()  # transformers' default truncation is "fusion"
    with pytest.raises(ValueError, match="fused CLAP models need 4-channel fusion features"):
        ClapFrontend.from_feature_extractor(fused)
    with pytest.raises(ConfigError, match="truncation='rand_trunc'"):
        check_truncation(fused)


def test_check_truncation_against_model_config():
    from transformers import ClapAudioConfig

    ok = ClapFeatureExtractor(truncation="rand_trunc")
    check_truncation(ok)
    check_truncation(ok, ClapAudioConfig(enable_fusion=False))
    check_truncation(type("Processor", (), {"feature_extractor": ok})())
    with pytest.raises(ConfigError, match="enable_fusion=True"):
        check_truncation(ok, ClapAudioConfig(enable_fusion=True))
    with pytest.raises(ConfigError, match="non-fused"):
        check_truncation(ClapFeatureExtractor(truncation="fusion"), False)


def test_empty_clip_and_bad_shapes():
    front = ClapFrontend.from_feature_extractor(tiny_fe())
    with pytest.raises(ValueError, match="empty"):
        front([torch.zeros(0)])
    with pytest.raises(ValueError, match="empty"):
        front([])
    with pytest.raises(ValueError, match="expected waveforms"):
        front(torch.zeros(2, 2, 100))


def test_autocast_does_not_lower_precision():
    fe = tiny_fe()
    x = torch.from_numpy(np.stack([synthetic(16000, "chirp", seed=i) for i in range(3)]))
    front = ClapFrontend.from_feature_extractor(fe)
    plain = front(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        auto = front(x)
    assert auto.dtype == torch.float32
    torch.testing.assert_close(auto, plain, rtol=0, atol=0)


@pytest.mark.parametrize("length", [1000, 7000, 12000])
def test_training_pads_short_clips_like_evaluation_and_hf(tmp_path, length):
    """A short clip reaches the model the same way in training (the clip dataset pads it)
    and in evaluation (the front end pads it): HF's repeatpad, whole copies then zeros."""
    import soundfile as sf

    from birdbridge.data.audio import pad_to_length
    from birdbridge.data.records import AudioItem, Collection
    from birdbridge.distill.data import AudioClipDataset
    from birdbridge.taxonomy import Species

    fe = tiny_fe()
    clip = synthetic(length, "chirp", seed=length)
    sf.write(tmp_path / "short.wav", clip, 16000, subtype="FLOAT")
    coll = Collection("c", [Species("s0", "Aus bus")], [AudioItem("short.wav", "s0", "train")], root=str(tmp_path))
    wave, _ = AudioClipDataset(coll, coll.audio, 16000, fe.nb_max_samples, crop="random", seed=3)[0]
    copies = fe.nb_max_samples // length
    want = np.concatenate([np.tile(clip, copies), np.zeros(fe.nb_max_samples - copies * length, np.float32)])
    np.testing.assert_allclose(wave.numpy(), want, atol=1e-6)  # exactly repeatpad, from the start
    front = ClapFrontend.from_feature_extractor(fe, dtype=torch.float64)
    train_feats = front(wave[None])  # already full length: the front end adds nothing
    assert rel_err(train_feats, hf_features(fe, [clip])) <= 1e-4  # what HF makes of the short clip
    assert rel_err(front([torch.from_numpy(clip)]), train_feats) == 0  # what evaluation makes of it
    # the one padding function, on numpy and torch alike
    assert torch.equal(pad_to_length(torch.from_numpy(clip), fe.nb_max_samples), torch.from_numpy(want))
