"""Issue 24: starting from a zero-shot model (LP-FT), keeping it (ZSCL) and interpolating (WiSE-FT).

The interpolation and the ZSCL term against hand computations, the zero-shot head against the
zero_shot_combination baseline, the text-map start against the text-mapping fit, and a real
training with tiny replicas whose checkpoint is the interpolation of the two end points it keeps and
embeds through its head from another directory, with no flag, in the console script."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from birdbridge.distill import start as st
from birdbridge.encoders.heads import HeadSpec, ProjectionHead


# --------------------------------------------------------------------------- by hand
def test_interpolate_by_hand():
    a = {"w": torch.tensor([1.0, 2.0]), "n": torch.tensor(3), "same": torch.tensor([5.0])}
    b = {"w": torch.tensor([3.0, -2.0]), "n": torch.tensor(7), "same": torch.tensor([5.0])}
    out = st.interpolate(a, b, 0.25)
    assert out["w"].tolist() == pytest.approx([0.75 * 1 + 0.25 * 3, 0.75 * 2 + 0.25 * -2])
    assert out["n"].item() == 7  # integer counters: the fine-tuned model's
    assert out["same"].tolist() == [5.0]
    assert st.interpolate(a, b, 0.0)["w"].tolist() == [1.0, 2.0] and st.interpolate(a, b, 1.0)["w"].tolist() == [3.0, -2.0]
    with pytest.raises(ValueError, match="alpha"):
        st.interpolate(a, b, 1.5)
    with pytest.raises(ValueError, match="differ"):
        st.interpolate(a, {"w": b["w"]}, 0.5)


def test_zscl_loss_by_hand():
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    start = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    cur = torch.tensor([[1.0, 1.0], [0.0, 3.0]], requires_grad=True)
    scale = 2.0

    def probs(x):
        x = x / np.linalg.norm(x, axis=1, keepdims=True)
        z = scale * x @ (text.numpy() / np.linalg.norm(text.numpy(), axis=1, keepdims=True)).T
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    p0, p = probs(start.numpy()), probs(cur.detach().numpy())
    want = np.mean(np.sum(p0 * (np.log(p0) - np.log(p)), axis=1))
    loss = st.zscl_loss(cur, start, text, scale)
    assert loss.item() == pytest.approx(want, abs=1e-6)
    loss.backward()
    assert cur.grad.abs().sum() > 0
    weighted = st.zscl_loss(cur.detach(), start, text, scale, torch.tensor([0.5, 2.0])).item()
    kl = np.sum(p0 * (np.log(p0) - np.log(p)), axis=1)
    assert weighted == pytest.approx(np.mean(kl * [0.5, 2.0]), abs=1e-6)
    assert st.zscl_loss(start.clone(), start, text, scale).item() == pytest.approx(0.0, abs=1e-7)


def test_zero_shot_head_starts_as_the_zero_shot_combination():
    from birdbridge.evaluate.baselines import zero_shot_combination

    g = torch.Generator().manual_seed(0)
    clap_text = torch.randn(5, 8, generator=g)
    teacher_text = torch.nn.functional.normalize(torch.randn(5, 6, generator=g), dim=-1)  # the teacher's rows are unit
    species = [{"id": f"s{i}", "scientific_name": f"G s{i}", "common_name": f"B {i}"} for i in range(5)]
    head = ProjectionHead(HeadSpec(kind="zero_shot", in_dim=8, out_dim=6, species=species))
    head.net.init_from_text(clap_text, teacher_text, 17.0)
    x = torch.randn(4, 8, generator=g)
    got = torch.nn.functional.normalize(head(x), dim=-1).detach().numpy()
    want = zero_shot_combination(x.numpy(), clap_text.numpy(), teacher_text.numpy(), 17.0)
    np.testing.assert_allclose(got, want, atol=1e-5)
    assert {n for n, p in head.named_parameters()} == {"net.clap_text", "net.log_scale"}  # the teacher's rows stay frozen
    with pytest.raises(ValueError, match="species list"):
        ProjectionHead(HeadSpec(kind="zero_shot"))


def test_unheard_rows_stay_where_text_put_them():
    species = [{"id": f"s{i}", "scientific_name": f"G s{i}", "common_name": f"B {i}"} for i in range(3)]
    head = ProjectionHead(HeadSpec(kind="zero_shot", in_dim=4, out_dim=3, species=species))
    head.net.init_from_text(torch.eye(3, 4), torch.eye(3), 2.0)
    head.net.heard.copy_(torch.tensor([1.0, 0.0, 1.0]))
    # posterior mass on the unheard species, by hand: x = e2 -> logits (0, 2, 0) -> p = (1, e^2, 1) / (2 + e^2)
    assert head.net.unheard_mass(torch.tensor([[0.0, 1.0, 0.0, 0.0]])).item() == pytest.approx(
        math.exp(2) / (2 + math.exp(2)), abs=1e-6)
    # two unheard species: the mass adds them, the top takes the larger; x = e1 + e2 -> logits (2/√2)(1, 1, 0)
    head.net.heard.copy_(torch.tensor([0.0, 0.0, 1.0]))
    x2 = torch.tensor([[1.0, 1.0, 0.0, 0.0]])
    z = math.exp(2 / math.sqrt(2))
    assert head.net.unheard_mass(x2).item() == pytest.approx(2 * z / (2 * z + 1), abs=1e-6)
    assert head.net.unheard_top(x2).item() == pytest.approx(z / (2 * z + 1), abs=1e-6)
    head.net.heard.copy_(torch.tensor([1.0, 0.0, 1.0]))
    head.net.freeze_unheard()
    before = head.net.clap_text.detach().clone()
    opt = torch.optim.SGD(head.parameters(), lr=0.5)
    x = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    loss = -(torch.nn.functional.normalize(head(x), dim=-1) @ torch.tensor([0.0, 0.0, 1.0])).mean()
    loss.backward()
    opt.step()
    after = head.net.clap_text.detach()
    assert torch.equal(after[1], before[1])  # never heard: held
    assert not torch.equal(after[0], before[0]) and not torch.equal(after[2], before[2])


@pytest.mark.parametrize("keys, match", [
    ({"head": "mlp", "head_init": "text_map"}, "head_init"),
    ({"head_init": "from_thin_air"}, "head_init"),
    ({"head": "tower"}, "'head'"),
    ({"wise_alpha": 1.5}, "wise_alpha"),
    ({"zscl_weight": -1.0}, "zscl_weight"),
    ({"head_prompt_type": "poem"}, "head_prompt_type"),
    ({"zscl_gate": "unheard"}, "zscl_gate"),
    ({"head_unheard_rows": "melted"}, "head_unheard_rows"),
    ({"zscl_gate_power": 0.0}, "zscl_gate_power"),
    ({"zscl_temperature": -1.0}, "zscl_temperature"),
])
def test_config_errors_name_the_key(keys, match):
    from birdbridge.distill.config import TrainConfig
    from birdbridge.errors import ConfigError

    with pytest.raises(ConfigError, match=match):
        TrainConfig.from_dict(keys)


# --------------------------------------------------------------------------- with tiny replicas
@pytest.fixture(scope="module")
def small_world(tmp_path_factory):
    from birdbridge.data.synthetic import SyntheticWorld, load_world

    root = tmp_path_factory.mktemp("world24")
    world = SyntheticWorld(2, n_orders=1, n_families=2, n_genera=2, n_species=2)
    world.write(root, audio_per_species={"train": 3}, images_per_species={"test": 1})
    return load_world(root)


def _cfg(tiny_clap_dir, tiny_open_clip_dir, tmp_path, **kw):
    from birdbridge.distill.config import TrainConfig

    return TrainConfig.from_dict({"student": str(tiny_clap_dir), "teacher": str(tiny_open_clip_dir),
                                  "cache_dir": str(tmp_path / "cache"), "batch_size": 4, "max_epochs": 2,
                                  "num_workers": 0, "accelerator": "cpu", "devices": 1, "progress": False,
                                  "lr_encoder": 1e-3, "lr_head": 1e-2, "warmup_steps": 0, **kw})


def test_text_map_start_is_the_text_mapping_fit(small_world, tiny_clap_dir, tiny_open_clip_dir, tmp_path):
    from birdbridge.distill.train import build_student, species_text_embeddings
    from birdbridge.encoders.text import ClapTextEncoder
    from birdbridge.encoders.text_map import fit_text_mapping

    cfg = _cfg(tiny_clap_dir, tiny_open_clip_dir, tmp_path, head_init="text_map", clap_templates=["the song of a {}"])
    text = species_text_embeddings(cfg, small_world)
    student = build_student(cfg, next(iter(text.values())).shape[1], small_world.species)
    lin = fit_text_mapping(ClapTextEncoder.load(str(tiny_clap_dir)), {k: v.numpy() for k, v in text.items()},
                           small_world.species, templates=["the song of a {}"], alpha=cfg.head_ridge_alpha)
    np.testing.assert_allclose(student.head.net.weight.detach().numpy(), lin.weight.T, atol=1e-5)
    np.testing.assert_allclose(student.head.net.bias.detach().numpy(), lin.bias, atol=1e-5)


def test_training_step_adds_the_weighted_zscl_term(small_world, tiny_clap_dir, tiny_open_clip_dir, tmp_path):
    from birdbridge.distill.data import AudioClipDataset, collate_clips
    from birdbridge.distill.module import DistillModule
    from birdbridge.distill.train import build_student, species_text_embeddings
    from birdbridge.errors import SkipLog

    cfg = _cfg(tiny_clap_dir, tiny_open_clip_dir, tmp_path, head="zero_shot", encoder_mode="eval")
    text = species_text_embeddings(cfg, small_world)
    student = build_student(cfg, next(iter(text.values())).shape[1], small_world.species)
    waves = st.reference_pool(small_world, small_world.audio, student.sample_rate, student.window_samples,
                              max_clips=5, seed=0, skips=SkipLog())
    assert waves.shape == (5, student.window_samples)  # a seeded choice of 5 of the 12 clips
    rows = st.head_teacher_rows(cfg, small_world.species)
    start_out, ones = st.start_outputs(student, waves, 4)
    assert ones.tolist() == [1.0] * 5
    zscl = st.ZsclTerm(waves, start_out, rows, weight=3.0, scale=5.0, batch_size=3, seed=0)
    assert torch.equal(zscl.batch(7), zscl.batch(7)) and len(zscl.batch(7)) == 3
    module = DistillModule(student, text, cfg, total_steps=10, zscl=zscl)
    plain = DistillModule(student, text, cfg, total_steps=10)
    ds = AudioClipDataset(small_world, small_world.audio_split("train"), student.sample_rate, student.window_samples)
    batch = collate_clips([ds[i] for i in range(8)])
    module.set_train_modes()
    with torch.no_grad():
        base = plain.training_step(batch, 0).item()
        keep = zscl.loss(student, 0, 0, "cpu").item()
        got = module.training_step(batch, 0).item()
    assert keep == pytest.approx(0.0, abs=1e-6)  # at the start the model is its own reference
    assert got == pytest.approx(base + 3.0 * keep, rel=1e-5)
    opt = module.configure_optimizers()["optimizer"]
    module.training_step(batch, 0).backward()
    opt.step()
    with torch.no_grad():
        assert zscl.loss(student, 1, 0, "cpu").item() > 0  # the student moved; its start outputs did not


BIN = Path(sys.executable).with_name("birdbridge")


def test_wise_training_saves_the_interpolation_and_the_console_script_uses_it(small_world, tiny_clap_dir,
                                                                              tiny_open_clip_dir, tmp_path):
    from birdbridge.distill.train import distill
    from birdbridge.encoders.student import DistilledModel
    from birdbridge.encoders.text import ClapTextEncoder
    from birdbridge.evaluate.baselines import zero_shot_combination

    species_csv = tmp_path / "species.csv"  # the head's list: the world's species and one never heard
    rows = ["scientific_name,common_name"] + [f"{sp.scientific_name},{sp.common_name}" for sp in small_world.species]
    species_csv.write_text("\n".join(rows + ["Novus ignotus,Unheard Bird"]) + "\n")
    cfg = _cfg(tiny_clap_dir, tiny_open_clip_dir, tmp_path, head="zero_shot", head_species=str(species_csv),
               wise_alpha=0.4, zscl_weight=1.0, reference_audio=str(Path(small_world.root) / "audio"))
    model = distill(small_world, cfg, tmp_path / "run")
    saved = tmp_path / "run" / "model"
    conf = json.loads((saved / "config.json").read_text())
    assert conf["head"]["kind"] == "zero_shot" and len(conf["head"]["species"]) == len(small_world.species) + 1
    assert conf["training"]["wise_alpha"] == 0.4 and conf["training"]["zscl_weight"] == 1.0
    start, finetuned = st.load_ends(tmp_path / "run")
    moved = [k for k in finetuned if finetuned[k].is_floating_point() and not torch.equal(start[k], finetuned[k])]
    assert any(k.startswith("audio_model.") for k in moved) and "head.net.clap_text" in moved
    loaded = DistilledModel.from_pretrained(saved)
    names = [s["scientific_name"] for s in conf["head"]["species"]]
    heard = loaded.head.net.heard.tolist()
    assert heard[names.index("Novus ignotus")] == 0.0 and sum(heard) == len(small_world.species)
    # never heard, its caption row kept the direction text gave it (head_unheard_rows: frozen, the default;
    # AdamW's weight decay only shortens it, and the head reads rows normalised)
    i = names.index("Novus ignotus")
    unit = lambda v: torch.nn.functional.normalize(v, dim=-1)  # noqa: E731
    torch.testing.assert_close(unit(start["head.net.clap_text"][i]), unit(finetuned["head.net.clap_text"][i]),
                               rtol=0, atol=1e-6)
    assert (unit(start["head.net.clap_text"][0]) - unit(finetuned["head.net.clap_text"][0])).abs().max() > 1e-4
    want = st.interpolate(start, finetuned, 0.4)
    for k, v in loaded.state_dict().items():
        if k in want:
            torch.testing.assert_close(v, want[k], rtol=0, atol=1e-6)
    # step 0 (alpha 0) is the zero-shot combination over the head's species list
    zero = st.wise_model(loaded, start, finetuned, 0.0)
    rng = np.random.default_rng(0)
    waves = [rng.standard_normal(zero.window_samples).astype(np.float32) * 0.1 for _ in range(3)]
    with torch.no_grad():
        x = torch.stack([torch.from_numpy(w) for w in waves])
        clap = zero.clap_embed(x).numpy()
        got = zero(x).numpy()
    from birdbridge.data.species_list import load_species_list
    from birdbridge.encoders.species_text import clap_species_text

    enc = ClapTextEncoder.load(str(tiny_clap_dir))
    ct = clap_species_text(enc, load_species_list(species_csv), cfg.clap_templates, cfg.clap_prompt_types)
    np.testing.assert_allclose(got, zero_shot_combination(clap, ct, start["head.net.teacher_text"].numpy(),
                                                          enc.logit_scale), atol=1e-5)
    assert np.abs(model(x).detach().numpy() - got).max() > 1e-4  # the saved model is not the start
    # the console script embeds through the saved head with no flag, from another directory
    audio = tmp_path / "clips"
    audio.mkdir()
    for i, w in enumerate(waves):
        sf.write(audio / f"c{i}.wav", w, loaded.sample_rate)
    other = tmp_path / "elsewhere"
    other.mkdir()
    res = subprocess.run([str(BIN), "embed-audio", str(audio), "--model", str(saved), "--out", "emb.npy"], cwd=other,
                         capture_output=True, text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr
    with torch.no_grad():
        direct = loaded(x).numpy()
    np.testing.assert_allclose(np.load(other / "emb.npy"), direct, atol=1e-5)


def test_zscl_without_reference_audio_is_one_config_error(small_world, tiny_clap_dir, tiny_open_clip_dir, tmp_path):
    from birdbridge.distill.train import distill
    from birdbridge.errors import ConfigError

    cfg = _cfg(tiny_clap_dir, tiny_open_clip_dir, tmp_path, zscl_weight=1.0)
    with pytest.raises(ConfigError, match="reference_audio"):
        distill(small_world, cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "model").exists()
    assert math.isfinite(dataclasses.asdict(cfg)["zscl_weight"])


def test_train_verb_names_each_missing_start_input_in_one_go(tmp_path):
    """`birdbridge train` checks the new keys before any model loads: a ZSCL weight without reference
    audio, and list/audio paths that do not exist, each one line, exit 2."""
    (tmp_path / "clips").mkdir()
    config = tmp_path / "train.yaml"
    config.write_text("data: {kind: folder, path: clips}\n"
                      "train: {zscl_weight: 1.0, head: zero_shot, head_species: nowhere.csv}\n")
    other = tmp_path / "elsewhere"
    other.mkdir()
    res = subprocess.run([str(BIN), "train", str(config), "--out", "run"], cwd=other, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    assert "train.zscl_weight > 0 needs train.reference_audio" in res.stderr
    assert "train.head_species not found: nowhere.csv" in res.stderr
    assert not (other / "run").exists()


def test_train_console_script_trains_a_zscl_wise_model_from_another_directory(small_world, tiny_clap_dir,
                                                                               tiny_open_clip_dir, tmp_path):
    """The whole recipe as a user types it: relative list and reference paths (anchored at the config),
    an unreadable reference file skipped with its reason, the interpolated model and its end points."""
    import shutil

    import yaml

    cfg_dir = tmp_path / "cfg"
    (cfg_dir / "unlabeled").mkdir(parents=True)
    for it in small_world.audio[:6]:
        shutil.copy(small_world.resolve(it.path), cfg_dir / "unlabeled" / Path(it.path).name)
    (cfg_dir / "unlabeled" / "broken.wav").write_bytes(b"RIFF not really a wave")
    rows = ["scientific_name,common_name"] + [f"{sp.scientific_name},{sp.common_name}" for sp in small_world.species]
    (cfg_dir / "species.csv").write_text("\n".join(rows + ["Novus ignotus,Unheard Bird"]) + "\n")
    train = {"student": str(tiny_clap_dir), "teacher": str(tiny_open_clip_dir), "cache_dir": str(tmp_path / "cache"),
             "batch_size": 4, "max_epochs": 1, "num_workers": 0, "accelerator": "cpu", "devices": 1,
             "head": "zero_shot", "head_species": "species.csv", "zscl_weight": 0.5, "zscl_gate": "unheard",
             "reference_audio": "unlabeled", "wise_alpha": 0.5}
    (cfg_dir / "train.yaml").write_text(yaml.safe_dump({"data": {"kind": "csv", "path": str(Path(small_world.root) / "world.csv")},
                                                        "train": train}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    res = subprocess.run([str(BIN), "train", str(cfg_dir / "train.yaml"), "--out", "run"], cwd=elsewhere,
                         capture_output=True, text=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    out = elsewhere / "run"
    conf = json.loads((out / "model" / "config.json").read_text())
    assert conf["head"]["kind"] == "zero_shot" and len(conf["head"]["species"]) == len(small_world.species) + 1
    assert conf["training"]["reference_audio"] == str(cfg_dir / "unlabeled")
    assert (out / "wise" / "start.safetensors").is_file() and (out / "wise" / "finetuned.safetensors").is_file()
    skipped = json.loads((out / "skipped.json").read_text())
    assert [Path(s["input"]).name for s in skipped["skipped"]] == ["broken.wav"]
    assert str(out / "wise") in " ".join((res.stdout + res.stderr).split()), "the end points are listed among the outputs"
