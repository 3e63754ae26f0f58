"""Training sees what evaluation sees: the same clip gives the same log-mel through shards and files.

iNatSounds and SSW60 are 22.05 kHz. Shards used to store every recording as 16-bit PCM at the
student's 48 kHz, so the mel bins above 11.025 kHz held requantisation noise (about -85 dB) in
training, where evaluation, decoding the file to float, has near silence (-100 dB): ~12 dB apart
in exactly the bins train-mode BatchNorm fits its statistics to. Shards now keep a source's own
rate when it is below the student's and resample each crop on reading, by the soxr path file
decoding uses. A student whose extractor pads short clips other than training does is refused.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf
import torch

from birdbridge.data.audio import TRAINING_PAD, crop_or_pad, load_audio
from birdbridge.data.loaders import load_collection
from birdbridge.data.shard_writer import prepare_shards
from birdbridge.distill.data import waves_as_float
from birdbridge.distill.datamodule import DistillData
from birdbridge.errors import ConfigError

SR, CLIP = 48000, 480000  # the student's rate and 10 s window (BioLingual's extractor)


@pytest.fixture(scope="module")
def frontend():
    from transformers import ClapFeatureExtractor

    from birdbridge.encoders.frontend import ClapFrontend

    # BioLingual's extractor as the class defaults give it (non-fused): 48 kHz, 64 mel bins up to
    # 14 kHz, hop 480, FFT 1024, 10 s; float64 so the comparison measures the audio, not rounding
    fe = ClapFeatureExtractor(truncation="rand_trunc", padding=TRAINING_PAD)
    assert fe.feature_size == 64 and fe.sampling_rate == SR
    return ClapFrontend.from_feature_extractor(fe, dtype=torch.float64)


def _dataset(phoebe, tmp_path, rate: int):
    """Two real recordings as 16-bit WAVs at ``rate`` (as iNatSounds ships them): one shorter than the
    window (padded), one longer (cropped through the span-resampling path), and their CSV."""
    rows = ["path,scientific_name"]
    mp3s = sorted((phoebe / "audio").glob("*.mp3"))[:2]
    for k, (mp3, reps) in enumerate(zip(mp3s, (1, 3))):
        wave = np.tile(load_audio(mp3, rate), reps)
        sf.write(tmp_path / f"r{k}.wav", wave, rate, subtype="PCM_16")
        rows.append(f"r{k}.wav,Species {k}")
    (tmp_path / "rec.csv").write_text("\n".join(rows) + "\n")
    return tmp_path / "rec.csv"


def _shard_batch(shards, items_from) -> torch.Tensor:
    """The clips as training reads them: the shard reader under the datamodule's validation dataset
    (centre crops, so the crop is the file path's too)."""
    coll = load_collection("shards", shards)
    data = DistillData(coll, coll.audio, coll.audio, sample_rate=SR, n_samples=CLIP, batch_size=2)
    assert [a.path for a in coll.audio] == items_from
    batch = data.val_ds.__getitems__([0, 1])
    return waves_as_float(batch.waves)


@pytest.mark.parametrize("rate", [22050, 32000])
def test_shard_and_file_paths_give_the_same_log_mel(phoebe, tmp_path, frontend, rate):
    csv = _dataset(phoebe, tmp_path, rate)
    m = prepare_shards("csv", csv, tmp_path / "shards", num_workers=1)  # the default: at most 48 kHz
    assert m["sample_rates"] == [rate]  # stored at the source's own rate, per sample
    coll = load_collection("shards", tmp_path / "shards")
    assert {a.extra["sample_rate"] for a in coll.audio} == {rate}
    train = _shard_batch(tmp_path / "shards", ["r0.wav", "r1.wav"])
    # evaluation's decoding: the whole file to float at 48 kHz, then the same centre crop
    files = torch.stack([torch.from_numpy(crop_or_pad(load_audio(tmp_path / f"r{k}.wav", SR), CLIP, "center",
                                                      pad=TRAINING_PAD)) for k in range(2)])
    a, b = frontend(train, crop="start")[:, 0], frontend(files, crop="start")[:, 0]
    assert a.shape[-1] == 64
    # the front end floors power at 1e-10 (-100 dB) on both sides alike
    assert float(a.min()) >= -100.0 - 1e-9 and float(b.min()) >= -100.0 - 1e-9
    delta = (a - b).abs()
    per_bin = delta.amax(dim=(0, 1))
    assert float(delta.max()) <= 0.5, f"max |Δ| {float(delta.max()):.2f} dB; per bin {per_bin.numpy().round(2)}"


def test_old_48k_shards_show_the_gap_this_fixes(phoebe, tmp_path, frontend):
    """What the default used to write (pcm16 upsampled to 48 kHz) still reads, and is what broke parity."""
    _dataset(phoebe, tmp_path, 22050)
    from birdbridge.data.shard_writer import stored_rate

    assert stored_rate(22050, 48000) == 22050 and stored_rate(96000, 48000) == 48000 and stored_rate(22050, None) == 22050
    # an old shard: every sample 16-bit at 48 kHz (written here by hand as the old writer did)
    from birdbridge.data.shards import to_pcm16

    old = load_audio(tmp_path / "r1.wav", SR)
    a = frontend(torch.from_numpy(crop_or_pad(to_pcm16(old) / np.float32(32768), CLIP, "center"))[None], crop="start")
    b = frontend(torch.from_numpy(crop_or_pad(old, CLIP, "center"))[None], crop="start")
    assert float((a - b).abs().max()) > 5.0  # the requantisation noise above 11.025 kHz


def _with_padding(src, dst, padding: str):
    shutil.copytree(src, dst)
    for name in ("preprocessor_config.json", "processor_config.json"):
        f = dst / name
        if f.is_file():
            d = json.loads(f.read_text())
            for part in (d, d.get("feature_extractor") or {}):
                if "padding" in part:
                    part["padding"] = padding
            f.write_text(json.dumps(d))
    return dst


def test_training_refuses_a_student_whose_extractor_pads_otherwise(tiny_clap_dir, tmp_path):
    from birdbridge.distill.config import TrainConfig
    from birdbridge.distill.train import build_student

    ok = build_student(TrainConfig(student=str(tiny_clap_dir)), 8)
    assert ok.frontend.padding == TRAINING_PAD
    bad = _with_padding(tiny_clap_dir, tmp_path / "repeat", "repeat")
    with pytest.raises(ConfigError) as err:
        build_student(TrainConfig(student=str(bad)), 8)
    msg = str(err.value)
    assert "'repeat'" in msg and TRAINING_PAD in msg and "\n" not in msg
