"""Issue 17: the methods for species distillation never heard -- each checked by hand on small tensors,
and the combined checkpoint's round trip (save -> load from another directory -> identical vectors)."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from birdbridge.distill.clap_align import ClapAlignmentLoss, FrozenClapTower, feature_distillation_loss
from birdbridge.encoders.combination import CombinationSpec, ZeroShotCombination, confidence


# --------------------------------------------------------------------------- confidence and combination
def test_confidence_by_hand():
    p = torch.tensor([[0.5, 0.25, 0.25], [1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0]])
    # max_prob: (p_max - 1/S) / (1 - 1/S)
    assert confidence(p, "max_prob").tolist() == pytest.approx([(0.5 - 1 / 3) / (2 / 3), 0.0, 1.0], abs=1e-6)
    # entropy: 1 - H / log S; H([.5, .25, .25]) = 1.5 ln 2
    assert confidence(p, "entropy").tolist() == pytest.approx([1 - 1.5 * math.log(2) / math.log(3), 0.0, 1.0], abs=1e-6)


def test_combination_by_hand():
    # two species; CLAP text = teacher text = the axes; scale ln 3 so that a = e1 gives p = (3/4, 1/4)
    comb = ZeroShotCombination(torch.eye(2), torch.eye(2), math.log(3.0), CombinationSpec(confidence="max_prob", power=1.0))
    clap = torch.tensor([[1.0, 0.0]])
    distilled = torch.tensor([[0.0, 1.0]])
    assert comb.posterior(clap)[0].tolist() == pytest.approx([0.75, 0.25], abs=1e-6)
    w = (0.75 - 0.5) / 0.5  # = 0.5
    z = np.array([3.0, 1.0]) / math.sqrt(10)  # normalise(p @ I)
    want = (1 - w) * np.array([0.0, 1.0]) + w * z
    want /= np.linalg.norm(want)
    assert comb(clap, distilled)[0].tolist() == pytest.approx(want.tolist(), abs=1e-6)
    # power 2 trusts CLAP less: w = 0.25
    comb2 = ZeroShotCombination(torch.eye(2), torch.eye(2), math.log(3.0), {"power": 2.0})
    want2 = 0.75 * np.array([0.0, 1.0]) + 0.25 * z
    assert comb2(clap, distilled)[0].tolist() == pytest.approx((want2 / np.linalg.norm(want2)).tolist(), abs=1e-6)
    # a clueless CLAP (uniform posterior) leaves the distilled vector alone
    assert comb(torch.tensor([[1.0, 1.0]]), distilled)[0].tolist() == pytest.approx([0.0, 1.0], abs=1e-6)


def test_combination_spec_is_checked():
    from birdbridge.errors import ConfigError

    with pytest.raises(ConfigError, match="combination.confidence"):
        ZeroShotCombination(torch.eye(2), torch.eye(2), 1.0, {"confidence": "vibes"})
    with pytest.raises(ValueError, match="teacher species texts"):
        ZeroShotCombination(torch.eye(2), torch.eye(3), 1.0)


# --------------------------------------------------------------------------- the auxiliary CLAP terms
def test_feature_distillation_loss_by_hand():
    cur = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    ref = torch.tensor([[2.0, 0.0], [1.0, 1.0]])
    loss = feature_distillation_loss(cur, ref)
    assert loss.item() == pytest.approx((0.0 + (1 - 1 / math.sqrt(2))) / 2, abs=1e-6)
    loss.backward()
    assert cur.grad is not None and cur.grad.abs().sum() > 0


def test_clap_alignment_loss_by_hand():
    # clips on their species' CLAP text, scale 1: logits = I, each row's CE = log(1 + e^-1)
    loss = ClapAlignmentLoss(torch.eye(2), logit_scale=1.0)
    value = loss(torch.eye(2), torch.tensor([0, 1]))
    assert value.item() == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-6)
    # two clips of species 0 (same text row): still plain InfoNCE over one positive column each way
    value = loss(torch.tensor([[1.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
    assert torch.isfinite(value)


@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    from birdbridge.data.synthetic import SyntheticWorld, load_world

    root = tmp_path_factory.mktemp("world17")
    world = SyntheticWorld(1, n_orders=1, n_families=2, n_genera=2, n_species=2)
    world.write(root, audio_per_species={"train": 3}, images_per_species={"test": 1})
    return load_world(root)


def test_training_step_adds_the_weighted_clap_terms(small_world, tiny_clap_dir, tiny_open_clip_dir, tmp_path):
    from birdbridge.distill.data import AudioClipDataset, collate_clips
    from birdbridge.distill.module import DistillModule
    from birdbridge.distill.train import TrainConfig, build_student, clap_species_table, species_text_embeddings

    cfg = TrainConfig.from_dict({"student": str(tiny_clap_dir), "teacher": str(tiny_open_clip_dir), "cache_dir": str(tmp_path),
                                 "clap_alignment_weight": 0.5, "clap_feature_weight": 2.0})
    text = species_text_embeddings(cfg, small_world)
    clap_text, scale = clap_species_table(cfg, small_world.species)
    assert clap_text.shape[0] == len(small_world.species)
    student = build_student(cfg, next(iter(text.values())).shape[1])
    # eval: the tower and its reference use the same BN statistics
    step_cfg = dataclasses.replace(cfg, lr_encoder=1e-2, lr_head=1e-2, warmup_steps=0, encoder_mode="eval")
    module = DistillModule(student, text, step_cfg, total_steps=10, clap_text=clap_text, clap_logit_scale=scale)
    plain = DistillModule(student, text, dataclasses.replace(step_cfg, clap_alignment_weight=0.0, clap_feature_weight=0.0),
                          total_steps=10)
    ds = AudioClipDataset(small_world, small_world.audio_split("train"), student.sample_rate, student.window_samples)
    batch = collate_clips([ds[i] for i in range(len(ds))])
    module.set_train_modes()
    assert not module.clap_reference.training  # the LwF reference never trains, never updates BN statistics
    ref_before = {k: v.clone() for k, v in module.clap_reference.state_dict().items()}
    base = plain.training_step(batch, 0).item()
    with torch.no_grad():
        feats = student.features(batch["waves"], crop="start")
        clap = student.clap_embed_features(feats)
        align = module.clap_align(clap, batch["labels"]).item()
        feat = feature_distillation_loss(clap, module.clap_reference(feats)).item()
    assert feat == pytest.approx(0.0, abs=1e-6)  # before any update the tower is its own reference
    opt = module.configure_optimizers()["optimizer"]
    loss = module.training_step(batch, 0)
    assert loss.item() == pytest.approx(base + 0.5 * align + 2.0 * feat, rel=1e-5)
    loss.backward()
    opt.step()
    loss2 = module.training_step(batch, 1)
    with torch.no_grad():
        clap2 = student.clap_embed(batch["waves"])
        feat2 = feature_distillation_loss(clap2, module.clap_reference(student.features(batch["waves"]))).item()
    assert feat2 > 0  # the tower moved; the reference did not
    assert all(torch.equal(v, ref_before[k]) for k, v in module.clap_reference.state_dict().items())
    assert torch.isfinite(loss2)
    assert not any(n.startswith("clap_reference.") for n, p in module.named_parameters() if p.requires_grad)


def test_frozen_tower_stays_in_eval_mode(tiny_clap_dir):
    from birdbridge.encoders.clap import load_clap
    from birdbridge.encoders.heads import HeadSpec
    from birdbridge.encoders.student import AudioStudent

    clap, fe = load_clap(str(tiny_clap_dir))
    ref = FrozenClapTower(AudioStudent.from_clap(clap, fe, HeadSpec(out_dim=4)))
    ref.train()
    assert not ref.training and not any(m.training for m in ref.modules())


# --------------------------------------------------------------------------- the checkpoint carries the combination
def _combined(tiny_clap_dir, tiny_open_clip_dir, n_species=3):
    from birdbridge.encoders.clap import load_clap
    from birdbridge.encoders.heads import HeadSpec
    from birdbridge.encoders.student import AudioStudent, DistilledModel
    from birdbridge.encoders.teacher import Teacher

    clap, fe = load_clap(str(tiny_clap_dir))
    dim = Teacher.load(str(tiny_open_clip_dir)).dim
    torch.manual_seed(0)
    plain = DistilledModel.from_student(AudioStudent.from_clap(clap, fe, HeadSpec(kind="linear", out_dim=dim)),
                                        {"student_id": str(tiny_clap_dir), "teacher_id": str(tiny_open_clip_dir)}).eval()
    g = torch.Generator().manual_seed(1)
    comb = ZeroShotCombination(torch.randn(n_species, clap.config.projection_dim, generator=g),
                               torch.randn(n_species, dim, generator=g), 20.0, {"confidence": "entropy", "power": 0.5},
                               [{"id": f"s{i}", "scientific_name": f"Genus sp{i}", "common_name": f"Bird {i}"} for i in range(n_species)])
    return plain, plain.with_combination(comb)


def test_combined_checkpoint_round_trip_from_another_cwd(tiny_clap_dir, tiny_open_clip_dir, tmp_path, monkeypatch):
    from birdbridge.encoders.factory import load_audio_embedder

    plain, model = _combined(tiny_clap_dir, tiny_open_clip_dir)
    d = model.save_pretrained(tmp_path / "ckpt")
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["combination"]["confidence"] == "entropy" and cfg["combination"]["n_species"] == 3
    assert cfg["combination"]["species"][1]["id"] == "s1"
    from safetensors import safe_open

    with safe_open(str(d / "model.safetensors"), "pt") as fh:
        assert {"combination.clap_text", "combination.teacher_text"} <= set(fh.keys())
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(model.window_samples).astype(np.float32) * 0.1 for _ in range(4)]
    other = tmp_path / "elsewhere"
    other.mkdir()
    monkeypatch.chdir(other)  # the resolver reads the absolute folder, not the cwd
    emb = load_audio_embedder(str(d))  # the one resolver search, detect and serve use
    x = [torch.from_numpy(w) for w in waves]
    with torch.no_grad():
        want = model(x).numpy()
        without = plain(x).numpy()
    got = emb.embed_windows(waves)
    np.testing.assert_array_equal(got, want)
    assert not np.allclose(got, without, atol=1e-4), "the loaded model must embed through its combination"
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    # and a plain checkpoint still loads without one
    p = plain.save_pretrained(tmp_path / "plain")
    assert json.loads((p / "config.json").read_text())["combination"] is None
    np.testing.assert_array_equal(load_audio_embedder(str(p)).embed_windows(waves), without)


# --------------------------------------------------------------------------- the more honest synthetic CLAP
def test_clap_known_fraction_captions_and_draw():
    from birdbridge.data.synthetic import SyntheticWorld

    world = SyntheticWorld(0)
    n = len(world.species)
    assert world.clap_known_species(1.0) == {sp.id for sp in world.species}
    assert world.clap_known_species(0.0) == set()
    half = world.clap_known_species(0.5)
    assert len(half) == n // 2 and half == world.clap_known_species(0.5)
    assert half != SyntheticWorld(1).clap_known_species(0.5)  # another seed, another draw
    sp = world.species[0]
    unnamed = " ".join(world.captions(sp.id, known=False))
    for word in (sp.scientific_name, sp.common_name, sp.genus, sp.epithet):
        assert word not in unnamed
    assert sp.family in unnamed
    assert any(sp.common_name in c for c in world.captions(sp.id))
    with pytest.raises(ValueError):
        world.clap_known_species(1.5)


def test_heard_gate_by_hand():
    # three species; the distilled model heard species 0 only. Scale ln 2 and a = e1 + e2 (unnormalised):
    # cosines (1/√2, 1/√2, 0) -> p ∝ (2^(1/√2), 2^(1/√2), 1)
    comb = ZeroShotCombination(torch.eye(3), torch.eye(3), math.log(2.0), {"gate": "heard"},
                               heard=torch.tensor([1.0, 0.0, 0.0]))
    a = torch.tensor([[1.0, 1.0, 0.0]])
    e = 2 ** (1 / math.sqrt(2))
    p = np.array([e, e, 1.0]) / (2 * e + 1)
    assert comb.posterior(a)[0].tolist() == pytest.approx(p.tolist(), abs=1e-6)
    w = p[1] + p[2]  # the posterior mass on the species distillation never heard
    z = np.array([0.0, p[1], p[2]]) / np.linalg.norm([p[1], p[2]])
    d = np.array([1.0, 0.0, 0.0])
    want = (1 - w) * d + w * z
    assert comb.weight(a).item() == pytest.approx(w, abs=1e-6)
    assert comb(a, torch.tensor([d], dtype=torch.float32))[0].tolist() == pytest.approx((want / np.linalg.norm(want)).tolist(), abs=1e-6)
    # a model that heard every species keeps its own vector
    all_heard = ZeroShotCombination(torch.eye(3), torch.eye(3), math.log(2.0), {"gate": "heard"}, heard=torch.ones(3))
    assert all_heard(a, torch.tensor([d], dtype=torch.float32))[0].tolist() == pytest.approx(d.tolist(), abs=1e-6)


def test_heard_mask_matches_by_id_or_name():
    from birdbridge.encoders.combination import heard_mask
    from birdbridge.taxonomy import Species

    sp = [Species(id="a", scientific_name="Genus one"), Species(id="b", scientific_name="Genus two"),
          Species(id="c", scientific_name="Genus three")]
    heard = [Species(id="a", scientific_name="x"), Species(id="zz", scientific_name="genus TWO")]
    assert heard_mask(sp, heard).tolist() == [1.0, 1.0, 0.0]


def test_ensemble_checkpoint_carries_the_original_tower(tiny_clap_dir, tiny_open_clip_dir, tmp_path, monkeypatch):
    """tower "original": CLAP's posterior comes from the tower as loaded, saved inside the checkpoint."""
    from birdbridge.encoders.combination import ClapTower
    from birdbridge.encoders.factory import load_audio_embedder

    plain, model = _combined(tiny_clap_dir, tiny_open_clip_dir)
    original = ClapTower.copy_of(plain)
    with torch.no_grad():  # the student's own tower moves on (as in distillation); the copy must not
        for p in plain.audio_projection.parameters():
            p.add_(0.5)
    model.combination.with_tower(original)
    d = model.save_pretrained(tmp_path / "ens")
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["combination"]["tower"] == "original"
    rng = np.random.default_rng(1)
    waves = [rng.standard_normal(model.window_samples).astype(np.float32) * 0.1 for _ in range(3)]
    x = [torch.from_numpy(w) for w in waves]
    with torch.no_grad():
        feats = model.features(x)
        clap_now, clap_orig = model.clap_embed_features(feats), original(feats)
        distilled = torch.nn.functional.normalize(model.head(clap_now), dim=-1)
        want = model.combination(clap_orig, distilled).numpy()
        one_pass = model.combination(clap_now, distilled).numpy()
    assert not np.allclose(want, one_pass, atol=1e-4)
    monkeypatch.chdir(tmp_path)
    got = load_audio_embedder(str(d)).embed_windows(waves)
    np.testing.assert_allclose(got, want, atol=1e-6)
    loaded = load_audio_embedder(str(d)).model.combination.tower
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())


