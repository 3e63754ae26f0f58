"""The main job: the paper's loop on the synthetic world, end to end."""

import json

import pytest


def test_demo_results_file_and_thresholds(demo_run):
    out, results = demo_run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["dataset"] == "synthetic" and on_disk["seed"] == 0
    assert on_disk["n_species"] == 24
    for name in ("random_projection", "distilled"):
        m = on_disk["methods"][name]
        for key in ("map", "recall@1", "recall@10"):
            assert 0.0 <= m[key] <= 1.0
    assert on_disk["methods"]["distilled"]["map"] >= 0.8
    assert on_disk["methods"]["random_projection"]["map"] <= 0.2
    assert 0 < on_disk["chance_map"] < 0.2
    report = (out / "report.md").read_text()
    assert "distilled" in report and f"{on_disk['methods']['distilled']['map']:.3f}" in report


def test_saved_models_load_back_through_the_real_loaders(demo_run):
    from birdbridge.encoders.clap import load_clap
    from birdbridge.encoders.factory import load_audio_embedder
    from birdbridge.encoders.teacher import Teacher

    out, _ = demo_run
    teacher = Teacher.load(f"local-dir:{out / 'teacher'}")
    assert teacher.dim == 64
    clap, fe = load_clap(str(out / "student"))
    assert fe.truncation == "rand_trunc"
    emb = load_audio_embedder(str(out / "model"))
    assert emb.space == "teacher" and emb.dim == teacher.dim


def test_distillation_used_no_images(demo_run):
    """The training data the distillation saw is audio only (images are never read)."""
    out, results = demo_run
    cfg = results["config"]["train"]
    assert cfg["train_split"] == "train"
    from birdbridge.distill.data import AudioClipDataset

    assert "image" not in AudioClipDataset.__init__.__code__.co_varnames


@pytest.mark.slow
def test_same_seed_same_numbers(demo_run, tmp_path):
    from rich.console import Console

    from birdbridge.demo.run import run_demo

    _, first = demo_run
    second = run_demo(tmp_path / "again", seed=0, console=Console(quiet=True))
    for method, m in first["methods"].items():
        for key in ("map", "recall@1", "recall@10"):
            assert abs(m[key] - second["methods"][method][key]) <= 1e-3, (method, key)
