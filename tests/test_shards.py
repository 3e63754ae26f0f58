"""`birdbridge data prepare` and reading shards: the crops training sees, skips, resume, URLs.

The reference for every crop is what training did before shards existed: decode the
whole file, resample it, ``crop_or_pad`` with the ``(seed, epoch, index)`` generator.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from birdbridge.data.audio import crop_or_pad, load_audio
from birdbridge.data.crop import load_crop
from birdbridge.data.shard_writer import prepare_shards
from birdbridge.data.shards import ShardReader, decode_sample, load_shards

BIN = Path(sys.executable).with_name("birdbridge")
SR = 22050


def _wave(seed: int, seconds: float) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    w = 0.3 * np.sin(2 * np.pi * (500 + 97 * seed) * t * (1 + 0.1 * t)) + 0.05 * rng.standard_normal(len(t))
    return w.astype(np.float32)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """A CSV dataset of 22.05 kHz 16-bit WAVs (long and short), one corrupt and one silent file."""
    d = tmp_path_factory.mktemp("corpus")
    (d / "audio").mkdir()
    rows = ["path,scientific_name,split"]
    for i, secs in enumerate([14.3, 12.0, 0.6, 11.7, 25.1, 3.2]):
        sf.write(d / "audio" / f"r{i}.wav", _wave(i, secs), SR, subtype="PCM_16")
        rows.append(f"audio/r{i}.wav,{['Sayornis nigricans', 'Spinus psaltria'][i % 2]},{'train' if i < 5 else 'val'}")
    (d / "audio" / "broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    sf.write(d / "audio" / "silence.wav", np.zeros(SR * 2, np.float32), SR, subtype="PCM_16")
    rows += ["audio/broken.wav,Sayornis nigricans,train", "audio/silence.wav,Spinus psaltria,train"]
    (d / "rec.csv").write_text("\n".join(rows) + "\n")
    return d


def _rng(i: int, epoch: int = 1, seed: int = 5) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, i])


@pytest.mark.parametrize("sr,n,policy", [(48000, 480000, "random"), (48000, 480000, "center"), (16000, 16000, "random"),
                                         (44100, 44100 * 3, "random")])
def test_crop_before_resampling_equals_the_crop_of_the_whole_file(corpus, sr, n, policy):
    for i in range(6):
        path = corpus / "audio" / f"r{i}.wav"
        whole = crop_or_pad(load_audio(path, sr), n, policy, _rng(i), pad="repeatpad")
        part = load_crop(path, sr, n, policy, _rng(i), pad="repeatpad")
        assert part.shape == whole.shape == (n,)
        assert np.abs(part - whole).max() < 1e-5, (i, np.abs(part - whole).max())


def test_crop_of_a_segment_and_bad_files(corpus):
    path = corpus / "audio" / "r4.wav"  # 25 s: a 3 s segment from 10 s on, cropped to 1 s at 16 kHz
    whole = crop_or_pad(load_audio(path, 16000, start_s=10.0, end_s=13.0), 16000, "random", _rng(0), pad="repeatpad")
    part = load_crop(path, 16000, 16000, "random", _rng(0), start_s=10.0, end_s=13.0)
    assert np.abs(part - whole).max() < 1e-5
    from birdbridge.errors import BadInputError

    for name, reason in (("broken.wav", "unreadable"), ("silence.wav", "silent"), ("nope.wav", "missing")):
        with pytest.raises(BadInputError) as err:
            load_crop(corpus / "audio" / name, 48000, 480000, "random", _rng(0))
        assert err.value.reason == reason


@pytest.fixture(scope="module")
def shards(corpus, tmp_path_factory) -> Path:
    """The default: at most 48 kHz, so these 22.05 kHz sources keep their own rate."""
    out = tmp_path_factory.mktemp("shards") / "s48"
    prepare_shards("csv", corpus / "rec.csv", out, sample_rate=48000, num_workers=2, part_size=3)
    return out


@pytest.fixture(scope="module")
def shards16(corpus, tmp_path_factory) -> Path:
    """Stored below the sources' rate (16 kHz): resampled down once, when written."""
    out = tmp_path_factory.mktemp("shards") / "s16"
    prepare_shards("csv", corpus / "rec.csv", out, sample_rate=16000, num_workers=1)
    return out


