"""The evaluation runner end to end on the synthetic world, its config checks, and `score`.

The heavy tests reuse the session's ``demo_run`` (world, teacher, student and distilled
model), so only the small arms of the reduced configs are trained here.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from birdbridge.cli import app
from birdbridge.config import from_dict
from birdbridge.errors import ConfigError
from birdbridge.evaluate.eval_config import METHODS, EvalConfig, UnseenSpec, load_eval_config
from birdbridge.evaluate.phases import unseen_split
from birdbridge.evaluate.runner import run_eval

PNG = b"\x89PNG\r\n\x1a\n"


def _cfg(**kw) -> EvalConfig:
    base = {"synthetic": {"seed": 0}, "train_preset": "demo"}
    return from_dict(EvalConfig, {**base, **kw})


# --------------------------------------------------------------------------- config
@pytest.mark.parametrize(
    "data, key",
    [
        ({"bogus": 1}, "'bogus'"),
        ({"unseen": {"splitt": "x"}}, "'unseen.splitt'"),
        ({"synthetic": {"seed": 0, "soundscapes": {"n_file": 2}}}, "'synthetic.soundscapes.n_file'"),
        ({"train": {"lr_heads": 1.0}}, "'train.lr_heads'"),
        ({"train": {"batch_size": "big"}}, "'train.batch_size'"),
        ({"train": {"prompt_types": ["latin"]}}, "'prompt_types'"),
        ({"methods": ["distilled", "magic"]}, "'methods'"),
        ({"prompt_ablation": ["klingon"]}, "'prompt_ablation'"),
        ({"seed": "zero"}, "'seed'"),
        ({"text": {"prompt_type": "nope"}}, "'text.prompt_type'"),
        ({"clap_text": {"templates": ["no placeholder"]}}, "'clap_text.templates'"),
        ({"eval_data": {"kind": "ssw60", "path": "/x"}}, "exactly one of"),
    ],
)
def test_config_errors_name_the_key(data, key):
    with pytest.raises(ConfigError) as err:
        _cfg(**data)
    assert key in str(err.value)


def test_shipped_configs_parse():
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "configs"
    paths = sorted(root.glob("paper/*.yaml")) + [root / "synthetic" / "paper_table.yaml"]
    assert len(paths) >= 2
    for p in paths:
        cfg = load_eval_config(p)
        assert cfg.train_config().batch_size >= 2
    syn = load_eval_config(root / "synthetic" / "paper_table.yaml")
    assert list(syn.methods) == list(METHODS) and set(syn.prompt_ablation) == {"common", "scientific", "taxonomic", "mixed"}
    from birdbridge.distill.presets import DEMO_TRAIN

    tc = syn.train_config()
    assert all(getattr(tc, k) == v for k, v in DEMO_TRAIN.items())


def test_cli_eval_bad_config_is_one_line(tmp_path, monkeypatch, capsys):
    from birdbridge import cli

    p = tmp_path / "c.yaml"
    p.write_text("synthetic: {seed: 0}\ntrain: {lr_heads: 1}\n")
    monkeypatch.setattr(sys, "argv", ["birdbridge", "eval", str(p), "--out", str(tmp_path / "o")])
    with pytest.raises(SystemExit) as ex:
        cli.main()
    assert ex.value.code == 2
    err = capsys.readouterr().err
    assert "train.lr_heads" in err and "Traceback" not in err


# --------------------------------------------------------------------------- pieces
def test_unseen_split_one_per_genus_and_random():
    from birdbridge.data.synthetic import SyntheticWorld

    species = SyntheticWorld(0).species
    seen, unseen = unseen_split(species, UnseenSpec())
    by_id = {s.id: s for s in species}
    assert len(unseen) == 12 and len(seen) == 12 and not set(seen) & set(unseen)
    assert len({by_id[i].genus for i in unseen}) == 12  # exactly one per genus
    assert unseen_split(species, UnseenSpec()) == (seen, unseen)  # seeded
    assert unseen_split(species, UnseenSpec(seed=1)) != (seen, unseen)
    _, r = unseen_split(species, UnseenSpec(split="random", fraction=0.25))
    assert len(r) == 6
    with pytest.raises(ConfigError):
        unseen_split(species[::2], UnseenSpec())  # one species per genus: nothing to hold out


def test_synthetic_soundscapes_load_through_the_real_loader(tmp_path):
    from birdbridge.data.soundscapes import load_soundscape_annotations, soundscape_segments
    from birdbridge.data.synthetic import SyntheticWorld
    from birdbridge.data.synthetic_soundscapes import ANNOTATION_HEADER, SoundscapeSpec, write_synthetic_soundscapes

    world = SyntheticWorld(0)
    ids = [s.id for s in world.species[:6]]
    ann, tax = write_synthetic_soundscapes(world, ids, tmp_path, SoundscapeSpec(n_files=2, duration_s=12.0))
    assert ann.read_text().splitlines()[0] == ",".join(ANNOTATION_HEADER)
    sc = load_soundscape_annotations(ann, tax, tmp_path / "soundscape_data", all_species=True)
    assert len(sc.files) == 2 and len(sc.unknown_codes) == 0 and len(sc.collection.species) == 24
    assert {e.species_id for e in sc.events} <= set(ids) and len(sc.events) >= 6
    assert all(0 <= e.start_s < e.end_s <= 12.0 and e.low_hz < e.high_hz for e in sc.events)
    segs, targets = soundscape_segments(sc, window_s=1.0, hop_s=1.0)
    assert len(segs) == 24 and targets.shape == (24, 24)
    assert (targets.sum(axis=1) == 0).any() and (targets.sum(axis=1) > 0).any()  # calls and pure-noise gaps


# --------------------------------------------------------------------------- runner
def _metrics_complete(res: dict, soundscapes: bool = True) -> None:
    a2i = res["audio_to_image"]["all"]["ranks"]
    assert set(a2i) == {"species", "genus", "family", "order"}
    assert {"map", "recall@1", "recall@5", "recall@10", "chance_map", "per_class_ap"} <= set(a2i["species"])
    for k in ("image_to_audio", "text_to_audio"):
        assert 0 <= res[k]["ranks"]["species"]["map"] <= 1
    assert {"knn@1", "knn@5"} <= set(res["knn"]) and {"top1", "top5"} <= set(res["zero_shot_focal"])
    if soundscapes:
        assert {"cmap", "macro_auroc", "top1_any_positive"} <= set(res["zero_shot_soundscape"])


def test_runner_reuses_demo_models(demo_run, tmp_path):
    demo_out, demo_results = demo_run
    cfg = _cfg(synthetic={"seed": 0, "reuse": str(demo_out), "soundscapes": {"n_files": 1, "duration_s": 12.0}},
               prompt_ablation=["mixed"], text={"prompt_type": "taxonomic_common", "template_set": "single"},
               clap_text={"templates": ["the song of a {}"], "prompt_types": ["common"]})
    out = tmp_path / "eval"
    res = run_eval(cfg, out, log=lambda m: None)
    assert res["models"]["distilled"]["source"] == "reused"  # the demo's model, not retrained
    methods = res["main"]["methods"]
    assert list(methods) == list(METHODS)
    for m in methods.values():
        _metrics_complete(m)
        assert m["audio_to_image"]["all"]["ranks"]["species"]["n_queries_without_relevant"] == 0
    # The same model and the same metric code give the demo's number.
    assert methods["distilled"]["audio_to_image"]["all"]["ranks"]["species"]["map"] == pytest.approx(
        demo_results["methods"]["distilled"]["map"], abs=1e-6)
    a2i = {k: v["audio_to_image"]["all"]["ranks"]["species"]["map"] for k, v in methods.items()}
    assert a2i["distilled"] > a2i["text_mapping"] and a2i["distilled"] > a2i["random_projection"]
    assert res["prompt_ablation"]["arms"]["mixed"] == methods["distilled"]  # the main model, reused
    assert "knn@1" in res["main"]["clap_space"]["knn"] and res["main"]["teacher"]["text_to_image"]["ranks"]
    assert set(res["main"]["pr_curves"]) == set(METHODS)
    # Files: results.json parses (NaN-free JSON), report has the table, plots are PNGs.
    saved = json.loads((out / "results.json").read_text())
    assert saved["versions"]["torch"] and saved["config"]["synthetic"]["reuse"] == str(demo_out)
    report = (out / "report.md").read_text()
    assert "| distilled |" in report and "Prompt-type ablation" in report and "*chance*" in report
    # what a reader needs to judge the numbers: encoder mode, prompt types, label-space size
    recipe = res["training_recipe"]
    assert recipe["prompt_types"] == ["common", "scientific", "taxonomic"]
    assert f"audio encoder in **{recipe['encoder_mode']}** mode" in report
    assert "training prompt types **common, scientific, taxonomic**" in report
    sc = res["setting"]["soundscapes"]
    assert sc["label_space"] == "annotated" and f"Label space: **{sc['n_species']} classes**" in report
    assert methods["distilled"]["zero_shot_soundscape"]["n_species_present"] <= sc["n_species"]
    # the text mapping pairs the CLAP templates' captions with the teacher's prompts, per training prompt type
    tm = res["embedding"]["text_mappings"]["text_mapping"]
    assert tm["clap_templates"] == ["the song of a {}"] and tm["prompt_types"] == ["common", "scientific", "taxonomic"]
    assert tm["n_pairs"] == 24 * 3
    for f in ("per_species_ap.png", "similarity.png", "pr_curves.png"):
        assert (out / f).read_bytes()[:8] == PNG


def test_runner_trains_arms_and_unseen_split_then_caches(demo_run, tmp_path):
    demo_out, _ = demo_run
    cfg = _cfg(synthetic={"seed": 0, "reuse": str(demo_out), "soundscapes": None}, train={"max_epochs": 1},
               methods=["random_projection", "text_mapping", "distilled"], prompt_ablation=["common"],
               unseen={"split": "one_per_genus"}, plots=False, knn_ks=[1], max_items_per_species=2)
    out = tmp_path / "eval"
    res = run_eval(cfg, out, log=lambda m: None)
    models = res["models"]
    assert {m["source"] for m in models.values()} == {"trained"}  # 1 epoch: not the demo's recipe
    assert models["distilled[seen]"]["n_train_species"] == 12 and models["distilled"]["n_train_species"] == 24
    un = res["unseen"]
    assert len(un["unseen_species"]) == 12 and not set(un["unseen_species"]) & set(un["seen_species"])
    assert set(un["methods"]) == {"random_projection", "text_mapping", "distilled", "distilled (heard all species)"}
    d = un["methods"]["distilled"]
    assert d["zero_shot_focal"]["n_classes"] == 12 and d["audio_to_image"]["all"]["ranks"]["species"]["chance_map"] > 0
    assert "zero_shot_soundscape" not in d
    report = (out / "report.md").read_text()
    assert "Unseen species" in report and not (out / "pr_curves.png").exists()
    rec = un["reconciliation"]  # one collection trains and evaluates here: found by id
    assert (rec["n_held_out"], rec["n_matched"], rec["n_unmatched"], rec["matched_by"]) == (12, 12, 0, {"same_id": 12})
    assert rec["n_train_species_removed"] == 12 and un["n_train_species"] == 12
    assert "Held-out species reconciled with the training data: **12 of 12 found** (12 by same id)" in report
    # what this run trained, one entry per training, with its folder and wall time (issue 20)
    trained = {t["name"]: t for t in res["trained_models"]}
    assert set(trained) == {"distilled", "distilled[common]", "distilled[seen]"}
    assert all(t["wall_time_s"] > 0 and (Path(t["output_dir"]) / "model" / "config.json").is_file() for t in trained.values())
    assert "Trained by this run: distilled in " in report
    # the held-out list, as the training data names it: --exclude-species / data.exclude_species leave them out
    from birdbridge.data.species_list import exclude_species
    from birdbridge.data.synthetic import load_world

    world = load_world(demo_out / "world")
    kept, summary = exclude_species(world, out / "unseen_species.csv")
    assert sorted(summary["excluded_species"]) == sorted(un["unseen_species"]) and not summary["unmatched"]
    assert {sp.id for sp in kept.species} == set(un["seen_species"])
    # A second run finds every model in the work dir's cache, and trains nothing.
    res2 = run_eval(cfg, out, log=lambda m: None)
    assert {m["source"] for m in res2["models"].values()} == {"cached"}
    assert res2["trained_models"] == []
    assert res2["unseen"]["methods"]["distilled"] == d


def test_runner_takes_an_already_distilled_checkpoint(demo_run, tmp_path):
    demo_out, demo_results = demo_run
    base = {"synthetic": {"seed": 0, "reuse": str(demo_out), "soundscapes": None}, "methods": ["distilled"],
            "distilled_model": str(demo_out / "model"), "plots": False, "knn_ks": [1]}
    res = run_eval(_cfg(**base), tmp_path / "eval", log=lambda m: None)
    info = res["models"]["distilled"]
    assert info["source"] == "given" and info["n_train_species"] == 24 and info["prompt_types"]
    assert res["main"]["methods"]["distilled"]["audio_to_image"]["all"]["ranks"]["species"]["map"] == pytest.approx(
        demo_results["methods"]["distilled"]["map"], abs=1e-6)
    # as the unseen arm it is refused: it heard the held-out species
    with pytest.raises(ConfigError, match="'unseen.distilled_model': .* was trained on 12 held-out species"):
        run_eval(_cfg(**base, unseen={"distilled_model": str(demo_out / "model")}), tmp_path / "eval2", log=lambda m: None)
    with pytest.raises(ConfigError, match="'distilled_model': .* not a birdbridge distilled checkpoint"):
        run_eval(_cfg(**{**base, "distilled_model": str(demo_out / "student")}), tmp_path / "eval3", log=lambda m: None)


# --------------------------------------------------------------------------- score CLI
def _parquet(path, emb, labels, genus):
    pq.write_table(pa.table({"embedding": pa.array([list(map(float, e)) for e in emb], type=pa.list_(pa.float32())),
                             "label": labels, "genus": genus}), path)
    return path


def test_score_cli_on_generated_parquet(tmp_path):
    e = np.eye(3)
    q = _parquet(tmp_path / "q.parquet", e[[0, 1, 2]], ["a", "b", "c"], ["G", "G", "H"])
    g = _parquet(tmp_path / "g.parquet", e[[2, 1, 0, 0]] * 4, ["c", "b", "a", "x"], ["H", "G", "G", "G"])
    runner = CliRunner()
    res = runner.invoke(app, ["score", str(q), str(g), "--out", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output
    r = json.loads((tmp_path / "r.json").read_text())
    # species: a ties a and x at the top (AP 1/2), b and c are perfect
    assert r["metrics"]["species"]["map"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert r["metrics"]["genus"]["n_queries_scored"] == 3 and "species: mAP 0.8333" in res.output
    res = runner.invoke(app, ["score", str(q), str(g), "--ranks", "family"])
    assert isinstance(res.exception, ConfigError) and "family" in str(res.exception)
