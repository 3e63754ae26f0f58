"""Our encoders equal the reference libraries on tiny replicas with the real structure.

Student: ``load_audio_embedder(clap_dir)`` (batched torch front end + HTSAT) against
transformers' ``ClapModel.get_audio_features(input_features=ClapFeatureExtractor(...)(x))``.
Teacher: ``Teacher`` against open_clip's own ``encode_image`` / ``encode_text``.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from birdbridge.encoders import hub
from birdbridge.encoders.clap import load_clap
from birdbridge.encoders.factory import load_audio_embedder
from birdbridge.encoders.teacher import Teacher, _resize_mode_for
from birdbridge.errors import ModelNotAvailableError

SR = 16000  # the default tiny CLAP's extractor rate; its window is 1 s


def _clips() -> dict[str, np.ndarray]:
    """Clips at most one window long, so no random crop is involved: HF and we see the same samples."""
    rng = np.random.default_rng(0)
    t = np.arange(SR) / SR
    noise = (0.1 * rng.standard_normal(SR)).astype(np.float32)
    noise[: SR // 4] *= 1e-4  # a quiet stretch: cells near the -100 dB floor
    gap = np.r_[np.zeros(SR // 2), 0.2 * np.sin(2 * np.pi * 2000 * t[: SR // 2])]  # digital silence, then a tone
    return {
        "noise_full_window": noise,
        "tone_full_window": (0.5 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32),
        "silence_then_tone": gap.astype(np.float32),
        "short_repeatpad": (0.3 * np.sin(2 * np.pi * 900 * t[:7000]) * np.hanning(7000)).astype(np.float32),
        "very_short": (0.05 * rng.standard_normal(900)).astype(np.float32),
    }


@pytest.fixture(scope="module")
def hf_clap(tiny_clap_dir):
    from transformers import ClapFeatureExtractor, ClapModel

    return ClapModel.from_pretrained(tiny_clap_dir).eval(), ClapFeatureExtractor.from_pretrained(tiny_clap_dir)


@torch.no_grad()
def _hf_audio_embedding(hf_clap, wave: np.ndarray) -> np.ndarray:
    model, fe = hf_clap
    feats = fe(wave, sampling_rate=fe.sampling_rate, return_tensors="pt").input_features
    return model.get_audio_features(input_features=feats).pooler_output.numpy()[0]


def test_student_clap_embedding_equals_transformers(tiny_clap_dir, hf_clap):
    embedder = load_audio_embedder(str(tiny_clap_dir))
    assert embedder.space == "clap" and embedder.sample_rate == SR and embedder.window_samples == SR
    clips = _clips()
    ours = embedder.embed_windows(list(clips.values()))  # one batch of mixed lengths
    for row, (name, wave) in zip(ours, clips.items()):
        ref = _hf_audio_embedding(hf_clap, wave)
        # float32 front end: measured max |diff| ~1e-7 here; the -100 dB floor cells do not
        # reach the embedding at this scale.
        assert np.abs(row - ref).max() <= 1e-5, name
        assert abs(np.linalg.norm(row) - 1) < 1e-5


def test_student_float64_frontend_matches_transformers_features(tiny_clap_dir, hf_clap):
    """The float64 front end reproduces HF's features; through the model the embedding matches too."""
    from birdbridge.encoders.frontend import ClapFrontend
    from birdbridge.encoders.student import AudioStudent
    from birdbridge.encoders.heads import HeadSpec

    model, fe = hf_clap
    student = AudioStudent.from_clap(model, fe, HeadSpec(out_dim=4)).eval()
    frontend64 = ClapFrontend.from_feature_extractor(fe, dtype=torch.float64)
    for name, wave in _clips().items():
        hf_feats = fe(wave, sampling_rate=SR, return_tensors="pt").input_features
        ours = frontend64([torch.from_numpy(wave)], crop="start")
        assert ours.shape == hf_feats.shape
        assert (ours.float() - hf_feats).abs().max() < 1e-3, name  # dB
        with torch.no_grad():
            emb = student.clap_embed_features(ours.float()).numpy()[0]
            emb32 = student.clap_embed(torch.from_numpy(wave)[None]).numpy()[0]
        ref = _hf_audio_embedding(hf_clap, wave)
        assert np.abs(emb - ref).max() <= 1e-6, name
        assert np.abs(emb32 - ref).max() <= 1e-5, name


# ---------------------------------------------------------------- teacher


@pytest.fixture(scope="module")
def open_clip_ref(tiny_open_clip_dir):
    import open_clip

    mid = f"local-dir:{tiny_open_clip_dir}"
    model, _, preprocess = open_clip.create_model_and_transforms(mid)
    return model.eval(), preprocess, open_clip.get_tokenizer(mid)


def _images() -> list[Image.Image]:
    rng = np.random.default_rng(1)
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for h, w in ((32, 32), (48, 80), (90, 40))]


