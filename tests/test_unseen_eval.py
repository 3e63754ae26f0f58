"""Issue 17 in `birdbridge eval`: the synthetic CLAP keyed by its known fraction, the candidate
methods scored on seen and unseen species, and the seed sweep's table, targets and plot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from birdbridge.config import from_dict
from birdbridge.errors import ConfigError
from birdbridge.evaluate.eval_config import EvalConfig, SyntheticSpec

PNG = b"\x89PNG\r\n\x1a\n"


def _cfg(**kw) -> EvalConfig:
    return from_dict(EvalConfig, {"synthetic": {"seed": 0}, "train_preset": "demo", **kw})


@pytest.mark.parametrize("data, key", [
    ({"synthetic": {"seed": 0, "clap_known_fraction": 1.5}}, "synthetic.clap_known_fraction"),
    ({"sweep": {"clap_known_fractions": [2.0]}}, "sweep.clap_known_fractions"),
    ({"sweep": {"seeds": []}}, "sweep.seeds"),
    ({"combination": {"confidence": "hunch"}}, "combination.confidence"),
    ({"aligned": {"clap_alignment_weight": -1.0}}, "clap_alignment_weight"),
    ({"methods": ["distilled_magic"]}, "'methods'"),
    ({"main_table": False}, "main_table"),
    ({"methods": ["distilled_ensemble"]}, "distilled_ensemble"),
    ({"combination": {"tower": "third"}}, "combination.tower"),
    ({"combination": {"gate": "maybe"}}, "combination.gate"),
])
def test_config_errors_name_the_key(data, key):
    with pytest.raises(ConfigError) as err:
        _cfg(**data)
    assert key in str(err.value)


def test_sweep_needs_the_synthetic_world():
    with pytest.raises(ConfigError, match="sweep"):
        from_dict(EvalConfig, {"eval_data": {"kind": "csv", "path": "x.csv"}, "sweep": {}})


def test_student_is_keyed_by_the_known_fraction(tmp_path, monkeypatch):
    """World and teacher are built once per seed; each fraction gets its own student, reused after."""
    from birdbridge.distill import standins
    from birdbridge.evaluate import setting

    calls = {"teacher": 0, "clap": []}

    def fake_teacher(coll, out, **kw):
        calls["teacher"] += 1
        Path(out).mkdir(parents=True)

    def fake_clap(coll, world, out, *, known=None, **kw):
        calls["clap"].append(None if known is None else len(known))
        Path(out).mkdir(parents=True)

    monkeypatch.setattr(standins, "train_teacher", fake_teacher)
    monkeypatch.setattr(standins, "pretrain_clap", fake_clap)
    monkeypatch.setattr("birdbridge.data.synthetic.SyntheticWorld.write", lambda self, root: Path(root).mkdir(parents=True))
    monkeypatch.setattr("birdbridge.data.synthetic.load_world", lambda root: None)
    base = tmp_path / "synthetic"
    log = lambda m: None  # noqa: E731
    full = setting._generate_synthetic(SyntheticSpec(seed=0), base, log)
    half = setting._generate_synthetic(SyntheticSpec(seed=0, clap_known_fraction=0.5), base, log)
    again = setting._generate_synthetic(SyntheticSpec(seed=0, clap_known_fraction=0.5), base, log)
    assert full.name == "student" and half.name == "student-known0.5" and again == half
    assert calls == {"teacher": 1, "clap": [24, 12]}
    setting._generate_synthetic(SyntheticSpec(seed=0, clap_steps=30), base, log)  # other steps: a new student
    assert calls["clap"] == [24, 12, 24] and calls["teacher"] == 1


def test_reused_demo_cannot_change_the_known_fraction(tmp_path):
    from birdbridge.evaluate.setting import prepare_setting

    demo_out = tmp_path / "demo-out"  # what `reuse` checks for in a demo folder
    for sub, name in (("world", "world.csv"), ("teacher", "open_clip_config.json"), ("student", "config.json")):
        (demo_out / sub).mkdir(parents=True)
        (demo_out / sub / name).write_text("{}")
    cfg = _cfg(synthetic={"seed": 0, "reuse": str(demo_out), "clap_known_fraction": 0.5, "soundscapes": None})
    with pytest.raises(ConfigError, match="clap_known_fraction"):
        prepare_setting(cfg, tmp_path / "work", log=lambda m: None)


def test_sweep_scores_candidates_on_seen_and_unseen_species(tmp_path):
    # a quickly pretrained world (20 steps each): the numbers mean little, the code path is the real one
    cfg = _cfg(synthetic={"seed": 0, "teacher_steps": 20, "clap_steps": 20, "soundscapes": None}, train={"max_epochs": 1},
               methods=["zero_shot_combination", "distilled", "distilled_aligned", "distilled_combined", "distilled_ensemble"],
               main_table=False, unseen={"split": "one_per_genus"}, knn_ks=[1], max_items_per_species=2,
               combination={"confidence": "entropy"}, sweep={"seeds": [0], "clap_known_fractions": [1.0]})
    out = tmp_path / "eval"
    from birdbridge.evaluate.pipeline import evaluate

    res = evaluate(cfg, out, log=lambda m: None)
    assert res["kind"] == "sweep" and res["seeds"] == [0]
    table = res["table"]["1"]
    for side in ("seen", "unseen"):
        assert {"zero_shot_combination", "distilled", "distilled_aligned", "distilled_combined", "distilled_ensemble",
                "student, own CLAP space"} <= set(table[side])
        st = table[side]["distilled_combined"]["map"]
        assert st["n"] == 1 and 0 < st["mean"] <= 1 and st["sd"] == 0.0
    assert res["species_counts"]["known1-seed0"] == {"n_seen": 12, "n_unseen": 12, "n_seen_clap_known": 12,
                                                     "n_unseen_clap_known": 12}
    assert {t["method"] for t in res["targets"]} == {"distilled_aligned", "distilled_combined", "distilled_ensemble"}
    assert all("seen_map_vs_distilled" in t and "unseen_map_vs_0.9_zsc" in t for t in res["targets"])
    assert (out / "unseen.png").read_bytes()[:8] == PNG
    report = (out / "report.md").read_text()
    assert "## Targets" in report and "distilled_combined" in report and "± 0.000" in report
    run = json.loads((out / "runs" / "known1-seed0" / "results.json").read_text())
    models = run["models"]
    assert models["distilled_aligned[seen]"]["key"] == models["distilled_combined[seen]"]["key"]  # one training
    assert models["distilled_aligned[seen]"]["n_train_species"] == 12
    comb = models["distilled_combined[seen]"]["combination"]
    assert comb["n_species"] == 24 and comb["confidence"] == "entropy" and comb["n_heard"] == 12
    assert comb["tower"] == "student" and models["distilled_ensemble[seen]"]["combination"]["tower"] == "original"
    assert models["distilled_ensemble[seen]"]["key"] == models["distilled[seen]"]["key"]  # no extra training
    assert "distilled" not in run["main"]["methods"]  # main_table: false trains nothing on all species
    # the aligned recipe reached training: its checkpoint records the auxiliary weights
    ckpt = json.loads((Path(models["distilled_aligned[seen]"]["path"]) / "config.json").read_text())
    assert ckpt["training"]["clap_alignment_weight"] == 1.0 and ckpt["training"]["clap_feature_weight"] == 1.0
    assert ckpt["training"]["clap_templates"] == cfg.clap_text.templates


def test_shipped_unseen_config_parses():
    from birdbridge.evaluate.eval_config import load_eval_config

    cfg = load_eval_config(Path(__file__).resolve().parents[1] / "configs" / "synthetic" / "unseen.yaml")
    assert cfg.sweep.seeds == [0, 1, 2] and len(cfg.sweep.clap_known_fractions) >= 2
    assert {"distilled", "zero_shot_combination", "distilled_ensemble", "distilled_wise", "distilled_zscl"} <= set(cfg.methods)
    assert cfg.train_config(**cfg.wise).wise_alpha < 1 and cfg.train_config(**cfg.zscl).zscl_weight > 0
    assert not cfg.main_table and cfg.unseen is not None


def test_sweep_traces_the_wise_curve_and_trains_zscl_on_unlabeled_clips(tmp_path):
    """distilled_wise and distilled_zscl through the one Evaluator path: the curve's points (alpha 0 is the
    zero-shot start, so it scores as the zero-shot combination over all species does), its plot and
    report section, and the models' recipes in results.json."""
    cfg = _cfg(synthetic={"seed": 0, "teacher_steps": 20, "clap_steps": 20, "soundscapes": None}, train={"max_epochs": 1},
               methods=["zero_shot_combination", "distilled", "distilled_wise", "distilled_zscl"], main_table=False,
               unseen={"split": "one_per_genus"}, knn_ks=[1], max_items_per_species=2, wise_curve=[0.0, 1.0],
               zscl={"zscl_weight": 0.5, "zscl_gate": "unheard"}, sweep={"seeds": [0], "clap_known_fractions": [1.0]})
    out = tmp_path / "eval"
    from birdbridge.evaluate.pipeline import evaluate

    res = evaluate(cfg, out, log=lambda m: None)
    curve = res["curves"]["1"]["distilled_wise"]
    assert set(curve) == {"0", "1"} and all(0 < curve[a]["seen"]["mean"] <= 1 for a in curve)
    assert res["alpha_choice"]["distilled_wise"]["alpha"] in (0.0, 1.0)
    assert {t["method"] for t in res["targets"]} == {"distilled_wise", "distilled_zscl"}
    run = json.loads((out / "runs" / "known1-seed0" / "results.json").read_text())
    un = run["unseen"]
    zsc_all = un["methods"]["zero_shot_combination (all species)"]["audio_to_image"]["all"]["ranks"]["species"]["map"]
    assert un["curves"]["distilled_wise"]["0"]["unseen"] == pytest.approx(zsc_all, abs=0.02)
    models = run["models"]
    assert models["distilled_wise[seen]"]["wise_alpha"] == 0.5 and models["distilled_wise[seen]"]["head"] == "zero_shot"
    assert models["distilled_zscl[seen]"]["zscl_weight"] == 0.5
    assert models["distilled_zscl[seen]"]["key"] != models["distilled_wise[seen]"]["key"]
    ckpt = json.loads((Path(models["distilled_zscl[seen]"]["path"]) / "config.json").read_text())
    assert ckpt["training"]["zscl_gate"] == "unheard" and len(ckpt["head"]["species"]) == 24
    assert (out / "wise.png").read_bytes()[:8] == PNG
    assert "## WiSE-FT" in (out / "report.md").read_text()
