"""A distilled checkpoint round-trips bit-identically and says where it came from."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from birdbridge import __version__
from birdbridge.encoders.clap import load_clap
from birdbridge.encoders.factory import load_audio_embedder
from birdbridge.encoders.heads import HeadSpec
from birdbridge.encoders.student import CONFIG_NAME, WEIGHTS_NAME, AudioStudent, DistilledModel
from birdbridge.errors import ModelNotAvailableError

META = {
    "student_id": "davidrrobinson/BioLingual",
    "teacher_id": "hf-hub:imageomics/bioclip-2",
    "prompt_recipe": {"prompt_types": ["common", "scientific", "taxonomic"], "template_set": "openai"},
    "training": {"steps": 3, "loss": "infonce"},
    "train_species": ["amecro", "blujay"],
}


@pytest.fixture(scope="module")
def distilled(tiny_clap_dir) -> DistilledModel:
    clap, fe = load_clap(str(tiny_clap_dir))
    student = AudioStudent.from_clap(clap, fe, HeadSpec(kind="mlp", out_dim=24, hidden_dim=40))
    torch.manual_seed(3)
    with torch.no_grad():  # weights no fresh init would give, so a lost tensor shows
        for p in student.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return DistilledModel.from_student(student, META).eval()


def _waves() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return [0.1 * torch.randn(n, generator=g) for n in (16000, 5000, 16000)]


def test_round_trip_is_bit_identical(distilled, tmp_path):
    directory = distilled.save_pretrained(tmp_path / "ckpt")
    loaded = DistilledModel.from_pretrained(directory)
    before = {k: v for k, v in distilled.state_dict().items() if not k.startswith("frontend.")}
    after = {k: v for k, v in loaded.state_dict().items() if not k.startswith("frontend.")}
    assert before.keys() == after.keys() and len(before) > 50
    for k in before:
        assert before[k].dtype == after[k].dtype and torch.equal(before[k], after[k]), k
    with torch.no_grad():
        assert torch.equal(distilled(_waves()), loaded(_waves()))
        assert torch.equal(distilled.clap_embed(_waves()), loaded.clap_embed(_waves()))
    # saving the loaded model again writes the same bytes
    again = loaded.save_pretrained(tmp_path / "again")
    assert (again / WEIGHTS_NAME).read_bytes() == (directory / WEIGHTS_NAME).read_bytes()
    assert loaded.meta == META


def test_config_carries_provenance(distilled, tmp_path):
    cfg = json.loads((distilled.save_pretrained(tmp_path / "ckpt") / CONFIG_NAME).read_text())
    assert cfg["model_type"] == "birdbridge-distilled-audio"
    assert cfg["birdbridge_version"] == __version__
    assert cfg["student_id"] == META["student_id"] and cfg["teacher_id"] == META["teacher_id"]
    assert cfg["prompt_recipe"] == META["prompt_recipe"]
    assert cfg["head"] == {"kind": "mlp", "in_dim": 32, "out_dim": 24, "hidden_dim": 40, "dropout": 0.0}
    pre = cfg["preprocessing"]
    assert (pre["sampling_rate"], pre["hop_length"], pre["fft_window_size"], pre["truncation"]) == (16000, 160, 256, "rand_trunc")
    assert "mel_filters" not in pre and "mel_filters_slaney" not in pre  # derived, not stored


def test_checkpoint_loads_as_teacher_space_embedder(distilled, tmp_path):
    directory = distilled.save_pretrained(tmp_path / "ckpt")
    embedder = load_audio_embedder(str(directory))
    assert (embedder.space, embedder.dim, embedder.sample_rate) == ("teacher", 24, 16000)
    assert embedder.provenance == {k: META[k] for k in ("student_id", "teacher_id", "prompt_recipe")}
    waves = [w.numpy() for w in _waves()]
    with torch.no_grad():
        expected = distilled(_waves()).numpy()
    np.testing.assert_array_equal(embedder.embed_windows(waves), expected)


def test_checkpoint_with_missing_tensor_is_refused(distilled, tmp_path):
    from safetensors.torch import load_file, save_file

    directory = distilled.save_pretrained(tmp_path / "ckpt")
    state = load_file(str(directory / WEIGHTS_NAME))
    dropped = next(k for k in state if k.startswith("head."))
    del state[dropped]
    save_file(state, str(directory / WEIGHTS_NAME))
    with pytest.raises(ModelNotAvailableError, match="does not match its config"):
        DistilledModel.from_pretrained(directory)


def test_plain_clap_dir_is_not_a_checkpoint(tiny_clap_dir):
    with pytest.raises(ModelNotAvailableError, match="expected config.json and model.safetensors|not a birdbridge"):
        DistilledModel.from_pretrained(tiny_clap_dir)