def test_teacher_text_and_images_equal_open_clip(tiny_open_clip_dir, open_clip_ref):
    model, preprocess, tokenizer = open_clip_ref
    teacher = Teacher.load(str(tiny_open_clip_dir))  # plain path -> local-dir:
    assert teacher.model_id == f"local-dir:{tiny_open_clip_dir}" and teacher.dim == 64
    texts = ["Animalia Chordata Aves Passeriformes Parulidae Setophaga coronata", "a photo of a bird", ""]
    with torch.no_grad():
        ref_text = F.normalize(model.encode_text(tokenizer(texts)), dim=-1)
        ref_img = F.normalize(model.encode_image(torch.stack([preprocess(im) for im in _images()])), dim=-1)
    assert (teacher.encode_text(texts) - ref_text).abs().max() <= 1e-6
    assert (teacher.encode_images(_images(), batch_size=2) - ref_img).abs().max() <= 1e-6


def test_bioclip_ids_squash_others_use_open_clip_default():
    assert _resize_mode_for("hf-hub:imageomics/bioclip-2") == "squash"
    assert _resize_mode_for("hf-hub:imageomics/bioclip") == "squash"
    assert _resize_mode_for("hf-hub:laion/CLIP-ViT-B-32-laion2B-s34B-b79K") is None  # open_clip's default


def _squash_reference(im: Image.Image, size: int) -> torch.Tensor:
    from birdbridge.encoders.tiny import OPENAI_MEAN, OPENAI_STD

    x = torch.from_numpy(np.asarray(im.resize((size, size), Image.BICUBIC), np.float32) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(OPENAI_MEAN)[:, None, None]) / torch.tensor(OPENAI_STD)[:, None, None]


def test_local_squash_config_resizes_without_crop_and_default_crops(tiny_open_clip_dir, tmp_path):
    wide = _images()[1]  # 80x48: a crop would cut its sides away
    squash = Teacher.load(str(tiny_open_clip_dir))
    pixels = squash.preprocess(wide)
    assert torch.allclose(pixels, _squash_reference(wide, 32), atol=1e-5)
    assert not any("CenterCrop" in type(t).__name__ for t in squash.preprocess.transforms)

    # The same weights with no resize_mode in the config: open_clip's default (shortest side + centre crop).
    crop_dir = tmp_path / "crop"
    shutil.copytree(tiny_open_clip_dir, crop_dir)
    cfg = json.loads((crop_dir / "open_clip_config.json").read_text())
    del cfg["preprocess_cfg"]["resize_mode"]
    (crop_dir / "open_clip_config.json").write_text(json.dumps(cfg))
    assert _resize_mode_for(str(crop_dir)) is None
    crop = Teacher.load(str(crop_dir))
    assert any("CenterCrop" in type(t).__name__ for t in crop.preprocess.transforms)
    assert not torch.allclose(crop.preprocess(wide), pixels, atol=1e-3)
    # squares are unaffected by the choice, so the embeddings agree there
    square = _images()[0]
    assert (crop.encode_images([square]) - squash.encode_images([square])).abs().max() <= 1e-6
    assert (crop.encode_images([wide]) - squash.encode_images([wide])).abs().max() > 1e-4


def test_open_clip_local_dir_without_weights_is_refused(tiny_open_clip_dir, tmp_path):
    shutil.copy(tiny_open_clip_dir / "open_clip_config.json", tmp_path / "open_clip_config.json")
    with pytest.raises(ModelNotAvailableError, match="no weights"):
        Teacher.load(str(tmp_path))


# ---------------------------------------------------------------- refusals and ids


def _edit_json(path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def test_fused_clap_config_is_refused(tiny_clap_dir, tmp_path):
    fused = tmp_path / "fused"
    shutil.copytree(tiny_clap_dir, fused)
    _edit_json(fused / "config.json", lambda c: c["audio_config"].update(enable_fusion=True))
    with pytest.raises(ModelNotAvailableError, match="enable_fusion=True"):
        load_clap(str(fused))
    with pytest.raises(ModelNotAvailableError, match="fused CLAP"):
        load_audio_embedder(str(fused))


def test_fusion_feature_extractor_is_refused(tiny_clap_dir, tmp_path):
    bad = tmp_path / "fusion_fe"
    shutil.copytree(tiny_clap_dir, bad)
    _edit_json(bad / "preprocessor_config.json", lambda c: c.update(truncation="fusion"))
    _edit_json(bad / "processor_config.json", lambda c: c["feature_extractor"].update(truncation="fusion"))
    with pytest.raises(ModelNotAvailableError, match="truncation='fusion'"):
        load_clap(str(bad))


@pytest.mark.parametrize(
    ("model_id", "kind"),
    [("davidrrobinson/BioLingual", "hub"), ("hf-hub:imageomics/bioclip-2", "hub"), ("birdnet", "builtin"),
     ("runs/exp1/model", "local"), ("./model", "local"), ("/no/such/dir", "local"), ("local-dir:x", "local")],
)
def test_model_id_kinds(model_id, kind):
    assert hub.split_model_id(model_id)[0] == kind


def test_missing_local_directory_says_so():
    with pytest.raises(ModelNotAvailableError, match="no such model folder"):
        load_audio_embedder("runs/does-not-exist/model")
