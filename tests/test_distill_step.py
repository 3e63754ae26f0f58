"""One distillation step changes the student and its head, nothing else."""

import dataclasses
import hashlib

import pytest
import torch

from birdbridge.data.synthetic import SyntheticWorld, load_world
from birdbridge.distill.data import AudioClipDataset, collate_clips
from birdbridge.distill.module import DistillModule
from birdbridge.distill.train import TrainConfig, build_student, species_text_embeddings
from birdbridge.encoders.teacher import Teacher


def _digest(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    world = SyntheticWorld(1, n_orders=1, n_families=2, n_genera=2, n_species=2)
    world.write(root, audio_per_species={"train": 3}, images_per_species={"test": 1})
    return load_world(root)


def test_only_student_and_head_change(small_world, tiny_clap_dir, tiny_open_clip_dir, tmp_path):
    cfg = TrainConfig.from_dict({"student": str(tiny_clap_dir), "teacher": str(tiny_open_clip_dir), "cache_dir": str(tmp_path),
                                 "prompt_types": ["mixed"], "batch_size": 8, "lr_encoder": 1e-2, "lr_head": 1e-2})
    teacher = Teacher.load(str(tiny_open_clip_dir))
    teacher_before = _digest(teacher.model)
    text = species_text_embeddings(cfg, small_world)
    student = build_student(cfg, teacher.dim)
    assert not hasattr(student, "text_model"), "the CLAP text tower must not be in the training graph"
    module = DistillModule(student, text, dataclasses.replace(cfg, warmup_steps=0), total_steps=10)
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    table_before = module.text_table.clone()
    ds = AudioClipDataset(small_world, small_world.audio_split("train"), student.sample_rate, student.window_samples)
    batch = collate_clips([ds[i] for i in range(len(ds))])
    opt = module.configure_optimizers()["optimizer"]
    loss = module.training_step(batch, 0)
    assert torch.isfinite(loss)
    loss.backward()
    opt.step()
    changed = {n for n, p in module.named_parameters() if not torch.equal(p, before[n])}
    assert changed, "nothing was trained"
    assert all(n.startswith(("student.", "logit_scale.")) for n in changed)
    assert any(n.startswith("student.head.") for n in changed)
    assert any(n.startswith("student.audio_model.") for n in changed)
    assert torch.equal(module.text_table, table_before)
    assert _digest(Teacher.load(str(tiny_open_clip_dir)).model) == teacher_before
    assert _digest(teacher.model) == teacher_before
    assert all(not p.requires_grad for p in teacher.model.parameters())


def test_frozen_encoder_trains_only_the_head(small_world, tiny_clap_dir, tiny_open_clip_dir, tmp_path):
    cfg = TrainConfig.from_dict({"student": str(tiny_clap_dir), "teacher": str(tiny_open_clip_dir), "cache_dir": str(tmp_path)})
    text = species_text_embeddings(cfg, small_world)
    student = build_student(cfg, 64)
    module = DistillModule(student, text, dataclasses.replace(cfg, freeze_encoder=True, lr_head=1e-2, warmup_steps=0))
    before = {n: p.detach().clone() for n, p in module.named_parameters()}
    ds = AudioClipDataset(small_world, small_world.audio_split("train"), student.sample_rate, student.window_samples)
    batch = collate_clips([ds[i] for i in range(len(ds))])
    opt = module.configure_optimizers()["optimizer"]
    module.training_step(batch, 0).backward()
    opt.step()
    changed = {n for n, p in module.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.startswith(("student.head.", "logit_scale.")) for n in changed)


def test_bad_clip_is_skipped_and_counted(small_world, tiny_clap_dir, tiny_open_clip_dir, tmp_path):
    from birdbridge.data.records import AudioItem, Collection

    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF....not really audio")
    col = Collection("w", small_world.species, audio=[AudioItem(str(bad), small_world.species[0].id, "train")] + small_world.audio_split("train"),
                     root=small_world.root)
    ds = AudioClipDataset(col, col.audio, 16000, 16000)
    batch = collate_clips([ds[i] for i in range(3)])
    assert len(batch["skipped"]) == 1 and batch["skipped"][0].reason in ("unreadable", "decode_error")
    # the batch keeps its size (equal shapes across DDP ranks) by repeating good clips
    assert batch["waves"].shape == (3, 16000)
    assert batch["labels"][0] == batch["labels"][2]


def test_epoch_shuffle_sampler_is_a_function_of_seed_and_epoch_and_resumes():
    from birdbridge.distill.data import EpochShuffleSampler

    s = EpochShuffleSampler(10, seed=3, batch_size=2)
    e0, e1 = list(s), None
    s.set_epoch(1)
    e1 = list(s)
    assert [e for e, _ in e0] == [0] * 10 and [e for e, _ in e1] == [1] * 10
    assert sorted(i for _, i in e0) == list(range(10)) and [i for _, i in e0] != [i for _, i in e1]
    fresh = EpochShuffleSampler(10, seed=3, batch_size=2)
    fresh.set_epoch(1)
    assert list(fresh) == e1  # no hidden generator state carried across epochs
    fresh.resume(1, batches_done=3)
    fresh.set_epoch(1)  # Lightning re-announces the epoch a resume lands in: the skip survives
    assert list(fresh) == e1[6:]
    assert list(fresh) == e1  # the skip applies to one iteration only
    # two ranks: equal shares that together cover the (wrap-padded) epoch
    ranks = [EpochShuffleSampler(11, seed=3, batch_size=2, rank=r, world_size=2) for r in (0, 1)]
    shares = [[i for _, i in r] for r in ranks]
    assert len(shares[0]) == len(shares[1]) == 6 and set(shares[0] + shares[1]) == set(range(11))
