"""``inspect_dataset`` / ``birdbridge inspect`` on replicas and on the real iNatSounds test JSON."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image
from typer.testing import CliRunner

from birdbridge.cli import app
from birdbridge.data.inspect import format_inspect, inspect_dataset

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
NO_SHARED = "../shared/data is absent (real data for tests); see shared/data/README.md"


def write_csv(path: Path, header: list[str], rows: list[list]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def tone(path: Path, dur: float, sr: int = 16000, amp: float = 0.3) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(dur * sr)) / sr
    sf.write(path, (amp * np.sin(2 * np.pi * 1500 * t)).astype(np.float32), sr)
    return path


def mini_inat(d: Path) -> Path:
    cats = [
        {"id": 1, "name": "Turdus migratorius", "common_name": "American Robin", "class": "Aves", "kingdom": "Animalia", "phylum": "Chordata",
         "order": "Passeriformes", "family": "Turdidae", "genus": "Turdus", "specific_epithet": "migratorius", "supercategory": "Aves",
         "audio_dir_name": "00001_robin", "evaluation": 1},
        {"id": 2, "name": "Gryllus pennsylvanicus", "common_name": "Fall Field Cricket", "class": "Insecta", "kingdom": "Animalia",
         "phylum": "Arthropoda", "order": "Orthoptera", "family": "Gryllidae", "genus": "Gryllus", "specific_epithet": "pennsylvanicus",
         "supercategory": "Insecta", "audio_dir_name": "00002_cricket", "evaluation": 0},
    ]
    audio = [{"id": i, "file_name": f"test/{'00001_robin' if i < 4 else '00002_cricket'}/{i}.wav", "duration": float(i)} for i in range(1, 6)]
    ann = [{"id": i, "audio_id": i, "category_id": 1 if i < 4 else 2} for i in range(1, 6)]
    p = d / "test.json"
    p.write_text(json.dumps({"info": {}, "categories": cats, "audio": audio, "annotations": ann, "licenses": []}))
    return p


def test_annotation_only(tmp_path):
    r = inspect_dataset("inat_sounds", mini_inat(tmp_path))
    assert (r["n_recordings"], r["n_species"], r["n_bird_species"], r["n_evaluation_species"]) == (5, 2, 1, 1)
    assert r["species_per_class"] == {"Aves": 1, "Insecta": 1} and r["recordings_per_class"] == {"Aves": 3, "Insecta": 2}
    assert r["durations"] == {"source": "metadata", "n": 5, "total_s": 15.0, "mean_s": 3.0, "median_s": 3.0, "min_s": 1.0, "max_s": 5.0}
    assert r["media"]["checked"] is False and r["media"]["n_missing"] == 5 and "annotation-only" in r["media"]["note"]
    assert r["bad_files"]["n"] == 0  # absent media is not a list of 5 errors
    json.dumps(r)  # JSON-ready
    text = format_inspect(r)
    assert "evaluation species" in text and "not checked" in text


def test_partial_media_missing_and_bad(tmp_path):
    p = mini_inat(tmp_path)
    tone(tmp_path / "test" / "00001_robin" / "1.wav", 1.0)
    tone(tmp_path / "test" / "00001_robin" / "2.wav", 1.0)
    (tmp_path / "test" / "00002_cricket").mkdir(parents=True)
    (tmp_path / "test" / "00002_cricket" / "4.wav").write_text("not audio")
    r = inspect_dataset("inat_sounds", p)
    m = r["media"]
    assert m["checked"] and (m["n_present"], m["n_missing"], m["n_bad"], m["n_checked"]) == (3, 2, 1, 3)
    assert r["bad_files"]["counts"] == {"missing": 2, "unreadable": 1}
    assert {e["input"] for e in r["bad_files"]["examples"] if e["reason"] == "missing"} == {"test/00001_robin/3.wav", "test/00002_cricket/5.wav"}
    assert inspect_dataset("inat_sounds", p, max_files=1)["media"]["n_checked"] == 1
    assert inspect_dataset("inat_sounds", p, check_media=False)["media"]["checked"] is False


def test_csv_durations_from_headers_and_deep_check(tmp_path):
    tone(tmp_path / "a.wav", 2.0)
    tone(tmp_path / "b.wav", 4.0)
    tone(tmp_path / "quiet.wav", 1.0, amp=0.0)
    Image.new("RGB", (20, 20)).save(tmp_path / "a.png")
    write_csv(tmp_path / "d.csv", ["path", "scientific_name", "split"], [
        ["a.wav", "Turdus migratorius", "train"], ["b.wav", "Turdus migratorius", "test"],
        ["quiet.wav", "Spinus psaltria", "train"], ["a.png", "Spinus psaltria", "train"],
    ])
    r = inspect_dataset("csv", tmp_path / "d.csv")
    assert r["n_recordings"] == 3 and r["n_images"] == 1 and r["splits"]["audio"] == {"train": 2, "test": 1}
    assert r["durations"]["source"] == "audio_info" and r["durations"]["total_s"] == 7.0
    assert r["bad_files"]["n"] == 0  # header checks do not decode
    deep = inspect_dataset("csv", tmp_path / "d.csv", deep=True)
    assert deep["bad_files"]["counts"] == {"silent": 1}
    assert "1 bad of 4 checked" in format_inspect(deep)


def test_soundscape_report(tmp_path):
    write_csv(tmp_path / "taxonomy.csv", ["species_code", "scientific_name", "common_name"], [["amerob", "Turdus migratorius", "American Robin"]])
    write_csv(tmp_path / "annotations.csv", ["Filename", "Start Time (s)", "End Time (s)", "Species eBird Code"], [
        ["s.wav", 0, 1.5, "amerob"], ["s.wav", 3, 4, "amerob"], ["s.wav", 5, 6, "xxxx"],
    ])
    tone(tmp_path / "s.wav", 10.0, sr=8000)
    r = inspect_dataset("soundscape", tmp_path / "annotations.csv")
    assert (r["n_files"], r["n_events"], r["unknown_codes"], r["n_recordings"]) == (1, 3, {"xxxx": 1}, 2)
    assert r["durations"]["total_s"] == 2.5  # event durations
    assert r["media"]["n_files"] == 1 and r["media"]["n_present"] == 1
    assert r["loader_skips"]["counts"] == {"unknown_code": 1}


def test_phoebe():
    if not (SHARED / "phoebe").is_dir():
        pytest.skip(NO_SHARED)
    r = inspect_dataset("csv", SHARED / "phoebe" / "recordings.csv")
    assert (r["n_recordings"], r["n_species"], r["media"]["n_present"], r["bad_files"]["n"]) == (70, 7, 70, 0)
    assert r["durations"]["mean_s"] == pytest.approx(6.0, abs=0.05)
    r = inspect_dataset("csv", SHARED / "phoebe" / "images.csv", kind="images")
    assert (r["n_images"], r["n_species"], r["bad_files"]["n"]) == (7, 7, 0)


def test_real_inat_test_json():
    p = SHARED / "inat_sounds" / "test.json"
    if not p.is_file():
        pytest.skip(NO_SHARED)
    t0 = time.perf_counter()
    r = inspect_dataset("inat_sounds", p)
    dt = time.perf_counter() - t0
    print(f"inspect on the real iNatSounds test.json: {dt:.2f} s")
    assert (r["n_recordings"], r["n_species"], r["n_bird_species"], r["n_evaluation_species"]) == (49527, 5569, 3846, 1212)
    assert r["durations"]["max_s"] == pytest.approx(1271.6, abs=1) and r["media"]["checked"] is False
    assert dt < 15  # about 1 s alone; loose because CPUs are shared


def test_cli_inspect(tmp_path):
    p = mini_inat(tmp_path)
    runner = CliRunner()
    res = runner.invoke(app, ["inspect", "inat_sounds", str(p), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["n_recordings"] == 5
    res = runner.invoke(app, ["inspect", "inat_sounds", str(p), "--no-media"])
    assert res.exit_code == 0 and "recordings" in res.output and "not checked" in res.output
    write_csv(tmp_path / "i.csv", ["path", "scientific_name"], [["x.bin", "Turdus migratorius"]])
    res = runner.invoke(app, ["inspect", "csv", str(tmp_path / "i.csv"), "--media", "images", "--json"])
    assert res.exit_code == 0 and json.loads(res.output)["n_images"] == 1
