"""Issue 16, point 8: ``birdbridge detect`` -- per-window species of long recordings, and its tables.

Tiny replicas of the real architectures (random weights): the scores mean nothing, but
they must be exactly what the method defines (cosine of each window's teacher-space
embedding with each species' teacher text embedding), and the tables must be what Raven
and Audacity read -- checked against their documented layout and with ``crowsetta``, a
maintained reader of both formats.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

BIN = Path(sys.executable).with_name("birdbridge")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
RAVEN_HEADER = ["Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)"]
# species nobody trained the tiny model on: detection is open-vocabulary, any name list works
SPECIES_CSV = ("scientific_name,common_name\nSayornis nigricans,Black Phoebe\nSpinus psaltria,Lesser Goldfinch\n"
               "Poecile rufescens,Chestnut-backed Chickadee\nStrix varia,Barred Owl\nZonotrichia leucophrys,White-crowned Sparrow\n")


def bb(*args, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    res = subprocess.run([str(BIN), *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr[-3000:]
    return res


def chirps(path: Path, seconds: float, sr: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = 0.2 * np.sin(2 * np.pi * (1500 + 800 * np.sin(2 * np.pi * 0.7 * t)) * t) + 0.01 * rng.normal(size=len(t))
    sf.write(path, x.astype(np.float32), sr)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("detect")
    chirps(d / "dawn.wav", 7.3, 22050)
    chirps(d / "dusk.flac", 3.0, 16000, seed=1)
    (d / "species.csv").write_text(SPECIES_CSV)
    return d


def test_scores_are_window_by_species_text_cosines(files, tiny_distilled_dir, tiny_open_clip_dir, tmp_path):
    from birdbridge.data.audio import load_audio
    from birdbridge.data.species_list import load_species_list
    from birdbridge.encoders.factory import load_audio_embedder
    from birdbridge.encoders.species_text import teacher_species_text
    from birdbridge.encoders.teacher import Teacher
    from birdbridge.retrieval.detect import detect_audio

    species = load_species_list(files / "species.csv")
    res = detect_audio(str(tiny_distilled_dir), [files / "dawn.wav", files / "nope.wav"], species=species, k=2,
                       cache_dir=tmp_path / "cache")
    assert [r.ok for r in res] == [True, False] and res[1].error == "missing"
    r = res[0]
    # 1 s windows, no overlap, the last aligned to the end: 0..6 and 6.3
    assert [(w.start_s, w.end_s) for w in r.windows] == [(float(i), float(i + 1)) for i in range(7)] + [(6.3, 7.3)]
    assert r.duration_s == pytest.approx(7.3) and len(r.detections) == 2 * len(r.windows)
    assert list((tmp_path / "cache").glob("text-*.safetensors")), "species texts go through the text cache"
    # independently: decode whole, embed each window, cosine with the teacher's prompts of the recorded recipe
    model = load_audio_embedder(str(tiny_distilled_dir))
    wave = load_audio(files / "dawn.wav", model.sample_rate)
    n = model.window_samples
    vecs = model.embed_windows([wave[int(round(w.start_s * model.sample_rate)):][:n] for w in r.windows])
    text = teacher_species_text(Teacher.load(str(tiny_open_clip_dir)), species, "taxonomic", "single").numpy()
    text /= np.linalg.norm(text, axis=1, keepdims=True)
    expected = vecs @ text.T
    for w in range(len(r.windows)):
        rows = [d for d in r.detections if d.start_s == r.windows[w].start_s]
        order = np.argsort(-expected[w])[:2]
        assert [d.scientific_name for d in rows] == [species[i].scientific_name for i in order]
        assert [d.score for d in rows] == pytest.approx(expected[w][order], abs=1e-4)
        assert [d.rank for d in rows] == [1, 2]
    # --min-score keeps only rows at or above it
    cut = float(np.median(expected.max(axis=1)))
    kept = detect_audio(model, [files / "dawn.wav"], species=species, k=2, min_score=cut, cache_dir=tmp_path / "cache")[0]
    assert kept.detections and all(d.score >= cut - 1e-6 for d in kept.detections)
    assert len(kept.detections) < len(r.detections)


def test_long_recordings_stream_and_are_never_decoded_whole(files, tiny_distilled_dir, tmp_path, monkeypatch):
    import birdbridge.data.audio as audio
    from birdbridge.data.species_list import load_species_list
    from birdbridge.retrieval.detect import detect_audio

    long = chirps(tmp_path / "night.wav", 95.0, 8000)

    def refuse(*a, **kw):
        raise AssertionError("load_audio decodes a whole file")

    monkeypatch.setattr(audio, "load_audio", refuse)
    r = detect_audio(str(tiny_distilled_dir), [long], species=load_species_list(files / "species.csv"), k=1,
                     hop_s=5.0, cache_dir=tmp_path / "cache")[0]
    assert r.ok, r.error_detail
    assert len(r.windows) == 20 and r.windows[-1].end_s == pytest.approx(95.0) and r.windows[-1].start_s == pytest.approx(94.0)


def test_detect_peak_memory_stays_flat_on_an_hour_long_file(files, tiny_distilled_dir, tmp_path):
    from badcorpus import write_long_sparse_wav

    long = write_long_sparse_wav(tmp_path / "night.wav", hours=1.0)

    def peak_mb(*inputs) -> float:
        probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
                 "sys.stderr.write(r.stderr); print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")
        res = subprocess.run([sys.executable, "-c", probe, str(BIN), "detect", *map(str, inputs), "--model",
                              str(tiny_distilled_dir), "--species-list", str(files / "species.csv"), "--hop-s", "60",
                              "--cache-dir", str(tmp_path / "cache"), "--out", str(tmp_path / f"{len(inputs)}.csv")],
                             env=ENV, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0 and "Traceback" not in res.stderr, res.stderr[-1500:]
        return int(res.stdout.split()[-1]) / 1024

    short_mb = peak_mb(files / "dusk.flac")
    long_mb = peak_mb(long, files / "dusk.flac")
    rows = list(csv.DictReader(open(tmp_path / "2.csv")))
    print(f"peak RSS: 3 s file {short_mb:.0f} MB, 1 h file {long_mb:.0f} MB")
    assert sum(r["recording"] == str(long) for r in rows) == 3 * 61  # windows at 0, 60, ..., 3540 and the end
    assert long_mb - short_mb < 150, f"an hour-long file cost {long_mb - short_mb:.0f} MB more than a 3 s one"


def test_cli_tables_csv_raven_audacity_json(files, tiny_distilled_dir, tmp_path):
    import crowsetta

    base = ["detect", files / "dawn.wav", files / "dusk.flac", "--model", tiny_distilled_dir, "--species-list",
            files / "species.csv", "--cache-dir", tmp_path / "cache", "-k", "2"]
    # CSV, to a file
    res = bb(*base, "--format", "csv", "--out", "det.csv", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(open(tmp_path / "det.csv")))
    assert list(rows[0]) == ["recording", "start_s", "end_s", "rank", "species_id", "scientific_name", "common_name",
                             "score", "confidence", "image", "start_time"]  # start_time: empty, the names hold no recorder timestamp
    assert all(0.0 <= float(r["confidence"]) <= 1.0 for r in rows)
    assert all(r["start_time"] == "" for r in rows)
    assert len(rows) == 2 * (8 + 3)  # dawn: 8 windows, dusk: 3; two species each
    assert {r["common_name"] for r in rows} <= {"Black Phoebe", "Lesser Goldfinch", "Chestnut-backed Chickadee",
                                                "Barred Owl", "White-crowned Sparrow"}

    # Raven selection table: tab-separated, the documented columns first, one selection per row
    res = bb(*base, "--format", "raven", "--out", "det.selections.txt", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = (tmp_path / "det.selections.txt").read_text().splitlines()
    header = lines[0].split("\t")
    assert header[:7] == RAVEN_HEADER and {"Species", "Common Name", "Score", "Begin File", "Begin Path",
                                           "File Offset (s)"} <= set(header)
    body = [dict(zip(header, ln.split("\t"))) for ln in lines[1:]]
    assert all(len(ln.split("\t")) == len(header) for ln in lines[1:])
    assert [int(b["Selection"]) for b in body] == list(range(1, len(body) + 1)) and len(body) == len(rows)
    assert all(b["View"] == "Spectrogram 1" and b["Channel"] == "1" for b in body)
    # the band the model hears: its feature extractor's mel range, capped at Nyquist
    fe = json.loads((Path(tiny_distilled_dir) / "config.json").read_text())["preprocessing"]  # 50-8000 Hz at 16 kHz
    band = (float(fe.get("frequency_min", 0)), min(float(fe["frequency_max"]), fe["sampling_rate"] / 2))
    assert all(float(b["Begin Time (s)"]) < float(b["End Time (s)"]) for b in body)
    assert {(float(b["Low Freq (Hz)"]), float(b["High Freq (Hz)"])) for b in body} == {band}
    dusk = [b for b in body if b["Begin File"] == "dusk.flac"]
    # the second file's selections run on after the first's 7.3 s, as Raven shows a file sequence
    assert float(dusk[0]["Begin Time (s)"]) == pytest.approx(7.3) and float(dusk[0]["File Offset (s)"]) == 0.0
    raven = crowsetta.formats.bbox.Raven.from_file(tmp_path / "det.selections.txt", annot_col="Species")
    bboxes = raven.to_bbox()
    assert len(bboxes) == len(body) and bboxes[0].label == body[0]["Species"]
    assert bboxes[-1].offset == pytest.approx(float(body[-1]["End Time (s)"]))

    # Audacity labels: one file per recording, start<TAB>end<TAB>label, no header
    res = bb(*base, "--format", "audacity", "--out", "labels", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    # a folder of per-recording labels (a deployment: its journal and detect.json beside them)
    assert sorted(p.name for p in (tmp_path / "labels").glob("*.txt")) == ["dawn.txt", "dusk.txt"]
    assert (tmp_path / "labels" / "detect.json").is_file()
    dawn = (tmp_path / "labels" / "dawn.txt").read_text().splitlines()
    assert len(dawn) == 16 and all(len(ln.split("\t")) == 3 for ln in dawn)
    assert all(float(ln.split("\t")[0]) < float(ln.split("\t")[1]) for ln in dawn)
    seq = crowsetta.formats.seq.AudSeq.from_file(tmp_path / "labels" / "dawn.txt")
    assert len(seq.labels) == 16 and seq.end_times[-1] == pytest.approx(7.3)
    assert seq.labels[0].split(" (")[0] in {"Black Phoebe", "Lesser Goldfinch", "Chestnut-backed Chickadee", "Barred Owl",
                                            "White-crowned Sparrow"}
    one = bb(*base[:2], *base[3:], "--format", "audacity", cwd=tmp_path)  # one recording: to stdout
    assert one.returncode == 0 and one.stdout.splitlines() == dawn

    # JSON: the documented detect schema
    res = bb(*base, "--format", "json", "--min-score", "2", cwd=tmp_path)  # no cosine reaches 2
    data = json.loads(res.stdout)
    assert res.returncode == 0 and [d["schema"] for d in data] == ["birdbridge.detect/1"] * 2
    assert len(data[0]["windows"]) == 8 and all(d["detections"] == [] for d in data)


def test_detect_errors_are_one_line_and_come_first(files, tiny_distilled_dir, tiny_clap_dir, tmp_path):
    res = bb("detect", files / "dawn.wav", "--model", tiny_distilled_dir, cwd=tmp_path)
    assert res.returncode == 2 and "--species-list" in res.stderr and "--index" in res.stderr
    res = bb("detect", "dawn.wav", "--model", tiny_distilled_dir, "--species-list", files / "species.csv", cwd=tmp_path)
    assert res.returncode == 2 and "no such file: dawn.wav" in res.stderr
    res = bb("detect", files / "dawn.wav", "--model", tiny_distilled_dir, "--species-list", files / "species.csv",
             "--format", "xls", cwd=tmp_path)
    assert res.returncode == 2 and "--format must be one of csv, raven, audacity, json" in " ".join(res.stderr.split())
    res = bb("detect", files / "dawn.wav", "--model", tiny_clap_dir, "--species-list", files / "species.csv", cwd=tmp_path)
    assert res.returncode == 2 and "distilled" in res.stderr  # a plain CLAP has no teacher space


def test_detect_with_an_index_uses_its_species_and_search_writes_the_same_table(files, tiny_distilled_dir,
                                                                                  tiny_open_clip_dir, tmp_path):
    from PIL import Image

    from birdbridge.encoders.teacher import Teacher
    from birdbridge.retrieval.index import ImageIndex, records_from_source

    rng = np.random.default_rng(0)
    for sp in ("Sayornis_nigricans", "Spinus_psaltria"):
        (tmp_path / "photos" / sp).mkdir(parents=True)
        for j in range(2):
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(tmp_path / "photos" / sp / f"{j}.png")
    ImageIndex.build(tmp_path / "index", Teacher.load(str(tiny_open_clip_dir)), records_from_source(tmp_path / "photos"))
    res = bb("detect", files / "dusk.flac", "--model", tiny_distilled_dir, "--index", "index", "-k", "5",
             "--cache-dir", "cache", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = list(csv.DictReader(res.stdout.splitlines()))
    assert {r["scientific_name"] for r in rows} == {"Sayornis nigricans", "Spinus psaltria"} and len(rows) == 2 * 3
    # search --format csv|raven: the same table, its rows from the photos (each with its best photo)
    s = bb("search", files / "dusk.flac", "--model", tiny_distilled_dir, "--index", "index", "-k", "2", "--format",
           "csv", "--out", "search.csv", cwd=tmp_path)
    assert s.returncode == 0, s.stderr
    srows = list(csv.DictReader(open(tmp_path / "search.csv")))
    assert list(srows[0]) == list(rows[0]) and all(Path(r["image"]).is_file() for r in srows)
    assert {r["scientific_name"] for r in srows} == {"Sayornis nigricans", "Spinus psaltria"}
    assert len(srows) == 2 * 5  # dusk (3 s), search windows of 1 s every 0.5 s: 5 windows, 2 species each
    s = bb("search", files / "dusk.flac", "--model", tiny_distilled_dir, "--index", "index", "-k", "2", "--format",
           "raven", "--out", "search.selections.txt", cwd=tmp_path)
    assert s.returncode == 0, s.stderr
    header = (tmp_path / "search.selections.txt").read_text().splitlines()[0].split("\t")
    assert header[:7] == RAVEN_HEADER and "Image" in header
