"""The unseen-species split cannot leak: held-out species are found in the training data by
taxon id, eBird code, scientific or common name, counted, and a conflict refuses the run."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from birdbridge.errors import ConfigError
from birdbridge.evaluate.reconcile import reconcile
from birdbridge.taxonomy import Species


def ssw(code, sci, common, taxon=None):
    return Species(code, sci, common, extra={"species_code": code, **({"inat_taxon_id": str(taxon)} if taxon else {})})


def inat(cid, sci, common, taxon=None):
    return Species(str(cid), sci, common, extra={"taxon_id": taxon} if taxon else {})


EVAL = [
    ssw("norcar", "Cardinalis cardinalis", "Northern Cardinal", 9083),
    ssw("dowwoo", "Picoides pubescens", "Downy Woodpecker"),  # genus moved since: Dryobates
    ssw("yerwar", "Dendroica coronata", "Yellow-rumped Warbler"),  # old genus, and iNat says "Myrtle Warbler"
    ssw("blujay", "Cyanocitta cristata", "Blue Jay"),
    ssw("amecro", "Corvus brachyrhynchos", "American Crow", 8021),
    ssw("wooduc", "Aix sponsa", "Wood Duck"),  # not in the training data
]
TRAIN = [
    inat(10, "Cardinalis cardinalis (iNat naming)", "Cardinal", taxon=9083),
    inat(11, "Dryobates pubescens", "Downy Woodpecker"),
    inat(12, "Setophaga coronata", "Myrtle Warbler"),
    inat(13, "Cyanocitta cristata", "Blue Jay"),
    inat(14, "Corvus brachyrhynchos", "American Crow", taxon=8021),
    inat(15, "Turdus migratorius", "American Robin"),
]
EBIRD = {"yerwar": Species("yerwar", "Setophaga coronata", "Yellow-rumped Warbler", extra={"species_code": "yerwar"})}


def test_held_out_species_are_found_by_every_identifier():
    held = [sp.id for sp in EVAL]
    rec = reconcile(EVAL, TRAIN, held, ebird=EBIRD)
    assert rec.matches == {"norcar": ["10"], "dowwoo": ["11"], "yerwar": ["12"], "blujay": ["13"], "amecro": ["14"], "wooduc": []}
    assert rec.how == {"norcar": "taxon_id", "dowwoo": "common_name", "yerwar": "ebird_code", "blujay": "scientific_name",
                       "amecro": "taxon_id"}
    s = rec.summary()
    assert (s["n_held_out"], s["n_matched"], s["n_unmatched"], s["unmatched"]) == (6, 5, 1, ["wooduc"])
    assert s["matched_by"] == {"taxon_id": 2, "ebird_code": 1, "scientific_name": 1, "common_name": 1}
    assert rec.removed_train_ids == {"10", "11", "12", "13", "14"}
    # without the eBird taxonomy the renamed warbler is not found (and is counted as such)
    assert reconcile(EVAL, TRAIN, ["yerwar"]).unmatched == ["yerwar"]


def test_a_held_out_species_that_would_stay_in_training_is_refused():
    train = TRAIN + [inat(20, "Corvus brachyrhynchos", "American Crow", taxon=99999)]  # same names, another taxon
    with pytest.raises(ConfigError, match="amecro .* would stay in the training data: training species 20") as err:
        reconcile(EVAL, train, ["amecro"])
    assert "\n" not in str(err.value)
    reconcile(EVAL, train, ["blujay"])  # a split without the conflicting species runs


def _write_csv(path: Path, header, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)


def _datasets(tmp_path: Path, other_taxon: dict[str, int] | None = None) -> dict:
    """An SSW60 root (2 crows + 2 ducks, one of each genus held out) and an iNatSounds JSON
    whose categories carry taxon ids (``other_taxon``: scientific name -> a different id)."""
    other_taxon = other_taxon or {}
    root = tmp_path / "ssw60"
    root.mkdir(exist_ok=True)
    taxa = [(0, "amecro", 8021, "American Crow", "Corvus brachyrhynchos"), (1, "fiscro", 8010, "Fish Crow", "Corvus ossifragus"),
            (2, "mallar3", 6930, "Mallard", "Anas platyrhynchos"), (3, "ambduc", 6924, "American Black Duck", "Anas rubripes")]
    _write_csv(root / "taxa.csv", ["label", "species_code", "inat_taxon_id", "common_name", "scientific_name", "family", "order"],
               [[lab, code, tid, com, sci, "Corvidae" if lab < 2 else "Anatidae", "Passeriformes" if lab < 2 else "Anseriformes"]
                for lab, code, tid, com, sci in taxa])
    _write_csv(root / "audio_ml.csv", ["asset_id", "label", "split"], [[100 + i, i, "test"] for i in range(4)])
    for src, col in (("nabirds", "photographer"), ("inat", "rights_holder")):
        _write_csv(root / f"images_{src}.csv", ["asset_id", "label", "split", col], [])
    cats = [{"id": i, "name": sci, "common_name": com, "class": "Aves", "kingdom": "Animalia", "phylum": "Chordata",
             "order": "X", "family": "Y", "genus": sci.split()[0], "specific_epithet": sci.split()[1],
             "taxon_id": other_taxon.get(sci, tid)}
            for i, (sci, com, tid) in enumerate([("Corvus brachyrhynchos", "American Crow", 8021),
                                                 ("Corvus ossifragus", "Fish Crow", 8010), ("Anas platyrhynchos", "Mallard", 6930),
                                                 ("Anas rubripes", "American Black Duck", 6924)])]
    js = tmp_path / "train.json"
    js.write_text(json.dumps({"categories": cats, "audio": [], "annotations": []}))
    return {"train_data": {"kind": "inat_sounds", "path": str(js)}, "eval_data": {"kind": "ssw60", "path": str(root)},
            "methods": ["random_projection"], "unseen": {"split": "one_per_genus", "seed": 0}}


def test_eval_refuses_a_leaking_split_before_any_work(tmp_path):
    from birdbridge.config import from_dict
    from birdbridge.data.ssw60 import load_ssw60
    from birdbridge.evaluate.eval_config import EvalConfig
    from birdbridge.evaluate.phases import unseen_split
    from birdbridge.evaluate.runner import run_eval

    cfg = from_dict(EvalConfig, _datasets(tmp_path))
    by_id = load_ssw60(tmp_path / "ssw60").species_by_id
    crow = next(by_id[i] for i in unseen_split(list(by_id.values()), cfg.unseen)[1] if by_id[i].genus == "Corvus")
    # iNat's category of the held-out crow has the same names but another taxon id: ambiguous
    cfg = from_dict(EvalConfig, _datasets(tmp_path, {crow.scientific_name: 123}))
    with pytest.raises(ConfigError, match=f"{crow.id} .* would stay in the training data"):
        run_eval(cfg, tmp_path / "out", log=lambda m: None)
    assert not (tmp_path / "out" / "results.json").exists()


def test_setting_reconciles_ssw60_with_inat_sounds_by_taxon_id(tmp_path):
    from birdbridge.config import from_dict
    from birdbridge.evaluate.eval_config import EvalConfig
    from birdbridge.evaluate.phases import unseen_split
    from birdbridge.evaluate.setting import prepare_setting

    cfg = from_dict(EvalConfig, _datasets(tmp_path))
    setting = prepare_setting(cfg, tmp_path / "work", log=lambda m: None)
    _, held = unseen_split(setting.eval_collection.species, cfg.unseen)
    s = setting.reconcile_held_out(held).summary()
    assert (s["n_held_out"], s["n_matched"], s["matched_by"], s["n_train_species_removed"]) == (2, 2, {"taxon_id": 2}, 2)
    assert (s["n_eval_species"], s["n_eval_species_in_training"]) == (4, 4)


def test_real_inat_sounds_categories_reconcile_by_name(shared_data):
    """The 2024 iNatSounds categories carry no taxon id: SSW60 species are found by name there."""
    from birdbridge.data.inat_sounds import load_inat_sounds

    coll = load_inat_sounds(shared_data / "inat_sounds" / "test.json")
    assert not any("taxon_id" in sp.extra or "inat_taxon_id" in sp.extra for sp in coll.species)
    ssw60 = [ssw("blkpho", "Sayornis nigricans", "Black Phoebe", 17008), ssw("yerwar", "Setophaga coronata", "Yellow-rumped Warbler", 145245),
             ssw("notasp", "Nonexistens avis", "Imaginary Bird", 1)]
    rec = reconcile(ssw60, coll.species, [sp.id for sp in ssw60])
    s = rec.summary()
    assert s["n_matched"] == 2 and s["unmatched"] == ["notasp"] and set(s["matched_by"]) <= {"scientific_name", "common_name"}
