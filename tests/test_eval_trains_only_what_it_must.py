"""Issue 20, items 1 and 6: an evaluation trains only what its config does not name, says what it
trained, resumes a killed training, and refuses to run once per SLURM task; checkpoints are
spaced in global optimizer steps."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml

from birdbridge.config import from_dict
from birdbridge.errors import ConfigError
from birdbridge.evaluate.eval_config import EvalConfig
from birdbridge.evaluate.runner import run_eval

BIN = Path(sys.executable).with_name("birdbridge")
PAPER_THREE = ["common", "scientific", "taxonomic"]


def _cfg(**kw) -> EvalConfig:
    return from_dict(EvalConfig, {"synthetic": {"seed": 0}, "train_preset": "demo", **kw})


def _fake_checkpoint(d: Path, prompt_types: list[str]) -> str:
    d.mkdir(parents=True)
    (d / "config.json").write_text(json.dumps({"prompt_recipe": {"prompt_types": prompt_types}}))
    return str(d)


# --------------------------------------------------------------------------- item 1: what trains
def test_a_given_model_of_the_paper_three_is_the_mixed_arm_so_nothing_trains_here(tmp_path):
    given = _fake_checkpoint(tmp_path / "m", PAPER_THREE)
    # devices 4 is refused only when something would train in this process
    cfg = _cfg(train={"devices": 4}, methods=["distilled"], distilled_model=given, prompt_ablation=["mixed"])
    assert not cfg.trains_here()
    assert cfg.given_arm_model("mixed") == (given, "distilled_model")
    assert cfg.given_arm_model("common") is None  # another arm still trains
    with pytest.raises(ConfigError, match="one device"):
        _cfg(train={"devices": 4}, methods=["distilled"], distilled_model=given, prompt_ablation=["mixed", "common"])
    # a given model of one prompt type is that arm, not `mixed`
    single = _fake_checkpoint(tmp_path / "c", ["common"])
    assert _cfg(distilled_model=single, prompt_ablation=["common"]).given_arm_model("common") == (single, "distilled_model")
    assert _cfg(distilled_model=single, prompt_ablation=["mixed"]).given_arm_model("mixed") is None


def test_an_ablation_arm_on_the_main_recipe_is_the_main_model():
    cfg = _cfg(train={"devices": 4}, methods=["distilled"], prompt_ablation=["mixed"], ablation_models={"mixed": "/m"})
    assert cfg.given_main_model(cfg.train_config().resolved_prompt_types) == ("/m", "ablation_models.mixed")
    assert not cfg.trains_here()


def test_eval_with_every_model_given_trains_nothing(demo_run, tmp_path, monkeypatch):
    demo_out, _ = demo_run
    import birdbridge.distill.train as train_mod

    def no_training(*a, **k):
        raise AssertionError("the evaluation trained a model its config names")

    monkeypatch.setattr(train_mod, "distill", no_training)
    cfg = _cfg(synthetic={"seed": 0, "reuse": str(demo_out), "soundscapes": None}, train={"max_epochs": 1},
               methods=["random_projection", "distilled"], distilled_model=str(demo_out / "model"),
               prompt_ablation=["mixed"], plots=False, knn_ks=[1], max_items_per_species=2)
    out = tmp_path / "eval"
    res = run_eval(cfg, out, log=lambda m: None)
    assert res["trained_models"] == []
    assert res["models"]["distilled"]["source"] == "given" and set(res["models"]) == {"distilled"}
    assert res["prompt_ablation"]["arms"]["mixed"] == res["main"]["methods"]["distilled"]
    assert not (out / "work" / "models").exists()
    assert json.loads((out / "results.json").read_text())["trained_models"] == []
    assert "Trained by this run: nothing" in (out / "report.md").read_text()


# --------------------------------------------------------------------------- item 6: resume, srun, spacing
@pytest.fixture(scope="module")
def small_world(tmp_path_factory) -> Path:
    from birdbridge.data.synthetic import SyntheticWorld

    root = tmp_path_factory.mktemp("world20")
    SyntheticWorld(1, n_orders=1, n_families=2, n_genera=2, n_species=2).write(
        root, audio_per_species={"train": 4}, images_per_species={})
    return root


class _Killed(RuntimeError):
    pass


def test_a_killed_training_inside_eval_resumes_from_its_checkpoint(small_world, tiny_clap_dir, tiny_open_clip_dir,
                                                                   tmp_path, monkeypatch):
    import birdbridge.distill.train as train_mod
    from birdbridge.data.synthetic import load_world
    from birdbridge.distill.config import TrainConfig
    from birdbridge.evaluate.models import distilled_model, trained_models
    from birdbridge.evaluate.setting import Setting

    coll = load_world(small_world)  # 8 species x 4 clips, batch 8: 4 steps an epoch, 8 in all
    cfg = TrainConfig.from_dict({"student": str(tiny_clap_dir), "teacher": str(tiny_open_clip_dir),
                                 "cache_dir": str(tmp_path / "cache"), "batch_size": 8, "max_epochs": 2, "num_workers": 0,
                                 "progress": False, "accelerator": "cpu", "devices": 1, "val_split": "none",
                                 "log_every_n_steps": 1, "checkpoint_every_n_steps": 1, "warmup_steps": 0})
    setting = Setting(coll, coll, cfg.student, cfg.teacher, cfg.cache_dir, "fp")
    species = [sp.id for sp in coll.species]
    real_trainer = train_mod._trainer

    def killed_at_step_5(*a, **k):
        import lightning as L

        class Kill(L.Callback):
            def on_train_batch_start(self, trainer, *args):
                if trainer.global_step >= 5:
                    raise _Killed("killed")

        trainer = real_trainer(*a, **k)
        trainer.callbacks.append(Kill())
        return trainer

    monkeypatch.setattr(train_mod, "_trainer", killed_at_step_5)
    with pytest.raises(_Killed):
        distilled_model(setting, cfg, species, tmp_path / "work", log=lambda m: None)
    run_dir = next((tmp_path / "work" / "models").iterdir()) / "train"
    assert not (run_dir / "model").exists()
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert saved["global_step"] == 5
    monkeypatch.setattr(train_mod, "_trainer", real_trainer)
    lines: list[str] = []
    model, info = distilled_model(setting, cfg, species, tmp_path / "work", log=lines.append)
    assert info["source"] == "trained" and info["resumed"] is True and "resuming from" in lines[-1]
    assert (run_dir / "model" / "config.json").is_file()
    # the re-run trained only the steps the killed one had not: its log starts at step 5
    with open(run_dir / "logs" / "version_1" / "metrics.csv") as fh:
        steps = sorted({int(r["step"]) for r in csv.DictReader(fh) if r.get("train/loss")})
    assert steps and steps[0] >= 5 and steps[-1] == 7
    final = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert final["global_step"] == 8
    listed = trained_models({"distilled": info})
    assert listed[0]["resumed"] and listed[0]["output_dir"] == str(run_dir)


def test_eval_under_srun_with_several_tasks_is_refused(monkeypatch, tmp_path):
    monkeypatch.setenv("SLURM_NTASKS", "4")
    with pytest.raises(ConfigError, match=r"launched as 4 \(SLURM_NTASKS"):
        run_eval(_cfg(), tmp_path / "out", log=lambda m: None)
    assert not (tmp_path / "out").exists()
    monkeypatch.setenv("SLURM_NTASKS", "1")  # `srun -n 1` inside a bigger allocation
    from birdbridge.evaluate.runner import refuse_multi_process

    refuse_multi_process()


def test_cli_eval_under_srun_is_one_line(tmp_path):
    cfg = tmp_path / "eval.yaml"
    cfg.write_text(yaml.safe_dump({"synthetic": {"seed": 0}, "train_preset": "demo"}))
    env = {**os.environ, "COLUMNS": "1000", "SLURM_NTASKS": "2"}
    env.pop("WORLD_SIZE", None)
    res = subprocess.run([str(BIN), "eval", str(cfg), "--out", str(tmp_path / "out")], cwd=tmp_path, capture_output=True,
                         text=True, timeout=120, env=env)
    assert res.returncode == 2, res.stderr[-2000:]
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "launched as 2 (SLURM_NTASKS, srun)" in lines[0], res.stderr
    assert not (tmp_path / "out").exists()


def test_checkpoint_spacing_counts_global_optimizer_steps(small_world, monkeypatch):
    from lightning.pytorch.callbacks import ModelCheckpoint

    from birdbridge.data.synthetic import load_world
    from birdbridge.distill.checkpointing import GlobalStepCheckpoint, checkpoint_spacing
    from birdbridge.distill.datamodule import DistillData

    coll = load_world(small_world)
    items = coll.audio_split("train")
    data = DistillData(coll, items, [], sample_rate=16000, n_samples=16000, batch_size=4)
    # 32 clips, batch 4: 8 optimizer steps an epoch on one process, 4 on each of 2, 1 on each of 8
    assert [data.steps_per_epoch(w) for w in (1, 2, 8)] == [8, 4, 1]
    assert [checkpoint_spacing(None, data.steps_per_epoch, w) for w in (1, 2, 8)] == [4, 2, 1]  # twice an epoch
    assert checkpoint_spacing(100, data.steps_per_epoch, 8) == 100  # given: global steps as written
    monkeypatch.setattr(ModelCheckpoint, "setup", lambda self, trainer, module, stage: None)
    for world, want in ((1, 4), (2, 2)):
        cb = GlobalStepCheckpoint(dirpath="/tmp/x", save_last=True, save_top_k=0, every_n_steps=None,
                                  steps_per_epoch=data.steps_per_epoch)
        cb.setup(SimpleNamespace(world_size=world), None, "fit")
        assert cb._every_n_train_steps == want