def test_train_saves_a_model_that_embeds_through_its_combination(small_world, tiny_clap_dir, tiny_open_clip_dir, tmp_path):
    """`birdbridge train` with `combination:`: the checkpoint carries it over a species list that
    holds a species the training audio never had, marked unheard."""
    from birdbridge.distill.train import TrainConfig, distill
    from birdbridge.encoders.student import DistilledModel

    csv = tmp_path / "species.csv"
    rows = ["scientific_name,common_name"] + [f"{sp.scientific_name},{sp.common_name}" for sp in small_world.species]
    csv.write_text("\n".join(rows + ["Novus ignotus,Unheard Bird"]) + "\n")
    cfg = TrainConfig.from_dict({"student": str(tiny_clap_dir), "teacher": str(tiny_open_clip_dir), "cache_dir": str(tmp_path / "c"),
                                 "batch_size": 8, "max_epochs": 1, "num_workers": 0, "accelerator": "cpu", "devices": 1,
                                 "progress": False, "clap_feature_weight": 1.0,
                                 "combination": {"gate": "heard", "tower": "original"}, "combination_species": str(csv)})
    distill(small_world, cfg, tmp_path / "run")
    saved = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    comb = saved["combination"]
    n = len(small_world.species)
    assert (comb["n_species"], comb["n_heard"], comb["gate"], comb["tower"]) == (n + 1, n, "heard", "original")
    assert saved["training"]["clap_feature_weight"] == 1.0
    model = DistilledModel.from_pretrained(tmp_path / "run" / "model")
    names = [s["scientific_name"] for s in comb["species"]]
    assert model.combination.heard[names.index("Novus ignotus")] == 0.0
    with pytest.raises(Exception, match="combination_species"):
        TrainConfig.from_dict({"combination_species": str(csv)})
