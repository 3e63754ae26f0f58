"""Tiny replicas of the real architectures, built and saved locally.

They have the *structure* of the real models (a transformers ``ClapModel`` with an
HTSAT audio tower and a RoBERTa text tower; an open_clip ViT CLIP) at a size that
trains on two CPU cores. Saved to disk, they load back through exactly the code path
real checkpoints use (``ClapModel.from_pretrained(dir)``, open_clip ``local-dir:``).

HTSAT constraints respected here: audio ``hidden_size == patch_embeds_hidden_size *
2**(len(depths)-1)``; ``num_mel_bins`` equals the feature extractor's ``feature_size``;
time frames (``sr * max_length_s / hop + 1``) fit in ``spec_size * (spec_size //
num_mel_bins)``; truncation ``rand_trunc`` (non-fused).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

import torch

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def tiny_audio_config(projection_dim: int = 32, dropout: float = 0.0) -> dict:
    """HTSAT's shape, tiny. ``dropout`` > 0 sets hidden and attention dropout (the real
    BioLingual config has hidden dropout 0.1) so train/eval mode makes a difference beyond
    the encoder's BatchNorm over mel bins."""
    return dict(
        spec_size=64, num_mel_bins=32, window_size=4, patch_size=4, patch_stride=[4, 4],
        patch_embeds_hidden_size=16, depths=[1, 1], num_attention_heads=[2, 2], hidden_size=32,
        projection_dim=projection_dim, enable_fusion=False, hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )


def tiny_feature_extractor(sampling_rate: int = 16000, max_length_s: int = 1):
    from transformers import ClapFeatureExtractor

    # 10 ms hop and the next power of two >= 1.6 hops as FFT: 160/256 at 16 kHz, and at
    # 48 kHz the real CLAP's 480/1024, so 1 s stays 101 frames (fits spec_size 64 * 2).
    hop = sampling_rate // 100
    n_fft = 1 << (int(1.6 * hop) - 1).bit_length()
    return ClapFeatureExtractor(
        feature_size=32, sampling_rate=sampling_rate, hop_length=hop, fft_window_size=n_fft,
        max_length_s=max_length_s, truncation="rand_trunc", padding="repeatpad",
        frequency_min=50, frequency_max=sampling_rate // 2,
    )


def build_tokenizer(corpus: Iterable[str], out_dir: str | Path, vocab_size: int = 600, max_length: int = 40):
    """A byte-level BPE (RoBERTa's tokenizer type) trained on ``corpus``."""
    from tokenizers import ByteLevelBPETokenizer
    from transformers import RobertaTokenizer

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(list(corpus), vocab_size=vocab_size, min_frequency=1, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    bpe.save_model(str(out_dir))
    return RobertaTokenizer(vocab=str(out_dir / "vocab.json"), merges=str(out_dir / "merges.txt"), model_max_length=max_length)


def build_tiny_clap(corpus: Iterable[str], work_dir: str | Path, seed: int = 0, projection_dim: int = 32, sampling_rate: int = 16000,
                    dropout: float = 0.0):
    """Random-init tiny ``ClapModel`` + ``ClapProcessor`` (tokenizer trained on ``corpus``)."""
    from transformers import ClapConfig, ClapModel, ClapProcessor

    tok = build_tokenizer(corpus, Path(work_dir) / "tokenizer")
    text = dict(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=tok.model_max_length + 4, projection_dim=projection_dim,
                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    cfg = ClapConfig(text_config=text, audio_config=tiny_audio_config(projection_dim, dropout), projection_dim=projection_dim)
    torch.manual_seed(seed)
    model = ClapModel(cfg)
    proc = ClapProcessor(feature_extractor=tiny_feature_extractor(sampling_rate), tokenizer=tok)
    return model, proc


def save_clap(model, processor, directory: str | Path) -> Path:
    directory = Path(directory)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    # transformers 5 writes processor_config.json; the feature extractor's own file lets
    # ClapFeatureExtractor.from_pretrained(dir) work too, as with hub checkpoints.
    processor.feature_extractor.save_pretrained(directory)
    return directory


def tiny_open_clip_config(embed_dim: int = 64, image_size: int = 32) -> dict:
    return {
        "model_cfg": {
            "embed_dim": embed_dim,
            "vision_cfg": {"image_size": image_size, "layers": 2, "width": 64, "head_width": 32, "patch_size": 8},
            # vocab 49408 so the bundled open_clip tokenizer matches the embedding table
            "text_cfg": {"context_length": 32, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
        },
        "preprocess_cfg": {"mean": list(OPENAI_MEAN), "std": list(OPENAI_STD), "size": image_size,
                           "interpolation": "bicubic", "resize_mode": "squash"},
    }


def build_tiny_open_clip(seed: int = 0, embed_dim: int = 64, image_size: int = 32):
    import open_clip

    cfg = tiny_open_clip_config(embed_dim, image_size)
    torch.manual_seed(seed)
    model = open_clip.CLIP(**cfg["model_cfg"])
    return model, cfg


def save_open_clip(model, cfg: dict, directory: str | Path) -> Path:
    """Write the ``local-dir:`` layout open_clip loads: config JSON + safetensors weights."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "open_clip_config.json").write_text(json.dumps(cfg, indent=2))
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(directory / "open_clip_model.safetensors"))
    return directory
