"""The student fine-tunes in train mode: dropout on, HTSAT's BatchNorm statistics updating.

``load_clap`` returns a model in eval mode and Lightning (>= 2.2) keeps each submodule's
mode at fit start (and restores it after validation), so the mode must be set by the
module itself. Checked inside ``training_step`` of real ``distill()`` runs with a tiny CLAP
whose audio tower has dropout 0.2, over two epochs with validation between them.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from birdbridge.data.synthetic import SyntheticWorld, load_world
from birdbridge.distill.module import DistillModule
from birdbridge.distill.train import TrainConfig, distill
from birdbridge.distill.validation import Validation


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("mode_world")
    SyntheticWorld(1, n_orders=1, n_families=2, n_genera=2, n_species=2).write(
        root, audio_per_species={"train": 2, "val": 1}, images_per_species={}, duration_s=1.2)
    return load_world(root)


def _run(world, clap, teacher, tmp_path, monkeypatch, **train) -> dict:
    seen: dict = {"steps": [], "val_modes": []}
    original_step, original_val = DistillModule.training_step, Validation.embed_batch

    def training_step(self, batch, batch_idx):
        bn = self.student.audio_model.audio_encoder.batch_norm
        if "bn_start" not in seen:
            seen["bn_start"] = (bn.running_mean.clone(), bn.running_var.clone())
        with torch.no_grad():
            a, b = self.student(batch["waves"]), self.student(batch["waves"])
        seen["steps"].append({"epoch": self.current_epoch, "audio_model": self.student.audio_model.training,
                              "projection": self.student.audio_projection.training, "head": self.student.head.training,
                              "passes_differ": not torch.equal(a, b)})
        return original_step(self, batch, batch_idx)

    def embed_batch(self, pl_module, waves):
        seen["val_modes"].append(pl_module.student.audio_model.training)
        return original_val(self, pl_module, waves)

    monkeypatch.setattr(DistillModule, "training_step", training_step)
    monkeypatch.setattr(Validation, "embed_batch", embed_batch)
    cfg = TrainConfig.from_dict({"student": str(clap), "teacher": str(teacher), "cache_dir": str(tmp_path / "cache"),
                                 "batch_size": 2, "max_epochs": 2, "num_workers": 0, "progress": False,
                                 "accelerator": "cpu", "devices": 1, "warmup_steps": 0, "lr_encoder": 1e-3, **train})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = distill(world, cfg, tmp_path / "run")
    seen["warnings"] = [str(w.message) for w in caught]
    bn = model.audio_model.audio_encoder.batch_norm
    seen["bn_changed"] = not (torch.equal(bn.running_mean, seen["bn_start"][0]) and torch.equal(bn.running_var, seen["bn_start"][1]))
    return seen


@pytest.mark.slow
def test_encoder_trains_in_train_mode_every_step(world, tiny_clap_dropout_dir, tiny_open_clip_dir, tmp_path, monkeypatch):
    seen = _run(world, tiny_clap_dropout_dir, tiny_open_clip_dir, tmp_path, monkeypatch)
    steps = seen["steps"]
    assert {s["epoch"] for s in steps} == {0, 1}, "two epochs, the second one after a validation"
    assert seen["val_modes"] and not any(seen["val_modes"]), "validation runs in eval mode"
    for s in steps:  # also every step after validation
        assert s["audio_model"] and s["projection"] and s["head"], s
        assert s["passes_differ"], "dropout is active: two passes over one batch differ"
    assert seen["bn_changed"], "HTSAT's BatchNorm running statistics update while fine-tuning"
    assert not any("in eval mode at the start of training" in w for w in seen["warnings"])


@pytest.mark.slow
@pytest.mark.parametrize("train", [{"freeze_encoder": True}, {"encoder_mode": "eval"}],
                         ids=["frozen_with_default_train_mode", "eval_mode"])
def test_frozen_or_eval_mode_encoder_stays_in_eval_mode(world, tiny_clap_dropout_dir, tiny_open_clip_dir, tmp_path, monkeypatch, train):
    seen = _run(world, tiny_clap_dropout_dir, tiny_open_clip_dir, tmp_path, monkeypatch, **train)
    assert seen["steps"]
    for s in seen["steps"]:
        assert not s["audio_model"] and not s["projection"] and s["head"], s
        assert not s["passes_differ"], "no dropout in eval mode"
    assert not seen["bn_changed"], "BatchNorm statistics stay the pretrained ones"
    # the eval-mode modules are intended here: Lightning's warning about them is not shown
    assert not any("in eval mode at the start of training" in w for w in seen["warnings"])


def test_encoder_mode_is_checked_and_recorded(tmp_path):
    from birdbridge.errors import ConfigError

    with pytest.raises(ConfigError, match="'encoder_mode' must be one of"):
        TrainConfig.from_dict({"encoder_mode": "inference"})
    assert TrainConfig().encoder_mode == "train"


@pytest.mark.parametrize("accelerator, cuda, want", [("cpu", True, False), ("auto", False, False), ("auto", True, True),
                                                     ("gpu", True, True)])
def test_batchnorm_is_synchronised_across_gpu_ranks(monkeypatch, tmp_path, accelerator, cuda, want):
    """``sync_batchnorm`` goes to the Trainer for GPU runs (Lightning applies it only under
    DDP); torch's SyncBatchNorm refuses CPU tensors, so CPU (gloo) runs go without."""
    import lightning as L

    from birdbridge.distill import train as train_mod

    from birdbridge import devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(devices, "_cuda_count", lambda: int(cuda))  # the up-front device check asks torch too
    cfg = TrainConfig.from_dict({"accelerator": accelerator})
    assert cfg.uses_gpu() is want
    got = {}

    class FakeTrainer:
        def __init__(self, **kw):
            got.update(kw)
            raise RuntimeError("stop")

    monkeypatch.setattr(L, "Trainer", FakeTrainer)
    monkeypatch.setattr(train_mod, "species_text_embeddings", lambda c, coll: {"common": torch.zeros(2, 4)})
    monkeypatch.setattr(train_mod, "build_student", lambda c, d, *species: _FakeStudent())
    from birdbridge.data.records import AudioItem, Collection
    from birdbridge.taxonomy import Species

    coll = Collection("c", [Species("a", "Aus bus"), Species("b", "Aus cus")],
                      [AudioItem(f"{i}.wav", "ab"[i % 2], "train") for i in range(4)])
    with pytest.raises(RuntimeError, match="stop"):
        distill(coll, TrainConfig.from_dict({"accelerator": accelerator, "batch_size": 2, "prompt_types": ["common"],
                                             "precision": "32-true"}), tmp_path)
    assert got["sync_batchnorm"] is want


class _FakeStudent(torch.nn.Module):
    sample_rate, window_samples = 16000, 16000

    def __init__(self):
        super().__init__()
        self.audio_model = torch.nn.Linear(2, 2)
        self.audio_projection = torch.nn.Linear(2, 2)
        self.head = torch.nn.Linear(2, 2)

