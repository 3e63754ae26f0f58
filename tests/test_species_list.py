"""Issue 22, point 2: species lists as BirdNET users write them, matched against what a model knows;
and recorder timestamps (AudioMoth, SM4) in file names. Pure parsing: no model, runs in milliseconds."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from birdbridge.data.species_list import load_species_list, match_species_list, read_species_list
from birdbridge.errors import ConfigError
from birdbridge.taxonomy import Species

KNOWN = [Species("sayphoe", "Sayornis nigricans", "Black Phoebe"),
         Species("lesgol", "Spinus psaltria", "Lesser Goldfinch"),
         Species("Turdus_migratorius", "Turdus migratorius", "American Robin"),
         # an id that is another species' common name: the id match must win
         Species("Barred Owl", "Strix varia", "")]


def test_birdnet_lines_plain_names_comments_and_bom(tmp_path):
    p = tmp_path / "list.txt"
    p.write_text("\ufeff# my site\nTurdus migratorius_American Robin\n\n  Sayornis   nigricans  \nLesser Goldfinch\n"
                 "Poecile_rufescens\n", encoding="utf-8")
    entries = read_species_list(p)
    assert [(e.line, e.scientific_name, e.common_name, e.name) for e in entries] == [
        (2, "Turdus migratorius", "American Robin", ""), (4, "", "", "Sayornis nigricans"),
        (5, "", "", "Lesser Goldfinch"), (6, "", "", "Poecile rufescens")]
    species = {s.id: s for s in load_species_list(p)}  # on their own: each entry's names
    assert species["Turdus migratorius"].common_name == "American Robin"
    assert species["Lesser Goldfinch"].common_name == "Lesser Goldfinch"  # a common name is not a binomial
    assert species["Poecile rufescens"].common_name == "" and species["Poecile rufescens"].genus == "Poecile"


def test_csv_lists_with_any_header_spelling(tmp_path):
    p = tmp_path / "list.csv"
    p.write_text("Species ID,Scientific name,Common name,Family\nx1,Sayornis nigricans,Black Phoebe,Tyrannidae\n"
                 ",,Lesser Goldfinch,\n")
    entries = read_species_list(p)
    assert [(e.species_id, e.scientific_name, e.common_name) for e in entries] == [
        ("x1", "Sayornis nigricans", "Black Phoebe"), ("", "", "Lesser Goldfinch")]
    sp = {s.id: s for s in load_species_list(p)}
    assert sp["x1"].family == "Tyrannidae" and sp["x1"].common_name == "Black Phoebe"
    (tmp_path / "bad.csv").write_text("path,label\na.wav,b\n")
    with pytest.raises(ConfigError, match="scientific_name"):
        read_species_list(tmp_path / "bad.csv")
    (tmp_path / "empty.txt").write_text("# nothing\n\n")
    with pytest.raises(ConfigError, match="names no species"):
        read_species_list(tmp_path / "empty.txt")
    with pytest.raises(ConfigError, match="not found"):
        read_species_list(tmp_path / "nope.txt")


def test_matching_by_id_then_scientific_then_common_case_and_space_insensitive(tmp_path):
    p = tmp_path / "list.txt"
    p.write_text("LESGOL\nsayornis_NIGRICANS\n  american   robin \nbarred owl\nStrix nebulosa_Great Gray Owl\nWrentit\n")
    m = match_species_list(read_species_list(p), KNOWN)
    got = {e.text: sp.id for e, sp in m.matched}
    assert got == {"LESGOL": "lesgol", "sayornis_NIGRICANS": "sayphoe", "american   robin": "Turdus_migratorius",
                   "barred owl": "Barred Owl"}
    assert m.unmatched_names() == ["Strix nebulosa_Great Gray Owl", "Wrentit"]
    # unmatched names are still scored (the teacher's text tower reads them); matched ones keep the model's ids
    assert sorted(s.id for s in m.species) == sorted(["lesgol", "sayphoe", "Turdus_migratorius", "Barred Owl",
                                                      "Strix nebulosa", "Wrentit"])
    assert next(s for s in m.species if s.id == "Strix nebulosa").common_name == "Great Gray Owl"
    line = m.summary()
    assert line.startswith("species list: 6 entries, 4 matched the model's species, 2 not (read by the teacher's "
                           "text tower): Strix nebulosa_Great Gray Owl, Wrentit")
    assert m.to_dict() == {"n_entries": 6, "n_matched": 4, "n_unmatched": 2, "n_known": 4,
                           "unmatched": ["Strix nebulosa_Great Gray Owl", "Wrentit"],
                           "suggestions": {}}  # no known name is close to either
    nothing = match_species_list(read_species_list(p), [])
    assert not nothing.matched and len(nothing.species) == 6 and "records no species" in nothing.summary()


def test_strict_species_list_names_the_unmatched(tmp_path):
    from birdbridge.retrieval.detect_species import species_for_detection

    class FakeModel:
        class model:
            meta = {"train_species": ["sayphoe", "Spinus_psaltria"]}
            combination = None

    p = tmp_path / "list.txt"
    p.write_text("sayphoe\nSpinus psaltria_Lesser Goldfinch\nWrentit\n")
    m = species_for_detection(p, FakeModel())
    assert len(m.matched) == 2 and m.unmatched_names() == ["Wrentit"]
    with pytest.raises(ConfigError, match=r"--strict: 1 of 3 entries .* match none of the model's 2 species: Wrentit"):
        species_for_detection(p, FakeModel(), strict=True)


@pytest.mark.parametrize("name, start", [
    ("20240501_053000.WAV", datetime(2024, 5, 1, 5, 30, 0)),  # AudioMoth
    ("SITE1_20240501_053000.wav", datetime(2024, 5, 1, 5, 30, 0)),  # SM4
    ("my-site_A_20231231_235959.flac", datetime(2023, 12, 31, 23, 59, 59)),  # a prefix holding _ and -
    ("S4A01_0+1_20240501_053000.wav", datetime(2024, 5, 1, 5, 30, 0)),  # SM4 channel form
    ("20241301_053000.wav", None),  # month 13
    ("20240501_253000.wav", None),  # 25 o'clock
    ("dawn.wav", None), ("rec20240501_053000.wav", None), ("20240501.wav", None)])
def test_recorder_timestamps(name, start):
    from birdbridge.data.recorder_time import absolute_time, recording_start

    assert recording_start(f"/deploy/site/{name}") == start
    assert absolute_time(start, 63.25) == ("" if start is None else (start + timedelta(seconds=63.25)).isoformat(
        timespec="milliseconds"))
    if name == "20240501_053000.WAV":
        assert absolute_time(start, 63.25) == "2024-05-01T05:31:03.250"
