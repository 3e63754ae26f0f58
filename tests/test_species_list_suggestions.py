"""Issue 25 item 6: species-list entries the model never heard, said out loud, with close matches."""

from __future__ import annotations

from test_detect import bb, chirps


def test_close_matches_name_the_known_spelling():
    from birdbridge.data.species_list import ListEntry, match_species_list
    from birdbridge.taxonomy import Species

    known = [Species(id="blkpho", scientific_name="Sayornis nigricans", common_name="Black Phoebe"),
             Species(id="lesgol", scientific_name="Spinus psaltria", common_name="Lesser Goldfinch")]
    entries = [ListEntry(1, "Sayornis nigrcans", name="Sayornis nigrcans"),
               ListEntry(2, "Spinus psaltria_Lesser Goldfinch", scientific_name="Spinus psaltria",
                         common_name="Lesser Goldfinch"),
               ListEntry(3, "Lesser Goldfnch", name="Lesser Goldfnch"),
               ListEntry(4, "Strix varia", name="Strix varia")]
    m = match_species_list(entries, known)
    assert [e.text for e in m.unmatched] == ["Sayornis nigrcans", "Lesser Goldfnch", "Strix varia"]
    lines = m.unmatched_lines()
    assert "Sayornis nigrcans (did you mean Sayornis nigricans?)" in lines[0]
    assert "did you mean Lesser Goldfinch?" in lines[1]
    assert "Strix varia" in lines[2] and "did you mean" not in lines[2]
    assert "teacher's text tower reads" in lines[-1] and len(lines) == 4
    # capped: one line per entry up to MAX_LINES, then a count
    many = [ListEntry(i, f"Genus{i} species", name=f"Genus{i} species") for i in range(m.MAX_LINES + 5)]
    lines = match_species_list(many, known).unmatched_lines()
    assert len(lines) == m.MAX_LINES + 2 and "and 5 more" in lines[-2]
    # a model that records no species: nothing to compare against, no per-entry lines
    assert match_species_list(entries, []).unmatched_lines() == []


def test_detect_says_which_names_the_model_never_heard(demo_run, tmp_path):
    from birdbridge.data.synthetic import load_world

    out, _ = demo_run
    sp = load_world(out / "world").species[0].scientific_name
    typo = sp[:-2] + sp[-1]  # one letter dropped
    (tmp_path / "list.txt").write_text(f"{sp}\n{typo}\nStrix varia\n")
    chirps(tmp_path / "a.wav", 2.0, 16000)
    # the demo model records species ids only; its index carries their names, the ones a typo is compared with
    res = bb("detect", tmp_path / "a.wav", "--model", out / "model", "--index", out / "index",
             "--species-list", tmp_path / "list.txt",
             cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    err = res.stderr
    assert f"{typo} (did you mean {sp}?)" in err
    assert "Strix varia" in err and "teacher's text tower reads" in err
    assert sum(line.strip().startswith("not among") for line in err.splitlines()) == 2
    # the demo's model records that it was distilled on the synthetic world; a.wav is no world file (issue 25)
    assert sum("distilled on the synthetic world" in line for line in err.splitlines()) == 1, err