def test_prepare_writes_litdata_shards_and_lists_skips(shards):
    m = json.loads((shards / "birdbridge.json").read_text())
    assert m["n_inputs"] == 8 and m["n_samples"] == 6 and m["skip_counts"] == {"unreadable": 1, "silent": 1}
    skipped = json.loads((shards / "skipped.json").read_text())
    assert {s["input"].split("/")[-1]: s["reason"] for s in skipped["skipped"]} == {"broken.wav": "unreadable",
                                                                                   "silence.wav": "silent"}
    assert not (shards / ".parts").exists()
    from litdata import StreamingDataset

    ds = StreamingDataset(str(shards))  # plain LitData reads them too
    # never upsampled: a 48 kHz copy of 22.05 kHz audio holds requantisation noise above 11.025 kHz
    # that evaluation's float decoding does not have (tests/test_train_parity.py)
    assert len(ds) == 6 and ds[0]["audio"].dtype == np.int16 and ds[0]["sr"] == SR
    assert m["sample_rates"] == [SR] and m["sample_rate"] == 48000
    assert {a.extra["sample_rate"] for a in load_shards(shards).audio} == {SR}
    coll = load_shards(shards)
    assert [a.extra["shard_index"] for a in coll.audio] == list(range(6))
    assert {a.split for a in coll.audio} == {"train", "val"} and len(load_shards(shards, split="val").audio) == 1
    assert sorted(s.scientific_name for s in coll.species) == ["Sayornis nigricans", "Spinus psaltria"]


def test_shard_crops_are_the_file_crops(corpus, shards):
    coll = load_shards(shards)
    reader = ShardReader(str(shards))
    for k, item in enumerate(coll.audio):
        path = corpus / item.path
        for sr, n in ((48000, 480000), (16000, 16000)):
            want = crop_or_pad(load_audio(path, sr), n, "random", _rng(k), pad="repeatpad")
            got = reader.crop(item.extra["shard_index"], sr, n, "random", _rng(k))
            # the 16-bit source's own samples, resampled once by the file path's soxr rule: equal to float rounding
            assert np.abs(got - want).max() < 1e-5, (item.path, sr, np.abs(got - want).max())


@pytest.mark.parametrize("encoding", ["pcm16", "flac"])
def test_native_rate_shards_are_lossless(corpus, tmp_path, encoding):
    out = tmp_path / f"native-{encoding}"
    prepare_shards("csv", corpus / "rec.csv", out, sample_rate=None, encoding=encoding, num_workers=1, splits=["train"])
    coll = load_shards(out)
    assert len(coll.audio) == 5  # the val file is not in --split train; broken and silent skipped
    reader = ShardReader(str(out))
    for item in coll.audio:
        sample = reader.sample(item.extra["shard_index"])
        frames, read = decode_sample(sample["audio"], sample["sr"])
        stored = read(0, frames)
        original, sr = sf.read(corpus / item.path, dtype="float32")
        assert sample["sr"] == sr == SR and np.array_equal(stored, original)
        k = item.extra["shard_index"]
        want = crop_or_pad(load_audio(corpus / item.path, 48000), 480000, "random", _rng(k), pad="repeatpad")
        assert np.abs(reader.crop(k, 48000, 480000, "random", _rng(k)) - want).max() < 1e-5


def test_shards_read_through_a_url_as_from_the_directory(shards, tmp_path):
    url = f"local:{shards}"  # LitData's URL scheme for a path read as remote (copied into a cache)
    coll = load_shards(url, cache_dir=str(tmp_path / "cache"))
    assert coll.meta["shards"] == url and len(coll.audio) == 6
    remote, local = ShardReader(url, str(tmp_path / "cache")), ShardReader(str(shards))
    for i in range(6):
        assert np.array_equal(remote.crop(i, 48000, 480000, "random", _rng(i)), local.crop(i, 48000, 480000, "random", _rng(i)))


