"""Soundscape label space: the dataset's own classes, never the whole eBird taxonomy.

BirdSet scores soundscapes over each dataset's class list. Scoring over all ~17k rows of
the eBird taxonomy (spuhs, slashes, hybrids, subspecies groups included) would make
zero-shot top-1 and the zero-shot-combination softmax pick among thousands of candidates
that are not in the data. The taxonomy here has the official v2024 CSV's columns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from birdbridge.data.soundscapes import load_soundscape_annotations, load_taxonomy, read_class_list, soundscape_segments
from birdbridge.errors import ConfigError
from dataset_mirror import write_csv

EBIRD_COLUMNS = ["TAXON_ORDER", "CATEGORY", "SPECIES_CODE", "TAXON_CONCEPT_ID", "PRIMARY_COM_NAME", "SCI_NAME", "ORDER",
                 "FAMILY", "SPECIES_GROUP", "REPORT_AS"]
EBIRD_ROWS = [
    [1, "species", "amerob", "avibase-1", "American Robin", "Turdus migratorius", "Passeriformes", "Turdidae (Thrushes and Allies)", "Thrushes", ""],
    [2, "species", "norcar", "avibase-2", "Northern Cardinal", "Cardinalis cardinalis", "Passeriformes", "Cardinalidae (Cardinals and Allies)", "Cardinals", ""],
    [3, "species", "blujay", "avibase-3", "Blue Jay", "Cyanocitta cristata", "Passeriformes", "Corvidae (Crows, Jays, and Magpies)", "Jays", ""],
    [4, "species", "yerwar", "avibase-4", "Yellow-rumped Warbler", "Setophaga coronata", "Passeriformes", "Parulidae (New World Warblers)", "Warblers", ""],
    [5, "issf", "myrwar", "avibase-5", "Yellow-rumped Warbler (Myrtle)", "Setophaga coronata coronata", "Passeriformes", "Parulidae (New World Warblers)", "", "yerwar"],
    [6, "spuh", "warble", "avibase-6", "warbler sp.", "Parulidae sp.", "Passeriformes", "Parulidae (New World Warblers)", "", ""],
    [7, "slash", "y00001", "avibase-7", "Blue Jay/Northern Cardinal", "Cyanocitta cristata/Cardinalis cardinalis", "Passeriformes", "", "", ""],
    [8, "hybrid", "x00001", "avibase-8", "Robin x Cardinal (hybrid)", "Turdus migratorius x Cardinalis cardinalis", "Passeriformes", "", "", ""],
]


@pytest.fixture()
def soundscapes(tmp_path) -> tuple[Path, Path]:
    tax = write_csv(tmp_path / "eBird_taxonomy_v2024.csv", EBIRD_COLUMNS, EBIRD_ROWS)
    (tmp_path / "soundscape_data").mkdir()
    sf.write(tmp_path / "soundscape_data" / "a.flac", np.zeros(8000 * 12, np.float32), 8000, format="FLAC")
    ann = write_csv(tmp_path / "annotations.csv", ["Filename", "Start Time (s)", "End Time (s)", "Species eBird Code"], [
        ["a.flac", 1.0, 2.0, "amerob"],
        ["a.flac", 3.0, 4.0, "myrwar"],  # a subspecies group: counts for its species, yerwar
        ["a.flac", 6.0, 7.0, "warble"],  # warbler sp.: no species, not a class
        ["a.flac", 8.0, 9.0, "amerob"],
    ])
    return ann, tax


def test_taxonomy_keeps_species_rows_and_maps_subspecies_groups(soundscapes):
    _, tax = soundscapes
    taxa = load_taxonomy(tax)
    assert sorted({sp.id for sp in taxa.values()}) == ["amerob", "blujay", "norcar", "yerwar"]
    assert set(taxa) == {"amerob", "blujay", "norcar", "yerwar", "myrwar"}
    assert taxa["myrwar"] is taxa["yerwar"] and taxa["yerwar"].order == "Passeriformes" and taxa["yerwar"].family == "Parulidae"


def test_label_space_defaults_to_the_annotated_species(soundscapes):
    ann, tax = soundscapes
    sc = load_soundscape_annotations(ann, tax)
    assert [s.id for s in sc.collection.species] == ["amerob", "yerwar"] and sc.label_space == "annotated"
    assert sc.unknown_codes == {"warble": 1}
    segs, y = soundscape_segments(sc, 5.0, 5.0)
    assert y.shape == (3, 2) and y.tolist() == [[1, 1], [1, 0], [0, 0]]
    whole = load_soundscape_annotations(ann, tax, all_species=True)
    assert len(whole.collection.species) == 4  # the taxonomy's species only: no spuh, slash, hybrid or issf rows


def test_class_list_names_the_label_space(soundscapes, tmp_path):
    ann, tax = soundscapes
    (tmp_path / "classes.txt").write_text("# BirdSet-style class list\nblujay\namerob\nnorcar\n")
    classes = read_class_list(tmp_path / "classes.txt")
    sc = load_soundscape_annotations(ann, tax, classes=classes)
    assert [s.id for s in sc.collection.species] == ["blujay", "amerob", "norcar"] and sc.label_space == "class_list"
    assert sc.n_events_outside_label_space == 1  # the Myrtle Warbler is not a class here
    _, y = soundscape_segments(sc, 5.0, 5.0)
    assert y.shape == (3, 3) and y[:, 1].tolist() == [1, 1, 0]
    assert read_class_list(write_csv(tmp_path / "c.csv", ["species_code"], [["norcar"], ["amerob"]])) == ["norcar", "amerob"]
    with pytest.raises(ConfigError, match="no species in the taxonomy: warble"):
        load_soundscape_annotations(ann, tax, classes=["amerob", "warble"])


def test_evaluation_setting_uses_the_dataset_label_space_and_says_so(soundscapes, tmp_path):
    from birdbridge.config import from_dict
    from birdbridge.data.synthetic import SyntheticWorld
    from birdbridge.evaluate.eval_config import EvalConfig
    from birdbridge.evaluate.setting import prepare_setting

    ann, tax = soundscapes
    SyntheticWorld(0, n_orders=1, n_families=1, n_genera=1, n_species=2).write(
        tmp_path / "world", audio_per_species={"test": 1}, images_per_species={"test": 1})
    base = {"eval_data": {"kind": "csv", "path": str(tmp_path / "world" / "world.csv")}, "methods": ["random_projection"],
            "soundscapes": {"annotations": str(ann), "taxonomy": str(tax)}}
    setting = prepare_setting(from_dict(EvalConfig, base), tmp_path / "work", log=lambda m: None)
    d = setting.describe()["soundscapes"]
    assert (d["n_species"], d["label_space"]) == (2, "annotated")
    (tmp_path / "classes.txt").write_text("amerob\nnorcar\nblujay\n")
    base["soundscapes"]["class_list"] = str(tmp_path / "classes.txt")
    d = prepare_setting(from_dict(EvalConfig, base), tmp_path / "work", log=lambda m: None).describe()["soundscapes"]
    assert (d["n_species"], d["label_space"], d["n_events_outside_label_space"]) == (3, "class_list", 1)
    from birdbridge.evaluate.report import render_markdown

    md = render_markdown({"setting": {"soundscapes": {**d, "n_files": 1, "n_events": 4, "window_s": 5.0}}, "main": {}})
    assert "Label space: **3 classes** (the configured class list)" in md
