"""Issue 16, point 6: no silent no-ops or misleading summaries on day one.

Every check runs the real console script in a subprocess from a directory other than the
repository, as a user would, on tiny replicas of the real models (random weights: the
answers mean nothing here, only what the commands do with them).
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
from PIL import Image

BIN = Path(sys.executable).with_name("birdbridge")
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
SPECIES = ["Sayornis nigricans", "Spinus psaltria", "Poecile rufescens"]


def bb(*args, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    res = subprocess.run([str(BIN), *map(str, args)], cwd=cwd, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout, res.stderr[-3000:]
    return res


def one_line(text: str) -> str:
    return " ".join(text.split())


def tone(path: Path, seconds: float, freq: float, sr: int = 16000) -> Path:
    t = np.arange(int(seconds * sr)) / sr
    sf.write(path, (0.3 * np.sin(2 * np.pi * freq * t) * np.sin(np.pi * t / seconds)).astype(np.float32), sr)
    return path


def photo(path: Path, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(path)
    return path


@pytest.fixture(scope="module")
def field(tmp_path_factory) -> Path:
    """Recordings, photos in species folders, loose photos, and a CSV of the photos."""
    d = tmp_path_factory.mktemp("field")
    (d / "rec").mkdir()
    for i, f in enumerate((900, 2100, 3300)):
        tone(d / "rec" / f"r{i}.wav", 2.5, f)
    for i, sp in enumerate(SPECIES):
        (d / "photos" / sp.replace(" ", "_")).mkdir(parents=True)
        for j in range(2):
            photo(d / "photos" / sp.replace(" ", "_") / f"{j}.png", 10 * i + j)
    (d / "loose").mkdir()
    for j in range(3):
        photo(d / "loose" / f"p{j}.png", 100 + j)
    with open(d / "photos.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "scientific_name", "common_name"])
        for sp in SPECIES:
            for j in range(2):
                w.writerow([f"photos/{sp.replace(' ', '_')}/{j}.png", sp, ""])
    return d


@pytest.fixture(scope="module")
def index_dir(field, tiny_open_clip_dir, tmp_path_factory) -> Path:
    from birdbridge.encoders.teacher import Teacher
    from birdbridge.retrieval.index import ImageIndex, records_from_source

    root = tmp_path_factory.mktemp("idx") / "index"
    ImageIndex.build(root, Teacher.load(str(tiny_open_clip_dir)), records_from_source(field / "photos"))
    return root


def test_search_table_out_writes_the_file(field, index_dir, tiny_distilled_dir, tmp_path):
    res = bb("search", field / "rec" / "r0.wav", field / "rec" / "r1.wav", "--model", tiny_distilled_dir,
             "--index", index_dir, "-k", "3", "--format", "table", "--out", "hits.txt", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    text = (tmp_path / "hits.txt").read_text()
    assert "r0.wav" in text and "r1.wav" in text and "score" in text
    assert text.count("Sayornis") + text.count("Spinus") + text.count("Poecile") >= 6  # 3 hits x 2 recordings
    assert "r0.wav" not in res.stdout, "with --out the table goes to the file, not the terminal"


def test_a_missing_input_fails_before_the_model_loads_and_writes_nothing(field, index_dir, tiny_clap_dir,
                                                                          tiny_distilled_dir, tiny_open_clip_dir, tmp_path):
    (tmp_path / "rec").mkdir()
    tone(tmp_path / "rec" / "dawn01.wav", 1.0, 1000)
    # a model that cannot load: had it been loaded first, its error would be the one shown
    res = bb("embed-audio", "rec/dawn01.wav", "rec/dawn10.wav", "--model", tmp_path / "no-model-here",
             "--out", "emb.npy", cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    err = one_line(res.stderr)
    assert "no such file: rec/dawn10.wav" in err and "did you mean rec/dawn01.wav" in err, err
    assert not list(tmp_path.glob("emb*")), "nothing may be written"
    res = bb("embed-audio", "rec/dawn10.wav", "--model", tiny_clap_dir, "--out", "emb.npy", cwd=tmp_path)
    assert res.returncode == 2 and not list(tmp_path.glob("emb*"))
    res = bb("embed-images", "nowhere.png", "--teacher", tiny_open_clip_dir, "--out", "img.npy", cwd=tmp_path)
    assert res.returncode == 2 and "no such file: nowhere.png" in one_line(res.stderr) and not list(tmp_path.glob("img*"))
    res = bb("search", "rec/dawn10.wav", "--model", tiny_distilled_dir, "--index", index_dir, "--format", "json",
             "--out", "hits.json", cwd=tmp_path)
    assert res.returncode == 2 and "no such file" in res.stderr and not (tmp_path / "hits.json").exists()
    # a CSV of photos none of which exists (wrong folder): one line, no index directory
    (tmp_path / "moved.csv").write_text("path,scientific_name\nphotos/a.png,Sayornis nigricans\nphotos/b.png,Spinus psaltria\n")
    res = bb("index", "moved.csv", "--teacher", tiny_open_clip_dir, "--out", "idx", cwd=tmp_path)
    assert res.returncode == 2 and "none of the 2 image files listed exists" in one_line(res.stderr), res.stderr
    assert not (tmp_path / "idx").exists()


def test_inspect_folder_counts_what_embed_finds_and_no_media_folder_is_a_species(phoebe, tiny_clap_dir, tmp_path):
    whole = json.loads(bb("inspect", "folder", phoebe, "--json", "--no-media", cwd=tmp_path).stdout)
    # its photos are named Sayornis_nigricans.jpg ...: each gets its species from the file name (issue 25)
    assert (whole["n_recordings"], whole["n_images"], whole["n_species"]) == (70, 7, 7), whole
    assert whole["n_without_species"] == {"audio": 70, "images": 0} and whole["n_species_from_file_name"] == 7
    assert "recordings.csv" in whole["species_note"]  # the way to get the species
    res = bb("inspect", "folder", phoebe / "audio", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    text = res.stdout
    assert "recordings 70" in one_line(text) and "70 recordings have no species" in one_line(text)
    assert "audio" not in [s for s in whole.get("species_per_class", {})]
    # embed-audio finds the same 70 recordings in the same folder
    emb = bb("embed-audio", phoebe / "audio", "--model", tiny_clap_dir, "--out", "phoebe.npy", cwd=tmp_path)
    assert emb.returncode == 0, emb.stderr
    assert json.loads((tmp_path / "phoebe.json").read_text())["n_rows"] == 70


def test_inspect_items_per_species_counts_only_species_with_items(tmp_path):
    cats = [{"id": i, "name": name, "class": "Aves", "common_name": name} for i, name in
            enumerate(["Turdus migratorius", "Sayornis nigricans", "Spinus psaltria", "Poecile rufescens"], start=1)]
    audio = [{"id": i, "file_name": f"{i}.wav", "duration": 5.0} for i in range(1, 7)]
    ann = [{"id": i, "audio_id": i, "category_id": 1 if i <= 4 else 2} for i in range(1, 7)]  # species 3 and 4: none
    (tmp_path / "test.json").write_text(json.dumps({"info": {}, "categories": cats, "audio": audio, "annotations": ann,
                                                     "licenses": []}))
    res = bb("inspect", "inat_sounds", "test.json", "--no-media", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "min 2, median 3.0, max 4" in res.stdout and "species without items 2" in one_line(res.stdout), res.stdout
    report = json.loads(bb("inspect", "inat_sounds", "test.json", "--no-media", "--json", cwd=tmp_path).stdout)
    assert report["items_per_species"] == {"min": 2, "median": 3.0, "max": 4} and report["n_species_without_items"] == 2


def test_train_without_a_split_column_says_how_to_fix_it(tiny_clap_dir, tiny_open_clip_dir, tmp_path):
    import yaml

    for i, f in enumerate((900, 2100, 3300, 4000)):
        tone(tmp_path / f"r{i}.wav", 1.5, f)
    (tmp_path / "clips.csv").write_text("path,scientific_name\n" + "".join(
        f"r{i}.wav,{SPECIES[i % 3]}\n" for i in range(4)))
    cfg = {"data": {"kind": "csv", "path": "clips.csv"},
           "train": {"student": str(tiny_clap_dir), "teacher": str(tmp_path / "teacher-not-needed-yet"),
                     "cache_dir": str(tmp_path / "cache"), "batch_size": 2, "max_epochs": 1, "num_workers": 0,
                     "progress": False, "accelerator": "cpu", "devices": 1}}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg))
    res = bb("train", "train.yaml", "--out", "run", cwd=tmp_path)
    err = one_line(res.stderr)
    assert res.returncode == 2 and "no_training_audio" in err, res.stderr
    assert "add a `split` column" in err and "train_split" in err, err
    assert not (tmp_path / "run").exists(), "the data is checked before any model loads or output is written"


def test_index_rerun_on_a_changed_csv_updates_the_metadata(field, tiny_open_clip_dir, tmp_path):
    from birdbridge.retrieval.index import ImageIndex

    rows = list(csv.reader(open(field / "photos.csv")))
    table = tmp_path / "photos.csv"

    def write(rows):
        with open(table, "w", newline="") as fh:
            csv.writer(fh).writerows([[str(field / r[0]) if i else r[0], *r[1:]] for i, r in enumerate(rows)])

    write(rows)
    res = bb("index", table, "--teacher", tiny_open_clip_dir, "--out", "idx", cwd=tmp_path)
    assert res.returncode == 0 and "6 images (6 new)" in one_line(res.stderr), res.stderr
    # a corrected species and common names added afterwards
    fixed = [rows[0]] + [[r[0], "Sayornis saya" if i == 1 else r[1], f"name {i}"] for i, r in enumerate(rows[1:], start=1)]
    write(fixed)
    res = bb("index", table, "--teacher", tiny_open_clip_dir, "--out", "idx", cwd=tmp_path)
    assert res.returncode == 0 and "0 new, metadata of 6 updated" in one_line(res.stderr), res.stderr
    index = ImageIndex.open(tmp_path / "idx")
    meta = index.metadata(range(index.count))
    # a species' common name is its first row's (load_csv), so photos 3 and 4 are both "name 3"
    assert index.count == 6 and sorted(m["common_name"] for m in meta) == ["name 1", "name 2", "name 3", "name 3",
                                                                            "name 5", "name 5"]
    assert sum(m["scientific_name"] == "Sayornis saya" for m in meta) == 1
    assert "Sayornis saya" in {s.scientific_name for s in index.species()}
    res = bb("index", table, "--teacher", tiny_open_clip_dir, "--out", "idx", cwd=tmp_path)
    assert res.returncode == 0 and "every image was indexed already, with the same metadata" in one_line(res.stderr)
    write(rows)  # back again: a second update; the file of the first is kept, the original removed
    res = bb("index", table, "--teacher", tiny_open_clip_dir, "--out", "idx", cwd=tmp_path)
    assert "metadata of 6 updated" in one_line(res.stderr)
    assert sorted(p.name for p in (tmp_path / "idx" / "shards").glob("*.parquet")) == [
        "shard-00000.meta1.parquet", "shard-00000.meta2.parquet"]
    assert {m["common_name"] for m in ImageIndex.open(tmp_path / "idx").metadata(range(6))} == {""}


def test_loose_photos_warn_that_the_index_has_no_names_and_guess_names_species_list(field, tiny_open_clip_dir,
                                                                                    tiny_distilled_dir, tmp_path):
    res = bb("index", field / "loose", "--teacher", tiny_open_clip_dir, "--out", "loose-idx", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    err = one_line(res.stderr)
    assert "warning: none of the 3 photos has a species name" in err and "--species-list" in err, err
    assert "path,scientific_name" in err  # how to add them
    res = bb("search", field / "rec" / "r0.wav", "--model", tiny_distilled_dir, "--index", "loose-idx",
             "--guess-species", cwd=tmp_path)
    assert res.returncode == 2 and "--species-list" in one_line(res.stderr), res.stderr
    named = bb("index", field / "photos", "--teacher", tiny_open_clip_dir, "--out", "named-idx", cwd=tmp_path)
    assert named.returncode == 0 and "warning" not in named.stderr
