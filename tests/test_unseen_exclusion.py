"""Issue 20, item 4: the unseen split cannot leak. A held-out species found in no training
species is refused unless allowed; eval writes its held-out list, and `data prepare
--exclude-species` / the train config's `data.exclude_species` train without those species."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from birdbridge.config import from_dict
from birdbridge.errors import ConfigError

BIN = Path(sys.executable).with_name("birdbridge")


def _datasets_with_an_unknown_duck(tmp_path: Path, allow: bool):
    """The SSW60/iNatSounds pair of test_unseen_reconcile, the held-out duck renamed out of reach in iNat."""
    from birdbridge.data.ssw60 import load_ssw60
    from birdbridge.evaluate.eval_config import EvalConfig
    from birdbridge.evaluate.phases import unseen_split
    from test_unseen_reconcile import _datasets

    spec = _datasets(tmp_path)
    spec["unseen"]["allow_unmatched"] = allow
    cfg = from_dict(EvalConfig, spec)
    by_id = load_ssw60(tmp_path / "ssw60").species_by_id
    duck = next(by_id[i] for i in unseen_split(list(by_id.values()), cfg.unseen)[1] if by_id[i].genus == "Anas")
    js = Path(spec["train_data"]["path"])
    doc = json.loads(js.read_text())
    for c in doc["categories"]:
        if c["name"] == duck.scientific_name:  # no taxon id, no shared name: no bridge finds it
            c.update(name="Anas incognita", common_name="Unknown Duck", specific_epithet="incognita")
            c.pop("taxon_id")
    js.write_text(json.dumps(doc))
    return cfg, duck


def test_a_held_out_species_found_nowhere_in_training_is_refused(tmp_path):
    from birdbridge.evaluate.runner import run_eval

    cfg, duck = _datasets_with_an_unknown_duck(tmp_path, allow=False)
    with pytest.raises(ConfigError) as err:
        run_eval(cfg, tmp_path / "out", log=lambda m: None)
    msg = str(err.value)
    assert "\n" not in msg and f"{duck.id} ({duck.scientific_name})" in msg and "unseen.allow_unmatched: true" in msg
    assert not (tmp_path / "out" / "results.json").exists()


def test_allowed_unmatched_species_are_listed_and_written(tmp_path):
    from birdbridge.data.species_list import read_species_list
    from birdbridge.evaluate.phases import held_out_rows, hold_out
    from birdbridge.evaluate.setting import prepare_setting
    from birdbridge.evaluate.write import write_species_csv

    cfg, duck = _datasets_with_an_unknown_duck(tmp_path, allow=True)
    setting = prepare_setting(cfg, tmp_path / "work", log=lambda m: None)
    held = hold_out(cfg, setting)
    assert held.reconciliation.unmatched == [duck.id] and held.reconciliation.summary()["unmatched"] == [duck.id]
    rows = held_out_rows(held, setting)
    assert [r["species_id"] for r in rows] == sorted(held.reconciliation.removed_train_ids) + [""]
    assert len(rows) == 2 and rows[-1]["scientific_name"] == duck.scientific_name  # found nowhere: its own name
    entries = read_species_list(write_species_csv(tmp_path / "list.csv", rows, "a comment\nover two lines"))
    assert [e.scientific_name for e in entries] == [r["scientific_name"] for r in rows]


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    from birdbridge.data.synthetic import SyntheticWorld

    root = tmp_path_factory.mktemp("exclusion_world")
    SyntheticWorld(1, n_orders=1, n_families=2, n_genera=2, n_species=2).write(
        root, audio_per_species={"train": 2}, images_per_species={})
    return root


def _species(world: Path) -> list[dict]:
    with open(world / "world.csv") as fh:
        return list({r["species_id"]: r for r in csv.DictReader(fh)}.values())


def _exclusion_file(world: Path, tmp: Path) -> tuple[Path, set[str]]:
    sp = _species(world)
    path = tmp / "exclude.txt"  # one species per line, three ways, and one name matching nothing
    path.write_text(f"# held out\n{sp[0]['scientific_name']}\n{sp[1]['scientific_name']}_{sp[1]['common_name']}\n"
                    f"{sp[2]['common_name']}\nNonexistens avis\n")
    return path, {sp[0]["species_id"], sp[1]["species_id"], sp[2]["species_id"]}


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "COLUMNS": "1000", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run([str(BIN), *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)


def test_data_prepare_exclude_species_leaves_them_out(world, tmp_path):
    excl, ids = _exclusion_file(world, tmp_path)
    res = _run(["data", "prepare", "csv", str(world / "world.csv"), "--out", str(tmp_path / "shards"), "--workers", "1",
                "--exclude-species", str(excl)], tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    out = res.stdout + res.stderr  # the summary goes where the console writes
    assert f"left out 6 recordings of 3 species listed in {excl}; 1 of its 4 entries match no species" in out, out
    assert "Nonexistens avis" in out
    m = json.loads((tmp_path / "shards" / "birdbridge.json").read_text())
    assert m["n_samples"] == 16 - 6 and m["n_inputs"] == 10
    assert not ids & {s["id"] for s in m["species"]} and len(m["species"]) == 5
    assert set(m["excluded"]["excluded_species"]) == ids and m["excluded"]["n_recordings_excluded"] == 6
    import pyarrow.parquet as pq

    assert not ids & set(pq.read_table(tmp_path / "shards" / "samples.parquet").column("species_id").to_pylist())
    # the same shards without the list are another job, not "already complete"
    res = _run(["data", "prepare", "csv", str(world / "world.csv"), "--out", str(tmp_path / "shards"), "--workers", "1"],
               tmp_path)
    assert res.returncode == 2 and "another dataset or options" in res.stderr


def test_train_config_exclude_species_trains_without_them(world, tmp_path, tiny_clap_dir, tiny_open_clip_dir):
    from birdbridge.evaluate.models import given_model

    excl, ids = _exclusion_file(world, tmp_path)
    cfg = {"data": {"kind": "csv", "path": str(world / "world.csv"), "exclude_species": excl.name},  # relative to the config
           "train": {"student": str(tiny_clap_dir), "teacher": str(tiny_open_clip_dir), "cache_dir": str(tmp_path / "cache"),
                     "batch_size": 4, "max_epochs": 1, "num_workers": 0, "progress": False, "accelerator": "cpu",
                     "devices": 1, "val_split": "none"}}
    (tmp_path / "train.yaml").write_text(yaml.safe_dump(cfg))
    run_dir = tmp_path / "elsewhere"
    run_dir.mkdir()
    res = _run(["train", str(tmp_path / "train.yaml"), "--out", str(tmp_path / "run")], run_dir)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "left out 6 recordings of 3 species" in res.stdout + res.stderr
    saved = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert len(saved["train_species"]) == 5 and not ids & set(saved["train_species"])
    # handed back as unseen.distilled_model: it passes the held-out check for exactly those species
    from birdbridge.encoders.student import DistilledModel

    dim = DistilledModel.from_pretrained(str(tmp_path / "run" / "model")).dim
    given_model(str(tmp_path / "run" / "model"), "unseen.distilled_model", dim, forbidden=ids)
    kept = next(s["species_id"] for s in _species(world) if s["species_id"] not in ids)
    with pytest.raises(ConfigError, match="trained on 1 held-out species"):
        given_model(str(tmp_path / "run" / "model"), "unseen.distilled_model", dim, forbidden={kept})
