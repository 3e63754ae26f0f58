"""Issue 25 item 5: a `confidence` in [0, 1] beside every cosine `score`, at the learned temperature,
`--min-confidence`, and Raven selections spanning the model's mel range."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from test_detect import SPECIES_CSV, bb, chirps

SCALE = 40.0


@pytest.fixture(scope="module")
def scaled_model(tiny_distilled_dir, tmp_path_factory) -> Path:
    """The tiny checkpoint as training now saves it: with the learned logit scale recorded."""
    d = tmp_path_factory.mktemp("scaled") / "model"
    shutil.copytree(tiny_distilled_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["logit_scale"] = SCALE
    (d / "config.json").write_text(json.dumps(cfg))
    return d


@pytest.fixture(scope="module")
def rec(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("conf")
    chirps(d / "dawn.wav", 4.2, 16000)
    (d / "species.csv").write_text(SPECIES_CSV)
    return d


def test_detect_confidence_is_the_softmax_over_the_list_at_the_recorded_scale(scaled_model, rec):
    from birdbridge.data.species_list import load_species_list
    from birdbridge.retrieval.confidence import softmax
    from birdbridge.retrieval.detect import detect_audio

    species = load_species_list(rec / "species.csv")
    res = detect_audio(str(scaled_model), [rec / "dawn.wav"], species=species, k=len(species))[0]
    assert res.ok and res.detections
    for w in res.windows:
        rows = [d for d in res.detections if d.start_s == w.start_s]
        scores = np.array([d.score for d in rows])
        conf = np.array([d.confidence for d in rows])
        assert np.all((conf >= 0) & (conf <= 1)) and abs(conf.sum() - 1) < 1e-3
        assert np.allclose(conf, softmax(scores, SCALE), atol=1e-3)
        assert list(conf) == sorted(conf, reverse=True)  # rank order is confidence order


def test_detect_cli_tables_carry_confidence_and_the_mel_band(scaled_model, tiny_distilled_dir, rec, tmp_path):
    from transformers import ClapFeatureExtractor

    fe = ClapFeatureExtractor.from_dict(json.loads((scaled_model / "config.json").read_text())["preprocessing"])
    args = ["detect", rec / "dawn.wav", "--model", scaled_model, "--species-list", rec / "species.csv"]
    out = bb(*args, "-k", "5", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(io.StringIO(out.stdout)))
    assert rows and all(0 <= float(r["confidence"]) <= 1 for r in rows)
    assert "records no learned temperature" not in out.stderr  # this one records it
    # --min-confidence keeps only the rows at or above it
    cut = sorted(float(r["confidence"]) for r in rows)[len(rows) // 2]
    kept = list(csv.DictReader(io.StringIO(bb(*args, "-k", "5", "--min-confidence", cut, cwd=tmp_path).stdout)))
    assert 0 < len(kept) < len(rows) and all(float(r["confidence"]) >= cut - 1e-4 for r in kept)
    # Raven: Low/High Freq are the mel bank's range (frequency_min 50 Hz here), not 0 to Nyquist
    raven = bb(*args, "--format", "raven", cwd=tmp_path).stdout.splitlines()
    header = raven[0].split("\t")
    cells = dict(zip(header, raven[1].split("\t")))
    assert "Confidence" in header and 0 <= float(cells["Confidence"]) <= 1
    assert float(cells["Low Freq (Hz)"]) == float(fe.frequency_min) == 50.0
    assert float(cells["High Freq (Hz)"]) == float(min(fe.frequency_max, fe.sampling_rate / 2))
    kal = list(csv.DictReader(io.StringIO(bb(*args, "--format", "kaleidoscope", cwd=tmp_path).stdout)))
    assert {"confidence", "score"} <= set(kal[0]) and float(kal[0]["confidence"]) == pytest.approx(
        float(rows[0]["confidence"]), abs=1e-4)
    js = json.loads(bb(*args, "--format", "json", cwd=tmp_path).stdout)
    assert 0 <= js[0]["detections"][0]["confidence"] <= 1
    aud = bb(*args, "--format", "audacity", cwd=tmp_path).stdout.splitlines()
    assert "(score " in aud[0]
    pq = tmp_path / "t.parquet"
    bb(*args, "--format", "parquet", "--out", pq, cwd=tmp_path)
    import pyarrow.parquet as papq

    assert "confidence" in papq.read_table(pq).column_names
    # a deployment's per-recording and combined tables carry it too
    dep = bb(*args[:1], rec, *args[2:], "--out", tmp_path / "dep", cwd=tmp_path)
    assert dep.returncode == 0, dep.stderr
    assert "confidence" in (tmp_path / "dep" / "dawn.csv").read_text().splitlines()[0]
    # a checkpoint without a recorded scale says so once, and still gives confidences
    old = bb("detect", rec / "dawn.wav", "--model", tiny_distilled_dir, "--species-list", rec / "species.csv",
             cwd=tmp_path)
    assert old.returncode == 0 and old.stderr.count("records no learned temperature") == 1
    assert all(r["confidence"] for r in csv.DictReader(io.StringIO(old.stdout)))


def test_training_records_the_learned_scale_and_the_data(demo_run):
    out, _ = demo_run
    cfg = json.loads((out / "model" / "config.json").read_text())
    assert 1.0 <= cfg["logit_scale"] <= 100.0
    assert cfg["trained_on"] == {"dataset": "synthetic", "synthetic": True}


def test_search_hits_rows_and_guess_carry_confidence(demo_run, tmp_path):
    from birdbridge.data.synthetic import load_world

    out, _ = demo_run
    world = load_world(out / "world")
    clip = world.resolve(world.audio_split("test")[0].path)
    res = bb("search", clip, "--model", out / "model", "--index", out / "index", "--format", "json", "--guess-species",
             cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    r = json.loads(res.stdout)[0]
    confs = [h["confidence"] for h in r["hits"]]
    assert all(0 <= c <= 1 for c in confs) and confs[0] > 0.1
    g = r["species_guess"]
    assert all(0 <= s["confidence"] <= 1 for s in g) and g[0]["confidence"] >= g[-1]["confidence"]
    rows = list(csv.DictReader(io.StringIO(bb("search", clip, "--model", out / "model", "--index", out / "index",
                                              "--format", "csv", cwd=tmp_path).stdout)))
    assert rows and all(0 <= float(x["confidence"]) <= 1 for x in rows)
    few = json.loads(bb("search", clip, "--model", out / "model", "--index", out / "index", "--format", "json",
                        "--min-confidence", "0.5", cwd=tmp_path).stdout)[0]
    assert all(h["confidence"] >= 0.5 for h in few["hits"]) and len(few["hits"]) < len(r["hits"])