def _prepare_cli(*args, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN), "data", "prepare", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_prepare_resumes_after_sigkill_and_equals_an_unbroken_run(corpus, tmp_path):
    many = tmp_path / "many"
    (many / "audio").mkdir(parents=True)
    rows = ["path,scientific_name"]
    for i in range(12):
        sf.write(many / "audio" / f"m{i}.wav", _wave(i, 15.0), SR, subtype="PCM_16")
        rows.append(f"audio/m{i}.wav,{['Sayornis nigricans', 'Spinus psaltria'][i % 2]}")
    (many / "rec.csv").write_text("\n".join(rows) + "\n")
    args = ["csv", many / "rec.csv", "--part-size", "3", "--workers", "1"]
    ref = _prepare_cli(*args, "--out", tmp_path / "ref", cwd=tmp_path)
    assert ref.returncode == 0, ref.stderr

    out = tmp_path / "out"
    proc = subprocess.Popen([str(BIN), "data", "prepare", *map(str, args), "--out", str(out)], cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    first = out / ".parts" / "part-00000.json"
    deadline = time.time() + 120
    while proc.poll() is None and not first.exists() and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists() and not (out / "birdbridge.json").exists(), "killed after the first part, before the end"

    res = _prepare_cli(*args, "--out", out, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "resumed after" in res.stderr
    a, b = json.loads((tmp_path / "ref" / "index.json").read_text()), json.loads((out / "index.json").read_text())
    assert a["chunks"] == b["chunks"]
    listed = {c["filename"] for c in b["chunks"]}
    assert {p.name for p in out.glob("chunk-*.bin")} == listed  # orphans of the killed part are gone
    for f in listed:
        assert (out / f).read_bytes() == (tmp_path / "ref" / f).read_bytes()
    assert (out / "samples.parquet").read_bytes() == (tmp_path / "ref" / "samples.parquet").read_bytes()

    again = _prepare_cli(*args, "--out", out, cwd=tmp_path)  # idempotent
    assert again.returncode == 0 and "already complete" in again.stderr
    other = _prepare_cli("csv", many / "rec.csv", "--sample-rate", "16000", "--out", out, cwd=tmp_path)
    assert other.returncode == 2 and "holds shards of another dataset or options" in other.stderr
    assert "Traceback" not in other.stderr


def test_prepare_of_nothing_usable_is_one_line(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"not audio")
    (tmp_path / "rec.csv").write_text("path,scientific_name\na.wav,Sayornis nigricans\n")
    res = _prepare_cli("csv", tmp_path / "rec.csv", "--out", tmp_path / "s", cwd=tmp_path)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "every recording was skipped" in res.stderr


def test_pcm16_shard_batches_are_int16_and_equal_the_float_path(corpus, shards16, shards):
    """Shards at the student's rate give int16 batches (half the bytes to share and copy to the GPU);
    on the device they become the very float32 batch the float path gives, short clips repeat-padded."""
    import torch

    from birdbridge.distill.data import ShardClipDataset, waves_as_float

    coll = load_shards(shards16)  # pcm16 at 16 kHz; r2 (0.6 s) is shorter than the crop
    n = 16000 * 2
    ds = ShardClipDataset(coll, coll.audio, 16000, n, crop="random", seed=5)
    keys = [(3, i) for i in range(len(coll.audio))]
    batch = ds.__getitems__(keys)
    assert batch.waves.dtype == torch.int16 and batch.waves.shape == (len(keys), n)
    got = waves_as_float(batch.waves)
    reader = ShardReader(str(shards16))
    for row, (e, i) in enumerate(keys):
        want = reader.crop(ds.index[i], 16000, n, "random", np.random.default_rng([5, e, i]), pad="repeatpad")
        assert got.dtype == torch.float32 and np.array_equal(got[row].numpy(), want), row
    # samples stored below the model's rate (22.05 kHz sources, 48 kHz model) are resampled as they are
    # read: a float32 batch, through the same rule
    coll48 = load_shards(shards)
    ds48 = ShardClipDataset(coll48, coll48.audio, 48000, 480000, crop="random", seed=5)
    b48 = ds48.__getitems__(keys)
    assert b48.waves.dtype == torch.float32 and torch.equal(waves_as_float(b48.waves), b48.waves)
    want48 = ShardReader(str(shards)).crop(ds48.index[0], 48000, 480000, "random", np.random.default_rng([5, 3, 0]),
                                           pad="repeatpad")
    assert np.array_equal(b48.waves[0].numpy(), want48)
